"""The off-chip memory behind the accelerator's ``mem_req`` / ``mem_resp`` ports.

One model, written so that the cocotb testbench, the amaranth.sim fast tier and the native C++
harness (cosim/fast.py) can implement it identically (docs/accelerator.md section 6 states it):

* Memory: ``words`` words (raw integers of the word's bit width), all zero at reset, addressed
  modulo ``words``.
* ``mem_req`` is ready at cycle ``c`` when the memory is free (``c >= free_at``) and the traffic
  profile's sink pattern does not block stream ``mem_req`` at ``c``
  (:mod:`cosim.traffic`: ``profile.sink.blocked(seed, "mem_req", c)``).
* A request taken at cycle ``c`` occupies the memory for ``ceil(count / words_per_cycle)``
  cycles: ``free_at = c + that``. A write stores ``data[0 .. count-1]`` at ``addr ..`` at once.
  A read copies ``count`` words at once (so requests act in order) and its response is due at
  ``c + ceil(count / words_per_cycle) - 1 + latency``; responses queue in order.
* ``mem_resp`` follows the stream source rule with the profile's source pattern on stream
  ``mem_resp``: at cycle ``c``, if no beat is offered, the queue's head is due (``due <= c``) and
  ``profile.source.blocked(seed, "mem_resp", c)`` is false, the head is offered; it stays
  offered until taken. Words past the request's ``count`` are zero.

The harness calls :meth:`DramModel.drive` before the clock edge to set the ports and
:meth:`DramModel.observe` with what the design did at that edge.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cosim.traffic import Profile, profile as make_profile

__all__ = ["DramModel", "DramParams"]

_CHUNK = 4096


@dataclass(frozen=True)
class DramParams:
    """Latency (cycles, >= 1) and bandwidth (words per cycle, >= 1) of the memory."""

    latency: int = 8
    words_per_cycle: int = 1

    def __post_init__(self):
        if not isinstance(self.latency, int) or self.latency < 1:
            raise ValueError(f"DRAM latency must be a positive integer, not {self.latency!r}")
        if not isinstance(self.words_per_cycle, int) or self.words_per_cycle < 1:
            raise ValueError(f"DRAM words per cycle must be a positive integer, not "
                             f"{self.words_per_cycle!r}")

    def occupancy(self, count: int) -> int:
        return -(-count // self.words_per_cycle)


class _Mask:
    def __init__(self, pattern, seed, stream):
        self.pattern, self.seed, self.stream = pattern, seed, stream
        self.start, self.mask = 0, pattern.blocked(seed, stream, 0, _CHUNK)

    def __call__(self, cycle: int) -> bool:
        if not self.start <= cycle < self.start + len(self.mask):
            self.start = cycle - cycle % _CHUNK
            self.mask = self.pattern.blocked(self.seed, self.stream, self.start, _CHUNK)
        return bool(self.mask[cycle - self.start])


@dataclass
class DramModel:
    words: int
    port_words: int
    params: DramParams = field(default_factory=DramParams)
    profile: "str | Profile" = "smooth"
    seed: int = 1

    def __post_init__(self):
        self.memory = np.zeros(self.words, dtype=object)
        self.memory[:] = 0
        prof = make_profile(self.profile)
        self.profile = prof
        self._req_blocked = _Mask(prof.sink, self.seed, "mem_req")
        self._resp_blocked = _Mask(prof.source, self.seed, "mem_resp")
        self.free_at = 0
        self.queue: deque = deque()         # (due cycle, [words])
        self.offered = None
        self.reads = self.writes = 0

    # -- host access ------------------------------------------------------------------------------
    def load(self, base: int, values) -> None:
        for k, v in enumerate(values):
            self.memory[(base + k) % self.words] = int(v)

    def dump(self, base: int = 0, count: int | None = None) -> list[int]:
        count = self.words if count is None else count
        return [int(self.memory[(base + k) % self.words]) for k in range(count)]

    # -- per cycle --------------------------------------------------------------------------------
    def drive(self, cycle: int):
        """Port values for this cycle: ``(mem_req ready, mem_resp valid, mem_resp words)``."""
        if self.offered is None and self.queue and self.queue[0][0] <= cycle \
                and not self._resp_blocked(cycle):
            self.offered = self.queue.popleft()[1]
        ready = cycle >= self.free_at and not self._req_blocked(cycle)
        return ready, self.offered is not None, self.offered

    def observe(self, cycle: int, request, response_taken: bool) -> None:
        """``request``: ``(write, addr, count, data words)`` taken this cycle, or None."""
        if response_taken:
            assert self.offered is not None, "mem_resp taken while not offered"
            self.offered = None
        if request is None:
            return
        write, addr, count, words = request
        if not 1 <= count <= self.port_words:
            raise AssertionError(f"mem_req at cycle {cycle}: count {count} outside 1.."
                                 f"{self.port_words}")
        busy = self.params.occupancy(count)
        self.free_at = cycle + busy
        if write:
            for k in range(count):
                self.memory[(addr + k) % self.words] = int(words[k])
            self.writes += 1
        else:
            data = [int(self.memory[(addr + k) % self.words]) for k in range(count)]
            data += [0] * (self.port_words - count)
            self.queue.append((cycle + busy - 1 + self.params.latency, data))
            self.reads += 1

    @property
    def idle(self) -> bool:
        return self.offered is None and not self.queue


# ------------------------------------------------------------------------------------------------
# amaranth.sim driver (the fast tier): a component's memory port on a DramModel
# ------------------------------------------------------------------------------------------------


def _field(layout, name):
    for fname, fld in layout:
        if fname == name:
            return fld.offset, fld.width
    raise KeyError(name)


def split_request(layout, raw: int, word_bits: int, port_words: int):
    """A raw ``mem_req`` payload -> ``(write, addr, count, [words])``."""
    out = []
    for name in ("write", "addr", "count", "data"):
        off, width = _field(layout, name)
        out.append((raw >> off) & ((1 << width) - 1))
    words = [(out[3] >> (k * word_bits)) & ((1 << word_bits) - 1) for k in range(port_words)]
    return out[0], out[1], out[2], words


def join_words(words, word_bits: int) -> int:
    raw = 0
    for k, w in enumerate(words):
        raw |= int(w) << (k * word_bits)
    return raw


def simulate_with_dram(component, dram: DramModel, *, inputs=None, outputs=(), done=None,
                       max_cycles: int = 200_000, vcd: str | None = None):
    """Run ``component`` (ports ``mem_req``/``mem_resp``) in amaranth.sim against ``dram``.

    ``inputs``: stream name -> list of raw payload ints, played under the DRAM's traffic profile
    (source pattern, same seed); ``outputs``: stream names collected (ready follows the sink
    pattern) as ``{name: [(cycle, raw payload)]}``; ``done(ctx, outputs, cycle)`` ends the run (after
    every input beat was taken and the memory is idle). Returns ``(outputs, cycles)``."""
    from amaranth.sim import Simulator

    inputs = {k: list(v) for k, v in (inputs or {}).items()}
    prof = dram.profile
    gates = {n: _Mask(prof.source, dram.seed, n) for n in inputs}
    stalls = {n: _Mask(prof.sink, dram.seed, n) for n in outputs}
    got = {n: [] for n in outputs}
    req_port, resp_port = component.mem_req, component.mem_resp
    req_layout = req_port.payload.shape()
    word_bits = len(resp_port.payload.as_value()) // dram.port_words
    result = {}

    async def bench(ctx):
        sent = {n: 0 for n in inputs}
        offered = {n: False for n in inputs}
        for cycle in range(max_cycles):
            for n, beats in inputs.items():
                port = getattr(component, n)
                if not offered[n] and sent[n] < len(beats) and not gates[n](cycle):
                    ctx.set(port.payload.as_value(), beats[sent[n]])
                    offered[n] = True
                ctx.set(port.valid, offered[n])
            for n in outputs:
                ctx.set(getattr(component, n).ready, not stalls[n](cycle))
            ready, resp_valid, resp_words = dram.drive(cycle)
            ctx.set(req_port.ready, ready)
            ctx.set(resp_port.valid, resp_valid)
            if resp_valid:
                ctx.set(resp_port.payload.as_value(), join_words(resp_words, word_bits))
            request = None
            if ready and ctx.get(req_port.valid):
                request = split_request(req_layout, ctx.get(req_port.payload.as_value()),
                                        word_bits, dram.port_words)
            taken = resp_valid and bool(ctx.get(resp_port.ready))
            for n in inputs:
                if offered[n] and ctx.get(getattr(component, n).ready):
                    sent[n] += 1
                    offered[n] = False
            for n in outputs:
                port = getattr(component, n)
                if ctx.get(port.valid) and not stalls[n](cycle):
                    got[n].append((cycle, ctx.get(port.payload.as_value())))
            dram.observe(cycle, request, taken)
            await ctx.tick()
            if all(sent[n] == len(b) for n, b in inputs.items()) and dram.idle \
                    and (done is None or done(ctx, got, cycle)):
                result["cycles"] = cycle + 1
                return
        progress = ", ".join(f"{n}: {sent[n]}/{len(b)}" for n, b in inputs.items())
        raise AssertionError(f"timeout after {max_cycles} cycles ({prof.name}, seed "
                             f"{dram.seed}): inputs {progress}; outputs "
                             + ", ".join(f"{n}: {len(v)}" for n, v in got.items()))

    sim = Simulator(component)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return got, result["cycles"]
