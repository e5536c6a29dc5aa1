"""all-MiniLM-L6-v2 with every operation in MXInt: the golden models of the linear layer,
softmax, LayerNorm and GELU units, exact MXInt matmuls for the attention scores and context, and
exact MXInt residual adds (issue 14).

:class:`MXIntOps` plugs into ``MiniLM.forward(ops=...)`` (software_model/minilm.py).  The
semantics is *quantize at the consumer*: every operation casts each of its inputs to its own
MXInt input format (blocks along the axis it reduces or normalises), computes exactly or with
its unit's integer algorithm, and hands an exact result on; so each tensor is rounded once per
use, by the unit that uses it, as in hardware where a datapath's input register holds MXInt.

=================  =========================================================================
operation          inputs quantized to                           arithmetic
=================  =========================================================================
``linear`` (x36)   x and W: ``linear_width``, blocks along K;    exact sum (float64 of exact
                   bias: ``linear_width``, one value per block   products: exact to 2^-53)
``attention``      Q, K along the head dim; P, V along the keys  exact sums
                   (``attention_width``)
``softmax``        scores along the keys (``softmax_width``)     ``mxint_softmax`` (online
                                                                 form, the RTL's), out MXInt
``layernorm``      x, gamma, beta along the features             ``mxint_layernorm``, out MXInt
                   (``layernorm_width``)
``gelu``           x (``gelu_width``)                            ``mxint_gelu``, out MXInt
``residual``       both operands (``residual_width``)            exact add
=================  =========================================================================

Not MXInt: the embedding lookup and its two adds (the first LayerNorm quantizes their sum), the
final mean pooling and L2 normalisation (host side, float32).  ``float_ops`` keeps any of the
operation families above in float32 (an ablation).  The 1/sqrt(head dim) score scale is folded
into the softmax unit's log2(e) constant.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from software_model.minilm import FloatOps, float_linear, gelu_erf, layer_norm
from software_model.mxint import MXIntFormat
from software_model.mxint_fixed import fake_quantize_values, mxint_values, quantize_values
from software_model.mxint_gelu import GeluSpec, mxint_gelu
from software_model.mxint_layernorm import LayerNormSpec, mxint_layernorm
from software_model.mxint_softmax import SoftmaxSpec, mxint_softmax

__all__ = ["OP_FAMILIES", "MXIntModelConfig", "MXIntOps"]

OP_FAMILIES = ("linear", "attention", "softmax", "layernorm", "gelu", "residual")


@dataclass(frozen=True)
class MXIntModelConfig:
    """Formats and unit parameters of the all-MXInt MiniLM."""
    block_size: int = 32
    linear_width: int = 8
    attention_width: int = 8
    softmax_width: int = 8
    layernorm_width: int = 8
    gelu_width: int = 8
    residual_width: int = 8
    exponent_width: int = 8
    rounding: str = "half_even"
    softmax: dict = field(default_factory=dict)       # SoftmaxSpec arguments
    layernorm: dict = field(default_factory=lambda: {"frac_bits": 10, "int_bits": 8,
                                                      "out_int_bits": 7})
    gelu: dict = field(default_factory=lambda: {"int_bits": 8})
    float_ops: frozenset = frozenset()

    def __post_init__(self):
        unknown = set(self.float_ops) - set(OP_FAMILIES)
        if unknown:
            raise ValueError(f"float_ops must be a subset of {OP_FAMILIES}, not {sorted(unknown)}")

    def fmt(self, width: int, block_size: Optional[int] = None) -> MXIntFormat:
        return MXIntFormat(width, block_size or self.block_size, self.exponent_width,
                           self.rounding)

    def with_float(self, *ops: str) -> "MXIntModelConfig":
        return replace(self, float_ops=frozenset(self.float_ops) | set(ops))

    def describe(self) -> dict:
        return {"block_size": self.block_size, "linear": self.linear_width,
                "attention": self.attention_width, "softmax": self.softmax_width,
                "layernorm": self.layernorm_width, "gelu": self.gelu_width,
                "residual": self.residual_width, "softmax_spec": dict(self.softmax),
                "layernorm_spec": dict(self.layernorm), "gelu_spec": dict(self.gelu),
                "float_ops": sorted(self.float_ops)}


def _f32(x):
    return np.asarray(x, np.float32)


class MXIntOps(FloatOps):
    """The MXInt operations of :class:`MXIntModelConfig` (see the module docstring)."""

    def __init__(self, config: MXIntModelConfig):
        super().__init__()
        self.config = config
        self._weights: dict = {}
        self._specs: dict = {}

    def _is_float(self, family: str) -> bool:
        return family in self.config.float_ops

    # ---- matmuls -----------------------------------------------------------------------------
    def linear(self, name, x, weight, bias):
        if self._is_float("linear"):
            return float_linear(_f32(x), weight, bias)
        c = self.config
        fmt = c.fmt(c.linear_width)
        hit = self._weights.get(id(weight))
        if hit is None or hit[0] is not weight:
            wq = fake_quantize_values(weight, fmt, axis=-1)
            bq = fake_quantize_values(bias[:, None], c.fmt(c.linear_width, 1), axis=-1)[:, 0]
            hit = self._weights[id(weight)] = (weight, wq, bq)
        xq = fake_quantize_values(x, fmt, axis=-1)
        return xq @ hit[1].T + hit[2]

    def scores(self, q, k):
        if self._is_float("attention"):
            return super().scores(_f32(q), _f32(k))
        fmt = self.config.fmt(self.config.attention_width)
        return fake_quantize_values(q, fmt) @ fake_quantize_values(k, fmt).transpose(0, 2, 1)

    def context(self, probs, v):
        if self._is_float("attention"):
            return super().context(_f32(probs), _f32(v))
        fmt = self.config.fmt(self.config.attention_width)
        return fake_quantize_values(probs, fmt, axis=-1) @ fake_quantize_values(v, fmt, axis=-2)

    # ---- units -------------------------------------------------------------------------------
    def _spec(self, key, make):
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = make()
        return spec

    def softmax(self, scores, scale):
        if self._is_float("softmax"):
            return super().softmax(_f32(scores), np.float32(scale))
        c = self.config
        fmt = c.fmt(c.softmax_width)
        n = scores.shape[-1]
        e, m = quantize_values(scores, fmt, axis=-1)
        nb = e.shape[-1]
        spec = self._spec(("softmax", nb, float(scale)), lambda: SoftmaxSpec(
            fmt, fmt, max_row_blocks=nb, scale=float(scale), **c.softmax))
        res = mxint_softmax(e, m, spec, lengths=n, tile_blocks=1)
        return res.values(spec)[..., :n]

    def add(self, name, a, b):
        if self._is_float("residual"):
            return _f32(a) + _f32(b)
        fmt = self.config.fmt(self.config.residual_width)
        return fake_quantize_values(a, fmt) + fake_quantize_values(b, fmt)

    def layer_norm(self, name, x, gamma, beta, eps):
        if self._is_float("layernorm"):
            return layer_norm(_f32(x), gamma, beta, eps)
        c = self.config
        fmt = c.fmt(c.layernorm_width)
        n = x.shape[-1]
        spec = self._spec(("layernorm", n, float(eps)), lambda: LayerNormSpec(
            fmt, fmt, fmt, row_length=n, eps=float(eps), **c.layernorm))
        xe, xm = quantize_values(x, fmt)
        ge, gm = quantize_values(gamma, fmt)
        be, bm = quantize_values(beta, fmt)
        return mxint_layernorm(xe, xm, ge, gm, be, bm, spec).values(spec)

    def gelu(self, x):
        if self._is_float("gelu"):
            return gelu_erf(_f32(x))
        c = self.config
        fmt = c.fmt(c.gelu_width)
        spec = self._spec(("gelu",), lambda: GeluSpec(fmt, fmt, **c.gelu))
        e, m = quantize_values(x, fmt)
        oe, om = mxint_gelu(e, m, spec)
        v = mxint_values(oe, om, fmt)
        return v.reshape(v.shape[:-2] + (-1,))[..., :x.shape[-1]]
