"""MXInt datapath costs: synthesize every MXInt preset (configs/mxint_*.yaml) with gen.synth and
record cells, NAND2-equivalent area, flops and the longest combinational path (mapped gate
levels), plus the latency/throughput each block is built for.

    python -m gen.bench.mxint [out_dir] [--quick]

``quick`` synthesizes only the smallest preset of each kind.  Reports are cached by Verilog
hash under build/synth/, so a re-run after no RTL change takes seconds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["run"]

KINDS = ("mxint_cast", "mxint_dot", "mxint_accumulator", "mxint_linear", "mxint_softmax",
         "mxint_layernorm", "mxint_gelu")


def _describe(cfg) -> str:
    if cfg.kind == "mxint_cast":
        return (f"{cfg.input_format} w{cfg.element_width} k{cfg.block_size} "
                f"ew{cfg.exponent_width} {cfg.rounding}")
    if cfg.kind == "mxint_dot":
        return f"w{cfg.element_width} k{cfg.block_size} ew{cfg.exponent_width}"
    if cfg.kind == "mxint_accumulator":
        return (f"{cfg.mode} lanes{cfg.lanes} in{cfg.input_width} ew{cfg.exponent_width} "
                f"sum{cfg.sum_width}b")
    if cfg.kind == "mxint_softmax":
        return (f"w{cfg.element_width}->{cfg.out_element_width} k{cfg.block_size} "
                f"rows<={cfg.max_row_blocks} exp deg{cfg.exp_degree} newton{cfg.newton_steps}")
    if cfg.kind == "mxint_layernorm":
        return (f"w{cfg.element_width}->{cfg.out_element_width} k{cfg.block_size} "
                f"N{cfg.row_length} F{cfg.frac_bits} newton{cfg.newton_steps}")
    if cfg.kind == "mxint_gelu":
        return (f"w{cfg.element_width}->{cfg.out_element_width} k{cfg.block_size} "
                f"2^{cfg.segment_bits} seg deg{cfg.degree}")
    return (f"K{cfg.in_features} N{cfg.out_features} tile{cfg.n_tile} w{cfg.element_width} "
            f"k{cfg.block_size} -> {cfg.output_format}")


def _latency(cfg):
    """Fixed latency of the datapath blocks; the row units' pipeline latencies."""
    if cfg.kind in ("mxint_softmax", "mxint_layernorm", "mxint_gelu"):
        dut = cfg.elaborate()
        dut._MustUse__silence = True         # built only to read its latencies
        return getattr(dut, "latencies", None) or dut.latency
    return getattr(cfg, "latency", None)


def _size_key(cfg):
    return len(json.dumps(cfg.to_dict())) + sum(
        v for v in cfg.to_dict().values() if isinstance(v, int) and not isinstance(v, bool))


def run(out_dir: Path, quick: bool = False) -> dict:
    from gen.config import GENERATORS, load_config, preset_paths
    from gen.export import synthesize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind in KINDS:
        if kind not in GENERATORS:
            continue
        configs = [load_config(p) for p in preset_paths(kind)]
        if quick and configs:
            configs = [min(configs, key=_size_key)]
        for cfg in configs:
            rep = synthesize(cfg)
            rows.append({
                "config": cfg.name, "kind": kind, "params": _describe(cfg),
                "cells": rep.cells, "area_ge": rep.area, "flops": rep.flops,
                "longest_path": rep.longest_path, "synth_seconds": rep.seconds,
                "latency_cycles": _latency(cfg),
            })
    result = {"benchmark": "mxint", "quick": quick, "rows": rows}
    (out_dir / "mxint.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    _plot(rows, out_dir / "mxint_area.png")
    print(f"{'config':34} {'params':40} {'cells':>7} {'area GE':>9} {'flops':>6} {'ltp':>4}")
    for r in rows:
        print(f"{r['config']:34} {r['params']:40} {r['cells']:7d} {r['area_ge']:9.0f} "
              f"{r['flops']:6d} {r['longest_path']:4d}")
    return result


def _plot(rows, path):
    if not rows:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5))
    names = [r["config"] for r in rows]
    ax.barh(names, [r["area_ge"] for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.text(r["area_ge"], i, f" ltp {r['longest_path']}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("area (NAND2 equivalents, log scale)")
    ax.set_title("MXInt datapaths: synthesized area and longest path")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
