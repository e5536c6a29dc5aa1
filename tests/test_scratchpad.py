"""Banked scratchpad (hw/scratchpad.py): arbitration and data against a Python model, run
generator, reader and writer along 2-D patterns under the shared traffic profiles."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from cosim.traffic import profile as make_profile
from hw.scratchpad import (RunGenerator, Scratchpad, ScratchpadReader, ScratchpadWriter,
                           pattern_layout)

WORD = unsigned(12)


def _sim(dut, bench, *, cycles_hint=None):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _bank_set(addr, count, banks):
    return {(addr + p) % banks for p in range(count)}


@pytest.mark.parametrize("banks", [1, 2, 4])
def test_arbitration_and_data_match_the_model(banks):
    """Random runs from 3 read and 2 write clients, held until granted; every cycle the grants
    equal fixed priority with all-or-nothing, every read returns the words as written at the
    end of its cycle (a write in the same cycle is seen)."""
    words = 32
    sp = Scratchpad(words=words, banks=banks, word=WORD, read_ports=3, write_ports=2)
    rng = np.random.default_rng(banks)
    model = [0] * words
    checked = {"reads": 0, "writes": 0, "stalls": 0}

    async def bench(ctx):
        pending_r = [None] * 3
        pending_w = [None] * 2
        expect_resp = [None] * 3
        for cycle in range(600):
            for k in range(3):
                if pending_r[k] is None and rng.random() < 0.6:
                    pending_r[k] = (int(rng.integers(words)), int(rng.integers(1, banks + 1)))
                port = sp.read[k].req
                ctx.set(port.valid, pending_r[k] is not None)
                if pending_r[k]:
                    ctx.set(port.payload.addr, pending_r[k][0])
                    ctx.set(port.payload.count, pending_r[k][1])
            for k in range(2):
                if pending_w[k] is None and rng.random() < 0.5:
                    cnt = int(rng.integers(1, banks + 1))
                    pending_w[k] = (int(rng.integers(words)), cnt,
                                    [int(v) for v in rng.integers(0, 4096, banks)])
                port = sp.write[k].req
                ctx.set(port.valid, pending_w[k] is not None)
                if pending_w[k]:
                    ctx.set(port.payload.addr, pending_w[k][0])
                    ctx.set(port.payload.count, pending_w[k][1])
                    ctx.set(port.payload.data, pending_w[k][2])
            # responses of last cycle's grants
            for k in range(3):
                got_valid = ctx.get(sp.read[k].resp_valid)
                assert bool(got_valid) == (expect_resp[k] is not None), (cycle, k)
                if expect_resp[k] is not None:
                    got = [int(v) for v in ctx.get(sp.read[k].resp)]
                    cnt = len(expect_resp[k])
                    assert got[:cnt] == expect_resp[k], (cycle, k)
                    checked["reads"] += 1
                    expect_resp[k] = None
            # grants this cycle
            for kind, pend, ports in (("r", pending_r, sp.read), ("w", pending_w, sp.write)):
                taken = set()
                for k, req in enumerate(pend):
                    want = _bank_set(req[0], req[1], banks) if req else set()
                    grant = req is not None and not (want & taken)
                    assert bool(ctx.get(ports[k].req.ready)) == grant, (cycle, kind, k)
                    if req is not None and not grant:
                        checked["stalls"] += 1
                    taken |= want
            # writes land at the edge; a read granted in the same cycle sees them (new word)
            for k, req in enumerate(pending_w):
                if req and ctx.get(sp.write[k].req.ready):
                    for p in range(req[1]):
                        model[(req[0] + p) % words] = req[2][p]
                    checked["writes"] += 1
                    pending_w[k] = None
            for k, req in enumerate(pending_r):
                if req and ctx.get(sp.read[k].req.ready):
                    expect_resp[k] = [model[(req[0] + p) % words] for p in range(req[1])]
                    pending_r[k] = None
            await ctx.tick()

    _sim(sp, bench)
    assert checked["reads"] > 300 and checked["writes"] > 200
    assert checked["stalls"] > (0 if banks > 1 else 100)


def _pattern(base, outer, outer_stride, inner, inner_stride):
    return {"base": base, "outer": outer, "outer_stride": outer_stride, "inner": inner,
            "inner_stride": inner_stride}


def _addresses(p, bits):
    return [(p["base"] + o * p["outer_stride"] + i * p["inner_stride"]) % (1 << bits)
            for o in range(p["outer"]) for i in range(p["inner"])]


@pytest.mark.parametrize("pattern", [
    _pattern(5, 3, 10, 7, 1), _pattern(60, 2, 3, 3, 5), _pattern(0, 1, 0, 1, 1),
    _pattern(0, 0, 1, 4, 1), _pattern(3, 4, 1, 0, 1), _pattern(62, 2, 7, 4, 1)])
def test_run_generator_covers_the_pattern_in_order(pattern):
    gen = RunGenerator(address_bits=6, max_run=4)
    runs = []

    async def bench(ctx):
        ctx.set(gen.pattern, pattern)
        ctx.set(gen.start, 1)
        await ctx.tick()
        ctx.set(gen.start, 0)
        rng = np.random.default_rng(1)
        for _ in range(200):
            ready = rng.random() < 0.6
            ctx.set(gen.runs.ready, ready)
            if ctx.get(gen.runs.valid) and ready:
                runs.append({k: int(v) for k, v in
                             ((n, ctx.get(getattr(gen.runs.payload, n)))
                              for n in ("addr", "count", "end_of_segment", "last"))})
            await ctx.tick()
        assert not ctx.get(gen.busy)

    _sim(gen, bench)
    got = [(r["addr"] + k * (1 if pattern["inner_stride"] == 1 else 0)) % 64
           for r in runs for k in range(r["count"])]
    assert got == _addresses(pattern, 6)
    assert all(1 <= r["count"] <= 4 for r in runs)
    if runs:
        assert [r["last"] for r in runs] == [0] * (len(runs) - 1) + [1]
        assert sum(r["end_of_segment"] for r in runs) == pattern["outer"]


class _CopyBench(wiring.Component):
    """Writer and reader sharing a scratchpad (plus a higher-priority client that steals banks
    with ``steal``): words in along one pattern, out along another."""

    def __init__(self, *, write_pattern, read_pattern, words=64, banks=4,
                 output_register=False):
        self.write_pattern, self.read_pattern = write_pattern, read_pattern
        self.output_register = output_register
        self.words, self.banks = words, banks
        super().__init__({
            "words_in": In(stream.Signature(data.StructLayout({"word": WORD}))),
            "words_out": Out(stream.Signature(data.StructLayout({"word": WORD, "last": 1}))),
            "go_read": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bits = (self.words - 1).bit_length()
        sp = m.submodules.sp = Scratchpad(words=self.words, banks=self.banks, word=WORD,
                                          read_ports=2, write_ports=2)
        wr = m.submodules.writer = ScratchpadWriter(address_bits=bits, banks=self.banks,
                                                    word=WORD)
        rd = m.submodules.reader = ScratchpadReader(address_bits=bits, banks=self.banks,
                                                    word=WORD,
                                                    output_register=self.output_register)
        wiring.connect(m, wr.port, sp.write[1])
        wiring.connect(m, rd.port, sp.read[1])
        # a bank thief of higher priority on both sides, every third cycle
        count = Signal(2)
        m.d.sync += count.eq(count + 1)
        m.d.comb += [sp.read[0].req.valid.eq(count == 0), sp.read[0].req.payload.count.eq(2),
                     sp.write[0].req.valid.eq(0)]
        started = Signal()
        m.d.sync += started.eq(1)
        layout = pattern_layout(bits)
        m.d.comb += [wr.start.eq(~started), wr.pattern.eq(layout.const(self.write_pattern)),
                     rd.pattern.eq(layout.const(self.read_pattern)), rd.start.eq(self.go_read)]
        m.d.comb += [
            wr.words.valid.eq(self.words_in.valid), wr.words.payload.word.eq(
                self.words_in.payload.word), self.words_in.ready.eq(wr.words.ready),
            self.words_out.valid.eq(rd.words.valid),
            self.words_out.payload.word.eq(rd.words.payload.word),
            self.words_out.payload.last.eq(rd.words.payload.last),
            rd.words.ready.eq(self.words_out.ready),
        ]
        return m


@pytest.mark.parametrize("output_register", [False, True])
@pytest.mark.parametrize("profile", ["smooth", "mild", "backpressure", "bursty"])
@pytest.mark.parametrize("write,read", [
    (_pattern(3, 4, 8, 6, 1), _pattern(3, 6, 1, 4, 8)),      # column-major in, row-major out
    (_pattern(10, 2, 20, 9, 1), _pattern(10, 2, 20, 9, 1)),
    (_pattern(0, 8, 1, 4, 16), _pattern(0, 4, 16, 8, 1)),
])
def test_writer_then_reader_round_trip(write, read, profile, output_register):
    """Write words along one pattern, read along another that covers the same addresses (the
    reader's words straight from the run split, or from its output register)."""
    rng = np.random.default_rng(len(profile))
    values = [int(v) for v in rng.integers(0, 4096, write["outer"] * write["inner"])]
    mem = {}
    for a, v in zip(_addresses(write, 6), values):
        mem[a] = v
    expect = [mem[a] for a in _addresses(read, 6)]
    dut = _CopyBench(write_pattern=write, read_pattern=read, output_register=output_register)
    prof = make_profile(profile)
    gap = prof.source.blocked(3, "words_in", 0, 2000)
    stall = prof.sink.blocked(3, "words_out", 0, 2000)
    got = []

    async def bench(ctx):
        sent, offered, wait = 0, False, 0
        for cycle in range(2000):
            if not offered and sent < len(values) and not gap[cycle]:
                offered = True
                ctx.set(dut.words_in.payload.word, values[sent])
            ctx.set(dut.words_in.valid, offered)
            if sent == len(values):
                wait += 1           # the read starts once every write is done
            ctx.set(dut.go_read, wait == 6)
            ctx.set(dut.words_out.ready, not stall[cycle])
            if offered and ctx.get(dut.words_in.ready):
                sent += 1
                offered = False
            if ctx.get(dut.words_out.valid) and not stall[cycle]:
                got.append((int(ctx.get(dut.words_out.payload.word)),
                            int(ctx.get(dut.words_out.payload.last))))
            await ctx.tick()

    _sim(dut, bench)
    assert len(got) == len(expect) > 0
    assert [g[0] for g in got] == expect
    assert [g[1] for g in got] == [0] * (len(expect) - 1) + [1]


@pytest.mark.parametrize("kw,message", [
    (dict(words=48), "Words must be a power of two, not 48"),
    (dict(banks=3), "Banks must be a power of two, not 3"),
    (dict(banks=128), "Banks must be at most words = 64, not 128"),
    (dict(read_ports=0), "Read ports must be a positive integer, not 0"),
    (dict(write_ports=-1), "Write ports must be a positive integer, not -1"),
])
def test_scratchpad_rejects_bad_arguments(kw, message):
    params = dict(words=64, banks=4, word=WORD, read_ports=1, write_ports=1)
    params.update(kw)
    with pytest.raises(ValueError, match=message):
        Scratchpad(**params)


@pytest.mark.parametrize("cls,kw,message", [
    (RunGenerator, dict(address_bits=0, max_run=4), "Address bits must be a positive integer"),
    (RunGenerator, dict(address_bits=6, max_run=0), "Maximum run must be a positive integer"),
    (ScratchpadReader, dict(address_bits=6, banks=3, word=WORD), "Banks must be a power of two"),
    (ScratchpadReader, dict(address_bits=6, banks=4, word=WORD, depth=0),
     "Depth must be a positive integer"),
    (ScratchpadReader, dict(address_bits=6, banks=4, word=WORD, output_register=1),
     "Output register must be True or False, not 1"),
    (ScratchpadWriter, dict(address_bits=0, banks=4, word=WORD),
     "Address bits must be a positive integer"),
    (ScratchpadWriter, dict(address_bits=6, banks=6, word=WORD), "Banks must be a power of two"),
])
def test_access_helpers_reject_bad_arguments(cls, kw, message):
    with pytest.raises(ValueError, match=message):
        cls(**kw)
