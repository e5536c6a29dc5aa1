"""Traffic profiles: when a stream source idles and when a stream sink applies backpressure.

Every harness (cocotb under Verilator, ``amaranth.sim`` in the fast tier, the native C++ harness)
takes the same profile and seed and must drive the same cycles, so a profile is not a random
process sampled as the simulation goes but a pure function of (seed, stream name, cycle):

    blocked(cycle) = u(seed, stream, cycle // burst) < p

where ``u`` is a counter-based uniform draw (SplitMix64 of the seed, the stream's CRC-32 and the
burst index). ``burst = 1`` gives independent per-cycle stalls; a longer burst gives on/off runs
that fill buffers and run credits out. The same integer arithmetic is written once in numpy here
and once in the native harness's C++ (``cosim/native``), and a test holds them equal.

Source rule (as ``amaranth.lib.stream`` requires): once a beat is offered (valid high) it stays
offered until taken; a new beat is offered at cycle c only if the source is not blocked at c.
Sink rule: ``ready`` is low exactly at the blocked cycles.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Pattern", "Profile", "PROFILES", "STRESS_PROFILES", "profile", "splitmix64",
           "blocked_cycles", "stream_salt"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function of ``x`` (uint64, wrapping)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def stream_salt(name: str) -> int:
    """Per-stream constant so two streams under one seed see different patterns."""
    return zlib.crc32(name.encode())


@dataclass(frozen=True)
class Pattern:
    """Blocked with probability ``p`` (0..1), decided once per ``burst`` cycles."""

    p: float = 0.0
    burst: int = 1

    def __post_init__(self):
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"Pattern probability must be in [0, 1], not {self.p!r}")
        if not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError(f"Pattern burst must be a positive integer, not {self.burst!r}")

    @property
    def threshold(self) -> int:
        """``p`` as a 32-bit integer threshold: blocked when the draw's top 32 bits are below it."""
        return min(int(round(self.p * (1 << 32))), 1 << 32)

    def blocked(self, seed: int, stream: str, start: int, count: int) -> np.ndarray:
        """Boolean array: is the stream blocked at cycles ``start .. start + count - 1``?"""
        return blocked_cycles(seed, stream_salt(stream), self.threshold, self.burst, start, count)

    def to_json(self) -> dict:
        return {"p": self.p, "burst": self.burst, "threshold": self.threshold}


def blocked_cycles(seed: int, salt: int, threshold: int, burst: int, start: int,
                   count: int) -> np.ndarray:
    if threshold <= 0:
        return np.zeros(count, dtype=bool)
    if threshold >= 1 << 32:
        return np.ones(count, dtype=bool)
    cycles = np.arange(start, start + count, dtype=np.uint64)
    key = np.uint64(((seed & 0xFFFFFFFF) << 32 | (salt & 0xFFFFFFFF)) & _MASK64)
    with np.errstate(over="ignore"):
        draw = splitmix64(key ^ splitmix64(cycles // np.uint64(burst)))
    return (draw >> np.uint64(32)) < np.uint64(threshold)


@dataclass(frozen=True)
class Profile:
    """Input idling (every source) and output backpressure (every sink) of one test run."""

    name: str
    source: Pattern
    sink: Pattern
    doc: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "source": self.source.to_json(), "sink": self.sink.to_json()}


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("smooth", Pattern(), Pattern(), "no gaps, always ready: the throughput case"),
    Profile("mild", Pattern(0.2), Pattern(0.2), "20% input gaps and 20% output stalls"),
    Profile("backpressure", Pattern(0.0), Pattern(0.9),
            "90% output stalls: result buffers fill and credits run out"),
    Profile("bursty", Pattern(0.3, 8), Pattern(0.5, 16),
            "on/off runs of 8 (input) and 16 (output) cycles"),
    Profile("starved", Pattern(0.9), Pattern(0.0), "input valid 10% of cycles"),
)}

#: Profiles every stream regression runs under (``smooth`` is the cycle-model tests' own).
STRESS_PROFILES = ("mild", "backpressure", "bursty", "starved")


def profile(spec: "str | Profile | None" = None, *, gap: float | None = None,
            stall: float | None = None) -> Profile:
    """A named profile, or an ad-hoc one from gap/stall probabilities (the old knobs)."""
    if isinstance(spec, Profile):
        return spec
    if spec is not None:
        if spec not in PROFILES:
            raise ValueError(f"unknown traffic profile {spec!r}; known: {', '.join(PROFILES)}")
        base = PROFILES[spec]
    else:
        base = PROFILES["mild"]
    if gap is None and stall is None:
        return base
    src = Pattern(gap, base.source.burst) if gap is not None else base.source
    snk = Pattern(stall, base.sink.burst) if stall is not None else base.sink
    return Profile(f"{base.name}(gap={src.p:g},stall={snk.p:g})", src, snk)
