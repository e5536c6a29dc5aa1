"""Integer systolic arrays: output-stationary and weight-stationary, streaming, double-buffered.

Both arrays move every operand, partial sum and control flag one PE per cycle through registers, so
no signal crosses the array combinationally and nothing is broadcast: the logic depth of a PE is the
same in a 4x4 and a 64x64 array. Input gaps travel through the array as bubbles (a valid bit rides
with the data); output backpressure never stalls the array, because a job (output-stationary) or a
row of A (weight-stationary) is only accepted when the result buffer has room reserved for what it
will produce (credits, as in Gemmini's controller; :class:`hw.primitives.CreditBuffer`).

Numbers: A and B are signed; products are exact; the accumulator is ``acc_width`` bits and either
wraps (two's complement) or saturates after every addition, in order of increasing k. The golden
model is :func:`software_model.systolic.gemm`, the cycle model
:func:`software_model.systolic.os_schedule` / ``ws_schedule``.

Neighbouring PEs are joined with ``wiring.connect`` on link signatures (:class:`RowOperandLink`,
:class:`ColumnOperandLink`, :class:`ResultChainLink`, :class:`ActivationLink`,
:class:`WeightLoadLink`, :class:`PartialSumLink`). :class:`OutputStationaryGrid` (a PE grid with its
skew and deskew) is shared with the flattened array, which instantiates one per sub-array.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.primitives import (CreditBuffer, JobAdmission, check_choice, check_flag, check_positive,
                           delay, parameter_repr)

__all__ = ["OVERFLOW_MODES", "OutputStationaryPE", "OutputStationaryGrid", "OutputStationaryArray",
           "WeightStationaryPE", "WeightStationaryArray", "RowOperandLink", "ColumnOperandLink",
           "ResultChainLink", "ActivationLink", "WeightLoadLink", "PartialSumLink",
           "RowControl", "skew_control", "saturating_add", "accumulate"]

OVERFLOW_MODES = ("wrap", "saturate")


def saturating_add(a, b, width: int):
    """``a + b`` clamped to the signed ``width``-bit range (a, b already fit in it)."""
    total = (a + b)  # width + 1 bits: cannot overflow
    hi = (1 << (width - 1)) - 1
    lo = -(1 << (width - 1))
    return Mux(total > hi, hi, Mux(total < lo, lo, total[:width].as_signed()))


def accumulate(acc, product, width: int, overflow: str):
    """``acc + product`` wrapped or saturated to ``width`` signed bits."""
    if overflow == "saturate":
        return saturating_add(acc, product, width)
    return (acc + product)[:width].as_signed()


def check_arithmetic(*, a_width, b_width, acc_width, overflow) -> None:
    """Operand widths 2..64, an accumulator at least as wide as a product, a known overflow."""
    for name, value in (("A width", a_width), ("B width", b_width)):
        check_positive(name, value, minimum=2)
    check_positive("Accumulator width", acc_width, minimum=2)
    if acc_width < a_width + b_width:
        raise ValueError(f"Accumulator width must be at least {a_width + b_width} (the product "
                         f"width), not {acc_width}")
    check_choice("Overflow", overflow, OVERFLOW_MODES)


# ------------------------------------------------------------------------------------------------
# Links between neighbouring PEs
# ------------------------------------------------------------------------------------------------



def _keep_arithmetic(component, *, a_width, b_width, acc_width, overflow, product_register):
    """Check a PE's or an array's arithmetic arguments (operand and accumulator widths,
    overflow mode, product register) and keep them on ``component``."""
    check_arithmetic(a_width=a_width, b_width=b_width, acc_width=acc_width, overflow=overflow)
    check_flag("Product register", product_register)
    component.a_width, component.b_width = a_width, b_width
    component.acc_width, component.overflow = acc_width, overflow
    component.product_register = product_register

class RowOperandLink(wiring.Signature):
    """Output-stationary: what moves one PE to the right each cycle (A and the job control)."""

    def __init__(self, a_width: int):
        super().__init__({"a": Out(signed(a_width)), "valid": Out(1), "first": Out(1),
                          "last": Out(1)})


class ColumnOperandLink(wiring.Signature):
    """Output-stationary: what moves one PE down each cycle (B)."""

    def __init__(self, b_width: int):
        super().__init__({"b": Out(signed(b_width))})


class ResultChainLink(wiring.Signature):
    """Output-stationary: finished sums draining down a column, one slot per PE."""

    def __init__(self, acc_width: int):
        super().__init__({"value": Out(signed(acc_width)), "valid": Out(1)})


class ActivationLink(wiring.Signature):
    """Weight-stationary: an activation moving right, with the weight buffer it multiplies."""

    def __init__(self, a_width: int):
        super().__init__({"a": Out(signed(a_width)), "valid": Out(1), "buffer": Out(1),
                          "last": Out(1)})


class WeightLoadLink(wiring.Signature):
    """Weight-stationary: the load bus moving down a column, each weight tagged with its row."""

    def __init__(self, b_width: int, rows: int):
        super().__init__({"w": Out(signed(b_width)), "valid": Out(1),
                          "tag": Out(unsigned(max(1, (rows - 1).bit_length()))), "last": Out(1),
                          "buffer": Out(1)})


class PartialSumLink(wiring.Signature):
    """Weight-stationary: a partial sum moving down a column."""

    def __init__(self, acc_width: int):
        super().__init__({"value": Out(signed(acc_width))})


#: Job control of one row of an output-stationary grid (already skewed to that row).
RowControl = data.StructLayout({"valid": 1, "first": 1, "last": 1})


def skew_control(m: Module, *, valid, first, last, rows: int, name: str = "control"):
    """Per-row control of an output-stationary grid: row i sees the beat's control i cycles late.
    Built once and shared by every grid that receives the same beats (the flattened array)."""
    out = []
    for i in range(rows):
        row = Signal(RowControl, name=f"{name}_row{i}")
        m.d.comb += [
            row.valid.eq(delay(m, valid, i, name=f"{name}_valid_skew{i}", reset_less=False)),
            row.first.eq(delay(m, first, i, name=f"{name}_first_skew{i}")),
            row.last.eq(delay(m, last, i, name=f"{name}_last_skew{i}")),
        ]
        out.append(row)
    return out


# ------------------------------------------------------------------------------------------------
# Output stationary
# ------------------------------------------------------------------------------------------------


class OutputStationaryPE(wiring.Component):
    """One PE of the output-stationary array.

    Accumulates ``a * b`` into ``acc`` while ``valid``; ``first`` restarts the sum, ``last`` moves the
    finished sum into a shadow register so the next job can start at once (double buffering). The
    shadow drains into this column's result chain when the chain slot above is free: results of the
    PEs above pass first, so a column emits its rows top to bottom, back to back.

    ``product_register``: register the product (and the control it goes with) before the
    accumulate, so multiply and add are separate stages: one cycle more latency, the same rate.
    """

    def __init__(self, *, a_width: int, b_width: int, acc_width: int, overflow: str = "wrap",
                 product_register: bool = False):
        _keep_arithmetic(self, a_width=a_width, b_width=b_width, acc_width=acc_width,
                         overflow=overflow, product_register=product_register)
        super().__init__({
            "west": In(RowOperandLink(a_width)), "east": Out(RowOperandLink(a_width)),
            "north": In(ColumnOperandLink(b_width)), "south": Out(ColumnOperandLink(b_width)),
            "chain_in": In(ResultChainLink(acc_width)), "chain_out": Out(ResultChainLink(acc_width)),
        })

    def __repr__(self):
        return parameter_repr(self, "a_width", "b_width", "acc_width", "overflow",
                              "product_register")

    def elaborate(self, platform):
        m = Module()
        w = self.acc_width
        west, east = self.west, self.east
        acc = Signal(signed(w), reset_less=True)
        shadow = Signal(signed(w), reset_less=True)
        shadow_valid = Signal()

        # Operands and control move one PE per cycle; only the valid bit is reset.
        for src, dst, reset_less in ((west.a, east.a, True), (west.valid, east.valid, False),
                                     (west.first, east.first, True), (west.last, east.last, True),
                                     (self.north.b, self.south.b, True)):
            m.d.comb += dst.eq(delay(m, src, 1, name=f"{dst.name}_reg", reset_less=reset_less))

        product = Signal(signed(self.a_width + self.b_width))
        m.d.comb += product.eq(west.a * self.north.b)
        # Accumulate stage: the product and its control, one cycle later with a product register.
        # Every PE adds the same cycle, so the array only runs one cycle behind.
        valid, first, last = west.valid, west.first, west.last
        if self.product_register:
            staged = Signal.like(product, name="product_r", reset_less=True)
            m.d.sync += staged.eq(product)
            product = staged
            valid = delay(m, west.valid, 1, name="product_valid", reset_less=False)
            first = delay(m, west.first, 1, name="product_first")
            last = delay(m, west.last, 1, name="product_last")
        total = Signal(signed(w))
        m.d.comb += total.eq(Mux(first, product, accumulate(acc, product, w, self.overflow)))
        with m.If(valid):
            m.d.sync += acc.eq(total)

        # Result chain: through traffic has priority, the shadow waits for a free slot.
        chain = Signal(signed(w), reset_less=True)
        chain_valid = Signal()
        drained = Signal()
        with m.If(self.chain_in.valid):
            m.d.sync += [chain.eq(self.chain_in.value), chain_valid.eq(1)]
        with m.Elif(shadow_valid):
            m.d.sync += [chain.eq(shadow), chain_valid.eq(1)]
            m.d.comb += drained.eq(1)
        with m.Else():
            m.d.sync += chain_valid.eq(0)
        with m.If(valid & last):
            m.d.sync += [shadow.eq(total), shadow_valid.eq(1)]
        with m.Elif(drained):
            m.d.sync += shadow_valid.eq(0)
        m.d.comb += [self.chain_out.value.eq(chain), self.chain_out.valid.eq(chain_valid)]
        return m


class OutputStationaryGrid(wiring.Component):
    """A rows x cols grid of :class:`OutputStationaryPE` with its input skew and output deskew.

    Each cycle ``a`` (column k of A, row i of the tile in lane i) and ``b`` (row k of B) enter;
    row i's operands are delayed i cycles and column j's j cycles so partners meet on the diagonal
    wave. ``control[i]`` is row i's job control, already skewed (:func:`skew_control`; the parent
    builds it, so grids fed the same beats share it). Finished rows of C leave on ``c`` with
    ``c_valid``, top row first, one per cycle, all columns aligned.
    """

    def __init__(self, *, rows: int, cols: int, a_width: int, b_width: int, acc_width: int,
                 overflow: str = "wrap", product_register: bool = False):
        check_positive("Rows", rows)
        check_positive("Columns", cols)
        _keep_arithmetic(self, a_width=a_width, b_width=b_width, acc_width=acc_width,
                         overflow=overflow, product_register=product_register)
        self.rows, self.cols = rows, cols
        super().__init__({
            "a": In(data.ArrayLayout(signed(a_width), rows)),
            "b": In(data.ArrayLayout(signed(b_width), cols)),
            "control": In(data.ArrayLayout(RowControl, rows)),
            "c": Out(data.ArrayLayout(signed(acc_width), cols)),
            "c_valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        pes = _pe_grid(m, rows, cols, lambda i, j: OutputStationaryPE(
            a_width=self.a_width, b_width=self.b_width, acc_width=self.acc_width,
            overflow=self.overflow, product_register=self.product_register))
        for i in range(rows):
            left = pes[i][0].west
            m.d.comb += [
                left.a.eq(delay(m, self.a[i], i, name=f"a_skew{i}")),
                left.valid.eq(self.control[i].valid),
                left.first.eq(self.control[i].first),
                left.last.eq(self.control[i].last),
            ]
            for j in range(1, cols):
                wiring.connect(m, pes[i][j - 1].east, pes[i][j].west)
        for j in range(cols):
            top = pes[0][j]
            m.d.comb += [top.north.b.eq(delay(m, self.b[j], j, name=f"b_skew{j}")),
                         top.chain_in.value.eq(0), top.chain_in.valid.eq(0)]
            for i in range(1, rows):
                wiring.connect(m, pes[i - 1][j].south, pes[i][j].north)
                wiring.connect(m, pes[i - 1][j].chain_out, pes[i][j].chain_in)
        # Column j's chain runs j cycles behind column 0's: deskew so a row leaves aligned.
        bottom = pes[rows - 1]
        for j in range(cols):
            m.d.comb += self.c[j].eq(delay(m, bottom[j].chain_out.value, cols - 1 - j,
                                           name=f"c_deskew{j}"))
        m.d.comb += self.c_valid.eq(bottom[cols - 1].chain_out.valid)
        return m


def _pe_grid(m, rows, cols, make):
    """``rows`` x ``cols`` PEs, ``make(i, j)`` each, added to ``m`` as ``pe_<i>_<j>`` in row-major
    order (the order fixes the Verilog's module order); returned as a list of rows."""
    pes = [[make(i, j) for j in range(cols)] for i in range(rows)]
    for i in range(rows):
        for j in range(cols):
            m.submodules[f"pe_{i}_{j}"] = pes[i][j]
    return pes


class _SystolicArray(wiring.Component):
    """What the output- and weight-stationary arrays share: the array and arithmetic arguments
    (checked, then kept), the result row layout ``{c[cols], last}`` and the repr."""

    def _arguments(self, *, rows, cols, a_width, b_width, acc_width, overflow,
                   product_register):
        check_positive("Rows", rows)
        check_positive("Columns", cols)
        _keep_arithmetic(self, a_width=a_width, b_width=b_width, acc_width=acc_width,
                         overflow=overflow, product_register=product_register)
        self.rows, self.cols = rows, cols
        self.result_layout = data.StructLayout({"c": data.ArrayLayout(signed(acc_width), cols),
                                                "last": 1})

    def _streams(self, **inputs):
        """The component's ports: the input streams in order, then ``results``."""
        super().__init__({**{name: In(stream.Signature(layout)) for name, layout in inputs.items()},
                          "results": Out(stream.Signature(self.result_layout))})

    def __repr__(self):
        return parameter_repr(self, "rows", "cols", "a_width", "b_width", "acc_width",
                              "overflow", "result_depth", "product_register")


class OutputStationaryArray(_SystolicArray):
    """Output-stationary systolic array.

    ``operands``: one beat per k: column k of A (``a[i]`` = A[i, k]) and row k of B (``b[j]`` =
    B[k, j]); ``last`` on the K-th beat ends the job (any K >= 1). ``results``: ``rows`` beats per
    job, beat r is row r of C = A . B (``c[j]`` = C[r, j]), ``last`` on row ``rows - 1``.

    A job's last beat is accepted only when (1) ``rows`` result rows are free in the result buffer
    (``result_depth`` rows, default 2 * rows) and (2) at least ``rows`` cycles passed since the
    previous job's last beat, the rate at which a column's result chain drains; every other beat is
    accepted at once. So ``operands.ready`` depends combinationally on ``operands.payload.last``.

    ``product_register``: every PE registers its product before the accumulate (one cycle more
    latency, :func:`software_model.systolic.os_latency`).
    """

    def __init__(self, *, rows: int, cols: int, a_width: int, b_width: int, acc_width: int,
                 overflow: str = "wrap", result_depth: int | None = None,
                 product_register: bool = False):
        self._arguments(rows=rows, cols=cols, a_width=a_width, b_width=b_width,
                        acc_width=acc_width, overflow=overflow, product_register=product_register)
        result_depth = 2 * rows if result_depth is None else result_depth
        if not isinstance(result_depth, int) or result_depth < rows:
            raise ValueError(f"Result depth must be an integer >= rows = {rows} (one job's "
                             f"results), not {result_depth!r}")
        self.result_depth = result_depth
        self.operand_layout = data.StructLayout({
            "a": data.ArrayLayout(signed(a_width), rows),
            "b": data.ArrayLayout(signed(b_width), cols),
            "last": 1,
        })
        self._streams(operands=self.operand_layout)

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        return {
            "operands": {
                "beat": "one k-step of a job C[rows x cols] = A[rows x K] . B[K x cols]",
                "fields": {"a": f"a[i] = A[i, k], i = 0..{self.rows - 1} (column k of A)",
                           "b": f"b[j] = B[k, j], j = 0..{self.cols - 1} (row k of B)",
                           "last": "1 on the job's K-th beat (any K >= 1); ends the job"},
                "ready": "combinational on payload.last: beats without last are always taken; "
                         "a last beat waits until `rows` result rows are free and `rows` cycles "
                         "have passed since the previous job's last beat",
            },
            "results": {
                "beat": "one row of C",
                "fields": {"c": f"c[j] = C[r, j], j = 0..{self.cols - 1}",
                           "last": f"1 on row {self.rows - 1}, the job's final row"},
                "order": f"{self.rows} beats per job, rows 0..{self.rows - 1}, jobs in order",
                "backpressure": "never stalls the array: jobs are admitted only with room "
                                "reserved for their results",
            },
            "result_buffer_rows": self.result_depth,
            "latency": ("rows + cols + 3 cycles (the PEs register their products)"
                        if self.product_register else "rows + cols + 2 cycles")
                       + " from a job's last operand beat to its first result "
                       "(software_model.systolic.os_latency)",
            "arithmetic": f"exact {self.a_width}x{self.b_width}-bit signed products, "
                          f"{self.acc_width}-bit accumulator, {self.overflow} after every "
                          "addition in increasing k (software_model.systolic.gemm)",
        }

    def elaborate(self, platform):
        m = Module()
        rows = self.rows
        ops = self.operands
        buffer = m.submodules.result_buffer = CreditBuffer(layout=self.result_layout,
                                                           depth=self.result_depth)
        wiring.connect(m, buffer.read, wiring.flipped(self.results))

        # -- admission: hold a job's last beat until its results have room -----------------------
        jobs = JobAdmission(m, ops, spacing=rows,
                            last_ok=lambda spaced: (buffer.credits >= rows) & spaced)
        fire, fire_last, in_job = jobs.fire, jobs.fire_last, jobs.in_job
        m.d.comb += buffer.reserve.eq(Mux(fire_last, rows, 0))

        # -- input register, then the grid ---------------------------------------------------------
        beat = Signal(self.operand_layout, reset_less=True)
        beat_valid, beat_first = Signal(), Signal(reset_less=True)
        m.d.sync += [beat.eq(ops.payload), beat_valid.eq(fire), beat_first.eq(~in_job)]
        grid = m.submodules.grid = OutputStationaryGrid(
            rows=rows, cols=self.cols, a_width=self.a_width, b_width=self.b_width,
            acc_width=self.acc_width, overflow=self.overflow,
            product_register=self.product_register)
        control = skew_control(m, valid=beat_valid, first=beat_first, last=beat.last, rows=rows)
        m.d.comb += [grid.a.eq(beat.a), grid.b.eq(beat.b)]
        m.d.comb += [grid.control[i].eq(control[i]) for i in range(rows)]

        # -- number the rows leaving the grid ---------------------------------------------------
        row_index = Signal(range(rows))
        with m.If(grid.c_valid):
            m.d.sync += row_index.eq(Mux(row_index == rows - 1, 0, row_index + 1))
        m.d.comb += [
            buffer.write.payload.c.eq(grid.c),
            buffer.write.payload.last.eq(row_index == rows - 1),
            buffer.write.valid.eq(grid.c_valid),
        ]
        return m


# ------------------------------------------------------------------------------------------------
# Weight stationary
# ------------------------------------------------------------------------------------------------


class WeightStationaryPE(wiring.Component):
    """One PE (row ``row`` of ``rows``) of the weight-stationary array.

    Holds two weights (double buffering: one in use, one loading). Weights travel down the column on
    a load bus tagged with their destination row; the job's last weight beat zeroes the rows it
    passes below its own, so a short reduction (K < rows) leaves nothing stale. Activations flow
    right with the buffer they use; partial sums flow down.

    ``product_register``: register the product before the partial-sum add. Every PE of a column
    is then one cycle later, and so is the partial sum it receives from above: still aligned.
    """

    def __init__(self, *, row: int, rows: int, a_width: int, b_width: int, acc_width: int,
                 overflow: str = "wrap", product_register: bool = False):
        check_positive("Rows", rows)
        if not isinstance(row, int) or not 0 <= row < rows:
            raise ValueError(f"Row must be an integer in 0 .. {rows - 1}, not {row!r}")
        _keep_arithmetic(self, a_width=a_width, b_width=b_width, acc_width=acc_width,
                         overflow=overflow, product_register=product_register)
        self.row, self.rows = row, rows
        super().__init__({
            "west": In(ActivationLink(a_width)), "east": Out(ActivationLink(a_width)),
            "north": In(WeightLoadLink(b_width, rows)), "south": Out(WeightLoadLink(b_width, rows)),
            "psum_in": In(PartialSumLink(acc_width)), "psum_out": Out(PartialSumLink(acc_width)),
        })

    def __repr__(self):
        return parameter_repr(self, "row", "rows", "a_width", "b_width", "acc_width", "overflow",
                              "product_register")

    def elaborate(self, platform):
        m = Module()
        west, north = self.west, self.north
        weights = [Signal(signed(self.b_width), name=f"weight{b}", reset_less=True) for b in (0, 1)]

        # Activation path (to the right) and load bus (down): one register per hop.
        for src, dst in ((west, self.east), (north, self.south)):
            for name in src.signature.members:
                m.d.comb += getattr(dst, name).eq(delay(
                    m, getattr(src, name), 1, name=f"{getattr(dst, name).name}_reg",
                    reset_less=name != "valid"))

        mine = north.tag == self.row
        below_last = north.last & (north.tag < self.row) if self.row else Const(0)
        with m.If(north.valid & (mine | below_last)):
            for b in (0, 1):
                with m.If(north.buffer == b):
                    m.d.sync += weights[b].eq(Mux(mine, north.w, 0))

        weight = Mux(west.buffer, weights[1], weights[0])
        product = Signal(signed(self.a_width + self.b_width))
        m.d.comb += product.eq(west.a * weight)
        if self.product_register:
            staged = Signal.like(product, name="product_r", reset_less=True)
            m.d.sync += staged.eq(product)
            product = staged
        psum = Signal(signed(self.acc_width), reset_less=True)
        m.d.sync += psum.eq(accumulate(self.psum_in.value, product, self.acc_width, self.overflow))
        m.d.comb += self.psum_out.value.eq(psum)
        return m


class WeightStationaryArray(_SystolicArray):
    """Weight-stationary systolic array.

    ``weights``: rows 0..K-1 of B (``b[j]`` = B[k, j]), ``last`` on row K-1 (K <= rows).
    ``activations``: rows of A (``a[i]`` = A[m, i]; lanes >= K meet zero weights), ``last`` on the
    job's final row. ``results``: one row of C per activation row (``c[j]`` = C[m, j]), ``last`` on
    the job's final row. The n-th weight packet pairs with the n-th activation packet.

    Weights for job n+1 load while job n computes; a weight packet is accepted once the activations
    of the job two back have all entered (its buffer is free), an activation once its job's weights
    have all entered and the result buffer (``result_depth`` rows, default rows + cols + 4) has a
    free row. So a driver must interleave: weights of job n+2 wait for job n's activations.

    ``product_register``: every PE registers its product before the partial-sum add (one cycle
    more latency, :func:`software_model.systolic.ws_latency`).
    """

    def __init__(self, *, rows: int, cols: int, a_width: int, b_width: int, acc_width: int,
                 overflow: str = "wrap", result_depth: int | None = None,
                 product_register: bool = False):
        self._arguments(rows=rows, cols=cols, a_width=a_width, b_width=b_width,
                        acc_width=acc_width, overflow=overflow, product_register=product_register)
        result_depth = rows + cols + 4 if result_depth is None else result_depth
        check_positive("Result depth", result_depth)
        self.result_depth = result_depth
        self.weight_layout = data.StructLayout({"b": data.ArrayLayout(signed(b_width), cols),
                                                "last": 1})
        self.activation_layout = data.StructLayout({"a": data.ArrayLayout(signed(a_width), rows),
                                                    "last": 1})
        self._streams(weights=self.weight_layout, activations=self.activation_layout)

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        return {
            "weights": {
                "beat": "one row k of B for a job C[M x cols] = A[M x K] . B[K x cols]",
                "fields": {"b": f"b[j] = B[k, j], j = 0..{self.cols - 1}",
                           "last": f"1 on row K-1 (K <= {self.rows}); ends the weight packet"},
                "ready": "high while fewer than two weight packets wait for their activations",
            },
            "activations": {
                "beat": "one row m of A",
                "fields": {"a": f"a[i] = A[m, i], i = 0..{self.rows - 1} (lanes >= K meet zero "
                                "weights)",
                           "last": "1 on the job's final row; ends the activation packet"},
                "ready": "high once the job's weight packet is complete and a result row is free",
            },
            "pairing": "the n-th weight packet pairs with the n-th activation packet; weights of "
                       "job n+2 are taken only after job n's activations, so a driver must feed "
                       "both streams concurrently (all weights first deadlocks after two jobs)",
            "results": {
                "beat": "one row of C per activation row",
                "fields": {"c": f"c[j] = C[m, j], j = 0..{self.cols - 1}",
                           "last": "1 on the job's final row"},
                "order": "one beat per activation beat, in order",
                "backpressure": "never stalls the array (one result row reserved per activation)",
            },
            "result_buffer_rows": self.result_depth,
            "latency": ("rows + cols + 2 cycles (the PEs register their products)"
                        if self.product_register else "rows + cols + 1 cycles")
                       + " from an activation beat to its result "
                       "(software_model.systolic.ws_latency)",
            "arithmetic": f"exact {self.a_width}x{self.b_width}-bit signed products, "
                          f"{self.acc_width}-bit accumulator, {self.overflow} after every "
                          "addition in increasing k (software_model.systolic.gemm)",
        }

    def elaborate(self, platform):
        m = Module()
        rows, cols = self.rows, self.cols
        buffer = m.submodules.result_buffer = CreditBuffer(layout=self.result_layout,
                                                           depth=self.result_depth)
        wiring.connect(m, buffer.read, wiring.flipped(self.results))

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
        wbeat = Signal(self.weight_layout, reset_less=True)
        wbeat_valid, wbeat_tag = Signal(), Signal.like(w_tag, reset_less=True)
        wbeat_buf = Signal(reset_less=True)
        abeat = Signal(self.activation_layout, reset_less=True)
        abeat_valid, abeat_buf = Signal(), Signal(reset_less=True)
        m.d.sync += [
            wbeat.eq(self.weights.payload), wbeat_valid.eq(w_fire), wbeat_tag.eq(w_tag),
            wbeat_buf.eq(w_buf),
            abeat.eq(self.activations.payload), abeat_valid.eq(a_fire), abeat_buf.eq(a_buf),
        ]

        pes = _pe_grid(m, rows, cols, lambda i, j: WeightStationaryPE(
            row=i, rows=rows, a_width=self.a_width, b_width=self.b_width,
            acc_width=self.acc_width, overflow=self.overflow,
            product_register=self.product_register))
        # Row i's activations enter i cycles late, column j's load bus j cycles late.
        for i in range(rows):
            left = pes[i][0].west
            for name, value in (("a", abeat.a[i]), ("valid", abeat_valid),
                                ("buffer", abeat_buf), ("last", abeat.last)):
                m.d.comb += getattr(left, name).eq(delay(
                    m, value, i, name=f"a_{name}_skew{i}", reset_less=name != "valid"))
            for j in range(1, cols):
                wiring.connect(m, pes[i][j - 1].east, pes[i][j].west)
        for j in range(cols):
            top = pes[0][j].north
            for name, value in (("w", wbeat.b[j]), ("valid", wbeat_valid), ("tag", wbeat_tag),
                                ("last", wbeat.last), ("buffer", wbeat_buf)):
                m.d.comb += getattr(top, name).eq(delay(
                    m, value, j, name=f"w_{name}_skew{j}", reset_less=name != "valid"))
            m.d.comb += pes[0][j].psum_in.value.eq(0)
            for i in range(1, rows):
                wiring.connect(m, pes[i - 1][j].south, pes[i][j].north)
                wiring.connect(m, pes[i - 1][j].psum_out, pes[i][j].psum_in)

        # -- bottom row: column j's sum leaves j cycles after column 0's; deskew -------------------
        bottom = pes[rows - 1]
        for j in range(cols):
            m.d.comb += buffer.write.payload.c[j].eq(delay(m, bottom[j].psum_out.value,
                                                           cols - 1 - j, name=f"c_deskew{j}"))
        # The last column's row control leaves with its partial sum (one cycle later when the
        # PEs register their products).
        out_last, out_valid = bottom[cols - 1].east.last, bottom[cols - 1].east.valid
        if self.product_register:
            out_last = delay(m, out_last, 1, name="result_last")
            out_valid = delay(m, out_valid, 1, name="result_valid", reset_less=False)
        m.d.comb += [
            buffer.write.payload.last.eq(out_last),
            buffer.write.valid.eq(out_valid),
        ]
        return m
