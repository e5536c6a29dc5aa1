"""cocotb regression of MXIntCast against software_model.mxint.mxint_cast (bit-exact)."""
import cocotb

from cosim.harness import Testbench
from types import SimpleNamespace

from cosim.mxint_common import (check_one_per_cycle, corner_float_blocks, expected_block,
                                mxint_format, random_float_block)
from hw.mxint_cast import MXIntCast
from software_model.mxint import mxint_cast


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config); the
    latency is the component's for the recorded ``pipelined``."""
    fmt = mxint_format(parameters["fmt"])
    return SimpleNamespace(fmt=fmt, input_format=parameters["input_format"],
                           block_size=fmt.block_size,
                           latency=MXIntCast.LATENCY[bool(parameters.get("pipelined", True))])


def cast_expected(fmt, input_format, bits):
    """The block the cast emits for one block of raw input bit patterns."""
    e, m = mxint_cast(bits, fmt, input_format)
    return expected_block(e, m, fmt)


async def _run(tb, blocks, gap=None, stall=None):
    cfg = view(tb.config, tb.parameters)
    source = tb.source("values", gap=gap)
    sink = tb.sink("blocks", stall=stall)
    expected = [cast_expected(cfg.fmt, cfg.input_format, bits) for bits in blocks]

    async def produce():
        for bits in blocks:
            await source.send([int(b) for b in bits])

    tb.fork(produce())
    for i, want in enumerate(expected):
        got = await sink.recv()
        tb.scoreboard.check(want, got, f"block {i} (input {[hex(int(b)) for b in blocks[i]]})")
    return source, sink


@cocotb.test()
async def random_and_corner_blocks(dut):
    """Corner blocks then random blocks, with random input gaps and output backpressure."""
    tb = await Testbench.start(dut)
    cfg = view(tb.config, tb.parameters)
    k = cfg.block_size
    blocks = corner_float_blocks(k, cfg.input_format)
    blocks += [random_float_block(tb.rng, k, cfg.input_format) for _ in range(tb.samples)]
    await _run(tb, blocks)
    tb.record("blocks", len(blocks))
    tb.finish(min_checked=len(blocks))


@cocotb.test()
async def full_throughput(dut):
    """No gaps, no backpressure: one block per cycle once the pipeline is full, the first the
    config's latency after its input."""
    tb = await Testbench.start(dut)
    cfg = view(tb.config, tb.parameters)
    n = max(16, tb.samples // 4)
    blocks = [random_float_block(tb.rng, cfg.block_size, cfg.input_format) for _ in range(n)]
    source, sink = await _run(tb, blocks, gap=0.0, stall=0.0)
    check_one_per_cycle(tb, sink, n)
    latency = sink.beat_cycles[0] - source.beat_cycles[0]
    tb.record("latency", latency)
    tb.scoreboard.check(cfg.latency, latency, "cycles from a block's input to its output")
    tb.finish(min_checked=n + 2)
