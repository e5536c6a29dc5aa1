"""MXIntLinear: y = x W^T + b with x, W and b in MXInt; output FP32 or MXInt; tiled over K and N.

The unit computes one *tile* of ``n_tile`` outputs of one row of x.  Each beat on ``operands``
carries one MXInt block of x (``block_size`` elements along K), the matching block of each of the
``n_tile`` rows of W, and the tile's bias (one MXInt value per output, read on the first beat
only).  After ``K / block_size`` beats the tile's results leave on ``results``; the next beat
starts the next tile (the caller walks N in ``N / n_tile`` passes and re-sends x, so W need not
be stored here).  Throughput: one beat per cycle.

Pipeline (global enable, latency 13 from the last beat of a tile; every stage at most a multiply,
an adder tree, one ``segment_bits``-wide ripple or a log-depth tree deep, so the longest path no
longer grows with the accumulator's width):

1. the element products of x with each of the ``n_tile`` rows of W;
2. ``n_tile`` exact block dot products (:func:`hw.primitives.adder_tree`) with their decoded
   exponents;
3. alignment: each dot product and the bias shifted left onto the accumulator grid, whose LSB
   weighs 2^(2 emin - 2f) (f = w - 2), the smallest weight any product can have, so nothing is
   lost (the width follows from K, w, block size and the exponent range);
4. exact accumulation in carry-save segments of ``segment_bits``: each segment adds on its own
   and its carry-out waits in a register for the next beat;
5-6. carry resolution at the tile's end: per-segment generate/propagate, a log-depth lookahead
   across segments, one log-depth increment per segment: the two's complement sum;
7-8. sign-magnitude: ones' complement and the lookahead of the +1, then the per-segment
   increments;
9. the leading one of each magnitude (a log-depth tree);
10-13. the only rounding: FP32 (half-even, subnormals, overflow to Inf; same result as rounding
   the exact real sum once) or an MXInt block of the ``n_tile`` outputs (shared exponent
   floor(log2 max|y|), clamped; mantissas rounded with ``rounding`` and saturated): exponent,
   shift amount, shift with guard and sticky, rounding add.

software_model.mxint.mxint_linear is the reference.
"""
import dataclasses

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import (block_fields, block_layout, carry_prefix, check_format,
                             clamp_exponent, decode_exponent, encode_exponent, exponent_shape,
                             exponent_text, increment, resolve_segments, round_magnitude)
from hw.primitives import (GlobalEnable, adder_tree, check_choice, check_positive, delay,
                           global_enable_protocol, max_tree, parameter_repr, tree_depth)
from software_model.mxint import MXIntFormat

__all__ = ["MXIntLinear", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = ("fp32", "mxint")


class MXIntLinear(wiring.Component):
    """``operands`` stream ``{x, w, bias}`` in, ``results`` stream out (FP32 bit patterns or an
    MXInt block of ``n_tile`` values).

    ``in_features``: K, a multiple of ``fmt.block_size``; ``n_tile``: outputs per tile; ``fmt``:
    the MXInt format of x, W and b (its rounding also rounds an MXInt output, whose blocks are
    the ``n_tile`` outputs of a tile); ``output_format``: ``"fp32"`` or ``"mxint"``;
    ``segment_bits``: the pipelining knob, bits per carry segment of the accumulator and of the
    accumulator-wide adds after it (at least 2; at least ``acc_width`` gives one segment, each
    such add one ripple as wide as the accumulator). The latency does not depend on it.
    """

    #: cycles from a tile's last beat to its results (the stages are listed in the docstring)
    latency = 13

    def __init__(self, *, in_features: int, n_tile: int, fmt: MXIntFormat,
                 output_format: str = "fp32", segment_bits: int = 16):
        check_format(fmt)
        check_positive("Input features", in_features)
        if in_features % fmt.block_size:
            raise ValueError(f"Input features must be a multiple of the block size "
                             f"({fmt.block_size}), not {in_features}")
        check_positive("Outputs per tile", n_tile)
        check_choice("Output format", output_format, OUTPUT_FORMATS)
        check_positive("Segment bits", segment_bits, minimum=2)
        self.in_features, self.n_tile, self.fmt = in_features, n_tile, fmt
        self.output_format = output_format
        self.segment_bits = segment_bits
        self.out_fmt = dataclasses.replace(fmt, block_size=n_tile)
        self.k_blocks = in_features // fmt.block_size
        #: weight 2^this of the exact accumulator's LSB: the smallest product weight
        self.acc_lsb_exponent = 2 * fmt.emin - 2 * fmt.fraction_bits
        #: largest left shift of a bias mantissa onto the accumulator grid
        self.bias_shift_max = fmt.emax - 2 * fmt.emin + fmt.fraction_bits
        # signed bits holding any sum of K/k dot products plus the bias exactly
        dot_bits = (2 * fmt.element_width - 1 + tree_depth(fmt.block_size)
                    + 2 * (fmt.emax - fmt.emin))
        bias_bits = fmt.element_width + self.bias_shift_max
        self.acc_width = max(dot_bits, bias_bits) + self.k_blocks.bit_length() + 1
        #: (low, high) bit ranges of the carry segments of the accumulator and its wide adds
        self.segments = [(lo, min(lo + segment_bits, self.acc_width))
                         for lo in range(0, self.acc_width, segment_bits)]

        bias = StructLayout({"exponent": exponent_shape(fmt),
                             "mantissa": signed(fmt.element_width)})
        self.operand_layout = StructLayout({
            "x": block_layout(fmt),
            "w": ArrayLayout(block_layout(fmt), n_tile),
            "bias": ArrayLayout(bias, n_tile),
        })
        if output_format == "fp32":
            self.result_layout = ArrayLayout(unsigned(32), n_tile)
        else:
            self.result_layout = block_layout(self.out_fmt)
        super().__init__({
            "operands": In(stream.Signature(self.operand_layout)),
            "results": Out(stream.Signature(self.result_layout)),
        })

    def __repr__(self):
        return parameter_repr(self, "in_features", "n_tile", "fmt", "output_format",
                              "segment_bits")

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        f, t, kb = self.fmt, self.n_tile, self.k_blocks
        k = f.block_size
        x = block_fields(f, "x element")
        if self.output_format == "fp32":
            result_fields = {"payload": f"payload[j], j = 0..{t - 1}: y[n0 + j] as an FP32 bit "
                                        "pattern (the exact sum rounded once, half-even, "
                                        "subnormals, overflow to Inf)"}
        else:
            result_fields = block_fields(self.out_fmt, "y[n0 + i] is element")
        return global_enable_protocol(
            source="operands", sink="results",
            source_beat=f"block b of one tile: x[b*{k} .. b*{k}+{k - 1}] with the same K range "
                        f"of W rows n0 .. n0+{t - 1}; a tile is exactly {kb} beats "
                        f"(in_features / block_size = {self.in_features} / {k}), counted from "
                        "reset (there is no last field)",
            source_fields={
                "x": f"one block of x along K: {x['exponent']}; {x['mantissas']}",
                "w": f"w[j], j = 0..{t - 1}: the same K block of W row n0 + j (MXInt "
                     "block, same format)",
                "bias": f"bias[j], j = 0..{t - 1}: b[n0 + j] = mantissa * "
                        f"2^(e - {f.fraction_bits}) ({exponent_text(f)}; mantissa signed "
                        f"{f.element_width} bits); read on the tile's first beat only",
            },
            sink_beat=f"the {t} outputs y[n0 .. n0+{t - 1}] of one tile",
            sink_fields=result_fields,
            order=f"one beat per tile ({kb} operand beats), in order; the caller walks N in "
                  f"tiles of {t} and re-sends x for each",
            latency=self.latency, taken="a tile's last beat", offered="its result", unit="beat",
            arithmetic="exact block dot products and accumulation, one rounding to the output "
                       "format (software_model.mxint.mxint_linear)")

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        t, k, w = self.n_tile, f.block_size, f.element_width
        fb = f.fraction_bits
        lsb = self.acc_lsb_exponent                 # 2 emin - 2f
        acc_width = self.acc_width
        segs = self.segments
        ops = self.operands

        # control: position of the beat inside its tile
        beat = Signal(range(max(2, self.k_blocks)))
        first = beat == 0
        last = beat == self.k_blocks - 1
        # A tile's results leave `latency` stages after its last beat: the pipeline's valid bits
        # follow the closing beats; every beat's accumulation is gated by its own `s2_beat`.
        closing = stream.Signature(0).create(path=("closing",))
        m.d.comb += [closing.valid.eq(ops.valid & last), ops.ready.eq(closing.ready)]
        ctl = GlobalEnable(m, source=closing, sink=self.results, stages=self.latency,
                           name="tile")
        advance = ctl.advance
        take = ops.valid & advance
        with m.If(take):
            m.d.sync += beat.eq(Mux(last, 0, beat + 1))

        stage = ctl.register

        # -- stage 1: the products (registered before the adder trees: a multiply and a
        # block-wide tree in one stage would be deeper than a MAC PE) -----------------------------
        p_beat = delay(m, ops.valid, 1, name="p_beat", reset_less=False, enable=advance)
        p_first = delay(m, first, 1, name="p_first", enable=advance)
        products = [[stage(ops.payload.x.mantissas[i] * ops.payload.w[n].mantissas[i],
                           f"product_{n}_{i}") for i in range(k)] for n in range(t)]
        x_exp = stage(ops.payload.x.exponent, "x_exp_r")
        w_exp = [stage(ops.payload.w[n].exponent, f"w_exp_r_{n}") for n in range(t)]
        b_man = [stage(ops.payload.bias[n].mantissa, f"b_man_r_{n}") for n in range(t)]
        b_exp = [stage(ops.payload.bias[n].exponent, f"b_exp_r_{n}") for n in range(t)]

        # -- stage 2: dot products -----------------------------------------------------------------
        dot_width = 2 * w + tree_depth(k)
        totals = Signal(ArrayLayout(signed(dot_width), t), reset_less=True)
        dot_shift = Signal(ArrayLayout(unsigned(f.exponent_width + 2), t), reset_less=True)
        bias_val = Signal(ArrayLayout(signed(w), t), reset_less=True)
        bias_shift = Signal(ArrayLayout(range(self.bias_shift_max + 1), t), reset_less=True)
        s1_beat = delay(m, p_beat, 1, name="s1_beat", reset_less=False, enable=advance)
        s1_first = delay(m, p_first, 1, name="s1_first", enable=advance)
        ex = decode_exponent(x_exp, f)
        with m.If(advance):
            for n in range(t):
                m.d.sync += [
                    totals[n].eq(adder_tree(m, products[n])),
                    # left shifts onto the accumulator grid (both >= 0 by choice of lsb)
                    dot_shift[n].eq(ex + decode_exponent(w_exp[n], f) - 2 * f.emin),
                    bias_val[n].eq(b_man[n]),
                    bias_shift[n].eq(decode_exponent(b_exp[n], f) - fb - lsb),
                ]

        # -- stage 3: alignment onto the accumulator grid (two barrel shifts, registered so the
        # segment adds of stage 4 start from flops) -------------------------------------------
        s2_beat = delay(m, s1_beat, 1, name="s2_beat", reset_less=False, enable=advance)
        s2_first = delay(m, s1_first, 1, name="s2_first", enable=advance)
        def on_grid(value, name):
            """``value`` sign-extended (or wrapped) to the accumulator's width."""
            sig = Signal(signed(acc_width), name=name)
            m.d.comb += sig.eq(value)
            return sig
        addend = [stage(on_grid(totals[n] << dot_shift[n], f"aligned_{n}"), f"addend_{n}")
                  for n in range(t)]
        bias_al = [stage(on_grid(bias_val[n] << bias_shift[n], f"bias_aligned_{n}"),
                         f"bias_al_{n}") for n in range(t)]

        # -- stage 4: exact accumulation in carry-save segments ---------------------------------
        # The acc_width-bit sum would be one ripple as wide as the accumulator; instead each
        # segment adds on its own and its carry-out waits in a register for the next beat (the
        # value is sum(segments) + sum(carries), modulo 2^acc_width like the two's complement
        # sum). One beat per cycle, one segment ripple deep.
        finals = []
        for n in range(t):
            acc = [Signal(hi - lo, name=f"acc_{n}_s{i}", reset_less=True)
                   for i, (lo, hi) in enumerate(segs)]
            carry = [None] + [Signal(name=f"acc_{n}_c{i}", reset_less=True)
                              for i in range(1, len(segs))]
            fin_s = [Signal(hi - lo, name=f"final_{n}_s{i}", reset_less=True)
                     for i, (lo, hi) in enumerate(segs)]
            fin_c = [None] + [Signal(name=f"final_{n}_c{i}", reset_less=True)
                              for i in range(1, len(segs))]
            for i, (lo, hi) in enumerate(segs):
                start = Mux(s2_first, bias_al[n][lo:hi], acc[i])
                cin = C(0, 1) if i == 0 else carry[i] & ~s2_first
                # a + b + cin as one adder: (2a + cin) + (2b + cin) = 2 (a + b + cin)
                total = Signal(hi - lo + 1, name=f"acc_next_{n}_s{i}")
                m.d.comb += total.eq((Cat(cin, start) + Cat(cin, addend[n][lo:hi]))[1:])
                with m.If(advance & s2_beat):
                    m.d.sync += acc[i].eq(total[:hi - lo])
                    if i + 1 < len(segs):
                        m.d.sync += carry[i + 1].eq(total[-1])
                    with m.If(ctl.valid[3]):            # the tile's last beat
                        m.d.sync += fin_s[i].eq(total[:hi - lo])
                        if i + 1 < len(segs):
                            m.d.sync += fin_c[i + 1].eq(total[-1])
            finals.append((fin_s, fin_c))

        # -- stages 5-8: carry resolution and magnitude -------------------------------------------
        mags, signs = [], []
        for n, (fin_s, fin_c) in enumerate(finals):
            # 5: each segment takes its pending carry; generate/propagate for the lookahead;
            # 6: log-depth carry lookahead across segments, then one increment per segment:
            # the accumulator's two's complement value
            value = resolve_segments(m, fin_s, fin_c, segs, stage, name=f"res_{n}",
                                     result=f"sum_{n}").as_signed()
            # 7: sign-magnitude |v| = (v xor sign) + sign: the ones' complement, and the carry
            # of the +1 into each segment (it passes a segment whose value bits are all zero)
            sign = value[-1]
            flipped = stage(value ^ sign.replicate(acc_width), f"flipped_{n}")
            ncins = [stage(c, f"neg_{n}_c{i}") for i, c in enumerate(carry_prefix(
                sign, [C(0, 1)] * len(segs), [~value[lo:hi].any() for lo, hi in segs]))]
            # 8: the +1, one log-depth increment per segment
            mags.append(stage(Cat(*[increment(m, flipped[lo:hi], ncins[i],
                                              name=f"mag_{n}_inc{i}")[:hi - lo]
                                    for i, (lo, hi) in enumerate(segs)]), f"mag_{n}"))
            signs.append(delay(m, sign, 2, name=f"sign_{n}", enable=advance))

        # -- stages 9-13: the one rounding ---------------------------------------------------------
        msbs, nonzero = [], []
        for n, mag in enumerate(mags):
            msb, any_set = _leading_one_tree(mag)
            msbs.append(stage(msb, f"msb_{n}"))
            nonzero.append(stage(any_set, f"nonzero_{n}"))
        mags = [delay(m, mag, 1, name=f"mag9_{n}", enable=advance) for n, mag in enumerate(mags)]
        signs = [delay(m, s, 1, name=f"sign9_{n}", enable=advance) for n, s in enumerate(signs)]
        if self.output_format == "fp32":
            out = self._round_fp32(m, ctl, mags, signs, msbs, nonzero, lsb)
        else:
            out = self._round_mxint(m, ctl, mags, signs, msbs, nonzero, lsb)
        result = Signal(self.result_layout, reset_less=True)
        with m.If(advance):
            m.d.sync += result.eq(out)
        m.d.comb += self.results.payload.eq(result)
        return m

    def _round_fp32(self, m, ctl, mags, signs, msbs, nonzero, lsb):
        """|y| = mag * 2^lsb -> FP32 bits, round half-even once, subnormals and Inf as IEEE.
        Four register stages: exponent, shift amount, shift with guard and sticky, round."""
        width = len(mags[0])
        headroom = 23                     # a result narrower than 24 bits shifts left
        cap = width + headroom + 1        # larger right shifts all round to zero
        later = lambda v, cycles, name: delay(m, v, cycles, name=name,    # noqa: E731
                                              enable=ctl.advance)
        stage = ctl.register
        words = []
        for n, (mag, msb) in enumerate(zip(mags, msbs)):
            # stage 10: floor(log2 |y|)
            top = Signal(signed(16), name=f"top_{n}")
            m.d.comb += top.eq(msb + lsb)
            top = stage(top, f"top_r_{n}")
            # stage 11: the right shift onto the FP32 grid
            normal = top >= -126
            step = Mux(normal, top, -126) - 23                     # FP32 ulp exponent
            shift = Signal(signed(16), name=f"fp_shift_{n}")
            m.d.comb += shift.eq(step - lsb + headroom)
            shift_cap = Signal(range(cap + 1), name=f"fp_shift_cap_{n}")
            # shift < 0 only on the unselected subnormal path of a grid that cannot reach it
            m.d.comb += shift_cap.eq(Mux(shift < 0, 0, Mux(shift > cap, cap, shift)))
            shift_cap = stage(shift_cap, f"fp_shift_cap_r_{n}")
            top, normal = later(top, 1, f"top11_{n}"), later(normal, 1, f"normal11_{n}")
            # stages 12 and 13: shift with guard and sticky, then the rounding add; at most 24
            # bits and the rounding carry: the rest of the quotient is always zero
            rounded, _ = round_magnitude(m, Cat(Const(0, headroom), later(mag, 2, f"mag11_{n}")),
                                         shift_cap, rounding="half_even", name=f"fp_{n}", keep=26,
                                         register=stage)
            top, normal = later(top, 1, f"top12_{n}"), later(normal, 1, f"normal12_{n}")
            # exponent field - 1 in the upper bits, then adding the significand's hidden bit
            # carries into it: a rounding carry to 2^24 bumps the exponent for free
            packed = Signal(40, name=f"fp_packed_{n}")
            m.d.comb += packed.eq(Mux(normal, (top + 126).as_unsigned() << 23, 0) + rounded[:26])
            magnitude = Signal(31, name=f"fp_mag_{n}")
            with m.If(~later(nonzero[n], 3, f"nonzero12_{n}")):
                m.d.comb += magnitude.eq(0)
            with m.Elif((top > 127) | (packed >= 0x7F800000)):
                m.d.comb += magnitude.eq(0x7F800000)
            with m.Else():
                m.d.comb += magnitude.eq(packed)
            words.append(Cat(magnitude, later(signs[n], 3, f"sign12_{n}")))
        return Cat(*words)

    def _round_mxint(self, m, ctl, mags, signs, msbs, nonzero, lsb):
        """The n_tile magnitudes -> one MXInt block. Four register stages: the block's top bit,
        shared exponent and shifts, shift with guard and sticky, round and saturate."""
        of = self.out_fmt
        width = len(mags[0])
        later = lambda v, cycles, name: delay(m, v, cycles, name=name,    # noqa: E731
                                              enable=ctl.advance)
        stage = ctl.register
        tops = []
        for n, msb in enumerate(msbs):
            top = Signal(range(width + 1), name=f"top_{n}")        # msb + 1, 0 for zero
            m.d.comb += top.eq(Mux(nonzero[n], msb + 1, 0))
            tops.append(top)
        # stage 10: the block maximum
        top_max = Signal(range(width + 1))
        m.d.comb += top_max.eq(max_tree(tops))
        top_max = stage(top_max, "top_max_r")
        # stage 11: shared exponent and each right shift
        e_true = Signal(signed(16))
        m.d.comb += e_true.eq(top_max - 1 + lsb)
        e_blk = clamp_exponent(m, e_true, empty=top_max == 0, fmt=of, shape=signed(16),
                               name="e_blk")
        cap = width + 1
        shift = Signal(signed(16), name="mx_shift")      # >= 1: lsb is below e - f
        m.d.comb += shift.eq(e_blk - of.fraction_bits - lsb)
        shift_cap = Signal(range(cap + 1), name="mx_shift_cap")
        m.d.comb += shift_cap.eq(Mux(shift > cap, cap, shift))
        shift_cap = stage(shift_cap, "mx_shift_cap_r")
        e_out = later(encode_exponent(stage(e_blk, "e_blk_r"), of), 1, "e_out")
        mans = []
        for n, mag in enumerate(mags):
            # stages 12 and 13: shift with guard and sticky, then round and saturate; a quotient
            # bit above the element width is already beyond mantissa_max
            rounded, over = round_magnitude(m, later(mag, 2, f"mag11_{n}"), shift_cap,
                                            rounding=of.rounding, name=f"mx_{n}",
                                            keep=of.element_width, register=stage)
            clamped = Signal(range(of.mantissa_max + 1), name=f"mx_clamped_{n}")
            m.d.comb += clamped.eq(Mux(over | (rounded > of.mantissa_max), of.mantissa_max,
                                       rounded))
            mans.append(Mux(later(signs[n], 3, f"sign12_{n}"), -clamped,
                            clamped)[:of.element_width])
        return Cat(e_out, *mans)


def _leading_one_tree(value):
    """(index of the highest set bit, any bit set) of ``value`` as a tree of 2:1 muxes, log2 of
    the width deep (a priority chain would be as deep as the value is wide)."""
    value = Value.cast(value)
    bits = max(1, (len(value) - 1).bit_length())
    padded = Cat(value, Const(0, (1 << bits) - len(value)))

    def tree(lo, size):
        if size == 1:
            return C(0, 0), padded[lo]
        half = size // 2
        pos_lo, any_lo = tree(lo, half)
        pos_hi, any_hi = tree(lo + half, half)
        # the pair of single bits has no lower index bits to choose (no zero-width mux)
        low = Mux(any_hi, pos_hi, pos_lo) if len(pos_hi) else C(0, 0)
        return Cat(low, any_hi), any_hi | any_lo

    pos, any_set = tree(0, 1 << bits)
    return pos, any_set
