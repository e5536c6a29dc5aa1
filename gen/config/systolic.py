"""Config of the integer systolic array generator (kind ``systolic_array``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from gen.schema import ConfigBase, Problem, param, parse_int_type

__all__ = ["SystolicArrayConfig", "SignedOperands", "DATAFLOWS", "OVERFLOW_MODES",
           "operand_type"]

DATAFLOWS = ("output_stationary", "weight_stationary")
OVERFLOW_MODES = ("wrap", "saturate")


def operand_type(text):
    width = parse_int_type(text)
    if not 2 <= width <= 16:
        raise ValueError("a signed integer type int2 .. int16")
    return width


class SignedOperands:
    """Mixin for configs with ``a_type``/``b_type`` fields (``int2`` .. ``int16`` in YAML, held as
    widths): parses Python-given strings, exposes the widths, writes the types back as text."""

    def __post_init__(self):
        # Accept unparsed types when built from Python (defaults, tests, sweeps).
        for key in ("a_type", "b_type"):
            value = getattr(self, key)
            if isinstance(value, str):
                object.__setattr__(self, key, operand_type(value))

    @property
    def a_width(self) -> int:
        return self.a_type

    @property
    def b_width(self) -> int:
        return self.b_type

    @property
    def product_width(self) -> int:
        return self.a_width + self.b_width

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["a_type"] = f"int{self.a_type}"
        out["b_type"] = f"int{self.b_type}"
        return out


@dataclass(frozen=True)
class SystolicArrayConfig(SignedOperands, ConfigBase):
    """A rows x cols array of multiply-accumulate PEs.

    ``output_stationary``: a job computes C[rows x cols] = A[rows x K] . B[K x cols]; every PE keeps
    one element of C while A flows right and B flows down, K <= ``max_k``.
    ``weight_stationary``: a job loads B[K x cols] (K <= rows) into the PEs, then streams M rows of A
    through; partial sums flow down and one row of C = A[m] . B leaves per input row.
    """

    kind: ClassVar[str] = "systolic_array"

    name: str = param("Name of the design: Verilog top and output folder (default: file stem)",
                      default="systolic_array")
    rows: int = param("PE rows", default=4, min=1, max=64)
    cols: int = param("PE columns", default=4, min=1, max=64)
    dataflow: str = param("What stays in the PEs: C (output_stationary) or B (weight_stationary)",
                          default="output_stationary", choices=DATAFLOWS)
    a_type: int = param("Signed type of A (activations), e.g. int8", default="int8",
                        parse=operand_type, allowed="a signed integer type int2 .. int16")
    b_type: int = param("Signed type of B (weights), e.g. int8", default="int8",
                        parse=operand_type, allowed="a signed integer type int2 .. int16")
    max_k: int = param("Longest reduction (K) one job may have", default=256, min=1, max=1 << 20)
    acc_width: Optional[int] = param(
        "Accumulator bits; null = exact for max_k (a + b + floor(log2(max_k)))",
        default=None, min=2, max=128)
    overflow: str = param("What the accumulator does when a sum leaves its range",
                          default="wrap", choices=OVERFLOW_MODES)
    result_buffer: Optional[int] = param(
        "Rows of C the output buffer holds (credit-based, never overflows); null = default "
        "(2*rows output-stationary, rows+cols+4 weight-stationary)", default=None, min=1, max=4096)
    pe_product_register: bool = param(
        "Register each PE's product before its accumulate (multiply and add in separate "
        "stages: one cycle more latency, the same rate)", default=False, omit_default=True)

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def exact_acc_width(self) -> int:
        # |sum| <= max_k * 2^(a+b-2) (most-negative times most-negative), so a+b+floor(log2 max_k)
        # signed bits hold every sum of max_k products.
        return self.product_width + (self.max_k.bit_length() - 1)

    @property
    def accumulator_width(self) -> int:
        return self.acc_width if self.acc_width is not None else self.exact_acc_width

    @property
    def result_buffer_rows(self) -> int:
        if self.result_buffer is not None:
            return self.result_buffer
        if self.dataflow == "output_stationary":
            return 2 * self.rows
        return self.rows + self.cols + 4

    # -- validation ------------------------------------------------------------------------------

    def check(self):
        if self.acc_width is not None and self.acc_width < self.product_width:
            yield Problem("acc_width", self.acc_width,
                          f"at least {self.product_width} (the {self.a_width}x{self.b_width}-bit "
                          "product width), or null for exact")
        if self.dataflow == "weight_stationary" and self.max_k > self.rows:
            yield Problem("max_k", self.max_k,
                          f"at most rows = {self.rows} for weight_stationary (one B tile of K x "
                          "cols is held in the array; tile longer reductions)")
        if self.dataflow == "output_stationary" and self.result_buffer is not None \
                and self.result_buffer < self.rows:
            yield Problem("result_buffer", self.result_buffer,
                          f"at least rows = {self.rows} (one job's results) for output_stationary")

    def parameters(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "a_width": self.a_width,
                "b_width": self.b_width, "acc_width": self.accumulator_width,
                "overflow": self.overflow, "result_depth": self.result_buffer_rows,
                "product_register": self.pe_product_register}

    def elaborate(self):
        from hw.systolic import OutputStationaryArray, WeightStationaryArray
        if self.dataflow == "output_stationary":
            return OutputStationaryArray(**self.parameters())
        return WeightStationaryArray(**self.parameters())
