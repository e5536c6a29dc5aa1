"""Result buffers at their smallest depths: every row of every job arrives, in order, bit-exact.

Regression for a data-loss bug: the credit-reserved result buffer used ``SyncFIFOBuffered``, which
at depth 2 refuses a write in the cycle after one lands in an empty queue, so a 1-row array (default
depth 2) or any ``result_buffer: 2`` lost rows and then deadlocked. Runs in ``amaranth.sim`` (no
Verilator), under traffic profiles that fill the buffer.
"""

from __future__ import annotations

import numpy as np
import pytest

from cosim.pysim import run_streams
from gen.config.flattened import FlattenedArrayConfig
from gen.config.systolic import SystolicArrayConfig
from software_model.flattened import flat_gemm
from software_model.systolic import gemm

PROFILES = ("smooth", "backpressure", "bursty")


def _ints(rng, shape, width):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return rng.choice([lo, hi, 0, 1, -1], size=shape) if rng.random() < 0.3 else \
        rng.integers(lo, hi + 1, size=shape)


def test_two_back_to_back_one_row_jobs_both_arrive():
    """The smallest failing case found: 1x1 int2 array, max_k 1, two K=1 jobs on consecutive
    cycles, results always ready; the second result (1) used to be lost."""
    cfg = SystolicArrayConfig(rows=1, cols=1, a_type="int2", b_type="int2", max_k=1)
    run = run_streams(cfg.elaborate(), {"operands": [{"a": [-2], "b": [-2], "last": 1},
                                                     {"a": [1], "b": [1], "last": 1}]},
                      {"results": 2}, profile="smooth", max_cycles=200)
    assert run.outputs["results"] == [{"c": [4], "last": 1}, {"c": [1], "last": 1}]


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("rows,depth", [(1, 1), (1, 2), (1, 3), (1, 4), (2, 2), (2, 3), (2, 4)])
def test_output_stationary_small_buffers(rows, depth, profile):
    cfg = SystolicArrayConfig(rows=rows, cols=2, a_type="int3", b_type="int3", max_k=3,
                              result_buffer=depth)
    rng = np.random.default_rng([rows, depth])
    jobs = [(_ints(rng, (rows, k), 3), _ints(rng, (k, 2), 3))
            for k in rng.integers(1, 4, size=24)]
    beats = [{"a": [int(v) for v in a[:, t]], "b": [int(v) for v in b[t]],
              "last": int(t == a.shape[1] - 1)} for a, b in jobs for t in range(a.shape[1])]
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": rows * len(jobs)},
                      profile=profile, seed=depth)
    expected = [{"c": [int(v) for v in row], "last": int(r == rows - 1)}
                for a, b in jobs
                for r, row in enumerate(gemm(a, b, a_width=3, b_width=3,
                                             acc_width=cfg.accumulator_width))]
    assert run.outputs["results"] == expected


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_weight_stationary_small_buffers(depth, profile):
    cfg = SystolicArrayConfig(rows=2, cols=2, dataflow="weight_stationary", a_type="int3",
                              b_type="int3", max_k=2, result_buffer=depth)
    rng = np.random.default_rng(depth)
    jobs = [(_ints(rng, (int(m), 2), 3), _ints(rng, (int(k), 2), 3))
            for k, m in zip(rng.integers(1, 3, size=16), rng.integers(1, 5, size=16))]
    weights = [{"b": [int(v) for v in b[t]], "last": int(t == b.shape[0] - 1)}
               for _a, b in jobs for t in range(b.shape[0])]
    acts = [{"a": [int(v) for v in a[r]], "last": int(r == a.shape[0] - 1)}
            for a, _b in jobs for r in range(a.shape[0])]
    expected = [{"c": [int(v) for v in row], "last": int(r == a.shape[0] - 1)}
                for a, b in jobs
                for r, row in enumerate(gemm(a[:, :b.shape[0]], b, a_width=3, b_width=3,
                                             acc_width=cfg.accumulator_width))]
    run = run_streams(cfg.elaborate(), {"weights": weights, "activations": acts},
                      {"results": len(expected)}, profile=profile, seed=depth)
    assert run.outputs["results"] == expected


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_flattened_small_buffers(depth, profile):
    cfg = FlattenedArrayConfig(blen=2, mlen=4, a_type="int3", b_type="int3", max_k=6,
                               result_buffer=depth)
    rng = np.random.default_rng(depth)
    subs, blen = cfg.sub_arrays, cfg.blen
    beats, expected = [], []
    for _ in range(16):
        k, m = int(rng.integers(1, 7)), int(rng.integers(1, blen + 1))
        a, b = _ints(rng, (blen, k), 3), _ints(rng, (k, blen), 3)
        n = -(-k // subs)
        ap = np.concatenate([a, np.zeros((blen, n * subs - k), int)], axis=1)
        bp = np.concatenate([b, np.zeros((n * subs - k, blen), int)], axis=0)
        for t in range(n):
            ks = slice(t * subs, (t + 1) * subs)
            beats.append({"a": [int(v) for v in ap[:, ks].T.reshape(-1)],
                          "b": [int(v) for v in bp[ks, :].reshape(-1)],
                          "rows": m, "head": 0, "last": int(t == n - 1)})
        c = flat_gemm(a[:m], b, sub_arrays=subs, a_width=3, b_width=3,
                      acc_width=cfg.accumulator_width)
        expected += [{"c": [int(v) for v in row], "head": 0, "last": int(r == m - 1)}
                     for r, row in enumerate(c)]
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile=profile, seed=depth)
    assert run.outputs["results"] == expected
