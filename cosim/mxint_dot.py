"""cocotb regression of MXIntDotProduct against software_model.mxint.mxint_dot (bit-exact)."""
import cocotb

from cosim.harness import Testbench
from cosim.mxint_common import (block_payload, check_one_per_cycle, mxint_format,
                                random_exponent_codes, random_mantissas)
from hw.mxint_dot import MXIntDotProduct
from software_model.mxint import decode_exponent, mxint_dot


def corner_pairs(fmt):
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


def pair_beat(fmt, pair):
    """One ``operands`` payload: a pair of blocks given as (code, mantissas) twice."""
    ca, ma, cb, mb = pair
    return {"a": block_payload(fmt, ca, ma), "b": block_payload(fmt, cb, mb)}


def pair_expected(fmt, pair):
    ca, ma, cb, mb = pair
    e, s = mxint_dot(decode_exponent(ca, fmt), ma, decode_exponent(cb, fmt), mb, fmt)
    return {"exponent": int(e), "total": int(s)}


async def _run(tb, pairs, gap=None, stall=None):
    fmt = mxint_format(tb.parameters.fmt)
    source = tb.source("operands", gap=gap)
    sink = tb.sink("results", stall=stall)
    expected = [pair_expected(fmt, pair) for pair in pairs]

    async def produce():
        for pair in pairs:
            await source.send(pair_beat(fmt, pair))

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"pair {i} {pairs[i]}")
    return source, sink


def random_pairs(fmt, rng, n):
    k, w = fmt.block_size, fmt.element_width
    ca = random_exponent_codes(rng, fmt, n)
    cb = random_exponent_codes(rng, fmt, n)
    return [(ca[i], random_mantissas(rng, w, k), cb[i], random_mantissas(rng, w, k))
            for i in range(n)]


@cocotb.test()
async def random_and_corner_blocks(dut):
    tb = await Testbench.start(dut)
    pairs = corner_pairs(mxint_format(tb.parameters.fmt)) + random_pairs(mxint_format(tb.parameters.fmt), tb.rng, tb.samples)
    await _run(tb, pairs)
    tb.finish(min_checked=len(pairs))


@cocotb.test()
async def full_throughput(dut):
    """No gaps, no backpressure: one dot product per cycle once the pipeline is full, the first
    the unit's latency (1 + tree_stages) after its operands."""
    tb = await Testbench.start(dut)
    n = max(16, tb.samples // 4)
    source, sink = await _run(tb, random_pairs(mxint_format(tb.parameters.fmt), tb.rng, n),
                              gap=0.0, stall=0.0)
    check_one_per_cycle(tb, sink, n)
    latency = sink.beat_cycles[0] - source.beat_cycles[0]
    tb.record("latency", latency)
    unit = MXIntDotProduct(fmt=mxint_format(tb.parameters.fmt),
                           tree_stages=int(tb.parameters.get("tree_stages", 1)))
    unit._MustUse__silence = True            # built only to read its latency
    tb.scoreboard.check(unit.latency, latency, "cycles from an operand pair to its result")
    tb.finish(min_checked=n + 2)
