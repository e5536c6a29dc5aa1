"""Golden and cycle models of the PLENA-style flattened systolic array (``hw.flattened``).

Numbers: the array has S = MLEN/BLEN output-stationary sub-arrays. Beat t of a job carries the
k-steps t*S .. t*S + S - 1; sub-array s takes k = t*S + s, so it accumulates the k with
``k mod S == s`` in increasing order (wrapping or saturating after every addition, as the
foundation array does). A reduction whose length is not a multiple of S is padded with zero
k-steps. The balanced adder tree then adds the S partial tiles pairwise, level by level
((p0 + p1) + (p2 + p3)) ..., wrapping or saturating after every addition. With ``wrap`` the
result is simply the exact product wrapped to the accumulator width; with ``saturate`` the order
above is the definition.

Cycles: a deterministic recurrence over jobs (``flat_schedule``), the latency read off the RTL's
registers; the cosim ``cycle_model`` test asserts RTL cycles == model cycles job by job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from software_model.systolic import gemm, os_latency, saturate, tiled_gemm_cycles, wrap

__all__ = ["flat_gemm", "flat_mxint_gemm", "flat_latency", "mx_align_stages", "flat_schedule",
           "flat_tiled_cycles", "square_tiled_cycles", "FlatJobTiming"]


def _tree_add(x, y, acc_width: int, overflow: str):
    total = np.asarray(x, dtype=object) + np.asarray(y, dtype=object)
    return wrap(total, acc_width) if overflow == "wrap" else saturate(total, acc_width)


def flat_gemm(a, b, *, sub_arrays: int, a_width: int, b_width: int, acc_width: int,
              overflow: str = "wrap") -> np.ndarray:
    """C = A . B as the flattened array computes it. A is M x K, B is K x N; M x N Python ints."""
    if sub_arrays < 1 or sub_arrays & (sub_arrays - 1):
        raise ValueError(f"sub_arrays must be a power of two, not {sub_arrays}")
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"need A (M x K) and B (K x N), got {a.shape} and {b.shape}")
    level = [gemm(a[:, s::sub_arrays], b[s::sub_arrays, :], a_width=a_width, b_width=b_width,
                  acc_width=acc_width, overflow=overflow) for s in range(sub_arrays)]
    while len(level) > 1:
        level = [_tree_add(level[i], level[i + 1], acc_width, overflow)
                 for i in range(0, len(level), 2)]
    return level[0]


def flat_mxint_gemm(a_man, b_man, *, a_exp=None, b_exp=None, block_size: int, exponent_width: int,
                    sub_arrays: int, a_width: int, b_width: int, acc_width: int,
                    out_width: int) -> tuple[np.ndarray, int]:
    """MXInt (or mixed MXInt x int) product as the flattened array computes it.

    ``a_man`` M x K and ``b_man`` K x N mantissas, K = blocks * ``block_size``; ``a_exp``
    M x blocks and ``b_exp`` blocks x N decoded two's-complement exponents (None: an int operand,
    no exponent). Per block, the exact integer block sum (:func:`flat_gemm`, ``acc_width`` bits,
    which is exact for one block) is shifted left by ``(e_a - emin) + (e_b - emin)`` and added
    into an ``out_width``-bit accumulator. Returns ``(total, lsb)``: ``C = total * 2^lsb`` with
    ``lsb = (emin - fa if A is MXInt else 0) + (emin - fb if B is MXInt else 0)`` and ``f = w - 2``
    fraction bits.
    """
    a_man, b_man = np.asarray(a_man), np.asarray(b_man)
    k = a_man.shape[1]
    if k % block_size:
        raise ValueError(f"K = {k} must be a whole number of blocks of {block_size}")
    blocks = k // block_size
    emin = -(1 << (exponent_width - 1))
    emax = (1 << (exponent_width - 1)) - 1

    def rel(e, shape, name):
        if e is None:
            return np.zeros(shape, dtype=object), 0
        e = np.asarray(e)
        if e.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {e.shape}")
        if e.size and (int(e.min()) < emin or int(e.max()) > emax):
            raise ValueError(f"{name} has exponents outside {emin} .. {emax}")
        return (e - emin).astype(object), 1

    ra, a_mx = rel(a_exp, (a_man.shape[0], blocks), "a_exp")
    rb, b_mx = rel(b_exp, (blocks, b_man.shape[1]), "b_exp")
    total = np.zeros((a_man.shape[0], b_man.shape[1]), dtype=object)
    for blk in range(blocks):
        ks = slice(blk * block_size, (blk + 1) * block_size)
        part = flat_gemm(a_man[:, ks], b_man[ks, :], sub_arrays=sub_arrays, a_width=a_width,
                         b_width=b_width, acc_width=acc_width, overflow="wrap")
        shift = ra[:, blk][:, None] + rb[blk, :][None, :]
        total = wrap(total + np.vectorize(lambda v, s: int(v) << int(s), otypes=[object])(
            part, shift), out_width)
    lsb = a_mx * (emin - (a_width - 2)) + b_mx * (emin - (b_width - 2))
    return total, lsb


def mx_align_stages(output_width: int, segment_bits: int) -> int:
    """Pipeline stages of the MXInt alignment after the adder tree: the shifted block sum is
    registered (1), then the wide accumulate runs as ceil(output_width / segment_bits) carry
    segments, one stage each (the last one's register feeds the result FIFO)."""
    if segment_bits < 1 or output_width < 1:
        raise ValueError(f"need positive widths, got output_width={output_width}, "
                         f"segment_bits={segment_bits}")
    return 1 + -(-output_width // segment_bits)


def flat_latency(blen: int, sub_arrays: int, product_register: bool = False,
                 align_stages: int = 0) -> int:
    """Cycles from a job's last operand beat to its first result beat.

    The output-stationary sub-array's own latency (input register, skew, optional product
    register, shadow, result chain, result FIFO; :func:`software_model.systolic.os_latency`)
    plus one register per adder-tree level, plus the MXInt alignment's stages
    (:func:`mx_align_stages`; 0 for integer operands).
    """
    return os_latency(blen, blen, product_register) + (sub_arrays - 1).bit_length() + align_stages


@dataclass(frozen=True)
class FlatJobTiming:
    first_in: int
    last_in: int
    first_out: int
    last_out: int


def flat_schedule(jobs: list[tuple[int, int]], *, blen: int, sub_arrays: int,
                  buffer_rows: int, product_register: bool = False,
                  align_stages: int = 0) -> list[FlatJobTiming]:
    """Timing of back-to-back jobs given (beats, M) each, inputs never idle, output always ready.

    Non-last beats enter one per cycle. A job's last beat waits until (1) ``blen`` cycles passed
    since the previous last beat (the rate at which a sub-array's result chains drain) and (2) M
    rows are free in the result buffer (a credit comes back the cycle after its row is taken).
    ``product_register`` and ``align_stages`` as in :func:`flat_latency`.
    """
    lat = flat_latency(blen, sub_arrays, product_register, align_stages)
    out: list[FlatJobTiming] = []
    leave: list[int] = []            # cycle each earlier result row is taken (non-decreasing)
    t = 0
    prev_last = None
    for beats, m in jobs:
        if not 0 <= m <= blen or beats < 1:
            # M = 0: an MXInt block that is not its tile's last emits no rows.
            raise ValueError(f"job needs 0 <= M <= {blen} and >= 1 beat, got M={m}, "
                             f"beats={beats}")
        first_in = t
        last_in = first_in + beats - 1
        if prev_last is not None:
            last_in = max(last_in, prev_last + blen)
        allowed = buffer_rows - m      # rows that may still be outstanding at the last beat
        if len(leave) > allowed:
            last_in = max(last_in, leave[len(leave) - allowed - 1] + 1)
        first_out = last_in + lat
        leave.extend(range(first_out, first_out + m))
        out.append(FlatJobTiming(first_in, last_in, first_out, first_out + max(m, 1) - 1))
        prev_last = last_in
        t = last_in + 1
    return out


def _flat_last_cycle(jobs, *, blen: int, sub_arrays: int, buffer_rows: int,
                     latency: int) -> int:
    """Last result cycle of ``jobs`` ((beats, M) each, any iterable); O(rows), the same rules as
    :func:`flat_schedule`."""
    lat = latency
    leave: list[int] = []
    prev_last = None
    t = 0
    for beats, m in jobs:
        last_in = t + beats - 1
        if prev_last is not None:
            last_in = max(last_in, prev_last + blen)
        allowed = buffer_rows - m
        if len(leave) > allowed:
            last_in = max(last_in, leave[len(leave) - allowed - 1] + 1)
        first_out = last_in + lat
        leave.extend(range(first_out, first_out + m))
        prev_last = last_in
        t = last_in + 1
    return leave[-1]


def flat_tiled_cycles(m: int, k: int, n: int, *, blen: int, mlen: int,
                      buffer_rows: int | None = None, block_size: int | None = None,
                      memory=None, product_register: bool = False,
                      align_stages: int = 0) -> dict:
    """Cycles and multiplier utilization of an M x K x N GEMM on the flattened array.

    One job per (BLEN-row x BLEN-column) tile of C with the whole reduction (ceil(K/S) beats),
    N tiles outer, M tiles inner; the last row tile has M mod BLEN rows (GEMV: M = 1). MXInt
    (``block_size``): each tile is K/block_size block jobs, only the last emitting rows.
    ``cycles`` are compute-bound; with ``memory`` (:class:`software_model.memory.MemorySettings`)
    ``memory`` holds the bandwidth-bound cycles and which term binds: a beat reads S*BLEN = MLEN
    words of A and of B, so A is re-read for every BLEN-column tile and B for every BLEN-row tile.
    """
    s = mlen // blen
    lat = flat_latency(blen, s, product_register, align_stages)
    if buffer_rows is None:
        buffer_rows = lat + blen
    row_tiles = [min(blen, m - r) for r in range(0, m, blen)]
    col_tiles = math.ceil(n / blen)
    if block_size is None:
        per_tile = [(math.ceil(k / s), None)]
    else:
        if k % block_size or block_size % s:
            raise ValueError(f"K = {k} must be whole blocks of {block_size}, a multiple of {s}")
        blocks = k // block_size
        per_tile = [(block_size // s, 0)] * (blocks - 1) + [(block_size // s, None)]

    def jobs():
        for _ in range(col_tiles):
            for mt in row_tiles:
                for beats, rows in per_tile:
                    yield beats, (mt if rows is None else rows)

    cycles = _flat_last_cycle(jobs(), blen=blen, sub_arrays=s, buffer_rows=buffer_rows,
                              latency=lat) + 1
    macs = m * k * n
    result = {"cycles": cycles, "macs": macs, "utilization": macs / (cycles * blen * mlen)}
    if memory is not None:
        from software_model.memory import memory_bound
        bound = memory_bound(cycles, m, k, n, tile_m=blen, tile_n=blen, memory=memory)
        bound["utilization"] = macs / (bound["cycles"] * blen * mlen)
        result["memory"] = bound
    return result


def square_tiled_cycles(m: int, k: int, n: int, *, side: int, memory=None) -> dict:
    """The foundation generator's side x side output-stationary array on the same GEMM."""
    return tiled_gemm_cycles(m, k, n, rows=side, cols=side, dataflow="output_stationary",
                             memory=memory)
