"""ISA-level golden model (software_model/accelerator.py): every operation against a reference
written from the contract's text with Python integers and fractions (docs/accelerator.md), the
executor's checks, word packing, and the cycle model's queues and barriers."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from software_model.accelerator import (
    AcceleratorParams, AcceleratorState, CycleCosts, ExecutionError, MemoryModel, TensorFormat,
    accnorm, accscale, accst, as_class, check_instruction, cycle_model, execute,
    jam, matmul, shift_right_sticky, matrix_values, pack_word, pack_words, quantize_matrix,
    round_to_exponent, unpack_word, unpack_words, vadd, vcast, vgelu, vlnorm, vsmax,
)
from software_model.isa import Instruction, Opcode, TensorClass, assemble
from software_model.mxint import MXIntFormat
from software_model.mxint_fixed import fixed_to_mxint
from software_model.mxint_softmax import mxint_softmax, softmax_reciprocal

ACT, WGT, KV = TensorClass.ACTIVATION, TensorClass.WEIGHT, TensorClass.KV


def params(**kw):
    base = dict(block_size=8, exponent_width=6,
                formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 4),
                         TensorFormat("int", 6)),
                rows=4, cols=4, sub_arrays=2, acc_width=32, acc_lsb=-12, acc_words=128,
                sp_words=512, sp_banks=4)
    base.update(kw)
    return AcceleratorParams(**base)


# --------------------------------------------------------------------------------------------
# References from the contract text (Python integers)


def ref_round(x: Fraction, rounding="half_even") -> int:
    """Round a non-negative fraction to an integer."""
    q, r = divmod(x.numerator, x.denominator)
    twice = 2 * r
    if twice > x.denominator or (twice == x.denominator and (rounding == "half_away" or q & 1)):
        q += 1
    return q


def ref_to_block(values: list[Fraction], fmt: MXIntFormat, exp=None):
    """Exact values -> (e, mantissas): e = floor(log2 max|v|) clamped (or the given ``exp``),
    one half-even rounding of each magnitude, symmetric saturation."""
    if exp is None:
        top = max(abs(v) for v in values)
        if top == 0:
            e = fmt.emin
        else:
            e = top.numerator.bit_length() - top.denominator.bit_length()
            if Fraction(2) ** e > top:
                e -= 1
            elif Fraction(2) ** (e + 1) <= top:
                e += 1
            e = min(max(e, fmt.emin), fmt.emax)
    else:
        e = exp
    out = []
    for v in values:
        r = ref_round(abs(v) / Fraction(2) ** (e - fmt.fraction_bits), fmt.rounding)
        r = min(r, fmt.mantissa_max)
        out.append(-r if v < 0 else r)
    return e, out


def value(m, e, f) -> Fraction:
    return Fraction(int(m)) * Fraction(2) ** (int(e) - f)


def ref_convert(vals, p, cls, exp):
    return ref_to_block(vals, p.fmt(cls), exp if p.is_int(cls) else None)


def random_blocks(rng, p, shape, cls, *, exp_spread=None):
    """Random blocks whose mantissas fit the class, exponents over the whole field (or a
    narrower spread)."""
    fmt = p.fmt(cls)
    lo, hi = (p.emin, p.emax) if exp_spread is None else exp_spread
    e = rng.integers(lo, hi + 1, size=shape)
    m = rng.integers(-fmt.mantissa_max, fmt.mantissa_max + 1, size=shape + (p.block_size,))
    # some zero blocks, some zero elements, some extremes
    m[rng.random(shape) < 0.1] = 0
    m[rng.random(m.shape) < 0.1] = fmt.mantissa_max
    return e.astype(np.int64), m.astype(np.int64)


# --------------------------------------------------------------------------------------------
# Conversions


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=8, max_size=8),
       st.integers(-30, 10), st.integers(-8, 7), st.sampled_from([2, 4, 8, 16]),
       st.sampled_from(["half_even", "half_away"]))
def test_round_to_exponent_matches_reference(vals, lsb, exp, width, rounding):
    fmt = MXIntFormat(width, 8, 4, rounding)
    got = round_to_exponent(np.array(vals), lsb, exp, fmt)
    _e, want = ref_to_block([Fraction(v) * Fraction(2) ** lsb for v in vals], fmt, exp)
    assert got.tolist() == want


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 30), 1 << 30), min_size=8, max_size=8),
       st.integers(-20, 5))
def test_round_to_exponent_agrees_with_fixed_to_mxint_at_its_own_exponent(vals, lsb):
    fmt = MXIntFormat(8, 8, 6)
    e, m = fixed_to_mxint(np.array([vals]), lsb, fmt)
    assert round_to_exponent(np.array(vals), lsb, int(e[0]), fmt).tolist() == m[0].tolist()


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 40), 1 << 40), st.integers(0, 70), st.integers(2, 6))
def test_jam_rounds_like_the_exact_value(v, s, position):
    q, sticky = shift_right_sticky(np.int64(v), s)
    assert int(q) == v >> min(s, 62) and bool(sticky) == (v != (v >> min(s, 62)) << min(s, 62))
    # rounding v / 2^s at `position` bits up: the jammed floor gives the exact answer
    fmt = MXIntFormat(16, 8, 8)
    exact = ref_round(abs(Fraction(v, 1 << min(s, 62))) / (1 << position))
    got = abs(int(jam(q, sticky))) >> position
    rem = abs(int(jam(q, sticky))) & ((1 << position) - 1)
    half = 1 << (position - 1)
    got += rem > half or (rem == half and got & 1)
    assert got == exact


# --------------------------------------------------------------------------------------------
# MATMUL


def ref_matmul(ae, am, be, bm, p, a_class, b_class, shift, acc):
    M, KB = ae.shape
    N = be.shape[0]
    S = p.sub_arrays
    lo, hi = p.acc_range
    fa, fb = p.fraction_bits(a_class), p.fraction_bits(b_class)
    out = [[0] * N for _ in range(M)] if acc is None else [list(map(int, r)) for r in acc]
    for kc in range(-(-KB // S)):
        for i in range(M):
            for j in range(N):
                tree = 0
                for s in range(S):
                    kb = kc * S + s
                    if kb >= KB:
                        continue
                    blk = sum(int(x) * int(y) for x, y in zip(am[i, kb], bm[j, kb]))
                    sh = int(ae[i, kb]) + int(be[j, kb]) - fa - fb + shift - p.acc_lsb
                    v = blk << sh if sh >= 0 else blk >> -sh
                    tree += min(max(v, lo), hi)
                out[i][j] = min(max(out[i][j] + tree, lo), hi)
    return np.array(out)


@pytest.mark.parametrize("S", [1, 2, 4])
@pytest.mark.parametrize("seed", range(4))
def test_matmul_matches_reference(S, seed):
    rng = np.random.default_rng(seed)
    # narrow accumulators and a wide exponent spread: floors and saturation both happen
    p = params(sub_arrays=S, acc_width=int(rng.integers(12, 30)), acc_lsb=int(rng.integers(-12, 0)),
               rows=4, cols=4)
    M, N, KB = (int(x) for x in rng.integers(1, 7, size=3))
    ae, am = random_blocks(rng, p, (M, KB), ACT, exp_spread=(-6, 4))
    be, bm = random_blocks(rng, p, (N, KB), WGT, exp_spread=(-6, 4))
    shift = int(rng.integers(-3, 4))
    acc = rng.integers(*p.acc_range, size=(M, N)) if seed % 2 else None
    got = matmul(ae, am, be, bm, p, a_class=ACT, b_class=WGT, shift=shift, acc=acc)
    assert got.tolist() == ref_matmul(ae, am, be, bm, p, ACT, WGT, shift, acc).tolist()


def test_matmul_is_exact_product_when_nothing_floors_or_saturates():
    rng = np.random.default_rng(7)
    p = params(acc_width=48, acc_lsb=-20)
    ae, am = random_blocks(rng, p, (5, 6), ACT, exp_spread=(-3, 3))
    be, bm = random_blocks(rng, p, (9, 6), KV, exp_spread=(-3, 3))
    got = matmul(ae, am, be, bm, p, a_class=ACT, b_class=KV) * 2.0 ** p.acc_lsb
    want = matrix_values(ae, am, p, ACT) @ matrix_values(be, bm, p, KV).T
    assert np.array_equal(got, want)


def test_matmul_batches_give_the_same_result(monkeypatch):
    import software_model.accelerator as acc_mod
    rng = np.random.default_rng(3)
    p = params(sub_arrays=2, acc_width=20, acc_lsb=-8)
    ae, am = random_blocks(rng, p, (3, 9), ACT, exp_spread=(-4, 4))
    be, bm = random_blocks(rng, p, (5, 9), WGT, exp_spread=(-4, 4))
    whole = matmul(ae, am, be, bm, p, a_class=ACT, b_class=WGT)
    monkeypatch.setattr(acc_mod, "_MATMUL_BATCH", 1)
    assert np.array_equal(matmul(ae, am, be, bm, p, a_class=ACT, b_class=WGT), whole)


# --------------------------------------------------------------------------------------------
# Accumulator processing


@pytest.mark.parametrize("d_class", [ACT, KV])
def test_accst_rounds_once_into_the_class(d_class):
    rng = np.random.default_rng(int(d_class))
    p = params()
    v = rng.integers(-(1 << 20), 1 << 20, size=(3, 16))
    v[0, :8] = 0
    exp = -2 if p.is_int(d_class) else 0
    e, m = accst(v, p, d_class, exp)
    for r in range(3):
        for b in range(2):
            vals = [Fraction(int(x)) * Fraction(2) ** p.acc_lsb for x in v[r, 8 * b:8 * b + 8]]
            we, wm = ref_convert(vals, p, d_class, exp)
            assert (int(e[r, b]), m[r, b].tolist()) == (we, wm)


def test_accscale_floors_each_row_by_its_rescale():
    p = params()
    v = np.array([[7, -7, 8], [5, -5, 1]])
    assert accscale(v, [1, 0], p).tolist() == [[3, -4, 4], [5, -5, 1]]
    assert accscale(v, [40, 2], p).tolist() == [[0, -1, 0], [1, -2, 0]]


@pytest.mark.parametrize("d_class", [ACT, KV])
def test_accnorm_divides_by_the_online_sum_with_one_rounding(d_class):
    rng = np.random.default_rng(5)
    p = params()
    spec = p.softmax
    v = rng.integers(-(1 << 18), 1 << 18, size=(4, 8))
    l = np.array([1 << spec.exp_bits, 3 << spec.exp_bits, 12345, 0])
    exp = 7 if p.is_int(d_class) else 0          # int: a range that does not saturate
    e, m = accnorm(v, l, p, d_class, exp)
    R, lo = softmax_reciprocal(l, spec)
    for r in range(4):
        vals = [Fraction(int(x) * int(R[r])) * Fraction(2) ** (p.acc_lsb + spec.exp_bits
                                                              - spec.recip_bits - int(lo[r]))
                for x in v[r]]
        assert (int(e[r, 0]), m[r, 0].tolist()) == ref_convert(vals, p, d_class, exp)
    assert m[3].tolist() == [[0] * 8]          # l = 0: an all-masked row gives zeros
    # close to the real division where l > 0
    real = v[:3] * 2.0 ** p.acc_lsb / (l[:3, None] * 2.0 ** -spec.exp_bits)
    got = matrix_values(e[:3], m[:3], p, d_class)
    assert np.all(np.abs(got - real) <= np.abs(real) * 2 ** -(spec.recip_bits - 2) +
                  2.0 ** (e[:3, :1] - p.fraction_bits(d_class)))


# --------------------------------------------------------------------------------------------
# Vector unit


def _vadd_case(rng, p, cls_a, cls_b, cls_d, spread):
    shape = (2, 3)
    ae, am = random_blocks(rng, p, shape, cls_a, exp_spread=spread)
    be, bm = random_blocks(rng, p, shape, cls_b, exp_spread=spread)
    exp = int(rng.integers(p.emin, p.emax + 1)) if p.is_int(cls_d) else 0
    e, m = vadd(ae, am, be, bm, p, a_class=cls_a, b_class=cls_b, d_class=cls_d, exp=exp)
    fa, fb = p.fraction_bits(cls_a), p.fraction_bits(cls_b)
    for idx in np.ndindex(shape):
        vals = [value(x, ae[idx], fa) + value(y, be[idx], fb) for x, y in zip(am[idx], bm[idx])]
        assert (int(e[idx]), m[idx].tolist()) == ref_convert(vals, p, cls_d, exp), idx


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 1 << 30), st.sampled_from(list(TensorClass)),
       st.sampled_from(list(TensorClass)), st.sampled_from(list(TensorClass)),
       st.sampled_from([None, (-4, 4), (-2, 0)]), st.sampled_from([3, 6, 8]))
def test_vadd_is_the_exact_sum_rounded_once(seed, cls_a, cls_b, cls_d, spread, ew):
    p = params(exponent_width=ew,
               formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 4),
                        TensorFormat("int", 16)))
    if spread is not None:
        spread = (max(spread[0], p.emin), min(spread[1], p.emax))
    _vadd_case(np.random.default_rng(seed), p, cls_a, cls_b, cls_d, spread)


def test_vadd_far_apart_exponents_and_ties():
    p = params(exponent_width=8)
    # a tie that only the far smaller operand breaks, in both directions, and a zero hi block
    ae = np.array([[100, 100, -100]])
    am = np.zeros((1, 3, 8), np.int64)
    am[0, 0, :2] = [65, 1]         # at e=100: 65 * 2^94; a tie after rounding to 8 bits? no
    am[0, 1, 0] = 3
    be = np.array([[-120, -120, 50]])
    bm = np.zeros((1, 3, 8), np.int64)
    bm[0, 0, 1] = -1
    bm[0, 1, 0] = 127
    bm[0, 2, 3] = 5
    e, m = vadd(ae, am, be, bm, p)
    for b in range(3):
        vals = [value(x, ae[0, b], 6) + value(y, be[0, b], 6) for x, y in zip(am[0, b], bm[0, b])]
        assert (int(e[0, b]), m[0, b].tolist()) == ref_convert(vals, p, ACT, 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 30), st.sampled_from(list(TensorClass)),
       st.sampled_from(list(TensorClass)))
def test_vcast_is_the_exact_value_rounded_once(seed, cls_a, cls_d):
    rng = np.random.default_rng(seed)
    p = params()
    ae, am = random_blocks(rng, p, (3,), cls_a)
    exp = int(rng.integers(p.emin, p.emax + 1)) if p.is_int(cls_d) else 0
    e, m = vcast(ae, am, p, a_class=cls_a, d_class=cls_d, exp=exp)
    for b in range(3):
        vals = [value(x, ae[b], p.fraction_bits(cls_a)) for x in am[b]]
        assert (int(e[b]), m[b].tolist()) == ref_convert(vals, p, cls_d, exp)


def test_nonlinear_ops_are_the_shared_units():
    from software_model.mxint_gelu import mxint_gelu
    from software_model.mxint_layernorm import mxint_layernorm
    rng = np.random.default_rng(11)
    p = params()
    xe, xm = random_blocks(rng, p, (3, 8), ACT, exp_spread=(-3, 2))
    e, m = vgelu(xe, xm, p)
    we, wm = mxint_gelu(xe, xm, p.gelu)
    assert np.array_equal(e, we) and np.array_equal(m, wm)
    ge, gm = random_blocks(rng, p, (8,), ACT, exp_spread=(-1, 0))
    e, m = vlnorm(xe, xm, ge, gm, ge, gm, p)
    res = mxint_layernorm(xe, xm, ge, gm, ge, gm, p.layernorm)
    assert np.array_equal(m, res.mantissas)
    e, m = vsmax(xe, xm, p, valid=3)
    mask = np.ones(xm.shape, bool)
    mask[:, -1, 3:] = False
    res = mxint_softmax(xe, xm, p.softmax, mask=mask, tile_blocks=1)     # the unit's form
    assert np.array_equal(m, res.mantissas) and np.all(m[:, -1, 3:] == 0)


def test_as_class_keeps_the_low_bits_of_wider_words():
    p = params()                                 # w_max 8, weight 4 bits
    m = np.array([7, 8, -8, -9, 127, -128])
    assert as_class(m, p, WGT).tolist() == [7, -8, -8, 7, -1, 0]
    assert as_class(m, p, ACT).tolist() == m.tolist()


# --------------------------------------------------------------------------------------------
# Words


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 1 << 30), st.sampled_from([(8, 3), (16, 8), (64, 5)]))
def test_words_round_trip_through_bit_vectors(seed, shape):
    B, ew = shape
    p = params(block_size=B, exponent_width=ew, sp_banks=4)
    rng = np.random.default_rng(seed)
    lo, hi = p.mantissa_range
    e = rng.integers(p.emin, p.emax + 1, size=5)
    m = rng.integers(lo, hi + 1, size=(5, B))
    words = pack_words(e, m, p)
    assert all(0 <= w < 1 << p.word_bits for w in words)
    e2, m2 = unpack_words(words, p)
    assert np.array_equal(e, e2) and np.array_equal(m, m2)
    assert unpack_word(words[0], p)[0] == e[0]


def test_word_bit_layout():
    p = params()                                 # B = 8, w_max = 8, ew = 6
    word = pack_word(-1, [1, -1, 0, 0, 0, 0, 0, 2], p)
    assert word == 1 | 0xFF << 8 | 2 << 56 | 0x3F << 64
    with pytest.raises(ValueError, match="mantissas must fit 8 signed bits"):
        pack_word(0, [128] + [0] * 7, p)
    with pytest.raises(ValueError, match="exponents must be in -32 .. 31"):
        pack_word(32, [0] * 8, p)
    with pytest.raises(ValueError, match="a word is 70 bits"):
        unpack_word(1 << 70, p)


# --------------------------------------------------------------------------------------------
# Parameters


@pytest.mark.parametrize("kwargs, message", [
    (dict(block_size=12), "block_size: got 12; allowed: one of 8, 16, 32, 64"),
    (dict(exponent_width=9), "exponent_width: got 9; allowed: integer 3 .. 8"),
    (dict(cols=6), "matrix.cols: got 6; allowed: a power of two"),
    (dict(sub_arrays=3), "matrix.sub_arrays: got 3; allowed: a power of two"),
    (dict(sub_arrays=2, rows=2, cols=4), "matrix.sub_arrays: got 2; allowed: 1, or rows = cols"),
    (dict(acc_width=62, sub_arrays=4), "accumulator.width: got 62; allowed: at most 60"),
    (dict(acc_width=56), "accumulator.width: got 56; allowed: at most 50: ACCNORM"),
    (dict(acc_words=2), "accumulator.words: got 2; allowed: at least rows (4)"),
    (dict(sp_words=1000), "scratchpad.words: got 1000; allowed: a power of two"),
    (dict(sp_banks=3), "scratchpad.banks: got 3; allowed: a power of two"),
    (dict(sp_banks=256, sp_words=128), "scratchpad.banks: got 256; allowed: at most"),
    (dict(formats=(TensorFormat("float", 8),) * 3), "formats.activation.type: got 'float'"),
    (dict(port_words=8, sp_banks=4), "memory.port_words: got 8; allowed: at most "
                                     "scratchpad.banks (4)"),
    (dict(formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 17), TensorFormat())),
     "formats.weight.element_width: got 17"),
])
def test_params_reject(kwargs, message):
    with pytest.raises(ValueError) as info:
        params(**kwargs)
    assert message in str(info.value)


def test_params_spec_formats_must_be_the_activation_format():
    from software_model.mxint_gelu import GeluSpec
    with pytest.raises(ValueError, match="vector.gelu: .* activation format"):
        params(gelu=GeluSpec(MXIntFormat(6, 8, 6), MXIntFormat(6, 8, 6)))


def test_params_facts():
    p = params(sub_arrays=2, rows=4, cols=4, sp_banks=1, port_words=1)
    assert p.multipliers == 32 and p.operand_words_per_job == 16
    assert not p.operand_full_rate              # 16 words > B * banks = 8
    assert params(sp_banks=2).operand_full_rate
    assert p.element_bits == 8 and p.word_bits == 8 * 8 + 6


# --------------------------------------------------------------------------------------------
# Execution and its checks


def _state(p=None, dram=4096):
    return AcceleratorState(p or params(), dram)


def test_execute_gemm_program_through_memories():
    p = params()
    rng = np.random.default_rng(1)
    st_ = _state(p)
    x = rng.normal(size=(6, 24))
    w = rng.normal(size=(10, 24))
    xe, xm = quantize_matrix(x, p, ACT)
    we, wm = quantize_matrix(w, p, WGT)
    st_.dram.write_matrix(0, 6, xe, xm, p)
    st_.dram.write_matrix(100, 10, we, wm, p)
    prog = assemble("""
        LOAD d=sp:0 a=dram:0 m=6 n=3 d_stride=6 a_stride=6
        LOAD d=sp:32 a=dram:100 m=10 n=3 d_stride=10 a_stride=10
        BARRIER tag=1
        MATMUL d=acc:0 a=sp:0 b=sp:32 m=6 n=10 kb=3 d_stride=6 a_stride=6 b_stride=10 a_class=weight b_class=weight
        MATMUL d=acc:0 a=sp:0 b=sp:32 m=6 n=10 kb=3 d_stride=6 a_stride=6 b_stride=10 b_class=weight accumulate=0
        MATMUL d=acc:20 a=sp:0 b=sp:32 m=6 n=10 kb=3 d_stride=6 a_stride=6 b_stride=10 b_class=weight
        MATMUL d=acc:20 a=sp:0 b=sp:32 m=6 n=10 kb=3 d_stride=6 a_stride=6 b_stride=10 b_class=weight accumulate=1
    """)
    execute(prog, st_)
    ref = matrix_values(xe, xm, p, ACT) @ matrix_values(we, wm, p, WGT).T
    assert np.array_equal(st_.read_acc(0, 6, 10, 6) * 2.0 ** p.acc_lsb, ref)
    assert np.array_equal(st_.read_acc(20, 6, 10, 6) * 2.0 ** p.acc_lsb, 2 * ref)
    assert st_.events == [(1, 2)] and st_.executed == len(prog)


def test_partial_column_tiles_keep_the_columns_beyond_n():
    p = params()
    st_ = _state(p)
    st_.acc[:] = 5
    st_.sp.mans[:] = 1
    execute([Instruction.make("MATMUL", d=0, a=0, b=0, m=2, n=3, kb=1, d_stride=2,
                              a_stride=2, b_stride=3)], st_)
    assert st_.acc[0].tolist()[3] == 5 and st_.acc[0].tolist()[:3] != [5, 5, 5]


@pytest.mark.parametrize("text, message", [
    ("LOAD d=sp:510 a=dram:0 m=4 n=1", "LOAD: writes SP words 510 .. 513, outside 0 .. 511"),
    ("LOAD d=sp:0 a=dram:4094 m=4 n=1", "LOAD: reads DRAM words 4094 .. 4097, outside"),
    ("LOAD d=sp:0 a=dram:0 m=4 n=2 d_stride=2", "LOAD: destination words in SP repeat"),
    ("STORE d=dram:0 a=sp:0 m=4 n=2 d_stride=3", "STORE: destination words in DRAM repeat"),
    ("MATMUL d=acc:126 a=sp:0 b=sp:0 m=4 n=4 kb=1 d_stride=4", "writes ACC words 126 .. 129"),
    ("ACCST d=sp:0 a=acc:0 m=1 n=4", "ACCST: n must be a multiple of the block size 8, not 4"),
    ("ACCST d=sp:0 a=acc:0 m=1 n=8 exp=1", "ACCST: exp must be 0 for class activation"),
    ("ACCST d=sp:0 a=acc:0 m=1 n=8 d_class=kv exp=40", "exp must be in -32 .. 31 (class kv is "
                                                       "int), not 40"),
    ("VADD d=sp:1 a=sp:0 b=sp:64 m=4 n=8 d_stride=4 a_stride=4 b_stride=4",
     "VADD: destination overlaps a source in SP without being the same words"),
    ("VGELU d=sp:0 a=sp:0 m=4 n=16 d_stride=2 a_stride=2", "destination words in SP repeat"),
    ("VLNORM d=sp:0 a=sp:0 b=sp:100 m=1 n=8", "VLNORM: n must be vector.layernorm.row_length (64)"),
    ("VLNORM d=sp:100 a=sp:0 b=sp:100 m=1 n=64 a_stride=1 d_stride=1",
     "destination overlaps a source"),
    ("VSMAX d=sp:0 a=sp:0 m=1 n=8 valid=9", "VSMAX: valid must be 0 .. 8"),
    ("VSMAX d=sp:0 a=sp:0 m=1 n=128 d_stride=1 a_stride=1", "rows of 16 blocks exceed "
                                                            "vector.softmax.max_row_blocks (8)"),
    ("VSMAXO d=sp:0 a=sp:0 m=17 n=8 init=1", "VSMAXO: m must be at most vector.softmax_rows (16)"),
    ("VSMAXO d=sp:0 a=sp:0 m=2 n=8 d_stride=2 a_stride=2", "VSMAXO: no online-softmax state"),
    ("ACCSCALE d=acc:0 m=1 n=4", "ACCSCALE: no online-softmax step (VSMAXO) has run"),
    ("ACCNORM d=sp:0 a=acc:0 m=1 n=8", "ACCNORM: no online-softmax state"),
])
def test_execute_rejects(text, message):
    with pytest.raises(ExecutionError) as info:
        execute(assemble(text), _state())
    assert message in str(info.value)
    assert "instruction 0 (" in str(info.value)


def test_in_place_vector_ops_are_allowed():
    p = params()
    st_ = _state(p)
    st_.sp.mans[:16] = 3
    execute(assemble("VADD d=sp:0 a=sp:0 b=sp:0 m=4 n=16 d_stride=4 a_stride=4 b_stride=4"),
            st_)
    e, m = st_.sp.read_matrix(0, 4, 2, 4)
    assert np.all(matrix_values(e, m, p) == 2 * 3 * 2.0 ** -6)       # exponents were 0


def test_online_softmax_rows_must_match_the_state():
    st_ = _state()
    execute(assemble("VSMAXO d=sp:100 a=sp:0 m=2 n=8 d_stride=2 a_stride=2 init=1"), st_)
    with pytest.raises(ExecutionError, match="started with 2"):
        execute(assemble("VSMAXO d=sp:100 a=sp:0 m=3 n=8 d_stride=3 a_stride=3"), st_)
    with pytest.raises(ExecutionError, match="ACCSCALE: m = 3 rows, but the online-softmax "
                                             "state has 2"):
        execute(assemble("ACCSCALE d=acc:0 m=3 n=4"), st_)


def test_check_instruction_accepts_a_legal_instruction():
    check_instruction(Instruction.make("MATMUL", d=0, a=0, b=64, m=4, n=4, kb=2, d_stride=4,
                                       a_stride=4, b_stride=4), params())


# --------------------------------------------------------------------------------------------
# Cycle model


def test_cycle_model_queues_overlap_and_barriers_wait():
    p = params()
    mem = MemoryModel(latency=10, words_per_cycle=2)
    costs = CycleCosts()
    load = Instruction.make("LOAD", d=0, a=0, m=8, n=4, d_stride=8, a_stride=8)
    mm = Instruction.make("MATMUL", d=0, a=100, b=200, m=4, n=4, kb=4, d_stride=4,
                          a_stride=4, b_stride=4)
    report = cycle_model([load, mm], p, mem)
    t_load, t_mm = report.timings
    # different queues run concurrently; the decoder hands instruction i over at cycle i + 1
    # (its register) and the queue starts it the cycle after (the RTL's FIFO)
    assert t_load.dispatch == 1 and t_load.start == 2 and t_mm.start == 3
    # 4 segments of 8 words in beats of port_words = 2, each beat one cycle at 2 words/cycle
    assert t_load.end - t_load.start == costs.duration(load, p, mem) == 16 + 10 + 1
    slow = MemoryModel(latency=10, words_per_cycle=1)
    assert costs.duration(load, p, slow) == 32 + 10 + 1
    report = cycle_model([load, Instruction(Opcode.BARRIER, imm=3), mm], p, mem)
    # the event is the cycle every earlier instruction has ended; the next is handed over the
    # cycle after and starts the cycle after that
    assert report.events == ((3, t_load.end),)
    assert report.timings[2].start == t_load.end + 2
    # the same queue runs in order
    report = cycle_model([mm, mm], p, mem)
    assert report.timings[1].start == report.timings[0].end
    assert report.macs == 2 * 4 * 4 * 32 and 0 < report.utilization <= 1


def test_cycle_model_matmul_rate_follows_the_operand_bandwidth():
    mm = Instruction.make("MATMUL", d=0, a=0, b=0, m=4, n=64, kb=32, d_stride=4)
    fast = cycle_model([mm], params(sub_arrays=2, sp_banks=4))
    slow = cycle_model([mm], params(sub_arrays=2, sp_banks=1, port_words=1))
    jobs = 1 * 16 * 16
    assert fast.cycles >= jobs * 8 and slow.cycles >= jobs * 16 > fast.cycles


def test_cycle_model_decoder_waits_for_a_full_queue():
    p = params()
    mm = Instruction.make("MATMUL", d=0, a=0, b=0, m=4, n=4, kb=8, d_stride=4)
    load = Instruction.make("LOAD", d=0, a=0, m=1, n=1)
    report = cycle_model([mm] * 6 + [load], p, queue_depth=2)
    # the load is dispatched only when the execute queue has room
    assert report.timings[-1].dispatch >= report.timings[3].start


def test_cycle_costs_reject_unknown_constants():
    with pytest.raises(ValueError, match="unknown cycle-cost constant 'bogus'"):
        CycleCosts(bogus=1)
    with pytest.raises(ValueError, match="latency must be a positive integer, not 0"):
        MemoryModel(latency=0)
    with pytest.raises(ValueError, match="words_per_cycle must be a positive integer, not 1.5"):
        MemoryModel(words_per_cycle=1.5)


# --------------------------------------------------------------------------------------------
# Co-simulation of the RTL (hw/accelerator.py) against this model: cosim/accelerator.py


@pytest.mark.cosim
def test_accelerator_cosim():
    """accelerator_small under Verilator: random programs under every stress profile, the
    directed programs under two, and the cycle model within its bound (smooth traffic)."""
    from cosim.accelerator import CYCLE_BOUND_CYCLES, CYCLE_BOUND_FRACTION
    from cosim.harness import STRESS_PROFILES
    from gen.cosim_run import run_cosim
    from gen.config import load_config
    from gen.config import REPO_ROOT
    config = load_config(REPO_ROOT / "configs" / "accelerator_small.yaml")
    result = run_cosim(config, "cosim.accelerator")
    assert all(t["mismatches"] == 0 for t in result.tests.values())
    randoms = {n: t for n, t in result.tests.items() if n.startswith("random_programs")}
    assert len(randoms) == len(STRESS_PROFILES)
    assert all(t["records"]["programs"] >= 1 and t["checked"] > 0 for t in randoms.values())
    directed = [t for n, t in result.tests.items() if n.startswith("directed")]
    assert len(directed) == 2
    assert all({"gemm", "gemv", "layernorm"} <= set(t["records"]["programs"]) and
               any(name.startswith("attention") for name in t["records"]["programs"])
               for t in directed)
    errors = result.records("cycle_model")["cycle_errors"]
    for name, e in errors.items():
        assert e["max_abs_error"] <= CYCLE_BOUND_CYCLES + CYCLE_BOUND_FRACTION * e["cycles"], \
            (name, e)
