"""MXIntLinear: y = x W^T + b with x, W and b in MXInt; output FP32 or MXInt; tiled over K and N.

The unit computes one *tile* of ``n_tile`` outputs of one row of x.  Each beat on ``operands``
carries one MXInt block of x (``block_size`` elements along K), the matching block of each of the
``n_tile`` rows of W, and the tile's bias (one MXInt value per output, read on the first beat
only).  After ``K / block_size`` beats the tile's results leave on ``results``; the next beat
starts the next tile (the caller walks N in ``N / n_tile`` passes and re-sends x, so W need not
be stored here).  Throughput: one beat per cycle.

Pipeline (global enable, latency 3 from the last beat of a tile):

1. ``n_tile`` exact block dot products (``hw.mxint_dot.adder_tree``) with their decoded exponents;
2. exact fixed-point accumulation: the LSB weighs 2^(2 emin - 2f) (f = w - 2), the smallest weight
   any product can have, so every dot product and the bias are added after a *left* shift and
   nothing is lost (the width follows from K, w, block size and the exponent range);
3. the only rounding: FP32 (half-even, subnormals, overflow to Inf; same result as rounding the
   exact real sum once) or an MXInt block of the ``n_tile`` outputs (shared exponent
   floor(log2 max|y|), clamped; mantissas rounded with ``rounding`` and saturated).

software_model.mxint.mxint_linear is the reference.
"""
from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_layout, decode_exponent, encode_exponent, exponent_shape
from hw.mxint_common import leading_one, max_tree
from hw.mxint_dot import adder_tree

__all__ = ["MXIntLinear"]


class MXIntLinear(wiring.Component):
    """``operands`` stream ``{x, w, bias}`` in, ``results`` stream out (FP32 bit patterns or an
    MXInt block of ``n_tile`` values)."""

    def __init__(self, config):
        if config.in_features % config.block_size:
            raise ValueError(f"in_features ({config.in_features}) must be a multiple of "
                             f"block_size ({config.block_size})")
        if config.output_format not in ("fp32", "mxint"):
            raise ValueError(f"Output format must be 'fp32' or 'mxint', "
                             f"not {config.output_format!r}")
        self.config = config
        self.fmt = config.fmt
        self.out_fmt = config.out_fmt
        f, t = self.fmt, config.n_tile
        bias = StructLayout({"exponent": exponent_shape(f), "mantissa": signed(f.element_width)})
        if config.output_format == "fp32":
            out_layout = ArrayLayout(unsigned(32), t)
        else:
            out_layout = block_layout(self.out_fmt)
        super().__init__({
            "operands": In(stream.Signature(StructLayout({
                "x": block_layout(f),
                "w": ArrayLayout(block_layout(f), t),
                "bias": ArrayLayout(bias, t),
            }))),
            "results": Out(stream.Signature(out_layout)),
        })

    def __repr__(self):
        c = self.config
        return (f"MXIntLinear(in_features={c.in_features}, n_tile={c.n_tile}, "
                f"block_size={c.block_size}, element_width={c.element_width}, "
                f"exponent_width={c.exponent_width}, output_format={c.output_format})")

    def elaborate(self, platform):
        m = Module()
        c, f = self.config, self.fmt
        t, k, w = c.n_tile, f.block_size, f.element_width
        fb = f.fraction_bits
        lsb = c.acc_lsb_exponent                    # 2 emin - 2f
        acc_width = c.acc_width
        advance = ~self.results.valid | self.results.ready
        take = self.operands.valid & advance
        m.d.comb += self.operands.ready.eq(advance)
        ops = self.operands.payload

        # control: position of the beat inside its tile
        beat = Signal(range(max(2, c.k_blocks)))
        first = beat == 0
        last = beat == c.k_blocks - 1
        with m.If(take):
            m.d.sync += beat.eq(Mux(last, 0, beat + 1))

        # -- stage 1: dot products ---------------------------------------------------------------
        dot_width = 2 * w + max(0, (k - 1).bit_length())
        totals = Signal(ArrayLayout(signed(dot_width), t), reset_less=True)
        dot_shift = Signal(ArrayLayout(unsigned(f.exponent_width + 2), t), reset_less=True)
        bias_val = Signal(ArrayLayout(signed(w), t), reset_less=True)
        bias_shift = Signal(ArrayLayout(range(c.bias_shift_max + 1), t), reset_less=True)
        s1_first, s1_last = Signal(reset_less=True), Signal(reset_less=True)
        s1_valid = Signal()
        ex = decode_exponent(ops.x.exponent, f)
        with m.If(advance):
            for n in range(t):
                wb = ops.w[n]
                m.d.sync += [
                    totals[n].eq(adder_tree([ops.x.mantissas[i] * wb.mantissas[i]
                                             for i in range(k)])),
                    # left shifts onto the accumulator grid (both >= 0 by choice of lsb)
                    dot_shift[n].eq(ex + decode_exponent(wb.exponent, f) - 2 * f.emin),
                    bias_val[n].eq(ops.bias[n].mantissa),
                    bias_shift[n].eq(decode_exponent(ops.bias[n].exponent, f) - fb - lsb),
                ]
            m.d.sync += [s1_first.eq(first), s1_last.eq(last), s1_valid.eq(take)]

        # -- stage 2: exact accumulation -------------------------------------------------------
        acc = Signal(ArrayLayout(signed(acc_width), t), reset_less=True)
        final = Signal(ArrayLayout(signed(acc_width), t), reset_less=True)
        s2_valid = Signal()
        with m.If(advance):
            m.d.sync += s2_valid.eq(s1_valid & s1_last)
            for n in range(t):
                start = Signal(signed(acc_width), name=f"start_{n}")
                m.d.comb += start.eq(Mux(s1_first, bias_val[n] << bias_shift[n], acc[n]))
                total = Signal(signed(acc_width), name=f"acc_next_{n}")
                m.d.comb += total.eq(start + (totals[n] << dot_shift[n]))
                with m.If(s1_valid):
                    m.d.sync += acc[n].eq(total)
                    with m.If(s1_last):
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
        if c.output_format == "fp32":
            out = self._round_fp32(m, mags, signs, msbs, nonzero, lsb)
        else:
            out = self._round_mxint(m, mags, signs, msbs, nonzero, lsb)
        result = Signal.like(self.results.payload, reset_less=True)
        with m.If(advance):
            m.d.sync += [result.eq(out), self.results.valid.eq(s2_valid)]
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
            x = Cat(Const(0, headroom), mag)
            wide = Signal(2 * len(x) + 1, name=f"fp_wide_{n}")
            m.d.comb += wide.eq(Cat(Const(0, len(x) + 1), x) >> shift_cap)
            q = wide[len(x) + 1:]
            up = wide[len(x)] & (wide[:len(x)].any() | q[0])
            rounded = Signal(26, name=f"fp_sig_{n}")
            m.d.comb += rounded.eq(q + up)
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
        e_blk = Signal(signed(16))
        with m.If((top_max == 0) | (e_true < of.emin)):
            m.d.comb += e_blk.eq(of.emin)
        with m.Elif(e_true > of.emax):
            m.d.comb += e_blk.eq(of.emax)
        with m.Else():
            m.d.comb += e_blk.eq(e_true)
        cap = width + 1
        mans = []
        for n, mag in enumerate(mags):
            shift = Signal(signed(16), name=f"mx_shift_{n}")      # >= 1: lsb is below e - f
            m.d.comb += shift.eq(e_blk - of.fraction_bits - lsb)
            shift_cap = Signal(range(cap + 1), name=f"mx_shift_cap_{n}")
            m.d.comb += shift_cap.eq(Mux(shift > cap, cap, shift))
            wide = Signal(2 * width + 1, name=f"mx_wide_{n}")
            m.d.comb += wide.eq(Cat(Const(0, width + 1), mag) >> shift_cap)
            q = wide[width + 1:]
            if of.rounding == "half_even":
                up = wide[width] & (wide[:width].any() | q[0])
            else:
                up = wide[width]
            rounded = Signal(width + 1, name=f"mx_round_{n}")
            m.d.comb += rounded.eq(q + up)
            clamped = Signal(range(of.mantissa_max + 1), name=f"mx_clamped_{n}")
            m.d.comb += clamped.eq(Mux(rounded > of.mantissa_max, of.mantissa_max, rounded))
            mans.append(Mux(signs[n], -clamped, clamped)[:of.element_width])
        return Cat(encode_exponent(e_blk, of), *mans)
