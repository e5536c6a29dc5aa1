"""Tiled GEMMs on the native harness, every result row checked against the golden model.

A GEMM larger than the array is split the way the cycle models split it, the jobs' operand beats
are built with numpy, the whole GEMM runs in one native simulation (:mod:`cosim.fast`), and each
job's result rows are compared bit for bit with ``software_model`` (``systolic.gemm`` per tile,
``flattened.flat_gemm`` / ``flat_mxint_gemm``). The measured cycles (first operand beat to last
result beat, inclusive) are returned beside the cycle model's.

Parameters are plain numbers (array shape, operand and accumulator widths, ...), so this module
does not import the generators; ``gen/bench`` maps a config onto them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cosim.fast import Design, FastRun, simulate

__all__ = ["GemmRun", "systolic_tiled_gemm", "flattened_tiled_gemm"]


@dataclass
class GemmRun:
    m: int
    k: int
    n: int
    jobs: int
    checked: int                    # result rows compared with the golden model
    rtl_cycles: int                 # first operand beat .. last result beat, inclusive
    model_cycles: int | None
    c: np.ndarray                   # the product (M x N; K-chunk partial sums added exactly)
    mismatches: list[str] = field(default_factory=list)
    run: FastRun | None = None

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.checked > 0


def _pad(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, dtype=np.int64)
    out[:x.shape[0], :x.shape[1]] = x
    return out


def _check(mismatches: list[str], expected, got, context: str, limit: int = 10) -> None:
    if not np.array_equal(np.asarray(expected, dtype=object), np.asarray(got, dtype=object)):
        if len(mismatches) < limit:
            mismatches.append(f"{context}: expected {np.asarray(expected).tolist()}, "
                              f"got {np.asarray(got).tolist()}")
        else:
            mismatches.append(context)


def systolic_tiled_gemm(design: Design, a, b, *, rows: int, cols: int, dataflow: str,
                        a_width: int, b_width: int, acc_width: int, overflow: str = "wrap",
                        max_k: int, buffer_rows: int, product_register: bool = False,
                        profile="smooth", seed: int = 1,
                        harness: str = "fast", opt: str | None = None) -> GemmRun:
    """C = A . B on a systolic array (``design``), tiled as
    :func:`software_model.systolic.tiled_gemm_cycles` tiles it.

    Output-stationary: one job per (rows x cols) tile of C and K-chunk of at most ``max_k`` (the
    last chunk may be shorter), tiles of M outer, of N, then K-chunks inner. Weight-stationary:
    one job per (cols-wide tile of B) x (K-chunk of at most ``rows``), each streaming every row
    of A. Partial sums of K-chunks are added outside the array, exactly.
    """
    from software_model.systolic import gemm, tiled_gemm_cycles

    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k:
        raise ValueError(f"inner dimensions differ: A is {a.shape}, B is {b.shape}")
    nt = math.ceil(n / cols)
    golden = dict(a_width=a_width, b_width=b_width, acc_width=acc_width, overflow=overflow)
    mismatches: list[str] = []
    c_total = np.zeros((m, n), dtype=object)
    if dataflow == "output_stationary":
        chunk = min(k, max_k)
        mt, kt = math.ceil(m / rows), math.ceil(k / chunk)
        ap, bp = _pad(a, (mt * rows, k)), _pad(b, (k, nt * cols))
        jobs = [(i, j, c * chunk, min(chunk, k - c * chunk))
                for i in range(mt) for j in range(nt) for c in range(kt)]
        lengths = np.array([kc for *_x, kc in jobs])
        job_of_beat = np.repeat(np.arange(len(jobs)), lengths)
        starts = np.cumsum(lengths) - lengths
        step = np.arange(len(job_of_beat)) - starts[job_of_beat]
        ji = np.array([j[0] for j in jobs])[job_of_beat]
        jj = np.array([j[1] for j in jobs])[job_of_beat]
        kidx = np.array([j[2] for j in jobs])[job_of_beat] + step
        a3 = ap.reshape(mt, rows, k)
        b3 = bp.reshape(k, nt, cols)
        inputs = {"operands": {"a": a3[ji, :, kidx], "b": b3[kidx, jj, :],
                               "last": (step == lengths[job_of_beat] - 1).astype(np.int64)}}
        run = simulate(design, inputs, expect={"results": len(jobs) * rows}, profile=profile,
                       seed=seed, harness=harness, opt=opt)
        res = run.outputs["results"]
        c_out = res["c"].reshape(len(jobs), rows, cols)
        last = res["last"].reshape(len(jobs), rows)
        for n_job, (i, j, k0, kc) in enumerate(jobs):
            want = gemm(ap[i * rows:(i + 1) * rows, k0:k0 + kc],
                        bp[k0:k0 + kc, j * cols:(j + 1) * cols], **golden)
            _check(mismatches, want, c_out[n_job], f"job {n_job} (tile {i},{j}, k {k0}+{kc})")
            _check(mismatches, [0] * (rows - 1) + [1], last[n_job], f"job {n_job} last flags")
            rs, cs = slice(i * rows, min(m, (i + 1) * rows)), slice(j * cols,
                                                                   min(n, (j + 1) * cols))
            c_total[rs, cs] += c_out[n_job][:rs.stop - rs.start, :cs.stop - cs.start].astype(
                object)
        first_in = int(run.cycles["operands"][0])
        checked = len(jobs) * rows
    elif dataflow == "weight_stationary":
        chunks = [(c0, min(rows, k - c0)) for c0 in range(0, k, rows)]
        jobs = [(j, c0, kc) for j in range(nt) for c0, kc in chunks]
        bp = _pad(b, (k, nt * cols))
        w_b, w_last, a_rows, a_last = [], [], [], []
        for j, c0, kc in jobs:
            w_b.append(bp[c0:c0 + kc, j * cols:(j + 1) * cols])
            w_last.append(np.arange(kc) == kc - 1)
            lanes = np.zeros((m, rows), dtype=np.int64)
            lanes[:, :kc] = a[:, c0:c0 + kc]        # lanes >= K are ignored by the array
            a_rows.append(lanes)
            a_last.append(np.arange(m) == m - 1)
        inputs = {"weights": {"b": np.concatenate(w_b), "last": np.concatenate(w_last)},
                  "activations": {"a": np.concatenate(a_rows), "last": np.concatenate(a_last)}}
        run = simulate(design, inputs, expect={"results": len(jobs) * m}, profile=profile,
                       seed=seed, harness=harness, opt=opt)
        res = run.outputs["results"]
        c_out = res["c"].reshape(len(jobs), m, cols)
        last = res["last"].reshape(len(jobs), m)
        for n_job, (j, c0, kc) in enumerate(jobs):
            want = gemm(a[:, c0:c0 + kc], bp[c0:c0 + kc, j * cols:(j + 1) * cols], **golden)
            _check(mismatches, want, c_out[n_job], f"job {n_job} (tile {j}, k {c0}+{kc})")
            _check(mismatches, [0] * (m - 1) + [1], last[n_job], f"job {n_job} last flags")
            cs = slice(j * cols, min(n, (j + 1) * cols))
            c_total[:, cs] += c_out[n_job][:, :cs.stop - cs.start].astype(object)
        first_in = int(run.cycles["weights"][0])
        checked = len(jobs) * m
    else:
        raise ValueError(f"dataflow must be 'output_stationary' or 'weight_stationary', not "
                         f"{dataflow!r}")
    rtl_cycles = int(run.cycles["results"][-1]) - first_in + 1
    model = tiled_gemm_cycles(m, k, n, rows=rows, cols=cols, dataflow=dataflow,
                              buffer_rows=buffer_rows, max_k=max_k,
                              product_register=product_register)["cycles"]
    return GemmRun(m, k, n, len(jobs), checked, rtl_cycles, model, c_total, mismatches, run)


def flattened_tiled_gemm(design: Design, a, b, *, blen: int, mlen: int, a_width: int,
                         b_width: int, acc_width: int, overflow: str = "wrap", buffer_rows: int,
                         product_register: bool = False, align_stages: int = 0,
                         block_size: int | None = None, exponent_width: int | None = None,
                         out_width: int | None = None, a_exp=None, b_exp=None,
                         profile="smooth", seed: int = 1, harness: str = "fast",
                         opt: str | None = None) -> GemmRun:
    """C = A . B on the flattened array (``design``), tiled as
    :func:`software_model.flattened.flat_tiled_cycles` tiles it: one job per (BLEN x BLEN) tile
    of C with the whole reduction, N tiles outer, M tiles inner (the last has M mod BLEN rows).

    MXInt (``block_size`` set): K is whole blocks, each tile is one array job per block (only the
    last emits rows); ``a_exp`` (M x blocks) / ``b_exp`` (blocks x N) are the exponents of the
    MXInt operands (None for an integer operand). The result then is the ``out_width``-bit total
    of :func:`software_model.flattened.flat_mxint_gemm`.
    """
    from software_model.flattened import flat_gemm, flat_mxint_gemm, flat_tiled_cycles

    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k:
        raise ValueError(f"inner dimensions differ: A is {a.shape}, B is {b.shape}")
    subs = mlen // blen
    mxint = block_size is not None
    layout = design.stream("operands").layout["fields"]
    nbeats = math.ceil(k / subs)
    kp = nbeats * subs
    col_tiles = math.ceil(n / blen)
    row_tiles = [(r0, min(blen, m - r0)) for r0 in range(0, m, blen)]
    ap = _pad(a, (len(row_tiles) * blen, kp))
    bp = _pad(b, (kp, col_tiles * blen))
    if mxint:
        if k % block_size or block_size % subs:
            raise ValueError(f"K = {k} must be whole blocks of {block_size}, a multiple of {subs}")
        blocks = k // block_size
        per_block = block_size // subs
        aep = None if a_exp is None else _pad(np.asarray(a_exp), (ap.shape[0], blocks))
        bep = None if b_exp is None else _pad(np.asarray(b_exp), (blocks, bp.shape[1]))
    jobs = [(col, r0, rows) for col in range(col_tiles) for r0, rows in row_tiles]
    t = np.arange(nbeats)
    # Beat t of a tile carries k-steps t*S .. t*S + S - 1: lanes [s][i] of A and [s][j] of B.
    beats: dict[str, list] = {name: [] for name in layout}
    for col, r0, rows in jobs:
        at = ap[r0:r0 + blen].reshape(blen, nbeats, subs).transpose(1, 2, 0)
        bt = bp[:, col * blen:(col + 1) * blen].reshape(nbeats, subs, blen)
        beats["a"].append(at.reshape(nbeats, subs * blen))
        beats["b"].append(bt.reshape(nbeats, subs * blen))
        beats["rows"].append(np.full(nbeats, rows))
        beats["head"].append(np.zeros(nbeats, dtype=np.int64))
        if "transpose" in beats:
            beats["transpose"].append(np.zeros(nbeats, dtype=np.int64))
        if mxint:
            blk, pos = np.divmod(t, per_block)
            beats["last"].append((pos == per_block - 1).astype(np.int64))
            beats["first"].append((blk == 0).astype(np.int64))
            beats["final"].append((blk == blocks - 1).astype(np.int64))
            if "a_exp" in beats:
                beats["a_exp"].append(aep[r0:r0 + blen][:, blk].T)
            if "b_exp" in beats:
                beats["b_exp"].append(bep[blk][:, col * blen:(col + 1) * blen])
        else:
            beats["last"].append((t == nbeats - 1).astype(np.int64))
    inputs = {"operands": {name: np.concatenate(parts) for name, parts in beats.items()}}
    total_rows = sum(rows for *_x, rows in jobs)
    run = simulate(design, inputs, expect={"results": total_rows}, profile=profile, seed=seed,
                   harness=harness, opt=opt)
    res = run.outputs["results"]
    mismatches: list[str] = []
    c_total = np.zeros((m, n), dtype=object)
    row = 0
    for n_job, (col, r0, rows) in enumerate(jobs):
        a_t, b_t = ap[r0:r0 + rows, :k], bp[:k, col * blen:(col + 1) * blen]
        if mxint:
            want = flat_mxint_gemm(
                a_t, b_t, a_exp=None if a_exp is None else aep[r0:r0 + rows],
                b_exp=None if b_exp is None else bep[:, col * blen:(col + 1) * blen],
                block_size=block_size, exponent_width=exponent_width, sub_arrays=subs,
                a_width=a_width, b_width=b_width, acc_width=acc_width, out_width=out_width)[0]
        else:
            want = flat_gemm(a_t, b_t, sub_arrays=subs, a_width=a_width, b_width=b_width,
                             acc_width=acc_width, overflow=overflow)
        got = res["c"][row:row + rows]
        _check(mismatches, want, got, f"job {n_job} (rows {r0}+{rows}, column tile {col})")
        _check(mismatches, [0] * (rows - 1) + [1], res["last"][row:row + rows],
               f"job {n_job} last flags")
        _check(mismatches, [0] * rows, res["head"][row:row + rows], f"job {n_job} head")
        cs = slice(col * blen, min(n, (col + 1) * blen))
        c_total[r0:r0 + rows, cs] = got[:, :cs.stop - cs.start].astype(object)
        row += rows
    rtl_cycles = int(run.cycles["results"][-1]) - int(run.cycles["operands"][0]) + 1
    model = flat_tiled_cycles(m, k, n, blen=blen, mlen=mlen, buffer_rows=buffer_rows,
                              block_size=block_size, product_register=product_register,
                              align_stages=align_stages)["cycles"]
    return GemmRun(m, k, n, len(jobs), total_rows, rtl_cycles, model, c_total, mismatches, run)
