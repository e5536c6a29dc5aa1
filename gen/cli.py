"""``accelgen``: check configs, generate Verilog, lint, synthesize, co-simulate, benchmark, explore.

Exit status: 0 success, 1 a check failed (lint, synthesis, co-simulation mismatch), 2 bad input
(config or command line). Errors are one line per problem, never a traceback (set
``ACCELGEN_DEBUG=1`` to see one for a genuine internal error).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import time
from pathlib import Path

from gen.config import GENERATORS, PRESET_DIR, REPO_ROOT, config_class, load_config
from gen.schema import ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _load_all(paths: list[str]) -> list:
    """Validate every config before touching any output; report every problem of every file."""
    configs, errors = [], []
    for path in paths:
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise _Rejected(errors)
    names = {}
    for path, config in zip(paths, configs):
        if config.name in names:
            raise _Rejected([ConfigError(path, [_problem(
                "name", config.name, f"a name not used by {names[config.name]} (outputs would "
                "collide)")])])
        names[config.name] = path
    return configs


def _problem(key, value, allowed):
    from gen.schema import Problem
    return Problem(key, value, allowed)


class _Rejected(Exception):
    def __init__(self, errors: list[ConfigError]):
        self.errors = errors


def cmd_check(args) -> int:
    configs = _load_all(args.configs)
    for path, config in zip(args.configs, configs):
        print(f"{path}: ok ({config.kind} '{config.name}', sha256 {config.config_hash[:12]})")
    return EXIT_OK


def cmd_explain(args) -> int:
    kinds = args.kinds or sorted(GENERATORS)
    for kind in kinds:
        if kind not in GENERATORS:
            print(f"accelgen explain: unknown kind {kind!r}; known: {', '.join(sorted(GENERATORS))}",
                  file=sys.stderr)
            return EXIT_USAGE
        cls = config_class(kind)
        print(f"kind: {kind}  ({cls.__name__})")
        doc = (cls.__doc__ or "").strip()
        if doc:
            print("  " + doc.splitlines()[0])
        for key, tname, default, text in cls.describe():
            print(f"  {key:<22} {tname:<16} default {default:<14} {text}")
        print()
    return EXIT_OK


def cmd_list(args) -> int:
    from gen.config import preset_paths
    for kind in sorted(GENERATORS):
        presets = [p.relative_to(REPO_ROOT) for p in preset_paths(kind)]
        print(f"{kind}: {len(presets)} preset(s)")
        for p in presets:
            print(f"  {p}")
    return EXIT_OK


def cmd_rtl(args) -> int:
    from gen.export import export_rtl
    from gen.lint import lint_verilog

    paths = args.configs or [str(p) for p in sorted(PRESET_DIR.glob("*.yaml"))]
    configs = _load_all(paths)
    out = Path(args.out)
    status = EXIT_OK
    for n, config in enumerate(configs, 1):
        start = time.monotonic()
        result = export_rtl(config, out / config.name)
        line = (f"[{n}/{len(configs)}] {config.name}: {result.verilog} "
                f"({time.monotonic() - start:.1f} s)")
        if args.lint:
            lint = lint_verilog(result.verilog, result.top)
            line += " lint ok" if lint.ok else " LINT FAILED"
            if not lint.ok:
                status = EXIT_FAIL
                line += "\n" + lint.output
        print(line, flush=True)
    return status


def cmd_lint(args) -> int:
    import tempfile

    from gen.export import export_rtl
    from gen.lint import lint_verilog

    configs = _load_all(args.configs)
    status = EXIT_OK
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            result = export_rtl(config, Path(tmp) / config.name)
            lint = lint_verilog(result.verilog, result.top)
            print(f"{config.name}: {'lint ok' if lint.ok else 'LINT FAILED'}")
            if not lint.ok:
                print(lint.output)
                status = EXIT_FAIL
    return status


def cmd_synth(args) -> int:
    from gen.synth import SynthError, synthesize

    configs = _load_all(args.configs)
    reports = []
    for config in configs:
        if not args.json:
            print(f"synthesizing {config.name} ...", file=sys.stderr, flush=True)
        try:
            report = synthesize(config, use_cache=not args.no_cache)
        except SynthError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAIL
        reports.append({"name": config.name, "kind": config.kind,
                        "config_sha256": config.config_hash, **report.to_dict()})
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, sort_keys=True))
    else:
        for r in reports:
            print(f"{r['name']}: {r['cells']} cells, area {r['area']:.0f} GE "
                  f"({r['flops']} flops), longest path {r['longest_path']} gates, "
                  f"{r['seconds']:.1f} s")
            for cell, count in sorted(r["cells_by_type"].items(), key=lambda kv: -kv[1]):
                print(f"    {cell:<16} {count}")
    return EXIT_OK


def cmd_cosim(args) -> int:
    from cosim.runner import main_cosim
    return main_cosim(args)


def bench_modules() -> list[str]:
    import gen.bench
    return sorted(name for _f, name, _pkg in pkgutil.iter_modules(gen.bench.__path__)
                  if not name.startswith("_"))


def cmd_bench(args) -> int:
    names = args.names or bench_modules()
    unknown = [n for n in names if n not in bench_modules()]
    if unknown:
        print(f"accelgen bench: unknown benchmark(s) {', '.join(unknown)}; known: "
              f"{', '.join(bench_modules())}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = EXIT_OK
    for n, name in enumerate(names, 1):
        print(f"== bench [{n}/{len(names)}] {name}", flush=True)
        start = time.monotonic()
        module = importlib.import_module(f"gen.bench.{name}")
        try:
            module.run(out, quick=args.quick)
        except Exception as exc:  # a broken benchmark must not hide the others' results
            if os.environ.get("ACCELGEN_DEBUG"):
                raise
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = EXIT_FAIL
        print(f"== {name}: {time.monotonic() - start:.0f} s", flush=True)
    return status


def cmd_cycles(args) -> int:
    from software_model.systolic import scalesim_cycles, tiled_gemm_cycles

    config = _load_all([args.config])[0]
    if config.kind != "systolic_array":
        print(f"accelgen cycles: {args.config} is a {config.kind}, the cycle model covers "
              "systolic_array", file=sys.stderr)
        return EXIT_USAGE
    ours = tiled_gemm_cycles(args.m, args.k, args.n, rows=config.rows, cols=config.cols,
                             dataflow=config.dataflow, buffer_rows=config.result_buffer_rows)
    ref = scalesim_cycles(args.m, args.k, args.n, rows=config.rows, cols=config.cols,
                          dataflow=config.dataflow)
    print(json.dumps({"config": config.name, "m": args.m, "k": args.k, "n": args.n, **ours,
                      "scalesim_cycles": ref}, indent=2))
    return EXIT_OK


def cmd_dse(args) -> int:
    dse = importlib.import_module("gen.dse")
    return dse.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelgen",
        description="Generate ML-inference accelerator blocks (systolic arrays, MXInt datapaths, "
                    "LUT-based ternary units) as synthesis-ready Verilog from YAML configs, and "
                    "check them against bit-exact golden models.",
        epilog="Exit status: 0 ok, 1 a check failed, 2 bad config or arguments. "
               "Config keys of every kind: 'accelgen explain'.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("check", help="validate configs and report every problem at once")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("explain", help="list every config key of a kind with type, default, meaning")
    p.add_argument("kinds", nargs="*", metavar="KIND", help="generator kind(s); default: all")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("list", help="list generator kinds and the presets in configs/")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("rtl", help="generate Verilog + filelist + manifest.json per config")
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="YAML config file(s); default: every file in configs/")
    p.add_argument("--out", default="build/rtl",
                   help="output folder; each config goes to OUT/<name>/ (default: build/rtl)")
    p.add_argument("--lint", action="store_true",
                   help="also run 'verilator --lint-only -Wall' (with the documented waivers)")
    p.set_defaults(func=cmd_rtl)

    p = sub.add_parser("lint", help="Verilator -Wall lint of the generated Verilog")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("synth", help="Yosys generic synthesis: cells by type, area, longest path")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-cache", action="store_true",
                   help="re-run Yosys even if this exact Verilog was synthesized before")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("cosim", help="run a config's cocotb regression under Verilator")
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("--test", default=None,
                   help="comma-separated cocotb test names (default: all tests of the module)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: ACCELGEN_SEED or 1)")
    p.add_argument("--samples", type=int, default=None,
                   help="random samples per test (default: ACCELGEN_SAMPLES or the test's own)")
    p.add_argument("--waves", action="store_true",
                   help="build with FST tracing and keep the waveform under build/cosim/")
    p.add_argument("--module", default=None,
                   help="cocotb test module (default: the generator's, e.g. cosim.systolic)")
    p.set_defaults(func=cmd_cosim)

    p = sub.add_parser("cycles", help="analytical cycles of an M x K x N GEMM on a systolic config")
    p.add_argument("config", metavar="CONFIG", help="systolic_array YAML config")
    p.add_argument("--m", type=int, required=True, help="rows of A and C")
    p.add_argument("--k", type=int, required=True, help="reduction length")
    p.add_argument("--n", type=int, required=True, help="columns of B and C")
    p.set_defaults(func=cmd_cycles)

    p = sub.add_parser("bench", help="run benchmarks; JSON/CSV/PNG results into --out")
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmark names (default: all)")
    p.add_argument("--out", default="build/bench", help="results folder (default: build/bench)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("dse", help="design-space exploration sweep (see 'accelgen dse --help')")
    try:
        importlib.import_module("gen.dse").add_arguments(p)
    except ImportError:
        p.add_argument("sweep", nargs="?")
    p.set_defaults(func=cmd_dse)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _Rejected as rejected:
        for err in rejected.errors:
            print(err.render(), file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a traceback for the user
        if os.environ.get("ACCELGEN_DEBUG"):
            raise
        print(f"accelgen {args.command}: internal error: {type(exc).__name__}: {exc}\n"
              "(set ACCELGEN_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
