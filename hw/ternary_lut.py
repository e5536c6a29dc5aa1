"""LUT-based ternary GEMM unit (1.58-bit weights) and the pipeline all ternary units share.

Per beat the unit takes L*mu activations (one slice of the reduction) and, for each of K output
lanes, L groups of mu packed 2-bit weights. It builds L tables of every signed sum of a group's
mu activations (partial sums shared: one adder per entry that is not a single activation), and
each lane looks its L groups up instead of multiplying. Lane sums accumulate over the beats of a
job (a token's reduction for K columns) until `last`; then the K results are offered.

Pipeline (docs/ternary.md): operand registers -> table registers (+ decoded weight indices) ->
lane-sum registers -> accumulators (= results). Float activations with ``accumulator_stages``
S > 1 accumulate in S interleaved partial sums instead (beat j of a job adds to partial j mod S
through an S-stage float add, so the loop is cut by S registers), which a pairwise tree of the
same S-stage adds combines after the job's last beat. One global enable (:class:`hw.primitives.
GlobalEnable`), `~results.valid | results.ready`, advances every stage, so backpressure stalls
the whole unit and nothing is lost.
"""
import itertools

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout, View
from amaranth.lib.wiring import In, Out

from hw.float_add import (PIPELINE_POINTS, _add_align, _add_normalize, float_add, float_format,
                          float_mul, float_neg)
from hw.primitives import (GlobalEnable, adder_tree, check_positive, delay, parameter_repr,
                           tree_depth)
from software_model.ternary import (WEIGHT_CODES, half_entries, lut_index,
                                    mirrored_index, parse_activation, table_build_plan)

__all__ = ["TernaryUnitBase", "TernaryLUTUnit", "build_table", "build_levels", "decode_group",
           "signed_bits", "accumulator_extra_stages", "ACCUMULATOR_STAGES"]


#: stages of one float add in a pipelined beat path by default at the component level (a
#: register between alignment/addition and normalisation, as
#: :func:`hw.float_add.float_add_staged`, and one after it); the configs default to 4
FLOAT_ADD_STAGES = 2


#: allowed ``accumulator_stages``: 1 (one running sum, a float add in a one-cycle loop) up to one
#: stage per register point of the float adder (:data:`hw.float_add.PIPELINE_POINTS`) plus the
#: partial-sum register
ACCUMULATOR_STAGES = tuple(range(1, len(PIPELINE_POINTS) + 2))


def accumulator_extra_stages(stages: int) -> int:
    """Cycles ``accumulator_stages`` adds to the latency: the add's S - 1 inner registers, then
    the pairwise tree over the S partial sums, S stages a level (none for S = 1)."""
    return 0 if stages == 1 else stages - 1 + tree_depth(stages) * stages


def signed_bits(magnitude: int) -> int:
    """Two's-complement bits holding every value in [-magnitude, magnitude]."""
    return magnitude.bit_length() + 1


def build_levels(mu: int) -> int:
    """Adds in series on the longest dependency chain of the table build (at least 1)."""
    level = {}
    for step in table_build_plan(mu):
        level[step.target] = 0 if step.operand is None else level[step.operand] + 1
    return max(1, *level.values())


def build_table(m, group, *, mu: int, entry_shape, float_format=None, name: str,
                register=None, add=None, add_stages: int = 1):
    """Positive-leading entries of one group of ``mu`` activations, each a_i or a_i +/- an
    earlier entry (:func:`software_model.ternary.table_build_plan`); float adds when
    ``float_format`` is given, else exact integer adds into ``entry_shape``.

    ``register(value, name)``: a pipeline register after every level of dependent adds but the
    last (the caller registers the finished table), so each stage is one add deep; the entries
    and activations a later level still reads are carried along. ``add(a, b, name)`` replaces
    the float add, with ``add_stages - 1`` registers of its own inside (the carried values wait
    as long)."""
    plan = table_build_plan(mu)
    level = {}
    for step in plan:
        level[step.target] = 0 if step.operand is None else level[step.operand] + 1
    top = max(level.values())

    def chain(value, cycles, label):
        for c in range(cycles):
            value = register(value, f"{label}_d{c}")
        return value

    if register is not None and (top > 1 or add_stages > 1):
        entries, current = {}, list(group)
        for lvl in range(top + 1):
            if lvl > 1:     # the level just built has been through its adds' own registers
                current = [chain(a, add_stages, f"{name}_a{j}_l{lvl}")
                           for j, a in enumerate(current)]
                entries = {t: chain(v, 1 if level[t] == lvl - 1 else add_stages,
                                    f"{name}_e{t}_l{lvl}") for t, v in entries.items()}
            for n, step in enumerate(plan):
                if level[step.target] == lvl:
                    entries[step.target] = _build_step(m, step, current, entries, n,
                                                       entry_shape, float_format, name, add)
        # older entries wait for the last level's adds
        entries = {t: chain(v, 0 if level[t] == top else add_stages - 1, f"{name}_e{t}_end")
                   for t, v in entries.items()}
        return [entries[i] for i in range(half_entries(mu))]
    entries = [None] * half_entries(mu)
    for n, step in enumerate(plan):
        entries[step.target] = _build_step(m, step, group, entries, n, entry_shape,
                                           float_format, name, add)
    return entries


def _build_step(m, step, group, entries, n, entry_shape, float_format, name, add=None):
    """One entry of the plan: a_i, or a_i +/- an earlier entry."""
    value = group[step.source]
    if step.operand is not None:
        other = entries[step.operand]
        if float_format is not None:
            if step.subtract:
                other = float_neg(other, float_format)
            if add is None:
                value = float_add(m, value, other, float_format, name=f"{name}_add{n}")
            else:
                value = add(value, other, f"{name}_add{n}")
        else:
            value = value - other if step.subtract else value + other
    entry = Signal(entry_shape, name=f"{name}_e{step.target}")
    m.d.comb += entry.eq(value)
    return entry


def decode_group(m, codes, *, mu: int, mirrored: bool, name: str):
    """2-bit codes of one group -> (negate, entry) for mirrored tables, or (None, full index).

    A ROM over the 2*mu code bits, generated from the golden model's encoding. Code 0b10
    (not a ternary weight) reads as the all-zero group.
    """
    half = half_entries(mu)
    code_bits = Cat(*codes)
    if mirrored:
        negate = Signal(name=f"{name}_neg")
        index = Signal(range(half + 1), name=f"{name}_idx")
    else:
        negate = None
        index = Signal(range(3 ** mu), name=f"{name}_idx")
    m.d.comb += index.eq(half)
    with m.Switch(code_bits):
        for group in itertools.product((1, 0, -1), repeat=mu):
            if not any(group):
                continue
            key = sum(WEIGHT_CODES[w] << (2 * j) for j, w in enumerate(group))
            full = int(lut_index(group))
            with m.Case(key):
                if mirrored:
                    neg, entry = mirrored_index(full, mu)
                    m.d.comb += [negate.eq(int(neg)), index.eq(int(entry))]
                else:
                    m.d.comb += index.eq(full)
    return negate, index


class TernaryUnitBase(wiring.Component):
    """Interface, operand registers, job control and accumulators of every ternary unit.

    ``mu`` weights per group and ``lanes_l`` groups per beat (L*mu activations a beat),
    ``lanes_k`` output lanes, ``activation`` ``"int2"`` .. ``"int16"``, ``"fp16"`` or ``"bf16"``,
    ``acc_width`` the integer accumulator bits (wraps; at least one beat's exact sum) or None for
    float activations, which accumulate in their own format.

    ``pipeline_float_adds`` (float activations only; the pipelining knob): every float add of the
    beat path (table build, lane trees) is cut into ``float_add_stages`` stages (1 .. 4: S - 1
    registers inside it at :data:`hw.float_add.PIPELINE_POINTS`, one after it; 2, the
    component default, is a register between alignment/addition and normalisation); with 3 or
    more the multiplier baseline's float multiplies get two registers inside too (after the
    significand product, after the normalisation plan). False keeps one stage per step.

    ``accumulator_stages`` S (float activations only; 1 .. 4, default 1): the accumulator's add
    is cut by S registers (S - 1 inside it at :data:`hw.float_add.PIPELINE_POINTS`, and the
    partial-sum register) and carries S interleaved partial sums, each starting at -0: beat j of
    a job adds to partial j mod S; after the job's last beat the S partials go through a
    pairwise tree of the same S-stage adds (software_model.ternary.ternary_gemm with
    ``accumulators=S`` is that order). Latency grows by
    :func:`accumulator_extra_stages`; one beat per cycle still.

    Subclasses implement ``stages_for`` (their ``beat_stages``) and `beat_sums(m, advance,
    activations, weights)` returning the K lane sums of one beat, registered ``beat_stages``
    times.
    """

    architecture = None
    beat_stages = None

    def __init__(self, *, mu: int, lanes_l: int, lanes_k: int, activation: str,
                 acc_width: int | None = None, pipeline_float_adds: bool = True,
                 float_add_stages: int = FLOAT_ADD_STAGES, accumulator_stages: int = 1):
        check_positive("Mu", mu)
        if (not isinstance(float_add_stages, int) or isinstance(float_add_stages, bool)
                or float_add_stages not in ACCUMULATOR_STAGES):
            raise ValueError(f"Float add stages must be an integer from 1 to "
                             f"{ACCUMULATOR_STAGES[-1]}, not {float_add_stages!r}")
        self.float_add_stages = float_add_stages
        if not isinstance(pipeline_float_adds, bool):
            raise ValueError(f"Pipeline float adds must be True or False, "
                             f"not {pipeline_float_adds!r}")
        check_positive("Lanes L", lanes_l)
        check_positive("Lanes K", lanes_k)
        try:
            self.activation_type = parse_activation(activation)
        except ValueError:
            raise ValueError(f"Activation must be int2 .. int16, fp16 or bf16, "
                             f"not {activation!r}") from None
        self.mu, self.lanes_l, self.lanes_k = mu, lanes_l, lanes_k
        self.beat_reduction = lanes_l * mu
        self.activation = self.activation_type.name
        self.is_float = self.activation_type.is_float
        width = self.activation_width = self.activation_type.width
        if self.is_float:
            if acc_width is not None:
                raise ValueError(f"Accumulator width must be None for {self.activation} "
                                 f"activations (they accumulate in {self.activation}), "
                                 f"not {acc_width!r}")
        else:
            need = signed_bits(self.beat_sum_bound())
            if not isinstance(acc_width, int) or isinstance(acc_width, bool) or acc_width < need:
                raise ValueError(f"Accumulator width must be an integer >= {need} (one beat's "
                                 f"exact sum) for {self.activation} activations, "
                                 f"not {acc_width!r}")
        self.acc_width = acc_width
        if (not isinstance(accumulator_stages, int) or isinstance(accumulator_stages, bool)
                or accumulator_stages not in ACCUMULATOR_STAGES
                or (accumulator_stages != 1 and not self.is_float)):
            allowed = (f"an integer from 1 to {ACCUMULATOR_STAGES[-1]}" if self.is_float
                       else f"1 for {self.activation} activations (an integer add is one adder "
                            "deep)")
            raise ValueError(f"Accumulator stages must be {allowed}, "
                             f"not {accumulator_stages!r}")
        self.accumulator_stages = accumulator_stages
        self.pipeline_float_adds = pipeline_float_adds
        #: one register after every level of float adds in the beat path (table build, lane
        #: trees): each stage one float add deep, like the accumulator's own add
        self.float_pipelined = self.is_float and pipeline_float_adds
        self.beat_stages = self.stages_for(mu=mu, lanes_l=lanes_l,
                                           pipelined=self.float_pipelined,
                                           add_stages=float_add_stages)
        #: cycles from the handshake of a job's last beat to its results being valid, minus one
        #: (the config's ``latency``: counted from the operand registers)
        self.latency = 1 + self.beat_stages + accumulator_extra_stages(accumulator_stages)
        self.activation_shape = unsigned(width) if self.is_float else signed(width)
        self.result_shape = unsigned(width) if self.is_float else signed(acc_width)
        weight_shape = self.activation_shape if self.architecture == "multiplier" else unsigned(2)
        self.operand_layout = StructLayout({
            "activations": ArrayLayout(self.activation_shape, self.beat_reduction),
            # weight of lane k at reduction position r of the beat: index k * L*mu + r
            "weights": ArrayLayout(weight_shape, lanes_k * self.beat_reduction),
            "last": 1,
        })
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(ArrayLayout(self.result_shape, lanes_k))),
        })

    def __repr__(self):
        return parameter_repr(self, "mu", "lanes_l", "lanes_k", "activation", "acc_width",
                              "pipeline_float_adds", "float_add_stages", "accumulator_stages")

    @classmethod
    def stages_for(cls, *, mu: int, lanes_l: int, pipelined: bool,
                   add_stages: int = FLOAT_ADD_STAGES) -> int:
        """Register stages of ``beat_sums`` (the unit's latency is one more)."""
        raise NotImplementedError

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        beat, kk = self.beat_reduction, self.lanes_k
        if self.architecture == "multiplier":
            weight = (f"the dequantised weight W[k, t*{beat} + r] in the activation type "
                      f"({self.activation})")
        else:
            weight = ("2-bit code of the ternary weight W[k, t*{0} + r]: 0b00 = 0, 0b01 = +1, "
                      "0b11 = -1 (0b10 reads as 0)").format(beat)
        if self.is_float and self.accumulator_stages > 1:
            st = self.accumulator_stages
            result = (f"payload[k], k = 0..{kk - 1}: sum over the job of W[k, n] * x[n], "
                      f"{self.activation} bits, accumulated in {self.activation} (rounded to "
                      f"nearest even after every add) in {st} interleaved partial sums "
                      f"starting at -0 (beat t adds to partial t mod {st}), combined by a "
                      "pairwise tree after the last beat: software_model.ternary.ternary_gemm "
                      f"with accumulators={st}")
        elif self.is_float:
            result = (f"payload[k], k = 0..{kk - 1}: sum over the job of W[k, n] * x[n], "
                      f"{self.activation} bits, accumulated in {self.activation} (rounded to "
                      "nearest even after every add, in software_model.ternary.ternary_gemm's "
                      "order)")
        else:
            result = (f"payload[k], k = 0..{kk - 1}: sum over the job of W[k, n] * x[n], "
                      f"signed {self.acc_width} bits, wrapping modulo 2^{self.acc_width}")
        latency = self.latency + 1      # operand registers, beat_stages, the accumulation
        return {
            "operands": {
                "beat": f"beat t of a job (one token's reduction x[0 .. N-1] for {kk} output "
                        f"columns): reduction positions t*{beat} .. t*{beat}+{beat - 1}",
                "fields": {
                    "activations": f"activations[r], r = 0..{beat - 1}: x[t*{beat} + r] "
                                   f"({self.activation})",
                    "weights": f"weights[k*{beat} + r], k = 0..{kk - 1}, r = 0..{beat - 1}: "
                               + weight,
                    "last": f"1 on the job's final beat (ceil(N / {beat}) beats; pad the "
                            "unused positions of the last beat with zero activations and zero "
                            "weights)",
                },
                "ready": "combinational on results.ready: ready = ~results.valid | "
                         "results.ready for every beat (results.valid is a register), so the "
                         "whole unit stalls while a result is held; not a function of "
                         "operands.valid or its payload",
            },
            "results": {
                "beat": f"the {kk} column results of one job",
                "fields": {"payload": result},
                "order": "one beat per operands beat with last = 1, in order",
                "backpressure": "holds the whole pipeline; nothing is dropped",
            },
            "buffers": f"none besides the {latency} pipeline stages",
            "latency": f"{latency} cycles from a job's last beat taken to its result offered; "
                       "one beat per cycle",
            "arithmetic": f"{self.architecture} architecture, bit-exact to "
                          "software_model.ternary.ternary_gemm",
        }

    def beat_sum_bound(self) -> int:
        """Largest magnitude of one lane's sum over one beat (integer activations)."""
        return self.beat_reduction << (self.activation_width - 1)

    # -- helpers for subclasses ------------------------------------------------------------------

    def add(self, m, a, b, name):
        """Exact (widening) integer add, or a correctly rounded float add."""
        if self.is_float:
            return float_add(m, a, b, self.activation, name=name)
        return a + b

    def lane_sum(self, m, advance, terms, lane, negations=()):
        """A lane's beat sum, registered: its terms summed in the golden model's pairwise order
        (float adds round, integer adds widen), plus one per inverted term (``negations``: the
        terms that are ``~v`` for ``-v``), in the format's width or the exact integer width."""
        if self.float_pipelined and len(terms) > 1:
            # a register inside every float add and after every level: each stage half a
            # float add deep (the last level's register is the lane sum's); adjacent pairs, an
            # odd last term passing through, as adder_tree and the golden model sum
            values, level = list(terms), 0
            while len(values) > 1:
                nxt = [self.stage(m, advance, self.staged_add(m, advance, values[p],
                                                              values[p + 1], f"tree{lane}",
                                                              self.float_add_stages),
                                  f"lane_sum_{lane}_l{level}_{p // 2}")
                       for p in range(0, len(values) - 1, 2)]
                if len(values) % 2:
                    nxt.append(delay(m, values[-1], self.float_add_stages, enable=advance,
                                     name=f"lane_sum_{lane}_l{level}_pass"))
                values, level = nxt, level + 1
            return values[0]
        total = adder_tree(m, terms, add=lambda a, b: self.add(m, a, b, f"tree{lane}"))
        if negations:
            total = total + sum(negations)
        shape = self.activation_shape if self.is_float else Value.cast(total).shape()
        return self.stage(m, advance, total, f"lane_sum_{lane}", shape=shape)

    def staged_add(self, m, advance, a, b, name, stages):
        """``a + b`` with ``stages - 1`` registers inside, at the first points of
        :data:`hw.float_add.PIPELINE_POINTS` (as ``FloatAdderUnit(pipeline_stages=stages - 1)``;
        2 stages is :func:`hw.float_add.float_add_staged`); the caller registers the sum."""
        f = float_format(self.activation)
        points = PIPELINE_POINTS[:stages - 1]

        def at(point):
            if point not in points:
                return None
            return lambda v, n: self.stage(m, advance, v, n)
        parts = _add_align(m, a, b, f, name, register=at("swap"))
        if "add" in points:
            parts = {k: self.stage(m, advance, v, f"{name}_{k}_s") for k, v in parts.items()}
        return _add_normalize(m, parts, f, name, register=at("normalize"))

    def staged_mul(self, m, advance, a, b, name):
        """``a * b`` as :func:`hw.float_add.float_mul`, with a register after the significand
        product and one after the normalisation plan when ``float_add_stages`` >= 3 (three
        stages, the caller's register after it); else the combinational multiply."""
        if not (self.float_pipelined and self.float_add_stages >= 3):
            return float_mul(m, a, b, self.activation, name=name)
        return float_mul(m, a, b, self.activation, name=name,
                         register=lambda v, n: self.stage(m, advance, v, n))

    @staticmethod
    def stage(m, advance, value, name, shape=None):
        """A datapath register (no reset) of ``shape`` (default: the value's own) that moves
        when the pipeline advances."""
        if shape is None:       # a View keeps its layout, anything else its plain shape
            shape = value.shape() if isinstance(value, View) else Value.cast(value).shape()
        reg = Signal(shape, name=name, reset_less=True)
        with m.If(advance):
            m.d.sync += reg.eq(value)
        return reg

    def lane_weights(self, weights, lane, start, count):
        base = lane * self.beat_reduction + start
        return [weights[base + i] for i in range(count)]

    def beat_sums(self, m, advance, activations, weights):
        raise NotImplementedError

    # -- the shared pipeline ---------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        ops = self.operands
        # Only a job's last beat produces results: the pipeline's valid bits follow the closing
        # beats, while every beat's own valid and first bits ride beside its data.
        closing = stream.Signature(0).create(path=("closing",))
        m.d.comb += [closing.valid.eq(ops.valid & ops.payload.last), ops.ready.eq(closing.ready)]
        depth = 1 + self.beat_stages
        extra = accumulator_extra_stages(self.accumulator_stages)
        ctl = GlobalEnable(m, source=closing, sink=self.results, stages=depth + 1 + extra,
                           name="job")
        advance = ctl.advance

        activations = self.stage(m, advance, ops.payload.activations, "activations_in")
        weights = self.stage(m, advance, ops.payload.weights, "weights_in")
        in_job = Signal()           # a beat without `last` was accepted: the next is not first
        with m.If(advance & ops.valid):
            m.d.sync += in_job.eq(~ops.payload.last)
        valid = delay(m, ops.valid, depth, name="beat_valid", reset_less=False, enable=advance)
        first = delay(m, ~in_job, depth, name="beat_first", enable=advance)

        sums = self.beat_sums(m, advance, activations, weights)
        if self.accumulator_stages > 1:
            self.accumulate_interleaved(m, advance, sums, valid, in_job)
            return m

        accumulators = [Signal(self.result_shape, name=f"acc_{k}", reset_less=True)
                        for k in range(self.lanes_k)]
        # The adders are built outside the enable's `If`: comb logic inside one is gated by it.
        totals = [self.add(m, acc, beat_sum, f"acc_add_{k}")
                  for k, (acc, beat_sum) in enumerate(zip(accumulators, sums))]
        with m.If(advance & valid):
            for acc, beat_sum, total in zip(accumulators, sums, totals):
                # The first beat loads rather than adds to zero: 0 + (-0) would turn -0 to +0.
                m.d.sync += acc.eq(Mux(first, beat_sum, total))
        m.d.comb += [self.results.payload[k].eq(acc) for k, acc in enumerate(accumulators)]
        return m


    def accumulate_interleaved(self, m, advance, sums, valid, in_job):
        """S = ``accumulator_stages`` partial sums per lane, the float add's loop cut by S
        registers: beat j of a job (``sums`` enter with their ``valid`` bits) reads partial
        j mod S (or -0 for j < S: every partial starts empty) and, S advances later, writes the
        sum back, before beat j + S (at least S advances later) reads it again. The stage after
        the job's last write holds the job's S partials (a job's first write marks the others
        empty, -0): a pairwise tree of S-stage adds (an odd partial waits beside)
        combines them into the results."""
        st, ops = self.accumulator_stages, self.operands
        depth = 1 + self.beat_stages
        # Position of each beat in its job, mod S, and whether it is among the first S.
        next_index = Signal(range(st), name="acc_next_index")
        warm = Signal(name="acc_warm")          # S beats of this job were taken already
        index = Signal(range(st), name="acc_index")
        load = Signal(name="acc_load")
        m.d.comb += [index.eq(Mux(in_job, next_index, 0)), load.eq(~(in_job & warm))]
        with m.If(advance & ops.valid):
            m.d.sync += [next_index.eq(Mux(index == st - 1, 0, index + 1)),
                         warm.eq((in_job & warm) | (index == st - 1))]
        index = delay(m, index, depth, name="acc_index_d", enable=advance)
        load = delay(m, load, depth, name="acc_load_d", enable=advance)
        neg_zero = C(1 << (self.activation_width - 1), self.activation_width)
        # the write-back: S - 1 stages after entry (the add's inner registers), into the partial
        write_index = delay(m, index, st - 1, name="acc_windex", enable=advance)
        write = delay(m, valid, st - 1, name="acc_wvalid", reset_less=False, enable=advance)
        # a job's first beat empties the other partials (-0) as it writes partial 0, so a job of
        # fewer than S beats finds -0, not the last job's sums, in the partials it never reached
        opening = delay(m, load & (index == 0), st - 1, name="acc_wfirst", enable=advance)
        filled = [Signal(name=f"acc_filled_{p}") for p in range(st)]   # written in this job
        with m.If(advance & write):
            for p in range(st):
                with m.If(write_index == p):
                    m.d.sync += filled[p].eq(1)
                if p:
                    with m.Elif(opening):
                        m.d.sync += filled[p].eq(0)

        results = []
        for k, beat_sum in enumerate(sums):
            partials = [Signal(self.result_shape, name=f"partial_{k}_{p}", reset_less=True)
                        for p in range(st)]
            current = Signal(self.result_shape, name=f"partial_{k}_read")
            m.d.comb += current.eq(Mux(load, neg_zero, Array(partials)[index]))
            total = self.staged_add(m, advance, beat_sum, current, f"acc_add_{k}", st)
            held = []
            for p, partial in enumerate(partials):
                # no mux in front of the partial (a load enable): its stage is the add's last
                with m.If(advance & write & (write_index == p)):
                    m.d.sync += partial.eq(total)
                # The cycle after a job's last write the partials hold the job's sums (the next
                # job writes at a later advance), so the tree reads them there; a partial the
                # job never reached reads as the empty sum -0.
                held.append(Mux(filled[p], partial, neg_zero))
            # the pairwise tree over the partials, adjacent pairs, an odd last one waiting
            level = 0
            while len(held) > 1:
                nxt = [self.stage(m, advance,
                                  self.staged_add(m, advance, held[p], held[p + 1],
                                                  f"acc_tree_{k}_l{level}_{p // 2}", st),
                                  f"acc_sum_{k}_l{level}_{p // 2}", shape=self.result_shape)
                       for p in range(0, len(held) - 1, 2)]
                if len(held) % 2:
                    nxt.append(delay(m, held[-1], st, name=f"acc_sum_{k}_l{level}_pass",
                                     enable=advance))
                held, level = nxt, level + 1
            results.append(held[0])
        m.d.comb += [self.results.payload[k].eq(r) for k, r in enumerate(results)]


class TernaryLUTUnit(TernaryUnitBase):
    """LUT architecture: L shared tables per beat, K*L lookups, K adder trees of L terms.

    ``mirrored``: store the (3^mu-1)/2 positive-leading entries and negate on lookup, or (False)
    all 3^mu-1 signed entries. ``mu`` is 2 .. 8 (a group of one has no table).
    """

    architecture = "lut"

    @classmethod
    def stages_for(cls, *, mu: int, lanes_l: int, pipelined: bool,
                   add_stages: int = FLOAT_ADD_STAGES) -> int:
        """Table build then lookups and lane trees: one stage each, or (``pipelined``)
        ``add_stages`` per level of float adds in each (one for a lane of a single lookup)."""
        if not pipelined:
            return 2
        return (build_levels(mu) + max(1, tree_depth(lanes_l))) * add_stages \
            - (add_stages - 1 if lanes_l == 1 else 0)

    def __init__(self, *, mu: int, lanes_l: int, lanes_k: int, activation: str,
                 acc_width: int | None = None, mirrored: bool = True,
                 pipeline_float_adds: bool = True, float_add_stages: int = FLOAT_ADD_STAGES,
                 accumulator_stages: int = 1):
        if not isinstance(mu, int) or isinstance(mu, bool) or not 2 <= mu <= 8:
            raise ValueError(f"Mu must be an integer from 2 to 8 for the LUT unit, not {mu!r}")
        if not isinstance(mirrored, bool):
            raise ValueError(f"Mirrored must be True or False, not {mirrored!r}")
        self.mirrored = mirrored
        self.half = half_entries(mu)
        super().__init__(mu=mu, lanes_l=lanes_l, lanes_k=lanes_k, activation=activation,
                         acc_width=acc_width, pipeline_float_adds=pipeline_float_adds,
                         float_add_stages=float_add_stages,
                         accumulator_stages=accumulator_stages)
        #: bits per table entry: exact signed sum of mu int<w> values, or the float width
        self.table_entry_width = (self.activation_width if self.is_float
                                  else signed_bits(mu << (self.activation_width - 1)))

    def __repr__(self):
        return parameter_repr(self, "mu", "lanes_l", "lanes_k", "activation", "acc_width",
                              "mirrored", "pipeline_float_adds", "float_add_stages",
                              "accumulator_stages")

    def beat_sums(self, m, advance, activations, weights):
        mu, lanes_l, lanes_k = self.mu, self.lanes_l, self.lanes_k
        fmt = self.activation if self.is_float else None
        entry_shape = (unsigned(self.table_entry_width) if self.is_float
                       else signed(self.table_entry_width))

        # Stage 1: build and register the tables; decode and register the weight groups.
        # Pipelined floats: the build takes one stage per level of dependent adds (the last
        # one's register is the table's), the decoded weights wait beside it.
        add_stages = self.float_add_stages
        build = build_levels(mu) * add_stages if self.float_pipelined else 1
        tables = []
        for g in range(lanes_l):
            group = [activations[g * mu + j] for j in range(mu)]
            entries = build_table(m, group, mu=mu, entry_shape=entry_shape, float_format=fmt,
                                  name=f"lut{g}",
                                  register=((lambda v, name: self.stage(m, advance, v, name))
                                            if self.float_pipelined else None),
                                  add=((lambda a, b, name: self.staged_add(m, advance, a, b,
                                                                           name, add_stages))
                                       if self.float_pipelined else None),
                                  add_stages=add_stages if self.float_pipelined else 1)
            if not self.mirrored:
                # Full storage: the negative-leading half, 3^mu - 1 - i holds -entry[i].
                negated = [float_neg(e, fmt) if self.is_float else -e for e in entries]
                entries = entries + [None] + negated[::-1]
            tables.append([None if e is None else self.stage(m, advance, e, f"lut{g}_r{i}",
                                                             shape=entry_shape)
                           for i, e in enumerate(entries)])
        decoded = {}
        for k in range(lanes_k):
            for g in range(lanes_l):
                negate, index = decode_group(m, self.lane_weights(weights, k, g * mu, mu),
                                             mu=mu, mirrored=self.mirrored, name=f"w{k}_{g}")
                decoded[k, g] = (None if negate is None else
                                 delay(m, negate, build, name=f"w{k}_{g}_neg_r",
                                       enable=advance),
                                 delay(m, index, build, name=f"w{k}_{g}_idx_r", enable=advance))

        # Stage 2: look up K*L entries, sum each lane's L terms, register the lane sums.
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
            sums.append(self.lane_sum(m, advance, terms, k, negations))
        return sums
