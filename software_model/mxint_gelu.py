"""MXInt GELU: bit-exact integer golden model of ``hw.mxint_gelu.MXIntGELU``.

BERT's (and all-MiniLM-L6-v2's) exact erf GELU, ``x Phi(x) = x (1 + erf(x / sqrt 2)) / 2``, one
MXInt block in, one MXInt block out (same block size), element by element.

Algorithm (``f`` = fraction bits of the input format)
-----------------------------------------------------
1. ``x_q = sat(floor(m * 2^(e - f + F)))``: the input on a fixed grid of ``F = frac_bits``
   fraction bits, saturated to ``|x| < 2^int_bits`` (``int_bits + F + 1`` signed bits).
2. Inside the approximation range ``[-2^range_bits, 2^range_bits)``: ``u = x_q + 2^(Ir + F)``
   (an unsigned code of ``Ir + 1 + F`` bits) indexes ``2^segment_bits`` equal segments; each has
   a polynomial of degree ``degree`` (0 = a plain table) evaluated in Horner form with floors
   (:class:`~software_model.mxint_fixed.PiecewisePolynomial`), giving ``y`` on ``Fo =
   out_frac_bits`` fraction bits.
3. Outside: ``y = x`` above the range (exact: ``x_q 2^(Fo - F)``), ``y = 0`` below it.  The
   error this costs is ``x (1 - Phi(x))`` resp. ``|x Phi(x)|``, both at most
   ``2^Ir (1 - Phi(2^Ir))`` (1.3e-4 for the default range 4).
4. Each block of ``y`` is rounded once into ``out_fmt``
   (:func:`~software_model.mxint_fixed.fixed_to_mxint`).

Hardware streaming order: one beat per block ``{exponent, mantissas[k]}`` in, one out, in order;
one block per cycle, fixed latency.

Error bound against float64 ``gelu(x)`` of the exact input value (:func:`gelu_error_bound`): the
polynomial's own error measured on every input code, plus the input floor (at most ``2^-F`` times
GELU's largest slope, 1.129), plus the range cut, plus one unit in the last place of the output
block (half a unit of rounding, a whole one when the block's largest element rounds up into
saturation).  Monotonicity: GELU decreases on (-inf, -0.7518] and increases after;
:func:`gelu_monotone_from` finds, exhaustively over the input grid, from where the fixed-point
result never decreases (tests/test_mxint_gelu.py checks it stays close to the true minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from software_model.mxint import MXIntFormat
from software_model.mxint_fixed import (PiecewisePolynomial, fixed_to_mxint, mxint_values,
                                        scale_saturate)
from software_model.mxint_fixed import check_int_param as _int_param

__all__ = ["GeluSpec", "gelu_erf64", "gelu_fixed_input", "gelu_fixed", "mxint_gelu",
           "reference_gelu", "gelu_error_bound", "gelu_monotone_from", "GELU_ARGMIN",
           "GELU_MAX_SLOPE"]

_I64 = np.int64
#: where GELU has its minimum (-0.16997): it decreases before, increases after
GELU_ARGMIN = -0.7517915240
#: the largest |GELU'(x)| (at x = sqrt 2 ~ 1.414: 1.1289)
GELU_MAX_SLOPE = 1.12893
_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf64(x) -> np.ndarray:
    """Exact erf GELU in float64."""
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + np.asarray(_erf(x / math.sqrt(2.0)), np.float64))


@dataclass(frozen=True)
class GeluSpec:
    in_fmt: MXIntFormat = MXIntFormat(8, 16)
    out_fmt: MXIntFormat = MXIntFormat(8, 16)
    frac_bits: int = 8
    int_bits: int = 8
    range_bits: int = 2
    segment_bits: int = 4
    degree: int = 2
    out_frac_bits: int = 10

    def __post_init__(self):
        for name in ("in_fmt", "out_fmt"):
            if not isinstance(getattr(self, name), MXIntFormat):
                raise TypeError(f"{name} must be an MXIntFormat, not {getattr(self, name)!r}")
        if self.out_fmt.block_size != self.in_fmt.block_size:
            raise ValueError(f"out_fmt block size must equal in_fmt's "
                             f"({self.in_fmt.block_size}), not {self.out_fmt.block_size}")
        _int_param("frac_bits", self.frac_bits, 1, 16)
        _int_param("int_bits", self.int_bits, 1, 16)
        _int_param("range_bits", self.range_bits, 0, min(4, self.int_bits))
        _int_param("segment_bits", self.segment_bits, 0, self.range_bits + 1 + self.frac_bits)
        _int_param("degree", self.degree, 0, 2)
        _int_param("out_frac_bits", self.out_frac_bits, self.frac_bits, 20)
        if self.range_bits + 1 + self.frac_bits > 20:
            raise ValueError(f"range_bits + 1 + frac_bits must be at most 20 (the polynomial's "
                             f"input code), not {self.range_bits + 1 + self.frac_bits}")

    @property
    def block_size(self) -> int:
        return self.in_fmt.block_size

    @property
    def x_bits(self) -> int:
        return self.int_bits + self.frac_bits + 1

    @property
    def poly_in_bits(self) -> int:
        return self.range_bits + 1 + self.frac_bits

    @property
    def y_bits(self) -> int:
        """Signed width of y on the Fo grid (the pass-through x dominates)."""
        return self.int_bits + self.out_frac_bits + 1

    @property
    def x_shift_offset(self) -> int:
        return self.frac_bits - self.in_fmt.fraction_bits

    @cached_property
    def poly(self) -> PiecewisePolynomial:
        r = 2.0 ** self.range_bits
        step = 2.0 ** -self.frac_bits
        # codes of the falling and the rising part (boundaries there are made monotone)
        turn = int(math.floor((GELU_ARGMIN + r) / step))
        return PiecewisePolynomial(func=gelu_erf64, name="gelu", in_bits=self.poly_in_bits,
                                   lo=-r, step=step,
                                   segment_bits=self.segment_bits, degree=self.degree,
                                   out_frac_bits=self.out_frac_bits, continuous=True,
                                   monotone=((0, turn, -1), (turn + 1, 1 << self.poly_in_bits,
                                                             +1)))


def gelu_fixed_input(exponents, mantissas, spec: GeluSpec):
    """Step 1: decoded exponents ``(..., nb)``, mantissas ``(..., nb, k)`` -> x_q."""
    e = np.asarray(exponents, _I64)[..., None]
    return scale_saturate(np.asarray(mantissas, _I64), e + spec.x_shift_offset, spec.x_bits)


def gelu_fixed(x_q, spec: GeluSpec):
    """Steps 2-3 on fixed-point inputs: ``x_q`` (F grid) -> ``y`` (Fo grid)."""
    x_q = np.asarray(x_q, _I64)
    half = 1 << (spec.range_bits + spec.frac_bits)
    inside = (x_q >= -half) & (x_q < half)
    u = np.where(inside, x_q + half, 0)
    y = spec.poly(u)
    above = x_q << (spec.out_frac_bits - spec.frac_bits)
    return np.where(inside, y, np.where(x_q >= half, above, 0)).astype(_I64)


def mxint_gelu(exponents, mantissas, spec: GeluSpec):
    """GELU of MXInt blocks -> ``(exponents, mantissas)`` in ``spec.out_fmt``."""
    y = gelu_fixed(gelu_fixed_input(exponents, mantissas, spec), spec)
    return fixed_to_mxint(y, -spec.out_frac_bits, spec.out_fmt)


def reference_gelu(exponents, mantissas, spec: GeluSpec) -> np.ndarray:
    """float64 GELU of the exact input values, shape ``(..., nb, k)``."""
    return gelu_erf64(mxint_values(exponents, mantissas, spec.in_fmt))


def gelu_error_bound(spec: GeluSpec, out_exponents) -> np.ndarray:
    """Elementwise ``|y - gelu(x)|`` bound (float64, shape ``(..., nb, k)``) for inputs with
    ``|x| < 2^int_bits``: the polynomial's exhaustive error, the input floor, the range cut, and
    one output ulp (half a unit of rounding, a whole one when the block's largest element rounds
    up into saturation)."""
    r = 2.0 ** spec.range_bits
    poly = spec.poly.max_error()
    cut = float(max(r * (1 - gelu_erf64(r) / r), abs(gelu_erf64(-r))))
    # the tail error |x (1 - Phi(x))| decreases beyond r, so the value at r bounds it
    floor = GELU_MAX_SLOPE * 2.0 ** -spec.frac_bits
    out_ulp = np.ldexp(1.0, np.asarray(out_exponents, _I64) - spec.out_fmt.fraction_bits)
    return (max(poly, cut) + floor + out_ulp)[..., None] * np.ones(spec.block_size)


def gelu_monotone_from(spec: GeluSpec) -> tuple[float, float]:
    """Exhaustive over the input grid inside the range: ``(lo, hi)`` such that the fixed-point
    y never decreases on ``[hi, +inf)`` and never increases on ``(-inf, lo]`` (the pass-through
    and zero regions are monotone by construction and checked at the joins).  The true GELU
    has ``lo = hi = GELU_ARGMIN``."""
    half = 1 << (spec.range_bits + spec.frac_bits)
    x = np.arange(-half - 2, half + 2, dtype=_I64)
    y = gelu_fixed(x, spec)
    dy = np.diff(y)
    step = 2.0 ** -spec.frac_bits
    dec = np.nonzero(dy < 0)[0]           # y[i+1] < y[i]
    inc = np.nonzero(dy > 0)[0]
    hi = (x[dec[-1] + 1] * step) if len(dec) else -math.inf
    lo = (x[inc[0]] * step) if len(inc) else math.inf
    return float(lo), float(hi)
