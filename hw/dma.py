"""DMA between the off-chip memory port and the scratchpad (docs/accelerator.md sections 2, 6).

The memory port is two streams: ``mem_req`` ``{write, addr, count, data[port_words]}`` (a read
of ``count`` words at ``addr``, or a write of the first ``count`` words of ``data``) and
``mem_resp`` ``{data[port_words]}`` (read data, in request order). Words move ``port_words`` per
beat; ``port_words`` is at most the scratchpad's ``banks`` so one beat is one scratchpad run.

* :class:`LoadEngine` (``LOAD``): ``segments`` segments of ``words`` consecutive words, DRAM
  ``dram + s * dram_stride`` -> SP ``sp + s * sp_stride``. Reads are issued ahead, up to
  ``outstanding`` beats in flight; responses come back in order, so the scratchpad address of
  each is recomputed by a second walk of the same pattern instead of being queued.
* :class:`StoreEngine` (``STORE``): the same shape from SP to DRAM; scratchpad runs are read
  only against a reserved row of the write buffer, so a stalled port never loses data.
* :class:`MemoryPortArbiter`: the two engines' beats onto ``mem_req``, alternating when both
  wait (a load cannot starve a store or the reverse), holding a choice while its beat waits.

An instruction is complete when its last beat has left (store) or its last response is written
into the scratchpad (load).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.primitives import CreditBuffer, check_positive, parameter_repr
from hw.scratchpad import (RunGenerator, ScratchpadReadPort, ScratchpadWritePort,
                           check_power_of_two)

__all__ = ["dma_command_layout", "read_request_layout", "write_request_layout",
           "memory_request_layout", "memory_response_layout", "LoadEngine", "StoreEngine",
           "MemoryPortArbiter"]


def dma_command_layout(*, sp_address_bits: int, dram_address_bits: int) -> data.StructLayout:
    """A LOAD or STORE as the engines see it (fields of isa.md, already routed)."""
    return data.StructLayout({
        "sp": unsigned(sp_address_bits),
        "dram": unsigned(dram_address_bits),
        "words": unsigned(16),
        "segments": unsigned(16),
        "sp_stride": unsigned(sp_address_bits),
        "dram_stride": unsigned(dram_address_bits),
    })


def read_request_layout(address_bits: int, port_words: int) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(address_bits), "count": range(port_words + 1)})


def write_request_layout(address_bits: int, port_words: int, word) -> data.StructLayout:
    return data.StructLayout({"addr": unsigned(address_bits), "count": range(port_words + 1),
                              "data": data.ArrayLayout(word, port_words)})


def memory_request_layout(address_bits: int, port_words: int, word) -> data.StructLayout:
    """``mem_req``: ``write`` (1: write ``data``; 0: read), ``addr``, ``count`` (1 ..
    ``port_words`` words), ``data`` (ignored by reads)."""
    return data.StructLayout({"write": 1, "addr": unsigned(address_bits),
                              "count": range(port_words + 1),
                              "data": data.ArrayLayout(word, port_words)})


def memory_response_layout(port_words: int, word) -> data.StructLayout:
    """``mem_resp``: a read's words (element k = word ``addr + k``; those >= count unused)."""
    return data.StructLayout({"data": data.ArrayLayout(word, port_words)})


def _check_common(port_words, sp_banks, sp_address_bits, dram_address_bits):
    check_positive("Port words", port_words)
    check_power_of_two("Scratchpad banks", sp_banks)
    if port_words > sp_banks:
        raise ValueError(f"Port words must be at most the scratchpad banks ({sp_banks}), not "
                         f"{port_words}")
    check_positive("Scratchpad address bits", sp_address_bits)
    if not isinstance(dram_address_bits, int) or not 1 <= dram_address_bits <= 32:
        raise ValueError(f"DRAM address bits must be an integer from 1 to 32, not "
                         f"{dram_address_bits!r}")


class _DmaEngine(wiring.Component):
    """What LOAD and STORE share: the arguments, ``command``/``busy``, and the two walks of the
    command's 2-D pattern (one over DRAM addresses, one over scratchpad addresses) that start
    together when a command is taken.

    ``own`` is the subclass's one further argument, ``(message name, attribute, value)``, a
    positive integer checked after the common ones; ``_ports`` gives its other members."""

    def __init__(self, *, port_words: int, sp_banks: int, sp_address_bits: int,
                 dram_address_bits: int, word, own: tuple):
        label, self._own, value = own           # first: repr works on a rejected engine too
        _check_common(port_words, sp_banks, sp_address_bits, dram_address_bits)
        setattr(self, self._own, check_positive(label, value))
        self.port_words, self.sp_banks, self.word = port_words, sp_banks, word
        self.sp_address_bits, self.dram_address_bits = sp_address_bits, dram_address_bits
        super().__init__({
            "command": In(stream.Signature(dma_command_layout(
                sp_address_bits=sp_address_bits, dram_address_bits=dram_address_bits))),
            "busy": Out(1),
            **self._ports(dict(address_bits=sp_address_bits, banks=sp_banks, word=word)),
        })

    def __repr__(self):
        return parameter_repr(self, "port_words", "sp_banks", "sp_address_bits",
                              "dram_address_bits", self._own)

    def _walks(self, m, *sides: str):
        """One run generator per side (``"dram"`` or ``"sp"``), as submodule ``<side>_runs``."""
        bits = {"dram": self.dram_address_bits, "sp": self.sp_address_bits}
        walks = []
        for side in sides:
            m.submodules[f"{side}_runs"] = walk = RunGenerator(address_bits=bits[side],
                                                                max_run=self.port_words)
            walks.append((walk, side))
        return walks

    def _start(self, m, busy, walks):
        """``command`` is taken while not ``busy``; it starts every ``(walk, side)`` of
        ``walks`` on its side's base and stride."""
        cmd = self.command
        m.d.comb += [self.busy.eq(busy), cmd.ready.eq(~busy)]
        start = cmd.valid & cmd.ready
        c = cmd.payload
        bases = {"dram": (c.dram, c.dram_stride), "sp": (c.sp, c.sp_stride)}
        m.d.comb += [walk.start.eq(start) for walk, _ in walks]
        for walk, side in walks:
            base, stride = bases[side]
            m.d.comb += [
                walk.pattern.base.eq(base), walk.pattern.outer.eq(c.segments),
                walk.pattern.outer_stride.eq(stride), walk.pattern.inner.eq(c.words),
                walk.pattern.inner_stride.eq(1),
            ]

    @staticmethod
    def _issue(m, req, runs, allowed):
        """``runs`` onto the request stream ``req`` while ``allowed``; returns the issue strobe."""
        m.d.comb += [
            req.valid.eq(runs.valid & allowed),
            req.payload.addr.eq(runs.payload.addr),
            req.payload.count.eq(runs.payload.count),
            runs.ready.eq(req.ready & allowed),
        ]
        return req.valid & req.ready


class LoadEngine(_DmaEngine):
    """``LOAD``: DRAM -> scratchpad along a 2-D pattern. ``command`` is taken when idle;
    ``busy`` is high until the last response is written."""

    def __init__(self, *, port_words: int, sp_banks: int, sp_address_bits: int,
                 dram_address_bits: int, word, outstanding: int = 16):
        super().__init__(port_words=port_words, sp_banks=sp_banks,
                         sp_address_bits=sp_address_bits, dram_address_bits=dram_address_bits,
                         word=word, own=("Outstanding reads", "outstanding", outstanding))

    def _ports(self, sp_port: dict) -> dict:
        return {
            "read_req": Out(stream.Signature(read_request_layout(self.dram_address_bits,
                                                                 self.port_words))),
            "read_resp": In(stream.Signature(memory_response_layout(self.port_words,
                                                                    self.word))),
            "sp": Out(ScratchpadWritePort(**sp_port)),
        }

    def elaborate(self, platform):
        m = Module()
        walks = self._walks(m, "dram", "sp")
        (source, _), (target, _) = walks
        self._start(m, source.busy | target.busy, walks)

        # -- reads ahead, bounded ----------------------------------------------------------------
        in_flight = Signal(range(self.outstanding + 1))
        issued = self._issue(m, self.read_req, source.runs, in_flight != self.outstanding)

        # -- responses into the scratchpad, addresses from the second walk ------------------------
        resp, write = self.read_resp, self.sp.req
        m.d.comb += [
            write.valid.eq(resp.valid),
            write.payload.addr.eq(target.runs.payload.addr),
            write.payload.count.eq(target.runs.payload.count),
            resp.ready.eq(write.ready),
            target.runs.ready.eq(resp.valid & write.ready),
        ]
        m.d.comb += [write.payload.data[k].eq(resp.payload.data[k])
                     for k in range(self.port_words)]
        written = resp.valid & resp.ready
        m.d.sync += in_flight.eq(in_flight + issued - written)
        return m


class StoreEngine(_DmaEngine):
    """``STORE``: scratchpad -> DRAM along a 2-D pattern. ``command`` is taken when idle;
    ``busy`` is high until the last write beat has left on ``write_req``."""

    def __init__(self, *, port_words: int, sp_banks: int, sp_address_bits: int,
                 dram_address_bits: int, word, buffer_depth: int = 4):
        super().__init__(port_words=port_words, sp_banks=sp_banks,
                         sp_address_bits=sp_address_bits, dram_address_bits=dram_address_bits,
                         word=word, own=("Buffer depth", "buffer_depth", buffer_depth))

    def _ports(self, sp_port: dict) -> dict:
        self.write_layout = write_request_layout(self.dram_address_bits, self.port_words,
                                                 self.word)
        return {"sp": Out(ScratchpadReadPort(**sp_port)),
                "write_req": Out(stream.Signature(self.write_layout))}

    def elaborate(self, platform):
        m = Module()
        walks = self._walks(m, "sp", "dram")
        (source, _), (target, _) = walks
        buf = m.submodules.write_buffer = CreditBuffer(layout=self.write_layout,
                                                       depth=self.buffer_depth)
        wiring.connect(m, buf.read, wiring.flipped(self.write_req))
        self._start(m, source.busy | (buf.credits != self.buffer_depth), walks)

        # -- read a run only against a reserved write-buffer row ---------------------------------
        req = self.sp.req
        self._issue(m, req, source.runs, buf.credits != 0)
        m.d.comb += [
            target.runs.ready.eq(req.valid & req.ready),     # same run boundaries
            buf.reserve.eq(req.valid & req.ready),
        ]
        addr = Signal(self.dram_address_bits, reset_less=True)
        count = Signal(range(self.port_words + 1), reset_less=True)
        m.d.sync += [addr.eq(target.runs.payload.addr), count.eq(target.runs.payload.count)]
        m.d.comb += [
            buf.write.valid.eq(self.sp.resp_valid),
            buf.write.payload.addr.eq(addr),
            buf.write.payload.count.eq(count),
        ]
        m.d.comb += [buf.write.payload.data[k].eq(self.sp.resp[k])
                     for k in range(self.port_words)]
        return m


class MemoryPortArbiter(wiring.Component):
    """Load reads and store writes onto the one ``mem_req`` stream.

    When both wait, the one that did not go last goes (alternation); a beat offered and not yet
    taken keeps its place, as a stream source must."""

    def __init__(self, *, address_bits: int, port_words: int, word):
        check_positive("Address bits", address_bits)
        check_positive("Port words", port_words)
        self.address_bits, self.port_words, self.word = address_bits, port_words, word
        super().__init__({
            "reads": In(stream.Signature(read_request_layout(address_bits, port_words))),
            "writes": In(stream.Signature(write_request_layout(address_bits, port_words,
                                                               word))),
            "mem_req": Out(stream.Signature(memory_request_layout(address_bits, port_words,
                                                                  word))),
        })

    def __repr__(self):
        return parameter_repr(self, "address_bits", "port_words")

    def elaborate(self, platform):
        m = Module()
        rd, wr, out = self.reads, self.writes, self.mem_req
        holding = Signal()          # a beat was offered last cycle and not taken
        held_write = Signal()
        prefer_write = Signal()
        write = Signal()
        m.d.comb += write.eq(Mux(holding, held_write,
                                 Mux(rd.valid & wr.valid, prefer_write, wr.valid)))
        m.d.comb += [
            out.valid.eq(Mux(write, wr.valid, rd.valid)),
            out.payload.write.eq(write),
            out.payload.addr.eq(Mux(write, wr.payload.addr, rd.payload.addr)),
            out.payload.count.eq(Mux(write, wr.payload.count, rd.payload.count)),
            out.payload.data.eq(wr.payload.data),
            rd.ready.eq(~write & out.ready),
            wr.ready.eq(write & out.ready),
        ]
        m.d.sync += [holding.eq(out.valid & ~out.ready), held_write.eq(write)]
        with m.If(out.valid & out.ready):
            m.d.sync += prefer_write.eq(~write)
        return m
