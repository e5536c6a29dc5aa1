"""MXIntDotProduct: exact dot product of two MXInt blocks, one pair of blocks per cycle.

    a . b = total * 2^(exponent - 2 * (w - 2)),  exponent = e_a + e_b,  total = sum m_a,i m_b,i

Pipeline (latency 1 + ``tree_stages``): the k signed w x w products and the decoded exponent sum
are registered, then a pairwise adder tree (adjacent pairs, an odd last term passing through, as
:func:`hw.primitives.adder_tree`) sums the products into the result register. ``tree_stages``
(the pipelining knob, default 1) splits the tree's ceil(log2 k) levels into that many register
stages of as equal depth as possible (the deeper stages first), so the tree's share of the
longest path falls to ceil(levels / tree_stages) adders.  Nothing is rounded: the product is 2w bits (w x w signed, so that even the
-2^(w-1) code the cast never emits is exact) and the tree grows ceil(log2 k) carry bits, so the
order of the additions cannot change the result.  The result exponent is the *decoded* sum
(signed, ew + 2 bits: biased codes decode to -bias .. bias + 1).
software_model.mxint.mxint_dot is the reference.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_fields, block_layout, check_format, decode_exponent
from hw.primitives import GlobalEnable, global_enable_protocol, parameter_repr, tree_depth
from software_model.mxint import MXIntFormat

__all__ = ["MXIntDotProduct"]


class MXIntDotProduct(wiring.Component):
    """``operands`` stream of ``{a, b}`` MXInt blocks of format ``fmt`` in; ``results`` stream
    of ``{exponent, total}`` out.

    ``tree_stages``: register stages the adder tree is cut into, 1 .. max(1, ceil(log2 k));
    latency ``1 + tree_stages`` cycles, one pair per cycle.
    """

    def __init__(self, *, fmt: MXIntFormat, tree_stages: int = 1):
        self.fmt = check_format(fmt)
        levels = self.tree_levels = tree_depth(fmt.block_size)
        most = max(1, levels)
        if (not isinstance(tree_stages, int) or isinstance(tree_stages, bool)
                or not 1 <= tree_stages <= most):
            raise ValueError(f"Tree stages must be an integer from 1 to {most} (the adder tree "
                             f"of {fmt.block_size} products has {levels} levels), "
                             f"not {tree_stages!r}")
        self.tree_stages = tree_stages
        self.latency = 1 + tree_stages
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
        return parameter_repr(self, "fmt", "tree_stages")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        f = self.fmt
        a, b = block_fields(f, "a element"), block_fields(f, "b element")
        return global_enable_protocol(
            source="operands", sink="results",
            source_beat="one pair of MXInt blocks {a, b}: one dot product",
            source_fields={"a": f"block a: {a['exponent']}; {a['mantissas']}",
                           "b": f"block b: {b['exponent']}; {b['mantissas']}"},
            sink_beat="the dot product of one operands beat",
            sink_fields={
                "exponent": f"decoded e_a + e_b, signed {self.result_exponent_width} bits "
                            "(not a field code)",
                "total": f"sum_i a.mantissas[i] * b.mantissas[i], exact, signed "
                         f"{self.total_width} bits; a . b = total * 2^(exponent - "
                         f"{2 * f.fraction_bits})",
            },
            latency=self.latency, taken="an operand pair", offered="its result", unit="pair",
            arithmetic="exact, nothing rounded (software_model.mxint.mxint_dot)")

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

        # The tree's levels, cut into tree_stages register stages (the last is the result
        # register); the exponent waits beside the partial sums.
        values, level = [products[i] for i in range(k)], 0
        for stage, count in enumerate(self.stage_levels()[:-1]):
            for _ in range(count):
                values = self._tree_level(values)
            values = [self._register(m, ctl.advance, v, f"tree_s{stage}_{n}")
                      for n, v in enumerate(values)]
            exponent = self._register(m, ctl.advance, exponent, f"exponent_s{stage}")
        for _ in range(self.stage_levels()[-1]):
            values = self._tree_level(values)
        assert len(values) == 1

        result = Signal(self.result_layout, reset_less=True)
        with m.If(ctl.advance):
            m.d.sync += [result.total.eq(values[0]), result.exponent.eq(exponent)]
        m.d.comb += self.results.payload.eq(result)
        return m

    def stage_levels(self) -> list[int]:
        """Adder-tree levels in each of the ``tree_stages`` stages, deeper stages first."""
        base, extra = divmod(self.tree_levels, self.tree_stages)
        return [base + (s < extra) for s in range(self.tree_stages)]

    @staticmethod
    def _tree_level(values):
        """One level of the pairwise tree: adjacent pairs (widening), an odd last term passes."""
        out = [values[p] + values[p + 1] for p in range(0, len(values) - 1, 2)]
        return out + values[-1:] if len(values) % 2 else out

    @staticmethod
    def _register(m, advance, value, name):
        """A datapath register loading with the global enable (reset_less: its content only
        matters while the valid bit beside it is set)."""
        value = Value.cast(value)
        reg = Signal(value.shape(), name=name, reset_less=True)
        with m.If(advance):
            m.d.sync += reg.eq(value)
        return reg
