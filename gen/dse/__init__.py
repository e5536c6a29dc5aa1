"""Design-space exploration for any kind with a sweep model: ``accelgen dse SWEEP.yaml``.

* :mod:`gen.dse.sweep`: sweep files, validated with the configs' schema machinery.
* :mod:`gen.dse.kinds`: the per-kind interface (options, expansion, cost/cycle evaluation,
  comparisons, plots) and the registry of kinds that have one.
* :mod:`gen.dse.engine`: design points, local/Dask execution, the resumable results log,
  progress, Pareto fronts, outputs: the same for every kind.
* :mod:`gen.dse.ternary` (ternary units at equal throughput), :mod:`gen.dse.arrays` (systolic and
  flattened arrays at equal multipliers on a GEMM workload): the kinds.
* :mod:`gen.dse.cli`: the command line.
"""

from gen.dse.cli import add_arguments, main, run
from gen.dse.engine import (DesignPoint, ProgressBar, SweepResult, _synth_cache_dir,
                            evaluate_point, expand_points, pareto_front, plot_pareto, run_sweep,
                            synthesize_cached, write_outputs)
from gen.dse.kinds import DSE_KINDS, DseKind, dse_kind
from gen.dse.sweep import MAX_COMBINATIONS, MAX_JOBS, MAX_LIST, Sweep, load_sweep, sweep_from_dict
from gen.dse.ternary import (ARCH_STYLE, ARCHITECTURES, MAX_THROUGHPUT, MAX_TILES, MAX_WORKLOAD,
                             _activation_order, _throughput_ticks, best_per_group, format_table)

__all__ = ["Sweep", "DesignPoint", "ProgressBar", "SweepResult", "DseKind", "DSE_KINDS",
           "dse_kind", "load_sweep", "sweep_from_dict", "expand_points", "evaluate_point",
           "run_sweep", "pareto_front", "plot_pareto", "write_outputs", "synthesize_cached",
           "best_per_group", "format_table", "add_arguments", "run", "main", "ARCHITECTURES",
           "ARCH_STYLE", "MAX_LIST", "MAX_COMBINATIONS", "MAX_JOBS", "MAX_THROUGHPUT",
           "MAX_TILES", "MAX_WORKLOAD"]
