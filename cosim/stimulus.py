"""Seeded random stream workloads for any exported design, from its manifest alone.

Every payload field gets uniform random bits within its type, except the few control fields whose
values a design's protocol constrains; those follow the kind's rules (read from the manifest's
``config``) so every job is legal and every input beat is eventually taken:

* ``last``: ends a job (a reduction, an accumulation, a packet of rows); jobs of random length.
* systolic weight-stationary: K <= rows weight beats per job and as many activation jobs.
* flattened arrays: ``rows`` in 1..BLEN, ``head`` below ``heads``, MXInt block framing
  (``first`` / ``final`` / ``last`` per block of ``block_size / sub_arrays`` beats).

Used to show that the native and cocotb harnesses agree (tests/test_fast.py) and to time them
(``accelgen bench sim``). The values are random, not meaningful: the golden-model regressions are
the per-block cocotb tests and the tiled-GEMM runs (:mod:`cosim.gemm`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["random_inputs", "random_columns"]


def random_columns(layout: dict, n: int, rng: np.random.Generator) -> Any:
    """``n`` beats of uniform random field values (column tree, see :mod:`cosim.payload`)."""
    kind = layout["type"]
    if kind == "int":
        w, signed = layout["width"], layout["signed"]
        if w > 62:
            lo = -(1 << (w - 1)) if signed else 0
            return np.array([lo + int.from_bytes(rng.bytes((w + 7) // 8), "little") % (1 << w)
                             for _ in range(n)], dtype=object)
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1))) if signed else (0, 1 << w)
        return rng.integers(lo, hi, size=n, dtype=np.int64)
    if kind == "struct":
        return {name: random_columns(f["layout"], n, rng) for name, f in layout["fields"].items()}
    if kind == "array":
        length = layout["length"]
        flat = random_columns(layout["element"], n * length, rng)
        return _reshape(flat, n, length)
    raise ValueError(f"unknown layout type {kind!r}")


def _reshape(tree, n, length):
    if isinstance(tree, dict):
        return {k: _reshape(v, n, length) for k, v in tree.items()}
    return tree.reshape((n, length) + tree.shape[1:])


def _job_lengths(rng, total: int, lo: int, hi: int) -> list[int]:
    out, left = [], total
    while left > 0:
        k = min(left, int(rng.integers(lo, hi + 1)))
        out.append(k)
        left -= k
    return out


def _last_flags(lengths: list[int]) -> np.ndarray:
    flags = np.zeros(sum(lengths), dtype=np.int64)
    flags[np.cumsum(lengths) - 1] = 1
    return flags


def random_inputs(manifest: dict, beats: int, rng: np.random.Generator) -> dict[str, Any]:
    """About ``beats`` input beats per input stream of the design ``manifest`` describes."""
    ports = {p["name"]: p for p in manifest["ports"]}
    streams = [n[:-len("__payload")] for n, p in ports.items()
               if n.endswith("__payload") and p["direction"] == "input"]
    cfg = manifest.get("config", {})
    kind = manifest.get("kind")
    out = {}
    if kind == "systolic_array" and cfg.get("dataflow") == "weight_stationary":
        rows = int(cfg["rows"])
        max_k = min(int(cfg.get("max_k") or rows), rows)
        jobs = max(1, beats // (3 * rows))
        ks = [int(rng.integers(1, max_k + 1)) for _ in range(jobs)]
        ms = [int(rng.integers(1, 4 * rows + 1)) for _ in range(jobs)]
        for name, lengths in (("weights", ks), ("activations", ms)):
            cols = random_columns(ports[f"{name}__payload"]["layout"], sum(lengths), rng)
            cols["last"] = _last_flags(lengths)
            out[name] = cols
        return out
    if kind == "mxint_layernorm":
        # Rows of row_length / block_size blocks and whole parameter sets: a partial set holds
        # every later row off (the unit waits for the set's last beat), so it is not a stimulus.
        nb = int(cfg["row_length"]) // int(cfg["block_size"])
        sets = max(1, beats // (8 * nb))
        out["params"] = random_columns(ports["params__payload"]["layout"], sets * nb, rng)
        out["operands"] = random_columns(ports["operands__payload"]["layout"],
                                         max(1, beats // nb) * nb, rng)
        return out
    for name in streams:
        layout = ports[f"{name}__payload"]["layout"]
        fields = layout.get("fields", {}) if layout["type"] == "struct" else {}
        if kind == "flattened_array":
            out[name] = _flattened(layout, cfg, beats, rng)
            continue
        cols = random_columns(layout, beats, rng)
        if "last" in fields:
            if kind == "systolic_array":
                hi = min(int(cfg.get("max_k") or 256), 4 * int(cfg.get("rows", 4)))
            else:
                hi = 8
            cols["last"] = _last_flags(_job_lengths(rng, beats, 1, hi))
        out[name] = cols
    return out


def _flattened(layout: dict, cfg: dict, beats: int, rng) -> Any:
    blen, mlen = int(cfg["blen"]), int(cfg["mlen"])
    subs = mlen // blen
    heads = int(cfg.get("heads") or 1)
    mxint = "first" in layout["fields"]
    jobs = []           # (beats of the job, rows, head, transpose)
    total = 0
    while total < beats:
        if mxint:
            per_block = max(1, int(cfg["block_size"]) // subs)
            blocks = int(rng.integers(1, 4))
            n = per_block * blocks
        else:
            max_beats = -(-int(cfg["max_k"]) // subs)
            n = int(rng.integers(1, min(max_beats, 4 * blen) + 1))
        jobs.append((n, int(rng.integers(1, blen + 1)), int(rng.integers(0, heads)),
                     int(rng.integers(0, 2))))
        total += n
    cols = random_columns(layout, total, rng)
    cols["rows"] = np.repeat([j[1] for j in jobs], [j[0] for j in jobs])
    cols["head"] = np.repeat([j[2] for j in jobs], [j[0] for j in jobs])
    if "transpose" in layout["fields"]:
        cols["transpose"] = np.repeat([j[3] for j in jobs], [j[0] for j in jobs])
    if mxint:
        per_block = max(1, int(cfg["block_size"]) // subs)
        first, final, last = [], [], []
        for n, *_ in jobs:
            blocks = n // per_block
            for t in range(n):
                blk, pos = divmod(t, per_block)
                first.append(int(blk == 0))
                final.append(int(blk == blocks - 1))
                last.append(int(pos == per_block - 1))
        cols["first"], cols["final"], cols["last"] = (np.array(first), np.array(final),
                                                      np.array(last))
    else:
        cols["last"] = _last_flags([j[0] for j in jobs])
    return cols
