"""OCP Microscaling (MX) v1.0 golden model: quantize and dequantize.

Formats (``fmt`` argument, case-insensitive)::

    "mxint8"      int8 two's complement, implied scale 2^-6, emax_elem = 0
    "mxfp8_e4m3"  float8_e4m3fn     emax_elem = 8    max 448
    "mxfp8_e5m2"  float8_e5m2       emax_elem = 15   max 57344
    "mxfp6_e2m3"  float6_e2m3fn     emax_elem = 2    max 7.5
    "mxfp6_e3m2"  float6_e3m2fn     emax_elem = 4    max 28
    "mxfp4_e2m1"  float4_e2m1fn     emax_elem = 2    max 6

Public API::

    q = quantize_mx(x, fmt, block_size=32, rounding="half_even", axis=-1)   # -> MXArray
    y = dequantize_mx(q)                                                    # float32, shape of x
    y = fake_quantize_mx(x, fmt, block_size=32, rounding="half_even", axis=-1)

Rules implemented (they follow the spec and Microsoft's ``microxcaling`` reference library):

* ``x`` is converted to float32 first (the spec defines conversion from FP32); blocks are the
  consecutive ``block_size`` elements along ``axis``; a ragged last block is padded with zeros.
* Shared scale ``X = 2^E`` with ``E = floor(log2(max|V_i|)) - emax_elem``, stored as an E8M0 code
  ``E + 127``.  ``E > 127`` gives the NaN scale ``0xFF``; ``E < -127`` is clamped to ``-127``.
* All-zero block: the smallest scale, code ``0x00`` (2^-127); every element is zero.
* A block holding any NaN or +-Inf gets the NaN scale ``0xFF`` (the reference library reaches the
  same result: its max is NaN/Inf, so E overflows).  Its element codes are set to zero; dequantize
  returns NaN for the whole block.
* Elements: ``P_i = round(V_i / X)`` in the element format with subnormals kept, rounding either
  ``"half_even"`` (ties to even) or ``"half_away"`` (ties away from zero, the reference library's
  ``"nearest"``); magnitudes above the element maximum saturate to it (never Inf/NaN).  MXINT8
  saturates to +-127, never -128.
* FP32 subnormal inputs are kept (not flushed).
* ``dequantize_mx`` computes ``X * P_i`` exactly and rounds once to float32 (half-even).

Element codes are returned as ``int8`` for MXINT8 and as the matching ``ml_dtypes`` array
(``float8_e4m3fn`` ...) for the float formats, so ``elements.view(np.uint8)`` gives the bit codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

__all__ = [
    "MX_FORMATS", "MXElementFormat", "MXArray", "ROUNDINGS",
    "quantize_mx", "dequantize_mx", "fake_quantize_mx", "round_to_integer",
    "shared_exponent", "SCALE_NAN", "SCALE_BIAS",
]

ROUNDINGS = ("half_even", "half_away")
SCALE_NAN = 0xFF
SCALE_BIAS = 127
SCALE_EMAX = 127
SCALE_EMIN = -127


@dataclass(frozen=True)
class MXElementFormat:
    """An OCP MX element format.

    ``mantissa_bits`` counts fraction bits (explicit); ``emin`` is the exponent of the smallest
    normal (the subnormal step is ``2^(emin - mantissa_bits)``).  For MXINT8 ``exponent_bits`` is
    0 and the element is a fixed-point number with ``mantissa_bits`` fraction bits.
    """
    name: str
    exponent_bits: int
    mantissa_bits: int
    emax: int          # emax_elem of the spec: exponent of the largest normal
    emin: int
    max_normal: float
    dtype: object      # numpy / ml_dtypes dtype of the element codes

    @property
    def is_integer(self) -> bool:
        return self.exponent_bits == 0


MX_FORMATS = {
    "mxint8": MXElementFormat("mxint8", 0, 6, 0, 0, 127 / 64, np.int8),
    "mxfp8_e4m3": MXElementFormat("mxfp8_e4m3", 4, 3, 8, -6, 448.0, ml_dtypes.float8_e4m3fn),
    "mxfp8_e5m2": MXElementFormat("mxfp8_e5m2", 5, 2, 15, -14, 57344.0, ml_dtypes.float8_e5m2),
    "mxfp6_e2m3": MXElementFormat("mxfp6_e2m3", 2, 3, 2, 0, 7.5, ml_dtypes.float6_e2m3fn),
    "mxfp6_e3m2": MXElementFormat("mxfp6_e3m2", 3, 2, 4, -2, 28.0, ml_dtypes.float6_e3m2fn),
    "mxfp4_e2m1": MXElementFormat("mxfp4_e2m1", 2, 1, 2, 0, 6.0, ml_dtypes.float4_e2m1fn),
}


@dataclass(frozen=True)
class MXArray:
    """Result of :func:`quantize_mx`.

    ``scales``: uint8 E8M0 codes, shape ``batch + (n_blocks,)``; ``elements``: element codes, shape
    ``batch + (n_blocks, block_size)``, where ``batch`` is the input shape without ``axis`` (the
    blocked axis is moved last).  ``shape`` and ``axis`` restore the original layout.
    """
    scales: np.ndarray
    elements: np.ndarray
    fmt: str
    block_size: int
    axis: int
    shape: tuple


def _format(fmt) -> MXElementFormat:
    if isinstance(fmt, MXElementFormat):
        return fmt
    try:
        return MX_FORMATS[str(fmt).lower()]
    except KeyError:
        raise ValueError(f"MX format must be one of {sorted(MX_FORMATS)}, not {fmt!r}") from None


def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"Rounding must be one of {ROUNDINGS}, not {rounding!r}")


def _check_block_size(block_size):
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) \
            or block_size < 1:
        raise ValueError(f"Block size must be a positive integer, not {block_size!r}")


def round_to_integer(a: np.ndarray, rounding: str) -> np.ndarray:
    """Round non-negative float64 ``a`` to an integer-valued float64, exactly.

    ``half_even``: ties to even; ``half_away``: ties away from zero (for non-negative ``a``: up).
    Both are exact for any finite double (no ``a + 0.5`` double rounding).
    """
    _check_rounding(rounding)
    if rounding == "half_even":
        return np.rint(a)
    floor = np.floor(a)
    return floor + ((a - floor) >= 0.5)


def shared_exponent(amax: np.ndarray) -> np.ndarray:
    """``floor(log2(amax))`` exactly for positive finite ``amax`` (via frexp, not log2)."""
    _, e = np.frexp(amax)
    return e.astype(np.int64) - 1


def _blocks(x, block_size, axis):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
    axis = axis % x.ndim
    moved = np.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    n_blocks = max(1, -(-n // block_size))
    pad = n_blocks * block_size - n
    if pad:
        moved = np.concatenate(
            [moved, np.zeros(moved.shape[:-1] + (pad,), np.float32)], axis=-1)
    return moved.reshape(moved.shape[:-1] + (n_blocks, block_size)), x.shape, axis


def _quantize_elements(v: np.ndarray, f: MXElementFormat, rounding: str) -> np.ndarray:
    """Quantize float64 ``v`` (already divided by the scale) to element values (float64)."""
    a = np.abs(v)
    if f.is_integer:
        step_exp = np.full(a.shape, -f.mantissa_bits, np.int64)
    else:
        with np.errstate(divide="ignore"):
            e = np.where(a > 0, shared_exponent(np.where(a > 0, a, 1.0)), f.emin)
        step_exp = np.maximum(e, f.emin) - f.mantissa_bits
    r = round_to_integer(np.ldexp(a, -step_exp), rounding)
    q = np.minimum(np.ldexp(r, step_exp), f.max_normal)
    return np.copysign(q, v)


def quantize_mx(x, fmt, block_size: int = 32, rounding: str = "half_even",
                axis: int = -1) -> MXArray:
    """Quantize ``x`` to an OCP MX format; see the module docstring for every rule."""
    f = _format(fmt)
    _check_block_size(block_size)
    _check_rounding(rounding)
    blocks, shape, axis = _blocks(x, block_size, axis)
    v = blocks.astype(np.float64)
    finite = np.isfinite(v).all(axis=-1)
    amax = np.max(np.where(np.isfinite(v), np.abs(v), 0.0), axis=-1)
    e = np.where(amax > 0, shared_exponent(np.where(amax > 0, amax, 1.0)) - f.emax, SCALE_EMIN)
    e = np.maximum(e, SCALE_EMIN)
    nan_scale = ~finite | (e > SCALE_EMAX)
    e = np.where(nan_scale, 0, e)
    scaled = np.where(nan_scale[..., None], 0.0, np.ldexp(np.where(np.isfinite(v), v, 0.0),
                                                           -e[..., None]))
    p = _quantize_elements(scaled, f, rounding)
    if f.is_integer:
        elements = np.ldexp(p, f.mantissa_bits).astype(np.int8)
    else:
        elements = p.astype(np.float32).astype(f.dtype)
    scales = np.where(nan_scale, SCALE_NAN, e + SCALE_BIAS).astype(np.uint8)
    return MXArray(scales, elements, f.name, int(block_size), axis, tuple(shape))


def dequantize_mx(q: MXArray, dtype=np.float32) -> np.ndarray:
    """Values ``X * P_i`` in the original shape, rounded once to ``dtype`` (NaN scale -> NaN)."""
    f = _format(q.fmt)
    if f.is_integer:
        p = np.ldexp(q.elements.astype(np.float64), -f.mantissa_bits)
    else:
        p = q.elements.astype(np.float64)
    codes = q.scales.astype(np.int64)
    v = np.ldexp(p, (codes - SCALE_BIAS)[..., None])
    v = np.where((codes == SCALE_NAN)[..., None], np.nan, v)
    moved = v.reshape(v.shape[:-2] + (-1,))
    shape = list(q.shape)
    n = shape[q.axis]
    moved = moved[..., :n]
    return np.moveaxis(moved, -1, q.axis).astype(dtype)


def fake_quantize_mx(x, fmt, block_size: int = 32, rounding: str = "half_even",
                     axis: int = -1) -> np.ndarray:
    """``dequantize_mx(quantize_mx(...))``: float32 values on the MX grid, shape of ``x``."""
    q = quantize_mx(x, fmt, block_size, rounding, axis)
    return dequantize_mx(q).reshape(np.shape(x) if np.ndim(x) else ())
