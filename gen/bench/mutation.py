"""Mutation score of the RTL regressions (issue: trust the RTL): every fault in
``gen.mutation.CATALOGUE`` is injected alone into a private copy of the repository and the
block's regression is run, fast tier first, then Verilator co-simulation. Writes
``mutation.json`` and ``mutation.md`` (killed / survived per fault, equivalent mutants explained).
``--quick`` runs the fast tier only (survivors there are not final)."""

from __future__ import annotations

from pathlib import Path

from gen.mutation import run_catalogue


def run(out_dir: Path, quick: bool = False) -> dict:
    summary = run_catalogue(Path(out_dir), cosim=not quick, progress=lambda s: print(s, flush=True))
    print(f"mutation score {summary['score']} ({summary['killed']} of "
          f"{summary['killed'] + summary['survived']} killed); unexplained survivors: "
          f"{', '.join(summary['unexplained_survivors']) or 'none'}")
    return summary
