"""The execute queue's non-matrix instructions: the vector unit (SP -> SP) and the accumulator
processing (ACC -> SP, ACC -> ACC), docs/accelerator.md section 4.

One instruction runs at a time. Every SP -> SP instruction is the same pipe: scratchpad readers
walk the operands' 2-D patterns (:class:`hw.scratchpad.ScratchpadReader`), a unit transforms
the word stream, a :class:`hw.scratchpad.ScratchpadWriter` writes the results along the
destination's pattern. Element-wise instructions walk block columns (a block column's rows are
consecutive words, so reads and writes move whole runs); row-wise ones walk rows (a row's blocks
are ``stride`` apart: one word per cycle).

=========  ==============================  ===============================================
op         source                          unit
=========  ==============================  ===============================================
VCAST      reader A (class a)              :class:`hw.requantizer.Requantizer`
VADD       readers A and B (bias: B's row  exact aligned sum (``vadd``'s grid and sticky),
           re-read for every row)          then the requantizer
VGELU      reader A                        :class:`hw.mxint_gelu.MXIntGELU`
VLNORM     reader A (rows); reader B       :class:`hw.mxint_layernorm.MXIntLayerNorm`
           loads gamma/beta first
VSMAX      reader A (rows, masked tail)    :class:`hw.mxint_softmax.MXIntSoftmax`
ACCST      ACC gather (a block per SP      the requantizer
           word, from 1 or B/cols words)
=========  ==============================  ===============================================

Operands are read in their class (:func:`as_class`: the low element-width bits, two's
complement), results written sign-extended to the storage width.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.instruction import INSTRUCTION, Opcode
from hw.matmul_engine import accumulator_row, engine_ports
from hw.mxint_gelu import MXIntGELU
from hw.mxint_layernorm import MXIntLayerNorm
from hw.mxint_softmax import MXIntSoftmax
from hw.online_softmax import OnlineSoftmaxStep
from hw.primitives import (CreditBuffer, GlobalEnable, check_flag, check_positive, parameter_repr,
                           split_add)
from hw.requantizer import Requantizer, check_classes
from hw.scratchpad import (ScratchpadReader, ScratchpadReadPort, ScratchpadWritePort,
                           ScratchpadWriter, check_power_of_two, word_layout)

__all__ = ["VectorEngine", "AccumulatorGather", "VECTOR_OPS", "unit_arguments",
           "VADD_SHIFT_LIMIT"]

#: opcodes the vector engine runs
VECTOR_OPS = (Opcode.ACCST, Opcode.ACCSCALE, Opcode.ACCNORM, Opcode.VADD, Opcode.VCAST,
              Opcode.VGELU, Opcode.VLNORM, Opcode.VSMAX, Opcode.VSMAXO)

#: VADD: the larger operand is shifted left by at most this much; beyond it the golden model's
#: sum is at least 2^(w_max + 21) and the rounding point is at most two bits up (the only case
#: the shift gets that large is an int destination whose exponent lies far below the operand),
#: so both saturate to the same mantissa.
VADD_SHIFT_LIMIT = 21


#: the units' multiplier chunk width in a pipelined engine (as the unit presets that meet the
#: 40-level target use: configs/mxint_*_*.yaml ``multiplier_chunk_bits: 8``)
PIPELINED_CHUNK_BITS = 8


def unit_arguments(spec) -> dict:
    """A nonlinear unit's spec dataclass as the unit's keyword arguments (``*_fmt`` fields are
    the units' ``*_format``)."""
    return {f.name.replace("_fmt", "_format"): getattr(spec, f.name)
            for f in dataclasses.fields(spec)}


def as_class(m: Module, mantissa, code, widths, storage: int, *, name: str):
    """``mantissa`` read in class ``code``: its low ``widths[code]`` bits, two's complement
    (``software_model.accelerator.as_class``)."""
    out = Signal(signed(storage), name=name)
    m.d.comb += out.eq(mantissa)
    for c, w in enumerate(widths):
        if w < storage:
            with m.If(code == c):
                m.d.comb += out.eq(Value.cast(mantissa)[:w].as_signed())
    return out


class AccumulatorGather(wiring.Component):
    """ACC -> blocks: for each SP word of an ``M x N`` result (block columns outer, rows inner,
    the writer's order) the ``B`` accumulator numbers of that block, with their row.

    ``cols >= B``: one ACC word holds ``cols / B`` blocks (read once per block, sliced);
    ``cols < B``: a block is ``B / cols`` ACC words (read one after the other, assembled).
    Reads go out only against a reserved row of the output buffer, so ``blocks`` may stall."""

    def __init__(self, *, block_size: int, cols: int, acc_width: int, acc_address_bits: int,
                 depth: int = 3):
        check_power_of_two("Block size", block_size)
        check_power_of_two("Columns", cols)
        check_positive("Accumulator width", acc_width, minimum=2)
        check_positive("Accumulator address bits", acc_address_bits)
        check_positive("Depth", depth)
        self.block_size, self.cols, self.acc_width = block_size, cols, acc_width
        self.acc_address_bits, self.depth = acc_address_bits, depth
        self.acc_row = accumulator_row(cols=cols, acc_width=acc_width)
        self.block_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(acc_width), block_size), "row": unsigned(16)})
        super().__init__({
            "start": In(1),
            "base": In(acc_address_bits), "blocks": In(16), "rows": In(16),
            "stride": In(acc_address_bits),
            "busy": Out(1),
            "acc_read": In(memory.ReadPort.Signature(addr_width=acc_address_bits,
                                                     shape=self.acc_row)),
            "out": Out(stream.Signature(self.block_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "block_size", "cols", "acc_width", "acc_address_bits",
                              "depth")

    def elaborate(self, platform):
        m = Module()
        B, cols = self.block_size, self.cols
        reads = max(1, B // cols)           # ACC words per block
        per = max(1, cols // B)             # blocks per ACC word
        ab = self.acc_address_bits
        buf = m.submodules.buffer = CreditBuffer(layout=self.block_layout, depth=self.depth)
        wiring.connect(m, buf.read, wiring.flipped(self.out))

        active = Signal()
        cb = Signal(16)
        r = Signal(16)
        # counters get at least one bit: a zero-width signal (reads == 1, per == 1) would be a
        # [-1:0] wire in the Verilog; the extra bit stays 0
        q = Signal(range(max(2, reads)))
        nb = Signal(16, reset_less=True)
        rows = Signal(16, reset_less=True)
        stride = Signal(ab, reset_less=True)
        tile_base = Signal(ab, reset_less=True)
        q_base = Signal(ab, reset_less=True)
        m.d.comb += self.busy.eq(active | (buf.credits != self.depth))

        last_q = q == reads - 1
        issue = Signal()
        m.d.comb += [issue.eq(active & (~last_q | (buf.credits != 0))),
                     buf.reserve.eq(issue & last_q),
                     self.acc_read.addr.eq(q_base + r), self.acc_read.en.eq(1)]
        with m.If(self.start & ~active):
            m.d.sync += [nb.eq(self.blocks), rows.eq(self.rows), stride.eq(self.stride),
                         tile_base.eq(self.base), q_base.eq(self.base), cb.eq(0), r.eq(0),
                         q.eq(0), active.eq((self.blocks != 0) & (self.rows != 0))]
        with m.Elif(issue):
            with m.If(~last_q):
                m.d.sync += [q.eq(q + 1), q_base.eq(q_base + stride)]
            with m.Elif(r != rows - 1):
                m.d.sync += [q.eq(0), q_base.eq(tile_base), r.eq(r + 1)]
            with m.Else():
                if cols < B:
                    next_tile = tile_base + (stride << (reads - 1).bit_length())
                else:
                    step = (cb[:max(1, (per - 1).bit_length())] == per - 1) if per > 1 else 1
                    next_tile = tile_base + Mux(step, stride, 0)
                m.d.sync += [q.eq(0), r.eq(0), cb.eq(cb + 1), tile_base.eq(next_tile),
                             q_base.eq(next_tile)]
                with m.If(cb == nb - 1):
                    m.d.sync += active.eq(0)

        # -- the data, a cycle later ------------------------------------------------------------
        got = Signal()
        got_q = Signal.like(q, reset_less=True)
        got_row = Signal(16, reset_less=True)
        got_slice = Signal(range(max(2, per)), reset_less=True)
        m.d.sync += [got.eq(issue), got_q.eq(q), got_row.eq(r)]
        if per > 1:
            m.d.sync += got_slice.eq(cb[:(per - 1).bit_length()])
        word = self.acc_read.data
        wr = buf.write.payload
        m.d.comb += [buf.write.valid.eq(got & (got_q == reads - 1)), wr.row.eq(got_row)]
        if cols >= B:
            with m.Switch(got_slice):
                for j in range(per):
                    with m.Case(j):
                        m.d.comb += [wr.values[i].eq(word[j * B + i]) for i in range(B)]
        else:
            held = [Signal(signed(self.acc_width), name=f"held{i}", reset_less=True)
                    for i in range(B - cols)]
            for qq in range(reads - 1):
                with m.If(got & (got_q == qq)):
                    m.d.sync += [held[qq * cols + i].eq(word[i]) for i in range(cols)]
            m.d.comb += [wr.values[i].eq(held[i]) for i in range(B - cols)]
            m.d.comb += [wr.values[B - cols + i].eq(word[i]) for i in range(cols)]
        return m


class VectorEngine(wiring.Component):
    """Runs one vector or accumulator instruction at a time (``command``: the decoded
    instruction, taken when idle; ``busy`` until its last word is written)."""

    def __init__(self, *, block_size: int, exponent_width: int, class_widths: tuple,
                 class_types: tuple, cols: int, acc_width: int, acc_lsb: int, acc_words: int,
                 sp_address_bits: int, sp_banks: int, softmax_rows: int, softmax, layernorm,
                 gelu, pipelined: bool = True):
        check_power_of_two("Block size", block_size)
        check_flag("Pipelined", pipelined)
        self.pipelined = pipelined
        #: ACCNORM's register stages: pipelined, the operands are registered, the product is
        #: four partial products (both operands split in halves) and their sum takes three
        #: stages; else the reciprocal is split in two halves and the sum is one stage.
        self.norm_stages = 5 if pipelined else 2
        #: VADD's register stages before the requantizer: pipelined, the operands' order and
        #: grids are registered before the sum's grid is chosen
        self.vadd_stages = 3 if pipelined else 2
        #: the scratchpad readers' output register (pipelined): the word select of a run was
        #: in front of every unit's first stage (VCAST into the requantizer's magnitudes: 42
        #: gate levels in accelerator_small)
        self.reader_stages = 1 if pipelined else 0
        #: the nonlinear units' and the online step's multipliers: pipelined, split into
        #: registered 8-bit partial products (exp2's Horner multiply-add alone is 52 gate levels
        #: whole in accelerator_small); else whole. Exact either way: only latency changes.
        self.multiplier_chunk_bits = PIPELINED_CHUNK_BITS if pipelined else None
        check_positive("Exponent width", exponent_width, minimum=2)
        check_classes(class_widths, class_types)
        check_power_of_two("Columns", cols)
        check_positive("Accumulator width", acc_width, minimum=2)
        check_positive("Accumulator words", acc_words)
        check_positive("Scratchpad address bits", sp_address_bits)
        check_power_of_two("Scratchpad banks", sp_banks)
        check_positive("Softmax rows", softmax_rows)
        self.block_size, self.exponent_width = block_size, exponent_width
        self.class_widths, self.class_types = class_widths, class_types
        self.element_width = max(class_widths)
        self.cols, self.acc_width, self.acc_lsb, self.acc_words = cols, acc_width, acc_lsb, \
            acc_words
        self.sp_address_bits, self.sp_banks, self.softmax_rows = sp_address_bits, sp_banks, \
            softmax_rows
        self.softmax_spec, self.layernorm_spec, self.gelu_spec = softmax, layernorm, gelu
        self.acc_address_bits = max(1, (acc_words - 1).bit_length())
        self.word = word_layout(block_size=block_size, element_width=self.element_width,
                                exponent_width=exponent_width)
        self.acc_row = accumulator_row(cols=cols, acc_width=acc_width)
        self.vadd_width = self.element_width + VADD_SHIFT_LIMIT + 2
        # ACCNORM's product of an accumulator number and the unsigned reciprocal
        self.norm_width = acc_width + softmax.recip_bits + 2
        self.value_width = max(self.vadd_width, self.norm_width)
        self.lsb_width = 10
        # the units, built here so their own argument checks run with the engine's
        chunk = self.multiplier_chunk_bits
        self._gelu = MXIntGELU(**unit_arguments(gelu), multiplier_chunk_bits=chunk)
        self._softmax = MXIntSoftmax(**unit_arguments(softmax), multiplier_chunk_bits=chunk)
        self._layernorm = MXIntLayerNorm(**unit_arguments(layernorm), multiplier_chunk_bits=chunk)
        self._online = OnlineSoftmaxStep(spec=softmax, rows=softmax_rows,
                                         tile_blocks=softmax.max_row_blocks,
                                         multiplier_chunk_bits=chunk)
        self._requant = Requantizer(block_size=block_size, value_width=self.value_width,
                                    lsb_width=self.lsb_width, exponent_width=exponent_width,
                                    element_width=self.element_width, class_widths=class_widths,
                                    class_types=class_types)
        super().__init__(engine_ports(
            command=INSTRUCTION, sp_address_bits=sp_address_bits, sp_banks=sp_banks,
            word=self.word, sp_write=True, acc_address_bits=self.acc_address_bits,
            acc_row=self.acc_row))

    def __repr__(self):
        return parameter_repr(self, "block_size", "exponent_width", "class_widths",
                              "class_types", "cols", "acc_width", "acc_lsb", "acc_words",
                              "sp_address_bits", "sp_banks", "softmax_rows", "pipelined")

    def elaborate(self, platform):
        m = Module()
        B, w_max = self.block_size, self.element_width
        widths = self.class_widths
        frac_table = [w - 2 for w in widths]
        sb = self.sp_address_bits
        port = dict(address_bits=sb, banks=self.sp_banks, word=self.word)
        reader_a = m.submodules.reader_a = ScratchpadReader(**port,
                                                            output_register=self.pipelined)
        reader_b = m.submodules.reader_b = ScratchpadReader(**port,
                                                            output_register=self.pipelined)
        writer = m.submodules.writer = ScratchpadWriter(**port)
        wiring.connect(m, reader_a.port, wiring.flipped(self.sp_a))
        wiring.connect(m, reader_b.port, wiring.flipped(self.sp_b))
        wiring.connect(m, writer.port, wiring.flipped(self.sp_d))
        gather = m.submodules.gather = AccumulatorGather(
            block_size=B, cols=self.cols, acc_width=self.acc_width,
            acc_address_bits=self.acc_address_bits)
        requant = m.submodules.requantizer = self._requant
        gelu = m.submodules.gelu = self._gelu
        softmax = m.submodules.softmax = self._softmax
        layernorm = m.submodules.layernorm = self._layernorm
        online = m.submodules.online_softmax = self._online

        # -- the instruction ---------------------------------------------------------------------
        cmd = self.command
        instr = Signal(INSTRUCTION, reset_less=True)
        ops = {op: Signal(name=f"op_{op.name.lower()}", reset_less=True) for op in VECTOR_OPS}
        starting = Signal()
        running = Signal()
        units_busy = Signal()
        m.d.comb += [self.busy.eq(starting | running), cmd.ready.eq(~self.busy)]
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [instr.eq(cmd.payload), starting.eq(1)]
            m.d.sync += [flag.eq(cmd.payload.op == op) for op, flag in ops.items()]
        with m.If(starting):
            m.d.sync += [starting.eq(0), running.eq(1)]
        with m.Elif(running & ~units_busy):
            m.d.sync += running.eq(0)
        nb = Signal(16)
        m.d.comb += nb.eq(instr.n >> (B - 1).bit_length())
        elementwise = ops[Opcode.VADD] | ops[Opcode.VCAST] | ops[Opcode.VGELU]
        rowwise = ops[Opcode.VLNORM] | ops[Opcode.VSMAX] | ops[Opcode.VSMAXO]
        from_acc = ops[Opcode.ACCST] | ops[Opcode.ACCNORM]

        def pattern(target, base, outer, outer_stride, inner, inner_stride):
            return [target.base.eq(base), target.outer.eq(outer),
                    target.outer_stride.eq(outer_stride), target.inner.eq(inner),
                    target.inner_stride.eq(inner_stride)]

        with m.If(rowwise):
            m.d.comb += pattern(reader_a.pattern, instr.a, instr.m, 1, nb, instr.a_stride)
            m.d.comb += pattern(writer.pattern, instr.d, instr.m, 1, nb, instr.d_stride)
        with m.Else():
            m.d.comb += pattern(reader_a.pattern, instr.a, nb, instr.a_stride, instr.m, 1)
            m.d.comb += pattern(writer.pattern, instr.d, nb, instr.d_stride, instr.m, 1)
        with m.If(ops[Opcode.VLNORM]):      # gamma_0, beta_0, gamma_1, beta_1, ...
            m.d.comb += pattern(reader_b.pattern, instr.b, nb, 1, 2, nb)
        with m.Else():                      # a bias row is re-read for every row
            m.d.comb += pattern(reader_b.pattern, instr.b, nb, instr.b_stride, instr.m,
                                Mux(instr.flags[0], 0, 1))
        # VLNORM loads gamma and beta into the unit before its rows start: a row that entered
        # first would be normalised with the previous parameters.
        params_wait = Signal()
        params_loaded = params_wait & ~reader_b.busy
        with m.If(starting & ops[Opcode.VLNORM]):
            m.d.sync += params_wait.eq(1)
        with m.Elif(params_loaded):
            m.d.sync += params_wait.eq(0)
        m.d.comb += [
            reader_a.start.eq((starting & (elementwise | rowwise) & ~ops[Opcode.VLNORM])
                              | params_loaded),
            reader_b.start.eq(starting & (ops[Opcode.VADD] | ops[Opcode.VLNORM])),
            writer.start.eq(starting & (elementwise | rowwise | from_acc)),
            gather.start.eq(starting & from_acc),
            gather.base.eq(instr.a), gather.blocks.eq(nb), gather.rows.eq(instr.m),
            gather.stride.eq(instr.a_stride),
        ]
        scaler_busy = Signal()
        m.d.comb += units_busy.eq(reader_a.busy | reader_b.busy | writer.busy | gather.busy
                                  | params_wait | scaler_busy
                                  | (ops[Opcode.VSMAXO] & online.busy))
        m.d.comb += [online.begin.eq(starting & ops[Opcode.VSMAXO]),
                     online.init.eq(instr.flags[0])]
        m.d.comb += [requant.cls.eq(instr.d_class), requant.exp.eq(instr.imm)]

        def frac_of(code, name):
            out = Signal(4, name=name)
            with m.Switch(code):
                for c, f in enumerate(frac_table):
                    with m.Case(c):
                        m.d.comb += out.eq(f)
            return out

        f_a = frac_of(instr.a_class, "frac_a")
        f_b = frac_of(instr.b_class, "frac_b")
        f_d = frac_of(instr.d_class, "frac_d")
        act = Const(0, 2)

        # -- ACCNORM: each row's numbers times its reciprocal (one register stage) --------------
        spec = self.softmax_spec
        norm_out = stream.Signature(requant.in_layout).create(path=("norm",))
        # (the stages see a beat only while ACCNORM runs: under ACCST the gather's blocks go
        # straight to the requantizer and must not also be caught here)
        norm_in = SimpleNamespace(valid=Signal(name="norm_in_valid"),
                                  ready=Signal(name="norm_in_ready"))
        m.d.comb += norm_in.valid.eq(gather.out.valid & ops[Opcode.ACCNORM])
        # two stages: the reciprocal split in two halves, each partial product registered,
        # then their sum (an acc_width x recip_bits product in one cycle was too deep);
        # pipelined, four (see _norm_pipelined)
        norm = GlobalEnable(m, source=norm_in, sink=norm_out, stages=self.norm_stages,
                            name="norm")
        with m.If(ops[Opcode.ACCNORM]):
            m.d.comb += online.state_row.eq(gather.out.payload.row)
        recip = online.recip
        if self.pipelined:
            self._norm_pipelined(m, norm, gather.out.payload.values, recip, norm_out,
                                 spec, online)
        else:
            cut = (len(recip) + 1) // 2
            low = [Signal(signed(self.acc_width + cut + 1), name=f"norm_low{i}", reset_less=True)
                   for i in range(B)]
            high = [Signal(signed(self.acc_width + len(recip) - cut), name=f"norm_high{i}",
                           reset_less=True) for i in range(B)]
            lsb1 = Signal(signed(self.lsb_width), reset_less=True)
            with m.If(norm.advance):
                for i in range(B):
                    v = gather.out.payload.values[i]
                    m.d.sync += [low[i].eq(v * recip[:cut]), high[i].eq(v * recip[cut:])]
                    m.d.sync += norm_out.payload.values[i].eq(low[i] + (high[i] << cut))
                m.d.sync += [lsb1.eq(self.acc_lsb + spec.exp_bits - spec.recip_bits
                                     - online.recip_lo),
                             norm_out.payload.lsb.eq(lsb1)]

        # -- ACCSCALE: every ACC word of the rows shifted right by its row's rescale -------------
        self._scaler(m, instr, ops[Opcode.ACCSCALE] & starting, online, scaler_busy,
                     ops[Opcode.ACCSCALE])

        # -- requantizer input: VCAST, VADD, ACCST, ACCNORM ----------------------------------------
        rq = requant.values
        a_word = reader_a.words.payload.word
        b_word = reader_b.words.payload.word
        vadd_out = self._vadd(m, reader_a.words, reader_b.words, f_a, f_b, f_d, instr,
                              ops[Opcode.VADD])
        with m.If(ops[Opcode.VCAST]):
            m.d.comb += [
                rq.valid.eq(reader_a.words.valid), reader_a.words.ready.eq(rq.ready),
                rq.payload.lsb.eq(a_word.exponent - f_a),
            ]
            m.d.comb += [rq.payload.values[i].eq(as_class(
                m, a_word.mantissas[i], instr.a_class, widths, w_max, name=f"vcast_m{i}"))
                for i in range(B)]
        with m.Elif(ops[Opcode.VADD]):
            wiring.connect(m, vadd_out, rq)
        with m.Elif(ops[Opcode.ACCST]):
            m.d.comb += [
                rq.valid.eq(gather.out.valid), gather.out.ready.eq(rq.ready),
                rq.payload.lsb.eq(self.acc_lsb),
            ]
            m.d.comb += [rq.payload.values[i].eq(gather.out.payload.values[i]) for i in range(B)]
        with m.Elif(ops[Opcode.ACCNORM]):
            wiring.connect(m, norm_out, rq)
            m.d.comb += gather.out.ready.eq(norm_in.ready)

        # -- GELU ------------------------------------------------------------------------------
        with m.If(ops[Opcode.VGELU]):
            m.d.comb += [
                gelu.blocks.valid.eq(reader_a.words.valid),
                reader_a.words.ready.eq(gelu.blocks.ready),
                gelu.blocks.payload.exponent.eq(a_word.exponent),
            ]
            m.d.comb += [gelu.blocks.payload.mantissas[i].eq(as_class(
                m, a_word.mantissas[i], act, widths, w_max, name=f"gelu_m{i}"))
                for i in range(B)]

        # -- softmax (two-pass) and the online softmax step (rows of a tile): rows with a masked
        # tail, fed alike ----------------------------------------------------------------------
        for op, unit, name in ((Opcode.VSMAX, softmax, "smax"), (Opcode.VSMAXO, online, "smaxo")):
            with m.If(ops[op]):
                tail = reader_a.words.payload.end_of_segment & (instr.valid != 0)
                m.d.comb += [
                    unit.scores.valid.eq(reader_a.words.valid),
                    reader_a.words.ready.eq(unit.scores.ready),
                    unit.scores.payload.block.exponent.eq(a_word.exponent),
                    unit.scores.payload.last.eq(reader_a.words.payload.end_of_segment),
                ]
                m.d.comb += [unit.scores.payload.block.mantissas[i].eq(as_class(
                    m, a_word.mantissas[i], act, widths, w_max, name=f"{name}_m{i}"))
                    for i in range(B)]
                m.d.comb += [unit.scores.payload.mask[i].eq(~tail | (i < instr.valid))
                             for i in range(B)]

        # -- LayerNorm: gamma/beta pairs load the unit's parameter store, rows follow -----------
        with m.If(ops[Opcode.VLNORM]):
            have_gamma = Signal()
            gamma = Signal(self.word, reset_less=True)
            params = layernorm.params
            with m.If(reader_b.words.valid & ~have_gamma):
                m.d.sync += [gamma.eq(b_word), have_gamma.eq(1)]
            with m.If(params.valid & params.ready):
                m.d.sync += have_gamma.eq(0)
            m.d.comb += [
                reader_b.words.ready.eq(~have_gamma | params.ready),
                params.valid.eq(reader_b.words.valid & have_gamma),
                params.payload.gamma.exponent.eq(gamma.exponent),
                params.payload.beta.exponent.eq(b_word.exponent),
                layernorm.operands.valid.eq(reader_a.words.valid),
                reader_a.words.ready.eq(layernorm.operands.ready),
                layernorm.operands.payload.exponent.eq(a_word.exponent),
            ]
            for i in range(B):
                m.d.comb += [
                    params.payload.gamma.mantissas[i].eq(as_class(
                        m, gamma.mantissas[i], act, widths, w_max, name=f"gamma_m{i}")),
                    params.payload.beta.mantissas[i].eq(as_class(
                        m, b_word.mantissas[i], act, widths, w_max, name=f"beta_m{i}")),
                    layernorm.operands.payload.mantissas[i].eq(as_class(
                        m, a_word.mantissas[i], act, widths, w_max, name=f"ln_m{i}")),
                ]

        # -- the writer's words ------------------------------------------------------------------
        sink = writer.words
        for source, op_set in ((requant.words, (Opcode.VADD, Opcode.VCAST, Opcode.ACCST,
                                                Opcode.ACCNORM)),
                               (gelu.results, (Opcode.VGELU,)),
                               (softmax.probs, (Opcode.VSMAX,)),
                               (online.probs, (Opcode.VSMAXO,)),
                               (layernorm.results, (Opcode.VLNORM,))):
            selected = Cat(*[ops[op] for op in op_set]).any()
            with m.If(selected):
                m.d.comb += [sink.valid.eq(source.valid), source.ready.eq(sink.ready),
                             sink.payload.word.exponent.eq(source.payload.exponent)]
                m.d.comb += [sink.payload.word.mantissas[i].eq(source.payload.mantissas[i])
                             for i in range(B)]
        m.d.comb += [gather.acc_read.data.eq(self.acc_read.data), self.acc_read.en.eq(1)]
        with m.If(~ops[Opcode.ACCSCALE]):
            m.d.comb += self.acc_read.addr.eq(gather.acc_read.addr)
        return m

    def _norm_pipelined(self, m: Module, norm, values, recip, norm_out, spec, online):
        """ACCNORM in five stages: (1) the accumulator numbers and the row's reciprocal are
        registered (the gather FIFO's read and the reciprocal's row select end there); (2) each
        product v * r is four partial products of halves, v = v_hi 2^h + v_lo (v_lo unsigned),
        r = r_hi 2^c + r_lo: a (acc_width/2) x (recip_bits/2) multiply each instead of one
        acc_width x recip_bits/2 (44 gate levels in accelerator_small); (3) the two sums per
        half of v; (4, 5) their sum, its low limb with a carry out, then its high limb (one
        50-bit add measured 42 levels). Exact: the same product as the two-stage layout."""
        B = self.block_size
        cut = (len(recip) + 1) // 2
        h = (self.acc_width + 1) // 2
        v_r = [Signal(signed(self.acc_width), name=f"norm_v{i}", reset_less=True)
               for i in range(B)]
        r_r = Signal.like(recip, name="norm_recip", reset_less=True)
        lsb = Signal(signed(self.lsb_width), name="norm_lsb1", reset_less=True)
        part_width = max(h + len(recip) - cut + 1, self.acc_width - h + cut) + 1
        parts = [[Signal(signed(part_width), name=f"norm_p{i}_{k}", reset_less=True)
                  for k in range(4)] for i in range(B)]
        sums = [[Signal(signed(self.norm_width), name=f"norm_s{i}_{k}", reset_less=True)
                 for k in range(2)] for i in range(B)]
        lsb2, lsb3, lsb4 = (Signal(signed(self.lsb_width), name=f"norm_lsb{n}", reset_less=True)
                            for n in (2, 3, 4))
        # the final sum's low limb: bits below h are the low half's own, the add starts at h
        nw = self.norm_width
        cut4 = h + (nw - h + 1) // 2
        with m.If(norm.advance):
            m.d.sync += [r_r.eq(recip), lsb.eq(self.acc_lsb + spec.exp_bits - spec.recip_bits
                                                - online.recip_lo),
                         lsb2.eq(lsb), lsb3.eq(lsb2), lsb4.eq(lsb3),
                         norm_out.payload.lsb.eq(lsb4)]
            r_lo, r_hi = r_r[:cut], r_r[cut:]
            for i in range(B):
                v_lo, v_hi = v_r[i][:h], v_r[i][h:].as_signed()
                m.d.sync += v_r[i].eq(values[i])
                m.d.sync += [parts[i][0].eq(v_lo * r_lo), parts[i][1].eq(v_lo * r_hi),
                             parts[i][2].eq(v_hi * r_lo), parts[i][3].eq(v_hi * r_hi)]
                p = parts[i]
                m.d.sync += [sums[i][0].eq(p[0] + (p[1] << cut)),
                             sums[i][1].eq(p[2] + (p[3] << cut))]
                s0, s1 = sums[i][0], Value.cast(sums[i][1] << h)[:nw].as_signed()
                total = split_add(m, s0, s1, cut4,
                                  names=(f"norm_low{i}", f"norm_high{i}_0", f"norm_high{i}_1"))
                m.d.sync += norm_out.payload.values[i].eq(total)

    def _scaler(self, m: Module, instr, start, online, busy, selected):
        """ACCSCALE: walk the ``M x ceil(N / cols)`` ACC words (column tiles outer), read each
        and write it back a cycle later shifted right (floor) by its row's rescale."""
        ab = self.acc_address_bits
        cols = self.cols
        active = Signal()
        row = Signal(16)
        tile_base = Signal(ab, reset_less=True)
        # columns of this tile not yet past n: in a partial last tile the columns >= n keep
        # their value (the ACC layout's rule, as MATMUL)
        cols_left = Signal(17, reset_less=True)
        with m.If(start):
            m.d.sync += [active.eq(1), row.eq(0), tile_base.eq(instr.d), cols_left.eq(instr.n)]
        with m.Elif(active):
            with m.If(row != instr.m - 1):
                m.d.sync += row.eq(row + 1)
            with m.Else():
                m.d.sync += [row.eq(0), tile_base.eq(tile_base + instr.d_stride),
                             cols_left.eq(cols_left - cols)]
                with m.If(cols_left <= cols):
                    m.d.sync += active.eq(0)
        with m.If(selected):
            m.d.comb += self.acc_read.addr.eq(tile_base + row)
        w_valid = Signal()
        w_addr = Signal(ab, reset_less=True)
        w_row = Signal(16, reset_less=True)
        w_cols = Signal(range(cols + 1), reset_less=True)
        m.d.sync += [w_valid.eq(active & selected), w_addr.eq(tile_base + row), w_row.eq(row),
                     w_cols.eq(Mux(cols_left > cols, cols, cols_left))]
        with m.If(selected):
            m.d.comb += online.state_row.eq(w_row)
        amount = Signal(range(self.acc_width + 1))
        m.d.comb += amount.eq(Mux(online.rescale > self.acc_width, self.acc_width,
                                  online.rescale))
        old = self.acc_read.data
        m.d.comb += [self.acc_write.addr.eq(w_addr), self.acc_write.en.eq(w_valid)]
        m.d.comb += [self.acc_write.data[j].eq(Mux(j < w_cols, old[j] >> amount, old[j]))
                     for j in range(self.cols)]
        m.d.comb += busy.eq(active | w_valid)

    def _vadd(self, m: Module, a, b, f_a, f_b, f_d, instr, selected):
        """``software_model.accelerator.vadd`` up to the requantizer: ``vadd_stages`` register
        stages under one enable; returns the stream of ``{values, lsb}``."""
        B, w_max, ew = self.block_size, self.element_width, self.exponent_width
        widths = self.class_widths
        out = stream.Signature(self._requant.in_layout).create(path=("vadd",))
        joined = SimpleNamespace(valid=Signal(name="vadd_in_valid"),
                                 ready=Signal(name="vadd_in_ready"))
        # only while VADD runs: other instructions' words must not enter these stages
        m.d.comb += [joined.valid.eq(a.valid & b.valid & selected)]
        ctl = GlobalEnable(m, source=joined, sink=out, stages=self.vadd_stages, name="vadd")
        with m.If(selected):
            m.d.comb += [a.ready.eq(ctl.advance & b.valid), b.ready.eq(ctl.advance & a.valid)]
        adv = ctl.advance
        d_int = Signal()
        with m.Switch(instr.d_class):
            for c, t in enumerate(self.class_types):
                with m.Case(c):
                    m.d.comb += d_int.eq(t == "int")
        ma = [as_class(m, a.payload.word.mantissas[i], instr.a_class, widths, w_max,
                       name=f"vadd_a{i}") for i in range(B)]
        mb = [as_class(m, b.payload.word.mantissas[i], instr.b_class, widths, w_max,
                       name=f"vadd_b{i}") for i in range(B)]
        # stage 1: which operand is coarser, and the grid W of the sum
        lsb_shape = signed(ew + 3)
        la = Signal(lsb_shape)
        lb = Signal(lsb_shape)
        m.d.comb += [la.eq(a.payload.word.exponent - f_a), lb.eq(b.payload.word.exponent - f_b)]
        a_hi = la >= lb
        hi = Mux(a_hi, la, lb)
        lo = Mux(a_hi, lb, la)
        m_hi = [Mux(a_hi, x, y) for x, y in zip(ma, mb)]
        m_lo = [Mux(a_hi, y, x) for x, y in zip(ma, mb)]
        hi_nonzero = Cat(*[v != 0 for v in m_hi]).any()
        if self.pipelined:
            # the operands' order, their grids and the coarser one's zero test registered: the
            # scratchpad read mux, the exponent subtracts, the compare and the grid's select
            # and subtracts measured 52 gate levels as one stage in accelerator_small
            hi_r = Signal(lsb_shape, name="vadd_hi0", reset_less=True)
            lo_r = Signal(lsb_shape, name="vadd_lo0", reset_less=True)
            nz_r = Signal(name="vadd_hi_nonzero0", reset_less=True)
            m_hi_r = [Signal(signed(w_max), name=f"vadd_hi0_{i}", reset_less=True)
                      for i in range(B)]
            m_lo_r = [Signal(signed(w_max), name=f"vadd_lo0_{i}", reset_less=True)
                      for i in range(B)]
            with m.If(adv):
                m.d.sync += [hi_r.eq(hi), lo_r.eq(lo), nz_r.eq(hi_nonzero)]
                m.d.sync += [r.eq(v) for r, v in zip(m_hi_r, m_hi)]
                m.d.sync += [r.eq(v) for r, v in zip(m_lo_r, m_lo)]
            hi, lo, hi_nonzero, m_hi, m_lo = hi_r, lo_r, nz_r, m_hi_r, m_lo_r
        grid = Signal(signed(ew + 12))
        int_grid = Signal(signed(ew + 12))
        m.d.comb += int_grid.eq(instr.imm - f_d - 2)
        far_limit = Signal(6)
        m.d.comb += far_limit.eq(Mux(f_d + 3 > w_max, f_d + 3, w_max))
        with m.If(d_int):
            m.d.comb += grid.eq(Mux(int_grid < lo, lo, Mux(int_grid > hi, hi, int_grid)))
        with m.Elif(((hi - lo) >= far_limit) & hi_nonzero):
            m.d.comb += grid.eq(hi - f_d - 3)
        with m.Else():
            m.d.comb += grid.eq(lo)
        up1 = Signal(unsigned(ew + 8), reset_less=True)      # hi - W >= 0
        down1 = Signal(unsigned(ew + 8), reset_less=True)    # W - lo >= 0
        grid1 = Signal(signed(ew + 12), reset_less=True)
        hi1 = [Signal(signed(w_max), name=f"vadd_hi1_{i}", reset_less=True) for i in range(B)]
        lo1 = [Signal(signed(w_max), name=f"vadd_lo1_{i}", reset_less=True) for i in range(B)]
        with m.If(adv):
            m.d.sync += [up1.eq(hi - grid), down1.eq(grid - lo), grid1.eq(grid)]
            m.d.sync += [r.eq(v) for r, v in zip(hi1, m_hi)]
            m.d.sync += [r.eq(v) for r, v in zip(lo1, m_lo)]
        # stage 2: the hi operand shifted up (saturating past the limit), the lo operand down
        # with the bits it lost jammed into the sum's lowest bit
        vw = self.vadd_width
        sat = (1 << (w_max + VADD_SHIFT_LIMIT)) - 1
        up = Signal(range(VADD_SHIFT_LIMIT + 1))
        m.d.comb += up.eq(Mux(up1 > VADD_SHIFT_LIMIT, VADD_SHIFT_LIMIT, up1))
        down = Signal(range(w_max + 1))
        m.d.comb += down.eq(Mux(down1 > w_max, w_max, down1))
        vals = [Signal(signed(vw), name=f"vadd_sum{i}", reset_less=True) for i in range(B)]
        lsb2 = Signal(signed(self.lsb_width), reset_less=True)
        for i in range(B):
            shifted = (hi1[i] << up)
            high = Mux((up1 > VADD_SHIFT_LIMIT) & (hi1[i] != 0), Mux(hi1[i] < 0, -sat, sat),
                       shifted)
            q = lo1[i] >> down
            lost = (lo1[i] & ((Const(1, w_max + 1) << down) - 1)[:w_max]).any()
            total = Signal(signed(vw), name=f"vadd_total{i}")
            m.d.comb += total.eq(high + q)
            with m.If(adv):
                m.d.sync += vals[i].eq(total | lost)
        with m.If(adv):
            m.d.sync += lsb2.eq(grid1)
        m.d.comb += [out.payload.values[i].eq(vals[i]) for i in range(B)]
        m.d.comb += out.payload.lsb.eq(lsb2)
        return out
