"""The fast tier: drive a component's streams in ``amaranth.sim``, no Verilator build.

:func:`run_streams` plays input beats into every input stream and collects every output stream's
beats, cycle by cycle, under a :mod:`cosim.traffic` profile (the same seeded idle and stall cycles
the cocotb and native harnesses apply), and returns the beats with the cycle of each handshake.
Tests compare them with the golden models, so a datapath bug shows in seconds, before any
Verilator build.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from amaranth.lib import data, wiring
from amaranth.lib.wiring import Flow
from amaranth.sim import Simulator

from cosim.traffic import Profile, profile as make_profile

__all__ = ["StreamRun", "run_streams", "stream_ports", "to_python"]

_CHUNK = 4096


def to_python(value: Any) -> Any:
    """A simulator value -> dict (struct) / list (array) / int, signed where the layout is."""
    if isinstance(value, data.Const):
        layout = value.shape()
        if isinstance(layout, data.ArrayLayout):
            return [to_python(value[i]) for i in range(layout.length)]
        return {name: to_python(value[name]) for name, _field in layout}
    return int(value)


def stream_ports(component: wiring.Component) -> tuple[list[str], list[str]]:
    """Names of the component's input and output stream members (``valid``/``ready``/``payload``)."""
    inputs, outputs = [], []
    for name, member in component.signature.members.items():
        if not member.is_signature:
            continue
        names = set(member.signature.members)
        if {"valid", "ready", "payload"} <= names:
            (inputs if member.flow == Flow.In else outputs).append(name)
    return inputs, outputs


@dataclass
class StreamRun:
    """What came out: beats per output stream and the handshake cycle of every beat."""

    outputs: dict[str, list] = field(default_factory=dict)
    cycles: dict[str, list[int]] = field(default_factory=dict)
    total_cycles: int = 0

    def beats(self, name: str) -> list:
        return self.outputs[name]


class _Gate:
    """Blocked cycles of one stream, computed a chunk at a time from the profile's pattern."""

    def __init__(self, pattern, seed: int, stream: str):
        self.pattern, self.seed, self.stream = pattern, seed, stream
        self.start, self.mask = 0, pattern.blocked(seed, stream, 0, _CHUNK)

    def __call__(self, cycle: int) -> bool:
        if cycle >= self.start + len(self.mask):
            self.start = cycle - cycle % _CHUNK
            self.mask = self.pattern.blocked(self.seed, self.stream, self.start, _CHUNK)
        return bool(self.mask[cycle - self.start])


def run_streams(component: wiring.Component, inputs: Mapping[str, Sequence[Any]],
                expect: Mapping[str, int], *, profile: "str | Profile | None" = "smooth",
                seed: int = 1, max_cycles: int = 50_000, drain_cycles: int = 16,
                vcd: str | None = None) -> StreamRun:
    """Simulate until every input beat is taken and every output stream produced ``expect[name]``
    beats, then ``drain_cycles`` more with the outputs ready (a beat beyond the expected count is
    an error). Raises ``AssertionError`` with the progress of each stream on a timeout."""
    prof = make_profile(profile)
    in_names, out_names = stream_ports(component)
    unknown = set(inputs) - set(in_names) | set(expect) - set(out_names)
    if unknown:
        raise ValueError(f"{type(component).__name__} has no stream(s) {sorted(unknown)}; "
                         f"inputs {in_names}, outputs {out_names}")
    run = StreamRun(outputs={n: [] for n in out_names},
                    cycles={n: [] for n in [*in_names, *out_names]})
    src_gate = {n: _Gate(prof.source, seed, n) for n in in_names}
    snk_gate = {n: _Gate(prof.sink, seed, n) for n in out_names}
    beats = {n: list(inputs.get(n, ())) for n in in_names}
    want = {n: int(expect.get(n, 0)) for n in out_names}

    async def bench(ctx):
        sent = {n: 0 for n in in_names}
        offered = {n: False for n in in_names}
        done_at = None
        for cycle in range(max_cycles):
            draining = done_at is not None
            for n in in_names:
                port = getattr(component, n)
                if not offered[n] and sent[n] < len(beats[n]) and not src_gate[n](cycle):
                    ctx.set(port.payload, beats[n][sent[n]])
                    offered[n] = True
                ctx.set(port.valid, int(offered[n]))
            for n in out_names:
                ctx.set(getattr(component, n).ready, 1 if draining else int(not snk_gate[n](cycle)))
            for n in in_names:
                if offered[n] and ctx.get(getattr(component, n).ready):
                    run.cycles[n].append(cycle)
                    sent[n] += 1
                    offered[n] = False
            for n in out_names:
                port = getattr(component, n)
                if ctx.get(port.valid) and ctx.get(port.ready):
                    run.cycles[n].append(cycle)
                    run.outputs[n].append(to_python(ctx.get(port.payload)))
                    if len(run.outputs[n]) > want[n]:
                        raise AssertionError(
                            f"{n}: beat {len(run.outputs[n])} at cycle {cycle}, only {want[n]} "
                            "expected")
            await ctx.tick()
            if done_at is None and all(sent[n] == len(beats[n]) for n in in_names) and \
                    all(len(run.outputs[n]) == want[n] for n in out_names):
                done_at = cycle
                run.total_cycles = cycle + 1
            if done_at is not None and cycle - done_at >= drain_cycles:
                return
        progress = ", ".join([f"{n}: {sent[n]}/{len(beats[n])} in" for n in in_names]
                             + [f"{n}: {len(run.outputs[n])}/{want[n]} out" for n in out_names])
        raise AssertionError(f"timeout after {max_cycles} cycles ({prof.name}, seed {seed}): "
                             f"{progress}")

    sim = Simulator(component)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return run
