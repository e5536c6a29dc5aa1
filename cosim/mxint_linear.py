"""cocotb regression of MXIntLinear against software_model.mxint.mxint_linear (bit-exact)."""
import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import (check_one_per_cycle, expected_block, random_exponent_codes,
                                random_mantissas)
from software_model.mxint import (MXIntFormat, decode_exponent, encode_exponent, mxint_linear,
                                  quantize_mxint)


def _field(fmt, code):
    code = int(code)
    if fmt.exponent_encoding == "twos_complement" and code >> (fmt.exponent_width - 1):
        code -= 1 << fmt.exponent_width
    return code


def _random_tile(tb):
    """One tile job: x (KB blocks), W (n_tile x KB blocks), bias (n_tile values), as codes."""
    c = tb.config
    f = c.fmt
    kb, t, k, w = c.k_blocks, c.n_tile, c.block_size, c.element_width
    style = tb.rng.integers(3)
    if style == 0:      # quantized Gaussians: realistic exponents and magnitudes
        scale = 2.0 ** tb.rng.integers(-6, 6)
        qx = quantize_mxint(tb.rng.normal(size=kb * k) * scale, f)
        qw = quantize_mxint(tb.rng.normal(size=(t, kb * k)), f)
        qb = quantize_mxint(tb.rng.normal(size=t) * scale,
                            MXIntFormat(w, 1, f.exponent_width, f.rounding, f.exponent_encoding))
        return (encode_exponent(qx.exponents, f), qx.mantissas,
                encode_exponent(qw.exponents, f), qw.mantissas,
                encode_exponent(qb.exponents.reshape(t), f), qb.mantissas.reshape(t))
    size_e = random_exponent_codes(tb.rng, f, kb + t * kb + t)
    bias = random_mantissas(tb.rng, w, t)
    if style == 2:      # all exponents at one extreme: overflow/underflow of the output
        size_e = np.full_like(size_e, int(encode_exponent(tb.rng.choice([f.emin, f.emax]), f)))
        if tb.rng.random() < 0.5:   # no bias: the products alone set the (tiny) result
            bias = np.zeros(t, np.int64)
    return (size_e[:kb], random_mantissas(tb.rng, w, (kb, k)),
            size_e[kb:kb + t * kb].reshape(t, kb), random_mantissas(tb.rng, w, (t, kb, k)),
            size_e[kb + t * kb:], bias)


def _corner_tiles(tb):
    c = tb.config
    f = c.fmt
    kb, t, k, w = c.k_blocks, c.n_tile, c.block_size, c.element_width
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    emin, emax = int(encode_exponent(f.emin, f)), int(encode_exponent(f.emax, f))
    z = np.zeros
    return [
        (np.full(kb, emin), z((kb, k), int), np.full((t, kb), emin), z((t, kb, k), int),
         np.full(t, emin), z(t, int)),                                          # all zero
        (np.full(kb, emax), np.full((kb, k), lo), np.full((t, kb), emax),
         np.full((t, kb, k), lo), np.full(t, emax), np.full(t, lo)),           # largest |y|
        (np.full(kb, emin), np.full((kb, k), 1), np.full((t, kb), emin),
         np.full((t, kb, k), 1), np.full(t, emin), np.full(t, 0)),             # smallest |y|
        (np.full(kb, emax), np.full((kb, k), hi), np.full((t, kb), emin),
         np.full((t, kb, k), -1), np.full(t, emax), np.full(t, hi)),           # cancellation
    ]


def _expected(tb, job):
    c = tb.config
    f = c.fmt
    xe, xm, we, wm, be, bm = job
    dec = lambda a: decode_exponent(np.asarray(a), f)
    if c.output_format == "fp32":
        y = mxint_linear(dec(xe), xm, dec(we), wm, dec(be), bm, f, output="fp32")
        return [int(v) for v in y.view(np.uint32)]
    e, m = mxint_linear(dec(xe), xm, dec(we), wm, dec(be), bm, f, output="mxint",
                        out_fmt=c.out_fmt)
    return expected_block(e[0], m[0], c.out_fmt)


def _beats(tb, job):
    c = tb.config
    f = c.fmt
    xe, xm, we, wm, be, bm = job
    bias = [{"exponent": _field(f, be[n]), "mantissa": int(bm[n])} for n in range(c.n_tile)]
    for j in range(c.k_blocks):
        yield {"x": {"exponent": _field(f, xe[j]), "mantissas": [int(v) for v in xm[j]]},
               "w": [{"exponent": _field(f, we[n][j]), "mantissas": [int(v) for v in wm[n][j]]}
                     for n in range(c.n_tile)],
               "bias": bias}


async def _run(tb, jobs, gap=None, stall=None):
    source = tb.source("operands", gap=gap)
    sink = tb.sink("results", stall=stall)
    expected = [_expected(tb, job) for job in jobs]

    async def produce():
        for job in jobs:
            for beat in _beats(tb, job):
                await source.send(beat)

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"tile {i}")
    return sink


@cocotb.test()
async def random_and_corner_tiles(dut):
    tb = await Testbench.start(dut)
    jobs = _corner_tiles(tb) + [_random_tile(tb) for _ in range(tb.samples)]
    await _run(tb, jobs)
    tb.record("tiles", len(jobs))
    tb.finish(min_checked=len(jobs))


@cocotb.test()
async def full_throughput(dut):
    """No gaps or backpressure: one beat per cycle, so tiles leave K/k cycles apart."""
    tb = await Testbench.start(dut)
    n = max(8, tb.samples // 8)
    sink = await _run(tb, [_random_tile(tb) for _ in range(n)], gap=0.0, stall=0.0)
    gaps = {b - a for a, b in zip(sink.beat_cycles, sink.beat_cycles[1:])}
    tb.record("cycles_between_tiles", sorted(gaps))
    tb.scoreboard.check({tb.config.k_blocks}, gaps, "tiles leave K/k cycles apart")
    tb.finish(min_checked=n + 1)
