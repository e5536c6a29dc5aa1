"""Golden model of the integer systolic arrays: exact GEMM semantics and an analytical cycle model.

Numbers: signed operands, exact products, an accumulator of ``acc_width`` bits that wraps (two's
complement) or saturates after every addition in order of increasing k. Wrap-around is
order-independent; saturation is not, which is why the order is part of the definition.

Cycles: the arrays are deterministic, so their timing is a small recurrence over jobs (when each
job's operands can enter, when its results leave), with latencies read off the RTL's register
stages. ``scalesim_cycles`` is the closed form of what the real SCALE-Sim v3 simulates for the same
array and GEMM (checked against the simulator itself by tests/test_scalesim.py through
gen/scalesim.py); ``ksplit_accumulation`` prices the partial-sum additions of split reductions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["gemm", "wrap", "saturate", "JobTiming", "os_schedule", "ws_schedule",
           "os_latency", "ws_latency", "tiled_gemm_cycles", "scalesim_cycles",
           "single_tile_cycles", "ksplit_accumulation"]


def wrap(values: np.ndarray, width: int) -> np.ndarray:
    """Two's-complement wrap of Python/numpy integers to ``width`` bits (object-safe)."""
    values = np.asarray(values, dtype=object)
    mod = 1 << width
    half = 1 << (width - 1)
    return np.vectorize(lambda v: ((int(v) + half) % mod) - half, otypes=[object])(values)


def saturate(values: np.ndarray, width: int) -> np.ndarray:
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    return np.clip(np.asarray(values, dtype=object), lo, hi)


def _check_operand(x: np.ndarray, width: int, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {x.shape}")
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if x.size and (int(x.min()) < lo or int(x.max()) > hi):
        raise ValueError(f"{name} has values outside int{width} ({lo} .. {hi})")
    return x.astype(object)


def gemm(a, b, *, a_width: int, b_width: int, acc_width: int, overflow: str = "wrap") -> np.ndarray:
    """C = A . B with the array's arithmetic. A is M x K, B is K x N; returns M x N Python ints."""
    a = _check_operand(a, a_width, "A")
    b = _check_operand(b, b_width, "B")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: A is {a.shape}, B is {b.shape}")
    if overflow == "wrap":
        return wrap(a.dot(b) if a.shape[1] else np.zeros((a.shape[0], b.shape[1]), object),
                    acc_width)
    if overflow != "saturate":
        raise ValueError(f"overflow must be 'wrap' or 'saturate', not {overflow!r}")
    acc = np.zeros((a.shape[0], b.shape[1]), dtype=object)
    for k in range(a.shape[1]):
        acc = saturate(acc + np.outer(a[:, k], b[k, :]), acc_width)
    return acc


# ------------------------------------------------------------------------------------------------
# Cycle model
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobTiming:
    """Cycle numbers (0 = first cycle after reset) of one job, inputs always valid, output ready."""
    first_in: int        # cycle its first operand beat is accepted
    last_in: int         # cycle its last operand beat is accepted
    first_out: int       # cycle its first result beat is taken
    last_out: int        # cycle its last result beat is taken


def os_latency(rows: int, cols: int, product_register: bool = False) -> int:
    """Cycles from a job's last operand beat to its first result beat (output-stationary).

    Row 0 of C leads: input register (1), cols - 1 hops to PE(0, cols-1), its product register
    (1, with ``product_register``), its shadow register (1), the chain slot (1), rows - 1 chain
    hops down the last column (no deskew there), and the result FIFO's write (1; its read is
    combinational).
    """
    return 1 + (cols - 1) + int(product_register) + 1 + 1 + (rows - 1) + 1


def ws_latency(rows: int, cols: int, product_register: bool = False) -> int:
    """Cycles from an activation beat to its result beat (weight-stationary): input register, row
    skew (rows - 1), cols hops to the last column's psum register (each PE one cycle later with
    ``product_register``, and so the partial sum it adds: only the last PE's register adds up),
    FIFO write (1)."""
    return 1 + (rows - 1) + cols + int(product_register) + 1


def os_schedule(ks: list[int], *, rows: int, cols: int, buffer_rows: int,
                product_register: bool = False) -> list[JobTiming]:
    """Timing of back-to-back output-stationary jobs with reduction lengths ``ks``."""
    lat = os_latency(rows, cols, product_register)
    jobs: list[JobTiming] = []
    t = 0
    for n, k in enumerate(ks):
        first_in = t
        last_in = first_in + k - 1
        if jobs:
            last_in = max(last_in, jobs[-1].last_in + rows)
        # Credits: rows result rows must be free. Row r of job p leaves at jobs[p].first_out + r and
        # its credit is back one cycle later.
        need = buffer_rows - rows       # rows that may still be outstanding when this job commits
        outstanding = [(j.first_out + r) for j in jobs for r in range(rows)]
        outstanding.sort()
        if len(outstanding) > need:
            # The (len - need)-th oldest row must have left before this job's last beat.
            last_in = max(last_in, outstanding[len(outstanding) - need - 1] + 1)
        first_out = last_in + lat
        jobs.append(JobTiming(first_in, last_in, first_out, first_out + rows - 1))
        t = last_in + 1
    return jobs


def ws_schedule(jobs_km: list[tuple[int, int]], *, rows: int, cols: int,
                buffer_rows: int, product_register: bool = False) -> list[JobTiming]:
    """Timing of weight-stationary jobs given (K, M): K weight rows, M activation rows each."""
    lat = ws_latency(rows, cols, product_register)
    out: list[JobTiming] = []
    w_end: list[int] = []           # cycle of each weight packet's last beat
    a_end: list[int] = []           # cycle of each activation packet's last beat
    w_t = 0
    a_t = 0
    result_times: list[int] = []    # cycle each result row leaves
    for n, (k, m) in enumerate(jobs_km):
        start_w = w_t
        if n >= 2:
            start_w = max(start_w, a_end[n - 2] + 1)
        w_end.append(start_w + k - 1)
        w_t = w_end[-1] + 1
        t = max(a_t, w_end[n] + 1)
        first_in = t
        for r in range(m):
            # One free row in the result buffer: the row buffer_rows places back must have left.
            idx = len(result_times) - buffer_rows
            if idx >= 0:
                t = max(t, result_times[idx] + 1)
            result_times.append(t + lat)
            if r == 0:
                first_in = t
            t += 1
        a_end.append(t - 1)
        a_t = t
        out.append(JobTiming(first_in, t - 1, result_times[-m], result_times[-1]))
    return out


def tiled_gemm_cycles(m: int, k: int, n: int, *, rows: int, cols: int, dataflow: str,
                      buffer_rows: int | None = None, max_k: int | None = None,
                      memory=None, product_register: bool = False) -> dict:
    """Cycles and PE utilization of an M x K x N GEMM tiled onto the array.

    Output-stationary: one job per (rows x cols) tile of C and K-chunk of at most ``max_k``.
    Weight-stationary: one job per (K-chunk of rows) x (cols) tile of B, streaming all M rows of A.
    Partial sums of K-chunks are added outside the array (the accumulator memory in Gemmini):
    :func:`ksplit_accumulation` gives what that costs, and with ``memory`` (a
    :class:`software_model.memory.MemorySettings`) their writes and reads are charged to the result
    port. ``cycles`` are compute-bound (operands every cycle: what the RTL does when fed); with
    ``memory`` the result also has ``memory``: the bandwidth-bound cycles per port, the bound
    ``cycles`` (the larger) and which one binds.
    """
    if dataflow == "output_stationary":
        buffer_rows = buffer_rows or 2 * rows
        chunk = min(k, max_k) if max_k else k
        jobs = math.ceil(m / rows) * math.ceil(n / cols) * math.ceil(k / chunk)
        # Uneven last chunks are rounded up to full ones: an upper bound, exact when chunk | K.
        timing = _os_schedule_fast(chunk, jobs, rows=rows, cols=cols, buffer_rows=buffer_rows,
                                   product_register=product_register)
    elif dataflow == "weight_stationary":
        buffer_rows = buffer_rows or rows + cols + 4
        chunks = [min(rows, k - c) for c in range(0, k, rows)]
        jobs_km = [(kc, m) for _ in range(math.ceil(n / cols)) for kc in chunks]
        timing = ws_schedule(jobs_km, rows=rows, cols=cols, buffer_rows=buffer_rows,
                             product_register=product_register)[-1].last_out
    else:
        raise ValueError(f"unknown dataflow {dataflow!r}")
    cycles = timing + 1
    macs = m * k * n
    result = {"cycles": cycles, "macs": macs, "utilization": macs / (cycles * rows * cols)}
    if memory is not None:
        from software_model.memory import memory_bound
        if dataflow == "output_stationary":
            tile_m, chunks = rows, math.ceil(k / (min(k, max_k) if max_k else k))
        else:
            tile_m, chunks = m, math.ceil(k / rows)
        bound = memory_bound(cycles, m, k, n, tile_m=tile_m, tile_n=cols, memory=memory,
                             chunks=chunks)
        bound["utilization"] = macs / (bound["cycles"] * rows * cols)
        result["memory"] = bound
    return result


def _os_schedule_fast(k: int, jobs: int, *, rows: int, cols: int, buffer_rows: int,
                      product_register: bool = False) -> int:
    """Last result cycle of ``jobs`` identical OS jobs, by the same rules as :func:`os_schedule`
    but O(jobs): with equal jobs the binding credit constraint is always the same job back."""
    lat = os_latency(rows, cols, product_register)
    back = buffer_rows // rows          # jobs whose rows may be outstanding, incl. this one
    last_in: list[int] = []
    for n in range(jobs):
        t = (last_in[-1] + k) if last_in else k - 1
        if last_in:
            t = max(t, last_in[-1] + rows)
        # credit: with whole jobs of `rows` rows, job n - back's last row must have left
        # (buffer_rows - rows outstanding rows allowed).
        need = buffer_rows - rows
        p_rows = n * rows - need       # rows that must have left
        if p_rows > 0:
            job, r = divmod(p_rows - 1, rows)
            t = max(t, last_in[job] + lat + r + 1)
        last_in.append(t)
    del back
    return last_in[-1] + lat + rows - 1


def scalesim_cycles(m: int, k: int, n: int, *, rows: int, cols: int, dataflow: str) -> int:
    """Cycles SCALE-Sim v3 (PyPI ``scalesim`` 3.0.0) simulates for this GEMM, in closed form.

    Per fold it costs R + C + T - 2 cycles output-stationary and 2R + C + T - 2 weight-stationary
    (not its paper's 2R + C + T - 2 for both), folds run back to back with no overlap:
    OS: Sr = M, Sc = N, T = K; WS: the array holds a K x N tile of B, Sr = K, Sc = N, T = M;
    folds = ceil(Sr/R) * ceil(Sc/C). This is the number of cycles; SCALE-Sim's report prints
    "Total Cycles" one less (it counts from cycle 0). Equal to the simulator on every case tested
    (tests/test_scalesim.py, and the systolic/flattened benches record both).
    """
    if dataflow == "output_stationary":
        return (rows + cols + k - 2) * math.ceil(m / rows) * math.ceil(n / cols)
    if dataflow == "weight_stationary":
        return (2 * rows + cols + m - 2) * math.ceil(k / rows) * math.ceil(n / cols)
    raise ValueError(f"unknown dataflow {dataflow!r}")


def single_tile_cycles(k_or_m: int, *, rows: int, cols: int, dataflow: str) -> dict:
    """One tile on an empty array, ours (the RTL's cycle model) against SCALE-Sim's fold.

    OS: a rows x K x cols GEMM (one job); WS: an M x rows x cols GEMM (one weight tile). Ours,
    OS: K operand beats, then ``os_latency`` = R + C + 2 to the first result row, then R - 1 more
    rows, one per cycle down the column chain: K + 2R + C + 1. SCALE-Sim's fold is R + C + K - 2:
    it counts the last product's wavefront and no readout, so ours is R + 3 higher: R - 1 for
    draining the R result rows serially through one port (SCALE-Sim assumes the array's C
    elements leave at once), and 4 register stages it does not model (input register, shadow
    register, chain slot, result FIFO write). Tiled GEMMs hide all of it (double-buffered shadow
    registers; the next job's beats enter while the last one drains).

    WS: R weight beats, then M activation rows, each ``ws_latency`` = R + C + 1 to its result row:
    2R + C + M + 1 against SCALE-Sim's 2R + C + M - 2, 3 higher: the input register, the last
    column's partial-sum register and the result FIFO write, which SCALE-Sim's fold does not
    count. Between weight tiles the next tile's weights load while the current one computes.
    """
    if dataflow == "output_stationary":
        ours = tiled_gemm_cycles(rows, k_or_m, cols, rows=rows, cols=cols, dataflow=dataflow)
        ref = scalesim_cycles(rows, k_or_m, cols, rows=rows, cols=cols, dataflow=dataflow)
        shape = (rows, k_or_m, cols)
    else:
        ours = tiled_gemm_cycles(k_or_m, rows, cols, rows=rows, cols=cols, dataflow=dataflow)
        ref = scalesim_cycles(k_or_m, rows, cols, rows=rows, cols=cols, dataflow=dataflow)
        shape = (k_or_m, rows, cols)
    return {"m": shape[0], "k": shape[1], "n": shape[2], "cycles": ours["cycles"],
            "scalesim_cycles": ref, "extra": ours["cycles"] - ref}


def ksplit_accumulation(m: int, k: int, n: int, *, rows: int, cols: int, dataflow: str,
                        max_k: int | None = None, acc_width: int = 32,
                        result_words_per_cycle: int | None = None) -> dict:
    """What adding the partial sums of a split reduction costs, outside the array.

    A reduction longer than one job (OS: ``max_k``; WS: ``rows`` weight rows) leaves
    ``chunks = ceil(K / chunk)`` partial results per element of C. An accumulator buffer (as
    Gemmini's) adds them: per result row after the first chunk, one read of ``cols`` partial sums,
    ``cols`` additions and one write. Returned: the chunk count, the words read and written, the
    adds, the buffer capacity in accumulator words (a tile's rows x cols for OS, whose K-chunks
    run back to back; M x cols for WS, whose chunks each stream all M rows), and the cycles the
    accumulator port needs at ``result_words_per_cycle`` (default: ``cols``, one row per cycle,
    the rate rows leave the array, so a dual-ported buffer adds no cycles beyond its one
    pipeline stage, counted in ``extra_cycles``).
    """
    chunk = (min(k, max_k) if max_k else k) if dataflow == "output_stationary" else min(k, rows)
    chunks = math.ceil(k / chunk)
    port = result_words_per_cycle or cols
    partial_words = m * n * chunks                       # every chunk's result leaves the array
    adds = m * n * (chunks - 1)
    capacity = (rows if dataflow == "output_stationary" else m) * cols if chunks > 1 else 0
    port_cycles = math.ceil(partial_words / port)
    return {"chunks": chunks, "partial_words": partial_words, "adds": adds,
            "reads": adds, "writes": partial_words if chunks > 1 else 0,
            "buffer_words": capacity, "buffer_bits": capacity * acc_width,
            "port_words_per_cycle": port, "port_cycles": port_cycles,
            "extra_cycles": 1 if chunks > 1 else 0}
