"""Flattened systolic array: golden model, cycle model, config rules, RTL co-simulation."""

from __future__ import annotations

import numpy as np
import pytest

from gen.cosim_run import preset_configs, run_cosim
from cosim.traffic import STRESS_PROFILES
from gen.config import config_from_dict
from gen.config.flattened import FlattenedArrayConfig
from gen.schema import ConfigError
from software_model.flattened import (flat_gemm, flat_latency, flat_mxint_gemm, flat_schedule,
                                      flat_tiled_cycles, square_tiled_cycles)
from software_model.systolic import gemm

# -- golden model ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subs", [1, 2, 4, 16])
def test_flat_gemm_wrap_equals_exact_product_wrapped(subs):
    rng = np.random.default_rng(subs)
    a = rng.integers(-128, 128, (3, 37))
    b = rng.integers(-8, 8, (37, 5))
    exact = a.astype(np.int64) @ b.astype(np.int64)
    got = flat_gemm(a, b, sub_arrays=subs, a_width=8, b_width=4, acc_width=40)
    assert (np.array(got, dtype=np.int64) == exact).all()
    narrow = flat_gemm(a, b, sub_arrays=subs, a_width=8, b_width=4, acc_width=12)
    assert (np.array(narrow, dtype=np.int64) == ((exact + 2048) % 4096) - 2048).all()


def test_flat_gemm_saturates_per_sub_array_then_in_the_tree():
    # S = 2: sub-array 0 takes k = 0, 2; sub-array 1 takes k = 1, 3.
    # sub 0: +30000 +30000 -> 32767 (saturated); sub 1: -30000 -30000 -> -32768 (saturated);
    # tree: 32767 - 32768 = -1. The exact sum is 0, the foundation array's k-order gives 0 too.
    a = np.array([[1, -1, 1, -1]])
    b = np.array([[30000], [30000], [30000], [30000]])
    got = flat_gemm(a, b, sub_arrays=2, a_width=2, b_width=16, acc_width=16, overflow="saturate")
    assert got[0, 0] == -1
    assert gemm(a, b, a_width=2, b_width=16, acc_width=16, overflow="saturate")[0, 0] == 0


def test_flat_gemm_one_sub_array_is_the_foundation_gemm():
    rng = np.random.default_rng(7)
    a = rng.integers(-8, 8, (4, 50))
    b = rng.integers(-8, 8, (50, 4))
    for overflow in ("wrap", "saturate"):
        assert (flat_gemm(a, b, sub_arrays=1, a_width=4, b_width=4, acc_width=9, overflow=overflow)
                == gemm(a, b, a_width=4, b_width=4, acc_width=9, overflow=overflow)).all()


def test_flat_gemm_rejects_bad_shapes_and_tree_sizes():
    with pytest.raises(ValueError, match="power of two"):
        flat_gemm(np.ones((1, 3), int), np.ones((3, 1), int), sub_arrays=3, a_width=4, b_width=4,
                  acc_width=8)
    with pytest.raises(ValueError, match="need A"):
        flat_gemm(np.ones((1, 3), int), np.ones((2, 1), int), sub_arrays=2, a_width=4, b_width=4,
                  acc_width=8)
    with pytest.raises(ValueError, match="outside int4"):
        flat_gemm(np.full((1, 2), 9), np.ones((2, 1), int), sub_arrays=2, a_width=4, b_width=4,
                  acc_width=8)


def _mx_operands(seed, m=3, blocks=3, block=8, n=5, wa=8, wb=4, ew=4):
    rng = np.random.default_rng(seed)
    k = blocks * block
    lo = -(1 << (ew - 1))
    a = rng.integers(-(1 << (wa - 1)), 1 << (wa - 1), (m, k))
    b = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), (k, n))
    ea = rng.integers(lo, -lo, (m, blocks))
    eb = rng.integers(lo, -lo, (blocks, n))
    return a, b, ea, eb


def test_flat_mxint_gemm_matches_mxint_dot_and_exact_accumulator():
    """Cross-check with the MXInt engineer's models: per element, the exact accumulation of the
    block dot products (software_model.mxint) gives the same value."""
    from fractions import Fraction

    from software_model.mxint import MXIntFormat, mxint_accumulate, mxint_dot
    a, b, ea, eb = _mx_operands(3)
    total, lsb = flat_mxint_gemm(a, b, a_exp=ea, b_exp=eb, block_size=8, exponent_width=4,
                                 sub_arrays=4, a_width=8, b_width=4, acc_width=15, out_width=60)
    fmt = MXIntFormat(element_width=8, block_size=8, exponent_width=4)
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            exps, sums = [], []
            for blk in range(3):
                ks = slice(8 * blk, 8 * blk + 8)
                e, v = mxint_dot(ea[i, blk], a[i, ks], eb[blk, j], b[ks, j], fmt)
                exps.append(int(e) - 6 - 2)      # fraction bits: 8 - 2 for A, 4 - 2 for B
                sums.append(int(v))
            ref_lsb, ref_total = mxint_accumulate(exps, sums, mode="exact")
            assert Fraction(int(total[i, j])) * Fraction(2) ** lsb == \
                Fraction(ref_total) * Fraction(2) ** ref_lsb


def test_flat_mxint_gemm_int_operand_has_no_exponent():
    a, b, ea, _eb = _mx_operands(4)
    total, lsb = flat_mxint_gemm(a, b, a_exp=ea, b_exp=None, block_size=8, exponent_width=4,
                                 sub_arrays=2, a_width=8, b_width=4, acc_width=15, out_width=60)
    assert lsb == -8 - 6
    expect = sum((a[:, 8 * k:8 * k + 8].astype(object) @ b[8 * k:8 * k + 8].astype(object))
                 * np.vectorize(lambda e: 1 << int(e + 8), otypes=[object])(ea[:, k:k + 1])
                 for k in range(3))
    assert (total == expect).all()


def test_flat_mxint_gemm_rejects_ragged_blocks_and_bad_exponents():
    a, b, ea, eb = _mx_operands(5)
    with pytest.raises(ValueError, match="whole number of blocks"):
        flat_mxint_gemm(a[:, :20], b[:20], block_size=8, exponent_width=4, sub_arrays=2,
                        a_width=8, b_width=4, acc_width=15, out_width=60)
    with pytest.raises(ValueError, match="outside -8 .. 7"):
        flat_mxint_gemm(a, b, a_exp=ea + 9, block_size=8, exponent_width=4, sub_arrays=2,
                        a_width=8, b_width=4, acc_width=15, out_width=60)


def test_mxint_output_width_holds_the_worst_case():
    cfg = FlattenedArrayConfig(a_type="int8", a_format="mxint", b_type="int4", b_format="mxint",
                               block_size=16, exponent_width=4, max_blocks=8)
    worst = 8 * 16 * (1 << 7) * (1 << 3) << (2 * 15)    # every block most-negative, top exponents
    assert worst <= (1 << (cfg.output_width - 1)) - 1


def test_mxint_tiled_cycles_stream_blocks_at_full_rate():
    r = flat_tiled_cycles(4, 1024, 256, blen=4, mlen=16, block_size=16)
    assert r["utilization"] > 0.95


# -- cycle model ------------------------------------------------------------------------------------


def test_schedule_long_jobs_are_back_to_back():
    jobs = flat_schedule([(16, 4)] * 4, blen=4, sub_arrays=4, buffer_rows=64)
    assert [j.last_in for j in jobs] == [15, 31, 47, 63]
    assert all(j.first_out == j.last_in + flat_latency(4, 4) for j in jobs)


def test_schedule_short_jobs_limited_by_chain_drain_rate():
    jobs = flat_schedule([(1, 1)] * 4, blen=4, sub_arrays=4, buffer_rows=64)
    assert [j.last_in for j in jobs] == [0, 4, 8, 12]


def test_schedule_small_buffer_throttles_on_credits():
    lat = flat_latency(2, 2)
    jobs = flat_schedule([(1, 2)] * 3, blen=2, sub_arrays=2, buffer_rows=2)
    # Each job must wait until the previous job's last row has left.
    assert jobs[1].last_in == jobs[0].last_out + 1 and jobs[0].last_out == lat + 1


def test_default_buffer_sustains_one_job_every_blen_cycles():
    for blen, mlen in ((4, 16), (2, 32), (8, 64), (4, 1024)):
        r = flat_tiled_cycles(4 * blen, mlen * 4 // blen * blen, 64 * blen, blen=blen, mlen=mlen)
        assert r["utilization"] > 0.9, (blen, mlen, r)


@pytest.mark.parametrize("m", [1, 4, 8])
@pytest.mark.parametrize("kn", [1024, 4096])
def test_decode_utilization_target(m, kn):
    """Issue target: >= 4x the square array's utilization at M <= 8 (equal multipliers)."""
    flat = flat_tiled_cycles(m, kn, kn, blen=4, mlen=1024)
    square = square_tiled_cycles(m, kn, kn, side=64)
    assert flat["utilization"] >= 4 * square["utilization"]


@pytest.mark.parametrize("shape", [(1024, 1024, 1024), (512, 4096, 1024)])
def test_prefill_no_worse_than_square(shape):
    m, k, n = shape
    flat = flat_tiled_cycles(m, k, n, blen=4, mlen=1024)
    square = square_tiled_cycles(m, k, n, side=64)
    assert flat["cycles"] <= square["cycles"]


# -- config rules -----------------------------------------------------------------------------------


def _errors(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "flattened_array", **data}, source="cfg.yaml")
    return info.value.render()


def test_rejects_mlen_not_a_multiple_of_blen():
    assert "cfg.yaml: mlen: got 18; allowed: a multiple of blen = 4" in _errors(
        {"blen": 4, "mlen": 18})


def test_rejects_sub_array_count_not_a_power_of_two():
    assert "mlen: got 12; allowed: blen times a power of two" in _errors({"blen": 4, "mlen": 12})


def test_rejects_accumulator_narrower_than_products():
    text = _errors({"a_type": "int8", "b_type": "int4", "acc_width": 11})
    assert "acc_width: got 11; allowed: at least 12" in text


def test_rejects_result_buffer_smaller_than_one_job():
    assert "result_buffer: got 3; allowed: at least blen = 4" in _errors(
        {"blen": 4, "mlen": 8, "result_buffer": 3})


def test_rejects_segment_bits_below_four():
    assert "cfg.yaml: segment_bits: got 3; allowed: integer 4 .. 256" in _errors({"segment_bits": 3})


def test_rejects_segment_bits_not_an_integer():
    assert "cfg.yaml: segment_bits: got 'wide'" in _errors({"segment_bits": "wide"})


def test_rejects_non_boolean_product_register():
    assert "cfg.yaml: pe_product_register: got 'no'; allowed: true or false" in _errors(
        {"pe_product_register": "no"})


def test_rejects_operand_type_out_of_range():
    text = _errors({"a_type": "int1", "b_type": "fp8"})
    assert "a_type: got 'int1'" in text and "b_type: got 'fp8'" in text


def test_rejects_mxint_block_not_whole_beats():
    text = _errors({"blen": 4, "mlen": 32, "a_format": "mxint", "block_size": 12})
    assert "block_size: got 12; allowed: a multiple of mlen/blen = 8" in text


def test_rejects_mxint_with_narrow_or_saturating_accumulator():
    text = _errors({"b_format": "mxint", "acc_width": 20, "overflow": "saturate"})
    assert "acc_width: got 20; allowed: null with an mxint operand" in text
    assert "overflow: got 'saturate'; allowed: 'wrap' with an mxint operand" in text


def test_rejects_unknown_operand_format():
    assert "a_format: got 'mxfp8'; allowed: one of 'int', 'mxint'" in _errors({"a_format": "mxfp8"})


def test_partial_sum_tree_rejects_bad_arguments():
    from hw.flattened import PartialSumTree
    with pytest.raises(ValueError, match="power of two, not 3"):
        PartialSumTree(sub_arrays=3, lanes=2, width=8, overflow="wrap")
    with pytest.raises(ValueError, match="Lanes must be a positive integer, not 0"):
        PartialSumTree(sub_arrays=2, lanes=0, width=8, overflow="wrap")
    with pytest.raises(ValueError, match="Overflow must be 'wrap' or 'saturate', not 'clip'"):
        PartialSumTree(sub_arrays=2, lanes=2, width=8, overflow="clip")


def test_config_round_trips_through_dict():
    cfg = config_from_dict({"kind": "flattened_array", "b_type": "int4", "mlen": 32})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash == cfg.config_hash
    assert cfg.sub_arrays == 8 and cfg.multipliers == 128 and cfg.tree_levels == 3


_FLAT = dict(blen=4, mlen=16, a_width=8, b_width=8, acc_width=24)


@pytest.mark.parametrize("change,message", [
    ({"blen": 0}, "BLEN must be a positive integer, not 0"),
    ({"mlen": 6}, r"MLEN must be BLEN \(4\) times a power of two, not 6"),
    ({"mlen": 12}, r"MLEN must be BLEN \(4\) times a power of two, not 12"),
    ({"a_width": 1}, "A width must be an integer >= 2, not 1"),
    ({"acc_width": 15}, r"Accumulator width must be at least 16 \(the product width\), not 15"),
    ({"overflow": "clip"}, "Overflow must be one of 'wrap', 'saturate', not 'clip'"),
    ({"a_mxint": True, "overflow": "saturate"}, "Overflow must be 'wrap' with an MXInt operand"),
    ({"a_mxint": True, "output_width": 30}, r"Output width must be at least 39 .*not 30"),
    ({"output_width": 30}, r"Output width must equal the accumulator width \(24\)"),
    ({"heads": 0}, "Heads must be a positive integer, not 0"),
    ({"result_depth": 3}, r"Result depth must be an integer >= BLEN = 4 .*not 3"),
    ({"pe_product_register": 1}, "PE product register must be True or False, not 1"),
    ({"segment_bits": 0}, "Segment bits must be a positive integer, not 0"),
    ({"segment_bits": 8.0}, "Segment bits must be a positive integer, not 8.0"),
])
def test_array_rejects_bad_arguments(change, message):
    from hw.flattened import FlattenedArray
    with pytest.raises(ValueError, match=message):
        FlattenedArray(**{**_FLAT, **change})


def test_component_latency_equals_cycle_model():
    from hw.flattened import flat_latency as rtl_latency
    from software_model.flattened import flat_latency
    for blen in (1, 2, 4, 8):
        for subs in (1, 2, 4, 16):
            for reg in (False, True):
                for align in (0, 2, 5):
                    assert rtl_latency(blen, subs, reg, align) == flat_latency(blen, subs, reg,
                                                                               align)


def test_mxint_latency_counts_the_alignment_segments():
    """The presets' defaults: a term register plus ceil(output width / 16) carry segments."""
    cfg = FlattenedArrayConfig(blen=4, mlen=4, a_format="mxint", b_format="mxint",
                               block_size=8, max_blocks=8)
    assert cfg.output_width == 52 and cfg.align_stages == 1 + 4
    assert cfg.latency == 10 + 5
    arr = cfg.elaborate()
    arr._MustUse__silence = True
    assert (arr.latency, arr.align_stages, arr.segments) == (15, 5, 4)
    wide = FlattenedArrayConfig(blen=4, mlen=4, a_format="mxint", b_format="mxint",
                                block_size=8, max_blocks=8, segment_bits=64)
    assert wide.align_stages == 2 and wide.latency == 12


@pytest.mark.parametrize("segment_bits,reg", [(4, False), (5, True), (16, False), (256, True)])
def test_mxint_segments_and_product_register_in_amaranth_sim(segment_bits, reg):
    """Carry segments from 4 bits (a carry crosses many stages) to one segment, with and without
    the PE product register: every row bit-exact under backpressure, and the cycle model
    predicts every job's cycles when nothing stalls."""
    from cosim.flattened import block_jobs, expected_rows, job_beats, random_job
    from cosim.pysim import run_streams
    cfg = FlattenedArrayConfig(blen=2, mlen=4, a_type="int5", b_type="int4", a_format="mxint",
                               b_format="mxint", block_size=4, exponent_width=3, max_blocks=3,
                               segment_bits=segment_bits, pe_product_register=reg)
    rng = np.random.default_rng(segment_bits)
    jobs = [random_job(cfg, rng, 4 * int(rng.integers(1, 4)), int(rng.integers(1, 3)),
                       str(rng.choice(["uniform", "extreme", "min", "max"])),
                       str(rng.choice(["uniform", "extreme", "min", "alternate"])))
            for _ in range(8)]
    beats = [b for job in jobs for b in job_beats(cfg, job)]
    expected = [row for job in jobs for row in expected_rows(cfg, job)]
    assert any(v < 0 for row in expected for v in row["c"])   # borrows cross the segments
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile="backpressure", seed=3)
    assert run.outputs["results"] == expected
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile="smooth")
    assert run.outputs["results"] == expected
    seen = [bj for job in jobs for bj in block_jobs(cfg, job)]
    model = flat_schedule(seen, blen=cfg.blen, sub_arrays=cfg.sub_arrays,
                          buffer_rows=cfg.result_buffer_rows, product_register=reg,
                          align_stages=cfg.align_stages)
    out, at = run.cycles["results"], 0
    for (_b, m), job in zip(seen, model):
        if m:
            assert (out[at], out[at + m - 1]) == (job.first_out, job.last_out)
            at += m
    assert at == len(expected)


# -- co-simulation ----------------------------------------------------------------------------------


@pytest.mark.cosim
@pytest.mark.parametrize("config", preset_configs("flattened_array"), ids=lambda c: c.name)
def test_flattened_cosim(config):
    result = run_cosim(config)
    names = sorted(result.tests)
    for mode, variants in (("gemm_mode", len(STRESS_PROFILES)), ("gemv_mode", len(STRESS_PROFILES)),
                           ("per_head_mode", 2), ("corner_cases", 2)):
        assert sum(n.startswith(mode) for n in names) == variants, names
    assert "cycle_model" in names   # tiled GEMMs run natively: tests/test_fast.py
    for name, tally in result.tests.items():
        samples = tally["records"].get("samples")
        if name.startswith("gemm_mode"):
            assert tally["checked"] >= samples * config.blen, name
        elif name.startswith(("gemv_mode", "per_head_mode")):
            assert tally["checked"] >= samples, name
    records = result.records("cycle_model")
    assert records["rtl_last_out"] == records["model_last_out"]
    assert all(t["mismatches"] == 0 for t in result.tests.values())


# -- fast tier: random configs in amaranth.sim ----------------------------------------------------


def _random_flat_jobs(cfg, rng, count):
    from cosim.flattened import random_job
    jobs = []
    for n in range(count):
        if cfg.mxint:
            k = cfg.block_size * int(rng.integers(1, min(cfg.max_blocks, 3) + 1))
        else:
            k = int(rng.integers(1, cfg.max_k + 1)) if n % 3 else int(rng.choice([1, cfg.max_k]))
        styles = [str(rng.choice(["uniform", "extreme", "min", "max", "alternate"]))
                  for _ in range(2)]
        jobs.append(random_job(cfg, rng, k, int(rng.integers(1, cfg.blen + 1)), *styles,
                               head=int(rng.integers(cfg.heads)),
                               transpose=bool(rng.random() < 0.5)))
    return jobs


@pytest.mark.parametrize("index", range(6))
def test_random_configs_bit_exact_in_amaranth_sim(config_seed, index):
    """Random valid configs (int and MXInt operands), random jobs, every stress profile in turn."""
    from cosim.flattened import expected_rows, job_beats
    from cosim.pysim import run_streams
    from gen.random_configs import random_configs

    cfg = random_configs("flattened_array", 1, config_seed + index)[0]
    rng = np.random.default_rng([config_seed, index])
    profile = ("smooth", *STRESS_PROFILES)[index % (1 + len(STRESS_PROFILES))]
    jobs = _random_flat_jobs(cfg, rng, 10)
    beats = [b for job in jobs for b in job_beats(cfg, job)]
    expected = [row for job in jobs for row in expected_rows(cfg, job)]
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile=profile, seed=index)
    assert run.outputs["results"] == expected, f"{cfg!r} under {profile}"


def test_cycle_model_equals_amaranth_sim(config_seed):
    from cosim.flattened import block_jobs, expected_rows, job_beats
    from cosim.pysim import run_streams
    from gen.random_configs import random_configs

    cfg = random_configs("flattened_array", 1, config_seed + 100)[0]
    rng = np.random.default_rng([config_seed, 100])
    jobs = _random_flat_jobs(cfg, rng, 8)
    beats = [b for job in jobs for b in job_beats(cfg, job)]
    expected = [row for job in jobs for row in expected_rows(cfg, job)]
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile="smooth")
    assert run.outputs["results"] == expected
    seen = [bj for job in jobs for bj in block_jobs(cfg, job)]
    model = flat_schedule(seen, blen=cfg.blen, sub_arrays=cfg.sub_arrays,
                          buffer_rows=cfg.result_buffer_rows,
                          product_register=cfg.pe_product_register,
                          align_stages=cfg.align_stages)
    lasts = np.cumsum([b for b, _m in seen]) - 1
    assert [run.cycles["operands"][i] for i in lasts] == [j.last_in for j in model], repr(cfg)
    out, at = run.cycles["results"], 0
    for (_b, m), job in zip(seen, model):
        if m:
            assert (out[at], out[at + m - 1]) == (job.first_out, job.last_out), repr(cfg)
            at += m


@pytest.mark.parametrize("mxint", [False, True])
def test_transposed_b_lanes_in_amaranth_sim(mxint):
    """With transpose_b, jobs flagged transposed send B as K^T lanes; plain and transposed jobs
    interleave (random configs may draw no config where the two orders differ)."""
    from cosim.flattened import expected_rows, job_beats, random_job
    from cosim.pysim import run_streams
    cfg = FlattenedArrayConfig(blen=2, mlen=8, a_type="int4", b_type="int4", max_k=16,
                               transpose_b=True, heads=2,
                               **({"a_format": "mxint", "b_format": "mxint", "block_size": 8}
                                  if mxint else {}))
    rng = np.random.default_rng(7)
    k = 8 if mxint else 7
    jobs = [random_job(cfg, rng, k, 2, "uniform", "uniform", head=n % 2, transpose=bool(n % 2))
            for n in range(6)]
    beats = [b for job in jobs for b in job_beats(cfg, job)]
    assert any(b["transpose"] for b in beats) and not all(b["transpose"] for b in beats)
    expected = [row for job in jobs for row in expected_rows(cfg, job)]
    run = run_streams(cfg.elaborate(), {"operands": beats}, {"results": len(expected)},
                      profile="bursty")
    assert run.outputs["results"] == expected
