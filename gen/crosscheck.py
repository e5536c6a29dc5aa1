"""Run identical stimulus through the native harness and through cocotb, and compare.

For each case (input beats, traffic profile, expected output counts) the native harness
(:mod:`cosim.fast`) and the cocotb replay test (:mod:`cosim.replay`, one simulator process for all
cases) run the same packed beats; :func:`differences` lists every output beat, handshake cycle or
run length that differs. Both sides run on the design's cocotb build by default (cocotb's main and
the native harness in one executable, shared with the block's regression), or the native side on
its own optimised build (``fast_harness="fast"``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosim.fast import Design, FastRun, Words, _pack_stream, simulate
from cosim.replay import read_result, write_stimulus
from cosim.traffic import Profile, profile as make_profile

__all__ = ["Case", "ReplayRun", "run_both", "differences"]


@dataclass
class Case:
    inputs: dict[str, Any]
    profile: "str | Profile" = "smooth"
    expect: dict[str, int] | None = None    # None: taken from an idle-terminated native run
    drain: int = 16


@dataclass
class ReplayRun:
    """The cocotb side of a case: output words and handshake cycles per stream, and timing."""

    words: dict[str, np.ndarray] = field(default_factory=dict)
    cycles: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def sim_cycles(self) -> int:
        return int(self.meta.get("sim_cycles", 0))

    @property
    def wall_seconds(self) -> float:
        return float(self.meta.get("wall_seconds", 0.0))


def run_both(config, design: Design, cases: list[Case], *, seed: int = 1,
             fast_harness: str = "cocotb", fast_opt: str | None = None,
             cocotb_opt: str | None = None) -> list[tuple[FastRun, ReplayRun]]:
    """Every case through both harnesses. ``config`` is what :func:`gen.cosim_run.run_cosim` takes
    (it builds and runs the cocotb side, ``cocotb_opt``: its build's C++ optimisation, default
    the regressions' -O0); ``design`` the same design as plain data."""
    from gen.cosim_run import run_cosim

    fast_runs, stims, outs = [], [], []
    work = tempfile.mkdtemp(prefix="accelgen-crosscheck-")
    try:
        for i, case in enumerate(cases):
            prof = make_profile(case.profile)
            packed = {s.name: _pack_stream(s, case.inputs.get(s.name, [])) for s in design.inputs}
            expect = case.expect
            if expect is None:
                probe = simulate(design, {k: _words(v) for k, v in packed.items()}, profile=prof,
                                 seed=seed, harness=fast_harness, opt=fast_opt)
                expect = {s.name: len(probe.words[s.name]) for s in design.outputs}
            fast_runs.append(simulate(design, {k: _words(v) for k, v in packed.items()},
                                      expect=expect, profile=prof, seed=seed,
                                      drain_cycles=case.drain, harness=fast_harness,
                                      opt=fast_opt))
            stim, out = os.path.join(work, f"stim{i}.npz"), os.path.join(work, f"out{i}.npz")
            write_stimulus(stim, packed, profile=prof, expect=expect, drain=case.drain)
            stims.append(stim)
            outs.append(out)
        run_cosim(config, "cosim.replay", seed=seed, rerun_with_waves=False, build_opt=cocotb_opt,
                  env={"ACCELGEN_REPLAY": os.pathsep.join(stims),
                       "ACCELGEN_REPLAY_OUT": os.pathsep.join(outs)})
        replays = []
        for out in outs:
            meta, words, cycles = read_result(out)
            replays.append(ReplayRun(words, cycles, meta))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return list(zip(fast_runs, replays))


def _words(words: np.ndarray) -> Words:
    return Words(words)


def differences(fast: FastRun, cocotb: ReplayRun, limit: int = 10) -> list[str]:
    """Human-readable differences between the two runs of one case (empty: identical)."""
    out: list[str] = []
    for s in fast.design.outputs:
        a, b = fast.words[s.name], cocotb.words.get(s.name, np.zeros((0, s.nwords), np.uint32))
        if a.shape != b.shape:
            out.append(f"{s.name}: {len(a)} beats native, {len(b)} cocotb")
        else:
            bad = np.nonzero((a != b).any(axis=1))[0]
            for i in bad[:limit]:
                out.append(f"{s.name} beat {i}: native {fast.beats(s.name)[i]!r} != cocotb "
                           f"words {b[i].tolist()}")
    for s in fast.design.streams:
        a, b = fast.cycles[s.name], cocotb.cycles.get(s.name, np.zeros(0, np.int64))
        if a.shape != b.shape:
            out.append(f"{s.name}: {len(a)} handshakes native, {len(b)} cocotb")
            continue
        bad = np.nonzero(a != b)[0]
        for i in bad[:limit]:
            out.append(f"{s.name} handshake {i}: cycle {a[i]} native, {b[i]} cocotb")
    if fast.sim_cycles != cocotb.sim_cycles:
        out.append(f"cycles simulated: {fast.sim_cycles} native, {cocotb.sim_cycles} cocotb")
    if cocotb.meta.get("status") != "ok" or fast.status != "ok":
        out.append(f"status: {fast.status} native, {cocotb.meta.get('status')} cocotb")
    return out
