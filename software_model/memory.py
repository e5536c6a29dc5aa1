"""Memory model for the GEMM cycle models: on-chip port widths, off-chip bandwidth, capacities.

The cycle models (software_model.systolic, software_model.flattened) assume every operand beat is
available the cycle the array wants it: they give *compute-bound* cycles. This module adds what a
memory system of given widths can deliver, as a roofline bound:

    cycles = max(compute, A words / A port, B words / B port, C words / C port,
                 off-chip bytes / off-chip bytes per cycle)

and names the term that binds. It is a bound, not a simulation (transfers are assumed to overlap
perfectly with compute and with each other), so it never understates what a port costs.

Traffic of a tiled GEMM (M x K x N; tiles of ``tile_m`` rows x ``tile_n`` columns of C, the whole
reduction per tile, as both arrays walk it): A is streamed once per column tile, B once per row
tile, and C written once per K-chunk (a split reduction writes partial sums), so

    A words = M * K * ceil(N / tile_n),  B words = K * N * ceil(M / tile_m),
    C words = M * N * chunks written, M * N * (chunks - 1) partial sums read back.

The result/accumulator buffer has one write and one read port of ``c_words_per_cycle`` each (a
split reduction reads a partial sum back while writing the previous row), so the C port's cycles
are the larger of the two counts over its width.

Off-chip: an operand whose whole matrix fits in its on-chip buffer is fetched once; one that does
not is fetched as often as it is streamed on chip (no reuse across tiles). C is written once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["MemorySettings", "gemm_traffic", "memory_bound"]


@dataclass(frozen=True)
class MemorySettings:
    """Bandwidths and capacities of the memory system feeding one array.

    On-chip ports in words per cycle (A: activations, B: weights, C: results, with a read port of
    the same width for partial sums);
    off-chip in bytes per cycle; capacities of the on-chip A/B/C buffers in bytes; word sizes in
    bytes (A, B operands; C accumulators).
    """

    name: str
    a_words_per_cycle: int
    b_words_per_cycle: int
    c_words_per_cycle: int
    offchip_bytes_per_cycle: float
    a_capacity_bytes: int = 1 << 20
    b_capacity_bytes: int = 4 << 20
    c_capacity_bytes: int = 1 << 20
    a_bytes: int = 1
    b_bytes: int = 1
    c_bytes: int = 4

    def __post_init__(self):
        for key in ("a_words_per_cycle", "b_words_per_cycle", "c_words_per_cycle",
                    "offchip_bytes_per_cycle", "a_capacity_bytes", "b_capacity_bytes",
                    "c_capacity_bytes", "a_bytes", "b_bytes", "c_bytes"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{key} must be a positive number, not {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def gemm_traffic(m: int, k: int, n: int, *, tile_m: int, tile_n: int, chunks: int = 1) -> dict:
    """On-chip words each port moves for a tiled M x K x N GEMM (see the module docstring)."""
    for key, value in (("m", m), ("k", k), ("n", n), ("tile_m", tile_m), ("tile_n", tile_n),
                       ("chunks", chunks)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, not {value!r}")
    return {"a_words": m * k * math.ceil(n / tile_n),
            "b_words": k * n * math.ceil(m / tile_m),
            "c_words": m * n * chunks, "c_reads": m * n * (chunks - 1)}


def memory_bound(compute_cycles: int, m: int, k: int, n: int, *, tile_m: int, tile_n: int,
                 memory: MemorySettings, chunks: int = 1) -> dict:
    """Compute-bound and bandwidth-bound cycles of a tiled GEMM, the larger and which binds."""
    t = gemm_traffic(m, k, n, tile_m=tile_m, tile_n=tile_n, chunks=chunks)
    a_off = (m * k if m * k * memory.a_bytes <= memory.a_capacity_bytes else t["a_words"])
    b_off = (k * n if k * n * memory.b_bytes <= memory.b_capacity_bytes else t["b_words"])
    offchip_bytes = a_off * memory.a_bytes + b_off * memory.b_bytes + m * n * memory.c_bytes
    terms = {
        "compute": compute_cycles,
        "a_port": math.ceil(t["a_words"] / memory.a_words_per_cycle),
        "b_port": math.ceil(t["b_words"] / memory.b_words_per_cycle),
        "c_port": math.ceil(max(t["c_words"], t["c_reads"]) / memory.c_words_per_cycle),
        "offchip": math.ceil(offchip_bytes / memory.offchip_bytes_per_cycle),
    }
    bound = max(terms, key=lambda key: (terms[key], key == "compute"))
    return {"memory": memory.name, "compute_cycles": compute_cycles,
            "bandwidth_cycles": max(v for key, v in terms.items() if key != "compute"),
            "cycles": terms[bound], "bound": bound,
            **{f"{key}_cycles": v for key, v in terms.items() if key != "compute"},
            **t, "offchip_bytes": offchip_bytes}
