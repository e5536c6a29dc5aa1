"""MXIntLinear: config rules, constructor checks, the fast amaranth.sim tier and the bit-exact
cocotb regression over every preset."""
import re

import numpy as np
import pytest

from cosim.mxint_linear import corner_tiles, random_tile, tile_beats, tile_expected
from cosim.pysim import run_streams
from gen.cosim_run import run_cosim
from gen.cosim_run import preset_configs
from gen.config import config_from_dict
from gen.random_configs import random_configs
from gen.schema import ConfigError
from hw.mxint_linear import MXIntLinear
from software_model.mxint import MXIntFormat

PRESETS = preset_configs("mxint_linear")


def test_presets_cover_widths_block_sizes_and_outputs():
    assert len(PRESETS) >= 4
    assert {4, 6, 8} <= {c.element_width for c in PRESETS}
    assert {8, 16, 32} <= {c.block_size for c in PRESETS}
    assert {"fp32", "mxint"} <= {c.output_format for c in PRESETS}
    # one FP32 preset whose exponent range reaches FP32 subnormals and overflow (Inf)
    assert any(c.output_format == "fp32" and c.acc_lsb_exponent < -149 + 24
               and 2 * c.fmt.emax + (c.block_size * c.k_blocks).bit_length() > 128
               for c in PRESETS)


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_linear", **data}, source="t.yaml")
    return str(info.value)


def test_in_features_multiple_of_block_size():
    assert ("t.yaml: in_features: got 40; allowed: a multiple of block_size (32)"
            in _reject({"in_features": 40, "block_size": 32}))


def test_out_features_multiple_of_n_tile():
    assert ("t.yaml: out_features: got 10; allowed: a multiple of n_tile (4)"
            in _reject({"out_features": 10, "n_tile": 4}))


def test_accumulator_width_limit():
    msg = _reject({"exponent_width": 8, "element_width": 16, "in_features": 4096})
    assert "t.yaml: exponent_width: got 8; allowed: a smaller value: the exact accumulator" in msg
    assert "(limit 512)" in msg


def test_output_format_choices():
    assert "t.yaml: output_format: got 'bf16'; allowed: one of 'fp32', 'mxint'" in _reject(
        {"output_format": "bf16"})


# ------------------------------------------------------------------ constructor checks

_LINEAR = dict(in_features=16, n_tile=2, fmt=MXIntFormat(4, 8, 3))


@pytest.mark.parametrize("change,error,message", [
    ({"in_features": 0}, ValueError, "Input features must be a positive integer, not 0"),
    ({"in_features": 12}, ValueError,
     "Input features must be a multiple of the block size (8), not 12"),
    ({"n_tile": -1}, ValueError, "Outputs per tile must be a positive integer, not -1"),
    ({"fmt": None}, TypeError, "Format must be an MXIntFormat, not None"),
    ({"output_format": "bf16"}, ValueError,
     "Output format must be one of 'fp32', 'mxint', not 'bf16'"),
    ({"segment_bits": 1}, ValueError, "Segment bits must be an integer >= 2, not 1"),
    ({"segment_bits": 8.0}, ValueError, "Segment bits must be an integer >= 2, not 8.0"),
])
def test_linear_rejects_bad_arguments(change, error, message):
    with pytest.raises(error, match=re.escape(message)):
        MXIntLinear(**{**_LINEAR, **change})


def test_component_widths_follow_the_config():
    for c in PRESETS:
        unit = c.elaborate()
        assert c.parameters() == {"in_features": c.in_features, "n_tile": c.n_tile,
                                  "fmt": c.fmt, "output_format": c.output_format,
                                  "segment_bits": c.segment_bits}
        assert (unit.k_blocks, unit.acc_lsb_exponent, unit.acc_width, unit.bias_shift_max,
                unit.out_fmt) == (c.k_blocks, c.acc_lsb_exponent, c.acc_width,
                                  c.bias_shift_max, c.out_fmt)


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


FAST_CONFIGS = [
    {"block_size": 1, "in_features": 1, "n_tile": 1, "out_features": 1, "element_width": 2,
     "exponent_width": 2, "output_format": "fp32"},
    {"block_size": 1, "in_features": 1, "n_tile": 1, "out_features": 1, "element_width": 2,
     "exponent_width": 2, "output_format": "mxint", "rounding": "half_away"},
    # 7 exponent bits: products reach FP32 subnormals (2^-126 and below) and overflow to Inf
    {"block_size": 2, "in_features": 4, "n_tile": 2, "out_features": 2, "element_width": 3,
     "exponent_width": 7, "exponent_encoding": "biased", "output_format": "fp32"},
    # narrow carry segments: every accumulator, resolution and negation carry crosses many
    # segment boundaries
    {"block_size": 2, "in_features": 6, "n_tile": 2, "out_features": 2, "element_width": 4,
     "exponent_width": 3, "output_format": "mxint", "segment_bits": 3},
    {"block_size": 2, "in_features": 4, "n_tile": 1, "out_features": 1, "element_width": 3,
     "exponent_width": 4, "output_format": "fp32", "segment_bits": 2},
]


def check_fast(cfg, profile, seed=5):
    rng = np.random.default_rng(seed)
    jobs = corner_tiles(cfg) + [random_tile(cfg, rng) for _ in range(16)]
    beats = [beat for job in jobs for beat in tile_beats(cfg, job)]
    expected = [tile_expected(cfg, job) for job in jobs]
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile=profile, seed=seed)
    assert len(run.outputs["results"]) == len(expected) >= 20
    assert run.outputs["results"] == expected, f"{cfg!r} under {profile}"
    if profile == "smooth":     # no gaps or stalls: the stated latency, one beat per cycle
        ops, res = run.cycles["operands"], run.cycles["results"]
        assert res[0] - ops[cfg.k_blocks - 1] == cfg.latency == 13
        assert {b - a for a, b in zip(res, res[1:])} == {cfg.k_blocks}


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fields", FAST_CONFIGS, ids=lambda f: "-".join(map(str, f.values())))
def test_linear_fast(fields, profile):
    check_fast(config_from_dict({"kind": "mxint_linear", **fields}), profile)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("index", range(2))
def test_linear_fast_random_configs(config_seed, index, profile):
    check_fast(random_configs("mxint_linear", 1, config_seed + index)[0], profile, seed=index)


@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_linear_cosim(config):
    result = run_cosim(config, "cosim.mxint_linear")
    assert result.tests["random_and_corner_tiles"]["checked"] >= 200
    assert result.records("full_throughput")["cycles_between_tiles"] == [config.k_blocks]
    assert result.records("full_throughput")["latency"] == config.latency
