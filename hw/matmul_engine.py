"""``MATMUL`` (docs/accelerator.md section 3): operand loader, matrix unit and accumulator
read-modify-write.

For each column tile ``n0`` (outer), row tile ``m0`` and K chunk ``kc`` (inner) one matrix-unit
job runs. Its operands move through two register tiles:

* **staging**: the loader fills it straight from the scratchpad, A rows through read port
  ``sp_a`` and B^T rows through ``sp_b`` at once, each as runs of up to ``banks`` consecutive
  words (a block column's rows are consecutive words); a run's words land in their tile slots
  by position, no mux (slot ``i`` of a chunk is always word ``i mod banks`` of its run).
* **active**: at a job boundary the whole staging tile moves into shift registers that feed the
  matrix unit one element per beat (element 0 of every word; the words shift right by one
  element per beat). Sub-arrays whose block is past ``KB`` (the last chunk's padding) are
  loaded as zeros. So the loader fills the next job while the current one is fed: double
  buffering, full rate when a job's runs fit in its ``B`` beats.

The matrix unit's result rows come back in job order with the job's write-back tag (ACC row
address, valid rows and columns, whether to add to the old value): row ``r`` reads its ACC word
in the cycle it arrives and writes ``sat(old_or_0 + sum)`` the next cycle; rows past ``M`` are
not written and columns past ``N`` keep their old value. Jobs are at least ``max(B, rows)``
cycles apart, so a job never reads a word the previous job has still to write.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.matrix_unit import SHIFT_WIDTH, MatrixUnit
from hw.primitives import check_flag, check_positive, parameter_repr, split_add
from hw.scratchpad import ScratchpadReadPort, ScratchpadWritePort, check_power_of_two

__all__ = ["MatmulEngine", "matmul_command_layout", "accumulator_row", "engine_ports"]


def accumulator_row(*, cols: int, acc_width: int) -> data.ArrayLayout:
    """One ACC word: a tile row of ``cols`` accumulator numbers."""
    return data.ArrayLayout(signed(acc_width), cols)


def engine_ports(*, command, sp_address_bits: int, sp_banks: int, word, sp_write: bool,
                 acc_address_bits: int | None = None, acc_row=None) -> dict:
    """The members every execute engine has, in this order: ``command`` (a stream of the
    ``command`` layout, taken when idle), ``busy``, scratchpad read ports ``sp_a`` and ``sp_b``,
    with ``sp_write`` the write port ``sp_d``, and with ``acc_row`` the ACC memory's
    ``acc_read`` and ``acc_write`` ports (``acc_address_bits`` wide)."""
    port = dict(address_bits=sp_address_bits, banks=sp_banks, word=word)
    members = {
        "command": In(stream.Signature(command)),
        "busy": Out(1),
        "sp_a": Out(ScratchpadReadPort(**port)),
        "sp_b": Out(ScratchpadReadPort(**port)),
    }
    if sp_write:
        members["sp_d"] = Out(ScratchpadWritePort(**port))
    if acc_row is not None:
        members["acc_read"] = In(memory.ReadPort.Signature(addr_width=acc_address_bits,
                                                           shape=acc_row))
        members["acc_write"] = In(memory.WritePort.Signature(addr_width=acc_address_bits,
                                                             shape=acc_row))
    return members


def matmul_command_layout(*, sp_address_bits: int, acc_address_bits: int) -> data.StructLayout:
    return data.StructLayout({
        "d": unsigned(acc_address_bits), "a": unsigned(sp_address_bits),
        "b": unsigned(sp_address_bits), "m": unsigned(16), "n": unsigned(16),
        "kb": unsigned(16), "d_stride": unsigned(acc_address_bits),
        "a_stride": unsigned(sp_address_bits), "b_stride": unsigned(sp_address_bits),
        "a_class": unsigned(2), "b_class": unsigned(2), "shift": signed(8), "accumulate": 1,
    })


def _saturate(value, width: int):
    hi, lo = (1 << (width - 1)) - 1, -(1 << (width - 1))
    return Mux(value > hi, hi, Mux(value < lo, lo, value[:width].as_signed()))


class _OperandSide:
    """Run requests of one operand (A through ``sp_a`` or B^T through ``sp_b``) for one job:
    for each sub-array with a block left, ``valid`` words from ``base + s*stride`` in runs of
    up to ``banks``. Responses land in ``tile[s][i]``."""

    def __init__(self, m: Module, *, name: str, port, tile, subs: int, lanes: int, banks: int,
                 address_bits: int):
        self.m, self.name, self.port, self.tile = m, name, port, tile
        self.subs, self.lanes, self.banks = subs, lanes, banks
        self.s = Signal(range(subs + 1), name=f"{name}_sub")
        self.offset = Signal(range(lanes + banks), name=f"{name}_offset")
        self.addr = Signal(address_bits, name=f"{name}_addr", reset_less=True)
        self.active = Signal(name=f"{name}_active")
        self.pending = Signal(name=f"{name}_pending")    # a response arrives next cycle

    def build(self, *, start, base, stride, first_words, valid_words, first_valid, subs_valid):
        """``start``: begin a job (words ``base + s*stride + offset``); ``first_valid`` and
        ``first_words``: sub-array 0 has a block and its word count (at ``start``); after it,
        the job's registered ``valid_words`` (words per sub-array) and ``subs_valid``
        (sub-arrays with a block)."""
        m, banks = self.m, self.banks
        req = self.port.req
        # words left of this sub-array's run: a register, so a run's count is a compare with
        # a constant (the count drives the scratchpad's arbitration)
        left = Signal(range(self.lanes + 1), name=f"{self.name}_left")
        long = left > banks
        count = Mux(long, banks, left)
        m.d.comb += [req.valid.eq(self.active), req.payload.addr.eq(self.addr),
                     req.payload.count.eq(count)]
        granted = req.valid & req.ready
        sub_q = Signal(range(self.subs + 1), name=f"{self.name}_sub_q", reset_less=True)
        chunk_q = Signal(range(max(2, -(-self.lanes // banks))), name=f"{self.name}_chunk_q",
                         reset_less=True)
        count_q = Signal(range(banks + 1), name=f"{self.name}_count_q", reset_less=True)
        chunk_bits = (banks - 1).bit_length()
        m.d.sync += [sub_q.eq(self.s), chunk_q.eq(self.offset >> chunk_bits),
                     count_q.eq(count), self.pending.eq(granted)]
        seg_base = Signal(len(self.addr), name=f"{self.name}_segment", reset_less=True)
        with m.If(start):
            m.d.sync += [self.s.eq(0), self.offset.eq(0), self.addr.eq(base),
                         seg_base.eq(base), self.active.eq(first_valid), left.eq(first_words)]
        with m.Elif(granted):
            with m.If(long):
                m.d.sync += [self.offset.eq(self.offset + banks), self.addr.eq(self.addr + banks),
                             left.eq(left - banks)]
            with m.Else():
                nxt = seg_base + stride
                next_s = self.s + 1
                m.d.sync += [self.s.eq(next_s), self.offset.eq(0), self.addr.eq(nxt),
                             seg_base.eq(nxt), left.eq(valid_words)]
                more = Signal(name=f"{self.name}_more")
                m.d.comb += more.eq(0)
                with m.Switch(self.s):
                    for s in range(self.subs - 1):
                        with m.Case(s):
                            m.d.comb += more.eq(subs_valid[s + 1])
                m.d.sync += self.active.eq(more)
        # Responses: slot i of sub-array s is word i mod banks of chunk i // banks.
        resp_valid = self.port.resp_valid
        for s in range(self.subs):
            for i in range(self.lanes):
                with m.If(resp_valid & (sub_q == s) & (chunk_q == i // banks)
                          & ((i % banks) < count_q)):
                    m.d.sync += self.tile[s][i].eq(self.port.resp[i % banks])
        return granted


class MatmulEngine(wiring.Component):
    """Runs one ``MATMUL`` at a time: ``command`` is taken when idle, ``busy`` stays high until
    the instruction's last ACC row is written.

    ``fraction_bits``: per class (activation, weight, kv), ``element width - 2``; the job's
    shift is the instruction's scale minus both operands' fraction bits.
    ``pipelined``: the matrix unit's PEs register their products, and the ACC write-back's
    saturating add takes two stages (its low limb, then its high limb and the saturation): one
    cycle more each."""

    def __init__(self, *, rows: int, cols: int, sub_arrays: int, block_size: int,
                 element_width: int, exponent_width: int, acc_width: int, acc_lsb: int,
                 acc_words: int, sp_address_bits: int, sp_banks: int,
                 fraction_bits: tuple, pipelined: bool = False):
        check_positive("Accumulator words", acc_words)
        check_flag("Pipelined", pipelined)
        check_positive("Scratchpad address bits", sp_address_bits)
        check_power_of_two("Scratchpad banks", sp_banks)
        if (not isinstance(fraction_bits, tuple) or len(fraction_bits) != 3
                or not all(isinstance(f, int) and 0 <= f <= 14 for f in fraction_bits)):
            raise ValueError(f"Fraction bits must be a tuple of 3 integers from 0 to 14 (one "
                             f"per class), not {fraction_bits!r}")
        self.rows, self.cols, self.sub_arrays, self.block_size = rows, cols, sub_arrays, block_size
        self.element_width, self.exponent_width = element_width, exponent_width
        self.acc_width, self.acc_lsb, self.acc_words = acc_width, acc_lsb, acc_words
        self.sp_address_bits, self.sp_banks = sp_address_bits, sp_banks
        self.fraction_bits = fraction_bits
        self.acc_address_bits = max(1, (acc_words - 1).bit_length())
        self.word = data.StructLayout({
            "mantissas": data.ArrayLayout(signed(element_width), block_size),
            "exponent": signed(exponent_width)})
        self.acc_row = accumulator_row(cols=cols, acc_width=acc_width)
        self.tag_layout = data.StructLayout({
            "acc": unsigned(self.acc_address_bits), "rows": range(rows + 1),
            "cols": range(cols + 1), "add": 1})
        # built here so that its own argument checks run with the engine's
        self._unit = MatrixUnit(rows=rows, cols=cols, sub_arrays=sub_arrays,
                                element_width=element_width, exponent_width=exponent_width,
                                block_size=block_size, acc_width=acc_width, acc_lsb=acc_lsb,
                                tag_width=self.tag_layout.size,
                                pipelined=pipelined)
        self.pipelined = pipelined
        #: the write-back's stages after the ACC read: the saturating add of a 44-bit sum into
        #: a 40-bit word measured 49 gate levels in one (accelerator_plena)
        self.writeback_stages = 2 if pipelined else 1
        if max(block_size, rows) < 3:
            raise ValueError(f"Jobs must be at least 3 cycles apart (max(block size, rows) = "
                             f"{max(block_size, rows)}): the ACC read-modify-write takes 2")
        super().__init__(engine_ports(
            command=matmul_command_layout(sp_address_bits=sp_address_bits,
                                          acc_address_bits=self.acc_address_bits),
            sp_address_bits=sp_address_bits, sp_banks=sp_banks, word=self.word, sp_write=False,
            acc_address_bits=self.acc_address_bits, acc_row=self.acc_row))

    def __repr__(self):
        return parameter_repr(self, "rows", "cols", "sub_arrays", "block_size",
                              "element_width", "exponent_width", "acc_width", "acc_lsb",
                              "acc_words", "sp_address_bits", "sp_banks", "fraction_bits",
                              "pipelined")

    def _as_class(self, element, code):
        """``element`` (``element_width`` bits) read in class ``code``."""
        widths = [f + 2 for f in self.fraction_bits]
        out = element
        for c in (2, 1, 0):
            if widths[c] < self.element_width:
                out = Mux(code == c, Value.cast(element)[:widths[c]].as_signed(), out)
        return out

    def elaborate(self, platform):
        m = Module()
        rows, cols, subs, B = self.rows, self.cols, self.sub_arrays, self.block_size
        w = self.element_width
        unit = m.submodules.matrix_unit = self._unit
        cmd = self.command

        # -- the instruction ---------------------------------------------------------------------
        instr = Signal.like(cmd.payload, reset_less=True)
        job_shift = Signal(signed(SHIFT_WIDTH), reset_less=True)
        running = Signal()          # loader has jobs left to stage
        pending_jobs = Signal(16)   # jobs moved into the active tile, not yet written back
        staged = Signal()           # the staging tile holds a complete job
        loading = Signal()          # the staging tile is being filled
        active = Signal()           # the active tile is feeding the unit
        m.d.comb += self.busy.eq(running | staged | loading | active | (pending_jobs != 0))
        m.d.comb += cmd.ready.eq(~self.busy)
        take = cmd.valid & cmd.ready
        frac = [Const(f, 5) for f in self.fraction_bits]

        def class_frac(code):
            return Mux(code == 1, frac[1], Mux(code == 2, frac[2], frac[0]))

        # -- job counters (of the job being staged) ---------------------------------------------
        ab = self.acc_address_bits
        sb = self.sp_address_bits
        n0 = Signal(16)                         # first column of the tile
        m0 = Signal(16)                         # first row of the tile
        kc_block = Signal(17)                   # first block of the chunk: kc * S
        a_chunk = Signal(sb, reset_less=True)   # a + kc*S*a_stride + m0
        b_chunk = Signal(sb, reset_less=True)   # b + kc*S*b_stride + n0
        a_tile = Signal(sb, reset_less=True)    # a + m0 (chunk 0 of this row tile)
        b_tile = Signal(sb, reset_less=True)    # b + n0
        acc_col = Signal(ab, reset_less=True)   # d + t*d_stride (column tile)
        acc_base = Signal(ab, reset_less=True)  # d + t*d_stride + m0
        rows_left = Signal(17)
        cols_left = Signal(17)
        m.d.comb += [rows_left.eq(instr.m - m0), cols_left.eq(instr.n - n0)]
        rows_valid = Mux(rows_left > rows, rows, rows_left)
        cols_valid = Mux(cols_left > cols, cols, cols_left)
        subs_valid = [Signal(name=f"sub{s}_has_block") for s in range(subs)]
        m.d.comb += [subs_valid[s].eq(kc_block + s < instr.kb) for s in range(subs)]
        last_chunk = kc_block + subs >= instr.kb
        last_row_tile = m0 + rows >= instr.m
        last_col_tile = n0 + cols >= instr.n

        # -- staging tile and its loader --------------------------------------------------------
        stage_a = [[Signal(self.word, name=f"stage_a_s{s}_r{i}", reset_less=True)
                    for i in range(rows)] for s in range(subs)]
        stage_b = [[Signal(self.word, name=f"stage_b_s{s}_c{j}", reset_less=True)
                    for j in range(cols)] for s in range(subs)]
        start_job = Signal()
        side_a = _OperandSide(m, name="load_a", port=self.sp_a, tile=stage_a, subs=subs,
                              lanes=rows, banks=self.sp_banks, address_bits=sb)
        side_b = _OperandSide(m, name="load_b", port=self.sp_b, tile=stage_b, subs=subs,
                              lanes=cols, banks=self.sp_banks, address_bits=sb)
        # the staged job's fields (registered when its loading starts: the counters move on)
        stage_tag = Signal(self.tag_layout, reset_less=True)
        stage_subs = Signal(subs, reset_less=True)
        side_a.build(start=start_job, base=a_chunk, stride=instr.a_stride,
                     first_words=rows_valid, valid_words=stage_tag.rows,
                     first_valid=subs_valid[0], subs_valid=stage_subs)
        side_b.build(start=start_job, base=b_chunk, stride=instr.b_stride,
                     first_words=cols_valid, valid_words=stage_tag.cols,
                     first_valid=subs_valid[0], subs_valid=stage_subs)
        filled = loading & ~side_a.active & ~side_b.active & ~side_a.pending & ~side_b.pending
        transfer = Signal()
        m.d.comb += start_job.eq(running & ~loading & ~staged)
        with m.If(start_job):
            m.d.sync += [loading.eq(1), stage_tag.acc.eq(acc_base), stage_tag.rows.eq(rows_valid),
                         stage_tag.cols.eq(cols_valid),
                         stage_tag.add.eq((kc_block != 0) | instr.accumulate),
                         stage_subs.eq(Cat(*subs_valid))]
            # advance the counters to the next job: chunk, then row tile, then column tile
            with m.If(~last_chunk):
                m.d.sync += [kc_block.eq(kc_block + subs),
                             a_chunk.eq(a_chunk + (instr.a_stride << (subs - 1).bit_length())),
                             b_chunk.eq(b_chunk + (instr.b_stride << (subs - 1).bit_length()))]
            with m.Elif(~last_row_tile):
                m.d.sync += [kc_block.eq(0), m0.eq(m0 + rows), a_tile.eq(a_tile + rows),
                             a_chunk.eq(a_tile + rows), b_chunk.eq(b_tile),
                             acc_base.eq(acc_base + rows)]
            with m.Elif(~last_col_tile):
                next_acc = acc_col + instr.d_stride
                m.d.sync += [kc_block.eq(0), m0.eq(0), n0.eq(n0 + cols), a_tile.eq(instr.a),
                             a_chunk.eq(instr.a), b_tile.eq(b_tile + cols),
                             b_chunk.eq(b_tile + cols), acc_col.eq(next_acc),
                             acc_base.eq(next_acc)]
            with m.Else():
                m.d.sync += running.eq(0)
        with m.If(filled):
            m.d.sync += [loading.eq(0), staged.eq(1)]
        with m.Elif(transfer):
            m.d.sync += staged.eq(0)
        with m.If(take):
            c = cmd.payload
            m.d.sync += [instr.eq(c), running.eq(1), n0.eq(0), m0.eq(0), kc_block.eq(0),
                         a_chunk.eq(c.a), b_chunk.eq(c.b), a_tile.eq(c.a), b_tile.eq(c.b),
                         acc_col.eq(c.d), acc_base.eq(c.d),
                         job_shift.eq(c.shift - class_frac(c.a_class) - class_frac(c.b_class))]

        # -- active tile: shift registers feeding the unit ------------------------------------------
        act_a = [[Signal(data.ArrayLayout(signed(w), B), name=f"active_a_s{s}_r{i}",
                         reset_less=True) for i in range(rows)] for s in range(subs)]
        act_b = [[Signal(data.ArrayLayout(signed(w), B), name=f"active_b_s{s}_c{j}",
                         reset_less=True) for j in range(cols)] for s in range(subs)]
        act_a_exp = [[Signal(signed(self.exponent_width), name=f"active_a_exp_s{s}_r{i}",
                             reset_less=True) for i in range(rows)] for s in range(subs)]
        act_b_exp = [[Signal(signed(self.exponent_width), name=f"active_b_exp_s{s}_c{j}",
                             reset_less=True) for j in range(cols)] for s in range(subs)]
        act_tag = Signal(self.tag_layout, reset_less=True)
        beat = Signal(range(B))
        ops = unit.operands
        last_beat = beat == B - 1
        fed = ops.valid & ops.ready
        m.d.comb += transfer.eq(staged & (~active | (fed & last_beat)))
        with m.If(fed):
            m.d.sync += beat.eq(Mux(last_beat, 0, beat + 1))
            for s in range(subs):
                for tile in (act_a[s], act_b[s]):
                    for word in tile:
                        m.d.sync += word.eq(Cat(word.as_value()[w:], Const(0, w)))
            with m.If(last_beat):
                m.d.sync += active.eq(0)
        with m.If(transfer):
            m.d.sync += [active.eq(1), act_tag.eq(stage_tag)]
            for s in range(subs):
                for stage, act, exps in ((stage_a[s], act_a[s], act_a_exp[s]),
                                         (stage_b[s], act_b[s], act_b_exp[s])):
                    for word, reg, exp in zip(stage, act, exps):
                        m.d.sync += [reg.eq(Mux(stage_subs[s], word.mantissas.as_value(), 0)),
                                     exp.eq(word.exponent)]
        m.d.comb += [
            ops.valid.eq(active),
            ops.payload.last.eq(last_beat),
            ops.payload.job.shift.eq(job_shift),
            ops.payload.job.tag.eq(act_tag),
        ]
        # An operand is read in its class: each element's low element-width bits, two's
        # complement (software_model.accelerator.as_class); done on the one element per word
        # that is fed each beat, not on the whole tile.
        for s in range(subs):
            m.d.comb += [ops.payload.a[s][i].eq(self._as_class(act_a[s][i][0], instr.a_class))
                         for i in range(rows)]
            m.d.comb += [ops.payload.b[s][j].eq(self._as_class(act_b[s][j][0], instr.b_class))
                         for j in range(cols)]
            m.d.comb += [ops.payload.job.a_exp[s][i].eq(act_a_exp[s][i]) for i in range(rows)]
            m.d.comb += [ops.payload.job.b_exp[s][j].eq(act_b_exp[s][j]) for j in range(cols)]

        # -- ACC read-modify-write ------------------------------------------------------------------
        res = unit.results
        m.d.comb += res.ready.eq(1)
        tag = Signal(self.tag_layout)
        m.d.comb += tag.eq(res.payload.tag)
        got = res.valid
        m.d.comb += self.acc_read.addr.eq(tag.acc + res.payload.row)
        m.d.comb += self.acc_read.en.eq(1)
        sums = Signal.like(res.payload.c, reset_less=True)
        wb_addr = Signal(ab, reset_less=True)
        wb_tag = Signal(self.tag_layout, reset_less=True)
        wb_row = Signal.like(res.payload.row, reset_less=True)
        wb_valid = Signal()
        wb_last = Signal(reset_less=True)
        m.d.sync += [sums.eq(res.payload.c), wb_addr.eq(tag.acc + res.payload.row),
                     wb_tag.eq(tag), wb_row.eq(res.payload.row), wb_valid.eq(got),
                     wb_last.eq(res.payload.last)]
        old = self.acc_read.data
        new = Signal(self.acc_row)
        if self.pipelined:
            # stage 1: the low limb of addend + sum with its carry; stage 2: the high limb, the
            # saturation, the write. A job's rows reuse an ACC word only max(B, rows) >= 3
            # cycles later, after this write.
            sw = len(sums[0])
            limb = (sw + 1) // 2
            kept = Signal(self.acc_row, reset_less=True)
            wb2_addr = Signal(ab, reset_less=True)
            wb2_tag = Signal(self.tag_layout, reset_less=True)
            wb2_row = Signal.like(res.payload.row, reset_less=True)
            wb2_valid = Signal()
            wb2_last = Signal(reset_less=True)
            m.d.sync += [kept.eq(old), wb2_addr.eq(wb_addr), wb2_tag.eq(wb_tag),
                         wb2_row.eq(wb_row), wb2_valid.eq(wb_valid), wb2_last.eq(wb_last)]
            for j in range(cols):
                addend = Signal(signed(sw), name=f"wb_addend{j}")      # sign-extended
                m.d.comb += addend.eq(Mux(wb_tag.add, old[j], 0))
                total = split_add(m, addend, sums[j], limb,
                                  names=(f"wb_low{j}", f"wb_high_acc{j}", f"wb_high_sum{j}"))
                m.d.comb += new[j].eq(Mux(j < wb2_tag.cols, _saturate(total, self.acc_width),
                                          kept[j]))
            wb_addr, wb_row, wb_tag, wb_valid, wb_last = wb2_addr, wb2_row, wb2_tag, \
                wb2_valid, wb2_last
        else:
            for j in range(cols):
                addend = Mux(wb_tag.add, old[j], 0)
                m.d.comb += new[j].eq(Mux(j < wb_tag.cols, _saturate(addend + sums[j],
                                                                     self.acc_width), old[j]))
        m.d.comb += [
            self.acc_write.addr.eq(wb_addr),
            self.acc_write.data.eq(new),
            self.acc_write.en.eq(wb_valid & (wb_row < wb_tag.rows)),
        ]
        retired = wb_valid & wb_last
        m.d.sync += pending_jobs.eq(pending_jobs + transfer - retired)
        return m
