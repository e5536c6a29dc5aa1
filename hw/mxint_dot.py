"""MXIntDotProduct: exact dot product of two MXInt blocks, one pair of blocks per cycle.

    a . b = total * 2^(exponent - 2 * (w - 2)),  exponent = e_a + e_b,  total = sum m_a,i m_b,i

Two pipeline stages (latency 2): the k signed w x w products and the decoded exponent sum are
registered, then a balanced adder tree sums the products into the result register.  Nothing is
rounded: the product is 2w bits (w x w signed, so that even the -2^(w-1) code the cast never emits
is exact) and the tree grows ceil(log2 k) carry bits.  The result exponent is the *decoded* sum
(signed, ew + 2 bits: biased codes decode to -bias .. bias + 1).
software_model.mxint.mxint_dot is the reference.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_layout, decode_exponent

__all__ = ["MXIntDotProduct", "adder_tree"]


def adder_tree(values):
    """Balanced pairwise sum; Amaranth widens each level by one bit, so no term can overflow."""
    level = list(values)
    while len(level) > 1:
        nxt = [a + b for a, b in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class MXIntDotProduct(wiring.Component):
    """``operands`` stream of ``{a, b}`` MXInt blocks in; ``results`` stream of
    ``{exponent, total}`` out."""

    def __init__(self, config):
        self.config = config
        self.fmt = config.fmt
        self.total_width = config.total_width
        self.exponent_width = config.result_exponent_width
        block = block_layout(self.fmt)
        super().__init__({
            "operands": In(stream.Signature(StructLayout({"a": block, "b": block}))),
            "results": Out(stream.Signature(StructLayout({
                "exponent": signed(self.exponent_width),
                "total": signed(self.total_width),
            }))),
        })

    def __repr__(self):
        f = self.fmt
        return (f"MXIntDotProduct(block_size={f.block_size}, element_width={f.element_width}, "
                f"exponent_width={f.exponent_width}, exponent_encoding={f.exponent_encoding})")

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        k, w = f.block_size, f.element_width
        advance = ~self.results.valid | self.results.ready
        m.d.comb += self.operands.ready.eq(advance)
        a, b = self.operands.payload.a, self.operands.payload.b

        products = Signal(ArrayLayout(signed(2 * w), k), reset_less=True)
        exponent = Signal(signed(self.exponent_width), reset_less=True)
        s1_valid = Signal()
        with m.If(advance):
            m.d.sync += [products[i].eq(a.mantissas[i] * b.mantissas[i]) for i in range(k)]
            m.d.sync += [
                exponent.eq(decode_exponent(a.exponent, f) + decode_exponent(b.exponent, f)),
                s1_valid.eq(self.operands.valid),
            ]

        total = Signal(signed(self.total_width), reset_less=True)
        out_exponent = Signal(signed(self.exponent_width), reset_less=True)
        with m.If(advance):
            m.d.sync += [
                total.eq(adder_tree([products[i] for i in range(k)])),
                out_exponent.eq(exponent),
                self.results.valid.eq(s1_valid),
            ]
        m.d.comb += [self.results.payload.total.eq(total),
                     self.results.payload.exponent.eq(out_exponent)]
        return m
