"""Configs onto the native stream harness: ``accelgen sim`` and the benches call these.

:mod:`cosim.fast` works from plain data (an exported design); this module exports a config and
maps its parameters onto :mod:`cosim.fast` / :mod:`cosim.gemm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cosim.fast import Design, FastRun
from cosim.gemm import GemmRun
from gen.config import REPO_ROOT
from gen.schema import ConfigBase

__all__ = ["design_for", "simulate", "tiled_gemm", "random_operands"]

SIM_ROOT = REPO_ROOT / "build" / "sim"


def design_for(config: ConfigBase, out_dir: str | Path | None = None) -> Design:
    """Export ``config`` (once per config hash, under ``build/sim/``) and describe it as data."""
    import warnings

    from amaranth.hdl import UnusedElaboratable

    from gen.export import export_rtl

    folder = Path(out_dir) if out_dir else SIM_ROOT / f"{config.name}-{config.config_hash[:12]}"
    if not (folder / "manifest.json").exists():
        # export elaborates the config even when its Verilog is cached; that unused component
        # is expected, not a warning for the user
        warnings.filterwarnings("ignore", category=UnusedElaboratable)
        export_rtl(config, folder)
    return Design.from_folder(folder)


def simulate(config: ConfigBase, inputs: Mapping[str, Any], **kwargs) -> FastRun:
    """:func:`cosim.fast.simulate` on the design of ``config`` (same keyword arguments)."""
    from cosim.fast import simulate as fast_simulate

    return fast_simulate(design_for(config), inputs, **kwargs)


def random_operands(config: ConfigBase, m: int, k: int, n: int, seed: int = 1,
                    style: str = "uniform") -> dict:
    """A (M x K) and B (K x N) in the config's operand types, plus MXInt exponents if any."""
    from cosim.harness import operand_matrix, signed_limits

    rng = np.random.default_rng(seed)
    out = {"a": operand_matrix(rng, (m, k), config.a_width, style),
           "b": operand_matrix(rng, (k, n), config.b_width, style)}
    if config.kind == "flattened_array" and config.mxint:
        lo, hi = signed_limits(config.exponent_width)
        blocks = k // config.block_size
        if config.a_format == "mxint":
            out["a_exp"] = rng.integers(lo, hi + 1, size=(m, blocks))
        if config.b_format == "mxint":
            out["b_exp"] = rng.integers(lo, hi + 1, size=(blocks, n))
    return out


def tiled_gemm(config: ConfigBase, m: int, k: int, n: int, *, seed: int = 1,
               profile: str = "smooth", harness: str = "fast", opt: str | None = None,
               style: str = "uniform", design: Design | None = None) -> GemmRun:
    """An M x K x N GEMM of random operands on a ``systolic_array`` or ``flattened_array``
    config, run on the native harness with every result row checked against the golden model
    (:mod:`cosim.gemm`)."""
    from cosim.gemm import flattened_tiled_gemm, systolic_tiled_gemm

    design = design or design_for(config)
    ops = random_operands(config, m, k, n, seed, style)
    common = dict(profile=profile, seed=seed, harness=harness, opt=opt)
    if config.kind == "systolic_array":
        return systolic_tiled_gemm(design, ops["a"], ops["b"], rows=config.rows,
                                   cols=config.cols, dataflow=config.dataflow,
                                   a_width=config.a_width, b_width=config.b_width,
                                   acc_width=config.accumulator_width, overflow=config.overflow,
                                   max_k=config.max_k, buffer_rows=config.result_buffer_rows,
                                   product_register=config.pe_product_register, **common)
    if config.kind == "flattened_array":
        if not config.mxint and k > config.max_k:
            raise ValueError(f"K = {k} exceeds max_k = {config.max_k} of {config.name}")
        mx = dict(block_size=config.block_size, exponent_width=config.exponent_width,
                  out_width=config.output_width, a_exp=ops.get("a_exp"),
                  b_exp=ops.get("b_exp")) if config.mxint else {}
        return flattened_tiled_gemm(design, ops["a"], ops["b"], blen=config.blen,
                                    mlen=config.mlen, a_width=config.a_width,
                                    b_width=config.b_width, acc_width=config.accumulator_width,
                                    overflow=config.overflow,
                                    buffer_rows=config.result_buffer_rows,
                                    product_register=config.pe_product_register,
                                    align_stages=config.align_stages, **mx, **common)
    raise ValueError(f"tiled GEMMs run on systolic_array and flattened_array configs, not "
                     f"{config.kind}")


# ------------------------------------------------------------------------------------------------
# accelgen sim
# ------------------------------------------------------------------------------------------------

SIM_EPILOG = """\
Input file (--inputs X.npz, e.g. written with numpy.savez): for each input stream, one array per
payload field named STREAM.FIELD (STREAM.FIELD.SUB for nested structs; STREAM alone for a plain
integer or array payload), beat index first, array lanes next, in the field's integer type; or
already-packed payloads as STREAM@words (uint32, beats x ceil(width/32), little-endian words). The
streams and fields of a config: the 'ports' of build/rtl/NAME/manifest.json ('accelgen rtl').

Output file (--out Y.npz): STREAM.FIELD per output field, STREAM@words, STREAM@cycles (the cycle
of every handshake of every stream, inputs included; cycle 0 is the first after reset) and meta
(JSON: status, cycles, wall time, profile, seed).

The run ends when every input beat has been taken and every output stream named in --expect has
that many beats (then --drain cycles with outputs always ready; a further beat is an error), or,
for outputs without --expect, once no output has been valid for --idle cycles. No handshake for
--timeout cycles before that is an error.

The first run of a config builds its simulator with Verilator (tens of seconds to minutes; cached
under build/verilator/ by Verilog hash).

Exit status: 0 ok, 1 the simulation failed (timeout, extra beats, build error), 2 bad config,
input file or arguments.

Examples:
  accelgen sim configs/systolic_os_4x4_int8.yaml --random 100000 --profile bursty --out y.npz
  accelgen sim configs/float_add_fp16.yaml --inputs x.npz --out y.npz --expect sums=1000
"""


def add_arguments(p) -> None:
    from cosim.traffic import PROFILES
    from cosim.verilator import OPT_LEVELS

    p.add_argument("config", metavar="CONFIG", help="YAML config file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", metavar="X.npz", help="input beats per stream (see below)")
    src.add_argument("--random", type=int, metavar="N",
                     help="instead of --inputs: about N seeded random beats per input stream "
                          "(legal jobs: control fields such as 'last' follow the kind's rules)")
    p.add_argument("--out", metavar="Y.npz", help="write output beats and handshake cycles here")
    p.add_argument("--profile", default="smooth", choices=sorted(PROFILES),
                   help="traffic profile: input gaps and output backpressure, as the cocotb and "
                        "amaranth.sim harnesses apply them (default: smooth = none)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the traffic profile (and of --random data); default 1")
    p.add_argument("--expect", action="append", default=[], metavar="STREAM=N",
                   help="expected beats of an output stream (repeatable)")
    p.add_argument("--drain", type=int, default=16, metavar="N",
                   help="cycles run after the expected beats, outputs ready (default 16)")
    p.add_argument("--idle", type=int, default=1000, metavar="N",
                   help="outputs without --expect: stop after N cycles with none valid "
                        "(default 1000)")
    p.add_argument("--timeout", type=int, default=100_000, metavar="N",
                   help="fail after N cycles without any handshake (default 100000)")
    p.add_argument("--max-cycles", type=int, default=None, metavar="N",
                   help="stop after N cycles whatever happens (default: no limit)")
    p.add_argument("--opt", default="O2", choices=sorted(OPT_LEVELS),
                   help="C++ optimisation of the simulator build (default O2)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


def main_sim(args) -> int:
    import json
    import sys

    from cosim.fast import FastSimError, read_inputs_npz, run_summary, simulate as fast_simulate
    from cosim.stimulus import random_inputs
    from cosim.verilator import BuildError
    from gen.config import load_config

    def usage(msg: str) -> int:
        print(f"accelgen sim: {msg}", file=sys.stderr)
        return 2

    config = load_config(args.config)        # a ConfigError is reported by gen.cli (exit 2)
    for name, value in (("--drain", args.drain), ("--idle", args.idle),
                        ("--timeout", args.timeout), ("--random", args.random),
                        ("--max-cycles", args.max_cycles)):
        if value is not None and value < (1 if name in ("--timeout", "--idle") else 0):
            return usage(f"{name}: got {value}; allowed: a "
                         f"{'positive' if name in ('--timeout', '--idle') else 'non-negative'} "
                         "integer")
    design = design_for(config)
    if not design.streams:
        return usage(f"{config.name} ({config.kind}) has no stream ports to drive")
    expect = {}
    outs = {s.name for s in design.outputs}
    for item in args.expect:
        name, sep, count = item.partition("=")
        if not sep or not count.strip().isdigit():
            return usage(f"--expect {item!r}: allowed: STREAM=N with N a non-negative integer")
        if name not in outs:
            return usage(f"--expect {item!r}: {config.name} has no output stream {name!r}; "
                         f"outputs: {', '.join(sorted(outs))}")
        expect[name] = int(count)
    if args.inputs is not None:
        if not Path(args.inputs).is_file():
            return usage(f"--inputs {args.inputs}: no such file")
        try:
            inputs = read_inputs_npz(design, args.inputs)
        except ValueError as exc:
            return usage(str(exc))
    else:
        inputs = random_inputs(design.manifest, args.random, np.random.default_rng(args.seed))
    try:
        run = fast_simulate(design, inputs, expect=expect, profile=args.profile, seed=args.seed,
                            drain_cycles=args.drain, idle_cycles=args.idle,
                            timeout_cycles=args.timeout, max_cycles=args.max_cycles,
                            opt=args.opt, check=False)
    except (KeyError, ValueError, TypeError) as exc:
        return usage(f"{args.inputs or 'random inputs'}: {exc.args[0] if exc.args else exc}")
    except (BuildError, FastSimError) as exc:
        print(f"accelgen sim: {exc}", file=sys.stderr)
        return 1
    if args.out:
        from cosim.fast import write_run_npz
        write_run_npz(run, args.out)
    summary = run_summary(run)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        beats = ", ".join(f"{k} {v}" for k, v in summary["beats"].items())
        print(f"{config.name}: {run.status}, {run.total_cycles} cycles ({run.sim_cycles} "
              f"simulated) in {run.wall_seconds:.2f} s, {run.cycles_per_second:,.0f} cycles/s; "
              f"beats: {beats}" + (f"; wrote {args.out}" if args.out else ""))
    if run.status != "ok":
        print(f"accelgen sim: {config.name}: {run.status} after {run.sim_cycles} cycles "
              f"({run.profile}, seed {run.seed})", file=sys.stderr)
        return 1
    return 0
