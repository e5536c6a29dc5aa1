"""The ``accelerator`` kind's config (gen/config/accelerator.py): every rejection class through
the CLI (file, key path, value, what is allowed; exit 2), the presets, the mapping onto the
golden model's parameters, and the seeded random valid-config generator."""

from __future__ import annotations

import pytest
import yaml

from gen.cli import main
from gen.config import config_from_dict, load_config, preset_paths
from gen.config.accelerator import AcceleratorConfig, random_accelerator_config
from software_model.accelerator import AcceleratorParams, TensorFormat


def _check(tmp_path, capsys, data):
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(data))
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err, path


@pytest.mark.parametrize("data, expected", [
    # schema: unknown nested key (did you mean), wrong type, range, choices
    ({"matrix": {"colums": 4}}, "matrix.colums: unknown key (did you mean 'cols'?)"),
    ({"matrix": {"rows": "four"}}, "matrix.rows: got 'four'; allowed: integer 1 .. 256"),
    ({"block_size": 12}, "block_size: got 12; allowed: one of 8, 16, 32, 64"),
    ({"pipelined": "yes"}, "pipelined: got 'yes'; allowed: true or false"),
    ({"exponent_width": 9}, "exponent_width: got 9; allowed: integer 3 .. 8"),
    ({"formats": {"kv": {"type": "float"}}},
     "formats.kv.type: got 'float'; allowed: one of 'mxint', 'int'"),
    ({"formats": {"weight": {"element_width": 1}}},
     "formats.weight.element_width: got 1; allowed: integer 2 .. 16"),
    ({"matrix": {"dataflow": "weight_stationary"}},
     "matrix.dataflow: got 'weight_stationary'; allowed: one of 'output_stationary'"),
    ({"vector": {"softmax": {"scale": "big"}}}, "vector.softmax.scale: got 'big'; allowed: number"),
    # cross-field: powers of two, flattened shape, capacities
    ({"matrix": {"cols": 6}}, "matrix.cols: got 6; allowed: a power of two"),
    ({"matrix": {"sub_arrays": 3}}, "matrix.sub_arrays: got 3; allowed: a power of two"),
    ({"matrix": {"rows": 2, "cols": 4, "sub_arrays": 4}},
     "matrix.sub_arrays: got 4; allowed: 1, or rows = cols"),
    ({"accumulator": {"words": 2}}, "accumulator.words: got 2; allowed: at least rows (4)"),
    ({"scratchpad": {"words": 1000}}, "scratchpad.words: got 1000; allowed: a power of two"),
    ({"scratchpad": {"banks": 6}}, "scratchpad.banks: got 6; allowed: a power of two"),
    ({"scratchpad": {"banks": 2}, "memory": {"port_words": 4}},
     "memory.port_words: got 4; allowed: at most scratchpad.banks (2)"),
    ({"scratchpad": {"words": 64, "banks": 128}},
     "scratchpad.banks: got 128; allowed: at most scratchpad.words (64)"),
    # widths that overflow the golden model's int64
    ({"accumulator": {"width": 62}, "matrix": {"rows": 4, "cols": 4, "sub_arrays": 4}},
     "accumulator.width: got 62; allowed: at most 60: the adder tree's sum of 4 aligned tiles"),
    ({"accumulator": {"width": 52}},
     "accumulator.width: got 52; allowed: at most 50: ACCNORM's product"),
    ({"vector": {"layernorm": {"row_length": 1024, "int_bits": 16, "frac_bits": 20}}},
     "vector.layernorm.int_bits: got 16: int_bits + frac_bits = 36 is too wide"),
    # the units' own rules, reported under their knobs
    ({"vector": {"softmax": {"exp_bits": 40}}},
     "vector.softmax.exp_bits: got 40; allowed: an integer from 2 to 20"),
    ({"vector": {"gelu": {"degree": 5}}},
     "vector.gelu.degree: got 5; allowed: an integer from 0 to 2"),
    ({"vector": {"layernorm": {"row_length": 12}}},
     "vector.layernorm.row_length: got 12; allowed: a multiple of the block size (8)"),
])
def test_rejection_classes(tmp_path, capsys, data, expected):
    code, err, path = _check(tmp_path, capsys, {"kind": "accelerator", **data})
    assert code == 2
    assert f"{path}: {expected}" in err, err


def test_every_problem_reported_at_once(tmp_path, capsys):
    code, err, _ = _check(tmp_path, capsys, {
        "kind": "accelerator", "block_size": 12, "matrix": {"rows": "four"},
        "formats": {"kv": {"type": "x"}}})
    assert code == 2 and err.count("acc.yaml:") == 3
    # cross-field rules are all reported too once the values themselves are valid
    code, err, _ = _check(tmp_path, capsys, {
        "kind": "accelerator", "matrix": {"cols": 6}, "scratchpad": {"words": 1000}})
    assert code == 2 and err.count("acc.yaml:") == 2


def test_presets_are_valid_and_compare_at_equal_resources(capsys):
    paths = [str(p) for p in preset_paths("accelerator")]
    assert sorted(p.rsplit("/", 1)[1] for p in paths) == [
        "accelerator_plena.yaml", "accelerator_small.yaml", "accelerator_square.yaml"]
    assert main(["check", *paths]) == 0
    small, plena, square = (load_config(f"configs/accelerator_{n}.yaml")
                            for n in ("small", "plena", "square"))
    assert small.block_size == 8 and small.matrix.rows == small.matrix.cols == 4
    assert plena.matrix.rows == plena.matrix.cols == 4 and plena.multipliers >= 256
    assert square.matrix.sub_arrays == 1 and square.matrix.rows == square.matrix.cols
    assert square.multipliers == plena.multipliers
    assert square.scratchpad == plena.scratchpad and square.memory == plena.memory
    assert square.formats == plena.formats
    # equal accumulator capacity in numbers
    assert square.accumulator.words * square.matrix.cols == \
        plena.accumulator.words * plena.matrix.cols
    assert plena.operand_full_rate and square.operand_full_rate
    assert plena.operand_words_per_job == 4 * square.operand_words_per_job


def test_config_maps_onto_the_golden_models_parameters():
    cfg = load_config("configs/accelerator_small.yaml")
    p = cfg.accelerator_params()
    assert isinstance(p, AcceleratorParams)
    assert p.formats == (TensorFormat("mxint", 8), TensorFormat("mxint", 4),
                         TensorFormat("int", 8))
    assert (p.rows, p.cols, p.sub_arrays, p.sp_words, p.sp_banks) == (4, 4, 2, 512, 4)
    assert p.softmax.max_row_blocks == 32 and p.layernorm.row_length == 32
    assert p.softmax.in_fmt == p.fmt(0) == p.gelu.out_fmt == p.layernorm.param_fmt
    assert p.word_bits == 8 * 8 + 6 and p.port_bits == 2 * p.word_bits


def test_defaults_and_round_trip():
    cfg = config_from_dict({"kind": "accelerator"})
    assert cfg.accelerator_params() == AcceleratorParams(
        formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 4), TensorFormat("mxint", 8)),
        softmax=cfg.accelerator_params().softmax, layernorm=cfg.accelerator_params().layernorm,
        gelu=cfg.accelerator_params().gelu)
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash == cfg.config_hash


@pytest.mark.parametrize("seed", range(60))
def test_random_configs_are_valid(seed):
    cfg = config_from_dict(random_accelerator_config(seed))
    assert isinstance(cfg, AcceleratorConfig)
    p = cfg.accelerator_params()
    assert p.block_size in (8, 16) and p.acc_width <= 62 - p.softmax.recip_bits


def test_random_configs_of_the_shared_generator(config_seed):
    from gen.random_configs import random_configs
    cfgs = random_configs("accelerator", 5, config_seed)
    assert all(isinstance(c, AcceleratorConfig) for c in cfgs)
    assert len({c.config_hash for c in cfgs}) == 5
    for c in cfgs:
        c.accelerator_params()


def test_random_config_generator_is_seeded_and_varied():
    assert random_accelerator_config(3) == random_accelerator_config(3)
    shapes = {(d["matrix"]["rows"], d["matrix"]["sub_arrays"], d["block_size"])
              for d in map(random_accelerator_config, range(40))}
    assert len(shapes) > 10
