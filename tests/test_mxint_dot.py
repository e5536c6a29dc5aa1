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
])
def test_config_rejects(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_dot", key: value}, source="t.yaml")
    assert f"t.yaml: {key}: got" in str(info.value) and allowed in str(info.value)


def test_component_widths_follow_the_config():
    for c in PRESETS:
        unit = c.elaborate()
        assert (unit.total_width, unit.result_exponent_width) == (c.total_width,
                                                                 c.result_exponent_width)


# ------------------------------------------------------------------ constructor checks

def test_dot_rejects_bad_format():
    with pytest.raises(TypeError, match=re.escape("Format must be an MXIntFormat, not 8")):
        MXIntDotProduct(fmt=8)


def test_config_maps_onto_parameters():
    cfg = config_from_dict({"kind": "mxint_dot", "block_size": 4, "element_width": 3,
                            "exponent_width": 2, "exponent_encoding": "biased"})
    assert cfg.parameters() == {"fmt": MXIntFormat(3, 4, 2, "half_even", "biased")}


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


FAST_CONFIGS = [
    {"block_size": 1, "element_width": 2, "exponent_width": 2},
    {"block_size": 5, "element_width": 4, "exponent_width": 3, "exponent_encoding": "biased"},
]


def check_fast(cfg, profile, seed=5):
    pairs = corner_pairs(cfg.fmt) + random_pairs(cfg.fmt, np.random.default_rng(seed), 30)
    expected = [pair_expected(cfg.fmt, pair) for pair in pairs]
    run = run_streams(cfg.elaborate(), {"operands": [pair_beat(cfg.fmt, p) for p in pairs]},
                      {"results": len(expected)}, profile=profile, seed=seed)
    assert len(run.outputs["results"]) == len(expected) == 35
    assert run.outputs["results"] == expected, f"{cfg!r} under {profile}"


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
    assert result.checked > 0
