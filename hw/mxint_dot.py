"""MXIntDotProduct: exact dot product of two MXInt blocks, one pair of blocks per cycle.

    a . b = total * 2^(exponent - 2 * (w - 2)),  exponent = e_a + e_b,  total = sum m_a,i m_b,i

Two pipeline stages (latency 2): the k signed w x w products and the decoded exponent sum are
registered, then a pairwise adder tree (:func:`hw.primitives.adder_tree`) sums the products into
the result register.  Nothing is rounded: the product is 2w bits (w x w signed, so that even the
-2^(w-1) code the cast never emits is exact) and the tree grows ceil(log2 k) carry bits, so the
order of the additions cannot change the result.  The result exponent is the *decoded* sum
(signed, ew + 2 bits: biased codes decode to -bias .. bias + 1).
software_model.mxint.mxint_dot is the reference.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import (block_fields, block_layout, check_format, decode_exponent,
                             global_enable_ready)
from hw.primitives import GlobalEnable, adder_tree, parameter_repr, tree_depth
from software_model.mxint import MXIntFormat

__all__ = ["MXIntDotProduct"]


class MXIntDotProduct(wiring.Component):
    """``operands`` stream of ``{a, b}`` MXInt blocks of format ``fmt`` in; ``results`` stream
    of ``{exponent, total}`` out."""

    latency = 2

    def __init__(self, *, fmt: MXIntFormat):
        self.fmt = check_format(fmt)
        #: exact sum: full-range w x w products (2w bits) plus ceil(log2 k) carry bits
        self.total_width = 2 * fmt.element_width + tree_depth(fmt.block_size)
        #: decoded e_a + e_b always fits ew + 2 signed bits (biased codes reach 2^ew)
        self.result_exponent_width = fmt.exponent_width + 2
        block = block_layout(fmt)
        self.operand_layout = StructLayout({"a": block, "b": block})
        self.result_layout = StructLayout({
            "exponent": signed(self.result_exponent_width),
            "total": signed(self.total_width),
        })
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(self.result_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "fmt")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        f = self.fmt
        a, b = block_fields(f, "a element"), block_fields(f, "b element")
        return {
            "operands": {
                "beat": "one pair of MXInt blocks {a, b}: one dot product",
                "fields": {"a": f"block a: {a['exponent']}; {a['mantissas']}",
                           "b": f"block b: {b['exponent']}; {b['mantissas']}"},
                "ready": global_enable_ready("operands", "results"),
            },
            "results": {
                "beat": "the dot product of one operands beat",
                "fields": {
                    "exponent": f"decoded e_a + e_b, signed {self.result_exponent_width} bits "
                                "(not a field code)",
                    "total": f"sum_i a.mantissas[i] * b.mantissas[i], exact, signed "
                             f"{self.total_width} bits; a . b = total * 2^(exponent - "
                             f"{2 * f.fraction_bits})",
                },
                "order": "one beat per operands beat, in order",
                "backpressure": "holds the whole pipeline; nothing is dropped",
            },
            "buffers": f"none besides the {self.latency} pipeline registers",
            "latency": f"{self.latency} cycles from an operand pair taken to its result "
                       "offered; one pair per cycle",
            "arithmetic": "exact, nothing rounded (software_model.mxint.mxint_dot)",
        }

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        k, w = f.block_size, f.element_width
        ctl = GlobalEnable(m, source=self.operands, sink=self.results, stages=self.latency)
        a, b = self.operands.payload.a, self.operands.payload.b

        products = Signal(ArrayLayout(signed(2 * w), k), reset_less=True)
        exponent = Signal(signed(self.result_exponent_width), reset_less=True)
        with m.If(ctl.advance):
            m.d.sync += [products[i].eq(a.mantissas[i] * b.mantissas[i]) for i in range(k)]
            m.d.sync += exponent.eq(decode_exponent(a.exponent, f)
                                    + decode_exponent(b.exponent, f))

        result = Signal(self.result_layout, reset_less=True)
        with m.If(ctl.advance):
            m.d.sync += [result.total.eq(adder_tree(m, [products[i] for i in range(k)])),
                         result.exponent.eq(exponent)]
        m.d.comb += self.results.payload.eq(result)
        return m
