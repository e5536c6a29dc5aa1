"""Golden model for 1.58-bit (ternary) weights and the LUT-based ternary GEMM units.

Pure numpy/ml_dtypes; hw/ternary_lut.py and hw/ternary_baseline.py import the index encoding and
the table build plan from here, so the hardware and the model cannot disagree about *which*
entry a weight group selects or *which* partial sums are added, only about the arithmetic.

Contents
--------
* BitNet b1.58 quantisation: absmean weights, per-token absmax activations (all-zero guarded).
* 2-bit weight packing: code 0b00 = 0, 0b01 = +1, 0b11 = -1 (two's complement), 0b10 invalid;
  weight ``i`` of a flat vector sits in bits ``2i+1:2i`` (four weights per byte, little-endian).
* LUT index encoding (REFERENCE.md): digit ``d = 1 - w`` in base 3, first weight most
  significant. ``index(-w) = 3**mu - 1 - index(w)`` and the all-zero group is the middle
  index ``H = (3**mu - 1) // 2``; indices below H are the groups whose first non-zero weight
  is +1 ("positive-leading"). Mirrored storage keeps the H positive-leading entries; an index
  above H sets the sign and maps to ``3**mu - 1 - index``; the middle maps to a constant zero.
* Table build plan with shared partial sums: every positive-leading entry that is not a single
  activation costs exactly one two-input adder (H - mu adders per table).
* Golden GEMMs in the hardware's order for the three architectures (``lut``, ``addsub``,
  ``multiplier``): integer activations of any width (exact, wrapped to the accumulator width)
  and FP16/BF16 activations (bit-exact, every add rounded as the hardware rounds it).
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from software_model import float16

__all__ = [
    "quantize_weights_absmean", "quantize_activations_absmax", "dequantize_output",
    "WEIGHT_CODES", "pack_weights_2bit", "unpack_weights_2bit", "weight_codes", "codes_to_weights",
    "lut_index", "lut_pattern", "mirrored_index", "half_entries", "table_build_plan",
    "table_adder_count", "build_table_int", "build_table_float", "lookup_int", "lookup_float",
    "ActivationType", "parse_activation", "pairwise_sum_order", "ternary_gemm",
    "exact_accumulator_width",
]

EPS = 1e-5


# --------------------------------------------------------------------------- quantisation

def quantize_weights_absmean(weights, eps=EPS):
    """BitNet b1.58: gamma = mean|W|; W_q = clip(round(W / (gamma + eps)), -1, 1).

    Returns (W_q as int8, gamma as float64). np.round is round-half-even, like torch.round.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0:
        raise ValueError("Weights must not be empty")
    gamma = float(np.mean(np.abs(w)))
    wq = np.clip(np.round(w / (gamma + eps)), -1, 1).astype(np.int8)
    return wq, gamma


def quantize_activations_absmax(x, bits=8, eps=EPS):
    """Per-token absmax: s = Q / max(max|x|, eps); x_q = clip(round(x * s), -Q-1, Q), Q = 2^(b-1)-1.

    The eps floor is the all-zero guard: a zero token gets a finite scale and quantises to 0.
    Returns (x_q as int8/int16, s per token as float64 with shape x.shape[:-1] + (1,)).
    """
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"Activation bits must be an integer in 2..16, not {bits!r}")
    x = np.asarray(x, dtype=np.float64)
    q = (1 << (bits - 1)) - 1
    amax = np.max(np.abs(x), axis=-1, keepdims=True) if x.size else np.zeros(x.shape[:-1] + (1,))
    scale = q / np.maximum(amax, eps)
    dtype = np.int8 if bits <= 8 else np.int16
    xq = np.clip(np.round(x * scale), -q - 1, q).astype(dtype)
    return xq, scale


def dequantize_output(y_int, gamma, scale):
    """y = (x_q . W_q^T) * gamma / s."""
    return np.asarray(y_int, dtype=np.float64) * gamma / scale


# --------------------------------------------------------------------------- 2-bit packing

WEIGHT_CODES = {0: 0b00, 1: 0b01, -1: 0b11}


def weight_codes(wq):
    """Ternary weights -> 2-bit codes (uint8 array of the same shape)."""
    wq = np.asarray(wq)
    if wq.size and not np.isin(wq, (-1, 0, 1)).all():
        bad = wq[~np.isin(wq, (-1, 0, 1))].flat[0].item()
        raise ValueError(f"Ternary weights must be -1, 0 or +1, not {bad!r}")
    return (wq.astype(np.int8) & 0b11).astype(np.uint8)


def codes_to_weights(codes):
    codes = np.asarray(codes, dtype=np.uint8)
    if (codes == 0b10).any():
        raise ValueError("Weight code 0b10 is not a ternary weight")
    return np.where(codes == 0b11, -1, codes).astype(np.int8)


def pack_weights_2bit(wq):
    """Flatten (C order) and pack four 2-bit codes per byte, weight i at bits 2i+1:2i."""
    codes = weight_codes(np.asarray(wq).ravel())
    pad = (-codes.size) % 4
    codes = np.concatenate([codes, np.zeros(pad, np.uint8)]).reshape(-1, 4)
    return (codes[:, 0] | codes[:, 1] << 2 | codes[:, 2] << 4 | codes[:, 3] << 6).astype(np.uint8)


def unpack_weights_2bit(packed, count):
    packed = np.asarray(packed, dtype=np.uint8)
    if count > 4 * packed.size:
        raise ValueError(f"Count {count} exceeds the {4 * packed.size} weights packed")
    codes = np.stack([(packed >> s) & 0b11 for s in (0, 2, 4, 6)], axis=1).ravel()[:count]
    return codes_to_weights(codes)


# --------------------------------------------------------------------------- LUT index encoding

def half_entries(mu):
    """H = (3^mu - 1) / 2: the positive-leading entries a mirrored table stores."""
    return (3 ** mu - 1) // 2


def lut_index(group):
    """Base-3 index of a weight group: digit 1 - w, first weight most significant.

    Accepts a (..., mu) array and returns (...) int64 indices.
    """
    group = np.asarray(group, dtype=np.int64)
    mu = group.shape[-1]
    digits = 1 - group
    return (digits * (3 ** np.arange(mu - 1, -1, -1, dtype=np.int64))).sum(axis=-1)


def lut_pattern(index, mu):
    """Inverse of lut_index: the weight group (mu,) for an index in 0 .. 3^mu - 1."""
    if not 0 <= index < 3 ** mu:
        raise ValueError(f"Index must be in 0..{3 ** mu - 1} for mu={mu}, not {index}")
    digits = [(index // 3 ** (mu - 1 - j)) % 3 for j in range(mu)]
    return np.array([1 - d for d in digits], dtype=np.int8)


def mirrored_index(index, mu):
    """(negate, entry) for mirrored storage; entry == H means the all-zero group."""
    index = np.asarray(index, dtype=np.int64)
    top = 3 ** mu - 1
    negate = index > top // 2
    return negate, np.where(negate, top - index, index)


@dataclass(frozen=True)
class TableStep:
    """entry[target] = activation[source] (+/-) entry[operand]; operand None: a plain copy."""
    target: int
    source: int
    operand: int | None
    subtract: bool


@lru_cache(maxsize=None)
def table_build_plan(mu):
    """Steps building the H positive-leading entries, each reusing one earlier entry.

    An entry whose first non-zero weight (+1) is at position i is a_i plus the signed value of
    its suffix; the suffix is itself a table entry (negated if it is negative-leading), built
    earlier because steps go from the last position to the first. Steps are in dependency
    order; every step with an operand is one adder.
    """
    if not isinstance(mu, int) or not 1 <= mu <= 8:
        raise ValueError(f"mu must be an integer in 1..8, not {mu!r}")
    steps = []
    for position in range(mu - 1, -1, -1):
        for index in range(half_entries(mu)):
            group = lut_pattern(index, mu)
            nonzero = np.flatnonzero(group)
            if nonzero[0] != position:
                continue
            suffix = group.copy()
            suffix[position] = 0
            if not suffix.any():
                steps.append(TableStep(index, position, None, False))
                continue
            negate, entry = mirrored_index(lut_index(suffix), mu)
            steps.append(TableStep(index, position, int(entry), bool(negate)))
    return tuple(steps)


def table_adder_count(mu):
    return sum(step.operand is not None for step in table_build_plan(mu))


def build_table_int(activations):
    """Exact positive-leading table of (..., mu) integer activations -> (..., H) int64."""
    a = np.asarray(activations, dtype=np.int64)
    mu = a.shape[-1]
    table = np.zeros(a.shape[:-1] + (half_entries(mu),), dtype=np.int64)
    for step in table_build_plan(mu):
        value = a[..., step.source]
        if step.operand is not None:
            other = table[..., step.operand]
            value = value - other if step.subtract else value + other
        table[..., step.target] = value
    return table


def build_table_float(activations, fmt):
    """Positive-leading table of (..., mu) FP bit patterns, one rounding per step (plan order)."""
    a = np.asarray(activations, dtype=np.uint16)
    mu = a.shape[-1]
    table = np.zeros(a.shape[:-1] + (half_entries(mu),), dtype=np.uint16)
    for step in table_build_plan(mu):
        value = a[..., step.source]
        if step.operand is not None:
            other = table[..., step.operand]
            if step.subtract:
                other = float16.neg(other, fmt)
            value = float16.add(value, other, fmt)
        table[..., step.target] = value
    return table


def lookup_int(table, group):
    """Signed value of weight groups (..., mu) from tables (..., H) (broadcasting)."""
    mu = np.asarray(group).shape[-1]
    negate, entry = mirrored_index(lut_index(group), mu)
    padded = np.concatenate([table, np.zeros(table.shape[:-1] + (1,), table.dtype)], axis=-1)
    value = np.take_along_axis(np.broadcast_to(padded, entry.shape + padded.shape[-1:]),
                               entry[..., None], axis=-1)[..., 0]
    return np.where(negate, -value, value)


def lookup_float(table, group, fmt):
    """FP value of weight groups: the all-zero group is +0; a negated entry is a sign flip."""
    mu = np.asarray(group).shape[-1]
    negate, entry = mirrored_index(lut_index(group), mu)
    padded = np.concatenate([table, np.zeros(table.shape[:-1] + (1,), np.uint16)], axis=-1)
    value = np.take_along_axis(np.broadcast_to(padded, entry.shape + padded.shape[-1:]),
                               entry[..., None], axis=-1)[..., 0]
    return np.where(negate, float16.neg(value, fmt), value).astype(np.uint16)


# --------------------------------------------------------------------------- activation types

@dataclass(frozen=True)
class ActivationType:
    """`int<w>` (two's complement, w in 2..16), `fp16` or `bf16`."""
    name: str
    width: int
    is_float: bool

    def __str__(self):
        return self.name


def parse_activation(text):
    if isinstance(text, ActivationType):
        return text
    if not isinstance(text, str):
        raise ValueError(f"allowed: int2..int16, fp16, bf16 (got {text!r})")
    if text in float16.FORMATS:
        return ActivationType(text, float16.FORMATS[text].width, True)
    if text.startswith("int") and text[3:].isdigit() and 2 <= int(text[3:]) <= 16:
        return ActivationType(text, int(text[3:]), False)
    raise ValueError(f"allowed: int2..int16, fp16, bf16 (got {text!r})")


def exact_accumulator_width(activation, architecture, terms):
    """Two's-complement bits of an integer accumulator that never wraps over ``terms`` products:
    ternary weights add or subtract an activation; the multiplier baseline's dequantised weights
    span the full activation range, so its products are twice as wide."""
    width = parse_activation(activation).width
    bound = terms << (width - 1)
    if architecture == "multiplier":
        bound = terms << (2 * width - 2)
    return bound.bit_length() + 1


# --------------------------------------------------------------------------- golden GEMMs

def pairwise_sum_order(count):
    """Adder tree shape shared with the RTL: adjacent pairs per level, an odd last term passes.

    Returns a list of levels; each level lists (left, right) index pairs into the previous
    level's values, or (i, None) for a pass-through.
    """
    levels = []
    while count > 1:
        level = [(i, i + 1) for i in range(0, count - 1, 2)]
        if count % 2:
            level.append((count - 1, None))
        levels.append(level)
        count = len(level)
    return levels


def _tree(terms, add):
    """Reduce a list of arrays in pairwise_sum_order with the binary `add`."""
    values = list(terms)
    for level in pairwise_sum_order(len(values)):
        values = [values[i] if j is None else add(values[i], values[j]) for i, j in level]
    return values[0]


def _wrap(values, width):
    values = np.asarray(values, dtype=np.int64)
    mask = (1 << width) - 1
    values = values & mask
    return np.where(values >> (width - 1), values - (1 << width), values)


def ternary_gemm(activations, weights, *, mu, lanes_l, activation, architecture="lut",
                 acc_width=None, accumulators=1):
    """Golden y[m] = sum_n x[n] * W[m, n] for one token, in the hardware's order.

    activations: (N,) ints, or (N,) uint16 bit patterns for fp16/bf16.
    weights: (M, N) ternary ints for `lut`/`addsub`; for `multiplier` the dequantised weights
    in the activation type (ints, or uint16 bit patterns) - any value, not only -1/0/+1.
    N is zero-padded (activation 0 / +0, weight 0) to a multiple of lanes_l * mu, exactly as
    the drivers pad the last beat. Integer results wrap to acc_width bits when it is given.
    Float results: per beat, the lane's L (lut) or L*mu (addsub, multiplier) terms go through
    the pairwise tree; the first beat's tree sum is the accumulator, later beats add to it.
    With ``accumulators`` S > 1 (the units' ``accumulator_stages``) there are S partial sums,
    each starting at -0 (the empty sum: -0 + x = x for every non-NaN x): beat t adds to partial
    t mod S (partial + beat sum), and the S partials are summed by the pairwise tree.
    Integer results ignore ``accumulators`` (an exact sum has no order).
    """
    act = parse_activation(activation)
    if architecture not in ("lut", "addsub", "multiplier"):
        raise ValueError(f"Architecture must be lut, addsub or multiplier, not {architecture!r}")
    x = np.asarray(activations)
    w = np.asarray(weights)
    if x.ndim != 1 or w.ndim != 2 or w.shape[1] != x.shape[0]:
        raise ValueError(f"Shapes must be (N,) and (M, N), not {x.shape} and {w.shape}")
    beat = lanes_l * mu
    n = x.shape[0]
    padded_n = max(beat, -(-n // beat) * beat)
    x = np.concatenate([x, np.zeros(padded_n - n, dtype=x.dtype)])
    w = np.concatenate([w, np.zeros((w.shape[0], padded_n - n), dtype=w.dtype)], axis=1)

    if not act.is_float:
        total = x.astype(np.int64) @ w.astype(np.int64).T
        return _wrap(total, acc_width) if acc_width else total

    if not isinstance(accumulators, int) or isinstance(accumulators, bool) or accumulators < 1:
        raise ValueError(f"Accumulators must be a positive integer, not {accumulators!r}")
    fmt = act.name
    add = lambda p, q: float16.add(p, q, fmt)           # noqa: E731
    x = x.astype(np.uint16)
    acc = None
    negative_zero = np.uint16(1 << (act.width - 1))
    partials = [np.full(w.shape[0], negative_zero, np.uint16) for _ in range(accumulators)]
    for t, start in enumerate(range(0, padded_n, beat)):
        xs = x[start:start + beat]
        ws = w[:, start:start + beat]
        if architecture == "lut":
            terms = []
            for g in range(lanes_l):
                table = build_table_float(xs[g * mu:(g + 1) * mu], fmt)
                terms.append(lookup_float(table, ws[:, g * mu:(g + 1) * mu], fmt))
        elif architecture == "addsub":
            terms = [np.where(ws[:, r] == 1, xs[r],
                              np.where(ws[:, r] == -1, float16.neg(xs[r], fmt), 0)).astype(np.uint16)
                     for r in range(beat)]
        else:
            terms = [float16.mul(np.full(ws.shape[0], xs[r], np.uint16), ws[:, r].astype(np.uint16),
                                 fmt) for r in range(beat)]
        beat_sum = _tree(terms, add)
        if accumulators > 1:
            partials[t % accumulators] = add(partials[t % accumulators], beat_sum)
        else:
            acc = beat_sum if acc is None else add(acc, beat_sum)
    return _tree(partials, add) if accumulators > 1 else acc
