"""The accelerator's matrix unit (hw/matrix_unit.py) against its job-level golden model, in
amaranth.sim under the shared traffic profiles; latency and rate; constructor rejections."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.pysim import run_streams
from hw.matrix_unit import SHIFT_WIDTH, MatrixUnit
from software_model.matrix_unit import matrix_unit_job
from software_model.mxint_fixed import scale_saturate

PROFILES = ("smooth", "mild", "backpressure", "bursty", "starved")


def _unit(**kw):
    params = dict(rows=2, cols=3, sub_arrays=2, element_width=4, exponent_width=3, block_size=4,
                  acc_width=12, acc_lsb=-6, tag_width=3)
    params.update(kw)
    return MatrixUnit(**params)


def _job(rng, unit, style):
    s, r, c, k, w = unit.sub_arrays, unit.rows, unit.cols, unit.block_size, unit.element_width
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    elo, ehi = -(1 << (unit.exponent_width - 1)), (1 << (unit.exponent_width - 1)) - 1
    if style == "extreme":
        a = rng.choice([lo, hi, -1, 0, 1], size=(s, r, k))
        b = rng.choice([lo, hi, -1, 0, 1], size=(s, c, k))
        ea = rng.choice([elo, ehi], size=(s, r))
        eb = rng.choice([elo, ehi], size=(s, c))
    else:
        a = rng.integers(lo, hi + 1, size=(s, r, k))
        b = rng.integers(lo, hi + 1, size=(s, c, k))
        ea = rng.integers(elo, ehi + 1, size=(s, r))
        eb = rng.integers(elo, ehi + 1, size=(s, c))
    smax = (1 << (SHIFT_WIDTH - 1)) - 1
    shift = int(rng.choice([rng.integers(-12, 12), -smax - 1, smax, 0]))
    return a, b, ea, eb, shift, int(rng.integers(0, 1 << unit.tag_width))


def _beats(unit, a, b, ea, eb, shift, tag):
    job = {"a_exp": ea.tolist(), "b_exp": eb.tolist(), "shift": shift, "tag": tag}
    return [{"a": a[:, :, t].tolist(), "b": b[:, :, t].tolist(), "job": job,
             "last": int(t == unit.block_size - 1)} for t in range(unit.block_size)]


def _expected(unit, a, b, ea, eb, shift, tag):
    tile = matrix_unit_job(a, b, ea, eb, shift=shift, acc_lsb=unit.acc_lsb,
                           acc_width=unit.acc_width)
    return [{"c": [int(v) for v in tile[i]], "row": i, "tag": tag,
             "last": int(i == unit.rows - 1)} for i in range(unit.rows)]


def _run(unit, jobs, profile, seed):
    beats = [bt for jb in jobs for bt in _beats(unit, *jb)]
    expected = [row for jb in jobs for row in _expected(unit, *jb)]
    run = run_streams(unit, {"operands": beats}, {"results": len(expected)}, profile=profile,
                      seed=seed)
    return run, expected


def test_golden_job_is_exact_block_sums_aligned_then_added():
    rng = np.random.default_rng(0)
    a = rng.integers(-8, 8, (2, 3, 4))
    b = rng.integers(-8, 8, (2, 2, 4))
    ea, eb = rng.integers(-4, 4, (2, 3)), rng.integers(-4, 4, (2, 2))
    got = matrix_unit_job(a, b, ea, eb, shift=-4, acc_lsb=-16, acc_width=40)
    # wide accumulator: every amount is >= 0 here: nothing floors or saturates, so it is the exact value
    exact = sum((a[s] @ b[s].T) * 2.0 ** (ea[s][:, None] + eb[s][None, :] - 4 + 16)
                for s in range(2))
    assert (got == exact).all()


def test_golden_job_saturates_each_sub_array_before_the_tree():
    a = np.array([[[7]], [[-7]]])
    b = np.array([[[7]], [[7]]])
    zero = np.zeros((2, 1), int)
    # 49 and -49 each saturate to 4-bit +7 / -8 before they are added: -1, not 0
    assert matrix_unit_job(a, b, zero, zero, shift=0, acc_lsb=0, acc_width=4)[0, 0] == -1


@pytest.mark.parametrize("pipelined", [False, True])
@pytest.mark.parametrize("profile", PROFILES)
def test_random_jobs_match_golden(profile, pipelined):
    unit = _unit(pipelined=pipelined)
    rng = np.random.default_rng([1, len(profile)])
    jobs = [_job(rng, unit, "extreme" if n % 3 == 0 else "uniform") for n in range(40)]
    run, expected = _run(unit, jobs, profile, seed=3)
    assert len(run.outputs["results"]) == len(expected) == 80
    assert run.outputs["results"] == expected


@pytest.mark.parametrize("shape", [
    dict(rows=1, cols=1, sub_arrays=1, block_size=1),
    dict(rows=4, cols=2, sub_arrays=4, block_size=2),
    dict(rows=3, cols=1, sub_arrays=1, block_size=8, element_width=8, exponent_width=5,
         acc_width=30, acc_lsb=-20),
    dict(rows=2, cols=2, sub_arrays=2, block_size=4, result_depth=2),
    dict(rows=1, cols=2, sub_arrays=2, block_size=1, pipelined=True),
    dict(rows=3, cols=2, sub_arrays=1, block_size=2, result_depth=3, pipelined=True),
])
def test_shapes_and_smallest_buffer(shape):
    unit = _unit(**shape)
    rng = np.random.default_rng(7)
    jobs = [_job(rng, unit, "uniform" if n % 2 else "extreme") for n in range(12)]
    for profile in ("smooth", "backpressure"):
        run, expected = _run(unit, jobs, profile, seed=5)
        assert run.outputs["results"] == expected


def test_saturation_and_floor_reach_the_results():
    """Directed: one job whose aligned sums saturate high and low, and one that floors."""
    unit = _unit(sub_arrays=1, rows=1, cols=2, acc_width=8, acc_lsb=0)
    k = unit.block_size
    a = np.full((1, 1, k), 7)
    b = np.array([[[7] * k, [-8] * k]])
    hi = (a, b, np.array([[3]]), np.array([[3, 3]]), 0, 1)          # 196 * 2^6: saturates
    lo = (a, b, np.array([[-4]]), np.array([[-4, -4]]), -3, 2)      # 196 * 2^-11: floors
    run, expected = _run(unit, [hi, lo], "smooth", seed=1)
    assert [r["c"] for r in run.outputs["results"]] == [[127, -128], [0, -1]]
    assert run.outputs["results"] == expected
    assert scale_saturate(np.array([-224]), np.array([-11]), 8)[0] == -1


@pytest.mark.parametrize("pipelined", [False, True])
def test_latency_and_back_to_back_rate(pipelined):
    """Smooth traffic: the first result leaves ``latency`` cycles after the job's last beat (one
    more pipelined: the PEs' product register), and jobs of B >= rows beats are taken back to back
    (B cycles each)."""
    unit = _unit(rows=2, cols=3, sub_arrays=4, block_size=4, pipelined=pipelined)
    assert unit.latency == _unit(rows=2, cols=3, sub_arrays=4, block_size=4).latency \
        + pipelined
    rng = np.random.default_rng(2)
    jobs = [_job(rng, unit, "uniform") for _ in range(6)]
    run, expected = _run(unit, jobs, "smooth", seed=1)
    assert run.outputs["results"] == expected
    taken = run.cycles["operands"]
    assert taken == list(range(taken[0], taken[0] + 6 * unit.block_size))
    lasts = taken[unit.block_size - 1::unit.block_size]
    firsts = run.cycles["results"][::unit.rows]
    assert [f - l for f, l in zip(firsts, lasts)] == [unit.latency] * 6


def test_short_blocks_wait_for_the_result_chain():
    """B < rows: a job's last beat waits until rows cycles passed since the previous one."""
    unit = _unit(rows=4, cols=1, sub_arrays=1, block_size=2)
    rng = np.random.default_rng(4)
    jobs = [_job(rng, unit, "uniform") for _ in range(4)]
    run, expected = _run(unit, jobs, "smooth", seed=1)
    assert run.outputs["results"] == expected
    lasts = run.cycles["operands"][1::2]
    assert [b - a for a, b in zip(lasts, lasts[1:])] == [4, 4, 4]


@pytest.mark.parametrize("change,message", [
    (dict(rows=0), "Rows must be a positive integer, not 0"),
    (dict(cols=-1), "Columns must be a positive integer, not -1"),
    (dict(sub_arrays=3), "Sub-array count must be a power of two, not 3"),
    (dict(element_width=1), "Element width must be an integer from 2 to 16, not 1"),
    (dict(exponent_width=11), "Exponent width must be an integer from 2 to 10, not 11"),
    (dict(block_size=0), "Block size must be a positive integer, not 0"),
    (dict(acc_width=63), "Accumulator width must be an integer from 2 to 62, not 63"),
    (dict(acc_lsb=1.5), "Accumulator LSB must be an integer from -256 to 256, not 1.5"),
    (dict(tag_width=0), "Tag width must be a positive integer, not 0"),
    (dict(result_depth=1), "Result depth must be an integer >= rows = 2"),
    (dict(pipelined=1), "Pipelined must be True or False, not 1"),
])
def test_rejects_bad_arguments(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _unit(**change)
