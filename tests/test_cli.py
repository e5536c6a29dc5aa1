"""The command line: output folders, all-or-nothing runs, size estimates and the --max-cells guard,
argument ranges, help pages, explain, broken pipes, and the README's own commands."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gen.cli import build_parser, cosim_test_names
from gen.config import GENERATORS, REPO_ROOT, config_class, config_from_dict, preset_paths
from gen.estimate import DEFAULT_MAX_CELLS, WARN_CELLS, estimate, heartbeat

SMALL = str(preset_paths(prefix="float_add_fp16")[0])
SYSTOLIC = str(preset_paths(prefix="systolic_ws_8x8")[0])

#: The designs that once hung ``rtl`` for minutes without a word (issue 9).
GIANTS = {
    "flattened_4096": "kind: flattened_array\nblen: 4\nmlen: 4096\n",
    "systolic_64x64_int16": "kind: systolic_array\nrows: 64\ncols: 64\na_type: int16\n"
                            "b_type: int16\n",
    "ternary_mu7_l64_k64": "kind: ternary_lut\nmu: 7\nlanes_l: 64\nlanes_k: 64\n",
    "mxint_linear_64x64_w16": "kind: mxint_linear\nn_tile: 64\nblock_size: 64\n"
                              "element_width: 16\nexponent_width: 6\nin_features: 64\n"
                              "out_features: 64\n",
}



def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- output folders


def test_rtl_writes_exactly_out_name_and_replaces_it(tmp_path, run_cli):
    out = tmp_path / "out"
    (out / "unrelated").mkdir(parents=True)
    (out / "float_add_fp16").mkdir()
    (out / "float_add_fp16" / "stale.v").write_text("old")
    code, stdout, _err = run_cli("rtl", SMALL, "--out", str(out))
    assert code == 0 and "[1/1] float_add_fp16: generated" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["float_add_fp16", "unrelated"]
    assert sorted(p.name for p in (out / "float_add_fp16").iterdir()) == \
        ["filelist.f", "float_add_fp16.core", "float_add_fp16.v", "manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_multi_config_rtl_is_all_or_nothing(tmp_path, run_cli, monkeypatch):
    """A generation failure in the third config leaves the output folder exactly as it was."""
    import gen.export

    a = _write(tmp_path, "first.yaml", "kind: float_add\n")
    b = _write(tmp_path, "second.yaml", "kind: float_add\nformat: bf16\n")
    c = _write(tmp_path, "third.yaml", "kind: float_add\npipeline_stages: 1\n")
    out = tmp_path / "out"
    (out / "first").mkdir(parents=True)
    (out / "first" / "previous.v").write_text("the previous run's output")
    real = gen.export.generate_verilog

    def failing(config, **kwargs):
        if config.name == "third":
            raise RuntimeError("simulated elaboration failure")
        return real(config, **kwargs)

    monkeypatch.setattr(gen.export, "generate_verilog", failing)
    code, _out, err = run_cli("rtl", str(a), str(b), str(c), "--out", str(out))
    assert code == 1
    assert "generating third (3 of 3) failed" in err and "nothing was written" in err
    assert sorted(p.name for p in out.iterdir()) == ["first"]
    assert (out / "first" / "previous.v").read_text() == "the previous run's output"
    monkeypatch.setattr(gen.export, "generate_verilog", real)
    assert run_cli("rtl", str(a), str(b), str(c), "--out", str(out))[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["first", "second", "third"]
    assert not (out / "first" / "previous.v").exists()


def test_out_that_is_a_file_is_a_usage_error(tmp_path, run_cli):
    target = tmp_path / "file"
    target.write_text("x")
    code, _out, err = run_cli("rtl", SMALL, "--out", str(target))
    assert code == 2 and "--out" in err and target.read_text() == "x"


def test_existing_non_folder_at_the_target_is_not_replaced(tmp_path):
    from gen.export import export_many

    cfg = config_from_dict({"kind": "float_add", "name": "adder"})
    (tmp_path / "adder").write_text("a file the user owns")
    with pytest.raises(Exception, match="not a folder"):
        export_many([cfg], tmp_path)
    assert (tmp_path / "adder").read_text() == "a file the user owns"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adder"]


# --------------------------------------------------------------------------- size estimates


def test_every_preset_is_below_the_warning_and_the_guard():
    """Block presets stay below the size warning; whole accelerators (hundreds of thousands of
    cells, a real synthesis job) may pass it but stay under the guard."""
    for path in preset_paths():
        est = estimate(config_from_dict(__import__("yaml").safe_load(path.read_text()),
                                        default_name=path.stem))
        limit = DEFAULT_MAX_CELLS if est and est.kind == "accelerator" else WARN_CELLS
        assert est is not None and 0 < est.cells < limit <= DEFAULT_MAX_CELLS, path


def test_estimate_matches_documented_synthesis_within_a_factor():
    """The calibration points the README and docs publish (gen/bench/estimate.py)."""
    from gen.bench.estimate import DOCUMENTED

    for data, area, cells, source in DOCUMENTED:
        est = estimate(config_from_dict(data))
        ratio = est.cells / cells
        assert 0.75 < ratio < 1.35, (data, source, est.cells, cells)
        assert 0.75 < est.area_ge / area < 1.35, (data, source, est.area_ge, area)


def test_estimate_counts():
    est = estimate(config_from_dict({"kind": "systolic_array", "rows": 8, "cols": 4}))
    assert est.counts == {"PEs": 32, "multipliers": 32}
    est = estimate(config_from_dict({"kind": "ternary_lut", "mu": 3, "lanes_l": 4,
                                     "lanes_k": 2}))
    assert est.counts["table entries"] == 4 * 13
    assert "1 FP adder," in estimate(config_from_dict({"kind": "float_add"})).summary()


@pytest.mark.parametrize("name", sorted(GIANTS))
def test_giant_designs_are_refused_quickly_with_the_option_named(tmp_path, run_cli, name):
    path = _write(tmp_path, f"{name}.yaml", GIANTS[name])
    out = tmp_path / "out"
    start = time.monotonic()
    code, stdout, err = run_cli("check", str(path))
    assert code == 0 and "size: " in stdout
    assert f"{path}: warning:" in err and "--max-cells" in err
    for command in (["rtl", str(path), "--out", str(out)], ["synth", str(path)],
                    ["lint", str(path)], ["cosim", str(path)]):
        code, _out, err = run_cli(*command)
        assert code == 2, command
        assert f"{path}: too large: estimated" in err
        assert "--max-cells" in err and "ACCELGEN_MAX_CELLS" in err
    assert not out.exists()
    assert time.monotonic() - start < 30


def test_max_cells_option_and_environment(tmp_path, run_cli, monkeypatch):
    code, _out, err = run_cli("rtl", SMALL, "--out", str(tmp_path), "--max-cells", "10")
    assert code == 2 and "too large" in err
    monkeypatch.setenv("ACCELGEN_MAX_CELLS", "10")
    assert run_cli("rtl", SMALL, "--out", str(tmp_path))[0] == 2
    monkeypatch.setenv("ACCELGEN_MAX_CELLS", "lots")
    code, _out, err = run_cli("rtl", SMALL, "--out", str(tmp_path))
    assert code == 2 and "ACCELGEN_MAX_CELLS: got 'lots'" in err
    monkeypatch.delenv("ACCELGEN_MAX_CELLS")
    code, _out, err = run_cli("rtl", SMALL, "--out", str(tmp_path), "--max-cells", "0")
    assert code == 2 and "--max-cells: got '0'" in err
    assert list(tmp_path.iterdir()) == []


def test_heartbeat_reports_slow_steps_only(monkeypatch):
    stream = io.StringIO()
    with heartbeat("quick", stream=stream, after=5):
        pass
    assert stream.getvalue() == ""
    est = estimate(config_from_dict({"kind": "systolic_array"}))
    with heartbeat("slow step", est, stream=stream, after=0.05, every=0.05):
        time.sleep(0.3)
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2 and lines[0].startswith("  slow step: 0 s elapsed (estimate ~")
    monkeypatch.setenv("ACCELGEN_PROGRESS", "0")
    silent = io.StringIO()
    with heartbeat("silenced", stream=silent, after=0.01, every=0.01):
        time.sleep(0.1)
    assert silent.getvalue() == ""


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("argv, fragment", [
    (["--m", "0", "--k", "8", "--n", "8"], "argument --m: got '0'; allowed: an integer 1"),
    (["--m", "8", "--k", "-1", "--n", "8"], "argument --k: got '-1'"),
    (["--m", "8", "--k", "8", "--n", "x"], "argument --n: got 'x'"),
    (["--m", "8", "--k", str(2**40), "--n", "8"], "argument --k: got"),
    (["--m", "8", "--k", str(10**9), "--n", "8"], "the cycle model walks at most 2,000,000"),
])
def test_cycles_argument_ranges(run_cli, argv, fragment):
    start = time.monotonic()
    code, _out, err = run_cli("cycles", SYSTOLIC, *argv)
    assert code == 2 and fragment in err
    assert time.monotonic() - start < 5


def test_cycles_on_a_non_systolic_config(run_cli):
    code, _out, err = run_cli("cycles", SMALL, "--m", "1", "--k", "1", "--n", "1")
    assert code == 2 and "has no cycle model; kinds with one: systolic_array" in err


def test_cycles_splits_output_stationary_jobs_at_max_k(run_cli, tmp_path):
    """The issue's example: a 16x16 array with max_k 8 on 256x1024x256 is drain-bound (jobs of
    K = 8 < rows), which the cycles command must show (it used to ignore max_k)."""
    path = tmp_path / "narrow_k.yaml"
    path.write_text("kind: systolic_array\nrows: 16\ncols: 16\nmax_k: 8\n")
    code, out, _err = run_cli("cycles", str(path), "--m", "256", "--k", "1024", "--n", "256",
                           "--json")
    assert code == 0
    from software_model.systolic import tiled_gemm_cycles
    kw = dict(rows=16, cols=16, dataflow="output_stationary", buffer_rows=32)
    expected = tiled_gemm_cycles(256, 1024, 256, **kw, max_k=8)["cycles"]
    assert json.loads(out)["model"]["cycles"] == expected
    assert expected > 3 * tiled_gemm_cycles(256, 1024, 256, **kw)["cycles"]


@pytest.mark.parametrize("argv, fragment", [
    (["--test", "nope"], "--test: got 'nope'; allowed: 'all' or a comma-separated list"),
    (["--test", "random_jobs,nope"], "cosim.float_add's tests:"),
    (["--test", ""], "--test: got ''"),
    (["--samples", "0"], "argument --samples: got '0'"),
    (["--seed", "-1"], "argument --seed: got '-1'"),
    (["--module", "cosim.nope"], "--module: no cocotb test module 'cosim.nope'"),
    (["--module", "cosim.traffic"], "--module: no cocotb tests in 'cosim.traffic'"),
])
def test_cosim_arguments_are_usage_errors_before_any_build(run_cli, argv, fragment):
    code, _out, err = run_cli("cosim", SMALL, *argv)
    assert code == 2 and fragment in err
    assert "co-simulation failed" not in err


@pytest.mark.cosim
def test_cosim_cli_runs_the_named_test(run_cli):
    """Valid arguments pass the validation unchanged: one named test, a seed, a sample count."""
    code, out, err = run_cli("cosim", SMALL, "--test", " random_operands", "--seed", "3",
                          "--samples", "50")
    assert code == 0, err
    assert "float_add_fp16 random_operands:" in out and "0 mismatches" in out
    assert "special_classes" not in out


def test_cosim_test_names_are_read_from_source_without_importing():
    imported_before = "cosim.systolic" in sys.modules
    names = cosim_test_names("cosim.systolic")
    assert {"random_jobs", "corner_cases", "cycle_model"} <= set(names)
    assert "_random_k" not in names                        # a helper, not a test
    assert ("cosim.systolic" in sys.modules) == imported_before   # reading never imports it
    assert cosim_test_names("cosim.does_not_exist") is None


@pytest.mark.parametrize("text, fragment", [
    ("kind: ternary_lut\nthroughput: [8]\naxes: {7: [1, 2]}\n", "axes.7: not a ternary_lut"),
    ("kind: ternary_lut\nthroughput: [8]\naxes: {mu: [2]}\ndescription: 2024-01-01\n"
     "fixed: {mirrored: 2024-01-01}\n", "fixed.mirrored: got '2024-01-01'"),
    ("kind: ternary_lut\nthroughput: [" + ", ".join(map(str, range(1, 2001))) + "]\n"
     "axes: {mu: [2, 3]}\n", "or a non-empty list of at most 64 of them"),
    ("kind: ternary_lut\nthroughput: [60, 120, 240, 480]\ntiles: [1, 2, 4, 8, 16]\n"
     "axes: {mu: [2, 3, 4, 5, 6], lanes_k: [" + ", ".join(map(str, range(1, 65))) + "],"
     " activation: [int4, int8, fp16, bf16]}\n", "expands to 25,600 combinations"),
    ("kind: ternary_lut\nthroughput: [8]\naxes: {mu: [2]}\nworkload: {reduction: 0}\n",
     "workload.reduction: got 0"),
    ("kind: ternary_lut\nthroughput: [8]\nthroughput: [16]\naxes: {mu: [2]}\n",
     "key 'throughput' appears twice"),
    ("kind: [ternary_lut]\nthroughput: [8]\naxes: {mu: [2]}\n", "kind: got ['ternary_lut']"),
    ("kind: ternary_lut\nname: " + "n" * 100 + "\nthroughput: [8]\naxes: {mu: [2]}\n",
     "name: got 'nnnn"),
])
def test_dse_check_rejects_bad_sweeps_quickly(tmp_path, run_cli, text, fragment):
    path = _write(tmp_path, "sweep.yaml", text)
    start = time.monotonic()
    code, _out, err = run_cli("dse", "--check", str(path))
    assert code == 2 and fragment in err and str(path) in err
    assert time.monotonic() - start < 10


def test_dse_jobs_range(tmp_path, run_cli):
    sweep = str(REPO_ROOT / "configs" / "dse" / "ternary_validation_large_mu.yaml")
    for jobs in ("0", "100000"):
        code, _out, err = run_cli("dse", sweep, "--jobs", jobs, "--out", str(tmp_path))
        assert code == 2 and "--jobs: got" in err


# --------------------------------------------------------------------------- help and explain


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_subcommand_help_has_a_description():
    for name, sub in _subparsers().items():
        text = sub.format_help()
        assert sub.description, name
        assert " ".join(sub.description.split()[:3]) in " ".join(text.split()), name


def test_bench_and_cosim_help_list_their_choices():
    subs = _subparsers()
    bench = subs["bench"].format_help()
    for name in ("systolic", "mxint", "ternary_dse", "estimate"):
        assert f"  {name} " in bench
    cosim = " ".join(subs["cosim"].format_help().split())
    assert "systolic_array (cosim.systolic): random_jobs, corner_cases, cycle_model" in cosim


def test_explain_renders_ranges_choices_and_yaml_types(run_cli):
    code, out, _err = run_cli("explain", "systolic_array")
    assert code == 0
    assert "  a_type: string (default: int8)" in out
    assert "allowed: a signed integer type int2 .. int16" in out
    assert "  rows: integer (default: 4)" in out and "allowed: integer 1 .. 64" in out
    assert "allowed: one of 'output_stationary', 'weight_stationary'" in out
    assert "  acc_width: integer or null (default: null)" in out
    assert "size at the defaults: 16 PEs, 16 multipliers" in out
    assert "SystolicArrayConfig(" not in out


def test_explain_summary_for_every_kind():
    for kind in GENERATORS:
        summary = config_class(kind).summary()
        assert summary and not summary.startswith(config_class(kind).__name__), kind


def test_explain_a_config_file(run_cli):
    code, out, _err = run_cli("explain", SYSTOLIC)
    assert code == 0 and "this config ('systolic_ws_8x8_int8'): 64 PEs" in out
    assert "  rows: integer = 8 (default: 4)" in out


def test_explain_unknown_kind_suggests(run_cli):
    code, _out, err = run_cli("explain", "systolik_array")
    assert code == 2 and "did you mean 'systolic_array'?" in err


def test_list_into_a_closed_pipe_is_quiet():
    """`accelgen list | head`: the reader leaves early; no 'internal error', status 141."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gen.cli", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT)
    proc.stdout.close()                  # before the child writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_readme_commands_name_files_that_exist():
    readme = (REPO_ROOT / "README.md").read_text()
    paths = {p for p in re.findall(r"configs/[\w/.-]+\.yaml", readme)
             if not re.fullmatch(r"configs/[A-Z]\.yaml", p)}        # configs/X.yaml: a placeholder
    assert paths, "the README names presets"
    missing = sorted(p for p in paths if not (REPO_ROOT / p).exists())
    assert not missing, missing


def test_makefile_and_readme_agree_on_test_quick():
    """`make help` says "under three minutes"; the README's measured figure must say the same."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    help_line = next(line for line in makefile.splitlines() if line.startswith("test-quick:"))
    assert "under three minutes" in help_line, help_line
    measured = re.search(r"`make test-quick` (\d+) s", (REPO_ROOT / "README.md").read_text())
    assert measured and int(measured.group(1)) < 180
