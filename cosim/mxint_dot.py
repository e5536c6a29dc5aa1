"""cocotb regression of MXIntDotProduct against software_model.mxint.mxint_dot (bit-exact)."""
import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import (check_one_per_cycle, random_exponent_codes, random_mantissas)
from software_model.mxint import decode_exponent, mxint_dot


def _corner_pairs(fmt):
    k, w = fmt.block_size, fmt.element_width
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    top, bottom = (1 << fmt.exponent_width) - 1, 0
    z = [0] * k
    return [
        (bottom, z, bottom, z),                     # zeros at the smallest codes
        (top, [hi] * k, top, [hi] * k),             # largest positive sum, largest codes
        (top, [lo] * k, top, [lo] * k),             # -2^(w-1) squared: the widest sum
        (bottom, [lo] * k, top, [hi] * k),          # most negative sum, mixed codes
        (top, [hi, lo] * (k // 2) + [hi] * (k % 2), bottom, [1] * k),   # cancellation
    ]


def _payload(fmt, code, mans):
    field = int(code)
    if fmt.exponent_encoding == "twos_complement" and field >> (fmt.exponent_width - 1):
        field -= 1 << fmt.exponent_width
    return {"exponent": field, "mantissas": [int(x) for x in mans]}


async def _run(tb, pairs, gap=None, stall=None):
    fmt = tb.config.fmt
    source = tb.source("operands", gap=gap)
    sink = tb.sink("results", stall=stall)
    expected = []
    for ca, ma, cb, mb in pairs:
        e, s = mxint_dot(decode_exponent(ca, fmt), ma, decode_exponent(cb, fmt), mb, fmt)
        expected.append({"exponent": int(e), "total": int(s)})

    async def produce():
        for ca, ma, cb, mb in pairs:
            await source.send({"a": _payload(fmt, ca, ma), "b": _payload(fmt, cb, mb)})

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"pair {i} {pairs[i]}")
    return sink


def _random_pairs(tb, n):
    fmt = tb.config.fmt
    k, w = fmt.block_size, fmt.element_width
    ca = random_exponent_codes(tb.rng, fmt, n)
    cb = random_exponent_codes(tb.rng, fmt, n)
    return [(ca[i], random_mantissas(tb.rng, w, k), cb[i], random_mantissas(tb.rng, w, k))
            for i in range(n)]


@cocotb.test()
async def random_and_corner_blocks(dut):
    tb = await Testbench.start(dut)
    pairs = _corner_pairs(tb.config.fmt) + _random_pairs(tb, tb.samples)
    await _run(tb, pairs)
    tb.finish(min_checked=len(pairs))


@cocotb.test()
async def full_throughput(dut):
    """No gaps, no backpressure: one dot product per cycle once the pipeline is full."""
    tb = await Testbench.start(dut)
    n = max(16, tb.samples // 4)
    sink = await _run(tb, _random_pairs(tb, n), gap=0.0, stall=0.0)
    check_one_per_cycle(tb, sink, n)
    tb.finish(min_checked=n + 1)
