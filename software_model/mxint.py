"""MXInt golden model: the generic Microscaling-Integer variant the accelgen datapaths implement.

Format (:class:`MXIntFormat`)
-----------------------------
A block of ``block_size`` signed integers ``m_i`` (``element_width`` bits, sign included) shares one
signed exponent ``e``::

    value_i = m_i * 2^(e - (element_width - 2))

so the mantissa has ``element_width - 2`` fraction bits and ``|value| < 2 * 2^e``.  With
``element_width = 8`` this is exactly OCP MXINT8 (implied scale 2^-6, emax_elem = 0); only the
exponent encoding differs.

Choices (documented in docs/mxint.md, tested in tests/test_mx_golden.py):

* Shared exponent: ``e = floor(log2(max_i |v_i|))`` (the OCP rule with emax_elem = 0), clamped to
  ``[emin, emax]`` of the exponent field.  All-zero block: ``e = emin``.
* Exponent encoding: ``"twos_complement"`` (default; ``emin = -2^(ew-1)``, ``emax = 2^(ew-1)-1``)
  or ``"biased"`` (unsigned code ``e + bias``, ``bias = 2^(ew-1) - 1``, ``emin = -bias``,
  ``emax = 2^ew - 1 - bias``; no NaN code).
* Mantissa rounding on the magnitude: ``"half_even"`` (default) or ``"half_away"``; the sign is
  applied after rounding, so both modes are symmetric about zero.
* Saturation: magnitudes are clamped to ``2^(w-1) - 1`` (symmetric; ``-2^(w-1)`` is never
  produced), which happens when the largest element rounds up or the exponent hit ``emax``.
* Subnormal FP16/BF16/FP32 inputs are exact inputs (no flush to zero).
* Non-finite inputs (MXInt has no NaN/Inf code): NaN becomes 0 and does not affect the shared
  exponent; +-Inf is taken as +-2^(Emax_in + 1) (what its bit pattern means when the all-ones
  exponent field is read as an ordinary exponent: 2^16 for FP16, 2^128 for BF16/FP32), so it is
  the largest magnitude of its block and then saturates or rounds like any other value.

Public API
----------
* ``quantize_mxint(x, fmt, axis=-1) -> MXIntArray`` (``exponents`` decoded signed ints,
  ``mantissas`` ints), ``dequantize_mxint(q)``, ``fake_quantize_mxint(x, fmt, axis=-1)``.
* Bit-exact datapath models: ``mxint_cast(bits, fmt, input_format)`` (raw FP16/BF16/FP32 bit
  patterns in, like the RTL), ``mxint_dot``, ``mxint_accumulate`` (exact or lossy shift mode),
  ``mxint_linear``.
* ``encode_exponent`` / ``decode_exponent`` for the exponent field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from software_model.mx import ROUNDINGS, round_to_integer, shared_exponent

__all__ = [
    "MXIntFormat", "MXIntArray", "EXPONENT_ENCODINGS", "INPUT_FORMATS",
    "quantize_mxint", "dequantize_mxint", "fake_quantize_mxint",
    "encode_exponent", "decode_exponent", "decode_float_bits",
    "mxint_cast", "mxint_dot", "mxint_accumulate", "mxint_linear", "round_shift_right",
    "float32_from_fixed",
]

EXPONENT_ENCODINGS = ("twos_complement", "biased")

#: input float formats of the cast: (exponent bits, fraction bits, storage bits)
INPUT_FORMATS = {"fp16": (5, 10, 16), "bf16": (8, 7, 16), "fp32": (8, 23, 32)}


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class MXIntFormat:
    """An MXInt block format.  Import it to share the format between golden model and RTL.

    ``element_width``: mantissa bits, sign included (2..16); ``block_size``: elements per shared
    exponent (>= 1); ``exponent_width``: shared exponent bits (2..10); ``rounding``: "half_even"
    or "half_away"; ``exponent_encoding``: "twos_complement" or "biased".
    """
    element_width: int = 8
    block_size: int = 32
    exponent_width: int = 8
    rounding: str = "half_even"
    exponent_encoding: str = "twos_complement"

    def __post_init__(self):
        if not _is_int(self.element_width) or not 2 <= self.element_width <= 16:
            raise ValueError(
                f"Element width must be an integer from 2 to 16, not {self.element_width!r}")
        if not _is_int(self.block_size) or self.block_size < 1:
            raise ValueError(f"Block size must be a positive integer, not {self.block_size!r}")
        if not _is_int(self.exponent_width) or not 2 <= self.exponent_width <= 10:
            raise ValueError(
                f"Exponent width must be an integer from 2 to 10, not {self.exponent_width!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"Rounding must be one of {ROUNDINGS}, not {self.rounding!r}")
        if self.exponent_encoding not in EXPONENT_ENCODINGS:
            raise ValueError(f"Exponent encoding must be one of {EXPONENT_ENCODINGS}, "
                             f"not {self.exponent_encoding!r}")

    @property
    def fraction_bits(self) -> int:
        """Mantissa fraction bits: value = m * 2^(e - fraction_bits)."""
        return self.element_width - 2

    @property
    def mantissa_max(self) -> int:
        return (1 << (self.element_width - 1)) - 1

    @property
    def exponent_bias(self) -> int:
        return (1 << (self.exponent_width - 1)) - 1 if self.exponent_encoding == "biased" else 0

    @property
    def emin(self) -> int:
        if self.exponent_encoding == "biased":
            return -self.exponent_bias
        return -(1 << (self.exponent_width - 1))

    @property
    def emax(self) -> int:
        if self.exponent_encoding == "biased":
            return (1 << self.exponent_width) - 1 - self.exponent_bias
        return (1 << (self.exponent_width - 1)) - 1


@dataclass(frozen=True)
class MXIntArray:
    """Result of :func:`quantize_mxint`: ``exponents`` (int64, decoded, shape ``batch +
    (n_blocks,)``), ``mantissas`` (int64, shape ``batch + (n_blocks, block_size)``), the blocked
    axis moved last; ``shape``/``axis`` restore the layout."""
    exponents: np.ndarray
    mantissas: np.ndarray
    fmt: MXIntFormat
    axis: int
    shape: tuple


def encode_exponent(e, fmt: MXIntFormat) -> np.ndarray:
    """Decoded exponent -> unsigned field code (two's complement bits or biased code)."""
    e = np.asarray(e, np.int64)
    return (e + fmt.exponent_bias) & ((1 << fmt.exponent_width) - 1)


def decode_exponent(code, fmt: MXIntFormat) -> np.ndarray:
    """Unsigned field code -> decoded signed exponent."""
    code = np.asarray(code, np.int64) & ((1 << fmt.exponent_width) - 1)
    if fmt.exponent_encoding == "biased":
        return code - fmt.exponent_bias
    return np.where(code >= (1 << (fmt.exponent_width - 1)), code - (1 << fmt.exponent_width),
                    code)


def _quantize_blocks(v: np.ndarray, fmt: MXIntFormat):
    """Exact float64 values, shape (..., block_size) -> (exponents, mantissas).

    Exact because every input has at most 24 significant bits and every scaling is by a power
    of two well inside the float64 range."""
    a = np.abs(v)
    amax = a.max(axis=-1)
    e = np.where(amax > 0, shared_exponent(np.where(amax > 0, amax, 1.0)), fmt.emin)
    e = np.clip(e, fmt.emin, fmt.emax)
    r = round_to_integer(np.ldexp(a, (fmt.fraction_bits - e)[..., None]), fmt.rounding)
    r = np.minimum(r, fmt.mantissa_max)
    m = np.where(v < 0, -r, r).astype(np.int64)
    return e.astype(np.int64), m


def quantize_mxint(x, fmt: MXIntFormat, axis: int = -1) -> MXIntArray:
    """Quantize ``x`` (converted to float32 first) to MXInt blocks along ``axis`` (ragged last
    block padded with zeros).  NaN -> 0, +-Inf -> +-2^128 as in :func:`mxint_cast` (fp32)."""
    x = np.asarray(x, np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
    axis = axis % x.ndim
    moved = np.moveaxis(x, axis, -1).astype(np.float64)
    moved = np.where(np.isnan(moved), 0.0, moved)
    moved = np.where(np.isinf(moved), np.copysign(2.0 ** 128, moved), moved)
    n = moved.shape[-1]
    k = fmt.block_size
    n_blocks = max(1, -(-n // k))
    pad = n_blocks * k - n
    if pad:
        moved = np.concatenate([moved, np.zeros(moved.shape[:-1] + (pad,))], axis=-1)
    e, m = _quantize_blocks(moved.reshape(moved.shape[:-1] + (n_blocks, k)), fmt)
    return MXIntArray(e, m, fmt, axis, tuple(x.shape))


def dequantize_mxint(q: MXIntArray, dtype=np.float32) -> np.ndarray:
    """Exact values ``m * 2^(e - fraction_bits)`` rounded once to ``dtype``, original shape."""
    v = np.ldexp(q.mantissas.astype(np.float64), (q.exponents - q.fmt.fraction_bits)[..., None])
    v = v.reshape(v.shape[:-2] + (-1,))[..., :q.shape[q.axis]]
    return np.moveaxis(v, -1, q.axis).astype(dtype)


def fake_quantize_mxint(x, fmt: MXIntFormat, axis: int = -1) -> np.ndarray:
    """float32 values on the MXInt grid, same shape as ``x``."""
    return dequantize_mxint(quantize_mxint(x, fmt, axis)).reshape(np.shape(x))


# --------------------------------------------------------------------------------------------
# Bit-exact datapath models


def decode_float_bits(bits, input_format: str) -> np.ndarray:
    """Raw FP16/BF16/FP32 bit patterns -> exact float64 values with the cast's NaN/Inf rule."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"Input format must be one of {tuple(INPUT_FORMATS)}, "
                         f"not {input_format!r}")
    exp_bits, frac_bits, width = INPUT_FORMATS[input_format]
    bits = np.asarray(bits, np.int64) & ((1 << width) - 1)
    sign = (bits >> (width - 1)) & 1
    expf = (bits >> frac_bits) & ((1 << exp_bits) - 1)
    frac = bits & ((1 << frac_bits) - 1)
    bias = (1 << (exp_bits - 1)) - 1
    sig = np.where(expf == 0, frac, frac | (1 << frac_bits))
    # Inf reads the all-ones exponent as an ordinary one: 2^(Emax_in + 1) exactly.
    lsb = np.maximum(expf, 1) - bias - frac_bits
    v = np.ldexp(sig.astype(np.float64), lsb)
    nan = (expf == (1 << exp_bits) - 1) & (frac != 0)
    v = np.where(nan, 0.0, v)
    return np.where(sign == 1, -v, v)


def mxint_cast(bits, fmt: MXIntFormat, input_format: str = "fp16"):
    """Model of ``hw.mxint_cast.MXIntCast``.

    ``bits``: integer array ``(..., block_size)`` of raw input bit patterns.  Returns
    ``(exponents, mantissas)``: decoded exponents ``(...)`` and signed mantissas
    ``(..., block_size)``, both int64."""
    bits = np.asarray(bits)
    if bits.shape[-1] != fmt.block_size:
        raise ValueError(f"Last axis must hold one block of {fmt.block_size} values, "
                         f"not {bits.shape[-1]}")
    return _quantize_blocks(decode_float_bits(bits, input_format), fmt)


def mxint_dot(a_exp, a_man, b_exp, b_man, fmt: MXIntFormat):
    """Model of ``hw.mxint_dot.MXIntDotProduct``: exact block dot product.

    Returns ``(exponent, total)`` with ``a.b = total * 2^(exponent - 2*fraction_bits)``;
    ``exponent = a_exp + b_exp`` (decoded) and ``total = sum(a_man * b_man)`` (exact int64)."""
    a_man = np.asarray(a_man, np.int64)
    b_man = np.asarray(b_man, np.int64)
    return (np.asarray(a_exp, np.int64) + np.asarray(b_exp, np.int64),
            (a_man * b_man).sum(axis=-1))


def _floor_shift(x, s):
    """Arithmetic (floor) right shift of Python ints/int64 arrays by non-negative ``s``."""
    return np.right_shift(np.asarray(x, np.int64), np.minimum(np.asarray(s, np.int64), 63))


def mxint_accumulate(exponents, values, *, mode: str = "exact", acc_width: int | None = None,
                     exponent_min: int | None = None):
    """Model of ``hw.mxint_accumulator.MXIntAccumulator`` for one sum of T terms.

    Term ``t`` is ``values[t] * 2^exponents[t]`` (``values``: ints, shape ``(T,)`` or
    ``(T, lanes)``; all lanes of a term share its exponent).

    ``mode="exact"``: returns ``(exponent_min, total)`` with ``total = sum values[t] *
    2^(exponents[t] - exponent_min)`` as Python ints (wide, no loss).  ``exponent_min`` defaults
    to ``min(exponents)``; the RTL uses the smallest exponent its input field can hold.

    ``mode="shift"`` (lossy, as in MXInt ViT accumulators): an ``acc_width``-bit signed
    accumulator with its own exponent.  First term: ``acc = v0, E = e0``.  Each next term:
    ``E' = max(E, e)``; ``acc = (acc >> (E'-E)) + (v >> (E'-e))`` with arithmetic (floor) shifts;
    if any lane of the sum leaves the ``acc_width``-bit range, the sum is shifted right once more
    and ``E' += 1``.  Returns ``(E, acc)``.  Bits shifted out are lost (floor, never rounded).
    """
    exps = [int(e) for e in np.asarray(exponents).reshape(-1)]
    vals = np.asarray(values, dtype=object)
    if vals.ndim == 1:
        vals = vals.reshape(-1, 1)
        squeeze = True
    else:
        squeeze = False
    if len(exps) == 0 or len(exps) != vals.shape[0]:
        raise ValueError("Need at least one term and one exponent per term")
    rows = [[int(v) for v in row] for row in vals]
    if mode == "exact":
        lsb = min(exps) if exponent_min is None else int(exponent_min)
        if min(exps) < lsb:
            raise ValueError(f"Exponent {min(exps)} is below exponent_min {lsb}")
        total = [0] * len(rows[0])
        for e, row in zip(exps, rows):
            for i, v in enumerate(row):
                total[i] += v << (e - lsb)
        return lsb, (total[0] if squeeze else total)
    if mode != "shift":
        raise ValueError(f"Accumulator mode must be 'exact' or 'shift', not {mode!r}")
    if not _is_int(acc_width) or acc_width < 2:
        raise ValueError(f"acc_width must be an integer >= 2 in shift mode, not {acc_width!r}")
    lo, hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
    E, acc = exps[0], list(rows[0])
    if any(not lo <= v <= hi for v in acc):
        raise ValueError(f"Term 0 does not fit in acc_width={acc_width} bits")
    for e, row in zip(exps[1:], rows[1:]):
        new_e = max(E, e)
        s = [(a >> (new_e - E)) + (v >> (new_e - e)) for a, v in zip(acc, row)]
        if any(not lo <= v <= hi for v in s):
            s = [v >> 1 for v in s]
            new_e += 1
        E, acc = new_e, s
    return E, (acc[0] if squeeze else acc)


def round_shift_right(x: int, s: int, rounding: str) -> int:
    """``x / 2^s`` rounded to an integer (``s`` may be negative: exact left shift)."""
    if s <= 0:
        return x << -s
    mag = abs(x)
    q, rem = mag >> s, mag & ((1 << s) - 1)
    half = 1 << (s - 1)
    if rem > half or (rem == half and (rounding == "half_away" or q & 1)):
        q += 1
    return -q if x < 0 else q


def float32_from_fixed(total: int, exponent: int) -> np.float32:
    """``total * 2^exponent`` rounded to float32, half-even, subnormals kept, overflow -> Inf.

    Integer-only so that no intermediate float64 rounding can cause double rounding."""
    if total == 0:
        return np.float32(0.0)
    mag = abs(total)
    top = mag.bit_length() - 1 + exponent        # floor(log2 |value|)
    lsb = max(top, -126) - 23                     # float32 step at this magnitude
    q = round_shift_right(mag, lsb - exponent, "half_even")
    # q has at most 25 bits, so q * 2^lsb is exact in float64 and the float32 cast only
    # overflows (to Inf), never rounds.
    with np.errstate(over="ignore"):
        v = np.float32(np.ldexp(np.float64(q), lsb))
    return -v if total < 0 else v


def mxint_linear(x_exp, x_man, w_exp, w_man, b_exp, b_man, fmt: MXIntFormat,
                 output: str = "fp32", out_fmt: MXIntFormat | None = None):
    """Model of ``hw.mxint_linear.MXIntLinear``: ``y = x W^T + b``.

    ``x``: one row, ``x_exp (KB,)``, ``x_man (KB, k)``; ``W``: ``w_exp (N, KB)``,
    ``w_man (N, KB, k)``; bias: one MXInt value per output, ``b_exp (N,)``, ``b_man (N,)``
    (value ``b_man * 2^(b_exp - fraction_bits)``).  The sum over K and the bias is exact; the
    only rounding is the final one: ``output="fp32"`` rounds each ``y_n`` to float32
    (half-even) and returns a float32 array ``(N,)``; ``output="mxint"`` quantizes the N outputs
    as blocks of ``out_fmt.block_size`` with ``out_fmt``'s rules and returns
    ``(exponents, mantissas)``.
    """
    f = fmt.fraction_bits
    n_out = len(b_exp)
    exact = []   # (total, exponent) per output, value = total * 2^exponent
    for n in range(n_out):
        terms_e = [int(b_exp[n]) - f]
        terms_v = [int(b_man[n])]
        for kb in range(len(x_exp)):
            e, s = mxint_dot(x_exp[kb], x_man[kb], w_exp[n][kb], w_man[n][kb], fmt)
            terms_e.append(int(e) - 2 * f)
            terms_v.append(int(s))
        lsb, total = mxint_accumulate(terms_e, terms_v, mode="exact")
        exact.append((total, lsb))
    if output == "fp32":
        return np.array([float32_from_fixed(t, e) for t, e in exact], np.float32)
    if output != "mxint":
        raise ValueError(f"Output must be 'fp32' or 'mxint', not {output!r}")
    of = out_fmt or fmt
    if n_out % of.block_size:
        raise ValueError(f"N={n_out} must be a multiple of the output block size "
                         f"{of.block_size}")
    exps, mans = [], []
    for b0 in range(0, n_out, of.block_size):
        blk = exact[b0:b0 + of.block_size]
        tops = [abs(t).bit_length() - 1 + e for t, e in blk if t != 0]
        e_blk = min(max(max(tops), of.emin), of.emax) if tops else of.emin
        row = []
        for t, e in blk:
            m = round_shift_right(t, e_blk - of.fraction_bits - e, of.rounding)
            row.append(max(-of.mantissa_max, min(of.mantissa_max, m)))
        exps.append(e_blk)
        mans.append(row)
    return np.array(exps, np.int64), np.array(mans, np.int64)
