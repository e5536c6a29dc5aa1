"""Run the real SCALE-Sim v3 (PyPI ``scalesim`` 3.0.0, optional dependency group ``scalesim``)
on one GEMM and return its cycles and utilization.

    scalesim_run(m, k, n, rows=R, cols=C, dataflow="output_stationary") -> dict

The simulator is driven through its own ``scalesim.scale_sim.scalesim`` class, in a temporary
folder, with a config that matches what our cycle models assume: SRAMs large enough never to
stall (``InterfaceBandwidth = CALC``), no sparsity, no custom layout. GEMM topology rows list
M, N, K in that order with a trailing comma (SCALE-Sim drops the last field of every row).
Results are cached by inputs (and the package version) in ``build/scalesim/<digest>.json``.

What is returned: ``total_cycles`` is SCALE-Sim's "Total Cycles" as reported (it counts from 0:
one less than the number of cycles); ``cycles`` adds that 1 back so it compares with our cycle
counts; ``utilization`` is its "Overall Util" / 100 (= MKN / (cycles_reported x R x C)); also
its stall cycles and mapping efficiency.

numpy >= 2 removed aliases that SCALE-Sim 3.0.0 (or a module it imports) may still use, and
no longer converts a one-element array with ``int()`` (which SCALE-Sim's memory model does); the
shims below restore both, before the package runs and only for it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

__all__ = ["available", "scalesim_run", "scalesim_cached", "SCALESIM_VERSION", "DATAFLOWS"]

SCALESIM_VERSION = "3.0.0"
DATAFLOWS = {"output_stationary": "os", "weight_stationary": "ws", "input_stationary": "is"}
_CACHE_VERSION = 1

_CONFIG = """\
[general]
run_name = accelgen

[architecture_presets]
ArrayHeight : {rows}
ArrayWidth : {cols}
IfmapSramSzkB : {sram_kb}
FilterSramSzkB : {sram_kb}
OfmapSramSzkB : {sram_kb}
IfmapOffset : 0
FilterOffset : 10000000
OfmapOffset : 20000000
Dataflow : {df}
Bandwidth : 10
ReadRequestBuffer : 32
WriteRequestBuffer : 32

[layout]
IfmapCustomLayout : False
IfmapSRAMBankBandwidth : 10
IfmapSRAMBankNum : 10
IfmapSRAMBankPort : 2
FilterCustomLayout : False
FilterSRAMBankBandwidth : 10
FilterSRAMBankNum : 10
FilterSRAMBankPort : 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth : CALC
UseRamulatorTrace : False
"""

_LAYOUT_HEADER = ("Layer name, IFMAP Height Intraline Factor, IFMAP Width Intraline Factor, "
                  "Filter Height Intraline Factor, Filter Width Intraline Factor, Channel "
                  "Intraline Factor, Num Filter Intraline Factor, IFMAP Height Intraline Order, "
                  "IFMAP Width Intraline Order, Channel Intraline Order, IFMAP Height Interline "
                  "Order, IFMAP Width Interline Order, Channel Interline Order, Num Filter "
                  "Intraline Order, Channel Intraline Order, Filter Height Intraline Order, "
                  "Filter Width Intraline Order, Num Filter Interline Order, Channel Interline "
                  "Order, Filter Height Interline Order, Filter Width Interline Order,\n")


def _numpy_shim() -> None:
    """Restore the aliases numpy 2 removed (np.NaN, np.Inf, np.float_, np.product, ...)."""
    import numpy as np
    aliases = {"NaN": "nan", "Inf": "inf", "NINF": None, "PINF": None, "float_": "float64",
               "complex_": "complex128", "product": "prod", "cumproduct": "cumprod",
               "sometrue": "any", "alltrue": "all", "round_": "round", "unicode_": "str_",
               "string_": "bytes_"}
    for old, new in aliases.items():
        if old in np.__dict__:
            continue
        if old == "NINF":
            setattr(np, old, -np.inf)
        elif old == "PINF":
            setattr(np, old, np.inf)
        elif hasattr(np, new):
            setattr(np, old, getattr(np, new))


class _SizeOneInt(int):
    """``int`` as numpy < 2 had it: a one-element array converts (numpy 2 raises TypeError, and
    SCALE-Sim 3.0.0 does ``int(max(list_of_1_element_arrays))``). Calling it returns a plain
    int."""

    def __new__(cls, value=0, *args):
        import numpy as np
        if isinstance(value, np.ndarray) and value.size == 1:
            value = value.reshape(()).item()
        return int(value, *args)


def _patch_int() -> None:
    """Give SCALE-Sim's memory and layer modules the lenient ``int`` (module globals only; the
    operand-matrix module, which passes ``dtype=int`` to numpy, keeps the builtin)."""
    import importlib
    for name in ("scalesim.memory.double_buffered_scratchpad_mem", "scalesim.memory.read_buffer",
                 "scalesim.memory.read_buffer_estimate_bw", "scalesim.memory.write_buffer",
                 "scalesim.single_layer_sim", "scalesim.simulator"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.int = _SizeOneInt


def available() -> bool:
    """True when the optional ``scalesim`` group is installed (at the version we compare with)."""
    try:
        from importlib.metadata import PackageNotFoundError, version
        return version("scalesim") == SCALESIM_VERSION
    except PackageNotFoundError:
        return False


def _cache_dir() -> Path:
    from gen.config import REPO_ROOT
    return REPO_ROOT / "build" / "scalesim"


def _sram_kb(m: int, k: int, n: int) -> int:
    # Large enough to hold each operand (1 word = 1 byte in SCALE-Sim's accounting) with room:
    # the comparison is of compute schedules, not of memory stalls.
    return max(64, 2 * (max(m * k, k * n, m * n) // 1024 + 1))


def scalesim_run(m: int, k: int, n: int, *, rows: int, cols: int, dataflow: str,
                 use_cache: bool = True) -> dict:
    """Real SCALE-Sim v3 on an M x K x N GEMM for an R x C array; see the module docstring."""
    for name, value in (("m", m), ("k", k), ("n", n), ("rows", rows), ("cols", cols)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}")
    path = _cache_path(m, k, n, rows, cols, dataflow)
    if use_cache and path.exists():
        return json.loads(path.read_text())
    if not available():
        raise RuntimeError(f"SCALE-Sim {SCALESIM_VERSION} is not installed: "
                           f"pip install -e '.[scalesim]' (make bench does)")
    result = _simulate(m, k, n, rows, cols, dataflow)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return result


def _cache_path(m, k, n, rows, cols, dataflow) -> Path:
    key = json.dumps([_CACHE_VERSION, SCALESIM_VERSION, m, k, n, rows, cols, dataflow])
    return _cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.json"


def scalesim_cached(m: int, k: int, n: int, *, rows: int, cols: int,
                    dataflow: str) -> dict | None:
    """A cached :func:`scalesim_run` result, or None (never runs the simulator)."""
    path = _cache_path(m, k, n, rows, cols, dataflow)
    return json.loads(path.read_text()) if path.exists() else None


def _simulate(m, k, n, rows, cols, dataflow) -> dict:
    _numpy_shim()
    from scalesim.scale_sim import scalesim
    _patch_int()

    with tempfile.TemporaryDirectory(prefix="accelgen-scalesim-") as tmp:
        tmp = Path(tmp)
        cfg = tmp / "accelgen.cfg"
        cfg.write_text(_CONFIG.format(rows=rows, cols=cols, df=DATAFLOWS[dataflow],
                                      sram_kb=_sram_kb(m, k, n)))
        topo = tmp / "gemm.csv"
        topo.write_text(f"Layer, M, N, K,\ngemm, {m}, {n}, {k},\n")
        layout = tmp / "layout.csv"
        layout.write_text(_LAYOUT_HEADER + "gemm," + ",".join(["1"] * 20) + ",\n")
        sim = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                       layout=str(layout), input_type_gemm=True)
        with contextlib.redirect_stdout(io.StringIO()):
            sim.run_scale(top_path=str(tmp / "out"))
        report = tmp / "out" / "accelgen" / "COMPUTE_REPORT.csv"
        with open(report) as f:
            row = {key.strip(): value.strip() for key, value in next(csv.DictReader(f)).items()
                   if key}
    total = int(float(row["Total Cycles"]))
    return {"simulator": f"scalesim {SCALESIM_VERSION}", "m": m, "k": k, "n": n, "rows": rows,
            "cols": cols, "dataflow": dataflow, "total_cycles": total, "cycles": total + 1,
            "stall_cycles": int(float(row["Stall Cycles"])),
            "utilization": float(row["Overall Util %"]) / 100.0,
            "mapping_efficiency": float(row["Mapping Efficiency %"]) / 100.0}
