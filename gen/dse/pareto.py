"""Pareto fronts of sweep records and their plots, shared by the engine and the kinds' own
``plot`` methods (so :mod:`gen.dse.kinds` needs nothing of the engine)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

__all__ = ["pareto_front", "plot_pareto"]


def pareto_front(records: Iterable[dict], *, x: str = "throughput",
                 y: str = "model_area") -> list[dict]:
    """Records no other record beats: none has >= x and < y (or > x and <= y)."""
    ordered = sorted(records, key=lambda r: (-r[x], r[y]))
    front, best = [], math.inf
    for record in ordered:
        if record[y] < best:
            front.append(record)
            best = record[y]
    return sorted(front, key=lambda r: r[x])


def plot_pareto(records: list[dict], out_dir: Path, *, prefix: str, spec) -> list[Path]:
    """One PNG per group: every point's y against its x, each series' Pareto front as a line;
    synthesized points (with a synthesized y) ringed in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = spec.pareto_x, spec.pareto_y
    xlabel, ylabel = spec.axis_labels()
    paths = []
    markers = "os^Dv<>p*h"
    for group in sorted({spec.group(r) for r in records}):
        subset = [r for r in records if spec.group(r) == group]
        fig, ax = plt.subplots(figsize=(6, 4.2))
        series = sorted({r.get(spec.series, "") for r in subset}, key=str) if spec.series \
            else [""]
        for n, s in enumerate(series):
            pts = [r for r in subset if not spec.series or r.get(spec.series) == s]
            color = f"C{n % 10}"
            ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=14, alpha=0.35, color=color,
                       marker=markers[n % len(markers)])
            front = pareto_front(pts, x=x, y=y)
            ax.plot([r[x] for r in front], [r[y] for r in front], color=color,
                    marker=markers[n % len(markers)],
                    label=f"{s} (Pareto front)" if s != "" else "Pareto front")
            synth = [r for r in pts if r.get("synthesized") and r.get("synth_" + y.split("_", 1)[-1])]
            if synth:
                ax.scatter([r[x] for r in synth], [r["synth_" + y.split("_", 1)[-1]] for r in synth],
                           s=40, facecolors="none", edgecolors="black")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{prefix}: {group}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{prefix}_pareto_{group}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
