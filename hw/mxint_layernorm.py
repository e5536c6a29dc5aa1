"""MXIntLayerNorm: LayerNorm over rows of ``row_length`` elements in MXInt blocks, one block per
cycle in steady state (software_model/mxint_layernorm.py is the reference, bit for bit).

Like the softmax, a row must be complete before any of it can be normalised, so the unit makes
two passes with a row buffer between them:

* **First pass** (free-running, credits as in hw/mxint_softmax.py): each element onto the fixed
  grid (one shared shift per block, saturated), its square (a full-width multiplier, optionally
  split into registered chunks), two pipelined adder trees, and the row's exact running sums
  ``Sx`` and ``Sxx`` (one-cycle loops).  The raw input block goes into the row buffer (storing
  the 8-bit mantissas is cheaper than storing the wider fixed-point values; the second pass
  converts them again, identically).
* **Row statistics** (free-running, once per row): ``V + E = N Sxx - Sx^2 + E`` exactly (the
  square optionally split), normalised to ``v 4^j``, a seed table and Newton steps for
  ``1/sqrt(v)``; ``(Sx, y_r, j)`` go into a row-info FIFO.
* **Second pass** (global enable from the output's backpressure): ``c = N x - Sx`` (a constant
  multiply), ``c' = c 2^(Fz - j)``, ``z = c' y_r / 2^Fr``, times gamma, plus beta (each aligned
  by a shared shift, saturated), one rounding into an MXInt block.

gamma and beta live in a parameter store of ``row_length / k`` blocks, written through the
``params`` stream (one beat ``{gamma, beta}`` per block, in channel order).  No row is taken
before the first complete set has arrived; a later load waits until no row is in flight and
holds new rows off until its last beat, so every row sees one complete parameter set (rows
offered while a load is offered wait for it).
"""
from amaranth import *
from amaranth.lib import stream
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_fields, block_layout, check_format, decode_exponent
from hw.mxint_fixed import (Staged, carry_propagate, carry_save_sum, normalise, rsqrt_newton,
                            scale_saturate)
from hw.mxint_unit import TwoPassUnit, row_result_layout
from software_model.mxint_fixed import rsqrt_seed_table
from software_model.mxint_layernorm import LayerNormSpec

__all__ = ["MXIntLayerNorm"]


def _extend_signed(v, width):
    return Cat(v, v[-1].replicate(width - len(v))) if len(v) < width else v[:width]


class MXIntLayerNorm(TwoPassUnit):
    """``operands`` stream of MXInt blocks of x in, ``results`` stream ``{exponent, mantissas,
    last}`` out, ``params`` stream ``{gamma, beta}`` (blocks in ``param_format``) to load the
    affine parameters.  Keyword-only arguments: those of
    :class:`software_model.mxint_layernorm.LayerNormSpec` (``*_format`` are its ``*_fmt``),
    plus ``buffer_blocks``, ``tree_levels`` and ``multiplier_chunk_bits`` as for
    :class:`hw.mxint_softmax.MXIntSoftmax`."""

    _spec_repr = ("row_length", "frac_bits", "rsqrt_bits")

    def __init__(self, *, in_format, out_format, param_format, row_length=64, frac_bits=10,
                 int_bits=8, eps=1e-12, rsqrt_table_bits=6, newton_steps=1, rsqrt_bits=12,
                 norm_frac_bits=10, out_frac_bits=10, out_int_bits=7, buffer_blocks=None,
                 tree_levels=2, multiplier_chunk_bits=None):
        for fmt in (in_format, out_format, param_format):
            check_format(fmt)
        self.spec = LayerNormSpec(in_format, out_format, param_format, row_length, frac_bits,
                                  int_bits, eps, rsqrt_table_bits, newton_steps, rsqrt_bits,
                                  norm_frac_bits, out_frac_bits, out_int_bits)
        self._pipeline_knobs(tree_levels, multiplier_chunk_bits)
        self._size_buffers(buffer_blocks, row_blocks=self.spec.row_blocks)
        # the block credits allow at most ceil(D / row_blocks) + 1 rows in flight (a partial row
        # at each end): that many row credits never hold the unit back
        self.row_slots = min(-(-self.buffer_blocks // self.spec.row_blocks) + 1,
                             self.buffer_blocks)
        k = in_format.block_size
        super().__init__({
            "operands": In(stream.Signature(block_layout(in_format))),
            "params": In(stream.Signature(StructLayout({
                "gamma": block_layout(param_format), "beta": block_layout(param_format)}))),
            "results": Out(stream.Signature(row_result_layout(out_format, k))),
        })

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        s = self.spec
        k, nb = s.block_size, s.row_blocks
        lat = self.latencies
        pf = block_fields(s.param_fmt, "channel b*k +")
        return {
            "operands": {
                "beat": f"block b of a row of x: channels b*{k} .. b*{k}+{k - 1}; a row is "
                        f"exactly {nb} beats (row_length {s.row_length} / {k}), counted from "
                        "reset (there is no last field)",
                "fields": block_fields(s.in_fmt, "channel b*k +"),
                "ready": "registered state (block and row credits, parameters loaded) and, "
                         "for a row's first block only, combinational on params.valid: a row "
                         "does not start in a cycle where a parameter load is offered, nor "
                         "before a complete parameter set has arrived",
            },
            "params": {
                "beat": f"gamma and beta of block b of channels (b*{k} .. b*{k}+{k - 1}); "
                        f"{nb} beats in channel order are one parameter set",
                "fields": {"gamma": "gamma block: " + "; ".join(pf.values()),
                           "beta": "beta block, the same layout"},
                "ready": "registered state only: high when every row-buffer credit is back "
                         "(earlier rows have all been read by the second pass) and no row is "
                         "partly taken",
            },
            "pairing": "no row is taken before the first complete parameter set; a later set "
                       "is taken only between rows with the unit empty, and new rows wait until "
                       "its last beat; every row uses the set complete when its first block "
                       "was taken",
            "results": {
                "beat": "one normalised block of a row",
                "fields": {**block_fields(s.out_fmt, "output channel b*k +"),
                           "last": f"1 on a row's final ({nb}-th) block"},
                "order": "one beat per operands beat, in order; a row's first block leaves only "
                         "after its last block has been taken (its statistics are needed)",
                "backpressure": "stalls the second pass only; the first pass keeps taking "
                                "blocks while buffer credits last; nothing is dropped",
            },
            "buffers": {"row_buffer_blocks": self.buffer_blocks, "row_slots": self.row_slots},
            "latency": f"first pass {lat['first_pass']} cycles, row statistics "
                       f"{lat['row_info']} cycles (a row's last block to its 1/sqrt), second "
                       f"pass {lat['second_pass']} cycles (buffer read to output)",
            "arithmetic": "software_model.mxint_layernorm.mxint_layernorm, bit for bit",
        }

    def _fixed(self, m, p, exponent, mantissas, stage, name):
        s = self.spec
        e = decode_exponent(exponent, s.in_fmt)
        sh = p.signal(e + s.x_shift_offset, f"{name}_sh", signed(len(e) + 6))
        return Staged([scale_saturate(m, mantissas[i], sh, s.x_bits, p._name(f"{name}{i}"))
                       for i in range(s.block_size)], stage)

    # ---- first pass and row statistics -------------------------------------------------------
    def _first_pass(self, m, block, take, first, last):
        s = self.spec
        k = s.block_size
        p = self._pipeline(m, "p1")
        valid = Staged(take, 0)
        xq = p.reg(self._fixed(m, p, block.exponent, block.mantissas, 0, "xq"), "xq",
                   shape=signed(s.x_bits))
        # squares as chunk products (x = sum a_i 2^(c i): x^2 = sum_i a_i^2 2^(2 c i)
        # + sum_(i<j) a_i a_j 2^(c (i + j) + 1)), registered, then summed in carry-save form
        c = self.multiplier_chunk_bits or 8
        pieces = []
        for lo in range(0, s.x_bits, c):
            hi = min(lo + c, s.x_bits)
            pieces.append((lo, hi))
        prods, shifts = [], []
        for v in xq.value:
            parts = [v[lo:hi].as_signed() if hi == s.x_bits else v[lo:hi] for lo, hi in pieces]
            for i, (li, _) in enumerate(pieces):
                for j in range(i, len(pieces)):
                    prods.append(parts[i] * parts[j])
                    shifts.append(li + pieces[j][0] + (i != j))
        pp = p.reg(Staged(prods, xq.stage), "pp")
        st = pp.stage
        xs = p.at(xq, st)
        v_at = p.at(valid, st, control=True)
        f_at = p.at(Staged(first, 0), st)
        last_at = p.at(Staged(last, 0), st)
        # the row's running sums stay in carry-save form: no carry chain in the loop
        loops = {}
        for key, width, terms in (
                ("sx", s.sum_bits, list(xs)),
                ("sxx", s.square_sum_bits, [(q.as_signed() if q.shape().signed else q) << sh
                                            for q, sh in zip(pp.value, shifts)])):
            acc_s = Signal(width, name=f"row_{key}_s", reset_less=True)
            acc_c = Signal(width, name=f"row_{key}_c", reset_less=True)
            ns, nc = carry_save_sum(m, [Mux(f_at, 0, acc_s), Mux(f_at, 0, acc_c)] + terms, width,
                                    f"row_{key}")
            new_s = p.signal(ns, f"{key}_s_next")
            new_c = p.signal(nc, f"{key}_c_next")
            with m.If(v_at):
                m.d.sync += [acc_s.eq(new_s), acc_c.eq(new_c)]
            loops[key] = (new_s, new_c, width)
        row_valid = p.reg(Staged(v_at & last_at, st), "row_v", control=True)
        row = p.reg(Staged([loops["sx"][0], loops["sx"][1], loops["sxx"][0], loops["sxx"][1]],
                           st), "row")
        sx = carry_propagate(p, Staged(row.value[0], row.stage), Staged(row.value[1], row.stage),
                             s.sum_bits, "sx")
        sxx = carry_propagate(p, Staged(row.value[2], row.stage),
                              Staged(row.value[3], row.stage), s.square_sum_bits, "sxx",
                              signed_result=False)
        # V + E = N Sxx - Sx^2 + E, exact, in carry-save form: N Sxx as shifted copies,
        # -Sx^2 as negated chunk products (-q = ~q + 1)
        sq = p.multiply(sx, sx, "sx2")
        w_rad = s.radicand_bits + 1
        st_r = max(sq.stage, sxx.stage)
        n_terms = [Value.cast(p.at(sxx, st_r)) << b for b in range(s.row_length.bit_length())
                   if s.row_length >> b & 1]
        neg_sq = ~_extend_signed(Value.cast(p.at(sq, st_r)), w_rad)
        rs, rc = carry_save_sum(m, n_terms + [neg_sq, Const(1 + s.epsilon_units, w_rad)], w_rad,
                                "rad")
        rad = carry_propagate(p, Staged(rs, st_r), Staged(rc, st_r), s.radicand_bits, "rad",
                              signed_result=False)
        vn, lo = normalise(p, rad, s.rsqrt_frac_bits, "norm", even=True)
        table = rsqrt_seed_table(s.rsqrt_table_bits, s.rsqrt_bits)
        y = rsqrt_newton(p, vn, s.rsqrt_frac_bits, table=table, steps=s.newton_steps,
                         out_bits=s.rsqrt_bits, name="rsqrt")
        info = {"sx": p.at(sx, y.stage), "y": y.value,
                "j": p.at(Staged(Value.cast(lo.value)[1:], lo.stage), y.stage)}
        info_valid = p.at(row_valid, y.stage, control=True)
        return valid, info, info_valid, y.stage

    def _pass1_latency(self):
        m = Module()
        block = Signal(block_layout(self.spec.in_fmt))
        _, _, _, row_stage = self._first_pass(m, block, Const(1, 1), Const(1, 1), Const(1, 1))
        m._MustUse__silence = True      # built only to count the stages
        # the raw block is written to the buffer in its admission cycle
        return 0, row_stage

    # ---- second pass -----------------------------------------------------------------------------
    def _second_pass(self, m, block, gamma, beta, sx, y, j, last, valid, enable):
        s = self.spec
        k = s.block_size
        p = self._pipeline(m, "p2", enable=enable)
        pf = s.param_fmt
        fz, fa, fr = s.norm_frac_bits, s.out_frac_bits, s.rsqrt_bits
        regs = p.reg(Staged([block, gamma, beta, sx, y, j, last], 0), "in")
        blk, g, b, sx1, y1, j1, last1 = regs.value
        st = regs.stage
        xq = p.reg(self._fixed(m, p, blk.exponent, blk.mantissas, st, "xq"), "xq",
                   shape=signed(s.x_bits))
        # c = N x - Sx: N x as shifted copies, -Sx = ~Sx + 1, summed in carry-save form and
        # resolved by a limbed adder (a 28-bit carry chain in one stage is too deep)
        wc = s.centred_bits
        nsx = ~_extend_signed(Value.cast(p.at(Staged(sx1, st), xq.stage)), wc)
        cs = []
        for i, v in enumerate(xq.value):
            terms = [v << b for b in range(s.row_length.bit_length()) if s.row_length >> b & 1]
            ss, cc = carry_save_sum(m, terms + [nsx, Const(1, wc)], wc, f"c{i}")
            cs.append(carry_propagate(p, Staged(ss, xq.stage), Staged(cc, xq.stage), wc,
                                      f"c{i}"))
        c = Staged([v.value for v in cs], cs[0].stage)
        csh = p.signal(fz - p.at(Staged(j1, st), c.stage), "csh", signed(8))
        c1 = p.reg(Staged([scale_saturate(m, v, csh, s.norm_bits, p._name(f"c1_{i}"))
                           for i, v in enumerate(c.value)], c.stage), "c1",
                   shape=signed(s.norm_bits))
        zs = [p.multiply(Staged(v, c1.stage), Staged(y1, st), f"zy{i}")
              for i, v in enumerate(c1.value)]
        z = p.reg(Staged([q.value >> fr for q in zs], zs[0].stage), "z",
                  shape=signed(s.norm_bits))
        gm = [Staged(g.mantissas[i], st) for i in range(k)]
        prods = [p.multiply(Staged(v, z.stage), gm[i], f"zg{i}") for i, v in enumerate(z.value)]
        zg = p.reg(Staged([q.value for q in prods], prods[0].stage), "zg",
                   shape=signed(s.norm_bits + pf.element_width))
        eg = decode_exponent(g.exponent, pf)
        eb = decode_exponent(b.exponent, pf)
        ga = p.signal(p.at(Staged(eg - pf.fraction_bits - fz + fa, st), zg.stage), "gshift",
                      signed(12))
        ba = p.signal(p.at(Staged(eb - pf.fraction_bits + fa, st), zg.stage), "bshift",
                      signed(12))
        bm = p.at(Staged([b.mantissas[i] for i in range(k)], st), zg.stage)
        wide = s.y_bits + 1
        ab = p.reg(Staged([scale_saturate(m, v, ga, wide, p._name(f"a{i}"))
                           for i, v in enumerate(zg.value)]
                          + [scale_saturate(m, v, ba, wide, p._name(f"b{i}"))
                             for i, v in enumerate(bm)], zg.stage), "ab", shape=signed(wide))
        lo_y, hi_y = -(1 << (s.y_bits - 1)), (1 << (s.y_bits - 1)) - 1

        def add_sat(*vs):
            out = []
            for a, bb in zip(vs[:k], vs[k:]):
                t = a + bb
                out.append(Mux(t > hi_y, hi_y, Mux(t < lo_y, lo_y, t)))
            return out
        # registered: the add, the saturation and the rounder's |y| in one stage were too deep
        ysum = p.reg(p.comb(add_sat, *[Staged(v, ab.stage) for v in ab.value]), "y",
                     shape=signed(s.y_bits))
        lsb = Staged(Const(-fa, signed(8)), ysum.stage)
        return self._round_row_out(p, ysum, lsb, valid, Staged(last1, st))

    def _pass2_latency(self):
        m = Module()
        s = self.spec
        blk = Signal(block_layout(s.in_fmt))
        g = Signal(block_layout(s.param_fmt))
        b = Signal(block_layout(s.param_fmt))
        out = self._second_pass(m, blk, g, b, Const(0, signed(s.sum_bits)),
                                Const(0, s.rsqrt_bits + 1), Const(0, 6), Const(0, 1),
                                Const(1, 1), Const(1, 1))
        m._MustUse__silence = True
        return out[3]

    def elaborate(self, platform):
        m = Module()
        s = self.spec
        k, nb = s.block_size, s.row_blocks
        # ---- parameter store ------------------------------------------------------------------
        pstore = [Signal(self.params.payload.shape(), name=f"params_{i}", reset_less=True)
                  for i in range(nb)]
        p_idx = Signal(range(max(2, nb)))
        loading = Signal()
        loaded = Signal()                   # a complete parameter set has arrived

        c = self._credits()
        idle = Signal()
        m.d.comb += [idle.eq(c.credits == self.buffer_blocks),
                     self.params.ready.eq(idle & c.first)]
        p_take = self.params.valid & self.params.ready
        with m.If(p_take):
            with m.Switch(p_idx):
                for i in range(nb):
                    with m.Case(i):
                        m.d.sync += pstore[i].eq(self.params.payload)
            m.d.sync += [p_idx.eq(Mux(p_idx == nb - 1, 0, p_idx + 1)),
                         loading.eq(p_idx != nb - 1)]
            with m.If(p_idx == nb - 1):
                m.d.sync += loaded.eq(1)
        # ---- admission ---------------------------------------------------------------------
        take = self._admit(m, c, self.operands, (loaded, ~loading, ~self.params.valid))
        last = Signal()
        m.d.comb += last.eq(c.count == nb - 1)
        self._count_blocks(m, c, take, last)
        _, info, info_valid, _ = self._first_pass(m, self.operands.payload, take, c.first, last)

        blk_layout = block_layout(s.in_fmt)
        info_layout = StructLayout({"sx": signed(s.sum_bits), "y": unsigned(s.rsqrt_bits + 1),
                                    "j": unsigned(6)})
        fifo, infos = self._row_fifos(m, blk_layout.size, info_layout.size)
        m.d.comb += [fifo.w_data.eq(self.operands.payload), fifo.w_en.eq(take)]
        w_info = Signal(info_layout)
        m.d.comb += [w_info.sx.eq(info["sx"]), w_info.y.eq(info["y"]), w_info.j.eq(info["j"]),
                     infos.w_data.eq(w_info), infos.w_en.eq(info_valid)]

        # ---- second pass ------------------------------------------------------------------------
        advance = ~self.results.valid | self.results.ready
        r_info = info_layout(infos.r_data)
        r_idx = Signal(range(max(2, nb)))
        r_last = Signal()
        pop = Signal()
        m.d.comb += [
            r_last.eq(r_idx == nb - 1),
            pop.eq(fifo.r_rdy & infos.r_rdy & advance),
            fifo.r_en.eq(pop),
            infos.r_en.eq(pop & r_last),
        ]
        with m.If(pop):
            m.d.sync += r_idx.eq(Mux(r_last, 0, r_idx + 1))
        par = Signal(self.params.payload.shape())
        with m.Switch(r_idx):
            for i in range(nb):
                with m.Case(i):
                    m.d.comb += par.eq(pstore[i])
        out, out_valid, out_last, _ = self._second_pass(
            m, blk_layout(fifo.r_data), par.gamma, par.beta, r_info.sx, r_info.y, r_info.j,
            r_last, pop, advance)
        self._drive_blocks(m, self.results, out, out_valid, out_last)
        self._return_credits(m, c, take, pop, r_last)
        return m
