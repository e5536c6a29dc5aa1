"""Config of the PLENA-style flattened systolic array (kind ``flattened_array``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

from gen.config.systolic import OVERFLOW_MODES, SignedOperands, operand_type
from gen.schema import ConfigBase, Problem, param

__all__ = ["FlattenedArrayConfig", "OPERAND_FORMATS"]

#: Per tensor class (A = activations, B = weights / K^T): plain integers, or MXInt blocks whose
#: ``*_type`` width is the mantissa width (sign included) sharing one exponent per ``block_size``
#: k-steps (software_model.mxint.MXIntFormat, two's-complement exponent).
OPERAND_FORMATS = ("int", "mxint")


@dataclass(frozen=True)
class FlattenedArrayConfig(SignedOperands, ConfigBase):
    """MLEN/BLEN output-stationary sub-arrays of BLEN x BLEN PEs joined by a pipelined adder tree.

    A job computes C[M x BLEN] = A[M x K] . B[K x BLEN] (1 <= M <= BLEN): every operand beat
    carries MLEN/BLEN consecutive k-steps, one per sub-array; sub-array s accumulates the k with
    k mod (MLEN/BLEN) == s, and the adder tree sums the sub-arrays' partial tiles.
    """

    kind: ClassVar[str] = "flattened_array"

    name: str = param("Name of the design: Verilog top and output folder (default: file stem)",
                      default="flattened_array")
    blen: int = param("BLEN: rows and columns of one sub-array (the M and N tile)", default=4,
                      min=1, max=64)
    mlen: int = param("MLEN: multipliers per sub-array row across all sub-arrays "
                      "(MLEN/BLEN sub-arrays, BLEN x MLEN multipliers)", default=16, min=1,
                      max=4096)
    a_type: int = param("Signed type of A (activations), e.g. int8", default="int8",
                        parse=operand_type, allowed="a signed integer type int2 .. int16")
    b_type: int = param("Signed type of B (weights, or K^T in attention), e.g. int4",
                        default="int8", parse=operand_type,
                        allowed="a signed integer type int2 .. int16")
    a_format: str = param("A's format: int, or mxint (a_type = mantissa width)", default="int",
                          choices=OPERAND_FORMATS)
    b_format: str = param("B's format: int, or mxint (b_type = mantissa width)", default="int",
                          choices=OPERAND_FORMATS)
    block_size: int = param("MXInt: k-steps sharing one exponent; one job is one block",
                            default=16, min=1, max=1024)
    exponent_width: int = param("MXInt: bits of the shared two's-complement exponent", default=4,
                                min=2, max=8)
    max_blocks: int = param("MXInt: most K blocks one output tile accumulates (sizes the "
                            "aligned accumulator)", default=16, min=1, max=1 << 16)
    max_k: int = param("Longest reduction (K) one job may have", default=256, min=1,
                       max=1 << 20)
    acc_width: Optional[int] = param(
        "Accumulator and adder-tree bits; null = exact for max_k (a + b + floor(log2(max_k)))",
        default=None, min=2, max=128)
    overflow: str = param("What accumulators and tree adders do when a sum leaves their range",
                          default="wrap", choices=OVERFLOW_MODES)
    heads: int = param("Heads a batched per-head job stream may tag (results echo the tag)",
                       default=1, min=1, max=1024)
    transpose_b: bool = param("Accept B beats in transposed order (K^T read row-wise from a "
                              "K cache) selected per job", default=False)
    result_buffer: Optional[int] = param(
        "Rows of C the output buffer holds (credit-based); null = enough for one job every BLEN "
        "cycles (latency + BLEN)", default=None, min=1, max=4096)
    pe_product_register: bool = param(
        "Register each PE's product before its accumulate (multiply and add in separate "
        "stages: one cycle more latency, the same rate)", default=False, omit_default=True)
    segment_bits: int = param(
        "MXInt: bits per carry segment of the aligned accumulate after the tree, one pipeline "
        "stage each (latency 1 + ceil(output width / segment_bits)); ignored with int operands",
        default=16, min=4, max=256, omit_default=True)

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def sub_arrays(self) -> int:
        """MLEN / BLEN: k-steps consumed per beat."""
        return self.mlen // self.blen

    @property
    def multipliers(self) -> int:
        return self.blen * self.mlen

    @property
    def tree_levels(self) -> int:
        return (self.sub_arrays - 1).bit_length()

    @property
    def max_beats(self) -> int:
        return -(-self.max_k // self.sub_arrays)

    @property
    def mxint(self) -> bool:
        return "mxint" in (self.a_format, self.b_format)

    @property
    def exponent_span(self) -> int:
        """Largest alignment shift: (e - emin) summed over the MXInt operands."""
        per = (1 << self.exponent_width) - 1
        return per * ((self.a_format == "mxint") + (self.b_format == "mxint"))

    @property
    def exact_acc_width(self) -> int:
        # MXInt: the PEs and the tree sum one block; alignment happens after the tree.
        terms = self.block_size if self.mxint else self.max_k
        return self.product_width + (terms.bit_length() - 1)

    @property
    def output_width(self) -> int:
        """Bits of a result: the accumulator, or for MXInt the aligned fixed-point sum (exact for
        ``max_blocks`` blocks at any exponents)."""
        if not self.mxint:
            return self.accumulator_width
        return self.accumulator_width + self.exponent_span + (self.max_blocks.bit_length() - 1)

    @property
    def accumulator_width(self) -> int:
        return self.acc_width if self.acc_width is not None else self.exact_acc_width

    @property
    def head_width(self) -> int:
        return max(1, (self.heads - 1).bit_length())

    @property
    def align_stages(self) -> int:
        """MXInt alignment stages after the tree (0 with integer operands)."""
        if not self.mxint:
            return 0
        from software_model.flattened import mx_align_stages
        return mx_align_stages(self.output_width, self.segment_bits)

    @property
    def latency(self) -> int:
        """Cycles from a job's last operand beat to its first result beat."""
        from software_model.flattened import flat_latency
        return flat_latency(self.blen, self.sub_arrays, self.pe_product_register,
                            self.align_stages)

    @property
    def result_buffer_rows(self) -> int:
        if self.result_buffer is not None:
            return self.result_buffer
        return self.latency + self.blen

    # -- validation ------------------------------------------------------------------------------

    def check(self):
        if self.mlen % self.blen:
            yield Problem("mlen", self.mlen, f"a multiple of blen = {self.blen}")
        else:
            s = self.mlen // self.blen
            if s & (s - 1):
                yield Problem("mlen", self.mlen,
                              f"blen times a power of two (mlen/blen = {s} sub-arrays; the "
                              "adder tree is balanced)")
        if self.acc_width is not None and self.acc_width < self.product_width:
            yield Problem("acc_width", self.acc_width,
                          f"at least {self.product_width} (the {self.a_width}x{self.b_width}-bit "
                          "product width), or null for exact")
        if self.mxint:
            # mlen % blen first: with mlen < blen there are no sub-arrays to divide by.
            if self.mlen % self.blen == 0 and self.block_size % self.sub_arrays:
                yield Problem("block_size", self.block_size,
                              f"a multiple of mlen/blen = {self.mlen // self.blen} (a block is "
                              "whole beats)")
            if self.acc_width is not None:
                yield Problem("acc_width", self.acc_width,
                              "null with an mxint operand (block sums and alignment are exact)")
            if self.overflow != "wrap":
                yield Problem("overflow", self.overflow,
                              "'wrap' with an mxint operand (the sums are exact, nothing overflows)")
        if self.result_buffer is not None and self.result_buffer < self.blen:
            yield Problem("result_buffer", self.result_buffer,
                          f"at least blen = {self.blen} (one job's results)")

    def parameters(self) -> dict:
        return {"blen": self.blen, "mlen": self.mlen, "a_width": self.a_width,
                "b_width": self.b_width, "acc_width": self.accumulator_width,
                "overflow": self.overflow, "a_mxint": self.a_format == "mxint",
                "b_mxint": self.b_format == "mxint", "exponent_width": self.exponent_width,
                "output_width": self.output_width, "heads": self.heads,
                "transpose_b": self.transpose_b, "result_depth": self.result_buffer_rows,
                "pe_product_register": self.pe_product_register,
                "segment_bits": self.segment_bits}

    def elaborate(self):
        from hw.flattened import FlattenedArray
        return FlattenedArray(**self.parameters())
