"""ISA-level golden model of the ``accelerator`` kind (docs/accelerator.md, docs/isa.md).

Three layers, each usable on its own:

* **Numbers** -- one function per operation on plain numpy arrays (decoded exponents ``(..., nb)``
  and mantissas ``(..., nb, B)``, accumulator numbers ``(M, N)``), bit-exact per
  docs/accelerator.md: :func:`matmul`, :func:`accst`, :func:`accscale`, :func:`accnorm`,
  :func:`vadd`, :func:`vcast`, :func:`vgelu`, :func:`vlnorm`, :func:`vsmax`, :func:`vsmaxo`.
  The nonlinear units and every conversion call the shared golden functions
  (``software_model.mxint_fixed``, ``mxint_softmax``, ``mxint_layernorm``, ``mxint_gelu``); the
  RTL engineer unit-tests each block against these.
* **State and execution** -- :class:`AcceleratorState` (DRAM, scratchpad SP, accumulator memory
  ACC, online-softmax state) and :func:`execute`, which runs a program one instruction after
  the other (the order every race-free program's result is independent of), gathering operands
  with the matrix layout of section 2 and checking every instruction against the parameters
  (:func:`check_instruction`).
* **Cycles** -- :func:`cycle_model`: the three queues, barriers, and a duration per instruction
  (:class:`CycleCosts`, first-principles estimates documented in docs/isa.md "Cycle costs",
  to be calibrated against the RTL).

Words: a memory word is one block, ``B`` mantissas of ``w_max`` bits and a two's-complement
exponent of ``ew`` bits; :func:`pack_word` / :func:`unpack_word` give its bit vector (element i
at bits ``i*w_max ..``, the exponent above the elements), shared with the testbench.

This module never imports gen/ (the config maps itself onto :class:`AcceleratorParams`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np

from software_model.isa import Instruction, Opcode, Queue, TensorClass
from software_model.mxint import MXIntFormat
from software_model.mxint_fixed import fixed_to_mxint, scale_saturate
from software_model.mxint_gelu import GeluSpec, mxint_gelu
from software_model.mxint_layernorm import LayerNormSpec, mxint_layernorm
from software_model.mxint_softmax import (OnlineSoftmax, OnlineTile, SoftmaxSpec, mxint_softmax,
                                          softmax_reciprocal)

__all__ = [
    "TensorFormat", "AcceleratorParams", "Memory", "AcceleratorState", "ExecutionError",
    "matmul", "accst", "accscale", "accnorm", "vadd", "vcast", "vgelu", "vlnorm", "vsmax",
    "vsmaxo", "as_class", "round_to_exponent", "shift_right_sticky", "jam", "convert_fixed",
    "matrix_addresses", "acc_addresses", "pack_word", "unpack_word", "pack_words",
    "unpack_words", "quantize_matrix", "matrix_values",
    "check_instruction", "execute", "instruction_accesses", "Access",
    "MemoryModel", "CycleCosts", "InstructionTiming", "CycleReport", "cycle_model",
]

_I64 = np.int64
TENSOR_TYPES = ("mxint", "int")
CLASSES = tuple(TensorClass)


# ============================================================================================
# Parameters


@dataclass(frozen=True)
class TensorFormat:
    """One tensor class's format: ``type`` ``mxint`` (an exponent per block, from the data) or
    ``int`` (one power-of-two exponent per tensor, given by the instruction that writes it),
    ``element_width`` mantissa bits, sign included."""
    type: str = "mxint"
    element_width: int = 8


#: AcceleratorParams field -> its key in the YAML config (problems name the config's keys)
CONFIG_KEYS = {
    "block_size": "block_size", "exponent_width": "exponent_width",
    "rows": "matrix.rows", "cols": "matrix.cols", "sub_arrays": "matrix.sub_arrays",
    "acc_width": "accumulator.width", "acc_lsb": "accumulator.lsb",
    "acc_words": "accumulator.words", "sp_words": "scratchpad.words",
    "sp_banks": "scratchpad.banks", "address_bits": "memory.address_bits",
    "port_words": "memory.port_words", "softmax_rows": "vector.softmax_rows",
    "softmax": "vector.softmax", "layernorm": "vector.layernorm", "gelu": "vector.gelu",
}


def _pow2(v) -> bool:
    return isinstance(v, int) and v >= 1 and v & (v - 1) == 0


def _log2(v: int) -> int:
    return max(0, (v - 1).bit_length())


@dataclass(frozen=True)
class AcceleratorParams:
    """Everything the golden model needs of a config, as plain data (docs/accelerator.md).

    ``formats``: the :class:`TensorFormat` of activation, weight and kv, in
    :class:`~software_model.isa.TensorClass` order.  ``softmax``, ``layernorm``, ``gelu``: the
    vector unit's specs; their formats must be the activation format (None: the spec's default
    knobs with that format).  Invalid combinations raise ``ValueError`` naming the config key;
    :meth:`field_problems` lists every problem without raising."""
    block_size: int = 8
    exponent_width: int = 6
    formats: tuple = (TensorFormat(), TensorFormat(), TensorFormat())
    rows: int = 4
    cols: int = 4
    sub_arrays: int = 1
    acc_width: int = 40
    acc_lsb: int = -16
    acc_words: int = 256
    sp_words: int = 1024
    sp_banks: int = 4
    address_bits: int = 24
    port_words: int = 2
    softmax_rows: int = 16
    softmax: Optional[SoftmaxSpec] = None
    layernorm: Optional[LayerNormSpec] = None
    gelu: Optional[GeluSpec] = None

    def __post_init__(self):
        problems = self._problems()
        if problems:
            key, value, allowed = problems[0]
            raise ValueError(f"{key}: got {value!r}; allowed: {allowed}")

    @classmethod
    def field_problems(cls, **kwargs) -> list[tuple[str, object, str]]:
        """``(config key, value, allowed)`` for every problem of these fields (no exception)."""
        obj = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(obj, f.name, kwargs.get(f.name, f.default))
        return obj._problems()

    def _problems(self) -> list[tuple[str, object, str]]:
        out = []

        def bad(name, allowed):
            out.append((CONFIG_KEYS.get(name, name), getattr(self, name), allowed))

        def int_in(name, lo, hi):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                bad(name, f"integer {lo} .. {hi}")
                return False
            return True

        if self.block_size not in (8, 16, 32, 64):
            bad("block_size", "one of 8, 16, 32, 64")
        int_in("exponent_width", 3, 8)
        if not (isinstance(self.formats, tuple) and len(self.formats) == 3
                and all(isinstance(f, TensorFormat) for f in self.formats)):
            out.append(("formats", self.formats, "three TensorFormats (activation, weight, kv)"))
            return out
        for cls_, f in zip(CLASSES, self.formats):
            if f.type not in TENSOR_TYPES:
                out.append((f"formats.{cls_.key}.type", f.type, "one of 'mxint', 'int'"))
            if not isinstance(f.element_width, int) or not 2 <= f.element_width <= 16:
                out.append((f"formats.{cls_.key}.element_width", f.element_width,
                            "integer 2 .. 16"))
        ok_rows = int_in("rows", 1, 256)
        if int_in("cols", 1, 256) and not _pow2(self.cols):
            bad("cols", "a power of two (so block size and grid columns divide each other)")
        if int_in("sub_arrays", 1, 256) and not _pow2(self.sub_arrays):
            bad("sub_arrays", "a power of two (the adder tree is balanced)")
        elif self.sub_arrays > 1 and ok_rows and self.rows != self.cols:
            bad("sub_arrays", f"1, or rows = cols (a flattened array of square BLEN x BLEN "
                f"sub-arrays; rows {self.rows}, cols {self.cols})")
        if int_in("acc_width", 8, 62) and isinstance(self.sub_arrays, int) and \
                self.acc_width + _log2(max(1, self.sub_arrays)) + 1 > 63:
            bad("acc_width", f"at most {62 - _log2(self.sub_arrays)}: the adder tree's sum of "
                f"{self.sub_arrays} aligned tiles plus the accumulator must fit 63 bits (the "
                "golden model's int64)")
        int_in("acc_lsb", -64, 64)
        if int_in("acc_words", 1, 1 << 20) and isinstance(self.rows, int) and \
                self.acc_words < self.rows:
            bad("acc_words", f"at least rows ({self.rows}): one tile of results")
        if int_in("sp_words", 1, 1 << 24) and not _pow2(self.sp_words):
            bad("sp_words", "a power of two")
        if int_in("sp_banks", 1, 256):
            if not _pow2(self.sp_banks):
                bad("sp_banks", "a power of two")
            elif isinstance(self.sp_words, int) and self.sp_banks > self.sp_words:
                bad("sp_banks", f"at most scratchpad.words ({self.sp_words})")
        int_in("address_bits", 8, 32)
        if int_in("port_words", 1, 64) and _pow2(self.sp_banks) and \
                self.port_words > self.sp_banks:
            bad("port_words", f"at most scratchpad.banks ({self.sp_banks}): a memory-port "
                "beat is written into (read from) the scratchpad as one run, one word per bank")
        int_in("softmax_rows", 1, 65535)
        if out:
            return out
        act = self.fmt(TensorClass.ACTIVATION)
        for name, spec_cls in (("softmax", SoftmaxSpec), ("layernorm", LayerNormSpec),
                               ("gelu", GeluSpec)):
            spec = getattr(self, name)
            if spec is None:
                try:
                    kwargs = dict(in_fmt=act, out_fmt=act)
                    if spec_cls is LayerNormSpec:
                        kwargs.update(param_fmt=act, row_length=max(2 * self.block_size, 64))
                    spec = spec_cls(**kwargs)
                except ValueError as exc:
                    bad(name, str(exc))
                    continue
                object.__setattr__(self, name, spec)
            if not isinstance(spec, spec_cls):
                bad(name, f"a {spec_cls.__name__}")
                continue
            fmts = [spec.in_fmt, spec.out_fmt] + ([spec.param_fmt] if name == "layernorm"
                                                  else [])
            if any(f != act for f in fmts):
                bad(name, f"a spec whose formats are the activation format {act}")
        if out:
            return out
        recip = self.softmax.recip_bits
        if self.acc_width + recip > 62:
            out.append(("accumulator.width", self.acc_width,
                        f"at most {62 - recip}: ACCNORM's product of an accumulator number and "
                        f"the {recip}-bit reciprocal (vector.softmax.recip_bits) must fit 63 "
                        "bits (the golden model's int64)"))
        return out

    # -- derived facts -----------------------------------------------------------------------
    def format_of(self, cls) -> TensorFormat:
        return self.formats[int(cls)]

    def fmt(self, cls) -> MXIntFormat:
        """The class's MXInt format (block size B, exponent width ew, half-even rounding)."""
        return MXIntFormat(self.formats[int(cls)].element_width, self.block_size,
                           self.exponent_width)

    def is_int(self, cls) -> bool:
        return self.formats[int(cls)].type == "int"

    def fraction_bits(self, cls) -> int:
        return self.formats[int(cls)].element_width - 2

    @property
    def element_bits(self) -> int:
        """``w_max``: bits per stored element (narrower classes are sign-extended)."""
        return max(f.element_width for f in self.formats)

    @property
    def word_bits(self) -> int:
        return self.block_size * self.element_bits + self.exponent_width

    @property
    def emin(self) -> int:
        return -(1 << (self.exponent_width - 1))

    @property
    def emax(self) -> int:
        return (1 << (self.exponent_width - 1)) - 1

    @property
    def mantissa_range(self) -> tuple[int, int]:
        w = self.element_bits
        return -(1 << (w - 1)), (1 << (w - 1)) - 1

    @property
    def acc_range(self) -> tuple[int, int]:
        return -(1 << (self.acc_width - 1)), (1 << (self.acc_width - 1)) - 1

    @property
    def multipliers(self) -> int:
        return self.rows * self.cols * self.sub_arrays

    @property
    def job_cycles(self) -> int:
        """Cycles between matrix-unit jobs at full rate: ``max(B, rows)``."""
        return max(self.block_size, self.rows)

    @property
    def operand_words_per_job(self) -> int:
        """``S * (rows + cols)``: SP words one full job reads (A rows and B^T rows, S blocks)."""
        return self.sub_arrays * (self.rows + self.cols)

    @property
    def operand_full_rate(self) -> bool:
        """Whether the operand loader keeps up with full jobs: ``S (rows + cols) <= B banks``
        (it reads at most ``banks`` words per cycle during a job's ``B`` beats)."""
        return self.operand_words_per_job <= self.block_size * self.sp_banks

    @property
    def port_bits(self) -> int:
        return self.port_words * self.word_bits


# ============================================================================================
# Conversions (shared by the operations)


def shift_right_sticky(v, s):
    """``(floor(v / 2^s), sticky)``: the floor and whether any bit shifted out was set.
    ``s >= 0`` (shifts beyond 62 act as 62, enough for ``|v| < 2^61``)."""
    v = np.asarray(v, _I64)
    s = np.minimum(np.asarray(s, _I64), 62)
    return v >> s, (v & (np.left_shift(_I64(1), s) - 1)) != 0


def jam(floor_value, sticky):
    """Set the lowest bit of ``floor_value`` where ``sticky``: for ``x`` not an integer,
    ``jam(floor(x), 1)`` is the odd one of ``floor(x)``, ``ceil(x)``, in magnitude too, so it
    rounds (and has its leading one) exactly like ``x`` at every position at least two bits
    up: an exact sum only needs its bits down to two below the rounding point plus a sticky."""
    return np.asarray(floor_value, _I64) | np.asarray(sticky, _I64)


def round_to_exponent(values, lsb, exponent, fmt: MXIntFormat):
    """Exact integers ``values * 2^lsb`` -> mantissas on the fixed exponent ``exponent``:
    ``round(v * 2^(lsb + f - exponent))`` on the magnitude with ``fmt.rounding``, sign applied
    after, saturated to ``+-(2^(w-1) - 1)``: the conversion into an ``int`` class (the same
    rounding and saturation as :func:`~software_model.mxint_fixed.fixed_to_mxint`, with the
    exponent given instead of taken from the block's largest element).  ``lsb`` broadcasts to
    ``values``."""
    v = np.asarray(values, _I64)
    lsb = np.broadcast_to(np.asarray(lsb, _I64), v.shape)
    mag = np.abs(v)
    s = np.asarray(exponent, _I64) - fmt.fraction_bits - lsb
    sr = np.clip(s, 1, 62)
    q = mag >> sr
    rem = mag - (q << sr)
    half = np.left_shift(_I64(1), sr - 1)
    if fmt.rounding == "half_even":
        up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    else:
        up = rem >= half
    right = q + up
    sl = np.clip(-s, 0, fmt.element_width)
    left = np.where(mag > (fmt.mantissa_max >> sl), fmt.mantissa_max + 1, mag << sl)
    r = np.minimum(np.where(s > 0, right, left), fmt.mantissa_max)
    return np.where(v < 0, -r, r).astype(_I64)


def convert_fixed(values, lsb, params: AcceleratorParams, cls, exp: int = 0):
    """Exact integers ``values * 2^lsb`` (blocks along the last axis, ``lsb`` broadcast to the
    block axes) -> ``(exponents, mantissas)`` in class ``cls``: the one rounding of every
    conversion.  ``mxint``: :func:`~software_model.mxint_fixed.fixed_to_mxint`; ``int``: every
    block gets exponent ``exp`` and :func:`round_to_exponent`."""
    fmt = params.fmt(cls)
    v = np.asarray(values, _I64)
    if params.is_int(cls):
        lsb_e = np.broadcast_to(np.asarray(lsb, _I64), v.shape[:-1])[..., None]
        mans = round_to_exponent(v, lsb_e, exp, fmt)
        return np.full(v.shape[:-1], exp, _I64), mans
    return fixed_to_mxint(v, lsb, fmt)


# ============================================================================================
# The operations (numbers in, numbers out)


def _blocks(exps, mans, params: AcceleratorParams, what: str):
    exps = np.asarray(exps, _I64)
    mans = np.asarray(mans, _I64)
    if mans.shape[-1:] != (params.block_size,) or mans.shape[:-1] != exps.shape:
        raise ValueError(f"{what} needs exponents (..., nb) and mantissas (..., nb, "
                         f"{params.block_size}), not {exps.shape} and {mans.shape}")
    return exps, mans


#: block sums per numpy batch in :func:`matmul` (bounds its temporary memory)
_MATMUL_BATCH = 1 << 22


def matmul(a_exp, a_man, b_exp, b_man, params: AcceleratorParams, *, a_class=0, b_class=0,
           shift: int = 0, acc=None):
    """``MATMUL`` (docs/accelerator.md section 3): ``A (M x K) . B`` with ``B`` given as
    ``B^T`` (``N x K``), ``K = KB * B``; returns the ``M x N`` accumulator numbers (int64).

    ``a_exp (M, KB)``, ``a_man (M, KB, B)``, ``b_exp (N, KB)``, ``b_man (N, KB, B)``: decoded
    exponents and mantissas.  Each block sum ``s = sum_t a_t b_t`` is exact; it is aligned with
    ``scale_saturate(s, e_a + e_b - f_a - f_b + shift - acc_lsb, acc_width)``; the ``S``
    sub-arrays' aligned sums of one K chunk (blocks ``kc*S .. kc*S+S-1``) add exactly; each
    chunk is added into the accumulator with saturation, chunk after chunk, starting from
    ``acc`` (the ``accumulate`` flag; None: 0)."""
    a_exp, a_man = _blocks(a_exp, a_man, params, "matmul operand A")
    b_exp, b_man = _blocks(b_exp, b_man, params, "matmul operand B^T")
    if a_exp.ndim != 2 or b_exp.ndim != 2 or a_exp.shape[1] != b_exp.shape[1]:
        raise ValueError(f"matmul needs A (M, KB) and B^T (N, KB) with the same KB, not "
                         f"{a_exp.shape} and {b_exp.shape}")
    M, KB = a_exp.shape
    N = b_exp.shape[0]
    S = params.sub_arrays
    lo, hi = params.acc_range
    result = np.zeros((M, N), _I64) if acc is None else np.array(acc, _I64).reshape(M, N)
    offset = shift - params.fraction_bits(a_class) - params.fraction_bits(b_class) \
        - params.acc_lsb
    # float64 products and sums of at most 64 products of 16-bit mantissas are below 2^37:
    # exact, so BLAS computes the exact integer block sums
    af = a_man.transpose(1, 0, 2).astype(np.float64)          # (KB, M, B)
    bf = b_man.transpose(1, 2, 0).astype(np.float64)          # (KB, B, N)
    chunks = -(-KB // S)
    per_batch = max(1, _MATMUL_BATCH // max(1, M * N * S))
    for c0 in range(0, chunks, per_batch):
        c1 = min(chunks, c0 + per_batch)
        k0, k1 = c0 * S, min(KB, c1 * S)
        sums = np.matmul(af[k0:k1], bf[k0:k1]).astype(_I64)            # (k, M, N)
        shifts = (a_exp[:, k0:k1].T[:, :, None] + b_exp[:, k0:k1].T[:, None, :] + offset)
        aligned = scale_saturate(sums, shifts, params.acc_width)
        pad = (c1 - c0) * S - (k1 - k0)
        if pad:
            aligned = np.concatenate([aligned, np.zeros((pad, M, N), _I64)])
        tree = aligned.reshape(c1 - c0, S, M, N).sum(axis=1)   # exact: acc_width + log2 S bits
        for chunk in tree:
            result = np.clip(result + chunk, lo, hi)
    return result


def accst(values, params: AcceleratorParams, d_class=0, exp: int = 0):
    """``ACCST``: accumulator numbers ``(M, N)`` (N a multiple of B) -> blocks of class
    ``d_class``: ``fixed_to_mxint(values, acc_lsb)`` (mxint) or exponent ``exp`` (int)."""
    v = np.asarray(values, _I64)
    M, N = v.shape
    return convert_fixed(v.reshape(M, N // params.block_size, params.block_size),
                         params.acc_lsb, params, d_class, exp)


def accscale(values, rescale, params: AcceleratorParams):
    """``ACCSCALE``: row r of ``values (M, N)`` becomes ``floor(v * 2^-rescale_r)`` (the online
    softmax's rescale of the running output)."""
    v = np.asarray(values, _I64)
    r = np.asarray(rescale, _I64).reshape(-1, 1)
    return scale_saturate(v, -r, params.acc_width)


def accnorm(values, row_sum, params: AcceleratorParams, d_class=0, exp: int = 0):
    """``ACCNORM``: row r of ``values (M, N)`` divided by the online-softmax sum ``l_r`` and
    rounded once into ``d_class``: ``(R, lo) = softmax_reciprocal(l)``, the exact product
    ``v * R`` has its LSB at ``acc_lsb + exp_bits - recip_bits - lo`` (``l`` counts units of
    ``2^-exp_bits``, ``R ~ 2^(recip_bits + lo) / l``).  A row with ``l = 0`` gives zeros."""
    spec = params.softmax
    v = np.asarray(values, _I64)
    M, N = v.shape
    R, lo = softmax_reciprocal(np.asarray(row_sum, _I64).reshape(M), spec)
    prod = v * R[:, None]
    lsb = params.acc_lsb + spec.exp_bits - spec.recip_bits - lo
    nb = N // params.block_size
    return convert_fixed(prod.reshape(M, nb, params.block_size), lsb[:, None], params,
                         d_class, exp)


def vadd(a_exp, a_man, b_exp, b_man, params: AcceleratorParams, *, a_class=0, b_class=0,
         d_class=0, exp: int = 0):
    """``VADD``: element-wise ``a + b`` of two block arrays of the same shape (the caller
    broadcasts a bias row), the exact sum rounded once into ``d_class``.

    The exact sum can span ``2^ew`` bits; this computes it floored to a grid ``W`` per block
    with a sticky bit (:func:`jam`) at least two bits below the rounding position, which rounds
    (and saturates) identically: with ``lo``, ``hi`` the two operands' LSB weights
    (``e - f``),

    * ``int`` destination (rounding position ``X = exp - f_d``): ``W = clip(X - 2, lo, hi)``;
    * ``mxint`` destination: ``W = hi - f_d - 3`` when ``hi - lo >= max(w_max, f_d + 3)`` and
      the ``hi`` operand's block is non-zero (then the sum's top element is at least
      ``2^(hi-1)``, so the rounding position is at least ``hi - 1 - f_d``), else ``W = lo``
      (exact).

    The ``hi`` operand is shifted left (saturating at 62 bits: only reached when the result
    saturates anyway), the ``lo`` operand right (floor), and the bits it lost are jammed into
    the sum's lowest bit (:func:`jam`)."""
    a_exp, a_man = _blocks(a_exp, a_man, params, "vadd operand a")
    b_exp, b_man = _blocks(b_exp, b_man, params, "vadd operand b")
    la = a_exp - params.fraction_bits(a_class)
    lb = b_exp - params.fraction_bits(b_class)
    a_hi = la >= lb
    hi = np.where(a_hi, la, lb)
    lo = np.where(a_hi, lb, la)
    m_hi = np.where(a_hi[..., None], a_man, b_man)
    m_lo = np.where(a_hi[..., None], b_man, a_man)
    f_d = params.fraction_bits(d_class)
    if params.is_int(d_class):
        w = np.clip(exp - f_d - 2, lo, hi)
    else:
        far = (hi - lo) >= max(params.element_bits, f_d + 3)
        w = np.where(far & np.any(m_hi != 0, axis=-1), hi - f_d - 3, lo)
    q, sticky = shift_right_sticky(m_lo, (w - lo)[..., None])
    v = jam(scale_saturate(m_hi, (hi - w)[..., None], 62) + q, sticky)
    return convert_fixed(v, w, params, d_class, exp)


def vcast(a_exp, a_man, params: AcceleratorParams, *, a_class=0, d_class=0, exp: int = 0):
    """``VCAST``: the exact values of class ``a_class`` rounded once into ``d_class``."""
    a_exp, a_man = _blocks(a_exp, a_man, params, "vcast operand")
    return convert_fixed(a_man, a_exp - params.fraction_bits(a_class), params, d_class, exp)


def vgelu(a_exp, a_man, params: AcceleratorParams):
    """``VGELU``: :func:`~software_model.mxint_gelu.mxint_gelu` (activation in and out)."""
    a_exp, a_man = _blocks(a_exp, a_man, params, "vgelu operand")
    return mxint_gelu(a_exp, a_man, params.gelu)


def vlnorm(x_exp, x_man, gamma_exp, gamma_man, beta_exp, beta_man, params: AcceleratorParams):
    """``VLNORM``: :func:`~software_model.mxint_layernorm.mxint_layernorm` of rows
    ``x (M, nb)`` with one gamma and beta row ``(nb,)`` (activation format throughout)."""
    res = mxint_layernorm(x_exp, x_man, gamma_exp, gamma_man, beta_exp, beta_man,
                          params.layernorm)
    return res.exponents, res.mantissas


def _row_mask(shape, valid: int, block_size: int):
    """Mask ``(M, nb, B)``: the last block of each row keeps its first ``valid`` elements."""
    mask = np.ones(shape, bool)
    if valid:
        mask[:, -1, valid:] = False
    return mask


def vsmax(a_exp, a_man, params: AcceleratorParams, valid: int = 0):
    """``VSMAX``: :func:`~software_model.mxint_softmax.mxint_softmax` of rows ``(M, nb)`` as
    ``hw.mxint_softmax.MXIntSoftmax`` computes it (``tile_blocks=1``: the row max and sum are
    kept block by block on the first pass, the terms shifted to the final max on the second;
    the row sum can differ from the exact two-pass sum by the bits a rescale drops, in about a
    third of random rows); ``valid`` elements of each row's last block take part (0: all)."""
    a_exp, a_man = _blocks(a_exp, a_man, params, "vsmax operand")
    res = mxint_softmax(a_exp, a_man, params.softmax,
                        mask=_row_mask(a_man.shape, valid, params.block_size), tile_blocks=1)
    return res.exponents, res.mantissas


def vsmaxo(a_exp, a_man, state: OnlineSoftmax, params: AcceleratorParams, valid: int = 0):
    """``VSMAXO``: one online-softmax step (``state.update``) over a tile of each row;
    returns the tile's terms as activation blocks ``P = t * 2^-exp_bits`` (rounded once) and
    the :class:`~software_model.mxint_softmax.OnlineTile` (running max, rescale)."""
    a_exp, a_man = _blocks(a_exp, a_man, params, "vsmaxo operand")
    tile = state.update(a_exp, a_man, _row_mask(a_man.shape, valid, params.block_size))
    spec = params.softmax
    e, m = fixed_to_mxint(tile.terms, -spec.exp_bits, spec.out_fmt)
    return e, m, tile


# ============================================================================================
# Layout and words


def matrix_addresses(base: int, rows: int, blocks: int, stride: int) -> np.ndarray:
    """Word addresses ``(rows, blocks)`` of a matrix in the SP/DRAM layout (section 2): block
    ``cb`` of row ``r`` at ``base + cb * stride + r``.  The ACC layout is the same formula with
    column tiles for blocks."""
    return base + np.arange(blocks, dtype=_I64)[None, :] * stride + \
        np.arange(rows, dtype=_I64)[:, None]


acc_addresses = matrix_addresses


def _check_words(exps, mans, params: AcceleratorParams):
    lo, hi = params.mantissa_range
    if mans.size and (mans.min() < lo or mans.max() > hi):
        raise ValueError(f"mantissas must fit {params.element_bits} signed bits "
                         f"({lo} .. {hi}), not {int(mans.min())} .. {int(mans.max())}")
    if exps.size and (exps.min() < params.emin or exps.max() > params.emax):
        raise ValueError(f"exponents must be in {params.emin} .. {params.emax}, not "
                         f"{int(exps.min())} .. {int(exps.max())}")


def pack_word(exponent: int, mantissas, params: AcceleratorParams) -> int:
    """One memory word as its ``B * w_max + ew``-bit vector: mantissa ``i`` (two's complement)
    at bits ``i*w_max .. i*w_max + w_max - 1``, the exponent (two's complement) at bits
    ``B*w_max .. B*w_max + ew - 1``."""
    return pack_words(np.asarray([exponent]), np.asarray([mantissas]), params)[0]


def pack_words(exps, mans, params: AcceleratorParams) -> list[int]:
    exps = np.asarray(exps, _I64).reshape(-1)
    mans = np.asarray(mans, _I64).reshape(-1, params.block_size)
    _check_words(exps, mans, params)
    w, B = params.element_bits, params.block_size
    out = []
    for e, row in zip(exps.tolist(), mans.tolist()):
        v = (e & ((1 << params.exponent_width) - 1)) << (B * w)
        for i, m in enumerate(row):
            v |= (m & ((1 << w) - 1)) << (i * w)
        out.append(v)
    return out


def unpack_word(bits: int, params: AcceleratorParams) -> tuple[int, np.ndarray]:
    """Inverse of :func:`pack_word`: ``(exponent, mantissas)``; bits above the word must be 0."""
    e, m = unpack_words([bits], params)
    return int(e[0]), m[0]


def unpack_words(words: Iterable[int], params: AcceleratorParams):
    w, B, ew = params.element_bits, params.block_size, params.exponent_width
    words = list(words)
    exps = np.zeros(len(words), _I64)
    mans = np.zeros((len(words), B), _I64)
    for j, v in enumerate(words):
        if not 0 <= v < 1 << params.word_bits:
            raise ValueError(f"a word is {params.word_bits} bits, not {v!r}")
        for i in range(B):
            m = (v >> (i * w)) & ((1 << w) - 1)
            mans[j, i] = m - (1 << w) if m >> (w - 1) else m
        e = v >> (B * w)
        exps[j] = e - (1 << ew) if e >> (ew - 1) else e
    return exps, mans


def quantize_matrix(x, params: AcceleratorParams, cls=0, exp: Optional[int] = None):
    """Host-side conversion of a real matrix ``x (R, C)`` (C a multiple of B) into class
    ``cls``: ``mxint`` by ``software_model.mxint.quantize_mxint`` (half-even, blocks along the
    rows), ``int`` on the fixed exponent ``exp`` (required).  Returns ``(exps (R, nb),
    mans (R, nb, B))``."""
    from software_model.mxint import quantize_mxint
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] % params.block_size:
        raise ValueError(f"quantize_matrix needs (R, C) with C a multiple of "
                         f"{params.block_size}, not {x.shape}")
    fmt = params.fmt(cls)
    if params.is_int(cls):
        if exp is None:
            raise ValueError(f"class {TensorClass(int(cls)).key} is int: give its exponent")
        scaled = np.rint(np.ldexp(x.astype(np.float32).astype(np.float64),
                                  fmt.fraction_bits - exp))
        mans = np.clip(scaled, -fmt.mantissa_max, fmt.mantissa_max).astype(_I64)
        mans = mans.reshape(x.shape[0], -1, params.block_size)
        return np.full(mans.shape[:-1], exp, _I64), mans
    q = quantize_mxint(x, fmt, axis=-1)
    return q.exponents.astype(_I64), q.mantissas.astype(_I64)


def matrix_values(exps, mans, params: AcceleratorParams, cls=0) -> np.ndarray:
    """Exact float64 values ``(R, nb * B)`` of blocks read in class ``cls``."""
    v = np.ldexp(np.asarray(mans, np.float64),
                 (np.asarray(exps, _I64) - params.fraction_bits(cls))[..., None])
    return v.reshape(v.shape[:-2] + (-1,))


# ============================================================================================
# State


class ExecutionError(ValueError):
    """An instruction the parameters or the state cannot execute (names the instruction)."""


class Memory:
    """Word memory (SP or DRAM): decoded exponents ``(words,)`` and mantissas ``(words, B)``
    (int16: ``w_max <= 16``, ``ew <= 8``)."""

    def __init__(self, words: int, block_size: int, name: str):
        self.name = name
        self.exps = np.zeros(words, np.int16)
        self.mans = np.zeros((words, block_size), np.int16)

    @property
    def words(self) -> int:
        return self.exps.shape[0]

    def _check(self, addrs):
        if addrs.size and (addrs.min() < 0 or addrs.max() >= self.words):
            raise ExecutionError(f"{self.name} addresses {int(addrs.min())} .. "
                                 f"{int(addrs.max())} outside 0 .. {self.words - 1}")

    def gather(self, addrs):
        addrs = np.asarray(addrs, _I64)
        self._check(addrs)
        return self.exps[addrs].astype(_I64), self.mans[addrs].astype(_I64)

    def scatter(self, addrs, exps, mans):
        addrs = np.asarray(addrs, _I64)
        self._check(addrs)
        self.exps[addrs] = exps
        self.mans[addrs] = mans

    def read_matrix(self, base, rows, blocks, stride):
        return self.gather(matrix_addresses(base, rows, blocks, stride))

    def write_matrix(self, base, stride, exps, mans, params: AcceleratorParams):
        exps = np.asarray(exps, _I64)
        mans = np.asarray(mans, _I64)
        _check_words(exps, mans, params)
        rows, blocks = exps.shape
        self.scatter(matrix_addresses(base, rows, blocks, stride), exps, mans)

    def words_as_ints(self, params: AcceleratorParams, start: int = 0,
                      count: Optional[int] = None) -> list[int]:
        count = self.words - start if count is None else count
        return pack_words(self.exps[start:start + count], self.mans[start:start + count],
                          params)


class AcceleratorState:
    """Architectural state: ``dram`` and ``sp`` (:class:`Memory`), ``acc`` (int64
    ``(acc_words, cols)``), the online-softmax state (``softmax``, an
    :class:`~software_model.mxint_softmax.OnlineSoftmax`, and ``rescale``, the last step's
    shifts), and ``events`` (``(tag, instruction index)`` per BARRIER).  Every memory starts
    at zero; programs must not read words they have not written (the RTL's are undefined)."""

    def __init__(self, params: AcceleratorParams, dram_words: int = 1 << 16):
        if not 1 <= dram_words <= 1 << params.address_bits:
            raise ValueError(f"dram_words must be 1 .. 2^address_bits "
                             f"({1 << params.address_bits}), not {dram_words}")
        self.params = params
        self.dram = Memory(dram_words, params.block_size, "DRAM")
        self.sp = Memory(params.sp_words, params.block_size, "SP")
        self.acc = np.zeros((params.acc_words, params.cols), _I64)
        self.softmax: Optional[OnlineSoftmax] = None
        self.rescale: Optional[np.ndarray] = None
        self.events: list[tuple[int, int]] = []
        self.executed = 0

    def read_acc(self, base: int, rows: int, n: int, stride: int) -> np.ndarray:
        """The ``rows x n`` accumulator numbers at ``base`` (ACC layout, section 2)."""
        tiles = -(-n // self.params.cols)
        addrs = acc_addresses(base, rows, tiles, stride)
        _check_range(addrs, self.params.acc_words, "ACC")
        return self.acc[addrs].reshape(rows, tiles * self.params.cols)[:, :n]

    def write_acc(self, base: int, stride: int, values) -> None:
        """Write ``rows x n`` numbers; columns of a partial last tile beyond ``n`` keep their
        value (they are never written back)."""
        v = np.asarray(values, _I64)
        rows, n = v.shape
        cols = self.params.cols
        tiles = -(-n // cols)
        addrs = acc_addresses(base, rows, tiles, stride)
        _check_range(addrs, self.params.acc_words, "ACC")
        old = self.acc[addrs].reshape(rows, tiles * cols)
        old[:, :n] = v
        self.acc[addrs] = old.reshape(rows, tiles, cols)

    def copy(self) -> "AcceleratorState":
        other = AcceleratorState.__new__(AcceleratorState)
        other.__dict__.update(self.__dict__)
        for name in ("dram", "sp"):
            mem = getattr(self, name)
            new = Memory.__new__(Memory)
            new.name, new.exps, new.mans = mem.name, mem.exps.copy(), mem.mans.copy()
            setattr(other, name, new)
        other.acc = self.acc.copy()
        other.events = list(self.events)
        if self.softmax is not None:
            sm = OnlineSoftmax.__new__(OnlineSoftmax)
            sm.__dict__.update(self.softmax.__dict__)
            sm.m, sm.l = self.softmax.m.copy(), self.softmax.l.copy()
            other.softmax = sm
        return other


def _check_range(addrs, size, name):
    if addrs.size and (addrs.min() < 0 or addrs.max() >= size):
        raise ExecutionError(f"{name} addresses {int(addrs.min())} .. {int(addrs.max())} "
                             f"outside 0 .. {size - 1}")


# ============================================================================================
# Accesses of an instruction (for checks, the program generator and the cycle model)


@dataclass(frozen=True)
class Access:
    """Words one instruction touches in one memory: ``space`` (``sp``, ``acc``, ``dram``),
    ``write`` (else read), ``addresses`` (int64 array, row-major in the order of the layout)."""
    space: str
    write: bool
    addresses: np.ndarray


def _nb(instr: Instruction, params: AcceleratorParams) -> int:
    return instr.n // params.block_size


def instruction_accesses(instr: Instruction, params: AcceleratorParams) -> list[Access]:
    """Every word an instruction reads and writes (ACC words count whole)."""
    op, B, cols = instr.op, params.block_size, params.cols
    M = instr.m
    acc_tiles = -(-instr.n // cols)
    out = []
    if op in (Opcode.LOAD, Opcode.STORE):
        seg = np.arange(instr.n, dtype=_I64)[:, None]
        i = np.arange(instr.m, dtype=_I64)[None, :]
        d = (instr.d + seg * instr.d_stride + i).reshape(-1)
        a = (instr.a + seg * instr.a_stride + i).reshape(-1)
        if op == Opcode.LOAD:
            out += [Access("dram", False, a), Access("sp", True, d)]
        else:
            out += [Access("sp", False, a), Access("dram", True, d)]
    elif op == Opcode.MATMUL:
        out.append(Access("sp", False, matrix_addresses(instr.a, M, instr.kb, instr.a_stride)
                          .reshape(-1)))
        out.append(Access("sp", False, matrix_addresses(instr.b, instr.n, instr.kb,
                                                        instr.b_stride).reshape(-1)))
        acc = acc_addresses(instr.d, M, acc_tiles, instr.d_stride).reshape(-1)
        if instr.accumulate:
            out.append(Access("acc", False, acc))
        out.append(Access("acc", True, acc))
    elif op in (Opcode.ACCST, Opcode.ACCNORM):
        out.append(Access("acc", False, acc_addresses(instr.a, M, acc_tiles, instr.a_stride)
                          .reshape(-1)))
        out.append(Access("sp", True, matrix_addresses(instr.d, M, _nb(instr, params),
                                                       instr.d_stride).reshape(-1)))
    elif op == Opcode.ACCSCALE:
        acc = acc_addresses(instr.d, M, acc_tiles, instr.d_stride).reshape(-1)
        out += [Access("acc", False, acc), Access("acc", True, acc)]
    elif op == Opcode.BARRIER:
        pass
    else:                                          # vector unit: SP -> SP
        nb = _nb(instr, params)
        out.append(Access("sp", False, matrix_addresses(instr.a, M, nb, instr.a_stride)
                          .reshape(-1)))
        if op == Opcode.VADD:
            rows_b = 1 if instr.broadcast else M
            out.append(Access("sp", False, matrix_addresses(instr.b, rows_b, nb,
                                                            instr.b_stride).reshape(-1)))
        elif op == Opcode.VLNORM:
            out.append(Access("sp", False, instr.b + np.arange(2 * nb, dtype=_I64)))
        out.append(Access("sp", True, matrix_addresses(instr.d, M, nb, instr.d_stride)
                          .reshape(-1)))
    return out


def check_instruction(instr: Instruction, params: AcceleratorParams,
                      dram_words: Optional[int] = None) -> None:
    """Raise :class:`ExecutionError` if ``instr`` is not legal for these parameters: shapes
    (``n`` a multiple of B for SP matrices, LayerNorm row length, softmax rows and row length,
    ``valid <= B``), immediates (``exp`` inside the exponent field for an ``int``
    destination, zero for an ``mxint`` one), addresses inside SP/ACC/DRAM, destination words
    distinct, and a destination overlapping a source only when it is that source word for
    word (in place)."""
    op, B = instr.op, params.block_size
    name = op.name

    def fail(msg):
        raise ExecutionError(f"{name}: {msg}")

    if op in (Opcode.ACCST, Opcode.ACCNORM, Opcode.VADD, Opcode.VCAST, Opcode.VGELU,
              Opcode.VLNORM, Opcode.VSMAX, Opcode.VSMAXO) and instr.n % B:
        fail(f"n must be a multiple of the block size {B}, not {instr.n}")
    if op in (Opcode.ACCST, Opcode.ACCNORM, Opcode.VADD, Opcode.VCAST):
        if params.is_int(instr.d_class):
            if not params.emin <= instr.imm <= params.emax:
                fail(f"exp must be in {params.emin} .. {params.emax} (class "
                     f"{instr.d_class.key} is int), not {instr.imm}")
        elif instr.imm:
            fail(f"exp must be 0 for class {instr.d_class.key} (mxint: exponents come from "
                 f"the data), not {instr.imm}")
    if op == Opcode.VLNORM and instr.n != params.layernorm.row_length:
        fail(f"n must be vector.layernorm.row_length ({params.layernorm.row_length}), "
             f"not {instr.n}")
    if op in (Opcode.VSMAX, Opcode.VSMAXO):
        if instr.valid > B:
            fail(f"valid must be 0 .. {B} (elements of a block), not {instr.valid}")
        if op == Opcode.VSMAX and instr.n // B > params.softmax.max_row_blocks:
            fail(f"rows of {instr.n // B} blocks exceed vector.softmax.max_row_blocks "
                 f"({params.softmax.max_row_blocks})")
    if op in (Opcode.VSMAXO, Opcode.ACCSCALE, Opcode.ACCNORM) and instr.m > params.softmax_rows:
        fail(f"m must be at most vector.softmax_rows ({params.softmax_rows}), not {instr.m}")
    sizes = {"sp": params.sp_words, "acc": params.acc_words}
    if dram_words is not None:
        sizes["dram"] = dram_words
    accesses = instruction_accesses(instr, params)
    for acc in accesses:
        size = sizes.get(acc.space)
        if size is not None and acc.addresses.size and \
                (acc.addresses.min() < 0 or acc.addresses.max() >= size):
            fail(f"{'writes' if acc.write else 'reads'} {acc.space.upper()} words "
                 f"{int(acc.addresses.min())} .. {int(acc.addresses.max())}, outside "
                 f"0 .. {size - 1}")
    for dst in (a for a in accesses if a.write):
        if np.unique(dst.addresses).size != dst.addresses.size:
            fail(f"destination words in {dst.space.upper()} repeat (a stride smaller than the "
                 "rows or segment length)")
        for src in (a for a in accesses if not a.write and a.space == dst.space):
            if src.addresses is dst.addresses or np.array_equal(src.addresses, dst.addresses):
                continue
            if np.intersect1d(src.addresses, dst.addresses).size:
                fail(f"destination overlaps a source in {dst.space.upper()} without being the "
                     "same words (only exact in-place operation is allowed)")


# ============================================================================================
# Execution


def as_class(mans, params: AcceleratorParams, cls):
    """Mantissas as an instruction reads them in class ``cls``: each element's low
    ``element_width(cls)`` bits, two's complement (memory keeps ``w_max`` bits, narrower classes
    sign-extended, so a word read in the class it was written in is unchanged)."""
    w = params.format_of(cls).element_width
    m = np.asarray(mans, _I64)
    if w == params.element_bits:
        return m
    half = 1 << (w - 1)
    return ((m + half) & ((1 << w) - 1)) - half


class _ClassReader:
    """SP reads as an instruction sees them (in a class, :func:`as_class`), and writes."""

    def __init__(self, state: AcceleratorState):
        self.state = state

    def read_matrix(self, base, rows, blocks, stride, cls):
        e, m = self.state.sp.read_matrix(base, rows, blocks, stride)
        return e, as_class(m, self.state.params, cls)

    def gather(self, addrs, cls):
        e, m = self.state.sp.gather(addrs)
        return e, as_class(m, self.state.params, cls)

    def write_matrix(self, base, stride, exps, mans, params):
        self.state.sp.write_matrix(base, stride, exps, mans, params)


def _execute_one(instr: Instruction, state: AcceleratorState, index: int) -> None:
    p = state.params
    op, B = instr.op, p.block_size
    M, nb = instr.m, instr.n // B
    act = TensorClass.ACTIVATION

    sp = _ClassReader(state)
    if op == Opcode.LOAD or op == Opcode.STORE:
        src, dst = (state.dram, state.sp) if op == Opcode.LOAD else (state.sp, state.dram)
        seg = np.arange(instr.n, dtype=_I64)[:, None]
        i = np.arange(instr.m, dtype=_I64)[None, :]
        e, m = src.gather(instr.a + seg * instr.a_stride + i)
        dst.scatter(instr.d + seg * instr.d_stride + i, e, m)
    elif op == Opcode.MATMUL:
        ae, am = sp.read_matrix(instr.a, M, instr.kb, instr.a_stride, instr.a_class)
        be, bm = sp.read_matrix(instr.b, instr.n, instr.kb, instr.b_stride, instr.b_class)
        acc = state.read_acc(instr.d, M, instr.n, instr.d_stride) if instr.accumulate else None
        out = matmul(ae, am, be, bm, p, a_class=instr.a_class, b_class=instr.b_class,
                     shift=instr.imm, acc=acc)
        state.write_acc(instr.d, instr.d_stride, out)
    elif op == Opcode.ACCST:
        v = state.read_acc(instr.a, M, instr.n, instr.a_stride)
        e, m = accst(v, p, instr.d_class, instr.imm)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.ACCSCALE:
        if state.rescale is None:
            raise ExecutionError("ACCSCALE: no online-softmax step (VSMAXO) has run")
        if M > state.rescale.shape[0]:
            raise ExecutionError(f"ACCSCALE: m = {M} rows, but the online-softmax state has "
                                 f"{state.rescale.shape[0]}")
        v = state.read_acc(instr.d, M, instr.n, instr.d_stride)
        state.write_acc(instr.d, instr.d_stride, accscale(v, state.rescale[:M], p))
    elif op == Opcode.ACCNORM:
        if state.softmax is None:
            raise ExecutionError("ACCNORM: no online-softmax state (VSMAXO with init)")
        if M > state.softmax.rows:
            raise ExecutionError(f"ACCNORM: m = {M} rows, but the online-softmax state has "
                                 f"{state.softmax.rows}")
        v = state.read_acc(instr.a, M, instr.n, instr.a_stride)
        e, m = accnorm(v, state.softmax.l[:M], p, instr.d_class, instr.imm)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.VADD:
        ae, am = sp.read_matrix(instr.a, M, nb, instr.a_stride, instr.a_class)
        be, bm = sp.read_matrix(instr.b, 1 if instr.broadcast else M, nb, instr.b_stride,
                                instr.b_class)
        if instr.broadcast:
            be, bm = np.broadcast_to(be, ae.shape), np.broadcast_to(bm, am.shape)
        e, m = vadd(ae, am, be, bm, p, a_class=instr.a_class, b_class=instr.b_class,
                    d_class=instr.d_class, exp=instr.imm)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.VCAST:
        ae, am = sp.read_matrix(instr.a, M, nb, instr.a_stride, instr.a_class)
        e, m = vcast(ae, am, p, a_class=instr.a_class, d_class=instr.d_class, exp=instr.imm)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.VGELU:
        ae, am = sp.read_matrix(instr.a, M, nb, instr.a_stride, act)
        e, m = vgelu(ae, am, p)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.VLNORM:
        xe, xm = sp.read_matrix(instr.a, M, nb, instr.a_stride, act)
        pe, pm = sp.gather(instr.b + np.arange(2 * nb, dtype=_I64), act)
        e, m = vlnorm(xe, xm, pe[:nb], pm[:nb], pe[nb:], pm[nb:], p)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.VSMAX:
        ae, am = sp.read_matrix(instr.a, M, nb, instr.a_stride, act)
        e, m = vsmax(ae, am, p, instr.valid)
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.VSMAXO:
        if instr.init:
            state.softmax = OnlineSoftmax(p.softmax, M)
        elif state.softmax is None:
            raise ExecutionError("VSMAXO: no online-softmax state: the first step needs init=1")
        elif state.softmax.rows != M:
            raise ExecutionError(f"VSMAXO: m = {M} rows, but the online-softmax state was "
                                 f"started with {state.softmax.rows} (init=1 starts new rows)")
        ae, am = sp.read_matrix(instr.a, M, nb, instr.a_stride, act)
        try:
            e, m, tile = vsmaxo(ae, am, state.softmax, p, instr.valid)
        except ValueError as exc:
            raise ExecutionError(f"VSMAXO: {exc}") from None
        state.rescale = tile.rescale.copy()
        sp.write_matrix(instr.d, instr.d_stride, e, m, p)
    elif op == Opcode.BARRIER:
        state.events.append((instr.tag, index))
    else:                                          # pragma: no cover (Opcode is closed)
        raise ExecutionError(f"no semantics for {op.name}")


def execute(program: Sequence[Instruction], state: AcceleratorState, *,
            check: bool = True) -> AcceleratorState:
    """Run ``program`` on ``state`` (modified in place and returned), one instruction after the
    other.  ``check``: :func:`check_instruction` first (bounds, overlaps, shapes).  A problem
    raises :class:`ExecutionError` naming the instruction's index and assembly."""
    for index, instr in enumerate(program):
        try:
            if check:
                check_instruction(instr, state.params, state.dram.words)
            _execute_one(instr, state, index)
        except ExecutionError as exc:
            raise ExecutionError(f"instruction {index} ({instr}): {exc}") from None
        state.executed += 1
    return state


# ============================================================================================
# Cycle model


@dataclass(frozen=True)
class MemoryModel:
    """The off-chip memory behind the port, with the parameters of the testbench's model
    (docs/accelerator.md section 6, ``cosim/dram.py``): a request of ``count`` words occupies
    the memory ``ceil(count / words_per_cycle)`` cycles, a read's response is due ``latency``
    cycles after its last occupied cycle, writes are posted.  Stall profiles are not modelled."""
    latency: int = 8
    words_per_cycle: int = 1

    def __post_init__(self):
        for name in ("latency", "words_per_cycle"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")

    def occupancy(self, count: int) -> int:
        return -(-count // self.words_per_cycle)


class CycleCosts:
    """Duration of each instruction in its queue, in cycles (docs/isa.md "Cycle costs"): from
    the cycle its engine takes it to the first cycle the engine is idle again, as the RTL
    (hw/accelerator.py) does it, measured in simulation and held to it by tests.

    The constants are the pipeline depths of the RTL's units; :meth:`hw.accelerator.Accelerator.
    cycle_costs` reads them off an elaborated design (they depend on the units' specs), the
    defaults are those of ``configs/accelerator_small.yaml``.  Not modelled: bank conflicts
    between queues (the execute queue has priority, then store, then load), the memory port
    shared by concurrent loads and stores, VADD's conflicts between its two operand streams,
    traffic-profile stalls."""

    #: the requantizer (5 register stages) plus a reader's and a writer's hand-offs
    vcast_latency: int = 12
    #: VADD's three alignment stages more (two with ``pipelined: false``)
    vadd_latency: int = 16
    #: a reader's and a writer's hand-offs around a unit (+ the unit's own latency)
    unit_overhead: int = 7
    gelu_latency: int = 16
    #: MXIntSoftmax: a row's last block to its reciprocal, and the second pass
    vsmax_row_latency: int = 33
    vsmax_second_pass: int = 13
    #: MXIntLayerNorm: a row's statistics, and the second pass
    vlnorm_row_latency: int = 27
    vlnorm_second_pass: int = 21
    #: gamma and beta's hand-off into the unit before the rows start (3 with ``pipelined:
    #: false``: the reader's output register)
    vlnorm_params_latency: int = 4
    #: the online-softmax step: a row's last block in to its first block of P out
    vsmaxo_latency: int = 39
    accst_latency: int = 11
    #: the gather, ACCNORM's product stages (5 pipelined, 2 with ``pipelined: false``), the
    #: requantizer and the writer
    accnorm_latency: int = 16
    accscale_latency: int = 4
    #: the matrix unit: a job's last operand beat to its first result row (rows + cols + 4 +
    #: log2 S + matmul_pe_stages), and the ACC read-modify-write after the last row (its add
    #: in two stages; 2 with ``pipelined: false``)
    matmul_writeback: int = 3
    #: the PEs' product register (1 with ``pipelined: true``, 0 without)
    matmul_pe_stages: int = 1
    #: staging tile filled -> moved into the active tile (response, fill check, staged flag)
    matmul_fill_latency: int = 3

    def __init__(self, **constants):
        for key, value in constants.items():
            if not hasattr(type(self), key) or key.startswith("_"):
                raise ValueError(f"unknown cycle-cost constant {key!r}")
            setattr(self, key, value)

    def duration(self, instr: Instruction, params: AcceleratorParams,
                 memory: MemoryModel) -> int:
        return getattr(self, instr.op.name.lower())(instr, params, memory)

    # -- DMA ---------------------------------------------------------------------------------
    @staticmethod
    def beats(instr: Instruction, params: AcceleratorParams) -> int:
        """Port beats of a DMA: each segment of ``m`` words is ``ceil(m / port_words)``."""
        return instr.n * -(-instr.m // params.port_words)

    @staticmethod
    def memory_cycles(instr: Instruction, params: AcceleratorParams,
                      memory: MemoryModel) -> int:
        """Cycles the memory is busy with a DMA's requests (a beat each, at least a cycle)."""
        full, last = divmod(instr.m, params.port_words)
        per_segment = full * memory.occupancy(params.port_words) + \
            (memory.occupancy(last) if last else 0)
        return instr.n * per_segment

    @staticmethod
    def _last_beat(instr, params, memory):
        last = instr.m % params.port_words or params.port_words
        return memory.occupancy(min(last, instr.m))

    def load(self, instr, params, memory):
        # requests from the cycle after it starts, back to back at the memory's rate; the last
        # response is due latency cycles after the memory's last busy cycle and is written the
        # cycle it arrives
        return self.memory_cycles(instr, params, memory) + memory.latency + 1

    def store(self, instr, params, memory):
        # a scratchpad run read, a cycle in the write buffer, then beats at the memory's rate;
        # the engine is idle the cycle after its last beat is taken
        return self.memory_cycles(instr, params, memory) - \
            self._last_beat(instr, params, memory) + 4

    # -- matrix unit -------------------------------------------------------------------------
    @staticmethod
    def matmul_jobs(instr: Instruction, params: AcceleratorParams) -> int:
        return (-(-instr.m // params.rows)) * (-(-instr.n // params.cols)) * \
            (-(-instr.kb // params.sub_arrays))

    @staticmethod
    def _fill_cycles(a_runs, b_runs, banks: int) -> int:
        """Cycles the operand loader takes to issue one job's runs: A runs go every cycle on
        the first execute read port, a B^T run goes when none of its banks is taken by that
        cycle's A run (the first port has priority)."""
        def bank_set(run):
            addr, count = run
            return {(addr + k) % banks for k in range(count)}
        ia = ib = cycles = 0
        while ia < len(a_runs) or ib < len(b_runs):
            taken = bank_set(a_runs[ia]) if ia < len(a_runs) else set()
            if ia < len(a_runs):
                ia += 1
            if ib < len(b_runs) and not (taken & bank_set(b_runs[ib])):
                ib += 1
            cycles += 1
        return cycles

    def matmul(self, instr, params, memory):
        """The loader, the double-buffered operand tile and the matrix unit job by job (the
        RTL's schedule): a job's operands are fetched from the cycle after the previous job
        moved into the active tile; it moves in when fetched (+ ``matmul_fill_latency``) and
        the previous job's last beat has been fed; its beats follow, ``max(B, rows)`` apart
        at least; the last job's rows come out ``rows + cols + 4 + log2 S +
        matmul_pe_stages`` cycles after its last beat and are written back in
        ``matmul_writeback`` more."""
        p = params
        rows, cols, S, B, banks = p.rows, p.cols, p.sub_arrays, p.block_size, p.sp_banks
        cache = {}
        fed = None              # cycle the previous job's last beat was fed
        moved = None            # cycle the previous job moved into the active tile
        for n0 in range(0, instr.n, cols):
            cv = min(cols, instr.n - n0)
            for m0 in range(0, instr.m, rows):
                rv = min(rows, instr.m - m0)
                for kc in range(0, instr.kb, S):
                    a_runs, b_runs = [], []
                    for kb in range(kc, min(kc + S, instr.kb)):
                        a0 = instr.a + kb * instr.a_stride + m0
                        b0 = instr.b + kb * instr.b_stride + n0
                        a_runs += [(a0 + c, min(banks, rv - c)) for c in range(0, rv, banks)]
                        b_runs += [(b0 + c, min(banks, cv - c)) for c in range(0, cv, banks)]
                    key = (tuple((a % banks, c) for a, c in a_runs),
                           tuple((b % banks, c) for b, c in b_runs))
                    if key not in cache:
                        cache[key] = self._fill_cycles(a_runs, b_runs, banks)
                    first = 2 if moved is None else moved + 2
                    ready = first + cache[key] - 1 + self.matmul_fill_latency
                    moved = ready if fed is None else max(ready, fed)
                    last = moved + B
                    fed = last if fed is None else max(last, fed + rows)
        latency = rows + cols + 4 + _log2(S) + self.matmul_pe_stages
        return fed + latency + rows - 1 + self.matmul_writeback

    # -- accumulator processing --------------------------------------------------------------
    @staticmethod
    def _acc_words(instr, params):
        return instr.m * -(-instr.n // params.cols)

    @staticmethod
    def _acc_reads(instr, params):
        """ACC reads of ACCST/ACCNORM: a read per SP block, or B/cols reads when the ACC word
        is narrower than a block."""
        return instr.m * (instr.n // params.block_size) * max(1, params.block_size //
                                                               params.cols)

    def accst(self, instr, params, memory):
        return self._acc_reads(instr, params) + self.accst_latency

    def accscale(self, instr, params, memory):
        return self._acc_words(instr, params) + self.accscale_latency

    def accnorm(self, instr, params, memory):
        return self._acc_reads(instr, params) + self.accnorm_latency

    # -- vector unit -------------------------------------------------------------------------
    @staticmethod
    def _blocks(instr, params):
        return instr.m * (instr.n // params.block_size)

    def vadd(self, instr, params, memory):
        return self._blocks(instr, params) + self.vadd_latency

    def vcast(self, instr, params, memory):
        return self._blocks(instr, params) + self.vcast_latency

    def vgelu(self, instr, params, memory):
        return self._blocks(instr, params) + self.gelu_latency + self.unit_overhead

    def vlnorm(self, instr, params, memory):
        # gamma and beta first (two words a block), then the rows back to back; the last
        # row's output follows its statistics
        nb = instr.n // params.block_size
        return self._blocks(instr, params) + 3 * nb + self.vlnorm_row_latency + \
            self.vlnorm_second_pass + self.unit_overhead + self.vlnorm_params_latency

    def vsmax(self, instr, params, memory):
        nb = instr.n // params.block_size
        return self._blocks(instr, params) + nb + self.vsmax_row_latency + \
            self.vsmax_second_pass + self.unit_overhead

    def vsmaxo(self, instr, params, memory):
        nb = instr.n // params.block_size
        return self._blocks(instr, params) + nb + self.vsmaxo_latency

    def barrier(self, instr, params, memory):
        return 0


@dataclass(frozen=True)
class InstructionTiming:
    index: int
    op: Opcode
    queue: Queue
    dispatch: int        # cycle the decoder hands it to its queue
    start: int           # cycle its queue starts it
    end: int             # cycle its last write is done


@dataclass(frozen=True)
class CycleReport:
    """What :func:`cycle_model` predicts: per-instruction timing, total cycles, the cycle of
    each BARRIER's event, busy cycles per queue and the matrix unit's utilisation."""
    timings: tuple
    cycles: int
    events: tuple             # (tag, cycle)
    busy: dict                # queue name -> cycles with an instruction running
    macs: int                 # useful multiply-accumulates of the MATMULs (M N K)
    multipliers: int

    @property
    def utilization(self) -> float:
        return self.macs / (self.cycles * self.multipliers) if self.cycles else 0.0


def cycle_model(program: Sequence[Instruction], params: AcceleratorParams,
                memory_model: Optional[MemoryModel] = None, *,
                costs: Optional[CycleCosts] = None, queue_depth: int = 4) -> CycleReport:
    """Cycles of ``program`` (docs/accelerator.md section 7, docs/isa.md "Cycle costs"), counted
    as the RTL's ``events`` count them (cycle 0: the first command offered, every command
    offered as soon as the decoder can take it).

    The decoder takes one instruction per cycle into its register and hands it to its queue
    (load, store or execute) the next cycle (instruction 0: cycle 1), waiting while that
    queue's FIFO holds ``queue_depth`` instructions not yet started (a FIFO entry frees the
    cycle after its instruction starts).  Each queue runs its instructions in order, one at a
    time: an instruction starts the cycle after it was handed over, or when the previous one
    in its queue ends, and lasts :meth:`CycleCosts.duration`.  A ``BARRIER`` waits in the
    decoder's register until every earlier instruction has ended; its event carries that
    cycle, and the next instruction is handed over the cycle after."""
    memory_model = memory_model or MemoryModel()
    costs = costs or CycleCosts()
    queue_end = {q: 0 for q in (Queue.LOAD, Queue.STORE, Queue.EXECUTE)}
    waiting = {q: [] for q in queue_end}        # start cycles of dispatched instructions
    busy = {q.value: 0 for q in queue_end}
    timings, events = [], []
    cycle = 1                                   # the decoder's next hand-over cycle
    last_end = 0
    macs = 0
    for index, instr in enumerate(program):
        q = instr.queue
        if q == Queue.BARRIER:
            done = max(cycle, last_end) + costs.duration(instr, params, memory_model)
            events.append((instr.tag, done))
            timings.append(InstructionTiming(index, instr.op, q, cycle, max(cycle, last_end),
                                             done))
            cycle = done + 1
            last_end = max(last_end, done)
            continue
        pending = sorted(s for s in waiting[q] if s >= cycle)
        if len(pending) >= queue_depth:
            cycle = pending[len(pending) - queue_depth] + 1
        waiting[q] = [s for s in waiting[q] if s >= cycle]
        start = max(cycle + 1, queue_end[q])
        end = start + costs.duration(instr, params, memory_model)
        waiting[q].append(start)
        queue_end[q] = end
        busy[q.value] += end - start
        last_end = max(last_end, end)
        if instr.op == Opcode.MATMUL:
            macs += instr.m * instr.n * instr.kb * params.block_size
        timings.append(InstructionTiming(index, instr.op, q, cycle, start, end))
        cycle += 1
    return CycleReport(tuple(timings), max(last_end, cycle), tuple(events), busy, macs,
                       params.multipliers)
