"""MXIntCast: config rules, constructor checks, the fast amaranth.sim tier and the bit-exact
cocotb regression over every preset."""
import re

import numpy as np
import pytest

from cosim.mxint_cast import cast_expected
from cosim.mxint_common import corner_float_blocks, random_float_block
from cosim.pysim import run_streams
from gen.cosim_run import preset_configs
from gen.cosim_run import run_cosim
from gen.config import config_from_dict
from gen.random_configs import random_configs
from gen.schema import ConfigError
from hw.mxint_cast import MXIntCast
from software_model.mxint import MXIntFormat

PRESETS = preset_configs("mxint_cast")


def test_presets_cover_widths_and_block_sizes():
    assert len(PRESETS) >= 4
    assert {4, 6, 8} <= {c.element_width for c in PRESETS}
    assert {8, 16, 32} <= {c.block_size for c in PRESETS}
    assert {"fp16", "bf16", "fp32"} <= {c.input_format for c in PRESETS}


@pytest.mark.parametrize("key,value,allowed", [
    ("input_format", "fp8", "one of 'fp16', 'bf16', 'fp32'"),
    ("element_width", 17, "integer 2 .. 16"),
    ("exponent_width", 1, "integer 2 .. 10"),
    ("rounding", "nearest", "one of 'half_even', 'half_away'"),
    ("exponent_encoding", "e8m0", "one of 'twos_complement', 'biased'"),
])
def test_config_rejects(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_cast", key: value}, source="t.yaml")
    assert f"t.yaml: {key}: got" in str(info.value) and allowed in str(info.value)


# ------------------------------------------------------------------ constructor checks

_CAST = dict(input_format="fp16", fmt=MXIntFormat(8, 8, 5))


@pytest.mark.parametrize("change,error,message", [
    ({"input_format": "fp8"}, ValueError,
     "Input format must be one of 'fp16', 'bf16', 'fp32', not 'fp8'"),
    ({"fmt": "mxint8"}, TypeError, "Format must be an MXIntFormat, not 'mxint8'"),
    ({"pipelined": 1}, ValueError, "Pipelined must be True or False, not 1"),
])
def test_cast_rejects_bad_arguments(change, error, message):
    with pytest.raises(error, match=re.escape(message)):
        MXIntCast(**{**_CAST, **change})


def test_config_maps_onto_parameters():
    cfg = config_from_dict({"kind": "mxint_cast", "input_format": "bf16", "block_size": 4,
                            "element_width": 5, "exponent_width": 3, "rounding": "half_away"})
    assert cfg.parameters() == {"input_format": "bf16",
                                "fmt": MXIntFormat(5, 4, 3, "half_away", "twos_complement"),
                                "pipelined": True}
    assert (cfg.latency, cfg.elaborate().latency) == (5, 5)
    flat = config_from_dict({"kind": "mxint_cast", "pipelined": False})
    assert (flat.latency, flat.elaborate().latency) == (2, 2)
    assert repr(cfg.elaborate()).startswith("MXIntCast(input_format='bf16', fmt=MXIntFormat(")


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


FAST_CONFIGS = [
    {"input_format": "fp32", "block_size": 1, "element_width": 2, "exponent_width": 2},
    {"input_format": "fp16", "block_size": 4, "element_width": 6, "exponent_width": 4,
     "exponent_encoding": "biased", "rounding": "half_even"},
    {"input_format": "bf16", "block_size": 3, "element_width": 5, "exponent_width": 4,
     "pipelined": False},
]


def check_fast(cfg, profile, seed=5):
    """Corner and random blocks through the cast in amaranth.sim: every block bit-exact."""
    k = cfg.block_size
    rng = np.random.default_rng(seed)
    blocks = corner_float_blocks(k, cfg.input_format)
    blocks += [random_float_block(rng, k, cfg.input_format) for _ in range(24)]
    expected = [cast_expected(cfg.fmt, cfg.input_format, bits) for bits in blocks]
    run = run_streams(cfg.elaborate(), {"values": [[int(b) for b in bits] for bits in blocks]},
                      {"blocks": len(expected)}, profile=profile, seed=seed)
    assert len(run.outputs["blocks"]) == len(expected) == 36
    assert run.outputs["blocks"] == expected, f"{cfg!r} under {profile}"
    if profile == "smooth":     # no gaps or stalls: the stated latency, one block per cycle
        ins, outs = run.cycles["values"], run.cycles["blocks"]
        assert outs[0] - ins[0] == cfg.latency == (5 if cfg.pipelined else 2)
        assert outs[-1] - outs[0] == len(expected) - 1


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fields", FAST_CONFIGS, ids=lambda f: "-".join(map(str, f.values())))
def test_cast_fast(fields, profile):
    check_fast(config_from_dict({"kind": "mxint_cast", **fields}), profile)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("index", range(2))
def test_cast_fast_random_configs(config_seed, index, profile):
    check_fast(random_configs("mxint_cast", 1, config_seed + index)[0], profile, seed=index)


@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_cast_cosim(config):
    result = run_cosim(config, "cosim.mxint_cast")
    assert result.tests["random_and_corner_blocks"]["checked"] >= 200
    throughput = result.records("full_throughput")
    assert throughput["max_cycles_between_results"] == 1
    assert throughput["latency"] == config.latency
    assert result.checked > 0
