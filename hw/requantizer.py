"""The one rounding of every conversion into a tensor class
(``software_model.accelerator.convert_fixed``), with the class chosen at run time.

A block of exact integers ``v * 2^lsb`` becomes one memory word of class ``cls``:

* ``mxint`` class: shared exponent ``e = clamp(floor(log2 max|v|) + lsb, emin, emax)``
  (``emin`` for an all-zero block), as :func:`software_model.mxint_fixed.fixed_to_mxint`;
* ``int`` class: the instruction's exponent ``exp``
  (:func:`software_model.accelerator.round_to_exponent`);

then each mantissa is ``round(|v| * 2^(lsb + f - e))`` (half-even on the magnitude, sign after),
saturated to ``2^(w-1) - 1``, where ``f = w - 2`` and ``w`` is the class's element width. The
accelerator's ACCST, ACCNORM, VADD and VCAST all end here, one instruction at a time, so one
requantizer with the class's width and type looked up per instruction replaces a fixed-format
converter per class (hw.mxint_fixed.fixed_to_mxint fixes the format at elaboration).

Pipeline of five register stages under one global enable (:class:`hw.primitives.GlobalEnable`):
magnitudes; the block's leading one (of the OR of the magnitudes: the leading one of the OR is
the leading one of the maximum); exponent and shift; shift with rounding or saturating left
shift; sign and the word.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.primitives import GlobalEnable, check_positive, parameter_repr

__all__ = ["Requantizer", "CLASS_TYPES", "check_classes", "leading_one_tree", "magnitude"]

CLASS_TYPES = ("mxint", "int")


def check_classes(class_widths, class_types):
    """The element width and type of each operand class (activation, weight, kv), as the
    requantizer and the vector engine take them."""
    if (not isinstance(class_widths, tuple) or len(class_widths) != 3
            or not all(isinstance(v, int) and 2 <= v <= 16 for v in class_widths)):
        raise ValueError(f"Class widths must be a tuple of 3 integers from 2 to 16, not "
                         f"{class_widths!r}")
    if (not isinstance(class_types, tuple) or len(class_types) != 3
            or not all(t in CLASS_TYPES for t in class_types)):
        raise ValueError(f"Class types must be a tuple of 3 of 'mxint', 'int', not "
                         f"{class_types!r}")


def magnitude(m: Module, value, name: str):
    """``|value|`` of a signed value, as an unsigned value of the same width: ``(value ^ s) + s``
    (``s`` the sign) with the increment's carries from a Sklansky prefix AND, ``log2 width``
    levels, each level a named wire (no expression is repeated)."""
    vw = len(value)
    sign = value[-1]
    flipped = Signal(vw, name=f"{name}_flip")
    m.d.comb += flipped.eq(value.as_unsigned() ^ sign.replicate(vw))
    prefix, d = flipped, 0                      # prefix[i] = AND of flipped[0 .. i]
    while (1 << d) < vw:
        nxt = Signal(vw, name=f"{name}_and{d}")
        m.d.comb += nxt.eq(Cat(*[prefix[i] & prefix[((i >> d) << d) - 1] if (i >> d) & 1
                                 else prefix[i] for i in range(vw)]))
        prefix, d = nxt, d + 1
    out = Signal(vw, name=name)
    m.d.comb += out.eq(flipped ^ Cat(sign, sign.replicate(vw - 1) & prefix[:vw - 1]))
    return out


def leading_one_tree(m: Module, value, name: str):
    """Index of the highest set bit of ``value`` (0 when ``value`` is 0) in ``log2 width``
    levels: each level keeps the upper half when it has a set bit. A chain of ``width``
    priority muxes (``hw.primitives.leading_one``) was the longest path of the accelerator's
    requantizer (45-bit values)."""
    value = Cat(value, Const(0, (1 << max(1, (len(value) - 1).bit_length())) - len(value)))
    bits = (len(value) - 1).bit_length()
    index = []
    part = value
    for level in range(bits):
        half = len(part) // 2
        upper = Signal(name=f"{name}_l{level}")
        m.d.comb += upper.eq(part[half:].any())
        index.append(upper)
        chosen = Signal(half, name=f"{name}_part{level}")
        m.d.comb += chosen.eq(Mux(upper, part[half:], part[:half]))
        part = chosen
    out = Signal(range(max(2, len(value))), name=name)
    m.d.comb += out.eq(Cat(*reversed(index)) if index else 0)
    return out


class Requantizer(wiring.Component):
    """``values`` stream ``{values[B], lsb}`` in, ``words`` stream of memory words out, five
    cycles later. ``cls`` and ``exp`` are the instruction's (held while it runs).

    ``class_widths``, ``class_types``: element width and type (``mxint``/``int``) of each class
    (activation, weight, kv); output mantissas are sign-extended to ``element_width``."""

    STAGES = 5

    def __init__(self, *, block_size: int, value_width: int, lsb_width: int,
                 exponent_width: int, element_width: int, class_widths: tuple,
                 class_types: tuple):
        check_positive("Block size", block_size)
        check_positive("Value width", value_width, minimum=2)
        if value_width > 64:
            raise ValueError(f"Value width must be at most 64, not {value_width}")
        check_positive("LSB width", lsb_width, minimum=2)
        check_positive("Exponent width", exponent_width, minimum=2)
        check_classes(class_widths, class_types)
        if element_width != max(class_widths):
            raise ValueError(f"Element width must be the widest class ({max(class_widths)}), "
                             f"not {element_width!r}")
        self.block_size, self.value_width, self.lsb_width = block_size, value_width, lsb_width
        self.exponent_width, self.element_width = exponent_width, element_width
        self.class_widths, self.class_types = class_widths, class_types
        self.in_layout = data.StructLayout({
            "values": data.ArrayLayout(signed(value_width), block_size),
            "lsb": signed(lsb_width)})
        self.word = data.StructLayout({
            "mantissas": data.ArrayLayout(signed(element_width), block_size),
            "exponent": signed(exponent_width)})
        super().__init__({
            "values": In(stream.Signature(self.in_layout)),
            "words": Out(stream.Signature(self.word)),
            "cls": In(2),
            "exp": In(signed(8)),
        })

    def __repr__(self):
        return parameter_repr(self, "block_size", "value_width", "lsb_width", "exponent_width",
                              "element_width", "class_widths", "class_types")

    def _lookup(self, m: Module, table, shape, name):
        out = Signal(shape, name=name)
        with m.Switch(self.cls):
            for c, v in enumerate(table):
                with m.Case(c):
                    m.d.comb += out.eq(v)
        return out

    def elaborate(self, platform):
        m = Module()
        k, vw, ew = self.block_size, self.value_width, self.exponent_width
        emin, emax = -(1 << (ew - 1)), (1 << (ew - 1)) - 1
        ctl = GlobalEnable(m, source=self.values, sink=self.words, stages=self.STAGES,
                           name="requant")
        adv = ctl.advance

        def reg(value, name, shape=None):
            r = Signal(shape if shape is not None else value.shape(), name=name,
                       reset_less=True)
            with m.If(adv):
                m.d.sync += r.eq(value)
            return r

        is_int = self._lookup(m, [int(t == "int") for t in self.class_types], 1, "class_is_int")
        frac = self._lookup(m, [w - 2 for w in self.class_widths], unsigned(4), "class_frac")
        mmax = self._lookup(m, [(1 << (w - 1)) - 1 for w in self.class_widths],
                            unsigned(15), "class_max")

        # 1: magnitudes and signs
        inp = self.values.payload
        # |v| = (v ^ sign) + sign with a log-depth increment: a negation's carry ripple through
        # the value's width was the accelerator's longest path (49 gate levels at 50 bits)
        mags1 = [reg(magnitude(m, inp.values[i], name=f"abs_{i}"), f"mag1_{i}", unsigned(vw))
                 for i in range(k)]
        neg1 = [reg(inp.values[i] < 0, f"neg1_{i}", unsigned(1)) for i in range(k)]
        lsb1 = reg(inp.lsb, "lsb1")

        # 2: the block's leading one
        orred = Signal(vw)
        m.d.comb += orred.eq(Cat(*[Cat(*[mg[b] for mg in mags1]).any() for b in range(vw)]))
        top2 = reg(leading_one_tree(m, orred, "block_top"), "top2")
        nonzero2 = reg(orred != 0, "nonzero2", unsigned(1))
        mags2 = [reg(v, f"mag2_{i}") for i, v in enumerate(mags1)]
        neg2 = [reg(v, f"neg2_{i}") for i, v in enumerate(neg1)]
        lsb2 = reg(lsb1, "lsb2")
        ebits = max(len(lsb2), vw.bit_length() + 1, ew) + 2
        frac_lsb2 = reg(frac + lsb1, "frac_lsb2", signed(ebits + 1))

        # 3: exponent and shift (shift = e - f - lsb: right when positive). Each choice of e
        # comes with its own shift, formed beside the choice instead of after it (e_true - f -
        # lsb = top - f): the add, the clamp and two subtracts in a row measured 41 gate levels
        # in accelerator_small
        e_true = Signal(signed(ebits))
        e_blk = Signal(signed(ebits))
        shift = Signal(signed(ebits + 1))
        m.d.comb += e_true.eq(top2 + lsb2)
        with m.If(is_int):
            m.d.comb += [e_blk.eq(self.exp), shift.eq(self.exp - frac_lsb2)]
        with m.Elif(~nonzero2 | (e_true < emin)):
            m.d.comb += [e_blk.eq(emin), shift.eq(emin - frac_lsb2)]
        with m.Elif(e_true > emax):
            m.d.comb += [e_blk.eq(emax), shift.eq(emax - frac_lsb2)]
        with m.Else():
            m.d.comb += [e_blk.eq(e_true), shift.eq(top2 - frac)]
        e3 = reg(e_blk[:ew].as_signed(), "exp3", signed(ew))
        shift3 = reg(shift, "shift3", signed(ebits + 1))
        mags3 = [reg(v, f"mag3_{i}") for i, v in enumerate(mags2)]
        neg3 = [reg(v, f"neg3_{i}") for i, v in enumerate(neg2)]

        # 4: round right (shift >= 1; beyond vw + 1 everything rounds to 0) or shift left
        # with saturation (mag > max >> sl saturates: the same as min(mag << sl, max))
        cap = vw + 1
        w_max = self.element_width
        r_amt = Signal(range(cap + 1))
        l_amt = Signal(range(w_max + 1))
        m.d.comb += [
            r_amt.eq(Mux(shift3 < 1, 1, Mux(shift3 > cap, cap, shift3))),
            l_amt.eq(Mux(shift3 >= 0, 0, Mux(-shift3 > w_max, w_max, -shift3))),
        ]
        left_mode = shift3 <= 0
        limit = Signal(15)
        m.d.comb += limit.eq(mmax >> l_amt)
        mans4 = []
        for i, mag in enumerate(mags3):
            wide = Signal(2 * vw + 2, name=f"shifted_{i}")
            m.d.comb += wide.eq(Cat(Const(0, vw + 1), mag) >> r_amt)
            q = wide[vw + 1:]
            round_bit = wide[vw]
            sticky = wide[:vw].any()
            up = round_bit & (sticky | q[0])            # half-even
            # q + up saturates at the class maximum (< 2^15): any bit of q at or above 2^15
            # saturates, else the rounded value is the 15-bit q_lo + up. Exact, without a
            # (vw + 1)-bit increment and compare (41 gate levels at vw = 58, B = 16)
            right = Signal(16, name=f"rounded_{i}")
            m.d.comb += right.eq(q[:15] + up)
            right_sat = q[15:].any() | (right > mmax)
            left_sat = mag > limit
            left = (mag << l_amt)[:16]
            r = Mux(left_mode, Mux(left_sat, mmax, left), Mux(right_sat, mmax, right))
            mans4.append(reg(r, f"man4_{i}", unsigned(15)))
        neg4 = [reg(v, f"neg4_{i}") for i, v in enumerate(neg3)]
        e4 = reg(e3, "exp4")

        # 5: sign, the word
        out = self.words.payload
        word = Signal(self.word, reset_less=True)
        with m.If(adv):
            m.d.sync += word.exponent.eq(e4)
            for i in range(k):
                mag = Cat(mans4[i], Const(0, 1)).as_signed()
                m.d.sync += word.mantissas[i].eq(Mux(neg4[i], -mag, mag))
        m.d.comb += out.eq(word)
        return m
