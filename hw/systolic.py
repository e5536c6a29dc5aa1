"""Integer systolic arrays: output-stationary and weight-stationary, streaming, double-buffered.

Both arrays move every operand, partial sum and control flag one PE per cycle through registers, so
no signal crosses the array combinationally and nothing is broadcast: the logic depth of a PE is the
same in a 4x4 and a 64x64 array. Input gaps travel through the array as bubbles (a valid bit rides
with the data); output backpressure never stalls the array, because a job (output-stationary) or a
row of A (weight-stationary) is only accepted when the result buffer has room reserved for what it
will produce (credits, as in Gemmini's controller).

Numbers: A and B are signed; products are exact; the accumulator is ``accumulator_width`` bits and
either wraps (two's complement) or saturates after every addition, in order of increasing k. The
golden model is :func:`software_model.systolic.gemm`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from gen.config.systolic import SystolicArrayConfig

__all__ = ["OutputStationaryPE", "OutputStationaryArray", "ResultBuffer", "WeightStationaryPE",
           "WeightStationaryArray", "saturating_add"]


def saturating_add(a, b, width: int):
    """``a + b`` clamped to the signed ``width``-bit range (a, b already fit in it)."""
    total = (a + b)  # width + 1 bits: cannot overflow
    hi = (1 << (width - 1)) - 1
    lo = -(1 << (width - 1))
    return Mux(total > hi, hi, Mux(total < lo, lo, total[:width].as_signed()))


def accumulate(acc, product, width: int, overflow: str):
    if overflow == "saturate":
        return saturating_add(acc, product, width)
    return (acc + product)[:width].as_signed()


def _check_config(config) -> None:
    if not isinstance(config, SystolicArrayConfig):
        raise TypeError(f"Config must be a SystolicArrayConfig, not {config!r}")


def _delay(m: Module, signal, stages: int, name: str, *, reset_less: bool = True):
    """``signal`` delayed by ``stages`` registers (skew and deskew lines)."""
    for n in range(stages):
        reg = Signal.like(signal, name=f"{name}_d{n}", reset_less=reset_less)
        m.d.sync += reg.eq(signal)
        signal = reg
    return signal


def _pe_grid(m: Module, rows: int, cols: int, make_pe) -> list[list]:
    pes = [[make_pe(i, j) for j in range(cols)] for i in range(rows)]
    for i in range(rows):
        for j in range(cols):
            m.submodules[f"pe_{i}_{j}"] = pes[i][j]
    return pes


def _systolic_flow(m: Module, pes, edge: dict, *, horizontal: bool, skew: bool = True,
                   resettable: tuple[str, ...] = ()) -> None:
    """Chain ``<stem>_out`` of each PE to ``<stem>_in`` of the next along rows (``horizontal``) or
    columns, fed at the array edge by ``edge[stem](lane)``, lane k delayed by k cycles when
    ``skew`` (so operands meet their partners on the diagonal wave). Valid bits (``resettable``)
    keep their reset; data registers are reset-less."""
    rows, cols = len(pes), len(pes[0])
    lanes, length = (rows, cols) if horizontal else (cols, rows)

    def at(lane, pos):
        return pes[lane][pos] if horizontal else pes[pos][lane]

    for lane in range(lanes):
        for stem, source in edge.items():
            value = source(lane)
            if skew:
                value = _delay(m, value, lane, f"{stem}_skew{lane}",
                               reset_less=stem not in resettable)
            m.d.comb += getattr(at(lane, 0), f"{stem}_in").eq(value)
            for pos in range(1, length):
                m.d.comb += getattr(at(lane, pos), f"{stem}_in").eq(
                    getattr(at(lane, pos - 1), f"{stem}_out"))


# ------------------------------------------------------------------------------------------------
# Output stationary
# ------------------------------------------------------------------------------------------------


class OutputStationaryPE(wiring.Component):
    """One PE of the output-stationary array.

    Accumulates ``a * b`` into ``acc`` while ``valid``; ``first`` restarts the sum, ``last`` moves the
    finished sum into a shadow register so the next job can start at once (double buffering). The
    shadow drains into this column's result chain when the chain slot above is free: results of the
    PEs above pass first, so a column emits its rows top to bottom, back to back.
    """

    def __init__(self, *, a_width: int, b_width: int, acc_width: int, overflow: str):
        if acc_width < a_width + b_width:
            raise ValueError(f"Accumulator width must be at least {a_width + b_width}, "
                             f"not {acc_width}")
        self.acc_width = acc_width
        self.overflow = overflow
        super().__init__({
            "a_in": In(signed(a_width)), "b_in": In(signed(b_width)),
            "valid_in": In(1), "first_in": In(1), "last_in": In(1),
            "a_out": Out(signed(a_width)), "b_out": Out(signed(b_width)),
            "valid_out": Out(1), "first_out": Out(1), "last_out": Out(1),
            "chain_in": In(signed(acc_width)), "chain_valid_in": In(1),
            "chain_out": Out(signed(acc_width)), "chain_valid_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.acc_width
        acc = Signal(signed(w), reset_less=True)
        shadow = Signal(signed(w), reset_less=True)
        shadow_valid = Signal()
        a_reg = Signal.like(self.a_out, reset_less=True)
        b_reg = Signal.like(self.b_out, reset_less=True)
        chain = Signal(signed(w), reset_less=True)
        chain_valid = Signal()
        valid_reg, first_reg, last_reg = Signal(), Signal(reset_less=True), Signal(reset_less=True)

        m.d.sync += [a_reg.eq(self.a_in), b_reg.eq(self.b_in), valid_reg.eq(self.valid_in),
                     first_reg.eq(self.first_in), last_reg.eq(self.last_in)]
        m.d.comb += [self.a_out.eq(a_reg), self.b_out.eq(b_reg), self.valid_out.eq(valid_reg),
                     self.first_out.eq(first_reg), self.last_out.eq(last_reg)]

        product = Signal(signed(self.a_in.shape().width + self.b_in.shape().width))
        m.d.comb += product.eq(self.a_in * self.b_in)
        total = Signal(signed(w))
        m.d.comb += total.eq(Mux(self.first_in, product,
                                 accumulate(acc, product, w, self.overflow)))
        with m.If(self.valid_in):
            m.d.sync += acc.eq(total)

        # Result chain: through traffic has priority, the shadow waits for a free slot.
        drained = Signal()
        with m.If(self.chain_valid_in):
            m.d.sync += [chain.eq(self.chain_in), chain_valid.eq(1)]
        with m.Elif(shadow_valid):
            m.d.sync += [chain.eq(shadow), chain_valid.eq(1)]
            m.d.comb += drained.eq(1)
        with m.Else():
            m.d.sync += chain_valid.eq(0)
        with m.If(self.valid_in & self.last_in):
            m.d.sync += [shadow.eq(total), shadow_valid.eq(1)]
        with m.Elif(drained):
            m.d.sync += shadow_valid.eq(0)
        m.d.comb += [self.chain_out.eq(chain), self.chain_valid_out.eq(chain_valid)]
        return m


def _operand_layout(config: SystolicArrayConfig):
    return data.StructLayout({
        "a": data.ArrayLayout(signed(config.a_width), config.rows),
        "b": data.ArrayLayout(signed(config.b_width), config.cols),
        "last": 1,
    })


def _result_layout(config: SystolicArrayConfig):
    return data.StructLayout({
        "c": data.ArrayLayout(signed(config.accumulator_width), config.cols),
        "last": 1,
    })


class ResultBuffer:
    """Output FIFO plus the credit counter that keeps it from ever overflowing.

    The array drives ``reserve`` with the rows a piece of work will produce in the cycle it admits
    that work (only when ``credits`` covers it); a credit returns when a row leaves ``results``.
    Shared by every array that cannot stall its PEs (systolic, flattened).

    The FIFO is a plain ``SyncFIFO``: it takes a write whenever fewer than ``depth`` rows are held,
    which is exactly what the credits count. ``SyncFIFOBuffered`` does not: at depth 2 it refuses
    the write in the cycle after one lands in an empty queue (the row is still moving to its
    output register), and the row was lost.
    """

    def __init__(self, m: Module, *, depth: int, width: int, results):
        self.fifo = m.submodules.result_buffer = SyncFIFO(width=width, depth=depth)
        self.credits = Signal(range(depth + 1), init=depth)
        self.reserve = Signal(range(depth + 1))
        popped = Signal()
        m.d.comb += [
            results.payload.eq(self.fifo.r_data),
            results.valid.eq(self.fifo.r_rdy),
            self.fifo.r_en.eq(results.ready),
            popped.eq(results.valid & results.ready),
        ]
        m.d.sync += self.credits.eq(self.credits - self.reserve + popped)


class OutputStationaryArray(wiring.Component):
    """Output-stationary systolic array.

    ``operands``: one beat per k: column k of A (``a[rows]``) and row k of B (``b[cols]``); ``last``
    on the K-th beat ends the job (1 <= K <= ``max_k``). ``results``: ``rows`` beats per job, row r
    of C = A . B, ``last`` on row ``rows - 1``.

    A job's last beat is accepted only when (1) ``rows`` result rows are free in the result buffer
    and (2) at least ``rows`` cycles passed since the previous job's last beat, the rate at which a
    column's result chain drains; every other beat is accepted at once.
    """

    def __init__(self, config: SystolicArrayConfig):
        _check_config(config)
        if config.dataflow != "output_stationary":
            raise ValueError(f"OutputStationaryArray needs dataflow 'output_stationary', "
                             f"not {config.dataflow!r}")
        self.config = config
        super().__init__({
            "operands": In(stream.Signature(_operand_layout(config))),
            "results": Out(stream.Signature(_result_layout(config))),
        })

    def elaborate(self, platform):
        cfg = self.config
        rows, cols, w = cfg.rows, cfg.cols, cfg.accumulator_width
        m = Module()
        buffer = ResultBuffer(m, depth=cfg.result_buffer_rows,
                              width=_result_layout(cfg).size, results=self.results)

        # -- admission: hold a job's last beat until its results have room -----------------------
        since_last = Signal(range(rows + 1), init=rows)
        in_job = Signal()
        last_ok = Signal()
        m.d.comb += [
            last_ok.eq((buffer.credits >= rows) & (since_last >= rows)),
            self.operands.ready.eq(~self.operands.payload.last | last_ok),
        ]
        fire = self.operands.valid & self.operands.ready
        fire_last = fire & self.operands.payload.last
        with m.If(fire_last):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < rows):
            m.d.sync += since_last.eq(since_last + 1)
        with m.If(fire):
            m.d.sync += in_job.eq(~self.operands.payload.last)
        m.d.comb += buffer.reserve.eq(Mux(fire_last, rows, 0))

        # -- input register, then skew: row i late by i cycles, column j by j ----------------------
        beat = Signal(_operand_layout(cfg), reset_less=True)
        beat_valid, beat_first = Signal(), Signal(reset_less=True)
        m.d.sync += [beat.eq(self.operands.payload), beat_valid.eq(fire), beat_first.eq(~in_job)]

        pes = _pe_grid(m, rows, cols, lambda i, j: OutputStationaryPE(
            a_width=cfg.a_width, b_width=cfg.b_width, acc_width=w, overflow=cfg.overflow))
        _systolic_flow(m, pes, {"a": lambda i: beat.a[i], "valid": lambda i: beat_valid,
                                "first": lambda i: beat_first, "last": lambda i: beat.last},
                       horizontal=True, resettable=("valid",))
        _systolic_flow(m, pes, {"b": lambda j: beat.b[j]}, horizontal=False)
        _systolic_flow(m, pes, {"chain": lambda j: Const(0, signed(w)),
                                "chain_valid": lambda j: Const(0)}, horizontal=False, skew=False)

        # -- deskew the column outputs (column j is j cycles late) and number the rows -------------
        bottom = pes[rows - 1]
        row = Signal(_result_layout(cfg))
        for j in range(cols):
            m.d.comb += row.c[j].eq(_delay(m, bottom[j].chain_out, cols - 1 - j, f"c_deskew{j}"))
        row_valid = bottom[cols - 1].chain_valid_out
        row_index = Signal(range(rows))
        with m.If(row_valid):
            m.d.sync += row_index.eq(Mux(row_index == rows - 1, 0, row_index + 1))
        m.d.comb += [
            row.last.eq(row_index == rows - 1),
            buffer.fifo.w_data.eq(row),
            buffer.fifo.w_en.eq(row_valid),
        ]
        return m


# ------------------------------------------------------------------------------------------------
# Weight stationary
# ------------------------------------------------------------------------------------------------


class WeightStationaryPE(wiring.Component):
    """One PE of the weight-stationary array.

    Holds two weights (double buffering: one in use, one loading). Weights travel down the column on
    a load bus tagged with their destination row; the job's last weight beat zeroes the rows it
    passes below its own, so a short reduction (K < rows) leaves nothing stale. Activations flow
    right with the buffer id they use; partial sums flow down.
    """

    def __init__(self, *, row: int, rows: int, a_width: int, b_width: int, acc_width: int,
                 overflow: str, bottom: bool):
        self.row = row
        self.acc_width = acc_width
        self.overflow = overflow
        self.bottom = bottom
        tag = unsigned(max(1, (rows - 1).bit_length()))
        super().__init__({
            "a_in": In(signed(a_width)), "a_valid_in": In(1), "a_buf_in": In(1), "a_last_in": In(1),
            "a_out": Out(signed(a_width)), "a_valid_out": Out(1), "a_buf_out": Out(1),
            "a_last_out": Out(1),
            "w_in": In(signed(b_width)), "w_valid_in": In(1), "w_tag_in": In(tag),
            "w_last_in": In(1), "w_buf_in": In(1),
            "w_out": Out(signed(b_width)), "w_valid_out": Out(1), "w_tag_out": Out(tag),
            "w_last_out": Out(1), "w_buf_out": Out(1),
            "psum_in": In(signed(acc_width)), "psum_out": Out(signed(acc_width)),
        })

    def elaborate(self, platform):
        m = Module()
        weights = [Signal(self.w_in.shape(), name=f"weight{b}", reset_less=True) for b in (0, 1)]

        # Activation path (to the right) and load bus (down): one register per hop.
        for src, dst, reset_less in (
                (self.a_in, self.a_out, True), (self.a_valid_in, self.a_valid_out, False),
                (self.a_buf_in, self.a_buf_out, True), (self.a_last_in, self.a_last_out, True),
                (self.w_in, self.w_out, True), (self.w_valid_in, self.w_valid_out, False),
                (self.w_tag_in, self.w_tag_out, True), (self.w_last_in, self.w_last_out, True),
                (self.w_buf_in, self.w_buf_out, True)):
            reg = Signal.like(src, name=f"{dst.name}_reg", reset_less=reset_less)
            m.d.sync += reg.eq(src)
            m.d.comb += dst.eq(reg)

        mine = self.w_tag_in == self.row
        below_last = self.w_last_in & (self.w_tag_in < self.row) if self.row else Const(0)
        with m.If(self.w_valid_in & (mine | below_last)):
            for b in (0, 1):
                with m.If(self.w_buf_in == b):
                    m.d.sync += weights[b].eq(Mux(mine, self.w_in, 0))

        weight = Mux(self.a_buf_in, weights[1], weights[0])
        product = Signal(signed(self.a_in.shape().width + self.w_in.shape().width))
        m.d.comb += product.eq(self.a_in * weight)
        psum = Signal(signed(self.acc_width), reset_less=True)
        m.d.sync += psum.eq(accumulate(self.psum_in, product, self.acc_width, self.overflow))
        m.d.comb += self.psum_out.eq(psum)
        return m


class WeightStationaryArray(wiring.Component):
    """Weight-stationary systolic array.

    ``weights``: rows 0..K-1 of B (``b[cols]``), ``last`` on row K-1 (K <= rows). ``activations``:
    rows of A (``a[rows]``; lanes >= K meet zero weights), ``last`` on the job's final row.
    ``results``: one row of C per activation row, ``last`` on the job's final row. The n-th weight
    packet pairs with the n-th activation packet.

    Weights for job n+1 load while job n computes; a weight packet is accepted once the activations
    of the job two back have all entered (its buffer is free), an activation once its job's weights
    have all entered and the result buffer has a free row.
    """

    def __init__(self, config: SystolicArrayConfig):
        _check_config(config)
        if config.dataflow != "weight_stationary":
            raise ValueError(f"WeightStationaryArray needs dataflow 'weight_stationary', "
                             f"not {config.dataflow!r}")
        self.config = config
        super().__init__({
            "weights": In(stream.Signature(data.StructLayout({
                "b": data.ArrayLayout(signed(config.b_width), config.cols), "last": 1}))),
            "activations": In(stream.Signature(data.StructLayout({
                "a": data.ArrayLayout(signed(config.a_width), config.rows), "last": 1}))),
            "results": Out(stream.Signature(_result_layout(config))),
        })

    def elaborate(self, platform):
        cfg = self.config
        rows, cols, w = cfg.rows, cfg.cols, cfg.accumulator_width
        m = Module()
        buffer = ResultBuffer(m, depth=cfg.result_buffer_rows,
                              width=_result_layout(cfg).size, results=self.results)

        # -- admission ---------------------------------------------------------------------------
        loaded = Signal(range(3))       # weight packets fully in whose activations are not
        w_buf, a_buf = Signal(), Signal()
        w_tag = Signal(range(max(2, rows)))
        m.d.comb += [
            self.weights.ready.eq(loaded <= 1),
            self.activations.ready.eq((loaded >= 1) & (buffer.credits >= 1)),
        ]
        w_fire = self.weights.valid & self.weights.ready
        a_fire = self.activations.valid & self.activations.ready
        w_done = w_fire & self.weights.payload.last
        a_done = a_fire & self.activations.payload.last
        m.d.sync += loaded.eq(loaded + w_done - a_done)
        with m.If(w_fire):
            m.d.sync += w_tag.eq(Mux(self.weights.payload.last, 0, w_tag + 1))
        with m.If(w_done):
            m.d.sync += w_buf.eq(~w_buf)
        with m.If(a_done):
            m.d.sync += a_buf.eq(~a_buf)
        m.d.comb += buffer.reserve.eq(a_fire)

        # -- input registers ---------------------------------------------------------------------
        wbeat = Signal.like(self.weights.payload, reset_less=True)
        wbeat_valid, wbeat_tag, wbeat_buf = Signal(), Signal.like(w_tag, reset_less=True), \
            Signal(reset_less=True)
        abeat = Signal.like(self.activations.payload, reset_less=True)
        abeat_valid, abeat_buf = Signal(), Signal(reset_less=True)
        m.d.sync += [
            wbeat.eq(self.weights.payload), wbeat_valid.eq(w_fire), wbeat_tag.eq(w_tag),
            wbeat_buf.eq(w_buf),
            abeat.eq(self.activations.payload), abeat_valid.eq(a_fire), abeat_buf.eq(a_buf),
        ]

        pes = _pe_grid(m, rows, cols, lambda i, j: WeightStationaryPE(
            row=i, rows=rows, a_width=cfg.a_width, b_width=cfg.b_width, acc_width=w,
            overflow=cfg.overflow, bottom=(i == rows - 1)))
        _systolic_flow(m, pes, {"a": lambda i: abeat.a[i], "a_valid": lambda i: abeat_valid,
                                "a_buf": lambda i: abeat_buf, "a_last": lambda i: abeat.last},
                       horizontal=True, resettable=("a_valid",))
        _systolic_flow(m, pes, {"w": lambda j: wbeat.b[j], "w_valid": lambda j: wbeat_valid,
                                "w_tag": lambda j: wbeat_tag, "w_last": lambda j: wbeat.last,
                                "w_buf": lambda j: wbeat_buf},
                       horizontal=False, resettable=("w_valid",))
        _systolic_flow(m, pes, {"psum": lambda j: Const(0, signed(w))}, horizontal=False,
                       skew=False)

        # -- bottom row: column j's sum leaves j cycles after column 0's; deskew -------------------
        bottom = pes[rows - 1]
        row = Signal(_result_layout(cfg))
        for j in range(cols):
            m.d.comb += row.c[j].eq(_delay(m, bottom[j].psum_out, cols - 1 - j, f"c_deskew{j}"))
        m.d.comb += [
            row.last.eq(bottom[cols - 1].a_last_out),
            buffer.fifo.w_data.eq(row),
            buffer.fifo.w_en.eq(bottom[cols - 1].a_valid_out),
        ]
        return m
