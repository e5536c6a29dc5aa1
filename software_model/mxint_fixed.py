"""Fixed-point pieces shared by the MXInt nonlinear units (softmax, LayerNorm, GELU).

Every function here is integer-only (numpy int64, vectorised) and is the exact definition the RTL
(hw/mxint_fixed.py) implements, so the units' golden models are bit-exact by construction:

* :func:`scale_saturate` -- ``floor(v * 2^s)`` for a signed shift ``s`` (exact left shift, floor
  right shift), saturated to a signed width.  Every MXInt -> fixed-point conversion is this.
* :func:`fixed_to_mxint` -- exact integers ``v * 2^lsb`` (blocks along the last axis) -> one MXInt
  block each, with :class:`~software_model.mxint.MXIntFormat`'s rules (shared exponent
  ``floor(log2 max|v|)`` clamped to the field, one rounding of the magnitude, symmetric
  saturation): the only rounding of every unit's output.
* :class:`PiecewisePolynomial` -- a segment table plus a low-degree polynomial per segment, in
  Horner form with floor after each multiply, coefficients fitted in float64 and rounded; its
  error against the float64 function is measured exhaustively over every input code.
* :func:`reciprocal_newton` / :func:`rsqrt_newton` -- a seed table plus Newton steps on a
  normalised mantissa, fixed-point with floors (both iterations approach from below).
* :func:`floor_log2` -- leading-one position, vectorised.

Integer widths are checked by the callers' specs so that nothing here overflows int64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from software_model.mxint import MXIntFormat

__all__ = ["scale_saturate", "fixed_to_mxint", "floor_log2", "shift_right_floor",
           "PiecewisePolynomial", "reciprocal_newton", "rsqrt_newton", "reciprocal_seed_table",
           "rsqrt_seed_table", "signed_bits", "mxint_values", "RECIPROCAL_DIVISORS",
           "check_int_param"]

_I64 = np.int64


def check_int_param(name, value, lo, hi):
    """The nonlinear specs' integer knobs: ``lo <= value <= hi``, a plain (not bool) integer."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {value!r}")


def signed_bits(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement type holding every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def shift_right_floor(v, s):
    """``floor(v / 2^s)`` for int64 ``v`` and ``s >= 0`` (shifts of 63 or more give 0 / -1)."""
    return np.right_shift(np.asarray(v, _I64), np.minimum(np.asarray(s, _I64), 63))


def scale_saturate(v, s, width: int):
    """``floor(v * 2^s)`` saturated to a signed ``width``-bit integer (``width <= 62``).

    ``v``: int64 array; ``s``: int64 shift, broadcastable to ``v`` (negative: floor right shift).
    A left shift that would leave the range saturates to ``-2^(width-1)`` or ``2^(width-1) - 1``
    (the two's-complement ends), never wrapping."""
    v = np.asarray(v, _I64)
    s = np.asarray(s, _I64)
    v, s = np.broadcast_arrays(v, s)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    sl = np.clip(s, 0, width)               # a shift of width or more saturates any v != 0
    fits = (v <= (hi >> sl)) & (v >= -((1 << (width - 1)) >> sl))
    with np.errstate(over="ignore"):
        left = np.where(fits, v << sl, np.where(v < 0, lo, hi))
    right = np.clip(shift_right_floor(v, np.maximum(-s, 0)), lo, hi)
    return np.where(s >= 0, left, right).astype(_I64)


def floor_log2(v):
    """``floor(log2 v)`` of positive int64 ``v`` (exact; -1 where ``v <= 0``)."""
    v = np.asarray(v, _I64)
    out = np.full(v.shape, -1, _I64)
    pos = v > 0
    if np.any(pos):
        # frexp is exact for integers below 2^53; wider ones are split so no rounding can move
        # the leading one.
        hi = v >> 26
        m_hi, e_hi = np.frexp(hi.astype(np.float64))
        m_lo, e_lo = np.frexp((v & ((1 << 26) - 1)).astype(np.float64))
        out = np.where(hi > 0, e_hi.astype(_I64) - 1 + 26, e_lo.astype(_I64) - 1)
        out = np.where(pos, out, -1)
    return out


def mxint_values(exponents, mantissas, fmt: MXIntFormat) -> np.ndarray:
    """Exact float64 values of MXInt blocks: ``m * 2^(e - fraction_bits)`` (decoded exponents,
    blocks along the last axis of ``mantissas``)."""
    return np.ldexp(np.asarray(mantissas, np.float64),
                    (np.asarray(exponents, _I64) - fmt.fraction_bits)[..., None])


def _round_shift(mag, s, rounding: str):
    """Round ``mag / 2^s`` (``mag >= 0``, ``s >= 1``) to an integer."""
    s = np.minimum(s, 63)
    q = mag >> s
    rem = mag - (q << s)
    half = np.left_shift(_I64(1), s - 1)
    if rounding == "half_even":
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    else:
        up = rem >= half
    return q + up


def fixed_to_mxint(values, lsb, fmt: MXIntFormat):
    """Exact integers ``values * 2^lsb`` (int64, blocks of ``fmt.block_size`` along the last
    axis, shape ``(..., n_blocks, k)``) -> ``(exponents, mantissas)`` with the MXInt rules.

    ``lsb``: int, broadcastable to the block axes ``(..., n_blocks)``.  Shared exponent
    ``floor(log2 max|v|) + lsb``, clamped to ``[emin, emax]`` (all-zero block: ``emin``);
    mantissa ``round(v * 2^(lsb + fraction_bits - e))`` on the magnitude with ``fmt.rounding``,
    sign applied after, saturated to ``+-(2^(w-1) - 1)``.  The one rounding of every unit."""
    v = np.asarray(values, _I64)
    if v.shape[-1] != fmt.block_size:
        raise ValueError(f"Last axis must hold blocks of {fmt.block_size}, not {v.shape[-1]}")
    lsb = np.broadcast_to(np.asarray(lsb, _I64), v.shape[:-1])
    mag = np.abs(v)
    top = floor_log2(mag.max(axis=-1))
    e = np.where(top >= 0, np.clip(top + lsb, fmt.emin, fmt.emax), fmt.emin)
    shift = (e - fmt.fraction_bits - lsb)[..., None]
    shift = np.broadcast_to(shift, v.shape)
    right = _round_shift(mag, np.maximum(shift, 1), fmt.rounding)
    # shift <= 0 only when the exponent was clamped at emax (or values are tiny integers on a
    # coarse grid): exact left shift, then saturation.
    left = np.where(mag > 0, np.where(-shift >= fmt.element_width, fmt.mantissa_max + 1,
                                      mag << np.clip(-shift, 0, fmt.element_width)), 0)
    r = np.where(shift > 0, right, left)
    r = np.minimum(r, fmt.mantissa_max)
    return e.astype(_I64), np.where(v < 0, -r, r).astype(_I64)


# --------------------------------------------------------------------------------------------
# Piecewise polynomials


def _horner(coefs, seg, delta, delta_bits: int, guard_bits: int):
    """Exact integer Horner evaluation, one floor at the end (see PiecewisePolynomial)."""
    degree = coefs.shape[1] - 1
    acc = coefs[seg, degree]
    for i in range(degree - 1, -1, -1):
        acc = acc * delta + (coefs[seg, i] << (delta_bits * (degree - i)))
    return acc >> (delta_bits * degree + guard_bits)


@dataclass(frozen=True)
class PiecewisePolynomial:
    """``f`` on an ``in_bits``-bit unsigned input code ``u`` (real argument ``lo + u * step``),
    approximated on ``2^segment_bits`` equal segments by a degree-``degree`` polynomial each.

    Evaluation (what the RTL does): ``seg = u >> d``, ``delta = u & (2^d - 1)`` with
    ``d = in_bits - segment_bits``; coefficients ``c_i[seg]`` are integers on a grid of
    ``G = out_frac_bits + guard_bits`` fraction bits, for the local variable ``t = delta / 2^d``.
    The polynomial is evaluated *exactly* in Horner form, ``acc = c_deg``, then
    ``acc = acc * delta + c_i * 2^(d (deg - i))`` for each lower coefficient, and floored once:
    ``floor(acc / 2^(d deg + guard_bits))`` on the ``out_frac_bits`` grid, clamped to
    ``[lo_clamp, hi_clamp]`` when given.  Degree 0 is a plain table (one entry per segment).
    Because the only rounding is the final floor, a segment whose integer polynomial is monotone
    on its codes gives a monotone result.

    Coefficients: least-squares fit in float64 of ``f`` over the segment's input codes, rounded
    to the grid (``continuous``: through ``f`` at both segment ends, the rest least squares, so
    neighbouring segments meet up to the rounding).  ``pin_zero`` makes ``p(0)`` exactly
    ``round(f(lo))``.  ``monotone``: a list of
    ``(u_first, u_last, +1 | -1)`` code ranges where ``f`` rises (+1) or falls (-1); at every
    segment boundary inside one, the next segment's ``c_0`` is moved (by the few grid units
    rounding cost) so that the result does not step the wrong way.  :meth:`max_error` measures
    the result against ``f`` on every code, exhaustively.
    """
    func: Callable = field(compare=False)
    name: str
    in_bits: int
    lo: float
    step: float
    segment_bits: int
    degree: int
    out_frac_bits: int
    guard_bits: int = 2
    pin_zero: bool = False
    lo_clamp: int | None = None
    hi_clamp: int | None = None
    monotone: tuple = ()
    continuous: bool = False

    def __post_init__(self):
        if not 0 <= self.segment_bits <= self.in_bits:
            raise ValueError(f"Segment bits must be in 0..{self.in_bits}, not {self.segment_bits}")
        if self.degree not in (0, 1, 2, 3):
            raise ValueError(f"Polynomial degree must be 0, 1, 2 or 3, not {self.degree!r}")
        object.__setattr__(self, "_coefs", self._fit())

    @property
    def delta_bits(self) -> int:
        return self.in_bits - self.segment_bits

    @property
    def coefficients(self) -> np.ndarray:
        """int64 ``(2^segment_bits, degree + 1)``: ``c_0 .. c_deg`` on the accumulator grid."""
        return self._coefs

    def _fit(self) -> np.ndarray:
        d = self.delta_bits
        n_seg = 1 << self.segment_bits
        scale = 2.0 ** (self.out_frac_bits + self.guard_bits)
        coefs = np.zeros((n_seg, self.degree + 1), _I64)
        n_pts = 1 << d
        # at most 4096 sample codes per segment: exact for narrow segments, dense otherwise
        codes = np.unique(np.linspace(0, n_pts - 1, min(n_pts, 4096)).round().astype(_I64))
        t = codes / float(1 << d)
        for j in range(n_seg):
            x = self.lo + ((j << d) + codes) * self.step
            y = np.asarray(self.func(x), np.float64)
            if self.degree == 0:
                c = np.array([(y.max() + y.min()) / 2])       # minimax constant
            elif self.continuous:
                # through f at both ends of the segment (t = 0 and t = 1, the next segment's
                # start), the remaining freedom by least squares: neighbours meet up to rounding
                f0 = float(np.asarray(self.func(np.array([self.lo + (j << d) * self.step])))[0])
                f1 = float(np.asarray(self.func(np.array([self.lo + ((j + 1) << d)
                                                          * self.step])))[0])
                c = np.zeros(self.degree + 1)
                c[0], c[1] = f0, f1 - f0
                if self.degree >= 2 and len(codes) > 2:
                    # c2 (t^2 - t) absorbs the rest; higher terms likewise with (t^i - t)
                    basis = np.stack([t ** i - t for i in range(2, self.degree + 1)], axis=1)
                    rest = y - f0 - (f1 - f0) * t
                    sol = np.linalg.lstsq(basis, rest, rcond=None)[0]
                    c[2:] = sol
                    c[1] -= sol.sum()
            elif len(codes) <= self.degree:
                c = np.zeros(self.degree + 1)
                c[0] = y[0]
                if len(codes) > 1:
                    c[1] = (y[-1] - y[0]) / max(t[-1], 1e-30)
            else:
                v = np.vander(t, self.degree + 1, increasing=True)
                c = np.linalg.lstsq(v, y, rcond=None)[0]
            coefs[j] = np.round(c * scale).astype(_I64)
        if self.pin_zero:
            coefs[0, 0] = int(round(float(np.asarray(self.func(np.array([self.lo])))[0]) * scale))
        for first, last, sign in self.monotone:
            for j in range(n_seg - 1):
                boundary = (j + 1) << d
                if not first < boundary <= last:
                    continue
                end = self._exact(coefs, j, (1 << d) - 1)
                start = coefs[j + 1, 0] << (d * self.degree)
                # compare on the exact (unfloored) grid of the next segment's start
                if sign > 0 and start < end:
                    coefs[j + 1, 0] += -(-(end - start) >> (d * self.degree))
                elif sign < 0 and start > end:
                    coefs[j + 1, 0] -= -(-(start - end) >> (d * self.degree))
        return coefs

    def _exact(self, coefs, seg, delta) -> int:
        d, deg = self.delta_bits, self.degree
        acc = int(coefs[seg, deg])
        for i in range(deg - 1, -1, -1):
            acc = acc * int(delta) + (int(coefs[seg, i]) << (d * (deg - i)))
        return acc

    def __call__(self, u):
        """Evaluate on unsigned integer codes ``u`` (int64 array) -> int64 on the output grid."""
        u = np.asarray(u, _I64)
        d = self.delta_bits
        seg = u >> d
        delta = u & ((1 << d) - 1)
        out = _horner(self._coefs, seg, delta, d, self.guard_bits)
        if self.lo_clamp is not None:
            out = np.maximum(out, self.lo_clamp)
        if self.hi_clamp is not None:
            out = np.minimum(out, self.hi_clamp)
        return out

    def max_error(self) -> float:
        """``max |p(u) * 2^-out_frac_bits - f(lo + u * step)|`` over every code (exhaustive)."""
        u = np.arange(1 << self.in_bits, dtype=_I64)
        approx = np.ldexp(self(u).astype(np.float64), -self.out_frac_bits)
        return float(np.abs(approx - self.func(self.lo + u * self.step)).max())

    def max_relative_error(self) -> float:
        u = np.arange(1 << self.in_bits, dtype=_I64)
        approx = np.ldexp(self(u).astype(np.float64), -self.out_frac_bits)
        exact = self.func(self.lo + u * self.step)
        return float(np.abs(approx / exact - 1).max())

    def horner_bits(self) -> list[int]:
        """Signed width of each Horner accumulator, from c_deg down to the final sum (measured
        over the coefficient table and every delta), for the RTL's registers."""
        c = self._coefs
        d, deg = self.delta_bits, self.degree
        dmax = (1 << d) - 1
        lo, hi = c[:, deg].astype(object), c[:, deg].astype(object)
        widths = [signed_bits(min(int(lo.min()), 0), max(int(hi.max()), 0))]
        for i in range(deg - 1, -1, -1):
            add = c[:, i].astype(object) * (1 << (d * (deg - i)))
            cand = [lo * dmax, hi * dmax, lo * 0]
            lo = np.minimum(np.minimum(cand[0], cand[1]), 0) + add
            hi = np.maximum(np.maximum(cand[0], cand[1]), 0) + add
            widths.append(signed_bits(min(int(lo.min()), 0), max(int(hi.max()), 0)))
        return widths


# --------------------------------------------------------------------------------------------
# Reciprocal and inverse square root: seed table + Newton steps

#: which intervals the seed tables cover: reciprocal on [1, 2), rsqrt on [1, 4)
RECIPROCAL_DIVISORS = {"reciprocal": (1, 2), "rsqrt": (1, 4)}


def reciprocal_seed_table(table_bits: int, out_bits: int) -> np.ndarray:
    """Seed of 1/s for s in [1, 2): entry j covers [1 + j/2^t, 1 + (j+1)/2^t) and holds the
    constant with the smallest worst relative error there, 2 / (a + b), on ``out_bits`` fraction
    bits (rounded)."""
    j = np.arange(1 << table_bits)
    a = 1 + j / 2.0 ** table_bits
    b = 1 + (j + 1) / 2.0 ** table_bits
    return np.round(2.0 / (a + b) * 2.0 ** out_bits).astype(_I64)


def rsqrt_seed_table(table_bits: int, out_bits: int) -> np.ndarray:
    """Seed of 1/sqrt(v) for v in [1, 4), indexed by the top ``table_bits`` bits of the
    2-integer-bit mantissa (entries below v = 1 are unused): constant 2 / (sqrt a + sqrt b)."""
    j = np.arange(1 << table_bits)
    w = 4.0 / 2 ** table_bits
    a = np.maximum(j * w, 1.0)
    b = np.maximum((j + 1) * w, 1.0 + w)
    return np.round(2.0 / (np.sqrt(a) + np.sqrt(b)) * 2.0 ** out_bits).astype(_I64)


def reciprocal_newton(s, s_frac_bits: int, *, table_bits: int, steps: int, out_bits: int):
    """``y ~ 2^out_bits / (s * 2^-s_frac_bits)`` for normalised ``s`` in ``[2^f, 2^(f+1))``.

    Seed from :func:`reciprocal_seed_table` indexed by the top ``table_bits`` fraction bits of
    ``s``; each Newton step ``y = y (2 - s y)`` in fixed point:
    ``t = floor(s y / 2^f)``, ``y = floor(y (2^(out_bits+1) - t) / 2^out_bits)``.  Newton's
    iterate never exceeds 1/s (``1 - (1 - s y)^2 <= 1``) and the floors only lower it, so after
    one step or more ``y <= 2^out_bits / s``."""
    s = np.asarray(s, _I64)
    f = s_frac_bits
    idx = (s >> max(0, f - table_bits)) << max(0, table_bits - f)
    idx = idx & ((1 << table_bits) - 1)
    y = reciprocal_seed_table(table_bits, out_bits)[idx]
    two = 1 << (out_bits + 1)
    for _ in range(steps):
        t = (s * y) >> f
        y = (y * (two - t)) >> out_bits
    return y


def rsqrt_newton(v, v_frac_bits: int, *, table_bits: int, steps: int, out_bits: int):
    """``y ~ 2^out_bits / sqrt(v * 2^-v_frac_bits)`` for normalised ``v`` in ``[2^f, 2^(f+2))``.

    Seed from :func:`rsqrt_seed_table` indexed by the top ``table_bits`` bits of ``v`` (as a
    value in [0, 4)); Newton ``y = y (3 - v y^2) / 2``: ``y2 = floor(y^2 / 2^out_bits)``,
    ``t = floor(v y2 / 2^f)``, ``y = floor(y (3 * 2^out_bits - t) / 2^(out_bits + 1))``.
    Like the reciprocal, the iterate approaches 1/sqrt(v) from below."""
    v = np.asarray(v, _I64)
    f = v_frac_bits
    shift = f + 2 - table_bits
    idx = v >> shift if shift >= 0 else v << -shift
    y = rsqrt_seed_table(table_bits, out_bits)[idx]
    three = 3 << out_bits
    for _ in range(steps):
        y2 = (y * y) >> out_bits
        t = (v * y2) >> f
        y = (y * (three - t)) >> (out_bits + 1)
    return y


def _exhaustive_relative_error(fn, exact, frac_bits: int, lo_int: int, hi_int: int,
                               out_bits: int, limit: int = 1 << 20) -> float:
    """max |fn(s) / (2^out_bits * exact(s)) - 1| over normalised codes (sampled above ``limit``)."""
    lo, hi = lo_int << frac_bits, hi_int << frac_bits
    if hi - lo > limit:
        s = np.unique(np.linspace(lo, hi - 1, limit).round().astype(_I64))
    else:
        s = np.arange(lo, hi, dtype=_I64)
    y = fn(s).astype(np.float64) / 2.0 ** out_bits
    return float(np.abs(y / exact(s / 2.0 ** frac_bits) - 1).max())


def reciprocal_error(s_frac_bits: int, *, table_bits: int, steps: int, out_bits: int) -> float:
    """Worst relative error of :func:`reciprocal_newton` over every normalised input code."""
    return _exhaustive_relative_error(
        lambda s: reciprocal_newton(s, s_frac_bits, table_bits=table_bits, steps=steps,
                                    out_bits=out_bits),
        lambda x: 1.0 / x, s_frac_bits, 1, 2, out_bits)


def rsqrt_error(v_frac_bits: int, *, table_bits: int, steps: int, out_bits: int) -> float:
    """Worst relative error of :func:`rsqrt_newton` over every normalised input code."""
    return _exhaustive_relative_error(
        lambda v: rsqrt_newton(v, v_frac_bits, table_bits=table_bits, steps=steps,
                               out_bits=out_bits),
        lambda x: 1.0 / np.sqrt(x), v_frac_bits, 1, 4, out_bits)


__all__ += ["reciprocal_error", "rsqrt_error"]


def log2_e() -> float:
    return 1.0 / math.log(2.0)


def quantize_values(x, fmt: MXIntFormat, axis: int = -1):
    """float64 values -> MXInt blocks along ``axis`` (ragged end zero-padded), without the
    float32 conversion of :func:`software_model.mxint.quantize_mxint` (the values here are exact
    float64 sums).  Returns ``(exponents (..., nb), mantissas (..., nb, k))``, blocked axis
    last."""
    from software_model.mxint import _quantize_blocks
    v = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    k = fmt.block_size
    n = v.shape[-1]
    nb = max(1, -(-n // k))
    if nb * k != n:
        v = np.concatenate([v, np.zeros(v.shape[:-1] + (nb * k - n,))], axis=-1)
    return _quantize_blocks(v.reshape(v.shape[:-1] + (nb, k)), fmt)


def fake_quantize_values(x, fmt: MXIntFormat, axis: int = -1) -> np.ndarray:
    """float64 values on the MXInt grid (blocks along ``axis``), same shape as ``x``."""
    x = np.asarray(x, np.float64)
    e, m = quantize_values(x, fmt, axis)
    v = mxint_values(e, m, fmt)
    v = v.reshape(v.shape[:-2] + (-1,))[..., :np.moveaxis(x, axis, -1).shape[-1]]
    return np.moveaxis(v, -1, axis)


__all__ += ["quantize_values", "fake_quantize_values"]
