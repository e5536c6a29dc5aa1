"""Ternary units at equal throughput: Yosys area (NAND2 equivalents) of the LUT unit (mirrored and
full tables) against the add/subtract and multiplier baselines, per activation type.

    python -m gen.bench.ternary [out_dir] [--quick]

Every design consumes L*mu activations and serves K lanes per cycle, so area ratios are ratios
at equal throughput. Reports are cached by Verilog hash under build/synth/.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["run"]

# (activation, mu, L, K): one point per activation type; quick keeps the small ones.
POINTS = [("int8", 3, 2, 8), ("fp16", 3, 1, 8), ("bf16", 3, 1, 8)]
QUICK_POINTS = [("int8", 3, 2, 4), ("fp16", 3, 1, 4)]
VARIANTS = [("lut", True), ("lut", False), ("addsub", True), ("multiplier", True)]


def _config(activation, mu, lanes_l, lanes_k, architecture, mirrored):
    from gen.config import config_from_dict
    name = (f"bench_ternary_{architecture}{'' if mirrored else '_full'}_{activation}"
            f"_mu{mu}_l{lanes_l}_k{lanes_k}")
    return config_from_dict({"kind": "ternary_lut", "name": name, "architecture": architecture,
                             "mu": mu, "lanes_l": lanes_l, "lanes_k": lanes_k,
                             "activation": activation, "mirrored": mirrored,
                             "max_reduction": 4096})


def run(out_dir: Path, quick: bool = False) -> dict:
    from gen.export import synthesize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for activation, mu, lanes_l, lanes_k in (QUICK_POINTS if quick else POINTS):
        reports = {}
        for architecture, mirrored in VARIANTS:
            cfg = _config(activation, mu, lanes_l, lanes_k, architecture, mirrored)
            report = synthesize(cfg)
            key = architecture + ("" if mirrored else "_full")
            reports[key] = report
            rows.append({"activation": activation, "mu": mu, "lanes_l": lanes_l,
                         "lanes_k": lanes_k, "variant": key, "area_ge": report.area,
                         "logic_ge": report.logic_area, "flop_ge": report.flop_area,
                         "flops": report.flops, "longest_path": report.longest_path,
                         "synth_seconds": report.seconds})
        base = reports["multiplier"].area
        for row in rows[-len(VARIANTS):]:
            row["multiplier_over_this"] = round(base / row["area_ge"], 3)
    result = {"points": rows, "quick": quick}
    (out_dir / "ternary.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    _plot(rows, out_dir / "ternary.png")
    print(f"{'act':5} {'mu':>2} {'L':>2} {'K':>2} {'variant':11} {'area GE':>10} {'flops':>6} "
          f"{'depth':>5} {'mult/this':>9}")
    for r in rows:
        print(f"{r['activation']:5} {r['mu']:>2} {r['lanes_l']:>2} {r['lanes_k']:>2} "
              f"{r['variant']:11} {r['area_ge']:>10.0f} {r['flops']:>6} {r['longest_path']:>5} "
              f"{r['multiplier_over_this']:>9.2f}")
    return result


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({(r["activation"], r["mu"], r["lanes_l"], r["lanes_k"]) for r in rows},
                    key=lambda t: [p[:4] for p in (POINTS + QUICK_POINTS)].index(t)
                    if t in (POINTS + QUICK_POINTS) else 0)
    variants = [v + ("" if m else "_full") for v, m in VARIANTS]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(variants)
    for i, variant in enumerate(variants):
        values = [next(r["area_ge"] for r in rows if (r["activation"], r["mu"], r["lanes_l"],
                                                      r["lanes_k"]) == lab and r["variant"] == variant)
                  for lab in labels]
        ax.bar([j + i * width for j in range(len(labels))], values, width, label=variant)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(labels))])
    ax.set_xticklabels([f"{a} mu{m} L{l} K{k}" for a, m, l, k in labels])
    ax.set_ylabel("area (NAND2 eq.)")
    ax.set_title("Ternary units at equal throughput (Yosys)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
