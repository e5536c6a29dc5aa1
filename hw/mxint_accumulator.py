"""MXIntAccumulator: sums a stream of terms whose exponents differ, one term per cycle.

A term is ``lanes`` signed integers sharing one exponent: ``value_l * 2^exponent`` (a block dot
product's ``total`` with exponent ``e_a + e_b - 2(w-2)``, or one MXInt block).  ``last`` closes a
sum; the sum leaves one cycle after its last term is taken.  Two variants (``mode``):

* ``exact`` (default): a fixed-point (Kulisch-style) accumulator whose LSB weighs 2^emin, emin the
  smallest exponent the input field holds.  Every term is shifted *left* by ``e - emin`` and
  added, so nothing is ever lost; the width is input + (2^ew - 1) + ceil(log2 max_terms) bits.
  The result's exponent is the constant emin.
* ``shift`` (lossy, the usual MXInt/block-floating-point accumulator): ``acc_width`` bits plus a
  running exponent E.  For each term: E' = max(E, e); the accumulator and the term are
  *arithmetically shifted right* by E' - E and E' - e (floor: bits below the new LSB are
  dropped, never rounded) and added; if any lane overflows acc_width bits, all lanes shift right
  once more and E' grows by one.  Cheap and narrow, but each alignment loses up to one LSB.

software_model.mxint.mxint_accumulate is the reference for both.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

__all__ = ["MXIntAccumulator"]


class MXIntAccumulator(wiring.Component):
    """``terms`` stream ``{exponent, values, last}`` in; ``sums`` stream ``{exponent, values}``
    out (value = values_l * 2^exponent)."""

    def __init__(self, config):
        if config.mode not in ("exact", "shift"):
            raise ValueError(f"Mode must be 'exact' or 'shift', not {config.mode!r}")
        if config.mode == "shift" and (config.acc_width is None
                                       or config.acc_width < config.input_width):
            raise ValueError(f"Shift mode needs acc_width >= input_width "
                             f"({config.input_width}), not {config.acc_width!r}")
        self.config = config
        self.sum_width = config.sum_width
        self.sum_exponent_width = config.sum_exponent_width
        super().__init__({
            "terms": In(stream.Signature(StructLayout({
                "exponent": signed(config.exponent_width),
                "values": ArrayLayout(signed(config.input_width), config.lanes),
                "last": 1,
            }))),
            "sums": Out(stream.Signature(StructLayout({
                "exponent": signed(self.sum_exponent_width),
                "values": ArrayLayout(signed(self.sum_width), config.lanes),
            }))),
        })

    def __repr__(self):
        c = self.config
        return (f"MXIntAccumulator(mode={c.mode}, lanes={c.lanes}, input_width={c.input_width}, "
                f"exponent_width={c.exponent_width}, sum_width={self.sum_width})")

    def elaborate(self, platform):
        m = Module()
        c = self.config
        lanes = c.lanes
        term = self.terms.payload
        take = self.terms.valid & self.terms.ready
        m.d.comb += self.terms.ready.eq(~self.sums.valid | self.sums.ready)

        first = Signal(init=1)          # control: the next term opens a new sum
        acc = Signal(ArrayLayout(signed(self.sum_width), lanes), reset_less=True)
        acc_exponent = Signal(signed(self.sum_exponent_width), reset_less=True)
        result = Signal(ArrayLayout(signed(self.sum_width), lanes), reset_less=True)
        result_exponent = Signal(signed(self.sum_exponent_width), reset_less=True)

        new_values = []
        if c.mode == "exact":
            left = Signal(c.exponent_width, name="align_left")
            m.d.comb += left.eq(term.exponent - c.exponent_min)
            for i in range(lanes):
                aligned = term.values[i] << left
                total = Signal(signed(self.sum_width), name=f"total_{i}")
                m.d.comb += total.eq(Mux(first, 0, acc[i]) + aligned)
                new_values.append(total)
            new_exponent = Const(c.exponent_min, signed(self.sum_exponent_width))
        else:
            a = c.acc_width
            e_in = term.exponent
            e_max = Signal(signed(self.sum_exponent_width))
            m.d.comb += e_max.eq(Mux(first | (e_in > acc_exponent), e_in, acc_exponent))
            # shifts of a >= width would only repeat the sign: cap them to keep shifters small
            acc_shift = Signal(range(a + 1))
            term_shift = Signal(range(c.input_width + 1))
            da = e_max - acc_exponent
            dv = e_max - e_in
            m.d.comb += [
                acc_shift.eq(Mux(da > a, a, da)),
                term_shift.eq(Mux(dv > c.input_width, c.input_width, dv)),
            ]
            sums = []
            for i in range(lanes):
                s = Signal(signed(a + 1), name=f"sum_{i}")
                m.d.comb += s.eq(Mux(first, 0, acc[i] >> acc_shift)
                                 + (term.values[i] >> term_shift))
                sums.append(s)
            overflow = Signal()
            m.d.comb += overflow.eq(Cat(s[a] ^ s[a - 1] for s in sums).any())
            for i, s in enumerate(sums):
                v = Signal(signed(a), name=f"renorm_{i}")
                m.d.comb += v.eq(Mux(overflow, s >> 1, s))
                new_values.append(v)
            new_exponent = Signal(signed(self.sum_exponent_width))
            m.d.comb += new_exponent.eq(e_max + overflow)

        with m.If(self.sums.valid & self.sums.ready):
            m.d.sync += self.sums.valid.eq(0)
        with m.If(take):
            with m.If(term.last):
                m.d.sync += [result[i].eq(new_values[i]) for i in range(lanes)]
                m.d.sync += [result_exponent.eq(new_exponent), self.sums.valid.eq(1),
                             first.eq(1)]
            with m.Else():
                m.d.sync += [acc[i].eq(new_values[i]) for i in range(lanes)]
                m.d.sync += [acc_exponent.eq(new_exponent), first.eq(0)]
        m.d.comb += [self.sums.payload.values.eq(result),
                     self.sums.payload.exponent.eq(result_exponent)]
        return m
