"""LUT-based ternary GEMM unit (1.58-bit weights) and the pipeline all ternary units share.

Per beat the unit takes L*mu activations (one slice of the reduction) and, for each of K output
lanes, L groups of mu packed 2-bit weights. It builds L tables of every signed sum of a group's
mu activations (partial sums shared: one adder per entry that is not a single activation), and
each lane looks its L groups up instead of multiplying. Lane sums accumulate over the beats of a
job (a token's reduction for K columns) until `last`; then the K results are offered.

Pipeline (docs/ternary.md): operand registers -> table registers (+ decoded weight indices) ->
lane-sum registers -> accumulators (= results). One global enable, `~results.valid |
results.ready`, advances every stage, so backpressure stalls the whole unit and nothing is lost.
"""
import itertools

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout, View
from amaranth.lib.wiring import In, Out

from hw.float_add import float_add, float_neg
from software_model.ternary import (WEIGHT_CODES, half_entries, lut_index, mirrored_index,
                                    pairwise_sum_order, table_build_plan)

__all__ = ["TernaryUnitBase", "TernaryLUTUnit", "adder_tree"]


def adder_tree(terms, add):
    """Sum `terms` in the golden model's pairwise order (software_model.ternary)."""
    values = list(terms)
    for level in pairwise_sum_order(len(values)):
        values = [values[i] if j is None else add(values[i], values[j]) for i, j in level]
    return values[0]


class TernaryUnitBase(wiring.Component):
    """Interface, operand registers, job control and accumulators of every ternary unit.

    Subclasses implement `beat_sums(m, advance, activations, weights, control)` returning the
    K registered lane sums of one beat and the control bits delayed alongside them.
    """

    architecture = None

    def __init__(self, config):
        if config.architecture != self.architecture:
            raise ValueError(f"{type(self).__name__} implements architecture "
                             f"{self.architecture!r}, not {config.architecture!r}")
        for key in ("mu", "lanes_l", "lanes_k"):
            value = getattr(config, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{key} must be a positive integer, not {value!r}")
        problems = list(config.check())
        if problems:
            p = problems[0]
            raise ValueError(f"{p.key} must be {p.allowed}, not {p.value!r}")
        self.config = config
        self.mu, self.lanes_l, self.lanes_k = config.mu, config.lanes_l, config.lanes_k
        self.is_float = config.is_float
        width = config.activation_width
        self.activation_shape = unsigned(width) if self.is_float else signed(width)
        self.result_shape = (unsigned(width) if self.is_float
                             else signed(config.accumulator_width))
        weight_shape = (self.activation_shape if config.architecture == "multiplier"
                        else unsigned(2))
        beat = config.beat_reduction
        super().__init__({
            "operands": In(stream.Signature(StructLayout({
                "activations": ArrayLayout(self.activation_shape, beat),
                # weight of lane k at reduction position r of the beat: index k * L*mu + r
                "weights": ArrayLayout(weight_shape, self.lanes_k * beat),
                "last": 1,
            }))),
            "results": Out(stream.Signature(ArrayLayout(self.result_shape, self.lanes_k))),
        })

    def __repr__(self):
        c = getattr(self, "config", None)          # also called on a half-constructed object
        if c is None or not hasattr(self, "result_shape"):
            return f"{type(self).__name__}(<invalid>)"
        return (f"{type(self).__name__}(mu={c.mu}, L={c.lanes_l}, K={c.lanes_k}, "
                f"activation={c.activation}, acc={self.result_shape}, mirrored={c.mirrored})")

    # -- helpers for subclasses ------------------------------------------------------------------

    def add(self, m, a, b, name):
        """Exact (widening) integer add, or a correctly rounded float add."""
        if self.is_float:
            return float_add(m, a, b, self.config.activation, name=name)
        return a + b

    @staticmethod
    def stage(m, advance, value, name, shape=None):
        """A datapath register (no reset) that moves when the pipeline advances."""
        if shape is None:       # a View keeps its layout, anything else its plain shape
            shape = value.shape() if isinstance(value, View) else Value.cast(value).shape()
        reg = Signal(shape, name=name, reset_less=True)
        with m.If(advance):
            m.d.sync += reg.eq(value)
        return reg

    @staticmethod
    def control_stage(m, advance, control, suffix):
        """Delay valid/first/last by one stage; valid is reset so no phantom beat appears."""
        out = {k: Signal(name=f"{k}_{suffix}") for k in control}
        with m.If(advance):
            m.d.sync += [out[k].eq(v) for k, v in control.items()]
        return out

    def lane_weights(self, weights, lane, start, count):
        base = lane * self.config.beat_reduction + start
        return [weights[base + i] for i in range(count)]

    def beat_sums(self, m, advance, activations, weights, control):
        raise NotImplementedError

    # -- the shared pipeline ---------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        advance = Signal()
        m.d.comb += [advance.eq(~self.results.valid | self.results.ready),
                     self.operands.ready.eq(advance)]

        payload = self.operands.payload
        activations = self.stage(m, advance, payload.activations, "activations_in")
        weights = self.stage(m, advance, payload.weights, "weights_in")
        in_job = Signal()           # a beat without `last` was accepted: the next is not first
        with m.If(advance & self.operands.valid):
            m.d.sync += in_job.eq(~payload.last)
        control = self.control_stage(
            m, advance, {"valid": self.operands.valid, "first": ~in_job, "last": payload.last},
            "in")

        sums, control = self.beat_sums(m, advance, activations, weights, control)

        accumulators = [Signal(self.result_shape, name=f"acc_{k}", reset_less=True)
                        for k in range(self.lanes_k)]
        with m.If(advance):
            m.d.sync += self.results.valid.eq(control["valid"] & control["last"])
            with m.If(control["valid"]):
                for k, (acc, beat_sum) in enumerate(zip(accumulators, sums)):
                    # The first beat loads rather than adds to zero: 0 + (-0) would turn -0 to +0.
                    total = self.add(m, acc, beat_sum, f"acc_add_{k}")
                    m.d.sync += acc.eq(Mux(control["first"], beat_sum, total))
        m.d.comb += [self.results.payload[k].eq(acc) for k, acc in enumerate(accumulators)]
        return m


class TernaryLUTUnit(TernaryUnitBase):
    """LUT architecture: L shared tables per beat, K*L lookups, K adder trees of L terms."""

    architecture = "lut"

    def __init__(self, config):
        super().__init__(config)
        if self.mu < 2:
            raise ValueError(f"mu must be at least 2 for the LUT unit, not {self.mu}")
        self.mirrored = config.mirrored
        self.half = half_entries(self.mu)

    def build_table(self, m, group, name):
        """Positive-leading entries of one group, each a_i or a_i +/- an earlier entry."""
        entries = [None] * self.half
        entry_shape = (unsigned(self.config.activation_width) if self.is_float
                       else signed(self.config.table_entry_width))
        for n, step in enumerate(table_build_plan(self.mu)):
            value = group[step.source]
            if step.operand is not None:
                other = entries[step.operand]
                if self.is_float:
                    if step.subtract:
                        other = float_neg(other, self.config.activation)
                    value = float_add(m, value, other, self.config.activation,
                                      name=f"{name}_add{n}")
                else:
                    value = value - other if step.subtract else value + other
            entry = Signal(entry_shape, name=f"{name}_e{step.target}")
            m.d.comb += entry.eq(value)
            entries[step.target] = entry
        return entries

    def decode_group(self, m, codes, name):
        """2-bit codes of one group -> (negate, entry) for mirrored tables, or the full index.

        A ROM over the 2*mu code bits, generated from the golden model's encoding. Code 0b10
        (not a ternary weight) reads as the all-zero group.
        """
        code_bits = Cat(*codes)
        if self.mirrored:
            negate = Signal(name=f"{name}_neg")
            index = Signal(range(self.half + 1), name=f"{name}_idx")
            m.d.comb += index.eq(self.half)
        else:
            negate = None
            index = Signal(range(3 ** self.mu), name=f"{name}_idx")
            m.d.comb += index.eq(self.half)
        with m.Switch(code_bits):
            for group in itertools.product((1, 0, -1), repeat=self.mu):
                if not any(group):
                    continue
                key = sum(WEIGHT_CODES[w] << (2 * j) for j, w in enumerate(group))
                full = int(lut_index(group))
                with m.Case(key):
                    if self.mirrored:
                        neg, entry = mirrored_index(full, self.mu)
                        m.d.comb += [negate.eq(int(neg)), index.eq(int(entry))]
                    else:
                        m.d.comb += index.eq(full)
        return negate, index

    def beat_sums(self, m, advance, activations, weights, control):
        mu, lanes_l, lanes_k = self.mu, self.lanes_l, self.lanes_k
        fmt = self.config.activation

        # Stage 1: build and register the tables; decode and register the weight groups.
        tables = []
        for g in range(lanes_l):
            group = [activations[g * mu + j] for j in range(mu)]
            entries = self.build_table(m, group, f"lut{g}")
            if not self.mirrored:
                # Full storage: the negative-leading half, 3^mu - 1 - i holds -entry[i].
                negated = [float_neg(e, fmt) if self.is_float else -e for e in entries]
                entries = entries + [None] + negated[::-1]
            tables.append([None if e is None else self.stage(m, advance, e, f"lut{g}_r{i}",
                                                             shape=Value.cast(entries[0]).shape())
                           for i, e in enumerate(entries)])
        decoded = {}
        for k in range(lanes_k):
            for g in range(lanes_l):
                negate, index = self.decode_group(m, self.lane_weights(weights, k, g * mu, mu),
                                                  f"w{k}_{g}")
                decoded[k, g] = (None if negate is None else
                                 self.stage(m, advance, negate, f"w{k}_{g}_neg_r"),
                                 self.stage(m, advance, index, f"w{k}_{g}_idx_r"))
        control = self.control_stage(m, advance, control, "tables")

        # Stage 2: look up K*L entries, sum each lane's L terms, register the lane sums.
        entry_shape = Value.cast(tables[0][0]).shape()
        zero = C(0, entry_shape)            # the all-zero group: +0 for floats
        sums = []
        for k in range(lanes_k):
            terms, negations = [], []
            for g in range(lanes_l):
                negate, index = decoded[k, g]
                table = [zero if e is None else e for e in tables[g]]
                if self.mirrored:
                    table = table + [zero]
                value = Signal(entry_shape, name=f"look{k}_{g}")
                m.d.comb += value.eq(Array(table)[index])
                if negate is None:
                    terms.append(value)
                elif self.is_float:
                    terms.append(Cat(value[:-1], value[-1] ^ negate))     # sign flip is exact
                else:
                    # -v = ~v + 1: invert here, add the count of inversions once per lane.
                    terms.append(Mux(negate, ~value, value))
                    negations.append(negate)
            total = adder_tree(terms, lambda a, b, k=k: self.add(m, a, b, f"tree{k}"))
            if negations:
                total = total + sum(negations)
            sums.append(self.stage(m, advance, total, f"lane_sum_{k}",
                                   shape=self.beat_sum_shape(total)))
        return sums, self.control_stage(m, advance, control, "sums")

    def beat_sum_shape(self, value):
        if self.is_float:
            return unsigned(self.config.activation_width)
        return Value.cast(value).shape()
