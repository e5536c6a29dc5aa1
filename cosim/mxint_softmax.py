"""cocotb regression of MXIntSoftmax against software_model.mxint_softmax (``tile_blocks=1``, the
RTL's online form), bit-exact, plus its cycle model."""
from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import spec_from, with_formats
from cosim.mxint_nonlinear import block_payload, corner_blocks, mask_bits, random_block
from cosim.traffic import STRESS_PROFILES
from hw.mxint_softmax import MXIntSoftmax
from software_model.mxint_softmax import SoftmaxSpec, mxint_softmax, softmax_cycles


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config): the
    formats, the golden model's spec and ``elaborate()``, the hw component rebuilt from the
    recorded parameters (read for its latencies)."""
    kw = with_formats(parameters)
    in_fmt, out_fmt = kw["in_format"], kw["out_format"]
    spec = spec_from(SoftmaxSpec, kw, in_fmt=in_fmt, out_fmt=out_fmt)
    return SimpleNamespace(**{k: v for k, v in kw.items() if not k.endswith("_format")},
                           in_fmt=in_fmt, out_fmt=out_fmt, block_size=in_fmt.block_size,
                           spec=spec, elaborate=lambda: MXIntSoftmax(**kw))


def _cfg(tb):
    return view(tb.config, tb.parameters)


def corner_rows(cfg):
    """Rows every softmax regression sends, as lists of (exponent, mantissas, mask) blocks."""
    fmt, nb, k = cfg.in_fmt, cfg.max_row_blocks, cfg.block_size
    full = np.ones(k, bool)
    lo, hi = -(1 << (fmt.element_width - 1)), (1 << (fmt.element_width - 1)) - 1
    rows = []
    rows.append([(0, np.full(k, 1 << (fmt.element_width - 2)), full)] * nb)      # all equal
    # exponents clipped to the field: a random config's may be as narrow as 2 bits
    ce = lambda e: int(np.clip(e, fmt.emin, fmt.emax))             # noqa: E731
    dom = [(ce(2), np.full(k, -hi // 2), full) for _ in range(nb)]
    big = np.full(k, -hi // 2)
    big[k - 1] = hi
    dom[nb - 1] = (ce(4), big, full)                              # one dominant value, last block
    rows.append(dom)
    rows.append([(fmt.emax, np.full(k, lo), full)] * nb)         # most negative, saturating
    rows.append([(fmt.emax, np.full(k, hi), full)] * nb)         # largest, saturating
    mixed = [(fmt.emax, np.resize([hi, lo], k), full)] + [(fmt.emin, np.zeros(k, int), full)]
    rows.append(mixed[:max(1, min(nb, 2))])
    # (clipped: a random config's elements may be narrower than these patterns)
    rows.append([(0, np.clip(np.arange(k) - k // 2, lo, hi), np.zeros(k, bool))] * nb)  # masked
    part = np.zeros(k, bool)
    part[0] = True
    rows.append([(ce(3), np.clip(np.resize([hi, 7, -9], k), lo, hi), part)])  # one live element
    rows.append([(fmt.emin, np.zeros(k, int), full)])            # zeros
    for e, m in corner_blocks(fmt):                                # single-block corners
        rows.append([(e, m, full)])
    return rows


def random_rows(rng, cfg, n):
    fmt, nb, k = cfg.in_fmt, cfg.max_row_blocks, cfg.block_size
    rows = []
    for _ in range(n):
        length = int(rng.integers(1, nb + 1))
        centre = int(rng.integers(-2, 5))          # scores of magnitude ~0.25 .. 30
        row = []
        for _b in range(length):
            e, m = random_block(rng, fmt, centre=centre, spread=2)
            mask = rng.random(k) < 0.9 if rng.random() < 0.3 else np.ones(k, bool)
            row.append((e, m, mask))
        rows.append(row)
    return rows


def expected_rows(cfg, rows):
    """Golden output beats of rows as sent: a row longer than max_row_blocks is cut there."""
    spec = cfg.spec
    out = []
    for row in rows:
        for start in range(0, len(row), cfg.max_row_blocks):
            part = row[start:start + cfg.max_row_blocks]
            res = mxint_softmax(np.array([[e for e, _, _ in part]]),
                                np.array([[m for _, m, _ in part]]), spec,
                                mask=np.array([[mk for _, _, mk in part]]), tile_blocks=1)
            for b in range(len(part)):
                beat = block_payload(res.exponents[0, b], res.mantissas[0, b], cfg.out_fmt)
                beat["last"] = int(b == len(part) - 1)
                out.append(beat)
    return out


def beats_of(cfg, rows):
    beats = []
    for row in rows:
        for b, (e, m, mask) in enumerate(row):
            beats.append({"block": block_payload(e, m, cfg.in_fmt), "mask": mask_bits(mask),
                          "last": int(b == len(row) - 1)})
    return beats


async def _run(tb, rows, gap=None, stall=None):
    cfg = _cfg(tb)
    source = tb.source("scores", gap=gap)
    sink = tb.sink("probs", stall=stall)
    want = expected_rows(cfg, rows)
    for beat in beats_of(cfg, rows):
        source.send_nowait(beat)
    for i, w in enumerate(want):
        got = await sink.recv()
        tb.scoreboard.check(w, got, f"output block {i}")
    return source, sink, len(want)


@cocotb.test()
async def random_and_corner_rows(dut):
    """Corner rows (all equal, one dominant, most negative, saturating, masked, a row longer
    than max_row_blocks) then random rows, under the environment's traffic profile."""
    tb = await Testbench.start(dut)
    cfg = _cfg(tb)
    rows = corner_rows(cfg)
    w = cfg.in_fmt.element_width
    ramp = np.clip(np.arange(cfg.block_size) - 2, -(1 << (w - 1)), (1 << (w - 1)) - 1)
    long_row = [(min(1, cfg.in_fmt.emax), ramp, np.ones(cfg.block_size, bool))] * \
        (cfg.max_row_blocks + 1)
    rows.append(long_row)
    rows += random_rows(tb.rng, cfg, max(1, tb.samples // max(1, (cfg.max_row_blocks + 1) // 2)))
    _, _, n = await _run(tb, rows)
    tb.record("rows", len(rows))
    tb.finish(min_checked=n)


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def stress(dut, profile):
    """Corner and random rows under each stress profile."""
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    cfg = _cfg(tb)
    rows = corner_rows(cfg) + random_rows(tb.rng, cfg, max(8, tb.samples // 8))
    _, _, n = await _run(tb, rows)
    tb.finish(min_checked=n)


@cocotb.test()
async def cycle_model(dut):
    """No gaps, no backpressure: every input and output handshake at the cycle
    software_model.mxint_softmax.softmax_cycles predicts; then a run of full-length rows for the
    steady-state rate."""
    tb = await Testbench.start(dut)
    cfg = _cfg(tb)
    dut_model = cfg.elaborate()
    dut_model._MustUse__silence = True       # built only to read its latencies
    lat = dut_model.latencies
    rows = random_rows(tb.rng, cfg, 24)
    full = [random_rows(tb.rng, cfg, 1)[0][:1] * cfg.max_row_blocks for _ in range(8)]
    rows += full
    source, sink, n = await _run(tb, rows, gap=0.0, stall=0.0)
    lengths = [len(r) for r in rows]
    start = source.beat_cycles[0]
    taken, emitted = softmax_cycles(lengths, row_info=lat["row_info"],
                                    second_pass=lat["second_pass"],
                                    buffer_blocks=lat["buffer_blocks"],
                                    row_slots=lat["row_slots"], arrivals=[start] * n)
    tb.scoreboard.check(taken, source.beat_cycles, "input handshake cycles (cycle model)")
    tb.scoreboard.check(emitted, sink.beat_cycles, "output handshake cycles (cycle model)")
    tail = sink.beat_cycles[-8 * cfg.max_row_blocks:]
    rate = (len(tail) - 1) / max(1, tail[-1] - tail[0])
    tb.record("cycle_model_matches", taken == source.beat_cycles and
              emitted == sink.beat_cycles)
    tb.record("full_row_blocks_per_cycle", round(rate, 4))
    tb.record("latencies", lat)
    tb.finish(min_checked=n + 2)
