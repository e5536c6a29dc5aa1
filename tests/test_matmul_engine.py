"""MATMUL engine (hw/matmul_engine.py) on a scratchpad and an accumulator memory, against the
ISA-level golden model (software_model.accelerator.execute), in amaranth.sim."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hw.matmul_engine import MatmulEngine, accumulator_row, matmul_command_layout
from hw.scratchpad import Scratchpad, word_layout
from software_model.accelerator import (AcceleratorParams, AcceleratorState, TensorFormat,
                                        execute, pack_words)
from software_model.isa import Instruction


def _params(**kw):
    base = dict(block_size=8, exponent_width=4,
                formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 6), TensorFormat("int", 4)),
                rows=2, cols=2, sub_arrays=2, acc_width=24, acc_lsb=-10, acc_words=64,
                sp_words=256, sp_banks=4)
    base.update(kw)
    return AcceleratorParams(**base)


class _Bench(wiring.Component):
    def __init__(self, p: AcceleratorParams, sp_init, acc_init, pipelined=False):
        self.p = p
        self.word = word_layout(block_size=p.block_size, element_width=p.element_bits,
                                exponent_width=p.exponent_width)
        self.sp_bits = (p.sp_words - 1).bit_length()
        self.engine = MatmulEngine(
            rows=p.rows, cols=p.cols, sub_arrays=p.sub_arrays, block_size=p.block_size,
            element_width=p.element_bits, exponent_width=p.exponent_width,
            acc_width=p.acc_width, acc_lsb=p.acc_lsb, acc_words=p.acc_words,
            sp_address_bits=self.sp_bits, sp_banks=p.sp_banks,
            fraction_bits=tuple(p.fraction_bits(c) for c in range(3)), pipelined=pipelined)
        self.acc = memory.Memory(shape=accumulator_row(cols=p.cols, acc_width=p.acc_width),
                                 depth=p.acc_words, init=acc_init)
        self.sp_init = sp_init
        super().__init__({"command": In(stream.Signature(self.engine.command.payload.shape())),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        p = self.p
        sp = m.submodules.sp = Scratchpad(words=p.sp_words, banks=p.sp_banks, word=self.word,
                                          read_ports=2, write_ports=1, init=self.sp_init)
        eng = m.submodules.engine = self.engine
        acc = m.submodules.acc = self.acc
        rp, wp = acc.read_port(), acc.write_port()
        wiring.connect(m, eng.sp_a, sp.read[0])
        wiring.connect(m, eng.sp_b, sp.read[1])
        m.d.comb += sp.write[0].req.valid.eq(0)
        m.d.comb += [rp.addr.eq(eng.acc_read.addr), rp.en.eq(eng.acc_read.en),
                     eng.acc_read.data.eq(rp.data), wp.addr.eq(eng.acc_write.addr),
                     wp.data.eq(eng.acc_write.data), wp.en.eq(eng.acc_write.en)]
        wiring.connect(m, wiring.flipped(self.command), eng.command)
        m.d.comb += self.busy.eq(eng.busy)
        return m


def _command(instr: Instruction, bench: _Bench):
    layout = matmul_command_layout(sp_address_bits=bench.sp_bits,
                                   acc_address_bits=bench.engine.acc_address_bits)
    return layout.const({
        "d": instr.d, "a": instr.a, "b": instr.b, "m": instr.m, "n": instr.n, "kb": instr.kb,
        "d_stride": instr.d_stride, "a_stride": instr.a_stride, "b_stride": instr.b_stride,
        "a_class": int(instr.a_class), "b_class": int(instr.b_class), "shift": instr.imm,
        "accumulate": int(instr.accumulate)})


def _random_state(p, rng, style="uniform"):
    state = AcceleratorState(p, dram_words=256)
    lo, hi = p.mantissa_range
    if style == "extreme":
        mans = rng.choice([lo + 1, hi, -1, 0, 1, lo], size=(p.sp_words, p.block_size))
        exps = rng.choice([p.emin, p.emax], size=p.sp_words)
    else:
        mans = rng.integers(lo, hi + 1, size=(p.sp_words, p.block_size))
        exps = rng.integers(p.emin, p.emax + 1, size=p.sp_words)
    state.sp.scatter(np.arange(p.sp_words), exps, mans)
    alo, ahi = p.acc_range
    state.acc[:] = rng.integers(alo, ahi + 1, size=state.acc.shape)
    return state


def _random_matmul(p, rng):
    M, N, KB = int(rng.integers(1, 6)), int(rng.integers(1, 6)), int(rng.integers(1, 5))
    a_stride = M + int(rng.integers(0, 3))
    b_stride = N + int(rng.integers(0, 3))
    a = int(rng.integers(0, 40))
    b = 100 + int(rng.integers(0, 40))
    tiles = -(-N // p.cols)
    d_stride = M + int(rng.integers(0, 2))
    d = int(rng.integers(0, p.acc_words - tiles * d_stride))
    return Instruction.make("MATMUL", d=d, a=a, b=b, m=M, n=N, kb=KB, a_stride=a_stride,
                            b_stride=b_stride, d_stride=d_stride,
                            a_class=int(rng.integers(0, 3)), b_class=int(rng.integers(0, 3)),
                            shift=int(rng.choice([0, -3, 5, -20, 20])),
                            accumulate=int(rng.integers(0, 2)))


def _run(p, state, instrs, pipelined=False):
    """Run the engine on ``instrs`` (one after the other) from ``state``; returns (ACC rows,
    cycles per instruction)."""
    sp_init = pack_words(state.sp.exps, state.sp.mans, p)
    sp_init = [int(v) for v in sp_init]
    acc_init = [[int(v) for v in row] for row in state.acc]
    bench = _Bench(p, sp_init, acc_init, pipelined=pipelined)
    cycles = []
    rows_out = []

    async def tb(ctx):
        for instr in instrs:
            ctx.set(bench.command.payload, _command(instr, bench))
            ctx.set(bench.command.valid, 1)
            await ctx.tick().until(bench.command.ready)
            start = 0
            ctx.set(bench.command.valid, 0)
            await ctx.tick()
            while ctx.get(bench.busy):
                await ctx.tick()
                start += 1
                assert start < 20000, "MATMUL engine never finished"
            cycles.append(start + 1)
        for a in range(p.acc_words):
            rows_out.append([int(v) for v in ctx.get(bench.acc.data[a])])

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return np.array(rows_out, np.int64), cycles


@pytest.mark.parametrize("shape", [dict(rows=2, cols=2, sub_arrays=2),
                                   dict(rows=3, cols=4, sub_arrays=1),
                                   dict(rows=4, cols=4, sub_arrays=4, sp_banks=2)])
@pytest.mark.parametrize("pipelined", [False, True])
def test_random_matmuls_match_golden(shape, pipelined):
    """Random MATMULs (accumulating into the ACC, "extreme" operands saturating it) with the
    engine whole and pipelined (PE product register, two-stage write-back add)."""
    p = _params(**shape)
    rng = np.random.default_rng(shape["rows"] * 7 + shape["sub_arrays"])
    for trial in range(3):
        state = _random_state(p, rng, "extreme" if trial == 1 else "uniform")
        instrs = [_random_matmul(p, rng) for _ in range(3)]
        got, _cycles = _run(p, state, instrs, pipelined=pipelined)
        execute(instrs, state)
        assert (got == state.acc).all(), [str(i) for i in instrs]


def test_full_rate_when_operands_fit_in_the_beats():
    """rows = cols = 2, S = 2, 4 banks: a job's 8 operand words take 2 cycles of the 8 beats,
    so jobs are back to back: the instruction takes jobs * B cycles plus the pipeline."""
    p = _params()
    rng = np.random.default_rng(3)
    state = _random_state(p, rng)
    instr = Instruction.make("MATMUL", d=0, a=0, b=64, m=8, n=8, kb=8, a_stride=8, b_stride=8,
                             d_stride=8)
    got, cycles = _run(p, state, [instr])
    execute([instr], state)
    assert (got == state.acc).all()
    jobs = 4 * 4 * 4
    assert jobs * 8 <= cycles[0] <= jobs * 8 + 40, cycles


@pytest.mark.parametrize("kw,message", [
    (dict(acc_words=0), "Accumulator words must be a positive integer, not 0"),
    (dict(sp_banks=3), "Scratchpad banks must be a power of two, not 3"),
    (dict(fraction_bits=(6, 6)), "Fraction bits must be a tuple of 3 integers"),
    (dict(block_size=2, rows=2), "Jobs must be at least 3 cycles apart"),
    (dict(sub_arrays=3), "Sub-array count must be a power of two, not 3"),
    (dict(pipelined=1), "Pipelined must be True or False, not 1"),
])
def test_rejects_bad_arguments(kw, message):
    params = dict(rows=2, cols=2, sub_arrays=2, block_size=8, element_width=8,
                  exponent_width=4, acc_width=24, acc_lsb=-10, acc_words=64, sp_address_bits=8,
                  sp_banks=4, fraction_bits=(6, 6, 2))
    params.update(kw)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MatmulEngine(**params)
