"""The ``accelerator`` kind's top (docs/accelerator.md): command decoder, the load, store and
execute queues, barriers and events, DMA, scratchpad, and the execute unit.

Ports (all streams, section 6): ``commands`` (one 256-bit instruction per beat), ``mem_req`` /
``mem_resp`` (the off-chip memory, ``port_words`` words per beat), ``events`` (one beat per
retired BARRIER: its tag and the cycle count since reset; an error beat, ``error`` set, when the
decoder meets an instruction it cannot run, after which it halts).

Execution model (section 7): instructions are decoded in order into three queues; each queue
runs one instruction at a time to completion; queues run concurrently; a BARRIER waits until
every earlier instruction has completed (every queue empty and idle), then emits its event.
Scratchpad banks go to the execute unit first, then the store engine, then the load engine.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.dma import (LoadEngine, MemoryPortArbiter, StoreEngine, dma_command_layout,
                    memory_request_layout, memory_response_layout)
from hw.instruction import INSTRUCTION, QUEUE_OF, Opcode, used_field_mask
from hw.matmul_engine import MatmulEngine, accumulator_row, matmul_command_layout
from hw.primitives import check_positive, parameter_repr
from hw.scratchpad import (Scratchpad, ScratchpadReadPort, ScratchpadWritePort,
                           check_power_of_two, word_layout)
from hw.vector_engine import VectorEngine
from software_model.isa import Queue

__all__ = ["ExecuteUnit", "Accelerator", "event_layout", "command_layout"]


def command_layout() -> data.StructLayout:
    """``commands`` payload: the instruction's 256 bits as ``software_model.isa.encode`` gives
    them (word 0 in bits 31:0)."""
    return data.StructLayout({"instruction": unsigned(256)})


def event_layout() -> data.StructLayout:
    """``events`` payload: ``tag`` (the BARRIER's; for an error, the offending opcode),
    ``cycle`` (cycles since reset when it retired), ``error`` (decoder halted)."""
    return data.StructLayout({"tag": unsigned(8), "cycle": unsigned(32), "error": 1})


class ExecuteUnit(wiring.Component):
    """The execute queue's engines: :class:`hw.matmul_engine.MatmulEngine` for MATMUL and
    :class:`hw.vector_engine.VectorEngine` for everything else, sharing the accumulator memory
    and the execute side's scratchpad ports (one engine runs at a time)."""

    def __init__(self, *, block_size: int, exponent_width: int, class_widths: tuple,
                 class_types: tuple, rows: int, cols: int, sub_arrays: int, acc_width: int,
                 acc_lsb: int, acc_words: int, sp_address_bits: int, sp_banks: int,
                 softmax_rows: int, softmax, layernorm, gelu, acc_init=None):
        # ``acc_init``: ACC rows to start with (simulation and tests; hardware starts at 0)
        self.element_width = max(class_widths) if isinstance(class_widths, tuple) and \
            class_widths else 0
        self._vector = VectorEngine(
            block_size=block_size, exponent_width=exponent_width, class_widths=class_widths,
            class_types=class_types, cols=cols, acc_width=acc_width, acc_lsb=acc_lsb,
            acc_words=acc_words, sp_address_bits=sp_address_bits, sp_banks=sp_banks,
            softmax_rows=softmax_rows, softmax=softmax, layernorm=layernorm, gelu=gelu)
        self._matmul = MatmulEngine(
            rows=rows, cols=cols, sub_arrays=sub_arrays, block_size=block_size,
            element_width=self.element_width, exponent_width=exponent_width,
            acc_width=acc_width, acc_lsb=acc_lsb, acc_words=acc_words,
            sp_address_bits=sp_address_bits, sp_banks=sp_banks,
            fraction_bits=tuple(w - 2 for w in class_widths))
        self.acc_words, self.acc_address_bits = acc_words, self._matmul.acc_address_bits
        self.acc_row = accumulator_row(cols=cols, acc_width=acc_width)
        self.word = word_layout(block_size=block_size, element_width=self.element_width,
                                exponent_width=exponent_width)
        port = dict(address_bits=sp_address_bits, banks=sp_banks, word=self.word)
        #: the accumulator memory (a test can read it in simulation)
        self.acc = memory.Memory(shape=self.acc_row, depth=acc_words, init=acc_init or [])
        super().__init__({
            "command": In(stream.Signature(INSTRUCTION)),
            "busy": Out(1),
            "sp_a": Out(ScratchpadReadPort(**port)),
            "sp_b": Out(ScratchpadReadPort(**port)),
            "sp_d": Out(ScratchpadWritePort(**port)),
        })

    def elaborate(self, platform):
        m = Module()
        mm = m.submodules.matmul = self._matmul
        vec = m.submodules.vector = self._vector
        acc = m.submodules.acc = self.acc
        acc_rd, acc_wr = acc.read_port(), acc.write_port()
        cmd = self.command
        is_matmul = cmd.payload.op == Opcode.MATMUL
        use_matmul = Signal()           # which engine owns the shared ports
        busy = mm.busy | vec.busy
        m.d.comb += [self.busy.eq(busy), cmd.ready.eq(~busy)]
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += use_matmul.eq(is_matmul)
        c = cmd.payload
        mc = mm.command.payload
        m.d.comb += [
            mm.command.valid.eq(cmd.valid & ~busy & is_matmul),
            vec.command.valid.eq(cmd.valid & ~busy & ~is_matmul),
            vec.command.payload.eq(c),
            mc.d.eq(c.d), mc.a.eq(c.a), mc.b.eq(c.b), mc.m.eq(c.m), mc.n.eq(c.n),
            mc.kb.eq(c.kb), mc.d_stride.eq(c.d_stride), mc.a_stride.eq(c.a_stride),
            mc.b_stride.eq(c.b_stride), mc.a_class.eq(c.a_class), mc.b_class.eq(c.b_class),
            mc.shift.eq(c.imm), mc.accumulate.eq(c.flags[0]),
        ]
        # scratchpad ports: the owner's requests; responses only to it
        for name in ("sp_a", "sp_b"):
            out, a, b = getattr(self, name), getattr(mm, name), getattr(vec, name)
            m.d.comb += [
                out.req.valid.eq(Mux(use_matmul, a.req.valid, b.req.valid)),
                out.req.payload.eq(Mux(use_matmul, a.req.payload, b.req.payload)),
                a.req.ready.eq(use_matmul & out.req.ready),
                b.req.ready.eq(~use_matmul & out.req.ready),
                a.resp.eq(out.resp), b.resp.eq(out.resp),
                a.resp_valid.eq(use_matmul & out.resp_valid),
                b.resp_valid.eq(~use_matmul & out.resp_valid),
            ]
        wiring.connect(m, vec.sp_d, wiring.flipped(self.sp_d))
        # accumulator memory
        m.d.comb += [
            acc_rd.addr.eq(Mux(use_matmul, mm.acc_read.addr, vec.acc_read.addr)),
            mm.acc_read.data.eq(acc_rd.data), vec.acc_read.data.eq(acc_rd.data),
            acc_wr.addr.eq(Mux(use_matmul, mm.acc_write.addr, vec.acc_write.addr)),
            acc_wr.data.eq(Mux(use_matmul, mm.acc_write.data, vec.acc_write.data)),
            acc_wr.en.eq(Mux(use_matmul, mm.acc_write.en, vec.acc_write.en)),
        ]
        return m
