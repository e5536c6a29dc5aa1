"""PLENA-style flattened systolic array: S = MLEN/BLEN output-stationary sub-arrays of BLEN x BLEN
PEs, fed the same rows of A and columns of B but different k-steps, joined by a pipelined adder
tree.

Why flattened: a decode GEMM has few rows (M <= 8); a square R x R array keeps M of its R rows busy.
Here the array is BLEN rows tall (small) and MLEN multipliers wide along K, so a skinny GEMM still
fills it, and one beat retires S k-steps at once.

The sub-arrays are the foundation generator's ``OutputStationaryPE`` grids with the same skew,
double-buffered shadow and result chain; all S sub-arrays receive their beat in the same cycle, so
their result chains emit the same row of the tile in the same cycle and the tree adds them with no
alignment logic (log2(S) registered adder levels). The same credit scheme as the foundation array
keeps the result buffer from overflowing: backpressure never stalls the PEs.

Per-job fields (sampled with the job's last beat): ``rows`` = M (1..BLEN; only the first M rows of
the tile are emitted: GEMV is M = 1), ``head`` (echoed on the results of a batched per-head
stream) and, with ``transpose_b``, ``transpose`` (the beat's B lanes are in K^T order).

MXInt operands (``a_format``/``b_format`` = ``mxint``): PEs and tree stay integer and sum one
block's mantissa products exactly; a job is one block, and after the tree each element's block sum
is shifted by its exponent sum into a wide fixed-point accumulator (``FlattenedArray._align``).
Golden models: ``software_model.flattened.flat_gemm`` / ``flat_mxint_gemm``.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.primitives import (CreditBuffer, JobAdmission, adder_tree, check_flag, check_positive,
                           delay, parameter_repr, tree_depth)
from hw.systolic import OutputStationaryGrid, accumulate, check_arithmetic, skew_control

__all__ = ["FlattenedArray", "PartialSumTree", "flat_latency"]


def flat_latency(blen: int, sub_arrays: int, product_register: bool = False,
                 align_stages: int = 0) -> int:
    """Cycles from a job's last operand beat to its first result beat: the output-stationary
    sub-array's (input register, skew, product register if any, shadow, result chain, result FIFO
    write; the same as :func:`software_model.systolic.os_latency`) plus one register per
    adder-tree level, plus the MXInt alignment's stages. Kept equal to
    :func:`software_model.flattened.flat_latency` by a test."""
    return (1 + (blen - 1) + int(product_register) + 1 + 1 + (blen - 1) + 1
            + tree_depth(sub_arrays) + align_stages)


class PartialSumTree(wiring.Component):
    """Balanced adder tree joining the sub-arrays' partial rows: (p0 + p1) + (p2 + p3) ..., one
    register per level, so its depth adds log2(S) cycles but only one adder to the longest path.

    ``partials[s][j]``: lane j of sub-array s; ``total[j]`` appears ``levels`` cycles later, with
    ``valid_out`` the matching delayed ``valid_in``. Each addition wraps or saturates to ``width``
    bits, the order the golden model (``software_model.flattened.flat_gemm``) defines.
    """

    def __init__(self, *, sub_arrays: int, lanes: int, width: int, overflow: str):
        if not isinstance(sub_arrays, int) or sub_arrays < 1 or sub_arrays & (sub_arrays - 1):
            raise ValueError(f"Sub-array count must be a power of two, not {sub_arrays!r}")
        check_positive("Lanes", lanes)
        check_positive("Width", width, minimum=2)
        if overflow not in ("wrap", "saturate"):
            raise ValueError(f"Overflow must be 'wrap' or 'saturate', not {overflow!r}")
        self.sub_arrays, self.lanes, self.width, self.overflow = sub_arrays, lanes, width, overflow
        self.levels = tree_depth(sub_arrays)
        super().__init__({
            "partials": In(data.ArrayLayout(data.ArrayLayout(signed(width), lanes), sub_arrays)),
            "valid_in": In(1),
            "total": Out(data.ArrayLayout(signed(width), lanes)),
            "valid_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        for j in range(self.lanes):
            m.d.comb += self.total[j].eq(adder_tree(
                m, [self.partials[s][j] for s in range(self.sub_arrays)],
                add=lambda x, y: accumulate(x, y, w, self.overflow), shape=signed(w),
                registered=True, name=f"tree_c{j}"))
        m.d.comb += self.valid_out.eq(delay(m, self.valid_in, self.levels, name="valid",
                                            reset_less=False))
        return m


class FlattenedArray(wiring.Component):
    """Flattened output-stationary array: ``mlen // blen`` sub-arrays of ``blen`` x ``blen`` PEs.

    ``operands``: ceil(K/S) beats per job (the driver pads K to a multiple of S with zeros),
    ``last`` on the final one; beat t carries k-steps t*S .. t*S+S-1: ``a[s*blen + i]`` = A[i, k_s],
    ``b[s*blen + j]`` = B[k_s, j] (with ``transpose`` set, ``b[j*S + s]`` = B[k_s, j]: row j of
    K^T's source read contiguously). Per job (sampled with its last beat): ``rows`` = M in
    1..blen (only the first M rows are emitted; GEMV is M = 1), ``head`` (echoed on the results).
    ``results``: M beats per job, row r of C = A . B (``c[j]`` = C[r, j]), ``last`` on row M - 1.

    MXInt (``a_mxint``/``b_mxint``): a job is one K block; its last beat also carries the block
    exponents of A's rows (``a_exp[i]``) and B's columns (``b_exp[j]``), ``first`` (the tile's
    first block: clear the aligned accumulators) and ``final`` (its last block: emit the rows);
    results are ``output_width``-bit fixed-point sums with LSB 2^(emin_a + emin_b). The aligned
    accumulate is pipelined: the shifted block sum is registered, then the ``output_width``-bit
    add runs in carry segments of ``segment_bits``, one stage each (:meth:`_align`).

    ``pe_product_register``: every PE registers its product before the accumulate (+1 cycle).

    A job's last beat is accepted only when (1) M result rows are free in the result buffer
    (``result_depth`` rows) and (2) at least ``blen`` cycles passed since the previous job's last
    beat (a result chain drains one row per cycle); every other beat is accepted at once.
    """

    def __init__(self, *, blen: int, mlen: int, a_width: int, b_width: int, acc_width: int,
                 overflow: str = "wrap", a_mxint: bool = False, b_mxint: bool = False,
                 exponent_width: int = 4, output_width: int | None = None, heads: int = 1,
                 transpose_b: bool = False, result_depth: int | None = None,
                 pe_product_register: bool = False, segment_bits: int = 16):
        check_positive("BLEN", blen)
        check_positive("MLEN", mlen)
        if mlen % blen or (mlen // blen) & (mlen // blen - 1):
            raise ValueError(f"MLEN must be BLEN ({blen}) times a power of two, not {mlen!r}")
        check_arithmetic(a_width=a_width, b_width=b_width, acc_width=acc_width, overflow=overflow)
        mxint = bool(a_mxint or b_mxint)
        if mxint:
            check_positive("Exponent width", exponent_width, minimum=2)
            if overflow != "wrap":
                raise ValueError(f"Overflow must be 'wrap' with an MXInt operand (block sums are "
                                 f"exact), not {overflow!r}")
            span = ((1 << exponent_width) - 1) * (bool(a_mxint) + bool(b_mxint))
            output_width = acc_width + span if output_width is None else output_width
            if not isinstance(output_width, int) or output_width < acc_width + span:
                raise ValueError(f"Output width must be at least {acc_width + span} (accumulator "
                                 f"plus alignment span), not {output_width!r}")
        else:
            if output_width not in (None, acc_width):
                raise ValueError(f"Output width must equal the accumulator width ({acc_width}) "
                                 f"with integer operands, not {output_width!r}")
            output_width = acc_width
        check_positive("Heads", heads)
        check_flag("PE product register", pe_product_register)
        check_positive("Segment bits", segment_bits)
        self.pe_product_register, self.segment_bits = pe_product_register, segment_bits
        self.blen, self.mlen, self.sub_arrays = blen, mlen, mlen // blen
        self.a_width, self.b_width, self.acc_width, self.overflow = (a_width, b_width, acc_width,
                                                                     overflow)
        self.a_mxint, self.b_mxint, self.mxint = bool(a_mxint), bool(b_mxint), mxint
        self.exponent_width, self.output_width = exponent_width, output_width
        self.heads, self.head_width = heads, max(1, (heads - 1).bit_length())
        self.transpose_b = bool(transpose_b)
        #: MXInt: carry segments of the aligned accumulate (and its stages: term register + one
        #: per segment); 0 stages with integer operands.
        self.segments = -(-output_width // segment_bits) if mxint else 0
        self.align_stages = 1 + self.segments if mxint else 0
        self.latency = flat_latency(blen, self.sub_arrays, pe_product_register,
                                    self.align_stages)
        result_depth = self.latency + blen if result_depth is None else result_depth
        if not isinstance(result_depth, int) or result_depth < blen:
            raise ValueError(f"Result depth must be an integer >= BLEN = {blen} (one job's "
                             f"results), not {result_depth!r}")
        self.result_depth = result_depth
        self.operand_layout = self._operand_layout()
        self.result_layout = data.StructLayout({
            "c": data.ArrayLayout(signed(output_width), blen),
            "head": unsigned(self.head_width),
            "last": 1,
        })
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(self.result_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "blen", "mlen", "a_width", "b_width", "acc_width",
                              "overflow", "a_mxint", "b_mxint", "exponent_width", "output_width",
                              "heads", "transpose_b", "result_depth", "pe_product_register",
                              "segment_bits")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        blen, subs = self.blen, self.sub_arrays
        fields = {
            "a": f"a[s*{blen} + i] = A[i, t*{subs} + s]: lane (s, i) is row i of the tile at "
                 f"k-step s of beat t",
            "b": f"b[s*{blen} + j] = B[t*{subs} + s, j]" + (
                f"; with transpose = 1, b[j*{subs} + s] = B[t*{subs} + s, j]"
                if self.transpose_b else ""),
            "rows": f"M, 1..{blen}: rows of C the job emits (sampled with last; GEMV: 1)",
            "head": f"tag 0..{self.heads - 1} echoed on the job's results",
            "last": "1 on the job's final beat (ceil(K/S) beats, K padded with zero k-steps)",
        }
        if self.transpose_b:
            fields["transpose"] = ("per beat: 0 = b in the order above, 1 = b in K^T order "
                                   f"(b[j*{subs} + s] = B[t*{subs} + s, j])")
        if self.mxint:
            fields.update({
                "first": "1 on a tile's first block job: its aligned sums start from zero",
                "final": "1 on a tile's last block job: only it emits rows",
            })
            if self.a_mxint:
                fields["a_exp"] = "a_exp[i]: shared exponent of row i's block (with last)"
            if self.b_mxint:
                fields["b_exp"] = "b_exp[j]: shared exponent of column j's block (with last)"
        return {
            "operands": {
                "beat": f"{subs} k-steps of a job C[M x {blen}] = A[M x K] . B[K x {blen}]" + (
                    "; an MXInt job is one K block" if self.mxint else ""),
                "fields": fields,
                "ready": "combinational on payload.last (and rows/final): a last beat waits "
                         f"until M result rows are free and {blen} cycles have passed since the "
                         "previous job's last beat; other beats are always taken",
            },
            "results": {
                "beat": "one row of C",
                "fields": {"c": f"c[j] = C[r, j], j = 0..{blen - 1}" + (
                    f" (fixed point, LSB 2^(emin_a + emin_b), {self.output_width} bits)"
                    if self.mxint else ""),
                           "head": "the job's head tag", "last": "1 on row M-1"},
                "order": "M beats per emitting job, in order",
                "backpressure": "never stalls the array",
            },
            "result_buffer_rows": self.result_depth,
            "latency": f"{self.latency} cycles from a job's last beat to its first result "
                       "(software_model.flattened.flat_latency)",
        }

    def _job_fields(self) -> dict:
        """Per-job fields sampled with the last beat (and kept with the job until it leaves)."""
        fields = {"rows": unsigned(self.blen.bit_length()), "head": unsigned(self.head_width)}
        if self.a_mxint:
            fields["a_exp"] = data.ArrayLayout(signed(self.exponent_width), self.blen)
        if self.b_mxint:
            fields["b_exp"] = data.ArrayLayout(signed(self.exponent_width), self.blen)
        if self.mxint:
            fields["first"] = 1
            fields["final"] = 1
        return fields

    def _operand_layout(self) -> data.StructLayout:
        lanes = self.sub_arrays * self.blen
        fields = {
            "a": data.ArrayLayout(signed(self.a_width), lanes),
            "b": data.ArrayLayout(signed(self.b_width), lanes),
            **self._job_fields(),
        }
        if self.transpose_b:
            fields["transpose"] = 1
        fields["last"] = 1
        return data.StructLayout(fields)

    def elaborate(self, platform):
        blen, subs, w = self.blen, self.sub_arrays, self.acc_width
        lanes = blen * subs
        m = Module()
        ops = self.operands

        # -- result buffer with credits (reserved at a job's last beat, returned when taken) -----
        buffer = m.submodules.result_buffer = CreditBuffer(layout=self.result_layout,
                                                           depth=self.result_depth)
        wiring.connect(m, buffer.read, wiring.flipped(self.results))

        # -- per-job tags (M, head, exponents) wait in a FIFO until the job's rows leave ---------
        # Jobs are >= BLEN cycles apart and a job's rows have left the tree latency + BLEN cycles
        # after its last beat, so this many jobs can be in flight at most.
        tag_fields = self._job_fields()
        tag_layout = data.StructLayout(tag_fields)
        tag_depth = (self.latency + blen) // blen + 2
        tags = m.submodules.job_tags = SyncFIFO(width=tag_layout.size, depth=tag_depth)

        # -- admission --------------------------------------------------------------------------
        jobs = JobAdmission(m, ops, spacing=blen)       # last_ok is driven below
        fire, fire_last, in_job = jobs.fire, jobs.fire_last, jobs.in_job
        # An MXInt block that is not the tile's final one emits nothing and reserves nothing.
        emits = ops.payload.final if self.mxint else 1
        reserve = Mux(emits, ops.payload.rows, 0)
        m.d.comb += [
            jobs.last_ok.eq((buffer.credits >= reserve) & jobs.spaced & tags.w_rdy),
            buffer.reserve.eq(Mux(fire_last, reserve, 0)),
        ]
        tag_in = Signal(tag_layout)
        m.d.comb += [tag_in[name].eq(ops.payload[name]) for name in tag_fields]
        m.d.comb += [tags.w_en.eq(fire_last), tags.w_data.eq(tag_in)]

        # -- input register: transpose-on-read is only a choice of lane order ---------------------
        b_lanes = []
        for s in range(subs):
            for j in range(blen):
                plain = ops.payload.b[s * blen + j]
                if self.transpose_b:
                    b_lanes.append(Mux(ops.payload.transpose, ops.payload.b[j * subs + s], plain))
                else:
                    b_lanes.append(plain)
        beat_a = Signal(data.ArrayLayout(signed(self.a_width), lanes), reset_less=True)
        beat_b = Signal(data.ArrayLayout(signed(self.b_width), lanes), reset_less=True)
        beat_valid = Signal()
        beat_first, beat_last = Signal(reset_less=True), Signal(reset_less=True)
        m.d.sync += [beat_a.eq(ops.payload.a), beat_valid.eq(fire), beat_first.eq(~in_job),
                     beat_last.eq(ops.payload.last)]
        m.d.sync += [beat_b[n].eq(lane) for n, lane in enumerate(b_lanes)]

        # -- S sub-arrays in lockstep; their control skew is the same, so it is built once --------
        control = skew_control(m, valid=beat_valid, first=beat_first, last=beat_last, rows=blen)
        tree = m.submodules.tree = PartialSumTree(sub_arrays=subs, lanes=blen, width=w,
                                                  overflow=self.overflow)
        for s in range(subs):
            grid = m.submodules[f"sub{s}"] = OutputStationaryGrid(
                rows=blen, cols=blen, a_width=self.a_width, b_width=self.b_width, acc_width=w,
                overflow=self.overflow, product_register=self.pe_product_register)
            m.d.comb += [grid.a[i].eq(beat_a[s * blen + i]) for i in range(blen)]
            m.d.comb += [grid.b[j].eq(beat_b[s * blen + j]) for j in range(blen)]
            m.d.comb += [grid.control[i].eq(control[i]) for i in range(blen)]
            m.d.comb += tree.partials[s].eq(grid.c)
            if s == 0:
                # Every sub-array runs in lockstep: sub-array 0's row valid stands for all.
                m.d.comb += tree.valid_in.eq(grid.c_valid)
        tree_valid = tree.valid_out
        tree_row = [tree.total[j] for j in range(blen)]

        # -- emit the job's first M rows, tagged ------------------------------------------------
        tag = Signal(tag_layout)
        m.d.comb += tag.eq(tags.r_data)
        row_index = Signal(range(blen))
        with m.If(tree_valid):
            m.d.sync += row_index.eq(Mux(row_index == blen - 1, 0, row_index + 1))
        out_row = buffer.write.payload
        emit = tree_valid & (row_index < tag.rows)
        head, last = tag.head, row_index == tag.rows - 1
        m.d.comb += tags.r_en.eq(tree_valid & (row_index == blen - 1))
        if self.mxint:
            values = self._align(m, tag, row_index, tree_valid, tree_row)
            # The row's control waits beside it through the alignment stages.
            stages = self.align_stages
            emit = delay(m, emit & tag.final, stages, name="aligned_emit", reset_less=False)
            head = delay(m, head, stages, name="aligned_head")
            last = delay(m, last, stages, name="aligned_last")
        else:
            values = tree_row
        m.d.comb += [
            out_row.head.eq(head),
            out_row.last.eq(last),
            buffer.write.valid.eq(emit),
        ]
        m.d.comb += [out_row.c[j].eq(values[j]) for j in range(blen)]
        return m

    def _align(self, m: Module, tag, row_index, tree_valid, tree_row):
        """MXInt: shift each exact block sum leaving the tree by its exponent sum and add it into
        that element's fixed-point accumulator (LSB = 2^(emin_a + emin_b)), one row per cycle.
        Returns the row's sums ``align_stages`` cycles later.

        Alignment after the tree costs BLEN shifters and adders for the whole array instead of
        one per PE, and stays exact: PEs and tree sum one block's integer products (all with the
        same exponent), the wide accumulator sums blocks.

        Pipeline: stage 0 picks the exponent sum and shifts (registered); stage 1 + k adds carry
        segment k (``segment_bits`` bits) of the term to the same segment of the row's
        accumulator, plus the carry segment k - 1 registered the cycle before. Segment k of a
        row is read and written in the same stage, so a row's next block (at least BLEN cycles
        later) always sees every segment updated: no forwarding. The segments' sums are
        registered and deskewed, so the result FIFO is written from registers.
        """
        blen, ow, seg = self.blen, self.output_width, self.segment_bits
        half = 1 << (self.exponent_width - 1)
        span = ((1 << self.exponent_width) - 1) * (self.a_mxint + self.b_mxint)
        # -- stage 0: the exponent sum and the shift, registered --------------------------------
        # e - emin for a two's-complement exponent is the code with its sign bit flipped.
        if self.a_mxint:
            a_rel = Signal(unsigned(self.exponent_width))
            with m.Switch(row_index):
                for r in range(blen):
                    with m.Case(r):
                        m.d.comb += a_rel.eq(tag.a_exp[r].as_unsigned() ^ half)
        else:
            a_rel = 0
        terms = []
        for j in range(blen):
            b_rel = (tag.b_exp[j].as_unsigned() ^ half) if self.b_mxint else 0
            shift = Signal(range(span + 1), name=f"shift_c{j}")
            m.d.comb += shift.eq(a_rel + b_rel)
            term = Signal(signed(ow), name=f"shifted_c{j}", reset_less=True)
            m.d.sync += term.eq(tree_row[j].as_signed() << shift)
            terms.append(term)
        valid0 = delay(m, tree_valid, 1, name="align_valid", reset_less=False)
        row0 = delay(m, row_index, 1, name="align_row")
        first0 = delay(m, tag.first, 1, name="align_first")

        # -- stages 1 .. segments: one carry segment each ----------------------------------------
        acc = [[Signal(signed(ow), name=f"aligned_{r}_{j}", reset_less=True) for j in range(blen)]
               for r in range(blen)]
        bounds = [(lo, min(ow, lo + seg)) for lo in range(0, ow, seg)]
        n = len(bounds)
        parts: list[list] = [[] for _ in range(blen)]
        for k, (lo, hi) in enumerate(bounds):
            valid_k = delay(m, valid0, k, name=f"seg{k}_valid", reset_less=False)
            row_k = delay(m, row0, k, name=f"seg{k}_row")
            first_k = delay(m, first0, k, name=f"seg{k}_first")
            sums_k = []
            for j in range(blen):
                term_k = delay(m, terms[j][lo:hi], k, name=f"seg{k}_term_c{j}")
                previous = Signal(hi - lo, name=f"seg{k}_previous_c{j}")
                with m.Switch(row_k):
                    for r in range(blen):
                        with m.Case(r):
                            m.d.comb += previous.eq(acc[r][j][lo:hi])
                # A tile's first block starts from zero (its lower segments carry nothing then).
                base = Mux(first_k, 0, previous)
                if k:
                    # carry in as the LSB of both addends: (2a + c) + (2b + c) = 2(a + b + c)
                    total = (Cat(carry[j], base) + Cat(carry[j], term_k))[1:]
                else:
                    total = base + term_k
                total_k = Signal(hi - lo + 1, name=f"seg{k}_sum_c{j}")
                m.d.comb += total_k.eq(total)
                sums_k.append(total_k)
                with m.If(valid_k):
                    with m.Switch(row_k):
                        for r in range(blen):
                            with m.Case(r):
                                m.d.sync += acc[r][j][lo:hi].eq(total_k[:hi - lo])
                out_k = Signal(hi - lo, name=f"seg{k}_out_c{j}", reset_less=True)
                m.d.sync += out_k.eq(total_k[:hi - lo])
                parts[j].append(delay(m, out_k, n - 1 - k, name=f"seg{k}_deskew_c{j}"))
            if k < n - 1:
                carry = []
                for j in range(blen):
                    c = Signal(name=f"seg{k}_carry_c{j}", reset_less=True)
                    m.d.sync += c.eq(sums_k[j][hi - lo])
                    carry.append(c)
        return [Cat(*parts[j]).as_signed() for j in range(blen)]
