"""MXIntLinear: y = x W^T + b with x, W and b in MXInt; output FP32 or MXInt; tiled over K and N.

The unit computes one *tile* of ``n_tile`` outputs of one row of x.  Each beat on ``operands``
carries one MXInt block of x (``block_size`` elements along K), the matching block of each of the
``n_tile`` rows of W, and the tile's bias (one MXInt value per output, read on the first beat
only).  After ``K / block_size`` beats the tile's results leave on ``results``; the next beat
starts the next tile (the caller walks N in ``N / n_tile`` passes and re-sends x, so W need not
be stored here).  Throughput: one beat per cycle.

Pipeline (global enable, latency 3 from the last beat of a tile):

1. ``n_tile`` exact block dot products (:func:`hw.primitives.adder_tree`) with their decoded
   exponents;
2. exact fixed-point accumulation: the LSB weighs 2^(2 emin - 2f) (f = w - 2), the smallest weight
   any product can have, so every dot product and the bias are added after a *left* shift and
   nothing is lost (the width follows from K, w, block size and the exponent range);
3. the only rounding: FP32 (half-even, subnormals, overflow to Inf; same result as rounding the
   exact real sum once) or an MXInt block of the ``n_tile`` outputs (shared exponent
   floor(log2 max|y|), clamped; mantissas rounded with ``rounding`` and saturated).

software_model.mxint.mxint_linear is the reference.
"""
import dataclasses

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import (block_layout, check_format, clamp_exponent, decode_exponent,
                             encode_exponent, exponent_shape, round_magnitude)
from hw.primitives import (GlobalEnable, adder_tree, check_choice, check_positive, delay,
                           leading_one, max_tree, parameter_repr, tree_depth)
from software_model.mxint import MXIntFormat

__all__ = ["MXIntLinear", "OUTPUT_FORMATS"]

OUTPUT_FORMATS = ("fp32", "mxint")


class MXIntLinear(wiring.Component):
    """``operands`` stream ``{x, w, bias}`` in, ``results`` stream out (FP32 bit patterns or an
    MXInt block of ``n_tile`` values).

    ``in_features``: K, a multiple of ``fmt.block_size``; ``n_tile``: outputs per tile; ``fmt``:
    the MXInt format of x, W and b (its rounding also rounds an MXInt output, whose blocks are
    the ``n_tile`` outputs of a tile); ``output_format``: ``"fp32"`` or ``"mxint"``.
    """

    latency = 3

    def __init__(self, *, in_features: int, n_tile: int, fmt: MXIntFormat,
                 output_format: str = "fp32"):
        check_format(fmt)
        check_positive("Input features", in_features)
        if in_features % fmt.block_size:
            raise ValueError(f"Input features must be a multiple of the block size "
                             f"({fmt.block_size}), not {in_features}")
        check_positive("Outputs per tile", n_tile)
        check_choice("Output format", output_format, OUTPUT_FORMATS)
        self.in_features, self.n_tile, self.fmt = in_features, n_tile, fmt
        self.output_format = output_format
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
        return parameter_repr(self, "in_features", "n_tile", "fmt", "output_format")

    def elaborate(self, platform):
        m = Module()
        f = self.fmt
        t, k, w = self.n_tile, f.block_size, f.element_width
        fb = f.fraction_bits
        lsb = self.acc_lsb_exponent                 # 2 emin - 2f
        acc_width = self.acc_width
        ops = self.operands

        # control: position of the beat inside its tile
        beat = Signal(range(max(2, self.k_blocks)))
        first = beat == 0
        last = beat == self.k_blocks - 1
        # A tile's results leave three stages after its last beat: the pipeline's valid bits
        # follow the closing beats; every beat's accumulation is gated by its own `s1_beat`.
        closing = stream.Signature(0).create(path=("closing",))
        m.d.comb += [closing.valid.eq(ops.valid & last), ops.ready.eq(closing.ready)]
        ctl = GlobalEnable(m, source=closing, sink=self.results, stages=self.latency,
                           name="tile")
        advance = ctl.advance
        take = ops.valid & advance
        with m.If(take):
            m.d.sync += beat.eq(Mux(last, 0, beat + 1))

        # -- stage 1: dot products ---------------------------------------------------------------
        dot_width = 2 * w + tree_depth(k)
        totals = Signal(ArrayLayout(signed(dot_width), t), reset_less=True)
        dot_shift = Signal(ArrayLayout(unsigned(f.exponent_width + 2), t), reset_less=True)
        bias_val = Signal(ArrayLayout(signed(w), t), reset_less=True)
        bias_shift = Signal(ArrayLayout(range(self.bias_shift_max + 1), t), reset_less=True)
        s1_beat = delay(m, ops.valid, 1, name="s1_beat", reset_less=False, enable=advance)
        s1_first = delay(m, first, 1, name="s1_first", enable=advance)
        ex = decode_exponent(ops.payload.x.exponent, f)
        with m.If(advance):
            for n in range(t):
                wb = ops.payload.w[n]
                m.d.sync += [
                    totals[n].eq(adder_tree(m, [ops.payload.x.mantissas[i] * wb.mantissas[i]
                                                for i in range(k)])),
                    # left shifts onto the accumulator grid (both >= 0 by choice of lsb)
                    dot_shift[n].eq(ex + decode_exponent(wb.exponent, f) - 2 * f.emin),
                    bias_val[n].eq(ops.payload.bias[n].mantissa),
                    bias_shift[n].eq(decode_exponent(ops.payload.bias[n].exponent, f) - fb - lsb),
                ]

        # -- stage 2: exact accumulation -------------------------------------------------------
        acc = Signal(ArrayLayout(signed(acc_width), t), reset_less=True)
        final = Signal(ArrayLayout(signed(acc_width), t), reset_less=True)
        for n in range(t):
            start = Signal(signed(acc_width), name=f"start_{n}")
            m.d.comb += start.eq(Mux(s1_first, bias_val[n] << bias_shift[n], acc[n]))
            total = Signal(signed(acc_width), name=f"acc_next_{n}")
            m.d.comb += total.eq(start + (totals[n] << dot_shift[n]))
            with m.If(advance & s1_beat):
                m.d.sync += acc[n].eq(total)
                with m.If(ctl.valid[1]):            # the tile's last beat
                    m.d.sync += final[n].eq(total)

        # -- stage 3: the one rounding -------------------------------------------------------------
        mags, signs, msbs, nonzero = [], [], [], []
        for n in range(t):
            mag = Signal(acc_width, name=f"mag_{n}")
            m.d.comb += mag.eq(Mux(final[n] < 0, -final[n], final[n]))
            mags.append(mag)
            signs.append(final[n] < 0)
            msbs.append(leading_one(m, mag, f"msb_{n}"))
            nonzero.append(mag != 0)
        if self.output_format == "fp32":
            out = self._round_fp32(m, mags, signs, msbs, nonzero, lsb)
        else:
            out = self._round_mxint(m, mags, signs, msbs, nonzero, lsb)
        result = Signal(self.result_layout, reset_less=True)
        with m.If(advance):
            m.d.sync += result.eq(out)
        m.d.comb += self.results.payload.eq(result)
        return m

    def _round_fp32(self, m, mags, signs, msbs, nonzero, lsb):
        """|y| = mag * 2^lsb -> FP32 bits, round half-even once, subnormals and Inf as IEEE."""
        width = len(mags[0])
        headroom = 23                     # a result narrower than 24 bits shifts left
        cap = width + headroom + 1        # larger right shifts all round to zero
        words = []
        for n, (mag, msb) in enumerate(zip(mags, msbs)):
            top = Signal(signed(16), name=f"top_{n}")            # floor(log2 |y|)
            m.d.comb += top.eq(msb + lsb)
            normal = top >= -126
            step = Mux(normal, top, -126) - 23                     # FP32 ulp exponent
            shift = Signal(signed(16), name=f"fp_shift_{n}")
            m.d.comb += shift.eq(step - lsb + headroom)
            shift_cap = Signal(range(cap + 1), name=f"fp_shift_cap_{n}")
            # shift < 0 only on the unselected subnormal path of a grid that cannot reach it
            m.d.comb += shift_cap.eq(Mux(shift < 0, 0, Mux(shift > cap, cap, shift)))
            # at most 24 bits and the rounding carry: the rest of the quotient is always zero
            rounded = round_magnitude(m, Cat(Const(0, headroom), mag), shift_cap,
                                      rounding="half_even", name=f"fp_{n}")[:26]
            # exponent field - 1 in the upper bits, then adding the significand's hidden bit
            # carries into it: a rounding carry to 2^24 bumps the exponent for free
            packed = Signal(40, name=f"fp_packed_{n}")
            m.d.comb += packed.eq(Mux(normal, (top + 126).as_unsigned() << 23, 0) + rounded)
            magnitude = Signal(31, name=f"fp_mag_{n}")
            with m.If(~nonzero[n]):
                m.d.comb += magnitude.eq(0)
            with m.Elif((top > 127) | (packed >= 0x7F800000)):
                m.d.comb += magnitude.eq(0x7F800000)
            with m.Else():
                m.d.comb += magnitude.eq(packed)
            words.append(Cat(magnitude, signs[n]))
        return Cat(*words)

    def _round_mxint(self, m, mags, signs, msbs, nonzero, lsb):
        of = self.out_fmt
        width = len(mags[0])
        tops = []
        for n, msb in enumerate(msbs):
            top = Signal(range(width + 1), name=f"top_{n}")        # msb + 1, 0 for zero
            m.d.comb += top.eq(Mux(nonzero[n], msb + 1, 0))
            tops.append(top)
        top_max = Signal(range(width + 1))
        m.d.comb += top_max.eq(max_tree(tops))
        e_true = Signal(signed(16))
        m.d.comb += e_true.eq(top_max - 1 + lsb)
        e_blk = clamp_exponent(m, e_true, empty=top_max == 0, fmt=of, shape=signed(16),
                               name="e_blk")
        cap = width + 1
        mans = []
        for n, mag in enumerate(mags):
            shift = Signal(signed(16), name=f"mx_shift_{n}")      # >= 1: lsb is below e - f
            m.d.comb += shift.eq(e_blk - of.fraction_bits - lsb)
            shift_cap = Signal(range(cap + 1), name=f"mx_shift_cap_{n}")
            m.d.comb += shift_cap.eq(Mux(shift > cap, cap, shift))
            rounded = round_magnitude(m, mag, shift_cap, rounding=of.rounding, name=f"mx_{n}")
            clamped = Signal(range(of.mantissa_max + 1), name=f"mx_clamped_{n}")
            m.d.comb += clamped.eq(Mux(rounded > of.mantissa_max, of.mantissa_max, rounded))
            mans.append(Mux(signs[n], -clamped, clamped)[:of.element_width])
        return Cat(encode_exponent(e_blk, of), *mans)
