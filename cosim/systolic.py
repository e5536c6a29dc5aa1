"""cocotb regression of the systolic arrays against software_model.systolic.

Tests per config (the plain functions ``job_beats``, ``expected_rows``, ``workload`` define the
stimulus and the expected beats once, for this cocotb testbench and for the amaranth.sim and
native harnesses):
* ``random_jobs``: ``ACCELGEN_SAMPLES`` jobs of random shape and values (uniform, extreme-heavy and
  sparse mixes), split between the stress traffic profiles (``cosim.traffic.STRESS_PROFILES``:
  20% gaps and stalls, 90% output stalls, bursty on/off, starved input).
* ``corner_cases`` (under ``mild`` and ``backpressure``): K = 1 and K = max_k, all most-negative operands (the largest products, and
  saturation where the accumulator is narrower than exact), all most-positive, zeros, alternating
  extremes; for weight-stationary also one-row and long activation packets.
* ``cycle_model``: gap-free inputs and an always-ready output; every job's accept and result cycles
  must equal :func:`software_model.systolic.os_schedule` / ``ws_schedule`` exactly.

Tiled GEMMs (long workloads) run on the native harness instead: :mod:`cosim.gemm`.
"""

from __future__ import annotations

from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import STRESS_PROFILES, Testbench, operand_matrix
from software_model.systolic import gemm, os_schedule, ws_schedule


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs of a systolic array, from the manifest's plain data: the YAML
    ``config`` mapping and the component ``parameters`` the config mapped onto (widths, the
    accumulator width and the result-buffer depth as built). Attribute names follow the config
    dataclass, so the helpers below also take one."""
    return SimpleNamespace(
        rows=parameters["rows"], cols=parameters["cols"], dataflow=config["dataflow"],
        max_k=config["max_k"], a_width=parameters["a_width"], b_width=parameters["b_width"],
        accumulator_width=parameters["acc_width"], overflow=parameters["overflow"],
        result_buffer_rows=parameters["result_depth"],
        product_register=bool(parameters.get("product_register", False)))


def expected_rows(cfg, a: np.ndarray, b: np.ndarray) -> list[dict]:
    """Result beats of one job: rows of C = A . B with the array's arithmetic (``last`` on the
    job's final row). Weight-stationary A lanes >= K meet zero weights, so only A[:, :K] counts."""
    c = gemm(a[:, :b.shape[0]], b, a_width=cfg.a_width, b_width=cfg.b_width,
             acc_width=cfg.accumulator_width, overflow=cfg.overflow)
    return [{"c": [int(v) for v in row], "last": int(r == c.shape[0] - 1)}
            for r, row in enumerate(c)]


def job_beats(cfg, a: np.ndarray, b: np.ndarray) -> dict[str, list[dict]]:
    """Input beats of one job, per stream. Output-stationary: A is rows x K, B is K x cols, one
    ``operands`` beat per k. Weight-stationary: B is K x cols (K <= rows) on ``weights``, A is
    M x rows on ``activations``, one beat per row."""
    if cfg.dataflow == "output_stationary":
        k = a.shape[1]
        return {"operands": [{"a": [int(v) for v in a[:, t]], "b": [int(v) for v in b[t]],
                              "last": int(t == k - 1)} for t in range(k)]}
    return {"weights": [{"b": [int(v) for v in b[t]], "last": int(t == b.shape[0] - 1)}
                        for t in range(b.shape[0])],
            "activations": [{"a": [int(v) for v in a[r]], "last": int(r == a.shape[0] - 1)}
                            for r in range(a.shape[0])]}


def random_job(cfg, rng, k: int, style_a: str, style_b: str, m: int | None = None):
    """(A, B) of one job: output-stationary A is rows x K; weight-stationary A is m x rows."""
    if cfg.dataflow == "output_stationary":
        a = operand_matrix(rng, (cfg.rows, k), cfg.a_width, style_a)
    else:
        a = operand_matrix(rng, (m, cfg.rows), cfg.a_width, style_a)
    b = operand_matrix(rng, (k, cfg.cols), cfg.b_width, style_b)
    return a, b


def workload(cfg, jobs) -> tuple[dict[str, list[dict]], list[dict]]:
    """All input beats (per stream, in order) and all expected result beats of ``jobs``."""
    inputs: dict[str, list[dict]] = {}
    expected: list[dict] = []
    for a, b in jobs:
        for stream, beats in job_beats(cfg, a, b).items():
            inputs.setdefault(stream, []).extend(beats)
        expected += expected_rows(cfg, a, b)
    return inputs, expected


class _Harness:
    """Drives jobs into either dataflow and checks every result row in order."""

    def __init__(self, tb: Testbench, *, gap: float | None = None, stall: float | None = None):
        self.tb = tb
        self.cfg = view(tb.config, tb.parameters)
        self.os = self.cfg.dataflow == "output_stationary"
        names = ("operands",) if self.os else ("weights", "activations")
        self.sources = {name: tb.source(name, gap) for name in names}
        self.results = tb.sink("results", stall)
        self.jobs: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def operands(self):
        return self.sources["operands"]

    @property
    def weights(self):
        return self.sources["weights"]

    @property
    def activations(self):
        return self.sources["activations"]

    def add_job(self, a: np.ndarray, b: np.ndarray) -> None:
        self.jobs.append((a, b))

    async def run(self) -> None:
        inputs, _ = workload(self.cfg, self.jobs)
        for name, beats in inputs.items():
            self.tb.fork(self.sources[name].send_all(beats))
        for n, (a, b) in enumerate(self.jobs):
            for r, row in enumerate(expected_rows(self.cfg, a, b)):
                got = await self.results.recv()
                self.tb.scoreboard.check(row, got, f"job {n} (K={b.shape[0]}) row {r}")

    def random_job(self, k: int, style_a: str, style_b: str, m: int | None = None) -> None:
        self.add_job(*random_job(self.cfg, self.tb.rng, k, style_a, style_b, m))


STYLES = ("uniform", "uniform", "extreme", "sparse")


def _random_k(tb: Testbench) -> int:
    cfg = view(tb.config, tb.parameters)
    k_max = cfg.max_k
    # Mostly short jobs (fast to simulate, stress back-to-back hand-over) plus some full-length.
    choice = tb.rng.random()
    if choice < 0.15:
        return k_max
    if choice < 0.3:
        return 1
    return int(tb.rng.integers(1, min(k_max, 4 * cfg.rows) + 1))


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def random_jobs(dut, profile):
    """Random jobs under each stress profile (the sample count is split between them)."""
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    h = _Harness(tb)
    samples = max(1, tb.samples // len(STRESS_PROFILES))
    for _ in range(samples):
        m = int(tb.rng.integers(1, 2 * tb.config.rows + 1))
        h.random_job(_random_k(tb), str(tb.rng.choice(STYLES)), str(tb.rng.choice(STYLES)), m=m)
    await h.run()
    tb.record("samples", samples)
    tb.finish(min_checked=samples)


@cocotb.test()
@cocotb.parametrize(profile=("mild", "backpressure"))
async def corner_cases(dut, profile):
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    h = _Harness(tb)
    cfg = view(tb.config, tb.parameters)
    for k in sorted({1, cfg.max_k}):
        for style_a, style_b in (("min", "min"), ("max", "max"), ("min", "max"), ("zero", "min"),
                                 ("alternate", "alternate"), ("uniform", "zero")):
            for m in ((1, cfg.rows, 3 * cfg.rows + 1) if not h.os else (None,)):
                h.random_job(k, style_a, style_b, m=m)
    await h.run()
    tb.finish(min_checked=len(h.jobs))


@cocotb.test()
async def cycle_model(dut):
    """Measured accept and result cycles equal the analytical model's, job by job."""
    tb = await Testbench.start(dut)
    h = _Harness(tb, gap=0.0, stall=0.0)
    cfg = view(tb.config, tb.parameters)
    if h.os:
        ks = [1, 2, cfg.rows, cfg.max_k, 1, 1, 3, min(cfg.max_k, 16 * cfg.rows), 2, 1]
        ks = [min(k, cfg.max_k) for k in ks]
        for k in ks:
            h.random_job(k, "uniform", "uniform")
        model = os_schedule(ks, rows=cfg.rows, cols=cfg.cols, buffer_rows=cfg.result_buffer_rows,
                            product_register=cfg.product_register)
    else:
        km = [(cfg.rows, 1), (1, 1), (cfg.rows, cfg.rows), (1, 3 * cfg.rows),
              (max(1, cfg.rows // 2), 2), (cfg.rows, 40), (1, 1), (cfg.rows, 5)]
        for k, m in km:
            h.random_job(k, "uniform", "uniform", m=m)
        model = ws_schedule(km, rows=cfg.rows, cols=cfg.cols, buffer_rows=cfg.result_buffer_rows,
                            product_register=cfg.product_register)
    await h.run()
    sb = tb.scoreboard
    if h.os:
        accepted = h.operands.beat_cycles
        origin = accepted[0]
        lasts = np.cumsum(ks) - 1
        for n, job in enumerate(model):
            sb.check(job.last_in, accepted[lasts[n]] - origin, f"job {n} last operand cycle")
    else:
        accepted = h.activations.beat_cycles
        origin = h.weights.beat_cycles[0]
        firsts = np.cumsum([0] + [m for _k, m in km])[:-1]
        for n, job in enumerate(model):
            sb.check(job.first_in, accepted[firsts[n]] - origin, f"job {n} first activation cycle")
    rows_per_job = [cfg.rows] * len(model) if h.os else [m for _k, m in km]
    starts = np.cumsum([0] + rows_per_job)[:-1]
    out = h.results.beat_cycles
    for n, job in enumerate(model):
        sb.check(job.first_out, out[starts[n]] - origin, f"job {n} first result cycle")
        sb.check(job.last_out, out[starts[n] + rows_per_job[n] - 1] - origin,
                 f"job {n} last result cycle")
    tb.record("model_last_out", model[-1].last_out)
    tb.record("rtl_last_out", out[-1] - origin)
    tb.finish(min_checked=len(model))
