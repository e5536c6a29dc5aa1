"""Size-estimate calibration: gen.estimate against real generation times and real synthesis.

For every preset in configs/ (``quick``: the smallest of each kind) this measures the generation
time (Amaranth elaboration + Verilog conversion, no cache) and, for presets small enough to
synthesize in about a minute, gen.synth's cells and area; it then prints the estimate next to
each and the fitted per-kind numbers (structural-area factor, GE per cell, cells per second of
generation) that gen.estimate.CALIBRATION holds. The README's systolic scaling points
(4x4 .. 16x16, output and weight stationary) and the MXInt dot-product areas of
docs/mx_accuracy.md enter the fit as documented measurements, named as such in the output.

    accelgen bench estimate [--quick]        -> build/bench/estimate.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

__all__ = ["run", "DOCUMENTED"]

#: Synthesis figures already published in README.md and docs/ (config, area GE, cells, source).
DOCUMENTED = [
    ({"kind": "systolic_array", "name": "sa_os_4x4", "rows": 4, "cols": 4}, 28991, 13273,
     "README systolic scaling"),
    ({"kind": "systolic_array", "name": "sa_os_8x8", "rows": 8, "cols": 8}, 117284, 53685,
     "README systolic scaling"),
    ({"kind": "systolic_array", "name": "sa_os_16x16", "rows": 16, "cols": 16}, 471701, 218892,
     "README systolic scaling"),
    ({"kind": "systolic_array", "name": "sa_ws_4x4", "rows": 4, "cols": 4,
      "dataflow": "weight_stationary", "max_k": 4}, 24370, 11443, "README systolic scaling"),
    ({"kind": "systolic_array", "name": "sa_ws_8x8", "rows": 8, "cols": 8,
      "dataflow": "weight_stationary", "max_k": 8}, 97609, 46632, "README systolic scaling"),
    ({"kind": "systolic_array", "name": "sa_ws_16x16", "rows": 16, "cols": 16,
      "dataflow": "weight_stationary", "max_k": 16}, 399063, 196407, "README systolic scaling"),
    ({"kind": "flattened_array", "name": "flat_synth_b4_m16", "blen": 4, "mlen": 16,
      "max_k": 64}, 103919, 50709, "docs/flattened.md"),
    ({"kind": "systolic_array", "name": "square_synth_8x8", "rows": 8, "cols": 8, "max_k": 64},
     111569, 51793, "docs/flattened.md"),
] + [
    ({"kind": "mxint_dot", "name": f"mx_accuracy_dot_w{w}_k{k}", "element_width": w,
      "block_size": k}, ge, cells, "docs/mx_accuracy.md")
    for w, k, ge, cells in [(8, 8, 6639, 4237), (8, 16, 13194, 8546), (8, 32, 26552, 17747),
                            (6, 8, 4100, 2486), (6, 16, 8181, 5253), (6, 32, 16311, 10764),
                            (4, 8, 2081, 1198), (4, 16, 4071, 2479), (4, 32, 8029, 5104)]
]

#: Presets synthesized by this bench: estimated cells at most this (a minute or two of Yosys).
SYNTH_LIMIT = {False: 25_000, True: 6_000}
#: The ternary kinds are validated by gen.cost_model's own bench (73 configs, ternary_dse).
NO_SYNTH_KINDS = ("ternary_lut",)


def run(out_dir: Path, quick: bool = False) -> dict:
    from gen.config import config_from_dict, load_config, preset_paths
    from gen.estimate import CALIBRATION, estimate, structural_area
    from gen.export import generate_verilog
    from gen.export import synthesize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = [load_config(p) for p in preset_paths()]
    if quick:
        smallest = {}
        for cfg in configs:
            cells = estimate(cfg).cells
            if cfg.kind not in smallest or cells < smallest[cfg.kind][0]:
                smallest[cfg.kind] = (cells, cfg)
        configs = [c for _n, c in sorted(smallest.values(), key=lambda item: item[1].name)]
    rows = []
    for cfg in configs:
        est = estimate(cfg)
        start = time.monotonic()
        generate_verilog(cfg, use_cache=False)
        seconds = time.monotonic() - start
        row = {"config": cfg.name, "kind": cfg.kind, "source": "preset (measured here)",
               "structural_ge": round(structural_area(cfg)), "estimate": est.to_dict(),
               "generate_seconds": round(seconds, 2), "synth": None}
        if cfg.kind not in NO_SYNTH_KINDS and est.cells <= SYNTH_LIMIT[quick]:
            report = synthesize(cfg)
            row["synth"] = {"cells": report.cells, "area": report.area,
                            "seconds": report.seconds}
        rows.append(row)
        print(_line(row), flush=True)
    for data, area, cells, source in ([] if quick else DOCUMENTED):
        cfg = config_from_dict(data)
        row = {"config": cfg.name, "kind": cfg.kind, "source": source,
               "structural_ge": round(structural_area(cfg)), "estimate": estimate(cfg).to_dict(),
               "generate_seconds": None, "synth": {"cells": cells, "area": area}}
        rows.append(row)
        print(_line(row), flush=True)
    fit = _fit(rows, CALIBRATION)
    result = {"benchmark": "estimate", "quick": quick, "rows": rows, "fit": fit,
              "calibration_in_use": {k: list(v) for k, v in CALIBRATION.items()}}
    (out_dir / "estimate.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print("\nper kind: area factor (synth / structural), GE per cell, cells per second; "
          "in use -> fitted")
    for kind, f in sorted(fit.items()):
        used = CALIBRATION.get(kind)
        print(f"  {kind:<18} " + "  ".join(
            f"{name} {used[i] if used else '-'} -> {f[name] if f[name] is not None else '-'}"
            for i, name in enumerate(("area_factor", "ge_per_cell", "cells_per_second")))
            + f"  (n synth {f['n_synth']}, n gen {f['n_gen']}, worst cells error "
              f"{f['worst_cells_error']})")
    return result


def _line(row: dict) -> str:
    est = row["estimate"]
    synth = row["synth"]
    text = f"{row['config']:<34} est {est['cells']:>8} cells {est['seconds']:>6.1f} s"
    if synth:
        text += f" | synth {synth['cells']:>8} cells ({est['cells'] / synth['cells']:.2f}x)"
    if row["generate_seconds"] is not None:
        text += f" | generated in {row['generate_seconds']:.1f} s"
    return text + f"  [{row['source']}]"


def _fit(rows: list[dict], calibration: dict) -> dict:
    """Median ratios per kind (medians: one odd config must not move a whole kind)."""
    from gen.estimate import _BASE_SECONDS

    out = {}
    for kind in sorted({r["kind"] for r in rows}):
        mine = [r for r in rows if r["kind"] == kind]
        synth = [r for r in mine if r["synth"]]
        gen = [r for r in mine if r["generate_seconds"] is not None]
        factor = ge_cell = rate = None
        if synth:
            factor = round(statistics.median(r["synth"]["area"] / r["structural_ge"]
                                             for r in synth), 3)
            ge_cell = round(statistics.median(r["synth"]["area"] / r["synth"]["cells"]
                                              for r in synth), 3)
        if gen:
            rate = round(statistics.median(
                r["estimate"]["cells"] / max(0.05, r["generate_seconds"] - _BASE_SECONDS)
                for r in gen), 0)
        errors = [r["estimate"]["cells"] / r["synth"]["cells"] for r in synth]
        worst = max(errors, key=lambda e: max(e, 1 / e)) if errors else None
        out[kind] = {"area_factor": factor, "ge_per_cell": ge_cell, "cells_per_second": rate,
                     "n_synth": len(synth), "n_gen": len(gen),
                     "worst_cells_error": round(worst, 2) if worst else None}
    return out


if __name__ == "__main__":
    run(Path(sys.argv[1] if len(sys.argv) > 1 else "build/bench"), quick="--quick" in sys.argv)
