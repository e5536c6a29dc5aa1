"""Config for the ternary (1.58-bit weight) GEMM units: the LUT unit and its two baselines.

One dataclass serves all three architectures so they share presets, the export, the cost model
and the co-simulation; see docs/ternary.md for the datapath each field shapes.
"""
from dataclasses import dataclass
from typing import ClassVar, Optional

from gen.schema import ConfigBase, Problem, param
from software_model.ternary import (exact_accumulator_width, half_entries, parse_activation,
                                    table_adder_count)

__all__ = ["TernaryLUTConfig", "DEFAULT_FLOAT_ACCUMULATOR_STAGES", "DEFAULT_FLOAT_ADD_STAGES"]

#: ``float_add_stages`` of fp16/bf16 units when the config leaves it null: every float add of
#: the beat path in four stages (three registers inside it, as FloatAdderUnit's default)
DEFAULT_FLOAT_ADD_STAGES = 4

#: ``accumulator_stages`` of fp16/bf16 units when the config leaves it null: three registers
#: inside the accumulator's add plus the partial sum, so no stage is deeper than about 35 gate
#: levels (the accumulator loop was a whole float add, 88-94)
DEFAULT_FLOAT_ACCUMULATOR_STAGES = 4


def _parse_activation(value):
    return parse_activation(value).name        # keep the YAML string; properties derive the rest


@dataclass(frozen=True)
class TernaryLUTConfig(ConfigBase):
    """GEMV unit for ternary (BitNet b1.58) weights: lut builds shared signed-sum tables of mu
    activations and looks them up per weight group; addsub and multiplier are the baselines at
    equal throughput (L*mu*K products per cycle), for int2..int16, FP16 or BF16 activations."""

    kind: ClassVar[str] = "ternary_lut"

    name: str = param("Config name (Verilog top and output folder)", default="ternary_lut")
    architecture: str = param(
        "lut: shared signed-sum tables + lookups; addsub: ternary select-and-add of every "
        "activation; multiplier: L*mu*K full-width multipliers on dequantised weights",
        default="lut", choices=("lut", "addsub", "multiplier"))
    mu: int = param("Weights per LUT group (table of (3^mu-1)/2 mirrored entries)",
                    default=3, min=1, max=7)
    lanes_l: int = param("L: LUTs (weight groups) in parallel along the reduction; one beat "
                         "carries L*mu activations", default=4, min=1, max=64)
    lanes_k: int = param("K: output lanes (columns) served per cycle", default=4, min=1, max=64)
    activation: str = param("Activation type: int<w> (w 2..16, two's complement), fp16 or bf16",
                            default="int8", parse=_parse_activation,
                            allowed="int2 .. int16, fp16 or bf16")
    acc_width: Optional[int] = param(
        "Integer accumulator bits (wraps modulo 2^acc_width); null = exact for max_reduction. "
        "Must be null for fp16/bf16, which accumulate in the activation format",
        default=None, min=2, max=64)
    max_reduction: int = param("Longest reduction (activations per output) a job may have; sets "
                               "the exact integer accumulator width", default=4096, min=1,
                               max=1 << 20)
    mirrored: bool = param("Store only the (3^mu-1)/2 positive-leading table entries and negate "
                           "on lookup (lut only); false stores all 3^mu-1 signed entries",
                           default=True)
    pipeline_float_adds: bool = param(
        "Pipelining knob (fp16/bf16 only): every float add of the table build and lane trees "
        "is cut into float_add_stages stages (registers inside it and one after it); false: "
        "one stage for the table build and one for the lookups and trees",
        default=True)
    float_add_stages: Optional[int] = param(
        "Pipelining knob (fp16/bf16 with pipeline_float_adds): stages per float add of the "
        "table build and lane trees, S - 1 registers inside the add (after align/add, after "
        "the normalisation plan, after the compare and swap) and one after it; 3 or more also "
        "gives the multiplier baseline's float multiplies two inner registers. null: 4 for "
        "fp16/bf16 (each stage about 35 gate levels or less; 2 was the earlier layout, about "
        "45-54), must be null for integer activations",
        default=None, min=1, max=4)
    accumulator_stages: Optional[int] = param(
        "Pipelining knob of the accumulation (fp16/bf16 only): S registers cut the "
        "accumulator's float add, a loop, which then carries S interleaved partial sums (beat t "
        "of a job adds to partial t mod S, each starting at -0), summed by a pairwise tree after "
        "the job's last beat; latency + S - 1 + S * ceil(log2 S). 1: one running sum, a whole "
        "float add deep. null: 4 for fp16/bf16 (the deepest stage about 35 gate levels), 1 for "
        "integers. Must be null or 1 for integer activations",
        default=None, min=1, max=4)

    # -- derived facts (read by the cost model) --------------------------------------------------

    @property
    def activation_type(self):
        return parse_activation(self.activation)

    @property
    def is_float(self):
        return self.activation_type.is_float

    @property
    def activation_width(self):
        return self.activation_type.width

    @property
    def beat_reduction(self):
        """Activations consumed per beat (reduction elements per cycle)."""
        return self.lanes_l * self.mu

    @property
    def table_entries(self):
        """Stored entries per table (the all-zero group is a constant, never stored)."""
        return half_entries(self.mu) if self.mirrored else 2 * half_entries(self.mu)

    @property
    def table_adders(self):
        """Two-input adders building one table, partial sums shared (H - mu)."""
        return table_adder_count(self.mu)

    @property
    def table_entry_width(self):
        """Bits per table entry: exact signed sum of mu int<w> values, or the float width."""
        if self.is_float:
            return self.activation_width
        return _signed_bits(self.mu << (self.activation_width - 1))

    @property
    def accumulator_width(self):
        """Result bits per lane (float: the activation width)."""
        if self.is_float:
            return self.activation_width
        if self.acc_width is not None:
            return self.acc_width
        return self.exact_accumulator_width

    @property
    def exact_accumulator_width(self):
        return exact_accumulator_width(self.activation, self.architecture,
                                       max(self.max_reduction, self.beat_reduction))

    @property
    def weight_width(self):
        """Bits per weight on the operand port: 2-bit codes, or the activation type (multiplier)."""
        return self.activation_width if self.architecture == "multiplier" else 2

    @property
    def accumulators(self):
        """Interleaved partial sums per lane (the resolved ``accumulator_stages``)."""
        if self.accumulator_stages is not None:
            return self.accumulator_stages
        return DEFAULT_FLOAT_ACCUMULATOR_STAGES if self.is_float else 1

    @property
    def latency(self):
        """Cycles from the handshake of a job's last beat to its results being valid."""
        from hw.ternary_lut import accumulator_extra_stages
        return 1 + self._unit_class().stages_for(
            mu=self.mu, lanes_l=self.lanes_l, pipelined=self.is_float and self.pipeline_float_adds,
            add_stages=self.add_stages) + accumulator_extra_stages(self.accumulators)

    @property
    def add_stages(self):
        """Stages per float add of the beat path (the resolved ``float_add_stages``)."""
        if self.float_add_stages is not None:
            return self.float_add_stages
        return DEFAULT_FLOAT_ADD_STAGES if self.is_float else 2

    def _unit_class(self):
        if self.architecture == "lut":
            from hw.ternary_lut import TernaryLUTUnit
            return TernaryLUTUnit
        from hw.ternary_baseline import TernaryAddSubUnit, TernaryMultiplierUnit
        return TernaryAddSubUnit if self.architecture == "addsub" else TernaryMultiplierUnit

    def cycles(self, reduction, columns):
        """Beats for one token: ceil(N / (L*mu)) * ceil(M / K)."""
        return -(-reduction // self.beat_reduction) * -(-columns // self.lanes_k)

    # -- validation ------------------------------------------------------------------------------

    def check(self):
        if self.is_float and self.acc_width is not None:
            yield Problem("acc_width", self.acc_width,
                          f"null for {self.activation} activations (they accumulate in "
                          f"{self.activation})")
        if not self.is_float and self.acc_width is not None:
            needed = self._beat_sum_width()
            if self.acc_width < needed:
                yield Problem("acc_width", self.acc_width,
                              f"at least {needed} (one beat's exact sum for {self.activation}, "
                              f"L={self.lanes_l}, mu={self.mu}), or null")
        if not self.mirrored and self.architecture != "lut":
            yield Problem("mirrored", self.mirrored,
                          f"true for architecture {self.architecture!r} (it has no tables)")
        if not self.is_float and self.float_add_stages is not None:
            yield Problem("float_add_stages", self.float_add_stages,
                          f"null for {self.activation} activations (integer adds are not cut)")
        if not self.is_float and self.accumulator_stages not in (None, 1):
            yield Problem("accumulator_stages", self.accumulator_stages,
                          f"null or 1 for {self.activation} activations (an integer add is one "
                          "adder deep)")
        if self.architecture == "lut" and self.mu < 2:
            yield Problem("mu", self.mu, "2 .. 7 for architecture 'lut' (mu=1 has no table)")

    def _beat_sum_width(self):
        width = self.activation_width
        terms = self.beat_reduction
        if self.architecture == "multiplier":
            return _signed_bits(terms << (2 * width - 2))
        return _signed_bits(terms << (width - 1))

    def parameters(self) -> dict:
        """Keyword arguments of the unit of this architecture (the LUT unit alone has
        ``mirrored``; float activations accumulate in their format, so no ``acc_width``)."""
        out = {"mu": self.mu, "lanes_l": self.lanes_l, "lanes_k": self.lanes_k,
               "activation": self.activation,
               "acc_width": None if self.is_float else self.accumulator_width,
               "pipeline_float_adds": self.pipeline_float_adds}
        if self.is_float:       # integer units keep their parameters (and Verilog) as they were
            out["float_add_stages"] = self.add_stages
            out["accumulator_stages"] = self.accumulators
        if self.architecture == "lut":
            out["mirrored"] = self.mirrored
        return out

    def elaborate(self):
        return self._unit_class()(**self.parameters())


def _signed_bits(magnitude):
    """Two's-complement bits holding every value in [-magnitude, magnitude]."""
    return magnitude.bit_length() + 1
