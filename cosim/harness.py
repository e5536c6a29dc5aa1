"""cocotb side of co-simulation: stream driver, monitor and scoreboard, shared by every block.

A testbench runs inside the simulator process started by the runner (``gen/cosim_run.py``). Everything it needs
comes from the environment: the manifest (config + port layouts) of the Verilog under test, the
seed, the sample count, and the probabilities of input gaps and output backpressure. Payloads are
packed and unpacked from the layouts recorded in the manifest, so a testbench works with dicts,
lists and Python ints (signed where the layout says so), never with bit offsets.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.queue import Queue
from cocotb.triggers import Event, ReadOnly, RisingEdge, with_timeout

from cosim.traffic import STRESS_PROFILES, Pattern, Profile, profile as make_profile

__all__ = ["Testbench", "PlainData", "StreamSource", "StreamSink", "Scoreboard", "pack", "unpack",
           "record_file_stem", "STRESS_PROFILES",
           "signed_limits", "operand_matrix", "OPERAND_STYLES"]

CLOCK_PERIOD_NS = 10


def pack(layout: dict, value: Any) -> int:
    """Python value (dict for structs, list for arrays, int) -> the flat port integer."""
    kind = layout["type"]
    if kind == "int":
        width = layout["width"]
        v = int(value)
        lo = -(1 << (width - 1)) if layout["signed"] else 0
        hi = (1 << (width - 1)) - 1 if layout["signed"] else (1 << width) - 1
        if not lo <= v <= hi:
            raise ValueError(f"{v} does not fit a {'signed' if layout['signed'] else 'unsigned'} "
                             f"{width}-bit field")
        return v & ((1 << width) - 1)
    if kind == "struct":
        out = 0
        for name, field in layout["fields"].items():
            if name not in value:
                raise KeyError(f"payload field {name!r} missing (have {sorted(value)})")
            out |= pack(field["layout"], value[name]) << field["offset"]
        extra = set(value) - set(layout["fields"])
        if extra:
            raise KeyError(f"unknown payload fields {sorted(extra)}")
        return out
    if kind == "array":
        elem = layout["element"]
        if len(value) != layout["length"]:
            raise ValueError(f"array payload needs {layout['length']} elements, got {len(value)}")
        out = 0
        for i, item in enumerate(value):
            out |= pack(elem, item) << (i * elem["width"])
        return out
    raise ValueError(f"unknown layout type {kind!r}")


def unpack(layout: dict, raw: int) -> Any:
    """The flat port integer -> dict / list / int following ``layout``."""
    kind = layout["type"]
    width = layout["width"]
    raw &= (1 << width) - 1
    if kind == "int":
        if layout["signed"] and raw >> (width - 1):
            return raw - (1 << width)
        return raw
    if kind == "struct":
        return {name: unpack(f["layout"], raw >> f["offset"]) for name, f in layout["fields"].items()}
    if kind == "array":
        ew = layout["element"]["width"]
        return [unpack(layout["element"], raw >> (i * ew)) for i in range(layout["length"])]
    raise ValueError(f"unknown layout type {kind!r}")


def signed_limits(width: int) -> tuple[int, int]:
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


#: Value distributions for signed operand matrices: random ones and the corner cases.
OPERAND_STYLES = ("uniform", "extreme", "sparse", "min", "max", "zero", "alternate")


def operand_matrix(rng, shape, width: int, style: str) -> np.ndarray:
    """A matrix of signed ``width``-bit integers: ``uniform``, ``extreme`` (mostly the range
    ends and +-1, 0), ``sparse`` (80% zeros), all ``min`` / ``max`` / ``zero``, or ``alternate``
    (a checkerboard of min and max)."""
    lo, hi = signed_limits(width)
    if style == "uniform":
        return rng.integers(lo, hi + 1, size=shape)
    if style == "extreme":
        return rng.choice([lo, hi, lo + 1, -1, 0, 1], size=shape)
    if style == "sparse":
        return rng.integers(lo, hi + 1, size=shape) * (rng.random(shape) < 0.2)
    if style == "min":
        return np.full(shape, lo)
    if style == "max":
        return np.full(shape, hi)
    if style == "zero":
        return np.zeros(shape, dtype=int)
    if style == "alternate":
        return np.where(np.indices(shape).sum(axis=0) % 2 == 0, lo, hi)
    raise ValueError(f"unknown operand style {style!r}; known: {', '.join(OPERAND_STYLES)}")


def _port(manifest: dict, name: str) -> dict:
    for port in manifest["ports"]:
        if port["name"] == name:
            return port
    raise KeyError(f"no port {name!r} in {manifest['top']}; ports: "
                   + ", ".join(p["name"] for p in manifest["ports"]))


class _StreamPort:
    """The valid/ready/payload handles of one ``amaranth.lib.stream`` member and its layout."""

    def __init__(self, tb: "Testbench", name: str):
        self.tb = tb
        self.name = name
        self.valid = getattr(tb.dut, f"{name}__valid")
        self.ready = getattr(tb.dut, f"{name}__ready")
        self.payload = getattr(tb.dut, f"{name}__payload")
        self.layout = _port(tb.manifest, f"{name}__payload")["layout"]
        self.beat_cycles: list[int] = []    # cycle of every handshake, for timing checks


class _Gate:
    """Blocked cycles of one stream under a :class:`cosim.traffic.Pattern`, a chunk at a time."""

    CHUNK = 4096

    def __init__(self, pattern: Pattern, seed: int, stream: str):
        self.pattern, self.seed, self.stream = pattern, seed, stream
        self.start, self.mask = 0, pattern.blocked(seed, stream, 0, self.CHUNK)

    def __call__(self, cycle: int) -> bool:
        if not self.start <= cycle < self.start + len(self.mask):
            self.start = cycle - cycle % self.CHUNK
            self.mask = self.pattern.blocked(self.seed, self.stream, self.start, self.CHUNK)
        return bool(self.mask[cycle - self.start])


class StreamSource(_StreamPort):
    """Drives an ``amaranth.lib.stream`` input. A beat is offered at a cycle the traffic pattern
    does not block and held (valid high) until taken, so the idle cycles are the same as in the
    ``amaranth.sim`` and native harnesses for the same seed (:mod:`cosim.traffic`)."""

    def __init__(self, tb: "Testbench", name: str, pattern: Pattern):
        super().__init__(tb, name)
        self.pattern = pattern
        self.gate = _Gate(pattern, tb.seed, name)
        self.sent = 0
        self._pending: deque = deque()
        self.valid.value = 0
        cocotb.start_soon(self._run())

    def send_nowait(self, value: Any) -> Event:
        """Queue one beat; the returned event fires when the DUT has taken it."""
        done = Event()
        self._pending.append((pack(self.layout, value), done))
        return done

    async def send(self, value: Any) -> None:
        """Queue one beat and return once the DUT has taken it."""
        await self.send_nowait(value).wait()

    async def send_all(self, values) -> None:
        last = None
        for value in values:
            last = self.send_nowait(value)
        if last is not None:
            await last.wait()

    async def _run(self) -> None:
        offered = None
        while True:
            cycle = self.tb.cycle
            if offered is None and self._pending and not self.gate(cycle):
                offered = self._pending.popleft()
                self.payload.value = offered[0]
            self.valid.value = int(offered is not None)
            await ReadOnly()
            if offered is not None and self.ready.value:
                self.beat_cycles.append(cycle)
                self.sent += 1
                offered[1].set()
                offered = None
            await RisingEdge(self.tb.clk)


class StreamSink(_StreamPort):
    """Accepts an ``amaranth.lib.stream`` output; ``ready`` is low at the cycles the traffic
    pattern blocks. Queues what it sees."""

    def __init__(self, tb: "Testbench", name: str, pattern: Pattern):
        super().__init__(tb, name)
        self.pattern = pattern
        self.gate = _Gate(pattern, tb.seed, name)
        self.queue: Queue = Queue()
        self.received = 0
        self.ready.value = 0
        cocotb.start_soon(self._run())

    async def _run(self) -> None:
        while True:
            cycle = self.tb.cycle
            self.ready.value = int(not self.gate(cycle))
            await ReadOnly()
            if self.valid.value and self.ready.value:
                self.beat_cycles.append(cycle)
                self.queue.put_nowait(unpack(self.layout, self.payload.value.to_unsigned()))
                self.received += 1
            await RisingEdge(self.tb.clk)

    async def recv(self, timeout_cycles: int | None = None) -> Any:
        """Next beat; fails the test (instead of hanging) if none comes within the timeout."""
        timeout = timeout_cycles or self.tb.timeout_cycles
        return await with_timeout(self.queue.get(), timeout * CLOCK_PERIOD_NS, "ns")


class Scoreboard:
    """Compares expected with observed results and counts every comparison.

    Test hook: ``ACCELGEN_TEST_CORRUPT=N`` makes comparison number N (0-based) of every test
    expect a deliberately wrong value (the lowest bit of its first integer flipped), so the whole
    failure path (mismatch report, seed, reproduce command, waveform rerun) can be exercised
    against a design that is right. Never set outside that test (tests/test_cosim_failure.py).
    """

    def __init__(self, tb: "Testbench", max_reports: int = 10):
        self.tb = tb
        self.checked = 0
        self.mismatches: list[str] = []
        self.max_reports = max_reports
        corrupt = os.environ.get("ACCELGEN_TEST_CORRUPT", "")
        self.corrupt = int(corrupt) if corrupt.strip() else None

    def check(self, expected: Any, got: Any, context: str) -> bool:
        index = self.checked
        self.checked += 1
        expected = _normalise(expected)
        if index == self.corrupt:
            expected = _corrupted(expected)
            self.tb.log.warning("ACCELGEN_TEST_CORRUPT=%d: comparison %d expects a deliberately "
                                "wrong value", index, index)
        if expected == _normalise(got):
            return True
        msg = f"MISMATCH {context}: expected {expected!r}, got {_normalise(got)!r}"
        self.mismatches.append(msg)
        if len(self.mismatches) <= self.max_reports:
            self.tb.log.error(msg)
        return False


def _corrupted(value: Any) -> Any:
    """``value`` with the lowest bit of its first integer flipped (the ACCELGEN_TEST_CORRUPT
    hook); a value without an integer becomes a marker that equals nothing."""
    if isinstance(value, bool):
        return int(value) ^ 1
    if isinstance(value, int):
        return value ^ 1
    if isinstance(value, dict) and value:
        key = next(iter(value))
        return {**value, key: _corrupted(value[key])}
    if isinstance(value, list) and value:
        return [_corrupted(value[0]), *value[1:]]
    return ("corrupted by ACCELGEN_TEST_CORRUPT", value)


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_normalise(v) for v in value]
    if isinstance(value, (np.integer, bool)):
        return int(value)
    return value


class PlainData(Mapping):
    """A read-only view of a JSON mapping of ``manifest.json`` with attribute access
    (``tb.config.rows``, ``tb.parameters["fmt"]``); nested mappings are views too. Testbenches read
    the manifest through this, never through gen/'s config dataclasses: what a config derives
    (widths, formats, depths) is in ``parameters``, or computed from there by the testbench."""

    __slots__ = ("_data", "_where")

    def __init__(self, data: dict, where: str = "manifest"):
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_where", where)

    def _wrap(self, key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return PlainData(value, f"{self._where}.{key}")
        if isinstance(value, list):
            return tuple(value)
        return value

    def __getitem__(self, key: str) -> Any:
        try:
            return self._wrap(key, self._data[key])
        except KeyError:
            raise KeyError(f"{self._where} has no {key!r}; it has: "
                           + ", ".join(sorted(self._data))) from None

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self[key]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._where} is read-only (it is the manifest's data)")

    def __iter__(self):
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"PlainData({self._where}: {self._data!r})"


class Testbench:
    """Clock, reset, config, seeded RNG and the stream helpers for one cocotb test."""

    def __init__(self, dut):
        self.dut = dut
        self.log = dut._log
        manifest_path = Path(os.environ["ACCELGEN_MANIFEST"])
        self.manifest = json.loads(manifest_path.read_text())
        # Plain data only (the layering is gen -> cosim -> hw -> software_model): the YAML mapping
        # with defaults, and the component's parameters as the config mapped them.
        self.config = PlainData(self.manifest["config"], "config")
        self.parameters = PlainData(self.manifest.get("parameters", {}), "parameters")
        self.test_name = _current_test_name()
        base_seed = int(os.environ.get("ACCELGEN_SEED", "1"))
        # Each test gets its own stream of numbers from the one user-visible seed.
        self.seed = base_seed
        self.rng = np.random.default_rng([base_seed, zlib.crc32(self.test_name.encode())])
        self.samples = int(os.environ.get("ACCELGEN_SAMPLES", "200"))
        gap, stall = os.environ.get("ACCELGEN_GAP"), os.environ.get("ACCELGEN_STALL")
        self.profile: Profile = make_profile(os.environ.get("ACCELGEN_PROFILE") or None,
                                             gap=float(gap) if gap else None,
                                             stall=float(stall) if stall else None)
        self.timeout_cycles = int(os.environ.get("ACCELGEN_TIMEOUT_CYCLES", "20000"))
        self.clk = dut.clk
        self.scoreboard = Scoreboard(self)
        self.records: dict[str, Any] = {}
        self._cycle_origin = 0

    @classmethod
    async def start(cls, dut, *, reset_cycles: int = 3) -> "Testbench":
        tb = cls(dut)
        Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start()
        dut.rst.value = 1
        for _ in range(reset_cycles):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        tb._cycle_origin = tb._now_cycles()
        tb.log.info("seed=%d samples=%d profile=%s config=%s", tb.seed, tb.samples,
                    tb.profile.name, tb.config.name)
        return tb

    def _now_cycles(self) -> int:
        return int(cocotb.utils.get_sim_time("ns") // CLOCK_PERIOD_NS)

    @property
    def cycle(self) -> int:
        """Clock cycles since reset was released."""
        return self._now_cycles() - self._cycle_origin

    def use_profile(self, spec: "str | Profile") -> None:
        """Run this test under another traffic profile (before creating sources and sinks)."""
        self.profile = make_profile(spec)
        self.log.info("traffic profile %s", self.profile.name)

    def source(self, name: str, gap: float | None = None) -> StreamSource:
        """An input stream; ``gap`` overrides the profile's idle probability (0.0: never idle)."""
        return StreamSource(self, name, self.profile.source if gap is None else Pattern(gap))

    def sink(self, name: str, stall: float | None = None) -> StreamSink:
        """An output stream; ``stall`` overrides the profile's backpressure (0.0: always ready)."""
        return StreamSink(self, name, self.profile.sink if stall is None else Pattern(stall))

    def fork(self, coro):
        return cocotb.start_soon(coro)

    async def cycles(self, n: int) -> None:
        for _ in range(n):
            await RisingEdge(self.clk)

    def record(self, key: str, value: Any) -> None:
        """Keep a measurement (e.g. cycles per job); the pytest side reads it back."""
        self.records[key] = _normalise(value)

    def finish(self, min_checked: int = 1) -> None:
        """Write the tally and fail on any mismatch or on too little checked."""
        sb = self.scoreboard
        out_dir = Path(os.environ.get("ACCELGEN_RECORD_DIR", "."))
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{record_file_stem(self.test_name)}.json").write_text(json.dumps({
            "test": self.test_name, "checked": sb.checked, "mismatches": len(sb.mismatches),
            "seed": self.seed, "samples": self.samples, "records": self.records,
            "first_mismatches": sb.mismatches[:5],
        }, indent=1, sort_keys=True))
        repro = os.environ.get("ACCELGEN_REPRO", "").replace("{test}", self.test_name)
        if sb.mismatches:
            raise AssertionError(
                f"{len(sb.mismatches)} of {sb.checked} results mismatched (seed {self.seed}).\n"
                + "\n".join(sb.mismatches[:5]) + f"\nReproduce with: {repro}")
        if sb.checked < min_checked:
            raise AssertionError(f"only {sb.checked} results checked, expected at least "
                                 f"{min_checked} (seed {self.seed}). Reproduce with: {repro}")
        self.log.info("checked %d results, 0 mismatches", sb.checked)


def record_file_stem(test_name: str) -> str:
    """A parametrized cocotb test is named ``random_jobs/profile='mild'``: a safe file stem."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", test_name).strip("_")


def _current_test_name() -> str:
    # cocotb 2 has no public "current test" accessor; the main task is named "Test <name>".
    try:
        from cocotb import _test_manager
        return _test_manager._current_test._main_task.get_name().removeprefix("Test ")
    except Exception:
        return "test"
