"""MXIntAccumulator: config rules, constructor checks, the fast amaranth.sim tier and the
bit-exact cocotb regression over every preset."""
import re

import numpy as np
import pytest

from cosim.mxint_accumulator import corner_sums, random_sum, sum_expected, term_beats
from cosim.pysim import run_streams
from gen.cosim_run import run_cosim
from gen.cosim_run import preset_configs
from gen.config import config_from_dict
from gen.random_configs import random_configs
from gen.schema import ConfigError
from hw.mxint_accumulator import MXIntAccumulator

PRESETS = preset_configs("mxint_accumulator")


def test_presets_cover_both_modes_and_lane_counts():
    assert len(PRESETS) >= 4
    assert {"exact", "shift"} <= {c.mode for c in PRESETS}
    assert {1, 8, 16, 32} <= {c.lanes for c in PRESETS}


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_accumulator", **data}, source="t.yaml")
    return str(info.value)


def test_shift_mode_needs_acc_width():
    msg = _reject({"mode": "shift"})
    assert "t.yaml: acc_width: got null; allowed: an integer >= input_width (21)" in msg


def test_shift_mode_acc_width_at_least_input_width():
    msg = _reject({"mode": "shift", "input_width": 16, "acc_width": 12})
    assert "t.yaml: acc_width: got 12; allowed: an integer >= input_width (16)" in msg


def test_exact_mode_rejects_acc_width():
    msg = _reject({"mode": "exact", "acc_width": 32})
    assert "t.yaml: acc_width: got 32; allowed: null in exact mode" in msg


def test_exact_mode_width_limit():
    msg = _reject({"mode": "exact", "exponent_width": 9, "input_width": 64})
    assert "t.yaml: exponent_width: got 9; allowed: at most 8 here" in msg


def test_mode_choices():
    assert "t.yaml: mode: got 'round'; allowed: one of 'exact', 'shift'" in _reject(
        {"mode": "round"})


# ------------------------------------------------------------------ constructor checks

_ACC = dict(lanes=2, input_width=8, exponent_width=4)


@pytest.mark.parametrize("change,message", [
    ({"lanes": 0}, "Lanes must be a positive integer, not 0"),
    ({"input_width": 1}, "Input width must be an integer >= 2, not 1"),
    ({"exponent_width": "4"}, "Exponent width must be an integer >= 2, not '4'"),
    ({"mode": "round"}, "Mode must be one of 'exact', 'shift', not 'round'"),
    ({"mode": "shift", "acc_width": 7},
     "Accumulator width must be an integer >= input width (8) in shift mode, not 7"),
    ({"mode": "shift"},
     "Accumulator width must be an integer >= input width (8) in shift mode, not None"),
    ({"acc_width": 32}, "Accumulator width must be None in exact mode (the width follows from "
                        "the input and exponent widths and max_terms), not 32"),
    ({"max_terms": 0}, "Max terms must be a positive integer, not 0"),
    ({"segment_bits": 1}, "Segment bits must be an integer >= 2, not 1"),
])
def test_accumulator_rejects_bad_arguments(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MXIntAccumulator(**{**_ACC, **change})


def test_config_maps_onto_parameters():
    for c in PRESETS:
        unit = c.elaborate()
        assert (unit.sum_width, unit.exponent_min) == (c.sum_width, c.exponent_min)
        assert c.parameters() == {"lanes": c.lanes, "input_width": c.input_width,
                                  "exponent_width": c.exponent_width, "mode": c.mode,
                                  "acc_width": c.acc_width, "max_terms": c.max_terms,
                                  "segment_bits": c.segment_bits}
        assert unit.latency == c.latency == (4 if c.mode == "exact" else 1)


def test_shift_exponent_holds_the_longest_sum():
    """Regression: the shift-mode sum exponent had exponent_width + 2 bits, but negative terms
    (whose floor shift never reaches 0) renormalise again and again; 200 terms of -8 at the top
    exponent took the exponent of the narrow preset (acc_width 4) to 58, which wrapped to 12."""
    cfg = config_from_dict({"kind": "mxint_accumulator", "lanes": 1, "input_width": 4,
                            "exponent_width": 4, "mode": "shift", "acc_width": 4,
                            "max_terms": 200})
    exps, values = [7] * 200, np.full((200, 1), -8)
    expected = sum_expected(cfg, exps, values)
    run = run_streams(cfg.elaborate(), {"terms": term_beats(exps, values)}, {"sums": 1})
    assert run.outputs["sums"] == [expected]
    assert expected["exponent"] > (1 << (cfg.exponent_width + 1)) - 1   # beyond the old field


def _worst_shift_exponents(acc_width, input_width, exponent_width, terms):
    """Largest exponent reachable after 1 .. terms terms, by exhaustive search over the
    (exponent, accumulator) states of one lane (a renormalisation shifts every lane, and every
    lane obeys the same bounds), following mxint_accumulate's shift rule."""
    lo_e, hi_e = -(1 << (exponent_width - 1)), (1 << (exponent_width - 1)) - 1
    values = range(-(1 << (input_width - 1)), 1 << (input_width - 1))
    lo, hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    states = {(e, v) for e in range(lo_e, hi_e + 1) for v in values}
    worst = [hi_e]
    for _ in range(terms - 1):
        reached = set()
        for exponent, acc in states:
            for e in range(lo_e, hi_e + 1):
                for v in values:
                    top = max(exponent, e)
                    s = (acc >> (top - exponent)) + (v >> (top - e))
                    reached.add((top + 1, s >> 1) if not lo <= s <= hi else (top, s))
        states = reached
        worst.append(max(e for e, _ in states))
    return worst


@pytest.mark.parametrize("input_width,acc_width", [(2, 2), (2, 3), (2, 4), (3, 3), (3, 5)])
def test_shift_exponent_bound_holds_every_reachable_exponent(input_width, acc_width):
    """The component's bound on the shift-mode exponent (which sizes its exponent field) is
    never below what some sequence of terms reaches, for every sum length up to 12 (and is
    reached exactly with 2-bit inputs in a 2-bit accumulator)."""
    worst = _worst_shift_exponents(acc_width, input_width, 2, 12)
    bounds = []
    for terms, reached in enumerate(worst, start=1):
        unit = MXIntAccumulator(lanes=1, input_width=input_width, exponent_width=2,
                                mode="shift", acc_width=acc_width, max_terms=terms)
        bounds.append(unit.shift_exponent_max())
        assert unit.shift_exponent_max() <= (1 << (unit.sum_exponent_width - 1)) - 1
    assert all(r <= b for r, b in zip(worst, bounds)), (worst, bounds)
    if input_width == acc_width == 2:
        assert worst == bounds


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


FAST_CONFIGS = [
    {"lanes": 1, "input_width": 2, "exponent_width": 2, "max_terms": 1},
    # narrow carry segments: sums cross many segment boundaries, carries pending at the end
    {"lanes": 2, "input_width": 4, "exponent_width": 3, "max_terms": 16, "segment_bits": 3},
    {"lanes": 1, "input_width": 5, "exponent_width": 4, "max_terms": 12, "segment_bits": 2},
    {"lanes": 1, "input_width": 2, "exponent_width": 2, "mode": "shift", "acc_width": 2},
    {"lanes": 3, "input_width": 5, "exponent_width": 3, "mode": "shift", "acc_width": 7},
]


def check_fast(cfg, profile, seed=5):
    rng = np.random.default_rng(seed)
    longest = min(12, cfg.max_terms)
    jobs = corner_sums(cfg) + [random_sum(cfg, rng, int(rng.integers(1, longest + 1)))
                               for _ in range(16)]
    beats = [beat for exps, values in jobs for beat in term_beats(exps, values)]
    expected = [sum_expected(cfg, exps, values) for exps, values in jobs]
    run = run_streams(cfg.elaborate(), {"terms": beats}, {"sums": len(expected)},
                      profile=profile, seed=seed)
    assert len(run.outputs["sums"]) == len(expected) >= 18
    assert run.outputs["sums"] == expected, f"{cfg!r} under {profile}"
    if profile == "smooth":     # no gaps or stalls: each sum the latency after its last term
        ins, outs = run.cycles["terms"], run.cycles["sums"]
        ends = np.cumsum([len(exps) for exps, _ in jobs]) - 1
        assert [o - ins[e] for o, e in zip(outs, ends)] == [cfg.latency] * len(jobs)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fields", FAST_CONFIGS, ids=lambda f: "-".join(map(str, f.values())))
def test_accumulator_fast(fields, profile):
    check_fast(config_from_dict({"kind": "mxint_accumulator", **fields}), profile)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("index", range(2))
def test_accumulator_fast_random_configs(config_seed, index, profile):
    check_fast(random_configs("mxint_accumulator", 1, config_seed + index)[0], profile,
               seed=index)


@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_accumulator_cosim(config):
    result = run_cosim(config, "cosim.mxint_accumulator")
    assert result.tests["random_and_corner_sums"]["checked"] >= 200
    assert result.records("one_term_per_cycle")["cycles_between_sums"] == [4]
    assert result.records("one_term_per_cycle")["latency"] == config.latency
