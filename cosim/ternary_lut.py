"""cocotb regression of the ternary units (lut, addsub, multiplier) against
software_model.ternary.ternary_gemm (bit-exact, in the hardware's order).

A job is one token's reduction for one group of K output columns: ceil(N / (L*mu)) beats, the
last one zero-padded and flagged `last`; the unit answers with K results.
"""
from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import Testbench
from software_model import float16
from software_model.ternary import (exact_accumulator_width, parse_activation, ternary_gemm,
                                    weight_codes)


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs, from the manifest's plain data (names as in the config): the
    unit's parameters, its architecture, and the accumulator width as built against the exact
    one (a narrower accumulator gets wrap-around corner jobs)."""
    act = parse_activation(parameters["activation"])
    beat = parameters["lanes_l"] * parameters["mu"]
    return SimpleNamespace(
        mu=parameters["mu"], lanes_l=parameters["lanes_l"], lanes_k=parameters["lanes_k"],
        activation=parameters["activation"], architecture=config["architecture"],
        is_float=act.is_float, activation_width=act.width, beat_reduction=beat,
        acc_width=config["acc_width"],
        accumulators=parameters.get("accumulator_stages", 1),
        accumulator_width=act.width if act.is_float else parameters["acc_width"],
        exact_accumulator_width=exact_accumulator_width(
            parameters["activation"], config["architecture"],
            max(config["max_reduction"], beat)))


# ------------------------------------------------------------------ stimulus

def _int_range(cfg):
    width = cfg.activation_width
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def random_activations(rng, cfg, n):
    if not cfg.is_float:
        lo, hi = _int_range(cfg)
        return rng.integers(lo, hi + 1, n)
    fmt = cfg.activation
    style = rng.integers(0, 4)
    if style == 0:      # LLM-like: normal values at one random scale
        values = rng.normal(size=n) * 2.0 ** rng.integers(-10, 10)
    elif style == 1:    # wide dynamic range: every finite exponent
        bits = rng.integers(0, 1 << 16, n).astype(np.uint16)
        return np.where(float16.is_nan(bits, fmt) | _is_inf(bits, fmt),
                        bits & np.uint16(0x3FFF), bits).astype(np.uint16)
    elif style == 2:    # near cancellation: values and their negatives
        values = rng.normal(size=n) * 8.0
        values[rng.random(n) < 0.5] *= -1
    else:               # tiny: the subnormal range
        f = float16.FORMATS[fmt]
        values = rng.normal(size=n) * 2.0 ** (f.min_normal_exponent - rng.integers(0, 4))
    return float16.from_float(values, fmt)


def _is_inf(bits, fmt):
    f = float16.FORMATS[fmt]
    return (bits & np.uint16(f.sign_mask - 1)) == f.positive_infinity


def random_weights(rng, cfg, n, columns):
    """Ternary weights; for the multiplier baseline, their dequantised form in the activation type."""
    sparsity = rng.uniform(0.0, 0.9)
    ternary = np.where(rng.random((columns, n)) < sparsity, 0,
                       rng.choice((-1, 1), (columns, n))).astype(np.int64)
    if cfg.architecture != "multiplier":
        return ternary
    if not cfg.is_float:
        if rng.random() < 0.5:          # arbitrary full-range weights exercise the multipliers
            lo, hi = _int_range(cfg)
            return rng.integers(lo, hi + 1, (columns, n))
        return ternary * rng.integers(1, _int_range(cfg)[1] + 1)
    fmt = cfg.activation
    if rng.random() < 0.5:
        return float16.from_float(rng.normal(size=(columns, n)) * 2.0 ** rng.integers(-6, 6), fmt)
    gamma = float(np.abs(rng.normal())) + 1e-3       # W_q * gamma, as a BitNet layer would hold
    return float16.from_float(ternary * gamma, fmt)


def corner_jobs(cfg, rng):
    """Zeros, extremes, minimum/odd lengths, wrap-around; floats: -0, Inf, NaN, overflow."""
    beat, k = cfg.beat_reduction, cfg.lanes_k
    long_n = 6 * beat + 1
    jobs = []
    ones = lambda n: np.ones((k, n), np.int64)              # noqa: E731
    signs = lambda n: np.where(np.arange(k)[:, None] % 2, -1, 1) * ones(n)  # noqa: E731
    if not cfg.is_float:
        lo, hi = _int_range(cfg)
        jobs += [
            (np.zeros(beat, np.int64), random_weights(rng, cfg, beat, k)),
            (random_activations(rng, cfg, beat), np.zeros((k, beat), np.int64)),
            (np.full(1, lo), signs(1)),                                     # N = 1
            (np.full(long_n, lo), signs(long_n)),                           # extremes
            (np.full(long_n, hi), signs(long_n)),
            (np.full(beat + 1, lo), -ones(beat + 1)),
        ]
        if cfg.architecture == "multiplier":
            jobs.append((np.full(long_n, lo), np.full((k, long_n), lo)))   # (-2^(w-1))^2
            jobs.append((np.full(long_n, hi), np.full((k, long_n), lo)))
        if cfg.acc_width is not None and cfg.acc_width < cfg.exact_accumulator_width:
            # Long enough to wrap the accumulator (it wraps modulo 2^acc_width by design).
            step = -lo * (-lo if cfg.architecture == "multiplier" else 1)
            n = (1 << (cfg.acc_width - 1)) // step + 2 * beat
            jobs.append((np.full(n, lo), ones(n)))
            jobs.append((np.full(n, hi), -ones(n)))
        return jobs
    fmt = cfg.activation
    f = float16.FORMATS[fmt]
    largest = (f.exponent_max - 1) << f.mantissa_bits | ((1 << f.mantissa_bits) - 1)
    minus_zero, inf, nan = f.sign_mask, f.positive_infinity, f.canonical_nan
    one = float16.from_float(1.0, fmt)
    tern = lambda w: (w if cfg.architecture != "multiplier"        # noqa: E731
                      else np.where(w == 0, 0, np.where(w > 0, one, one | f.sign_mask))
                      .astype(np.uint16))
    full = lambda n, v: np.full(n, v, np.uint16)                    # noqa: E731
    jobs += [
        (full(beat, 0), tern(signs(beat))),
        (full(beat, minus_zero), tern(ones(beat))),                 # -0 everywhere
        (full(long_n, minus_zero), tern(signs(long_n))),
        (full(1, largest), tern(signs(1))),
        (full(long_n, largest), tern(ones(long_n))),                # overflow to Inf
        (full(long_n, largest | f.sign_mask), tern(signs(long_n))),
        (full(beat, 1), tern(ones(beat))),                          # smallest subnormals
        (np.concatenate([full(beat, inf), full(beat, inf | f.sign_mask)]),
         tern(np.concatenate([ones(beat), signs(beat)], axis=1))),  # Inf - Inf
        (np.concatenate([full(2, nan), random_activations(rng, cfg, beat)]),
         tern(np.concatenate([np.zeros((k, 2), np.int64), ones(beat)], axis=1))),
        (np.concatenate([full(1, nan), full(beat, one)]), tern(ones(beat + 1))),
        (full(beat + 1, inf), tern(np.zeros((k, beat + 1), np.int64))),
    ]
    x = random_activations(rng, cfg, beat)
    jobs.append((np.concatenate([x, float16.neg(x, fmt)]),
                 tern(np.concatenate([ones(beat), ones(beat)], axis=1))))  # exact cancellation
    return jobs


def job_beats(cfg, x, w):
    """Payloads of one job: L*mu activations per beat, K lanes' weights, zero-padded last beat."""
    beat = cfg.beat_reduction
    n = x.shape[0]
    padded = max(beat, -(-n // beat) * beat)
    x = np.concatenate([x, np.zeros(padded - n, x.dtype)])
    w = np.concatenate([w, np.zeros((w.shape[0], padded - n), w.dtype)], axis=1)
    payloads = []
    for start in range(0, padded, beat):
        tile = w[:, start:start + beat]
        lanes = tile.ravel() if cfg.architecture == "multiplier" else weight_codes(tile).ravel()
        payloads.append({"activations": [int(v) for v in x[start:start + beat]],
                         "weights": [int(v) for v in lanes],
                         "last": int(start + beat >= padded)})
    return payloads


def expected_results(cfg, x, w):
    result = ternary_gemm(x, w, mu=cfg.mu, lanes_l=cfg.lanes_l, activation=cfg.activation,
                          architecture=cfg.architecture,
                          acc_width=None if cfg.is_float else cfg.accumulator_width,
                          accumulators=cfg.accumulators)
    return [int(v) for v in result]


# ------------------------------------------------------------------ driver + scoreboard

def _unit_class(architecture):
    from hw.ternary_baseline import TernaryAddSubUnit, TernaryMultiplierUnit
    from hw.ternary_lut import TernaryLUTUnit
    return {"lut": TernaryLUTUnit, "addsub": TernaryAddSubUnit,
            "multiplier": TernaryMultiplierUnit}[architecture]


async def _run(tb, jobs, label, gap=None, stall=None):
    cfg = view(tb.config, tb.parameters)
    source = tb.source("operands", gap=gap)
    sink = tb.sink("results", stall=stall)
    beats = [job_beats(cfg, x, w) for x, w in jobs]
    expected = [expected_results(cfg, x, w) for x, w in jobs]

    async def produce():
        for payloads in beats:
            await source.send_all(payloads)

    tb.fork(produce())
    for i, want in enumerate(expected):
        got = await sink.recv()
        x = jobs[i][0]
        tb.scoreboard.check(want, got, f"{label} {i} (N={x.shape[0]}, first activations "
                                       f"{[int(v) for v in x[:4]]})")
    return source, sink, beats


@cocotb.test()
async def random_jobs(dut):
    """Random lengths, values and sparsity; random input gaps and output backpressure."""
    tb = await Testbench.start(dut)
    cfg = view(tb.config, tb.parameters)
    jobs = []
    for _ in range(tb.samples):
        n = int(tb.rng.integers(1, 4 * cfg.beat_reduction + 1))
        jobs.append((random_activations(tb.rng, cfg, n),
                     random_weights(tb.rng, cfg, n, cfg.lanes_k)))
    await _run(tb, jobs, "random job")
    tb.record("jobs", len(jobs))
    tb.finish(min_checked=len(jobs))


@cocotb.test()
async def corner_cases(dut):
    """Zeros, extremes, N = 1 and N = beat + 1, wrap/overflow, and the float special classes."""
    tb = await Testbench.start(dut)
    jobs = corner_jobs(view(tb.config, tb.parameters), tb.rng)
    await _run(tb, jobs, "corner job")
    tb.record("jobs", len(jobs))
    tb.finish(min_checked=len(jobs))


@cocotb.test()
async def full_throughput(dut):
    """No gaps or stalls: consecutive results are exactly one job's beat count apart, the first
    the unit's latency + 1 cycles after its job's last beat is taken (the unit's ``latency``
    counts from the operand registers)."""
    tb = await Testbench.start(dut)
    cfg = view(tb.config, tb.parameters)
    jobs = []
    for _ in range(24):
        n = int(tb.rng.integers(1, 3 * cfg.beat_reduction + 1))
        jobs.append((random_activations(tb.rng, cfg, n),
                     random_weights(tb.rng, cfg, n, cfg.lanes_k)))
    source, sink, beats = await _run(tb, jobs, "streamed job", gap=0.0, stall=0.0)
    gaps = np.diff(sink.beat_cycles).tolist()
    tb.scoreboard.check([len(b) for b in beats[1:]], gaps, "cycles between consecutive results")
    latency = sink.beat_cycles[0] - source.beat_cycles[len(beats[0]) - 1]
    tb.record("latency", latency)
    unit = _unit_class(cfg.architecture)(**tb.parameters)
    unit._MustUse__silence = True            # built only to read its latency
    tb.scoreboard.check(unit.latency + 1, latency, "cycles from a job's last beat to its results")
    tb.record("beats", sum(len(b) for b in beats))
    tb.finish(min_checked=len(jobs) + 2)
