"""all-MiniLM-L6-v2 lowered onto an ``accelerator`` config: one program for a batch of sentences.

What runs where
---------------
* **Host, before**: tokenization, the embedding lookup (word + position + token type 0, float32)
  quantized into the activation class and placed in the DRAM image with every weight, bias and
  LayerNorm parameter of the layers run.  Weights are quantized into the weight class (``W[out,
  in]``, blocks along the reduction); biases and LayerNorm gamma/beta into the activation class.
* **Accelerator** (every arithmetic operation of the encoder): the embedding LayerNorm; per layer
  the Q, K and V projections (``1/sqrt(d)`` folded into Wq and bq; K and V^T written in the kv
  class), per sentence, head and query chunk the fused attention sequence
  (``software_model.accelerator_programs.attention_program``: double-buffered K/V tiles, online
  softmax), the output projection with its bias, the residual add and LayerNorm, the FFN (bias,
  GELU, bias, residual, LayerNorm).  Every intermediate tensor is STOREd to its own DRAM region
  (nothing is overwritten), so the final DRAM holds every layer's Q, K, V^T, attention context,
  both LayerNorm outputs and FFN hidden layer, and a mismatch localises to a tensor of a layer.
* **Host, after**: mean pooling over each sentence's tokens of the last stored hidden states and
  L2 normalisation (sentence-transformers' pooling), in float64.

Exact rewrites (the same function in real arithmetic)
-----------------------------------------------------
* ``softmax(Q K^T / sqrt(d))``: ``1/sqrt(d)`` (divided by the config's softmax ``scale``) is
  multiplied into Wq and bq on the host before quantization.
* V's bias: the accelerator computes ``V^T = Wv X^T`` (docs/accelerator.md section 3), which has
  no per-row bias operation; since every softmax row sums to one, ``P (V + 1 bv^T) = P V + 1
  bv^T``, and ``(P V + 1 bv^T) Wo^T + bo = P V Wo^T + (Wo bv + bo)``: bv is folded into the output
  projection's bias on the host (float64).

Layout
------
Activations are ``T x C`` matrices of all sentences' tokens packed row after row (no padding
between sentences: the linear layers see ``T = sum L_s`` rows).  Attention needs, per sentence,
keys padded to a whole block of tokens with zero rows and ``V^T`` with zero columns past the
sentence (the padding shares blocks with real tokens: a padded value of the next sentence would
move a block exponent, so one sentence's result would depend on another's): K is stored per
sentence into a zero-initialised region of ``Lpad_s`` rows; ``V^T`` is computed per sentence
with ``n = L_s`` after a one-block MATMUL against a zero operand has cleared the ACC columns
``L_s .. Lpad_s - 1``.

Tiling (:mod:`gen.compiler.tiling`): each phase holds a chunk of token rows resident in the
scratchpad (the projections' input, the rows a LayerNorm needs whole) and streams the weights
through two buffers; chunk and tile sizes minimise the cycle model's estimate among those that
fit the scratchpad and the accumulator (weights are streamed once per chunk, so one chunk when
all rows fit).  The plan is saved beside the program (``plan_json``).

Calibration: an ``int`` kv class needs one exponent per tensor (and an ``int`` weight class one
per weight matrix, from the weights themselves).  K's and V's exponents come from the float32
model on :data:`CALIBRATION_SENTENCES`, a fixed set disjoint from :data:`SENTENCES`, so the
program depends only on the config, the sentences, the layer count and the memory model.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from gen.compiler.tiling import (ACT, KV, WGT, BARRIER_OVERHEAD, Builder, CompileError,
                                 DramTensor, TilePlan, choose_tiles, emit_gemm, int_exponent)
from software_model.accelerator import (AcceleratorParams, AcceleratorState, MemoryModel,
                                        matrix_values)
from software_model.accelerator_programs import (Program, Region, SPAllocator,
                                                 attention_program)
from software_model.isa import Instruction, Opcode, TensorClass, disassemble, encode_program

__all__ = ["SENTENCES", "CALIBRATION_SENTENCES", "CompiledMiniLM", "compile_minilm",
           "float_reference", "load_model", "PHASES"]

#: the default workload: gen/bench/mx_accuracy.py's sentences (varied lengths and topics, two
#: pairs close in meaning)
SENTENCES = (
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is eating a piece of bread.",
    "A monkey is playing drums while the crowd cheers.",
    "Quantized integer arithmetic lets small accelerators run transformer inference.",
    "The committee postponed its decision on the new budget until next spring, "
    "citing unresolved questions about funding for public transport.",
    "Can you recommend a good book about the history of mathematics?",
)

#: fixed calibration set of the per-tensor exponents of ``int`` classes (not the workload)
CALIBRATION_SENTENCES = (
    "A woman is slicing tomatoes in the kitchen.",
    "The train to the airport leaves every twenty minutes.",
    "Researchers measured the energy use of large language models.",
    "Two dogs are running through a field of tall grass.",
    "Please send me the report before the meeting on Friday.",
    "The orchestra played a symphony by a little-known composer.",
)

#: phases of a layer in program order (annotation names, JSON keys)
PHASES = ("embeddings", "qkv", "attention", "attn_out", "ffn_in", "ffn_out")

_MODEL = None


def load_model():
    """The float32 reference model (loaded once per process)."""
    global _MODEL
    if _MODEL is None:
        from software_model.minilm import MiniLM
        _MODEL = MiniLM.load()
    return _MODEL


# ============================================================================================
# Result


@dataclass
class CompiledMiniLM:
    """A compiled batch: the program (instructions, DRAM image, size), what each instruction
    belongs to (``where[i] = (layer, phase)``; layer -1 is the embeddings), the DRAM tensors,
    the tiling plan, and the host-side data."""
    params: AcceleratorParams
    memory: MemoryModel
    sentences: tuple
    token_ids: tuple
    lengths: tuple
    offsets: tuple
    layers: int
    program: Program
    where: list
    tensors: dict
    plan: dict
    calibration: dict
    embeddings_float: np.ndarray = field(repr=False, default=None)

    @property
    def tokens(self) -> int:
        return int(sum(self.lengths))

    @property
    def instructions(self) -> list:
        return self.program.instructions

    def assembly(self) -> str:
        """The program as assembly text, one comment line per phase."""
        lines, last = [], None
        for instr, (layer, phase) in zip(self.instructions, self.where):
            if (layer, phase) != last:
                lines.append(f"# layer {layer} {phase}" if layer >= 0 else f"# {phase}")
                last = (layer, phase)
            lines.append(str(instr))
        return "\n".join(lines) + "\n"

    def binary(self) -> bytes:
        return encode_program(self.instructions)

    def layout_json(self) -> dict:
        return {"dram_words": self.program.dram_words, "word_bits": self.params.word_bits,
                "tensors": [t.to_json() for t in self.tensors.values()],
                "image_runs": [{"base": int(a), "words": int(len(e))}
                               for a, e, _ in self.program.dram]}

    def plan_json(self) -> dict:
        return self.plan

    def tensor_at(self, address: int) -> Optional[tuple[DramTensor, int, int]]:
        """``(tensor, row, block)`` of a DRAM word address, or None."""
        for t in self.tensors.values():
            r = t.region
            off = address - r.base
            if 0 <= off < r.rows * r.blocks:
                return t, off % r.stride, off // r.stride
        return None

    # -- host side after the run -------------------------------------------------------------
    def hidden_states(self, state: AcceleratorState, layer: Optional[int] = None) -> np.ndarray:
        """Values (T x H, float64) of the hidden states after ``layer`` (default: the last run;
        0 is the embedding LayerNorm's output) read from ``state.dram``."""
        layer = self.layers if layer is None else layer
        r = self.tensors[f"x{layer}"].region
        e, m = state.dram.read_matrix(r.base, r.rows, r.blocks, r.stride)
        return matrix_values(e, m, self.params, ACT)

    def sentence_embeddings(self, state: AcceleratorState) -> np.ndarray:
        """Mean pooling over each sentence's tokens, then L2 normalisation (float64)."""
        return pool(self.hidden_states(state), self.offsets, self.lengths)


def pool(hidden: np.ndarray, offsets, lengths) -> np.ndarray:
    rows = []
    for t0, n in zip(offsets, lengths):
        v = np.asarray(hidden[t0:t0 + n], np.float64).mean(axis=0)
        rows.append(v / max(float(np.linalg.norm(v)), 1e-12))
    return np.stack(rows)


def float_reference(model, sentences: Sequence[str], layers: int) -> dict:
    """The float32 model truncated to ``layers`` layers: per-layer hidden states (layer 0: the
    embedding LayerNorm's output) of all sentences packed (T x H) and the sentence embeddings."""
    from software_model.minilm import MiniLM, limited_blas_threads
    states = []
    for layer_count in range(layers + 1):
        sub = MiniLM.__new__(MiniLM)
        sub.config = dataclasses.replace(model.config, num_hidden_layers=layer_count)
        sub.weights, sub.tokenizer = model.weights, model.tokenizer
        with limited_blas_threads(1):
            states.append(np.concatenate([sub.forward(model.tokenize(s)) for s in sentences]))
    lengths = [len(model.tokenize(s)) for s in sentences]
    offsets = list(np.cumsum([0] + lengths[:-1]))
    return {"hidden": states, "embeddings": pool(states[-1], offsets, lengths)}


# ============================================================================================
# Compiler


def _check_config(p: AcceleratorParams, cfg) -> list[str]:
    """Reasons this config cannot run the model (empty: it can)."""
    H, heads = cfg.hidden_size, cfg.num_attention_heads
    d = H // heads
    B = p.block_size
    out = []
    if p.is_int(ACT):
        out.append("formats.activation.type must be mxint (the nonlinear units write mxint "
                   "activations; an int activation class would need a calibrated exponent per "
                   "tensor in every instruction)")
    if d % B or H % B or cfg.intermediate_size % B:
        out.append(f"block_size {B} must divide the head size {d}, the hidden size {H} and the "
                   f"FFN size {cfg.intermediate_size}")
    if p.layernorm.row_length != H:
        out.append(f"vector.layernorm.row_length must be the hidden size {H} (VLNORM's n), not "
                   f"{p.layernorm.row_length}")
    return out


def compile_minilm(params: AcceleratorParams, sentences: Sequence[str], *, layers: int = 6,
                   memory: Optional[MemoryModel] = None, model=None) -> CompiledMiniLM:
    """Lower ``layers`` layers of all-MiniLM-L6-v2 on ``sentences`` onto ``params`` (see the
    module docstring).  ``memory``: the DRAM model the tiling is tuned for (default
    ``MemoryModel(latency=8, words_per_cycle=port_words)``).  Raises :class:`CompileError` when
    the model does not fit the config."""
    model = model or load_model()
    cfg = model.config
    p = params
    memory = memory or MemoryModel(latency=8, words_per_cycle=p.port_words)
    problems = _check_config(p, cfg)
    if problems:
        raise CompileError("; ".join(problems))
    sentences = tuple(sentences)
    if not sentences:
        raise CompileError("no sentences")
    if not 1 <= layers <= cfg.num_hidden_layers:
        raise CompileError(f"layers must be 1 .. {cfg.num_hidden_layers}, not {layers}")
    ids = tuple(tuple(int(t) for t in model.tokenize(s)) for s in sentences)
    lengths = tuple(len(t) for t in ids)
    offsets = tuple(int(v) for v in np.cumsum((0,) + lengths[:-1]))
    B = p.block_size
    longest = -(-max(lengths) // B)
    if longest > p.softmax.max_row_blocks:
        raise CompileError(f"a sentence of {max(lengths)} tokens needs softmax rows of {longest} "
                           f"blocks: vector.softmax.max_row_blocks is "
                           f"{p.softmax.max_row_blocks}")
    compiler = _MiniLMCompiler(p, memory, model, ids, lengths, offsets, layers)
    compiler.run()
    b = compiler.b
    prog = Program("minilm", b.instructions, b.dram_next, dram=b.image,
                   outputs={f"x{layers}": b.tensors[f"x{layers}"].region})
    return CompiledMiniLM(p, memory, sentences, ids, lengths, offsets, layers, prog,
                          b.where, b.tensors, compiler.plan_json(), compiler.calibration,
                          compiler.embeddings)


class _MiniLMCompiler:
    def __init__(self, p, memory, model, ids, lengths, offsets, layers):
        self.p, self.model, self.layers = p, model, layers
        self.ids, self.lengths, self.offsets = ids, lengths, offsets
        self.b = Builder(p, memory)
        cfg = model.config
        self.H, self.F = cfg.hidden_size, cfg.intermediate_size
        self.heads = cfg.num_attention_heads
        self.d = self.H // self.heads
        B = p.block_size
        self.HB, self.FB, self.db = self.H // B, self.F // B, self.d // B
        self.T = sum(lengths)
        self.lpad = tuple(-(-n // B) * B for n in lengths)
        self.phase_plans: dict = {}
        self.choices: dict = {}
        self.calibration: dict = {}

    # -- plan JSON ---------------------------------------------------------------------------
    def plan_json(self) -> dict:
        p = self.p
        return {
            "model": "all-MiniLM-L6-v2", "layers": self.layers, "tokens": self.T,
            "sentences": [{"offset": o, "tokens": n, "padded": lp}
                          for o, n, lp in zip(self.offsets, self.lengths, self.lpad)],
            "memory_model": {"latency": self.b.memory.latency,
                             "words_per_cycle": self.b.memory.words_per_cycle},
            "scratchpad": {"words": p.sp_words, "peak_words": self.b.sp_peak},
            "accumulator": {"words": p.acc_words, "peak_words": self.b.acc_peak},
            "phases": self.phase_plans,
            "instructions": len(self.b.instructions),
            "calibration": self.calibration,
        }

    # -- weights -----------------------------------------------------------------------------
    def _weight(self, name, w, layer):
        """Quantize a weight matrix W[out, in] into the weight class and place it in DRAM."""
        p, B = self.p, self.p.block_size
        w = np.asarray(w, np.float64)
        region = self.b.dram(name, w.shape[0], w.shape[1] // B, WGT, layer=layer, writer="host")
        exp = None
        if p.is_int(WGT):
            exp = int_exponent(float(np.abs(w).max()), p, WGT)
            self.calibration[name] = exp
        self.b.put_real(region, w, WGT, exp)
        return region

    def _row(self, name, v, layer):
        """A parameter row (bias, or gamma then beta) in the activation class."""
        v = np.asarray(v, np.float64).reshape(1, -1)
        region = self.b.dram(name, 1, v.shape[1] // self.p.block_size, ACT, layer=layer,
                             writer="host")
        self.b.put_real(region, v, ACT)
        return region

    def _calibrate(self):
        """Per-layer exponents of an int kv class from the float model on the calibration set."""
        p = self.p
        self.k_exp = [0] * self.layers
        self.v_exp = [0] * self.layers
        if not p.is_int(KV):
            return
        from software_model.minilm import MiniLM, limited_blas_threads, record_linear_inputs
        sub = MiniLM.__new__(MiniLM)
        sub.config = dataclasses.replace(self.model.config, num_hidden_layers=self.layers)
        sub.weights, sub.tokenizer = self.model.weights, self.model.tokenizer
        with limited_blas_threads(1):
            rec = record_linear_inputs(sub, CALIBRATION_SENTENCES)
        w = self.model.weights
        for l in range(self.layers):
            x = rec[f"layer{l}.key"].astype(np.float64)
            pre = f"encoder.layer.{l}.attention.self"
            k = x @ w[f"{pre}.key.weight"].T + w[f"{pre}.key.bias"]
            v = x @ w[f"{pre}.value.weight"].T
            self.k_exp[l] = int_exponent(float(np.abs(k).max()), p, KV)
            self.v_exp[l] = int_exponent(float(np.abs(v).max()), p, KV)
            self.calibration[f"layer{l}.k_exp"] = self.k_exp[l]
            self.calibration[f"layer{l}.vt_exp"] = self.v_exp[l]

    # -- the whole program -------------------------------------------------------------------
    def run(self):
        b, p, w = self.b, self.p, self.model.weights
        H, F, T, B = self.H, self.F, self.T, p.block_size
        cfg = self.model.config
        self._calibrate()
        # host embeddings
        E = []
        for tok in self.ids:
            n = len(tok)
            E.append(w["embeddings.word_embeddings.weight"][list(tok)]
                     + w["embeddings.position_embeddings.weight"][:n]
                     + w["embeddings.token_type_embeddings.weight"][0])
        self.embeddings = np.concatenate(E).astype(np.float32)
        zero_rows = B + p.cols
        self.zero = b.dram("zero", zero_rows, 1, ACT, writer="host")
        b.put_zero(self.zero)
        self.e_dram = b.dram("embeddings", T, self.HB, ACT, writer="host")
        b.put_real(self.e_dram, self.embeddings, ACT)
        self.emb_ln = self._row("embeddings.ln", np.concatenate(
            [w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"]]), -1)
        self.x = [b.dram("x0", T, self.HB, ACT, layer=-1)]
        scale = 1.0 / (math.sqrt(self.d) * p.softmax.scale)
        self.lw = []
        for l in range(self.layers):
            pre = f"encoder.layer.{l}"
            g = lambda s: np.asarray(w[f"{pre}.{s}"], np.float64)
            lw = {
                "wq": self._weight(f"layer{l}.wq", g("attention.self.query.weight") * scale, l),
                "wk": self._weight(f"layer{l}.wk", g("attention.self.key.weight"), l),
                "wv": self._weight(f"layer{l}.wv", g("attention.self.value.weight"), l),
                "wo": self._weight(f"layer{l}.wo", g("attention.output.dense.weight"), l),
                "w1": self._weight(f"layer{l}.w1", g("intermediate.dense.weight"), l),
                "w2": self._weight(f"layer{l}.w2", g("output.dense.weight"), l),
                "bq": self._row(f"layer{l}.bq", g("attention.self.query.bias") * scale, l),
                "bk": self._row(f"layer{l}.bk", g("attention.self.key.bias"), l),
                "bo": self._row(f"layer{l}.bo", g("attention.output.dense.bias")
                                + g("attention.output.dense.weight")
                                @ g("attention.self.value.bias"), l),
                "b1": self._row(f"layer{l}.b1", g("intermediate.dense.bias"), l),
                "b2": self._row(f"layer{l}.b2", g("output.dense.bias"), l),
                "ln1": self._row(f"layer{l}.ln1", np.concatenate(
                    [g("attention.output.LayerNorm.weight"),
                     g("attention.output.LayerNorm.bias")]), l),
                "ln2": self._row(f"layer{l}.ln2", np.concatenate(
                    [g("output.LayerNorm.weight"), g("output.LayerNorm.bias")]), l),
            }
            lw["q"] = b.dram(f"layer{l}.q", T, self.HB, ACT, layer=l)
            lw["k"] = []
            lw["vt"] = []
            for s, (n, lp) in enumerate(zip(self.lengths, self.lpad)):
                k = b.dram(f"layer{l}.k.s{s}", lp, self.HB, KV, layer=l, valid_rows=n)
                b.put_zero(k)              # padded key rows must read as zero
                lw["k"].append(k)
                lw["vt"].append(b.dram(f"layer{l}.vt.s{s}", H, lp // B, KV, layer=l))
            lw["o"] = b.dram(f"layer{l}.attention", T, self.HB, ACT, layer=l)
            lw["x1"] = b.dram(f"layer{l}.ln1_out", T, self.HB, ACT, layer=l)
            lw["h"] = b.dram(f"layer{l}.ffn_hidden", T, self.FB, ACT, layer=l)
            self.x.append(b.dram(f"x{l + 1}", T, self.HB, ACT, layer=l))
            self.lw.append(lw)
        # the program
        with b.phase(-1, "embeddings"):
            self._layernorm_rows("embeddings", self.e_dram, self.emb_ln, self.x[0])
        for l in range(self.layers):
            with b.phase(l, "qkv"):
                self._qkv(l)
            with b.phase(l, "attention"):
                self._attention(l)
            with b.phase(l, "attn_out"):
                self._linear_ln(l, "attn_out", self.lw[l]["o"], self.HB, self.lw[l]["wo"],
                                self.lw[l]["bo"], self.x[l], self.lw[l]["ln1"],
                                self.lw[l]["x1"])
            with b.phase(l, "ffn_in"):
                self._ffn_in(l)
            with b.phase(l, "ffn_out"):
                self._linear_ln(l, "ffn_out", self.lw[l]["h"], self.FB, self.lw[l]["w2"],
                                self.lw[l]["b2"], self.lw[l]["x1"], self.lw[l]["ln2"],
                                self.x[l + 1])

    # -- helpers -----------------------------------------------------------------------------
    def _record(self, key, plan):
        if key not in self.phase_plans:
            self.phase_plans[key] = plan

    def _row_chunks(self, rows: int, per_row_words: int, fixed_words: int,
                    chunk_cost) -> tuple[list, object]:
        """Split ``rows`` token rows into chunks of equal size (the last shorter) minimising
        ``sum chunk_cost(rows)``; a chunk needs ``per_row_words * rows`` scratchpad words
        besides ``fixed_words``.  ``chunk_cost(rows)`` returns ``(cycles, detail)`` or None
        when the chunk does not fit."""
        best = None
        sizes = sorted({-(-rows // c) for c in range(1, rows + 1)}, reverse=True)
        for mc in sizes:
            if fixed_words + per_row_words * mc > self.p.sp_words:
                continue
            got = chunk_cost(mc)
            if got is None:
                continue
            cycles, detail = got
            last = rows - (rows - 1) // mc * mc
            tail = chunk_cost(last) if last != mc else got
            if tail is None:
                continue
            total = (rows - 1) // mc * cycles + tail[0]
            if best is None or total < best[0]:
                best = (total, mc, detail)
        if best is None:
            raise CompileError(f"no chunk of token rows fits the scratchpad "
                               f"({self.p.sp_words} words; {fixed_words} fixed and "
                               f"{per_row_words} per row)")
        total, mc, detail = best
        return [(r0, min(mc, rows - r0)) for r0 in range(0, rows, mc)], (mc, detail, total)

    def _load_rows(self, dst: Region, src: Region, r0: int):
        self.b.emit(Instruction.make("LOAD", d=dst.base, a=src.base + r0, m=dst.rows,
                                     n=dst.blocks, d_stride=dst.stride, a_stride=src.stride))

    def _store_rows(self, dst: Region, src: Region, r0: int, *, block0=0, rows=None,
                    src_row0=0, blocks=None):
        rows = src.rows if rows is None else rows
        return Instruction.make("STORE", d=dst.base + block0 * dst.stride + r0,
                                a=src.base + src_row0, m=rows,
                                n=src.blocks if blocks is None else blocks,
                                d_stride=dst.stride, a_stride=src.stride)

    # -- embeddings LayerNorm ----------------------------------------------------------------
    def _layernorm_rows(self, key, src, ln, dst):
        b, p = self.b, self.p
        HB = self.HB
        cost = lambda mc: (2 * b.cost("LOAD", m=mc, n=HB) + b.cost("VLNORM", m=mc, n=self.H)
                           + 3 * BARRIER_OVERHEAD, None)
        chunks, (mc, _, total) = self._row_chunks(self.T, HB, 2 * HB, cost)
        self._record(key, {"chunks": len(chunks), "chunk_rows": mc, "estimated_cycles": total})
        sp = SPAllocator(p)
        g = sp.matrix(1, 2 * HB, "LayerNorm gamma and beta")
        x = sp.matrix(mc, HB, "rows")
        b.note_sp(sp)
        b.emit(Instruction.make("LOAD", d=g.base, a=ln.base, m=1, n=2 * HB, d_stride=1,
                                a_stride=1))
        for r0, rows in chunks:
            xr = Region("sp", x.base, rows, HB, mc)
            self._load_rows(xr, src, r0)
            b.barrier()
            b.emit(Instruction.make("VLNORM", d=xr.base, a=xr.base, b=g.base, m=rows,
                                    n=self.H, d_stride=mc, a_stride=mc))
            b.barrier()
            b.emit(self._store_rows(dst, xr, r0))
            b.barrier()

    # -- Q, K, V^T ---------------------------------------------------------------------------
    def _sentence_groups(self):
        """Candidate partitions of the sentences into 1 .. S consecutive groups of about equal
        rows (a sentence goes to the group its middle token falls in)."""
        S = len(self.lengths)
        seen, out = set(), []
        for c in range(1, S + 1):
            part = [min(c - 1, int((o + n / 2) * c // self.T))
                    for o, n in zip(self.offsets, self.lengths)]
            groups = [[s for s in range(S) if part[s] == g] for g in range(c)]
            key = tuple(tuple(g) for g in groups if g)
            if key not in seen:
                seen.add(key)
                out.append([list(g) for g in key])
        return out

    def _qkv_plans(self, group, fixed):
        """Tile plans of one sentence group: (mc, q/k plan, V^T plan, cycles) or None."""
        b, p = self.b, self.p
        B, cols, HB, H = p.block_size, p.cols, self.HB, self.H
        mc = sum(self.lengths[s] for s in group)
        free = p.sp_words - fixed - mc * HB
        if free <= 0:
            return None
        qk_epilogue = lambda nw: b.cost("ACCST", m=mc, n=nw) + b.cost("VADD", m=mc, n=nw)
        try:
            qk = choose_tiles(
                b, n=H, kb=HB, sp_free=free, acc_free=p.acc_words, resident_rows=mc,
                sp_words=lambda nt, kt: 2 * nt * kt + 2 * mc * (nt // B),
                acc_words=lambda nt: mc * -(-nt // cols),
                compute=lambda nw, kw, last: b.cost("MATMUL", m=mc, n=nw, kb=kw)
                + (qk_epilogue(nw) if last else 0), what="Q/K projection")
            pads = [self.lpad[s] for s in group]
            lens = [self.lengths[s] for s in group]
            acc_per_row = sum(-(-lp // cols) for lp in pads)
            vt = choose_tiles(
                b, n=H, kb=HB, sp_free=free, acc_free=p.acc_words, resident_rows=mc,
                nt_unit=1,
                sp_words=lambda nt, kt: 2 * nt * kt + 2 * nt * sum(pads) // B,
                acc_words=lambda nt: nt * acc_per_row,
                compute=lambda nw, kw, last: sum(
                    b.cost("MATMUL", m=nw, n=n, kb=kw) for n in lens)
                + (sum(b.cost("ACCST", m=nw, n=lp) for lp in pads) if last else 0),
                what="V^T projection")
        except CompileError:
            return None
        cycles = b.cost("LOAD", m=mc, n=HB) + 2 * qk.cycles + vt.cycles
        return mc, qk, vt, cycles

    def _qkv(self, l):
        b, p = self.b, self.p
        B, cols, HB, H = p.block_size, p.cols, self.HB, self.H
        lw = self.lw[l]
        zero_rows = self.zero.rows
        fixed = 2 * HB + zero_rows
        key = "qkv"
        if key not in self.choices:
            best = None
            for groups in self._sentence_groups():
                plans = [self._qkv_plans(g, fixed) for g in groups]
                if any(pl is None for pl in plans):
                    continue
                total = sum(pl[3] for pl in plans)
                if best is None or total < best[0]:
                    best = (total, groups, plans)
            if best is None:
                raise CompileError(
                    f"Q/K/V projections: no group of whole sentences fits the scratchpad "
                    f"({p.sp_words} words) with its weight tiles and the accumulator "
                    f"({p.acc_words} words); the longest sentence has {max(self.lengths)} "
                    f"tokens ({max(self.lengths) * HB} words of activations)")
            total, groups, plans = best
            self.choices[key] = (groups, plans)
            self._record(key, {
                "chunks": [[int(s) for s in g] for g in groups],
                "chunk_rows": [pl[0] for pl in plans],
                "q_k_tiles": [pl[1].to_json() for pl in plans],
                "vt_tiles": [pl[2].to_json() for pl in plans],
                "estimated_cycles": total})
        groups, plans = self.choices[key]
        sp0 = SPAllocator(p)
        bq = sp0.matrix(1, HB, "bq")
        bk = sp0.matrix(1, HB, "bk")
        zero = sp0.matrix(zero_rows, 1, "zero rows")
        b.emit(Instruction.make("LOAD", d=bq.base, a=lw["bq"].base, m=1, n=HB, d_stride=1,
                                a_stride=1),
               Instruction.make("LOAD", d=bk.base, a=lw["bk"].base, m=1, n=HB, d_stride=1,
                                a_stride=1),
               Instruction.make("LOAD", d=zero.base, a=self.zero.base, m=zero_rows, n=1,
                                d_stride=zero_rows, a_stride=zero_rows))
        for group, (mc, qk, vt, _) in zip(groups, plans):
            r0 = self.offsets[group[0]]
            sp = SPAllocator(p, sp0.next)
            xc = sp.matrix(mc, HB, "token rows")
            self._load_rows(xc, self.x[l], r0)
            mark = sp.next
            # Q and K
            for which, w, bias, out_cls in (("q", lw["wq"], bq, ACT), ("k", lw["wk"], bk, KV)):
                sp.next = mark
                wbufs = [sp.alloc(qk.nt * qk.kt, "weight tile") for _ in range(2)]
                obufs = [sp.matrix(mc, qk.nt // B, "output tile") for _ in range(2)]
                b.note_sp(sp)
                b.note_acc(mc * -(-qk.nt // cols))
                exp = self.k_exp[l] if (which == "k" and p.is_int(KV)) else 0

                def on_tile(n0, nw, t, which=which, bias=bias, out_cls=out_cls, exp=exp,
                            obufs=obufs):
                    o = obufs[t % 2]
                    nb = nw // B
                    compute = [
                        Instruction.make("ACCST", d=o.base, a=0, m=mc, n=nw, d_stride=mc,
                                         a_stride=mc, d_class=ACT),
                        Instruction.make("VADD", d=o.base, a=o.base, b=bias.base + n0 // B,
                                         m=mc, n=nw, d_stride=mc, a_stride=mc, b_stride=1,
                                         broadcast=True, a_class=ACT, b_class=ACT,
                                         d_class=out_cls, exp=exp)]
                    if which == "q":
                        stores = [self._store_rows(lw["q"], o, r0, block0=n0 // B, blocks=nb)]
                    else:
                        stores = [self._store_rows(lw["k"][s], o, 0, block0=n0 // B,
                                                   rows=self.lengths[s],
                                                   src_row0=self.offsets[s] - r0, blocks=nb)
                                  for s in group]
                    return compute, stores

                emit_gemm(b, a=xc, w=w, m=mc, n=H, kb=HB, plan=qk, wbufs=wbufs, acc_base=0,
                          on_tile=on_tile)
            # V^T = Wv . X_s^T per sentence, columns past the sentence cleared first
            sp.next = mark
            self._vt(l, group, xc, r0, vt, sp, zero)

    def _vt(self, l, group, xc, r0, plan, sp, zero):
        b, p = self.b, self.p
        B, cols, HB, H = p.block_size, p.cols, self.HB, self.H
        lw = self.lw[l]
        fm, kt = plan.nt, plan.kt
        wbufs = [sp.alloc(fm * kt, "Wv tile") for _ in range(2)]
        acc, obufs, a0 = {}, {}, 0
        for s in group:
            acc[s] = a0
            a0 += fm * -(-self.lpad[s] // cols)
            obufs[s] = [sp.matrix(fm, self.lpad[s] // B, "V^T tile", KV) for _ in range(2)]
        b.note_sp(sp)
        b.note_acc(a0)
        exp = self.v_exp[l] if p.is_int(KV) else 0
        steps = [(m0, min(fm, H - m0), k0, min(kt, HB - k0))
                 for m0 in range(0, H, fm) for k0 in range(0, HB, kt)]

        def load(i):
            m0, mw, k0, kw = steps[i]
            w = lw["wv"]
            return Instruction.make("LOAD", d=wbufs[i % 2], a=w.base + k0 * w.stride + m0,
                                    m=mw, n=kw, d_stride=fm, a_stride=w.stride)

        b.emit(load(0))
        b.barrier()
        tile = 0
        after = []
        for i, (m0, mw, k0, kw) in enumerate(steps):
            if i + 1 < len(steps):
                b.emit(load(i + 1))
            for s in group:
                n, lp = self.lengths[s], self.lpad[s]
                clear_from = n // cols * cols
                if k0 == 0 and clear_from < lp:
                    b.emit(Instruction.make(
                        "MATMUL", d=acc[s] + (n // cols) * fm, a=wbufs[i % 2], b=zero.base,
                        m=mw, n=lp - clear_from, kb=1, d_stride=fm, a_stride=fm,
                        b_stride=zero.stride, a_class=WGT, b_class=ACT))
                b.emit(Instruction.make(
                    "MATMUL", d=acc[s], a=wbufs[i % 2], b=xc.base + self.offsets[s] - r0
                    + k0 * xc.stride, m=mw, n=n, kb=kw, d_stride=fm, a_stride=fm,
                    b_stride=xc.stride, a_class=WGT, b_class=ACT, accumulate=k0 > 0))
            after = []
            if k0 + kw >= HB:
                for s in group:
                    o = obufs[s][tile % 2]
                    b.emit(Instruction.make("ACCST", d=o.base, a=acc[s], m=mw, n=self.lpad[s],
                                            d_stride=fm, a_stride=fm, d_class=KV, exp=exp))
                    after.append(Instruction.make(
                        "STORE", d=lw["vt"][s].base + m0, a=o.base, m=mw, n=self.lpad[s] // B,
                        d_stride=lw["vt"][s].stride, a_stride=fm))
                tile += 1
            b.barrier()
            b.emit(*after)
        if after:
            b.barrier()

    # -- attention ---------------------------------------------------------------------------
    def _attention(self, l):
        b, p = self.b, self.p
        B, cols, d, db = p.block_size, p.cols, self.d, self.db
        lw = self.lw[l]
        calls = 0
        for s, (t0, n, lp) in enumerate(zip(self.offsets, self.lengths, self.lpad)):
            parts = -(-n // p.softmax_rows)
            mq_max = -(-n // parts)
            tile = self._attention_tile(mq_max, lp)
            self._record(f"attention.s{s}", {"query_chunks": parts, "query_rows": mq_max,
                                            "key_tile": tile, "keys": n, "padded_keys": lp})
            k_head = lambda h: Region("dram", lw["k"][s].base + h * db * lp, lp, db, lp, KV)
            vt_head = lambda h: Region("dram", lw["vt"][s].base + h * d, d, lp // B, self.H,
                                       KV)
            for h in range(self.heads):
                for c0 in range(0, n, mq_max):
                    mq = min(mq_max, n - c0)
                    sp = SPAllocator(p)
                    q = sp.matrix(mq, db, "queries")
                    b.emit(Instruction.make("LOAD", d=q.base,
                                            a=lw["q"].base + h * db * self.T + t0 + c0, m=mq,
                                            n=db, d_stride=mq, a_stride=self.T))
                    out = Region("dram", lw["o"].base + h * db * self.T + t0 + c0, mq, db,
                                 self.T)
                    prog = attention_program(p, q=q, k=k_head(h), vt=vt_head(h), out=out,
                                             mq=mq, length=n, d=d, tile=tile, sp=sp,
                                             acc_base=0, tag=b.barriers % 128)
                    b.note_sp(sp)
                    b.note_acc(mq * (-(-tile // cols) + -(-d // cols)))
                    b.emit(*prog)
                    b.barriers += sum(i.op == Opcode.BARRIER for i in prog)
                    calls += 1
        b.barrier()
        self._record("attention", {"calls_per_layer": calls})

    def _attention_tile(self, mq, lp):
        """The largest key tile (a multiple of B, at most the padded keys) whose buffers fit."""
        p = self.p
        B, cols, d, db = p.block_size, p.cols, self.d, self.db
        for tile in range(lp, 0, -B):
            tb = tile // B
            sp = mq * db + 2 * tile * db + 2 * d * tb + 2 * mq * tb + mq * db
            acc = mq * (-(-tile // cols) + -(-d // cols))
            if sp <= p.sp_words and acc <= p.acc_words:
                return tile
        raise CompileError(f"attention: one key tile of {B} keys for {mq} queries does not fit "
                           f"the scratchpad ({p.sp_words} words) or accumulator "
                           f"({p.acc_words} words)")

    # -- output projection / FFN out: GEMM into resident rows, bias, residual, LayerNorm -----
    def _linear_ln(self, l, key, src, kb, w, bias, residual, ln, dst):
        b, p = self.b, self.p
        B, cols, HB, H = p.block_size, p.cols, self.HB, self.H
        fixed = HB + 2 * HB

        def chunk_cost(mc):
            free = p.sp_words - fixed - mc * (kb + 2 * HB)
            if free <= 0:
                return None
            try:
                plan = choose_tiles(
                    b, n=H, kb=kb, sp_free=free, acc_free=p.acc_words, resident_rows=mc,
                    sp_words=lambda nt, kt: 2 * nt * kt, acc_words=lambda nt: mc * -(-nt // cols),
                    compute=lambda nw, kw, last: b.cost("MATMUL", m=mc, n=nw, kb=kw)
                    + (b.cost("ACCST", m=mc, n=nw) if last else 0), what=key)
            except CompileError:
                return None
            rest = 2 * b.cost("VADD", m=mc, n=H) + b.cost("VLNORM", m=mc, n=H) + \
                b.cost("STORE", m=mc, n=HB) + b.cost("LOAD", m=mc, n=kb + HB) + \
                3 * BARRIER_OVERHEAD
            return plan.cycles + rest, plan

        if key not in self.choices:
            chunks, (mc, plan, total) = self._row_chunks(self.T, kb + 2 * HB, fixed,
                                                         chunk_cost)
            self.choices[key] = (chunks, mc, plan)
            self._record(key, {"chunks": len(chunks), "chunk_rows": mc,
                               "tiles": plan.to_json(), "estimated_cycles": total})
        chunks, mc_max, plan_max = self.choices[key]
        sp0 = SPAllocator(p)
        bsp = sp0.matrix(1, HB, "bias")
        g = sp0.matrix(1, 2 * HB, "LayerNorm gamma and beta")
        b.emit(Instruction.make("LOAD", d=bsp.base, a=bias.base, m=1, n=HB, d_stride=1,
                                a_stride=1),
               Instruction.make("LOAD", d=g.base, a=ln.base, m=1, n=2 * HB, d_stride=1,
                                a_stride=1))
        for r0, mc in chunks:
            plan = plan_max if mc == mc_max else chunk_cost(mc)[1]
            sp = SPAllocator(p, sp0.next)
            a = sp.matrix(mc, kb, "input rows")
            res = sp.matrix(mc, HB, "residual rows")
            y = sp.matrix(mc, HB, "output rows")
            wbufs = [sp.alloc(plan.nt * plan.kt, "weight tile") for _ in range(2)]
            b.note_sp(sp)
            b.note_acc(mc * -(-plan.nt // cols))
            self._load_rows(a, src, r0)
            self._load_rows(res, residual, r0)

            def on_tile(n0, nw, t, y=y, mc=mc):
                return [Instruction.make("ACCST", d=y.base + (n0 // B) * y.stride, a=0, m=mc,
                                         n=nw, d_stride=mc, a_stride=mc, d_class=ACT)], []

            emit_gemm(b, a=a, w=w, m=mc, n=H, kb=kb, plan=plan, wbufs=wbufs, acc_base=0,
                      on_tile=on_tile)
            vec = dict(m=mc, n=H, d_stride=mc, a_stride=mc)
            b.emit(Instruction.make("VADD", d=y.base, a=y.base, b=bsp.base, b_stride=1,
                                    broadcast=True, **vec),
                   Instruction.make("VADD", d=y.base, a=y.base, b=res.base, b_stride=mc, **vec),
                   Instruction.make("VLNORM", d=y.base, a=y.base, b=g.base, **vec))
            b.barrier()
            b.emit(self._store_rows(dst, y, r0))
            b.barrier()

    # -- FFN in: GEMM, bias, GELU, stored tile by tile ---------------------------------------
    def _ffn_in(self, l):
        b, p = self.b, self.p
        B, cols, HB, F = p.block_size, p.cols, self.HB, self.F
        lw = self.lw[l]
        fixed = self.FB
        key = "ffn_in"

        def chunk_cost(mc):
            free = p.sp_words - fixed - mc * HB
            if free <= 0:
                return None
            try:
                plan = choose_tiles(
                    b, n=F, kb=HB, sp_free=free, acc_free=p.acc_words, resident_rows=mc,
                    sp_words=lambda nt, kt: 2 * nt * kt + 2 * mc * (nt // B),
                    acc_words=lambda nt: mc * -(-nt // cols),
                    compute=lambda nw, kw, last: b.cost("MATMUL", m=mc, n=nw, kb=kw)
                    + ((b.cost("ACCST", m=mc, n=nw) + b.cost("VADD", m=mc, n=nw)
                        + b.cost("VGELU", m=mc, n=nw)) if last else 0), what=key)
            except CompileError:
                return None
            return plan.cycles + b.cost("LOAD", m=mc, n=HB) + BARRIER_OVERHEAD, plan

        if key not in self.choices:
            chunks, (mc, plan, total) = self._row_chunks(self.T, HB, fixed, chunk_cost)
            self.choices[key] = (chunks, mc, plan)
            self._record(key, {"chunks": len(chunks), "chunk_rows": mc,
                               "tiles": plan.to_json(), "estimated_cycles": total})
        chunks, mc_max, plan_max = self.choices[key]
        sp0 = SPAllocator(p)
        b1 = sp0.matrix(1, self.FB, "b1")
        b.emit(Instruction.make("LOAD", d=b1.base, a=lw["b1"].base, m=1, n=self.FB,
                                d_stride=1, a_stride=1))
        for r0, mc in chunks:
            plan = plan_max if mc == mc_max else chunk_cost(mc)[1]
            sp = SPAllocator(p, sp0.next)
            a = sp.matrix(mc, HB, "input rows")
            wbufs = [sp.alloc(plan.nt * plan.kt, "W1 tile") for _ in range(2)]
            obufs = [sp.matrix(mc, plan.nt // B, "hidden tile") for _ in range(2)]
            b.note_sp(sp)
            b.note_acc(mc * -(-plan.nt // cols))
            self._load_rows(a, lw["x1"], r0)

            def on_tile(n0, nw, t, mc=mc, obufs=obufs):
                o = obufs[t % 2]
                vec = dict(d=o.base, a=o.base, m=mc, n=nw, d_stride=mc, a_stride=mc)
                return [Instruction.make("ACCST", d=o.base, a=0, m=mc, n=nw, d_stride=mc,
                                         a_stride=mc, d_class=ACT),
                        Instruction.make("VADD", b=b1.base + n0 // B, b_stride=1,
                                         broadcast=True, **vec),
                        Instruction.make("VGELU", **vec)], \
                    [self._store_rows(lw["h"], o, r0, block0=n0 // B, blocks=nw // B)]

            emit_gemm(b, a=a, w=lw["w1"], m=mc, n=F, kb=HB, plan=plan, wbufs=wbufs,
                      acc_base=0, on_tile=on_tile)
