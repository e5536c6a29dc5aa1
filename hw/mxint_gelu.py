"""MXIntGELU: erf GELU of one MXInt block per cycle (software_model/mxint_gelu.py is the
reference, bit for bit).

Pipeline (global enable: every register holds while the output is held):

1. each element onto the fixed grid of ``frac_bits`` fraction bits (one shared shift per block,
   saturated): ``x_q``;
2. inside the approximation range, the polynomial's code ``u = x_q + 2^(range_bits +
   frac_bits)``; segment coefficients from constant tables (registered), then one registered
   multiply-add per degree (exact Horner, one floor at the end);
3. ``y``: the polynomial inside the range, ``x`` above it, 0 below;
4. :func:`hw.mxint_fixed.fixed_to_mxint`: the block's shared exponent from an OR tree of the
   magnitudes, one rounding, saturation (4 stages).

Latency :attr:`MXIntGELU.latency` cycles (7 + degree with the defaults), one block per cycle.
"""
from amaranth import *
from amaranth.lib import stream
from amaranth.lib.wiring import In, Out

from hw.mxint_common import block_fields, block_layout, check_format, decode_exponent
from hw.mxint_fixed import Staged, piecewise_polynomial, scale_saturate
from hw.primitives import global_enable_protocol
from hw.mxint_unit import MXIntUnit
from software_model.mxint_gelu import GeluSpec

__all__ = ["MXIntGELU"]


class MXIntGELU(MXIntUnit):
    """``blocks`` stream of MXInt blocks (``in_format``) in, ``results`` stream of MXInt blocks
    (``out_format``) out.  Every argument is keyword-only; the arithmetic ones are those of
    :class:`software_model.mxint_gelu.GeluSpec`, plus the pipeline's ``tree_levels`` (levels
    of the output's OR tree between registers) and ``multiplier_chunk_bits`` (split the Horner
    multipliers' ``delta`` operand into registered chunks of this many bits; None: never)."""

    _spec_repr = ("frac_bits", "range_bits", "segment_bits", "degree", "out_frac_bits")

    def __init__(self, *, in_format, out_format, frac_bits=8, int_bits=8, range_bits=2,
                 segment_bits=4, degree=2, out_frac_bits=10, tree_levels=2,
                 multiplier_chunk_bits=None):
        check_format(in_format)
        check_format(out_format)
        self.spec = GeluSpec(in_format, out_format, frac_bits, int_bits, range_bits,
                             segment_bits, degree, out_frac_bits)
        self._pipeline_knobs(tree_levels, multiplier_chunk_bits)
        self.latency = self._build_latency()
        super().__init__({
            "blocks": In(stream.Signature(block_layout(in_format))),
            "results": Out(stream.Signature(block_layout(out_format))),
        })

    def protocol(self) -> dict:
        """How to drive the streams, for manifest.json (an integrator needs nothing else)."""
        return global_enable_protocol(
            source="blocks", sink="results", source_beat="one MXInt block of x",
            source_fields=block_fields(self.spec.in_fmt, "element"),
            sink_beat="GELU(x) of one blocks beat, element by element",
            sink_fields=block_fields(self.spec.out_fmt, "GELU of element"),
            latency=self.latency, taken="a block", offered="its result", unit="block",
            arithmetic="erf GELU by a piecewise polynomial on a fixed grid, one rounding "
                       "(software_model.mxint_gelu.mxint_gelu)")

    def _build_latency(self) -> int:
        m = Module()
        latency = self._datapath(m, Signal(block_layout(self.spec.in_fmt)), Const(1, 1),
                                 Const(1, 1))[2]
        m._MustUse__silence = True      # built only to count the stages
        return latency

    def _datapath(self, m, payload, valid, enable):
        s = self.spec
        p = self._pipeline(m, "gelu", enable=enable)
        k = s.block_size
        e = decode_exponent(payload.exponent, s.in_fmt)
        shift = p.signal(e + s.x_shift_offset, "shift", signed(len(e) + 6))
        xq = p.reg(Staged([scale_saturate(m, payload.mantissas[i], shift, s.x_bits, f"xq{i}")
                           for i in range(k)], 0), "xq")
        half = 1 << (s.range_bits + s.frac_bits)
        bits = s.poly_in_bits

        def code(*xs):
            return [Mux((x >= -half) & (x < half), x + half, 0)[:bits] for x in xs]
        u = p.comb(code, *[Staged(v, xq.stage) for v in xq.value], name="u")
        y_poly = piecewise_polynomial(p, u, s.poly, "poly")
        lift = s.out_frac_bits - s.frac_bits

        def select(*vals):
            xs, ys = vals[:k], vals[k:]
            return [Mux(x >= half, x << lift, Mux(x < -half, 0, y)) for x, y in zip(xs, ys)]
        y = p.comb(select, *[Staged(v, xq.stage) for v in xq.value],
                   *[Staged(v, y_poly.stage) for v in y_poly.value], name="y",
                   shape=signed(s.y_bits))
        lsb = Staged(Const(-s.out_frac_bits, signed(8)), y.stage)
        out, out_valid = self._round_out(p, y, lsb, valid)
        return out, out_valid, out.stage

    def elaborate(self, platform):
        m = Module()
        advance = ~self.results.valid | self.results.ready
        m.d.comb += self.blocks.ready.eq(advance)
        out, out_valid, _ = self._datapath(m, self.blocks.payload, self.blocks.valid, advance)
        self._drive_blocks(m, self.results, out, out_valid)
        return m
