"""Export: deterministic Verilog with provenance, manifest, filelist, lint-clean, synthesizable."""

from __future__ import annotations

import hashlib
import json

import pytest

from gen.cli import main
from gen.config import load_config, preset_paths
from gen.export import export_rtl
from gen.lint import lint_verilog

PRESETS = preset_paths()


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_export_is_byte_identical_on_rerun_and_records_its_config(tmp_path):
    cfg = load_config(preset_paths(prefix="systolic_os_4x4")[0])
    # two fresh elaborations (no cache), so determinism of Amaranth's output itself is tested
    first = export_rtl(cfg, tmp_path / "a", use_cache=False)
    again = export_rtl(cfg, tmp_path / "b", use_cache=False)
    assert _digest(first.out_dir) == _digest(again.out_dir)
    text = first.verilog.read_text()
    assert f"// config sha256: {cfg.config_hash}" in text.splitlines()[1]
    manifest = json.loads((first.out_dir / "manifest.json").read_text())
    assert manifest["config_sha256"] == cfg.config_hash and manifest["top"] == cfg.top_name
    assert manifest["config"] == cfg.to_dict()
    ports = {p["name"]: p for p in manifest["ports"]}
    assert ports["operands__payload"]["direction"] == "input"
    assert ports["results__payload"]["layout"]["fields"]["c"]["layout"]["length"] == cfg.cols
    assert (first.out_dir / "filelist.f").read_text().strip() == first.verilog.name
    # no temporary folders are left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_export_replaces_an_existing_folder_atomically(tmp_path):
    cfg = load_config(preset_paths(prefix="systolic_os_4x4")[0])
    out = tmp_path / "rtl"
    out.mkdir()
    (out / "stale.v").write_text("old")
    export_rtl(cfg, out)
    assert not (out / "stale.v").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rtl"]


def test_cli_rtl_writes_one_folder_per_config(tmp_path, capsys):
    paths = [str(p) for p in preset_paths(prefix="systolic_os_4x4")]
    assert main(["rtl", *paths, "--out", str(tmp_path)]) == 0
    for p in paths:
        name = load_config(p).name
        assert (tmp_path / name / "manifest.json").exists()


@pytest.mark.cosim
@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_every_preset_is_verilator_lint_clean(path, tmp_path):
    cfg = load_config(path)
    result = export_rtl(cfg, tmp_path / cfg.name)
    lint = lint_verilog(result.verilog, result.top)
    assert lint.ok, lint.output[-4000:]


@pytest.mark.synth
def test_synth_report_of_smallest_systolic_preset(capsys):
    path = str(preset_paths(prefix="systolic_os_4x4")[0])
    assert main(["synth", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["cells"] > 0 and report["longest_path"] > 0 and report["area"] > 0
    assert report["flops"] > 0 and any(k.startswith("XOR") for k in report["cells_by_type"])
