"""cocotb regression of MXIntLinear against software_model.mxint.mxint_linear (bit-exact)."""
import dataclasses
from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import (block_payload, expected_block, exponent_field, mxint_format,
                                random_exponent_codes, random_mantissas)
from hw.mxint_linear import MXIntLinear
from software_model.mxint import (MXIntFormat, decode_exponent, encode_exponent, mxint_linear,
                                  quantize_mxint)


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config): the
    operand format, the output tile format (block size n_tile) and K / block_size."""
    fmt = mxint_format(parameters["fmt"])
    n_tile = parameters["n_tile"]
    return SimpleNamespace(fmt=fmt, n_tile=n_tile, output_format=parameters["output_format"],
                           out_fmt=dataclasses.replace(fmt, block_size=n_tile),
                           k_blocks=max(1, parameters["in_features"] // fmt.block_size),
                           latency=MXIntLinear.latency)


def _cfg(tb):
    return view(tb.config, tb.parameters)


def random_tile(cfg, rng):
    """One tile job: x (KB blocks), W (n_tile x KB blocks), bias (n_tile values), as codes."""
    f = cfg.fmt
    kb, t, k, w = cfg.k_blocks, cfg.n_tile, f.block_size, f.element_width
    style = rng.integers(3)
    if style == 0:      # quantized Gaussians: realistic exponents and magnitudes
        scale = 2.0 ** rng.integers(-6, 6)
        qx = quantize_mxint(rng.normal(size=kb * k) * scale, f)
        qw = quantize_mxint(rng.normal(size=(t, kb * k)), f)
        qb = quantize_mxint(rng.normal(size=t) * scale,
                            MXIntFormat(w, 1, f.exponent_width, f.rounding, f.exponent_encoding))
        return (encode_exponent(qx.exponents, f), qx.mantissas,
                encode_exponent(qw.exponents, f), qw.mantissas,
                encode_exponent(qb.exponents.reshape(t), f), qb.mantissas.reshape(t))
    size_e = random_exponent_codes(rng, f, kb + t * kb + t)
    bias = random_mantissas(rng, w, t)
    if style == 2:      # all exponents at one extreme: overflow/underflow of the output
        size_e = np.full_like(size_e, int(encode_exponent(rng.choice([f.emin, f.emax]), f)))
        if rng.random() < 0.5:   # no bias: the products alone set the (tiny) result
            bias = np.zeros(t, np.int64)
    return (size_e[:kb], random_mantissas(rng, w, (kb, k)),
            size_e[kb:kb + t * kb].reshape(t, kb), random_mantissas(rng, w, (t, kb, k)),
            size_e[kb + t * kb:], bias)


def corner_tiles(cfg):
    f = cfg.fmt
    kb, t, k, w = cfg.k_blocks, cfg.n_tile, f.block_size, f.element_width
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
    ] + fp32_edge_tiles(cfg)


def unit_tile(cfg, product_exponent, bias_exponent=None, bias_sign=1):
    """A tile whose every output is 2^product_exponent (one product 1 * 1) plus, if given,
    bias_sign * 2^bias_exponent; None where the format's exponents cannot express it."""
    f = cfg.fmt
    kb, t, k, fb = cfg.k_blocks, cfg.n_tile, f.block_size, f.fraction_bits
    total = product_exponent + 2 * fb              # e_x + e_w
    ex = min(f.emax, max(f.emin, total - f.emax))
    ew = total - ex
    eb = f.emin if bias_exponent is None else bias_exponent + fb
    if not (f.emin <= ew <= f.emax and f.emin <= eb <= f.emax):
        return None
    code = lambda e: int(encode_exponent(e, f))              # noqa: E731
    xe, we = np.full(kb, code(f.emin)), np.full((t, kb), code(f.emin))
    xm, wm = np.zeros((kb, k), int), np.zeros((t, kb, k), int)
    xe[0], we[:, 0], xm[0, 0], wm[:, 0, 0] = code(ex), code(ew), 1, 1
    bias = np.full(t, 0 if bias_exponent is None else bias_sign)
    return xe, xm, we, wm, np.full(t, code(eb)), bias


def fp32_edge_tiles(cfg):
    """FP32 output only: the edges of the one rounding, wherever the exponents reach them:
    exact ties (2^p + 2^(p-24) and 2^p - 2^(p-25), half-even rounds both to 2^p, half-away
    away from it; 2^-150, half the smallest subnormal), both sides of the subnormal boundary,
    2^127 and 2^128 (Inf)."""
    if cfg.output_format != "fp32":
        return []
    f = cfg.fmt
    low, high = 2 * f.emin - 2 * f.fraction_bits, 2 * f.emax      # product exponents reachable
    wanted = [(-127, None, 1), (-126, None, 1), (-150, None, 1), (-149, None, 1),
              (127, None, 1), (128, None, 1)]
    for below, sign in ((24, 1), (25, -1)):
        # the largest and the smallest p whose tie partner 2^(p - below) the bias can hold
        ties = [p for p in range(low, high + 1)
                if f.emin <= p - below + f.fraction_bits <= f.emax]
        wanted += [(p, p - below, sign) for p in ties[-1:] + ties[:1]]
    tiles = [unit_tile(cfg, *w) for w in wanted]
    return [tile for tile in tiles if tile is not None]


def tile_expected(cfg, job):
    """The ``results`` payload of one tile (``cfg``: fmt, out_fmt, output_format)."""
    f = cfg.fmt
    xe, xm, we, wm, be, bm = job
    dec = lambda a: decode_exponent(np.asarray(a), f)        # noqa: E731
    if cfg.output_format == "fp32":
        y = mxint_linear(dec(xe), xm, dec(we), wm, dec(be), bm, f, output="fp32")
        return [int(v) for v in y.view(np.uint32)]
    e, m = mxint_linear(dec(xe), xm, dec(we), wm, dec(be), bm, f, output="mxint",
                        out_fmt=cfg.out_fmt)
    return expected_block(e[0], m[0], cfg.out_fmt)


def tile_beats(cfg, job):
    """The ``operands`` payloads of one tile: one per block of x along K."""
    f = cfg.fmt
    xe, xm, we, wm, be, bm = job
    bias = [{"exponent": exponent_field(f, be[n]), "mantissa": int(bm[n])}
            for n in range(cfg.n_tile)]
    return [{"x": block_payload(f, xe[j], xm[j]),
             "w": [block_payload(f, we[n][j], wm[n][j]) for n in range(cfg.n_tile)],
             "bias": bias}
            for j in range(cfg.k_blocks)]


async def _run(tb, jobs, gap=None, stall=None):
    source = tb.source("operands", gap=gap)
    sink = tb.sink("results", stall=stall)
    expected = [tile_expected(_cfg(tb), job) for job in jobs]

    async def produce():
        for job in jobs:
            for beat in tile_beats(_cfg(tb), job):
                await source.send(beat)

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"tile {i}")
    return source, sink


@cocotb.test()
async def random_and_corner_tiles(dut):
    tb = await Testbench.start(dut)
    jobs = corner_tiles(_cfg(tb)) + [random_tile(_cfg(tb), tb.rng) for _ in range(tb.samples)]
    await _run(tb, jobs)
    tb.record("tiles", len(jobs))
    tb.finish(min_checked=len(jobs))


@cocotb.test()
async def full_throughput(dut):
    """No gaps or backpressure: one beat per cycle, so tiles leave K/k cycles apart, the first
    the config's latency after its last beat."""
    tb = await Testbench.start(dut)
    n = max(8, tb.samples // 8)
    cfg = _cfg(tb)
    source, sink = await _run(tb, [random_tile(cfg, tb.rng) for _ in range(n)],
                              gap=0.0, stall=0.0)
    gaps = {b - a for a, b in zip(sink.beat_cycles, sink.beat_cycles[1:])}
    tb.record("cycles_between_tiles", sorted(gaps))
    tb.scoreboard.check({cfg.k_blocks}, gaps, "tiles leave K/k cycles apart")
    latency = sink.beat_cycles[0] - source.beat_cycles[cfg.k_blocks - 1]
    tb.record("latency", latency)
    tb.scoreboard.check(cfg.latency, latency, "cycles from a tile's last beat to its results")
    tb.finish(min_checked=n + 2)
