"""The per-kind interface of the sweep engine.

A kind that can be swept provides a :class:`DseKind`: its sweep options (a ConfigBase dataclass,
validated like a config), how a sweep expands into design points (which config keys it derives,
e.g. the ternary unit's L from an equal throughput, or an array's columns from a multiplier
budget), how one point is evaluated (a cost model and a cycle model, and synthesis when asked),
and how records are compared, tabulated and plotted. The engine (:mod:`gen.dse.engine`) does the
rest for every kind: execution in local processes or on Dask, the resumable results log, the
progress bar, Pareto fronts and output files.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

from gen.registry import KINDS

__all__ = ["DseKind", "DSE_KINDS", "dse_kind"]

#: kind -> "module:Class" of its DseKind (the registry's ``dse`` entries), imported on first use.
DSE_KINDS: dict[str, str] = {name: record.dse for name, record in KINDS.items() if record.dse}

_cache: dict[str, "DseKind"] = {}


def dse_kind(kind: str) -> "DseKind":
    if kind not in _cache:
        module, _, name = DSE_KINDS[kind].partition(":")
        _cache[kind] = getattr(importlib.import_module(module), name)()
    return _cache[kind]


class DseKind:
    """What the engine needs to know about one kind. Subclasses set the class attributes and
    implement the methods."""

    kind: ClassVar[str] = ""
    options: ClassVar[type] = None          # ConfigBase dataclass of the kind's sweep keys
    derived_keys: ClassVar[tuple[str, ...]] = ()
    derived_help: ClassVar[str] = ""
    point_keys: ClassVar[tuple[str, ...]] = ()  # keys a synthesize filter may use besides config keys
    csv_columns: ClassVar[list[str]] = []
    #: the Pareto plot: x (bigger is better), y (smaller is better), series key, labels
    pareto_x: ClassVar[str] = "throughput"
    pareto_y: ClassVar[str] = "model_area"
    series: ClassVar[str] = ""
    format_help: ClassVar[str] = ""

    def combinations(self, options) -> int:
        """How many combinations the options multiply the axes by (for the size limit)."""
        return 1

    def expand(self, sweep) -> tuple[list, list[dict]]:
        """(design points, skipped combinations each with its reason)."""
        raise NotImplementedError

    def evaluate(self, point, synth_cache: str | None) -> dict:
        """One flat record for one design point; runs in a worker process."""
        raise NotImplementedError

    def model_digest(self) -> str:
        """Changes whenever the models behind a record change (the resume log is keyed by it)."""
        return ""

    def summarize(self, records: list[dict]) -> dict:
        """Kind-specific comparisons for results.json (e.g. area ratios at equal throughput)."""
        return {}

    def format_table(self, summary: dict) -> str:
        return ""

    def group(self, record: dict) -> str:
        """Records are plotted in one Pareto figure per group."""
        return "all"

    def plot(self, records: list[dict], out_dir: Path, prefix: str) -> list[Path]:
        from gen.dse.pareto import plot_pareto
        return plot_pareto(records, out_dir, prefix=prefix, spec=self)

    def axis_labels(self) -> tuple[str, str]:
        return self.pareto_x, self.pareto_y

    def describe_point(self, record: dict) -> Any:
        return record.get("name")
