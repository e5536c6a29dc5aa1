"""Golden model of the ternary units: quantisation, packing, LUT index encoding (exhaustive over
all 3^mu groups for mu = 1..7), table construction and the golden GEMMs."""
import itertools

import numpy as np
import pytest

from software_model import float16
from software_model.ternary import (build_table_float, build_table_int, codes_to_weights,
                                    dequantize_output, half_entries, lookup_float, lookup_int,
                                    lut_index, lut_pattern, mirrored_index, pack_weights_2bit,
                                    pairwise_sum_order, parse_activation,
                                    quantize_activations_absmax, quantize_weights_absmean,
                                    table_adder_count, table_build_plan, ternary_gemm,
                                    unpack_weights_2bit, weight_codes)

# Adders per table quoted by the ternary-LUT paper (REFERENCE.md), mu = 3..7.
PAPER_TABLE_ADDERS = {3: 14, 4: 48, 5: 150, 6: 456, 7: 1374}


def all_groups(mu):
    return np.array(list(itertools.product((-1, 0, 1), repeat=mu)), dtype=np.int64)


# ------------------------------------------------------------------ quantisation

def test_absmean_weights_are_ternary_and_scale_invariant():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 64))
    wq, gamma = quantize_weights_absmean(w)
    assert set(np.unique(wq)) <= {-1, 0, 1}
    assert gamma == pytest.approx(np.mean(np.abs(w)))
    assert np.array_equal(wq, np.clip(np.round(w / (gamma + 1e-5)), -1, 1))
    wq3, gamma3 = quantize_weights_absmean(3.0 * w)
    assert np.array_equal(wq3, wq) and gamma3 == pytest.approx(3.0 * gamma)


def test_absmean_rejects_empty():
    with pytest.raises(ValueError, match="Weights must not be empty"):
        quantize_weights_absmean(np.zeros((0, 4)))


def test_absmax_activations_per_token_and_zero_guard():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 32)) * np.array([[1e-3], [1], [10], [0], [1e4]])
    xq, scale = quantize_activations_absmax(x)
    assert xq.dtype == np.int8 and scale.shape == (5, 1)
    assert np.all(np.isfinite(scale))
    assert np.array_equal(xq[3], np.zeros(32))                      # all-zero token
    for t in (0, 1, 2, 4):
        assert np.max(np.abs(xq[t])) == 127                         # absmax hits the top code
    assert np.all(np.abs(xq / scale - x) <= 0.5 / scale + 1e-12)    # half a step at most


def test_absmax_other_widths_and_rejection():
    x = np.linspace(-1, 1, 9)[None]
    xq, _ = quantize_activations_absmax(x, bits=4)
    assert xq.min() == -7 and xq.max() == 7
    with pytest.raises(ValueError, match="Activation bits must be an integer in 2..16, not 1"):
        quantize_activations_absmax(x, bits=1)


def test_bitnet_linear_end_to_end_matches_float():
    """y = (x_q . W_q^T) * gamma / s approximates x . (W_q * gamma)^T within quantisation error."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 48))
    x = rng.normal(size=(3, 48))
    wq, gamma = quantize_weights_absmean(w)
    xq, s = quantize_activations_absmax(x)
    y_int = np.stack([ternary_gemm(xq[t], wq, mu=3, lanes_l=4, activation="int8")
                      for t in range(3)])
    y = dequantize_output(y_int, gamma, s)
    reference = x @ (wq * gamma).T
    assert np.max(np.abs(y - reference)) < 48 * gamma * 0.5 / s.min()


# ------------------------------------------------------------------ packing

@pytest.mark.parametrize("count", [1, 3, 4, 5, 63, 64])
def test_pack_unpack_roundtrip_and_bit_layout(count):
    rng = np.random.default_rng(count)
    wq = rng.integers(-1, 2, count)
    packed = pack_weights_2bit(wq)
    assert packed.size == -(-count // 4)
    assert np.array_equal(unpack_weights_2bit(packed, count), wq)
    as_int = int.from_bytes(packed.tobytes(), "little")
    for i, w in enumerate(wq):                          # weight i at bits 2i+1:2i
        assert (as_int >> (2 * i)) & 3 == {0: 0b00, 1: 0b01, -1: 0b11}[int(w)]


def test_pack_rejects_non_ternary_and_bad_code():
    with pytest.raises(ValueError, match="Ternary weights must be -1, 0 or \\+1, not 2"):
        pack_weights_2bit(np.array([0, 2]))
    with pytest.raises(ValueError, match="Weight code 0b10 is not a ternary weight"):
        codes_to_weights(np.array([0b10]))
    with pytest.raises(ValueError, match="Count 9 exceeds the 8 weights packed"):
        unpack_weights_2bit(np.zeros(2, np.uint8), 9)


def test_weight_codes_are_twos_complement():
    assert weight_codes(np.array([-1, 0, 1])).tolist() == [3, 0, 1]


# ------------------------------------------------------------------ LUT index encoding, exhaustive

@pytest.mark.parametrize("mu", range(1, 8))
def test_lut_index_encoding_exhaustive(mu):
    groups = all_groups(mu)
    index = lut_index(groups)
    top = 3 ** mu - 1
    half = half_entries(mu)
    assert half == (3 ** mu - 1) // 2
    assert sorted(index.tolist()) == list(range(3 ** mu))           # a bijection
    assert np.array_equal(lut_index(-groups), top - index)          # negation mirrors
    zero = ~groups.any(axis=1)
    assert index[zero].tolist() == [half]                           # the middle is all-zero
    first_nonzero = np.array([g[np.flatnonzero(g)[0]] if g.any() else 0 for g in groups])
    assert np.array_equal(index < half, first_nonzero == 1)         # positive-leading half
    negate, entry = mirrored_index(index, mu)
    assert np.array_equal(negate, first_nonzero == -1)
    assert entry.max() == half and entry[~zero].max() == half - 1
    for i in range(0, 3 ** mu, max(1, 3 ** mu // 200)):
        assert lut_index(lut_pattern(i, mu)) == i


def test_lut_pattern_rejects_out_of_range():
    with pytest.raises(ValueError, match="Index must be in 0..26 for mu=3, not 27"):
        lut_pattern(27, 3)


@pytest.mark.parametrize("mu", range(1, 8))
def test_table_plan_shares_partial_sums(mu):
    plan = table_build_plan(mu)
    built = set()
    for step in plan:
        assert step.operand is None or step.operand in built        # reuses an earlier entry
        built.add(step.target)
    assert built == set(range(half_entries(mu)))
    adders = table_adder_count(mu)
    assert adders == half_entries(mu) - mu                          # one adder per composite entry
    if mu in PAPER_TABLE_ADDERS:
        assert adders <= PAPER_TABLE_ADDERS[mu]


@pytest.mark.parametrize("mu", range(1, 8))
@pytest.mark.parametrize("width", [2, 8, 16])
def test_int_table_lookup_exhaustive(mu, width):
    """Every one of the 3^mu groups looks up exactly w . a, incl. extreme activations."""
    rng = np.random.default_rng(mu * 100 + width)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    groups = all_groups(mu)
    for a in (rng.integers(lo, hi + 1, mu), np.full(mu, lo), np.full(mu, hi)):
        table = build_table_int(a)
        assert np.array_equal(lookup_int(table, groups), groups @ a)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("mu", range(1, 7))
def test_float_table_lookup_exhaustive(fmt, mu):
    """Small integers add exactly in FP, so every group must equal the exact dot product."""
    rng = np.random.default_rng(mu)
    a = rng.integers(-20, 21, mu)
    table = build_table_float(float16.from_float(a, fmt), fmt)
    groups = all_groups(mu)
    got = float16.to_float(lookup_float(table, groups, fmt), fmt)
    assert np.array_equal(got, (groups @ a).astype(np.float32))


# ------------------------------------------------------------------ golden GEMMs

@pytest.mark.parametrize("activation", ["int2", "int4", "int8", "int12", "int16"])
@pytest.mark.parametrize("architecture", ["lut", "addsub", "multiplier"])
def test_int_gemm_exact_and_wraps(activation, architecture):
    width = parse_activation(activation).width
    rng = np.random.default_rng(width)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    x = rng.integers(lo, hi + 1, 37)
    w = (rng.integers(lo, hi + 1, (5, 37)) if architecture == "multiplier"
         else rng.integers(-1, 2, (5, 37)))
    exact = ternary_gemm(x, w, mu=3, lanes_l=2, activation=activation, architecture=architecture)
    assert np.array_equal(exact, x @ w.T)
    wrapped = ternary_gemm(x, w, mu=3, lanes_l=2, activation=activation,
                           architecture=architecture, acc_width=6)
    assert np.array_equal(wrapped, ((x @ w.T + 32) % 64) - 32)


def _scalar_float_reference(x, w, mu, lanes_l, fmt, architecture):
    """Independent scalar model of the hardware order (suffix-first table sums, pairwise trees).

    +0 and -0 are not distinguished here (the vector model is tested for zero signs elsewhere).
    """
    dtype = float16.FORMATS[fmt].dtype

    def add(p, q):
        return dtype(np.float32(p) + np.float32(q))

    def tree(values):
        for level in pairwise_sum_order(len(values)):
            values = [values[i] if j is None else add(values[i], values[j]) for i, j in level]
        return values[0]

    xs = float16.to_float(x, fmt)
    beat = lanes_l * mu
    n = -(-len(xs) // beat) * beat
    xs = np.concatenate([xs, np.zeros(n - len(xs), np.float32)])
    w = np.concatenate([w, np.zeros((w.shape[0], n - w.shape[1]), w.dtype)], axis=1)
    out = []
    for row in w:
        acc = None
        for s in range(0, n, beat):
            if architecture == "lut":
                terms = []
                for g in range(lanes_l):
                    value = None
                    for j in range(mu - 1, -1, -1):             # suffix first
                        weight = row[s + g * mu + j]
                        if weight:
                            t = dtype(weight * xs[s + g * mu + j])
                            value = t if value is None else add(t, value)
                    terms.append(dtype(0) if value is None else value)
            else:
                terms = [dtype(row[s + r] * xs[s + r]) for r in range(beat)]
            total = tree(terms)
            acc = total if acc is None else add(acc, total)
        out.append(np.float32(acc))
    return np.array(out)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
@pytest.mark.parametrize("architecture", ["lut", "addsub"])
@pytest.mark.parametrize("mu,lanes_l", [(2, 3), (3, 2), (5, 1)])
def test_float_gemm_follows_hardware_order(fmt, architecture, mu, lanes_l):
    rng = np.random.default_rng(mu * 7 + lanes_l)
    x = float16.from_float(rng.normal(size=29) * 100, fmt)
    w = rng.integers(-1, 2, (6, 29))
    got = float16.to_float(ternary_gemm(x, w, mu=mu, lanes_l=lanes_l, activation=fmt,
                                        architecture=architecture), fmt)
    want = _scalar_float_reference(x, w, mu, lanes_l, fmt, architecture)
    assert np.array_equal(got, want)


def test_float_gemm_order_matters():
    """The LUT and add/sub orders round differently: a model adding in any order would be wrong."""
    fmt = "fp16"
    big, small = 2048.0, 1.0                     # 2048 + 1 rounds to 2048 in fp16
    x = float16.from_float(np.array([small, big, -big, small]), fmt)
    w = np.ones((1, 4), np.int64)
    lut = float16.to_float(ternary_gemm(x, w, mu=2, lanes_l=2, activation=fmt), fmt)
    addsub = float16.to_float(ternary_gemm(x, w, mu=2, lanes_l=2, activation=fmt,
                                           architecture="addsub"), fmt)
    # Same pairing for mu=2, L=2; mu=4 sums suffix first: 1 + (2048 + (-2048 + 1)) = 2, while
    # the pairwise tree gives (1 + 2048) + (-2048 + 1) = 2048 - 2047 = 1.
    lut4 = float16.to_float(ternary_gemm(x, w, mu=4, lanes_l=1, activation=fmt), fmt)
    assert lut[0] == addsub[0]
    assert lut4[0] != addsub[0]


def test_float_gemm_signed_zero_and_padding():
    """-0 sums stay -0; a padded term (+0) turns them into +0, as the hardware's padding does."""
    fmt = "bf16"
    minus_zero = np.full(4, 0x8000, np.uint16)
    w = np.ones((1, 4), np.int64)
    for architecture in ("lut", "addsub"):
        full = ternary_gemm(minus_zero, w, mu=2, lanes_l=2, activation=fmt,
                            architecture=architecture)
        padded = ternary_gemm(minus_zero[:2], w[:, :2], mu=2, lanes_l=2, activation=fmt,
                              architecture=architecture)
        assert full[0] == 0x8000 and padded[0] == 0x0000


def test_gemm_rejects_bad_arguments():
    with pytest.raises(ValueError, match="Architecture must be lut, addsub or multiplier"):
        ternary_gemm(np.zeros(3), np.zeros((1, 3)), mu=3, lanes_l=1, activation="int8",
                     architecture="systolic")
    with pytest.raises(ValueError, match=r"Shapes must be \(N,\) and \(M, N\)"):
        ternary_gemm(np.zeros(3), np.zeros((1, 4)), mu=3, lanes_l=1, activation="int8")
    with pytest.raises(ValueError, match="allowed: int2..int16, fp16, bf16"):
        parse_activation("fp32")
