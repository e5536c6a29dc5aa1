"""cocotb regression of the flattened systolic array against software_model.flattened.

Tests per config (every mode, random input gaps and output backpressure unless noted):
* ``gemm_mode``: ``ACCELGEN_SAMPLES`` full tiles (M = BLEN) of random K and values.
* ``gemv_mode``: ``ACCELGEN_SAMPLES`` one-row jobs (M = 1); rows >= 1 of A carry random junk
  that must not reach the output.
* ``per_head_mode``: batched per-head matmuls: heads of several jobs each, random M, tagged with
  the head; with ``transpose_b`` the B operand is sent as K^T (attention scores Q_h . K_h^T).
* ``corner_cases``: K = 1, K = S, K = max_k, K not a multiple of S; most-negative / most-positive
  / zero / alternating operands (largest products, saturation when the accumulator is narrow).
* ``cycle_model``: no gaps, always ready; every job's last-beat and result cycles must equal
  :func:`software_model.flattened.flat_schedule`.

Tiled GEMMs (long workloads) run on the native harness instead: :mod:`cosim.gemm`.
"""

from __future__ import annotations

from types import SimpleNamespace

import cocotb
import numpy as np

from cosim.harness import STRESS_PROFILES, Testbench, operand_matrix, signed_limits
from software_model.flattened import flat_gemm, flat_mxint_gemm, flat_schedule, mx_align_stages


def view(config, parameters) -> SimpleNamespace:
    """What this testbench needs of a flattened array, from the manifest's plain data: the YAML
    ``config`` mapping (job limits, formats) and the component ``parameters`` (widths and depths
    as built). Attribute names follow the config dataclass, so the helpers below also take one."""
    p = parameters
    return SimpleNamespace(
        blen=p["blen"], mlen=p["mlen"], sub_arrays=p["mlen"] // p["blen"],
        a_width=p["a_width"], b_width=p["b_width"], accumulator_width=p["acc_width"],
        output_width=p["output_width"], overflow=p["overflow"],
        a_format=config["a_format"], b_format=config["b_format"],
        mxint=bool(p["a_mxint"] or p["b_mxint"]), block_size=config["block_size"],
        exponent_width=p["exponent_width"], max_blocks=config["max_blocks"],
        max_k=config["max_k"], heads=p["heads"], transpose_b=p["transpose_b"],
        result_buffer_rows=p["result_depth"],
        pe_product_register=bool(p.get("pe_product_register", False)),
        align_stages=_align_stages(p))


def _align_stages(p) -> int:
    """MXInt alignment stages of the array as built (software_model.flattened.mx_align_stages)."""
    if not (p["a_mxint"] or p["b_mxint"]):
        return 0
    return mx_align_stages(p["output_width"], p.get("segment_bits", 16))


STYLES = ("uniform", "uniform", "extreme", "sparse")


class FlatJob:
    """One job: A is BLEN x K (rows >= M are junk the array must ignore), B is K x BLEN; MXInt
    operands carry one exponent per row/column and block."""

    def __init__(self, a, b, rows: int, head: int, transpose: bool, a_exp=None, b_exp=None):
        self.a, self.b, self.rows, self.head, self.transpose = a, b, rows, head, transpose
        self.a_exp, self.b_exp = a_exp, b_exp


EXP_STYLES = ("uniform", "uniform", "extreme", "min", "max")


def _exponents(rng, shape, width: int, style: str) -> np.ndarray:
    lo, hi = signed_limits(width)
    if style == "uniform":
        return rng.integers(lo, hi + 1, size=shape)
    if style == "extreme":
        return rng.choice([lo, hi], size=shape)
    return np.full(shape, lo if style == "min" else hi)


def random_job(cfg, rng, k: int, rows: int, style_a: str, style_b: str, *, head: int = 0,
               transpose: bool = False, exp_style: str | None = None) -> FlatJob:
    """MXInt: K is whole blocks."""
    a = operand_matrix(rng, (cfg.blen, k), cfg.a_width, style_a)
    a[rows:] = operand_matrix(rng, (cfg.blen - rows, k), cfg.a_width, "uniform")
    b = operand_matrix(rng, (k, cfg.blen), cfg.b_width, style_b)
    a_exp = b_exp = None
    if cfg.mxint:
        blocks = k // cfg.block_size
        style = exp_style or str(rng.choice(EXP_STYLES))
        if cfg.a_format == "mxint":
            a_exp = _exponents(rng, (cfg.blen, blocks), cfg.exponent_width, style)
        if cfg.b_format == "mxint":
            b_exp = _exponents(rng, (blocks, cfg.blen), cfg.exponent_width, style)
    return FlatJob(a, b, rows, head, transpose and cfg.transpose_b, a_exp, b_exp)


def job_beats(cfg, job: FlatJob) -> list[dict]:
    """``operands`` beats of one job: beat t carries k-steps t*S .. t*S+S-1 (K padded with zeros
    to whole beats); MXInt: one array job per block, its last beat carries the exponents."""
    subs, blen = cfg.sub_arrays, cfg.blen
    k = job.a.shape[1]
    n_beats = -(-k // subs)
    pad = n_beats * subs - k
    # Padding k-steps are zero in both operands, so they add nothing (and never saturate).
    a = np.concatenate([job.a, np.zeros((blen, pad), int)], axis=1)
    b = np.concatenate([job.b, np.zeros((pad, blen), int)], axis=0)
    out = []
    for t in range(n_beats):
        ks = slice(t * subs, (t + 1) * subs)
        a_lanes = a[:, ks].T.reshape(-1)          # [s][i]
        b_tile = b[ks, :]                          # [s][j]
        b_lanes = (b_tile.T if job.transpose else b_tile).reshape(-1)
        beat = {"a": [int(v) for v in a_lanes], "b": [int(v) for v in b_lanes],
                "rows": job.rows, "head": job.head, "last": int(t == n_beats - 1)}
        if cfg.mxint:
            per_block = cfg.block_size // subs
            blk, pos = divmod(t, per_block)
            blocks = n_beats // per_block
            beat["last"] = int(pos == per_block - 1)
            beat["first"] = int(blk == 0)
            beat["final"] = int(blk == blocks - 1)
            if cfg.a_format == "mxint":
                beat["a_exp"] = [int(v) for v in job.a_exp[:, blk]]
            if cfg.b_format == "mxint":
                beat["b_exp"] = [int(v) for v in job.b_exp[blk, :]]
        if cfg.transpose_b:
            beat["transpose"] = int(job.transpose)
        out.append(beat)
    return out


def expected_rows(cfg, job: FlatJob) -> list[dict]:
    """Result beats of one job: its first M rows of C, tagged with its head."""
    if cfg.mxint:
        c = flat_mxint_gemm(
            job.a[:job.rows], job.b,
            a_exp=None if job.a_exp is None else job.a_exp[:job.rows], b_exp=job.b_exp,
            block_size=cfg.block_size, exponent_width=cfg.exponent_width,
            sub_arrays=cfg.sub_arrays, a_width=cfg.a_width, b_width=cfg.b_width,
            acc_width=cfg.accumulator_width, out_width=cfg.output_width)[0]
    else:
        c = flat_gemm(job.a[:job.rows], job.b, sub_arrays=cfg.sub_arrays, a_width=cfg.a_width,
                      b_width=cfg.b_width, acc_width=cfg.accumulator_width,
                      overflow=cfg.overflow)
    return [{"c": [int(v) for v in c[r]], "head": job.head, "last": int(r == job.rows - 1)}
            for r in range(job.rows)]


def block_jobs(cfg, job: FlatJob) -> list[tuple[int, int]]:
    """(beats, rows emitted) of each job the array sees: one per MXInt block."""
    beats = len(job_beats(cfg, job))
    if not cfg.mxint:
        return [(beats, job.rows)]
    blocks = job.a.shape[1] // cfg.block_size
    per = beats // blocks
    return [(per, job.rows if blk == blocks - 1 else 0) for blk in range(blocks)]


class _Harness:
    """Drives jobs and checks every result row in order."""

    def __init__(self, tb: Testbench, *, gap: float | None = None, stall: float | None = None):
        self.tb = tb
        self.cfg = view(tb.config, tb.parameters)
        self.operands = tb.source("operands", gap)
        self.results = tb.sink("results", stall)
        self.jobs: list[FlatJob] = []

    def add(self, k: int, rows: int, style_a: str, style_b: str, *, head: int = 0,
            transpose: bool = False, exp_style: str | None = None) -> FlatJob:
        job = random_job(self.cfg, self.tb.rng, k, rows, style_a, style_b, head=head,
                         transpose=transpose, exp_style=exp_style)
        self.jobs.append(job)
        return job

    def block_jobs(self, job: FlatJob) -> list[tuple[int, int]]:
        return block_jobs(self.cfg, job)

    async def run(self) -> None:
        self.tb.fork(self.operands.send_all([b for job in self.jobs
                                             for b in job_beats(self.cfg, job)]))
        for n, job in enumerate(self.jobs):
            for r, row in enumerate(expected_rows(self.cfg, job)):
                got = await self.results.recv()
                self.tb.scoreboard.check(
                    row, got, f"job {n} (K={job.a.shape[1]}, M={job.rows}, head={job.head}, "
                              f"transpose={job.transpose}) row {r}")


def _random_k(tb: Testbench) -> int:
    cfg = view(tb.config, tb.parameters)
    choice = tb.rng.random()
    if cfg.mxint:
        blocks = cfg.max_blocks if choice < 0.1 else int(
            tb.rng.integers(1, min(cfg.max_blocks, 4) + 1))
        return blocks * cfg.block_size
    if choice < 0.1:
        return cfg.max_k
    if choice < 0.2:
        return 1
    return int(tb.rng.integers(1, min(cfg.max_k, 4 * cfg.sub_arrays * cfg.blen) + 1))


def _styles(tb: Testbench) -> tuple[str, str]:
    return str(tb.rng.choice(STYLES)), str(tb.rng.choice(STYLES))


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def gemm_mode(dut, profile):
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    h = _Harness(tb)
    samples = max(1, tb.samples // len(STRESS_PROFILES))
    tb.record("samples", samples)
    for _ in range(samples):
        h.add(_random_k(tb), tb.config.blen, *_styles(tb))
    await h.run()
    tb.finish(min_checked=samples * tb.config.blen)


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def gemv_mode(dut, profile):
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    h = _Harness(tb)
    samples = max(1, tb.samples // len(STRESS_PROFILES))
    tb.record("samples", samples)
    for _ in range(samples):
        h.add(_random_k(tb), 1, *_styles(tb))
    await h.run()
    tb.finish(min_checked=samples)


@cocotb.test()
@cocotb.parametrize(profile=("mild", "bursty"))
async def per_head_mode(dut, profile):
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    h = _Harness(tb)
    cfg = view(tb.config, tb.parameters)
    rows = 0
    samples = max(1, tb.samples // 2)
    tb.record("samples", samples)
    while len(h.jobs) < samples:
        # One batch: every head's Q_h . K_h^T, a few jobs (N tiles) per head, same K per head.
        m = int(tb.rng.integers(1, cfg.blen + 1))
        k = _random_k(tb)
        for head in range(cfg.heads):
            for _tile in range(int(tb.rng.integers(1, 3))):
                h.add(k, m, *_styles(tb), head=head, transpose=bool(tb.rng.random() < 0.7))
                rows += m
    await h.run()
    tb.record("heads", cfg.heads)
    tb.finish(min_checked=rows)


@cocotb.test()
@cocotb.parametrize(profile=("mild", "backpressure"))
async def corner_cases(dut, profile):
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    h = _Harness(tb)
    cfg = view(tb.config, tb.parameters)
    if cfg.mxint:
        ks = sorted({cfg.block_size, 2 * cfg.block_size, cfg.max_blocks * cfg.block_size})
    else:
        ks = sorted({1, cfg.sub_arrays, cfg.max_k, max(1, cfg.max_k - 1), cfg.sub_arrays + 1}
                    & set(range(1, cfg.max_k + 1)))
    rows = 0
    for k in ks:
        for style_a, style_b in (("min", "min"), ("max", "max"), ("min", "max"),
                                 ("zero", "min"), ("alternate", "alternate"), ("uniform", "zero")):
            for m in sorted({1, cfg.blen}):
                for transpose in ((False, True) if cfg.transpose_b else (False,)):
                    for exp_style in (("min", "max", "extreme") if cfg.mxint else (None,)):
                        h.add(k, m, style_a, style_b, head=cfg.heads - 1, transpose=transpose,
                              exp_style=exp_style)
                        rows += m
    await h.run()
    tb.finish(min_checked=rows)


@cocotb.test()
async def cycle_model(dut):
    """Measured last-beat and result cycles equal the analytical model's, job by job."""
    tb = await Testbench.start(dut)
    h = _Harness(tb, gap=0.0, stall=0.0)
    cfg = view(tb.config, tb.parameters)
    subs, blen = cfg.sub_arrays, cfg.blen
    shapes = [(1, blen), (1, 1), (subs * blen, blen), (cfg.max_k, 1), (1, blen), (1, blen),
              (1, blen), (2 * subs + 1, max(1, blen // 2)), (cfg.max_k, blen), (subs, 1),
              (1, 1), (1, 1)]
    if cfg.mxint:
        bk = cfg.block_size
        shapes = [(bk, blen), (bk, 1), (3 * bk, blen), (bk, 1), (2 * bk, max(1, blen // 2)),
                  (bk, blen), (bk, blen), (4 * bk, 1), (bk, 1)]
    for k, m in shapes:
        h.add(min(k, cfg.max_k) if not cfg.mxint else k, m, "uniform", "uniform")
    jobs = [bj for j in h.jobs for bj in h.block_jobs(j)]
    model = flat_schedule(jobs, blen=blen, sub_arrays=subs, buffer_rows=cfg.result_buffer_rows,
                          product_register=cfg.pe_product_register,
                          align_stages=cfg.align_stages)
    await h.run()
    sb = tb.scoreboard
    accepted = h.operands.beat_cycles
    origin = accepted[0]
    lasts = np.cumsum([b for b, _m in jobs]) - 1
    starts = np.cumsum([0] + [m for _b, m in jobs])[:-1]
    out = h.results.beat_cycles
    for n, job in enumerate(model):
        sb.check(job.last_in, accepted[lasts[n]] - origin, f"job {n} last operand cycle")
        if jobs[n][1] == 0:
            continue        # an MXInt block that is not its tile's last emits nothing
        sb.check(job.first_out, out[starts[n]] - origin, f"job {n} first result cycle")
        sb.check(job.last_out, out[starts[n] + jobs[n][1] - 1] - origin,
                 f"job {n} last result cycle")
    tb.record("model_last_out", [j for j, (_b, m) in zip(model, jobs) if m][-1].last_out)
    tb.record("rtl_last_out", out[-1] - origin)
    tb.finish(min_checked=len(model))
