"""Program builder and tiled GEMMs for the ``accelerator`` kind.

:class:`Builder` collects a program: its instructions (each annotated with the layer and phase
that emitted it), the DRAM layout (every tensor's :class:`~software_model.accelerator_programs.Region`
and what it holds) and the DRAM image the host preloads.  It knows the accelerator's parameters
and the memory model the program is tuned for.

GEMMs (``ACC = A . B`` with ``B`` given as ``B^T``, docs/accelerator.md section 3) are emitted
as *steps*: one tile of the streamed operand per step, loaded into one of two scratchpad buffers
while the other is multiplied ("load tile s+1, compute tile s, barrier", section 7), the finished
output tile requantized by ACCST with its epilogue in the execute queue and stored behind the
next step.  :func:`choose_tiles` picks the tile sizes that minimise the cycle model's estimate
among those whose buffers fit the scratchpad and whose output tile fits the accumulator.

Hazards between queues are ordered by barriers only (section 7): every step ends with one, and
every phase ends with ``BARRIER; STOREs; BARRIER`` so the next phase may reuse any scratchpad
word.  :func:`software_model.accelerator_programs.race_free` checks compiled programs in the
tests.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import numpy as np

from software_model.accelerator import (AcceleratorParams, CycleCosts, MemoryModel,
                                        quantize_matrix)
from software_model.accelerator_programs import Region, SPAllocator
from software_model.isa import Instruction, Opcode, TensorClass

__all__ = ["ACT", "WGT", "KV", "CompileError", "DramTensor", "Builder", "TilePlan",
           "choose_tiles", "emit_gemm", "divisors", "int_exponent"]

ACT, WGT, KV = TensorClass.ACTIVATION, TensorClass.WEIGHT, TensorClass.KV
_I64 = np.int64
#: cycles a barrier adds to a step (its own cycle plus the decoder's restart)
BARRIER_OVERHEAD = 2


class CompileError(ValueError):
    """The model cannot be lowered onto this config (names what does not fit and why)."""


@dataclass
class DramTensor:
    """One tensor in DRAM: ``region`` (matrix layout, stride = rows), what writes it
    (``host``: the DRAM image; ``program``: STOREs, checked against the golden model), the layer
    (``-1``: embeddings) and the rows that carry data (``valid_rows``; padded key rows stay 0)."""
    name: str
    region: Region
    writer: str
    layer: int = -1
    valid_rows: Optional[int] = None

    def to_json(self) -> dict:
        r = self.region
        return {"name": self.name, "base": r.base, "rows": r.rows, "blocks": r.blocks,
                "stride": r.stride, "words": r.rows * r.blocks, "class": r.cls.key,
                "writer": self.writer, "layer": self.layer,
                "valid_rows": self.valid_rows if self.valid_rows is not None else r.rows}


def int_exponent(max_abs: float, params: AcceleratorParams, cls) -> int:
    """The smallest exponent of an ``int`` class whose mantissas reach ``max_abs``
    (``mantissa_max * 2^(e - f) >= max_abs``), clamped to the exponent field."""
    fmt = params.fmt(cls)
    if not max_abs > 0:
        return params.emin
    e = math.ceil(math.log2(max_abs / fmt.mantissa_max)) + fmt.fraction_bits
    return int(min(max(e, params.emin), params.emax))


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class Builder:
    """Instructions, annotations, DRAM layout and image of one program (see module docstring)."""

    def __init__(self, params: AcceleratorParams, memory: MemoryModel):
        self.p = params
        self.memory = memory
        self.costs = CycleCosts()
        self.instructions: list[Instruction] = []
        self.where: list[tuple[int, str]] = []        # (layer, phase) of each instruction
        self.context = (-1, "setup")
        self.tensors: dict[str, DramTensor] = {}
        self.image: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.dram_next = 0
        self.barriers = 0
        self.sp_peak = 0
        self.acc_peak = 0
        self.plans: list[dict] = []
        self._cost_cache: dict = {}

    # -- annotations -------------------------------------------------------------------------
    @contextmanager
    def phase(self, layer: int, name: str):
        saved = self.context
        self.context = (layer, name)
        try:
            yield
        finally:
            self.context = saved

    def emit(self, *instrs: Instruction) -> None:
        for i in instrs:
            self.instructions.append(i)
            self.where.append(self.context)

    def barrier(self) -> None:
        tag = self.barriers % 256
        self.emit(Instruction.make("BARRIER", tag=tag - 256 if tag > 127 else tag))
        self.barriers += 1

    def note_sp(self, sp: SPAllocator) -> None:
        self.sp_peak = max(self.sp_peak, sp.next)

    def note_acc(self, words: int) -> None:
        self.acc_peak = max(self.acc_peak, words)

    # -- DRAM --------------------------------------------------------------------------------
    def dram(self, name: str, rows: int, blocks: int, cls=ACT, *, layer: int = -1,
             writer: str = "program", valid_rows: Optional[int] = None) -> Region:
        """Allocate a ``rows x blocks`` matrix (stride = rows) and record it."""
        if name in self.tensors:
            raise ValueError(f"DRAM tensor {name!r} allocated twice")
        region = Region("dram", self.dram_next, rows, blocks, rows, cls)
        self.dram_next += rows * blocks
        if self.dram_next > 1 << self.p.address_bits:
            raise CompileError(
                f"the DRAM layout needs {self.dram_next} words (reached at {name}): "
                f"memory.address_bits = {self.p.address_bits} addresses "
                f"{1 << self.p.address_bits}")
        self.tensors[name] = DramTensor(name, region, writer, layer, valid_rows)
        return region

    def put(self, region: Region, exps, mans) -> None:
        """Add ``(exps (rows, blocks), mans (rows, blocks, B))`` to the image at ``region``."""
        exps = np.asarray(exps, _I64)
        mans = np.asarray(mans, _I64)
        if exps.shape != (region.rows, region.blocks):
            raise ValueError(f"data {exps.shape} does not match region {region}")
        flat_e = exps.T.reshape(-1)
        flat_m = mans.transpose(1, 0, 2).reshape(-1, self.p.block_size)
        self.image.append((region.base, flat_e, flat_m))

    def put_real(self, region: Region, x, cls=None, exp: Optional[int] = None) -> None:
        cls = region.cls if cls is None else cls
        self.put(region, *quantize_matrix(x, self.p, cls, exp))

    def put_zero(self, region: Region) -> None:
        n = region.rows * region.blocks
        self.image.append((region.base, np.zeros(n, _I64),
                           np.zeros((n, self.p.block_size), _I64)))

    # -- instruction helpers -----------------------------------------------------------------
    def load(self, dst: Region, src: Region, *, rows: Optional[int] = None,
             row0: int = 0) -> None:
        """DMA ``rows`` rows (default all of ``dst``) of ``src`` starting at ``row0`` into
        ``dst``: one segment per block column."""
        rows = dst.rows if rows is None else rows
        self.emit(Instruction.make("LOAD", d=dst.base, a=src.base + row0, m=rows,
                                   n=dst.blocks, d_stride=dst.stride, a_stride=src.stride))

    def store(self, dst: Region, src: Region, *, rows: Optional[int] = None,
              row0: int = 0, src_row0: int = 0, block0: int = 0) -> Instruction:
        rows = src.rows if rows is None else rows
        return Instruction.make("STORE", d=dst.base + block0 * dst.stride + row0,
                                a=src.base + src_row0, m=rows, n=src.blocks,
                                d_stride=dst.stride, a_stride=src.stride)

    # -- cycle estimates (docs/isa.md "Cycle costs") -----------------------------------------
    def cost(self, op: str, m: int = 1, n: int = 1, kb: int = 1, a: int = 0, b: int = 0,
             a_stride: Optional[int] = None, b_stride: Optional[int] = None) -> int:
        """Duration of one instruction in its queue (``CycleCosts``, docs/isa.md), cached.
        MATMUL's depends on the operands' banks: give their addresses and strides (default:
        at 0, stride = rows)."""
        a_stride = m if a_stride is None else a_stride
        b_stride = n if b_stride is None else b_stride
        banks = self.p.sp_banks
        key = (op, m, n, kb, a % banks, b % banks, a_stride % banks, b_stride % banks)
        got = self._cost_cache.get(key)
        if got is None:
            instr = SimpleNamespace(m=m, n=n, kb=kb, a=a, b=b, a_stride=a_stride,
                                    b_stride=b_stride)
            got = self._cost_cache[key] = getattr(self.costs, op.lower())(instr, self.p,
                                                                         self.memory)
        return got


@dataclass(frozen=True)
class TilePlan:
    """Tiles of one GEMM: the resident operand's rows ``m`` (all at once), the streamed
    operand's rows per tile ``nt`` and blocks per tile ``kt``; ``sp_words`` its buffers,
    ``acc_words`` the output tile, ``cycles`` the estimate."""
    m: int
    nt: int
    kt: int
    sp_words: int
    acc_words: int
    cycles: int
    steps: int

    def to_json(self) -> dict:
        return {"m": self.m, "nt": self.nt, "kt": self.kt, "sp_words": self.sp_words,
                "acc_words": self.acc_words, "estimated_cycles": self.cycles,
                "steps": self.steps}


def _tile_sizes(total: int, unit: int) -> list[int]:
    """Candidate tile lengths: multiples of ``unit`` dividing ``total`` (a multiple of it), and
    ``total`` split into 1..8 near-equal parts rounded up to ``unit``."""
    out = {d * unit for d in divisors(total // unit)}
    for parts in range(1, 9):
        out.add(-(-(-(-total // parts)) // unit) * unit)
    return sorted(v for v in out if unit <= v <= total)


def choose_tiles(b: Builder, *, n: int, kb: int, sp_free: int, acc_free: int,
                 sp_words: Callable[[int, int], int], acc_words: Callable[[int], int],
                 compute: Callable[[int, int, bool], int], resident_rows: int,
                 nt_unit: Optional[int] = None, what: str = "GEMM") -> TilePlan:
    """The tile sizes ``(nt, kt)`` of a GEMM whose streamed operand (``n`` rows of ``kb``
    blocks, in DRAM) comes in ``nt x kt`` tiles, minimising the estimate among those that fit:
    ``sp_words(nt, kt)`` scratchpad words for its buffers (at most ``sp_free``),
    ``acc_words(nt)`` ACC words for the output tile (at most ``acc_free``).  A step costs
    ``max(compute(nw, kw, last), load)`` plus a barrier, ``compute`` being the execute queue's
    cycles for a streamed tile of ``nw x kw`` (``last``: the tile finishes an output tile, so
    its epilogue runs too) and ``load`` the tile's DMA (``CycleCosts.load`` on the builder's
    memory model).  Raises :class:`CompileError` when nothing fits."""
    p = b.p
    nt_unit = nt_unit or p.block_size
    best = None
    n_round = -(-n // nt_unit) * nt_unit
    for nt in _tile_sizes(n_round, nt_unit):
        acc = acc_words(nt)
        if acc > acc_free:
            continue
        for kt in _tile_sizes(kb, 1):
            sp = sp_words(nt, kt)
            if sp > sp_free:
                continue
            nk = -(-kb // kt)
            k_steps = [(kt, False)] * (nk - 1) + [(kb - (nk - 1) * kt, True)]
            n_tiles = [(nt, n // nt)] + ([(n % nt, 1)] if n % nt else [])
            cycles = b.cost("LOAD", m=min(nt, n), n=min(kt, kb)) + BARRIER_OVERHEAD
            steps = 0
            for nw, count in n_tiles:
                for kw, last in k_steps:
                    ld = b.cost("LOAD", m=nw, n=kw)
                    cycles += count * (max(compute(nw, kw, last), ld) + BARRIER_OVERHEAD)
                    steps += count
            if best is None or cycles < best.cycles or \
                    (cycles == best.cycles and sp < best.sp_words):
                best = TilePlan(resident_rows, nt, kt, sp, acc, cycles, steps)
    if best is None:
        raise CompileError(
            f"{what}: no tiling fits: {sp_free} free scratchpad words (the smallest tiles need "
            f"{sp_words(nt_unit, 1)}), {acc_free} free ACC words (the smallest output tile "
            f"needs {acc_words(nt_unit)})")
    return best


def emit_gemm(b: Builder, *, a: Region, w: Region, m: int, n: int, kb: int, plan: TilePlan,
              wbufs: Sequence[int], acc_base: int,
              on_tile: Callable[[int, int, int], tuple[list, list]],
              a_class=ACT, w_class=WGT) -> None:
    """``ACC = A . W^T`` tile by tile: ``a`` the resident ``m x kb`` operand in SP (rows from
    its base), ``w`` the streamed ``n x kb`` operand in DRAM, streamed in ``plan.nt x plan.kt``
    tiles through ``wbufs`` (two SP bases of ``nt * kt`` words, stride ``nt``).  After the last
    K step of output columns ``n0 .. n0+nw-1``, ``on_tile(n0, nw, index)`` returns the execute
    queue's work on the finished ACC tile (at ``acc_base``, stride ``m``) and the stores that
    follow it (issued after the step's barrier, overlapping the next step).  Ends with a
    barrier after the last stores."""
    nt, kt = plan.nt, plan.kt
    steps = [(n0, min(nt, n - n0), k0, min(kt, kb - k0))
             for n0 in range(0, n, nt) for k0 in range(0, kb, kt)]

    def load(s):
        n0, nw, k0, kw = steps[s]
        return Instruction.make("LOAD", d=wbufs[s % 2], a=w.base + k0 * w.stride + n0, m=nw,
                                n=kw, d_stride=nt, a_stride=w.stride)

    b.emit(load(0))
    b.barrier()
    after: list = []
    tile = 0
    for s, (n0, nw, k0, kw) in enumerate(steps):
        if s + 1 < len(steps):
            b.emit(load(s + 1))
        b.emit(Instruction.make(
            "MATMUL", d=acc_base, a=a.base + k0 * a.stride, b=wbufs[s % 2], m=m, n=nw, kb=kw,
            d_stride=m, a_stride=a.stride, b_stride=nt, a_class=a_class, b_class=w_class,
            accumulate=k0 > 0))
        after: list = []
        if k0 + kw >= kb:
            compute, after = on_tile(n0, nw, tile)
            b.emit(*compute)
            tile += 1
        b.barrier()
        b.emit(*after)
    if after:
        b.barrier()
