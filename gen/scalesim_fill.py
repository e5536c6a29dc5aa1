"""Fill the SCALE-Sim cache (build/scalesim/) for every case the systolic and flattened benches
compare with, cheapest first, so the benches can then run quickly:

    nice -n 10 python -m gen.scalesim_fill [--max-cycles N]

Each run is cached as it finishes; an interrupted fill loses one run. Cases whose simulation would
need more than the benches' memory budget are skipped (the benches use the closed form there).
"""

from __future__ import annotations

import argparse
import sys
import time


def cases() -> list[tuple]:
    from gen.bench import flattened, systolic
    from gen.config import load_config, preset_paths
    from software_model.systolic import single_tile_cycles

    out = []
    for cfg in (load_config(p) for p in preset_paths("systolic_array")):
        kw = (cfg.rows, cfg.cols, cfg.dataflow)
        for _label, m, k, n in systolic.SHAPES:
            out.append((m, k, n, *kw))
        lengths = (sorted({1, cfg.rows, 64, cfg.max_k}) if cfg.dataflow == "output_stationary"
                   else [1, cfg.rows, 64, 256])
        for t in lengths:
            st = single_tile_cycles(t, rows=cfg.rows, cols=cfg.cols, dataflow=cfg.dataflow)
            out.append((st["m"], st["k"], st["n"], *kw))
    decode, prefill = flattened._shapes(False)
    for m, k, n in decode + prefill:
        out.append((m, k, n, flattened.SQUARE_BIG, flattened.SQUARE_BIG, "output_stationary"))
    return sorted(set(out), key=_cost)


def _cost(case) -> int:
    from software_model.systolic import scalesim_cycles
    m, k, n, rows, cols, dataflow = case
    return scalesim_cycles(m, k, n, rows=rows, cols=cols, dataflow=dataflow) * (rows + cols)


def main(argv=None) -> int:
    from gen.bench.systolic import SCALESIM_MEMORY_BUDGET
    from gen.scalesim import scalesim_cached, scalesim_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-cycles", type=int, default=0, help="skip longer runs (0: none)")
    args = parser.parse_args(argv)
    todo = cases()
    for i, (m, k, n, rows, cols, dataflow) in enumerate(todo, 1):
        if _cost((m, k, n, rows, cols, dataflow)) * 40 > SCALESIM_MEMORY_BUDGET:
            print(f"[{i}/{len(todo)}] {m}x{k}x{n} on {rows}x{cols} {dataflow}: over the memory "
                  "budget, skipped", flush=True)
            continue
        from software_model.systolic import scalesim_cycles
        cycles = scalesim_cycles(m, k, n, rows=rows, cols=cols, dataflow=dataflow)
        if args.max_cycles and cycles > args.max_cycles:
            continue
        if scalesim_cached(m, k, n, rows=rows, cols=cols, dataflow=dataflow):
            continue
        start = time.monotonic()
        r = scalesim_run(m, k, n, rows=rows, cols=cols, dataflow=dataflow)
        print(f"[{i}/{len(todo)}] {m}x{k}x{n} on {rows}x{cols} {dataflow}: {r['cycles']} cycles "
              f"(closed form {cycles}) {time.monotonic() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
