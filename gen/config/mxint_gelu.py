"""Config of the MXInt erf GELU of MXInt blocks: hw/mxint_gelu.py, golden model
software_model/mxint_gelu.py.

It names the formats (element widths, block size, exponent width and encoding, output rounding),
the sizes of the approximations (table bits, polynomial degree, fixed-point widths, Newton steps)
and the pipeline (``tree_levels``, ``multiplier_chunk_bits``).  ``spec`` is the
golden model's spec built from the same numbers; ``elaborate()`` is the one place that maps the
config onto the component's keyword arguments.
"""
from dataclasses import dataclass
from typing import ClassVar, Optional

from gen.config.mxint import ENCODINGS, ROUNDINGS, block_format as _fmt
from gen.schema import ConfigBase, Problem, param

__all__ = ["MXIntGELUConfig"]

@dataclass(frozen=True)
class MXIntGELUConfig(ConfigBase):
    """The erf GELU MiniLM uses, elementwise over MXInt blocks by a piecewise polynomial (or a
    plain table) over a stated range, x outside it; one block per cycle."""

    kind: ClassVar[str] = "mxint_gelu"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_gelu")
    block_size: int = param("Elements per MXInt block (in and out)", default=8, min=1, max=64)
    element_width: int = param("Input mantissa bits, sign included", default=8, min=2, max=16)
    out_element_width: int = param("Output mantissa bits, sign included", default=8, min=2,
                                   max=16)
    exponent_width: int = param("Shared exponent bits (in and out)", default=8, min=2, max=10)
    exponent_encoding: str = param("Shared exponent field encoding", default="twos_complement",
                                   choices=ENCODINGS)
    rounding: str = param("Rounding of the output mantissas", default="half_even",
                          choices=ROUNDINGS)
    frac_bits: int = param("Fraction bits of the fixed-point input", default=8, min=1, max=16)
    int_bits: int = param("|x| < 2^int_bits is exact; beyond saturates", default=8, min=1,
                          max=16)
    range_bits: int = param("The polynomial covers [-2^range_bits, 2^range_bits); above: x, "
                            "below: 0", default=2, min=0, max=4)
    segment_bits: int = param("2^this polynomial segments over the range", default=4, min=0,
                              max=20)
    degree: int = param("Polynomial degree per segment (0 = plain table)", default=2, min=0,
                        max=2)
    out_frac_bits: int = param("Fraction bits of GELU(x) before the output rounding",
                               default=10, min=1, max=20)
    tree_levels: int = param("OR tree levels between pipeline registers", default=2, min=1,
                             max=8)
    multiplier_chunk_bits: Optional[int] = param(
        "Split multipliers into registered partial products of this many bits (null: never)",
        default=None, min=4, max=32)

    @property
    def in_fmt(self):
        return _fmt(self, self.element_width)

    @property
    def out_fmt(self):
        return _fmt(self, self.out_element_width)

    def _spec_args(self):
        return dict(frac_bits=self.frac_bits, int_bits=self.int_bits,
                    range_bits=self.range_bits, segment_bits=self.segment_bits,
                    degree=self.degree, out_frac_bits=self.out_frac_bits)

    @property
    def spec(self):
        from software_model.mxint_gelu import GeluSpec
        return GeluSpec(self.in_fmt, self.out_fmt, **self._spec_args())

    def check(self):
        if self.range_bits > self.int_bits:
            yield Problem("range_bits", self.range_bits, f"at most int_bits ({self.int_bits})")
        code = self.range_bits + 1 + self.frac_bits
        if code > 20:
            yield Problem("frac_bits", self.frac_bits,
                          f"at most {20 - self.range_bits - 1} (range_bits + 1 + frac_bits "
                          "is the polynomial's input code, at most 20 bits)")
        elif self.segment_bits > code:
            yield Problem("segment_bits", self.segment_bits,
                          f"at most range_bits + 1 + frac_bits ({code})")
        if self.out_frac_bits < self.frac_bits:
            yield Problem("out_frac_bits", self.out_frac_bits,
                          f"at least frac_bits ({self.frac_bits}): x passes through exactly "
                          "above the range")

    def parameters(self) -> dict:
        """The component's keyword arguments (recorded in manifest.json)."""
        return dict(in_format=self.in_fmt, out_format=self.out_fmt,
                    tree_levels=self.tree_levels,
                    multiplier_chunk_bits=self.multiplier_chunk_bits,
                    **self._spec_args())

    def elaborate(self):
        from hw.mxint_gelu import MXIntGELU
        return MXIntGELU(**self.parameters())
