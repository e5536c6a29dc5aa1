"""MXInt GELU: golden model properties, argument and config rejections, the amaranth.sim fast tier
and the cocotb regression over every preset."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cosim.mxint_nonlinear import block_payload, corner_blocks, random_block
from cosim.pysim import run_streams
from gen.cosim_run import preset_configs, run_cosim
from gen.config import config_from_dict
from gen.schema import ConfigError
from hw.mxint_gelu import MXIntGELU
from software_model.mxint import MXIntFormat, quantize_mxint
from software_model.mxint_fixed import mxint_values
from software_model.mxint_gelu import (GELU_ARGMIN, GeluSpec, gelu_erf64, gelu_error_bound,
                                       gelu_fixed, gelu_monotone_from, mxint_gelu,
                                       reference_gelu)

PRESETS = preset_configs("mxint_gelu")
F8 = MXIntFormat(8, 8)


# ---------------------------------------------------------------- golden model

def test_known_values_default_spec():
    spec = GeluSpec(F8, F8)
    x = np.array([-4.0, -1.0, 0.0, 0.5, 1.0, 3.0, 5.0, -5.0])
    xq = np.round(x * 2 ** spec.frac_bits).astype(np.int64)
    y = gelu_fixed(xq, spec) / 2.0 ** spec.out_frac_bits
    # within the polynomial's exhaustive error of the exact values; x above the range passes,
    # below it gives 0
    err = spec.poly.max_error()
    assert np.all(np.abs(y[:6] - gelu_erf64(x[:6])) <= err + 1e-12)
    assert y[6] == 5.0 and y[7] == 0.0
    assert y[2] == 0.0


@pytest.mark.parametrize("kw", [{}, dict(degree=1, segment_bits=5), dict(degree=0, segment_bits=8),
                                dict(frac_bits=6, out_frac_bits=8, segment_bits=3)])
def test_monotone_where_gelu_is(kw):
    """Exhaustive over the input grid: non-increasing up to near the minimum at -0.7518,
    non-decreasing after it, except in a window no wider than one segment (or 1/8) around it."""
    spec = GeluSpec(F8, F8, **kw)
    lo, hi = gelu_monotone_from(spec)
    seg = 2.0 ** (spec.range_bits + 1) / 2 ** spec.segment_bits
    window = max(seg, 0.125)
    assert lo >= GELU_ARGMIN - window and hi <= GELU_ARGMIN + window, (lo, hi)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from([(8, 8), (6, 16), (4, 4)]),
       st.integers(0, 2))
def test_error_bound_holds(seed, fmt, degree):
    w, k = fmt
    f = MXIntFormat(w, k)
    spec = GeluSpec(f, f, degree=degree, segment_bits=4 + (degree == 0) * 4)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20, k)) * 2.0 ** rng.integers(-3, 5, size=(20, 1))
    q = quantize_mxint(x, f)
    oe, om = mxint_gelu(q.exponents, q.mantissas, spec)
    y = mxint_values(oe, om, spec.out_fmt)
    ref = reference_gelu(q.exponents, q.mantissas, spec)
    assert np.all(np.abs(y - ref) <= gelu_error_bound(spec, oe))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-(2 ** 10), 2 ** 10), min_size=2, max_size=50))
def test_monotone_within_a_block(codes):
    """Inside one output block (one shared exponent) a larger input never gives a smaller
    output, where GELU is increasing."""
    spec = GeluSpec(F8, F8)
    x = np.sort(np.array(codes)) / 64.0
    x = x[x >= GELU_ARGMIN + 0.0625][:8]
    if len(x) < 2:
        return
    x = np.concatenate([x, np.full(8 - len(x), x[-1])])
    q = quantize_mxint(x, F8)
    oe, om = mxint_gelu(q.exponents, q.mantissas, spec)
    xv = mxint_values(q.exponents, q.mantissas, F8)[0]
    order = np.argsort(xv, kind="stable")
    assert np.all(np.diff(om[0][order]) >= 0)


def test_saturating_and_extreme_inputs():
    spec = GeluSpec(F8, F8)
    e = np.array([F8.emax, F8.emax, F8.emin, 0])
    m = np.array([[127] * 8, [-128] * 8, [-128] * 8, [0] * 8])
    oe, om = mxint_gelu(e, m, spec)
    top = (1 << spec.int_bits) - 2.0 ** -spec.frac_bits      # x saturates to just below 2^8
    assert np.allclose(mxint_values(oe, om, F8)[0], top, rtol=2 ** -6)
    assert np.all(om[1] == 0) and np.all(om[3] == 0)
    # a tiny negative input floors to -2^-F, whose GELU is about -2^-(F+1): not zero
    tiny = mxint_values(oe, om, F8)[2]
    assert np.all(np.abs(tiny - gelu_erf64(-2.0 ** -spec.frac_bits))
                  <= spec.poly.max_error() + 2.0 ** -spec.out_frac_bits)


@pytest.mark.parametrize("kw, message", [
    (dict(frac_bits=0), "frac_bits must be an integer from 1 to 16, not 0"),
    (dict(int_bits=17), "int_bits must be an integer from 1 to 16, not 17"),
    (dict(range_bits=5), "range_bits must be an integer from 0 to 4, not 5"),
    (dict(degree=3), "degree must be an integer from 0 to 2, not 3"),
    (dict(segment_bits=12), "segment_bits must be an integer from 0 to 11, not 12"),
    (dict(out_frac_bits=4), "out_frac_bits must be an integer from 8 to 20, not 4"),
])
def test_spec_rejects(kw, message):
    with pytest.raises(ValueError, match=message):
        GeluSpec(F8, F8, **kw)


def test_spec_rejects_block_size_mismatch():
    with pytest.raises(ValueError, match="out_fmt block size must equal in_fmt's"):
        GeluSpec(F8, MXIntFormat(8, 4))


# ---------------------------------------------------------------- component arguments

@pytest.mark.parametrize("kw, error, message", [
    (dict(in_format="mxint8"), TypeError, "Format must be an MXIntFormat, not 'mxint8'"),
    (dict(out_format=None), TypeError, "Format must be an MXIntFormat, not None"),
    (dict(frac_bits=-1), ValueError, "frac_bits must be an integer from 1 to 16, not -1"),
    (dict(int_bits=0), ValueError, "int_bits must be an integer from 1 to 16, not 0"),
    (dict(range_bits=9), ValueError, "range_bits must be an integer from 0 to 4, not 9"),
    (dict(segment_bits=-2), ValueError, "segment_bits must be an integer from 0 to 11, not -2"),
    (dict(degree=5), ValueError, "degree must be an integer from 0 to 2, not 5"),
    (dict(out_frac_bits=2), ValueError, "out_frac_bits must be an integer from 8 to 20, not 2"),
    (dict(tree_levels=0), ValueError, "tree_levels must be an integer from 1 to 8, not 0"),
    (dict(multiplier_chunk_bits=2), ValueError,
     "multiplier_chunk_bits must be None or an integer from 4 to 32, not 2"),
])
def test_component_rejects(kw, error, message):
    args = dict(in_format=F8, out_format=F8)
    args.update(kw)
    with pytest.raises(error, match=message):
        MXIntGELU(**args)


def test_component_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        MXIntGELU(F8, F8)


# ---------------------------------------------------------------- configs

def test_presets_cover_degrees_widths_and_blocks():
    assert len(PRESETS) >= 3
    assert {0, 1, 2} <= {c.degree for c in PRESETS}
    assert len({c.block_size for c in PRESETS}) >= 3
    assert len({c.element_width for c in PRESETS}) >= 2


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_gelu", **data}, source="t.yaml")
    return str(info.value)


@pytest.mark.parametrize("data, text", [
    ({"degree": 3}, "t.yaml: degree: got 3; allowed: integer 0 .. 2"),
    ({"range_bits": 6, "int_bits": 4},
     "t.yaml: range_bits: got 6; allowed: integer 0 .. 4"),
    ({"range_bits": 3, "int_bits": 2}, "t.yaml: range_bits: got 3; allowed: at most int_bits (2)"),
    ({"frac_bits": 16, "range_bits": 4}, "t.yaml: frac_bits: got 16; allowed: at most 15"),
    ({"segment_bits": 15}, "t.yaml: segment_bits: got 15; allowed: at most range_bits + 1 + "
                           "frac_bits (11)"),
    ({"out_frac_bits": 6}, "t.yaml: out_frac_bits: got 6; allowed: at least frac_bits (8)"),
    ({"multiplier_chunk_bits": 3}, "t.yaml: multiplier_chunk_bits: got 3; allowed: integer "
                                   "4 .. 32, or null"),
    ({"rounding": "nearest"}, "t.yaml: rounding: got 'nearest'; allowed: one of 'half_even', "
                              "'half_away'"),
])
def test_config_rejects(data, text):
    assert text in _reject(data)


# ---------------------------------------------------------------- fast tier (amaranth.sim)

SMALL = dict(in_format=MXIntFormat(8, 4, 6), out_format=MXIntFormat(6, 4, 6), frac_bits=6,
             int_bits=5, range_bits=2, segment_bits=3, degree=2, out_frac_bits=8)


@pytest.mark.parametrize("profile", ["smooth", "mild", "backpressure", "bursty", "starved"])
@pytest.mark.parametrize("variant", [{}, dict(degree=0, segment_bits=6),
                                     dict(degree=1, tree_levels=1, multiplier_chunk_bits=4)])
def test_pysim_matches_golden(profile, variant):
    args = {**SMALL, **variant}
    dut = MXIntGELU(**args)
    spec = dut.spec
    rng = np.random.default_rng(len(variant))
    blocks = corner_blocks(spec.in_fmt) + [random_block(rng, spec.in_fmt, centre=0, spread=4)
                                           for _ in range(40)]
    beats = [block_payload(e, m, spec.in_fmt) for e, m in blocks]
    run = run_streams(dut, {"blocks": beats}, {"results": len(beats)}, profile=profile, seed=5)
    oe, om = mxint_gelu(np.array([e for e, _ in blocks]), np.array([m for _, m in blocks]), spec)
    want = [block_payload(e, m, spec.out_fmt) for e, m in zip(oe, om)]
    assert run.outputs["results"] == want
    if profile == "smooth":
        assert run.cycles["results"][0] - run.cycles["blocks"][0] == dut.latency
        assert np.all(np.diff(run.cycles["results"]) == 1)


# ---------------------------------------------------------------- cocotb + Verilator

@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_gelu_cosim(config):
    result = run_cosim(config, "cosim.mxint_gelu")
    assert result.tests["random_and_corner_blocks"]["checked"] >= 200
    stress = [t for name, t in result.tests.items() if name.startswith("stress")]
    assert len(stress) == 4 and all(t["checked"] >= 16 for t in stress)
    assert result.records("full_throughput")["max_cycles_between_results"] == 1
    assert result.records("full_throughput")["latency"] == config.elaborate().latency


# ---------------------------------------------------------------- synthesis (every nonlinear unit)

def _smallest(kind):
    """The preset of ``kind`` with the fewest estimated cells: synthesizing all nine nonlinear
    presets takes about 15 minutes of CPU, so `make test` checks the smallest of each kind and
    `accelgen bench depth` (docs/fpga.md's table) measures every preset."""
    from gen.estimate import estimate
    return min(preset_configs(kind), key=lambda c: estimate(c).cells)


NONLINEAR_PRESETS = tuple(_smallest(k) for k in ("mxint_softmax", "mxint_layernorm",
                                                 "mxint_gelu"))


@pytest.mark.synth
@pytest.mark.parametrize("config", NONLINEAR_PRESETS, ids=lambda c: c.name)
def test_longest_path_within_the_int8_mac_pe_budget(config):
    """The smallest nonlinear preset of each kind has a longest register-to-register path of at
    most 40 mapped gate levels: the int8 output-stationary MAC PE measures 32, its array 38-39
    (README); every preset's figure is in `accelgen bench depth`."""
    from gen.export import synthesize
    report = synthesize(config)
    assert 0 < report.longest_path <= 40, report.longest_path
