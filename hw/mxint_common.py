"""Pieces shared by the MXInt datapaths: the block payload layout, exponent field coding, a
leading-one detector and a balanced max tree.

An MXInt block travels as ``{exponent, mantissas}``: ``exponent`` is the shared exponent field
(``signed(ew)`` for two's complement, ``unsigned(ew)`` biased codes), ``mantissas`` an array of
``signed(element_width)``; value_i = m_i * 2^(e - (element_width - 2)) (docs/mxint.md).
"""
from amaranth import *
from amaranth.lib.data import ArrayLayout, StructLayout

from software_model.mxint import MXIntFormat

__all__ = ["block_layout", "exponent_shape", "decode_exponent", "encode_exponent",
           "leading_one", "max_tree", "check_format"]


def check_format(fmt):
    if not isinstance(fmt, MXIntFormat):
        raise TypeError(f"Format must be an MXIntFormat, not {fmt!r}")
    return fmt


def exponent_shape(fmt: MXIntFormat):
    if fmt.exponent_encoding == "biased":
        return unsigned(fmt.exponent_width)
    return signed(fmt.exponent_width)


def block_layout(fmt: MXIntFormat) -> StructLayout:
    return StructLayout({
        "exponent": exponent_shape(fmt),
        "mantissas": ArrayLayout(signed(fmt.element_width), fmt.block_size),
    })


def decode_exponent(code, fmt: MXIntFormat):
    """Field -> decoded signed exponent (one extra bit so biased codes stay exact)."""
    if fmt.exponent_encoding == "biased":
        return (code.as_unsigned() - fmt.exponent_bias).as_signed()
    return code.as_signed()


def encode_exponent(e, fmt: MXIntFormat):
    """Decoded exponent (already clamped to [emin, emax]) -> field bits."""
    return (e + fmt.exponent_bias)[:fmt.exponent_width]


def leading_one(m, value, name):
    """Index of the highest set bit of ``value`` (0 when ``value`` is 0)."""
    pos = Signal(range(max(2, len(value))), name=name)
    for i in range(len(value)):     # later (higher) bits override: the top set bit wins
        with m.If(value[i]):
            m.d.comb += pos.eq(i)
    return pos


def max_tree(values):
    """Balanced tree of 2-input maxima: depth ceil(log2 n) comparators instead of n - 1."""
    level = list(values)
    while len(level) > 1:
        nxt = [Mux(a > b, a, b) for a, b in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
