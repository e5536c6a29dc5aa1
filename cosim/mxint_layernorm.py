"""cocotb regression of MXIntLayerNorm against software_model.mxint_layernorm (bit-exact), plus
its cycle model and a parameter reload between rows."""
from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import Testbench
from cosim.mxint_common import spec_from, with_formats
from cosim.mxint_nonlinear import block_payload, corner_blocks, random_block
from cosim.traffic import STRESS_PROFILES
from hw.mxint_layernorm import MXIntLayerNorm
from software_model.mxint_layernorm import LayerNormSpec, mxint_layernorm
from software_model.mxint_softmax import softmax_cycles


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config): the
    formats, the golden model's spec and ``elaborate()``, the hw component rebuilt from the
    recorded parameters (read for its latencies)."""
    kw = with_formats(parameters)
    in_fmt, out_fmt = kw["in_format"], kw["out_format"]
    param_fmt = kw["param_format"]
    spec = spec_from(LayerNormSpec, kw, in_fmt=in_fmt, out_fmt=out_fmt, param_fmt=param_fmt)
    return SimpleNamespace(**{k: v for k, v in kw.items() if not k.endswith("_format")},
                           in_fmt=in_fmt, out_fmt=out_fmt, param_fmt=param_fmt,
                           block_size=in_fmt.block_size,
                           spec=spec, elaborate=lambda: MXIntLayerNorm(**kw),
                           row_blocks=parameters["row_length"] // in_fmt.block_size)


def _cfg(tb):
    return view(tb.config, tb.parameters)


def random_params(rng, cfg):
    """gamma around 1 (0.5 .. 2) and beta around 0, one MXInt block each per block of x."""
    fmt, nb = cfg.param_fmt, cfg.row_blocks
    gamma = [random_block(rng, fmt, "gauss", centre=0, spread=1) for _ in range(nb)]
    gamma = [(e, np.abs(m)) if rng.random() < 0.8 else (e, m) for e, m in gamma]
    beta = [random_block(rng, fmt, centre=-1, spread=2) for _ in range(nb)]
    return gamma, beta


def corner_rows(cfg):
    """Zero-variance rows, zeros, saturating and most negative rows, one dominant element,
    tiny (emin) rows, and rows built from the shared corner blocks."""
    fmt, nb, k = cfg.in_fmt, cfg.row_blocks, cfg.block_size
    lo, hi = -(1 << (fmt.element_width - 1)), (1 << (fmt.element_width - 1)) - 1
    rows = [
        [(0, np.full(k, hi // 2 + 1))] * nb,              # constant: zero variance
        [(fmt.emin, np.zeros(k, int))] * nb,              # zeros: zero variance
        [(fmt.emax, np.full(k, hi))] * nb,                # saturating, constant after clamp
        [(fmt.emax, np.full(k, lo))] * nb,                # most negative
        [(fmt.emax, np.resize([hi, lo], k))] * nb,        # saturating both ways
        [(fmt.emin, np.resize([hi, lo, 1, 0], k))] * nb,  # tiny: below the fixed-point grid
    ]
    dom = [(0, np.zeros(k, int))] * nb
    big = np.zeros(k, int)
    big[0] = hi
    dom = [(min(5, fmt.emax), big)] + dom[1:]      # (a random config's field may be narrow)
    rows.append(dom)                                       # one dominant element
    blocks = corner_blocks(fmt)
    for i in range(0, len(blocks), nb):
        row = blocks[i:i + nb]
        rows.append(row + [(0, np.clip(np.arange(k) - k // 2, lo, hi))] * (nb - len(row)))
    return rows


def random_rows(rng, cfg, n):
    """Residual-stream-like rows: a per-row scale and offset, occasional outlier blocks."""
    fmt, nb = cfg.in_fmt, cfg.row_blocks
    rows = []
    for _ in range(n):
        centre = int(rng.integers(-4, 6))
        row = [random_block(rng, fmt, centre=centre, spread=1) for _ in range(nb)]
        if rng.random() < 0.2:
            b = int(rng.integers(nb))
            row[b] = random_block(rng, fmt, "extreme", centre=centre + 4, spread=1)
        rows.append(row)
    return rows


def expected_rows(cfg, rows, params):
    gamma, beta = params
    xe = np.array([[e for e, _ in r] for r in rows])
    xm = np.array([[m for _, m in r] for r in rows])
    res = mxint_layernorm(xe, xm, np.array([e for e, _ in gamma]), np.array([m for _, m in gamma]),
                          np.array([e for e, _ in beta]), np.array([m for _, m in beta]),
                          cfg.spec)
    out = []
    for r in range(len(rows)):
        for b in range(cfg.row_blocks):
            beat = block_payload(res.exponents[r, b], res.mantissas[r, b], cfg.out_fmt)
            beat["last"] = int(b == cfg.row_blocks - 1)
            out.append(beat)
    return out


def param_beats(cfg, params):
    gamma, beta = params
    return [{"gamma": block_payload(ge, gm, cfg.param_fmt),
             "beta": block_payload(be, bm, cfg.param_fmt)}
            for (ge, gm), (be, bm) in zip(gamma, beta)]


def row_beats(cfg, rows):
    return [block_payload(e, m, cfg.in_fmt) for r in rows for e, m in r]


async def _run(tb, batches, gap=None, stall=None):
    """``batches``: [(params, rows)]: each parameter set is loaded, then its rows are sent;
    the next load is queued only after the previous rows were all taken."""
    cfg = _cfg(tb)
    psrc = tb.source("params", gap=gap)
    src = tb.source("operands", gap=gap)
    sink = tb.sink("results", stall=stall)
    want = [w for params, rows in batches for w in expected_rows(cfg, rows, params)]

    async def produce():
        for params, rows in batches:
            await psrc.send_all(param_beats(cfg, params))
            await src.send_all(row_beats(cfg, rows))
    tb.fork(produce())
    for i, w in enumerate(want):
        got = await sink.recv()
        tb.scoreboard.check(w, got, f"output block {i} (row {i // cfg.row_blocks})")
    return src, sink, len(want)


@cocotb.test()
async def random_and_corner_rows(dut):
    """Corner rows then random rows, one parameter reload in the middle, under the environment's
    traffic profile."""
    tb = await Testbench.start(dut)
    cfg = _cfg(tb)
    n = max(2, tb.samples // cfg.row_blocks)
    p1, p2 = random_params(tb.rng, cfg), random_params(tb.rng, cfg)
    batches = [(p1, corner_rows(cfg) + random_rows(tb.rng, cfg, n // 2)),
               (p2, random_rows(tb.rng, cfg, n - n // 2) + corner_rows(cfg)[:2])]
    _, _, checked = await _run(tb, batches)
    tb.record("rows", sum(len(r) for _, r in batches))
    tb.finish(min_checked=checked)


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def stress(dut, profile):
    """Corner and random rows under each stress profile."""
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    cfg = _cfg(tb)
    rows = corner_rows(cfg) + random_rows(tb.rng, cfg, max(4, tb.samples // (4 * cfg.row_blocks)))
    _, _, checked = await _run(tb, [(random_params(tb.rng, cfg), rows)])
    tb.finish(min_checked=checked)


@cocotb.test()
async def cycle_model(dut):
    """No gaps, no backpressure: every row handshake at the cycle the shared row-unit cycle
    model (software_model.mxint_softmax.softmax_cycles) predicts, and the steady-state rate."""
    tb = await Testbench.start(dut)
    cfg = _cfg(tb)
    dut_model = cfg.elaborate()
    dut_model._MustUse__silence = True       # built only to read its latencies
    lat = dut_model.latencies
    rows = random_rows(tb.rng, cfg, 24)
    src, sink, checked = await _run(tb, [(random_params(tb.rng, cfg), rows)], gap=0.0,
                                    stall=0.0)
    n = len(rows) * cfg.row_blocks
    start = src.beat_cycles[0]
    taken, emitted = softmax_cycles([cfg.row_blocks] * len(rows), row_info=lat["row_info"],
                                    second_pass=lat["second_pass"],
                                    buffer_blocks=lat["buffer_blocks"],
                                    row_slots=lat["row_slots"], arrivals=[start] * n)
    tb.scoreboard.check(taken, src.beat_cycles, "input handshake cycles (cycle model)")
    tb.scoreboard.check(emitted, sink.beat_cycles, "output handshake cycles (cycle model)")
    tail = sink.beat_cycles[-16 * cfg.row_blocks:]
    tb.record("cycle_model_matches", taken == src.beat_cycles and emitted == sink.beat_cycles)
    tb.record("blocks_per_cycle", round((len(tail) - 1) / max(1, tail[-1] - tail[0]), 4))
    tb.record("latencies", lat)
    tb.finish(min_checked=checked + 2)
