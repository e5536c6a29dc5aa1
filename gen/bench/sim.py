"""Simulation speed: cocotb vs the native stream harness vs a bare C++ loop, side by side.

    accelgen bench sim [--quick]

For each preset (and a 16x16 output-stationary int8 array made here), one seeded random workload
(:mod:`cosim.stimulus`, smooth traffic) runs, each figure the median of three runs,

* through cocotb (the generic replay test, :mod:`cosim.replay`, on the regressions' own -O0
  build; for the 16x16 array also on an -O3 build, to show how much of cocotb's time is the
  unoptimised model),
* through the native harness (:mod:`cosim.fast`, its optimised build) on the same beats, and the
  two runs' output beats and handshake cycles are compared (they must be identical);
* through the native harness again on a workload ~100x longer, timed end to end (packing, file
  hand-over, simulation, unpacking);
* and through a bare C++ loop on the same build (every input valid with fresh random bits, every
  output ready, nothing recorded): the ceiling.

Cycles per second are reported per wall second and per CPU second (the machine is shared; CPU
seconds are the steadier figure). Writes ``sim.json`` and ``sim.png``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np

__all__ = ["run"]

#: Optimisation of the native harness's build here (-O3 per TOOLCHAIN.md's bare-loop figure).
OPT = "O3"


def _presets(quick: bool) -> list[tuple[object, int, int]]:
    """(config, cocotb cycles, native cycles) per preset."""
    from gen.config import REPO_ROOT, config_from_dict, load_config

    def preset(name):
        return load_config(REPO_ROOT / "configs" / f"{name}.yaml")

    big = config_from_dict({"kind": "systolic_array", "name": "systolic_os_16x16_int8",
                            "rows": 16, "cols": 16, "max_k": 256})
    rows = [(preset("systolic_os_4x4_int8"), 20_000, 3_000_000),
            (big, 20_000, 600_000)]
    if quick:
        return [(cfg, c // 4, f // 4) for cfg, c, f in rows]
    rows += [(preset("systolic_ws_8x8_int8"), 10_000, 1_000_000),
             (preset("flattened_b4_m16_int8"), 10_000, 1_000_000),
             (preset("mxint_linear_w4_k8_mxint"), 10_000, 2_000_000),
             (preset("ternary_lut_int8_mu2_l4_k4"), 20_000, 2_000_000),
             (preset("float_add_fp16"), 20_000, 3_000_000)]
    return rows


#: Presets whose cocotb speed is also measured on an -O3 build of cocotb's simulator (the
#: regressions use -O0): how much of the gap is the unoptimised model.
COCOTB_O3 = ("systolic_os_16x16_int8",)

#: Every figure is the median of this many runs (the machine is shared and noisy).
REPEATS = 3


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _median(values):
    return float(np.median(values))


def _cocotb(cfg, design, inputs, opt: str | None) -> tuple[dict, list[str]]:
    """``REPEATS`` identical cases in one cocotb process, each against the native harness."""
    from gen.crosscheck import Case, differences, run_both

    pairs = run_both(cfg, design, [Case(inputs, "smooth")] * REPEATS, seed=1,
                     fast_harness="fast", fast_opt=OPT, cocotb_opt=opt)
    diffs = [d for fast, coc in pairs for d in differences(fast, coc)]
    runs = [coc for _fast, coc in pairs]
    cycles = runs[0].sim_cycles
    return {"cycles": cycles,
            "seconds": round(_median([r.wall_seconds for r in runs]), 3),
            "cpu_seconds": round(_median([r.meta["cpu_seconds"] for r in runs]), 3),
            "cycles_per_second": round(_median([cycles / r.wall_seconds for r in runs]), 1),
            "cycles_per_cpu_second": round(_median([cycles / r.meta["cpu_seconds"]
                                                    for r in runs]), 1),
            "build": f"{opt or 'O0'} (cocotb main + native harness; O0 is the regressions' own)",
            "identical_to_native": not diffs, "differences": diffs[:5],
            "output_beats": int(sum(len(w) for w in runs[0].words.values()))}, diffs


def _measure(cfg, cocotb_cycles: int, fast_cycles: int) -> dict:
    from cosim.fast import bare_loop, build, simulate
    from cosim.stimulus import random_inputs
    from gen.sim import design_for

    design = design_for(cfg)
    row: dict = {"config": cfg.name, "kind": cfg.kind, "repeats": REPEATS}
    start = time.monotonic()
    made = build(design, harness="fast", opt=OPT)
    row["native_build"] = {"opt": OPT, "seconds": round(time.monotonic() - start, 1),
                           "cached": made.cached}
    rng = np.random.default_rng(1)
    small = random_inputs(design.manifest, cocotb_cycles, rng)
    row["cocotb"], _diffs = _cocotb(cfg, design, small, None)
    if cfg.name in COCOTB_O3:
        row["cocotb_o3"], _diffs = _cocotb(cfg, design, small, "O3")
    big = random_inputs(design.manifest, fast_cycles, rng)
    natives, bares = [], []
    for _ in range(REPEATS):             # interleaved, so drift in machine load hits both
        cpu0, own0 = _children_cpu(), time.process_time()
        fast = simulate(design, big, harness="fast", opt=OPT)
        cpu = _children_cpu() - cpu0 + time.process_time() - own0
        natives.append((fast, cpu))
        bares.append(bare_loop(design, fast.sim_cycles, harness="fast", opt=OPT))
    cycles = natives[0][0].sim_cycles
    row["native"] = {
        "cycles": cycles,
        "seconds": round(_median([f.wall_seconds for f, _c in natives]), 3),
        "cpu_seconds": round(_median([c for _f, c in natives]), 3),
        "cycles_per_second": round(_median([f.cycles_per_second for f, _c in natives]), 1),
        "cycles_per_cpu_second": round(_median([cycles / c for _f, c in natives]), 1),
        "loop_cycles_per_second": round(_median([f.loop_cycles_per_second
                                                 for f, _c in natives]), 1),
        "loop_cycles_per_cpu_second": round(_median([cycles / f.loop_cpu_seconds
                                                     for f, _c in natives]), 1),
        "output_beats": int(sum(len(w) for w in natives[0][0].words.values()))}
    # How much of cocotb's time is the (-O0) model itself: the bare loop on cocotb's build.
    model = bare_loop(design, min(cycles, 20 * cocotb_cycles), harness="cocotb")
    coc = row["cocotb"]
    coc["model_alone_cycles_per_cpu_second"] = round(model["cycles_per_cpu_second"], 1)
    coc["model_share_of_cpu"] = round(coc["cycles_per_cpu_second"]
                                      / model["cycles_per_cpu_second"], 3)
    row["bare"] = {"cycles": bares[0]["cycles"],
                   "seconds": round(_median([b["seconds"] for b in bares]), 3),
                   "cycles_per_second": round(_median([b["cycles_per_second"] for b in bares]), 1),
                   "cycles_per_cpu_second": round(_median([b["cycles_per_cpu_second"]
                                                           for b in bares]), 1)}
    nat, bar = row["native"], row["bare"]
    row["speedup_vs_cocotb"] = round(nat["cycles_per_second"] / coc["cycles_per_second"], 1)
    row["speedup_vs_cocotb_cpu"] = round(nat["cycles_per_cpu_second"]
                                         / coc["cycles_per_cpu_second"], 1)
    if "cocotb_o3" in row:
        c3 = row["cocotb_o3"]
        row["speedup_vs_cocotb_o3"] = round(nat["cycles_per_second"] / c3["cycles_per_second"], 1)
        row["speedup_vs_cocotb_o3_cpu"] = round(nat["cycles_per_cpu_second"]
                                                / c3["cycles_per_cpu_second"], 1)
    row["bare_over_native"] = round(bar["cycles_per_second"] / nat["cycles_per_second"], 2)
    row["bare_over_native_cpu"] = round(bar["cycles_per_cpu_second"]
                                        / nat["cycles_per_cpu_second"], 2)
    row["identical"] = coc["identical_to_native"] and row.get("cocotb_o3", coc)[
        "identical_to_native"]
    return row


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["config"] for r in rows]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(11, 4.8))
    for i, (key, name) in enumerate((("cocotb", "cocotb (Python per beat)"),
                                     ("native", "native harness (end to end)"),
                                     ("bare", "bare C++ loop (no I/O)"))):
        vals = [r[key]["cycles_per_cpu_second"] for r in rows]
        ax.bar(xs + (i - 1) * 0.27, vals, 0.27, label=name)
    ax.set_yscale("log")
    ax.set_xticks(xs, labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("simulated cycles per CPU second")
    ax.set_title(f"Verilator simulation speed (native build -{OPT}, cocotb on the -O0 "
                 "regression build)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for cfg, cocotb_cycles, fast_cycles in _presets(quick):
        print(f"  {cfg.name}: building and running ...", flush=True)
        load = os.getloadavg()[0]
        row = _measure(cfg, cocotb_cycles, fast_cycles)
        row["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        rows.append(row)
        print(f"  {cfg.name:<32} cocotb {row['cocotb']['cycles_per_second']:>10,.0f}  native "
              f"{row['native']['cycles_per_second']:>12,.0f}  bare "
              f"{row['bare']['cycles_per_second']:>12,.0f} cycles/s   native/cocotb "
              f"{row['speedup_vs_cocotb']}x (CPU {row['speedup_vs_cocotb_cpu']}x)  bare/native "
              f"{row['bare_over_native']} (CPU {row['bare_over_native_cpu']})  identical: "
              f"{row['identical']}", flush=True)
        if "cocotb_o3" in row:
            print(f"  {'':<32} cocotb on an -O3 build {row['cocotb_o3']['cycles_per_second']:,.0f}"
                  f" cycles/s: native/cocotb {row['speedup_vs_cocotb_o3']}x (CPU "
                  f"{row['speedup_vs_cocotb_o3_cpu']}x)", flush=True)
    targets = {}
    by_name = {r["config"]: r for r in rows}
    if "systolic_os_16x16_int8" in by_name:
        r = by_name["systolic_os_16x16_int8"]
        targets["16x16: native >= 20x cocotb (regression build, -O0)"] = {
            "wall": r["speedup_vs_cocotb"], "cpu": r["speedup_vs_cocotb_cpu"],
            "met": min(r["speedup_vs_cocotb"], r["speedup_vs_cocotb_cpu"]) >= 20}
        if "speedup_vs_cocotb_o3" in r:
            targets["16x16: native >= 20x cocotb on an -O3 build"] = {
                "wall": r["speedup_vs_cocotb_o3"], "cpu": r["speedup_vs_cocotb_o3_cpu"],
                "met": min(r["speedup_vs_cocotb_o3"], r["speedup_vs_cocotb_o3_cpu"]) >= 20}
        targets["16x16: native within 2x of the bare loop"] = {
            "wall": r["bare_over_native"], "cpu": r["bare_over_native_cpu"],
            "met": max(r["bare_over_native"], r["bare_over_native_cpu"]) <= 2}
    if "systolic_os_4x4_int8" in by_name:
        r = by_name["systolic_os_4x4_int8"]["native"]
        targets["4x4: native >= 1 M cycles/s"] = {
            "wall": r["cycles_per_second"], "cpu": r["cycles_per_cpu_second"],
            "met": min(r["cycles_per_second"], r["cycles_per_cpu_second"]) >= 1e6}
    result = {"benchmark": "sim", "quick": quick, "native_opt": OPT,
              "load_average_at_end": [round(x, 2) for x in os.getloadavg()], "rows": rows,
              "targets": targets,
              "all_identical": all(r["identical"] for r in rows)}
    (out_dir / "sim.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(rows, out_dir / "sim.png")
    for name, t in targets.items():
        print(f"  target {name}: {t['wall']:,} (wall), {t['cpu']:,} (CPU): "
              f"{'met' if t['met'] else 'NOT met'}")
    if not result["all_identical"]:
        raise AssertionError("cocotb and the native harness disagree: see sim.json")
    return result
