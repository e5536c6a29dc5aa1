"""Bit-exact FP16/BF16 arithmetic on raw bit patterns (numpy + ml_dtypes, no amaranth).

Values travel as ``uint16`` bit patterns so a golden model can reproduce the hardware down to
the sign of zero. Two facts make the models exact:

* ``add``: a float32 sum of two FP16 or BF16 operands, rounded once to the format, equals the
  correctly rounded (round-to-nearest-even) sum, because float32 has at least 2p+2 significand
  bits for both formats (p = 11 and 8), so the double rounding is innocuous; and every sum
  that lands in the target's subnormal range is exact in float32.
* ``mul``: the product of two significands (at most 22 bits) is exact in float64; it is rounded
  once, by ``np.rint`` on the subnormal grid or through float32 (exact there) otherwise.

NaN results are canonical (quiet NaN, sign 0, top mantissa bit only): that is what the adders
and multipliers in hw/float_add.py produce, so payloads never need comparing. NaN *inputs* may
carry any payload and any sign.
"""
from dataclasses import dataclass

import ml_dtypes
import numpy as np

__all__ = ["FloatFormat", "FORMATS", "add", "mul", "neg", "is_nan", "to_float", "from_float",
           "special_values", "canonical_nan"]


@dataclass(frozen=True)
class FloatFormat:
    name: str
    exponent_bits: int
    mantissa_bits: int          # stored fraction bits (the hidden bit excluded)
    dtype: type

    @property
    def width(self):
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self):
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def sign_mask(self):
        return 1 << (self.width - 1)

    @property
    def exponent_max(self):     # the all-ones exponent field (Inf/NaN)
        return (1 << self.exponent_bits) - 1

    @property
    def canonical_nan(self):
        return (self.exponent_max << self.mantissa_bits) | (1 << (self.mantissa_bits - 1))

    @property
    def positive_infinity(self):
        return self.exponent_max << self.mantissa_bits

    @property
    def min_normal_exponent(self):   # unbiased exponent of the smallest normal
        return 1 - self.bias


FORMATS = {
    "fp16": FloatFormat("fp16", 5, 10, np.float16),
    "bf16": FloatFormat("bf16", 8, 7, ml_dtypes.bfloat16),
}


def _fmt(fmt):
    if isinstance(fmt, FloatFormat):
        return fmt
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"Float format must be one of {sorted(FORMATS)}, not {fmt!r}") from None


def canonical_nan(fmt):
    return _fmt(fmt).canonical_nan


def is_nan(bits, fmt):
    f = _fmt(fmt)
    bits = np.asarray(bits, dtype=np.uint16)
    magnitude = bits & np.uint16(f.sign_mask - 1)
    return magnitude > np.uint16(f.positive_infinity)


def to_float(bits, fmt):
    """Bit patterns -> float32 values (exact: both formats fit in float32)."""
    f = _fmt(fmt)
    return np.asarray(bits, dtype=np.uint16).view(f.dtype).astype(np.float32)


def from_float(values, fmt):
    """float32/float64 values -> bit patterns, rounded to nearest even by ml_dtypes/numpy."""
    f = _fmt(fmt)
    with np.errstate(over="ignore"):        # overflow to Inf is the correctly rounded result
        return np.asarray(np.asarray(values, dtype=np.float32).astype(f.dtype)).view(np.uint16)


def _canonicalize(bits, fmt):
    f = _fmt(fmt)
    return np.where(is_nan(bits, f), np.uint16(f.canonical_nan), bits).astype(np.uint16)


def neg(bits, fmt):
    """Negation is a sign flip, for every class including NaN (no canonicalisation)."""
    f = _fmt(fmt)
    return (np.asarray(bits, dtype=np.uint16) ^ np.uint16(f.sign_mask)).astype(np.uint16)


def add(a, b, fmt):
    """Correctly rounded (RNE) a + b on bit patterns; x + (-x) = +0; NaN results canonical."""
    f = _fmt(fmt)
    with np.errstate(all="ignore"):
        total = to_float(a, f) + to_float(b, f)
    return _canonicalize(from_float(total, f), f)


def _round_float64(values, fmt):
    """Round exact float64 values once to the format (RNE), avoiding float32 double rounding."""
    f = _fmt(fmt)
    values = np.asarray(values, dtype=np.float64)
    quantum = np.ldexp(1.0, f.min_normal_exponent - f.mantissa_bits)
    tiny = np.abs(values) < np.ldexp(1.0, f.min_normal_exponent)
    # On the subnormal grid rounding is to a fixed quantum: rint is RNE and exact in float64;
    # copysign keeps the sign of products that round to zero.
    on_grid = np.copysign(np.rint(values / quantum) * quantum, values)
    with np.errstate(all="ignore"):
        result = np.where(tiny, on_grid, values).astype(np.float32)   # exact: <= 22 bits
    return from_float(result, f)


def mul(a, b, fmt):
    """Correctly rounded (RNE) a * b on bit patterns; 0 * Inf = NaN; NaN results canonical."""
    f = _fmt(fmt)
    with np.errstate(all="ignore"):
        product = to_float(a, f).astype(np.float64) * to_float(b, f).astype(np.float64)
    return _canonicalize(_round_float64(product, f), f)


def special_values(fmt):
    """One or more bit patterns of every class the hardware must treat specially."""
    f = _fmt(fmt)
    m, e = f.mantissa_bits, f.exponent_bits
    frac_max = (1 << m) - 1
    positive = [
        0,                                   # zero
        1,                                   # smallest subnormal
        2, 3,
        1 << (m - 1),                        # mid subnormal
        frac_max,                            # largest subnormal
        1 << m,                              # smallest normal
        (1 << m) | 1,
        (1 << m) | frac_max,
        (f.bias << m),                       # 1.0
        (f.bias << m) | 1,                   # 1 + ulp
        (f.bias << m) | frac_max,            # 2 - ulp
        ((f.bias + 1) << m),                 # 2.0
        ((f.bias - 1) << m) | frac_max,      # 1 - ulp/2
        ((f.exponent_max - 1) << m),         # large
        ((f.exponent_max - 1) << m) | frac_max,   # largest finite
        ((f.exponent_max - 1) << m) | (frac_max - 1),
        f.positive_infinity,                 # Inf
        f.canonical_nan,                     # quiet NaN
        f.positive_infinity | 1,             # signalling NaN payload
        f.positive_infinity | frac_max,
    ]
    values = positive + [v | f.sign_mask for v in positive]
    del e
    return np.array(values, dtype=np.uint16)
