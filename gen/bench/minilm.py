"""all-MiniLM-L6-v2 end to end through the accelerator's RTL: small, PLENA-like and square configs,
SCALE-Sim for the matrix parts, PLENA's decode-shape claim.

    accelgen bench minilm [--quick]        (python -m gen.bench.minilm [out_dir] [--quick])

* **Whole model**: a 6-layer forward pass of 4 sentences (``gen.compiler.minilm.SENTENCES[:4]``,
  36 tokens) compiled for each config and run by ``accelgen run minilm`` (golden model, then the
  Verilated RTL in the native harness with the DRAM model: latency 8 cycles, one full port beat
  per cycle), every DRAM word checked against the golden model. Configs:
  ``configs/minilm/accelerator_small_minilm.yaml`` (the small preset's arithmetic with
  LayerNorm rows of 384), ``configs/accelerator_plena.yaml`` (flattened 4 x 64: 16 sub-arrays
  of 4 x 4) and ``configs/accelerator_square.yaml`` (16 x 16), the last two at equal
  multipliers (256), scratchpad, accumulator numbers, port and memory bandwidth. Cycles (RTL and
  cycle model), matrix utilization, per-layer cycles, accuracy, and how long each RTL run took.
* **Matrix parts against SCALE-Sim** (``gen/scalesim.py``, the real SCALE-Sim v3 with SRAMs that
  never stall): every GEMM shape of the workload (projections, FFN, per-head attention scores and
  context) on a 16 x 16 output-stationary array (the square preset's grid) and a 4 x 64 one (the
  PLENA-like preset's multipliers as one BLEN-row array), against the MATMUL cycles of the same
  GEMMs in our program (the cycle model, which is held to the RTL per instruction).
* **PLENA's claim** ("up to 8.5x higher utilization than a square array at equal multipliers and
  memory"), on decode-like shapes: M = 1, 2, 4, 8 rows against MiniLM's weight shapes, on the
  RTL of both presets, (a) operands already in the scratchpad (one MATMUL between two
  BARRIERs: the array's own utilization) and (b) weights streamed from DRAM at the configured
  bandwidth (double-buffered tiles). The ratio is reported whatever it is, with the bounds that
  explain it: rows used (``min(M, rows) / rows``), K chunks over the sub-arrays, and the weight
  bandwidth (``words_per_cycle * B * M / multipliers``).

Writes minilm.json, minilm.md, minilm.png and per-config folders minilm/<config>/. With
``ACCELGEN_MINILM_REUSE_WHOLE=1`` the whole-model runs already in ``<out>/minilm.json`` are kept
and only the decode shapes and SCALE-Sim are redone.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["run", "CONFIGS", "DECODE_ROWS", "DECODE_SHAPES"]

REPO = Path(__file__).resolve().parents[2]
CONFIGS = (("small", "configs/minilm/accelerator_small_minilm.yaml"),
           ("plena", "configs/accelerator_plena.yaml"),
           ("square", "configs/accelerator_square.yaml"))
DECODE_ROWS = (1, 2, 4, 8)
#: (K, N) of MiniLM's weights: projections, FFN in, FFN out
DECODE_SHAPES = ((384, 384), (384, 1536), (1536, 384))
LATENCY = 8


def _load(path):
    from gen.config import load_config
    return load_config(REPO / path)


def _log(msg):
    print(msg, flush=True)


# ============================================================================================
# Whole model


def _whole_model(out: Path, quick: bool) -> list[dict]:
    from gen.compiler.minilm import SENTENCES
    from gen.run_minilm import RunFailure, run_minilm
    sentences = SENTENCES[:1] if quick else SENTENCES[:4]
    layers = 1 if quick else 6
    engine = os.environ.get("ACCELGEN_MINILM_ENGINE", "rtl")
    rows = []
    for key, path in CONFIGS:
        config = _load(path)
        _log(f"-- {key}: {config.name}, {len(sentences)} sentence(s), {layers} layer(s), "
             f"engine {engine}")
        t0 = time.perf_counter()
        failure = None
        try:
            res = run_minilm(config, config_path=path, sentences=sentences, layers=layers,
                             out=out / "minilm" / key, engine=engine, latency=LATENCY,
                             log=lambda m: _log("   " + m))
        except RunFailure as exc:
            failure = str(exc)
            res = json.loads((out / "minilm" / key / "result.json").read_text())
        wall = time.perf_counter() - t0
        rtl = res.get("rtl") or {}
        rows.append({
            "key": key, "config": config.name, "path": path, "engine": engine,
            "multipliers": res["config"]["multipliers"],
            "grid": f"{res['config']['rows']}x{res['config']['cols']}"
                    f"{'x' + str(res['config']['sub_arrays']) if res['config']['sub_arrays'] > 1 else ''}",
            "tokens": sum(res["workload"]["tokens"]), "layers": layers,
            "instructions": res["program"]["instructions"], "macs": res["program"]["macs"],
            "rtl_cycles": rtl.get("cycles"), "model_cycles": res["cycle_model"]["cycles"],
            "rtl_utilization": rtl.get("utilization"),
            "model_utilization": res["cycle_model"]["utilization"],
            "per_layer_cycles": rtl.get("per_layer_cycles") or
            res["cycle_model"]["per_layer_cycles"],
            "mismatches": res["mismatches"], "failure": failure,
            "cosine_min": res["accuracy"]["cosine_min"],
            "similarity_max_abs_change": res["accuracy"].get("similarity_max_abs_change"),
            "loaded_bytes": res["program"]["loaded_bytes"],
            "stored_bytes": res["program"]["stored_bytes"],
            "memory_stats": rtl.get("memory"),
            "run_wall_seconds": round(wall, 1),
            "rtl_build_seconds": rtl.get("build_seconds"),
            "rtl_sim_seconds": rtl.get("sim_loop_seconds"),
            "rtl_sim_cpu_seconds": rtl.get("sim_loop_cpu_seconds"),
            "rtl_cycles_per_second": rtl.get("cycles_per_second"),
            "load_average": os.getloadavg()[0],
            "plan": json.loads((out / "minilm" / key / "plan.json").read_text())["phases"],
        })
    return rows


# ============================================================================================
# SCALE-Sim


def _gemm_shapes(tokens: list[int], layers: int):
    """(kind, M, K, N, count) of the workload's GEMMs."""
    T = sum(tokens)
    out = [("projection", T, 384, 384, 4 * layers), ("ffn_in", T, 384, 1536, layers),
           ("ffn_out", T, 1536, 384, layers)]
    for n in sorted(set(tokens)):
        c = tokens.count(n) * 12 * layers
        out += [(f"scores L={n}", n, 32, n, c), (f"context L={n}", n, n, 32, c)]
    return out


def _matmul_cycles_by_kind(key: str, out: Path, quick: bool) -> dict:
    """MATMUL busy cycles of the program per GEMM kind (cycle model, per instruction)."""
    from gen.compiler.minilm import SENTENCES, compile_minilm
    from software_model.accelerator import MemoryModel, cycle_model
    from software_model.isa import Opcode
    config = _load(dict(CONFIGS)[key])
    p = config.accelerator_params()
    sentences = SENTENCES[:1] if quick else SENTENCES[:4]
    c = compile_minilm(p, sentences, layers=1,
                       memory=MemoryModel(latency=LATENCY, words_per_cycle=p.port_words))
    rep = cycle_model(c.instructions, p, c.memory)
    kinds = {"qkv": "projection", "attn_out": "projection", "ffn_in": "ffn_in",
             "ffn_out": "ffn_out", "attention": "attention"}
    cycles = {}
    for t, ins, (layer, phase) in zip(rep.timings, c.instructions, c.where):
        if ins.op == Opcode.MATMUL and phase in kinds:
            k = kinds[phase]
            cycles[k] = cycles.get(k, 0) + (t.end - t.start)
    return cycles


def _scalesim(rows: list[dict], out: Path, quick: bool) -> dict:
    try:
        from gen.scalesim import available, scalesim_run
    except ImportError:
        return {"available": False, "why": "gen/scalesim.py (track/figures) is not on this "
                                           "branch"}
    if not available():
        return {"available": False, "why": "the scalesim package is not installed"}
    from gen.compiler.minilm import SENTENCES, load_model
    model = load_model()
    sentences = SENTENCES[:1] if quick else SENTENCES[:4]
    tokens = [len(model.tokenize(s)) for s in sentences]
    shapes = _gemm_shapes(tokens, 1)
    arrays = {"square 16x16": (16, 16), "4x64 (PLENA-like multipliers)": (4, 64)}
    table = []
    totals = {name: {} for name in arrays}
    for kind, M, K, N, count in shapes:
        entry = {"kind": kind, "M": M, "K": K, "N": N, "count_per_layer": count}
        for name, (r, cdim) in arrays.items():
            res = scalesim_run(M, K, N, rows=r, cols=cdim, dataflow="output_stationary")
            entry[name] = {"cycles": res["cycles"], "utilization": res["utilization"]}
            group = "attention" if kind.startswith(("scores", "context")) else kind
            totals[name][group] = totals[name].get(group, 0) + res["cycles"] * count
        table.append(entry)
    ours = {key: _matmul_cycles_by_kind(key, out, quick) for key in ("plena", "square")}
    compare = []
    for group in ("projection", "ffn_in", "ffn_out", "attention"):
        compare.append({
            "gemms": group,
            "scalesim_square_16x16": totals["square 16x16"].get(group),
            "scalesim_4x64": totals["4x64 (PLENA-like multipliers)"].get(group),
            "ours_square": ours["square"].get(group), "ours_plena": ours["plena"].get(group)})
    return {"available": True, "per_layer": True, "shapes": table, "per_layer_cycles": compare,
            "note": "SCALE-Sim: its cycles for each GEMM alone, operands always on time "
                    "(InterfaceBandwidth CALC), folds back to back, times the GEMM's count in a "
                    "layer. Ours: the MATMUL instructions' busy cycles in one layer of our "
                    "program (cycle model, calibrated to the RTL per instruction), tiled as the "
                    "compiler tiles them (K split into scratchpad tiles, per-sentence and "
                    "per-head attention with padded keys)."}


# ============================================================================================
# Decode-like shapes (PLENA's claim)


def _decode_programs(p, M, K, N):
    """(compute-only program, its K, its N, streamed program): X (M x K) and W (N x K) random.
    The compute-only program holds X and at least one B-row tile of W in the scratchpad; where
    M x K and B x K words do not both fit, its K is the largest multiple of 16 blocks that does
    (16: the PLENA-like preset's sub-array count, so both presets run the same shape; the
    utilization of one MATMUL barely depends on K past that)."""
    from software_model.accelerator import quantize_matrix
    from software_model.accelerator_programs import (Program, Region, SPAllocator,
                                                     _DramAllocator, _put, gemm_program)
    from software_model.isa import Instruction
    B = p.block_size
    KB = K // B
    rng = np.random.default_rng(M * 7 + K + N)
    # (a) operands in SP: as many weight rows as fit next to X
    fit = (p.sp_words - 16) // (M + B)
    if KB > fit:
        KB = max(16, fit // 16 * 16)
    k_sp = KB * B
    nt = max(B, min(N, (p.sp_words - M * KB - 16) // KB // B * B))
    x = rng.normal(size=(M, k_sp))
    w = rng.normal(size=(nt, k_sp)) / math.sqrt(k_sp)
    dram = _DramAllocator()
    xd, wd = dram.matrix(M, KB, 0), dram.matrix(nt, KB, 1)
    a = Program(f"decode_sp_{M}x{k_sp}x{nt}", [], dram.next)
    _put(a, xd, *quantize_matrix(x, p, 0))
    _put(a, wd, *quantize_matrix(w, p, 1))
    sp = SPAllocator(p)
    xs, ws = sp.matrix(M, KB, "x"), sp.matrix(nt, KB, "w", 1)
    I = Instruction.make
    a.instructions = [
        I("LOAD", d=xs.base, a=xd.base, m=M, n=KB, d_stride=M, a_stride=M),
        I("LOAD", d=ws.base, a=wd.base, m=nt, n=KB, d_stride=nt, a_stride=nt),
        I("BARRIER", tag=1),
        I("MATMUL", d=0, a=xs.base, b=ws.base, m=M, n=nt, kb=KB, d_stride=M, a_stride=M,
          b_stride=nt, a_class=0, b_class=1),
        I("BARRIER", tag=2)]
    # (b) the whole N x K weight streamed from DRAM through double-buffered tiles
    b = gemm_program(p, m=M, k=K, n=N, seed=M + K + N)
    b.instructions.append(I("BARRIER", tag=3))
    return a, k_sp, nt, b


def _decode(rows: list[dict], out: Path, quick: bool) -> dict:
    from cosim.accelerator_run import dram_image_u32, run_program_native
    from gen.export import export_rtl
    from software_model.accelerator import MemoryModel, cycle_model
    results = []
    shapes = DECODE_SHAPES[:1] if quick else DECODE_SHAPES
    for key in ("plena", "square"):
        config = _load(dict(CONFIGS)[key])
        p = config.accelerator_params()
        design = export_rtl(config, REPO / "build" / "rtl" / config.name).out_dir
        wpc = p.port_words
        mem = MemoryModel(latency=LATENCY, words_per_cycle=wpc)
        for K, N in shapes:
            for M in DECODE_ROWS:
                a, k_sp, nt, b = _decode_programs(p, M, K, N)
                ra = run_program_native(design, a.instructions, dram_image_u32(a, p), p,
                                        latency=LATENCY, words_per_cycle=wpc)
                want = a.run(p)
                mm_cycles = ra.events[1][1] - ra.events[0][1]
                rb = run_program_native(design, b.instructions, dram_image_u32(b, p), p,
                                        latency=LATENCY, words_per_cycle=wpc)
                _check(b, p, rb)
                _check(a, p, ra)
                model_b = cycle_model(b.instructions, p, mem).cycles
                macs_a, macs_b = M * nt * k_sp, M * N * K
                results.append({
                    "config": key, "M": M, "K": K, "N": N, "sp_K": k_sp, "sp_N": nt,
                    "sp_matmul_cycles": mm_cycles,
                    "sp_utilization": macs_a / (mm_cycles * p.multipliers),
                    "streamed_cycles": rb.cycles, "streamed_model_cycles": model_b,
                    "streamed_utilization": macs_b / (rb.cycles * p.multipliers),
                    "rows_used_bound": min(M, p.rows) / p.rows,
                    "k_chunk_bound": (K // p.block_size) / (p.sub_arrays *
                                                          -(-(K // p.block_size) //
                                                            p.sub_arrays)),
                    "bandwidth_bound": min(1.0, wpc * p.block_size * M / p.multipliers),
                })
                _log(f"   decode {key} M={M} K={K} N={N}: in SP {mm_cycles} cycles "
                     f"({results[-1]['sp_utilization']:.3f}), streamed {rb.cycles} cycles "
                     f"({results[-1]['streamed_utilization']:.3f})")
    ratios = []
    for r in results:
        if r["config"] != "plena":
            continue
        sq = next(s for s in results if s["config"] == "square" and
                  (s["M"], s["K"], s["N"]) == (r["M"], r["K"], r["N"]))
        ratios.append({"M": r["M"], "K": r["K"], "N": r["N"],
                       "sp_ratio": r["sp_utilization"] / sq["sp_utilization"],
                       "streamed_ratio": r["streamed_utilization"] / sq["streamed_utilization"]})
    return {"results": results, "ratios": ratios,
            "max_sp_ratio": max((x["sp_ratio"] for x in ratios), default=None),
            "max_streamed_ratio": max((x["streamed_ratio"] for x in ratios), default=None)}


def _check(prog, p, rtl):
    from cosim.accelerator_run import pack_words_u32
    state = prog.run(p)
    want = pack_words_u32(state.dram.exps, state.dram.mans, p)
    if not np.array_equal(rtl.memory[:prog.dram_words], want):
        raise AssertionError(f"{prog.name}: RTL DRAM differs from the golden model")


# ============================================================================================
# Report


def _markdown(res: dict) -> str:
    lines = ["# all-MiniLM-L6-v2 on the accelerator RTL (`accelgen bench minilm`)", ""]
    w = res["whole_model"]
    lines += ["| config | grid | multipliers | tokens | layers | RTL cycles | model cycles | "
              "RTL util | mismatches | cos min | RTL sim s | build s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in w:
        util = f"{r['rtl_utilization']:.3f}" if r["rtl_utilization"] is not None else "-"
        lines.append(f"| {r['config']} | {r['grid']} | {r['multipliers']} | {r['tokens']} | "
                     f"{r['layers']} | {r['rtl_cycles']} | {r['model_cycles']} | {util} | "
                     f"{r['mismatches']} | {r['cosine_min']:.4f} | {r['rtl_sim_seconds']} | "
                     f"{r['rtl_build_seconds']} |")
    d = res.get("decode")
    if d:
        lines += ["", "Decode-like shapes (RTL; utilization = M N K / (cycles x 256)):", "",
                  "| M | K | N | K, N in SP | PLENA in SP | square in SP | ratio | PLENA streamed | "
                  "square streamed | ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
        for x in d["ratios"]:
            pl = next(r for r in d["results"] if r["config"] == "plena" and
                      (r["M"], r["K"], r["N"]) == (x["M"], x["K"], x["N"]))
            sq = next(r for r in d["results"] if r["config"] == "square" and
                      (r["M"], r["K"], r["N"]) == (x["M"], x["K"], x["N"]))
            lines.append(f"| {x['M']} | {x['K']} | {x['N']} | {pl['sp_K']}, {pl['sp_N']} | "
                         f"{pl['sp_utilization']:.3f} | "
                         f"{sq['sp_utilization']:.3f} | {x['sp_ratio']:.2f} | "
                         f"{pl['streamed_utilization']:.3f} | {sq['streamed_utilization']:.3f} | "
                         f"{x['streamed_ratio']:.2f} |")
    s = res.get("scalesim")
    if s and s.get("available"):
        lines += ["", "Matrix cycles per layer against SCALE-Sim (see minilm.json for the "
                  "shapes):", "", "| GEMMs | SCALE-Sim 16x16 | ours square | SCALE-Sim 4x64 | "
                  "ours PLENA |", "|---|---|---|---|---|"]
        for c in s["per_layer_cycles"]:
            lines.append(f"| {c['gemms']} | {c['scalesim_square_16x16']} | {c['ours_square']} | "
                         f"{c['scalesim_4x64']} | {c['ours_plena']} |")
    elif s:
        lines += ["", f"SCALE-Sim: not run ({s.get('why')})"]
    return "\n".join(lines) + "\n"


def _plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    w = res["whole_model"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    names = [r["key"] for r in w]
    x = np.arange(len(w))
    axes[0].bar(x - 0.2, [r["rtl_cycles"] or 0 for r in w], 0.4, label="RTL")
    axes[0].bar(x + 0.2, [r["model_cycles"] for r in w], 0.4, label="cycle model")
    axes[0].set_xticks(x, names)
    axes[0].set_ylabel("cycles")
    axes[0].set_title("whole model: cycles")
    axes[0].legend()
    axes[1].bar(x, [r["rtl_utilization"] or r["model_utilization"] for r in w])
    axes[1].set_xticks(x, names)
    axes[1].set_ylim(0, 1)
    axes[1].set_title("whole model: matrix utilization (RTL)")
    d = res.get("decode")
    if d:
        for key, style in (("plena", "o-"), ("square", "s--")):
            for mode, color in (("sp_utilization", "tab:blue"),
                                ("streamed_utilization", "tab:orange")):
                pts = [(r["M"], r[mode]) for r in d["results"]
                       if r["config"] == key and (r["K"], r["N"]) == DECODE_SHAPES[0]]
                if pts:
                    axes[2].plot(*zip(*pts), style, color=color,
                                 label=f"{key}, {'in SP' if mode.startswith('sp') else 'streamed'}")
        axes[2].set_xlabel("M (rows per GEMM)")
        axes[2].set_ylabel("utilization")
        axes[2].set_title(f"decode shapes K x N = {DECODE_SHAPES[0][0]} x "
                          f"{DECODE_SHAPES[0][1]} (RTL)")
        axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir, quick: bool = False) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = {"quick": quick, "latency": LATENCY}
    previous = out / "minilm.json"
    if os.environ.get("ACCELGEN_MINILM_REUSE_WHOLE") == "1" and previous.exists() and \
            json.loads(previous.read_text()).get("quick") == quick:
        # the whole-model runs of an earlier `bench minilm` in this folder (45 minutes on
        # 2 cores), to redo only the decode shapes and SCALE-Sim
        res["whole_model"] = json.loads(previous.read_text())["whole_model"]
        _log("-- whole model: reusing the runs in " + str(previous))
    else:
        res["whole_model"] = _whole_model(out, quick)
    (out / "minilm.json").write_text(json.dumps(res, indent=1) + "\n")
    if os.environ.get("ACCELGEN_MINILM_ENGINE", "rtl") == "rtl":
        t1 = time.perf_counter()
        res["decode"] = _decode(res["whole_model"], out, quick)
        res["decode"]["seconds"] = round(time.perf_counter() - t1, 1)
    res["scalesim"] = _scalesim(res["whole_model"], out, quick)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "minilm.json").write_text(json.dumps(res, indent=1) + "\n")
    md = _markdown(res)
    (out / "minilm.md").write_text(md)
    _plot(res, out / "minilm.png")
    print(md)
    bad = [r["config"] for r in res["whole_model"] if r["mismatches"] or r["failure"]]
    if bad:
        raise AssertionError(f"RTL differs from the golden model on {', '.join(bad)}")
    return res


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
