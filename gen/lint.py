"""Verilator lint of generated Verilog, with the project's waivers decided once, here.

Amaranth's Verilog backend emits a few constructs that ``-Wall`` flags but that are correct by
construction; each waiver below says why it is safe. Everything else ``-Wall`` reports fails the lint.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from gen.toolchain import verilator_env, verilator_root

__all__ = ["LINT_WAIVERS", "LintResult", "lint_verilog"]

#: Verilator warning -> why Amaranth output trips it harmlessly.
LINT_WAIVERS: dict[str, str] = {
    "UNUSEDSIGNAL": "Amaranth keeps named views of struct fields (e.g. `\\payload.last`) and unused "
                    "payload bits of stream ports; they drive nothing.",
    "DECLFILENAME": "the module is named after the config, the file after the top; Verilator wants "
                    "one module per file named alike, which a single flattened file cannot be.",
    "WIDTHEXPAND": "Amaranth zero- or sign-extends explicitly where it matters; implicit widening in "
                   "its generated comparisons is value-preserving.",
    "WIDTHTRUNC": "Amaranth truncates intentionally (e.g. wrap-around accumulators); it emits the "
                  "narrowing assignment directly.",
    "CASEINCOMPLETE": "Amaranth's `case` statements have a default assignment before the case.",
    "PROCASSINIT": "Amaranth declares every register with its reset value as initial value (so "
                   "simulation and FPGA bitstreams start defined) and also assigns it in a clocked "
                   "process; that is intended.",
}


@dataclass(frozen=True)
class LintResult:
    ok: bool
    command: list[str]
    output: str


def lint_verilog(verilog: Path, top: str) -> LintResult:
    verilog = Path(verilog)
    cmd = [str(verilator_root() / "bin" / "verilator"), "--lint-only", "-Wall",
           *[f"-Wno-{w}" for w in sorted(LINT_WAIVERS)], "--top-module", top, verilog.name]
    proc = subprocess.run(cmd, cwd=verilog.parent, env=verilator_env(), capture_output=True,
                          text=True)
    return LintResult(ok=proc.returncode == 0, command=cmd, output=(proc.stdout + proc.stderr).strip())
