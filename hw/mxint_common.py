"""Pieces shared by the MXInt datapaths: the block payload layout, exponent field coding, the
shared-exponent clamp and the mantissa rounding step.

An MXInt block travels as ``{exponent, mantissas}``: ``exponent`` is the shared exponent field
(``signed(ew)`` for two's complement, ``unsigned(ew)`` biased codes), ``mantissas`` an array of
``signed(element_width)``; value_i = m_i * 2^(e - (element_width - 2)) (docs/mxint.md).
"""
from amaranth import *
from amaranth.lib.data import ArrayLayout, StructLayout

from software_model.mxint import MXIntFormat

__all__ = ["block_layout", "exponent_shape", "decode_exponent", "encode_exponent",
           "check_format", "clamp_exponent", "round_magnitude"]


def check_format(fmt, name: str = "Format"):
    if not isinstance(fmt, MXIntFormat):
        raise TypeError(f"{name} must be an MXIntFormat, not {fmt!r}")
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


def clamp_exponent(m, e_true, *, empty, fmt: MXIntFormat, shape, name: str):
    """The block's shared exponent: floor(log2 max|v|) (``e_true``) clamped to [emin, emax];
    ``emin`` for an all-zero block (``empty``), whose exponent is otherwise meaningless."""
    e = Signal(shape, name=name)
    with m.If(empty | (e_true < fmt.emin)):
        m.d.comb += e.eq(fmt.emin)
    with m.Elif(e_true > fmt.emax):
        m.d.comb += e.eq(fmt.emax)
    with m.Else():
        m.d.comb += e.eq(e_true)
    return e


def round_magnitude(m, value, shift, *, rounding: str, name: str):
    """``value / 2^shift`` rounded to an integer (``rounding``: half_even or half_away), for an
    unsigned ``value`` and a shift amount of at most ``len(value) + 1``: the quotient, with one
    bit of headroom for the rounding carry. Guard and sticky come from one shifter that is twice
    as wide as ``value``."""
    width = len(value)
    wide = Signal(2 * width + 1, name=f"{name}_wide")
    m.d.comb += wide.eq(Cat(Const(0, width + 1), value) >> shift)
    q = wide[width + 1:]
    round_bit, sticky = wide[width], wide[:width].any()
    up = round_bit & (sticky | q[0]) if rounding == "half_even" else round_bit
    rounded = Signal(width + 1, name=f"{name}_rounded")
    m.d.comb += rounded.eq(q + up)
    return rounded
