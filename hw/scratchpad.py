"""On-chip memories of the accelerator and the run-based access they all share
(docs/accelerator.md section 2).

* :func:`word_layout`: one memory word, an MXInt block of ``B`` elements plus its exponent.
* :class:`Scratchpad`: ``banks`` simple dual-port banks (word ``a`` in bank ``a mod banks``);
  clients read and write **runs** of up to ``banks`` consecutive words per cycle, one word per
  bank, so an operand tile of consecutive rows (the matrix layout puts a block column's rows in
  consecutive words) moves ``banks`` words per cycle. Each bank port goes to the client of
  highest priority that wants it (port index order: the accelerator passes execute, then store,
  then load); a client is granted all of its banks or none, and waits (``ready`` low) otherwise.
* :class:`RunGenerator`: walks a 2-D address pattern (``outer`` segments ``outer_stride`` apart,
  ``inner`` words ``inner_stride`` apart) as runs of at most ``max_run`` consecutive words; DMA
  and every vector stream use it for both memories.
* :class:`ScratchpadReader`: a pattern's words as a stream, one per cycle (runs read ahead into
  a credit-reserved buffer, so the bank arbitration never loses data).
* :class:`ScratchpadWriter`: a stream of words written along a pattern, packed into runs.

Read latency is one cycle: a request granted in cycle T returns its data (``resp.valid``) in
cycle T + 1, element ``k`` being word ``addr + k``. A client must take it then (readers reserve
buffer room before they ask).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.primitives import (CreditBuffer, carry_select_add, check_flag, check_positive,
                           parameter_repr)

__all__ = ["word_layout", "run_layout", "check_power_of_two", "ScratchpadReadPort",
           "ScratchpadWritePort", "Scratchpad", "RunGenerator", "pattern_layout",
           "ScratchpadReader", "ScratchpadWriter", "rotate"]


def check_power_of_two(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two, not {value!r}")
    return value


def word_layout(*, block_size: int, element_width: int, exponent_width: int) -> data.StructLayout:
    """One memory word: ``block_size`` signed mantissas of ``element_width`` bits (element i at
    bits ``i*w .. i*w + w - 1``), then the signed shared exponent (the top ``exponent_width``
    bits). Narrower classes are stored sign-extended."""
    return data.StructLayout({
        "mantissas": data.ArrayLayout(signed(element_width), block_size),
        "exponent": signed(exponent_width),
    })


def run_layout(address_bits: int, max_run: int) -> data.StructLayout:
    """A run: ``count`` (1 .. ``max_run``) consecutive words from ``addr``."""
    return data.StructLayout({"addr": unsigned(address_bits), "count": range(max_run + 1)})


def rotate(m: Module, words, amount, *, name: str):
    """``out[k] = words[(k + amount) mod n]`` (a banks-wide barrel rotation, ``n`` a power of
    two): bank order -> run order for reads; with ``-amount`` run order -> bank order."""
    n = len(words)
    out = []
    for k in range(n):
        sel = Signal(range(n), name=f"{name}_sel{k}") if n > 1 else Const(0, 1)
        if n > 1:
            m.d.comb += sel.eq((amount + k)[:max(1, (n - 1).bit_length())])
        word = Signal.like(words[0], name=f"{name}_{k}")
        with m.Switch(sel):
            for b in range(n):
                with m.Case(b):
                    m.d.comb += word.eq(words[b])
        out.append(word)
    return out


class ScratchpadReadPort(wiring.Signature):
    """A read client (its own view): a run request stream out, the run's words back one cycle
    after the request was taken."""

    def __init__(self, *, address_bits: int, banks: int, word):
        self.address_bits, self.banks, self.word = address_bits, banks, word
        super().__init__({
            "req": Out(stream.Signature(run_layout(address_bits, banks))),
            "resp_valid": In(1),
            "resp": In(data.ArrayLayout(word, banks)),
        })


class ScratchpadWritePort(wiring.Signature):
    """A write client (its own view): a stream of runs with their words (element k -> ``addr +
    k``; elements >= ``count`` are ignored)."""

    def __init__(self, *, address_bits: int, banks: int, word):
        self.address_bits, self.banks, self.word = address_bits, banks, word
        super().__init__({
            "req": Out(stream.Signature(data.StructLayout({
                "addr": unsigned(address_bits), "count": range(banks + 1),
                "data": data.ArrayLayout(word, banks)}))),
        })


class Scratchpad(wiring.Component):
    """``words`` words in ``banks`` simple dual-port banks; ``read_ports`` read clients and
    ``write_ports`` write clients, each port list in priority order (index 0 first).

    Per bank and per cycle: one read and one write. A client's run wants the banks of words
    ``addr .. addr + count - 1``; it is granted (``req.ready``) when none of them is wanted by a
    valid request of a higher-priority client of the same kind. A read and a write of the same
    word in one cycle read the new word (the bank's read address is registered, its read mux
    after the register).
    """

    def __init__(self, *, words: int, banks: int, word, read_ports: int, write_ports: int,
                 init=None):
        # ``init``: raw word values (address order) the banks start with (simulation, tests)
        check_power_of_two("Words", words)
        check_power_of_two("Banks", banks)
        if banks > words:
            raise ValueError(f"Banks must be at most words = {words}, not {banks}")
        check_positive("Read ports", read_ports)
        check_positive("Write ports", write_ports)
        self.words, self.banks = words, banks
        self.word = word
        self.read_ports, self.write_ports = read_ports, write_ports
        self.address_bits = max(1, (words - 1).bit_length())
        self.bank_bits = (banks - 1).bit_length()
        #: the banks (bank b holds words b, b + banks, ...); tests read them in simulation
        self.bank_memories = []
        for b in range(banks):
            bank_init = []
            if init is not None:
                bank_init = [init[a] for a in range(b, words, banks)]
                if isinstance(word, data.Layout):       # raw words -> layout constants
                    bank_init = [word.from_bits(int(v)) for v in bank_init]
            self.bank_memories.append(memory.Memory(shape=word, depth=words // banks,
                                                    init=bank_init))
        rsig = ScratchpadReadPort(address_bits=self.address_bits, banks=banks, word=word)
        wsig = ScratchpadWritePort(address_bits=self.address_bits, banks=banks, word=word)
        super().__init__({
            "read": In(rsig).array(read_ports),
            "write": In(wsig).array(write_ports),
        })

    def __repr__(self):
        return parameter_repr(self, "words", "banks", "read_ports", "write_ports")

    def _wants(self, m: Module, req, kind: str, index: int):
        """Per bank: does this (valid) request use it, and at which run position."""
        banks, bb = self.banks, self.bank_bits
        offset = req.payload.addr[:bb] if bb else Const(0, 1)
        wants, position = [], []
        for b in range(banks):
            pos = Signal(range(banks), name=f"{kind}{index}_pos_b{b}") if banks > 1 \
                else Const(0, 1)
            if banks > 1:
                m.d.comb += pos.eq((b - offset)[:bb])
            want = Signal(name=f"{kind}{index}_wants_b{b}")
            m.d.comb += want.eq(req.valid & (pos < req.payload.count))
            wants.append(want)
            position.append(pos)
        return offset, wants, position

    def _arbitrate(self, m: Module, ports, kind: str):
        """Fixed priority, all-or-nothing: returns per port (offset, wants, position, granted)."""
        taken = [Const(0, 1)] * self.banks
        out = []
        for k, port in enumerate(ports):
            offset, wants, position = self._wants(m, port.req, kind, k)
            clash = Cat(*[w & t for w, t in zip(wants, taken)]).any()
            granted = Signal(name=f"{kind}{k}_granted")
            m.d.comb += [granted.eq(port.req.valid & ~clash), port.req.ready.eq(granted)]
            taken = [t | w for t, w in zip(taken, wants)]
            out.append((offset, wants, position, granted))
        return out

    def elaborate(self, platform):
        m = Module()
        banks, bb = self.banks, self.bank_bits
        depth = self.words // banks
        row_bits = max(1, (depth - 1).bit_length())
        reads = self._arbitrate(m, self.read, "read")
        writes = self._arbitrate(m, self.write, "write")
        bank_data = []

        def rows_of(addr, name):
            # a run from addr puts its words in row addr >> log2(banks) of the banks at or after
            # the first one, and in the next row of the banks before it: one adder per client
            # instead of one per client and bank
            row0 = Signal(row_bits, name=f"{name}_row0")
            row1 = Signal(row_bits, name=f"{name}_row1")
            m.d.comb += [row0.eq(addr[bb:]), row1.eq(addr[bb:] + 1)]
            return row0, row1

        read_rows = [rows_of(port.req.payload.addr, f"read{k}")
                     for k, port in enumerate(self.read)]
        write_rows = [rows_of(port.req.payload.addr, f"write{k}")
                      for k, port in enumerate(self.write)]
        def row_of(offset, b, row0, row1):
            # words of banks before the run's first bank lie in the next row; no bank lies
            # after the last one, so the last bank always uses row0 (no constant comparison)
            return Mux(offset > b, row1, row0) if b < banks - 1 else row0

        for b in range(banks):
            mem = m.submodules[f"bank{b}"] = self.bank_memories[b]
            # The read address is registered and the bank read asynchronously after it: the
            # same one-cycle read as a synchronous port, with the bank's read mux after the
            # register (an SRAM macro registers its address the same way), not after the
            # arbitration. A word written in the cycle it is read is read new.
            rp = mem.read_port(domain="comb")
            wp = mem.write_port()
            read_row = Signal(row_bits, name=f"bank{b}_read_row", reset_less=True)
            m.d.comb += rp.addr.eq(read_row)
            # Lower-priority ports first, so the highest wins.
            for k in reversed(range(self.read_ports)):
                offset, wants, _position, granted = reads[k]
                row0, row1 = read_rows[k]
                with m.If(granted & wants[b]):
                    m.d.sync += read_row.eq(row_of(offset, b, row0, row1))
            bank_data.append(rp.data)
            for k in reversed(range(self.write_ports)):
                offset, wants, position, granted = writes[k]
                payload = self.write[k].req.payload
                row0, row1 = write_rows[k]
                with m.If(granted & wants[b]):
                    m.d.comb += [wp.addr.eq(row_of(offset, b, row0, row1)),
                                 wp.en.eq(1)]
                    with m.Switch(position[b]):
                        for p in range(banks):
                            with m.Case(p):
                                m.d.comb += wp.data.eq(payload.data[p])
        # Responses: bank order -> run order, rotated by the run's first bank.
        for k, port in enumerate(self.read):
            offset, _wants, _position, granted = reads[k]
            offset_q = Signal.like(offset, name=f"read{k}_offset_q", reset_less=True)
            m.d.sync += [offset_q.eq(offset), port.resp_valid.eq(granted)]
            words = rotate(m, bank_data, offset_q, name=f"read{k}_word")
            m.d.comb += [port.resp[p].eq(words[p]) for p in range(banks)]
        return m


# ------------------------------------------------------------------------------------------------
# Address patterns
# ------------------------------------------------------------------------------------------------


def pattern_layout(address_bits: int) -> data.StructLayout:
    """A 2-D address pattern: ``outer`` segments starting ``outer_stride`` apart from ``base``,
    each ``inner`` words ``inner_stride`` apart (addresses wrap at ``2^address_bits``)."""
    return data.StructLayout({
        "base": unsigned(address_bits),
        "outer": unsigned(16),
        "outer_stride": unsigned(address_bits),
        "inner": unsigned(16),
        "inner_stride": unsigned(address_bits),
    })


class RunGenerator(wiring.Component):
    """Walks a :func:`pattern_layout` pattern as runs of consecutive words.

    ``start`` (one cycle, while idle) samples ``pattern``; ``runs`` then carries the pattern's
    words in order as runs of at most ``max_run`` words: consecutive words when ``inner_stride``
    is 1 (a run never crosses a segment), single words otherwise. ``end_of_segment`` marks a
    segment's last run, ``last`` the pattern's. ``busy`` is high from ``start`` until the last
    run is taken; an empty pattern (``outer`` or ``inner`` 0) emits nothing.
    """

    def __init__(self, *, address_bits: int, max_run: int):
        check_positive("Address bits", address_bits)
        check_positive("Maximum run", max_run)
        self.address_bits, self.max_run = address_bits, max_run
        self.run_layout = data.StructLayout({
            "addr": unsigned(address_bits), "count": range(max_run + 1), "end_of_segment": 1,
            "last": 1})
        super().__init__({
            "start": In(1),
            "pattern": In(pattern_layout(address_bits)),
            "busy": Out(1),
            "runs": Out(stream.Signature(self.run_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "address_bits", "max_run")

    def elaborate(self, platform):
        m = Module()
        p = Signal(pattern_layout(self.address_bits), reset_less=True)
        segment = Signal(16)            # segments left after this one
        left = Signal(16)               # words of this segment not yet emitted
        consecutive = Signal()          # inner stride 1: runs of consecutive words
        last_segment = Signal()
        seg_base = Signal(self.address_bits, reset_less=True)
        addr = Signal(self.address_bits, reset_less=True)
        active = Signal()
        m.d.comb += self.busy.eq(active)

        # everything a run needs comes from registers: a run's count and flags are a compare
        # with a constant, not a subtraction (the run drives the scratchpad's arbitration)
        long = Signal()
        m.d.comb += long.eq(left > self.max_run)
        count = Signal(range(self.max_run + 1))
        m.d.comb += count.eq(Mux(consecutive, Mux(long, self.max_run, left), 1))
        end_of_segment = Mux(consecutive, ~long, left == 1)
        last = end_of_segment & last_segment
        run = self.runs
        m.d.comb += [
            run.valid.eq(active),
            run.payload.addr.eq(addr),
            run.payload.count.eq(count),
            run.payload.end_of_segment.eq(end_of_segment),
            run.payload.last.eq(last),
        ]
        # the address adds as carry-select adders: a 28-bit DRAM address's ripple behind the
        # run's count select measured 41-42 gate levels (the PLENA-like preset's DMA)
        next_base = carry_select_add(m, seg_base, p.outer_stride, name="next_base")
        next_addr = carry_select_add(m, addr, Mux(consecutive, count, p.inner_stride),
                                     name="next_addr")
        with m.If(self.start & ~active):
            pat = self.pattern
            m.d.sync += [p.eq(pat), seg_base.eq(pat.base), addr.eq(pat.base),
                         left.eq(pat.inner), segment.eq(pat.outer - 1),
                         last_segment.eq(pat.outer == 1), consecutive.eq(pat.inner_stride == 1),
                         active.eq((pat.outer != 0) & (pat.inner != 0))]
        with m.Elif(run.valid & run.ready):
            with m.If(end_of_segment):
                m.d.sync += [seg_base.eq(next_base), addr.eq(next_base), left.eq(p.inner),
                             segment.eq(segment - 1), last_segment.eq(segment == 1)]
                with m.If(last):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += [left.eq(left - count), addr.eq(next_addr)]
        return m


class ScratchpadReader(wiring.Component):
    """The words of a pattern, in order, as a stream (``words``: one word per beat, ``last`` on
    the pattern's final word, ``end_of_segment`` on each segment's).

    Runs are requested through ``port`` only when the run buffer (``depth`` runs, default 4:
    enough for one single-word run per cycle) has a free row reserved, so read data is never
    lost while ``words`` is stalled; the buffer's runs are then split into words.

    ``output_register``: ``words`` leaves from a register (one cycle more, still a word per
    cycle), so the split's word select is not in front of the consumer's first stage.
    """

    def __init__(self, *, address_bits: int, banks: int, word, depth: int = 4,
                 output_register: bool = False):
        check_positive("Address bits", address_bits)
        check_power_of_two("Banks", banks)
        check_positive("Depth", depth)
        check_flag("Output register", output_register)
        self.address_bits, self.banks, self.word, self.depth = address_bits, banks, word, depth
        self.output_register = output_register
        self.entry_layout = data.StructLayout({
            "data": data.ArrayLayout(word, banks), "count": range(banks + 1),
            "end_of_segment": 1, "last": 1})
        super().__init__({
            "start": In(1),
            "pattern": In(pattern_layout(address_bits)),
            "busy": Out(1),
            "port": Out(ScratchpadReadPort(address_bits=address_bits, banks=banks, word=word)),
            "words": Out(stream.Signature(data.StructLayout({
                "word": word, "end_of_segment": 1, "last": 1}))),
        })

    def __repr__(self):
        return parameter_repr(self, "address_bits", "banks", "depth", "output_register")

    def elaborate(self, platform):
        m = Module()
        gen = m.submodules.runs = RunGenerator(address_bits=self.address_bits,
                                               max_run=self.banks)
        buf = m.submodules.run_buffer = CreditBuffer(layout=self.entry_layout, depth=self.depth)
        m.d.comb += [gen.start.eq(self.start), gen.pattern.eq(self.pattern)]

        # -- request a run only against a reserved buffer row ------------------------------------
        req = self.port.req
        m.d.comb += [
            req.valid.eq(gen.runs.valid & (buf.credits != 0)),
            req.payload.addr.eq(gen.runs.payload.addr),
            req.payload.count.eq(gen.runs.payload.count),
            gen.runs.ready.eq(req.ready & (buf.credits != 0)),
            buf.reserve.eq(req.valid & req.ready),
        ]
        tag = Signal(data.StructLayout({"count": range(self.banks + 1), "end_of_segment": 1,
                                        "last": 1}), reset_less=True)
        m.d.sync += [tag.count.eq(gen.runs.payload.count),
                     tag.end_of_segment.eq(gen.runs.payload.end_of_segment),
                     tag.last.eq(gen.runs.payload.last)]
        m.d.comb += [
            buf.write.valid.eq(self.port.resp_valid),
            buf.write.payload.data.eq(self.port.resp),
            buf.write.payload.count.eq(tag.count),
            buf.write.payload.end_of_segment.eq(tag.end_of_segment),
            buf.write.payload.last.eq(tag.last),
        ]

        # -- split runs into words ---------------------------------------------------------------
        head = buf.read.payload
        index = Signal(range(self.banks))
        final = index == head.count - 1
        out = self.words.signature.create(path=("split",)) if self.output_register \
            else self.words
        word = Signal(self.word)
        with m.Switch(index):
            for k in range(self.banks):
                with m.Case(k):
                    m.d.comb += word.eq(head.data[k])
        m.d.comb += [
            out.valid.eq(buf.read.valid),
            out.payload.word.eq(word),
            out.payload.end_of_segment.eq(final & head.end_of_segment),
            out.payload.last.eq(final & head.last),
            buf.read.ready.eq(out.ready & final),
        ]
        with m.If(out.valid & out.ready):
            m.d.sync += index.eq(Mux(final, 0, index + 1))

        held = Const(0, 1)
        if self.output_register:
            # a register stage, full rate: it takes a word whenever it is empty or emptying
            words = self.words
            payload = Signal.like(words.payload, reset_less=True)
            m.d.comb += [out.ready.eq(~words.valid | words.ready), words.payload.eq(payload)]
            with m.If(out.ready):
                m.d.sync += [words.valid.eq(out.valid), payload.eq(out.payload)]
            held = words.valid
        # busy until the pattern's last word has left (its credit is back)
        m.d.comb += self.busy.eq(gen.busy | (buf.credits != self.depth) | held)
        return m


class ScratchpadWriter(wiring.Component):
    """Writes a stream of words (``words``) along a pattern: consecutive words are packed into
    runs of up to ``banks`` (the pattern's own runs), each written as one request.

    A run's last word goes straight into the request register with the words collected before
    it, so a stream of one word per cycle is written at one word per cycle whenever the banks
    are free. ``busy`` stays high until the pattern's last run is written.
    """

    def __init__(self, *, address_bits: int, banks: int, word):
        check_positive("Address bits", address_bits)
        check_power_of_two("Banks", banks)
        self.address_bits, self.banks, self.word = address_bits, banks, word
        super().__init__({
            "start": In(1),
            "pattern": In(pattern_layout(address_bits)),
            "busy": Out(1),
            "words": In(stream.Signature(data.StructLayout({"word": word}))),
            "port": Out(ScratchpadWritePort(address_bits=address_bits, banks=banks, word=word)),
        })

    def __repr__(self):
        return parameter_repr(self, "address_bits", "banks")

    def elaborate(self, platform):
        m = Module()
        banks = self.banks
        gen = m.submodules.runs = RunGenerator(address_bits=self.address_bits, max_run=banks)
        m.d.comb += [gen.start.eq(self.start), gen.pattern.eq(self.pattern)]
        collected = [Signal(self.word, name=f"collected{k}", reset_less=True)
                     for k in range(banks)]
        index = Signal(range(banks))
        req = self.port.req
        pending = Signal()          # the request register holds a run not yet written
        free = ~pending | req.ready
        run = gen.runs.payload
        closing = index == run.count - 1
        take = Signal()
        m.d.comb += [
            take.eq(self.words.valid & gen.runs.valid & (~closing | free)),
            self.words.ready.eq(gen.runs.valid & (~closing | free)),
            gen.runs.ready.eq(take & closing),
            req.valid.eq(pending),
        ]
        with m.If(take):
            with m.Switch(index):
                for k in range(banks):
                    with m.Case(k):
                        m.d.sync += collected[k].eq(self.words.payload.word)
            m.d.sync += index.eq(Mux(closing, 0, index + 1))
        request = Signal.like(req.payload, reset_less=True)
        m.d.comb += req.payload.eq(request)
        with m.If(take & closing):
            m.d.sync += [pending.eq(1), request.addr.eq(run.addr), request.count.eq(run.count)]
            for k in range(banks):
                m.d.sync += request.data[k].eq(
                    Mux(index == k, self.words.payload.word, collected[k]))
        with m.Elif(req.ready):
            m.d.sync += pending.eq(0)
        m.d.comb += self.busy.eq(gen.busy | pending)
        return m
