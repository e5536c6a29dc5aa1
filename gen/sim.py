"""Configs onto the native stream harness: ``accelgen sim`` and the benches call these.

:mod:`cosim.fast` works from plain data (an exported design); this module exports a config and
maps its parameters onto :mod:`cosim.fast` / :mod:`cosim.gemm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cosim.fast import Design, FastRun
from cosim.gemm import GemmRun
from gen.config import REPO_ROOT
from gen.schema import ConfigBase

__all__ = ["design_for", "simulate", "tiled_gemm", "random_operands"]

SIM_ROOT = REPO_ROOT / "build" / "sim"


def design_for(config: ConfigBase, out_dir: str | Path | None = None) -> Design:
    """Export ``config`` (once per config hash, under ``build/sim/``) and describe it as data."""
    from gen.export import export_rtl

    folder = Path(out_dir) if out_dir else SIM_ROOT / f"{config.name}-{config.config_hash[:12]}"
    if not (folder / "manifest.json").exists():
        export_rtl(config, folder)
    return Design.from_folder(folder)


def simulate(config: ConfigBase, inputs: Mapping[str, Any], **kwargs) -> FastRun:
    """:func:`cosim.fast.simulate` on the design of ``config`` (same keyword arguments)."""
    from cosim.fast import simulate as fast_simulate

    return fast_simulate(design_for(config), inputs, **kwargs)


def random_operands(config: ConfigBase, m: int, k: int, n: int, seed: int = 1,
                    style: str = "uniform") -> dict:
    """A (M x K) and B (K x N) in the config's operand types, plus MXInt exponents if any."""
    from cosim.harness import operand_matrix, signed_limits

    rng = np.random.default_rng(seed)
    out = {"a": operand_matrix(rng, (m, k), config.a_width, style),
           "b": operand_matrix(rng, (k, n), config.b_width, style)}
    if config.kind == "flattened_array" and config.mxint:
        lo, hi = signed_limits(config.exponent_width)
        blocks = k // config.block_size
        if config.a_format == "mxint":
            out["a_exp"] = rng.integers(lo, hi + 1, size=(m, blocks))
        if config.b_format == "mxint":
            out["b_exp"] = rng.integers(lo, hi + 1, size=(blocks, n))
    return out


def tiled_gemm(config: ConfigBase, m: int, k: int, n: int, *, seed: int = 1,
               profile: str = "smooth", harness: str = "fast", opt: str | None = None,
               style: str = "uniform", design: Design | None = None) -> GemmRun:
    """An M x K x N GEMM of random operands on a ``systolic_array`` or ``flattened_array``
    config, run on the native harness with every result row checked against the golden model
    (:mod:`cosim.gemm`)."""
    from cosim.gemm import flattened_tiled_gemm, systolic_tiled_gemm

    design = design or design_for(config)
    ops = random_operands(config, m, k, n, seed, style)
    common = dict(profile=profile, seed=seed, harness=harness, opt=opt)
    if config.kind == "systolic_array":
        return systolic_tiled_gemm(design, ops["a"], ops["b"], rows=config.rows,
                                   cols=config.cols, dataflow=config.dataflow,
                                   a_width=config.a_width, b_width=config.b_width,
                                   acc_width=config.accumulator_width, overflow=config.overflow,
                                   max_k=config.max_k, buffer_rows=config.result_buffer_rows,
                                   **common)
    if config.kind == "flattened_array":
        if not config.mxint and k > config.max_k:
            raise ValueError(f"K = {k} exceeds max_k = {config.max_k} of {config.name}")
        mx = dict(block_size=config.block_size, exponent_width=config.exponent_width,
                  out_width=config.output_width, a_exp=ops.get("a_exp"),
                  b_exp=ops.get("b_exp")) if config.mxint else {}
        return flattened_tiled_gemm(design, ops["a"], ops["b"], blen=config.blen,
                                    mlen=config.mlen, a_width=config.a_width,
                                    b_width=config.b_width, acc_width=config.accumulator_width,
                                    overflow=config.overflow,
                                    buffer_rows=config.result_buffer_rows, **mx, **common)
    raise ValueError(f"tiled GEMMs run on systolic_array and flattened_array configs, not "
                     f"{config.kind}")
