"""The all-MXInt MiniLM (software_model/minilm_mxint.py): a short slice for agreement and sanity;
the figures come from `accelgen bench mx_allint`."""
import numpy as np
import pytest

from software_model.minilm import FloatOps, MiniLM, limited_blas_threads
from software_model.minilm_mxint import OP_FAMILIES, MXIntModelConfig, MXIntOps
from software_model.mxint import MXIntFormat, mxint_linear, quantize_mxint
from software_model.mxint_fixed import fake_quantize_values

SENTENCE = ["A man is eating food."]


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with limited_blas_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return MiniLM.load()


def test_every_family_in_float_is_the_float_model(model):
    ref = model.encode(SENTENCE)
    ops = MXIntOps(MXIntModelConfig().with_float(*OP_FAMILIES))
    assert np.array_equal(model.encode(SENTENCE, ops=ops), ref)
    assert np.array_equal(model.encode(SENTENCE, ops=FloatOps()), ref)


def test_all_mxint_is_close_and_each_family_changes_the_result(model):
    ref = model.encode(SENTENCE)[0].astype(np.float64)
    base = MXIntModelConfig(block_size=16)
    emb = model.encode(SENTENCE, ops=MXIntOps(base))[0]
    cos = float(emb @ ref / np.linalg.norm(emb) / np.linalg.norm(ref))
    assert 0.99 < cos < 1.0
    for op in OP_FAMILIES:
        other = model.encode(SENTENCE, ops=MXIntOps(base.with_float(op)))[0]
        assert not np.array_equal(other, emb), op


def test_linear_is_the_bit_exact_linear_model(model):
    """MXIntOps.linear's exact sum, rounded to float32, equals mxint_linear (the RTL's golden
    model, FP32 output) on the first rows of a real layer."""
    cfg = MXIntModelConfig(block_size=32)
    ops = MXIntOps(cfg)
    w, b = model.linear_weights()["layer0.ffn_in"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, w.shape[1])).astype(np.float32)
    ours = np.asarray(ops.linear("layer0.ffn_in", x, w, b), np.float32)[:, :16]
    fmt = cfg.fmt(8)
    qx, qw = quantize_mxint(x, fmt), quantize_mxint(w[:16], fmt)
    qb = quantize_mxint(b[:16, None], MXIntFormat(8, 1))
    for r in range(3):
        gold = mxint_linear(qx.exponents[r], qx.mantissas[r], qw.exponents, qw.mantissas,
                            qb.exponents[:, 0], qb.mantissas[:, 0, 0], fmt)
        assert np.array_equal(ours[r], gold)


def test_units_see_mxint_inputs_and_give_mxint_outputs(model):
    """Outputs of the softmax, LayerNorm and GELU hooks lie on their MXInt grids; softmax rows
    with padding (8 keys in blocks of 16) still sum to about 1."""
    cfg = MXIntModelConfig(block_size=16)
    ops = MXIntOps(cfg)
    rng = np.random.default_rng(1)
    p = ops.softmax(rng.normal(size=(2, 8, 8)) * 8, 0.1767766952966369)
    assert p.shape == (2, 8, 8) and np.allclose(p.sum(-1), 1, atol=0.05)
    fmt = cfg.fmt(8)
    assert np.array_equal(fake_quantize_values(p, fmt), p)
    g = ops.gelu(rng.normal(size=(3, 64)) * 3)
    assert np.array_equal(fake_quantize_values(g, fmt), g)
    x = rng.normal(size=(3, 384)) * 2 + 1
    y = ops.layer_norm("t", x, np.ones(384, np.float32), np.zeros(384, np.float32), 1e-12)
    assert np.array_equal(fake_quantize_values(y, fmt), y)
    assert np.all(np.abs(y.mean(-1)) < 0.05) and np.all(np.abs(y.std(-1) - 1) < 0.05)


def test_config_rejects_unknown_float_op():
    with pytest.raises(ValueError, match="float_ops must be a subset of"):
        MXIntModelConfig(float_ops=frozenset({"attn"}))
