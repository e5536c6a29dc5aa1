"""Baselines for the LUT unit, same interface, same beats per cycle (L*mu activations, K lanes).

* TernaryAddSubUnit: every lane selects +a, -a or 0 for each of its L*mu weights and sums them
  (ternary select-and-add); no tables, one stage shorter.
* TernaryMultiplierUnit: L*mu*K real multipliers on *dequantised* weights, which arrive in the
  activation type (int<w> or fp16/bf16) at full width, so synthesis cannot shrink them to the
  2-bit ternary codes; products are registered, then each lane sums its L*mu products.
"""
from amaranth import *

from hw.float_add import float_mul
from hw.ternary_lut import TernaryUnitBase, adder_tree

__all__ = ["TernaryAddSubUnit", "TernaryMultiplierUnit"]


class TernaryAddSubUnit(TernaryUnitBase):
    """Latency 2: operand registers -> lane-sum registers -> accumulators."""

    architecture = "addsub"

    def beat_sums(self, m, advance, activations, weights, control):
        beat = self.config.beat_reduction
        sums = []
        for k in range(self.lanes_k):
            codes = self.lane_weights(weights, k, 0, beat)
            terms, negations = [], []
            for r in range(beat):
                a, code = activations[r], codes[r]
                # code bit 0: non-zero weight; bit 1: negative (0b01 = +1, 0b11 = -1, 0b00 = 0)
                term = Signal(self.activation_shape, name=f"sel{k}_{r}")
                if self.is_float:
                    m.d.comb += term.eq(Mux(code[0], Cat(a[:-1], a[-1] ^ code[1]), 0))
                    terms.append(term)
                else:
                    negate = code[0] & code[1]
                    # -a = ~a + 1: invert here, add the count of inversions once per lane.
                    m.d.comb += term.eq(Mux(code[0], Mux(negate, ~a, a), 0))
                    terms.append(term)
                    negations.append(negate)
            total = adder_tree(terms, lambda x, y, k=k: self.add(m, x, y, f"tree{k}"))
            if negations:
                total = total + sum(negations)
            shape = self.activation_shape if self.is_float else Value.cast(total).shape()
            sums.append(self.stage(m, advance, total, f"lane_sum_{k}", shape=shape))
        return sums, self.control_stage(m, advance, control, "sums")


class TernaryMultiplierUnit(TernaryUnitBase):
    """Latency 3: operand registers -> product registers -> lane-sum registers -> accumulators."""

    architecture = "multiplier"

    def beat_sums(self, m, advance, activations, weights, control):
        beat = self.config.beat_reduction
        products = {}
        for k in range(self.lanes_k):
            lane = self.lane_weights(weights, k, 0, beat)
            for r in range(beat):
                if self.is_float:
                    product = float_mul(m, activations[r], lane[r], self.config.activation,
                                        name=f"mul{k}_{r}")
                else:
                    product = activations[r] * lane[r]        # full w x w signed product
                products[k, r] = self.stage(m, advance, product, f"product_{k}_{r}",
                                            shape=Value.cast(product).shape())
        control = self.control_stage(m, advance, control, "products")
        sums = []
        for k in range(self.lanes_k):
            total = adder_tree([products[k, r] for r in range(beat)],
                               lambda x, y, k=k: self.add(m, x, y, f"tree{k}"))
            shape = self.activation_shape if self.is_float else Value.cast(total).shape()
            sums.append(self.stage(m, advance, total, f"lane_sum_{k}", shape=shape))
        return sums, self.control_stage(m, advance, control, "sums")
