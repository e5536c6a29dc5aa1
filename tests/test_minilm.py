"""The numpy all-MiniLM-L6-v2 encoder (software_model/minilm.py) used by the MX accuracy study."""

import json

import numpy as np
import ml_dtypes
import pytest

from software_model.mx import fake_quantize_mx
from software_model.mxint import MXIntFormat, fake_quantize_mxint
from software_model.minilm import (
    BertConfig, LINEAR_KINDS, MiniLM, limited_blas_threads, model_dir, float_linear, gelu_erf, linear_names, quantized_linear,
    record_linear_inputs,
)

# sentence-transformers' README quick-start runs exactly these three sentences through
# all-MiniLM-L6-v2 and prints their cosine similarities to four decimals (PyTorch, float32):
# 0.6660 (0, 1), 0.1046 (0, 2), 0.1411 (1, 2). An independent reference for the whole pipeline.
README_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!",
                    "He drove to the stadium."]
README_SIMILARITIES = {(0, 1): 0.6660, (0, 2): 0.1046, (1, 2): 0.1411}

PARAPHRASES = ["A man is eating food.", "A man is eating a piece of bread."]
UNRELATED = "A monkey is playing drums."


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    with limited_blas_threads(1):
        yield


@pytest.fixture(scope="module")
def model():
    return MiniLM.load()


@pytest.fixture(scope="module")
def readme_embeddings(model):
    return model.encode(README_SENTENCES)


def test_matches_published_similarities(readme_embeddings):
    sims = readme_embeddings @ readme_embeddings.T
    for (i, j), published in README_SIMILARITIES.items():
        # published figures are rounded to 4 decimals: allow half an ulp of that plus float noise
        assert abs(sims[i, j] - published) <= 6e-5, (i, j, sims[i, j], published)


def test_embeddings_are_unit_norm_float32(readme_embeddings):
    assert readme_embeddings.shape == (3, 384)
    assert readme_embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(readme_embeddings, axis=1), 1.0, atol=1e-6)


def test_deterministic_and_batch_independent(model, readme_embeddings):
    again = model.encode(README_SENTENCES)
    assert np.array_equal(again, readme_embeddings)
    alone = model.encode(README_SENTENCES[1:2])
    assert np.array_equal(alone[0], readme_embeddings[1])


def test_paraphrases_closer_than_unrelated(model):
    a, b, c = model.encode(PARAPHRASES + [UNRELATED])
    assert a @ b > 0.6
    assert a @ b > a @ c + 0.4
    assert a @ b > b @ c + 0.4


def test_gelu_is_erf_form():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0], dtype=np.float32)
    # Phi(1) = 0.8413447460685429 (standard normal CDF); GELU(x) = x Phi(x), odd part x - GELU(-x)
    assert gelu_erf(x)[4] == np.float32(0.8413447460685429)
    np.testing.assert_allclose(gelu_erf(x) - gelu_erf(-x), x, rtol=0, atol=1e-7)
    assert gelu_erf(x)[2] == 0.0
    # the tanh approximation differs at x = -1 by ~1.6e-4: erf form must not be it
    tanh_form = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    assert abs(gelu_erf(x)[1] - tanh_form[1]) > 1e-4


def test_linear_hook_sees_every_layer_in_order(model):
    seen = []

    def counting_linear(x, weight, bias):
        seen.append((x.shape, weight.shape))
        return float_linear(x, weight, bias)

    names = []
    out = model.encode(README_SENTENCES[:1], linear=counting_linear,
                       observe=lambda name, x: names.append(name))
    assert names == linear_names(6)
    assert len(seen) == 6 * len(LINEAR_KINDS) == 36
    tokens = len(model.tokenize(README_SENTENCES[0]))
    assert seen[4] == ((tokens, 384), (1536, 384))     # ffn_in
    assert seen[5] == ((tokens, 1536), (384, 1536))    # ffn_out: reduction over 1536
    assert np.array_equal(out, model.encode(README_SENTENCES[:1]))


def test_record_linear_inputs(model):
    recorded = record_linear_inputs(model, README_SENTENCES)
    tokens = sum(len(model.tokenize(s)) for s in README_SENTENCES)
    assert list(recorded) == linear_names(6)
    weights = model.linear_weights()
    for name, x in recorded.items():
        assert x.dtype == np.float32
        assert x.shape == (tokens, weights[name][0].shape[1]), name
    # query, key and value read the same LayerNorm output
    assert np.array_equal(recorded["layer3.query"], recorded["layer3.value"])
    # ffn_out's input is GELU of ffn_in's output: GELU's range is bounded below by about -0.17
    assert recorded["layer0.ffn_out"].min() >= -0.1701


def _round_to(dtype):
    return quantized_linear(lambda v: v.astype(dtype).astype(np.float32))


@pytest.fixture(scope="module")
def bfloat16_embeddings(model):
    return model.encode(README_SENTENCES, linear=_round_to(ml_dtypes.bfloat16))


def test_high_precision_quantized_linear_nearly_unchanged(bfloat16_embeddings, readme_embeddings):
    cosine = np.sum(bfloat16_embeddings * readme_embeddings, axis=1)
    assert cosine.min() > 0.999
    assert not np.array_equal(bfloat16_embeddings, readme_embeddings)  # the hook really ran


def test_coarse_quantized_linear_visibly_degrades(model, readme_embeddings, bfloat16_embeddings):
    # float8 e5m2 keeps 2 mantissa bits: the embedding must move far more than with bfloat16
    coarse = model.encode(README_SENTENCES, linear=_round_to(ml_dtypes.float8_e5m2))
    err_coarse = np.linalg.norm(coarse - readme_embeddings)
    err_fine = np.linalg.norm(bfloat16_embeddings - readme_embeddings)
    assert err_coarse > 4 * err_fine


def test_mxint8_block32_linear_close(model, readme_embeddings):
    ocp = model.encode(README_SENTENCES, linear=quantized_linear(
        lambda v: fake_quantize_mx(v, "mxint8", 32, "half_even", -1)))
    rel = np.linalg.norm(ocp - readme_embeddings) / np.linalg.norm(readme_embeddings)
    assert 0 < rel < 0.05
    # The MXInt variant with 8-bit elements is OCP MXINT8 on a signed exponent field: on real
    # weights and activations (far from exponent clamping) the two grids must agree exactly.
    recorded = record_linear_inputs(model, README_SENTENCES[:1])
    weight = model.linear_weights()["layer0.ffn_out"][0]
    for operand in (weight, recorded["layer0.ffn_out"], recorded["layer5.query"]):
        assert np.array_equal(fake_quantize_mxint(operand, MXIntFormat(8, 32), -1),
                              fake_quantize_mx(operand, "mxint8", 32, "half_even", -1))


def test_wrong_arguments(model):
    with pytest.raises(TypeError, match="single string"):
        model.encode("one sentence")
    with pytest.raises(ValueError, match="empty"):
        model.encode([])
    with pytest.raises(ValueError, match="token_ids must be a 1-D sequence"):
        model.forward(np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="token_ids must be a 1-D sequence"):
        model.forward(np.zeros(513, dtype=np.int64))
    with pytest.raises(ValueError, match="weights lack"):
        MiniLM({}, model.config)
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads 7"):
        MiniLM(model.weights, BertConfig(num_attention_heads=7))
    with pytest.raises(ValueError, match="without a tokenizer"):
        MiniLM(model.weights, model.config).tokenize("hello")


@pytest.mark.parametrize("key, value, message", [
    ("hidden_act", "gelu_new", "hidden_act must be 'gelu'"),
    ("position_embedding_type", "relative_key", "only absolute position embeddings"),
])
def test_wrong_model_config(tmp_path, key, value, message):
    raw = json.loads((model_dir() / "config.json").read_text())
    raw[key] = value
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=message):
        BertConfig.from_folder(tmp_path)


def test_config_read_from_package():
    config = BertConfig.from_folder(model_dir())
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers,
            config.intermediate_size, config.max_seq_length) == (384, 12, 6, 1536, 256)


def test_study_pareto_front_and_error():
    from gen.bench.mx_accuracy import pareto_front, relative_error
    # (cost, error): (3, 3) is beaten by (2, 2); (2, 2) ties nothing; duplicates both survive
    points = [(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0), (4.0, 1.0), (2.0, 6.0)]
    assert pareto_front(points) == [0, 1, 3, 4]
    assert relative_error(np.array([3.0, 4.0]), np.array([3.0, 4.0])) == 0.0
    assert relative_error(np.array([3.0, 5.0]), np.array([3.0, 4.0])) == pytest.approx(0.2)


def test_study_float_path_matches_dot_product_model(model):
    # the study's fake-quantized float32 matmul against the bit-exact mxint_dot model's blocks
    from gen.bench.mx_accuracy import linear_via_dot_model
    x = record_linear_inputs(model, README_SENTENCES[:1])["layer2.attn_out"][:4]
    weight, bias = model.linear_weights()["layer2.attn_out"]
    for width, block in ((8, 32), (4, 8)):
        fmt = MXIntFormat(width, block)
        via_dot = linear_via_dot_model(x, weight, bias, fmt)
        via_fake = float_linear(fake_quantize_mxint(x, fmt), fake_quantize_mxint(weight, fmt), bias)
        scale = np.abs(via_dot).max()
        assert np.abs(via_dot - via_fake).max() <= 1e-6 * scale
        assert np.abs(via_dot - float_linear(x, weight, bias)).max() > 1e-4 * scale
