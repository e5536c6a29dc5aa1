"""Random configurations, not just presets, co-simulated bit-exact under Verilator.

Every run draws fresh small random valid configs of every kind from the session seed (printed in
pytest's header: ``ACCELGEN_CONFIG_SEED=<seed>`` reproduces them): three per block kind and two
accelerators (whole random programs on each), and runs the kind's random-stimulus cocotb test on
each (gen/campaign.py; ``accelgen campaign`` runs hundreds). The
command-line tests of ``accelgen campaign`` (argument errors, exit status, summary) are here too.
"""

from __future__ import annotations

import json

import pytest

from gen.campaign import (RANDOM_TESTS, SKIPPED_KINDS, campaign_kinds, draw_configs,
                          random_test_filter, run_campaign, run_config)
from gen.registry import KINDS

#: Small enough that each block's build takes well under a minute on one core.
PYTEST_MAX_CELLS = 12_000
PYTEST_SAMPLES = 8
#: Fresh configs per kind on every run ("a handful"); an accelerator build is about a minute.
PYTEST_CONFIGS = 3
#: Per kind: (configs per run, cell budget, samples). The accelerator's smallest configs are
#: 150 k+ cells (gen.campaign.KIND_MAX_CELLS); its samples are random programs per profile.
PYTEST_PLAN = {"accelerator": (2, 250_000, 2)}


def _plan(kind):
    return PYTEST_PLAN.get(kind, (PYTEST_CONFIGS, PYTEST_MAX_CELLS, PYTEST_SAMPLES))


COSIM_CASES = [(kind, n) for kind in campaign_kinds() for n in range(_plan(kind)[0])]


def test_every_kind_with_a_testbench_has_a_random_test():
    with_testbench = {name for name, record in KINDS.items() if record.testbench}
    assert set(campaign_kinds()) | set(SKIPPED_KINDS) == with_testbench
    assert set(RANDOM_TESTS) == set(campaign_kinds())


@pytest.mark.parametrize("kind", campaign_kinds())
def test_random_test_names_a_cocotb_test_of_the_testbench(kind):
    """The named test exists in the kind's cocotb module (a renamed test would otherwise make
    every campaign run nothing; run_config also fails on zero tests)."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec(KINDS[kind].testbench)
    tree = ast.parse(open(spec.origin).read())
    tests = {node.name for node in ast.walk(tree) if isinstance(node, ast.AsyncFunctionDef)
             and any("cocotb.test" in ast.unparse(d) for d in node.decorator_list)}
    assert RANDOM_TESTS[kind] in tests, sorted(tests)


def test_filter_selects_the_test_and_its_parametrized_variants():
    import re
    pattern = re.compile(random_test_filter("systolic_array"))
    assert pattern.search("cosim.systolic.random_jobs")
    assert pattern.search("cosim.systolic.random_jobs/profile=mild")
    assert not pattern.search("cosim.systolic.corner_cases/profile=mild")
    assert not pattern.search("cosim.systolic.not_random_jobs")


@pytest.mark.parametrize("kind", campaign_kinds())
def test_draws_are_deterministic_valid_and_within_budget(kind, config_seed):
    budget = _plan(kind)[1]
    first = draw_configs(kind, 2, config_seed, budget)
    again = draw_configs(kind, 1, config_seed, budget)
    assert first[0].config.to_dict() == again[0].config.to_dict()
    assert [d.config.name for d in first] == [f"random_{kind}_{config_seed}_{n}" for n in (0, 1)]
    for drawn in first:
        if drawn.within_budget:         # else: the smallest of 200 draws, reported as such
            assert drawn.cells is None or drawn.cells <= budget
        else:
            assert drawn.draws <= 200 and drawn.cells > PYTEST_MAX_CELLS


def test_every_kind_gets_a_handful_of_fresh_configs():
    counts = {kind: sum(k == kind for k, _ in COSIM_CASES) for kind in campaign_kinds()}
    assert "accelerator" in counts and min(counts.values()) >= 2, counts


def test_kind_budgets_default_per_kind():
    from gen.campaign import DEFAULT_MAX_CELLS, KIND_MAX_CELLS, default_max_cells
    assert default_max_cells("mxint_dot") == DEFAULT_MAX_CELLS
    assert default_max_cells("accelerator") == KIND_MAX_CELLS["accelerator"] > DEFAULT_MAX_CELLS
    # the accelerator's default budget is one its random configs can meet
    drawn = draw_configs("accelerator", 2, 5)
    assert all(d.within_budget for d in drawn), [d.cells for d in drawn]


# -- co-simulation: a handful of fresh random configs per kind -----------------------------------


@pytest.mark.cosim
@pytest.mark.parametrize("kind,index", COSIM_CASES)
def test_random_config_cosim(kind, index, config_seed):
    _, budget, samples = _plan(kind)
    # config n of a seed is the same whatever the count (draw_configs is prefix-stable)
    drawn = draw_configs(kind, index + 1, config_seed, budget)[index]
    config = drawn.config
    print(f"{kind}: {config.to_dict()} ({drawn.cells} cells estimated; "
          f"ACCELGEN_CONFIG_SEED={config_seed})")
    # saved as YAML and run from the file, so the failure's reproduce command names a file
    from gen.campaign import config_yaml
    from gen.config import REPO_ROOT
    path = REPO_ROOT / "build" / "random_configs" / f"{config.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_yaml(config))
    result, error = run_config(path, seed=config_seed, samples=samples)
    assert error is None, (f"random config {config.name} (ACCELGEN_CONFIG_SEED={config_seed}):\n"
                           f"{config.to_dict()}\n{error}")
    assert result.tests and all(name.startswith(RANDOM_TESTS[kind]) for name in result.tests)
    assert result.checked > 0
    assert all(t.get("mismatches", 0) == 0 for t in result.tests.values())


# -- accelgen campaign: the command line ----------------------------------------------------------



@pytest.mark.parametrize("argv,message", [
    ((), "--kind"),
    (("--kind", "nonsense"), "got 'nonsense'; allowed: systolic_array"),
    (("--kind", "accelerators"), "got 'accelerators'; allowed: "),
    (("--kind", "float_add", "--count", "0"), "--count: got '0'; allowed: an integer 1 .. 10,000"),
    (("--kind", "float_add", "--count", "ten"), "--count: got 'ten'"),
    (("--kind", "float_add", "--count", "10001"), "--count: got '10001'"),
    (("--kind", "float_add", "--seed", "-1"), "--seed: got '-1'; allowed: an integer 0 .. "),
    (("--kind", "float_add", "--seed", str(2**32)), "--seed: got '4294967296'"),
    (("--kind", "float_add", "--samples", "0"), "--samples: got '0'"),
    (("--kind", "float_add", "--max-cells", "-5"), "--max-cells: got '-5'"),
    (("--kind", "float_add", "--bogus"), "unrecognized arguments: --bogus"),
])
def test_campaign_rejects_bad_arguments(run_cli, argv, message):
    code, out, err = run_cli("campaign", *argv)
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err


def test_campaign_rejects_a_file_as_output_folder(run_cli, tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = run_cli("campaign", "--kind", "float_add", "--out", str(target))
    assert code == 2
    assert f"--out: got '{target}'; allowed: a folder" in err


def test_campaign_summary_and_exit_status(monkeypatch, tmp_path, run_cli):
    """Exit 0 when every config passes, 1 on any failure, with the failure's reproduce command
    in the summary (the co-simulation is replaced here; the cosim tests above run it)."""
    import gen.campaign as campaign

    class Result:
        def __init__(self, checked):
            self.checked = checked
            self.tests = {"random_operands": {"checked": checked, "mismatches": 0}}

    calls = []

    def fake(path, *, seed, samples, waves_on_failure):
        calls.append(path)
        if len(calls) == 2:
            return None, ("co-simulation of x failed (seed 7).\nrandom_operands: mismatch\n"
                          f"Reproduce with: accelgen cosim {path} --test random_operands "
                          "--seed 7 --waves")
        return Result(10), None

    monkeypatch.setattr(campaign, "run_config", fake)
    code, out, err = run_cli("campaign", "--kind", "float_add", "--count", "3", "--seed",
                          "7", "--out", str(tmp_path / "c"))
    assert code == 1
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary["complete"] and summary["totals"]["configs"] == 3
    assert summary["totals"]["failed"] == 1
    assert summary["totals"]["checked"] == 20
    failed = [r for r in summary["results"] if not r["passed"]]
    assert failed[0]["repro"].startswith("accelgen cosim ") and "--seed 7" in failed[0]["repro"]
    for r in summary["results"]:
        assert r["config_seed"] == 7 and r["config"]["kind"] == "float_add"
        assert (tmp_path / "c" / "configs" / f"{r['name']}.yaml").exists()
    assert "[3/3] float_add" in err and "FAIL" in err
    assert "FAILED random_float_add_7_1" in out

    calls.clear()
    monkeypatch.setattr(campaign, "run_config", lambda path, **kw: (Result(5), None))
    code, out, _ = run_cli("campaign", "--kind", "float_add", "--count", "2", "--seed", "7",
                        "--out", str(tmp_path / "d"), "--no-progress")
    assert code == 0
    assert "total: 2/2 configs passed, 10 results checked" in out


def test_saved_config_reloads_identically(tmp_path):
    """The YAML a campaign saves per config is the config (the repro command reads it)."""
    from gen.campaign import config_yaml
    from gen.config import load_config

    for kind in campaign_kinds():
        config = draw_configs(kind, 1, 3)[0].config
        path = tmp_path / f"{config.name}.yaml"
        path.write_text(config_yaml(config))
        assert load_config(path).to_dict() == config.to_dict()


def test_run_campaign_writes_summary_for_every_kind(monkeypatch, tmp_path):
    import gen.campaign as campaign

    class Result:
        checked, tests = 1, {"t": {"checked": 1}}

    monkeypatch.setattr(campaign, "run_config", lambda path, **kw: (Result(), None))
    summary = run_campaign(campaign_kinds(), 1, 5, tmp_path)
    assert sorted(summary["totals"]["per_kind"]) == sorted(campaign_kinds())
    assert summary["totals"]["passed"] == len(campaign_kinds())
