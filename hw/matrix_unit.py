"""The accelerator's matrix unit: S output-stationary grids, each reducing its own MXInt block,
aligned to the accumulator and summed exactly (docs/accelerator.md section 3).

A job is one K chunk of a ``rows x cols`` output tile: sub-array ``s`` reduces one block (``B``
beats) of A rows and B^T rows. Its exact integer block sum ``s_ij`` (the grid's accumulators are
wide enough never to wrap) is aligned to the accumulator's grid by its own exponents::

    v_ij = scale_saturate(s_ij, e_a[i] + e_b[j] + shift - acc_lsb, acc_width)

(exact left shift, floor right shift, saturation: ``software_model.mxint_fixed.scale_saturate``),
and the adder tree sums the ``S`` aligned tiles exactly (``acc_width + log2 S`` bits). Saturating
before the tree, per sub-array, is what the golden model defines; the accumulator add with
saturation happens outside, in the accelerator's ACC read-modify-write.

Why per-block alignment and not PLENA's one exponent per job: every sub-array holds a different
K block of the same rows, each with its own exponent, so the alignment cannot be shared. It is
done once per result row after the grid (``S * cols`` shifters for the unit) instead of per PE.

The grids, their skew and the admission scheme are those of the foundation array
(:class:`hw.systolic.OutputStationaryGrid`, :func:`hw.systolic.skew_control`,
:class:`hw.primitives.CreditBuffer`): a job's last beat is taken only when its ``rows`` result
rows have room and ``rows`` cycles have passed since the previous job's last beat (a grid's
result chain drains one row per cycle), so backpressure never stalls the PEs. Golden model of a
job: :func:`software_model.matrix_unit.matrix_unit_job`.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.mxint_fixed import scale_saturate
from hw.primitives import (CreditBuffer, JobAdmission, adder_tree, carry_select_add,
                           check_flag, check_positive, delay, parameter_repr, tree_depth)
from hw.systolic import OutputStationaryGrid, skew_control

__all__ = ["MatrixUnit", "SHIFT_WIDTH", "block_sum_width", "alignment_shift_shape"]

#: Bits of a job's signed ``shift`` (the instruction's 8-bit scale minus both operands' fraction
#: bits, at most 2 * 14): -512 .. 511 holds every legal value.
SHIFT_WIDTH = 10


def block_sum_width(element_width: int, block_size: int) -> int:
    """Signed bits that hold any exact sum of ``block_size`` products of two ``element_width``-bit
    operands (up to ``+B * 2^(2w - 2)``: every product ``(-2^(w-1))^2``)."""
    return 2 * element_width - 1 + block_size.bit_length()


def alignment_shift_shape(exponent_width: int, acc_lsb: int):
    """Signed shape of ``e_a + e_b + shift - acc_lsb`` over every exponent and shift value."""
    half = 1 << (exponent_width - 1)
    smax = (1 << (SHIFT_WIDTH - 1)) - 1
    lo = -2 * half - (smax + 1) - acc_lsb
    hi = 2 * (half - 1) + smax - acc_lsb
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1))):
        bits += 1
    return signed(bits)


class MatrixUnit(wiring.Component):
    """``sub_arrays`` grids of ``rows x cols`` PEs, per-block exponent alignment, exact tree.

    ``operands``: ``block_size`` beats per job, ``last`` on the final one. Beat t carries, for each
    sub-array s, ``a[s][i]`` = element t of A row i's block and ``b[s][j]`` = element t of B^T row
    j's block (operands of narrower classes sign-extended to ``element_width``). The job's fields
    are sampled with its last beat: ``a_exp[s][i]``, ``b_exp[s][j]`` (the blocks' exponents),
    ``shift`` (signed, added to every exponent sum: the instruction's scale minus the operands'
    fraction bits) and ``tag`` (echoed on the job's results; the accelerator puts its ACC
    write-back there).

    ``results``: ``rows`` beats per job, row ``row`` of the tile: ``c[j] = sum_s v_sij`` (signed,
    ``acc_width + log2 S`` bits, exact), ``tag``, ``last`` on the final row. Results are buffered
    (``result_depth`` rows, credits reserved at admission), so ``results`` may stall.
    """

    def __init__(self, *, rows: int, cols: int, sub_arrays: int, element_width: int,
                 exponent_width: int, block_size: int, acc_width: int, acc_lsb: int,
                 tag_width: int = 1, result_depth: int | None = None,
                 pipelined: bool = False):
        check_positive("Rows", rows)
        self.pipelined = check_flag("Pipelined", pipelined)
        check_positive("Columns", cols)
        if (not isinstance(sub_arrays, int) or isinstance(sub_arrays, bool) or sub_arrays < 1
                or sub_arrays & (sub_arrays - 1)):
            raise ValueError(f"Sub-array count must be a power of two, not {sub_arrays!r}")
        if (not isinstance(element_width, int) or isinstance(element_width, bool)
                or not 2 <= element_width <= 16):
            raise ValueError(f"Element width must be an integer from 2 to 16, not "
                             f"{element_width!r}")
        if (not isinstance(exponent_width, int) or isinstance(exponent_width, bool)
                or not 2 <= exponent_width <= 10):
            raise ValueError(f"Exponent width must be an integer from 2 to 10, not "
                             f"{exponent_width!r}")
        check_positive("Block size", block_size)
        if (not isinstance(acc_width, int) or isinstance(acc_width, bool)
                or not 2 <= acc_width <= 62):
            raise ValueError(f"Accumulator width must be an integer from 2 to 62, not "
                             f"{acc_width!r}")
        if not isinstance(acc_lsb, int) or isinstance(acc_lsb, bool) or abs(acc_lsb) > 256:
            raise ValueError(f"Accumulator LSB must be an integer from -256 to 256, not "
                             f"{acc_lsb!r}")
        check_positive("Tag width", tag_width)
        self.rows, self.cols, self.sub_arrays = rows, cols, sub_arrays
        self.element_width, self.exponent_width = element_width, exponent_width
        self.block_size, self.acc_width, self.acc_lsb = block_size, acc_width, acc_lsb
        self.tag_width = tag_width
        self.sum_width = block_sum_width(element_width, block_size)
        self.result_width = acc_width + tree_depth(sub_arrays)
        #: Cycles from the job's last operand beat being taken to its first result beat.
        self.latency = self._latency()
        result_depth = self.latency + rows if result_depth is None else result_depth
        if not isinstance(result_depth, int) or isinstance(result_depth, bool) \
                or result_depth < rows:
            raise ValueError(f"Result depth must be an integer >= rows = {rows} (one job's "
                             f"results), not {result_depth!r}")
        self.result_depth = result_depth
        s, w, ew = sub_arrays, element_width, exponent_width
        self.job_layout = data.StructLayout({
            "a_exp": data.ArrayLayout(data.ArrayLayout(signed(ew), rows), s),
            "b_exp": data.ArrayLayout(data.ArrayLayout(signed(ew), cols), s),
            "shift": signed(SHIFT_WIDTH),
            "tag": unsigned(tag_width),
        })
        self.operand_layout = data.StructLayout({
            "a": data.ArrayLayout(data.ArrayLayout(signed(w), rows), s),
            "b": data.ArrayLayout(data.ArrayLayout(signed(w), cols), s),
            "job": self.job_layout,
            "last": 1,
        })
        self.result_layout = data.StructLayout({
            "c": data.ArrayLayout(signed(self.result_width), cols),
            "row": unsigned(max(1, (rows - 1).bit_length())),
            "tag": unsigned(tag_width),
            "last": 1,
        })
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(self.result_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "rows", "cols", "sub_arrays", "element_width",
                              "exponent_width", "block_size", "acc_width", "acc_lsb", "tag_width",
                              "result_depth", "pipelined")

    def _latency(self) -> int:
        # input register, skew down to the last row, the last PE's shadow, the result chain of
        # the first row, the alignment's two registers, the tree's registered levels, the
        # result FIFO write, and the PEs' product register if pipelined. Held to the RTL by
        # tests/test_matrix_unit.py.
        return (1 + (self.rows - 1) + 1 + (self.cols - 1) + 1 + 2 + tree_depth(self.sub_arrays)
                + 1 + int(self.pipelined))

    def elaborate(self, platform):
        m = Module()
        rows, cols, subs = self.rows, self.cols, self.sub_arrays
        ops = self.operands

        buffer = m.submodules.result_buffer = CreditBuffer(layout=self.result_layout,
                                                           depth=self.result_depth)
        wiring.connect(m, buffer.read, wiring.flipped(self.results))

        # -- per-job fields wait in a FIFO until the job's rows leave the grids -----------------
        # Jobs are >= rows cycles apart and a job's last row leaves the grids at most
        # latency + rows cycles after its last beat: this many jobs are in flight at most.
        tags = m.submodules.job_fields = SyncFIFO(width=self.job_layout.size,
                                                  depth=(self.latency + rows) // rows + 2)

        # -- admission (as the foundation array): a job's last beat waits for room and drain ----
        jobs = JobAdmission(m, ops, spacing=rows,
                            last_ok=lambda spaced: (buffer.credits >= rows) & spaced & tags.w_rdy)
        fire, fire_last, in_job = jobs.fire, jobs.fire_last, jobs.in_job
        m.d.comb += [
            buffer.reserve.eq(Mux(fire_last, rows, 0)),
            tags.w_en.eq(fire_last),
            tags.w_data.eq(ops.payload.job),
        ]

        # -- input register, then the grids in lockstep (one skew for all) -----------------------
        beat_a = Signal.like(ops.payload.a, reset_less=True)
        beat_b = Signal.like(ops.payload.b, reset_less=True)
        beat_valid = Signal()
        beat_first, beat_last = Signal(reset_less=True), Signal(reset_less=True)
        m.d.sync += [beat_a.eq(ops.payload.a), beat_b.eq(ops.payload.b), beat_valid.eq(fire),
                     beat_first.eq(~in_job), beat_last.eq(ops.payload.last)]
        control = skew_control(m, valid=beat_valid, first=beat_first, last=beat_last, rows=rows)
        grids = []
        for s in range(subs):
            grid = m.submodules[f"sub{s}"] = OutputStationaryGrid(
                rows=rows, cols=cols, a_width=self.element_width, b_width=self.element_width,
                acc_width=self.sum_width, overflow="wrap",
                product_register=self.pipelined)
            m.d.comb += [grid.a[i].eq(beat_a[s][i]) for i in range(rows)]
            m.d.comb += [grid.b[j].eq(beat_b[s][j]) for j in range(cols)]
            m.d.comb += [grid.control[i].eq(control[i]) for i in range(rows)]
            grids.append(grid)
        # Every grid runs in lockstep: grid 0's row valid stands for all.
        row_valid = grids[0].c_valid

        # -- number the rows; the job's fields are at the FIFO head while its rows leave ---------
        job = Signal(self.job_layout)
        m.d.comb += job.eq(tags.r_data)
        row_index = Signal(range(rows))
        with m.If(row_valid):
            m.d.sync += row_index.eq(Mux(row_index == rows - 1, 0, row_index + 1))
        m.d.comb += tags.r_en.eq(row_valid & (row_index == rows - 1))

        # -- alignment stage 1: register the block sums beside their shift amounts ---------------
        # The amount (an exponent per row from a rows:1 mux, one per column, two adds) is ready
        # when the row leaves the grid; registering it keeps the adds off the shifter's path.
        amount_shape = alignment_shift_shape(self.exponent_width, self.acc_lsb)
        a_exp_row = [Signal(signed(self.exponent_width), name=f"a_exp_row_s{s}")
                     for s in range(subs)]
        with m.Switch(row_index):
            for r in range(rows):
                with m.Case(r):
                    m.d.comb += [a_exp_row[s].eq(job.a_exp[s][r]) for s in range(subs)]
        sums = [[Signal(signed(self.sum_width), name=f"block_sum_s{s}_c{j}", reset_less=True)
                 for j in range(cols)] for s in range(subs)]
        amounts = [[Signal(amount_shape, name=f"align_shift_s{s}_c{j}", reset_less=True)
                    for j in range(cols)] for s in range(subs)]
        for s in range(subs):
            for j in range(cols):
                m.d.sync += [
                    sums[s][j].eq(grids[s].c[j]),
                    amounts[s][j].eq(a_exp_row[s] + job.b_exp[s][j] + job.shift - self.acc_lsb),
                ]
        row_valid1 = delay(m, row_valid, 1, name="aligned_valid", reset_less=False)
        row1 = delay(m, row_index, 1, name="aligned_row")
        tag1 = delay(m, job.tag, 1, name="aligned_tag")

        # -- alignment stage 2: scale and saturate each block sum, registered ------------------
        aligned = [[Signal(signed(self.acc_width), name=f"aligned_s{s}_c{j}", reset_less=True)
                    for j in range(cols)] for s in range(subs)]
        for s in range(subs):
            for j in range(cols):
                m.d.sync += aligned[s][j].eq(scale_saturate(
                    m, sums[s][j], amounts[s][j], self.acc_width, f"scale_s{s}_c{j}"))
        row_valid2 = delay(m, row_valid1, 1, name="tree_valid", reset_less=False)
        row2 = delay(m, row1, 1, name="tree_row")
        tag2 = delay(m, tag1, 1, name="tree_tag")

        # -- exact adder tree over the sub-arrays, one register per level ------------------------
        levels = tree_depth(subs)
        out = buffer.write.payload
        # pipelined: each level's add as a carry-select adder (a 41-bit ripple was 43 levels)
        add = (lambda a, b: carry_select_add(m, a, b, name="tree_add")) if self.pipelined \
            else None
        for j in range(cols):
            m.d.comb += out.c[j].eq(adder_tree(m, [aligned[s][j] for s in range(subs)],
                                               add=add, registered=True, name=f"tree_c{j}"))
        row_out = delay(m, row2, levels, name="result_row")
        m.d.comb += [
            out.row.eq(row_out),
            out.tag.eq(delay(m, tag2, levels, name="result_tag")),
            out.last.eq(row_out == rows - 1),
            buffer.write.valid.eq(delay(m, row_valid2, levels, name="result_valid",
                                        reset_less=False)),
        ]
        return m
