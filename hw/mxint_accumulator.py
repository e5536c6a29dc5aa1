"""MXIntAccumulator: sums a stream of terms whose exponents differ, one term per cycle.

A term is ``lanes`` signed integers sharing one exponent: ``value_l * 2^exponent`` (a block dot
product's ``total`` with exponent ``e_a + e_b - 2(w-2)``, or one MXInt block).  ``last`` closes a
sum; the sum leaves ``latency`` cycles after its last term is taken (4 in exact mode, 1 in
shift mode).  Two variants (``mode``):

* ``exact`` (default): a fixed-point (Kulisch-style) accumulator whose LSB weighs 2^emin, emin the
  smallest exponent the input field holds.  Every term is shifted *left* by ``e - emin`` and
  added, so nothing is ever lost; the width is input + (2^ew - 1) + ceil(log2 max_terms) bits.
  The result's exponent is the constant emin.  The wide add is kept in carry-save segments of
  ``segment_bits`` (the pipelining knob), so the accumulation loop is one segment deep; the
  closing sum's pending carries are resolved in two more stages.
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

from hw.mxint_common import carry_prefix, increment, resolve_segments
from hw.primitives import (GlobalEnable, check_choice, check_positive, delay, parameter_repr,
                           tree_depth)

__all__ = ["MXIntAccumulator", "MODES"]

MODES = ("exact", "shift")


class MXIntAccumulator(wiring.Component):
    """``terms`` stream ``{exponent, values, last}`` in; ``sums`` stream ``{exponent, values}``
    out (value = values_l * 2^exponent).

    ``lanes`` values per term, each ``input_width`` signed bits; ``exponent_width`` signed bits of
    a term's exponent; ``mode`` ``"exact"`` (then ``acc_width`` is None and ``max_terms`` sets the
    carry bits) or ``"shift"`` (``acc_width`` >= ``input_width`` accumulator bits).
    """

    def __init__(self, *, lanes: int, input_width: int, exponent_width: int,
                 mode: str = "exact", acc_width: int | None = None, max_terms: int = 1024,
                 segment_bits: int = 16):
        check_positive("Lanes", lanes)
        check_positive("Input width", input_width, minimum=2)
        check_positive("Exponent width", exponent_width, minimum=2)
        check_choice("Mode", mode, MODES)
        if mode == "shift":
            if not isinstance(acc_width, int) or isinstance(acc_width, bool) \
                    or acc_width < input_width:
                raise ValueError(f"Accumulator width must be an integer >= input width "
                                 f"({input_width}) in shift mode, not {acc_width!r}")
        elif acc_width is not None:
            raise ValueError(f"Accumulator width must be None in exact mode (the width follows "
                             f"from the input and exponent widths and max_terms), "
                             f"not {acc_width!r}")
        check_positive("Max terms", max_terms)
        check_positive("Segment bits", segment_bits, minimum=2)
        self.segment_bits = segment_bits
        self.lanes, self.input_width, self.exponent_width = lanes, input_width, exponent_width
        self.mode, self.acc_width, self.max_terms = mode, acc_width, max_terms
        #: the exact accumulator's LSB weighs 2^exponent_min: the smallest exponent a term has
        self.exponent_min = -(1 << (exponent_width - 1))
        if mode == "shift":
            self.sum_width = acc_width
        else:   # input + the full exponent span + carry bits for max_terms terms
            self.sum_width = input_width + (1 << exponent_width) - 1 + tree_depth(max_terms)
        #: exact mode: align, accumulate in carry-save segments, resolve (two stages); shift
        #: mode: one stage (its exponent compare, shifts, add and renormalisation are a loop)
        self.latency = 4 if mode == "exact" else 1
        self.segments = [(lo, min(lo + segment_bits, self.sum_width))
                         for lo in range(0, self.sum_width, segment_bits)]
        self.sum_exponent_width = exponent_width + 2
        if mode == "shift":
            self.sum_exponent_width = max(self.sum_exponent_width,
                                          self.shift_exponent_max().bit_length() + 1)
        self.term_layout = StructLayout({
            "exponent": signed(exponent_width),
            "values": ArrayLayout(signed(input_width), lanes),
            "last": 1,
        })
        self.sum_layout = StructLayout({
            "exponent": signed(self.sum_exponent_width),
            "values": ArrayLayout(signed(self.sum_width), lanes),
        })
        super().__init__({
            "terms": In(stream.Signature(self.term_layout)),
            "sums": Out(stream.Signature(self.sum_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "lanes", "input_width", "exponent_width", "mode",
                              "acc_width", "max_terms", "segment_bits")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        lanes = self.lanes - 1
        if self.mode == "exact":
            exponent = (f"the constant {self.exponent_min} (the exact accumulator's LSB weight)")
            values = (f"values[l], l = 0..{lanes}: the exact sum of lane l's terms, signed "
                      f"{self.sum_width} bits (exact for up to {self.max_terms} terms a sum)")
            arithmetic = "exact fixed point, nothing lost"
        else:
            exponent = f"the running exponent E, signed {self.sum_exponent_width} bits"
            values = (f"values[l], l = 0..{lanes}: lane l's sum, signed {self.acc_width} bits")
            arithmetic = ("running exponent E = max(E, e): accumulator and term shifted right "
                          "(floor) to E and added; on overflow of any lane all lanes shift right "
                          "once and E grows by one")
        return {
            "terms": {
                "beat": "one term of a sum: value_l = values[l] * 2^exponent",
                "fields": {
                    "exponent": f"signed {self.exponent_width}-bit exponent shared by the lanes",
                    "values": f"values[l], l = 0..{lanes}: lane l, signed {self.input_width} "
                              "bits",
                    "last": "1 on a sum's final term; the next term opens a new sum (a sum may "
                            "be a single term)",
                },
                "ready": "combinational on sums.ready: ready = ~sums.valid | sums.ready for "
                         "every term (sums.valid is a register), so terms stall only while a "
                         "finished sum is held; not a function of terms.valid or its payload",
            },
            "sums": {
                "beat": "one finished sum, value_l = values[l] * 2^exponent",
                "fields": {"exponent": exponent, "values": values},
                "order": "one beat per term with last = 1, in order",
                "backpressure": "while a finished sum is held, every term waits; nothing is "
                                "dropped",
            },
            "buffers": "one finished sum (the output register)",
            "latency": "1 cycle from a sum's last term taken to the sum offered; one term per "
                       "cycle",
            "arithmetic": f"{self.mode} mode: {arithmetic} "
                          "(software_model.mxint.mxint_accumulate)",
        }

    def shift_exponent_max(self) -> int:
        """Largest exponent a shift-mode sum of ``max_terms`` terms can reach.

        Only renormalisation lifts the exponent above emax, the inputs' largest. Right after one,
        every lane is within 2^(a-2) + 2^(w-2) of zero (a = acc_width, w = input_width), and
        while the exponent is above emax every term is shifted right at least once (|term| <=
        2^(w-2)), so the next renormalisation takes at least 2^(a-w) terms. The first can come
        at the second term: emax + 1 + (max_terms - 2) // 2^(a-w). With a = w that is one step
        per term, and negative terms (whose floor shift never reaches 0) do get there.
        """
        emax = (1 << (self.exponent_width - 1)) - 1
        if self.max_terms < 2:
            return emax
        return emax + 1 + (self.max_terms - 2) // (1 << (self.acc_width - self.input_width))

    def elaborate(self, platform):
        if self.mode == "exact":
            return self._elaborate_exact()
        m = Module()
        lanes = self.lanes
        term = self.terms.payload
        # Only a term with `last` produces a sum: the one-stage pipeline carries those terms, so
        # `sums.valid` rises after a closing term and the input stalls only while a sum waits.
        closing = stream.Signature(0).create(path=("closing",))
        m.d.comb += [closing.valid.eq(self.terms.valid & term.last),
                     self.terms.ready.eq(closing.ready)]
        ctl = GlobalEnable(m, source=closing, sink=self.sums, stages=1, name="sum")
        take = self.terms.valid & ctl.advance

        first = Signal(init=1)          # control: the next term opens a new sum
        acc = Signal(ArrayLayout(signed(self.sum_width), lanes), reset_less=True)
        acc_exponent = Signal(signed(self.sum_exponent_width), reset_less=True)
        result = Signal(self.sum_layout, reset_less=True)

        new_values, new_exponent = self._shift(m, term, first, acc, acc_exponent)

        with m.If(take):
            with m.If(term.last):
                m.d.sync += [result.values[i].eq(new_values[i]) for i in range(lanes)]
                m.d.sync += [result.exponent.eq(new_exponent), first.eq(1)]
            with m.Else():
                m.d.sync += [acc[i].eq(new_values[i]) for i in range(lanes)]
                m.d.sync += [acc_exponent.eq(new_exponent), first.eq(0)]
        m.d.comb += self.sums.payload.eq(result)
        return m

    def _elaborate_exact(self):
        """Exact mode, four stages: align; accumulate in carry-save segments of
        ``segment_bits`` (each segment adds on its own, its carry-out waits in a register for
        the next term, so the loop is one segment deep however wide the sum is); on a closing
        term the segments and pending carries are copied out and resolved by a log-depth
        lookahead across segments (two stages), as in :mod:`hw.mxint_linear`."""
        m = Module()
        lanes, segs = self.lanes, self.segments
        term = self.terms.payload
        closing = stream.Signature(0).create(path=("closing",))
        m.d.comb += [closing.valid.eq(self.terms.valid & term.last),
                     self.terms.ready.eq(closing.ready)]
        ctl = GlobalEnable(m, source=closing, sink=self.sums, stages=self.latency, name="sum")
        advance = ctl.advance
        take = self.terms.valid & advance

        stage = ctl.register

        first = Signal(init=1)          # control: the next term opens a new sum
        with m.If(take):
            m.d.sync += first.eq(term.last)

        # -- stage 1: each value shifted left onto the accumulator grid ---------------------------
        left = Signal(self.exponent_width, name="align_left")
        m.d.comb += left.eq(term.exponent - self.exponent_min)
        aligned = []
        for i in range(lanes):
            grid = Signal(signed(self.sum_width), name=f"aligned_{i}")
            m.d.comb += grid.eq(term.values[i] << left)
            aligned.append(stage(grid, f"aligned_r_{i}"))
        a_beat = delay(m, self.terms.valid, 1, name="a_beat", reset_less=False, enable=advance)
        a_first = delay(m, first, 1, name="a_first", enable=advance)

        # -- stage 2: carry-save accumulation; a closing term's sum is copied out --------------
        finals = []
        for n in range(lanes):
            fin_s, fin_c = [], [None]
            carry = [None]
            for i, (lo, hi) in enumerate(segs):
                acc = Signal(hi - lo, name=f"acc_{n}_s{i}", reset_less=True)
                if i + 1 < len(segs):
                    carry.append(Signal(name=f"acc_{n}_c{i + 1}", reset_less=True))
                    fin_c.append(Signal(name=f"final_{n}_c{i + 1}", reset_less=True))
                fin = Signal(hi - lo, name=f"final_{n}_s{i}", reset_less=True)
                fin_s.append(fin)
                start = Mux(a_first, 0, acc)
                cin = C(0, 1) if i == 0 else carry[i] & ~a_first
                # a + b + cin as one adder: (2a + cin) + (2b + cin) = 2 (a + b + cin)
                total = Signal(hi - lo + 1, name=f"acc_next_{n}_s{i}")
                m.d.comb += total.eq((Cat(cin, start) + Cat(cin, aligned[n][lo:hi]))[1:])
                with m.If(advance & a_beat):
                    m.d.sync += acc.eq(total[:hi - lo])
                    if i + 1 < len(segs):
                        m.d.sync += carry[i + 1].eq(total[-1])
                    with m.If(ctl.valid[1]):            # the closing term
                        m.d.sync += fin.eq(total[:hi - lo])
                        if i + 1 < len(segs):
                            m.d.sync += fin_c[i + 1].eq(total[-1])
            finals.append((fin_s, fin_c))

        # -- stages 3 and 4: carry resolution -----------------------------------------------------
        for n, (fin_s, fin_c) in enumerate(finals):
            value = resolve_segments(m, fin_s, fin_c, segs, stage, name=f"res_{n}",
                                     result=f"sum_{n}")
            m.d.comb += self.sums.payload.values[n].eq(value)
        m.d.comb += self.sums.payload.exponent.eq(self.exponent_min)
        return m

    def _shift(self, m, term, first, acc, acc_exponent):
        """One shift-mode step, the loop of one term per cycle, laid out for depth (the same
        arithmetic as the serial E' = max(E, e), shift, add, renormalise): both exponent
        differences e - E and E - e are computed at once by log-depth (prefix) subtractors, and
        the sign of E - e both picks the larger exponent and says which side shifts; each
        shifter uses the difference's low bits while its high bits, ORed beside it, select the
        sign fill (a shift of width - 1 or more); the lane sums are prefix adds; E' + 1 is
        computed beside E' so the overflow only selects."""
        a, width = self.acc_width, self.input_width
        e_in = term.exponent
        dw = max(self.sum_exponent_width, self.exponent_width) + 1
        up = Signal(signed(dw), name="exp_up")          # e - E: how far the accumulator shifts
        down = Signal(signed(dw), name="exp_down")      # E - e: how far the term shifts
        m.d.comb += [up.eq(prefix_add(m, e_in, ~acc_exponent, 1, dw, name="exp_up_add")),
                     down.eq(prefix_add(m, acc_exponent, ~e_in, 1, dw, name="exp_down_add"))]
        larger = Signal(name="exp_larger")               # the term's exponent is the new E
        m.d.comb += larger.eq(down[-1])
        e_max = Signal(signed(self.sum_exponent_width))
        m.d.comb += e_max.eq(Mux(first | larger, e_in, acc_exponent))
        sew = self.sum_exponent_width
        e_in_wide = Signal(signed(sew), name="e_in_wide")
        m.d.comb += e_in_wide.eq(e_in)
        e_max_up = Signal(signed(sew), name="e_max_up")     # E' + 1 (wraps as E' + 1 did)
        m.d.comb += e_max_up.eq(Mux(first | larger,
                                    increment(m, e_in_wide, C(1, 1), name="e_in_up")[:sew],
                                    increment(m, acc_exponent, C(1, 1), name="acc_exp_up")[:sew]))

        def shifter(value, amount, active, name):
            """``value >> amount`` (arithmetic) when ``active``, else ``value``; ``amount`` >= 0.
            Amounts past the value's width - 1 only repeat the sign."""
            low = len(value).bit_length()          # 2^low - 1 >= len(value) - 1
            out = Signal(signed(len(value)), name=name)
            if low >= len(amount) - 1:
                m.d.comb += out.eq(Mux(active, value >> amount[:-1], value))
                return out
            far = amount[low:-1].any()
            m.d.comb += out.eq(Mux(active, Mux(far, value >> (len(value) - 1),
                                               value >> amount[:low]), value))
            return out

        sums = []
        for i in range(self.lanes):
            acc_part = shifter(acc[i], up, larger, f"acc_shifted_{i}")
            term_part = shifter(term.values[i], down, ~first & ~larger, f"term_shifted_{i}")
            s = Signal(signed(a + 1), name=f"sum_{i}")
            m.d.comb += s.eq(prefix_add(m, Mux(first, 0, acc_part), term_part, 0, a + 1,
                                        name=f"sum_add_{i}"))
            sums.append(s)
        overflow = Signal()
        m.d.comb += overflow.eq(Cat(s[a] ^ s[a - 1] for s in sums).any())
        renormalised = []
        for i, s in enumerate(sums):
            v = Signal(signed(a), name=f"renorm_{i}")
            m.d.comb += v.eq(Mux(overflow, s >> 1, s))
            renormalised.append(v)
        new_exponent = Signal(signed(self.sum_exponent_width))
        m.d.comb += new_exponent.eq(Mux(overflow, e_max_up, e_max))
        return renormalised, new_exponent


def prefix_add(m, a, b, cin, width: int, *, name: str):
    """``a + b + cin`` in ``width`` bits (operands sign-extended, the sum wraps) with a log-depth
    carry (:func:`hw.mxint_common.carry_prefix`): a ripple adder is as deep as it is wide, and
    this one sits in a one-term-per-cycle loop."""
    ext_a, ext_b = Signal(width, name=f"{name}_a"), Signal(width, name=f"{name}_b")
    m.d.comb += [ext_a.eq(a), ext_b.eq(b)]
    gen = [ext_a[i] & ext_b[i] for i in range(width)]
    prop = [ext_a[i] ^ ext_b[i] for i in range(width)]
    carries = carry_prefix(C(cin, 1), gen, prop)
    out = Signal(width, name=name)
    m.d.comb += out.eq(Cat(*[prop[i] ^ carries[i] for i in range(width)]))
    return out
