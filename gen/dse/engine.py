"""The sweep engine, the same for every kind: design points, execution (local processes or a Dask
scheduler), the resumable results log, progress, Pareto fronts and output files.

Every finished point is appended to ``results.jsonl`` in the output folder as soon as it
finishes; a rerun reads that log and only evaluates what is missing, so an interrupted sweep
resumes where it stopped. At the end the folder holds ``results.csv``, ``results.json`` (points,
the kind's comparisons, Pareto fronts, model-vs-synthesis validation) and Pareto plots.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gen.dse.kinds import dse_kind
from gen.dse.pareto import pareto_front, plot_pareto
from gen.dse.sweep import Sweep
from gen.schema import canonical_json

__all__ = ["DesignPoint", "ProgressBar", "SweepResult", "run_sweep", "expand_points",
           "evaluate_point", "pareto_front", "write_outputs", "plot_pareto", "synthesize_cached",
           "matches_filters", "RESULT_VERSION"]

#: Bump when the meaning of a stored result changes, so old results.jsonl lines are redone.
RESULT_VERSION = 2


@dataclass(frozen=True)
class DesignPoint:
    """One design point: a config mapping (kind included) plus the kind's point values (e.g. the
    ternary sweep's throughput and tiles, an array sweep's workload). ``point.<name>`` reads a
    point value."""
    config: dict
    values: dict
    synthesize: bool

    def __getattr__(self, name: str):
        values = self.__dict__.get("values")
        if values is not None and name in values:
            return values[name]
        raise AttributeError(name)

    @property
    def key(self) -> str:
        """Identity of the result: what the resume log is keyed by. It covers the kind's model
        digest, so a changed model re-evaluates (synthesis stays cached)."""
        text = canonical_json({"v": RESULT_VERSION,
                               "model": dse_kind(self.config["kind"]).model_digest(),
                               "config": self.config, "values": self.values,
                               "synthesize": self.synthesize})
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_dict(self) -> dict:
        return {"config": self.config, "values": self.values, "synthesize": self.synthesize}

    @classmethod
    def from_dict(cls, data: dict) -> "DesignPoint":
        return cls(**data)


def matches_filters(filters, flat: dict) -> bool:
    """Does a point (its config and values, flattened) match a sweep's ``synthesize`` choice?"""
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
    """The sweep's design points (deduplicated, in a stable order) and the skipped combinations,
    each with its reason."""
    return dse_kind(sweep.kind).expand(sweep)


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
    from gen.export import synthesize
    report = synthesize(config).to_dict()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(report, sort_keys=True, indent=1) + "\n")
    tmp.replace(path)
    return report


def evaluate_point(point: dict, synth_cache: str | None = None) -> dict:
    """Evaluate one design point (a :meth:`DesignPoint.to_dict`) with its kind's models."""
    p = DesignPoint.from_dict(point)
    start = time.monotonic()
    record = dse_kind(p.config["kind"]).evaluate(p, synth_cache)
    record.setdefault("key", p.key)
    record.setdefault("config", p.config)
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
        sweep = sweep.replace(synthesize=synthesize)
    spec = dse_kind(sweep.kind)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "results.jsonl"
    if restart and log_path.exists():
        log_path.unlink()
    points, skipped = expand_points(sweep)
    spec.model_digest()       # calibrate (or load the calibration) once, not in every worker
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
                errors.append({"key": point.key, "name": point.config.get("name"),
                               "error": error})
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


def write_outputs(result: SweepResult, *, plots: bool = True) -> dict:
    spec = dse_kind(result.sweep.kind)
    out = result.out_dir
    records = result.records
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=spec.csv_columns, extrasaction="ignore")
        writer.writeheader()
        for r in records:
            writer.writerow(r)
    fronts = {}
    for group in sorted({spec.group(r) for r in records}):
        subset = [r for r in records if spec.group(r) == group]
        series = sorted({r.get(spec.series, "") for r in subset}, key=str) if spec.series \
            else [""]
        fronts[group] = {str(s): [r["name"] for r in pareto_front(
            [r for r in subset if not spec.series or r.get(spec.series) == s],
            x=spec.pareto_x, y=spec.pareto_y)] for s in series}
    synthesized = [r for r in records if r.get("synthesized")]
    errors = [abs(r["model_error"]) for r in synthesized if r.get("model_error") is not None]
    summary = {
        "sweep": result.sweep.name, "kind": result.sweep.kind, "source": result.sweep.source,
        "description": result.sweep.description,
        "points": len(records), "resumed": result.resumed, "evaluated": result.evaluated,
        "skipped": result.skipped, "errors": result.errors,
        "comparisons": spec.summarize(records), "pareto": fronts,
        "validation": {"synthesized": len(synthesized),
                       "mean_abs_error": round(sum(errors) / len(errors), 5) if errors else None,
                       "max_abs_error": round(max(errors), 5) if errors else None},
        "records": records,
    }
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    tmp.replace(out / "results.json")
    if plots and records:
        summary["plots"] = [str(p) for p in spec.plot(records, out, result.sweep.name)]
    return summary
