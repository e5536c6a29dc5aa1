"""Programs for the accelerator: the fused-attention sequence, tiled linear layers, directed
programs (GEMM, GEMV, decode GEMM, one attention head, LayerNorm, an FFN block) and a seeded
random legal program generator.  Pure Python + numpy (no cocotb, no amaranth): the co-simulation
and the compiler import these.

A :class:`Program` carries its instructions, the DRAM image it starts from and where its results
are; ``program.run(params)`` executes it in the golden model.  Every program here is *race
free*: accesses of different queues to the same words are separated by a BARRIER, so the RTL's
concurrent queues and the golden model's one-after-the-other execution give the same memory
contents (docs/accelerator.md section 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from software_model.accelerator import (AcceleratorParams, AcceleratorState, ExecutionError,
                                        check_instruction, execute, instruction_accesses,
                                        matrix_addresses, pack_words, quantize_matrix)
from software_model.isa import Instruction, Opcode, Queue, TensorClass

__all__ = ["Program", "Region", "SPAllocator", "HazardTracker", "attention_program",
           "attention_head", "linear_program", "gemm_program", "layernorm_program",
           "ffn_program", "random_program", "directed_programs"]

ACT, WGT, KV = TensorClass.ACTIVATION, TensorClass.WEIGHT, TensorClass.KV
_I64 = np.int64


# ============================================================================================
# Programs and memory plans


@dataclass(frozen=True)
class Region:
    """A matrix in a memory: ``rows`` x ``blocks`` words at ``base`` (block ``cb`` of row ``r``
    at ``base + cb * stride + r``), read in class ``cls``."""
    space: str
    base: int
    rows: int
    blocks: int
    stride: int
    cls: TensorClass = ACT

    @property
    def words(self) -> int:
        return self.rows * self.blocks if self.stride == self.rows else \
            (self.blocks - 1) * self.stride + self.rows

    def addresses(self) -> np.ndarray:
        return matrix_addresses(self.base, self.rows, self.blocks, self.stride)


@dataclass
class Program:
    """Instructions plus the DRAM image they start from: ``dram`` lists ``(address, exps (n,),
    mans (n, B))`` runs of consecutive words (every other word starts at zero but is never
    read), ``outputs`` names the DRAM regions holding results, ``inputs`` the real-valued
    matrices the data was made from (for references)."""
    name: str
    instructions: list
    dram_words: int
    dram: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    #: random programs: how many BARRIERs each kind of cross-queue dependency required
    hazard_barriers: dict = field(default_factory=dict)

    def initial_state(self, params: AcceleratorParams) -> AcceleratorState:
        state = AcceleratorState(params, self.dram_words)
        for address, exps, mans in self.dram:
            state.dram.scatter(address + np.arange(len(exps)), exps, mans)
        return state

    def run(self, params: AcceleratorParams) -> AcceleratorState:
        return execute(self.instructions, self.initial_state(params))

    def dram_image(self, params: AcceleratorParams) -> list[tuple[int, list[int]]]:
        """The initial DRAM as ``(address, [word bit vectors])`` runs (``pack_words``): what a
        testbench preloads."""
        return [(address, pack_words(exps, mans, params)) for address, exps, mans in self.dram]

    def read(self, state: AcceleratorState, name: str):
        """``(exps, mans)`` of an output region after a run."""
        r = self.outputs[name]
        mem = state.dram if r.space == "dram" else state.sp
        return mem.read_matrix(r.base, r.rows, r.blocks, r.stride)

    def count(self, op: Opcode) -> int:
        return sum(i.op == op for i in self.instructions)


class SPAllocator:
    """Bump allocator of scratchpad words; raises ``ValueError`` when the program does not fit."""

    def __init__(self, params: AcceleratorParams, start: int = 0):
        self.size = params.sp_words
        self.next = start

    def alloc(self, words: int, what: str) -> int:
        base = self.next
        if base + words > self.size:
            raise ValueError(f"{what} needs {words} scratchpad words at {base}: the scratchpad "
                             f"has {self.size}")
        self.next += words
        return base

    def matrix(self, rows: int, blocks: int, what: str, cls=ACT) -> Region:
        return Region("sp", self.alloc(rows * blocks, what), rows, blocks, rows, cls)


class _DramAllocator:
    def __init__(self, start: int = 0):
        self.next = start

    def matrix(self, rows: int, blocks: int, cls=ACT) -> Region:
        r = Region("dram", self.next, rows, blocks, rows, cls)
        self.next += rows * blocks
        return r


def _put(program: Program, region: Region, exps, mans):
    """Add a matrix to the program's DRAM image (stride = rows: one contiguous run)."""
    assert region.stride == region.rows
    flat_e = np.asarray(exps, _I64).T.reshape(-1)          # block-column major: cb*rows + r
    flat_m = np.asarray(mans, _I64).transpose(1, 0, 2).reshape(-1, mans.shape[-1])
    program.dram.append((region.base, flat_e, flat_m))


def _load(dst: Region, src: Region) -> Instruction:
    """DMA a whole matrix DRAM -> SP (one segment per block column)."""
    return Instruction.make("LOAD", d=dst.base, a=src.base, m=src.rows, n=src.blocks,
                            d_stride=dst.stride, a_stride=src.stride)


def _store(dst: Region, src: Region) -> Instruction:
    return Instruction.make("STORE", d=dst.base, a=src.base, m=src.rows, n=src.blocks,
                            d_stride=dst.stride, a_stride=src.stride)


def _barrier(tag: int = 0) -> Instruction:
    return Instruction.make("BARRIER", tag=((tag + 128) % 256) - 128)


# ============================================================================================
# Fused attention


def attention_program(params: AcceleratorParams, *, q: Region, k: Region, vt: Region,
                      out: Region, mq: int, length: int, d: int, tile: int,
                      sp: SPAllocator, acc_base: int = 0, tag: int = 0) -> list[Instruction]:
    """The fused-attention sequence of docs/accelerator.md section 5 for one head:
    ``softmax(Q K^T) V`` (any ``1/sqrt(d)`` folded into Q or ``vector.softmax.scale``).

    ``q``: ``mq x d`` queries already in SP (activation); ``k``: ``L x d`` keys and ``vt``:
    ``d x L`` values transposed, in DRAM (class kv; ``k.stride >= L`` rounded up to B, ``vt``
    with its token blocks ``vt.stride`` apart); ``out``: where the ``mq x d`` result goes in DRAM
    (activation).  Keys come in tiles of ``tile`` (a multiple of B; the last tile is shortened
    to whole blocks and its padding masked by ``valid``), each tile's K and V^T loaded into one
    of two SP buffers while the other is used (double buffering: "load tile j+1, compute tile
    j, barrier"); scores exist for one tile at a time; the online softmax (VSMAXO) keeps the
    running max and sum, ACCSCALE follows the running max, ACCNORM divides at the end.  ``L`` is
    bounded by DRAM and ``vector.softmax.max_row_blocks``, not by the scratchpad."""
    B, cols = params.block_size, params.cols
    if d % B or tile % B or tile < B:
        raise ValueError(f"d ({d}) and tile ({tile}) must be multiples of the block size {B}")
    if mq > params.softmax_rows:
        raise ValueError(f"mq = {mq} exceeds vector.softmax_rows ({params.softmax_rows})")
    if -(-length // B) > params.softmax.max_row_blocks:
        raise ValueError(f"L = {length} is longer than vector.softmax.max_row_blocks * B "
                         f"({params.softmax.max_row_blocks * B})")
    db, tb = d // B, tile // B
    kbuf = [sp.matrix(tile, db, "K tile buffer", KV) for _ in range(2)]
    vbuf = [sp.matrix(d, tb, "V^T tile buffer", KV) for _ in range(2)]
    s_sp = sp.matrix(mq, tb, "score tile")
    p_sp = sp.matrix(mq, tb, "probability tile")
    o_sp = sp.matrix(mq, db, "output")
    acc_s, acc_o = acc_base, acc_base + mq * -(-tile // cols)
    if acc_o + mq * -(-d // cols) > params.acc_words:
        raise ValueError(f"attention needs {acc_o + mq * -(-d // cols)} ACC words from "
                         f"{acc_base}: the accumulator has {params.acc_words}")
    tiles = []
    for j0 in range(0, length, tile):
        n = min(tile, -(-(length - j0) // B) * B)
        valid = (length - j0) % B if j0 + n >= length else 0
        tiles.append((j0, n, valid))

    def loads(j):
        j0, n, _ = tiles[j]
        b = j % 2
        return [Instruction.make("LOAD", d=kbuf[b].base, a=k.base + j0, m=n, n=db,
                                 d_stride=kbuf[b].stride, a_stride=k.stride),
                Instruction.make("LOAD", d=vbuf[b].base, a=vt.base + (j0 // B) * vt.stride,
                                 m=d, n=n // B, d_stride=vbuf[b].stride, a_stride=vt.stride)]

    prog = loads(0) + [_barrier(tag)]
    for j, (j0, n, valid) in enumerate(tiles):
        b = j % 2
        if j + 1 < len(tiles):
            prog += loads(j + 1)
        prog += [
            Instruction.make("MATMUL", d=acc_s, a=q.base, b=kbuf[b].base, m=mq, n=n, kb=db,
                             d_stride=mq, a_stride=q.stride, b_stride=kbuf[b].stride,
                             a_class=ACT, b_class=KV),
            Instruction.make("ACCST", d=s_sp.base, a=acc_s, m=mq, n=n, d_stride=s_sp.stride,
                             a_stride=mq, d_class=ACT),
            Instruction.make("VSMAXO", d=p_sp.base, a=s_sp.base, m=mq, n=n,
                             d_stride=p_sp.stride, a_stride=s_sp.stride, valid=valid,
                             init=j == 0),
        ]
        if j:
            prog.append(Instruction.make("ACCSCALE", d=acc_o, m=mq, n=d, d_stride=mq))
        prog += [
            Instruction.make("MATMUL", d=acc_o, a=p_sp.base, b=vbuf[b].base, m=mq, n=d,
                             kb=n // B, d_stride=mq, a_stride=p_sp.stride,
                             b_stride=vbuf[b].stride, a_class=ACT, b_class=KV,
                             accumulate=j > 0),
            _barrier(tag + 1 + j),
        ]
    prog += [
        Instruction.make("ACCNORM", d=o_sp.base, a=acc_o, m=mq, n=d, d_stride=o_sp.stride,
                         a_stride=mq, d_class=ACT),
        _barrier(tag + 1 + len(tiles)),
        _store(out, o_sp),
    ]
    return prog


def attention_head(params: AcceleratorParams, *, mq: int, length: int, d: int, tile: int,
                   seed: int = 0, q=None, k=None, v=None, kv_exp: int = 0,
                   name: str = "attention_head") -> Program:
    """A directed program: one attention head on random (or given) ``q (mq, d)``,
    ``k (L, d)``, ``v (L, d)``, quantised into the classes (kv of an ``int`` class uses
    exponent ``kv_exp``).  Outputs: ``out`` (``mq x d``)."""
    rng = np.random.default_rng(seed)
    B = params.block_size
    q = rng.normal(size=(mq, d)) if q is None else np.asarray(q, np.float64)
    k = rng.normal(size=(length, d)) if k is None else np.asarray(k, np.float64)
    v = rng.normal(size=(length, d)) if v is None else np.asarray(v, np.float64)
    lp = -(-length // B) * B
    kp = np.zeros((lp, d))
    kp[:length] = k
    vtp = np.zeros((d, lp))
    vtp[:, :length] = v.T
    dram = _DramAllocator()
    q_d = dram.matrix(mq, d // B, ACT)
    k_d = dram.matrix(lp, d // B, KV)
    vt_d = dram.matrix(d, lp // B, KV)
    out_d = dram.matrix(mq, d // B, ACT)
    exp = kv_exp if params.is_int(KV) else None
    prog = Program(name, [], dram.next, outputs={"out": out_d},
                   inputs={"q": q, "k": k, "v": v})
    _put(prog, q_d, *quantize_matrix(q, params, ACT))
    _put(prog, k_d, *quantize_matrix(kp, params, KV, exp))
    _put(prog, vt_d, *quantize_matrix(vtp, params, KV, exp))
    sp = SPAllocator(params)
    q_sp = sp.matrix(mq, d // B, "queries")
    prog.instructions = [_load(q_sp, q_d)] + attention_program(
        params, q=q_sp, k=k_d, vt=vt_d, out=out_d, mq=mq, length=length, d=d, tile=tile,
        sp=sp)
    return prog


# ============================================================================================
# Linear layers


def linear_program(params: AcceleratorParams, *, x: Region, w: Region, out: Region,
                   sp: SPAllocator, n_tile: Optional[int] = None,
                   k_tile: Optional[int] = None, acc_base: int = 0, out_class=ACT,
                   out_exp: int = 0, shift: int = 0, tag: int = 0) -> list[Instruction]:
    """``out = x . w^T``: ``x`` (``M x K``, in SP), ``w`` (``N x K`` weights, ``W[out, in]``,
    in DRAM), ``out`` (``M x N`` in SP, ``out_class``).  Weight tiles of ``n_tile`` rows (a
    multiple of B) and ``k_tile`` blocks stream through two SP buffers (load step s+1 while
    step s multiplies; a barrier per step); each N tile accumulates its K chunks in ACC
    (``accumulate`` after the first) and is rounded once into ``out`` (ACCST).  Defaults: the
    largest tiles whose two buffers fit the free scratchpad."""
    B, cols = params.block_size, params.cols
    M, KB, N = x.rows, x.blocks, w.rows
    if w.blocks != KB or out.rows != M or out.blocks * B != N:
        raise ValueError(f"shapes do not match: x {M}x{KB * B}, w {N}x{w.blocks * B}, out "
                         f"{out.rows}x{out.blocks * B}")
    free = sp.size - sp.next
    if n_tile is None:
        n_tile = max(B, min(-(-N // B) * B, (free // 2 // max(1, KB)) // B * B))
    if k_tile is None:
        k_tile = max(1, min(KB, free // 2 // n_tile))
    if n_tile % B:
        raise ValueError(f"n_tile ({n_tile}) must be a multiple of the block size {B}")
    wbuf = [sp.alloc(n_tile * k_tile, "weight tile buffer") for _ in range(2)]
    if acc_base + M * -(-n_tile // cols) > params.acc_words:
        raise ValueError(f"an output tile needs {M * -(-n_tile // cols)} ACC words from "
                         f"{acc_base}: the accumulator has {params.acc_words}")
    steps = [(n0, min(n_tile, N - n0), k0, min(k_tile, KB - k0))
             for n0 in range(0, N, n_tile) for k0 in range(0, KB, k_tile)]

    def load(s):
        n0, nt, k0, kt = steps[s]
        return Instruction.make("LOAD", d=wbuf[s % 2], a=w.base + k0 * w.stride + n0, m=nt,
                                n=kt, d_stride=n_tile, a_stride=w.stride)

    prog = [load(0), _barrier(tag)]
    for s, (n0, nt, k0, kt) in enumerate(steps):
        if s + 1 < len(steps):
            prog.append(load(s + 1))
        prog.append(Instruction.make(
            "MATMUL", d=acc_base, a=x.base + k0 * x.stride, b=wbuf[s % 2], m=M, n=nt, kb=kt,
            d_stride=M, a_stride=x.stride, b_stride=n_tile, a_class=x.cls, b_class=w.cls,
            shift=shift, accumulate=k0 > 0))
        if k0 + kt == KB:
            prog.append(Instruction.make(
                "ACCST", d=out.base + (n0 // B) * out.stride, a=acc_base, m=M, n=nt,
                d_stride=out.stride, a_stride=M, d_class=out_class,
                exp=out_exp if params.is_int(out_class) else 0))
        prog.append(_barrier(tag + 1 + s))
    return prog


def gemm_program(params: AcceleratorParams, *, m: int, k: int, n: int, seed: int = 0,
                 n_tile: Optional[int] = None, k_tile: Optional[int] = None,
                 name: Optional[str] = None) -> Program:
    """A directed GEMM ``Y = X W^T``: ``X (m, k)`` activations and ``W (n, k)`` weights from
    DRAM, ``Y (m, n)`` (activation) back to DRAM.  ``m = 1`` is a GEMV, ``m = 4`` a decode
    shape.  Outputs: ``y``."""
    B = params.block_size
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k))
    w = rng.normal(size=(n, k)) / math.sqrt(k)
    dram = _DramAllocator()
    x_d = dram.matrix(m, k // B, ACT)
    w_d = dram.matrix(n, k // B, WGT)
    y_d = dram.matrix(m, n // B, ACT)
    prog = Program(name or f"gemm_{m}x{k}x{n}", [], dram.next, outputs={"y": y_d},
                   inputs={"x": x, "w": w})
    _put(prog, x_d, *quantize_matrix(x, params, ACT))
    _put(prog, w_d, *quantize_matrix(w, params, WGT, 0 if params.is_int(WGT) else None))
    sp = SPAllocator(params)
    x_sp = sp.matrix(m, k // B, "X")
    y_sp = sp.matrix(m, n // B, "Y")
    prog.instructions = [_load(x_sp, x_d)] + linear_program(
        params, x=x_sp, w=w_d, out=y_sp, sp=sp, n_tile=n_tile, k_tile=k_tile) + \
        [_store(y_d, y_sp)]
    return prog


# ============================================================================================
# LayerNorm and an FFN block


def _layernorm_params(params, rng, dram, prog):
    n = params.layernorm.row_length
    gamma = 1 + 0.1 * rng.normal(size=n)
    beta = 0.1 * rng.normal(size=n)
    g_d = dram.matrix(1, 2 * n // params.block_size, ACT)       # gamma blocks, then beta
    _put(prog, g_d, *quantize_matrix(np.concatenate([gamma, beta])[None], params, ACT))
    prog.inputs.update(gamma=gamma, beta=beta)
    return g_d


def layernorm_program(params: AcceleratorParams, *, m: int, seed: int = 0,
                      name: str = "layernorm") -> Program:
    """A directed LayerNorm of ``m`` rows of ``vector.layernorm.row_length``.  Outputs: ``y``."""
    B = params.block_size
    n = params.layernorm.row_length
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n)) * 2 + rng.normal(size=(m, 1))
    dram = _DramAllocator()
    x_d = dram.matrix(m, n // B, ACT)
    y_d = dram.matrix(m, n // B, ACT)
    prog = Program(name, [], 0, outputs={"y": y_d}, inputs={"x": x})
    _put(prog, x_d, *quantize_matrix(x, params, ACT))
    g_d = _layernorm_params(params, rng, dram, prog)
    prog.dram_words = dram.next
    sp = SPAllocator(params)
    x_sp = sp.matrix(m, n // B, "x")
    g_sp = sp.matrix(1, 2 * n // B, "gamma and beta")
    prog.instructions = [
        _load(x_sp, x_d), _load(g_sp, g_d), _barrier(1),
        Instruction.make("VLNORM", d=x_sp.base, a=x_sp.base, b=g_sp.base, m=m, n=n,
                         d_stride=x_sp.stride, a_stride=x_sp.stride),
        _barrier(2), _store(y_d, x_sp)]
    return prog


def ffn_program(params: AcceleratorParams, *, m: int, ffn: int, seed: int = 0,
                name: str = "ffn_block") -> Program:
    """A directed BERT FFN block on ``m`` tokens of ``hidden = vector.layernorm.row_length``:
    ``y = LayerNorm(x + GELU(x W1^T + b1) W2^T + b2)``: two tiled linear layers (weights
    streamed from DRAM), bias adds (VADD broadcast), GELU, the residual add and the LayerNorm.
    Outputs: ``y``."""
    B = params.block_size
    hidden = params.layernorm.row_length
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, hidden))
    w1 = rng.normal(size=(ffn, hidden)) / math.sqrt(hidden)
    b1 = 0.1 * rng.normal(size=ffn)
    w2 = rng.normal(size=(hidden, ffn)) / math.sqrt(ffn)
    b2 = 0.1 * rng.normal(size=hidden)
    dram = _DramAllocator()
    x_d = dram.matrix(m, hidden // B, ACT)
    w1_d = dram.matrix(ffn, hidden // B, WGT)
    w2_d = dram.matrix(hidden, ffn // B, WGT)
    b1_d = dram.matrix(1, ffn // B, ACT)
    b2_d = dram.matrix(1, hidden // B, ACT)
    y_d = dram.matrix(m, hidden // B, ACT)
    prog = Program(name, [], 0, outputs={"y": y_d},
                   inputs={"x": x, "w1": w1, "b1": b1, "w2": w2, "b2": b2})
    wexp = 0 if params.is_int(WGT) else None
    for region, data, cls, exp in ((x_d, x, ACT, None), (w1_d, w1, WGT, wexp),
                                   (w2_d, w2, WGT, wexp), (b1_d, b1[None], ACT, None),
                                   (b2_d, b2[None], ACT, None)):
        _put(prog, region, *quantize_matrix(data, params, cls, exp))
    g_d = _layernorm_params(params, rng, dram, prog)
    prog.dram_words = dram.next
    sp = SPAllocator(params)
    x_sp = sp.matrix(m, hidden // B, "x")
    h_sp = sp.matrix(m, ffn // B, "h")
    y_sp = sp.matrix(m, hidden // B, "y")
    b1_sp = sp.matrix(1, ffn // B, "b1")
    b2_sp = sp.matrix(1, hidden // B, "b2")
    g_sp = sp.matrix(1, 2 * hidden // B, "gamma and beta")
    mark = sp.next
    prog.instructions = [_load(x_sp, x_d), _load(b1_sp, b1_d), _load(b2_sp, b2_d),
                         _load(g_sp, g_d)]
    prog.instructions += linear_program(params, x=x_sp, w=w1_d, out=h_sp, sp=sp, tag=10)
    sp.next = mark                      # the weight buffers are free again after the barrier
    prog.instructions += [
        Instruction.make("VADD", d=h_sp.base, a=h_sp.base, b=b1_sp.base, m=m, n=ffn,
                         d_stride=h_sp.stride, a_stride=h_sp.stride, b_stride=b1_sp.stride,
                         broadcast=True),
        Instruction.make("VGELU", d=h_sp.base, a=h_sp.base, m=m, n=ffn, d_stride=h_sp.stride,
                         a_stride=h_sp.stride)]
    prog.instructions += linear_program(params, x=h_sp, w=w2_d, out=y_sp, sp=sp, tag=60)
    prog.instructions += [
        Instruction.make("VADD", d=y_sp.base, a=y_sp.base, b=b2_sp.base, m=m, n=hidden,
                         d_stride=y_sp.stride, a_stride=y_sp.stride, b_stride=b2_sp.stride,
                         broadcast=True),
        Instruction.make("VADD", d=y_sp.base, a=y_sp.base, b=x_sp.base, m=m, n=hidden,
                         d_stride=y_sp.stride, a_stride=y_sp.stride, b_stride=x_sp.stride),
        Instruction.make("VLNORM", d=y_sp.base, a=y_sp.base, b=g_sp.base, m=m, n=hidden,
                         d_stride=y_sp.stride, a_stride=y_sp.stride),
        _barrier(120), _store(y_d, y_sp)]
    return prog


def directed_programs(params: AcceleratorParams) -> list[Program]:
    """The directed set for a config: a GEMM, a GEMV (M = 1), a decode GEMM (M = 4), one
    attention head with more keys than the scratchpad holds, a LayerNorm and an FFN block,
    sized to the config."""
    B = params.block_size
    hidden = params.layernorm.row_length
    k = max(2 * B, min(4 * B, hidden))
    n = 3 * max(B, params.cols)
    out = [gemm_program(params, m=2 * params.rows + 1, k=k, n=n, seed=1, name="gemm"),
           gemm_program(params, m=1, k=k, n=n, seed=2, name="gemv"),
           gemm_program(params, m=4, k=k, n=n, seed=3, name="gemm_decode"),
           layernorm_program(params, m=3, seed=4)]
    d = 2 * B
    db = d // B
    mq = min(4, params.softmax_rows)
    tile = 4 * B
    # two K and two V^T tile buffers, score and P tiles, queries and output must fit SP and ACC
    while tile > B and (4 * tile * db + 2 * mq * tile // B + 2 * mq * db > params.sp_words or
                        mq * (-(-tile // params.cols) + -(-d // params.cols)) >
                        params.acc_words):
        tile -= B
    # keys and values twice the scratchpad (when the softmax length allows), a ragged end
    length = min(params.softmax.max_row_blocks * B, params.sp_words // db + 3) - 3
    out.append(attention_head(params, mq=mq, length=length, d=d, tile=tile, seed=5))
    for ffn in (4 * hidden, 2 * hidden, hidden):
        try:
            out.append(ffn_program(params, m=2, ffn=ffn, seed=6))
            break
        except ValueError:
            continue
    return out


# ============================================================================================
# Hazards between queues


class HazardTracker:
    """What each queue may still be doing since the last BARRIER, per memory word: a new
    instruction that writes a word another queue reads or writes, or reads a word another queue
    writes, must wait for a BARRIER (RAW, WAR, WAW across queues)."""

    def __init__(self, sizes: dict):
        self.sizes = sizes
        self.clear()
        self.counts = {"RAW": 0, "WAR": 0, "WAW": 0}

    def clear(self):
        self.masks = {(q, s, w): np.zeros(self.sizes[s], bool)
                      for q in (Queue.LOAD, Queue.STORE, Queue.EXECUTE)
                      for s in self.sizes for w in (False, True)}

    def conflicts(self, queue: Queue, accesses) -> set:
        kinds = set()
        for acc in accesses:
            if acc.space not in self.sizes:
                continue
            for q in (Queue.LOAD, Queue.STORE, Queue.EXECUTE):
                if q == queue:
                    continue
                writes = self.masks[(q, acc.space, True)][acc.addresses]
                reads = self.masks[(q, acc.space, False)][acc.addresses]
                if acc.write and writes.any():
                    kinds.add("WAW")
                if acc.write and reads.any():
                    kinds.add("WAR")
                if not acc.write and writes.any():
                    kinds.add("RAW")
        return kinds

    def add(self, queue: Queue, accesses):
        for acc in accesses:
            if acc.space in self.sizes:
                self.masks[(queue, acc.space, acc.write)][acc.addresses] = True


def race_free(program: Sequence[Instruction], params: AcceleratorParams,
              dram_words: int) -> bool:
    """Whether every cross-queue dependency of ``program`` is separated by a BARRIER."""
    tracker = HazardTracker({"sp": params.sp_words, "dram": dram_words})
    for instr in program:
        if instr.op == Opcode.BARRIER:
            tracker.clear()
            continue
        acc = instruction_accesses(instr, params)
        if tracker.conflicts(instr.queue, acc):
            return False
        tracker.add(instr.queue, acc)
    return True


__all__ += ["race_free"]


# ============================================================================================
# Random legal programs


class _RandomBuilder:
    """Builds a random legal program: shapes, addresses and strides drawn within the config,
    operands often placed on words another queue touched since the last barrier (so RAW, WAR
    and WAW dependencies between queues happen), BARRIERs inserted exactly where a dependency
    needs one, the online-softmax state tracked so every instruction is executable."""

    def __init__(self, params: AcceleratorParams, rng: np.random.Generator, dram_words: int,
                 dram_in: int):
        self.p = params
        self.rng = rng
        self.prog: list[Instruction] = []
        self.dram_words = dram_words
        self.dram_init = np.zeros(dram_words, bool)
        self.dram_init[:dram_in] = True
        self.hazards = HazardTracker({"sp": params.sp_words, "dram": dram_words})
        self.recent: list = []               # (queue, space, addresses) since the last barrier
        self.sm_rows = 0                     # online-softmax rows (0: no state yet)
        self.sm_blocks = 0
        self.tags = 0
        self.barriers_for = {"RAW": 0, "WAR": 0, "WAW": 0}

    # -- helpers -----------------------------------------------------------------------------
    def ri(self, lo, hi):
        return int(self.rng.integers(lo, hi + 1))

    def chance(self, p):
        return self.rng.random() < p

    def barrier(self):
        self.tags += 1
        self.prog.append(_barrier(self.tags))
        self.hazards.clear()
        self.recent.clear()

    def emit(self, instr: Instruction) -> bool:
        """Append ``instr`` if legal (check_instruction), with a BARRIER first when it depends
        on another queue's in-flight access."""
        try:
            check_instruction(instr, self.p, self.dram_words)
        except ExecutionError:
            return False
        accesses = instruction_accesses(instr, self.p)
        for acc in accesses:
            if acc.space == "dram" and not acc.write and not self.dram_init[acc.addresses].all():
                return False
        kinds = self.hazards.conflicts(instr.queue, accesses)
        if kinds:
            for k in kinds:
                self.barriers_for[k] += 1
            self.barrier()
        self.prog.append(instr)
        self.hazards.add(instr.queue, accesses)
        for acc in accesses:
            if acc.space in ("sp", "dram"):
                self.recent.append((instr.queue, acc.space, acc.addresses))
                if acc.space == "dram" and acc.write:
                    self.dram_init[acc.addresses] = True
        return True

    def base(self, space: str, footprint: int, queue: Queue) -> int:
        """A base address with room for ``footprint`` words; often on words another queue
        touched since the last barrier (a deliberate dependency)."""
        size = self.p.sp_words if space == "sp" else self.dram_words
        hi = max(0, size - footprint)
        others = [a for q, s, a in self.recent if s == space and q != queue]
        if others and self.chance(0.5):
            addrs = others[self.ri(0, len(others) - 1)]
            target = int(addrs[self.ri(0, len(addrs) - 1)])
            return min(hi, max(0, target - self.ri(0, footprint - 1)))
        return self.ri(0, hi)

    def matrix(self, space, rows, blocks, queue, *, stride=None):
        stride = stride if stride is not None else rows + (self.ri(0, 3) if self.chance(0.5)
                                                           else 0)
        if blocks == 1 and self.chance(0.3):
            stride = self.ri(0, 2 * rows)              # unused with one block: any value
        footprint = (blocks - 1) * stride + rows
        return self.base(space, footprint, queue), stride

    def cls(self):
        return TensorClass(self.ri(0, 2))

    def exp_for(self, cls):
        return self.ri(self.p.emin, self.p.emax) if self.p.is_int(cls) else 0

    # -- instructions ------------------------------------------------------------------------
    def load(self):
        m, n = self.ri(1, 3 * self.p.port_words + 1), self.ri(1, 4)
        d_stride = m + self.ri(0, 2) if n > 1 else self.ri(0, 9)
        a_stride = m + self.ri(0, 5) if self.chance(0.7) else self.ri(0, m)
        src_footprint = (n - 1) * a_stride + m
        init = np.flatnonzero(self.dram_init)
        if self.chance(0.5):
            a = self.base("dram", src_footprint, Queue.LOAD)
        else:
            a = int(init[self.ri(0, len(init) - 1)])
        d = self.base("sp", (n - 1) * d_stride + m, Queue.LOAD)
        return Instruction.make("LOAD", d=d, a=a, m=m, n=n, d_stride=d_stride,
                                a_stride=a_stride)

    def store(self):
        m, n = self.ri(1, 3 * self.p.port_words + 1), self.ri(1, 4)
        d_stride = m + self.ri(0, 4) if n > 1 else self.ri(0, 9)
        a_stride = m + self.ri(0, 3) if self.chance(0.6) else self.ri(0, m)
        a = self.base("sp", (n - 1) * a_stride + m, Queue.STORE)
        d = self.base("dram", (n - 1) * d_stride + m, Queue.STORE)
        return Instruction.make("STORE", d=d, a=a, m=m, n=n, d_stride=d_stride,
                                a_stride=a_stride)

    def matmul(self):
        p = self.p
        m, n = self.ri(1, 2 * p.rows + 1), self.ri(1, 2 * p.cols + 1)
        kb = self.ri(1, 2 * p.sub_arrays + 1)
        a, a_stride = self.matrix("sp", m, kb, Queue.EXECUTE)
        b, b_stride = self.matrix("sp", n, kb, Queue.EXECUTE)
        tiles = -(-n // p.cols)
        d_stride = m + self.ri(0, 2) if tiles > 1 else self.ri(0, 8)
        d = self.ri(0, max(0, p.acc_words - ((tiles - 1) * d_stride + m)))
        return Instruction.make("MATMUL", d=d, a=a, b=b, m=m, n=n, kb=kb, d_stride=d_stride,
                                a_stride=a_stride, b_stride=b_stride, shift=self.ri(-3, 3),
                                accumulate=self.chance(0.5), a_class=self.cls(),
                                b_class=self.cls())

    def _acc_region(self, m, n):
        tiles = -(-n // self.p.cols)
        stride = m + self.ri(0, 2) if tiles > 1 else self.ri(0, 8)
        return self.ri(0, max(0, self.p.acc_words - ((tiles - 1) * stride + m))), stride

    def accst(self):
        B = self.p.block_size
        m, nb = self.ri(1, 6), self.ri(1, 3)
        a, a_stride = self._acc_region(m, nb * B)
        d, d_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        c = self.cls()
        return Instruction.make("ACCST", d=d, a=a, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride, d_class=c, exp=self.exp_for(c))

    def accscale(self):
        if not self.sm_rows:
            return None
        m, n = self.ri(1, self.sm_rows), self.ri(1, 2 * self.p.cols + 1)
        d, d_stride = self._acc_region(m, n)
        return Instruction.make("ACCSCALE", d=d, m=m, n=n, d_stride=d_stride)

    def accnorm(self):
        if not self.sm_rows:
            return None
        B = self.p.block_size
        m, nb = self.ri(1, self.sm_rows), self.ri(1, 3)
        a, a_stride = self._acc_region(m, nb * B)
        d, d_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        c = self.cls()
        return Instruction.make("ACCNORM", d=d, a=a, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride, d_class=c, exp=self.exp_for(c))

    def _vector_dst(self, a, a_stride, m, nb):
        """In place half the time, else a fresh region (legality is checked by emit)."""
        if self.chance(0.5):
            return a, a_stride
        return self.matrix("sp", m, nb, Queue.EXECUTE)

    def vadd(self):
        B = self.p.block_size
        m, nb = self.ri(1, 5), self.ri(1, 3)
        a, a_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        broadcast = self.chance(0.4)
        b, b_stride = self.matrix("sp", 1 if broadcast else m, nb, Queue.EXECUTE)
        d, d_stride = self._vector_dst(a, a_stride, m, nb)
        c = self.cls()
        return Instruction.make("VADD", d=d, a=a, b=b, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride, b_stride=b_stride, broadcast=broadcast,
                                a_class=self.cls(), b_class=self.cls(), d_class=c,
                                exp=self.exp_for(c))

    def vcast(self):
        B = self.p.block_size
        m, nb = self.ri(1, 5), self.ri(1, 3)
        a, a_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        d, d_stride = self._vector_dst(a, a_stride, m, nb)
        c = self.cls()
        return Instruction.make("VCAST", d=d, a=a, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride, a_class=self.cls(), d_class=c,
                                exp=self.exp_for(c))

    def vgelu(self):
        B = self.p.block_size
        m, nb = self.ri(1, 5), self.ri(1, 3)
        a, a_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        d, d_stride = self._vector_dst(a, a_stride, m, nb)
        return Instruction.make("VGELU", d=d, a=a, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride)

    def vlnorm(self):
        n = self.p.layernorm.row_length
        nb = n // self.p.block_size
        m = self.ri(1, 3)
        a, a_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        b = self.base("sp", 2 * nb, Queue.EXECUTE)
        d, d_stride = self._vector_dst(a, a_stride, m, nb)
        return Instruction.make("VLNORM", d=d, a=a, b=b, m=m, n=n, d_stride=d_stride,
                                a_stride=a_stride)

    def vsmax(self):
        B = self.p.block_size
        m = self.ri(1, 4)
        nb = self.ri(1, min(4, self.p.softmax.max_row_blocks))
        a, a_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        d, d_stride = self._vector_dst(a, a_stride, m, nb)
        return Instruction.make("VSMAX", d=d, a=a, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride, valid=self.ri(0, B))

    def vsmaxo(self):
        p, B = self.p, self.p.block_size
        left = p.softmax.max_row_blocks - self.sm_blocks
        init = not self.sm_rows or left < 1 or self.chance(0.3)
        m = self.ri(1, min(4, p.softmax_rows)) if init else self.sm_rows
        nb = self.ri(1, min(3, p.softmax.max_row_blocks if init else left))
        a, a_stride = self.matrix("sp", m, nb, Queue.EXECUTE)
        d, d_stride = self._vector_dst(a, a_stride, m, nb)
        return Instruction.make("VSMAXO", d=d, a=a, m=m, n=nb * B, d_stride=d_stride,
                                a_stride=a_stride, valid=self.ri(0, B), init=init)

    def one(self, op: Opcode, tries: int = 30) -> bool:
        maker = getattr(self, op.name.lower())
        for _ in range(tries):
            instr = maker()
            if instr is None:
                return False
            if self.emit(instr):
                if op == Opcode.VSMAXO:
                    if instr.init:
                        self.sm_rows, self.sm_blocks = instr.m, 0
                    self.sm_blocks += instr.n // self.p.block_size
                return True
        return False


_BODY_OPS = [op for op in Opcode if op != Opcode.BARRIER]


def random_program(params: AcceleratorParams, seed: int, *, length: int = 80,
                   dram_words: Optional[int] = None) -> Program:
    """A seeded random legal program.  It loads the whole scratchpad from random DRAM words and
    fills the whole accumulator (so nothing later reads an unwritten word), then runs every
    instruction at least once and ``length`` random ones (shapes, strides, classes,
    immediates, addresses within the config; operands often on words another queue touched, so
    cross-queue RAW/WAR/WAW dependencies occur, each separated by the BARRIER the builder
    inserts), and ends by storing the whole scratchpad to DRAM and then every accumulator
    word, rounded into SP words by ACCST, so comparing DRAM compares everything.
    ``program.hazard_barriers`` counts the barriers each dependency kind required."""
    p = params
    rng = np.random.default_rng(seed)
    B = p.block_size
    dram_in = 2 * p.sp_words
    acc_sp_words = _acc_dump_words(p)
    out_sp, out_acc = dram_in + p.sp_words, dram_in + 2 * p.sp_words
    dram_words = dram_words or out_acc + acc_sp_words
    if dram_words < out_acc + acc_sp_words:
        raise ValueError(f"dram_words must be at least {out_acc + acc_sp_words}")
    build = _RandomBuilder(p, rng, out_sp, dram_in)   # the body never touches the dumps
    prog = Program(f"random_{seed}", [], dram_words)
    lo, hi = p.mantissa_range
    exps = rng.integers(max(p.emin, -6), min(p.emax, 4) + 1, size=dram_in)
    mans = rng.integers(lo, hi + 1, size=(dram_in, B))
    mans[rng.random(mans.shape) < 0.15] = 0
    mans[rng.random(dram_in) < 0.05] = 0                           # all-zero words
    prog.dram.append((0, exps, mans))
    # 1. the whole scratchpad from DRAM, in random pieces
    at = 0
    while at < p.sp_words:
        m = min(p.sp_words - at, build.ri(1, 4) * max(1, p.sp_words // 8))
        segs = build.ri(1, 4)
        seg = -(-m // segs)
        n = -(-m // seg)
        if (n - 1) * seg + seg > p.sp_words - at:
            n, seg = 1, m
        build.emit(Instruction.make("LOAD", d=at, a=build.ri(0, dram_in - n * seg), m=seg,
                                    n=n, d_stride=seg, a_stride=seg))
        at += n * seg
    build.barrier()
    # 2. every accumulator word, in chunks no longer than the scratchpad
    at = 0
    while at < p.acc_words:
        m = min(p.acc_words - at, p.sp_words, 65535)
        build.emit(Instruction.make("MATMUL", d=at, a=0, b=0, m=m, n=min(p.cols, 1 << 15),
                                    kb=1, d_stride=m, a_stride=m, b_stride=1))
        at += m
    # 3. every instruction once, in random order, then random ones
    order = [_BODY_OPS[i] for i in rng.permutation(len(_BODY_OPS))]
    order.sort(key=lambda op: op in (Opcode.ACCSCALE, Opcode.ACCNORM))   # after a VSMAXO
    for op in order:
        if not build.one(op):
            raise RuntimeError(f"could not place {op.name} in random program {seed}")
    weights = np.array([3, 2, 4, 3, 1, 1, 2, 2, 2, 1, 1, 2], float)
    assert len(weights) == len(_BODY_OPS)
    for _ in range(length):
        op = _BODY_OPS[int(rng.choice(len(_BODY_OPS), p=weights / weights.sum()))]
        if build.chance(0.04):
            build.barrier()
        build.one(op)
    # 4. dump: the whole scratchpad, then the accumulator through ACCST
    build.barrier()
    build.prog.append(Instruction.make("STORE", d=out_sp, a=0, m=p.sp_words, n=1)
                      if p.sp_words <= 65535 else
                      Instruction.make("STORE", d=out_sp, a=0, m=1024, n=p.sp_words // 1024,
                                       d_stride=1024, a_stride=1024))
    build.barrier()
    build.prog += _acc_dump(p, out_acc)
    prog.instructions = build.prog
    prog.outputs = {"sp": Region("dram", out_sp, p.sp_words, 1, p.sp_words),
                    "acc": Region("dram", out_acc, acc_sp_words, 1, acc_sp_words)}
    prog.hazard_barriers = dict(build.barriers_for)
    return prog


def _acc_dump_shape(p: AcceleratorParams):
    """ACC read as an ``R x (tiles * cols)`` matrix (ACC word ``t * R + r``) with
    ``tiles * cols`` a multiple of B: ``(R, tiles)``."""
    tiles = max(1, p.block_size // p.cols)
    return p.acc_words // tiles, tiles


def _acc_dump_words(p: AcceleratorParams) -> int:
    rows, tiles = _acc_dump_shape(p)
    return rows * tiles * p.cols // p.block_size


def _acc_dump(p: AcceleratorParams, dram_base: int) -> list[Instruction]:
    """Every ACC word (but a remainder smaller than one dump row), rounded into activation
    words in SP by ACCST (in pieces the scratchpad holds), each piece stored to DRAM."""
    rows, tiles = _acc_dump_shape(p)
    nb = tiles * p.cols // p.block_size
    out = []
    piece = max(1, min(rows, p.sp_words // nb, 65535))
    for r0 in range(0, rows, piece):
        r = min(piece, rows - r0)
        # ACC rows r0.. of the dump matrix: word t * rows + r0 + i
        out.append(Instruction.make("ACCST", d=0, a=r0, m=r, n=tiles * p.cols, d_stride=r,
                                    a_stride=rows, d_class=ACT))
        out.append(_barrier(-1))
        out.append(Instruction.make("STORE", d=dram_base + r0 * nb, a=0, m=r * nb, n=1))
        out.append(_barrier(-2))
    return out


# ============================================================================================
# Error of the fused attention against float64


def attention_error_bound(params: AcceleratorParams, q, k, v, *, tile: int):
    """``(reference, bound)``, both ``(mq, d)``: float64 attention ``softmax(scale Q K^T) V``
    of the exact (already quantised) values ``q (mq, d)``, ``k (L, d)``, ``v (L, d)``, and an
    elementwise bound on ``|fused - reference|`` for :func:`attention_program` with key tiles
    of ``tile``, valid while no accumulator number saturates and
    ``|scale * score * log2 e| < 2^range_bits`` (docs/accelerator.md section 5):

    * scores: each block sum floors to ``2^acc_lsb`` (``d/B`` of them) and ACCST rounds into
      the activation format (one ulp of the block), so each score the softmax sees is within
      ``Delta_r`` of the exact one and ``q_i = softmax(scale x)_i`` within a factor
      ``E = e^(2 scale Delta_r)`` of ``p_i``;
    * softmax: ``softmax_error_bound(online=True)`` (``rho``, ``alpha'`` without its output
      rounding) bounds the normalised terms ``t_i R 2^-(Fr+lo)`` against ``q_i``;
    * P: VSMAXO rounds each tile's terms into activation blocks (half an ulp of the block per
      element, one more half ulp for the one that may saturate; an ulp is at most ``2^-f_a``
      of the block's largest weight, or ``2^(emin - f_a)``), and the final shift floors (one
      unit of ``2^-Fp``); ``R 2^-(Fr+lo) <= 2^(1-Fp) (1 + recip_relative)`` because
      ``l >= 2^(Fp-1)``;
    * accumulator: ``L/B`` block sums floored to ``2^acc_lsb`` and one floor per ACCSCALE,
      times the normalisation;
    * output: ACCNORM's rounding, one ulp of the output block.
    """
    from software_model.mxint_softmax import (mxint_softmax, softmax_error_bound,
                                              softmax_error_terms)
    spec = params.softmax
    B = params.block_size
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    mq, d = q.shape
    length = k.shape[0]
    f_a = params.fraction_bits(ACT)
    fp = spec.exp_bits
    s = q @ k.T
    z = spec.scale * s
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ref = p @ v
    # scores: floors of the d/B block sums, then one ulp of their activation block
    floors = (d // B) * 2.0 ** params.acc_lsb
    nbl = -(-length // B)
    sp_ = np.zeros((mq, nbl * B))
    sp_[:, :length] = np.abs(s) + floors
    top = sp_.reshape(mq, nbl, B).max(axis=-1)
    e_blk = np.clip(np.floor(np.log2(np.maximum(top, 2.0 ** params.emin))), params.emin,
                    params.emax)
    delta = (floors + 2.0 ** (e_blk - f_a)).max(axis=1)               # (mq,)
    E = np.exp(2 * spec.scale * delta)[:, None]
    # the unit's own bound (rho, alpha' = alpha without its output rounding), rows of L keys
    dummy = mxint_softmax(np.zeros((1, nbl), np.int64), np.zeros((1, nbl, B), np.int64), spec)
    rho, alpha = softmax_error_bound(spec, dummy, online=True)
    alpha_p = float(np.max(alpha - np.repeat(np.ldexp(1.0, dummy.exponents - spec.out_fmt
                                                      .fraction_bits), B, axis=-1)))
    r2 = 2.0 ** (1 - fp) * (1 + softmax_error_terms(spec).recip_relative)
    yb = p * E * (1 + rho) + alpha_p                                   # bound on each weight
    ypad = np.zeros((mq, nbl * B))
    ypad[:, :length] = yb
    blk_max = ypad.reshape(mq, nbl, B).max(axis=-1)                   # (mq, nbl)
    vpad = np.zeros((nbl * B, d))
    vpad[:length] = np.abs(v)
    vblk = vpad.reshape(nbl, B, d)
    # P's rounding: half an ulp of its block per element, one more half ulp for the element
    # that may saturate; an ulp is at most 2^-f_a of the block's largest weight (before the
    # final shift, so bounded through yb + r2) or 2^(emin - f_a + Fp) units of 2^-Fp
    half_ulp = 2.0 ** (-f_a - 1) * (blk_max + r2) + r2 * 2.0 ** (params.emin - f_a + fp - 1)
    p_round = np.einsum("rb,bd->rd", half_ulp, vblk.sum(axis=1) + vblk.max(axis=1))
    w_err = p * (E - 1) + p * E * rho + alpha_p + r2          # + the final shift's floor
    n_tiles = -(-length // tile)
    err = w_err @ np.abs(v) + p_round + 2.0 ** fp * r2 * (nbl + n_tiles) * 2.0 ** params.acc_lsb
    # ACCNORM's rounding: one ulp of the output block
    dpad = -(-d // B) * B
    big = np.zeros((mq, dpad))
    big[:, :d] = np.abs(ref) + err
    e_out = np.clip(np.floor(np.log2(np.maximum(big.reshape(mq, -1, B).max(axis=-1),
                                                2.0 ** params.emin))), params.emin,
                    params.emax)
    ulp = np.repeat(2.0 ** (e_out - f_a), B, axis=-1)[:, :d]
    return ref, err + ulp


__all__ += ["attention_error_bound"]
