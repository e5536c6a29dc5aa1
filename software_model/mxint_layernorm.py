"""MXInt LayerNorm: bit-exact integer golden model of ``hw.mxint_layernorm.MXIntLayerNorm``.

``y = (x - mean) / sqrt(var + eps) * gamma + beta`` over rows of ``row_length`` elements (biased
variance, as torch.nn.LayerNorm), input, gamma, beta and output all MXInt blocks of the same size.

Algorithm (``f`` = fraction bits of the input format, ``N`` = row_length)
--------------------------------------------------------------------------
1. ``x_q = sat(floor(m * 2^(e - f + F)))``: each element on a fixed grid of ``F = frac_bits``
   fraction bits, saturated to ``|x| < 2^int_bits``.
2. Exact integer sums ``Sx = sum x_q`` and ``Sxx = sum x_q^2``.  No division by N anywhere:
   ``c_i = N x_q,i - Sx`` and ``V = N Sxx - Sx^2`` are exact integers, and
   ``(x_i - mean) / sqrt(var + eps) = c_i / sqrt(V + E)`` exactly, with the epsilon term
   ``E = max(1, round(eps N^2 2^(2F)))`` (``var = V / (N^2 2^(2F))``).  So the *stated epsilon*
   is ``E / (N^2 2^(2F))``: ``eps`` rounded to that grid, at least one unit, so a zero-variance
   row (``V = 0``, every ``c_i = 0``) gives ``z = 0`` and ``y = beta`` with no special case.
3. Inverse square root: ``V + E = v * 4^j`` with ``v`` in [1, 4) on ``Fr + 2`` fraction bits
   (floor); ``y_r ~ 2^Fr / sqrt(v)`` from a ``2^rsqrt_table_bits``-entry seed table plus
   ``newton_steps`` Newton steps (:func:`~software_model.mxint_fixed.rsqrt_newton`).
4. Normalised value on ``Fz = norm_frac_bits`` fraction bits:
   ``c' = floor(c_i 2^(Fz - j))`` (|c'| < 2 sqrt(N) 2^Fz: ``sum c_i^2 = N V``), then
   ``z = floor(c' y_r / 2^Fr)``.
5. Affine, on ``Fa = out_frac_bits`` fraction bits: ``a = floor(z g_m 2^(e_g - f_g - Fz + Fa))``
   and ``b = floor(b_m 2^(e_b - f_b + Fa))`` (each saturated to ``out_int_bits + Fa + 2`` bits),
   ``y = sat(a + b)`` to ``out_int_bits + Fa + 1`` bits.
6. Each block of ``y`` is rounded once into ``out_fmt``
   (:func:`~software_model.mxint_fixed.fixed_to_mxint`).

Hardware streaming order: one beat per block ``{x: {exponent, mantissas[k]}, gamma: {...},
beta: {...}}`` in channel order, ``row_length / k`` beats per row (gamma and beta travel with x
and wait in the row buffer with it); one output beat ``{exponent, mantissas[k], last}`` per block,
in the same order, after the row's last input block.  :func:`layernorm_cycles` gives every beat's
cycle.

Error bound against float64 (:func:`layernorm_error_bound`): the input floor (``2^-F`` per
element, so ``mean`` and the deviations move by at most ``2^-F`` and the standard deviation by at
most ``2^-F``), the inverse square root's exhaustive relative error (plus the floor of ``v``), the
floors of steps 4-5, and one output ulp (half a unit of rounding, a whole one when the block's
largest element rounds up into saturation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from software_model.mxint import MXIntFormat
from software_model.mxint_fixed import (fixed_to_mxint, floor_log2, mxint_values, rsqrt_error,
                                        rsqrt_newton, scale_saturate, signed_bits)
from software_model.mxint_fixed import check_int_param as _int_param

__all__ = ["LayerNormSpec", "LayerNormResult", "mxint_layernorm", "layernorm_fixed_input",
           "layernorm_row_stats", "layernorm_rsqrt", "reference_layernorm",
           "layernorm_error_bound"]

_I64 = np.int64


@dataclass(frozen=True)
class LayerNormSpec:
    in_fmt: MXIntFormat = MXIntFormat(8, 16)
    out_fmt: MXIntFormat = MXIntFormat(8, 16)
    param_fmt: MXIntFormat = MXIntFormat(8, 16)     # gamma and beta
    row_length: int = 64
    frac_bits: int = 10
    int_bits: int = 8
    eps: float = 1e-12
    rsqrt_table_bits: int = 6
    newton_steps: int = 1
    rsqrt_bits: int = 12
    norm_frac_bits: int = 10
    out_frac_bits: int = 10
    out_int_bits: int = 7

    def __post_init__(self):
        for name in ("in_fmt", "out_fmt", "param_fmt"):
            if not isinstance(getattr(self, name), MXIntFormat):
                raise TypeError(f"{name} must be an MXIntFormat, not {getattr(self, name)!r}")
        k = self.in_fmt.block_size
        for name in ("out_fmt", "param_fmt"):
            if getattr(self, name).block_size != k:
                raise ValueError(f"{name} block size must equal in_fmt's ({k}), not "
                                 f"{getattr(self, name).block_size}")
        _int_param("row_length", self.row_length, 2, 1 << 14)
        if self.row_length % k:
            raise ValueError(f"row_length must be a multiple of the block size ({k}), not "
                             f"{self.row_length}")
        _int_param("frac_bits", self.frac_bits, 0, 20)
        _int_param("int_bits", self.int_bits, 1, 16)
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool) or \
                not 0 <= self.eps < 1:
            raise ValueError(f"eps must be a number in [0, 1), not {self.eps!r}")
        _int_param("rsqrt_table_bits", self.rsqrt_table_bits, 2, 10)
        _int_param("newton_steps", self.newton_steps, 0, 3)
        _int_param("rsqrt_bits", self.rsqrt_bits, 2, 20)
        if self.rsqrt_table_bits > self.rsqrt_bits + 4:
            raise ValueError(f"rsqrt_table_bits must be at most rsqrt_bits + 4 "
                             f"({self.rsqrt_bits + 4}), not {self.rsqrt_table_bits}")
        _int_param("norm_frac_bits", self.norm_frac_bits, 1, 20)
        _int_param("out_frac_bits", self.out_frac_bits, 0, 24)
        _int_param("out_int_bits", self.out_int_bits, 1, 16)
        if self.radicand_bits > 62:
            raise ValueError(f"int_bits + frac_bits = {self.int_bits + self.frac_bits} is too "
                             f"wide for row_length {self.row_length}: N Sxx needs "
                             f"{self.radicand_bits} bits (limit 62)")

    @property
    def block_size(self) -> int:
        return self.in_fmt.block_size

    @property
    def row_blocks(self) -> int:
        return self.row_length // self.block_size

    @property
    def x_bits(self) -> int:
        return self.int_bits + self.frac_bits + 1

    @property
    def x_shift_offset(self) -> int:
        return self.frac_bits - self.in_fmt.fraction_bits

    @property
    def log2_n(self) -> int:
        return max(0, (self.row_length - 1).bit_length())

    @property
    def sum_bits(self) -> int:
        """Signed width of Sx."""
        return self.x_bits + self.log2_n

    @property
    def square_sum_bits(self) -> int:
        """Unsigned width of Sxx (each square < 2^(2(x_bits - 1)))."""
        return 2 * (self.x_bits - 1) + 1 + self.log2_n

    @property
    def radicand_bits(self) -> int:
        """Unsigned width of N Sxx (>= V + E)."""
        return self.square_sum_bits + self.row_length.bit_length()

    @property
    def centred_bits(self) -> int:
        """Signed width of c = N x - Sx."""
        return self.x_bits + self.row_length.bit_length() + 1

    @property
    def epsilon_units(self) -> int:
        """E = max(1, round(eps N^2 2^(2F))): epsilon in units of the radicand."""
        return max(1, int(round(self.eps * self.row_length ** 2 * 4.0 ** self.frac_bits)))

    @property
    def stated_epsilon(self) -> float:
        """The epsilon actually added to the variance: E / (N^2 2^(2F))."""
        return self.epsilon_units / (self.row_length ** 2 * 4.0 ** self.frac_bits)

    @property
    def rsqrt_frac_bits(self) -> int:
        return self.rsqrt_bits + 2

    @property
    def norm_bits(self) -> int:
        """Signed width of c' and z: |z| < 2 sqrt(N) (+1 for the floor)."""
        return signed_bits(-(int(2 * math.sqrt(self.row_length) * 2 ** self.norm_frac_bits) + 2),
                           int(2 * math.sqrt(self.row_length) * 2 ** self.norm_frac_bits) + 2)

    @property
    def y_bits(self) -> int:
        return self.out_int_bits + self.out_frac_bits + 1


def layernorm_fixed_input(exponents, mantissas, spec: LayerNormSpec):
    e = np.asarray(exponents, _I64)[..., None]
    return scale_saturate(np.asarray(mantissas, _I64), e + spec.x_shift_offset, spec.x_bits)


def layernorm_row_stats(x_q, spec: LayerNormSpec):
    """``(Sx, Sxx, V + E)`` per row of ``x_q (..., N)``."""
    x_q = np.asarray(x_q, _I64)
    sx = x_q.sum(axis=-1)
    sxx = (x_q * x_q).sum(axis=-1)
    # Python ints: N Sxx and Sx^2 can reach 2^60 and their difference must be exact
    n = spec.row_length
    flat_sx, flat_sxx = sx.reshape(-1), sxx.reshape(-1)
    radicand = np.array([n * int(b) - int(a) * int(a) + spec.epsilon_units
                         for a, b in zip(flat_sx, flat_sxx)], dtype=_I64).reshape(sx.shape)
    return sx, sxx, radicand


def layernorm_rsqrt(radicand, spec: LayerNormSpec):
    """Step 3: ``(y_r, j)`` with ``1/sqrt(V + E) ~ y_r 2^-(Fr + j)``."""
    r = np.asarray(radicand, _I64)
    fs = spec.rsqrt_frac_bits
    j = floor_log2(r) >> 1
    v = scale_saturate(r, fs - 2 * j, 62)
    y = rsqrt_newton(v, fs, table_bits=spec.rsqrt_table_bits, steps=spec.newton_steps,
                     out_bits=spec.rsqrt_bits)
    return y, j


@dataclass(frozen=True)
class LayerNormResult:
    exponents: np.ndarray
    mantissas: np.ndarray
    sum: np.ndarray            # Sx per row
    square_sum: np.ndarray     # Sxx per row
    radicand: np.ndarray       # V + E per row
    rsqrt: np.ndarray          # y_r per row
    rsqrt_shift: np.ndarray    # j per row
    normalized: np.ndarray     # z (rows, N) on the Fz grid
    fixed: np.ndarray          # y (rows, N) on the Fa grid, before the output rounding

    def values(self, spec: LayerNormSpec) -> np.ndarray:
        v = mxint_values(self.exponents, self.mantissas, spec.out_fmt)
        return v.reshape(v.shape[:-2] + (-1,))


def _split(exps, mans, spec, what):
    exps = np.asarray(exps, _I64)
    mans = np.asarray(mans, _I64)
    nb, k = spec.row_blocks, spec.block_size
    if exps.shape[-1:] != (nb,) or mans.shape[-2:] != (nb, k) or mans.shape[:-1] != exps.shape:
        raise ValueError(f"{what} needs exponents (..., {nb}) and mantissas (..., {nb}, {k}), "
                         f"not {exps.shape} and {mans.shape}")
    return exps, mans


def mxint_layernorm(x_exp, x_man, gamma_exp, gamma_man, beta_exp, beta_man,
                    spec: LayerNormSpec) -> LayerNormResult:
    """LayerNorm of rows of MXInt blocks: ``x_exp (..., nb)``, ``x_man (..., nb, k)`` (decoded
    exponents); gamma and beta ``(nb,)`` / ``(nb, k)`` (shared by every row) in ``param_fmt``."""
    x_exp, x_man = _split(x_exp, x_man, spec, "x")
    g_exp, g_man = _split(gamma_exp, gamma_man, spec, "gamma")
    b_exp, b_man = _split(beta_exp, beta_man, spec, "beta")
    lead = x_exp.shape[:-1]
    n, k = spec.row_length, spec.block_size
    x_q = layernorm_fixed_input(x_exp, x_man, spec).reshape(lead + (n,))
    sx, sxx, radicand = layernorm_row_stats(x_q, spec)
    y_r, j = layernorm_rsqrt(radicand, spec)
    c = n * x_q - sx[..., None]
    fz = spec.norm_frac_bits
    c1 = scale_saturate(c, (fz - j)[..., None], spec.norm_bits)
    z = (c1 * y_r[..., None]) >> spec.rsqrt_bits
    fa, fg, fb = spec.out_frac_bits, spec.param_fmt.fraction_bits, spec.param_fmt.fraction_bits
    wide = spec.y_bits + 1
    zb = z.reshape(lead + (spec.row_blocks, k))
    a = scale_saturate(zb * g_man, (g_exp - fg - fz + fa)[..., None], wide)
    b = scale_saturate(b_man, (b_exp - fb + fa)[..., None], wide)
    lo, hi = -(1 << (spec.y_bits - 1)), (1 << (spec.y_bits - 1)) - 1
    y = np.clip(a + b, lo, hi)
    oe, om = fixed_to_mxint(y, -fa, spec.out_fmt)
    return LayerNormResult(oe, om, sx, sxx, radicand, y_r, j, z, y.reshape(lead + (n,)))


def reference_layernorm(x_exp, x_man, gamma_exp, gamma_man, beta_exp, beta_man,
                        spec: LayerNormSpec, eps: float | None = None) -> np.ndarray:
    """float64 LayerNorm of the exact MXInt values with ``eps`` (default: the stated epsilon)."""
    x = mxint_values(x_exp, x_man, spec.in_fmt)
    x = x.reshape(x.shape[:-2] + (-1,))
    g = mxint_values(gamma_exp, gamma_man, spec.param_fmt).reshape(-1)
    b = mxint_values(beta_exp, beta_man, spec.param_fmt).reshape(-1)
    eps = spec.stated_epsilon if eps is None else eps
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def layernorm_error_bound(spec: LayerNormSpec, x_exp, x_man, gamma_exp, gamma_man, result):
    """Elementwise ``|y - reference|`` bound for inputs with ``|x| < 2^int_bits`` and outputs
    inside ``2^out_int_bits`` (float64, shape ``(..., N)``).

    With ``sigma' = sqrt(var + eps)`` of the exact input and ``delta = 2^-F`` (the input floor):
    every deviation ``x_i - mean`` moves by less than ``delta`` and ``sigma'`` by less than
    ``delta`` (the floor is a perturbation of norm < ``delta`` per element after centring), so
    ``|z - z_exact| <= (delta + |z_exact| delta) / (sigma' - delta)`` before the rsqrt, whose
    relative error ``r`` (exhaustive, plus the floor of v) scales z; the floors of c' and z add
    ``(|y_r| + 2^Fr) 2^-(Fz + Fr)`` <= ``2^(1-Fz)`` and the affine floors ``2 * 2^-Fa``; then
    ``|gamma|`` scales the z error and one output ulp is added (half a unit of rounding, or a
    whole one when the block's largest element rounds up into saturation)."""
    x = mxint_values(x_exp, x_man, spec.in_fmt)
    x = x.reshape(x.shape[:-2] + (-1,))
    g = np.abs(mxint_values(gamma_exp, gamma_man, spec.param_fmt).reshape(-1))
    mu = x.mean(axis=-1, keepdims=True)
    sig = np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + spec.stated_epsilon)
    delta = 2.0 ** -spec.frac_bits
    z = np.abs((x - mu) / sig)
    r = rsqrt_error(spec.rsqrt_frac_bits, table_bits=spec.rsqrt_table_bits,
                    steps=spec.newton_steps, out_bits=spec.rsqrt_bits)
    r = (1 + r) * (1 + 2.0 ** -spec.rsqrt_frac_bits) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        dz_in = np.where(sig > delta, delta * (1 + z) / (sig - delta), np.inf)
    dz = (z + dz_in) * r + dz_in + 2.0 ** (1 - spec.norm_frac_bits)
    out_ulp = np.ldexp(1.0, np.asarray(result.exponents, _I64) - spec.out_fmt.fraction_bits)
    out_ulp = np.repeat(out_ulp, spec.block_size, axis=-1)
    return g * dz + 2 * 2.0 ** -spec.out_frac_bits + out_ulp
