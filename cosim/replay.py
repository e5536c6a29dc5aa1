"""Generic cocotb test: replay prepared input beats into every input stream, record every output.

The cocotb twin of the native harness (:mod:`cosim.fast`), used to show that both give the same
output beats and handshake cycles for the same stimulus, and to time cocotb on the same workload
(``accelgen bench sim``). It drives the streams with :class:`cosim.harness.StreamSource` /
:class:`~cosim.harness.StreamSink` (which follow the :mod:`cosim.traffic` profiles), and stops by
the native harness's rules: once every input beat is taken and every output stream has its
expected count, ``drain`` more cycles with outputs always ready; streams without an expected count
end the run after ``idle`` cycles with no output valid.

Environment: ``ACCELGEN_REPLAY`` names ``.npz`` files written by :func:`write_stimulus`
(``os.pathsep``-separated, one test case each); ``ACCELGEN_REPLAY_OUT`` the ``.npz`` files to write
(``out_<stream>`` words, ``cyc_<stream>`` cycles, ``meta`` JSON). Every case starts with a reset,
so later cases run on a model whose datapath registers (``reset_less``) hold the previous case's
data: a design whose outputs depended on them would show here.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from cosim.harness import Testbench, pack, unpack
from cosim.payload import words_for
from cosim.traffic import Pattern, Profile

__all__ = ["write_stimulus", "read_result"]


def write_stimulus(path: str | Path, inputs: dict[str, np.ndarray], *, profile: Profile,
                   expect: dict[str, int] | None = None, drain: int = 16, idle: int = 1000,
                   timeout: int = 100_000) -> None:
    """Save packed input words (stream -> ``uint32 [beats, words]``) and the run's rules."""
    meta = {"profile": profile.to_json(), "expect": dict(expect or {}), "drain": drain,
            "idle": idle, "timeout": timeout, "inputs": sorted(inputs)}
    np.savez(path, meta=np.array(json.dumps(meta)),
             **{f"in_{k}": np.asarray(v, dtype=np.uint32) for k, v in inputs.items()})


def read_result(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(meta, output words per stream, handshake cycles per stream) of a replay run."""
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        words = {k[4:]: data[k] for k in data.files if k.startswith("out_")}
        cycles = {k[4:]: data[k].astype(np.int64) for k in data.files if k.startswith("cyc_")}
    return meta, words, cycles


def _int(row: np.ndarray) -> int:
    value = 0
    for i, w in enumerate(row):
        value |= int(w) << (32 * i)
    return value


def _words(value: int, nwords: int) -> list[int]:
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(nwords)]


class _DrainGate:
    """A sink's pattern until the run is complete, then always ready (as the native drain)."""

    def __init__(self, gate, complete):
        self.gate, self.complete = gate, complete

    def __call__(self, cycle: int) -> bool:
        return False if self.complete() else self.gate(cycle)


#: Stimulus files (``os.pathsep``-separated), one cocotb test each, run in one simulator process
#: (one start-up for several cases); outputs go to the matching ``ACCELGEN_REPLAY_OUT`` entries.
_CASES = [p for p in os.environ.get("ACCELGEN_REPLAY", "").split(os.pathsep) if p]
_OUTS = [p for p in os.environ.get("ACCELGEN_REPLAY_OUT", "").split(os.pathsep) if p]


async def _replay(dut, case: int):
    with np.load(_CASES[case]) as data:
        meta = json.loads(str(data["meta"]))
        inputs = {name: data[f"in_{name}"] for name in meta["inputs"]}
    prof = meta["profile"]
    profile = Profile(prof["name"], Pattern(prof["source"]["p"], prof["source"]["burst"]),
                      Pattern(prof["sink"]["p"], prof["sink"]["burst"]))
    expect = {k: int(v) for k, v in meta["expect"].items()}
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    ports = {p["name"]: p for p in tb.manifest["ports"]}
    streams = sorted({n[:-len("__payload")] for n in ports if n.endswith("__payload")})
    in_names = [s for s in streams if ports[f"{s}__payload"]["direction"] == "input"]
    out_names = [s for s in streams if ports[f"{s}__payload"]["direction"] == "output"]
    sources = {n: tb.source(n) for n in in_names}
    sinks = {n: tb.sink(n) for n in out_names}
    counts = {n: len(inputs.get(n, ())) for n in in_names}
    for name, src in sources.items():
        for row in inputs.get(name, ()):
            src.send_nowait(unpack(src.layout, _int(row)))
    received: dict[str, list] = {n: [] for n in out_names}
    all_expected = set(expect) >= set(out_names)

    def complete() -> bool:
        return (all(sources[n].sent == counts[n] for n in in_names)
                and all(sinks[n].received >= expect[n] for n in expect))

    if all_expected:
        for sink in sinks.values():
            sink.gate = _DrainGate(sink.gate, complete)
    wall, cpu = time.perf_counter(), time.process_time()
    status = "ok"
    done_at = None
    quiet = 0
    while True:
        await ReadOnly()
        cycle = tb.cycle
        any_valid = any(int(s.valid.value) for s in sinks.values())
        await RisingEdge(tb.clk)
        for name, sink in sinks.items():
            while not sink.queue.empty():
                received[name].append(sink.queue.get_nowait())
        handshakes = [c for s in [*sources.values(), *sinks.values()] for c in s.beat_cycles[-1:]]
        last_event = max(handshakes) if handshakes else -1
        if done_at is not None:
            if cycle + 1 - done_at >= meta["drain"]:
                break
            continue
        if complete():
            if all_expected:
                done_at = cycle + 1
                if meta["drain"] == 0:
                    break
                continue
            quiet = 0 if any_valid else quiet + 1
            if quiet >= meta["idle"]:
                break
            if quiet:
                continue
        if cycle - last_event >= meta["timeout"]:
            status = "timeout"
            break
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for name in expect:
        if len(received[name]) > expect[name]:
            status = "extra_beats"
    out = {}
    for name, sink in sinks.items():
        nwords = words_for(sink.layout["width"])
        out[f"out_{name}"] = np.array([_words(pack(sink.layout, v), nwords)
                                       for v in received[name]], dtype=np.uint32
                                      ).reshape(-1, nwords)
        out[f"cyc_{name}"] = np.array(sink.beat_cycles, dtype=np.int64)
    for name, src in sources.items():
        out[f"cyc_{name}"] = np.array(src.beat_cycles, dtype=np.int64)
    cycles_run = tb.cycle
    all_cycles = [c for k, v in out.items() if k.startswith("cyc_") for c in v[-1:]]
    result_meta = {"status": status, "sim_cycles": cycles_run,
                   "total_cycles": int(max(all_cycles)) + 1 if all_cycles else 0,
                   "wall_seconds": wall, "cpu_seconds": cpu, "profile": profile.name,
                   "seed": tb.seed}
    np.savez(_OUTS[case], meta=np.array(json.dumps(result_meta)), **out)
    tb.record("status", status)
    tb.record("sim_cycles", cycles_run)
    tb.record("wall_seconds", round(wall, 4))
    for name in out_names:
        if name in expect:
            tb.scoreboard.check(expect[name], len(received[name]), f"{name} beat count")
    tb.scoreboard.check("ok", status, "run status")
    tb.finish(min_checked=1)


def _case_test(case: int):
    async def test(dut):
        await _replay(dut, case)
    test.__name__ = test.__qualname__ = f"replay_{case}"
    return cocotb.test()(test)


for _case in range(len(_CASES)):
    globals()[f"replay_{_case}"] = _case_test(_case)
