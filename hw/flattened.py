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

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from gen.config.flattened import FlattenedArrayConfig
from hw.systolic import OutputStationaryPE, ResultBuffer, accumulate

__all__ = ["FlattenedArray", "PartialSumTree", "operand_layout", "result_layout"]


def operand_layout(config: FlattenedArrayConfig) -> data.StructLayout:
    """One beat: S k-steps. ``a[s*BLEN + i]`` = A[i, k_s]; ``b[s*BLEN + j]`` = B[k_s, j], or with
    ``transpose`` set ``b[j*S + s]`` = B[k_s, j] (row j of K^T's source, K, read contiguously)."""
    lanes = config.sub_arrays * config.blen
    fields = {
        "a": data.ArrayLayout(signed(config.a_width), lanes),
        "b": data.ArrayLayout(signed(config.b_width), lanes),
        "rows": unsigned(config.blen.bit_length()),
        "head": unsigned(config.head_width),
    }
    if config.mxint:
        fields.update(_mxint_job_fields(config))
    if config.transpose_b:
        fields["transpose"] = 1
    fields["last"] = 1
    return data.StructLayout(fields)


def _mxint_job_fields(config: FlattenedArrayConfig) -> dict:
    """MXInt job = one K block: the block exponents of A's BLEN rows and B's BLEN columns (an int
    operand has none), ``first`` (the tile's first block: clear the aligned accumulators) and
    ``final`` (its last block: emit the rows)."""
    fields = {}
    if config.a_format == "mxint":
        fields["a_exp"] = data.ArrayLayout(signed(config.exponent_width), config.blen)
    if config.b_format == "mxint":
        fields["b_exp"] = data.ArrayLayout(signed(config.exponent_width), config.blen)
    fields["first"] = 1
    fields["final"] = 1
    return fields


def result_layout(config: FlattenedArrayConfig) -> data.StructLayout:
    return data.StructLayout({
        "c": data.ArrayLayout(signed(config.output_width), config.blen),
        "head": unsigned(config.head_width),
        "last": 1,
    })


def _delay(m: Module, signal, stages: int, name: str, *, reset_less: bool = True):
    for n in range(stages):
        reg = Signal.like(signal, name=f"{name}_d{n}", reset_less=reset_less)
        m.d.sync += reg.eq(signal)
        signal = reg
    return signal


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
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"Lanes must be a positive integer, not {lanes!r}")
        if not isinstance(width, int) or width < 2:
            raise ValueError(f"Width must be an integer >= 2, not {width!r}")
        if overflow not in ("wrap", "saturate"):
            raise ValueError(f"Overflow must be 'wrap' or 'saturate', not {overflow!r}")
        self.sub_arrays, self.lanes, self.width, self.overflow = sub_arrays, lanes, width, overflow
        self.levels = (sub_arrays - 1).bit_length()
        super().__init__({
            "partials": In(data.ArrayLayout(data.ArrayLayout(signed(width), lanes), sub_arrays)),
            "valid_in": In(1),
            "total": Out(data.ArrayLayout(signed(width), lanes)),
            "valid_out": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.width
        level = [[self.partials[s][j] for j in range(self.lanes)] for s in range(self.sub_arrays)]
        for depth in range(self.levels):
            nxt = []
            for p in range(0, len(level), 2):
                summed = []
                for j in range(self.lanes):
                    reg = Signal(signed(w), name=f"level{depth}_{p // 2}_c{j}", reset_less=True)
                    m.d.sync += reg.eq(accumulate(level[p][j], level[p + 1][j], w, self.overflow))
                    summed.append(reg)
                nxt.append(summed)
            level = nxt
        m.d.comb += [self.total[j].eq(level[0][j]) for j in range(self.lanes)]
        m.d.comb += self.valid_out.eq(_delay(m, self.valid_in, self.levels, "valid",
                                             reset_less=False))
        return m


class FlattenedArray(wiring.Component):
    """Flattened output-stationary array.

    ``operands``: ceil(K/S) beats per job (the driver pads K to a multiple of S with zeros),
    ``last`` on the final one. ``results``: M beats per job, row r of C = A . B (BLEN columns),
    ``last`` on row M - 1, ``head`` as given with the job.

    A job's last beat is accepted only when (1) M result rows are free in the result buffer and
    (2) at least BLEN cycles passed since the previous job's last beat (a result chain drains one
    row per cycle); every other beat is accepted at once.
    """

    def __init__(self, config: FlattenedArrayConfig):
        if not isinstance(config, FlattenedArrayConfig):
            raise TypeError(f"Config must be a FlattenedArrayConfig, not {config!r}")
        problems = list(config.check())
        if problems:
            p = problems[0]
            raise ValueError(f"{p.key} must be {p.allowed}, not {p.value!r}")
        self.config = config
        super().__init__({
            "operands": In(stream.Signature(operand_layout(config))),
            "results": Out(stream.Signature(result_layout(config))),
        })

    def elaborate(self, platform):
        cfg = self.config
        blen, subs, w = cfg.blen, cfg.sub_arrays, cfg.accumulator_width
        lanes = blen * subs
        m = Module()
        ops = self.operands

        # -- result buffer with credits (reserved at a job's last beat, returned when taken) -----
        buffer = ResultBuffer(m, depth=cfg.result_buffer_rows, width=result_layout(cfg).size,
                              results=self.results)

        # -- per-job tags (M, head) wait in a FIFO until the job's rows leave the tree -----------
        # Jobs are >= BLEN cycles apart and a job's rows have left the tree latency + BLEN cycles
        # after its last beat, so this many jobs can be in flight at most.
        tag_fields = {"rows": unsigned(blen.bit_length()), "head": unsigned(cfg.head_width)}
        if cfg.mxint:
            tag_fields.update(_mxint_job_fields(cfg))
        tag_layout = data.StructLayout(tag_fields)
        tag_depth = (cfg.latency + blen) // blen + 2
        tags = m.submodules.job_tags = SyncFIFO(width=tag_layout.size, depth=tag_depth)

        # -- admission --------------------------------------------------------------------------
        since_last = Signal(range(blen + 1), init=blen)
        in_job = Signal()
        last_ok = Signal()
        m.d.comb += ops.ready.eq(~ops.payload.last | last_ok)
        fire = ops.valid & ops.ready
        fire_last = fire & ops.payload.last
        with m.If(fire_last):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < blen):
            m.d.sync += since_last.eq(since_last + 1)
        with m.If(fire):
            m.d.sync += in_job.eq(~ops.payload.last)
        # An MXInt block that is not the tile's final one emits nothing and reserves nothing.
        emits = ops.payload.final if cfg.mxint else 1
        reserve = Mux(emits, ops.payload.rows, 0)
        m.d.comb += [
            last_ok.eq((buffer.credits >= reserve) & (since_last >= blen) & tags.w_rdy),
            buffer.reserve.eq(Mux(fire_last, reserve, 0)),
        ]
        tag_in = Signal(tag_layout)
        m.d.comb += [tag_in[name].eq(ops.payload[name]) for name in tag_fields]
        m.d.comb += [
            tags.w_en.eq(fire_last),
            tags.w_data.eq(tag_in),
        ]

        # -- input register: transpose-on-read is only a choice of lane order ---------------------
        b_lanes = []
        for s in range(subs):
            for j in range(blen):
                plain = ops.payload.b[s * blen + j]
                if cfg.transpose_b:
                    b_lanes.append(Mux(ops.payload.transpose, ops.payload.b[j * subs + s], plain))
                else:
                    b_lanes.append(plain)
        beat_a = Signal(data.ArrayLayout(signed(cfg.a_width), lanes), reset_less=True)
        beat_b = Signal(data.ArrayLayout(signed(cfg.b_width), lanes), reset_less=True)
        beat_valid = Signal()
        beat_first, beat_last = Signal(reset_less=True), Signal(reset_less=True)
        m.d.sync += [beat_a.eq(ops.payload.a), beat_valid.eq(fire), beat_first.eq(~in_job),
                     beat_last.eq(ops.payload.last)]
        m.d.sync += [beat_b[n].eq(lane) for n, lane in enumerate(b_lanes)]

        # Control skew (row i is i cycles late) is the same for every sub-array: build it once.
        valid_rows = [_delay(m, beat_valid, i, f"v_skew{i}", reset_less=False) for i in range(blen)]
        first_rows = [_delay(m, beat_first, i, f"first_skew{i}") for i in range(blen)]
        last_rows = [_delay(m, beat_last, i, f"last_skew{i}") for i in range(blen)]

        partial_rows = []   # per sub-array: deskewed bottom-of-chain row (BLEN values)
        row_valid = None
        for s in range(subs):
            pes = [[OutputStationaryPE(a_width=cfg.a_width, b_width=cfg.b_width, acc_width=w,
                                       overflow=cfg.overflow) for _ in range(blen)]
                   for _ in range(blen)]
            for i in range(blen):
                for j in range(blen):
                    m.submodules[f"sub{s}_pe_{i}_{j}"] = pes[i][j]
            for i in range(blen):
                left = pes[i][0]
                m.d.comb += [
                    left.a_in.eq(_delay(m, beat_a[s * blen + i], i, f"sub{s}_a_skew{i}")),
                    left.valid_in.eq(valid_rows[i]),
                    left.first_in.eq(first_rows[i]),
                    left.last_in.eq(last_rows[i]),
                ]
                for j in range(1, blen):
                    pe, prev = pes[i][j], pes[i][j - 1]
                    m.d.comb += [pe.a_in.eq(prev.a_out), pe.valid_in.eq(prev.valid_out),
                                 pe.first_in.eq(prev.first_out), pe.last_in.eq(prev.last_out)]
            for j in range(blen):
                m.d.comb += [
                    pes[0][j].b_in.eq(_delay(m, beat_b[s * blen + j], j, f"sub{s}_b_skew{j}")),
                    pes[0][j].chain_in.eq(0), pes[0][j].chain_valid_in.eq(0),
                ]
                for i in range(1, blen):
                    m.d.comb += [pes[i][j].b_in.eq(pes[i - 1][j].b_out),
                                 pes[i][j].chain_in.eq(pes[i - 1][j].chain_out),
                                 pes[i][j].chain_valid_in.eq(pes[i - 1][j].chain_valid_out)]
            bottom = pes[blen - 1]
            partial_rows.append([_delay(m, bottom[j].chain_out, blen - 1 - j,
                                        f"sub{s}_c_deskew{j}") for j in range(blen)])
            if s == 0:
                # Every sub-array runs in lockstep: sub-array 0's chain valid stands for all.
                row_valid = bottom[blen - 1].chain_valid_out

        # -- adder tree across sub-arrays ------------------------------------------------------
        tree = m.submodules.tree = PartialSumTree(sub_arrays=subs, lanes=blen, width=w,
                                                  overflow=cfg.overflow)
        for s in range(subs):
            m.d.comb += [tree.partials[s][j].eq(partial_rows[s][j]) for j in range(blen)]
        m.d.comb += tree.valid_in.eq(row_valid)
        tree_valid = tree.valid_out
        tree_row = [tree.total[j] for j in range(blen)]

        # -- emit the job's first M rows, tagged ------------------------------------------------
        tag = Signal(tag_layout)
        m.d.comb += tag.eq(tags.r_data)
        row_index = Signal(range(blen))
        with m.If(tree_valid):
            m.d.sync += row_index.eq(Mux(row_index == blen - 1, 0, row_index + 1))
        out_row = Signal(result_layout(cfg))
        emit = tree_valid & (row_index < tag.rows)
        if cfg.mxint:
            values = self._align(m, cfg, tag, row_index, tree_valid, tree_row)
            emit = emit & tag.final
        else:
            values = tree_row
        m.d.comb += [
            tags.r_en.eq(tree_valid & (row_index == blen - 1)),
            out_row.head.eq(tag.head),
            out_row.last.eq(row_index == tag.rows - 1),
            buffer.fifo.w_data.eq(out_row),
            buffer.fifo.w_en.eq(emit),
        ]
        m.d.comb += [out_row.c[j].eq(values[j]) for j in range(blen)]
        return m

    @staticmethod
    def _align(m: Module, cfg: FlattenedArrayConfig, tag, row_index, tree_valid, tree_row):
        """MXInt: shift each exact block sum leaving the tree by its exponent sum and add it into
        that element's fixed-point accumulator (LSB = 2^(emin_a + emin_b)), one row per cycle.

        Alignment after the tree costs BLEN shifters and adders for the whole array instead of
        one per PE, and stays exact: PEs and tree sum one block's integer products (all with the
        same exponent), the wide accumulator sums blocks.
        """
        blen, ow = cfg.blen, cfg.output_width
        half = 1 << (cfg.exponent_width - 1)
        # e - emin for a two's-complement exponent is the code with its sign bit flipped.
        if cfg.a_format == "mxint":
            a_rel = Signal(unsigned(cfg.exponent_width))
            with m.Switch(row_index):
                for r in range(blen):
                    with m.Case(r):
                        m.d.comb += a_rel.eq(tag.a_exp[r].as_unsigned() ^ half)
        else:
            a_rel = 0
        acc = [[Signal(signed(ow), name=f"aligned_{r}_{j}", reset_less=True) for j in range(blen)]
               for r in range(blen)]
        values = []
        for j in range(blen):
            b_rel = (tag.b_exp[j].as_unsigned() ^ half) if cfg.b_format == "mxint" else 0
            shift = Signal(range(cfg.exponent_span + 1), name=f"shift_c{j}")
            m.d.comb += shift.eq(a_rel + b_rel)
            shifted = Signal(signed(ow), name=f"shifted_c{j}")
            m.d.comb += shifted.eq(tree_row[j].as_signed() << shift)
            previous = Signal(signed(ow), name=f"previous_c{j}")
            with m.Switch(row_index):
                for r in range(blen):
                    with m.Case(r):
                        m.d.comb += previous.eq(acc[r][j])
            total = Signal(signed(ow), name=f"aligned_sum_c{j}")
            m.d.comb += total.eq(Mux(tag.first, shifted, (previous + shifted)[:ow].as_signed()))
            with m.If(tree_valid):
                with m.Switch(row_index):
                    for r in range(blen):
                        with m.Case(r):
                            m.d.sync += acc[r][j].eq(total)
            values.append(total)
        return values
