"""The accelerator's ISA-level golden model: speed, fused-attention error, cycle estimates.

    python -m gen.bench.accelerator [out_dir] [--quick]

* **Golden speed**: a MiniLM-sized encoder (all-MiniLM-L6-v2 shapes: hidden 384, 12 heads of
  32, FFN 1536, 6 layers; 4 sentences of 16 tokens) as one instruction stream -- Q, K, V^T and
  output projections, per-sentence per-head fused attention, residual adds, LayerNorms, the FFN
  with bias and GELU -- executed by ``software_model.accelerator.execute`` on the PLENA-like
  preset with the scratchpad and accumulator enlarged so a whole layer's activations stay on
  chip (the compiler's tiling is issue 17's). Random weights (the arithmetic is what is timed);
  measured: wall-clock and CPU seconds against the MACs of its MATMULs.
* **Fused attention error**: the directed attention head of each preset on random data, the
  measured max/mean error against float64 attention next to
  ``attention_error_bound`` (the stated bound).
* **Cycle model** (first-principles estimates, docs/isa.md "Cycle costs"): cycles and matrix-unit
  utilisation of one MATMUL per decode/prefill shape and of the directed programs on the three
  presets, and of the encoder on the enlarged PLENA-like and square variants (same multipliers,
  banks and port).

Writes accelerator.json.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["run", "encoder_program"]

PRESETS = ("small", "plena", "square")


def _preset(name):
    from gen.config import load_config
    return load_config(Path(__file__).resolve().parents[2] / "configs" /
                       f"accelerator_{name}.yaml").accelerator_params()


def encoder_program(params, *, sentences=4, tokens=16, hidden=384, heads=12, ffn=1536,
                    layers=6, seed=0):
    """A MiniLM-shaped encoder as one program (see the module docstring).  Returns a
    :class:`~software_model.accelerator_programs.Program`."""
    from software_model.accelerator import quantize_matrix
    from software_model.accelerator_programs import (Program, Region, SPAllocator,
                                                     _DramAllocator, _barrier, _load, _put,
                                                     _store, attention_program, linear_program)
    from software_model.isa import Instruction, TensorClass
    act, wgt, kv = TensorClass.ACTIVATION, TensorClass.WEIGHT, TensorClass.KV
    B = params.block_size
    T = sentences * tokens
    d = hidden // heads
    hb, fb = hidden // B, ffn // B
    rng = np.random.default_rng(seed)
    dram = _DramAllocator()
    x_d = dram.matrix(T, hb, act)
    w = {name: dram.matrix(rows, cols // B, wgt)
         for name, rows, cols in (("q", hidden, hidden), ("k", hidden, hidden),
                                  ("v", hidden, hidden), ("o", hidden, hidden),
                                  ("w1", ffn, hidden), ("w2", hidden, ffn))}
    b1_d, b2_d = dram.matrix(1, fb, act), dram.matrix(1, hb, act)
    g_d = dram.matrix(1, 2 * hb, act)
    k_d, vt_d, o_d = dram.matrix(T, hb, kv), dram.matrix(hidden, T // B, kv), \
        dram.matrix(T, hb, act)
    prog = Program("minilm_encoder", [], dram.next)
    _put(prog, x_d, *quantize_matrix(rng.normal(size=(T, hidden)), params, act))
    for name, region in w.items():
        scale = 1 / math.sqrt(region.blocks * B) / (math.sqrt(d) if name == "q" else 1)
        _put(prog, region, *quantize_matrix(rng.normal(size=(region.rows, region.blocks * B))
                                            * scale, params, wgt))
    for region in (b1_d, b2_d):
        _put(prog, region, *quantize_matrix(0.1 * rng.normal(size=(1, region.blocks * B)),
                                            params, act))
    _put(prog, g_d, *quantize_matrix(np.concatenate([np.ones(hidden), np.zeros(hidden)])[None],
                                     params, act))
    sp = SPAllocator(params)
    x = sp.matrix(T, hb, "x")
    q = sp.matrix(T, hb, "q")
    kbuf = sp.matrix(T, hb, "k", kv)
    attn = sp.matrix(T, hb, "attention output")
    y = sp.matrix(T, hb, "y")
    h = sp.matrix(T, fb, "h")
    wv = sp.matrix(hidden, hb, "Wv", wgt)
    vt = sp.matrix(hidden, T // B, "V^T", kv)
    b1, b2, g = sp.matrix(1, fb, "b1"), sp.matrix(1, hb, "b2"), sp.matrix(1, 2 * hb, "ln")
    mark = sp.next
    out = [_load(x, x_d), _load(b1, b1_d), _load(b2, b2_d), _load(g, g_d), _load(wv, w["v"])]
    acc_base = 0

    def vop(op, dst, a, b=None, **kw):
        fields = dict(d=dst.base, a=a.base, m=dst.rows, n=dst.blocks * B,
                      d_stride=dst.stride, a_stride=a.stride, **kw)
        if b is not None:
            fields.update(b=b.base)
            if op == "VADD":
                fields.update(b_stride=b.stride)
        return Instruction.make(op, **fields)

    for layer in range(layers):
        for name, dst, cls in (("q", q, act), ("k", kbuf, kv)):
            sp.next = mark
            out += linear_program(params, x=x, w=w[name], out=dst, sp=sp, out_class=cls,
                                  acc_base=acc_base, tag=layer)
        # V^T = Wv . X^T: the projection with its operands swapped (accelerator.md section 3)
        out.append(Instruction.make("MATMUL", d=acc_base, a=wv.base, b=x.base, m=hidden, n=T,
                                    kb=hb, d_stride=hidden, a_stride=wv.stride,
                                    b_stride=x.stride, a_class=wgt, b_class=act))
        out.append(Instruction.make("ACCST", d=vt.base, a=acc_base, m=hidden, n=T,
                                    d_stride=vt.stride, a_stride=hidden, d_class=kv))
        out += [_barrier(layer), _store(k_d, kbuf), _store(vt_d, vt), _barrier(layer)]
        for s in range(sentences):
            for head in range(heads):
                sp.next = mark
                rows = slice(s * tokens, (s + 1) * tokens)
                qh = Region("sp", q.base + head * (d // B) * q.stride + rows.start, tokens,
                            d // B, q.stride)
                kh = Region("dram", k_d.base + head * (d // B) * k_d.stride + rows.start,
                            tokens, d // B, k_d.stride, kv)
                vh = Region("dram", vt_d.base + (rows.start // B) * vt_d.stride + head * d, d,
                            tokens // B, vt_d.stride, kv)
                oh = Region("dram", o_d.base + head * (d // B) * o_d.stride + rows.start,
                            tokens, d // B, o_d.stride)
                out += attention_program(params, q=qh, k=kh, vt=vh, out=oh, mq=tokens,
                                         length=tokens, d=d, tile=tokens, sp=sp,
                                         acc_base=acc_base)
        out += [_barrier(layer), _load(attn, o_d), _barrier(layer)]
        sp.next = mark
        out += linear_program(params, x=attn, w=w["o"], out=y, sp=sp, acc_base=acc_base)
        out += [vop("VADD", y, y, x), vop("VLNORM", x, y, g)]
        sp.next = mark
        out += linear_program(params, x=x, w=w["w1"], out=h, sp=sp, acc_base=acc_base)
        out += [vop("VADD", h, h, Region("sp", b1.base, T, fb, 1), broadcast=True),
                vop("VGELU", h, h)]
        sp.next = mark
        out += linear_program(params, x=h, w=w["w2"], out=y, sp=sp, acc_base=acc_base)
        out += [vop("VADD", y, y, Region("sp", b2.base, T, hb, 1), broadcast=True),
                vop("VADD", y, y, x), vop("VLNORM", x, y, g)]
    out += [_barrier(99), _store(x_d, x)]
    prog.instructions = out
    prog.outputs = {"x": x_d}
    return prog


def _macs(program, params):
    from software_model.isa import Opcode
    return sum(i.m * i.n * i.kb * params.block_size for i in program
               if i.op == Opcode.MATMUL)


def _golden_speed(quick: bool) -> dict:
    from software_model.accelerator import cycle_model, execute
    rows = []
    for name in ("plena", "square"):
        base = _preset(name)
        params = dataclasses.replace(base, sp_words=1 << 16, acc_words=1 << 14)
        prog = encoder_program(params, layers=1 if quick else 6)
        state = prog.initial_state(params)
        start, cpu = time.perf_counter(), time.process_time()
        execute(prog.instructions, state)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu
        report = cycle_model(prog.instructions, params)
        rows.append({"preset": name, "sp_words": params.sp_words,
                     "acc_words": params.acc_words, "instructions": len(prog.instructions),
                     "macs": _macs(prog.instructions, params), "golden_seconds": round(seconds, 3),
                     "golden_cpu_seconds": round(cpu, 3),
                     "golden_macs_per_second": round(_macs(prog.instructions, params) / seconds),
                     "model_cycles": report.cycles,
                     "model_utilization": round(report.utilization, 4)})
    return {"workload": "MiniLM-L6 shapes, 4 sentences x 16 tokens, " +
            ("1 layer" if quick else "6 layers"), "rows": rows}


def _attention_error(quick: bool) -> list[dict]:
    from software_model.accelerator import matrix_values
    from software_model.accelerator_programs import (attention_error_bound, attention_head,
                                                     directed_programs)
    from software_model.isa import Opcode
    rows = []
    for name in PRESETS:
        params = _preset(name)
        B = params.block_size
        head = [p for p in directed_programs(params) if p.name == "attention_head"][0]
        tile = max(i.n for i in head.instructions if i.op == Opcode.VSMAXO)
        mq, d = head.inputs["q"].shape
        length = head.inputs["k"].shape[0]
        for seed in range(1 if quick else 3):
            rng = np.random.default_rng(seed)
            q = rng.normal(size=(mq, d)) * 2 / np.sqrt(d)
            k = rng.normal(size=(length, d)) * (1 + np.arange(length)[:, None] / length)
            v = rng.normal(size=(length, d))
            prog = attention_head(params, mq=mq, length=length, d=d, tile=tile, q=q, k=k, v=v)
            state = prog.run(params)
            st0 = prog.initial_state(params)
            lp = -(-length // B) * B
            qv = matrix_values(*st0.dram.read_matrix(0, mq, d // B, mq), params, 0)
            at = mq * d // B
            kv = matrix_values(*st0.dram.read_matrix(at, lp, d // B, lp), params, 2)[:length]
            at += lp * d // B
            vv = matrix_values(*st0.dram.read_matrix(at, d, lp // B, d), params, 2)[:, :length].T
            ref, bound = attention_error_bound(params, qv, kv, vv, tile=tile)
            err = np.abs(matrix_values(*prog.read(state, "out"), params, 0) - ref)
            rows.append({"preset": name, "seed": seed, "L": length, "d": d, "mq": mq,
                         "tile": tile, "max_error": float(err.max()),
                         "mean_error": float(err.mean()), "max_bound": float(bound.max()),
                         "mean_bound": float(bound.mean()),
                         "within_bound": bool(np.all(err <= bound)),
                         "max_abs_reference": float(np.abs(ref).max())})
    return rows


def _directed_cycles() -> list[dict]:
    from software_model.accelerator import cycle_model
    from software_model.accelerator_programs import directed_programs
    rows = []
    for name in PRESETS:
        params = _preset(name)
        for prog in directed_programs(params):
            report = cycle_model(prog.instructions, params)
            rows.append({"preset": name, "program": prog.name,
                         "instructions": len(prog.instructions), "cycles": report.cycles,
                         "macs": report.macs, "utilization": round(report.utilization, 4)})
    return rows


def _matmul_shapes(quick: bool) -> list[dict]:
    """One MATMUL (operands already in SP) per shape: the matrix unit alone, decode (M = 1, 4)
    to prefill (M = 64), MiniLM's K x N, on the PLENA-like and square presets."""
    from software_model.accelerator import cycle_model
    from software_model.isa import Instruction
    rows = []
    ms = (1, 4, 16, 64) if not quick else (1, 64)
    for m in ms:
        for k, n in ((384, 1152), (384, 1536), (1536, 384)):
            row = {"M": m, "K": k, "N": n}
            for name in ("plena", "square"):
                params = _preset(name)
                instr = Instruction.make("MATMUL", d=0, a=0, b=0, m=m, n=n,
                                         kb=k // params.block_size, d_stride=m)
                report = cycle_model([instr], params)
                row[f"{name}_cycles"] = report.cycles
                row[f"{name}_util"] = round(report.utilization, 4)
            row["plena_speedup"] = round(row["square_cycles"] / row["plena_cycles"], 2)
            rows.append(row)
    return rows


def run(out_dir: Path, quick: bool = False) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "accelerator", "quick": quick,
              "golden_speed": _golden_speed(quick), "attention_error": _attention_error(quick),
              "directed_cycles": _directed_cycles(), "matmul_shapes": _matmul_shapes(quick)}
    (out_dir / "accelerator.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"golden model, {result['golden_speed']['workload']}:")
    for r in result["golden_speed"]["rows"]:
        print(f"  {r['preset']:7} {r['instructions']:6d} instr {r['macs'] / 1e6:8.1f} M MACs "
              f"{r['golden_seconds']:7.2f} s ({r['golden_cpu_seconds']:.2f} s CPU, "
              f"{r['golden_macs_per_second'] / 1e6:.0f} M MAC/s)"
              f"  model: {r['model_cycles']} cycles, util {r['model_utilization']:.3f}")
    print("fused attention vs float64 (max error / max bound):")
    for r in result["attention_error"]:
        print(f"  {r['preset']:7} L={r['L']:5d} seed {r['seed']}: {r['max_error']:.4f} / "
              f"{r['max_bound']:.4f}  (mean {r['mean_error']:.4f} / {r['mean_bound']:.4f})"
              f"  {'ok' if r['within_bound'] else 'OUTSIDE'}")
    print("one MATMUL, cycle model (plena vs square, 256 multipliers each):")
    for r in result["matmul_shapes"]:
        print(f"  M={r['M']:3d} K={r['K']:5d} N={r['N']:5d}: plena {r['plena_cycles']:7d} "
              f"(util {r['plena_util']:.3f})  square {r['square_cycles']:7d} "
              f"(util {r['square_util']:.3f})  speedup {r['plena_speedup']:.2f}")
    print("directed programs, cycle model:")
    for r in result["directed_cycles"]:
        print(f"  {r['preset']:7} {r['program']:15} {r['cycles']:8d} cycles  "
              f"util {r['utilization']:.3f}")
    return result


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--quick"]
    run(Path(args[0]) if args else Path("build/bench"), quick="--quick" in sys.argv)
