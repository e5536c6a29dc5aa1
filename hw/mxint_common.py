"""Pieces shared by the MXInt datapaths: the block payload layout, exponent field coding, the
shared-exponent clamp and the mantissa rounding step.

An MXInt block travels as ``{exponent, mantissas}``: ``exponent`` is the shared exponent field
(``signed(ew)`` for two's complement, ``unsigned(ew)`` biased codes), ``mantissas`` an array of
``signed(element_width)``; value_i = m_i * 2^(e - (element_width - 2)) (docs/mxint.md).
"""
from amaranth import *
from amaranth.lib.data import ArrayLayout, StructLayout

from hw.primitives import global_enable_ready      # re-exported for the MXInt blocks
from software_model.mxint import MXIntFormat

__all__ = ["block_layout", "exponent_shape", "decode_exponent", "encode_exponent",
           "check_format", "clamp_exponent", "round_magnitude", "carry_prefix", "increment",
           "resolve_segments",
           "exponent_text", "block_fields", "global_enable_ready"]


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


def carry_prefix(cin, gen, prop):
    """Carry into each segment of a segmented add (Sklansky prefix, log2(segments) AND-OR
    levels): ``cin`` enters segment 0, segment i generates ``gen[i]`` and propagates
    ``prop[i]``. Returns one carry per segment."""
    # inclusive prefixes (G, P) over [0..i]; a carry-in is a segment -1 that only generates
    pairs = [(cin, C(0, 1))] + list(zip(gen, prop))

    def combine(lo, hi):
        return hi[0] | (hi[1] & lo[0]), hi[1] & lo[1]

    def prefix(items):
        if len(items) == 1:
            return items
        half = len(items) // 2
        left, right = prefix(items[:half]), prefix(items[half:])
        return left + [combine(left[-1], r) for r in right]

    return [g for g, _ in prefix(pairs)[:len(gen)]]


def resolve_segments(m, sums, carries, segs, register, *, name: str, result: str):
    """The value of a carry-save number kept in segments ``segs`` (``(lo, hi)`` bit ranges):
    segment i holds ``sums[i]`` and a pending carry ``carries[i]`` (None: none). Two register
    stages (``register(value, name)``): each segment takes its carry and gives
    generate/propagate to a log-depth lookahead across the segments (registers
    ``<name>_s/g/p<i>``), then one increment per segment (register ``result``)."""
    low, gen, prop = [], [], []
    for i, (lo, hi) in enumerate(segs):
        inc = increment(m, sums[i], C(0, 1) if carries[i] is None else carries[i],
                        name=f"{name}_inc{i}")
        low.append(register(inc[:hi - lo], f"{name}_s{i}"))
        gen.append(register(inc[-1], f"{name}_g{i}"))
        prop.append(register(inc[:hi - lo].all(), f"{name}_p{i}"))
    cins = carry_prefix(C(0, 1), gen, prop)
    return register(Cat(*[increment(m, low[i], cins[i], name=f"{name}_v{i}")[:hi - lo]
                          for i, (lo, hi) in enumerate(segs)]), result)


def increment(m, value, up, *, name: str):
    """``value + up`` (``up`` one bit) with a log-depth carry: bit i flips when ``up`` and
    every lower bit are set (a prefix AND), where a ripple incrementer is as deep as the value
    is wide. One bit wider than ``value``."""
    value = Value.cast(value)
    # carries into bits 0 .. len(value): a dummy top bit receives the carry out
    carries = carry_prefix(up, [C(0, 1)] * (len(value) + 1), [*value, C(0, 1)])
    out = Signal(len(value) + 1, name=name)
    m.d.comb += out.eq(Cat(*[value[i] ^ carries[i] for i in range(len(value))], carries[-1]))
    return out


def _any(bits):
    """``bits.any()``, or a constant 0 for no bits (an empty slice's reduction would be a
    zero-width wire in the Verilog, which Verilator flags as a [-1:0] range)."""
    return bits.any() if len(bits) else C(0, 1)


def round_magnitude(m, value, shift, *, rounding: str, name: str, keep: int | None = None,
                    register=None):
    """``value / 2^shift`` rounded to an integer (``rounding``: half_even or half_away), for an
    unsigned ``value`` and a shift amount of at most ``len(value) + 1``: the quotient, with one
    bit of headroom for the rounding carry. Guard and sticky come from one shifter that is twice
    as wide as ``value``.

    ``keep``: round only the quotient's low ``keep`` bits and return ``(rounded, over)`` where
    ``over`` says a higher quotient bit is set (callers that saturate or keep a fixed number of
    bits need no wider rounding carry). ``register(value, name)``: a pipeline register between
    the shift (with guard and sticky) and the rounding add, so the two are separate stages.
    """
    width = len(value)
    wide = Signal(2 * width + 1, name=f"{name}_wide")
    m.d.comb += wide.eq(Cat(Const(0, width + 1), value) >> shift)
    q = wide[width + 1:]
    round_bit, sticky = wide[width], _any(wide[:width])
    over = None
    if keep is not None:
        q, over = q[:keep], _any(q[keep:])
    if register is not None:
        q, round_bit, sticky = (register(q, f"{name}_q"), register(round_bit, f"{name}_guard"),
                                register(sticky, f"{name}_sticky"))
        if over is not None:
            over = register(over, f"{name}_over")
    up = round_bit & (sticky | q[0]) if rounding == "half_even" else round_bit
    if register is None:
        rounded = Signal(len(q) + 1, name=f"{name}_rounded")
        m.d.comb += rounded.eq(q + up)
    else:       # a pipelined caller wants the rounding carry log-deep as well
        rounded = increment(m, q, up, name=f"{name}_rounded")
    return rounded if keep is None else (rounded, over)


# -- protocol text (manifest.json) ---------------------------------------------------------------


def exponent_text(fmt: MXIntFormat) -> str:
    """How a block's ``exponent`` field reads, for a component's ``protocol()``."""
    if fmt.exponent_encoding == "biased":
        code = (f"unsigned {fmt.exponent_width}-bit code, e = code - {fmt.exponent_bias}")
    else:
        code = f"signed {fmt.exponent_width}-bit two's complement e"
    return f"shared exponent: {code}, e in {fmt.emin} .. {fmt.emax}"


def block_fields(fmt: MXIntFormat, what: str) -> dict:
    """``fields`` of a protocol entry whose payload is one MXInt block of ``fmt`` (``what``
    names the elements)."""
    return {
        "exponent": exponent_text(fmt),
        "mantissas": f"mantissas[i], i = 0..{fmt.block_size - 1}: {what} i, signed "
                     f"{fmt.element_width}-bit; value_i = mantissas[i] * "
                     f"2^(e - {fmt.fraction_bits})",
    }
