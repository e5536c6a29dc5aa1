"""The online-softmax step (``VSMAXO``) and the state it keeps for ``ACCSCALE`` and ``ACCNORM``
(docs/accelerator.md section 5; golden: ``software_model.mxint_softmax.OnlineSoftmax.update``
and ``software_model.accelerator.vsmaxo``).

The MXInt softmax unit (hw/mxint_softmax.py) keeps its running max and sum block by block and
normalises at the end of a row; a flash-attention step needs something else: the terms of a whole
key tile against the tile's max (``m' = max(m, ceil(tile max))``), the row's running sum rescaled
once per tile, and the running state kept between instructions. So this unit is composed from
the same pieces (:mod:`hw.mxint_fixed`: ``scale_saturate``, ``piecewise_polynomial``,
``fixed_to_mxint``, ``normalise``, ``reciprocal_newton``; constants from
:class:`software_model.mxint_softmax.SoftmaxSpec`) in a different order:

* **Pass 1** (global stall when the tile buffer is full): each element to the log2 domain
  ``z``; the block's masked max, rounded up; the row's tile max (a one-cycle loop). Every
  block's ``z`` and mask wait in the tile buffer; the row's max goes into a row FIFO with its
  last block.
* **Pass 2** (global stall from the output): a row starts once its max is known. ``m'`` and the
  rescale come from the row's state (``m' = tm`` and rescale 0 on the first step after
  ``init``); terms ``2^(z - m')`` (integer part a shift, fraction the exp2 polynomial), masked;
  the tile's sum; at the row's last block the state is written:
  ``l = floor(l / 2^min(rescale, sum_bits)) + tile sum``, ``m = m'``, rescale; each block of
  terms is rounded once into an activation block (``fixed_to_mxint(t, -exp_bits)``: P).
* **Reciprocal** (free-running, once per row): ``softmax_reciprocal(l)`` (leading one, seed table,
  Newton steps) into the state, so ACCNORM finds ``R`` and ``lo`` ready.

State per row (``rows`` of them): ``m``, ``l``, ``rescale``, ``R``, ``lo``; read
combinationally by row index (``state_row``) for ACCSCALE and ACCNORM.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_layout, check_format, decode_exponent
from hw.mxint_fixed import (Pipeline, Staged, check_chunk_bits, fixed_to_mxint, normalise,
                            piecewise_polynomial, reciprocal_newton, scale_saturate)
from hw.primitives import check_positive, parameter_repr
from software_model.mxint_fixed import reciprocal_seed_table
from software_model.mxint_softmax import SoftmaxSpec

__all__ = ["OnlineSoftmaxStep"]


class OnlineSoftmaxStep(wiring.Component):
    """``scores`` ``{block, mask, last}`` (rows of a tile, in row order, ``last`` on a row's final
    block) in; ``probs`` (one activation block per input block) out. ``begin`` (one cycle, before
    an instruction's first block) restarts the row count; with ``init`` high it also starts new
    rows (no previous max or sum). ``busy``: blocks or state updates still in flight.

    Keyword arguments: ``spec`` (a :class:`software_model.mxint_softmax.SoftmaxSpec`), ``rows``
    (rows of state), ``tile_blocks`` (longest tile a row may have: the tile buffer's depth),
    ``multiplier_chunk_bits`` (split the exp2 and reciprocal multipliers into registered
    partial products of this many bits, as in the softmax unit; None: never)."""

    def __init__(self, *, spec: SoftmaxSpec, rows: int, tile_blocks: int,
                 multiplier_chunk_bits=None):
        if not isinstance(spec, SoftmaxSpec):
            raise TypeError(f"Spec must be a SoftmaxSpec, not {spec!r}")
        check_format(spec.in_fmt)
        check_positive("Rows", rows)
        check_positive("Tile blocks", tile_blocks)
        self.multiplier_chunk_bits = check_chunk_bits(multiplier_chunk_bits)
        self.spec, self.rows, self.tile_blocks = spec, rows, tile_blocks
        k = spec.block_size
        self.row_bits = max(1, (rows - 1).bit_length())
        self.rescale_shape = unsigned(spec.max_bits + 1)
        super().__init__({
            "scores": In(stream.Signature(StructLayout({
                "block": block_layout(spec.in_fmt), "mask": unsigned(k), "last": 1}))),
            "probs": Out(stream.Signature(block_layout(spec.out_fmt))),
            "begin": In(1),
            "init": In(1),
            "busy": Out(1),
            "state_row": In(range(rows)),
            "rescale": Out(self.rescale_shape),
            "recip": Out(unsigned(spec.recip_bits + 1)),
            "recip_lo": Out(unsigned(8)),
        })
        # the pipeline depths (pass 1 to the tile buffer, pass 2 to P, pass 2 to the row's
        # reciprocal in the state), from a build that is thrown away
        dry = Module()
        self.pass1_latency, self.pass2_latency, self.recip_latency = self._build(dry)
        # neither the thrown-away module nor the FIFOs it made are elaborated: silence their
        # "created but never used" warnings
        made = [*dry._named_submodules.values(), *dry._anon_submodules]
        for unused in (dry, *(entry[0] if isinstance(entry, tuple) else entry for entry in made)):
            unused._MustUse__silence = True

    def __repr__(self):
        return parameter_repr(self, "rows", "tile_blocks", "multiplier_chunk_bits")

    def elaborate(self, platform):
        m = Module()
        self._build(m)
        return m

    def _build(self, m: Module):
        s = self.spec
        k, fz, fp = s.block_size, s.exp_frac_bits, s.exp_bits
        rows = self.rows

        # -- state ---------------------------------------------------------------------------
        st_m = [Signal(signed(s.max_bits), name=f"state_m{r}", reset_less=True)
                for r in range(rows)]
        st_l = [Signal(unsigned(s.sum_bits), name=f"state_l{r}", reset_less=True)
                for r in range(rows)]
        st_rescale = [Signal(self.rescale_shape, name=f"state_rescale{r}", reset_less=True)
                      for r in range(rows)]
        st_recip = [Signal(unsigned(s.recip_bits + 1), name=f"state_recip{r}",
                           reset_less=True) for r in range(rows)]
        st_lo = [Signal(unsigned(8), name=f"state_lo{r}", reset_less=True) for r in range(rows)]
        fresh = Signal()            # this instruction's rows start afresh (init)
        with m.If(self.begin):
            m.d.sync += fresh.eq(self.init)

        def read(table, index, name):
            out = Signal.like(table[0], name=name)
            with m.Switch(index):
                for r, v in enumerate(table):
                    with m.Case(r):
                        m.d.comb += out.eq(v)
            return out

        m.d.comb += [self.rescale.eq(read(st_rescale, self.state_row, "read_rescale")),
                     self.recip.eq(read(st_recip, self.state_row, "read_recip")),
                     self.recip_lo.eq(read(st_lo, self.state_row, "read_lo"))]

        # -- pass 1: z, the tile max ------------------------------------------------------------
        z_layout = StructLayout({"z": ArrayLayout(signed(s.z_bits), k), "mask": unsigned(k),
                                 "last": 1})
        tile = m.submodules.tile_buffer = SyncFIFO(width=z_layout.size,
                                                   depth=self.tile_blocks + 2)
        maxes = m.submodules.row_max = SyncFIFO(width=s.max_bits, depth=4)
        out1_valid = Signal()
        adv1 = Signal()
        c = self.multiplier_chunk_bits
        p1 = Pipeline(m, "p1", enable=adv1, chunk_bits=c)
        inp = self.scores
        take = inp.valid & adv1
        m.d.comb += inp.ready.eq(adv1)
        blk = inp.payload.block
        e = decode_exponent(blk.exponent, s.in_fmt)
        valid0 = Staged(take, 0)
        mc = p1.scaled(Staged([blk.mantissas[i] for i in range(k)], 0), s.scale_constant, "mc")
        sh = p1.at(p1.reg(Staged(e + s.z_shift_offset, 0), "zsh", shape=signed(len(e) + 6)),
                   mc.stage)
        z = p1.reg(Staged([scale_saturate(m, v, sh, s.z_bits, p1._name(f"z{i}"))
                           for i, v in enumerate(mc.value)], mc.stage), "z",
                   shape=signed(s.z_bits))
        mask0 = Staged([inp.payload.mask[i] for i in range(k)], 0)
        masked = p1.comb(lambda *vs: [Mux(vs[k + i], vs[i], s.z_min) for i in range(k)],
                         *[Staged(v, z.stage) for v in z.value],
                         *[Staged(v, 0) for v in mask0.value], name="zm")
        zmax = p1.tree(masked, lambda a, b: Mux(a > b, a, b), "zmax")
        bmax = p1.reg(p1.comb(lambda v: (v + ((1 << fz) - 1)) >> fz, zmax), "bmax",
                      shape=signed(s.max_bits))
        st = bmax.stage
        v_at = p1.at(valid0, st, control=True)
        last_at = p1.at(Staged(inp.payload.last, 0), st)
        first_block = Signal(init=1)        # the next block at this stage starts a row
        tmax = Signal(signed(s.max_bits), reset_less=True)
        tmax_next = Signal(signed(s.max_bits))
        m.d.comb += tmax_next.eq(Mux(first_block | (bmax.value > tmax), bmax.value, tmax))
        with m.If(v_at & adv1):
            m.d.sync += [tmax.eq(tmax_next), first_block.eq(last_at)]
        with m.If(self.begin):
            m.d.sync += first_block.eq(1)
        m.d.comb += out1_valid.eq(v_at)
        zw = Signal(z_layout)
        z_at = p1.at(z, st)
        mask_at = p1.at(mask0, st)
        m.d.comb += [zw.z[i].eq(z_at[i]) for i in range(k)]
        m.d.comb += [zw.mask.eq(Cat(*mask_at)), zw.last.eq(last_at)]
        # the stage holds while the tile buffer (or, for a row's last block, the row FIFO) is
        # full; the tile buffer holds a whole tile, so a row always completes
        room = tile.w_rdy & (~last_at | maxes.w_rdy)
        m.d.comb += [
            adv1.eq(~out1_valid | room),
            tile.w_en.eq(out1_valid & room), tile.w_data.eq(zw),
            maxes.w_en.eq(out1_valid & room & last_at), maxes.w_data.eq(tmax_next),
        ]

        # -- pass 2: terms against the row's new max, the tile sum, the state -----------------------
        adv2 = Signal()
        p2 = Pipeline(m, "p2", enable=adv2, chunk_bits=c)
        head = z_layout(tile.r_data)
        pop = Signal()
        m.d.comb += [pop.eq(tile.r_rdy & maxes.r_rdy & adv2), tile.r_en.eq(pop),
                     maxes.r_en.eq(pop & head.last)]
        row2 = Signal(range(rows))          # row of the block being popped
        with m.If(pop & head.last):
            m.d.sync += row2.eq(Mux(row2 == rows - 1, 0, row2 + 1))
        with m.If(self.begin):
            m.d.sync += row2.eq(0)
        tm = maxes.r_data.as_signed()
        m_old = read(st_m, row2, "old_max")
        # init starts the rows afresh: the previous instruction's sums must not carry over
        # (a second attention head would otherwise divide by both heads' sums)
        l_old = Signal(unsigned(s.sum_bits))
        m.d.comb += l_old.eq(Mux(fresh, 0, read(st_l, row2, "old_sum")))
        m_new = Signal(signed(s.max_bits))
        rescale = Signal(self.rescale_shape)
        m.d.comb += [m_new.eq(Mux(fresh | (tm > m_old), tm, m_old)),
                     rescale.eq(Mux(fresh, 0, m_new - m_old))]
        # a fresh row (init) starts from l = 0, whatever the state held before
        l_start = Mux(fresh, 0, l_old)
        regs = p2.reg(Staged([head.z[i] for i in range(k)] + [head.mask, head.last, m_new,
                                                               rescale, row2, l_start], 0), "in")
        st = regs.stage
        z2 = regs.value[:k]
        mask2, last2, m2, resc2, row_2, l_old2 = regs.value[k:]
        valid2 = p2.reg(Staged(pop, 0), "v", control=True)
        d = [p2.signal(z2[i] - (m2 << fz), f"d{i}", signed(s.d_bits)) for i in range(k)]
        qr = p2.reg(Staged([Cat(v[:fz]) for v in d] + [(-(v >> fz)) for v in d], st), "qr")
        r_codes = Staged(qr.value[:k], qr.stage)
        negq = Staged(qr.value[k:], qr.stage)
        pw = piecewise_polynomial(p2, r_codes, s.exp2, "exp2")
        mask_pw = p2.at(Staged(mask2, st), pw.stage)
        negq_at = p2.at(negq, pw.stage)
        amts = [p2.signal(Mux(negq_at[i] > fp + 1, fp + 1, negq_at[i]), f"tsh{i}",
                          unsigned((fp + 1).bit_length())) for i in range(k)]
        terms = p2.reg(Staged([Mux(Value.cast(mask_pw)[i], pw.value[i] >> amts[i], 0)
                               for i in range(k)], pw.stage), "t", shape=unsigned(s.term_bits))
        # the tile's sum, the state write at the row's last block
        bsum = p2.tree(terms, lambda a, b: a + b, "bsum")
        bs = p2.reg(bsum, "bs", shape=unsigned(s.sum_bits))
        st3 = bs.stage
        v3 = p2.at(valid2, st3, control=True)
        last3 = p2.at(Staged(last2, st), st3)
        first3 = Signal(init=1)
        tsum = Signal(unsigned(s.sum_bits), reset_less=True)
        tsum_next = Signal(unsigned(s.sum_bits))
        m.d.comb += tsum_next.eq(Mux(first3, 0, tsum) + bs.value)
        resc3 = p2.at(Staged(resc2, st), st3)
        l3 = p2.at(Staged(l_old2, st), st3)
        row3 = p2.at(Staged(row_2, st), st3)
        m3 = p2.at(Staged(m2, st), st3)
        kept = Signal(unsigned(s.sum_bits))
        m.d.comb += kept.eq(l3 >> Mux(resc3 > s.sum_bits, s.sum_bits, resc3))
        l_new = Signal(unsigned(s.sum_bits))
        m.d.comb += l_new.eq(kept + tsum_next)
        row_done = Signal()
        m.d.comb += row_done.eq(v3 & adv2 & last3)
        with m.If(v3 & adv2):
            m.d.sync += [tsum.eq(tsum_next), first3.eq(last3)]
        with m.If(self.begin):
            m.d.sync += first3.eq(1)
        with m.If(row_done):
            with m.Switch(row3):
                for r in range(rows):
                    with m.Case(r):
                        m.d.sync += [st_m[r].eq(m3), st_l[r].eq(l_new),
                                     st_rescale[r].eq(resc3)]
        # P: each block of terms rounded once into the output format
        lsb = Staged(Const(-fp, signed(8)), terms.stage)
        out = fixed_to_mxint(p2, terms, lsb, s.out_fmt, "p")
        field, mans = out.value
        out_valid = p2.at(valid2, out.stage, control=True)
        probs = self.probs
        m.d.comb += [probs.valid.eq(out_valid), probs.payload.exponent.eq(field),
                     adv2.eq(~probs.valid | probs.ready)]
        m.d.comb += [probs.payload.mantissas[i].eq(mans[i]) for i in range(k)]

        # -- reciprocal of each row's new sum (free-running) -------------------------------------
        p3 = Pipeline(m, "p3", chunk_bits=c)
        lrow = p3.reg(Staged(l_new, 0), "l")
        rrow = p3.reg(Staged(row3, 0), "row")
        rv = p3.reg(Staged(row_done, 0), "v", control=True)
        sn, lo = normalise(p3, lrow, s.recip_frac_bits, "norm")
        table = reciprocal_seed_table(s.recip_table_bits, s.recip_bits)
        y = reciprocal_newton(p3, sn, s.recip_frac_bits, table=table, steps=s.newton_steps,
                              out_bits=s.recip_bits, name="recip")
        nonzero = p3.at(p3.comb(lambda v: v != 0, lrow), y.stage)
        lo_y = p3.at(lo, y.stage)
        row_y = p3.at(rrow, y.stage)
        v_y = p3.at(rv, y.stage, control=True)
        with m.If(v_y):
            with m.Switch(row_y):
                for r in range(rows):
                    with m.Case(r):
                        m.d.sync += [st_recip[r].eq(Mux(nonzero, y.value, 0)),
                                     st_lo[r].eq(Mux(nonzero, lo_y, 0))]
        # in flight: anything in pass 1, the buffers, pass 2, the reciprocal
        chains = [p1.at(valid0, s_, control=True) for s_ in range(1, bmax.stage + 1)]
        chains += [p2.at(valid2, s_, control=True) for s_ in range(valid2.stage, out.stage + 1)]
        chains += [p3.at(rv, s_, control=True) for s_ in range(rv.stage, y.stage + 1)]
        m.d.comb += self.busy.eq(Cat(*chains).any() | tile.r_rdy | maxes.r_rdy)
        # the reciprocal pipeline's stage 0 is the row's state write (pass 2's stage st3)
        return bmax.stage, out.stage, st3 + y.stage

