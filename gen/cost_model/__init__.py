"""Analytical cost model of the ternary GEMM units (LUT unit, add/subtract and multiplier
baselines).

The model counts what hw/ternary_lut.py and hw/ternary_baseline.py build, structure by structure,
with the same widths Amaranth gives them: adders (integer ones by width, FP16/BF16 ones by
format), multipliers, multiplexers, the weight-code decoders, table bits and flip-flops; cycles
come from the config (``ceil(N / (L*mu)) * ceil(M / K)``). Each count is priced with a unit area
measured once by synthesizing that primitive alone (gen/cost_model/calibration.py), so the
model's area is in the same NAND2 equivalents as gen.synth's report and can be validated against
it point by point (gen/bench/ternary_dse.py).

Two synthesis effects the model reproduces because they are large:

* Yosys removes logic whose outputs are never used, so every integer sum narrower than Amaranth's
  natural width rule is clipped at the accumulator width (the accumulator truncates, and the bits
  above it feed nothing). Without the clip the LUT unit's negation count (``sum`` of L one-bit
  signals, L+1 bits wide) would be priced as an L-bit adder.
* The RTL negates a mirrored lookup by inverting it and adding the lane's count of negations once
  (``-v = ~v + 1``); that costs an XOR per bit, a popcount and one adder per lane, not a negator
  per lookup.

Every unit is the same pipeline (TernaryUnitBase): operand registers, the architecture's stages,
registered lane sums, accumulators. Datapath flip-flops have an enable (the pipeline's global
advance) and no reset; control flip-flops have both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gen.cost_model.calibration import UnitAreas, unit_areas

__all__ = ["CostEstimate", "estimate", "ARCHITECTURES", "DATA_FLOP_AREA", "CONTROL_FLOP_AREA"]

ARCHITECTURES = ("lut", "addsub", "multiplier")

# Flip-flop areas after Yosys' mapping (gen.synth.FLOP_AREA): enable, no reset (datapath);
# enable and synchronous reset (valid bits, job state).
DATA_FLOP_AREA = 5.5
CONTROL_FLOP_AREA = 6.5
# Two-input gates the model uses directly, from gen.synth.GATE_LIBRARY (per bit).
XOR_AREA = 2.33
AND_AREA = 1.33
MUX2_AREA = 2.33


@dataclass
class CostEstimate:
    """What one core costs: primitive counts, their area (GE) and the cycle formula."""

    architecture: str
    activation: str
    mu: int
    lanes_l: int
    lanes_k: int
    int_adders: int = 0            # two-input integer adders/subtractors (popcount steps included)
    float_adders: int = 0
    multipliers: int = 0
    mux_bits: int = 0              # 2:1 multiplexer equivalents: (ways - 1) * width per selection
    decoders: int = 0              # weight-code ROMs (LUT unit)
    table_bits: int = 0
    data_registers: int = 0        # datapath flip-flops (bits)
    control_registers: int = 0
    area_by_part: dict = field(default_factory=dict)

    @property
    def adders(self) -> int:
        return self.int_adders + self.float_adders

    @property
    def registers(self) -> int:
        return self.data_registers + self.control_registers

    @property
    def area(self) -> float:
        return sum(self.area_by_part.values())

    @property
    def throughput(self) -> int:
        """Ternary products per cycle."""
        return self.lanes_l * self.mu * self.lanes_k

    def cycles(self, reduction: int, columns: int) -> int:
        """Beats for one token of a reduction-by-columns GEMV: each job covers K columns and
        takes ceil(N / (L*mu)) beats (the last one zero-padded); one beat per cycle."""
        beat = self.lanes_l * self.mu
        return -(-reduction // beat) * -(-columns // self.lanes_k)

    def counts(self) -> dict:
        return {"adders": self.adders, "int_adders": self.int_adders,
                "float_adders": self.float_adders, "multipliers": self.multipliers,
                "muxes": self.mux_bits, "decoders": self.decoders,
                "table_bits": self.table_bits, "registers": self.registers}

    def to_dict(self) -> dict:
        return {"architecture": self.architecture, "activation": self.activation, "mu": self.mu,
                "lanes_l": self.lanes_l, "lanes_k": self.lanes_k, **self.counts(),
                "area": round(self.area, 2),
                "area_by_part": {k: round(v, 2) for k, v in self.area_by_part.items()}}


class _Ledger:
    """Accumulates counts and area per part of the design."""

    def __init__(self, est: CostEstimate, units: UnitAreas, fmt: str, clip: int | None):
        self.est, self.units, self.fmt, self.clip = est, units, fmt, clip

    def _charge(self, part: str, area: float) -> None:
        self.est.area_by_part[part] = self.est.area_by_part.get(part, 0.0) + area

    def int_add(self, part: str, width: int, count: int = 1) -> None:
        """Adders whose wider operand has ``width`` bits (clipped at the accumulator)."""
        width = min(width, self.clip) if self.clip else width
        self.est.int_adders += count
        self._charge(part, count * self.units.add(width))

    def increment(self, part: str, width: int, count: int = 1) -> None:
        width = min(width, self.clip) if self.clip else width
        self.est.int_adders += count
        self._charge(part, count * self.units.inc(width))

    def float_add(self, part: str, count: int = 1) -> None:
        self.est.float_adders += count
        self._charge(part, count * self.units.fadd(self.fmt))

    def float_add_shared(self, part: str, count: int = 1) -> None:
        """Float adders whose operands are sign-selected copies shared with other adders: half
        an add/subtract pair (calibration ``faddpair``), the probe of that sharing."""
        self.est.float_adders += count
        self._charge(part, count * self.units.fadd_pair(self.fmt) / 2)

    def add(self, part: str, width: int, is_float: bool, count: int = 1) -> None:
        if is_float:
            self.float_add(part, count)
        else:
            self.int_add(part, width, count)

    def lookup(self, part: str, ways: int, width: int, count: int = 1) -> None:
        self.est.mux_bits += count * (ways - 1) * width
        self._charge(part, count * self.units.lookup(ways, width))

    def mux2(self, part: str, width: int, count: int = 1) -> None:
        self.est.mux_bits += count * width
        self._charge(part, count * width * MUX2_AREA)

    def narrow_add(self, part: str, width: int, narrow: int) -> None:
        """A ``width``-bit signed value plus a zero-extended ``narrow``-bit unsigned one: full
        adder cells for the low bits, a carry increment above them."""
        width = min(width, self.clip) if self.clip else width
        narrow = min(narrow, width)
        self.est.int_adders += 1
        self._charge(part, self.units.add(narrow) + self.units.inc(width)
                     - self.units.inc(narrow))

    def gates(self, part: str, area: float) -> None:
        self._charge(part, area)

    def registers(self, part: str, bits: int, control: bool = False) -> None:
        if control:
            self.est.control_registers += bits
            self._charge(part, bits * CONTROL_FLOP_AREA)
        else:
            self.est.data_registers += bits
            self._charge(part, bits * DATA_FLOP_AREA)


def _table_entry_widths(mu: int, w: int, ew: int, is_float: bool) -> list[int]:
    """Natural width of each positive-leading entry in build order: a copied activation has w
    bits, a sum one more than its wider operand (Amaranth), clipped at the declared ew."""
    from software_model.ternary import table_build_plan

    if is_float:
        return [w] * len(table_build_plan(mu))
    widths = {}
    for step in table_build_plan(mu):
        if step.operand is None:
            widths[step.target] = w
        else:
            widths[step.target] = min(ew, max(w, widths[step.operand]) + 1)
    return [widths[t] for t in sorted(widths)]


def _tree_widths(width: int, terms: int) -> tuple[list[int], int]:
    """Operand widths of each adder of the pairwise tree (software_model.ternary order) over
    ``terms`` signed values of ``width`` bits, and the sum's width (Amaranth: max + 1)."""
    from software_model.ternary import pairwise_sum_order

    widths = [width] * terms
    adders = []
    for level in pairwise_sum_order(terms):
        nxt = []
        for i, j in level:
            if j is None:
                nxt.append(widths[i])
            else:
                adders.append(max(widths[i], widths[j]))
                nxt.append(max(widths[i], widths[j]) + 1)
        widths = nxt
    return adders, widths[0]


def _lane_tree(ledger: _Ledger, terms: int, width: int, is_float: bool,
               negations: int, shared_operands: bool = False) -> int:
    """One lane's adder tree (+ the negation count for inverted terms); returns the sum width.

    ``shared_operands``: the add/subtract unit's K lanes add sign-selected copies of the same
    activations; ABC shares the float adders' exponent comparison and alignment across the
    lanes, so a float adder there costs half an add/subtract pair (synthesized at 240-960
    products/cycle: 873 GE per bf16 adder and 1033 per fp16 one against 1050 and 1137 alone;
    half a pair is 876 and 1059). LUT lookups and products are per lane: isolated adders.
    """
    if is_float:
        if shared_operands:
            ledger.float_add_shared("trees", terms - 1)
        else:
            ledger.float_add("trees", terms - 1)
        return width
    adders, total = _tree_widths(width, terms)
    for w in adders:
        ledger.int_add("trees", w)
    if negations:
        # sum() of one-bit values: 0 + n0 folds away, each later step is a counter increment.
        # Amaranth widens every step by a bit (n + 1 bits after n flags), but after j flags the
        # count is at most j: the bits above j.bit_length() are constant zero and synthesis
        # (ABC's SAT sweeping) removes them, so step j costs a j.bit_length()-bit increment. Pricing
        # the natural widths made the add/subtract unit 15-29% high at 240-960 products/cycle.
        for j in range(1, negations):
            ledger.increment("negation count", j.bit_length())
        pop_bits = negations.bit_length()
        natural = negations + 1
        # total (signed) + pop (unsigned, one more bit as signed): max + 1 (register widths keep
        # Amaranth's natural rule; the adder is priced at the bits that carry information).
        ledger.narrow_add("negation count", max(total, pop_bits + 1), pop_bits)
        total = max(total, natural + 1) + 1
    return total


def estimate(config, units: UnitAreas | None = None) -> CostEstimate:
    """Cost of one core built from ``config`` (a gen.config.ternary_lut.TernaryLUTConfig)."""
    from software_model.ternary import half_entries

    units = units if units is not None else unit_areas()
    arch = config.architecture
    if arch not in ARCHITECTURES:
        raise ValueError(f"Architecture must be one of {', '.join(ARCHITECTURES)}, not {arch!r}")
    mu, lanes_l, lanes_k = config.mu, config.lanes_l, config.lanes_k
    is_float = config.is_float
    w = config.activation_width
    acc_w = config.accumulator_width
    beat = lanes_l * mu
    est = CostEstimate(arch, config.activation, mu, lanes_l, lanes_k)
    ledger = _Ledger(est, units, config.activation if is_float else "", None if is_float else acc_w)

    ledger.registers("operand registers", beat * w + lanes_k * beat * config.weight_width)
    stages = {"lut": 3, "addsub": 2, "multiplier": 3}[arch]
    # valid/first/last per stage, the job flag, results.valid; plus the handshake gates.
    ledger.registers("control", 3 * stages + 2, control=True)

    if arch == "lut":
        half = half_entries(mu)
        ew = config.table_entry_width
        mirrored = config.mirrored
        # Table build: one adder per entry that is not a single activation (H - mu per table).
        entry_bits = _table_entry_widths(mu, w, ew, is_float)
        if is_float:
            # Every table adder has a twin with the same operands, one adding, one subtracting
            # (a_i + s and a_i - s): the pair shares its compare and alignment logic.
            pairs = config.table_adders // 2
            est.float_adders += lanes_l * config.table_adders
            ledger.gates("tables", lanes_l * (pairs * units.fadd_pair(config.activation)
                                              + (config.table_adders % 2)
                                              * units.fadd(config.activation)))
        else:
            # Priced as a whole: ABC shares logic between each entry's add/subtract pair and
            # across the chained sums, so a table costs less than its adders one by one.
            est.int_adders += lanes_l * config.table_adders
            ledger.gates("tables", lanes_l * units.table_build(mu, w))
        if not mirrored and not is_float:
            # Full storage also holds the negated half (a float negation is a free sign flip).
            ledger.gates("tables", lanes_l * sum(units.minus(b) for b in entry_bits))
        # Entry registers hold each entry at its natural width: Yosys merges the flip-flops of a
        # sign extension (identical inputs), so a copied activation costs w bits, not ew.
        stored = sum(entry_bits)
        if not mirrored:
            # The negated half: a float negation differs only in the sign, so Yosys merges the
            # other flip-flops with the positive entry's; an integer negation is all new bits.
            stored += half if is_float else sum(entry_bits)
        est.table_bits = lanes_l * stored
        ledger.registers("table registers", est.table_bits)
        # Weight decoders and their registered (sign, index) outputs, one per (lane, group).
        est.decoders = lanes_k * lanes_l
        ledger.gates("decoders", est.decoders * units.decode(mu, mirrored))
        index_bits = (half.bit_length() + 1) if mirrored else (3 ** mu - 1).bit_length()
        ledger.registers("decoded weights", est.decoders * index_bits)
        # Lookups: (H + 1)-way (the zero entry) or 3^mu-way selections of table entries.
        ways = half + 1 if mirrored else 3 ** mu
        # The lookup's unit area includes inverting every bit (the integer negation, -v = ~v + 1
        # with the +1 counted once per lane below); a float negation flips only the sign, and
        # a full table never negates.
        ledger.lookup("lookups", ways, ew, count=lanes_k * lanes_l)
        if is_float or not mirrored:
            ledger.gates("lookups", -lanes_k * lanes_l * (ew - int(mirrored)) * XOR_AREA)
        else:
            # The integer inversion (~v) feeds an adder (the lane tree, or the negation-count add
            # when L = 1), and ABC folds an inverted adder input into the adder's own XORs: in
            # place it costs nothing. Charging an XOR per bit made the LUT unit 6-9% high at
            # 60-960 products/cycle (synthesized per-lane area, gen/cost_model/scaled.py).
            ledger.gates("lookups", -lanes_k * lanes_l * ew * XOR_AREA)
        negations = lanes_l if (mirrored and not is_float) else 0
        sum_w = _lane_tree(ledger, lanes_l, ew, is_float, negations)
        for _ in range(lanes_k - 1):
            _lane_tree(ledger, lanes_l, ew, is_float, negations)
    elif arch == "addsub":
        # Per term: select a, ~a or 0 (AND + XOR per bit; a sign flip and ANDs for floats).
        term_area = (w * AND_AREA + XOR_AREA) if is_float else (w * (AND_AREA + XOR_AREA)
                                                                 + AND_AREA)
        ledger.gates("selects", lanes_k * beat * term_area)
        negations = 0 if is_float else beat
        shared = lanes_k > 1
        sum_w = _lane_tree(ledger, beat, w, is_float, negations, shared)
        for _ in range(lanes_k - 1):
            _lane_tree(ledger, beat, w, is_float, negations, shared)
    else:
        est.multipliers = lanes_k * beat
        if is_float:
            ledger.gates("multipliers", est.multipliers * units.fmul(config.activation))
        else:
            ledger.gates("multipliers", est.multipliers * units.mul(w))
        product_w = w if is_float else 2 * w
        ledger.registers("product registers",
                         est.multipliers * (product_w if is_float else min(product_w, acc_w)))
        sum_w = _lane_tree(ledger, beat, product_w, is_float, 0)
        for _ in range(lanes_k - 1):
            _lane_tree(ledger, beat, product_w, is_float, 0)

    # Registered lane sums (bits above the accumulator feed nothing and are removed), then the
    # accumulators: one add and a load-or-add multiplexer per lane.
    lane_bits = w if is_float else min(sum_w, acc_w)
    ledger.registers("lane sum registers", lanes_k * lane_bits)
    ledger.add("accumulators", acc_w, is_float, count=lanes_k)
    ledger.mux2("accumulators", acc_w, count=lanes_k)
    ledger.registers("accumulators", lanes_k * acc_w)
    return est
