"""Config for the stand-alone FP16/BF16 adder (hw/float_add.py), the building block of the
floating-point ternary units, regressed on its own against ml_dtypes."""
from dataclasses import dataclass
from typing import ClassVar

from gen.schema import ConfigBase, param

__all__ = ["FloatAddConfig"]


@dataclass(frozen=True)
class FloatAddConfig(ConfigBase):
    """One FP16 or BF16 adder (round to nearest even, subnormals, Inf, NaN) behind a stream:
    the building block of the floating-point ternary units, regressed alone against ml_dtypes."""

    kind: ClassVar[str] = "float_add"

    name: str = param("Config name (Verilog top and output folder)", default="float_add")
    format: str = param("Operand and result format (IEEE-style, RNE, subnormals, Inf, NaN)",
                        default="fp16", choices=("fp16", "bf16"))
    pipeline_stages: int = param("Pipelining knob: registers inside the adder (operands and "
                                 "result are always registered): 1 between alignment/addition "
                                 "and normalisation/rounding, 2 also between the normalisation "
                                 "plan (leading zeros, shifts) and the shift and rounding add, 3 "
                                 "also after the magnitude compare and swap",
                                 default=3, min=0, max=3)

    @property
    def latency(self):
        """Cycles from an operand handshake to the sum being valid."""
        return 2 + self.pipeline_stages

    def parameters(self) -> dict:
        return {"format": self.format, "pipeline_stages": self.pipeline_stages}

    def elaborate(self):
        from hw.float_add import FloatAdderUnit
        return FloatAdderUnit(**self.parameters())
