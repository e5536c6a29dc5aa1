"""docs/examples/integrator_tb.py drives a preset from its manifest.json alone (no accelgen
import in the testbench): the manifest says enough to integrate the block."""

from __future__ import annotations

import pytest

from gen.config import REPO_ROOT, load_config
from gen.export import export_rtl


@pytest.mark.cosim
def test_integrator_example_drives_a_preset_from_the_manifest(tmp_path):
    from cocotb_tools.runner import get_runner

    from gen.toolchain import apply_verilator_env

    config = load_config(REPO_ROOT / "configs" / "systolic_os_4x4_int8.yaml")
    result = export_rtl(config, tmp_path / config.name)
    apply_verilator_env()
    runner = get_runner("verilator")
    build = tmp_path / "sim"
    runner.build(sources=[result.verilog], hdl_toplevel=result.top, build_dir=build,
                 build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O0"])
    xml = runner.test(test_module="integrator_tb", hdl_toplevel=result.top,
                      test_dir=REPO_ROOT / "docs" / "examples", build_dir=build,
                      extra_env={"MANIFEST": str(result.out_dir / "manifest.json"),
                                 "PYTHONPATH": str(REPO_ROOT / "docs" / "examples")},
                      results_xml=str(tmp_path / "results.xml"))
    from cocotb_tools.runner import get_results
    tests, failures = get_results(xml)
    assert (tests, failures) == (1, 0)
