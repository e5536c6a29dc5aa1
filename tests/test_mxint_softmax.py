"""MXInt softmax: golden model properties (Hypothesis), the online form against the two-pass
form, argument and config rejections, the amaranth.sim fast tier (with the cycle model) and the
cocotb regression over every preset."""
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from cosim.mxint_softmax import beats_of, corner_rows, expected_rows, random_rows
from cosim.pysim import run_streams
from gen.cosim_run import preset_configs, run_cosim
from gen.config import config_from_dict
from gen.schema import ConfigError
from hw.mxint_softmax import MXIntSoftmax
from software_model.mxint import MXIntFormat, quantize_mxint
from software_model.mxint_fixed import mxint_values
from software_model.mxint_softmax import (OnlineSoftmax, SoftmaxSpec, mxint_softmax,
                                          reference_softmax, softmax_cycles,
                                          softmax_error_bound, softmax_sum_bound)

PRESETS = preset_configs("mxint_softmax")
F8 = MXIntFormat(8, 8)
SPECS = {
    "default": SoftmaxSpec(F8, F8, max_row_blocks=6),
    "table": SoftmaxSpec(MXIntFormat(6, 8), MXIntFormat(6, 8), max_row_blocks=6, exp_frac_bits=6,
                         exp_segment_bits=6, exp_degree=0, exp_bits=8, recip_table_bits=3,
                         newton_steps=2, recip_bits=8),
    "linear": SoftmaxSpec(F8, MXIntFormat(10, 8), max_row_blocks=6, scale=0.17677669529,
                          exp_degree=1, exp_segment_bits=5, newton_steps=0, recip_table_bits=8),
}


@st.composite
def rows(draw, k=8, max_blocks=6, in_range=False):
    """A batch of rows of MXInt8 blocks: any mantissa codes (incl. -128), exponents over a wide
    range (or, with ``in_range``, small enough that |x| stays inside range_bits), masks."""
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    nb = draw(st.integers(1, max_blocks))
    n_rows = draw(st.integers(1, 6))
    lo_e, hi_e = (-8, 3) if in_range else (-128, 127)
    centre = draw(st.integers(lo_e, hi_e))
    e = np.clip(centre + rng.integers(-3, 4, size=(n_rows, nb)), -128, 127)
    m = rng.integers(-128, 128, size=(n_rows, nb, k))
    if draw(st.booleans()):
        m = np.where(rng.random(m.shape) < 0.3, rng.choice([-128, 127, 0], size=m.shape), m)
    mask = rng.random(m.shape) < draw(st.sampled_from([1.0, 0.9, 0.5]))
    return e, m, mask


@settings(max_examples=80, deadline=None)
@given(rows(), st.sampled_from(sorted(SPECS)), st.sampled_from([None, 1, 2]))
def test_outputs_in_unit_interval_and_masked_zero(batch, name, tile):
    e, m, mask = batch
    spec = SPECS[name]
    res = mxint_softmax(e, m, spec, mask=mask, tile_blocks=tile)
    y = res.values(spec)
    assert np.all(y >= 0) and np.all(y <= 1)
    assert np.all(y[~mask.reshape(y.shape)] == 0)


@settings(max_examples=80, deadline=None)
@given(rows(), st.sampled_from(sorted(SPECS)), st.sampled_from([None, 1, 3]))
def test_sum_within_stated_bound(batch, name, tile):
    e, m, mask = batch
    spec = SPECS[name]
    res = mxint_softmax(e, m, spec, mask=mask, tile_blocks=tile)
    live = mask.reshape(mask.shape[0], -1).any(axis=-1)
    sums = res.values(spec).sum(axis=-1)
    bound = softmax_sum_bound(spec, res, online=tile is not None)
    assert np.all(np.abs(sums[live] - 1) <= bound[live])
    assert np.all(sums[~live] == 0)


@settings(max_examples=80, deadline=None)
@given(rows(), st.sampled_from(sorted(SPECS)), st.sampled_from([None, 1]))
def test_order_preserving(batch, name, tile):
    """A larger score never gets a smaller term anywhere in its row, nor a smaller output inside
    its block (across blocks each block's own rounding applies); equal scores, equal outputs."""
    e, m, mask = batch
    spec = SPECS[name]
    res = mxint_softmax(e, m, spec, mask=np.ones_like(mask), tile_blocks=tile)
    x = mxint_values(e, m, spec.in_fmt)
    for r in range(x.shape[0]):
        xs = x[r].reshape(-1)
        ts = res.terms[r].reshape(-1)
        order = np.argsort(xs, kind="stable")
        assert np.all(np.diff(ts[order]) >= 0)
        for b in range(x.shape[1]):
            o = np.argsort(x[r, b], kind="stable")
            assert np.all(np.diff(res.mantissas[r, b][o]) >= 0)
            for v in np.unique(x[r, b]):
                assert len(set(res.mantissas[r, b][x[r, b] == v])) == 1


@settings(max_examples=60, deadline=None)
@given(rows(in_range=True), st.sampled_from(sorted(SPECS)), st.sampled_from([None, 1]))
def test_error_bound_against_float64(batch, name, tile):
    e, m, mask = batch
    spec = SPECS[name]
    x = mxint_values(e, m, spec.in_fmt) * spec.scale * 1.4426950408889634
    assume(np.all(np.abs(x) < 2 ** spec.range_bits))
    res = mxint_softmax(e, m, spec, mask=mask, tile_blocks=tile)
    ref = reference_softmax(e, m, spec, mask=mask)
    rho, alpha = softmax_error_bound(spec, res, online=tile is not None)
    err = np.abs(res.values(spec) - ref)
    assert np.all(err <= ref * rho + alpha)


@settings(max_examples=60, deadline=None)
@given(rows(), st.sampled_from(sorted(SPECS)), st.integers(1, 3))
def test_online_matches_two_pass_where_stated(batch, name, tile):
    """Same final max and final terms always; the online sum is never below the two-pass sum
    and at most n units above; with the row max in the first tile, identical outputs."""
    e, m, mask = batch
    spec = SPECS[name]
    two = mxint_softmax(e, m, spec, mask=mask)
    onl = mxint_softmax(e, m, spec, mask=mask, tile_blocks=tile)
    assert np.array_equal(two.row_max, onl.row_max)
    assert np.array_equal(two.terms, onl.terms)
    n = m.shape[1] * m.shape[2]
    assert np.all(onl.row_sum >= two.row_sum) and np.all(onl.row_sum - two.row_sum <= n)
    # move each row's largest score into the first tile: then every number agrees
    z_first = np.argmax(mxint_values(e, m, spec.in_fmt).reshape(len(e), -1)
                        + np.where(mask.reshape(len(e), -1), 0, -np.inf), axis=-1)
    for r in range(len(e)):
        b = z_first[r] // m.shape[2]
        perm = [b] + [i for i in range(m.shape[1]) if i != b]
        er, mr, kr = e[r:r + 1, perm], m[r:r + 1, perm], mask[r:r + 1, perm]
        a = mxint_softmax(er, mr, spec, mask=kr)
        o = mxint_softmax(er, mr, spec, mask=kr, tile_blocks=tile)
        assert np.array_equal(a.row_sum, o.row_sum)
        assert np.array_equal(a.mantissas, o.mantissas) and np.array_equal(a.exponents,
                                                                           o.exponents)


def test_online_state_api_for_flash_attention():
    """The streaming API an attention engine uses: terms and rescale shifts per tile, finish,
    normalise: equal to mxint_softmax's online form."""
    spec = SPECS["default"]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 32)) * 4
    x[:, 20] += 10                    # the max arrives late: the running max rises
    q = quantize_mxint(x, spec.in_fmt)
    online = OnlineSoftmax(spec, rows=4)
    tiles = [online.update(q.exponents[:, b:b + 1], q.mantissas[:, b:b + 1]) for b in range(4)]
    assert any(t.rescale.any() for t in tiles[1:])
    assert np.all(tiles[0].rescale == 0)
    oe, om = online.normalize(tiles)
    ref = mxint_softmax(q.exponents, q.mantissas, spec, tile_blocks=1)
    assert np.array_equal(oe, ref.exponents) and np.array_equal(om, ref.mantissas)
    # the accumulator view: sum of rescaled terms equals the running sum, up to the floors
    M, l, R, lo = online.finish()
    assert np.array_equal(M, ref.row_max) and np.array_equal(l, ref.row_sum)


def test_corner_rows():
    spec = SPECS["default"]
    k = 8
    # all equal: every output 1/n (n = 16, exactly representable)
    res = mxint_softmax(np.zeros((1, 2)), np.full((1, 2, k), 64), spec)
    assert np.allclose(res.values(spec), 1 / 16, rtol=2 ** -6)
    # one dominant value takes (almost) everything
    m = np.zeros((1, 2, k), int)
    m[0, 1, 3] = 127
    res = mxint_softmax(np.array([[0, 5]]), m, spec)
    y = res.values(spec)[0]
    assert y[11] >= 1 - 2 ** -6 and np.all(np.delete(y, 11) < 1e-6)
    # most negative codes at emax saturate to the same z: uniform output
    res = mxint_softmax(np.array([[127]]), np.full((1, 1, k), -128), spec)
    assert len(set(res.mantissas.reshape(-1))) == 1
    # a fully masked row is all zeros
    res = mxint_softmax(np.zeros((1, 1)), np.ones((1, 1, k)), spec, mask=np.zeros((1, 1, k)))
    assert np.all(res.mantissas == 0) and res.row_sum[0] == 0


# ---------------------------------------------------------------- rejections

@pytest.mark.parametrize("kw, message", [
    (dict(max_row_blocks=0), "max_row_blocks must be an integer from 1 to 4096, not 0"),
    (dict(scale=-1.0), "scale must be a positive number, not -1.0"),
    (dict(scale_frac_bits=0), "scale_frac_bits must be an integer from 1 to 20, not 0"),
    (dict(range_bits=13), "range_bits must be an integer from 1 to 12, not 13"),
    (dict(exp_frac_bits=17), "exp_frac_bits must be an integer from 1 to 16, not 17"),
    (dict(exp_segment_bits=11), "exp_segment_bits must be an integer from 0 to 10, not 11"),
    (dict(exp_degree=3), "exp_degree must be an integer from 0 to 2, not 3"),
    (dict(exp_bits=1), "exp_bits must be an integer from 2 to 20, not 1"),
    (dict(recip_table_bits=0), "recip_table_bits must be an integer from 1 to 10, not 0"),
    (dict(newton_steps=4), "newton_steps must be an integer from 0 to 3, not 4"),
    (dict(recip_bits=30), "recip_bits must be an integer from 2 to 24, not 30"),
    (dict(recip_bits=4, recip_table_bits=7), "recip_table_bits must be at most recip_bits \\+ 2"),
    (dict(scale=1e-6, scale_frac_bits=4), "must round to 1 .. 2\\^24 - 1"),
])
def test_spec_rejects(kw, message):
    with pytest.raises(ValueError, match=message):
        SoftmaxSpec(F8, F8, **kw)


def test_spec_rejects_formats():
    with pytest.raises(TypeError, match="in_fmt must be an MXIntFormat"):
        SoftmaxSpec("mxint8", F8)
    with pytest.raises(ValueError, match="out_fmt block size must equal in_fmt's"):
        SoftmaxSpec(F8, MXIntFormat(8, 4))


@pytest.mark.parametrize("kw, error, message", [
    (dict(in_format=8), TypeError, "Format must be an MXIntFormat, not 8"),
    (dict(out_format="mxint8"), TypeError, "Format must be an MXIntFormat, not 'mxint8'"),
    (dict(max_row_blocks=-1), ValueError, "max_row_blocks must be an integer from 1 to 4096"),
    (dict(scale=0), ValueError, "scale must be a positive number, not 0"),
    (dict(scale_frac_bits=21), ValueError, "scale_frac_bits must be an integer from 1 to 20"),
    (dict(range_bits=0), ValueError, "range_bits must be an integer from 1 to 12, not 0"),
    (dict(exp_frac_bits=0), ValueError, "exp_frac_bits must be an integer from 1 to 16, not 0"),
    (dict(exp_segment_bits=-1), ValueError, "exp_segment_bits must be an integer from 0 to 10"),
    (dict(exp_degree=-1), ValueError, "exp_degree must be an integer from 0 to 2, not -1"),
    (dict(exp_bits=21), ValueError, "exp_bits must be an integer from 2 to 20, not 21"),
    (dict(recip_table_bits=11), ValueError, "recip_table_bits must be an integer from 1 to 10"),
    (dict(newton_steps=-1), ValueError, "newton_steps must be an integer from 0 to 3, not -1"),
    (dict(recip_bits=1), ValueError, "recip_bits must be an integer from 2 to 24, not 1"),
    (dict(buffer_blocks=3, max_row_blocks=4), ValueError,
     "buffer_blocks must be an integer from 4 to 4096, not 3"),
    (dict(tree_levels=9), ValueError, "tree_levels must be an integer from 1 to 8, not 9"),
    (dict(multiplier_chunk_bits=40), ValueError,
     "multiplier_chunk_bits must be None or an integer from 4 to 32, not 40"),
])
def test_component_rejects(kw, error, message):
    args = dict(in_format=F8, out_format=F8)
    args.update(kw)
    with pytest.raises(error, match=message):
        MXIntSoftmax(**args)


def test_component_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        MXIntSoftmax(F8, F8)


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_softmax", **data}, source="t.yaml")
    return str(info.value)


@pytest.mark.parametrize("data, text", [
    ({"exp_segment_bits": 9, "exp_frac_bits": 8},
     "t.yaml: exp_segment_bits: got 9; allowed: at most exp_frac_bits (8)"),
    ({"recip_table_bits": 9, "recip_bits": 6},
     "t.yaml: recip_table_bits: got 9; allowed: at most recip_bits + 2 (8)"),
    ({"scale": 1e-6, "scale_frac_bits": 2}, "t.yaml: scale_frac_bits: got 2; allowed: a value "
                                            "making scale * log2(e) * 2^scale_frac_bits round"),
    ({"buffer_blocks": 2, "max_row_blocks": 4},
     "t.yaml: buffer_blocks: got 2; allowed: null or at least max_row_blocks (4)"),
    ({"exp_degree": 3}, "t.yaml: exp_degree: got 3; allowed: integer 0 .. 2"),
    ({"scale": 0}, "t.yaml: scale: got 0.0; allowed: number 1e-06 .. 1000000.0"),
    ({"exponent_encoding": "e8m0"}, "t.yaml: exponent_encoding: got 'e8m0'; allowed: one of"),
])
def test_config_rejects(data, text):
    assert text in _reject(data)


def test_presets_cover_the_design_space():
    assert len(PRESETS) >= 3
    assert {0, 1, 2} <= {c.exp_degree for c in PRESETS}
    assert len({c.block_size for c in PRESETS}) >= 3
    assert {0, 1, 2} <= {c.newton_steps for c in PRESETS}
    assert any(c.buffer_blocks is not None for c in PRESETS)
    assert any(c.buffer_blocks is None for c in PRESETS)


# ---------------------------------------------------------------- fast tier (amaranth.sim)

class _Small:
    """A config-like object for the testbench helpers."""
    block_size = 4
    max_row_blocks = 3
    in_fmt = MXIntFormat(8, 4, 6)
    out_fmt = MXIntFormat(6, 4, 6)
    args = dict(max_row_blocks=3, scale=0.5, range_bits=5, exp_frac_bits=8, exp_segment_bits=3,
                exp_degree=2, exp_bits=10, recip_table_bits=4, newton_steps=1, recip_bits=10)
    spec = SoftmaxSpec(in_fmt, out_fmt, **args)


# three profiles for the default pipeline (the cocotb regressions run all five), the pipeline
# variants under one: amaranth.sim takes seconds to build these units
_RUNS = [({}, prof) for prof in ("smooth", "backpressure", "bursty")]


@pytest.mark.parametrize("variant, profile", _RUNS + [
    (v, prof) for v in (dict(buffer_blocks=3), dict(tree_levels=1, multiplier_chunk_bits=5))
    for prof in ("smooth",)])
def test_pysim_matches_golden(profile, variant):
    cfg = _Small()
    dut = MXIntSoftmax(in_format=cfg.in_fmt, out_format=cfg.out_fmt, **cfg.args, **variant)
    rng = np.random.default_rng(len(variant))
    rows_ = corner_rows(cfg) + random_rows(rng, cfg, 16)
    rows_.append(rows_[0] * 2)            # longer than max_row_blocks: cut
    beats = beats_of(cfg, rows_)
    want = expected_rows(cfg, rows_)
    run = run_streams(dut, {"scores": beats}, {"probs": len(want)}, profile=profile, seed=7)
    assert run.outputs["probs"] == want
    if profile == "smooth":
        lat = dut.latencies
        lengths = []
        for r in rows_:
            lengths += [min(cfg.max_row_blocks, len(r) - s)
                        for s in range(0, len(r), cfg.max_row_blocks)]
        taken, emitted = softmax_cycles(lengths, row_info=lat["row_info"],
                                        second_pass=lat["second_pass"],
                                        buffer_blocks=lat["buffer_blocks"],
                                        row_slots=lat["row_slots"])
        assert run.cycles["scores"] == taken
        assert run.cycles["probs"] == emitted


def test_default_buffer_sustains_one_block_per_cycle():
    """Back-to-back rows of every length, smooth traffic: the model (held equal to the RTL
    above) emits one block per cycle once the first row is out."""
    dut = MXIntSoftmax(in_format=F8, out_format=F8, max_row_blocks=4)
    lat = dut.latencies
    for n in (1, 2, 4):
        taken, emitted = softmax_cycles([n] * 50, row_info=lat["row_info"],
                                        second_pass=lat["second_pass"],
                                        buffer_blocks=lat["buffer_blocks"],
                                        row_slots=lat["row_slots"])
        assert np.all(np.diff(taken) == 1) and np.all(np.diff(emitted) == 1)


# ---------------------------------------------------------------- cocotb + Verilator

@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_softmax_cosim(config):
    result = run_cosim(config, "cosim.mxint_softmax")
    assert result.tests["random_and_corner_rows"]["checked"] >= 150
    stress = [t for name, t in result.tests.items() if name.startswith("stress")]
    assert len(stress) == 4 and all(t["checked"] >= 30 for t in stress)
    cycles = result.records("cycle_model")
    assert cycles["cycle_model_matches"] == 1      # the harness records bools as ints
    if config.buffer_blocks is None:
        assert cycles["full_row_blocks_per_cycle"] == 1.0
