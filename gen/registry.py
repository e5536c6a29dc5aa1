"""One record per kind: where its config, RTL, golden model, regression, benchmark, cycle model and
sweep model live. Every command reads this table (``accelgen list/explain/cosim/bench/cycles/dse``),
so adding a kind is adding a record (docs/FRAMEWORK.md walks through it), and a newcomer finds a
block's pieces by its name alone.

Entries are dotted paths imported on first use: a broken generator cannot break the others, and
``accelgen --help`` stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Kind", "KINDS", "Bench", "BENCHES", "kind", "load"]


@dataclass(frozen=True)
class Kind:
    name: str                      # the YAML ``kind:``
    config: str                    # "module:ConfigClass"
    rtl: tuple[str, ...]           # "module:Component" of each top elaborate() may build
    golden: str                    # "module:function" of the bit-exact golden model
    testbench: str | None          # cocotb module of the Verilator regression
    tests: str                     # pytest file: unit, fast-tier and co-simulation tests
    cycles: str | None = None      # "module:function(config, m, k, n) -> dict"
    dse: str | None = None         # "module:DseKind" for `accelgen dse`
    bench: str | None = None       # the kind's benchmark (a name in BENCHES)
    summary: str = ""


def load(path: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attr = path.partition(":")
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("systolic_array", "gen.config.systolic:SystolicArrayConfig",
         ("hw.systolic:OutputStationaryArray", "hw.systolic:WeightStationaryArray"),
         "software_model.systolic:gemm",
         "cosim.systolic", "tests/test_systolic.py", cycles="gen.cycles:systolic_cycles",
         dse="gen.dse.arrays:SystolicDse", bench="systolic",
         summary="output/weight-stationary integer systolic arrays"),
    Kind("flattened_array", "gen.config.flattened:FlattenedArrayConfig",
         ("hw.flattened:FlattenedArray",), "software_model.flattened:flat_gemm", "cosim.flattened",
         "tests/test_flattened.py", cycles="gen.cycles:flattened_cycles",
         dse="gen.dse.arrays:FlattenedDse", bench="flattened",
         summary="PLENA-style flattened BLEN x MLEN array, integer or MXInt operands"),
    Kind("mxint_cast", "gen.config.mxint:MXIntCastConfig", ("hw.mxint_cast:MXIntCast",),
         "software_model.mxint:mxint_cast", "cosim.mxint_cast", "tests/test_mxint_cast.py",
         bench="mxint", summary="FP16/BF16/FP32 blocks to MXInt"),
    Kind("mxint_dot", "gen.config.mxint:MXIntDotConfig", ("hw.mxint_dot:MXIntDotProduct",),
         "software_model.mxint:mxint_dot", "cosim.mxint_dot", "tests/test_mxint_dot.py",
         bench="mxint", summary="MXInt block dot product"),
    Kind("mxint_accumulator", "gen.config.mxint:MXIntAccumulatorConfig",
         ("hw.mxint_accumulator:MXIntAccumulator",), "software_model.mxint:mxint_accumulate",
         "cosim.mxint_accumulator", "tests/test_mxint_accumulator.py", bench="mxint",
         summary="exact or lossy accumulation of MXInt partial sums"),
    Kind("mxint_linear", "gen.config.mxint:MXIntLinearConfig", ("hw.mxint_linear:MXIntLinear",),
         "software_model.mxint:mxint_linear", "cosim.mxint_linear", "tests/test_mxint_linear.py",
         bench="mxint", summary="MXInt linear layer"),
    Kind("mxint_softmax", "gen.config.mxint_softmax:MXIntSoftmaxConfig",
         ("hw.mxint_softmax:MXIntSoftmax",), "software_model.mxint_softmax:mxint_softmax",
         "cosim.mxint_softmax", "tests/test_mxint_softmax.py", bench="mxint",
         summary="integer softmax over rows of MXInt blocks (two-pass with a row buffer)"),
    Kind("mxint_layernorm", "gen.config.mxint_layernorm:MXIntLayerNormConfig",
         ("hw.mxint_layernorm:MXIntLayerNorm",), "software_model.mxint_layernorm:mxint_layernorm",
         "cosim.mxint_layernorm", "tests/test_mxint_layernorm.py", bench="mxint",
         summary="LayerNorm of MXInt rows: exact integer sums, seed + Newton inverse square root"),
    Kind("mxint_gelu", "gen.config.mxint_gelu:MXIntGELUConfig", ("hw.mxint_gelu:MXIntGELU",),
         "software_model.mxint_gelu:mxint_gelu", "cosim.mxint_gelu", "tests/test_mxint_gelu.py",
         bench="mxint", summary="erf GELU of MXInt blocks by piecewise polynomial"),
    Kind("ternary_lut", "gen.config.ternary_lut:TernaryLUTConfig",
         ("hw.ternary_lut:TernaryLUTUnit", "hw.ternary_baseline:TernaryAddSubUnit",
          "hw.ternary_baseline:TernaryMultiplierUnit"), "software_model.ternary:ternary_gemm",
         "cosim.ternary_lut",
         "tests/test_ternary_lut.py", dse="gen.dse.ternary:TernaryDse", bench="ternary",
         summary="LUT-based ternary (BitNet b1.58) units and their baselines"),
    Kind("accelerator", "gen.config.accelerator:AcceleratorConfig",
         ("hw.accelerator:Accelerator",), "software_model.accelerator:execute", "cosim.accelerator",
         "tests/test_accelerator_rtl.py", bench="accelerator",
         summary="instruction-driven accelerator: flattened or square matrix unit, MXInt "
                 "vector unit, scratchpad, DMA, fused attention"),
    Kind("float_add", "gen.config.float_add:FloatAddConfig", ("hw.float_add:FloatAdderUnit",),
         "software_model.float16:add", "cosim.float_add", "tests/test_float_add.py",
         summary="FP16/BF16 adders"),
)}


@dataclass(frozen=True)
class Bench:
    name: str
    module: str
    summary: str


BENCHES: dict[str, Bench] = {b.name: b for b in (
    Bench("systolic", "gen.bench.systolic",
          "cycles/utilization vs SCALE-Sim, RTL-measured GEMMs, generation/synthesis scaling"),
    Bench("flattened", "gen.bench.flattened",
          "flattened vs square array at equal multipliers: utilization, area, adder tree"),
    Bench("mxint", "gen.bench.mxint", "cells, area and longest path of every MXInt preset"),
    Bench("mx_accuracy", "gen.bench.mx_accuracy",
          "all-MiniLM-L6-v2 in MXInt formats: error vs area"),
    Bench("mx_allint", "gen.bench.mx_allint",
          "all-MiniLM-L6-v2 with every operation in MXInt: ablation, cheapest configuration"),
    Bench("ternary", "gen.bench.ternary", "area of the ternary presets"),
    Bench("ternary_dse", "gen.bench.ternary_dse",
          "ternary cost model validation, equal-throughput sweeps, best mu, tiling"),
    Bench("estimate", "gen.bench.estimate", "size-estimate calibration against synthesis"),
    Bench("mutation", "gen.bench.mutation",
          "mutation score: single faults injected into the RTL, killed or survived"),
    Bench("sim", "gen.bench.sim",
          "simulation speed: cocotb vs the native stream harness vs a bare C++ loop"),
    Bench("depth", "gen.bench.depth",
          "every preset: cells, area, flops, longest path, latency, the deepest stage named"),
    Bench("fpga", "gen.bench.fpga",
          "every preset on an ECP5 LFE5U-85F: LUT4, FF, DSP, BRAM, Fmax, critical path"),
    Bench("accelerator", "gen.bench.accelerator",
          "accelerator golden-model speed, fused-attention error, cycle-model estimates"),
    Bench("minilm", "gen.bench.minilm",
          "all-MiniLM-L6-v2 through the accelerator RTL: small/PLENA-like/square, SCALE-Sim, "
          "decode shapes"),
)}


def kind(name: str) -> Kind:
    return KINDS[name]


def cycle_model(name: str) -> Callable | None:
    record = KINDS.get(name)
    return load(record.cycles) if record and record.cycles else None
