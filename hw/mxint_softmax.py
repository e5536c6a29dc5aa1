"""MXIntSoftmax: softmax over rows of MXInt blocks, one block per cycle in steady state
(software_model/mxint_softmax.py, ``mxint_softmax(..., tile_blocks=1)``, is the reference, bit
for bit).

A row's sum is known only after its last block, so the unit makes two passes over each row,
with a row buffer between them:

* **First pass** (free-running pipeline: work is admitted only against buffer credits, so it
  never stalls): each element to the log2 domain ``z`` (a constant multiply by
  ``scale * log2 e``, then one shared shift per block, saturated); the block's maximum (a
  pipelined max tree) rounded up to an integer; the row's running max ``m`` (a one-cycle loop);
  the terms ``2^(z - m)`` (integer part a shift, fraction a piecewise polynomial) against the
  running max; the block's sum (adder tree) and the running sum ``l``, rescaled by a right
  shift whenever ``m`` rises (the online softmax of FlashAttention).  Each block's terms and
  the running max they were computed against go into the row buffer.
* **Reciprocal** (free-running, once per row): ``l`` normalised by its leading one, a seed table
  and Newton steps; ``(R, lo, M)`` go into a small row-info FIFO.
* **Second pass** (global enable from the output's backpressure): a block's terms shifted to the
  row's final max, multiplied by ``R``, clamped at 1 and rounded once into an MXInt block.

Credits: ``buffer_blocks`` block credits (a block takes one when admitted and returns it when the
second pass reads it) and ``row_slots`` row credits (taken by a row's first block, returned when
the second pass finishes the row) keep both FIFOs from overflowing, so the first pass and the
reciprocal never need to stall.  With the default buffer (``max_row_blocks`` plus the first
pass's and reciprocal's latency, see :attr:`MXIntSoftmax.default_buffer_blocks`) the unit takes
one block per cycle back to back, rows of any length up to ``max_row_blocks``; the cycle of
every beat follows :func:`software_model.mxint_softmax.softmax_cycles`.

Rows longer than ``max_row_blocks`` are cut: the block that reaches the limit ends its row.
"""
from amaranth import *
from amaranth.lib import stream
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_fields, block_layout, check_format, decode_exponent
from hw.mxint_fixed import (Staged, normalise, piecewise_polynomial, reciprocal_newton,
                            scale_saturate)
from hw.mxint_unit import TwoPassUnit, row_result_layout
from software_model.mxint_fixed import reciprocal_seed_table
from software_model.mxint_softmax import SoftmaxSpec

__all__ = ["MXIntSoftmax"]


class MXIntSoftmax(TwoPassUnit):
    """``scores`` stream ``{block, mask, last}`` in, ``probs`` stream ``{exponent, mantissas,
    last}`` out.  Keyword-only arguments: the arithmetic ones of
    :class:`software_model.mxint_softmax.SoftmaxSpec` (``in_format``/``out_format`` are its
    ``in_fmt``/``out_fmt``), plus ``buffer_blocks`` (row buffer depth in blocks; None: the
    full-throughput default), ``tree_levels`` (tree levels between registers) and
    ``multiplier_chunk_bits`` (split the multipliers' second operand into registered chunks of
    this many bits; None: never)."""

    _spec_repr = ("max_row_blocks", "exp_bits", "recip_bits")

    def __init__(self, *, in_format, out_format, max_row_blocks=8, scale=1.0,
                 scale_frac_bits=12, range_bits=6, exp_frac_bits=10, exp_segment_bits=4,
                 exp_degree=2, exp_bits=12, recip_table_bits=5, newton_steps=1, recip_bits=12,
                 buffer_blocks=None, tree_levels=2, multiplier_chunk_bits=None):
        check_format(in_format)
        check_format(out_format)
        self.spec = SoftmaxSpec(in_format, out_format, max_row_blocks, scale, scale_frac_bits,
                                range_bits, exp_frac_bits, exp_segment_bits, exp_degree,
                                exp_bits, recip_table_bits, newton_steps, recip_bits)
        self._pipeline_knobs(tree_levels, multiplier_chunk_bits)
        self._size_buffers(buffer_blocks, row_blocks=self.spec.max_row_blocks)
        self.row_slots = min(self.buffer_blocks, self.row_info_latency + 3)
        k = in_format.block_size
        super().__init__({
            "scores": In(stream.Signature(StructLayout({
                "block": block_layout(in_format), "mask": unsigned(k), "last": 1}))),
            "probs": Out(stream.Signature(row_result_layout(out_format, k))),
        })

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        s = self.spec
        k, nb = s.block_size, s.max_row_blocks
        lat = self.latencies
        return {
            "scores": {
                "beat": f"one MXInt block of {k} scores of a row (softmax runs along the row)",
                "fields": {
                    "block": "{exponent, mantissas}: " + "; ".join(
                        block_fields(s.in_fmt, "score").values()),
                    "mask": f"mask[i], i = 0..{k - 1}: 1 = element i takes part, 0 = masked "
                            "(its probability is 0; a fully masked row gives zeros)",
                    "last": f"1 on a row's final block; a row is at most {nb} blocks: the "
                            f"{nb}-th block of a row ends it whatever last says (the next beat "
                            "starts a new row)",
                },
                "ready": "registered state only, never combinational on probs or on the "
                         "payload: high while a row-buffer block credit is free and, for a "
                         "row's first block, a row credit is free",
            },
            "probs": {
                "beat": "the probabilities of one scores block",
                "fields": {**block_fields(s.out_fmt, "probability of element"),
                           "last": "1 on a row's final block (the row as cut)"},
                "order": "one beat per scores beat, in order; a row's first block leaves only "
                         "after its last block has been taken (its sum is needed)",
                "backpressure": "stalls the second pass only; the first pass keeps taking "
                                "blocks while buffer credits last, then scores.ready falls; "
                                "nothing is dropped",
            },
            "buffers": {"row_buffer_blocks": self.buffer_blocks, "row_slots": self.row_slots},
            "latency": f"first pass {lat['first_pass']} cycles (block taken to row buffer), "
                       f"row statistics {lat['row_info']} cycles (a row's last block to its "
                       f"reciprocal), second pass {lat['second_pass']} cycles (buffer read to "
                       "output); cycle of every beat: "
                       "software_model.mxint_softmax.softmax_cycles",
            "arithmetic": "software_model.mxint_softmax.mxint_softmax (tile_blocks=1), bit for "
                          "bit",
        }

    # ---- the first pass and the reciprocal --------------------------------------------------
    def _first_pass(self, m, payload, take, first):
        """Returns (terms, tag, last) at the buffer-write stage, the row info at the end of the
        reciprocal, and both stages (counted from the admission cycle)."""
        s = self.spec
        k = s.block_size
        p = self._pipeline(m, "p1")
        blk = payload.block
        e = decode_exponent(blk.exponent, s.in_fmt)
        valid = Staged(take, 0)
        first0 = Staged(first, 0)
        last0 = Staged(payload.last, 0)
        mask0 = Staged([payload.mask[i] for i in range(k)], 0)
        # z = sat(floor(m C 2^(e + offset))): the constant product is registered first
        c = s.scale_constant
        mc = p.scaled(Staged([blk.mantissas[i] for i in range(k)], 0), c, "mc")
        sh = p.at(p.reg(Staged(e + s.z_shift_offset, 0), "zsh", shape=signed(len(e) + 6)),
                  mc.stage)
        z = p.reg(Staged([scale_saturate(m, v, sh, s.z_bits, p._name(f"z{i}"))
                          for i, v in enumerate(mc.value)], mc.stage), "z",
                  shape=signed(s.z_bits))
        zmin = s.z_min
        masked = p.comb(lambda *vs: [Mux(vs[k + i], vs[i], zmin) for i in range(k)],
                        *[Staged(v, z.stage) for v in z.value],
                        *[Staged(v, 0) for v in mask0.value], name="zm")
        zmax = p.tree(masked, lambda a, b: Mux(a > b, a, b), "zmax")
        fz = s.exp_frac_bits
        bm = p.reg(p.comb(lambda v: (v + ((1 << fz) - 1)) >> fz, zmax), "bmax",
                   shape=signed(s.max_bits))
        # running max: a one-cycle loop at this stage
        st = bm.stage
        m_reg = Signal(signed(s.max_bits), name="running_max", reset_less=True)
        v_at = p.at(valid, st, control=True)
        f_at = p.at(first0, st)
        m_new = Signal(signed(s.max_bits), name="running_max_next")
        m.d.comb += m_new.eq(Mux(f_at | (bm.value > m_reg), bm.value, m_reg))
        rescale = Signal(range(s.sum_bits + 1), name="rescale")
        diff = Signal(signed(s.max_bits + 1), name="rescale_diff")
        m.d.comb += [
            diff.eq(m_new - m_reg),
            rescale.eq(Mux(f_at, 0, Mux(diff > s.sum_bits, s.sum_bits, diff))),
        ]
        with m.If(v_at):
            m.d.sync += m_reg.eq(m_new)
        tag = p.reg(Staged(m_new, st), "tag")
        resc = p.reg(Staged(rescale, st), "rescale")
        # terms against the running max
        zt = p.at(z, tag.stage)
        d = [p.signal(zt[i] - (tag.value << fz), f"d{i}", signed(s.d_bits)) for i in range(k)]
        qr = p.reg(Staged([Cat(v[:fz]) for v in d] + [(-(v >> fz)) for v in d], tag.stage),
                   "qr")
        r_codes = Staged(qr.value[:k], qr.stage)
        negq = Staged(qr.value[k:], qr.stage)
        pw = piecewise_polynomial(p, r_codes, s.exp2, "exp2")
        fp = s.exp_bits
        mask_at = p.at(mask0, pw.stage)
        negq_at = p.at(negq, pw.stage)
        amts = [p.signal(Mux(negq_at[i] > fp + 1, fp + 1, negq_at[i]), f"tsh{i}",
                         unsigned((fp + 1).bit_length())) for i in range(k)]
        terms = p.reg(Staged([Mux(mask_at[i], pw.value[i] >> amts[i], 0) for i in range(k)],
                             pw.stage), "t", shape=unsigned(s.term_bits))
        # block sum and the running sum
        bsum = p.tree(terms, lambda a, b: a + b, "bsum")
        bs = p.reg(bsum, "bs", shape=unsigned(s.sum_bits))
        st2 = bs.stage
        l_reg = Signal(unsigned(s.sum_bits), name="running_sum", reset_less=True)
        v2 = p.at(valid, st2, control=True)
        f2 = p.at(first0, st2)
        r2 = p.at(resc, st2)
        l_new = Signal(unsigned(s.sum_bits), name="running_sum_next")
        m.d.comb += l_new.eq(Mux(f2, 0, l_reg >> r2) + bs.value)
        with m.If(v2):
            m.d.sync += l_reg.eq(l_new)
        last2 = p.at(last0, st2)
        row_l = p.reg(Staged(l_new, st2), "row_l")
        row_valid = p.reg(Staged(v2 & last2, st2), "row_v", control=True)
        row_m = Staged(p.at(tag, row_l.stage), row_l.stage)
        # reciprocal of l, once per row
        sn, lo = normalise(p, row_l, s.recip_frac_bits, "norm")
        table = reciprocal_seed_table(s.recip_table_bits, s.recip_bits)
        y = reciprocal_newton(p, sn, s.recip_frac_bits, table=table, steps=s.newton_steps,
                              out_bits=s.recip_bits, name="recip")
        nonzero = p.at(p.comb(lambda v: v != 0, row_l), y.stage)
        info = {
            "R": Mux(nonzero, y.value, 0),
            "lo": p.at(lo, y.stage),
            "M": p.at(row_m, y.stage),
        }
        info_valid = p.at(row_valid, y.stage, control=True)
        write_stage = terms.stage
        buf = {"t": terms.value, "tag": p.at(tag, write_stage),
               "last": p.at(last0, write_stage)}
        buf_valid = p.at(valid, write_stage, control=True)
        return buf, buf_valid, write_stage, info, info_valid, y.stage

    def _pass1_latency(self):
        m = Module()
        s = self.spec
        payload = Signal(StructLayout({"block": block_layout(s.in_fmt),
                                       "mask": unsigned(s.block_size), "last": 1}))
        out = self._first_pass(m, payload, Const(1, 1), Const(1, 1))
        m._MustUse__silence = True      # built only to count the stages
        return out[2], out[5]

    # ---- the second pass ---------------------------------------------------------------------
    def _second_pass(self, m, t, tag, last, R, lo, M, valid, enable):
        s = self.spec
        k = s.block_size
        p = self._pipeline(m, "p2", enable=enable)
        fp, fr = s.exp_bits, s.recip_bits
        regs = p.reg(Staged(list(t) + [tag, last, R, lo, M], 0), "in")
        st = regs.stage
        t1 = regs.value[:k]
        tag1, last1, R1, lo1, M1 = regs.value[k:]
        diff = p.signal(M1 - tag1, "final_shift", signed(s.max_bits + 1))
        amt = p.signal(Mux(diff > fp + 1, fp + 1, diff), "final_amt", unsigned(5))
        shifted = p.reg(Staged([v >> amt for v in t1], st), "tf", shape=unsigned(s.term_bits))
        prods = [p.multiply(Staged(v, shifted.stage), Staged(R1, st), f"tr{i}")
                 for i, v in enumerate(shifted.value)]
        prod = p.reg(Staged([q.value for q in prods], prods[0].stage), "v",
                     shape=unsigned(s.product_bits))
        lo_at = p.at(Staged(lo1, st), prod.stage)
        # 1.0 on the product's grid: 2^(Fr + lo), lo < sum_bits
        one_at = p.signal(lo_at + fr, "one_at", unsigned(6))
        one = p.signal(Const(1, 1) << one_at, "one", unsigned(fr + s.sum_bits + 1))
        clamped = p.comb(lambda *vs: [Mux(v > one, one, v) for v in vs],
                         *[Staged(v, prod.stage) for v in prod.value], name="vc",
                         shape=unsigned(s.product_bits))
        lsb = p.comb(lambda l: -(l + fr), Staged(lo_at, prod.stage), name="lsb",
                     shape=signed(8))
        return self._round_row_out(p, clamped, lsb, valid, Staged(last1, st))

    def _pass2_latency(self):
        m = Module()
        s = self.spec
        k = s.block_size
        zeros = [Const(0, s.term_bits)] * k
        out = self._second_pass(m, zeros, Const(0, signed(s.max_bits)), Const(0, 1),
                                Const(0, s.recip_bits + 1), Const(0, 8),
                                Const(0, signed(s.max_bits)), Const(1, 1), Const(1, 1))
        m._MustUse__silence = True
        return out[3]

    def elaborate(self, platform):
        m = Module()
        s = self.spec
        k = s.block_size
        # ---- admission: credits for the row buffer and the row-info FIFO ---------------------
        c = self._credits()
        take = self._admit(m, c, self.scores)
        cut = Signal()
        m.d.comb += cut.eq(self.scores.payload.last | (c.count == s.max_row_blocks - 1))
        self._count_blocks(m, c, take, cut)
        payload = Signal.like(self.scores.payload)
        m.d.comb += [payload.eq(self.scores.payload), payload.last.eq(cut)]

        buf, buf_valid, _, info, info_valid, _ = self._first_pass(m, payload, take, c.first)
        tw = s.term_bits
        buf_layout = StructLayout({"t": ArrayLayout(unsigned(tw), k),
                                   "tag": signed(s.max_bits), "last": 1})
        info_layout = StructLayout({"R": unsigned(s.recip_bits + 1), "lo": unsigned(8),
                                    "M": signed(s.max_bits)})
        fifo, infos = self._row_fifos(m, buf_layout.size, info_layout.size)
        w_buf = Signal(buf_layout)
        m.d.comb += [w_buf.t[i].eq(buf["t"][i]) for i in range(k)]
        m.d.comb += [w_buf.tag.eq(buf["tag"]), w_buf.last.eq(buf["last"]),
                     fifo.w_data.eq(w_buf), fifo.w_en.eq(buf_valid)]
        w_info = Signal(info_layout)
        m.d.comb += [w_info.R.eq(info["R"]), w_info.lo.eq(info["lo"]), w_info.M.eq(info["M"]),
                     infos.w_data.eq(w_info), infos.w_en.eq(info_valid)]

        # ---- second pass ------------------------------------------------------------------------
        advance = ~self.probs.valid | self.probs.ready
        r_buf = buf_layout(fifo.r_data)
        r_info = info_layout(infos.r_data)
        pop = Signal()
        m.d.comb += [
            pop.eq(fifo.r_rdy & infos.r_rdy & advance),
            fifo.r_en.eq(pop),
            infos.r_en.eq(pop & r_buf.last),
        ]
        out, out_valid, out_last, _ = self._second_pass(
            m, [r_buf.t[i] for i in range(k)], r_buf.tag, r_buf.last, r_info.R, r_info.lo,
            r_info.M, pop, advance)
        self._drive_blocks(m, self.probs, out, out_valid, out_last)
        self._return_credits(m, c, take, pop, r_buf.last)
        return m
