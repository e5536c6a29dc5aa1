"""cocotb regression of FloatAdderUnit against software_model.float16.add (bit-exact)."""
from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import Testbench
from hw.float_add import FloatAdderUnit
from software_model import float16

RANDOM_PAIRS = 20000


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config): the
    format and the unit's latency, read from the component rebuilt from its parameters."""
    unit = FloatAdderUnit(**parameters)
    unit._MustUse__silence = True            # built only to read its latency
    return SimpleNamespace(format=parameters["format"], latency=unit.latency)


def _cfg(tb):
    return view(tb.config, tb.parameters)


def random_pairs(rng, fmt, count):
    """Uniform bit patterns, plus pairs built to hit every alignment distance and cancellation."""
    f = float16.FORMATS[fmt]
    third = count // 3
    a = rng.integers(0, 1 << 16, count, dtype=np.uint16)
    b = rng.integers(0, 1 << 16, count, dtype=np.uint16)
    # Near pairs: same or close exponents, often opposite signs (massive cancellation).
    flip = rng.integers(0, 1 << (f.mantissa_bits + 2), third, dtype=np.uint16)
    b[third:2 * third] = a[third:2 * third] ^ flip ^ np.uint16(f.sign_mask)
    # Every exponent distance up to beyond the sticky limit.
    distance = rng.integers(0, f.mantissa_bits + 8, count - 2 * third)
    exponent_a = (a[2 * third:] >> f.mantissa_bits) & f.exponent_max
    exponent_b = np.clip(exponent_a.astype(np.int64) - distance, 0, f.exponent_max)
    keep = b[2 * third:] & np.uint16(f.sign_mask | ((1 << f.mantissa_bits) - 1))
    b[2 * third:] = keep | (exponent_b.astype(np.uint16) << f.mantissa_bits)
    return a, b


async def _run(tb, a, b, label, gap=None, stall=None):
    fmt = _cfg(tb).format
    expected = float16.add(a, b, fmt)
    source = tb.source("operands", gap=gap)
    sink = tb.sink("sums", stall=stall)

    async def produce():
        for x, y in zip(a, b):
            await source.send({"a": int(x), "b": int(y)})

    tb.fork(produce())
    for i in range(a.size):
        got = await sink.recv()
        tb.scoreboard.check(int(expected[i]), got,
                            f"{label} {i}: {int(a[i]):#06x} + {int(b[i]):#06x}")
    return source, sink


@cocotb.test()
async def special_classes(dut):
    """Every special class against every special class (zeros, subnormals, extremes, Inf, NaN)."""
    tb = await Testbench.start(dut)
    specials = float16.special_values(_cfg(tb).format)
    a = np.repeat(specials, specials.size)
    b = np.tile(specials, specials.size)
    await _run(tb, a, b, "special pair")
    tb.record("pairs", int(a.size))
    tb.finish(min_checked=int(a.size))


@cocotb.test()
async def random_operands(dut):
    """At least 20k random pairs with random input gaps and output backpressure."""
    tb = await Testbench.start(dut)
    count = max(RANDOM_PAIRS, tb.samples)
    a, b = random_pairs(tb.rng, _cfg(tb).format, count)
    await _run(tb, a, b, "random pair")
    tb.record("pairs", count)
    tb.finish(min_checked=count)


@cocotb.test()
async def full_throughput(dut):
    """No gaps or stalls: one sum per cycle after the pipeline latency."""
    tb = await Testbench.start(dut)
    count = 256
    a, b = random_pairs(tb.rng, _cfg(tb).format, count)
    source, sink = await _run(tb, a, b, "streamed pair", gap=0.0, stall=0.0)
    cycles = sink.beat_cycles
    span = cycles[-1] - cycles[0] + 1
    tb.scoreboard.check(count, span, "cycles spanned by the streamed sums")
    tb.record("cycles_per_sum", span / count)
    latency = cycles[0] - source.beat_cycles[0]
    tb.record("latency", latency)
    tb.scoreboard.check(_cfg(tb).latency, latency, "cycles from an operand pair to its sum")
    tb.finish(min_checked=count + 2)
