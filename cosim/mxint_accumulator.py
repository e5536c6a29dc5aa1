"""cocotb regression of MXIntAccumulator against software_model.mxint.mxint_accumulate."""
import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import random_mantissas
from hw.mxint_accumulator import MXIntAccumulator
from software_model.mxint import mxint_accumulate


def random_sum(cfg, rng, length):
    lo, hi = -(1 << (cfg.exponent_width - 1)), (1 << (cfg.exponent_width - 1)) - 1
    style = rng.integers(3)
    if style == 0:      # exponents anywhere, extremes over-represented
        exps = np.where(rng.random(length) < 0.2, rng.choice([lo, hi], length),
                        rng.integers(lo, hi + 1, length))
    elif style == 1:    # clustered exponents: realistic partial sums, many renormalisations
        centre = rng.integers(lo, hi + 1)
        exps = np.clip(centre + rng.integers(-2, 3, length), lo, hi)
    else:               # one exponent: pure integer sums, overflow of the shift variant
        exps = np.full(length, rng.integers(lo, hi + 1))
    values = random_mantissas(rng, cfg.input_width, (length, cfg.lanes))
    return [int(e) for e in exps], values


def corner_sums(cfg):
    lo, hi = -(1 << (cfg.exponent_width - 1)), (1 << (cfg.exponent_width - 1)) - 1
    vmin, vmax = -(1 << (cfg.input_width - 1)), (1 << (cfg.input_width - 1)) - 1
    n = min(cfg.max_terms, 16)
    lanes = cfg.lanes
    jobs = [
        ([lo], np.zeros((1, lanes), np.int64)),                       # single zero term
        ([hi] * n, np.full((n, lanes), vmax)),                        # largest sum
        ([hi] * n, np.full((n, lanes), vmin)),                        # most negative sum
        ([lo, hi], np.array([[vmax] * lanes, [vmin] * lanes])),       # widest alignment
        ([hi, lo] * (n // 2), np.tile([[vmax] * lanes, [1] * lanes], (n // 2, 1))),
        ([0] * 4, np.array([[1] * lanes, [-1] * lanes, [vmin] * lanes, [vmax] * lanes])),
        # lanes differ: odd lanes overflow (renormalising every lane), even lanes stay small
        ([hi] * n, np.tile([[vmax if lane % 2 else 1 for lane in range(lanes)]], (n, 1))),
    ]
    # a sum holds 1 .. max_terms terms
    return [(exps, values) for exps, values in jobs if 1 <= len(exps) <= cfg.max_terms]


def sum_expected(cfg, exps, values):
    """The ``sums`` payload for one sum of terms (``cfg``: mode, acc_width, exponent_width)."""
    if cfg.mode == "exact":
        e, v = mxint_accumulate(exps, values, mode="exact",
                                exponent_min=-(1 << (cfg.exponent_width - 1)))
    else:
        e, v = mxint_accumulate(exps, values, mode="shift", acc_width=cfg.acc_width)
    return {"exponent": int(e), "values": [int(x) for x in v]}


def term_beats(exps, values):
    """The ``terms`` payloads of one sum, ``last`` on its final term."""
    return [{"exponent": e, "values": [int(x) for x in row], "last": int(t == len(exps) - 1)}
            for t, (e, row) in enumerate(zip(exps, values))]


async def _run(tb, jobs, gap=None, stall=None, label="sum"):
    source = tb.source("terms", gap=gap)
    sink = tb.sink("sums", stall=stall)
    expected = [sum_expected(tb.config, exps, values) for exps, values in jobs]

    async def produce():
        for exps, values in jobs:
            for beat in term_beats(exps, values):
                await source.send(beat)

    tb.fork(produce())
    for i, want in enumerate(expected):
        tb.scoreboard.check(want, await sink.recv(), f"{label} {i} ({len(jobs[i][0])} terms)")
    return source, sink


@cocotb.test()
async def random_and_corner_sums(dut):
    """Sums of 1 .. 40 terms (capped by max_terms), random gaps and backpressure."""
    tb = await Testbench.start(dut)
    c = tb.config
    longest = min(40, c.max_terms)
    jobs = corner_sums(c) + [random_sum(c, tb.rng, int(tb.rng.integers(1, longest + 1)))
                             for _ in range(tb.samples)]
    await _run(tb, jobs)
    tb.record("sums", len(jobs))
    tb.record("terms", sum(len(j[0]) for j in jobs))
    tb.finish(min_checked=len(jobs))


@cocotb.test()
async def one_term_per_cycle(dut):
    """No gaps or backpressure: a sum of T terms takes T cycles, so sums leave T cycles apart."""
    tb = await Testbench.start(dut)
    c = tb.config
    length = min(4, c.max_terms)
    jobs = [random_sum(c, tb.rng, length) for _ in range(max(8, tb.samples // 8))]
    source, sink = await _run(tb, jobs, gap=0.0, stall=0.0)
    gaps = {b - a for a, b in zip(sink.beat_cycles, sink.beat_cycles[1:])}
    tb.record("cycles_between_sums", sorted(gaps))
    tb.scoreboard.check({length}, gaps, f"sums of {length} terms leave {length} cycles apart")
    latency = sink.beat_cycles[0] - source.beat_cycles[length - 1]
    tb.record("latency", latency)
    unit = MXIntAccumulator(**tb.parameters)
    unit._MustUse__silence = True            # built only to read its latency
    tb.scoreboard.check(unit.latency, latency, "cycles from a sum's last term to the sum")
    tb.finish(min_checked=len(jobs) + 2)
