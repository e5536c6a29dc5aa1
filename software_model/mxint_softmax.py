"""MXInt softmax: bit-exact integer golden model of ``hw.mxint_softmax.MXIntSoftmax``.

A row is a sequence of MXInt blocks (``in_fmt``; at most ``max_row_blocks`` of them) with an
optional per-element mask (masked elements take no part and come out as 0).  The output is the
same number of MXInt blocks in ``out_fmt`` (same block size), ``softmax(scale * x)`` per row.

Algorithm (every step integer; ``f`` = fraction bits of the input format)
--------------------------------------------------------------------------
1. **To the log2 domain.**  ``C = round(scale * log2(e) * 2^Fc)``; each element
   ``z = sat(floor(m * C * 2^(e_blk - f - Fc + Fz)))`` on a grid of ``Fz`` fraction bits,
   saturated to ``Iz + Fz + 1`` signed bits (``|scale * x * log2 e| < 2^Iz`` is exact up to the
   floor).  ``2^(z / 2^Fz)`` is then ``e^(scale * x)`` up to the rounding of C and the floor.
2. **Integer max.**  ``M = ceil(max_i z_i / 2^Fz)``: the row maximum rounded *up to an integer*
   in log2 units, so every later rescale is a plain shift (this is what makes the online form
   cheap) and the largest term still lies in (1/2, 1].
3. **exp by split.**  ``d = z - M * 2^Fz <= 0``; ``q = floor(d / 2^Fz)`` (an integer <= 0, the
   shift) and ``r = d mod 2^Fz`` (the fraction); ``p = 2^(r / 2^Fz)`` by a piecewise polynomial
   (:class:`~software_model.mxint_fixed.PiecewisePolynomial`: ``2^exp_segment_bits`` segments of
   degree ``exp_degree``; degree 0 is a plain table) on ``Fp = exp_bits`` fraction bits, clamped to
   [1, 2) and exactly 1 at r = 0; the term is ``t = floor(p * 2^q)`` (the shift; 0 below the grid).
4. **Sum** ``l = sum t`` (exact integer).
5. **Reciprocal.**  ``l = s * 2^lo`` with ``s`` in [1, 2) on ``Fr + 2`` fraction bits (floor);
   ``R ~ 2^Fr / s`` from a ``2^recip_table_bits``-entry seed table plus ``newton_steps`` Newton
   steps (:func:`~software_model.mxint_fixed.reciprocal_newton`).
6. **Output.**  ``v = min(t * R, 2^(Fr + lo))`` (value ``v * 2^-(Fr + lo)``, so at most 1), and
   each block of ``v`` is rounded once into ``out_fmt`` (:func:`~software_model.mxint_fixed.
   fixed_to_mxint`).

Two-pass and online (streaming) forms
-------------------------------------
*Two-pass* (``tile_blocks=None``): M from the whole row, then steps 3-6.
*Online* (``tile_blocks=T``, :class:`OnlineSoftmax`): the row arrives in tiles of T blocks; a
running integer max ``m`` and sum ``l`` are kept.  For each tile ``m' = max(m, ceil(tile max))``,
its terms are computed against ``m'`` and ``l = floor(l / 2^(m' - m)) + sum(tile terms)`` (the
rescale ``2^(m - m')`` of REFERENCE.md is a right shift because m is an integer).  At the end each
stored term is shifted right by ``M - m'_tile``.  What equals the two-pass numbers, bit for bit:

* the final max ``M`` (a max of ceilings is the ceiling of the max);
* every term after its final shift (floor shifts compose: ``floor(floor(p 2^a) 2^-b) =
  floor(p 2^(a-b))``), hence every output whenever the sums agree;
* the sum, whenever no rescale drops a set bit of ``l`` -- in particular when the row's maximum
  lies in the first tile, or T covers the row.  Otherwise ``S <= l_online <= S + n`` (n terms),
  because the online sum floors partial sums instead of each term: it is the *more* accurate one.

The RTL (hw/mxint_softmax.py) is the online form with T = 1 block on its first pass (running max,
exp, running sum; terms and their tile max go to a row buffer) and the final shift, multiply by R
and MXInt rounding on its second pass: ``mxint_softmax(..., tile_blocks=1)`` is its model.

Hardware streaming order: one beat per block ``{block: {exponent, mantissas[k]}, mask[k], last}``
in row order, ``last`` on a row's final block; one beat per block out ``{exponent, mantissas[k],
last}`` in the same order, after the row's last input block (the row must be complete before the
sum is known).  :func:`softmax_cycles` gives the cycle of every beat.

Error bounds against float64 (``softmax(scale * x)`` of the exact MXInt input values):
:func:`softmax_error_terms` measures each approximation exhaustively and
:func:`softmax_error_bound` combines them into an elementwise bound; tests/test_mxint_softmax.py
checks it with Hypothesis, and docs/mxint.md tabulates it for the presets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import numpy as np

from software_model.mxint import MXIntFormat
from software_model.mxint_fixed import (
    PiecewisePolynomial, fixed_to_mxint, floor_log2, mxint_values, reciprocal_error,
    reciprocal_newton, scale_saturate, shift_right_floor,
)
from software_model.mxint_fixed import check_int_param as _int_param

__all__ = ["SoftmaxSpec", "SoftmaxResult", "OnlineSoftmax", "OnlineTile", "mxint_softmax",
           "softmax_log2_scores", "softmax_terms", "softmax_reciprocal", "softmax_normalize",
           "reference_softmax", "softmax_error_terms", "softmax_error_bound", "softmax_sum_bound",
           "softmax_cycles"]

_I64 = np.int64
LOG2E = 1.0 / math.log(2.0)


@dataclass(frozen=True)
class SoftmaxSpec:
    """Every number that defines the softmax arithmetic.  Shared by the golden model, the RTL
    (which receives these as keyword arguments) and the config."""
    in_fmt: MXIntFormat = MXIntFormat(8, 16)
    out_fmt: MXIntFormat = MXIntFormat(8, 16)
    max_row_blocks: int = 8
    scale: float = 1.0
    scale_frac_bits: int = 12
    range_bits: int = 6
    exp_frac_bits: int = 10
    exp_segment_bits: int = 4
    exp_degree: int = 2
    exp_bits: int = 12
    recip_table_bits: int = 5
    newton_steps: int = 1
    recip_bits: int = 12

    def __post_init__(self):
        for name in ("in_fmt", "out_fmt"):
            if not isinstance(getattr(self, name), MXIntFormat):
                raise TypeError(f"{name} must be an MXIntFormat, not {getattr(self, name)!r}")
        if self.out_fmt.block_size != self.in_fmt.block_size:
            raise ValueError(f"out_fmt block size must equal in_fmt's "
                             f"({self.in_fmt.block_size}), not {self.out_fmt.block_size}")
        _int_param("max_row_blocks", self.max_row_blocks, 1, 4096)
        if not isinstance(self.scale, (int, float)) or not 0 < self.scale < 1e6 or \
                isinstance(self.scale, bool):
            raise ValueError(f"scale must be a positive number, not {self.scale!r}")
        _int_param("scale_frac_bits", self.scale_frac_bits, 1, 20)
        _int_param("range_bits", self.range_bits, 1, 12)
        _int_param("exp_frac_bits", self.exp_frac_bits, 1, 16)
        _int_param("exp_segment_bits", self.exp_segment_bits, 0, self.exp_frac_bits)
        _int_param("exp_degree", self.exp_degree, 0, 2)
        _int_param("exp_bits", self.exp_bits, 2, 20)
        _int_param("recip_table_bits", self.recip_table_bits, 1, 10)
        _int_param("newton_steps", self.newton_steps, 0, 3)
        _int_param("recip_bits", self.recip_bits, 2, 24)
        if self.recip_table_bits > self.recip_bits + 2:
            raise ValueError(f"recip_table_bits must be at most recip_bits + 2 "
                             f"({self.recip_bits + 2}), not {self.recip_table_bits}")
        c = self.scale_constant
        if not 1 <= c < 1 << 24:
            raise ValueError(f"scale * log2(e) * 2^scale_frac_bits must round to 1 .. 2^24 - 1, "
                             f"not {c} (scale {self.scale}, scale_frac_bits "
                             f"{self.scale_frac_bits})")

    # ---- derived constants (the RTL reads these) -------------------------------------------
    @property
    def block_size(self) -> int:
        return self.in_fmt.block_size

    @property
    def max_elements(self) -> int:
        return self.max_row_blocks * self.block_size

    @property
    def scale_constant(self) -> int:
        """C = round(scale * log2(e) * 2^Fc)."""
        return int(round(self.scale * LOG2E * 2.0 ** self.scale_frac_bits))

    @property
    def z_bits(self) -> int:
        """Signed width of z (log2 domain, Fz fraction bits, saturated)."""
        return self.range_bits + self.exp_frac_bits + 1

    @property
    def z_min(self) -> int:
        return -(1 << (self.z_bits - 1))

    @property
    def z_shift_offset(self) -> int:
        """z = floor(m * C * 2^(e + offset)): offset = Fz - f - Fc."""
        return self.exp_frac_bits - self.in_fmt.fraction_bits - self.scale_frac_bits

    @property
    def max_bits(self) -> int:
        """Signed width of the integer max M: ceil(z / 2^Fz) lies in [-2^Iz, 2^Iz]."""
        return self.range_bits + 2

    @property
    def d_bits(self) -> int:
        """Signed width of d = z - M 2^Fz (in [-2^(Iz+Fz+1) - ..., 0])."""
        return self.z_bits + 1

    @property
    def term_bits(self) -> int:
        """Unsigned width of a term t (at most 2^Fp)."""
        return self.exp_bits + 1

    @property
    def sum_bits(self) -> int:
        return self.term_bits + max(0, (self.max_elements - 1).bit_length())

    @property
    def recip_frac_bits(self) -> int:
        """Fraction bits of the normalised sum s fed to the reciprocal: Fr + 2."""
        return self.recip_bits + 2

    @property
    def product_bits(self) -> int:
        """Unsigned width of t * R."""
        return self.term_bits + self.recip_bits + 1

    @cached_property
    def exp2(self) -> PiecewisePolynomial:
        """2^r on r in [0, 1) (Fz input bits), Fp output fraction bits, clamped to [1, 2)."""
        fz = self.exp_frac_bits
        return PiecewisePolynomial(
            func=lambda r: np.exp2(r), name="exp2", in_bits=fz, lo=0.0, step=2.0 ** -fz,
            segment_bits=self.exp_segment_bits, degree=self.exp_degree,
            out_frac_bits=self.exp_bits, pin_zero=True, monotone=((0, 1 << fz, +1),),
            lo_clamp=1 << self.exp_bits, hi_clamp=(2 << self.exp_bits) - 1)


# --------------------------------------------------------------------------------------------
# The steps


def softmax_log2_scores(exponents, mantissas, spec: SoftmaxSpec):
    """Step 1: decoded block exponents ``(..., nb)`` and mantissas ``(..., nb, k)`` -> z."""
    e = np.asarray(exponents, _I64)[..., None]
    m = np.asarray(mantissas, _I64)
    return scale_saturate(m * spec.scale_constant, e + spec.z_shift_offset, spec.z_bits)


def _ceil_div_pow2(v, bits):
    return -((-np.asarray(v, _I64)) >> bits)


def block_max(z, mask, spec: SoftmaxSpec):
    """Integer max (step 2) of each block (last axis): ceil(max z / 2^Fz); masked elements count
    as z_min (a fully masked block gives ceil(z_min / 2^Fz) = -2^Iz, below every real max)."""
    zm = np.where(mask, z, spec.z_min)
    return _ceil_div_pow2(zm.max(axis=-1), spec.exp_frac_bits)


def softmax_terms(z, mask, m, spec: SoftmaxSpec):
    """Step 3: terms ``t = floor(2^(r/2^Fz) * 2^q)`` on the ``exp_bits`` grid against the
    integer max ``m`` (broadcast over the block's elements); masked elements give 0."""
    fz, fp = spec.exp_frac_bits, spec.exp_bits
    d = np.asarray(z, _I64) - (np.asarray(m, _I64)[..., None] << fz)
    q = d >> fz
    r = d & ((1 << fz) - 1)
    p = spec.exp2(r)
    t = shift_right_floor(p, np.minimum(-q, fp + 1))
    return np.where(mask, t, 0).astype(_I64)


def softmax_reciprocal(l, spec: SoftmaxSpec):
    """Step 5: ``(R, lo)`` for sums ``l``; ``l = 0`` (an all-masked row) gives ``R = 0, lo = 0``."""
    l = np.asarray(l, _I64)
    fs = spec.recip_frac_bits
    lo = np.maximum(floor_log2(l), 0)
    s = scale_saturate(l, fs - lo, 62)
    r = reciprocal_newton(np.where(l > 0, s, 1 << fs), fs, table_bits=spec.recip_table_bits,
                          steps=spec.newton_steps, out_bits=spec.recip_bits)
    return np.where(l > 0, r, 0).astype(_I64), np.where(l > 0, lo, 0).astype(_I64)


def softmax_normalize(t, R, lo, spec: SoftmaxSpec):
    """Step 6: final terms ``t (..., nb, k)`` and per-row ``R, lo (...)`` -> MXInt blocks."""
    R = np.asarray(R, _I64)[..., None, None]
    lo = np.asarray(lo, _I64)
    one = np.left_shift(_I64(1), spec.recip_bits + lo)[..., None, None]
    v = np.minimum(np.asarray(t, _I64) * R, one)
    lsb = -(spec.recip_bits + lo)[..., None]
    return fixed_to_mxint(v, lsb, spec.out_fmt)


@dataclass(frozen=True)
class SoftmaxResult:
    exponents: np.ndarray     # (rows, nb) decoded output exponents
    mantissas: np.ndarray     # (rows, nb, k)
    row_max: np.ndarray       # M per row (integer, log2 units)
    row_sum: np.ndarray       # l per row (exp_bits grid)
    reciprocal: np.ndarray    # R per row (recip_bits grid)
    sum_shift: np.ndarray     # lo per row
    terms: np.ndarray         # final terms t (rows, nb, k), exp_bits grid against M

    def values(self, spec: SoftmaxSpec) -> np.ndarray:
        """Exact float64 output values, shape (rows, nb * k)."""
        v = mxint_values(self.exponents, self.mantissas, spec.out_fmt)
        return v.reshape(v.shape[:-2] + (-1,))


@dataclass(frozen=True)
class OnlineTile:
    """What one tile produces in the online form: ``terms`` against ``running_max`` (the max so
    far, this tile included) and ``rescale``: how far to shift everything accumulated before
    this tile right (``m' - m``; 0 on the first tile).  An attention engine rescales its output
    accumulator by the same shift and adds ``terms @ V``."""
    terms: np.ndarray
    running_max: np.ndarray
    rescale: np.ndarray


class OnlineSoftmax:
    """Streaming softmax state for a batch of rows (FlashAttention's running max and sum).

    ``update(exponents, mantissas, mask)`` takes one tile per row (shape ``(rows, tb)`` and
    ``(rows, tb, k)``) and returns an :class:`OnlineTile`; ``finish()`` returns ``(M, l, R,
    lo)``; ``normalize(tiles)`` turns the stored tiles into output blocks (the second pass)."""

    def __init__(self, spec: SoftmaxSpec, rows: int):
        self.spec = spec
        self.rows = rows
        self.m = np.zeros(rows, _I64)
        self.l = np.zeros(rows, _I64)
        self.started = False
        self.blocks = 0

    def update(self, exponents, mantissas, mask=None) -> OnlineTile:
        spec = self.spec
        mans = np.asarray(mantissas, _I64).reshape(self.rows, -1, spec.block_size)
        exps = np.asarray(exponents, _I64).reshape(self.rows, -1)
        mask = np.ones(mans.shape, bool) if mask is None else \
            np.asarray(mask, bool).reshape(mans.shape)
        self.blocks += exps.shape[1]
        if self.blocks > spec.max_row_blocks:
            raise ValueError(f"row longer than max_row_blocks ({spec.max_row_blocks})")
        z = softmax_log2_scores(exps, mans, spec)
        tile_max = np.where(mask, z, spec.z_min).reshape(self.rows, -1).max(axis=-1)
        tm = _ceil_div_pow2(tile_max, spec.exp_frac_bits)
        if self.started:
            m_new = np.maximum(self.m, tm)
            shift = m_new - self.m
        else:
            m_new, shift = tm, np.zeros(self.rows, _I64)
        terms = softmax_terms(z, mask, np.broadcast_to(m_new[:, None], exps.shape), spec)
        kept = shift_right_floor(self.l, np.minimum(shift, spec.sum_bits))
        self.l = kept + terms.reshape(self.rows, -1).sum(axis=-1)
        self.m, self.started = m_new, True
        return OnlineTile(terms, m_new, shift)

    def finish(self):
        R, lo = softmax_reciprocal(self.l, self.spec)
        return self.m.copy(), self.l.copy(), R, lo

    def final_terms(self, tiles: list[OnlineTile]) -> np.ndarray:
        """Every stored term shifted to the final max: (rows, nb, k)."""
        fp = self.spec.exp_bits
        out = [shift_right_floor(t.terms, np.minimum(self.m - t.running_max, fp + 1)[:, None,
                                                                                    None])
               for t in tiles]
        return np.concatenate(out, axis=1)

    def normalize(self, tiles: list[OnlineTile]):
        _m, _l, R, lo = self.finish()
        return softmax_normalize(self.final_terms(tiles), R, lo, self.spec)


def _as_rows(exponents, mantissas, spec, mask, lengths):
    exps = np.asarray(exponents, _I64)
    mans = np.asarray(mantissas, _I64)
    if mans.shape[-1] != spec.block_size or mans.shape[:-1] != exps.shape or exps.ndim < 1:
        raise ValueError(f"need exponents (..., nb) and mantissas (..., nb, {spec.block_size}), "
                         f"not {exps.shape} and {mans.shape}")
    lead = exps.shape[:-1]
    nb = exps.shape[-1]
    if nb > spec.max_row_blocks:
        raise ValueError(f"rows of {nb} blocks exceed max_row_blocks ({spec.max_row_blocks})")
    exps = exps.reshape(-1, nb)
    mans = mans.reshape(-1, nb, spec.block_size)
    if mask is None:
        mask = np.ones(mans.shape, bool)
    else:
        mask = np.broadcast_to(np.asarray(mask, bool), lead + (nb, spec.block_size))
        mask = mask.reshape(mans.shape)
    if lengths is not None:
        lengths = np.broadcast_to(np.asarray(lengths, _I64), lead).reshape(-1)
        idx = np.arange(nb * spec.block_size).reshape(nb, spec.block_size)
        mask = mask & (idx[None] < lengths[:, None, None])
    return exps, mans, mask, lead


def mxint_softmax(exponents, mantissas, spec: SoftmaxSpec, *, mask=None, lengths=None,
                  tile_blocks: Optional[int] = None) -> SoftmaxResult:
    """Softmax of rows of MXInt blocks (decoded ``exponents (..., nb)``, ``mantissas
    (..., nb, k)``).  ``mask`` (bool, broadcast to the mantissas) or ``lengths`` (valid
    elements per row) exclude elements (output 0).  ``tile_blocks=None``: two-pass form;
    ``tile_blocks=T``: online form in tiles of T blocks (T=1 is the RTL)."""
    exps, mans, mask, lead = _as_rows(exponents, mantissas, spec, mask, lengths)
    rows, nb = exps.shape
    if tile_blocks is None:
        z = softmax_log2_scores(exps, mans, spec)
        M = _ceil_div_pow2(np.where(mask, z, spec.z_min).reshape(rows, -1).max(axis=-1),
                           spec.exp_frac_bits)
        t = softmax_terms(z, mask, np.broadcast_to(M[:, None], exps.shape), spec)
        l = t.reshape(rows, -1).sum(axis=-1)
        R, lo = softmax_reciprocal(l, spec)
    else:
        if not isinstance(tile_blocks, int) or tile_blocks < 1:
            raise ValueError(f"tile_blocks must be a positive integer or None, not "
                             f"{tile_blocks!r}")
        online = OnlineSoftmax(spec, rows)
        tiles = [online.update(exps[:, b:b + tile_blocks], mans[:, b:b + tile_blocks],
                               mask[:, b:b + tile_blocks]) for b in range(0, nb, tile_blocks)]
        M, l, R, lo = online.finish()
        t = online.final_terms(tiles)
    oe, om = softmax_normalize(t, R, lo, spec)
    k = spec.block_size
    return SoftmaxResult(oe.reshape(lead + (nb,)), om.reshape(lead + (nb, k)),
                         M.reshape(lead), l.reshape(lead), R.reshape(lead), lo.reshape(lead),
                         t.reshape(lead + (nb, k)))


def reference_softmax(exponents, mantissas, spec: SoftmaxSpec, *, mask=None, lengths=None):
    """float64 ``softmax(scale * x)`` of the exact MXInt input values (masked -> 0), shape
    ``(..., nb * k)``."""
    exps, mans, mask, lead = _as_rows(exponents, mantissas, spec, mask, lengths)
    x = mxint_values(exps, mans, spec.in_fmt).reshape(exps.shape[0], -1) * spec.scale
    msk = mask.reshape(x.shape)
    xm = np.where(msk, x, -np.inf)
    top = xm.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.where(msk, np.exp(xm - top), 0.0)
        s = e.sum(axis=-1, keepdims=True)
        out = np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0)
    return out.reshape(lead + (-1,))


# --------------------------------------------------------------------------------------------
# Error bounds


@dataclass(frozen=True)
class SoftmaxErrorTerms:
    """Measured worst cases of each approximation (all relative unless named absolute)."""
    exp2_relative: float          # p vs 2^r, every r code (exhaustive)
    recip_relative: float         # R vs 2^Fr / s, every normalised s code, plus s's floor
    log2_step: float              # worst |z/2^Fz - exact log2-domain value|, inside the range
    term_floor_absolute: float    # floor of p 2^q: one unit of 2^-Fp

    def to_json(self) -> dict:
        return dict(self.__dict__)


def softmax_error_terms(spec: SoftmaxSpec) -> SoftmaxErrorTerms:
    fz = spec.exp_frac_bits
    exp_rel = spec.exp2.max_relative_error()
    rec = reciprocal_error(spec.recip_frac_bits, table_bits=spec.recip_table_bits,
                           steps=spec.newton_steps, out_bits=spec.recip_bits)
    # s is the sum floored to Fr + 2 fraction bits: 1/s can be up to 2^-(Fr+2) too large
    rec = (1 + rec) * (1 + 2.0 ** -spec.recip_frac_bits) - 1
    c_err = abs(spec.scale_constant * 2.0 ** -spec.scale_frac_bits / (spec.scale * LOG2E) - 1)
    step = 2.0 ** -fz + c_err * 2.0 ** spec.range_bits
    return SoftmaxErrorTerms(exp_rel, rec, step, 2.0 ** -spec.exp_bits)


def softmax_error_bound(spec: SoftmaxSpec, result: SoftmaxResult, *, online: bool = False):
    """Elementwise bound ``|y_i - softmax_i| <= sigma_i * rho + alpha_i`` (float64, shape
    ``(rows, nb * k)``), valid for inputs with ``|scale * x * log2 e| < 2^range_bits``:

    * each z is off its exact log2-domain value by at most ``log2_step`` (the floor and C's
      rounding), so every exact term ``2^(z_i - M)`` is within ``2^(+-log2_step)``;
      each term's exp2 is within ``exp2_relative`` and its floor loses at most ``2^-Fp``;
    * the sum is off the exact sum of ``2^(z_i - M)`` by the same relative factors and at most
      ``n 2^-Fp`` absolute (each term's floor; ``2n 2^-Fp`` in the online form, whose sum can
      exceed the two-pass one by n units), and ``l >= 2^(Fp - 1)`` because the largest term lies
      in (1/2, 1];
    * the reciprocal is within ``recip_relative``; ``alpha_i`` adds the element's own floor (at
      most ``2^-Fp / l``) and one unit of its output block's last place (rounding, or
      saturation when the block's largest element rounds up).
    """
    terms = softmax_error_terms(spec)
    n = result.terms.reshape(result.terms.shape[0], -1).shape[-1] if result.terms.ndim > 1 else 1
    fp = spec.exp_bits
    g = 2.0 ** terms.log2_step - 1
    num = (1 + g) * (1 + terms.exp2_relative)
    l_min = 2.0 ** (fp - 1)
    floor_sum = (2 if online else 1) * n
    den = (1 - g) * (1 - terms.exp2_relative) - floor_sum / l_min
    rho = max(num / den * (1 + terms.recip_relative) - 1,
              1 - (1 - g) * (1 - terms.exp2_relative) / ((1 + g) * (1 + terms.exp2_relative))
              * (1 - terms.recip_relative))
    rows = result.exponents.reshape(-1, result.exponents.shape[-1])
    out_ulp = np.ldexp(1.0, rows - spec.out_fmt.fraction_bits)
    out_ulp = np.repeat(out_ulp, spec.block_size, axis=-1)
    alpha = 2.0 / l_min * (1 + rho) + out_ulp
    return rho, alpha


def softmax_sum_bound(spec: SoftmaxSpec, result: SoftmaxResult, *, online: bool = False):
    """Per row: ``|sum of outputs - 1|`` is at most this (rows with at least one live element).

    The exact outputs before the last rounding sum to ``(S / l) * (l 2^-lo) * R 2^-Fr`` with
    ``S`` the sum of the final terms: the reciprocal's relative error (``recip_relative``,
    which includes the floor of s) bounds the second factor, ``S = l`` in the two-pass form and
    ``l - S < n`` units (``l >= 2^(Fp-1)``) online; the clamp at 1 only lowers a sum above 1;
    then each element moves by at most one unit of its block's last place."""
    terms = softmax_error_terms(spec)
    exps = np.asarray(result.exponents)
    rows = exps.reshape(-1, exps.shape[-1])
    n = rows.shape[-1] * spec.block_size
    ulps = np.ldexp(1.0, rows - spec.out_fmt.fraction_bits).sum(axis=-1) * spec.block_size
    drift = 2.0 * n / 2.0 ** spec.exp_bits if online else 0.0
    return (terms.recip_relative + drift + ulps).reshape(exps.shape[:-1])


# --------------------------------------------------------------------------------------------
# Timing: latency and the cycle model of the RTL


def softmax_cycles(row_blocks, *, row_info: int, second_pass: int, buffer_blocks: int,
                   row_slots: int, arrivals=None) -> tuple[list, list]:
    """Cycle model of hw.mxint_softmax.MXIntSoftmax (and MXIntLayerNorm) with the output always
    ready: returns ``(taken, emitted)``, the handshake cycle of every input and output beat.

    ``row_blocks``: blocks of each row, in order; ``arrivals``: earliest cycle each input block is
    offered (default 0: back to back).  The rules, as the RTL implements them:

    * a block is taken at the first cycle, no earlier than its arrival and after the previous
      block, with a free buffer credit (``buffer_blocks``) and, for a row's first block, a free
      row credit (``row_slots``); a block credit comes back the cycle after the second pass reads
      the block, a row credit the cycle after it reads the row's last block;
    * the row's information (its reciprocal) is written ``row_info`` cycles after its last block
      is taken and can be read one cycle later; the second pass reads one block per cycle, in
      order, a row's blocks no earlier than its information;
    * a block read at cycle c leaves the unit at c + ``second_pass``.
    """
    blocks = [(r, j, n) for r, n in enumerate(row_blocks) for j in range(n)]
    arrivals = list(arrivals) if arrivals is not None else [0] * len(blocks)
    if len(arrivals) != len(blocks):
        raise ValueError(f"{len(arrivals)} arrivals for {len(blocks)} blocks")
    taken, read = [], []
    credits_back: dict[int, int] = {}
    rows_back: dict[int, int] = {}
    credits, rows_free = buffer_blocks, row_slots
    next_read = 0
    cycle, i = 0, 0
    while i < len(blocks):
        credits += credits_back.pop(cycle, 0)
        rows_free += rows_back.pop(cycle, 0)
        _r, j, n = blocks[i]
        if cycle >= arrivals[i] and credits > 0 and (j > 0 or rows_free > 0):
            credits -= 1
            rows_free -= j == 0
            taken.append(cycle)
            if j == n - 1:
                # the row is complete: its reads follow the previous row's, no earlier than
                # its information
                start = max(cycle + row_info + 1, next_read)
                for jj in range(n):
                    read.append(start + jj)
                    credits_back[start + jj + 1] = credits_back.get(start + jj + 1, 0) + 1
                rows_back[start + n] = rows_back.get(start + n, 0) + 1
                next_read = start + n
            i += 1
        cycle += 1
    return taken, [c + second_pass for c in read]
