"""Systolic array: golden model, cycle model, config rules, RTL co-simulation."""

from __future__ import annotations

import numpy as np
import pytest

from gen.cosim_run import preset_configs, run_cosim
from cosim.traffic import STRESS_PROFILES
from gen.config import config_from_dict
from gen.config.systolic import SystolicArrayConfig
from gen.schema import ConfigError
from software_model.systolic import (gemm, os_schedule, tiled_gemm_cycles,
                                     ws_schedule)

# -- golden model ---------------------------------------------------------------------------------


def test_gemm_matches_exact_integer_product_when_wide_enough():
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (5, 37))
    b = rng.integers(-128, 128, (37, 3))
    got = gemm(a, b, a_width=8, b_width=8, acc_width=40)
    assert (np.array(got, dtype=np.int64) == a.astype(np.int64) @ b.astype(np.int64)).all()


def test_gemm_wraps_twos_complement():
    # 3 * (127 * 127) = 48387 wraps in 16 bits to 48387 - 65536
    a = np.full((1, 3), 127)
    b = np.full((3, 1), 127)
    assert gemm(a, b, a_width=8, b_width=8, acc_width=16)[0, 0] == 48387 - 65536


def test_gemm_saturates_after_every_addition_in_k_order():
    # +30000, +30000 saturates at 32767, then -30000 gives 2767 (exact sum would be 30000)
    a = np.array([[1, 1, -1]])
    b = np.array([[30000], [30000], [30000]])
    assert gemm(a, b, a_width=2, b_width=16, acc_width=16, overflow="saturate")[0, 0] == 2767


def test_gemm_rejects_out_of_range_operands():
    with pytest.raises(ValueError, match="outside int4"):
        gemm(np.array([[8]]), np.array([[1]]), a_width=4, b_width=4, acc_width=8)


@pytest.mark.parametrize("aw,bw,max_k", [(2, 2, 1), (8, 8, 1), (8, 8, 3), (4, 16, 512), (16, 16, 4096)])
def test_exact_accumulator_width_is_minimal(aw, bw, max_k):
    cfg = SystolicArrayConfig(a_type=f"int{aw}", b_type=f"int{bw}", max_k=max_k)
    worst = max_k * (1 << (aw - 1)) * (1 << (bw - 1))   # every product most-negative squared
    w = cfg.exact_acc_width
    assert worst <= (1 << (w - 1)) - 1
    assert worst > (1 << (w - 2)) - 1   # one bit fewer would not hold it


# -- cycle model ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8), (16, 8), (16, 16)])
def test_tiled_utilization_target_for_long_reductions(rows, cols):
    """Issue target: >= 95% steady-state utilization on tiled GEMMs with K >= 16 x rows."""
    k = 16 * rows
    result = tiled_gemm_cycles(256, k, 256, rows=rows, cols=cols, dataflow="output_stationary")
    assert result["utilization"] >= 0.95


def test_os_schedule_back_to_back_long_jobs_have_no_bubbles():
    jobs = os_schedule([64] * 5, rows=4, cols=4, buffer_rows=8)
    assert [j.last_in for j in jobs] == [63, 127, 191, 255, 319]


def test_os_schedule_short_jobs_limited_by_chain_drain_rate():
    jobs = os_schedule([1] * 4, rows=4, cols=4, buffer_rows=64)
    assert [j.last_in for j in jobs] == [0, 4, 8, 12]


def test_ws_schedule_overlaps_weight_load_with_compute():
    jobs = ws_schedule([(4, 32)] * 3, rows=4, cols=4, buffer_rows=64)
    firsts = [j.first_in for j in jobs]
    assert firsts[1] - firsts[0] == 32 and firsts[2] - firsts[1] == 32


# -- config rules -----------------------------------------------------------------------------------


def _errors(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "systolic_array", **data}, source="cfg.yaml")
    return info.value.render()


def test_rejects_accumulator_narrower_than_products():
    text = _errors({"a_type": "int8", "b_type": "int8", "acc_width": 12})
    assert "cfg.yaml: acc_width: got 12; allowed: at least 16" in text


def test_rejects_weight_stationary_reduction_longer_than_rows():
    text = _errors({"dataflow": "weight_stationary", "rows": 4, "max_k": 8})
    assert "max_k: got 8; allowed: at most rows = 4" in text


def test_rejects_result_buffer_smaller_than_one_job():
    text = _errors({"rows": 8, "result_buffer": 4})
    assert "result_buffer: got 4; allowed: at least rows = 8" in text


def test_rejects_operand_type_out_of_range():
    text = _errors({"a_type": "int17", "b_type": "uint8"})
    assert "a_type: got 'int17'; allowed: a signed integer type int2 .. int16" in text
    assert "b_type: got 'uint8'" in text


def test_config_round_trips_through_dict():
    cfg = config_from_dict({"kind": "systolic_array", "a_type": "int4", "rows": 3})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash == cfg.config_hash


_ARRAY = dict(rows=4, cols=4, a_width=8, b_width=8, acc_width=24)


@pytest.mark.parametrize("change,message", [
    ({"rows": 0}, "Rows must be a positive integer, not 0"),
    ({"cols": -1}, "Columns must be a positive integer, not -1"),
    ({"a_width": 1}, "A width must be an integer >= 2, not 1"),
    ({"b_width": "8"}, "B width must be an integer >= 2, not '8'"),
    ({"acc_width": 12}, r"Accumulator width must be at least 16 \(the product width\), not 12"),
    ({"overflow": "clip"}, "Overflow must be one of 'wrap', 'saturate', not 'clip'"),
])
@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_arrays_reject_bad_arguments(dataflow, change, message):
    from hw.systolic import OutputStationaryArray, WeightStationaryArray
    cls = OutputStationaryArray if dataflow == "output_stationary" else WeightStationaryArray
    with pytest.raises(ValueError, match=message):
        cls(**{**_ARRAY, **change})


def test_output_stationary_rejects_result_depth_below_one_job():
    from hw.systolic import OutputStationaryArray
    with pytest.raises(ValueError, match=r"Result depth must be an integer >= rows = 4 .*not 3"):
        OutputStationaryArray(**_ARRAY, result_depth=3)


def test_weight_stationary_rejects_zero_result_depth():
    from hw.systolic import WeightStationaryArray
    with pytest.raises(ValueError, match="Result depth must be a positive integer, not 0"):
        WeightStationaryArray(**_ARRAY, result_depth=0)


def test_pes_reject_bad_arguments():
    from hw.systolic import OutputStationaryPE, WeightStationaryPE
    with pytest.raises(ValueError, match=r"at least 16 \(the product width\), not 12"):
        OutputStationaryPE(a_width=8, b_width=8, acc_width=12, overflow="wrap")
    with pytest.raises(ValueError, match="Row must be an integer in 0 .. 3, not 4"):
        WeightStationaryPE(row=4, rows=4, a_width=8, b_width=8, acc_width=16)


def test_rejects_non_boolean_product_register():
    text = _errors({"pe_product_register": 1})
    assert "cfg.yaml: pe_product_register: got 1; allowed: true or false" in text


@pytest.mark.parametrize("cls", ["OutputStationaryArray", "WeightStationaryArray",
                                 "OutputStationaryPE", "OutputStationaryGrid"])
def test_components_reject_non_boolean_product_register(cls):
    import hw.systolic
    args = {"OutputStationaryPE": dict(a_width=8, b_width=8, acc_width=16),
            "OutputStationaryGrid": dict(rows=2, cols=2, a_width=8, b_width=8, acc_width=16)}
    with pytest.raises(ValueError, match="Product register must be True or False, not 1"):
        getattr(hw.systolic, cls)(**args.get(cls, _ARRAY), product_register=1)


def test_weight_stationary_pe_rejects_non_boolean_product_register():
    from hw.systolic import WeightStationaryPE
    with pytest.raises(ValueError, match="Product register must be True or False, not 'yes'"):
        WeightStationaryPE(row=0, rows=2, a_width=8, b_width=8, acc_width=16,
                           product_register="yes")


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_product_register_adds_one_cycle_and_keeps_results(dataflow):
    """pe_product_register: the same results, the first one cycle later than without it (later
    ones as the result buffer's credits allow), and the cycle model predicts every job's first
    result cycle with and without it (OS: short and long jobs; WS: several row counts)."""
    from cosim.pysim import run_streams
    from cosim.systolic import random_job, workload
    base = dict(rows=3, cols=4, dataflow=dataflow, a_type="int6", b_type="int5", max_k=3,
                acc_width=12, overflow="saturate")
    if dataflow == "output_stationary":
        shape = [(k, None) for k in (1, 3, 2, 1, 1, 3)]
    else:
        shape = [(k, m) for k, m in ((3, 1), (1, 4), (2, 2), (3, 7))]
    cycles = {}
    for reg in (False, True):
        cfg = SystolicArrayConfig(**base, pe_product_register=reg)
        jobs = [random_job(cfg, np.random.default_rng(n), k, "extreme", "uniform", m=m)
                for n, (k, m) in enumerate(shape)]
        inputs, expected = workload(cfg, jobs)
        run = run_streams(cfg.elaborate(), inputs, {"results": len(expected)}, profile="smooth")
        assert run.outputs["results"] == expected
        if dataflow == "output_stationary":
            model = os_schedule([k for k, _m in shape], rows=3, cols=4,
                                buffer_rows=cfg.result_buffer_rows, product_register=reg)
            firsts = [n * 3 for n in range(len(shape))]
        else:
            model = ws_schedule(shape, rows=3, cols=4, buffer_rows=cfg.result_buffer_rows,
                                product_register=reg)
            firsts = list(np.cumsum([0] + [m for _k, m in shape])[:-1])
        out = run.cycles["results"]
        assert [out[f] for f in firsts] == [j.first_out for j in model], (dataflow, reg)
        cycles[reg] = out
    assert cycles[True][0] == cycles[False][0] + 1


def test_config_maps_onto_component_parameters():
    cfg = SystolicArrayConfig(rows=3, cols=5, a_type="int4", b_type="int6", max_k=9,
                              overflow="saturate", result_buffer=7)
    array = cfg.elaborate()
    array._MustUse__silence = True      # inspected, not elaborated
    assert (array.rows, array.cols, array.a_width, array.b_width) == (3, 5, 4, 6)
    assert (array.acc_width, array.overflow, array.result_depth) == (13, "saturate", 7)


# -- co-simulation ----------------------------------------------------------------------------------


@pytest.mark.cosim
@pytest.mark.parametrize("config", preset_configs("systolic_array"), ids=lambda c: c.name)
def test_systolic_cosim(config):
    result = run_cosim(config)
    random = {name: t for name, t in result.tests.items() if name.startswith("random_jobs")}
    assert len(random) == len(STRESS_PROFILES), sorted(result.tests)
    rows_per_job = config.rows if config.dataflow == "output_stationary" else 1
    for name, tally in random.items():
        # every job returns at least one row of C (rows of them output-stationary)
        assert tally["checked"] >= tally["records"]["samples"] * rows_per_job, name
    assert sum(name.startswith("corner_cases") for name in result.tests) == 2
    records = result.records("cycle_model")
    assert records["rtl_last_out"] == records["model_last_out"]
    assert all(t["mismatches"] == 0 for t in result.tests.values())


# -- fast tier: random configs in amaranth.sim ----------------------------------------------------


@pytest.mark.parametrize("index", range(6))
def test_random_configs_bit_exact_in_amaranth_sim(config_seed, index):
    """Random valid configs (not the presets), random jobs incl. corner operands, under every
    stress profile in turn: every result row bit-exact, in order, and nothing extra."""
    from cosim.pysim import run_streams
    from cosim.systolic import random_job, workload
    from gen.random_configs import random_configs

    cfg = random_configs("systolic_array", 1, config_seed + index)[0]
    rng = np.random.default_rng([config_seed, index])
    profile = ("smooth", *STRESS_PROFILES)[index % (1 + len(STRESS_PROFILES))]
    jobs = []
    for n in range(12):
        k = int(rng.integers(1, cfg.max_k + 1)) if n % 3 else int(rng.choice([1, cfg.max_k]))
        styles = [str(rng.choice(["uniform", "extreme", "min", "max", "alternate"]))
                  for _ in range(2)]
        jobs.append(random_job(cfg, rng, k, *styles, m=int(rng.integers(1, 2 * cfg.rows + 1))))
    inputs, expected = workload(cfg, jobs)
    run = run_streams(cfg.elaborate(), inputs, {"results": len(expected)}, profile=profile,
                      seed=index)
    assert run.outputs["results"] == expected, f"{cfg!r} under {profile}"


@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_cycle_model_equals_amaranth_sim(config_seed, dataflow):
    """The cycle model predicts every job's accept and result cycles of a random config."""
    from cosim.pysim import run_streams
    from cosim.systolic import random_job, workload
    from gen.random_configs import random_config

    rng = np.random.default_rng([config_seed, len(dataflow)])
    while True:
        cfg = random_config("systolic_array", rng)
        if cfg.dataflow == dataflow:
            break
    if dataflow == "output_stationary":
        ks = [int(rng.integers(1, cfg.max_k + 1)) for _ in range(10)]
        jobs = [random_job(cfg, rng, k, "uniform", "uniform") for k in ks]
        model = os_schedule(ks, rows=cfg.rows, cols=cfg.cols, buffer_rows=cfg.result_buffer_rows,
                            product_register=cfg.pe_product_register)
        rows_per_job = [cfg.rows] * len(jobs)
    else:
        km = [(int(rng.integers(1, cfg.max_k + 1)), int(rng.integers(1, 9))) for _ in range(10)]
        jobs = [random_job(cfg, rng, k, "uniform", "uniform", m=m) for k, m in km]
        model = ws_schedule(km, rows=cfg.rows, cols=cfg.cols, buffer_rows=cfg.result_buffer_rows,
                            product_register=cfg.pe_product_register)
        rows_per_job = [m for _k, m in km]
    inputs, expected = workload(cfg, jobs)
    run = run_streams(cfg.elaborate(), inputs, {"results": len(expected)}, profile="smooth")
    assert run.outputs["results"] == expected
    out = run.cycles["results"]
    first = np.cumsum([0] + rows_per_job)[:-1]
    assert [out[f] for f in first] == [j.first_out for j in model], repr(cfg)
    assert [out[f + r - 1] for f, r in zip(first, rows_per_job)] == [j.last_out for j in model]


def test_presets_really_overflow():
    """A preset that names an overflow mode must be able to reach it: the worst-case sum of its
    longest job (most-negative operands) leaves the accumulator's range. Both modes, both
    dataflows and the flattened array are covered."""
    from gen.config.flattened import FlattenedArrayConfig  # noqa: F401 (kind registered)
    seen = set()
    for kind in ("systolic_array", "flattened_array"):
        for cfg in preset_configs(kind):
            k = cfg.block_size if getattr(cfg, "mxint", False) else cfg.max_k
            worst = k * (1 << (cfg.a_width - 1)) * (1 << (cfg.b_width - 1))
            if cfg.accumulator_width < cfg.exact_acc_width:
                assert worst > (1 << (cfg.accumulator_width - 1)) - 1, cfg.name
                seen.add((kind, getattr(cfg, "dataflow", "flattened"), cfg.overflow))
    assert {("systolic_array", "output_stationary", "wrap"),
            ("systolic_array", "weight_stationary", "saturate"),
            ("flattened_array", "flattened", "saturate")} <= seen, seen


@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary"])
def test_overflow_modes_in_amaranth_sim(dataflow, overflow):
    """An accumulator narrower than exact really overflows: extreme operands at the longest K
    must wrap or saturate exactly as the golden model says (random configs may not draw this)."""
    from cosim.pysim import run_streams
    from cosim.systolic import random_job, workload
    cfg = SystolicArrayConfig(rows=3, cols=2, dataflow=dataflow, a_type="int5", b_type="int4",
                              max_k=3, acc_width=9, overflow=overflow)
    assert cfg.accumulator_width < cfg.exact_acc_width
    rng = np.random.default_rng(len(dataflow) + len(overflow))
    jobs = [random_job(cfg, rng, 3, sa, sb, m=4)
            for sa, sb in (("min", "min"), ("max", "min"), ("max", "max"), ("alternate", "min"),
                           ("extreme", "extreme"), ("uniform", "uniform"))]
    inputs, expected = workload(cfg, jobs)
    values = [v for row in expected for v in row["c"]]
    assert overflow == "wrap" or max(values) == 255     # the saturation limit is reached
    run = run_streams(cfg.elaborate(), inputs, {"results": len(expected)}, profile="mild")
    assert run.outputs["results"] == expected
