"""Flattened (PLENA-style) vs square systolic array: utilization, cycles, area, longest path.

    python -m gen.bench.flattened [out_dir] [--quick]

* Cycle model (``software_model.flattened``), decode (M = 1, 4, 8; K, N from 1024 to 4096) and
  prefill shapes, for BLEN 4 x MLEN 1024 and BLEN 8 x MLEN 512 against the foundation generator's
  64 x 64 output-stationary array (4096 multipliers each), plus the small pair BLEN 4 x MLEN 16
  vs 8 x 8 (64 multipliers each).
* RTL: small tiled GEMMs on configs/flattened_b4_m16_int8.yaml in Verilator (native harness,
  cosim.gemm), measured cycles next to the model's (they must be equal).
* Yosys (gen.synth): BLEN 4 x MLEN 16 vs 8 x 8 (int8, max_k 64): cells, NAND2-equivalent area,
  flops, longest path; and the adder tree synthesized alone (its extra area).

* Equal multipliers AND equal memory (software_model.memory): both 4096-multiplier arrays under
  the same memory settings (64-word on-chip ports, a 64 x 64 array's native width, and
  1024-word ports, the 4 x 1024 array's), the same off-chip bandwidth and capacities; compute-
  and bandwidth-bound cycles, which term binds, and a table splitting the headline gain into the
  part that survives equal memory and the part bought with wider ports. GEMVs (M = 1) included.
* SCALE-Sim v3 itself (gen/scalesim.py, optional group) on the square 64 x 64 output-stationary
  array for every GEMM of the table (SCALE-Sim has no flattened array), with its closed form.

Writes flattened.json, flattened.md (the tables for docs/README) and flattened.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["run"]

BIG = [("flat_b4_m1024", 4, 1024), ("flat_b8_m512", 8, 512)]
#: Off-chip bandwidth shared by every memory setting (bytes/cycle; e.g. 1 TB/s at 2 GHz) and the
#: on-chip buffer capacities (bytes); int8 operands, 32-bit results.
OFFCHIP_BYTES_PER_CYCLE = 512
CAPACITY = {"a_capacity_bytes": 1 << 20, "b_capacity_bytes": 4 << 20, "c_capacity_bytes": 1 << 20}
SQUARE_BIG = 64
SMALL = ("flat_b4_m16", 4, 16)
SQUARE_SMALL = 8


def _shapes(quick: bool):
    decode_kn = [(1024, 1024), (4096, 4096)] if quick else \
        [(1024, 1024), (1024, 4096), (4096, 1024), (2048, 2048), (4096, 4096)]
    decode = [(m, k, n) for m in (1, 4, 8) for k, n in decode_kn]
    prefill = [(512, 1024, 1024)] if quick else \
        [(512, 1024, 1024), (1024, 1024, 4096), (2048, 4096, 1024), (1024, 2048, 2048)]
    return decode, prefill


def _cycle_rows(quick: bool) -> list[dict]:
    from software_model.flattened import flat_tiled_cycles, square_tiled_cycles
    decode, prefill = _shapes(quick)
    rows = []
    for phase, shapes in (("decode", decode), ("prefill", prefill)):
        for m, k, n in shapes:
            sq = square_tiled_cycles(m, k, n, side=SQUARE_BIG)
            row = {"phase": phase, "M": m, "K": k, "N": n, "multipliers": SQUARE_BIG ** 2,
                   "square_cycles": sq["cycles"], "square_util": round(sq["utilization"], 4)}
            for name, blen, mlen in BIG:
                fl = flat_tiled_cycles(m, k, n, blen=blen, mlen=mlen)
                row[f"{name}_cycles"] = fl["cycles"]
                row[f"{name}_util"] = round(fl["utilization"], 4)
                row[f"{name}_gain"] = round(fl["utilization"] / sq["utilization"], 2)
            rows.append(row)
    return rows


def memory_settings():
    from software_model.memory import MemorySettings
    return [MemorySettings("64-word ports", 64, 64, 64, OFFCHIP_BYTES_PER_CYCLE, **CAPACITY),
            MemorySettings("1024-word ports", 1024, 1024, 64, OFFCHIP_BYTES_PER_CYCLE, **CAPACITY)]


def _memory_rows(quick: bool) -> list[dict]:
    """Square 64x64 and flattened 4x1024 at equal multipliers and equal memory settings."""
    from software_model.flattened import flat_tiled_cycles, square_tiled_cycles
    decode, prefill = _shapes(quick)
    shapes = [("GEMV", 1, k, n) for _m, k, n in decode if _m == 1] + \
        [("decode", m, k, n) for m, k, n in decode if m > 1] + \
        [("prefill", m, k, n) for m, k, n in prefill]
    name, blen, mlen = BIG[0]
    narrow, wide = memory_settings()
    rows = []
    for phase, m, k, n in shapes:
        row = {"phase": phase, "M": m, "K": k, "N": n}
        for tag, mem in (("narrow", narrow), ("wide", wide)):
            sq = square_tiled_cycles(m, k, n, side=SQUARE_BIG, memory=mem)
            fl = flat_tiled_cycles(m, k, n, blen=blen, mlen=mlen, memory=mem)
            row[f"square_{tag}"] = {"compute_cycles": sq["cycles"],
                                    "cycles": sq["memory"]["cycles"],
                                    "bound": sq["memory"]["bound"]}
            row[f"flat_{tag}"] = {"compute_cycles": fl["cycles"], "cycles": fl["memory"]["cycles"],
                                  "bound": fl["memory"]["bound"]}
            row[f"gain_equal_{tag}"] = round(sq["memory"]["cycles"] / fl["memory"]["cycles"], 3)
        row["gain_compute_only"] = round(row["square_narrow"]["compute_cycles"]
                                         / row["flat_narrow"]["compute_cycles"], 3)
        # The old headline: each array fed at its own native width.
        row["gain_native_ports"] = round(row["square_narrow"]["cycles"]
                                         / row["flat_wide"]["cycles"], 3)
        row["gain_from_wider_ports"] = round(row["gain_native_ports"]
                                             / row["gain_equal_narrow"], 3)
        rows.append(row)
    return rows


def _scalesim_rows(quick: bool) -> list[dict]:
    """SCALE-Sim v3 on the square 64x64 OS array for every GEMM of the cycle table."""
    from gen.bench.systolic import scalesim_reference
    from software_model.flattened import square_tiled_cycles
    decode, prefill = _shapes(quick)
    rows = []
    for m, k, n in decode + prefill:
        ref = scalesim_reference(m, k, n, rows=SQUARE_BIG, cols=SQUARE_BIG,
                                 dataflow="output_stationary")
        ours = square_tiled_cycles(m, k, n, side=SQUARE_BIG)
        rows.append({"M": m, "K": k, "N": n, "square_cycles": ours["cycles"], **ref})
        print(f"  SCALE-Sim 64x64 OS {m}x{k}x{n}: {ref['scalesim_cycles']} ({ref['scalesim']}), "
              f"ours {ours['cycles']}", flush=True)
    return rows


def _util_curves(quick: bool) -> dict:
    from software_model.flattened import flat_tiled_cycles, square_tiled_cycles
    ms = [1, 2, 4, 8, 16, 32, 64] + ([] if quick else [128, 256])
    k = n = 2048
    curves = {"M": ms, "K": k, "N": n, f"square_{SQUARE_BIG}": [], "small": {"M": ms}}
    for name, blen, mlen in BIG:
        curves[name] = [round(flat_tiled_cycles(m, k, n, blen=blen, mlen=mlen)["utilization"], 4)
                        for m in ms]
    curves[f"square_{SQUARE_BIG}"] = [
        round(square_tiled_cycles(m, k, n, side=SQUARE_BIG)["utilization"], 4) for m in ms]
    name, blen, mlen = SMALL
    curves["small"][name] = [round(flat_tiled_cycles(m, 1024, 1024, blen=blen, mlen=mlen)
                                   ["utilization"], 4) for m in ms]
    curves["small"][f"square_{SQUARE_SMALL}"] = [
        round(square_tiled_cycles(m, 1024, 1024, side=SQUARE_SMALL)["utilization"], 4)
        for m in ms]
    return curves


def _rtl_rows(quick: bool) -> list[dict]:
    """Measured Verilator cycles of small tiled GEMMs vs the cycle model (native harness,
    cosim.gemm: every result row checked against the golden model)."""
    from gen.config import REPO_ROOT, load_config
    from gen.sim import tiled_gemm
    cfg = load_config(REPO_ROOT / "configs" / "flattened_b4_m16_int8.yaml")
    shapes = [(1, 64, 64), (8, 64, 16)] if quick else \
        [(1, 64, 64), (4, 64, 32), (8, 64, 16), (13, 40, 12)]
    rows = []
    for m, k, n in shapes:
        run = tiled_gemm(cfg, m, k, n, seed=1)
        if run.mismatches:
            raise AssertionError(f"{cfg.name} {m}x{k}x{n}: " + "; ".join(run.mismatches[:3]))
        rows.append({"config": cfg.name, "M": m, "K": k, "N": n,
                     "rtl_cycles": run.rtl_cycles, "model_cycles": run.model_cycles,
                     "checked": run.checked,
                     "utilization": round(m * k * n / (run.rtl_cycles * cfg.multipliers), 4)})
    return rows


def _synth_rows() -> dict:
    from amaranth.back import verilog

    from gen.config import config_from_dict
    from gen.export import synthesize
    from gen.synth import synthesize_verilog
    from hw.flattened import PartialSumTree
    flat = config_from_dict({"kind": "flattened_array", "name": "flat_synth_b4_m16",
                             "blen": 4, "mlen": 16, "max_k": 64})
    square = config_from_dict({"kind": "systolic_array", "name": "square_synth_8x8",
                               "rows": 8, "cols": 8, "max_k": 64})
    out = {}
    for key, cfg in (("flattened", flat), ("square", square)):
        rep = synthesize(cfg)
        out[key] = {"config": cfg.name, "multipliers": 64, "cells": rep.cells,
                    "area_ge": rep.area, "flops": rep.flops, "longest_path": rep.longest_path,
                    "synth_seconds": rep.seconds}
    tree = PartialSumTree(sub_arrays=flat.sub_arrays, lanes=flat.blen,
                          width=flat.accumulator_width, overflow=flat.overflow)
    text = verilog.convert(tree, name="bench_flat_tree", emit_src=False)
    rep = synthesize_verilog(text, "bench_flat_tree")
    out["adder_tree"] = {"sub_arrays": flat.sub_arrays, "lanes": flat.blen,
                         "width": flat.accumulator_width, "cells": rep.cells, "area_ge": rep.area,
                         "flops": rep.flops, "longest_path": rep.longest_path,
                         "share_of_flattened_area": round(rep.area / out["flattened"]["area_ge"],
                                                          4)}
    return out


def _plot(curves: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    for name, _b, _m in BIG:
        ax.plot(curves["M"], curves[name], marker="o", label=name.replace("flat_", "flattened "))
    ax.plot(curves["M"], curves[f"square_{SQUARE_BIG}"], marker="s",
            label=f"square {SQUARE_BIG}x{SQUARE_BIG}")
    ax.set_title(f"4096 multipliers, K = N = {curves['K']}")
    small = curves["small"]
    axes[1].plot(small["M"], small[SMALL[0]], marker="o", label="flattened b4_m16")
    axes[1].plot(small["M"], small[f"square_{SQUARE_SMALL}"], marker="s",
                 label=f"square {SQUARE_SMALL}x{SQUARE_SMALL}")
    axes[1].set_title("64 multipliers (RTL-simulated size), K = N = 1024")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("M (rows of A)")
        ax.set_ylabel("multiplier utilization")
        ax.set_ylim(0, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict) -> str:
    """The docs tables, generated from the bench's JSON."""
    lines = ["| phase | M x K x N | square 64x64 | SCALE-Sim 64x64 (util) | flat 4x1024 | "
             "flat 8x512 | gain (4x1024) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    ref = {(r["M"], r["K"], r["N"]): r for r in result.get("scalesim_square", [])}
    for r in result["cycles"]:
        s = ref.get((r["M"], r["K"], r["N"]))
        ss = (f"{s['scalesim_utilization']:.3f}" + ("" if s["scalesim"] == "simulator" else " *")
              if s else "-")
        lines.append(f"| {r['phase']} | {r['M']} x {r['K']} x {r['N']} | {r['square_util']:.3f} | "
                     f"{ss} | {r['flat_b4_m1024_util']:.3f} | {r['flat_b8_m512_util']:.3f} | "
                     f"{r['flat_b4_m1024_gain']:.1f}x |")
    lines.append("")
    sims = [r for r in result.get("scalesim_square", []) if r["scalesim"] == "simulator"]
    why = sorted({r["scalesim"].partition("(")[2].rstrip(")")
                  for r in result.get("scalesim_square", []) if r["scalesim"] != "simulator"})
    lines.append(f"SCALE-Sim: the simulator (gen/scalesim.py) on the square 64x64 "
                 f"output-stationary array for {len(sims)} of {len(result['cycles'])} GEMMs; "
                 "* = its closed form, equal to the simulator on every case simulated"
                 + (f" ({'; '.join(w for w in why if w)})" if any(why) else "") + ".")
    lines += ["", "| phase | M x K x N | compute only | "
              "64-word ports: square / flat cycles (bound) "
              "| gain | 1024-word ports: square / flat cycles (bound) | gain | native ports "
              "(square 64, flat 1024) | of which wider ports |",
              "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: |"]
    for r in result["equal_memory"]:
        sn, fn, sw, fw = r["square_narrow"], r["flat_narrow"], r["square_wide"], r["flat_wide"]
        lines.append(
            f"| {r['phase']} | {r['M']} x {r['K']} x {r['N']} | {r['gain_compute_only']:.2f}x | "
            f"{sn['cycles']} ({sn['bound']}) / {fn['cycles']} ({fn['bound']}) | "
            f"{r['gain_equal_narrow']:.2f}x | {sw['cycles']} ({sw['bound']}) / {fw['cycles']} "
            f"({fw['bound']}) | {r['gain_equal_wide']:.2f}x | {r['gain_native_ports']:.2f}x | "
            f"{r['gain_from_wider_ports']:.2f}x |")
    return "\n".join(lines) + "\n"


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"benchmark": "flattened", "quick": quick}
    result["cycles"] = _cycle_rows(quick)
    result["memory_settings"] = [m.to_dict() for m in memory_settings()]
    result["equal_memory"] = _memory_rows(quick)
    result["scalesim_square"] = _scalesim_rows(quick)
    result["utilization_vs_m"] = _util_curves(quick)
    (out_dir / "flattened.md").write_text(markdown(result))
    _plot(result["utilization_vs_m"], out_dir / "flattened.png")
    print(markdown(result))
    if os.environ.get("ACCELGEN_BENCH_MODEL_ONLY"):   # skip Verilator and Yosys
        (out_dir / "flattened.json").write_text(json.dumps(result, indent=1) + "\n")
        return result
    try:
        result["rtl"] = _rtl_rows(quick)
    except Exception as exc:           # a missing toolchain must not hide the model figures
        result["rtl_error"] = f"{type(exc).__name__}: {exc}"[:2000]
    result["synthesis"] = _synth_rows()
    (out_dir / "flattened.json").write_text(json.dumps(result, indent=1) + "\n")

    print(f"{'phase':8} {'M':>5} {'K':>5} {'N':>5} {'square64':>9} {'b4_m1024':>9} "
          f"{'b8_m512':>8} {'gain b4':>8}")
    for r in result["cycles"]:
        print(f"{r['phase']:8} {r['M']:5} {r['K']:5} {r['N']:5} {r['square_util']:9.3f} "
              f"{r['flat_b4_m1024_util']:9.3f} {r['flat_b8_m512_util']:8.3f} "
              f"{r['flat_b4_m1024_gain']:7.1f}x")
    for r in result.get("rtl", []):
        print(f"RTL {r['config']} {r['M']}x{r['K']}x{r['N']}: {r['rtl_cycles']} cycles "
              f"(model {r['model_cycles']}), utilization {r['utilization']:.3f}")
    if "rtl_error" in result:
        print("RTL runs failed:", result["rtl_error"].splitlines()[0])
    syn = result["synthesis"]
    for key in ("flattened", "square", "adder_tree"):
        s = syn[key]
        print(f"synth {key:10} cells {s['cells']:7} area {s['area_ge']:9.1f} GE "
              f"flops {s['flops']:5} longest path {s['longest_path']}")
    return result


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
