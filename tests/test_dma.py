"""DMA engines (hw/dma.py) on a scratchpad and the DRAM model (cosim/dram.py): loads and stores
of 2-D patterns give the memory contents a plain copy gives, under memory stall profiles."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from cosim.dram import DramModel, DramParams, simulate_with_dram
from hw.dma import (LoadEngine, MemoryPortArbiter, StoreEngine, dma_command_layout,
                    memory_request_layout, memory_response_layout)
from hw.scratchpad import Scratchpad

WORD = unsigned(10)
SP_BITS, DRAM_BITS = 6, 9


class _DmaBench(wiring.Component):
    def __init__(self, *, port_words, banks=4, outstanding=4):
        self.port_words, self.banks, self.outstanding = port_words, banks, outstanding
        cmd = dma_command_layout(sp_address_bits=SP_BITS, dram_address_bits=DRAM_BITS)
        super().__init__({
            "loads": In(stream.Signature(cmd)),
            "stores": In(stream.Signature(cmd)),
            "busy": Out(1),
            "mem_req": Out(stream.Signature(memory_request_layout(DRAM_BITS, port_words,
                                                                  WORD))),
            "mem_resp": In(stream.Signature(memory_response_layout(port_words, WORD))),
        })

    def elaborate(self, platform):
        m = Module()
        sp = m.submodules.sp = Scratchpad(words=1 << SP_BITS, banks=self.banks, word=WORD,
                                          read_ports=1, write_ports=1)
        kw = dict(port_words=self.port_words, sp_banks=self.banks, sp_address_bits=SP_BITS,
                  dram_address_bits=DRAM_BITS, word=WORD)
        load = m.submodules.load = LoadEngine(outstanding=self.outstanding, **kw)
        store = m.submodules.store = StoreEngine(**kw)
        arb = m.submodules.arbiter = MemoryPortArbiter(address_bits=DRAM_BITS,
                                                       port_words=self.port_words, word=WORD)
        wiring.connect(m, load.sp, sp.write[0])
        wiring.connect(m, store.sp, sp.read[0])
        wiring.connect(m, load.read_req, arb.reads)
        wiring.connect(m, store.write_req, arb.writes)
        wiring.connect(m, arb.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), load.read_resp)
        # the test's program is ordered: the store starts once the load has finished
        loaded = Signal()
        with m.If(self.loads.valid & self.loads.ready):
            m.d.sync += loaded.eq(1)
        go = loaded & ~load.busy
        wiring.connect(m, wiring.flipped(self.loads), load.command)
        m.d.comb += [
            store.command.valid.eq(self.stores.valid & go),
            store.command.payload.eq(self.stores.payload),
            self.stores.ready.eq(store.command.ready & go),
            self.busy.eq(load.busy | store.busy | ~loaded | self.stores.valid),
        ]
        return m


def _cmd(sp, dram, words, segments, sp_stride, dram_stride):
    layout = dma_command_layout(sp_address_bits=SP_BITS, dram_address_bits=DRAM_BITS)
    return layout.const({"sp": sp, "dram": dram, "words": words, "segments": segments,
                         "sp_stride": sp_stride, "dram_stride": dram_stride}).as_value().value


@pytest.mark.parametrize("profile", ["smooth", "mild", "backpressure", "bursty", "starved"])
@pytest.mark.parametrize("port_words,latency,wpc", [(1, 3, 1), (2, 9, 1), (4, 5, 2), (3, 1, 4)])
def test_load_then_store_copies_a_tile(port_words, latency, wpc, profile):
    """LOAD a 5-segment tile of 7 words (strided in DRAM) into SP, STORE it back elsewhere with
    another stride; DRAM must then hold what a plain copy gives and nothing else changed."""
    rng = np.random.default_rng([port_words, latency])
    dram = DramModel(words=1 << DRAM_BITS, port_words=port_words,
                     params=DramParams(latency=latency, words_per_cycle=wpc), profile=profile,
                     seed=2)
    init = [int(v) for v in rng.integers(0, 1 << 10, 1 << DRAM_BITS)]
    dram.load(0, init)
    expect = list(init)
    # load 5 x 7 from DRAM 3 + 11 s into SP 2 + 8 s; store SP back to DRAM 300 + 9 s
    for s in range(5):
        for k in range(7):
            expect[300 + 9 * s + k] = init[3 + 11 * s + k]
    dut = _DmaBench(port_words=port_words)
    _, cycles = simulate_with_dram(
        dut, dram,
        inputs={"loads": [_cmd(2, 3, 7, 5, 8, 11)], "stores": [_cmd(2, 300, 7, 5, 8, 9)]},
        done=lambda ctx, got, cycle: not ctx.get(dut.busy) and cycle > 5, max_cycles=5000)
    assert dram.dump() == expect
    assert dram.reads == 5 * -(-7 // port_words) and dram.writes == dram.reads


def test_empty_transfers_finish_at_once():
    dram = DramModel(words=1 << DRAM_BITS, port_words=2)
    dut = _DmaBench(port_words=2)
    _, cycles = simulate_with_dram(
        dut, dram, inputs={"loads": [_cmd(0, 0, 0, 3, 1, 1)], "stores": [_cmd(0, 0, 4, 0, 1, 1)]},
        done=lambda ctx, got, cycle: not ctx.get(dut.busy) and cycle > 3, max_cycles=100)
    assert dram.reads == dram.writes == 0 and cycles < 12


@pytest.mark.parametrize("cls", [LoadEngine, StoreEngine])
@pytest.mark.parametrize("kw,message", [
    (dict(port_words=0), "Port words must be a positive integer, not 0"),
    (dict(sp_banks=3), "Scratchpad banks must be a power of two, not 3"),
    (dict(port_words=8), r"Port words must be at most the scratchpad banks \(4\), not 8"),
    (dict(sp_address_bits=0), "Scratchpad address bits must be a positive integer, not 0"),
    (dict(dram_address_bits=33), "DRAM address bits must be an integer from 1 to 32, not 33"),
])
def test_engines_reject_bad_arguments(cls, kw, message):
    params = dict(port_words=2, sp_banks=4, sp_address_bits=6, dram_address_bits=9, word=WORD)
    params.update(kw)
    with pytest.raises(ValueError, match=message):
        cls(**params)


@pytest.mark.parametrize("cls,own", [(LoadEngine, "outstanding"), (StoreEngine, "buffer_depth")])
def test_engine_repr_survives_a_rejected_constructor(cls, own):
    """amaranth reprs an unused elaboratable when it is collected, also one whose constructor
    raised: the repr must not fail on the missing attributes."""
    engine = cls.__new__(cls)
    with pytest.raises(ValueError):
        engine.__init__(port_words=0, sp_banks=4, sp_address_bits=6, dram_address_bits=9,
                        word=WORD)
    assert repr(engine) == (f"{cls.__name__}(port_words='?', sp_banks='?', "
                            f"sp_address_bits='?', dram_address_bits='?', {own}='?')")


def test_engine_specific_rejections():
    kw = dict(port_words=2, sp_banks=4, sp_address_bits=6, dram_address_bits=9, word=WORD)
    with pytest.raises(ValueError, match="Outstanding reads must be a positive integer, not 0"):
        LoadEngine(outstanding=0, **kw)
    with pytest.raises(ValueError, match="Buffer depth must be a positive integer, not 0"):
        StoreEngine(buffer_depth=0, **kw)
    with pytest.raises(ValueError, match="Port words must be a positive integer, not 0"):
        MemoryPortArbiter(address_bits=9, port_words=0, word=WORD)


def test_dram_model_rejects_bad_parameters():
    with pytest.raises(ValueError, match="DRAM latency must be a positive integer, not 0"):
        DramParams(latency=0)
    with pytest.raises(ValueError, match="DRAM words per cycle must be a positive integer"):
        DramParams(words_per_cycle=0)
