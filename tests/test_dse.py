"""Design-space exploration (gen/dse.py): sweep-file validation, equal-throughput expansion,
local-process and Dask execution, resumability, outputs, Pareto fronts and the command line.

Model-only points run in a few seconds; the one synthesis test builds two tiny points."""

import io
import json
import math
import textwrap

import pytest
from hypothesis import given, settings, strategies as st

from gen import dse
import gen.dse.engine  # noqa: F401 (dse.engine: the module whose evaluate_point runs)
from gen.config import config_from_dict
from gen.cost_model import estimate
from gen.schema import ConfigError

SMALL_SWEEP = {
    "kind": "ternary_lut",
    "throughput": [8, 16],
    "tiles": [1, 2],
    "axes": {"architecture": ["lut", "addsub", "multiplier"], "activation": ["int4", "fp16"],
             "mu": [2, 4], "lanes_k": [1, 2, 4]},
    "fixed": {"max_reduction": 256},
    "workload": {"reduction": 100, "columns": 10},
}


def write_yaml(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def expect_rejection(tmp_path, text, *fragments):
    path = write_yaml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        dse.load_sweep(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- sweep validation

GOOD = """\
kind: ternary_lut
throughput: [8]
axes:
  architecture: [lut]
  mu: [2]
"""


def test_good_sweep_loads(tmp_path):
    sweep = dse.load_sweep(write_yaml(tmp_path, GOOD, "my_sweep.yaml"))
    assert sweep.name == "my_sweep" and sweep.throughput == (8,) and sweep.tiles == (1,)
    assert sweep.synthesize == "none"


def test_sweep_rejects_unknown_top_key(tmp_path):
    expect_rejection(tmp_path, GOOD + "axis: {}\n", "axis", "did you mean 'axes'")


def test_sweep_rejects_kind_without_a_sweep_model(tmp_path):
    expect_rejection(tmp_path, GOOD.replace("ternary_lut", "mxint_cast"),
                     "kind", "'mxint_cast'", "ternary_lut", "systolic_array")


def test_sweep_rejects_bad_throughput(tmp_path):
    expect_rejection(tmp_path, GOOD.replace("[8]", "[8, 0]"), "throughput", "[8, 0]",
                     "positive integer")


def test_sweep_rejects_missing_throughput(tmp_path):
    expect_rejection(tmp_path, GOOD.replace("throughput: [8]\n", ""), "throughput",
                     "the key is required")


def test_sweep_rejects_bad_tiles(tmp_path):
    expect_rejection(tmp_path, GOOD + "tiles: [1, two]\n", "tiles", "positive integer")


def test_sweep_rejects_empty_axes(tmp_path):
    expect_rejection(tmp_path, "kind: ternary_lut\nthroughput: 8\naxes: {}\n", "axes",
                     "non-empty mapping")


def test_sweep_rejects_axis_that_is_not_a_list(tmp_path):
    expect_rejection(tmp_path, GOOD + "  lanes_k: 4\n", "axes.lanes_k", "got 4",
                     "non-empty list")


def test_sweep_rejects_repeated_axis_values(tmp_path):
    expect_rejection(tmp_path, GOOD + "  lanes_k: [2, 2]\n", "axes.lanes_k", "without repeated")


def test_sweep_rejects_derived_key(tmp_path):
    expect_rejection(tmp_path, GOOD + "  lanes_l: [1, 2]\n", "axes.lanes_l", "derived")


def test_sweep_rejects_key_both_fixed_and_swept(tmp_path):
    expect_rejection(tmp_path, GOOD + "fixed: {mu: 3}\n", "axes.mu", "also in 'fixed'")


def test_sweep_rejects_unknown_config_key(tmp_path):
    expect_rejection(tmp_path, GOOD + "  lane_k: [1]\n", "axes.lane_k",
                     "did you mean 'lanes_k'")


def test_sweep_rejects_bad_config_value(tmp_path):
    expect_rejection(tmp_path, GOOD + "  activation: [int8, int99]\n", "axes.activation[1]",
                     "'int99'", "fp16")


def test_sweep_rejects_bad_fixed_value(tmp_path):
    expect_rejection(tmp_path, GOOD + "fixed: {max_reduction: 0}\n", "fixed.max_reduction",
                     "got 0")


def test_sweep_rejects_bad_synthesize(tmp_path):
    expect_rejection(tmp_path, GOOD + "synthesize: some\n", "synthesize", "'some'", "none, all")


def test_sweep_rejects_unknown_synthesize_filter_key(tmp_path):
    expect_rejection(tmp_path, GOOD + "synthesize: [{lanes: 2}]\n", "synthesize[0].lanes",
                     "unknown point key")


def test_sweep_rejects_bad_workload(tmp_path):
    expect_rejection(tmp_path, GOOD + "workload: {reduction: -1, rows: 3}\n",
                     "workload.reduction", "workload.rows")


def test_sweep_rejects_bad_yaml(tmp_path):
    expect_rejection(tmp_path, "kind: [ternary_lut\n", "bad YAML", "line")


def test_sweep_reports_every_problem_at_once(tmp_path):
    message = expect_rejection(tmp_path, "kind: nope\nthroughput: 0\naxes: 3\n",
                               "kind", "throughput", "axes")
    assert len(message.splitlines()) >= 3


def test_shipped_sweeps_are_valid():
    from gen.config import REPO_ROOT
    paths = sorted((REPO_ROOT / "configs" / "dse").glob("*.yaml"))
    assert paths, "configs/dse/ holds no sweep"
    for path in paths:
        points, _ = dse.expand_points(dse.load_sweep(path))
        assert points, path


# --------------------------------------------------------------------------- expansion


def test_points_have_equal_throughput_and_valid_configs():
    sweep = dse.sweep_from_dict(SMALL_SWEEP)
    points, skipped = dse.expand_points(sweep)
    assert points and skipped
    for p in points:
        c = p.config
        assert p.tiles * c["lanes_l"] * c["mu"] * c["lanes_k"] == p.throughput
        config_from_dict(c)                              # every point is a valid config
        if c["architecture"] != "lut":
            assert c["mu"] == 1
    for s in skipped:                                    # skipped only when L is fractional
        mu = s["mu"] if s["architecture"] == "lut" else 1
        assert s["throughput"] % (s["tiles"] * mu * s["lanes_k"]) != 0, s
    keys = [p.key for p in points]
    assert len(keys) == len(set(keys))


def test_synthesize_filters_select_points():
    sweep = dse.sweep_from_dict({**SMALL_SWEEP, "synthesize": [
        {"throughput": 8, "activation": "int4", "architecture": "lut", "tiles": 1}]})
    points, _ = dse.expand_points(sweep)
    chosen = [p for p in points if p.synthesize]
    assert chosen
    assert all(p.throughput == 8 and p.config["activation"] == "int4" and p.tiles == 1
               and p.config["architecture"] == "lut" for p in chosen)


# --------------------------------------------------------------------------- execution


def _areas(result):
    return {r["key"]: r["model_area"] for r in result.records}


def test_run_sweep_model_only_and_resume(tmp_path):
    sweep = dse.sweep_from_dict(SMALL_SWEEP, default_name="small")
    first = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=True)
    points, _ = dse.expand_points(sweep)
    assert first.evaluated == len(points) == len(first.records) and first.resumed == 0
    assert not first.errors
    # Every record's area is the model's for that config, times the tiles.
    for r in first.records:
        single = estimate(config_from_dict(r["config"])).area
        assert r["model_area"] == pytest.approx(single * r["tiles"], abs=0.006)
        cycles = math.ceil(100 / (r["lanes_l"] * r["mu"])) * math.ceil(10 / r["lanes_k"])
        assert r["cycles"] == math.ceil(cycles / r["tiles"])
    for name in ("results.csv", "results.json", "results.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [
        "small_pareto_fp16.png", "small_pareto_int4.png"]
    csv_rows = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert len(csv_rows) == len(points) + 1

    # Resume: nothing is redone; a torn last line (a killed run) is ignored and redone.
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    second = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=False)
    assert second.evaluated == 1 and second.resumed == len(points) - 1
    assert _areas(second) == _areas(first)
    third = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=False)
    assert third.evaluated == 0 and third.resumed == len(points)
    restarted = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=False,
                              restart=True)
    assert restarted.evaluated == len(points)


def test_local_processes_match_in_process(tmp_path):
    sweep = dse.sweep_from_dict({**SMALL_SWEEP, "tiles": [1]})
    serial = dse.run_sweep(sweep, tmp_path / "serial", jobs=1, progress=False, plots=False)
    parallel = dse.run_sweep(sweep, tmp_path / "parallel", jobs=2, progress=False, plots=False)
    assert parallel.evaluated == len(serial.records) > 0
    assert _areas(parallel) == _areas(serial)


def test_dask_local_cluster_matches_in_process(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    sweep = dse.sweep_from_dict({**SMALL_SWEEP, "tiles": [1]})
    serial = dse.run_sweep(sweep, tmp_path / "serial", jobs=1, progress=False, plots=False)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        # By address, as `accelgen dse --scheduler ADDRESS` does.
        on_dask = dse.run_sweep(sweep, tmp_path / "dask", scheduler=cluster.scheduler_address,
                                progress=False, plots=False)
    assert on_dask.evaluated == len(serial.records) > 0
    assert _areas(on_dask) == _areas(serial)


def test_failed_point_is_reported_and_retried(tmp_path, monkeypatch):
    sweep = dse.sweep_from_dict({**SMALL_SWEEP, "tiles": [1], "throughput": [8]})
    points, _ = dse.expand_points(sweep)
    victim = points[0].key
    real = dse.evaluate_point

    def flaky(point, synth_cache=None):
        if dse.DesignPoint.from_dict(point).key == victim:
            raise RuntimeError("simulated worker failure")
        return real(point, synth_cache)

    monkeypatch.setattr(dse.engine, "evaluate_point", flaky)
    result = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=False)
    assert [e["key"] for e in result.errors] == [victim]
    assert "simulated worker failure" in result.errors[0]["error"]
    assert len(result.records) == len(points) - 1
    monkeypatch.setattr(dse.engine, "evaluate_point", real)
    again = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=False)
    assert again.evaluated == 1 and not again.errors and len(again.records) == len(points)


@pytest.mark.synth
def test_synthesized_points_report_model_error_and_are_cached(tmp_path):
    sweep = dse.sweep_from_dict({
        "kind": "ternary_lut", "throughput": [4],
        "axes": {"architecture": ["lut", "addsub"], "activation": ["int4"], "mu": [2],
                 "lanes_k": [2]},
        "fixed": {"max_reduction": 64}, "synthesize": "all"})
    cache = tmp_path / "synth-cache"
    result = dse.run_sweep(sweep, tmp_path / "out", jobs=1, progress=False, plots=True,
                           synth_cache=cache)
    synthesized = [r for r in result.records if r["synthesized"]]
    assert len(synthesized) == 2 and not result.errors
    for r in synthesized:
        assert r["synth_area"] > 0
        assert r["model_error"] == pytest.approx(r["model_area"] / r["synth_area"] - 1, abs=1e-4)
        assert abs(r["model_error"]) <= 0.25, r
    assert len(list(cache.glob("*.json"))) == 2
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["validation"]["synthesized"] == 2


# --------------------------------------------------------------------------- analysis


records_strategy = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 50)), min_size=1,
                            max_size=30)


@settings(max_examples=200, deadline=None)
@given(records_strategy)
def test_pareto_front_matches_definition(pairs):
    records = [{"throughput": t, "model_area": a, "i": i} for i, (t, a) in enumerate(pairs)]
    front = dse.pareto_front(records)

    def dominated(r):
        return any((o["throughput"] >= r["throughput"] and o["model_area"] < r["model_area"])
                   or (o["throughput"] > r["throughput"] and o["model_area"] <= r["model_area"])
                   for o in records)

    undominated = {(r["throughput"], r["model_area"]) for r in records if not dominated(r)}
    assert {(r["throughput"], r["model_area"]) for r in front} == undominated
    assert len(front) == len(undominated)          # one record per undominated (t, area)


def test_best_per_group_ratios():
    records = [
        {"activation": "fp16", "throughput": 8, "tiles": 1, "architecture": a, "model_area": x,
         "name": f"{a}{x}", "mu": mu, "lanes_k": 2}
        for a, x, mu in (("lut", 50.0, 2), ("lut", 40.0, 4), ("multiplier", 100.0, 1),
                         ("addsub", 60.0, 1))]
    (row,) = dse.best_per_group(records)
    assert row["lut_area"] == 40.0 and row["best_mu"] == 4
    assert row["multiplier_over_lut"] == pytest.approx(100 / 40)
    assert row["addsub_over_lut"] == pytest.approx(60 / 40)


def test_progress_bar_prints_deciles_when_not_a_terminal():
    stream = io.StringIO()
    bar = dse.ProgressBar(20, label="dse t", resumed=5, stream=stream)
    bar.done = 5
    for _ in range(15):
        bar.update()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("dse t [") and "20/20 (5 resumed)" in lines[-1]
    assert 3 <= len(lines) <= 11


# --------------------------------------------------------------------------- command line


def test_cli_help_explains_every_option(capsys):
    import argparse
    parser = argparse.ArgumentParser()
    dse.add_arguments(parser)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help and len(action.help) > 20, action.dest
    help_text = parser.format_help()
    for option in ("--out", "--jobs", "--scheduler", "--synth", "--restart", "--no-progress",
                   "--no-plots", "--check"):
        assert option in help_text


def test_cli_runs_and_resumes(tmp_path, capsys):
    path = write_yaml(tmp_path, GOOD + "  activation: [int8, fp16]\n  lanes_k: [1, 2]\n"
                      "fixed: {max_reduction: 128}\n")
    out = tmp_path / "out"
    assert dse.main([str(path), "-o", str(out), "-j", "1", "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert "mult/lut" in first and "evaluated" in first
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 4
    assert dse.main([str(path), "-o", str(out), "-j", "1", "--no-progress", "--no-plots"]) == 0
    assert "4 resumed, 0 evaluated" in capsys.readouterr().out


def test_cli_check_and_bad_file(tmp_path, capsys):
    good = write_yaml(tmp_path, GOOD)
    assert dse.main([str(good), "--check"]) == 0
    assert "1 points" in capsys.readouterr().out
    bad = write_yaml(tmp_path, GOOD.replace("[8]", "[-8]"), "bad.yaml")
    assert dse.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "throughput" in err and "-8" in err
    assert dse.main([str(good), "--jobs", "0"]) == 2


# --------------------------------------------------------------------------- array sweeps

ARRAY_SWEEP = {
    "kind": "flattened_array", "multipliers": [32, 64], "gemms": ["1x64x64", "16x64x32"],
    "fixed": {"max_k": 256}, "axes": {"blen": [2, 4, 8], "b_type": ["int4", "int8"]},
}


def test_array_sweep_derives_equal_multipliers():
    sweep = dse.sweep_from_dict(ARRAY_SWEEP)
    points, skipped = dse.expand_points(sweep)
    assert points
    for p in points:
        c = p.config
        assert c["blen"] * c["mlen"] in (32, 64)
    assert all("multipliers" in s for s in skipped)


def test_array_sweep_evaluates_cycles_from_the_cycle_model(tmp_path):
    from software_model.flattened import flat_tiled_cycles
    sweep = dse.sweep_from_dict(ARRAY_SWEEP, default_name="arrays")
    result = dse.run_sweep(sweep, tmp_path, jobs=1, progress=False, plots=True)
    assert result.records and not result.errors
    for r in result.records:
        expected = sum(flat_tiled_cycles(m, k, n, blen=r["blen"], mlen=r["mlen"],
                                         buffer_rows=config_from_dict(r["config"])
                                         .result_buffer_rows)["cycles"]
                       for m, k, n in ((1, 64, 64), (16, 64, 32)))
        assert r["cycles"] == expected
        assert 0 < r["utilization"] <= 1 and r["model_area"] > 0
    # decode (M=1) favours short BLEN at equal multipliers
    best = min(result.records, key=lambda r: r["cycles"])
    assert best["blen"] == 2
    assert list(tmp_path.glob("arrays_pareto_*.png"))


def test_systolic_sweep_at_equal_multipliers():
    sweep = dse.sweep_from_dict({"kind": "systolic_array", "multipliers": [64],
                                 "gemms": ["64x128x64"],
                                 "axes": {"rows": [4, 8, 16],
                                          "dataflow": ["output_stationary", "weight_stationary"]}})
    points, _ = dse.expand_points(sweep)
    shapes = {(p.config["rows"], p.config["cols"], p.config["dataflow"]) for p in points}
    assert (8, 8, "output_stationary") in shapes and (16, 4, "weight_stationary") in shapes


def test_array_sweep_rejects_bad_gemm(tmp_path):
    expect_rejection(tmp_path, "kind: systolic_array\ngemms: [1x2]\naxes: {rows: [4]}\n",
                     "gemms", "'MxKxN'")


def test_bad_kind_still_checks_the_options_of_the_nearest_kind(tmp_path):
    message = expect_rejection(tmp_path, "kind: ternary_lutt\nthroughput: 0\naxes: {mu: [2]}\n",
                               "did you mean 'ternary_lut'", "throughput")
    assert "got 0" in message
