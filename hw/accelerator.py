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
from hw.matmul_engine import (MatmulEngine, accumulator_row, engine_ports,
                               matmul_command_layout)
from hw.primitives import check_positive, parameter_repr
from hw.scratchpad import Scratchpad, check_power_of_two, word_layout
from hw.vector_engine import VectorEngine
from software_model.isa import OPERANDS, Queue

CLASS_FIELDS = ("a_class", "b_class", "d_class")

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
                 softmax_rows: int, softmax, layernorm, gelu, acc_init=None,
                 pipelined: bool = True):
        # ``acc_init``: ACC rows to start with (simulation and tests; hardware starts at 0)
        self.element_width = max(class_widths) if isinstance(class_widths, tuple) and \
            class_widths else 0
        self._vector = VectorEngine(
            block_size=block_size, exponent_width=exponent_width, class_widths=class_widths,
            class_types=class_types, cols=cols, acc_width=acc_width, acc_lsb=acc_lsb,
            acc_words=acc_words, sp_address_bits=sp_address_bits, sp_banks=sp_banks,
            softmax_rows=softmax_rows, softmax=softmax, layernorm=layernorm, gelu=gelu,
            pipelined=pipelined)
        self._matmul = MatmulEngine(
            rows=rows, cols=cols, sub_arrays=sub_arrays, block_size=block_size,
            element_width=self.element_width, exponent_width=exponent_width,
            acc_width=acc_width, acc_lsb=acc_lsb, acc_words=acc_words,
            sp_address_bits=sp_address_bits, sp_banks=sp_banks,
            fraction_bits=tuple(w - 2 for w in class_widths),
            # pipelined: the PE's multiply and accumulate in two stages (45 gate levels in one
            # in accelerator_small's matrix unit, its deepest stage once the units were cut),
            # the ACC write-back's add in two
            pipelined=pipelined)
        self.acc_words, self.acc_address_bits = acc_words, self._matmul.acc_address_bits
        self.acc_row = accumulator_row(cols=cols, acc_width=acc_width)
        self.word = word_layout(block_size=block_size, element_width=self.element_width,
                                exponent_width=exponent_width)
        #: the accumulator memory (a test can read it in simulation)
        self.acc = memory.Memory(shape=self.acc_row, depth=acc_words, init=acc_init or [])
        super().__init__(engine_ports(command=INSTRUCTION, sp_address_bits=sp_address_bits,
                                      sp_banks=sp_banks, word=self.word, sp_write=True))

    def elaborate(self, platform):
        m = Module()
        mm = m.submodules.matmul = self._matmul
        vec = m.submodules.vector = self._vector
        acc = m.submodules.acc = self.acc
        # a synchronous read, transparent to the write port: the data of the address the owner
        # gives in cycle t is there in cycle t + 1, with that cycle's write seen. The read mux
        # sits between the engines' address adders and the data register, not in front of the
        # read-modify-write's saturating add (an address register before an asynchronous read
        # put both in one stage: 50 gate levels in accelerator_small).
        acc_wr = acc.write_port()
        acc_rd = acc.read_port(domain="sync", transparent_for=(acc_wr,))
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
        m.d.comb += acc_rd.addr.eq(Mux(use_matmul, mm.acc_read.addr, vec.acc_read.addr))
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
            mm.acc_read.data.eq(acc_rd.data), vec.acc_read.data.eq(acc_rd.data),
            acc_wr.addr.eq(Mux(use_matmul, mm.acc_write.addr, vec.acc_write.addr)),
            acc_wr.data.eq(Mux(use_matmul, mm.acc_write.data, vec.acc_write.data)),
            acc_wr.en.eq(Mux(use_matmul, mm.acc_write.en, vec.acc_write.en)),
        ]
        return m


class Accelerator(wiring.Component):
    """The whole accelerator. Plain keyword parameters (the config's ``elaborate()`` maps onto
    them): block size, exponent width, per-class element widths and types (activation, weight,
    kv), the matrix unit's grid, the accumulator, scratchpad and memory port, the vector unit's
    specs (``software_model.mxint_softmax.SoftmaxSpec`` etc.), and the queue depths.

    ``sp_init``, ``acc_init``: memory contents to start from (simulation and tests only)."""

    def __init__(self, *, block_size: int, exponent_width: int, class_widths: tuple,
                 class_types: tuple, rows: int, cols: int, sub_arrays: int, acc_width: int,
                 acc_lsb: int, acc_words: int, sp_words: int, sp_banks: int, address_bits: int,
                 port_words: int, softmax_rows: int, softmax, layernorm, gelu,
                 queue_depth: int = 4, outstanding_reads: int = 16, sp_init=None,
                 acc_init=None, pipelined: bool = True):
        check_power_of_two("Scratchpad words", sp_words)
        check_power_of_two("Scratchpad banks", sp_banks)
        check_positive("Queue depth", queue_depth)
        self.sp_address_bits = max(1, (sp_words - 1).bit_length())
        self._execute = ExecuteUnit(
            block_size=block_size, exponent_width=exponent_width, class_widths=class_widths,
            class_types=class_types, rows=rows, cols=cols, sub_arrays=sub_arrays,
            acc_width=acc_width, acc_lsb=acc_lsb, acc_words=acc_words,
            sp_address_bits=self.sp_address_bits, sp_banks=sp_banks, softmax_rows=softmax_rows,
            softmax=softmax, layernorm=layernorm, gelu=gelu, acc_init=acc_init,
            pipelined=pipelined)
        self.pipelined = pipelined
        self.word = self._execute.word
        dma = dict(port_words=port_words, sp_banks=sp_banks,
                   sp_address_bits=self.sp_address_bits, dram_address_bits=address_bits,
                   word=self.word)
        self._load = LoadEngine(outstanding=outstanding_reads, **dma)
        self._store = StoreEngine(**dma)
        self._scratchpad = Scratchpad(words=sp_words, banks=sp_banks, word=self.word,
                                      read_ports=3, write_ports=2, init=sp_init)
        self.block_size, self.exponent_width = block_size, exponent_width
        self.class_widths, self.class_types = class_widths, class_types
        self.rows, self.cols, self.sub_arrays = rows, cols, sub_arrays
        self.acc_width, self.acc_lsb, self.acc_words = acc_width, acc_lsb, acc_words
        self.sp_words, self.sp_banks = sp_words, sp_banks
        self.address_bits, self.port_words = address_bits, port_words
        self.softmax_rows, self.queue_depth = softmax_rows, queue_depth
        self.outstanding_reads = outstanding_reads
        super().__init__({
            "commands": In(stream.Signature(command_layout())),
            "mem_req": Out(stream.Signature(memory_request_layout(address_bits, port_words,
                                                                  self.word))),
            "mem_resp": In(stream.Signature(memory_response_layout(port_words, self.word))),
            "events": Out(stream.Signature(event_layout())),
        })

    def __repr__(self):
        return parameter_repr(self, "block_size", "exponent_width", "class_widths",
                              "class_types", "rows", "cols", "sub_arrays", "acc_width",
                              "acc_lsb", "acc_words", "sp_words", "sp_banks", "address_bits",
                              "port_words", "softmax_rows", "queue_depth", "outstanding_reads")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else;
        docs/accelerator.md sections 6 and 7 have the ISA and the execution model)."""
        pw = self.port_words
        return {
            "commands": {
                "beat": "one instruction",
                "fields": {"instruction": "the 256-bit instruction as software_model.isa.encode "
                                          "gives it (word 0 in bits 31:0)"},
                "ready": "registered state (a one-entry decode register and the load, store and "
                         "execute queues' fill), except while a BARRIER is held with every queue "
                         "idle: then combinational on events.ready (the BARRIER retires as its "
                         "event is taken). Low for good after an illegal instruction (the "
                         "decoder halts); never a function of commands.valid or its payload",
            },
            "events": {
                "beat": "one retired BARRIER, or one error",
                "fields": {"tag": "the BARRIER's imm (low 8 bits); for an error, the offending "
                                  "opcode",
                           "cycle": "cycles since reset when it retired (32 bits, wraps)",
                           "error": "1: the decoder met an instruction it cannot run and halted "
                                    "(the last beat ever); 0: a BARRIER"},
                "order": "BARRIERs in program order; a BARRIER retires when every earlier "
                         "instruction has completed",
                "backpressure": "a BARRIER waits in the decoder until its event is taken; "
                                "instructions behind it wait too",
            },
            "mem_req": {
                "beat": "one memory request",
                "fields": {"write": "1: write the first count words of data at addr; 0: read "
                                    "count words at addr",
                           "addr": f"word address ({self.address_bits} bits)",
                           "count": f"words, 1 .. {pw}",
                           "data": f"data[i], i = 0..{pw - 1}: word addr + i (writes; ignored by "
                                   "reads)"},
                "order": "the load engine's reads and the store engine's writes, alternating "
                         "when both wait; each engine's requests in address-pattern order",
                "backpressure": "an offered request stays offered (payload stable) until taken; "
                                "valid is not a function of mem_req.ready",
            },
            "mem_resp": {
                "beat": "the data of one read request",
                "fields": {"data": f"data[i], i = 0..{pw - 1}: word addr + i of the request "
                                   "(words >= count unused)"},
                "ready": "combinational on mem_resp.valid and on the scratchpad's bank "
                         "arbitration in the same cycle: a response is written when none of its "
                         "banks is wanted by the execute unit's write port (higher priority). "
                         "Offer valid without waiting for ready",
            },
            "pairing": "exactly one mem_resp beat per mem_req beat with write = 0, in request "
                       f"order, any number of cycles later; writes get no response; at most "
                       f"{self.outstanding_reads} reads are in flight (the memory never needs to "
                       "queue more responses)",
            "buffers": {"queue_depth": self.queue_depth,
                        "outstanding_reads": self.outstanding_reads},
            "latency": "program-dependent: software_model.accelerator.CycleCosts and this "
                       "design's cycle_costs() give each instruction's pipeline depths",
        }

    def cycle_costs(self) -> dict:
        """The pipeline depths ``software_model.accelerator.CycleCosts`` needs for this design
        (those that depend on the vector unit's specs), read off its units."""
        vec = self._execute._vector
        return dict(
            gelu_latency=vec._gelu.latency,
            vsmax_row_latency=vec._softmax.row_info_latency,
            vsmax_second_pass=vec._softmax.second_pass_latency,
            vlnorm_row_latency=vec._layernorm.row_info_latency,
            vlnorm_second_pass=vec._layernorm.second_pass_latency,
            # the reader's hand-off, the row FIFO and the writer around the two passes; the
            # last row's reciprocal goes into the state without crossing the writer (2 cycles
            # less after its stage), but with 8-bit multiplier chunks its Newton steps outlast
            # P's rounding, so it can end the instruction
            vsmaxo_latency=vec._online.pass1_latency
            + max(vec._online.pass2_latency, vec._online.recip_latency - 2) + 7
            + vec.reader_stages,
            # the gather, ACCNORM's product stages, the requantizer and the writer
            accnorm_latency=11 + vec.norm_stages,
            # the readers, VADD's stages, the requantizer and the writer
            vadd_latency=12 + vec.vadd_stages + vec.reader_stages,
            vcast_latency=11 + vec.reader_stages,
            unit_overhead=6 + vec.reader_stages,
            vlnorm_params_latency=3 + vec.reader_stages,
            # the matrix unit's PEs' product register, the write-back's stages
            matmul_pe_stages=int(self._execute._matmul.pipelined),
            matmul_writeback=1 + self._execute._matmul.writeback_stages,
        )

    @property
    def execute_unit(self) -> ExecuteUnit:
        return self._execute

    @property
    def scratchpad(self) -> Scratchpad:
        return self._scratchpad

    def elaborate(self, platform):
        m = Module()
        sp = m.submodules.scratchpad = self._scratchpad
        execute = m.submodules.execute = self._execute
        load = m.submodules.load = self._load
        store = m.submodules.store = self._store
        arbiter = m.submodules.memory_port = MemoryPortArbiter(
            address_bits=self.address_bits, port_words=self.port_words, word=self.word)
        # bank priority: execute, then store, then load
        wiring.connect(m, execute.sp_a, sp.read[0])
        wiring.connect(m, execute.sp_b, sp.read[1])
        wiring.connect(m, store.sp, sp.read[2])
        wiring.connect(m, execute.sp_d, sp.write[0])
        wiring.connect(m, load.sp, sp.write[1])
        wiring.connect(m, load.read_req, arbiter.reads)
        wiring.connect(m, store.write_req, arbiter.writes)
        wiring.connect(m, arbiter.mem_req, wiring.flipped(self.mem_req))
        wiring.connect(m, wiring.flipped(self.mem_resp), load.read_resp)

        # -- the queues ---------------------------------------------------------------------------
        dma_layout = dma_command_layout(sp_address_bits=self.sp_address_bits,
                                        dram_address_bits=self.address_bits)
        loads = m.submodules.load_queue = SyncFIFO(width=dma_layout.size, depth=self.queue_depth)
        stores = m.submodules.store_queue = SyncFIFO(width=dma_layout.size,
                                                     depth=self.queue_depth)
        executes = m.submodules.execute_queue = SyncFIFO(width=INSTRUCTION.size,
                                                         depth=self.queue_depth)
        for fifo, engine in ((loads, load), (stores, store)):
            m.d.comb += [engine.command.valid.eq(fifo.r_rdy),
                         engine.command.payload.eq(fifo.r_data),
                         fifo.r_en.eq(engine.command.ready)]
        m.d.comb += [execute.command.valid.eq(executes.r_rdy),
                     execute.command.payload.eq(executes.r_data),
                     executes.r_en.eq(execute.command.ready)]
        all_idle = Signal()
        m.d.comb += all_idle.eq(~loads.r_rdy & ~load.busy & ~stores.r_rdy & ~store.busy
                                & ~executes.r_rdy & ~execute.busy)

        # -- decode: one register stage cuts the path from the command port ----------------------
        held = Signal(command_layout(), reset_less=True)
        held_valid = Signal()
        take_held = Signal()
        m.d.comb += self.commands.ready.eq(~held_valid | take_held)
        with m.If(self.commands.ready):
            m.d.sync += [held_valid.eq(self.commands.valid), held.eq(self.commands.payload)]
        raw = held.instruction
        instr = Signal(INSTRUCTION)
        m.d.comb += instr.eq(raw)
        legal = Signal()
        queue = {q: Signal(name=f"to_{q.value}") for q in Queue}
        with m.Switch(instr.op):
            for op in Opcode:
                with m.Case(op.value):
                    # unused fields zero; a used class field is not the reserved code 3; the
                    # counts it uses are not zero (software_model.isa.decode rejects the same)
                    checks = [(raw & ~used_field_mask(op)) == 0]
                    checks += [instr[f] != 3 for f in CLASS_FIELDS if f in OPERANDS[op].used]
                    checks += [instr[f] != 0 for f in OPERANDS[op].positive]
                    m.d.comb += [legal.eq(Cat(*checks).all()), queue[QUEUE_OF[op]].eq(1)]
        halted = Signal()
        error = held_valid & ~legal & ~halted
        cycle = Signal(32)
        m.d.sync += cycle.eq(cycle + 1)
        ev = self.events
        barrier_ready = queue[Queue.BARRIER] & all_idle
        m.d.comb += [
            ev.valid.eq(held_valid & ~halted & ((legal & barrier_ready) | ~legal)),
            ev.payload.tag.eq(Mux(legal, instr.imm.as_unsigned(), instr.op)),
            ev.payload.cycle.eq(cycle),
            ev.payload.error.eq(~legal),
        ]
        dispatch = held_valid & legal & ~halted
        m.d.comb += [
            loads.w_en.eq(dispatch & queue[Queue.LOAD] & loads.w_rdy),
            stores.w_en.eq(dispatch & queue[Queue.STORE] & stores.w_rdy),
            executes.w_en.eq(dispatch & queue[Queue.EXECUTE] & executes.w_rdy),
            executes.w_data.eq(instr),
            take_held.eq(loads.w_en | stores.w_en | executes.w_en
                         | (dispatch & barrier_ready & ev.ready)),
        ]
        load_cmd = Signal(dma_layout)
        store_cmd = Signal(dma_layout)
        m.d.comb += [
            load_cmd.sp.eq(instr.d), load_cmd.dram.eq(instr.a), load_cmd.words.eq(instr.m),
            load_cmd.segments.eq(instr.n), load_cmd.sp_stride.eq(instr.d_stride),
            load_cmd.dram_stride.eq(instr.a_stride),
            store_cmd.sp.eq(instr.a), store_cmd.dram.eq(instr.d), store_cmd.words.eq(instr.m),
            store_cmd.segments.eq(instr.n), store_cmd.sp_stride.eq(instr.a_stride),
            store_cmd.dram_stride.eq(instr.d_stride),
            loads.w_data.eq(load_cmd), stores.w_data.eq(store_cmd),
        ]
        # an instruction the decoder cannot run: report it, then take no more commands
        with m.If(error & ev.ready):
            m.d.sync += halted.eq(1)
        return m
