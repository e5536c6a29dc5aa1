"""Execute unit (hw/accelerator.py: matrix and vector engines on a shared ACC memory) on a
scratchpad, against the ISA-level golden model, in amaranth.sim: every execute instruction."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.accelerator import ExecuteUnit
from hw.instruction import INSTRUCTION
from hw.scratchpad import Scratchpad
from software_model.accelerator import (AcceleratorParams, AcceleratorState, TensorFormat,
                                        execute, pack_words)
from software_model.isa import Instruction, encode

SMALL = dict(block_size=8, exponent_width=5,
             formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 4), TensorFormat("int", 6)),
             rows=2, cols=2, sub_arrays=2, acc_width=28, acc_lsb=-12, acc_words=64,
             sp_words=256, sp_banks=4, softmax_rows=8)


def unit_parameters(p: AcceleratorParams, **extra) -> dict:
    return dict(block_size=p.block_size, exponent_width=p.exponent_width,
                class_widths=tuple(f.element_width for f in p.formats),
                class_types=tuple(f.type for f in p.formats), rows=p.rows, cols=p.cols,
                sub_arrays=p.sub_arrays, acc_width=p.acc_width, acc_lsb=p.acc_lsb,
                acc_words=p.acc_words, sp_address_bits=(p.sp_words - 1).bit_length(),
                sp_banks=p.sp_banks, softmax_rows=p.softmax_rows, softmax=p.softmax,
                layernorm=p.layernorm, gelu=p.gelu, **extra)


class _Bench(wiring.Component):
    def __init__(self, p, sp_init, acc_init):
        self.unit = ExecuteUnit(**unit_parameters(p, acc_init=acc_init))
        self.p, self.sp_init = p, sp_init
        super().__init__({"command": In(stream.Signature(INSTRUCTION)), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        p = self.p
        sp = m.submodules.sp = Scratchpad(words=p.sp_words, banks=p.sp_banks,
                                          word=self.unit.word, read_ports=2, write_ports=1,
                                          init=self.sp_init)
        self.sp = sp
        unit = m.submodules.unit = self.unit
        wiring.connect(m, unit.sp_a, sp.read[0])
        wiring.connect(m, unit.sp_b, sp.read[1])
        wiring.connect(m, unit.sp_d, sp.write[0])
        wiring.connect(m, wiring.flipped(self.command), unit.command)
        m.d.comb += self.busy.eq(unit.busy)
        return m


def run_unit(p, state, program, *, max_cycles=100_000):
    """Run ``program`` (execute instructions) one after the other on the RTL from ``state``;
    returns (SP words, ACC rows, cycles per instruction)."""
    sp_init = [int(v) for v in pack_words(state.sp.exps, state.sp.mans, p)]
    acc_init = [[int(v) for v in row] for row in state.acc]
    bench = _Bench(p, sp_init, acc_init)
    sp_words, acc_rows, cycles = [], [], []

    async def tb(ctx):
        for instr in program:
            ctx.set(bench.command.payload.as_value(), encode(instr))
            ctx.set(bench.command.valid, 1)
            await ctx.tick().until(bench.command.ready)
            ctx.set(bench.command.valid, 0)
            n = 0
            await ctx.tick()
            while ctx.get(bench.busy):
                await ctx.tick()
                n += 1
                assert n < max_cycles, f"{instr} never finished"
            cycles.append(n + 1)
        for a in range(p.acc_words):
            acc_rows.append([int(v) for v in ctx.get(bench.unit.acc.data[a])])
        banks = bench.sp
        for a in range(p.sp_words):
            mem = banks.bank_memories[a % p.sp_banks]
            sp_words.append(ctx.get(mem.data[a // p.sp_banks].as_value()))

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return sp_words, np.array(acc_rows, np.int64), cycles


def random_state(p, rng, style="uniform"):
    state = AcceleratorState(p, dram_words=256)
    lo, hi = p.mantissa_range
    if style == "extreme":
        mans = rng.choice([lo + 1, hi, -1, 0, 1, lo], size=(p.sp_words, p.block_size))
        exps = rng.choice([p.emin, p.emax, 0], size=p.sp_words)
    else:
        mans = rng.integers(lo, hi + 1, size=(p.sp_words, p.block_size))
        exps = rng.integers(p.emin, p.emax + 1, size=p.sp_words)
    state.sp.scatter(np.arange(p.sp_words), exps, mans)
    alo, ahi = p.acc_range
    if style == "extreme":
        state.acc[:] = rng.choice([alo, ahi, 0, -1, 1], size=state.acc.shape)
    else:
        state.acc[:] = rng.integers(alo, ahi + 1, size=state.acc.shape) >> \
            rng.integers(0, p.acc_width, size=state.acc.shape)
    return state


def _exp_for(p, cls, rng):
    return int(rng.integers(p.emin, p.emax + 1)) if p.is_int(cls) else 0


def random_instruction(op, p, rng, dst=160):
    """A legal ``op`` on the small SP: sources below word 160, the destination a 32-word
    region from ``dst``."""
    B = p.block_size
    M = int(rng.integers(1, 6))
    nb = int(rng.integers(1, 4))
    cls = lambda: int(rng.integers(0, 3))       # noqa: E731
    if op == "VCAST":
        d_class = cls()
        return Instruction.make("VCAST", d=dst, a=int(rng.integers(0, 40)), m=M, n=nb * B,
                                d_stride=M + 1, a_stride=M + int(rng.integers(0, 3)),
                                a_class=cls(), d_class=d_class, exp=_exp_for(p, d_class, rng))
    if op == "VADD":
        d_class = cls()
        bcast = int(rng.integers(0, 2))
        return Instruction.make("VADD", d=dst, a=int(rng.integers(0, 30)),
                                b=80 + int(rng.integers(0, 20)), m=M, n=nb * B,
                                d_stride=M, a_stride=M + int(rng.integers(0, 3)),
                                b_stride=(1 if bcast else M) + int(rng.integers(0, 2)),
                                a_class=cls(), b_class=cls(), d_class=d_class,
                                exp=_exp_for(p, d_class, rng), broadcast=bcast)
    if op == "ACCST":
        d_class = cls()
        tiles = -(-nb * B // p.cols)
        a_stride = M + int(rng.integers(0, 2))
        return Instruction.make("ACCST", d=dst, a=int(rng.integers(0, p.acc_words -
                                                                   tiles * a_stride + 1)),
                                m=M, n=nb * B, d_stride=M + 2, a_stride=a_stride,
                                d_class=d_class, exp=_exp_for(p, d_class, rng))
    if op == "VGELU":
        return Instruction.make("VGELU", d=dst, a=int(rng.integers(0, 40)), m=M, n=nb * B,
                                d_stride=M, a_stride=M + 1)
    if op == "VSMAX":       # up to 4 blocks a row: the running sum's rescales matter
        nb = int(rng.integers(2, 5))
        return Instruction.make("VSMAX", d=dst, a=int(rng.integers(0, 40)), m=M, n=nb * B,
                                d_stride=M, a_stride=M + 2, valid=int(rng.integers(0, B + 1)))
    if op == "VLNORM":
        nb = p.layernorm.row_length // B
        M = min(M, 32 // nb)
        return Instruction.make("VLNORM", d=dst, a=int(rng.integers(0, 20)), b=100, m=M,
                                n=nb * B, d_stride=M, a_stride=M)
    if op == "MATMUL":
        N, KB = int(rng.integers(1, 6)), int(rng.integers(1, 4))
        tiles = -(-N // p.cols)
        return Instruction.make("MATMUL", d=int(rng.integers(0, p.acc_words - tiles * M + 1)),
                                a=int(rng.integers(0, 40)), b=80, m=M, n=N, kb=KB,
                                a_stride=M, b_stride=N + 1, d_stride=M,
                                a_class=cls(), b_class=cls(), shift=int(rng.integers(-8, 8)),
                                accumulate=int(rng.integers(0, 2)))
    raise ValueError(op)


def _compare(p, state, program, got_sp, got_acc):
    execute(program, state)
    want_sp = [int(v) for v in pack_words(state.sp.exps, state.sp.mans, p)]
    bad = [a for a in range(p.sp_words) if got_sp[a] != want_sp[a]]
    assert not bad, (f"SP word {bad[0]}: expected {want_sp[bad[0]]:#x}, got {got_sp[bad[0]]:#x}"
                     f" ({len(bad)} differ); program:\n" + "\n".join(map(str, program)))
    bad_acc = np.argwhere(got_acc != state.acc)
    assert not len(bad_acc), (f"ACC {bad_acc[0]}: program:\n" + "\n".join(map(str, program)))


OPS = ("VCAST", "VADD", "ACCST", "VGELU", "VSMAX", "VLNORM", "MATMUL")


@pytest.mark.parametrize("style", ["narrow", "uniform", "extreme"])
def test_every_instruction_matches_golden(style):
    """Every execute instruction twice, in one simulation, each writing its own 32-word region
    (a later one cannot hide an earlier one's result). ``narrow`` exponents make rows whose
    maximum is not in their first block common (VSMAX's running sum rescales)."""
    p = AcceleratorParams(**{**SMALL, "sp_words": 1024})
    rng = np.random.default_rng(len(style))
    state = random_state(p, rng, "extreme" if style == "extreme" else "uniform")
    if style == "narrow":
        state.sp.exps[:] = rng.integers(-2, 3, p.sp_words)
    program = [random_instruction(op, p, rng, dst=512 + 32 * k)
               for k, op in enumerate(OPS * 2)]
    got_sp, got_acc, _ = run_unit(p, state, program)
    _compare(p, state, program, got_sp, got_acc)


def _online_program(p, rng, M, nb, valid):
    I = Instruction.make
    B = p.block_size
    tiles = -(-6 // p.cols)
    return [
        I("VSMAXO", d=160, a=0, m=M, n=nb * B, d_stride=M, a_stride=M, valid=valid, init=1),
        I("ACCSCALE", d=0, m=M, n=5, d_stride=M),      # a partial last column tile
        I("VSMAXO", d=192, a=40, m=M, n=nb * B, d_stride=M, a_stride=M, valid=valid),
        I("ACCSCALE", d=0, m=M, n=5, d_stride=M),
        I("VSMAXO", d=224, a=80, m=M, n=nb * B, d_stride=M, a_stride=M + 1, valid=0),
        I("ACCNORM", d=140, a=0, m=M, n=2 * B, a_stride=M, d_stride=M),
        I("ACCNORM", d=120, a=M * tiles, m=M, n=B, a_stride=M, d_stride=M,
          d_class="kv", exp=int(rng.integers(-3, 3))),
    ]


def test_online_softmax_sequences_match_golden():
    """Three attention-like sequences one after the other (VSMAXO with init, two more steps
    with rescales, ACCSCALE of an ACC tile after each, ACCNORM into an mxint and an int class),
    then init steps after a longer state (a second head must not add the old running sum:
    found by a random program, VSMAXO m=3, then VSMAXO m=1 init=1, then ACCNORM): the state
    (running max, sum, rescale, reciprocal) lives in the RTL between instructions as in the
    golden model."""
    p = AcceleratorParams(**{**SMALL, "sp_words": 1024})
    rng = np.random.default_rng(5)
    state = random_state(p, rng)
    state.sp.exps[:] = rng.integers(-2, 3, p.sp_words)
    state.sp.exps[40:80] += 3           # the second tile's scores are larger: rescales > 0
    program = []
    for k, (M, nb, valid) in enumerate([(3, 2, 5), (5, 1, 0), (1, 2, 8)]):
        program += [i.replace(d=i.d + 256 * k if i.op.name != "ACCSCALE" else i.d)
                    for i in _online_program(p, rng, M, nb, valid)]
    I = Instruction.make
    program += [
        I("VSMAXO", d=800, a=0, m=3, n=16, d_stride=3, a_stride=3, init=1),
        I("VSMAXO", d=832, a=20, m=3, n=16, d_stride=3, a_stride=3),
        I("VSMAXO", d=864, a=40, m=1, n=8, d_stride=1, a_stride=1, init=1),
        I("VSMAXO", d=870, a=60, m=1, n=16, d_stride=1, a_stride=2, valid=4, init=1),
        I("ACCNORM", d=880, a=10, m=1, n=16, d_stride=3, a_stride=3),
    ]
    got_sp, got_acc, _ = run_unit(p, state, program)
    _compare(p, state, program, got_sp, got_acc)
