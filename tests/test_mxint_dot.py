"""MXIntDotProduct: config rules, constructor checks, the fast amaranth.sim tier and the
bit-exact cocotb regression over every preset."""
import re

import numpy as np
import pytest

from cosim.mxint_dot import corner_pairs, pair_beat, pair_expected, random_pairs
from cosim.pysim import run_streams
from gen.cosim_run import preset_configs
from gen.cosim_run import run_cosim
from gen.config import config_from_dict
from gen.random_configs import random_configs
from gen.schema import ConfigError
from hw.mxint_dot import MXIntDotProduct
from software_model.mxint import MXIntFormat

PRESETS = preset_configs("mxint_dot")


def test_presets_cover_widths_and_block_sizes():
    assert len(PRESETS) >= 4
    assert {4, 6, 8} <= {c.element_width for c in PRESETS}
    assert {8, 16, 32} <= {c.block_size for c in PRESETS}
    assert {"twos_complement", "biased"} <= {c.exponent_encoding for c in PRESETS}


def test_result_widths_hold_the_extremes():
    # (-2^(w-1))^2 * k is the largest magnitude; both exponent extremes must fit the result field
    for c in PRESETS:
        f = c.fmt
        worst = (1 << (2 * f.element_width - 2)) * f.block_size
        assert worst <= (1 << (c.total_width - 1)) - 1
        assert -(1 << (c.result_exponent_width - 1)) <= 2 * f.emin
        assert 2 * f.emax <= (1 << (c.result_exponent_width - 1)) - 1


@pytest.mark.parametrize("key,value,allowed", [
    ("block_size", 0, "integer 1 .. 64"),
    ("element_width", 17, "integer 2 .. 16"),
    ("exponent_width", 1, "integer 2 .. 10"),
    ("rounding", "nearest", "one of 'half_even', 'half_away'"),
    ("exponent_encoding", "e8m0", "one of 'twos_complement', 'biased'"),
    ("tree_stages", 0, "integer 1 .. 6"),
    ("tree_stages", 7, "integer 1 .. 6"),
    ("tree_stages", True, "integer 1 .. 6"),
])
def test_config_rejects(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_dot", key: value}, source="t.yaml")
    assert f"t.yaml: {key}: got" in str(info.value) and allowed in str(info.value)


@pytest.mark.parametrize("block_size,stages,allowed", [
    (32, 6, "1 .. 5 (the adder tree of 32 products has 5 levels)"),
    (2, 2, "1 .. 1 (the adder tree of 2 products has 1 levels)"),
    (1, 2, "1 .. 1 (the adder tree of 1 products has 0 levels)"),
])
def test_config_rejects_more_tree_stages_than_levels(block_size, stages, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_dot", "block_size": block_size,
                          "tree_stages": stages}, source="t.yaml")
    assert f"t.yaml: tree_stages: got {stages}; allowed: {allowed}" in str(info.value)


def test_tree_stages_set_latency_and_cut_the_tree():
    for k, stages, levels in [(32, 1, [5]), (32, 2, [3, 2]), (32, 5, [1] * 5), (8, 2, [2, 1]),
                              (1, 1, [0])]:
        cfg = config_from_dict({"kind": "mxint_dot", "block_size": k, "tree_stages": stages})
        unit = cfg.elaborate()
        assert (cfg.latency, unit.latency) == (1 + stages, 1 + stages)
        assert unit.stage_levels() == levels


def test_component_widths_follow_the_config():
    for c in PRESETS:
        unit = c.elaborate()
        assert (unit.total_width, unit.result_exponent_width) == (c.total_width,
                                                                 c.result_exponent_width)


# ------------------------------------------------------------------ constructor checks

def test_dot_rejects_bad_format():
    with pytest.raises(TypeError, match=re.escape("Format must be an MXIntFormat, not 8")):
        MXIntDotProduct(fmt=8)


@pytest.mark.parametrize("stages", [0, 4, 1.0, True, None])
def test_dot_rejects_bad_tree_stages(stages):
    with pytest.raises(ValueError, match=re.escape(
            f"Tree stages must be an integer from 1 to 3 (the adder tree of 8 products has 3 "
            f"levels), not {stages!r}")):
        MXIntDotProduct(fmt=MXIntFormat(4, 8, 3, "half_even", "twos_complement"),
                        tree_stages=stages)


def test_config_maps_onto_parameters():
    cfg = config_from_dict({"kind": "mxint_dot", "block_size": 4, "element_width": 3,
                            "exponent_width": 2, "exponent_encoding": "biased"})
    assert cfg.parameters() == {"fmt": MXIntFormat(3, 4, 2, "half_even", "biased"),
                                "tree_stages": 1}


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


FAST_CONFIGS = [
    {"block_size": 1, "element_width": 2, "exponent_width": 2},
    {"block_size": 5, "element_width": 4, "exponent_width": 3, "exponent_encoding": "biased"},
    {"block_size": 7, "element_width": 3, "exponent_width": 3, "tree_stages": 2},
    {"block_size": 8, "element_width": 5, "exponent_width": 2, "tree_stages": 3},
]


def check_fast(cfg, profile, seed=5):
    pairs = corner_pairs(cfg.fmt) + random_pairs(cfg.fmt, np.random.default_rng(seed), 30)
    expected = [pair_expected(cfg.fmt, pair) for pair in pairs]
    run = run_streams(cfg.elaborate(), {"operands": [pair_beat(cfg.fmt, p) for p in pairs]},
                      {"results": len(expected)}, profile=profile, seed=seed)
    assert len(run.outputs["results"]) == len(expected) == 35
    assert run.outputs["results"] == expected, f"{cfg!r} under {profile}"
    if profile == "smooth":     # no gaps or stalls: the stated latency, one result per cycle
        ins, outs = run.cycles["operands"], run.cycles["results"]
        assert outs[0] - ins[0] == cfg.latency == 1 + cfg.tree_stages
        assert outs[-1] - outs[0] == len(expected) - 1


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fields", FAST_CONFIGS, ids=lambda f: "-".join(map(str, f.values())))
def test_dot_fast(fields, profile):
    check_fast(config_from_dict({"kind": "mxint_dot", **fields}), profile)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("index", range(2))
def test_dot_fast_random_configs(config_seed, index, profile):
    check_fast(random_configs("mxint_dot", 1, config_seed + index)[0], profile, seed=index)


@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_dot_cosim(config):
    result = run_cosim(config, "cosim.mxint_dot")
    assert result.tests["random_and_corner_blocks"]["checked"] >= 200
    throughput = result.records("full_throughput")
    assert throughput["max_cycles_between_results"] == 1
    assert throughput["latency"] == config.latency
    assert result.checked > 0
