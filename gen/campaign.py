"""Random-config co-simulation campaigns: test the space of configs, not only the presets.

``accelgen campaign --kind K --count N --seed S`` draws N random *valid* configs of each kind K
(:mod:`gen.random_configs`: every field drawn from its schema, narrowed to small designs), keeps
those whose size estimate is at most ``--max-cells`` (so a campaign of hundreds stays affordable
on a laptop), builds each with Verilator and runs the kind's random-stimulus cocotb test on it
(:data:`RANDOM_TESTS`), every output compared bit for bit with the golden model. It prints one
progress line per config and writes ``OUT/summary.json``: per config its seed and index, the
config itself (also saved as ``OUT/configs/<name>.yaml``), pass/fail, how many results were
checked, and for a failure the error and the one-line command that reproduces it.

tests/test_random_cosim.py runs three small configs of every block kind and two of the
accelerator on every ``make test`` (fresh seed, printed in pytest's header).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from gen.schema import ConfigBase

__all__ = ["RANDOM_TESTS", "SKIPPED_KINDS", "KIND_MAX_CELLS", "campaign_kinds", "default_max_cells",
           "draw_configs", "random_test_filter", "run_config", "run_campaign", "main_campaign"]

#: Per kind: the cocotb test of its testbench that drives random stimulus (with its corner cases).
#: Parametrized tests (one per traffic profile) run in all their variants.
RANDOM_TESTS: dict[str, str] = {
    "systolic_array": "random_jobs",
    "flattened_array": "gemm_mode",
    "mxint_cast": "random_and_corner_blocks",
    "mxint_dot": "random_and_corner_blocks",
    "mxint_accumulator": "random_and_corner_sums",
    "mxint_linear": "random_and_corner_tiles",
    "mxint_softmax": "random_and_corner_rows",
    "mxint_layernorm": "random_and_corner_rows",
    "mxint_gelu": "random_and_corner_blocks",
    "ternary_lut": "random_jobs",
    "float_add": "random_operands",
    # whole random legal programs (GEMM, GEMV, attention, LayerNorm, DMA) on a random config
    "accelerator": "random_programs",
}

#: Kinds with a testbench that a campaign does not cover, and why.
SKIPPED_KINDS: dict[str, str] = {}

DEFAULT_MAX_CELLS = 40_000
#: Kinds whose smallest valid configs are far above DEFAULT_MAX_CELLS: their own default budget.
#: The smallest random accelerators (a 1x1 matrix unit, 256-word scratchpad) are 150-400 k cells,
#: the fixed cost of the vector unit's softmax, LayerNorm and GELU; 250 k keeps a build near a
#: minute on one core.
KIND_MAX_CELLS: dict[str, int] = {"accelerator": 250_000}


def default_max_cells(kind: str) -> int:
    """The cell budget of ``kind``'s random configs when none is given."""
    return KIND_MAX_CELLS.get(kind, DEFAULT_MAX_CELLS)
_MAX_DRAWS = 200


def campaign_kinds() -> list[str]:
    """Every registry kind with a cocotb testbench, except :data:`SKIPPED_KINDS`."""
    from gen.registry import KINDS
    return [name for name, record in KINDS.items()
            if record.testbench and name not in SKIPPED_KINDS]


def random_test_filter(kind: str) -> str:
    """cocotb ``COCOTB_TEST_FILTER`` regex selecting the kind's random test and its parametrized
    variants (``random_jobs/profile=mild`` ...), nothing else."""
    import re
    return rf"\.{re.escape(RANDOM_TESTS[kind])}(/.*)?$"


def _cells(config: ConfigBase) -> int | None:
    from gen.estimate import estimate
    est = estimate(config)
    return int(est.cells) if est is not None else None


@dataclass
class Drawn:
    config: ConfigBase
    index: int          # n in random_<kind>_<seed>_<n>
    cells: int | None
    draws: int          # configs drawn to find this one (the rest were over the cell budget)
    within_budget: bool = True   # False: no draw met max_cells; the smallest one was kept


def draw_configs(kind: str, count: int, seed: int,
                 max_cells: int | None = None) -> list[Drawn]:
    """``count`` random valid configs of ``kind`` whose size estimate is at most ``max_cells``
    (None: the kind's :func:`default_max_cells`).

    Deterministic in (kind, count's prefix, seed, max_cells): config n of a campaign is the same
    whatever ``count`` is. Configs over the budget are drawn again (up to 200 times; then the
    smallest of those draws is kept, so every kind gets its configs)."""
    from gen.random_configs import random_config

    if max_cells is None:
        max_cells = default_max_cells(kind)
    rng = np.random.default_rng([seed, sum(map(ord, kind))])
    out = []
    for n in range(count):
        name = f"random_{kind}_{seed}_{n}"
        best = None
        for attempt in range(1, _MAX_DRAWS + 1):
            config = random_config(kind, rng, name=name)
            cells = _cells(config)
            if cells is None or cells <= max_cells:
                best = Drawn(config, n, cells, attempt)
                break
            if best is None or cells < best.cells:
                best = Drawn(config, n, cells, attempt, within_budget=False)
        out.append(best)
    return out


def config_yaml(config: ConfigBase) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def run_config(config: ConfigBase | Path, *, seed: int, samples: int | None,
               waves_on_failure: bool = True):
    """Co-simulate one config's random test. Returns ``(CosimResult | None, error text | None)``."""
    from gen.cosim_run import CosimFailure, run_cosim
    from gen.config import load_config

    kind = config.kind if isinstance(config, ConfigBase) else load_config(config).kind
    try:
        result = run_cosim(config, seed=seed, samples=samples,
                           env={"COCOTB_TEST_FILTER": random_test_filter(kind)},
                           rerun_with_waves=waves_on_failure)
    except CosimFailure as exc:
        return None, str(exc)
    if not result.tests:
        return result, f"no cocotb test matched {RANDOM_TESTS[kind]!r}"
    if result.checked <= 0:
        return result, "the random test checked no results"
    return result, None


def _repro_line(error: str) -> str | None:
    for line in error.splitlines():
        if line.startswith("Reproduce with: "):
            return line[len("Reproduce with: "):]
    return None


def run_campaign(kinds: list[str], count: int, seed: int, out: Path, *, samples: int | None = None,
                 max_cells: int | None = None, waves_on_failure: bool = True,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Draw and co-simulate ``count`` configs per kind; write ``out/summary.json``; return it.
    ``max_cells``: one budget for every kind, or None for each kind's :func:`default_max_cells`."""
    say = progress or (lambda text: None)
    out.mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    command = (f"accelgen campaign {' '.join(f'--kind {k}' for k in kinds)} --count {count} "
               f"--seed {seed}" + (f" --max-cells {max_cells}" if max_cells is not None else "")
               + (f" --samples {samples}" if samples is not None else "") + f" --out {out}")
    summary = {"command": command, "seed": seed, "count": count, "kinds": kinds,
               "samples": samples,
               "max_cells": {k: max_cells or default_max_cells(k) for k in kinds},
               "complete": False, "results": []}
    plan = [(kind, drawn) for kind in kinds for drawn in draw_configs(kind, count, seed, max_cells)]
    started = time.monotonic()
    for position, (kind, drawn) in enumerate(plan, 1):
        config = drawn.config
        path = out / "configs" / f"{config.name}.yaml"
        path.write_text(config_yaml(config))
        t0 = time.monotonic()
        try:
            result, error = run_config(path, seed=seed, samples=samples,
                                       waves_on_failure=waves_on_failure)
        except Exception as exc:        # generation or harness error: a failure of this config
            result, error = None, f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - t0
        entry = {
            "kind": kind, "name": config.name, "config_seed": seed, "index": drawn.index,
            "config_file": str(path), "config": config.to_dict(), "cells_estimate": drawn.cells,
            "within_max_cells": drawn.within_budget,
            "test": RANDOM_TESTS[kind], "passed": error is None,
            "checked": result.checked if result is not None else 0,
            "mismatches": (sum(t.get("mismatches", 0) for t in result.tests.values())
                           if result is not None else None),
            "seconds": round(seconds, 1),
        }
        if error is not None:
            entry["error"] = error[-4000:]
            entry["repro"] = _repro_line(error) or (
                f"accelgen cosim {path} --seed {seed}"
                + (f" --samples {samples}" if samples is not None else "") + " --waves")
        summary["results"].append(entry)
        _write_summary(out, summary, kinds, started)      # an interrupted campaign keeps its part
        status = "pass" if error is None else "FAIL"
        say(f"[{position}/{len(plan)}] {kind} {config.name} ({drawn.cells or '?'} cells): "
            f"{status}, {entry['checked']} results checked, {seconds:.0f} s"
            + (f"\n    reproduce: {entry['repro']}" if error is not None else ""))
    summary["complete"] = True
    _write_summary(out, summary, kinds, started)
    return summary


def _write_summary(out: Path, summary: dict, kinds: list[str], started: float) -> None:
    results = summary["results"]
    summary["totals"] = {
        "configs": len(results), "passed": sum(r["passed"] for r in results),
        "failed": sum(not r["passed"] for r in results),
        "checked": sum(r["checked"] for r in results),
        "seconds": round(time.monotonic() - started, 1),
        "per_kind": {k: {"configs": sum(r["kind"] == k for r in results),
                         "passed": sum(r["passed"] for r in results if r["kind"] == k),
                         "checked": sum(r["checked"] for r in results if r["kind"] == k)}
                     for k in kinds},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main_campaign(args) -> int:
    """``accelgen campaign``: arguments already range-checked by the parser."""
    kinds = campaign_kinds() if "all" in args.kind else list(dict.fromkeys(args.kind))
    out = Path(args.out)
    progress = None if args.no_progress else (lambda text: print(text, file=sys.stderr,
                                                                 flush=True))
    summary = run_campaign(kinds, args.count, args.seed, out, samples=args.samples,
                           max_cells=args.max_cells, waves_on_failure=not args.no_waves,
                           progress=progress)
    totals = summary["totals"]
    for kind, row in totals["per_kind"].items():
        print(f"{kind}: {row['passed']}/{row['configs']} configs passed, "
              f"{row['checked']} results checked")
    print(f"total: {totals['passed']}/{totals['configs']} configs passed, {totals['checked']} "
          f"results checked bit-exact, {totals['seconds']:.0f} s (seed {args.seed}); "
          f"summary: {out / 'summary.json'}")
    for r in summary["results"]:
        if not r["passed"]:
            print(f"FAILED {r['name']}: {r['repro']}")
    return 0 if totals["failed"] == 0 else 1
