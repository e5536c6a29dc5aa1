"""Sweeps of the GEMM arrays (kinds ``systolic_array`` and ``flattened_array``) over size,
dataflow and operand types, on a workload of GEMM shapes.

A design point's cycles on the workload come from the array's cycle model (the one the cocotb
``cycle_model`` tests hold equal to the RTL, job by job: ``software_model.systolic`` and
``software_model.flattened``); its area from the calibrated size model (``gen.estimate``) and, where
the sweep asks, from synthesis (``gen.synth``), with the model's error against it. With
``multipliers`` the sweep compares designs of equal multiplier count: the systolic array's
``cols`` (``multipliers / rows``) or the flattened array's ``mlen`` (``multipliers / blen``) is
derived, the way the ternary sweep derives L from an equal throughput.

A reduction longer than an array's ``max_k`` is cut into ``max_k`` chunks run back to back; their
partial sums are added outside the array, which these cycles do not charge.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from gen.dse.engine import DesignPoint, matches_filters, synthesize_cached
from gen.dse.kinds import DseKind
from gen.dse.sweep import MAX_LIST, positive_int_list
from gen.schema import ConfigBase, ConfigError, param

__all__ = ["ArraySweepOptions", "SystolicDse", "FlattenedDse", "parse_gemms", "DEFAULT_GEMMS"]

#: MiniLM-L6 shapes (hidden 384, FFN 1536): decode (one token), a short batch, a prefill.
DEFAULT_GEMMS = ("1x384x384", "8x384x1536", "8x1536x384", "64x384x384")
_GEMM_LIMIT = 1 << 20


def parse_gemms(raw) -> tuple[str, ...]:
    """``parse=`` for the workload: a list of ``MxKxN`` strings (or [M, K, N] triples)."""
    allowed = (f"a non-empty list of at most {MAX_LIST} GEMM shapes 'MxKxN' (each 1 .. "
               f"{_GEMM_LIMIT:,}), e.g. ['1x384x384', '64x384x1536']")
    items = raw if isinstance(raw, (list, tuple)) else [raw]
    if not items or len(items) > MAX_LIST:
        raise ValueError(allowed)
    out = []
    for item in items:
        if isinstance(item, (list, tuple)) and len(item) == 3:
            dims = item
        elif isinstance(item, str) and re.fullmatch(r"\s*\d+\s*x\s*\d+\s*x\s*\d+\s*", item):
            dims = [int(v) for v in item.split("x")]
        else:
            raise ValueError(allowed)
        if any(not isinstance(d, int) or isinstance(d, bool) or not 1 <= d <= _GEMM_LIMIT
               for d in dims):
            raise ValueError(allowed)
        out.append("x".join(str(d) for d in dims))
    return tuple(out)


_multipliers = positive_int_list(1 << 20)


@dataclass(frozen=True)
class ArraySweepOptions(ConfigBase):
    """The array sweeps' own keys."""
    gemms: tuple = param("Workload: GEMM shapes 'MxKxN' (cycles are summed over them)",
                         default=DEFAULT_GEMMS, parse=parse_gemms)
    multipliers: Optional[tuple] = param(
        "Multiplier budgets: derive cols (systolic_array) or mlen (flattened_array) so every "
        "point at one budget has that many multipliers", default=None, parse=_multipliers,
        allowed=_multipliers.allowed)


CSV_COLUMNS = ["name", "kind", "rows", "cols", "blen", "mlen", "dataflow", "a_type", "b_type",
               "multipliers", "cycles", "macs", "utilization", "effective_throughput",
               "model_area", "synthesized", "synth_area", "model_error", "key"]


def _gemm_dims(text: str) -> tuple[int, int, int]:
    m, k, n = (int(v) for v in text.split("x"))
    return m, k, n


@functools.lru_cache(maxsize=None)
def _digest() -> str:
    root = Path(__file__).parents[2]
    text = b"".join((root / p).read_bytes() for p in (
        "gen/estimate.py", "software_model/systolic.py", "software_model/flattened.py",
        "software_model/memory.py", "gen/cycles.py", "gen/dse/arrays.py"))
    return hashlib.sha256(text).hexdigest()[:16]


class _ArrayDse(DseKind):
    options = ArraySweepOptions
    point_keys = ("multipliers",)
    csv_columns = CSV_COLUMNS
    pareto_x, pareto_y = "effective_throughput", "model_area"
    budget_key: ClassVar[str] = ""      # the config key derived from a multiplier budget
    lane_key: ClassVar[str] = ""        # the config key it is divided by

    def combinations(self, options) -> int:
        return len(options.multipliers or (None,))

    def model_digest(self) -> str:
        return _digest()

    def axis_labels(self):
        return ("sustained MACs per cycle on the workload (cycle model)",
                "area (NAND2 equivalents, size model)")

    def group(self, record):
        return f"{record['a_type']}x{record['b_type']}"

    def expand(self, sweep):
        from gen.config import config_from_dict

        options = sweep.options
        keys = list(sweep.axes)
        points: dict[str, DesignPoint] = {}
        skipped = []
        for budget, values in itertools.product(
                options.multipliers or (None,), itertools.product(*(sweep.axes[k] for k in keys))):
            config = {"kind": sweep.kind, **sweep.fixed, **dict(zip(keys, values))}
            where = {"multipliers": budget, **dict(zip(keys, values))}
            if budget is not None:
                defaults = config_from_dict({"kind": sweep.kind}).to_dict()
                lanes = config.get(self.lane_key, defaults[self.lane_key])
                per, rem = divmod(budget, lanes)
                if rem or per < 1:
                    skipped.append({**where, "reason": f"{budget} multipliers is not a multiple "
                                                       f"of {self.lane_key} = {lanes}"})
                    continue
                config[self.budget_key] = per
            self.complete(config, sweep)
            try:
                full = config_from_dict(config, source="<point>")
            except ConfigError as exc:
                skipped.append({**where, "reason": "; ".join(p.render("config")
                                                             for p in exc.problems)})
                continue
            data = full.to_dict()
            data["name"] = self.point_name(full)
            flat = {**data, "multipliers": self.multipliers(full)}
            point = DesignPoint(config=data, values={"gemms": list(options.gemms)},
                                synthesize=matches_filters(sweep.synthesize, flat))
            points.setdefault(point.key, point)
        return list(points.values()), skipped

    def complete(self, config: dict, sweep) -> None:
        """Fill keys a point needs that follow from the others (nothing by default)."""

    def evaluate(self, p, synth_cache):
        from gen.config import config_from_dict
        from gen.estimate import estimate

        config = config_from_dict(p.config, source=p.config["name"])
        size = estimate(config)
        per_gemm = []
        for shape in p.gemms:
            m, k, n = _gemm_dims(shape)
            cycles = self.gemm_cycles(config, m, k, n)
            per_gemm.append({"gemm": shape, "cycles": cycles,
                             "utilization": round(m * k * n / (cycles * self.multipliers(config)),
                                                  5)})
        cycles = sum(g["cycles"] for g in per_gemm)
        macs = sum(math.prod(_gemm_dims(s)) for s in p.gemms)
        record = {
            "key": p.key, "name": p.config["name"], "kind": config.kind,
            **self.shape(config), "a_type": f"int{config.a_width}",
            "b_type": f"int{config.b_width}", "multipliers": self.multipliers(config),
            "cycles": cycles, "macs": macs,
            "utilization": round(macs / (cycles * self.multipliers(config)), 5),
            "effective_throughput": round(macs / cycles, 4), "per_gemm": per_gemm,
            "model_area": round(size.area_ge, 1), "model_cells": size.cells,
            "synthesized": False, "synth_area": None, "model_error": None, "config": p.config,
        }
        if p.synthesize:
            report = synthesize_cached(config, Path(synth_cache) if synth_cache else None)
            record.update(synthesized=True, synth_area=report["area"],
                          synth_cells=report["cells"], synth_longest_path=report["longest_path"],
                          synth_seconds=report["seconds"],
                          model_error=round(size.area_ge / report["area"] - 1.0, 5))
        return record

    def summarize(self, records):
        """Per multiplier count and operand types: the design with the fewest cycles on the
        workload, and the smallest one."""
        groups: dict[tuple, list[dict]] = {}
        for r in records:
            groups.setdefault((r["multipliers"], r["a_type"], r["b_type"]), []).append(r)
        rows = []
        for (mults, a, b), rs in sorted(groups.items()):
            fastest = min(rs, key=lambda r: (r["cycles"], r["model_area"]))
            smallest = min(rs, key=lambda r: (r["model_area"], r["cycles"]))
            rows.append({"multipliers": mults, "a_type": a, "b_type": b,
                         "fastest": fastest["name"], "fastest_cycles": fastest["cycles"],
                         "fastest_utilization": fastest["utilization"],
                         "smallest": smallest["name"], "smallest_area": smallest["model_area"],
                         "points": len(rs)})
        return rows

    def format_table(self, rows):
        lines = [f"{'mults':>6} {'types':>10} {'fastest':>34} {'cycles':>10} {'util':>6} "
                 f"{'smallest':>34} {'area':>10}"]
        for r in rows:
            lines.append(f"{r['multipliers']:>6} {r['a_type'] + 'x' + r['b_type']:>10} "
                         f"{r['fastest']:>34} {r['fastest_cycles']:>10} "
                         f"{r['fastest_utilization']:>6.3f} {r['smallest']:>34} "
                         f"{r['smallest_area']:>10.0f}")
        return "\n".join(lines)


class SystolicDse(_ArrayDse):
    kind = "systolic_array"
    derived_keys = ()
    derived_help = ("cols = multipliers / rows when 'multipliers' is given; weight-stationary "
                    "max_k capped at rows")
    series = "dataflow"
    budget_key, lane_key = "cols", "rows"
    format_help = """\
  kind: systolic_array
  gemms: [1x384x384, 64x384x1536]   workload (default: MiniLM-L6 decode/prefill shapes)
  multipliers: [64, 256]            optional: cols = multipliers / rows (equal multipliers)
  fixed: {max_k: 4096}
  axes: {rows: [4, 8, 16], dataflow: [output_stationary, weight_stationary], a_type: [int8]}
"""

    @staticmethod
    def multipliers(config) -> int:
        return config.rows * config.cols

    def complete(self, config, sweep):
        # A weight-stationary job holds one K x cols tile of B, at most rows long (longer
        # reductions are tiled): a max_k meant for the output-stationary points is capped there.
        if config.get("dataflow") == "weight_stationary":
            config["max_k"] = min(config.get("max_k", 1 << 20), config.get("rows", 4))

    @staticmethod
    def shape(config) -> dict:
        return {"rows": config.rows, "cols": config.cols, "dataflow": config.dataflow}

    @staticmethod
    def point_name(config) -> str:
        flow = "os" if config.dataflow == "output_stationary" else "ws"
        return f"sys_{flow}_{config.rows}x{config.cols}_int{config.a_width}_int{config.b_width}"

    @staticmethod
    def gemm_cycles(config, m, k, n) -> int:
        from gen.cycles import systolic_cycles
        return systolic_cycles(config, m, k, n, scalesim=False)["model"]["cycles"]


class FlattenedDse(_ArrayDse):
    kind = "flattened_array"
    derived_keys = ()
    derived_help = "mlen = multipliers / blen when 'multipliers' is given"
    series = "blen"
    budget_key, lane_key = "mlen", "blen"
    format_help = """\
  kind: flattened_array
  gemms: [1x384x384, 64x384x1536]   workload (default: MiniLM-L6 decode/prefill shapes)
  multipliers: [64, 256]            optional: mlen = multipliers / blen (equal multipliers)
  fixed: {max_k: 4096}
  axes: {blen: [2, 4, 8], a_type: [int8], b_type: [int4, int8]}
"""

    @staticmethod
    def multipliers(config) -> int:
        return config.multipliers

    @staticmethod
    def shape(config) -> dict:
        return {"blen": config.blen, "mlen": config.mlen, "dataflow": "flattened"}

    @staticmethod
    def point_name(config) -> str:
        return f"flat_b{config.blen}_m{config.mlen}_int{config.a_width}_int{config.b_width}"

    @staticmethod
    def gemm_cycles(config, m, k, n) -> int:
        from gen.cycles import flattened_cycles
        return flattened_cycles(config, m, k, n, scalesim=False)["model"]["cycles"]
