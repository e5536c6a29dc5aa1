"""cocotb regression of MXIntAccumulator against software_model.mxint.mxint_accumulate."""
import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import random_mantissas
from software_model.mxint import mxint_accumulate


def _random_sum(tb, length):
    c = tb.config
    lo, hi = -(1 << (c.exponent_width - 1)), (1 << (c.exponent_width - 1)) - 1
    style = tb.rng.integers(3)
    if style == 0:      # exponents anywhere, extremes over-represented
        exps = np.where(tb.rng.random(length) < 0.2, tb.rng.choice([lo, hi], length),
                        tb.rng.integers(lo, hi + 1, length))
    elif style == 1:    # clustered exponents: realistic partial sums, many renormalisations
        centre = tb.rng.integers(lo, hi + 1)
        exps = np.clip(centre + tb.rng.integers(-2, 3, length), lo, hi)
    else:               # one exponent: pure integer sums, overflow of the shift variant
        exps = np.full(length, tb.rng.integers(lo, hi + 1))
    values = random_mantissas(tb.rng, c.input_width, (length, c.lanes))
    return [int(e) for e in exps], values


def _corner_sums(tb):
    c = tb.config
    lo, hi = -(1 << (c.exponent_width - 1)), (1 << (c.exponent_width - 1)) - 1
    vmin, vmax = -(1 << (c.input_width - 1)), (1 << (c.input_width - 1)) - 1
    n = min(c.max_terms, 16)
    lanes = c.lanes
    return [
        ([lo], np.zeros((1, lanes), np.int64)),                       # single zero term
        ([hi] * n, np.full((n, lanes), vmax)),                        # largest sum
        ([hi] * n, np.full((n, lanes), vmin)),                        # most negative sum
        ([lo, hi], np.array([[vmax] * lanes, [vmin] * lanes])),       # widest alignment
        ([hi, lo] * (n // 2), np.tile([[vmax] * lanes, [1] * lanes], (n // 2, 1))),
        ([0] * 4, np.array([[1] * lanes, [-1] * lanes, [vmin] * lanes, [vmax] * lanes])),
    ]


@cocotb.test()
async def random_and_corner_sums(dut):
    """Sums of 1 .. 40 terms (capped by max_terms), random gaps and backpressure."""
    tb = await Testbench.start(dut)
    c = tb.config
    source = tb.source("terms")
    sink = tb.sink("sums")
    longest = min(40, c.max_terms)
    jobs = _corner_sums(tb) + [_random_sum(tb, int(tb.rng.integers(1, longest + 1)))
                               for _ in range(tb.samples)]
    expected = []
    for exps, values in jobs:
        if c.mode == "exact":
            e, v = mxint_accumulate(exps, values, mode="exact", exponent_min=c.exponent_min)
        else:
            e, v = mxint_accumulate(exps, values, mode="shift", acc_width=c.acc_width)
        expected.append({"exponent": int(e), "values": [int(x) for x in v]})

    async def produce():
        for exps, values in jobs:
            for t, (e, row) in enumerate(zip(exps, values)):
                await source.send({"exponent": e, "values": [int(x) for x in row],
                                   "last": int(t == len(exps) - 1)})

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"sum {i} ({len(jobs[i][0])} terms)")
    tb.record("sums", len(jobs))
    tb.record("terms", sum(len(j[0]) for j in jobs))
    tb.finish(min_checked=len(jobs))


@cocotb.test()
async def one_term_per_cycle(dut):
    """No gaps or backpressure: a sum of T terms takes T cycles, so sums leave T cycles apart."""
    tb = await Testbench.start(dut)
    c = tb.config
    source = tb.source("terms", gap=0.0)
    sink = tb.sink("sums", stall=0.0)
    length = min(4, c.max_terms)
    jobs = [_random_sum(tb, length) for _ in range(max(8, tb.samples // 8))]
    expected = []
    for exps, values in jobs:
        kw = {"exponent_min": c.exponent_min} if c.mode == "exact" else {"acc_width": c.acc_width}
        e, v = mxint_accumulate(exps, values, mode=c.mode, **kw)
        expected.append({"exponent": int(e), "values": [int(x) for x in v]})

    async def produce():
        for exps, values in jobs:
            for t, (e, row) in enumerate(zip(exps, values)):
                await source.send({"exponent": e, "values": [int(x) for x in row],
                                   "last": int(t == len(exps) - 1)})

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"sum {i}")
    gaps = {b - a for a, b in zip(sink.beat_cycles, sink.beat_cycles[1:])}
    tb.record("cycles_between_sums", sorted(gaps))
    tb.scoreboard.check({length}, gaps, f"sums of {length} terms leave {length} cycles apart")
    tb.finish(min_checked=len(jobs) + 1)
