"""pytest/CLI side of co-simulation: export a config, build it with Verilator, run cocotb tests.

Binaries come from the shared, content-addressed build cache (``build/verilator/``, see
:mod:`cosim.verilator`): one build per (Verilog, harness, flags), reused by every test and bench
that needs it. Each config's runs (exported RTL, results, records, logs) live in
``build/cosim/<config name>/``; a waveform run in its ``waves/``. A failing run is repeated once
with waveforms on, so the FST of the failure is kept, and the error names the seed and the one
command that reproduces it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import sys
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cosim.verilator import BuildError, apply_verilator_env
from gen.config import REPO_ROOT, load_config, preset_paths
from gen.export import export_rtl
from gen.schema import ConfigBase

__all__ = ["CosimFailure", "CosimResult", "run_cosim", "preset_configs", "BUILD_ROOT"]

BUILD_ROOT = REPO_ROOT / "build" / "cosim"


class CosimFailure(AssertionError):
    pass


@dataclass
class CosimResult:
    config: ConfigBase
    build_dir: Path
    tests: dict[str, dict] = field(default_factory=dict)   # test name -> tally written by harness

    @property
    def checked(self) -> int:
        return sum(t.get("checked", 0) for t in self.tests.values())

    def records(self, test: str) -> dict:
        return self.tests[test].get("records", {})


def preset_configs(kind: str) -> list[ConfigBase]:
    """Every preset of ``kind`` in ``configs/`` (for ``pytest.mark.parametrize``)."""
    return [load_config(p) for p in preset_paths(kind)]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build(config: ConfigBase, build_dir: Path, waves: bool, opt: str | None = None):
    """Export ``config`` and build (or find in the shared cache) its cocotb simulation binary.

    The build is :func:`cosim.fast.build` with ``harness="cocotb"``: cocotb's Verilator main and
    the native stream harness in one executable, content-addressed by Verilog, harness and flags
    under ``build/verilator/``, so every test and bench that needs this design shares it.
    """
    from cocotb_tools.runner import get_runner

    from cosim.fast import Design, build

    apply_verilator_env()
    export = export_rtl(config, build_dir / "rtl")
    try:
        made = build(Design(export.verilog, export.manifest), harness="cocotb", waves=waves,
                     opt=opt)
    except BuildError as exc:
        raise CosimFailure(str(exc)) from None
    return get_runner("verilator"), export, made.binary.parent


def _repro_command(config: ConfigBase, config_path: Path | None, seed: int, samples: int | None,
                   module: str) -> str:
    target = str(config_path) if config_path else f"<{config.name}.yaml>"
    try:
        target = str(Path(target).resolve().relative_to(REPO_ROOT))
    except ValueError:
        pass
    parts = ["accelgen", "cosim", target, "--test", "{test}", "--seed", str(seed), "--waves"]
    if samples is not None:
        parts += ["--samples", str(samples)]
    if module != _default_module(config):
        parts += ["--module", module]
    return " ".join(shlex.quote(p) if p != "{test}" else p for p in parts)


def _default_module(config: ConfigBase) -> str:
    """The kind's testbench, from its registry record (gen/registry.py)."""
    from gen.registry import KINDS
    record = KINDS.get(config.kind)
    return (record.testbench if record else None) or f"cosim.{config.kind}"


def run_cosim(config: ConfigBase | str | Path, test_module: str | None = None, *,
              testcase: str | list[str] | None = None, seed: int | None = None,
              samples: int | None = None, waves: bool | None = None, gap: float | None = None,
              stall: float | None = None, timeout_cycles: int | None = None,
              rerun_with_waves: bool = True, env: dict[str, str] | None = None,
              build_opt: str | None = None) -> CosimResult:
    """Build ``config`` (a dataclass or a YAML path) and run the cocotb tests in ``test_module``.

    Seed, sample count and waves default to ``ACCELGEN_SEED``, ``ACCELGEN_SAMPLES`` and
    ``ACCELGEN_WAVES`` from the environment; ``env`` adds variables for the test module;
    ``build_opt`` overrides the build's C++ optimisation (default -O0, see cosim.verilator). Raises
    :class:`CosimFailure` on any failed test or mismatch, with the seed and a one-line
    reproduction command.
    """
    config_path = None
    if not isinstance(config, ConfigBase):
        config_path = Path(config)
        config = load_config(config_path)
    else:
        matches = [p for p in preset_paths(config.kind) if p.stem == config.name]
        config_path = matches[0] if matches else None
    test_module = test_module or _default_module(config)
    seed = int(os.environ.get("ACCELGEN_SEED", "1")) if seed is None else int(seed)
    if samples is None and os.environ.get("ACCELGEN_SAMPLES"):
        samples = int(os.environ["ACCELGEN_SAMPLES"])
    if waves is None:
        waves = os.environ.get("ACCELGEN_WAVES", "0") not in ("", "0", "false")
    build_dir = BUILD_ROOT / config.name
    with _locked(BUILD_ROOT / f".{config.name}.lock"):
        result = _run_once(config, config_path, test_module, build_dir, testcase, seed, samples,
                           waves, gap, stall, timeout_cycles, env, build_opt)
        if result[0] is None:
            return result[1]
        message, tally = result
        if rerun_with_waves and not waves:
            failed = [name for name, t in tally.tests.items() if t.get("failed")] or testcase
            try:
                _run_once(config, config_path, test_module, build_dir, failed, seed, samples,
                          True, gap, stall, timeout_cycles, env, build_opt)
            except CosimFailure as exc:     # keep the failure itself, not the rerun's problem
                message += f"\n(the rerun with waveforms failed: {str(exc).splitlines()[0]})"
            wave_dir = build_dir / "waves"
            fsts = sorted(str(p) for p in wave_dir.rglob("*.fst")) + \
                sorted(str(p) for p in wave_dir.rglob("*.vcd")) if wave_dir.exists() else []
            if fsts:
                message += "\nWaveform: " + ", ".join(fsts)
        raise CosimFailure(message)


def _run_once(config, config_path, test_module, build_dir, testcase, seed, samples, waves, gap,
              stall, timeout_cycles, extra_env=None, build_opt=None):
    runner, export, binary_dir = _build(config, build_dir, waves, build_opt)
    # The binary lives in the shared build cache; this config's runs (results, records, logs,
    # waveforms) get a folder of their own.
    sim_dir = build_dir / ("waves" if waves else "sim")
    sim_dir.mkdir(parents=True, exist_ok=True)
    record_dir = sim_dir / "records"
    if record_dir.exists():
        shutil.rmtree(record_dir)
    record_dir.mkdir(parents=True)
    repro = _repro_command(config, config_path, seed, samples, test_module)
    env = {
        "ACCELGEN_MANIFEST": str(export.out_dir / "manifest.json"),
        "ACCELGEN_SEED": str(seed),
        "ACCELGEN_RECORD_DIR": str(record_dir),
        "ACCELGEN_REPRO": repro,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    for key, value in (("ACCELGEN_SAMPLES", samples), ("ACCELGEN_GAP", gap),
                       ("ACCELGEN_STALL", stall), ("ACCELGEN_TIMEOUT_CYCLES", timeout_cycles)):
        if value is not None:
            env[key] = str(value)
        elif os.environ.get(key):
            env[key] = os.environ[key]
    for key, value in os.environ.items():     # e.g. ACCELGEN_REPLAY for cosim.replay
        if key.startswith("ACCELGEN_") and key not in env:
            env[key] = value
    env.update(extra_env or {})
    if waves:
        env["ACCELGEN_WAVES"] = "1"
    results_xml = sim_dir / "results.xml"
    results_xml.unlink(missing_ok=True)     # never read a previous run's verdict
    try:
        runner.test(test_module=test_module, hdl_toplevel=config.top_name,
                    hdl_toplevel_lang="verilog",
                    build_dir=binary_dir, test_dir=sim_dir, testcase=testcase, seed=seed,
                    extra_env=env, waves=waves, results_xml=str(results_xml),
                    log_file=sim_dir / "sim.log")
    except SystemExit as exc:
        # Under pytest, cocotb's runner ends a failed run with sys.exit(), which pytest would
        # show as a bare "SystemExit: 1". The results file and the tallies say what failed.
        if not results_xml.exists():
            tail = _log_tail(sim_dir / "sim.log")
            return (f"co-simulation of {config.name} failed (seed {seed}): the simulator exited "
                    f"({exc.code}) without a results file.\n{tail}\nSimulator log: "
                    f"{sim_dir / 'sim.log'}\nReproduce with: {repro.replace('{test}', 'all')}",
                    CosimResult(config=config, build_dir=build_dir))
    tally = CosimResult(config=config, build_dir=build_dir)
    for path in sorted(record_dir.glob("*.json")):
        data = json.loads(path.read_text())
        tally.tests[data["test"]] = data
    failures = []
    ran = 0
    for case in ET.parse(results_xml).getroot().iter("testcase"):
        name = case.get("name")
        if any(el.tag == "skipped" for el in case):
            continue        # benchmark-only tests are skipped outside `accelgen bench`
        ran += 1
        bad = [el for el in case if el.tag in ("failure", "error")]
        entry = tally.tests.setdefault(name, {"test": name, "checked": 0})
        if bad:
            entry["failed"] = True
            # cocotb's message is usually the traceback's last line: print it once
            text = "\n".join(el.text or el.get("message") or "" if el.get("message", "") in
                              (el.text or "") else (el.get("message") or "") + "\n" +
                              (el.text or "") for el in bad)
            # The first mismatch leads (expected vs got, with its job/beat index), whatever the
            # length of the traceback after it.
            first = entry.get("first_mismatches") or _logged_mismatches(sim_dir / "sim.log",
                                                                         name)
            head = ""
            if first:
                count = entry.get("mismatches") or len(first)
                head = (f"{count} of {entry.get('checked', '?')} results mismatched; first "
                        f"{first[0]}\n")
            failures.append(f"{name}: {head}{text.strip()[-3000:]}")
        elif entry.get("checked", 0) <= 0:
            entry["failed"] = True
            failures.append(f"{name}: passed but checked no results (the harness tally is "
                            "missing); every test must call tb.finish()")
    if ran == 0:
        failures.append(f"no cocotb test ran from {test_module} (testcase={testcase!r})")
    if failures:
        log = sim_dir / "sim.log"
        message = (f"co-simulation of {config.name} failed (seed {seed}).\n"
                   + "\n".join(failures)
                   + f"\nSimulator log: {log}\nReproduce with: "
                   + repro.replace("{test}", ",".join(n for n, t in tally.tests.items()
                                                      if t.get("failed")) or "all"))
        return message, tally
    return None, tally


def _log_tail(log: Path, lines: int = 30) -> str:
    if not log.exists():
        return "(no simulator log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _logged_mismatches(log: Path, test: str) -> list[str]:
    """MISMATCH lines the scoreboard logged for ``test`` (for a test that failed before its
    tally was written, e.g. on a timeout after a mismatch)."""
    if not log.exists():
        return []
    found, inside = [], False
    started = re.compile(r"\brunning (?:\S+\.)?" + re.escape(test) + r"(?: \(|$)")
    for line in log.read_text(errors="replace").splitlines():
        if "cocotb.regression" in line and " running " in line:
            inside = started.search(line.rstrip()) is not None
        elif inside and "MISMATCH" in line:
            mismatch = line[line.index("MISMATCH"):]
            if mismatch not in found:
                found.append(mismatch)
    return found


def main_cosim(args) -> int:
    """``accelgen cosim``: run one config's regression from the command line."""
    from gen.schema import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    testcase = args.test.split(",") if args.test and args.test != "all" else None
    try:
        result = run_cosim(args.config, args.module, testcase=testcase, seed=args.seed,
                           samples=args.samples, waves=args.waves, rerun_with_waves=False)
    except CosimFailure as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for name, tally in sorted(result.tests.items()):
        print(f"{config.name} {name}: {tally.get('checked', 0)} results checked, "
              f"{tally.get('mismatches', 0)} mismatches")
    if args.waves:
        wave_dir = result.build_dir / "waves"
        for trace in sorted([*wave_dir.rglob("*.fst"), *wave_dir.rglob("*.vcd")]):
            print(f"waveform: {trace}")
    print(f"total: {result.checked} results checked, 0 mismatches")
    return 0
