"""Configs of the MXInt datapaths (hw/mxint_*.py): cast, block dot product, accumulator, linear.

The MXInt format itself (software_model.mxint.MXIntFormat) is documented in docs/mxint.md; every
config here that carries MXInt operands names its element width, block size, exponent width,
exponent encoding and rounding explicitly, and exposes them as one ``fmt`` property so the RTL,
the golden model and the testbench share a single source of truth.
"""
from dataclasses import dataclass
from typing import ClassVar, Optional

from gen.schema import ConfigBase, Problem, param

__all__ = ["MXIntCastConfig", "MXIntDotConfig", "MXIntAccumulatorConfig", "MXIntLinearConfig"]

#: the MXInt rounding and exponent-encoding choices every MXInt config offers
ROUNDINGS = ("half_even", "half_away")
ENCODINGS = ("twos_complement", "biased")
_ROUNDINGS, _ENCODINGS = ROUNDINGS, ENCODINGS


def block_format(cfg, width=None, block_size=None):
    """The MXIntFormat of a config's ``block_size``, ``exponent_width``, ``rounding`` and
    ``exponent_encoding`` at element ``width`` (default: its ``element_width``)."""
    from software_model.mxint import MXIntFormat
    return MXIntFormat(width or cfg.element_width, block_size or cfg.block_size,
                       cfg.exponent_width, cfg.rounding, cfg.exponent_encoding)


def _fmt(cfg, block_size=None):
    return block_format(cfg, block_size=block_size)


@dataclass(frozen=True)
class MXIntCastConfig(ConfigBase):
    """Cast a block of FP16/BF16/FP32 values to one MXInt block (shared exponent + signed
    mantissas), one block per cycle, latency 5 (docs/mxint.md)."""

    kind: ClassVar[str] = "mxint_cast"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_cast")
    input_format: str = param("Format of the incoming values (subnormals exact; NaN -> 0, "
                              "Inf -> 2^(Emax+1), see docs/mxint.md)", default="fp16",
                              choices=("fp16", "bf16", "fp32"))
    block_size: int = param("Elements sharing one exponent", default=32, min=1, max=64)
    element_width: int = param("Mantissa bits, sign included", default=8, min=2, max=16)
    exponent_width: int = param("Shared exponent bits", default=8, min=2, max=10)
    exponent_encoding: str = param("Shared exponent field encoding", default="twos_complement",
                                   choices=_ENCODINGS)
    rounding: str = param("Mantissa rounding (on the magnitude)", default="half_even",
                          choices=_ROUNDINGS)
    pipelined: bool = param("Pipelining knob: five stages, each at most a max tree, a shifter or "
                            "a rounding add deep (latency 5); false: two stages, decode to "
                            "shared exponent and align to round (latency 2)", default=True)

    @property
    def fmt(self):
        return _fmt(self)

    @property
    def latency(self) -> int:
        """Cycles from an input handshake to its block being valid (no backpressure)."""
        from hw.mxint_cast import MXIntCast
        return MXIntCast.LATENCY[self.pipelined]

    def parameters(self) -> dict:
        return {"input_format": self.input_format, "fmt": self.fmt, "pipelined": self.pipelined}

    def elaborate(self):
        from hw.mxint_cast import MXIntCast
        return MXIntCast(**self.parameters())


@dataclass(frozen=True)
class MXIntDotConfig(ConfigBase):
    """Exact dot product of two MXInt blocks: block_size multipliers and an adder tree; the
    result is the exact integer sum and the decoded exponent sum, one pair per cycle."""

    kind: ClassVar[str] = "mxint_dot"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_dot")
    block_size: int = param("Elements per block (products summed per result)", default=32,
                            min=1, max=64)
    element_width: int = param("Mantissa bits of both operands, sign included", default=8,
                               min=2, max=16)
    exponent_width: int = param("Shared exponent bits of both operands", default=8, min=2,
                                max=10)
    exponent_encoding: str = param("Shared exponent field encoding", default="twos_complement",
                                   choices=_ENCODINGS)
    rounding: str = param("Rounding of the operands' format (unused by the exact dot product; "
                          "kept so the format is complete)", default="half_even",
                          choices=_ROUNDINGS)
    tree_stages: int = param("Pipelining knob: register stages the adder tree of block_size "
                             "products is cut into (1 .. ceil(log2 block_size), at least 1); "
                             "latency 1 + tree_stages. 1 keeps the whole tree in one stage",
                             default=1, min=1, max=6)

    def check(self):
        most = max(1, self.tree_levels)
        if self.tree_stages > most:
            yield Problem("tree_stages", self.tree_stages,
                          f"1 .. {most} (the adder tree of {self.block_size} products has "
                          f"{self.tree_levels} levels)")

    @property
    def fmt(self):
        return _fmt(self)

    @property
    def tree_levels(self) -> int:
        """Levels of the pairwise adder tree: ceil(log2 block_size)."""
        return max(0, (self.block_size - 1).bit_length())

    @property
    def latency(self) -> int:
        """Cycles from an operand pair to its result: the product register, then the tree's
        stages (the last one the result register)."""
        return 1 + self.tree_stages

    @property
    def total_width(self) -> int:
        """Exact sum width: full-range w x w products (2w bits) plus ceil(log2 k) carry bits."""
        return 2 * self.element_width + max(0, (self.block_size - 1).bit_length())

    @property
    def result_exponent_width(self) -> int:
        """Decoded ea + eb always fits ew + 2 signed bits (biased codes reach 2^ew)."""
        return self.exponent_width + 2

    def parameters(self) -> dict:
        return {"fmt": self.fmt, "tree_stages": self.tree_stages}

    def elaborate(self):
        from hw.mxint_dot import MXIntDotProduct
        return MXIntDotProduct(**self.parameters())


@dataclass(frozen=True)
class MXIntAccumulatorConfig(ConfigBase):
    """Sum a stream of terms whose exponents differ: exact (wide fixed point, nothing lost) or
    shift (acc_width bits with a running exponent, lossy), one term per cycle."""

    kind: ClassVar[str] = "mxint_accumulator"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_accumulator")
    lanes: int = param("Values per term sharing the term's exponent (1 = scalar partial sums)",
                       default=1, min=1, max=64)
    input_width: int = param("Signed bits of each incoming value", default=21, min=2, max=64)
    exponent_width: int = param("Signed (two's complement) bits of each term's exponent",
                                default=6, min=2, max=9)
    mode: str = param("exact: wide fixed-point sum, no loss; shift: acc_width-bit accumulator "
                      "aligned by arithmetic right shift (lossy)", default="exact",
                      choices=("exact", "shift"))
    acc_width: Optional[int] = param("Accumulator bits in shift mode (null in exact mode)",
                                     default=None, min=2, max=128)
    max_terms: int = param("Most terms one sum may have (sets the exact mode's carry bits)",
                           default=1024, min=1, max=1 << 20)
    segment_bits: int = param("Pipelining knob (exact mode): bits per carry segment of the wide "
                              "accumulator (each segment one ripple, carries wait in registers); "
                              "smaller is shallower, >= the sum width leaves one ripple as wide "
                              "as the sum. Shift mode's one-term loop has no knob (it is laid out "
                              "for depth: prefix subtractors and adders)", default=16, min=2,
                              max=512)

    def check(self):
        if self.mode == "shift":
            if self.acc_width is None:
                yield Problem("acc_width", None, "an integer >= input_width "
                              f"({self.input_width}) in shift mode")
            elif self.acc_width < self.input_width:
                yield Problem("acc_width", self.acc_width, "an integer >= input_width "
                              f"({self.input_width}) in shift mode")
        elif self.acc_width is not None:
            yield Problem("acc_width", self.acc_width, "null in exact mode (its width follows "
                          "from input_width, exponent_width and max_terms)")
        if self.mode == "exact" and self.sum_width > 512:
            yield Problem("exponent_width", self.exponent_width,
                          f"at most {self.exponent_width - 1} here: the exact sum would be "
                          f"{self.sum_width} bits (limit 512)")

    @property
    def exponent_min(self) -> int:
        return -(1 << (self.exponent_width - 1))

    @property
    def sum_width(self) -> int:
        """Output value width: exact = input + full exponent span + carry bits; shift = acc."""
        if self.mode == "shift":
            return self.acc_width
        span = (1 << self.exponent_width) - 1
        return self.input_width + span + max(0, (self.max_terms - 1).bit_length())

    @property
    def latency(self) -> int:
        """Cycles from a sum's last term to the sum: 4 in exact mode, 1 in shift mode."""
        return 4 if self.mode == "exact" else 1

    def parameters(self) -> dict:
        return {"lanes": self.lanes, "input_width": self.input_width,
                "exponent_width": self.exponent_width, "mode": self.mode,
                "acc_width": self.acc_width, "max_terms": self.max_terms,
                "segment_bits": self.segment_bits}

    def elaborate(self):
        from hw.mxint_accumulator import MXIntAccumulator
        return MXIntAccumulator(**self.parameters())


@dataclass(frozen=True)
class MXIntLinearConfig(ConfigBase):
    """MXInt linear layer y = x W^T + b: n_tile exact block dot products per beat, exact
    accumulation over K, one rounding to FP32 or to an MXInt block per tile of outputs."""

    kind: ClassVar[str] = "mxint_linear"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_linear")
    in_features: int = param("K: reduction length", default=64, min=1, max=4096)
    out_features: int = param("N: outputs per row", default=16, min=1, max=4096)
    n_tile: int = param("Outputs computed in parallel (N is processed in N/n_tile passes)",
                        default=4, min=1, max=64)
    block_size: int = param("Elements per MXInt block along K", default=32, min=1, max=64)
    element_width: int = param("Mantissa bits of x, W and b, sign included", default=8, min=2,
                               max=16)
    exponent_width: int = param("Shared exponent bits", default=8, min=2, max=8)
    exponent_encoding: str = param("Shared exponent field encoding", default="twos_complement",
                                   choices=_ENCODINGS)
    rounding: str = param("Rounding of the MXInt output", default="half_even",
                          choices=_ROUNDINGS)
    output_format: str = param("fp32 (one rounding, half-even) or mxint (the n_tile outputs "
                               "form one block)", default="fp32", choices=("fp32", "mxint"))
    segment_bits: int = param("Pipelining knob: bits per carry segment of the exact accumulator "
                              "and of the rounding stage's accumulator-wide adds (each segment "
                              "is one ripple, carries wait in registers); smaller is shallower, "
                              "a value >= the accumulator width leaves each add one ripple as "
                              "wide as the accumulator", default=16, min=2, max=512)

    def check(self):
        if self.in_features % self.block_size:
            yield Problem("in_features", self.in_features,
                          f"a multiple of block_size ({self.block_size})")
        if self.out_features % self.n_tile:
            yield Problem("out_features", self.out_features,
                          f"a multiple of n_tile ({self.n_tile})")
        if self.acc_width > 512:
            yield Problem("exponent_width", self.exponent_width,
                          f"a smaller value: the exact accumulator would be {self.acc_width} "
                          "bits (limit 512)")

    @property
    def fmt(self):
        return _fmt(self)

    @property
    def out_fmt(self):
        return _fmt(self, block_size=self.n_tile)

    @property
    def k_blocks(self) -> int:
        return max(1, self.in_features // self.block_size)

    @property
    def acc_lsb_exponent(self) -> int:
        """Weight 2^this of the exact accumulator's LSB: the smallest product weight."""
        f = self.fmt
        return 2 * f.emin - 2 * f.fraction_bits

    @property
    def acc_width(self) -> int:
        """Signed bits holding any sum of K/k dot products plus the bias exactly."""
        f = self.fmt
        span = f.emax - f.emin
        dot_bits = 2 * f.element_width - 1 + max(0, (self.block_size - 1).bit_length()) \
            + 2 * span
        bias_bits = f.element_width + self.bias_shift_max
        return max(dot_bits, bias_bits) + self.k_blocks.bit_length() + 1

    @property
    def bias_shift_max(self) -> int:
        """Largest left shift of a bias mantissa onto the accumulator grid."""
        f = self.fmt
        return f.emax - 2 * f.emin + f.fraction_bits

    @property
    def latency(self) -> int:
        """Cycles from a tile's last beat to its results."""
        from hw.mxint_linear import MXIntLinear
        return MXIntLinear.latency

    def parameters(self) -> dict:
        return {"in_features": self.in_features, "n_tile": self.n_tile, "fmt": self.fmt,
                "output_format": self.output_format, "segment_bits": self.segment_bits}

    def elaborate(self):
        from hw.mxint_linear import MXIntLinear
        return MXIntLinear(**self.parameters())
