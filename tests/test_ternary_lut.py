"""Ternary units (lut, addsub, multiplier): config rules, constructor checks, a quick Amaranth
simulation per architecture, and the Verilator/cocotb regression of every preset."""
import gc
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from cosim.runner import preset_configs, run_cosim
from cosim.ternary_lut import corner_jobs, expected_results, job_beats, random_activations, \
    random_weights
from gen.config import config_from_dict
from gen.schema import ConfigError
from hw.ternary_baseline import TernaryAddSubUnit
from hw.ternary_lut import TernaryLUTUnit


def make(**fields):
    return config_from_dict({"kind": "ternary_lut", **fields})


# ------------------------------------------------------------------ config rules (one per rule)

def test_rejects_acc_width_for_float():
    with pytest.raises(ConfigError, match=r"acc_width: got 24; allowed: null for fp16 "
                                          r"activations \(they accumulate in fp16\)"):
        make(activation="fp16", acc_width=24)


def test_rejects_acc_width_narrower_than_a_beat():
    with pytest.raises(ConfigError, match=r"acc_width: got 8; allowed: at least 12 \(one beat's "
                                          r"exact sum for int8, L=4, mu=3\), or null"):
        make(activation="int8", mu=3, lanes_l=4, acc_width=8)


def test_rejects_full_tables_without_tables():
    with pytest.raises(ConfigError, match=r"mirrored: got false; allowed: true for architecture "
                                          r"'multiplier' \(it has no tables\)"):
        make(architecture="multiplier", mirrored=False)


def test_rejects_mu_1_for_lut():
    with pytest.raises(ConfigError, match=r"mu: got 1; allowed: 2 .. 7 for architecture 'lut'"):
        make(mu=1)


def test_mu_1_is_fine_for_baselines():
    assert make(mu=1, architecture="addsub").beat_reduction == 4


@pytest.mark.parametrize("value", ["fp32", "int1", "int17", "uint8", 8])
def test_rejects_activation(value):
    with pytest.raises(ConfigError, match=r"activation: got .*; allowed: int2 .. int16, fp16 or "
                                          r"bf16"):
        make(activation=value)


@pytest.mark.parametrize("key,value,allowed", [
    ("mu", 8, "integer 1 .. 7"), ("lanes_l", 0, "integer 1 .. 64"),
    ("lanes_k", 65, "integer 1 .. 64"), ("architecture", "systolic", "one of 'lut', 'addsub'"),
])
def test_rejects_out_of_range(key, value, allowed):
    with pytest.raises(ConfigError, match=f"{key}: got .*; allowed: {allowed}"):
        make(**{key: value})


def test_every_problem_reported_at_once():
    with pytest.raises(ConfigError) as info:
        make(activation="bf16", acc_width=16, architecture="addsub", mirrored=False)
    assert [p.key for p in info.value.problems] == ["acc_width", "mirrored"]


def test_derived_facts():
    c = make(mu=5, lanes_l=2, lanes_k=3, activation="int8", max_reduction=1000)
    assert c.table_entries == 121 and c.table_adders == 116
    assert make(mu=5, mirrored=False).table_entries == 242
    assert c.table_entry_width == 11                     # |sum| <= 5 * 128
    assert c.accumulator_width == (1000 * 128).bit_length() + 1
    assert c.cycles(25, 7) == 3 * 3                      # ceil(25/10) * ceil(7/3)
    assert make(architecture="addsub").latency == 2 and c.latency == 3
    assert make(activation="fp16").accumulator_width == 16
    assert make(architecture="multiplier").weight_width == 8 and c.weight_width == 2


# ------------------------------------------------------------------ constructor checks

def _rejects(cls, config, match):
    with warnings.catch_warnings():     # the half-built component is never elaborated, by design
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=match):
            cls(config)
        gc.collect()


def test_unit_rejects_other_architecture():
    _rejects(TernaryLUTUnit, make(architecture="addsub"),
             "TernaryLUTUnit implements architecture 'lut', not 'addsub'")
    _rejects(TernaryAddSubUnit, make(), "TernaryAddSubUnit implements architecture 'addsub', "
                                        "not 'lut'")


def test_unit_rejects_invalid_config_object():
    import dataclasses
    bad = dataclasses.replace(make(), lanes_k=0)          # bypasses from_dict validation
    _rejects(TernaryLUTUnit, bad, "lanes_k must be a positive integer, not 0")
    bad = dataclasses.replace(make(activation="fp16"), acc_width=20)
    _rejects(TernaryLUTUnit, bad, "acc_width must be null for fp16")


def test_interface_widths():
    with warnings.catch_warnings():     # inspected, not elaborated
        warnings.simplefilter("ignore")
        unit = make(mu=3, lanes_l=2, lanes_k=4, activation="int8", acc_width=24).elaborate()
        layout = unit.operands.payload.shape()
        assert layout["activations"].shape.length == 6
        assert layout["weights"].shape.length == 24
        assert layout["weights"].shape.elem_shape.width == 2
        assert unit.results.payload.shape().elem_shape.width == 24
        mult = make(architecture="multiplier", activation="bf16").elaborate()
        assert mult.operands.payload.shape()["weights"].shape.elem_shape.width == 16
        del unit, mult
        gc.collect()


# ------------------------------------------------------------------ quick Amaranth simulation

def simulate(config, jobs, seed=0):
    """Drive jobs with random gaps and stalls through the Amaranth simulator; return results."""
    dut = config.elaborate()
    rng = np.random.default_rng(seed)
    got = []

    async def producer(ctx):
        for x, w in jobs:
            for payload in job_beats(config, x, w):
                ctx.set(dut.operands.payload, payload)
                ctx.set(dut.operands.valid, 1)
                await ctx.tick().until(dut.operands.ready)
                ctx.set(dut.operands.valid, 0)
                if rng.random() < 0.3:
                    await ctx.tick()

    async def consumer(ctx):
        for _ in jobs:
            ctx.set(dut.results.ready, 1)
            payload, = await ctx.tick().sample(dut.results.payload).until(dut.results.valid)
            got.append([int(payload[k]) for k in range(config.lanes_k)])
            ctx.set(dut.results.ready, 0)
            for _ in range(int(rng.integers(0, 3))):
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


@pytest.mark.parametrize("fields", [
    dict(mu=3, lanes_l=2, lanes_k=2, activation="int8"),
    dict(mu=2, lanes_l=3, lanes_k=2, activation="int4", mirrored=False, acc_width=8),
    dict(mu=2, lanes_l=2, lanes_k=2, activation="fp16"),
    dict(mu=2, lanes_l=1, lanes_k=3, activation="bf16", mirrored=False),
    dict(mu=2, lanes_l=2, lanes_k=2, activation="int8", architecture="addsub"),
    dict(mu=2, lanes_l=2, lanes_k=2, activation="bf16", architecture="addsub"),
    dict(mu=1, lanes_l=2, lanes_k=2, activation="int6", architecture="multiplier"),
    dict(mu=2, lanes_l=1, lanes_k=2, activation="fp16", architecture="multiplier"),
], ids=lambda f: "-".join(str(v) for v in f.values()))
def test_amaranth_simulation_matches_golden(fields):
    config = make(**fields)
    rng = np.random.default_rng(3)
    jobs = corner_jobs(config, rng)[:6]
    for _ in range(4):
        n = int(rng.integers(1, 3 * config.beat_reduction + 1))
        jobs.append((random_activations(rng, config, n),
                     random_weights(rng, config, n, config.lanes_k)))
    got = simulate(config, jobs)
    want = [expected_results(config, x, w) for x, w in jobs]
    assert len(got) == len(jobs) == 10
    if config.is_float:
        got = [[v & 0xFFFF for v in lane] for lane in got]
    assert got == want


# ------------------------------------------------------------------ Verilator co-simulation

CONFIGS = preset_configs("ternary_lut")


@pytest.mark.cosim
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_ternary_cosim(config):
    result = run_cosim(config, "cosim.ternary_lut")
    samples = result.tests["random_jobs"]["samples"]
    assert result.tests["random_jobs"]["checked"] == samples > 0
    corners = len(corner_jobs(config, np.random.default_rng(0)))
    assert result.tests["corner_cases"]["checked"] == corners
    assert result.tests["full_throughput"]["checked"] == 25
