"""Golden-model tests: OCP MX (software_model/mx.py) and MXInt (software_model/mxint.py).

Known answers are worked out by hand from the OCP MX v1.0 rules (see comments); properties use
hypothesis."""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from software_model.mx import (MX_FORMATS, dequantize_mx, fake_quantize_mx, quantize_mx)
from software_model.mxint import (
    MXIntFormat, decode_exponent, dequantize_mxint, encode_exponent, fake_quantize_mxint,
    float32_from_fixed, mxint_accumulate, mxint_cast, mxint_dot, mxint_linear, quantize_mxint)

F32 = np.float32


def q1(x, fmt, k=None, rounding="half_even"):
    x = np.asarray(x, F32)
    return quantize_mx(x, fmt, block_size=k or x.size, rounding=rounding)


# ---------------------------------------------------------------- OCP known answers

def test_mxint8_known_block():
    # max 7.9 -> E = floor(log2 7.9) - 0 = 2 (code 129); P = round(V/4 * 64)
    q = q1([1.0, -2.5, 0.3, 7.9], "mxint8")
    assert q.scales.tolist() == [129]
    assert q.elements.tolist() == [[16, -40, 5, 126]]
    assert fake_quantize_mx(np.array([1.0, -2.5, 0.3, 7.9], F32), "mxint8", 4).tolist() == \
        [1.0, -2.5, 0.3125, 7.875]


def test_mxint8_saturates_symmetrically():
    # 1.999 * 64 = 127.94 rounds to 128 -> saturates to 127; never -128
    q = q1([1.999, -1.999], "mxint8")
    assert q.scales.tolist() == [127]
    assert q.elements.tolist() == [[127, -127]]


@pytest.mark.parametrize("rounding,expected", [("half_even", [64, 0, 2, 2, -2]),
                                               ("half_away", [64, 1, 2, 3, -3])])
def test_mxint8_ties(rounding, expected):
    # E = 0; 1/128, 3/128, 5/128 are exactly 0.5, 1.5, 2.5 element steps
    q = q1([1.0, 1 / 128, 3 / 128, 5 / 128, -5 / 128], "mxint8", rounding=rounding)
    assert q.elements.tolist() == [expected]


@pytest.mark.parametrize("rounding,expected", [("half_even", [6.0, 2.0, 0.0, 6.0]),
                                               ("half_away", [6.0, 3.0, 0.5, 6.0])])
def test_mxfp4_ties_and_saturation(rounding, expected):
    # max 7 -> E = 2 - 2 = 0; 2.5 ties between 2 and 3, 0.25 between 0 and 0.5 (subnormal);
    # 7 is above the largest element 6 and saturates
    q = q1([6.0, 2.5, 0.25, 7.0], "mxfp4_e2m1", rounding=rounding)
    assert q.scales.tolist() == [127]
    assert q.elements.astype(F32).tolist() == [expected]


def test_mxfp8_e4m3_saturates_at_448():
    # max 464 -> E = 8 - 8 = 0; grid step at 2^8 is 32: 464 ties 448/480, even gives 448,
    # away gives 480 which is above 448 and saturates
    for rounding in ("half_even", "half_away"):
        q = q1([464.0, -464.0, 1.0], "mxfp8_e4m3", rounding=rounding)
        assert q.scales.tolist() == [127]
        assert q.elements.astype(F32).tolist() == [[448.0, -448.0, 1.0]]


@pytest.mark.parametrize("rounding,expected", [("half_even", [28.0, 0.125, 0.0]),
                                               ("half_away", [28.0, 0.125, 0.0625])])
def test_mxfp6_e3m2_subnormal_elements(rounding, expected):
    # E = 4 - 4 = 0; e3m2 subnormal step 2^-4: 0.09375 = 1.5 steps, 0.03125 = 0.5 steps
    q = q1([28.0, 0.09375, 0.03125], "mxfp6_e3m2", rounding=rounding)
    assert q.elements.astype(F32).tolist() == [expected]


def test_mxfp8_e5m2_and_mxfp6_e2m3_scales():
    # e5m2: emax 15; max 2^20 -> E = 5 (code 132); e2m3: emax 2; max 0.75 -> E = -1 - 2 = -3
    assert q1([2.0 ** 20, 1.0], "mxfp8_e5m2").scales.tolist() == [132]
    q = q1([0.75, 0.1], "mxfp6_e2m3")
    assert q.scales.tolist() == [124]
    # 0.75 * 8 = 6 exactly; 0.1 * 8 = 0.8 -> e2m3 step 0.125 below 1: 0.75
    assert q.elements.astype(F32).tolist() == [[6.0, 0.75]]


@pytest.mark.parametrize("fmt", sorted(MX_FORMATS))
def test_all_zero_block_uses_smallest_scale(fmt):
    q = q1(np.zeros(32), fmt)
    assert q.scales.tolist() == [0]
    assert dequantize_mx(q).tolist() == [0.0] * 32


@pytest.mark.parametrize("fmt", sorted(MX_FORMATS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_gives_nan_scale(fmt, bad):
    x = np.array([1.0, bad, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], F32)
    q = quantize_mx(x, fmt, block_size=4)
    assert q.scales.tolist() == [0xFF, 129 - MX_FORMATS[fmt].emax]
    y = dequantize_mx(q)
    assert np.isnan(y[:4]).all() and np.isfinite(y[4:]).all()


def test_subnormal_inputs_clamp_scale_to_minus_127():
    # floor(log2 2^-130) = -130 < -127 -> E = -127; 2^-130 / 2^-127 = 1/8 -> 8/64; 2^-133 -> 1/64
    q = q1([2.0 ** -130, 2.0 ** -133, 2.0 ** -140], "mxint8")
    assert q.scales.tolist() == [0]
    assert q.elements.tolist() == [[8, 1, 0]]


def test_blocks_along_axis_and_padding():
    x = np.arange(10 * 3, dtype=F32).reshape(10, 3) - 7
    q = quantize_mx(x, "mxint8", block_size=4, axis=0)
    assert q.scales.shape == (3, 3) and q.elements.shape == (3, 3, 4)
    y = dequantize_mx(q)
    assert y.shape == x.shape
    np.testing.assert_array_equal(y, fake_quantize_mx(x, "mxint8", 4, axis=0))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="MX format must be one of"):
        quantize_mx(np.ones(4), "mxfp3")
    with pytest.raises(ValueError, match="Rounding must be one of"):
        quantize_mx(np.ones(4), "mxint8", rounding="nearest")
    with pytest.raises(ValueError, match="Block size must be a positive integer, not 0"):
        quantize_mx(np.ones(4), "mxint8", block_size=0)


# ---------------------------------------------------------------- OCP properties

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
blocks = st.lists(finite32, min_size=1, max_size=64)


@settings(max_examples=200, deadline=None)
@given(blocks, st.sampled_from(sorted(MX_FORMATS)), st.sampled_from(["half_even", "half_away"]))
def test_ocp_error_bound(xs, fmt, rounding):
    # Every element is within one element ulp of the block's top binade (rounding gives half of
    # that), or within the saturation gap 2^(emax+1) - max_normal (one ulp, except E4M3 whose
    # top code is NaN: two).
    x = np.array(xs, F32)
    q = quantize_mx(x, fmt, block_size=8, rounding=rounding)
    y = dequantize_mx(q, dtype=np.float64)
    f = MX_FORMATS[fmt]
    e = q.scales.astype(np.int64) - 127
    gap = max(2.0 ** (f.emax - f.mantissa_bits), 2.0 ** (f.emax + 1) - f.max_normal)
    ulp = np.repeat(np.ldexp(gap, e), 8)[:x.size]
    assert (np.abs(y - x.astype(np.float64)) <= ulp).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=2.0 ** -20, max_value=2.0 ** 20, width=32), min_size=1,
                max_size=32),
       st.lists(st.booleans(), min_size=32, max_size=32),
       st.integers(-30, 30), st.sampled_from(sorted(MX_FORMATS)))
def test_ocp_power_of_two_scale_invariance(mags, signs, k, fmt):
    x = np.array([-m if s else m for m, s in zip(mags, signs)], F32)
    a = fake_quantize_mx(x, fmt, 32).astype(np.float64) * 2.0 ** k
    b = fake_quantize_mx(np.ldexp(x, k).astype(F32), fmt, 32).astype(np.float64)
    np.testing.assert_array_equal(a, b)


@settings(max_examples=200, deadline=None)
@given(blocks, st.sampled_from(sorted(MX_FORMATS)), st.sampled_from(["half_even", "half_away"]))
def test_ocp_monotone_within_block(xs, fmt, rounding):
    x = np.sort(np.array(xs, F32))
    y = fake_quantize_mx(x, fmt, block_size=len(xs), rounding=rounding)
    assert (np.diff(y.astype(np.float64)) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(blocks, st.sampled_from([f for f in sorted(MX_FORMATS) if f != "mxint8"]))
def test_ocp_half_even_matches_ml_dtypes_cast(xs, fmt):
    # An independent rounder: ml_dtypes casts half-even; clipping first gives saturation.
    x = np.array(xs, F32)
    q = quantize_mx(x, fmt, block_size=len(xs))
    f = MX_FORMATS[fmt]
    scaled = np.ldexp(x.astype(np.float64), -(int(q.scales[0]) - 127))
    ref = np.clip(scaled, -f.max_normal, f.max_normal).astype(f.dtype)
    np.testing.assert_array_equal(q.elements[0].view(np.uint8), ref.view(np.uint8))


# ---------------------------------------------------------------- MXInt known answers

@pytest.mark.parametrize("rounding,expected", [("half_even", [4, 0, -2, 7, 2]),
                                               ("half_away", [4, 1, -2, 7, 3])])
def test_mxint_w4_known_block(rounding, expected):
    # w = 4: value = m * 2^(e-2); max 1.75 -> e = 0; m = round(4 v): 0.125 -> 0.5 (tie),
    # -0.375 -> -1.5 (tie), 0.625 -> 2.5 (tie)
    f = MXIntFormat(4, 5, 4, rounding)
    q = quantize_mxint(np.array([1.0, 0.125, -0.375, 1.75, 0.625], F32), f)
    assert q.exponents.tolist() == [0]
    assert q.mantissas.tolist() == [expected]


def test_mxint_saturation_and_exponent_clamp():
    f = MXIntFormat(4, 2, 4)          # e in [-8, 7], |m| <= 7
    # 1.9 * 4 = 7.6 -> 8 -> saturates to 7; 2^10 needs e = 10 > 7 -> e = 7, m saturates
    q = quantize_mxint(np.array([1.9, -1.0, 2.0 ** 10, -(2.0 ** 10)], F32), f)
    assert q.exponents.tolist() == [0, 7]
    assert q.mantissas.tolist() == [[7, -4], [7, -7]]
    # 2^-12 needs e = -12 < -8 -> e = -8: m = 2^-12 * 2^(2+8) = 0.25 -> 0
    q = quantize_mxint(np.array([2.0 ** -12, 2.0 ** -9], F32), f)
    assert q.exponents.tolist() == [-8] and q.mantissas.tolist() == [[0, 2]]


def test_mxint_zero_block_and_biased_encoding():
    f = MXIntFormat(6, 4, 4, exponent_encoding="biased")   # bias 7: e in [-7, 8]
    assert (f.emin, f.emax) == (-7, 8)
    q = quantize_mxint(np.zeros(4, F32), f)
    assert q.exponents.tolist() == [-7] and q.mantissas.tolist() == [[0, 0, 0, 0]]
    assert encode_exponent(-7, f) == 0 and encode_exponent(8, f) == 15
    t = MXIntFormat(6, 4, 4)
    assert encode_exponent(-1, t) == 15 and decode_exponent(15, t) == -1
    for e in range(t.emin, t.emax + 1):
        assert decode_exponent(encode_exponent(e, t), t) == e
    for e in range(f.emin, f.emax + 1):
        assert decode_exponent(encode_exponent(e, f), f) == e


def test_mxint_cast_nonfinite_and_subnormal_fp16():
    f = MXIntFormat(8, 4, 8)
    # [1.0, +Inf, NaN, smallest subnormal]: Inf = 2^16 -> e = 16, m(Inf) = 64, 1.0 -> 2^-10*64
    # rounds to 0; NaN -> 0
    e, m = mxint_cast(np.array([0x3C00, 0x7C00, 0x7E00, 0x0001]), f, "fp16")
    assert int(e) == 16 and m.tolist() == [0, 64, 0, 0]
    # subnormal only: 2^-24 -> e = -24, m = 64; 3 * 2^-24 -> e = -23, m = 1.5*64 = 96
    e, m = mxint_cast(np.array([0x0001, 0x0003, 0x8002, 0]), f, "fp16")
    assert int(e) == -23 and m.tolist() == [32, 96, -64, 0]
    # -Inf in BF16 = -2^128 > emax 127 -> e = 127, m = -128 saturates to -127
    e, m = mxint_cast(np.array([0xFF80, 0x3F80, 0x0001, 0x7FC0]), f, "bf16")
    assert int(e) == 127 and m.tolist() == [-127, 0, 0, 0]


def test_mxint_format_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Element width must be an integer from 2 to 16, not 1"):
        MXIntFormat(element_width=1)
    with pytest.raises(ValueError, match="Block size must be a positive integer, not 0"):
        MXIntFormat(block_size=0)
    with pytest.raises(ValueError, match="Exponent width must be an integer from 2 to 10"):
        MXIntFormat(exponent_width=11)
    with pytest.raises(ValueError, match="Rounding must be one of"):
        MXIntFormat(rounding="up")
    with pytest.raises(ValueError, match="Exponent encoding must be one of"):
        MXIntFormat(exponent_encoding="e8m0")


# ---------------------------------------------------------------- MXInt properties

fmts = st.builds(MXIntFormat, st.integers(2, 16), st.sampled_from([1, 4, 8, 16, 32]),
                 st.just(8), st.sampled_from(["half_even", "half_away"]),
                 st.sampled_from(["twos_complement", "biased"]))
moderate = st.floats(min_value=-2.0 ** 100, max_value=2.0 ** 100, width=32)


@settings(max_examples=300, deadline=None)
@given(st.lists(moderate, min_size=1, max_size=64), fmts)
def test_mxint_error_bound(xs, f):
    # Half a step for every element, except a saturated one: at most one step.
    x = np.array(xs, F32)
    q = quantize_mxint(x, f)
    y = dequantize_mxint(q, dtype=np.float64)
    step = np.repeat(np.ldexp(1.0, q.exponents - f.fraction_bits), f.block_size)[:x.size]
    sat = (np.abs(q.mantissas) == f.mantissa_max).reshape(-1)[:x.size]
    bound = np.where(sat, step, step / 2)
    assert (np.abs(y - x.astype(np.float64)) <= bound).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.floats(min_value=2.0 ** -20, max_value=2.0 ** 20,
                                                  width=32)), min_size=1, max_size=32),
       st.lists(st.booleans(), min_size=32, max_size=32), st.integers(-40, 40), fmts)
def test_mxint_power_of_two_scale_invariance(mags, signs, k, f):
    # away from the exponent clamps (|x| in [2^-20, 2^20], |k| <= 40, exponent range +-128)
    x = np.array([-m if s else m for m, s in zip(mags, signs)], F32)
    a = fake_quantize_mxint(x, f).astype(np.float64) * 2.0 ** k
    b = fake_quantize_mxint(np.ldexp(x, k).astype(F32), f).astype(np.float64)
    np.testing.assert_array_equal(a, b)


@settings(max_examples=200, deadline=None)
@given(st.lists(moderate, min_size=1, max_size=32), fmts)
def test_mxint_monotone_within_block(xs, f):
    x = np.sort(np.array(xs, F32))
    g = MXIntFormat(f.element_width, len(xs), f.exponent_width, f.rounding,
                    f.exponent_encoding)
    y = fake_quantize_mxint(x, g)
    assert (np.diff(y.astype(np.float64)) >= 0).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8), st.integers(2, 16),
       st.sampled_from(["fp16", "bf16"]))
def test_mxint_cast_matches_quantize_of_decoded_value(raw, w, fmt_in):
    bits = np.array(raw, np.uint16)
    f = MXIntFormat(w, 8, 8)
    if fmt_in == "fp16":
        x = bits.view(np.float16).astype(F32)
        x = np.where(np.isinf(x), np.copysign(F32(65536.0), x), x)   # the cast's Inf rule
    else:
        x = bits.view(ml_dtypes.bfloat16).astype(F32)     # quantize_mxint's Inf rule matches
    e, m = mxint_cast(bits, f, fmt_in)
    q = quantize_mxint(x, f)
    assert int(e) == int(q.exponents[0]) and m.tolist() == q.mantissas[0].tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-127, 127), min_size=32, max_size=32),
       st.lists(st.integers(-127, 127), min_size=32, max_size=32),
       st.integers(-128, 127), st.integers(-128, 127))
def test_mxint_dot_is_exact(am, bm, ae, be):
    f = MXIntFormat(8, 32, 8)
    e, s = mxint_dot(ae, am, be, bm, f)
    exact = sum(Fraction(a) * b for a, b in zip(am, bm)) * Fraction(2) ** (ae + be - 12)
    assert Fraction(int(s)) * Fraction(2) ** (int(e) - 12) == exact


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(-2 ** 20, 2 ** 20)), min_size=1,
                max_size=12))
def test_accumulate_exact_and_shift_bounds(terms):
    exps = [t[0] for t in terms]
    vals = [t[1] for t in terms]
    lsb, total = mxint_accumulate(exps, vals)
    exact = sum(Fraction(v) * Fraction(2) ** e for e, v in terms)
    assert Fraction(total) * Fraction(2) ** lsb == exact
    # lossy: every step loses less than one unit of the new exponent per shifted operand
    E, acc = mxint_accumulate(exps, vals, mode="shift", acc_width=24)
    assert -(1 << 23) <= acc < (1 << 23)
    loss = Fraction(acc) * Fraction(2) ** E - exact
    assert abs(loss) <= 2 * len(terms) * Fraction(2) ** E


def test_accumulate_shift_known_answer():
    # acc = 100 @0; + (-5 @3): E = 3, 100 >> 3 = 12, 12 - 5 = 7; + (7 @-2): 7 >> 5 = 0 -> 7 @3
    assert mxint_accumulate([0, 3, -2], [100, -5, 7], mode="shift", acc_width=8) == (3, 7)
    # 100 + 100 = 200 leaves 8 bits -> 100 @1
    assert mxint_accumulate([0, 0], [100, 100], mode="shift", acc_width=8) == (1, 100)
    assert mxint_accumulate([0, 3, -2], [100, -5, 7]) == (-2, 247)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2 ** 52), 2 ** 52), st.integers(-200, 100))
def test_float32_from_fixed_matches_numpy(total, e):
    # total < 2^53 is exact in float64, so numpy's float64 -> float32 cast is a single rounding
    with np.errstate(over="ignore"):
        ref = np.float32(np.ldexp(float(total), e))
    got = float32_from_fixed(total, e)
    assert got.view(np.uint32) == ref.view(np.uint32) or (got == 0 and ref == 0)


def test_float32_from_fixed_ties_even_beyond_float64():
    # 2^60 + 2^36 + 1 is just above a float32 tie; float64 would round the +1 away first
    assert float32_from_fixed((1 << 60) + (1 << 36) + 1, 0) == F32(2.0 ** 60 + 2.0 ** 37)
    assert float32_from_fixed((1 << 60) + (1 << 36), 0) == F32(2.0 ** 60)


def test_mxint_linear_fp32_and_mxint_outputs():
    rng = np.random.default_rng(1)
    f = MXIntFormat(6, 8, 6)
    x = rng.normal(size=32).astype(F32)
    w = rng.normal(size=(4, 32)).astype(F32)
    b = rng.normal(size=4).astype(F32)
    qx, qw = quantize_mxint(x, f), quantize_mxint(w, f)
    qb = quantize_mxint(b, MXIntFormat(6, 1, 6))
    y = mxint_linear(qx.exponents, qx.mantissas, qw.exponents, qw.mantissas,
                     qb.exponents.reshape(-1), qb.mantissas.reshape(-1), f)
    ref = (dequantize_mxint(qw, np.float64) @ dequantize_mxint(qx, np.float64)
           + dequantize_mxint(qb, np.float64))
    np.testing.assert_array_equal(y, ref.astype(F32))   # ref is exact here (few bits)
    e, m = mxint_linear(qx.exponents, qx.mantissas, qw.exponents, qw.mantissas,
                        qb.exponents.reshape(-1), qb.mantissas.reshape(-1), f, output="mxint",
                        out_fmt=MXIntFormat(8, 4, 6))
    direct = quantize_mxint(ref.astype(F32), MXIntFormat(8, 4, 6))
    assert e.tolist() == direct.exponents.tolist() and m.tolist() == direct.mantissas.tolist()
