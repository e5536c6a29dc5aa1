"""Baselines for the LUT unit, same interface, same beats per cycle (L*mu activations, K lanes).

* TernaryAddSubUnit: every lane selects +a, -a or 0 for each of its L*mu weights and sums them
  (ternary select-and-add); no tables, one stage shorter.
* TernaryMultiplierUnit: L*mu*K real multipliers on *dequantised* weights, which arrive in the
  activation type (int<w> or fp16/bf16) at full width, so synthesis cannot shrink them to the
  2-bit ternary codes; products are registered, then each lane sums its L*mu products.
"""
from amaranth import *

from hw.primitives import tree_depth
from hw.ternary_lut import FLOAT_ADD_STAGES, TernaryUnitBase

__all__ = ["TernaryAddSubUnit", "TernaryMultiplierUnit"]


class TernaryAddSubUnit(TernaryUnitBase):
    """Latency 2: operand registers -> lane-sum registers -> accumulators (float activations
    with ``pipeline_float_adds``: one lane-sum stage per level of the float tree)."""

    architecture = "addsub"

    @classmethod
    def stages_for(cls, *, mu: int, lanes_l: int, pipelined: bool,
                   add_stages: int = FLOAT_ADD_STAGES) -> int:
        return max(1, add_stages * tree_depth(lanes_l * mu)) if pipelined else 1

    def beat_sums(self, m, advance, activations, weights):
        beat = self.beat_reduction
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
                else:
                    negate = code[0] & code[1]
                    # -a = ~a + 1: invert here, add the count of inversions once per lane.
                    m.d.comb += term.eq(Mux(code[0], Mux(negate, ~a, a), 0))
                    negations.append(negate)
                terms.append(term)
            sums.append(self.lane_sum(m, advance, terms, k, negations))
        return sums


class TernaryMultiplierUnit(TernaryUnitBase):
    """Latency 3: operand registers -> product registers -> lane-sum registers -> accumulators
    (float activations with ``pipeline_float_adds``: one lane-sum stage per level of the float
    tree)."""

    architecture = "multiplier"

    @classmethod
    def stages_for(cls, *, mu: int, lanes_l: int, pipelined: bool,
                   add_stages: int = FLOAT_ADD_STAGES) -> int:
        """The products (three stages for floats with ``add_stages`` >= 3: registers after the
        significand product and after the normalisation plan), then the lane trees."""
        products = 3 if pipelined and add_stages >= 3 else 1
        return products + (max(1, add_stages * tree_depth(lanes_l * mu)) if pipelined else 1)

    def beat_sum_bound(self) -> int:
        # dequantised weights span the full int range: products up to 2^(2w-2)
        return self.beat_reduction << (2 * self.activation_width - 2)

    def beat_sums(self, m, advance, activations, weights):
        beat = self.beat_reduction
        products = {}
        for k in range(self.lanes_k):
            lane = self.lane_weights(weights, k, 0, beat)
            for r in range(beat):
                if self.is_float:
                    product = self.staged_mul(m, advance, activations[r], lane[r],
                                              name=f"mul{k}_{r}")
                else:
                    product = activations[r] * lane[r]        # full w x w signed product
                products[k, r] = self.stage(m, advance, product, f"product_{k}_{r}")
        return [self.lane_sum(m, advance, [products[k, r] for r in range(beat)], k)
                for k in range(self.lanes_k)]
