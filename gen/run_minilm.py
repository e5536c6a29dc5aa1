"""``accelgen run minilm``: compile all-MiniLM-L6-v2 for a config, run it on the ISA-level golden
model and on the Verilated RTL, check every stored word, and report cycles, utilisation, bytes
moved, stalls and accuracy against float32.

Steps (:func:`run_minilm`):

1. Compile (:func:`gen.compiler.minilm.compile_minilm`) and save the program beside the results:
   ``program.asm`` (assembly with a comment per phase), ``program.bin`` (the 256-bit
   instructions, little endian), ``plan.json`` (tiling and chunking per phase, SP/ACC peaks,
   calibration), ``layout.json`` (every DRAM tensor: base, rows, blocks, class, writer).
2. Golden model (``software_model.accelerator.execute``) layer by layer, with progress lines.
3. ``--engine rtl``: the config's Verilog (``build/rtl/<name>``) in the native harness with the
   DRAM model as a C++ memory device at the configured latency and words per cycle
   (:mod:`cosim.accelerator_run`), progress per layer from the BARRIER events; then the whole
   final DRAM against the golden model's, word for word (every tensor the program stores has its
   own region, so this checks every stored tile).  A difference names the address, both words,
   the tensor, its layer, row and block; ``mismatches`` counts differing words.
4. Cycles per layer and per instruction class, matrix/vector unit utilisation over time, bytes
   moved and stalls: from the RTL's BARRIER events (the instructions between two barriers run
   between their events, so work per segment is exact) and the memory device's counters, and from
   the cycle model (``software_model.accelerator.cycle_model``, per instruction) where the RTL
   reports nothing finer; each figure says which.
5. Accuracy: the float32 model on the same sentences and layers; per-layer relative error of the
   hidden states, embedding cosine per sentence, change of every pairwise similarity.

Writes ``result.json`` and the PNGs into ``--out``.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

__all__ = ["run_minilm", "RunFailure", "OP_CLASSES", "op_class", "first_difference"]

#: instruction classes of the per-class figures
OP_CLASSES = {
    "LOAD": "dma load", "STORE": "dma store", "MATMUL": "matmul",
    "ACCST": "acc -> sp", "ACCNORM": "acc -> sp", "ACCSCALE": "acc scale",
    "VADD": "vector add/cast", "VCAST": "vector add/cast", "VGELU": "gelu",
    "VLNORM": "layernorm", "VSMAX": "softmax", "VSMAXO": "softmax", "BARRIER": "barrier",
}


class RunFailure(Exception):
    """The RTL disagreed with the golden model or did not finish (exit status 1)."""


def op_class(op) -> str:
    return OP_CLASSES[op.name]


def _log(msg: str) -> None:
    print(msg, flush=True)


# ============================================================================================
# Comparison


def first_difference(compiled, golden_words: np.ndarray, rtl_words: np.ndarray, params):
    """``(count, detail)``: how many DRAM words differ and the first one, described."""
    from cosim.accelerator_run import unpack_words_u32
    n = compiled.program.dram_words
    g, r = golden_words[:n], rtl_words[:n]
    bad = np.nonzero((g != r).any(axis=1))[0]
    if not len(bad):
        return 0, None
    a = int(bad[0])
    where = compiled.tensor_at(a)
    ge, gm = unpack_words_u32(g[a:a + 1], params)
    re, rm = unpack_words_u32(r[a:a + 1], params)
    detail = {
        "address": a,
        "expected": {"exponent": int(ge[0]), "mantissas": [int(v) for v in gm[0]],
                     "hex": _hex(g[a])},
        "got": {"exponent": int(re[0]), "mantissas": [int(v) for v in rm[0]],
                "hex": _hex(r[a])},
    }
    if where is not None:
        t, row, block = where
        detail.update(tensor=t.name, layer=t.layer, row=row, block=block)
    return int(len(bad)), detail


def _hex(words) -> str:
    return "0x" + "".join(f"{int(w):08x}" for w in reversed(list(words)))


# ============================================================================================
# Figures from the program, the cycle model and the RTL's events


def _layer_names(compiled) -> list[str]:
    return ["embeddings"] + [f"layer {l}" for l in range(compiled.layers)]


def _layer_index(layer: int) -> int:
    return layer + 1                       # embeddings (-1) first


def _macs(instr, B) -> int:
    return instr.m * instr.n * instr.kb * B


def _program_stats(compiled, params) -> dict:
    """Counts, MACs and DMA words per layer, weights and activations apart."""
    from software_model.isa import Opcode
    B = params.block_size
    word_bytes = params.word_bits / 8
    tensors = sorted(compiled.tensors.values(), key=lambda t: t.region.base)
    bases = [t.region.base for t in tensors]

    def tensor_of(address):
        i = bisect.bisect_right(bases, address) - 1
        return tensors[i] if i >= 0 else None

    nl = compiled.layers + 1
    stats = {"instructions": len(compiled.instructions), "by_op": {}, "macs": 0,
             "macs_per_layer": [0] * nl, "loaded_words": [0] * nl,
             "loaded_weight_words": [0] * nl, "stored_words": [0] * nl}
    for instr, (layer, _) in zip(compiled.instructions, compiled.where):
        li = _layer_index(layer)
        stats["by_op"][instr.op.name] = stats["by_op"].get(instr.op.name, 0) + 1
        if instr.op == Opcode.MATMUL:
            stats["macs"] += _macs(instr, B)
            stats["macs_per_layer"][li] += _macs(instr, B)
        elif instr.op == Opcode.LOAD:
            words = instr.m * instr.n
            stats["loaded_words"][li] += words
            t = tensor_of(instr.a)
            if t is not None and t.writer == "host" and t.region.cls.name == "WEIGHT":
                stats["loaded_weight_words"][li] += words
        elif instr.op == Opcode.STORE:
            stats["stored_words"][li] += instr.m * instr.n
    stats["word_bytes"] = word_bytes
    stats["loaded_bytes"] = sum(stats["loaded_words"]) * word_bytes
    stats["stored_bytes"] = sum(stats["stored_words"]) * word_bytes
    return stats


def _model_figures(compiled, params, report, bins: int = 200) -> dict:
    """Per-layer and per-class cycles, utilisation timeline and idle cycles from the cycle
    model's per-instruction timing."""
    from software_model.isa import Opcode, Queue
    B = params.block_size
    nl = compiled.layers + 1
    ends = [0] * nl
    per_class = {}
    per_layer_class = [dict() for _ in range(nl)]
    for t, instr, (layer, _) in zip(report.timings, compiled.instructions, compiled.where):
        li = _layer_index(layer)
        ends[li] = max(ends[li], t.end)
        cls = op_class(instr.op)
        if instr.op == Opcode.BARRIER:
            continue
        dur = t.end - t.start
        per_class[cls] = per_class.get(cls, 0) + dur
        per_layer_class[li][cls] = per_layer_class[li].get(cls, 0) + dur
    per_layer = []
    prev = 0
    for e in ends:
        per_layer.append(max(0, e - prev))
        prev = max(prev, e)
    total = report.cycles
    edges = np.linspace(0, total, bins + 1)
    mat = np.zeros(bins)
    vec = np.zeros(bins)
    dma = np.zeros(bins)
    for t, instr in zip(report.timings, compiled.instructions):
        if instr.op == Opcode.BARRIER or t.end <= t.start:
            continue
        lo, hi = t.start, t.end
        i0 = max(0, int(np.searchsorted(edges, lo, "right")) - 1)
        i1 = min(bins - 1, int(np.searchsorted(edges, hi, "left")) - 1)
        for i in range(i0, max(i0, i1) + 1):
            overlap = max(0.0, min(hi, edges[i + 1]) - max(lo, edges[i]))
            if not overlap:
                continue
            if instr.op == Opcode.MATMUL:
                mat[i] += _macs(instr, B) * overlap / (hi - lo)
            elif instr.queue == Queue.EXECUTE:
                vec[i] += overlap
            else:
                dma[i] += overlap
    width = np.diff(edges)
    width[width == 0] = 1
    return {
        "cycles": total, "utilization": report.utilization,
        "per_layer_cycles": per_layer, "per_class_cycles": per_class,
        "per_layer_class_cycles": per_layer_class,
        "busy": dict(report.busy),
        "execute_idle_cycles": total - report.busy.get("execute", 0),
        "timeline": {"edges": edges.tolist(),
                     "matrix": (mat / (width * params.multipliers)).tolist(),
                     "vector": (vec / width).tolist(),
                     "dma": (dma / width).tolist()},
    }


def _rtl_figures(compiled, params, rtl) -> dict:
    """Per-layer cycles and utilisation per barrier segment from the RTL's events."""
    from software_model.isa import Opcode, Queue
    B = params.block_size
    barrier_index = [i for i, ins in enumerate(compiled.instructions) if ins.op == Opcode.BARRIER]
    cycles = [e[1] for e in rtl.events]
    nl = compiled.layers + 1
    last_event = [0] * nl
    seg_start, seg_end, seg_macs, seg_vec = [], [], [], []
    prev_cycle, prev_index = 0, -1
    for k, (bi, c) in enumerate(zip(barrier_index, cycles)):
        layer = compiled.where[bi][0]
        last_event[_layer_index(layer)] = max(last_event[_layer_index(layer)], c)
        macs = vec = 0
        for ins in compiled.instructions[prev_index + 1:bi]:
            if ins.op == Opcode.MATMUL:
                macs += _macs(ins, B)
            elif ins.queue == Queue.EXECUTE:
                vec += ins.m * max(1, ins.n // B)
        seg_start.append(prev_cycle)
        seg_end.append(c)
        seg_macs.append(macs)
        seg_vec.append(vec)
        prev_cycle, prev_index = c, bi
    per_layer, prev = [], 0
    for c in last_event:
        per_layer.append(max(0, c - prev))
        prev = max(prev, c)
    total = cycles[-1] if cycles else 0
    macs = sum(seg_macs)
    return {
        "cycles": total,
        "utilization": macs / (total * params.multipliers) if total else 0.0,
        "per_layer_cycles": per_layer,
        "segments": {"start": seg_start, "end": seg_end, "macs": seg_macs,
                     "vector_blocks": seg_vec},
    }


# ============================================================================================
# Accuracy


def _accuracy(compiled, state, reference) -> dict:
    emb_q = compiled.sentence_embeddings(state)
    emb_f = np.asarray(reference["embeddings"], np.float64)
    cos = (emb_q * emb_f).sum(axis=1)
    out = {"cosine": [float(c) for c in cos], "cosine_min": float(cos.min()),
           "per_layer_relative_error": []}
    for l in range(compiled.layers + 1):
        q = compiled.hidden_states(state, l)
        f = np.asarray(reference["hidden"][l], np.float64)
        out["per_layer_relative_error"].append(float(np.linalg.norm(q - f) / np.linalg.norm(f)))
    if len(cos) > 1:
        sim_q, sim_f = emb_q @ emb_q.T, emb_f @ emb_f.T
        iu = np.triu_indices(len(cos), 1)
        change = sim_q[iu] - sim_f[iu]
        out.update(similarity_float=sim_f[iu].tolist(), similarity_quantized=sim_q[iu].tolist(),
                   similarity_max_abs_change=float(np.abs(change).max()),
                   similarity_pairs=[[int(i), int(j)] for i, j in zip(*iu)])
    return out


# ============================================================================================
# Plots


def _plots(out: Path, result: dict, compiled) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    name = result["config"]["name"]
    layers = _layer_names(compiled)
    rtl = result.get("rtl")
    model = result["cycle_model"]
    source = "RTL (BARRIER events)" if rtl else "cycle model"

    # cycles per layer and per instruction class
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    per_layer = rtl["per_layer_cycles"] if rtl else model["per_layer_cycles"]
    axes[0].bar(layers, per_layer, color="tab:blue", label=source)
    if rtl:
        axes[0].plot(layers, model["per_layer_cycles"], "o--", color="tab:orange",
                     label="cycle model")
    axes[0].set_ylabel("cycles")
    axes[0].set_title(f"cycles per layer ({name})")
    axes[0].legend()
    axes[0].tick_params(axis="x", rotation=30)
    classes = sorted(model["per_class_cycles"], key=lambda c: -model["per_class_cycles"][c])
    bottom = np.zeros(len(layers))
    for cls in classes:
        vals = np.array([d.get(cls, 0) for d in model["per_layer_class_cycles"]], float)
        axes[1].bar(layers, vals, bottom=bottom, label=cls)
        bottom += vals
    axes[1].set_title("busy cycles per instruction class (cycle model;\nqueues overlap, so "
                      "the stack exceeds the layer's cycles)")
    axes[1].legend(fontsize=7, ncol=2)
    axes[1].tick_params(axis="x", rotation=30)
    fig.tight_layout()
    files.append(_save(fig, out / "cycles.png"))

    # utilisation over time
    fig, ax = plt.subplots(figsize=(12, 4))
    tl = model["timeline"]
    centers = 0.5 * (np.array(tl["edges"][1:]) + np.array(tl["edges"][:-1]))
    ax.plot(centers, tl["matrix"], lw=0.8, color="tab:blue", label="matrix unit (cycle model)")
    ax.plot(centers, tl["vector"], lw=0.8, color="tab:green",
            label="vector/ACC ops busy (cycle model)")
    if rtl:
        seg = rtl["segments"]
        util = [m / ((e - s) * result["config"]["multipliers"]) if e > s else 0
                for s, e, m in zip(seg["start"], seg["end"], seg["macs"])]
        xs, ys = [], []
        for s, e, u in zip(seg["start"], seg["end"], util):
            xs += [s, e]
            ys += [u, u]
        ax.plot(xs, ys, lw=0.8, color="black", alpha=0.7,
                label="matrix unit (RTL, per barrier segment)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("cycle")
    ax.set_ylabel("utilization")
    ax.set_title(f"utilization over time ({name}; the cycle model's timeline is per "
                 "instruction, the RTL's per BARRIER segment)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    files.append(_save(fig, out / "utilization.png"))

    # bytes moved
    prog = result["program"]
    wb = prog["word_bytes"]
    fig, ax = plt.subplots(figsize=(8, 4))
    w = np.array(prog["loaded_weight_words"]) * wb / 1e6
    a = (np.array(prog["loaded_words"]) - np.array(prog["loaded_weight_words"])) * wb / 1e6
    s = np.array(prog["stored_words"]) * wb / 1e6
    x = np.arange(len(layers))
    ax.bar(x - 0.2, w, 0.4, label="loaded: weights")
    ax.bar(x - 0.2, a, 0.4, bottom=w, label="loaded: activations, K, V^T, params")
    ax.bar(x + 0.2, s, 0.4, label="stored")
    ax.set_xticks(x, layers, rotation=30)
    ax.set_ylabel("MB")
    ax.set_title(f"bytes moved over the memory port ({name})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save(fig, out / "bytes.png"))

    # stall cycles by cause
    fig, ax = plt.subplots(figsize=(9, 4))
    stalls = result["stalls"]
    keys = list(stalls)
    ax.barh(keys, [stalls[k]["cycles"] for k in keys],
            color=["tab:red" if stalls[k]["source"] == "rtl" else "tab:gray" for k in keys])
    ax.set_xlabel("cycles")
    ax.set_title(f"stall cycles by cause ({name}; red: measured on the RTL, grey: cycle model)")
    fig.tight_layout()
    files.append(_save(fig, out / "stalls.png"))

    # accuracy
    acc = result["accuracy"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].bar(range(len(acc["cosine"])), acc["cosine"])
    axes[0].set_ylim(min(acc["cosine"]) - 0.02, 1.0)
    axes[0].set_xlabel("sentence")
    axes[0].set_title("embedding cosine vs float32")
    axes[1].plot(layers, acc["per_layer_relative_error"], "o-")
    axes[1].set_title("hidden-state relative error vs float32")
    axes[1].tick_params(axis="x", rotation=30)
    if "similarity_float" in acc:
        axes[2].scatter(acc["similarity_float"], acc["similarity_quantized"], s=12)
        lo = min(acc["similarity_float"] + acc["similarity_quantized"])
        axes[2].plot([lo, 1], [lo, 1], "k--", lw=0.7)
        axes[2].set_xlabel("float32 similarity")
        axes[2].set_ylabel("accelerator similarity")
        axes[2].set_title(f"pairwise similarity (max change "
                          f"{acc['similarity_max_abs_change']:.3f})")
    else:
        axes[2].axis("off")
        axes[2].text(0.5, 0.5, "one sentence: no pairs", ha="center")
    fig.suptitle(f"accuracy ({name}, {result['workload']['layers']} layers)")
    fig.tight_layout()
    files.append(_save(fig, out / "accuracy.png"))
    return files


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# ============================================================================================
# The command


def run_minilm(config, *, config_path: str = "", sentences=None, layers: int = 6,
               out: Path, engine: str = "rtl", latency: int = 8,
               words_per_cycle: Optional[int] = None, profile: str = "smooth", seed: int = 1,
               opt: Optional[str] = None, plots: bool = True, model=None,
               log: Callable[[str], None] = _log) -> dict:
    """Compile, run and check (module docstring).  ``config``: an ``AcceleratorConfig``;
    ``sentences``: the texts (default: the first 4 of ``gen.compiler.minilm.SENTENCES``).
    Returns the result dict (also written to ``out/result.json``); raises
    :class:`gen.compiler.tiling.CompileError` when the model does not fit the config and
    :class:`RunFailure` when the RTL disagrees with the golden model or does not finish
    (after writing the result)."""
    from gen.compiler.minilm import SENTENCES, compile_minilm, float_reference, load_model
    from software_model.accelerator import (MemoryModel, cycle_model, execute)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = config.accelerator_params()
    wpc = words_per_cycle or params.port_words
    memory = MemoryModel(latency=latency, words_per_cycle=wpc)
    sentences = tuple(SENTENCES[:4] if sentences is None else sentences)
    model = model or load_model()
    t0 = time.perf_counter()
    compiled = compile_minilm(params, sentences, layers=layers, memory=memory, model=model)
    compile_seconds = time.perf_counter() - t0
    (out / "program.asm").write_text(compiled.assembly())
    (out / "program.bin").write_bytes(compiled.binary())
    (out / "plan.json").write_text(json.dumps(compiled.plan_json(), indent=1) + "\n")
    (out / "layout.json").write_text(json.dumps(compiled.layout_json(), indent=1) + "\n")
    log(f"compiled {len(sentences)} sentence(s), {compiled.tokens} tokens, {layers} layer(s): "
        f"{len(compiled.instructions)} instructions, {compiled.program.dram_words} DRAM words "
        f"({compile_seconds:.1f} s) -> {out}/program.asm")

    # golden model, layer by layer
    t0 = time.perf_counter()
    state = compiled.program.initial_state(params)
    start = 0
    names = _layer_names(compiled)
    while start < len(compiled.instructions):
        layer = compiled.where[start][0]
        end = start
        while end < len(compiled.instructions) and compiled.where[end][0] == layer:
            end += 1
        execute(compiled.instructions[start:end], state)
        log(f"  golden: {names[_layer_index(layer)]} done "
            f"({time.perf_counter() - t0:.1f} s)")
        start = end
    golden_seconds = time.perf_counter() - t0
    report = cycle_model(compiled.instructions, params, memory)
    model_fig = _model_figures(compiled, params, report)
    reference = float_reference(model, sentences, layers)
    accuracy = _accuracy(compiled, state, reference)
    prog_stats = _program_stats(compiled, params)
    log(f"golden model: embedding cosine vs float32 min {accuracy['cosine_min']:.4f}; "
        f"cycle model {report.cycles} cycles, matrix utilization {report.utilization:.3f}")

    result = {
        "config": {"name": config.name, "path": config_path, "multipliers": params.multipliers,
                   "block_size": params.block_size, "rows": params.rows, "cols": params.cols,
                   "sub_arrays": params.sub_arrays, "sp_words": params.sp_words,
                   "acc_words": params.acc_words, "port_words": params.port_words,
                   "formats": {c: dataclasses.asdict(f) for c, f in
                               zip(("activation", "weight", "kv"), params.formats)}},
        "workload": {"model": "all-MiniLM-L6-v2", "sentences": list(sentences),
                     "tokens": list(compiled.lengths), "layers": layers},
        "memory_model": {"latency": latency, "words_per_cycle": wpc, "profile": profile,
                         "seed": seed},
        "engine": engine,
        "files": ["program.asm", "program.bin", "plan.json", "layout.json"],
        "compile_seconds": round(compile_seconds, 3),
        "golden_seconds": round(golden_seconds, 3),
        "program": prog_stats,
        "cycle_model": model_fig,
        "accuracy": accuracy,
        "rtl": None,
        "check": None,
        "mismatches": None,
    }
    stalls = {"execute queue idle (cycle model)": {
        "cycles": model_fig["execute_idle_cycles"], "source": "model"}}
    failure = None
    if engine == "rtl":
        failure = _run_rtl(config, compiled, params, state, result, stalls, latency, wpc,
                           profile, seed, opt, log)
    result["stalls"] = stalls
    if plots:
        result["files"] += _plots(out, result, compiled)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    if failure:
        raise RunFailure(failure)
    return result


def _run_rtl(config, compiled, params, state, result, stalls, latency, wpc, profile, seed, opt,
             log) -> Optional[str]:
    from cosim.accelerator_run import dram_image_u32, pack_words_u32, run_program_native
    from cosim.fast import FastSimError
    from gen.export import export_rtl
    from software_model.isa import Opcode
    t0 = time.perf_counter()
    design_dir = Path("build") / "rtl" / config.name
    export_rtl(config, design_dir)
    export_seconds = time.perf_counter() - t0
    barrier_layers = [compiled.where[i][0] for i, ins in enumerate(compiled.instructions)
                      if ins.op == Opcode.BARRIER]
    last_of_layer = {}
    for k, layer in enumerate(barrier_layers):
        last_of_layer[layer] = k
    names = _layer_names(compiled)
    t_sim = [None]

    def on_event(index, cycle):
        if t_sim[0] is None:
            t_sim[0] = time.perf_counter()
        layer = barrier_layers[index]
        if last_of_layer[layer] == index:
            log(f"  rtl: {names[_layer_index(layer)]} done at cycle {cycle} "
                f"({time.perf_counter() - t_sim[0]:.1f} s)")

    log(f"rtl: {design_dir} ({export_seconds:.1f} s), building/running the native harness "
        f"(DRAM latency {latency}, {wpc} word(s)/cycle, profile {profile})")
    image = dram_image_u32(compiled.program, params)
    try:
        rtl = run_program_native(design_dir, compiled.instructions, image, params,
                                 latency=latency, words_per_cycle=wpc, profile=profile,
                                 seed=seed, on_event=on_event, opt=opt)
    except FastSimError as exc:
        result["rtl"] = {"status": "failed", "error": str(exc)}
        result["mismatches"] = None
        return f"RTL run failed: {exc}"
    golden_words = pack_words_u32(state.dram.exps, state.dram.mans, params)
    mismatches, first = first_difference(compiled, golden_words, rtl.memory, params)
    golden_tags = [t & 0xFF for t, _ in state.events]
    events_match = [e[0] for e in rtl.events] == golden_tags
    fig = _rtl_figures(compiled, params, rtl)
    ms = rtl.memory_stats
    result["rtl"] = {
        **fig, "status": rtl.status, "sim_cycles": rtl.sim_cycles,
        "export_seconds": round(export_seconds, 3), "build_seconds": round(rtl.build_seconds, 3),
        "sim_wall_seconds": round(rtl.wall_seconds, 3),
        "sim_loop_seconds": round(rtl.loop_seconds, 3),
        "sim_loop_cpu_seconds": round(rtl.loop_cpu_seconds, 3),
        "cycles_per_second": round(rtl.sim_cycles / rtl.loop_seconds, 1)
        if rtl.loop_seconds else None,
        "build_dir": rtl.build_dir, "memory": ms, "stalled": rtl.stalled,
        "model_over_rtl_cycles": result["cycle_model"]["cycles"] / fig["cycles"]
        if fig["cycles"] else None,
    }
    prog = result["program"]
    result["check"] = {
        "words_compared": int(compiled.program.dram_words),
        "stored_words": int(sum(t.region.rows * t.region.blocks
                                for t in compiled.tensors.values() if t.writer == "program")),
        "mismatches": mismatches, "first_difference": first,
        "events": len(rtl.events), "events_match_golden": events_match,
        "dma_words_match_program": ms.get("read_words") == sum(prog["loaded_words"])
        and ms.get("write_words") == sum(prog["stored_words"]),
    }
    result["mismatches"] = mismatches
    stalls.update({
        "memory busy: request waited (bandwidth)": {"cycles": ms.get("wait_busy", 0),
                                                     "source": "rtl"},
        "memory latency: read response not yet due": {"cycles": ms.get("response_latency", 0),
                                                      "source": "rtl"},
        "memory profile: request blocked": {"cycles": ms.get("wait_profile", 0),
                                            "source": "rtl"},
        "response offered, not taken": {"cycles": ms.get("response_backpressure", 0),
                                        "source": "rtl"},
        "decoder not taking commands (barriers, full queues)": {
            "cycles": rtl.stalled.get("commands", 0), "source": "rtl"},
    })
    log(f"rtl: {fig['cycles']} cycles (cycle model {result['cycle_model']['cycles']}), matrix "
        f"utilization {fig['utilization']:.3f}; simulated {rtl.sim_cycles} cycles in "
        f"{rtl.loop_seconds:.1f} s (build {rtl.build_seconds:.0f} s)")
    if mismatches or not events_match:
        if first:
            where = (f"{first.get('tensor', '?')} (layer {first.get('layer', '?')}, row "
                     f"{first.get('row', '?')}, block {first.get('block', '?')})")
            msg = (f"{mismatches} DRAM word(s) differ from the golden model; first at address "
                   f"{first['address']} in {where}: expected {first['expected']['hex']}, got "
                   f"{first['got']['hex']}")
        else:
            msg = "the RTL's BARRIER events differ from the golden model's"
        log("MISMATCH: " + msg)
        return msg
    log(f"check: all {compiled.program.dram_words} DRAM words equal the golden model "
        f"({result['check']['stored_words']} stored by the program), 0 mismatches")
    return None
