"""Config of the MXInt softmax over rows of MXInt blocks: hw/mxint_softmax.py, golden model
software_model/mxint_softmax.py.

It names the formats (element widths, block size, exponent width and encoding, output rounding),
the sizes of the approximations (table bits, polynomial degree, fixed-point widths, Newton steps)
and the pipeline (``tree_levels``, ``multiplier_chunk_bits``, ``buffer_blocks``).  ``spec`` is the
golden model's spec built from the same numbers; ``elaborate()`` is the one place that maps the
config onto the component's keyword arguments.
"""
from dataclasses import dataclass
from typing import ClassVar, Optional

from gen.config.mxint import ENCODINGS, ROUNDINGS, block_format as _fmt
from gen.schema import ConfigBase, Problem, param

__all__ = ["MXIntSoftmaxConfig"]

@dataclass(frozen=True)
class MXIntSoftmaxConfig(ConfigBase):
    """Softmax over rows of MXInt blocks: max subtraction, exp2 by a shift and a table or
    piecewise polynomial, an exact integer sum, a seed + Newton reciprocal, MXInt output; the
    row buffer holds blocks between the two passes, one block per cycle in and out."""

    kind: ClassVar[str] = "mxint_softmax"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_softmax")
    block_size: int = param("Elements per MXInt block (in and out)", default=8, min=1, max=64)
    element_width: int = param("Input mantissa bits, sign included", default=8, min=2, max=16)
    out_element_width: int = param("Output mantissa bits, sign included", default=8, min=2,
                                   max=16)
    exponent_width: int = param("Shared exponent bits (in and out)", default=8, min=2, max=10)
    exponent_encoding: str = param("Shared exponent field encoding", default="twos_complement",
                                   choices=ENCODINGS)
    rounding: str = param("Rounding of the output mantissas", default="half_even",
                          choices=ROUNDINGS)
    max_row_blocks: int = param("Longest row in blocks (a longer row is cut there)", default=4,
                                min=1, max=256)
    scale: float = param("Scores are multiplied by this before the softmax (e.g. 1/sqrt(d))",
                         default=1.0, min=1e-6, max=1e6)
    scale_frac_bits: int = param("Fraction bits of the constant scale * log2(e)", default=12,
                                 min=1, max=20)
    range_bits: int = param("|scale * x * log2 e| < 2^range_bits is exact; beyond saturates",
                            default=6, min=1, max=12)
    exp_frac_bits: int = param("Fraction bits of the log2-domain argument (exp2's input code)",
                               default=10, min=1, max=16)
    exp_segment_bits: int = param("exp2 table: 2^this segments over [0, 1)", default=4, min=0,
                                  max=16)
    exp_degree: int = param("exp2 polynomial degree per segment (0 = plain table)", default=2,
                            min=0, max=2)
    exp_bits: int = param("Fraction bits of exp2 and of the summed terms", default=12, min=2,
                          max=20)
    recip_table_bits: int = param("Reciprocal seed table: 2^this entries", default=5, min=1,
                                  max=10)
    newton_steps: int = param("Newton steps after the reciprocal seed", default=1, min=0, max=3)
    recip_bits: int = param("Fraction bits of the reciprocal", default=12, min=2, max=24)
    buffer_blocks: Optional[int] = param("Row buffer depth in blocks (null: one block per "
                                         "cycle for any row length)", default=None, min=1,
                                         max=4096)
    tree_levels: int = param("Adder/max tree levels between pipeline registers", default=2,
                             min=1, max=8)
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
        return dict(max_row_blocks=self.max_row_blocks, scale=self.scale,
                    scale_frac_bits=self.scale_frac_bits, range_bits=self.range_bits,
                    exp_frac_bits=self.exp_frac_bits, exp_segment_bits=self.exp_segment_bits,
                    exp_degree=self.exp_degree, exp_bits=self.exp_bits,
                    recip_table_bits=self.recip_table_bits, newton_steps=self.newton_steps,
                    recip_bits=self.recip_bits)

    @property
    def spec(self):
        from software_model.mxint_softmax import SoftmaxSpec
        return SoftmaxSpec(self.in_fmt, self.out_fmt, **self._spec_args())

    def check(self):
        if self.exp_segment_bits > self.exp_frac_bits:
            yield Problem("exp_segment_bits", self.exp_segment_bits,
                          f"at most exp_frac_bits ({self.exp_frac_bits})")
        if self.recip_table_bits > self.recip_bits + 2:
            yield Problem("recip_table_bits", self.recip_table_bits,
                          f"at most recip_bits + 2 ({self.recip_bits + 2})")
        c = round(self.scale / 0.6931471805599453 * 2.0 ** self.scale_frac_bits)
        if not 1 <= c < 1 << 24:
            yield Problem("scale_frac_bits", self.scale_frac_bits,
                          f"a value making scale * log2(e) * 2^scale_frac_bits round to "
                          f"1 .. 2^24 - 1 (it is {c})")
        if self.buffer_blocks is not None and self.buffer_blocks < self.max_row_blocks:
            yield Problem("buffer_blocks", self.buffer_blocks,
                          f"null or at least max_row_blocks ({self.max_row_blocks}): a whole "
                          "row must fit")

    def parameters(self) -> dict:
        """The component's keyword arguments (recorded in manifest.json)."""
        return dict(in_format=self.in_fmt, out_format=self.out_fmt,
                    buffer_blocks=self.buffer_blocks, tree_levels=self.tree_levels,
                    multiplier_chunk_bits=self.multiplier_chunk_bits,
                    **self._spec_args())

    def elaborate(self):
        from hw.mxint_softmax import MXIntSoftmax
        return MXIntSoftmax(**self.parameters())
