"""MXIntCast: a block of FP16/BF16/FP32 values in, one MXInt block out, one block per cycle.

Five pipeline stages (latency 5, software_model.mxint.mxint_cast is the reference; each stage
is at most a max tree, a shifter or a rounding add deep; ``pipelined=False``, the knob, drops
the registers after 1, 2 and 4: latency 2, about 42-62 gate levels on the presets):

1. decode every element (sign, significand with hidden bit, effective exponent) and find its
   floor(log2|v|) with a leading-one detector (only subnormals need it);
2. the block's maximum with a balanced max tree;
3. clamp it to the exponent field: the shared exponent ``e``;
4. shift each significand right so its LSB weighs 2^(e - (w - 2)), keeping guard and sticky;
5. round on the magnitude (half-even or half-away), saturate to +-(2^(w-1) - 1), apply the sign.

The shifter is ``w - 2`` bits wider than the significand so that a subnormal element whose block
maximum is itself tiny can shift *left* without a second shifter; a negative shift amount only
happens when the exponent was clamped at emax and then always saturates.  NaN elements are zeroed
before the max tree; Inf reads its all-ones exponent as ordinary (2^(Emax+1)), see docs/mxint.md.
The whole pipeline advances together (:class:`hw.primitives.GlobalEnable`): a block is wide, so
one enable is cheaper than a handshake per stage, and backpressure stalls every stage at once.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import (block_fields, block_layout, check_format, clamp_exponent,
                             encode_exponent, round_magnitude)
from hw.primitives import (GlobalEnable, check_choice, check_flag, delay, global_enable_protocol,
                           leading_one, max_tree, parameter_repr)
from software_model.mxint import INPUT_FORMATS, MXIntFormat

__all__ = ["MXIntCast"]


class MXIntCast(wiring.Component):
    """Stream of ``fmt.block_size`` raw floats in (``values``), stream of MXInt blocks out
    (``blocks``, layout from :func:`hw.mxint_common.block_layout`).

    ``input_format``: ``"fp16"``, ``"bf16"`` or ``"fp32"``; ``fmt``: the MXInt block format
    (block size, element and exponent widths, exponent encoding, rounding).
    """

    #: latency by ``pipelined``: decode, block maximum, shared exponent, align, round (see the
    #: module docstring), or the two-stage layout (decode .. clamp, align .. round)
    LATENCY = {True: 5, False: 2}

    def __init__(self, *, input_format: str, fmt: MXIntFormat, pipelined: bool = True):
        check_choice("Input format", input_format, tuple(INPUT_FORMATS))
        check_flag("Pipelined", pipelined)
        self.pipelined = pipelined
        self.latency = self.LATENCY[pipelined]
        self.input_format = input_format
        self.fmt = check_format(fmt)
        self.exp_bits, self.frac_bits, self.in_width = INPUT_FORMATS[input_format]
        self.value_layout = ArrayLayout(unsigned(self.in_width), fmt.block_size)
        self.block_layout = block_layout(fmt)
        super().__init__({
            "values": In(stream.Signature(self.value_layout)),
            "blocks": Out(stream.Signature(self.block_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "input_format", "fmt", "pipelined")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        k = self.fmt.block_size
        return global_enable_protocol(
            source="values", sink="blocks",
            source_beat=f"one block of {k} {self.input_format} values",
            source_fields={"payload": f"payload[i], i = 0..{k - 1}: element i, its IEEE "
                                      f"{self.input_format} bit pattern ({self.in_width} bits)"},
            sink_beat="the MXInt block of one values beat",
            sink_fields=block_fields(self.fmt, "element"),
            latency=self.latency, taken="a block", offered="its result", unit="block",
            arithmetic=f"shared exponent floor(log2 max|v|) clamped to the field, mantissas "
                       f"rounded {self.fmt.rounding} and saturated; NaN elements read as 0 "
                       "(software_model.mxint.mxint_cast)")

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        k, w = f.block_size, f.element_width
        eb, fb, width = self.exp_bits, self.frac_bits, self.in_width
        bias = (1 << (eb - 1)) - 1
        p = fb + 1
        guard_shift = w - 2                      # left headroom, see module docstring
        cap = p + guard_shift + 1                # any larger shift rounds to zero anyway

        ctl = GlobalEnable(m, source=self.values, sink=self.blocks, stages=self.latency)
        advance = ctl.advance
        stage = ctl.register
        later = lambda value, cycles, name: delay(m, value, cycles, name=name,  # noqa: E731
                                                  enable=advance)
        # the three registers `pipelined` adds (after the decode, the max tree, the shift)
        piped = self.pipelined
        extra = stage if piped else (lambda value, name: value)

        # -- stage 1: decode, per-element floor(log2) ------------------------------------------
        s1_sign = Signal(k, reset_less=True)
        s1_sig = Signal(ArrayLayout(unsigned(p), k), reset_less=True)
        s1_exp = Signal(ArrayLayout(unsigned(eb), k), reset_less=True)
        tops = []                 # floor(log2|v|) + fb + bias + 0, or 0 for zero/NaN
        for i in range(k):
            bits = self.values.payload[i]
            expf = bits[fb:fb + eb]
            frac = bits[:fb]
            normal = expf != 0
            is_nan = (expf == (1 << eb) - 1) & (frac != 0)
            msb = leading_one(m, frac, f"frac_msb_{i}")
            top = Signal(range((1 << eb) + fb), name=f"top_{i}")
            with m.If(is_nan):
                m.d.comb += top.eq(0)
            with m.Elif(normal):
                m.d.comb += top.eq(expf + fb)
            with m.Elif(frac != 0):
                m.d.comb += top.eq(1 + msb)
            tops.append(extra(top, f"top_r_{i}"))
            with m.If(advance):
                m.d.sync += [
                    s1_sign[i].eq(bits[width - 1]),
                    s1_sig[i].eq(Mux(is_nan, 0, Cat(frac, normal))),
                    s1_exp[i].eq(Mux(normal, expf, 1)),
                ]

        # -- stage 2: the block's maximum (a balanced max tree) ---------------------------------
        top_max = Signal(range((1 << eb) + fb))
        m.d.comb += top_max.eq(max_tree(tops))
        top_max = extra(top_max, "top_max_r")

        # -- stage 3: the shared exponent, clamped -----------------------------------------------
        e_true = Signal(signed(eb + 3))
        m.d.comb += e_true.eq(top_max - (fb + bias))
        e_blk = clamp_exponent(m, e_true, empty=top_max == 0, fmt=f,
                               shape=signed(f.exponent_width + 1), name="e_blk")
        s1_e = stage(e_blk, "e_r")
        sigs = [later(s1_sig[i], 2 * piped, f"sig3_{i}") for i in range(k)]
        exps = [later(s1_exp[i], 2 * piped, f"exp3_{i}") for i in range(k)]

        # -- stages 4 and 5: align with guard and sticky, then round and saturate ----------------
        mags_max = f.mantissa_max
        mantissas = []
        for i in range(k):
            sig = sigs[i]
            # right-shift amount of (sig << guard_shift) so its LSB weighs 2^(e - (w-2))
            t = Signal(signed(max(f.exponent_width + 1, eb + 1) + 2), name=f"shift_{i}")
            m.d.comb += t.eq(s1_e - exps[i] + (bias + fb))
            t_cap = Signal(range(cap + 1), name=f"shift_cap_{i}")
            m.d.comb += t_cap.eq(Mux(t < 0, 0, Mux(t > cap, cap, t)))
            x = Cat(Const(0, guard_shift), sig)                       # p + guard_shift bits
            # a quotient bit at or above the element width is beyond mantissa_max already
            mag, over = round_magnitude(m, x, t_cap, rounding=f.rounding, name=f"mag_{i}",
                                        keep=w, register=stage if piped else None)
            saturate = extra((t < 0) & (sig != 0), f"left_{i}") | over | (mag > mags_max)
            clamped = Signal(range(mags_max + 1), name=f"clamped_{i}")
            m.d.comb += clamped.eq(Mux(saturate, mags_max, mag))
            mantissas.append(Mux(later(s1_sign[i], 3 * piped, f"sign4_{i}"), -clamped, clamped))

        result = Signal(self.block_layout, reset_less=True)
        with m.If(advance):
            m.d.sync += result.exponent.eq(encode_exponent(later(s1_e, 1 * piped, "e4"), f))
            m.d.sync += [result.mantissas[i].eq(mantissas[i]) for i in range(k)]
        m.d.comb += self.blocks.payload.eq(result)
        return m
