"""Ternary units (lut, addsub, multiplier): config rules, constructor checks, the fast
amaranth.sim tier of every architecture, and the Verilator/cocotb regression of every preset."""
import re

import numpy as np
import pytest
from amaranth import Module

from cosim.pysim import run_streams
from gen.cosim_run import preset_configs, run_cosim
from cosim.ternary_lut import corner_jobs, expected_results, job_beats, random_activations, \
    random_weights
from gen.config import config_from_dict
from gen.random_configs import random_configs
from gen.schema import ConfigError
from hw.primitives import adder_tree
from hw.ternary_baseline import TernaryAddSubUnit, TernaryMultiplierUnit
from hw.ternary_lut import TernaryLUTUnit
from software_model.ternary import pairwise_sum_order


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

_UNIT = dict(mu=2, lanes_l=2, lanes_k=2, activation="int8", acc_width=16)


@pytest.mark.parametrize("cls", [TernaryLUTUnit, TernaryAddSubUnit, TernaryMultiplierUnit])
@pytest.mark.parametrize("change,message", [
    ({"mu": 0}, "Mu must be a positive integer, not 0"),
    ({"lanes_l": 0}, "Lanes L must be a positive integer, not 0"),
    ({"lanes_k": "2"}, "Lanes K must be a positive integer, not '2'"),
    ({"activation": "fp32"}, "Activation must be int2 .. int16, fp16 or bf16, not 'fp32'"),
    ({"acc_width": None}, "Accumulator width must be an integer >= "),
    ({"activation": "fp16", "acc_width": 24},
     "Accumulator width must be None for fp16 activations (they accumulate in fp16), not 24"),
])
def test_units_reject_bad_arguments(cls, change, message):
    if cls is TernaryLUTUnit and "mu" in change:
        message = "Mu must be an integer from 2 to 8 for the LUT unit, not 0"
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**{**_UNIT, **change})


@pytest.mark.parametrize("cls,need", [(TernaryLUTUnit, 11), (TernaryAddSubUnit, 11),
                                      (TernaryMultiplierUnit, 18)])
def test_units_reject_accumulator_narrower_than_a_beat(cls, need):
    # one beat of 4 int8 terms: |sum| <= 4 * 128, or 4 * 128^2 with full-range multiplier weights
    with pytest.raises(ValueError, match=re.escape(
            f"Accumulator width must be an integer >= {need} (one beat's exact sum) for int8 "
            f"activations, not {need - 1}")):
        cls(**{**_UNIT, "acc_width": need - 1})
    cls(**{**_UNIT, "acc_width": need})


@pytest.mark.parametrize("cls", [TernaryLUTUnit, TernaryAddSubUnit, TernaryMultiplierUnit])
def test_units_reject_bad_pipeline_float_adds(cls):
    with pytest.raises(ValueError, match=re.escape(
            "Pipeline float adds must be True or False, not 'yes'")):
        cls(**{**_UNIT, "pipeline_float_adds": "yes"})


def test_latency_follows_the_pipelining():
    """One stage per level of float adds (table build, lane trees) when pipelined, and the
    accumulation's S - 1 + S * ceil(log2 S) stages (11 at the float default S = 4)."""
    one = {"accumulator_stages": 1, "float_add_stages": 2}     # the earlier layout
    assert make(mu=3, lanes_l=3, activation="int8").latency == 3           # integers: as before
    assert make(mu=3, lanes_l=3, activation="fp16", pipeline_float_adds=False,
                **one).latency == 3
    # two stages per float add (a register inside it, one after it)
    assert make(mu=3, lanes_l=3, activation="fp16", **one).latency == 1 + 2 * 2 + 2 * 2
    assert make(mu=4, lanes_l=1, activation="fp16", **one).latency == 1 + 2 * 3 + 1
    assert make(architecture="multiplier", mu=2, lanes_l=3, activation="fp16",
                **one).latency == 8
    assert make(architecture="addsub", mu=2, lanes_l=2, activation="bf16", **one).latency == 5
    assert make(architecture="addsub", mu=2, lanes_l=2, activation="int8").latency == 2
    # the default float accumulation: 3 + 4 * 2 more; S = 2: 1 + 2; S = 3: 2 + 3 * 2
    two = {"float_add_stages": 2}
    assert make(mu=3, lanes_l=3, activation="fp16", **two).latency == 9 + 11
    assert make(mu=3, lanes_l=3, activation="fp16", accumulator_stages=2, **two).latency == 9 + 3
    assert make(mu=3, lanes_l=3, activation="fp16", accumulator_stages=3, **two).latency == 9 + 8
    # the default beat path: four stages per float add (build 2 levels, tree 2 levels)
    assert make(mu=3, lanes_l=3, activation="fp16", accumulator_stages=1).latency == 1 + 16
    assert make(mu=3, lanes_l=3, activation="fp16", float_add_stages=1,
                accumulator_stages=1).latency == 1 + 4
    assert make(mu=4, lanes_l=1, activation="fp16", float_add_stages=3,
                accumulator_stages=1).latency == 1 + 3 * 3 + 1
    # multiplier: products in three stages from float_add_stages 3 on
    assert make(architecture="multiplier", mu=2, lanes_l=3, activation="fp16",
                float_add_stages=3, accumulator_stages=1).latency == 1 + 3 + 3 * 3
    assert make(mu=3, lanes_l=3, activation="fp16").latency == 1 + 16 + 11
    for adds in (1, 2, 3, 4):
        for stages in (1, 2, 3, 4):
            for arch in ("lut", "addsub", "multiplier"):
                c = make(architecture=arch, mu=2, lanes_l=2, activation="bf16",
                         float_add_stages=adds, accumulator_stages=stages)
                assert c.elaborate().latency == c.latency


@pytest.mark.parametrize("key,activation,value", [
    (key, activation, value) for key, activation in (("accumulator_stages", "fp16"),
                                                     ("float_add_stages", "bf16"))
    for value in (0, 5, True, False)])
def test_config_rejects_bad_float_stage_counts(key, activation, value):
    shown = str(value).lower() if isinstance(value, bool) else repr(value)   # YAML spelling
    with pytest.raises(ConfigError, match=re.escape(
            f"t.yaml: {key}: got {shown}; allowed: integer 1 .. 4")):
        config_from_dict({"kind": "ternary_lut", "activation": activation, key: value},
                         source="t.yaml")


def test_config_rejects_float_add_stages_for_integers():
    with pytest.raises(ConfigError, match=re.escape(
            "t.yaml: float_add_stages: got 3; allowed: null for int4 activations")):
        config_from_dict({"kind": "ternary_lut", "activation": "int4",
                          "float_add_stages": 3}, source="t.yaml")


@pytest.mark.parametrize("cls", [TernaryLUTUnit, TernaryAddSubUnit, TernaryMultiplierUnit])
@pytest.mark.parametrize("value", [0, 5, True, "2"])
def test_units_reject_bad_float_add_stages(cls, value):
    with pytest.raises(ValueError, match=re.escape(
            f"Float add stages must be an integer from 1 to 4, not {value!r}")):
        cls(**{**_UNIT, "float_add_stages": value})


def test_config_rejects_accumulator_stages_for_integers():
    with pytest.raises(ConfigError, match=re.escape(
            "t.yaml: accumulator_stages: got 2; allowed: null or 1 for int8 activations")):
        config_from_dict({"kind": "ternary_lut", "activation": "int8",
                          "accumulator_stages": 2}, source="t.yaml")
    assert make(activation="int8", accumulator_stages=1).accumulators == 1
    assert make(activation="bf16").accumulators == 4


@pytest.mark.parametrize("cls", [TernaryLUTUnit, TernaryAddSubUnit, TernaryMultiplierUnit])
@pytest.mark.parametrize("activation,value,allowed", [
    ("fp16", 0, "an integer from 1 to 4"), ("fp16", 5, "an integer from 1 to 4"),
    ("bf16", True, "an integer from 1 to 4"), ("bf16", 2.0, "an integer from 1 to 4"),
    ("int8", 2, "1 for int8 activations (an integer add is one adder deep)"),
])
def test_units_reject_bad_accumulator_stages(cls, activation, value, allowed):
    acc = None if activation != "int8" else 32
    with pytest.raises(ValueError, match=re.escape(
            f"Accumulator stages must be {allowed}, not {value!r}")):
        cls(**{**_UNIT, "activation": activation, "acc_width": acc,
               "accumulator_stages": value})


def test_lut_unit_rejects_mu_1_and_bad_mirrored():
    with pytest.raises(ValueError, match="Mu must be an integer from 2 to 8 for the LUT unit, "
                                         "not 1"):
        TernaryLUTUnit(**{**_UNIT, "mu": 1})
    with pytest.raises(ValueError, match="Mirrored must be True or False, not 1"):
        TernaryLUTUnit(**_UNIT, mirrored=1)


@pytest.mark.parametrize("architecture", ["lut", "addsub", "multiplier"])
def test_config_maps_onto_parameters(architecture):
    c = make(architecture=architecture, mu=2, lanes_l=3, lanes_k=2, activation="int6",
             max_reduction=100)
    want = {"mu": 2, "lanes_l": 3, "lanes_k": 2, "activation": "int6",
            "acc_width": c.accumulator_width, "pipeline_float_adds": True}
    if architecture == "lut":
        want["mirrored"] = True
    assert c.parameters() == want
    floats = make(architecture=architecture, activation="fp16").parameters()
    assert (floats["float_add_stages"], floats["accumulator_stages"]) == (4, 4)
    unit = c.elaborate()
    assert unit.result_shape.width == c.accumulator_width
    assert make(activation="bf16", architecture=architecture).parameters()["acc_width"] is None
    if architecture == "lut":
        assert unit.table_entry_width == c.table_entry_width


def test_interface_widths():
    unit = make(mu=3, lanes_l=2, lanes_k=4, activation="int8", acc_width=24).elaborate()
    layout = unit.operands.payload.shape()
    assert layout["activations"].shape.length == 6
    assert layout["weights"].shape.length == 24
    assert layout["weights"].shape.elem_shape.width == 2
    assert unit.results.payload.shape().elem_shape.width == 24
    mult = make(architecture="multiplier", activation="bf16").elaborate()
    assert mult.operands.payload.shape()["weights"].shape.elem_shape.width == 16


def test_adder_tree_order_is_the_golden_models():
    """hw.primitives.adder_tree and software_model.ternary sum in the same pairwise order (it
    matters: float adds round), for every count of terms up to 40."""
    for count in range(1, 41):
        terms = list(range(count))
        hw_order = adder_tree(Module(), terms, add=lambda a, b: (a, b))
        golden = terms
        for level in pairwise_sum_order(count):
            golden = [golden[i] if j is None else (golden[i], golden[j]) for i, j in level]
        assert hw_order == golden[0]


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


FAST_CONFIGS = [
    dict(mu=2, lanes_l=1, lanes_k=1, activation="int2"),                     # smallest LUT
    dict(mu=3, lanes_l=2, lanes_k=2, activation="int8"),
    dict(mu=2, lanes_l=3, lanes_k=2, activation="int4", mirrored=False, acc_width=8),
    dict(mu=2, lanes_l=2, lanes_k=1, activation="fp16"),
    dict(mu=2, lanes_l=1, lanes_k=2, activation="bf16", mirrored=False),
    dict(mu=1, lanes_l=1, lanes_k=1, activation="int2", architecture="addsub"),   # smallest
    dict(mu=3, lanes_l=2, lanes_k=1, activation="int3", architecture="addsub", acc_width=6),
    dict(mu=2, lanes_l=2, lanes_k=1, activation="bf16", architecture="addsub"),
    dict(mu=1, lanes_l=1, lanes_k=1, activation="int2", architecture="multiplier"),
    dict(mu=2, lanes_l=2, lanes_k=3, activation="int5", architecture="multiplier"),
    dict(mu=2, lanes_l=1, lanes_k=1, activation="fp16", architecture="multiplier"),
    # pipelined float adds: a two-level table build and a two-level tree with an odd term,
    # a three-level product tree, and the same without the registers
    dict(mu=3, lanes_l=3, lanes_k=1, activation="fp16"),
    dict(mu=2, lanes_l=3, lanes_k=1, activation="fp16", architecture="multiplier"),
    dict(mu=3, lanes_l=2, lanes_k=1, activation="bf16", pipeline_float_adds=False),
    # the accumulation loop cut into 2, 3 (an odd partial waits in the tree) and 1 stages
    dict(mu=2, lanes_l=1, lanes_k=2, activation="fp16", accumulator_stages=2),
    dict(mu=2, lanes_l=2, lanes_k=1, activation="bf16", architecture="addsub",
         accumulator_stages=3),
    dict(mu=2, lanes_l=1, lanes_k=1, activation="bf16", accumulator_stages=1),
    # beat-path adds in one and three stages; the earlier layout (two, one running sum)
    dict(mu=3, lanes_l=2, lanes_k=1, activation="fp16", float_add_stages=1),
    dict(mu=2, lanes_l=3, lanes_k=1, activation="bf16", architecture="multiplier",
         float_add_stages=3, accumulator_stages=2),
    dict(mu=2, lanes_l=2, lanes_k=2, activation="fp16", float_add_stages=2,
         accumulator_stages=1),
]


def check_fast(config, profile, seed=3):
    """Corner jobs (every other one for floats: -0, extremes, Inf - Inf, NaN, cancellation; all
    of them for ints, wrap-around included) and random jobs, every result bit-exact."""
    rng = np.random.default_rng(seed)
    jobs = corner_jobs(config, rng)
    if config.is_float:
        jobs = jobs[1::2]
    for _ in range(4):
        n = int(rng.integers(1, 3 * config.beat_reduction + 1))
        jobs.append((random_activations(rng, config, n),
                     random_weights(rng, config, n, config.lanes_k)))
    beats = [beat for x, w in jobs for beat in job_beats(config, x, w)]
    expected = [expected_results(config, x, w) for x, w in jobs]
    run = run_streams(config.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile=profile, seed=seed)
    assert len(run.outputs["results"]) == len(expected) >= 10
    assert run.outputs["results"] == expected, f"{config!r} under {profile}"
    if profile == "smooth":
        # no gaps or stalls: each job's results leave latency + 1 cycles after its last beat is
        # taken (the config's latency counts from the operand registers, a cycle later)
        ops, res = run.cycles["operands"], run.cycles["results"]
        ends = np.cumsum([len(job_beats(config, x, w)) for x, w in jobs]) - 1
        assert [r - ops[e] for r, e in zip(res, ends)] == [config.latency + 1] * len(jobs)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fields", FAST_CONFIGS, ids=lambda f: "-".join(map(str, f.values())))
def test_units_fast(fields, profile):
    check_fast(make(**fields), profile)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("index", range(2))
def test_units_fast_random_configs(config_seed, index, profile):
    check_fast(random_configs("ternary_lut", 1, config_seed + index)[0], profile, seed=index)


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
    assert result.tests["full_throughput"]["checked"] == 26     # 24 jobs, rate, latency
    assert result.records("full_throughput")["latency"] == config.latency + 1
