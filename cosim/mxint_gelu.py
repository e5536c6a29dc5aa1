"""cocotb regression of MXIntGELU against software_model.mxint_gelu.mxint_gelu (bit-exact)."""
from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import check_one_per_cycle
from cosim.mxint_common import spec_from, with_formats
from cosim.mxint_nonlinear import block_payload, corner_blocks, random_block
from cosim.traffic import STRESS_PROFILES
from hw.mxint_gelu import MXIntGELU
from software_model.mxint_gelu import GeluSpec, mxint_gelu


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config): the
    formats, the golden model's spec and ``elaborate()``, the hw component rebuilt from the
    recorded parameters (read for its latencies)."""
    kw = with_formats(parameters)
    in_fmt, out_fmt = kw["in_format"], kw["out_format"]
    spec = spec_from(GeluSpec, kw, in_fmt=in_fmt, out_fmt=out_fmt)
    return SimpleNamespace(**{k: v for k, v in kw.items() if not k.endswith("_format")},
                           in_fmt=in_fmt, out_fmt=out_fmt, block_size=in_fmt.block_size,
                           spec=spec, elaborate=lambda: MXIntGELU(**kw))


def _cfg(tb):
    return view(tb.config, tb.parameters)


def gelu_blocks(rng, fmt, n):
    """Corner blocks, blocks spread over the approximation range and its edges, random blocks."""
    blocks = list(corner_blocks(fmt))
    for _ in range(n):
        # exponents -4 .. 5 put values around the polynomial range [-4, 4) and past it
        blocks.append(random_block(rng, fmt, centre=0, spread=5))
    return blocks


def expected(cfg, blocks):
    exps = np.array([e for e, _ in blocks], np.int64)
    mans = np.array([m for _, m in blocks], np.int64)
    oe, om = mxint_gelu(exps, mans, cfg.spec)
    return [block_payload(e, m, cfg.out_fmt) for e, m in zip(oe, om)]


async def _run(tb, blocks, gap=None, stall=None):
    cfg = _cfg(tb)
    source = tb.source("blocks", gap=gap)
    sink = tb.sink("results", stall=stall)
    want = expected(cfg, blocks)
    for e, m in blocks:
        source.send_nowait(block_payload(e, m, cfg.in_fmt))
    for i, w in enumerate(want):
        got = await sink.recv()
        tb.scoreboard.check(w, got, f"block {i} (e={blocks[i][0]}, m={list(blocks[i][1])})")
    return source, sink


@cocotb.test()
async def random_and_corner_blocks(dut):
    """Corner blocks then random blocks under the environment's traffic profile."""
    tb = await Testbench.start(dut)
    blocks = gelu_blocks(tb.rng, _cfg(tb).in_fmt, tb.samples)
    await _run(tb, blocks)
    tb.record("blocks", len(blocks))
    tb.finish(min_checked=len(blocks))


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def stress(dut, profile):
    """The same checks under each stress profile (gaps, 90% backpressure, bursts, starvation)."""
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    blocks = gelu_blocks(tb.rng, _cfg(tb).in_fmt, max(16, tb.samples // 4))
    await _run(tb, blocks)
    tb.record("blocks", len(blocks))
    tb.finish(min_checked=len(blocks))


@cocotb.test()
async def full_throughput(dut):
    """No gaps, no backpressure: one block per cycle, first result after the stated latency."""
    tb = await Testbench.start(dut)
    n = max(16, tb.samples // 4)
    blocks = [random_block(tb.rng, _cfg(tb).in_fmt) for _ in range(n)]
    source, sink = await _run(tb, blocks, gap=0.0, stall=0.0)
    check_one_per_cycle(tb, sink, n)
    measured = sink.beat_cycles[0] - source.beat_cycles[0]
    tb.record("latency", measured)
    model = _cfg(tb).elaborate()
    model._MustUse__silence = True           # built only to read its latency
    tb.scoreboard.check(model.latency, measured, "cycles from input to output")
    tb.finish(min_checked=n + 2)
