"""Size estimates: how big a config's design will be, before anything is elaborated.

``estimate(config)`` counts what the generator builds (PEs, multipliers, adders, table entries,
flip-flop bits) and prices each part with the unit areas gen/cost_model measured by synthesizing
each primitive alone (the committed snapshot gen/cost_model/unit_areas.json: an 8x8 multiplier is
589 GE, a 16-bit adder 115 GE; a datapath flip-flop with enable 5.5 GE). That structural sum is
then scaled by one factor per kind, fitted to real synthesis of real configs, and turned into mapped
cells (area / GE-per-cell of that kind) and an approximate generation time (cells / elaboration
speed of that kind). ``CALIBRATION`` below records, per kind, the three fitted numbers and what
they were fitted to; ``accelgen bench estimate`` re-measures them (build/bench/estimate.json).
The ternary kinds use gen.cost_model's own per-structure model (mean error 3.5% against Yosys).

The estimate is meant to be right within a factor of about two: enough to warn before a
multi-minute generation and to refuse a design that would not finish (``--max-cells``).
Computing it never elaborates, never synthesizes and takes well under a millisecond.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

__all__ = ["SizeEstimate", "estimate", "WARN_CELLS", "DEFAULT_MAX_CELLS", "CALIBRATION",
           "heartbeat", "format_count", "format_seconds"]

#: ``check`` warns above this many estimated cells: generation takes half a minute or so,
#: but synthesis takes a quarter of an hour and more (the 16x16 int8 array, 219k cells: 12 min),
#: and a Verilator build several minutes.
WARN_CELLS = 250_000
#: ``rtl``/``lint``/``cosim``/``synth`` refuse designs above this many estimated cells unless
#: ``--max-cells`` (or ACCELGEN_MAX_CELLS) raises it: about a minute of generation, hours of
#: synthesis; 4.5x the largest array the benchmarks build (16x16 int8, 219k cells) and almost 7x
#: the largest preset (flattened_b8_m32_int4_mxint8, ~146k).
DEFAULT_MAX_CELLS = 1_000_000

# Flip-flop areas as gen.synth costs them (enable, no reset: datapath; enable + reset: control).
_DATA_FF = 5.5
_CONTROL_FF = 6.5
_MUX2 = 2.33

#: Per kind: (area factor, GE per mapped cell, cells generated per second), fitted by
#: ``accelgen bench estimate`` (gen/bench/estimate.py): area factor = median of synthesized area
#: over the structural sum, GE per cell = median of gen.synth's area / cells, both over the
#: presets small enough to synthesize in a minute plus the synthesis figures the README and docs
#: publish (systolic 4x4..16x16 OS/WS, flattened 4x16 and square 8x8, nine MXInt dot products).
#: Generation speed = Amaranth elaboration + Verilog conversion without cache, measured on the
#: shared 2-core machine at load averages from 1 to 12; the slower figures are kept, so the
#: printed time is an upper estimate on a busy machine. Estimated / synthesized cells of the fit:
#: systolic 0.89-1.02, flattened 1.00, MXInt 0.81-1.54 (worst: 2-bit dot product), float_add
#: 0.98-1.02; ternary area comes from gen.cost_model (mean 3.5% error on 73 configs).
CALIBRATION: dict[str, tuple[float, float, float]] = {
    "systolic_array": (1.02, 2.15, 8000.0),
    "flattened_array": (1.02, 2.05, 10000.0),
    "mxint_cast": (0.90, 1.60, 5000.0),
    "mxint_dot": (0.98, 1.57, 10000.0),
    "mxint_accumulator": (0.95, 1.81, 8000.0),
    "mxint_linear": (0.76, 1.53, 15000.0),
    # Nonlinear units: area factor = median of synthesized / structural area over their three
    # presets each (docs/mxint.md table; per preset 1.00-1.11, 1.40-1.50, 0.83-0.94); GE per
    # cell and generation speed taken from the MXInt datapaths (not yet re-measured).
    "mxint_softmax": (1.00, 1.57, 5000.0),
    "mxint_layernorm": (1.44, 1.57, 5000.0),
    "mxint_gelu": (0.85, 1.57, 5000.0),
    # The accelerator: the sum of its parts' models, not fitted (no preset was synthesized
    # whole); the units inside it carry their own kinds' factors only approximately.
    # Generation speed measured on accelerator_small and accelerator_plena (12 s and 25 s).
    "accelerator": (1.0, 1.6, 30000.0),
    "ternary_lut": (1.00, 1.46, 4000.0),
    "float_add": (1.03, 1.58, 8000.0),
}
#: Fixed cost of any generation (imports, hashing the generator sources, the Verilog back end).
_BASE_SECONDS = 1.0


@dataclass(frozen=True)
class SizeEstimate:
    """What a config will build: structure counts, area, mapped cells and generation time."""

    kind: str
    counts: dict = field(default_factory=dict)    # e.g. {"PEs": 16, "multipliers": 16}
    area_ge: float = 0.0                          # NAND2 equivalents, as gen.synth reports
    cells: int = 0                                # mapped cells, as gen.synth reports
    seconds: float = 0.0                          # approximate generation time

    def summary(self) -> str:
        parts = [f"{format_count(v)} {_singular(k) if v == 1 else k}"
                 for k, v in self.counts.items()]
        parts.append(f"~{format_count(self.cells)} cells (~{format_count(self.area_ge)} GE)")
        parts.append(f"generation ~{format_seconds(self.seconds)}")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "counts": dict(self.counts), "area_ge": round(self.area_ge),
                "cells": self.cells, "seconds": round(self.seconds, 1)}


def _singular(noun: str) -> str:
    if noun.endswith("entries"):
        return noun[:-3] + "y"
    return noun[:-1] if noun.endswith("s") else noun


def format_count(n: float) -> str:
    n = float(n)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            value = n / limit
            return f"{value:.1f}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return f"{n:.0f}"


def format_seconds(s: float) -> str:
    if s < 60:
        return f"{max(s, 1):.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 48 * 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} days"


def estimate(config) -> SizeEstimate | None:
    """Estimate of ``config``'s design, or None for a kind without a model."""
    model = _MODELS.get(config.kind)
    if model is None:
        return None
    counts, raw_area = model(config)
    factor, ge_per_cell, cells_per_second = CALIBRATION.get(config.kind, (1.0, 1.6, 3000.0))
    area = raw_area * factor
    cells = int(round(area / ge_per_cell))
    return SizeEstimate(kind=config.kind, counts=counts, area_ge=area, cells=cells,
                        seconds=_BASE_SECONDS + cells / cells_per_second)


def structural_area(config) -> float | None:
    """The uncalibrated structural sum (GE) the calibration scales; for the bench's fit."""
    model = _MODELS.get(config.kind)
    return None if model is None else model(config)[1]


# --------------------------------------------------------------------------- unit costs


@functools.lru_cache(maxsize=1)
def _units():
    """gen.cost_model's unit areas from the committed snapshot (never re-measured here: a
    changed digest would trigger minutes of synthesis, and an estimate need not be exact)."""
    from gen.cost_model.calibration import SNAPSHOT, UnitAreas
    return UnitAreas(json.loads(SNAPSHOT.read_text())["table"])


def _mul(a: int, b: int) -> float:
    """Signed a x b multiplier: the measured square multiplier's cost per partial-product bit
    at sqrt(a*b), times a*b."""
    n = math.sqrt(a * b)
    return _units().mul(n) / (n * n) * a * b if n >= 2 else 10.0 * a * b


def _add(width: int) -> float:
    return _units().add(max(2, width))


def _ff(bits: int, control: bool = False) -> float:
    return bits * (_CONTROL_FF if control else _DATA_FF)


def _shifter(width: int, positions: int) -> float:
    """Barrel shifter: log2(positions) levels of width 2:1 muxes."""
    return width * max(1, math.ceil(math.log2(max(2, positions)))) * _MUX2


def _lod(width: int) -> float:
    """Leading-one detector + encoder: about two gates per bit per level."""
    return 2.0 * width * max(1, math.ceil(math.log2(max(2, width))))


def _fifo(depth: int, width: int) -> float:
    """A flop-based FIFO: storage, the read multiplexer and the pointers."""
    pointers = _ff(4 * depth.bit_length(), True)
    return _ff(depth * width) + max(0, depth - 1) * width * _MUX2 + pointers


def _skew(lanes: int, width: int) -> float:
    """Triangular delay lines: lane i is i cycles late."""
    return _ff(lanes * (lanes - 1) // 2 * width)


# --------------------------------------------------------------------------- models per kind


def _os_pe(a: int, b: int, w: int, saturate: bool) -> float:
    # multiply, accumulate, accumulator + shadow + result chain registers, operand pipeline.
    logic = _mul(a, b) + _add(w) + (2 * w * _MUX2 if saturate else 0) + w * _MUX2
    return logic + _ff(a + b + 3 * w) + _ff(4, True)


def _systolic(cfg) -> tuple[dict, float]:
    rows, cols = cfg.rows, cfg.cols
    a, b, w = cfg.a_width, cfg.b_width, cfg.accumulator_width
    pes = rows * cols
    if cfg.dataflow == "output_stationary":
        pe = _os_pe(a, b, w, cfg.overflow == "saturate")
        edge = _skew(rows, a) + _skew(cols, b) + _skew(cols, w)
    else:
        pe = (_mul(a, b) + _add(w) + (2 * w * _MUX2 if cfg.overflow == "saturate" else 0)
              + b * _MUX2 + _ff(2 * b + a + w) + _ff(4, True))
        edge = _skew(rows, a) + _skew(cols, w)
    area = pes * pe + edge + _fifo(cfg.result_buffer_rows, cols * w)
    return {"PEs": pes, "multipliers": pes}, area


def _flattened(cfg) -> tuple[dict, float]:
    blen, subs = cfg.blen, max(1, cfg.sub_arrays)
    a, b, w = cfg.a_width, cfg.b_width, cfg.accumulator_width
    pes = blen * blen * subs
    area = pes * _os_pe(a, b, w, cfg.overflow == "saturate")
    area += subs * (_skew(blen, a) + _skew(blen, b) + _skew(blen, w))
    tree_adders = (subs - 1) * blen
    area += tree_adders * (_add(w + cfg.tree_levels) + _ff(w + cfg.tree_levels))
    ow = cfg.output_width
    if cfg.mxint:
        # after the tree: a shifter and an adder per column, BLEN x BLEN aligned accumulators
        area += blen * (_shifter(ow, cfg.exponent_span + 1) + _add(ow)) + _ff(blen * blen * ow)
    area += _fifo(cfg.result_buffer_rows, blen * ow)
    return {"PEs": pes, "multipliers": pes}, area


_FLOAT_BITS = {"fp16": (5, 10, 16), "bf16": (8, 7, 16), "fp32": (8, 23, 32)}


def _mxint_cast(cfg) -> tuple[dict, float]:
    k, w, ew = cfg.block_size, cfg.element_width, cfg.exponent_width
    exp_bits, frac_bits, in_width = _FLOAT_BITS[cfg.input_format]
    sig = frac_bits + 1
    per = (_lod(sig) + _add(exp_bits + 2) + _shifter(sig + w, sig + w) + _add(w + 1)
           + 2 * w * _MUX2)
    area = k * per + (k - 1) * (_add(exp_bits + 2) + (exp_bits + 2) * _MUX2)
    area += _ff(k * in_width) + _ff(k * (w + exp_bits + 2)) + _ff(k * w + ew) + _ff(3, True)
    return {"elements": k}, area


def _mxint_dot(cfg) -> tuple[dict, float]:
    k, w, ew = cfg.block_size, cfg.element_width, cfg.exponent_width
    sum_bits = 2 * w + max(0, (k - 1).bit_length())
    area = k * _mul(w, w) + (k - 1) * _add(sum_bits) + _add(ew + 2)
    area += _ff(2 * k * w + 2 * ew) + _ff(sum_bits + ew + 2) + _ff(3, True)
    return {"multipliers": k}, area


def _mxint_accumulator(cfg) -> tuple[dict, float]:
    lanes, iw, ew, sw = cfg.lanes, cfg.input_width, cfg.exponent_width, cfg.sum_width
    span = (1 << ew) if cfg.mode == "exact" else sw
    per = _shifter(sw, span) + _add(sw) + _ff(iw + sw)
    if cfg.mode == "shift":
        per += _shifter(sw, span) + sw * _MUX2      # both operands shift, renormalisation
    area = lanes * per + _add(ew + 2) * 2 + _ff(2 * ew + 4) + _ff(4, True)
    return {"lanes": lanes}, area


def _mxint_linear(cfg) -> tuple[dict, float]:
    k, w, ew, n = cfg.block_size, cfg.element_width, cfg.exponent_width, cfg.n_tile
    acc = cfg.acc_width
    sum_bits = 2 * w + max(0, (k - 1).bit_length())
    span = 2 * ((1 << ew) - 1)
    dot = k * _mul(w, w) + (k - 1) * _add(sum_bits) + _add(ew + 2)
    align = _shifter(acc, span) * 2 + 2 * _add(acc) + _ff(2 * acc)
    if cfg.output_format == "fp32":
        out = _lod(acc) + _shifter(acc, acc) + _add(26) + _ff(32)
    else:
        out = _lod(acc) + _shifter(acc, acc) + _add(w + 1) + _ff(w) + acc * _MUX2
    area = n * (dot + align + out)
    area += _ff(k * w * (1 + n) + (1 + 2 * n) * ew + n * w) + _ff(8, True)
    return {"multipliers": n * k}, area


def _rom(entries: int, bits: int) -> float:
    """A constant table read by an index: about half a gate per stored bit after logic
    minimisation, and the output multiplexer's levels."""
    return 0.5 * entries * bits + bits * max(1, (entries - 1).bit_length()) * _MUX2


def _poly(segments: int, degree: int, bits: int) -> float:
    """Piecewise polynomial by Horner: a coefficient table, degree multiply-adds, registers."""
    return (_rom(segments, (degree + 1) * bits) + degree * (_mul(bits, bits) + _add(2 * bits))
            + _ff((degree + 1) * bits))


def _mxint_softmax(cfg) -> tuple[dict, float]:
    # Default row buffer: a whole row plus the first pass's and the reciprocal's latency.
    k, w, ow = cfg.block_size, cfg.element_width, cfg.out_element_width
    fixed = cfg.range_bits + cfg.exp_frac_bits + 1
    lane = (_shifter(fixed, 1 << min(cfg.exponent_width, 5)) + _add(fixed)
            + _mul(w, cfg.scale_frac_bits) + _add(fixed)
            + _poly(1 << cfg.exp_segment_bits, max(1, cfg.exp_degree), cfg.exp_bits)
            + _shifter(cfg.exp_bits, 1 << min(cfg.range_bits, 5)) + _add(cfg.exp_bits + 8)
            + _mul(cfg.exp_bits, cfg.recip_bits) + _lod(cfg.exp_bits) + _shifter(ow, ow)
            + _ff(3 * fixed + 2 * cfg.exp_bits + ow))
    row = (_rom(1 << cfg.recip_table_bits, cfg.recip_bits)
           + cfg.newton_steps * 2 * _mul(cfg.recip_bits + 2, cfg.recip_bits + 2)
           + _lod(cfg.exp_bits + 8) + _ff(4 * cfg.recip_bits))
    buffer = cfg.buffer_blocks or cfg.max_row_blocks + 28
    area = k * lane + row + _fifo(buffer, k * (fixed + 2) + cfg.exponent_width)
    return {"lanes": k, "multipliers": k * (2 + max(1, cfg.exp_degree))}, area


def _mxint_layernorm(cfg) -> tuple[dict, float]:
    k, w = cfg.block_size, cfg.element_width
    fixed = cfg.int_bits + cfg.frac_bits + 1
    sq = 2 * fixed + cfg.row_length.bit_length()
    lane = (_shifter(fixed, 1 << min(cfg.exponent_width, 5)) + _mul(fixed, fixed)
            + 2 * _add(sq) + _add(fixed)
            + _mul(fixed, cfg.rsqrt_bits) + _mul(cfg.norm_frac_bits + 4, cfg.param_element_width)
            + _shifter(cfg.out_frac_bits + cfg.out_int_bits, 32) + _add(cfg.out_frac_bits + 8)
            + _lod(cfg.out_frac_bits + cfg.out_int_bits)
            + _shifter(cfg.out_element_width, cfg.out_element_width)
            + _ff(2 * sq + 2 * fixed + cfg.rsqrt_bits + 2 * cfg.param_element_width))
    row = (_rom(1 << cfg.rsqrt_table_bits, cfg.rsqrt_bits)
           + cfg.newton_steps * 3 * _mul(cfg.rsqrt_bits + 2, cfg.rsqrt_bits + 2)
           + _mul(sq, sq) // 2 + _lod(sq) + _shifter(sq, sq) + _ff(4 * sq))
    buffer = cfg.buffer_blocks or cfg.row_blocks + 32
    area = k * lane + row + _fifo(buffer, k * w + cfg.exponent_width)
    return {"lanes": k, "multipliers": 3 * k}, area


def _mxint_gelu(cfg) -> tuple[dict, float]:
    k, w = cfg.block_size, cfg.element_width
    fixed = cfg.int_bits + cfg.frac_bits + 1
    bits = cfg.out_frac_bits + 2
    lane = (_shifter(fixed, 1 << min(cfg.exponent_width, 5))
            + _poly(1 << cfg.segment_bits, cfg.degree, bits) + _lod(fixed + bits)
            + _shifter(cfg.out_element_width, fixed) + _ff(2 * fixed + bits))
    return {"lanes": k, "multipliers": k * cfg.degree}, k * lane + _ff(k * w)


def _accelerator(cfg) -> tuple[dict, float]:
    """The composition: the flattened matrix unit, the ACC and SP memories, the three nonlinear
    units (their own models, at the accelerator's block size and activation format), the online
    softmax state and a fixed allowance for the DMA engines, queues and decoder. The ACC and SP
    memories are counted in bits, not cells: they are RAM macros (block RAM on an FPGA), one
    memory each in the Verilog, and cost elaboration nothing per bit."""
    from types import SimpleNamespace
    f, m, b = cfg.formats, cfg.matrix, cfg.block_size
    a_w, w_w, kv_w = (f.activation.element_width, f.weight.element_width,
                      f.kv.element_width)
    acc = cfg.accumulator.width
    pes = m.rows * m.cols * m.sub_arrays
    area = pes * _os_pe(a_w, max(w_w, kv_w), acc, True)
    area += m.sub_arrays * (_skew(m.rows, a_w) + _skew(m.cols, w_w) + _skew(m.cols, acc))
    area += (m.sub_arrays - 1) * m.cols * (_add(acc) + _ff(acc))
    word = b * max(a_w, w_w, kv_w) + cfg.exponent_width
    memory_bits = cfg.accumulator.words * m.cols * acc + cfg.scratchpad.words * word
    unit = dict(block_size=b, element_width=a_w, out_element_width=a_w,
                exponent_width=cfg.exponent_width, buffer_blocks=None)
    sm, ln, ge = cfg.vector.softmax, cfg.vector.layernorm, cfg.vector.gelu
    area += _mxint_softmax(SimpleNamespace(**unit, **vars(sm)))[1]
    area += _mxint_layernorm(SimpleNamespace(**unit, **vars(ln), param_element_width=a_w,
                                             row_blocks=max(1, ln.row_length // b)))[1]
    area += _mxint_gelu(SimpleNamespace(**unit, **vars(ge)))[1]
    area += _ff(cfg.vector.softmax_rows * 2 * (sm.exp_bits + 16))
    area += 20000.0 + cfg.memory.port_words * word * 4 * _DATA_FF
    return {"multipliers": pes, "memory bits": memory_bits}, area


def _ternary(cfg) -> tuple[dict, float]:
    from gen.cost_model import estimate as cost_estimate
    est = cost_estimate(cfg, _units())
    counts = {"lanes": cfg.lanes_l * cfg.lanes_k}
    if cfg.architecture == "lut":
        counts["table entries"] = cfg.lanes_l * cfg.table_entries
    if est.multipliers:
        counts["multipliers"] = est.multipliers
    return counts, est.area


def _float_add(cfg) -> tuple[dict, float]:
    width = _FLOAT_BITS[cfg.format][2]
    area = _units().fadd(cfg.format) + _ff(3 * width) + _ff(2 * width * cfg.pipeline_stages)
    return {"FP adders": 1}, area + _ff(3, True)


_MODELS: dict[str, Callable] = {
    "systolic_array": _systolic,
    "flattened_array": _flattened,
    "mxint_cast": _mxint_cast,
    "accelerator": _accelerator,
    "mxint_softmax": _mxint_softmax,
    "mxint_layernorm": _mxint_layernorm,
    "mxint_gelu": _mxint_gelu,
    "mxint_dot": _mxint_dot,
    "mxint_accumulator": _mxint_accumulator,
    "mxint_linear": _mxint_linear,
    "ternary_lut": _ternary,
    "float_add": _float_add,
}


# --------------------------------------------------------------------------- progress


@contextmanager
def heartbeat(label: str, expected: SizeEstimate | None = None, *, after: float = 3.0,
              every: float = 10.0, stream=None) -> Iterator[None]:
    """Print ``label: N s elapsed`` (and the estimate) to stderr every ``every`` seconds once a
    step has taken longer than ``after`` seconds; silent for quick steps.

    ACCELGEN_PROGRESS=0 silences it; the thread never touches the work itself.
    """
    if os.environ.get("ACCELGEN_PROGRESS", "1") in ("0", "false", "no"):
        yield
        return
    out = stream if stream is not None else sys.stderr
    done = threading.Event()
    start = time.monotonic()
    hint = ""
    if expected is not None:
        hint = (f" (estimate ~{format_seconds(expected.seconds)} for "
                f"~{format_count(expected.cells)} cells)")

    def beat():
        wait = after
        while not done.wait(wait):
            try:
                out.write(f"  {label}: {time.monotonic() - start:.0f} s elapsed{hint}\n")
                out.flush()
            except (OSError, ValueError):      # stderr closed: stop reporting, keep working
                return
            wait = every

    thread = threading.Thread(target=beat, name="accelgen-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
