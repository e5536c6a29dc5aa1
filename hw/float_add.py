"""FP16/BF16 adder and multiplier datapaths (round to nearest even, subnormals, Inf, NaN).

``float_add`` and ``float_mul`` emit combinational logic into a Module and return the result
bits; the ternary units instantiate them many times. ``FloatAdderUnit`` wraps one adder in
streams so it can be regressed on its own (software_model.float16 is the reference).

Conventions shared with software_model/float16.py:
* every NaN result is the canonical quiet NaN (sign 0, top mantissa bit); NaN inputs may have
  any payload;
* x + (-x) is +0 (round to nearest even), -0 + -0 is -0; 0 * Inf is NaN;
* no flush to zero: subnormal inputs and results are exact IEEE.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import increment
from hw.primitives import (GlobalEnable, check_choice, delay, global_enable_protocol,
                           parameter_repr)
from software_model.float16 import FORMATS, FloatFormat

__all__ = ["float_add", "float_add_staged", "float_mul", "float_neg", "FloatAdderUnit", "float_format", "PIPELINE_POINTS"]

_GUARD_BITS = 3     # guard, round, sticky: enough for a correctly rounded add (one left shift)


def float_format(fmt):
    """``"fp16"``/``"bf16"`` or one of :data:`software_model.float16.FORMATS` -> the format."""
    if isinstance(fmt, FloatFormat) and fmt in FORMATS.values():
        return fmt
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ValueError(f"Float format must be one of {', '.join(map(repr, FORMATS))}, "
                         f"not {fmt!r}")
    return FORMATS[fmt]


def float_neg(value, fmt):
    f = float_format(fmt)
    return Cat(value[:f.width - 1], ~value[f.width - 1])


class _Unpacked:
    """Fields of one operand; subnormals get the effective exponent 1 and no hidden bit."""

    def __init__(self, value, f):
        m, e = f.mantissa_bits, f.exponent_bits
        self.sign = value[m + e]
        self.exponent = value[m:m + e]
        self.fraction = value[:m]
        self.magnitude = value[:m + e]
        subnormal = self.exponent == 0
        self.significand = Cat(self.fraction, ~subnormal)                  # m + 1 bits
        self.effective_exponent = Mux(subnormal, 1, self.exponent)
        self.is_zero = self.magnitude == 0
        self.is_inf = (self.exponent == f.exponent_max) & (self.fraction == 0)
        self.is_nan = (self.exponent == f.exponent_max) & (self.fraction != 0)


def _leading_zeros(m, value, name):
    width = len(value)
    count = Signal(range(width + 1), name=name)
    m.d.comb += count.eq(width)
    for i in range(width):          # later (higher) bits override: the top set bit wins
        with m.If(value[i]):
            m.d.comb += count.eq(width - 1 - i)
    return count


def _round_pack(m, f, sign, exponent, significand, name, register=None):
    """Normalise, round to nearest even and pack a non-zero finite magnitude.

    `significand` (W bits) is worth significand * 2^(exponent - bias - (W - 1)): `exponent` is
    the biased exponent its top bit would carry. Results below the normal range are shifted
    right onto the subnormal grid (lost bits kept as sticky) before the one rounding step, so
    there is no double rounding; a carry out of the mantissa bumps the exponent for free
    because exponent and mantissa are rounded as one packed integer.

    ``register(value, name)``, if given, is a pipeline register between the normalisation
    plan (leading zeros, exponent, shift amounts) and the shifts and rounding add.
    """
    mb = f.mantissa_bits
    width = len(significand)
    assert width >= mb + 3
    lz = _leading_zeros(m, significand, f"{name}_lz")
    normal_exponent = Signal(signed(len(exponent) + 2), name=f"{name}_nexp")
    m.d.comb += normal_exponent.eq(exponent - lz)
    is_normal = normal_exponent >= 1
    # Subnormal: shift so that the top bit carries exponent 1 (left by exponent-1, or right).
    left = Mux(is_normal, lz, (exponent - 1).as_unsigned())
    left_amount = Signal(range(width + 1), name=f"{name}_lshift")
    right_amount = Signal(range(width + 1), name=f"{name}_rshift")
    shift_right = ~is_normal & (exponent < 1)
    m.d.comb += [
        left_amount.eq(Mux(shift_right, 0, left)),
        right_amount.eq(Mux(shift_right,
                            Mux(1 - exponent >= width, width, (1 - exponent).as_unsigned()), 0)),
    ]
    field_exponent = Mux(is_normal, normal_exponent[:f.exponent_bits], 0)
    overflow = is_normal & (normal_exponent >= f.exponent_max)
    if register is not None:
        significand, left_amount, right_amount, shift_right, field_exponent, overflow, sign = (
            register(v, f"{name}_{k}") for k, v in (
                ("sig_r", significand), ("lshift_r", left_amount), ("rshift_r", right_amount),
                ("right_r", shift_right), ("fexp_r", field_exponent), ("ovf_r", overflow),
                ("sign_r", sign)))
    shifted = Signal(width, name=f"{name}_norm")
    right_shifted = significand >> right_amount
    # bits below the right shift (sticky): a mask from the amount, beside the shift
    right_lost = (significand & ~(C((1 << width) - 1, width) << right_amount)[:width]).any()
    m.d.comb += shifted.eq(Mux(shift_right, right_shifted, (significand << left_amount)[:width]))

    mantissa = shifted[width - 1 - mb:width - 1]
    guard = shifted[width - 2 - mb]
    rest = (shifted[:width - 2 - mb] != 0) | (shift_right & right_lost)
    round_up = guard & (rest | mantissa[0])
    packed = Signal(f.width - 1, name=f"{name}_packed")
    # log-depth increment, not a ripple: this stage is the deepest of the fp16 ternary units
    m.d.comb += packed.eq(increment(m, Cat(mantissa, field_exponent), round_up,
                                    name=f"{name}_inc")[:f.width - 1])   # carry may reach Inf
    result = Signal(f.width, name=f"{name}_rounded")
    m.d.comb += result.eq(Cat(Mux(overflow, f.positive_infinity, packed), sign))
    return result


def _add_align(m, a, b, f, name, register=None):
    """First half of the adder: specials, swap, alignment with sticky, add/subtract.
    ``register(value, name)``, if given, is a pipeline register after the swap."""
    mb = f.mantissa_bits
    ua, ub = _Unpacked(a, f), _Unpacked(b, f)
    swap = ua.magnitude < ub.magnitude
    big_sign = Mux(swap, ub.sign, ua.sign)
    big_sig = Mux(swap, ub.significand, ua.significand)
    big_exp = Mux(swap, ub.effective_exponent, ua.effective_exponent)
    small_sig = Mux(swap, ua.significand, ub.significand)
    small_exp = Mux(swap, ua.effective_exponent, ub.effective_exponent)
    subtract = ua.sign ^ ub.sign
    zero_sign = ua.sign & ub.sign      # exact zero: +0 unless both operands are negative
    nan = ua.is_nan | ub.is_nan | (ua.is_inf & ub.is_inf & subtract)
    inf = ua.is_inf | ub.is_inf
    inf_sign = Mux(ua.is_inf, ua.sign, ub.sign)
    if register is not None:
        (big_sign, big_sig, big_exp, small_sig, small_exp, subtract, zero_sign, nan, inf,
         inf_sign) = (register(v, f"{name}_{k}_r") for k, v in (
            ("big_sign", big_sign), ("big_sig", big_sig), ("big_exp", big_exp),
            ("small_sig", small_sig), ("small_exp", small_exp), ("subtract", subtract),
            ("zero_sign", zero_sign), ("nan", nan), ("inf", inf), ("inf_sign", inf_sign)))

    distance = Signal(f.exponent_bits, name=f"{name}_dist")
    m.d.comb += distance.eq(big_exp - small_exp)
    limit = mb + _GUARD_BITS + 2          # beyond this the small operand is pure sticky
    clamped = Signal(range(limit + 1), name=f"{name}_dclamp")
    m.d.comb += clamped.eq(Mux(distance > limit, limit, distance))
    big = Cat(C(0, _GUARD_BITS), big_sig)
    small = Cat(C(0, _GUARD_BITS), small_sig)
    aligned = small >> clamped
    sticky = (aligned << clamped)[:len(small)] != small
    small_aligned = aligned | sticky
    total = Signal(mb + 1 + _GUARD_BITS + 1, name=f"{name}_sum")   # carry bit on top
    m.d.comb += total.eq(Mux(subtract, big - small_aligned, big + small_aligned))
    return {"sign": big_sign, "exponent": big_exp, "total": total, "zero_sign": zero_sign,
            "nan": nan, "inf": inf, "inf_sign": inf_sign}


def _add_normalize(m, parts, f, name, register=None):
    """Second half: normalise and round; ``register`` as in :func:`_round_pack`."""
    exponent = Signal(signed(f.exponent_bits + 2), name=f"{name}_topexp")
    m.d.comb += exponent.eq(parts["exponent"] + 1)     # the carry bit sits one above the hidden bit
    rounded = _round_pack(m, f, parts["sign"], exponent, parts["total"], name, register)
    flags = {"nan": parts["nan"], "inf": parts["inf"], "inf_sign": parts["inf_sign"],
             "zero": parts["total"] == 0, "zero_sign": parts["zero_sign"]}
    if register is not None:
        flags = {k: register(v, f"{name}_{k}_n") for k, v in flags.items()}
    return _select_special(m, f, rounded, name=name, **flags)


def _select_special(m, f, rounded, *, nan, inf, inf_sign, zero, zero_sign, name):
    """The result of an IEEE operation: the canonical NaN, an infinity of ``inf_sign``, a zero
    of ``zero_sign`` (in that priority), else the ``rounded`` value."""
    result = Signal(f.width, name=name)
    with m.If(nan):
        m.d.comb += result.eq(f.canonical_nan)
    with m.Elif(inf):
        m.d.comb += result.eq(Cat(C(f.positive_infinity, f.width - 1), inf_sign))
    with m.Elif(zero):
        m.d.comb += result.eq(Cat(C(0, f.width - 1), zero_sign))
    with m.Else():
        m.d.comb += result.eq(rounded)
    return result


def float_add(m, a, b, fmt, name="fadd"):
    """Combinational correctly rounded a + b; returns a Signal of the format's width."""
    f = float_format(fmt)
    return _add_normalize(m, _add_align(m, a, b, f, name), f, name)


def float_add_staged(m, a, b, fmt, register, name="fadd"):
    """``a + b`` as :func:`float_add`, with ``register(value, name)`` (a pipeline register)
    between alignment/addition and normalisation/rounding: two stages of about half the depth."""
    f = float_format(fmt)
    parts = _add_align(m, a, b, f, name)
    parts = {k: register(v, f"{name}_{k}_s") for k, v in parts.items()}
    return _add_normalize(m, parts, f, name)


def float_mul(m, a, b, fmt, name="fmul", register=None):
    """Correctly rounded a * b (full (m+1) x (m+1)-bit significand product); combinational,
    or with ``register(value, name)`` a pipeline register after the significand product and
    one after the normalisation plan (three stages, the caller's register after the last)."""
    f = float_format(fmt)
    ua, ub = _Unpacked(a, f), _Unpacked(b, f)
    sign = ua.sign ^ ub.sign
    product = Signal(2 * (f.mantissa_bits + 1), name=f"{name}_prod")
    m.d.comb += product.eq(ua.significand * ub.significand)
    exponent = Signal(signed(f.exponent_bits + 3), name=f"{name}_topexp")
    # Top product bit is worth 2^1 relative to the hidden-bit product.
    m.d.comb += exponent.eq(ua.effective_exponent + ub.effective_exponent - f.bias + 1)
    nan = ua.is_nan | ub.is_nan | (ua.is_inf & ub.is_zero) | (ub.is_inf & ua.is_zero)
    inf = ua.is_inf | ub.is_inf
    if register is not None:
        sign, product, exponent, nan, inf = (register(v, f"{name}_{k}_p") for k, v in (
            ("sign", sign), ("prod", product), ("exp", exponent), ("nan", nan), ("inf", inf)))
    rounded = _round_pack(m, f, sign, exponent, product, name, register=register)
    flags = {"nan": nan, "inf": inf, "zero": product == 0, "sign": sign}
    if register is not None:
        flags = {k: register(v, f"{name}_{k}_n") for k, v in flags.items()}
    return _select_special(m, f, rounded, name=name, nan=flags["nan"], inf=flags["inf"],
                           inf_sign=flags["sign"], zero=flags["zero"], zero_sign=flags["sign"])


#: where each register of ``FloatAdderUnit(pipeline_stages=n)`` sits: the first ``n`` of these
#: (one register between alignment/addition and normalisation first, as it always was)
PIPELINE_POINTS = ("add", "normalize", "swap")


class FloatAdderUnit(wiring.Component):
    """Streamed FP adder: operands {a, b} in, sum out; operands and sum registered.

    ``format``: ``"fp16"`` or ``"bf16"`` (or its :class:`~software_model.float16.FloatFormat`);
    ``pipeline_stages``: 0 to 3 registers inside the adder, the pipelining knob: 1 sits between
    alignment/addition and normalisation/rounding, 2 adds one between the normalisation plan
    (leading zeros, exponent, shift amounts) and the shifts and rounding add, 3 one after the
    magnitude compare and swap (:data:`PIPELINE_POINTS`).
    Latency 2 + pipeline_stages cycles; one sum per cycle; the whole pipeline stalls while the
    sum is held by backpressure (:class:`hw.primitives.GlobalEnable`).
    """

    def __init__(self, *, format: "str | FloatFormat", pipeline_stages: int = 3):
        self.float_format = float_format(format)
        self.format = self.float_format.name
        check_choice("Pipeline stages", pipeline_stages, tuple(range(len(PIPELINE_POINTS) + 1)))
        self.pipeline_stages = pipeline_stages
        self.latency = 2 + pipeline_stages
        width = self.float_format.width
        self.operand_layout = StructLayout({"a": width, "b": width})
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "sums": Out(stream.Signature(width)),
        })

    def __repr__(self):
        return parameter_repr(self, "format", "pipeline_stages")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        fmt, width = self.format, self.float_format.width
        return global_enable_protocol(
            source="operands", sink="sums", source_beat="one addition a + b",
            source_fields={"a": f"a, an IEEE {fmt} bit pattern ({width} bits)",
                           "b": f"b, an IEEE {fmt} bit pattern ({width} bits)"},
            sink_beat="the sum of one operands beat",
            sink_fields={"payload": f"a + b, {fmt} bits, rounded to nearest even; subnormals "
                                    "exact, every NaN the canonical quiet NaN, x + (-x) = +0"},
            latency=self.latency, taken="an operand pair", offered="its sum", unit="pair",
            arithmetic="software_model.float16.add, bit for bit")

    def elaborate(self, platform):
        m = Module()
        f = self.float_format
        ctl = GlobalEnable(m, source=self.operands, sink=self.sums, stages=self.latency)
        stage = ctl.register

        points = PIPELINE_POINTS[:self.pipeline_stages]
        at = lambda point: stage if point in points else None     # noqa: E731
        a, b = (delay(m, self.operands.payload[name], 1, name=name, enable=ctl.advance)
                for name in ("a", "b"))
        parts = _add_align(m, a, b, f, "fadd", register=at("swap"))
        if "add" in points:
            parts = {k: stage(v, f"staged_{k}") for k, v in parts.items()}
        total = _add_normalize(m, parts, f, "fadd", register=at("normalize"))
        m.d.comb += self.sums.payload.eq(delay(m, total, 1, name="sum", enable=ctl.advance))
        return m
