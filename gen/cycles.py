"""``accelgen cycles``: the cycle model of an M x K x N GEMM on any kind that has one.

Each function takes a validated config and honours every key of it that changes timing (array
shape, dataflow, ``max_k`` chunking, result-buffer depth, MXInt blocks); its ``model`` section is
the RTL-checked cycle model (the cocotb ``cycle_model`` tests hold it equal to the RTL, job by job),
with the roofline memory bound of :mod:`software_model.memory` for the array's own port widths.
The systolic report puts SCALE-Sim's closed form beside it and, when the optional ``scalesim``
group is installed and the run is short enough, the real simulator's cycles.
"""

from __future__ import annotations

import math

__all__ = ["CycleModelTooLong", "STEPS_MAX", "SCALESIM_MAX_CYCLES", "model_steps",
           "systolic_cycles", "flattened_cycles", "flattened_native_memory"]

#: The cycle models walk job by job; this many steps take about ten seconds.
STEPS_MAX = 2_000_000
#: SCALE-Sim walks every cycle: interactive runs above this use the closed form only.
SCALESIM_MAX_CYCLES = 1_000_000


class CycleModelTooLong(ValueError):
    """The GEMM tiles into more model steps than an interactive run should walk."""


def model_steps(config, m: int, k: int, n: int) -> int:
    """Steps the kind's recurrence takes for this GEMM (its cost is linear in them)."""
    if config.kind == "systolic_array":
        col_tiles = -(-n // config.cols)
        if config.dataflow == "output_stationary":
            return -(-m // config.rows) * col_tiles * -(-k // min(k, config.max_k))
        return -(-k // config.rows) * col_tiles * m
    if config.kind == "flattened_array":
        per_tile = k // config.block_size if config.mxint else -(-k // min(k, config.max_k))
        return -(-m // config.blen) * -(-n // config.blen) * max(1, per_tile)
    raise ValueError(f"no cycle model for {config.kind}")


def _check_steps(config, m, k, n) -> None:
    steps = model_steps(config, m, k, n)
    if steps > STEPS_MAX:
        raise CycleModelTooLong(
            f"--m {m} --k {k} --n {n} tiles into {steps:,} array jobs on '{config.name}'; the "
            f"cycle model walks at most {STEPS_MAX:,} (a smaller GEMM has the same utilization "
            "once it is many tiles long)")


def systolic_cycles(config, m: int, k: int, n: int, *, scalesim: bool = True) -> dict:
    """The cycle model's figures for an M x K x N GEMM on a systolic config, SCALE-Sim's closed
    form beside them and, when the optional ``scalesim`` group is installed, the simulator's."""
    from gen.bench.systolic import SCALESIM_MEMORY_BUDGET, native_memory
    from software_model.systolic import ksplit_accumulation, scalesim_cycles, tiled_gemm_cycles

    _check_steps(config, m, k, n)
    kw = {"rows": config.rows, "cols": config.cols, "dataflow": config.dataflow}
    ours = tiled_gemm_cycles(m, k, n, **kw, buffer_rows=config.result_buffer_rows,
                             max_k=config.max_k, memory=native_memory(config),
                             product_register=config.pe_product_register)
    macs = m * k * n
    report = {
        "config": config.name, "kind": config.kind, "m": m, "k": k, "n": n,
        "array": f"{config.rows}x{config.cols}", "dataflow": config.dataflow,
        "multipliers": config.rows * config.cols,
        "model": {"source": "software_model.systolic.tiled_gemm_cycles (= RTL, cocotb "
                            "cycle_model)",
                  "cycles": ours["cycles"], "utilization": ours["utilization"], "macs": macs,
                  "ksplit": ksplit_accumulation(m, k, n, **kw, max_k=config.max_k,
                                                acc_width=config.accumulator_width),
                  "memory_bound": ours["memory"]},
    }
    if not scalesim:
        return report
    from gen.scalesim import available, scalesim_cached, scalesim_run
    closed = scalesim_cycles(m, k, n, **kw)
    real = scalesim_cached(m, k, n, **kw)
    if real is None and available():
        # SCALE-Sim walks every cycle (~0.2 ms and ~40 bytes per array edge word each): run it
        # only where that stays within a few minutes and the benches' memory budget.
        if closed <= SCALESIM_MAX_CYCLES and \
                closed * (config.rows + config.cols) * 40 <= SCALESIM_MEMORY_BUDGET:
            real = scalesim_run(m, k, n, **kw)
        else:
            real = {"skipped": f"{closed:,} cycles: above the {SCALESIM_MAX_CYCLES:,}-cycle or "
                               "memory limit of an interactive run (python -m gen.scalesim_fill "
                               "style runs have none)"}
    report["scalesim_closed_form"] = {
        "cycles": closed, "utilization": macs / ((closed - 1) * config.rows * config.cols)}
    report["scalesim"] = real
    return report


def flattened_native_memory(config):
    """Ports as wide as the flattened array reads and writes per cycle (MLEN words of A and of B,
    BLEN results), the systolic bench's off-chip link and capacities."""
    from gen.bench.systolic import CAPACITY_BYTES, OFFCHIP_BYTES_PER_CYCLE
    from software_model.memory import MemorySettings
    return MemorySettings(
        name=f"native {config.mlen}/{config.mlen}/{config.blen} words, "
             f"{OFFCHIP_BYTES_PER_CYCLE} B/cycle",
        a_words_per_cycle=config.mlen, b_words_per_cycle=config.mlen,
        c_words_per_cycle=config.blen, offchip_bytes_per_cycle=OFFCHIP_BYTES_PER_CYCLE,
        a_capacity_bytes=CAPACITY_BYTES["a"], b_capacity_bytes=CAPACITY_BYTES["b"],
        c_capacity_bytes=CAPACITY_BYTES["c"], a_bytes=math.ceil(config.a_width / 8),
        b_bytes=math.ceil(config.b_width / 8), c_bytes=math.ceil(config.output_width / 8))


def flattened_cycles(config, m: int, k: int, n: int, *, scalesim: bool = True) -> dict:
    """The flattened array's cycle model: integer reductions longer than ``max_k`` run as
    ``max_k`` chunks back to back (their partial sums are added outside the array, not charged);
    MXInt reductions must be whole ``block_size`` blocks."""
    from software_model.flattened import flat_tiled_cycles

    _check_steps(config, m, k, n)
    kw = {"blen": config.blen, "mlen": config.mlen, "buffer_rows": config.result_buffer_rows,
          "product_register": config.pe_product_register, "align_stages": config.align_stages}
    memory = flattened_native_memory(config)
    if config.mxint:
        if k % config.block_size:
            raise ValueError(f"--k {k} must be whole MXInt blocks of {config.block_size}")
        parts = [flat_tiled_cycles(m, k, n, **kw, block_size=config.block_size, memory=memory)]
    else:
        parts = [flat_tiled_cycles(m, min(config.max_k, k - start), n, **kw, memory=memory)
                 for start in range(0, k, config.max_k)]
    cycles = sum(p["cycles"] for p in parts)
    bound = sum(p["memory"]["cycles"] for p in parts)
    macs = m * k * n
    return {
        "config": config.name, "kind": config.kind, "m": m, "k": k, "n": n,
        "array": f"{config.blen}x{config.mlen}", "dataflow": "flattened",
        "multipliers": config.multipliers,
        "model": {"source": "software_model.flattened.flat_tiled_cycles (= RTL, cocotb "
                            "cycle_model)",
                  "cycles": cycles, "utilization": macs / (cycles * config.multipliers),
                  "macs": macs, "k_chunks": len(parts),
                  "memory_bound": {**parts[-1]["memory"], "cycles": bound,
                                   "utilization": macs / (bound * config.multipliers)}},
    }
