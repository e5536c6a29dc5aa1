"""Config of the MXInt LayerNorm over rows of MXInt blocks: hw/mxint_layernorm.py, golden model
software_model/mxint_layernorm.py.

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

__all__ = ["MXIntLayerNormConfig"]

@dataclass(frozen=True)
class MXIntLayerNormConfig(ConfigBase):
    """LayerNorm over rows of MXInt blocks: mean and variance from exact integer sums, a seed +
    Newton inverse square root, affine gamma/beta in MXInt, epsilon in units of the input grid;
    one block per cycle in and out."""

    kind: ClassVar[str] = "mxint_layernorm"

    name: str = param("Config name (Verilog top and output folder)", default="mxint_layernorm")
    block_size: int = param("Elements per MXInt block (x, gamma, beta, output)", default=8,
                            min=1, max=64)
    row_length: int = param("Elements per row (a multiple of block_size)", default=32, min=2,
                            max=16384)
    element_width: int = param("Input mantissa bits, sign included", default=8, min=2, max=16)
    out_element_width: int = param("Output mantissa bits, sign included", default=8, min=2,
                                   max=16)
    param_element_width: int = param("gamma and beta mantissa bits, sign included", default=8,
                                     min=2, max=16)
    exponent_width: int = param("Shared exponent bits (all blocks)", default=8, min=2, max=10)
    exponent_encoding: str = param("Shared exponent field encoding", default="twos_complement",
                                   choices=ENCODINGS)
    rounding: str = param("Rounding of the output mantissas", default="half_even",
                          choices=ROUNDINGS)
    frac_bits: int = param("Fraction bits of the fixed-point input (and of the exact sums)",
                           default=10, min=0, max=20)
    int_bits: int = param("|x| < 2^int_bits is exact; beyond saturates", default=8, min=1,
                          max=16)
    eps: float = param("Epsilon added to the variance (rounded to the sums' grid, at least one "
                       "unit)", default=1e-12, min=0.0, max=0.5)
    rsqrt_table_bits: int = param("Inverse square root seed table: 2^this entries (over [0, 4))",
                                  default=6, min=2, max=10)
    newton_steps: int = param("Newton steps after the seed", default=1, min=0, max=3)
    rsqrt_bits: int = param("Fraction bits of the inverse square root", default=12, min=2,
                            max=20)
    norm_frac_bits: int = param("Fraction bits of the normalised value (x - mean) / sigma",
                                default=10, min=1, max=20)
    out_frac_bits: int = param("Fraction bits of gamma * z + beta before the output rounding",
                               default=10, min=0, max=24)
    out_int_bits: int = param("|gamma * z + beta| < 2^out_int_bits; beyond saturates",
                              default=7, min=1, max=16)
    buffer_blocks: Optional[int] = param("Row buffer depth in blocks (null: one block per "
                                         "cycle)", default=None, min=1, max=4096)
    tree_levels: int = param("Adder tree levels between pipeline registers", default=2, min=1,
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

    @property
    def param_fmt(self):
        return _fmt(self, self.param_element_width)

    @property
    def row_blocks(self) -> int:
        return self.row_length // self.block_size

    def _spec_args(self):
        return dict(row_length=self.row_length, frac_bits=self.frac_bits,
                    int_bits=self.int_bits, eps=self.eps,
                    rsqrt_table_bits=self.rsqrt_table_bits, newton_steps=self.newton_steps,
                    rsqrt_bits=self.rsqrt_bits, norm_frac_bits=self.norm_frac_bits,
                    out_frac_bits=self.out_frac_bits, out_int_bits=self.out_int_bits)

    @property
    def spec(self):
        from software_model.mxint_layernorm import LayerNormSpec
        return LayerNormSpec(self.in_fmt, self.out_fmt, self.param_fmt, **self._spec_args())

    def check(self):
        if self.row_length % self.block_size:
            yield Problem("row_length", self.row_length,
                          f"a multiple of block_size ({self.block_size})")
        if self.rsqrt_table_bits > self.rsqrt_bits + 4:
            yield Problem("rsqrt_table_bits", self.rsqrt_table_bits,
                          f"at most rsqrt_bits + 4 ({self.rsqrt_bits + 4})")
        x_bits = self.int_bits + self.frac_bits + 1
        log2_n = max(0, (self.row_length - 1).bit_length())
        rad = 2 * (x_bits - 1) + 1 + log2_n + self.row_length.bit_length()
        if rad > 62:
            yield Problem("frac_bits", self.frac_bits,
                          f"a value with int_bits + frac_bits <= "
                          f"{self.int_bits + self.frac_bits - (rad - 62) // 2 - (rad - 62) % 2}"
                          f": N * sum(x^2) would need {rad} bits (limit 62)")
        if self.buffer_blocks is not None and self.row_length % self.block_size == 0 and \
                self.buffer_blocks < self.row_blocks:
            yield Problem("buffer_blocks", self.buffer_blocks,
                          f"null or at least row_length / block_size ({self.row_blocks})")

    def parameters(self) -> dict:
        """The component's keyword arguments (recorded in manifest.json)."""
        return dict(in_format=self.in_fmt, out_format=self.out_fmt,
                    param_format=self.param_fmt, buffer_blocks=self.buffer_blocks,
                    tree_levels=self.tree_levels,
                    multiplier_chunk_bits=self.multiplier_chunk_bits,
                    **self._spec_args())

    def elaborate(self):
        from hw.mxint_layernorm import MXIntLayerNorm
        return MXIntLayerNorm(**self.parameters())
