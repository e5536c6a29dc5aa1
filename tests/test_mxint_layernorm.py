"""MXInt LayerNorm: golden model properties (Hypothesis), argument and config rejections, the
amaranth.sim fast tier (with the cycle model) and the cocotb regression over every preset."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cosim.mxint_layernorm import (corner_rows, expected_rows, param_beats, random_params,
                                   random_rows, row_beats)
from cosim.pysim import run_streams
from gen.cosim_run import preset_configs, run_cosim
from gen.config import config_from_dict
from gen.schema import ConfigError
from hw.mxint_layernorm import MXIntLayerNorm
from software_model.mxint import MXIntFormat, quantize_mxint
from software_model.mxint_fixed import mxint_values
from software_model.mxint_layernorm import (LayerNormSpec, layernorm_error_bound,
                                            mxint_layernorm, reference_layernorm)
from software_model.mxint_softmax import softmax_cycles

PRESETS = preset_configs("mxint_layernorm")
F8 = MXIntFormat(8, 8)
SPEC = LayerNormSpec(F8, F8, F8, row_length=64)


def _params(spec, rng):
    g = quantize_mxint(rng.uniform(0.5, 1.6, spec.row_length), spec.param_fmt)
    b = quantize_mxint(rng.normal(size=spec.row_length) * 0.5, spec.param_fmt)
    return g.exponents, g.mantissas, b.exponents, b.mantissas


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.floats(0.05, 20), st.floats(-10, 10),
       st.sampled_from([dict(), dict(newton_steps=2, rsqrt_table_bits=4),
                        dict(newton_steps=0, rsqrt_table_bits=8),
                        dict(frac_bits=8, norm_frac_bits=8, out_frac_bits=8)]))
def test_error_bound_against_float64(seed, scale, offset, kw):
    spec = LayerNormSpec(F8, F8, F8, row_length=64, **kw)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(6, 64)) * scale + offset
    if rng.random() < 0.3:
        x[:, rng.integers(64)] *= 8                  # an outlier channel, as BERT has
    q = quantize_mxint(x, F8)
    ge, gm, be, bm = _params(spec, rng)
    res = mxint_layernorm(q.exponents, q.mantissas, ge, gm, be, bm, spec)
    ref = reference_layernorm(q.exponents, q.mantissas, ge, gm, be, bm, spec)
    # the bound holds inside the stated ranges: |x| < 2^int_bits, |y| < 2^out_int_bits
    xv = mxint_values(q.exponents, q.mantissas, F8).reshape(ref.shape)
    ok = np.all(np.abs(ref) < 2 ** spec.out_int_bits - 1, axis=-1) & \
        np.all(np.abs(xv) < 2 ** spec.int_bits, axis=-1)
    bound = layernorm_error_bound(spec, q.exponents, q.mantissas, ge, gm, res)
    err = np.abs(res.values(spec) - ref)
    assert np.all(err[ok] <= bound[ok])


@settings(max_examples=60, deadline=None)
@given(st.integers(-128, 127), st.integers(-20, 20), st.integers(0, 2 ** 32 - 1))
def test_constant_row_gives_beta(mantissa, exponent, seed):
    """Zero variance: V = 0, the epsilon term keeps the radicand positive, every centred value
    is exactly 0, and the output is beta rounded to the output format, whatever the constant."""
    rng = np.random.default_rng(seed)
    ge, gm, be, bm = _params(SPEC, rng)
    xe = np.full((1, SPEC.row_blocks), exponent)
    xm = np.full((1, SPEC.row_blocks, 8), mantissa)
    res = mxint_layernorm(xe, xm, ge, gm, be, bm, SPEC)
    assert res.radicand[0] == SPEC.epsilon_units
    assert np.all(res.normalized == 0)
    beta = mxint_values(be, bm, SPEC.param_fmt).reshape(-1)
    assert np.allclose(res.values(SPEC)[0], beta, atol=2.0 ** -SPEC.out_frac_bits, rtol=2 ** -6)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2 ** 32 - 1))
def test_normalized_row_has_zero_mean_unit_variance(seed):
    """Before the affine step, z has mean ~0 and variance ~1 (gamma = 1, beta = 0 exactly)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 64)) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)
    q = quantize_mxint(x, F8)
    one = np.full((8, 8), 64)
    res = mxint_layernorm(q.exponents, q.mantissas, np.zeros(8), one, np.zeros(8),
                          np.zeros((8, 8)), SPEC)
    z = res.normalized / 2.0 ** SPEC.norm_frac_bits
    assert np.all(np.abs(z.mean(axis=-1)) < 0.01)
    assert np.all(np.abs(z.var(axis=-1) - 1) < 0.01)


def test_saturating_inputs_are_clamped_then_normalised():
    rng = np.random.default_rng(0)
    ge, gm, be, bm = _params(SPEC, rng)
    xe = np.array([[127] * 8])
    xm = np.array([np.resize([127, -128], 64).reshape(8, 8)])
    res = mxint_layernorm(xe, xm, ge, gm, be, bm, SPEC)
    # +-2^int_bits after saturation: mean ~0, every |z| ~ 1
    z = res.normalized[0] / 2.0 ** SPEC.norm_frac_bits
    assert np.allclose(np.abs(z), 1, atol=0.01)


def test_stated_epsilon():
    spec = LayerNormSpec(F8, F8, F8, row_length=64, eps=1e-5, frac_bits=10)
    assert spec.epsilon_units == round(1e-5 * 64 ** 2 * 4 ** 10)
    assert abs(spec.stated_epsilon - 1e-5) / 1e-5 < 1e-3
    assert LayerNormSpec(F8, F8, F8, eps=0.0).epsilon_units == 1


@pytest.mark.parametrize("kw, message", [
    (dict(row_length=60), "row_length must be a multiple of the block size \\(8\\), not 60"),
    (dict(row_length=1), "row_length must be an integer from 2 to 16384, not 1"),
    (dict(frac_bits=21), "frac_bits must be an integer from 0 to 20, not 21"),
    (dict(int_bits=0), "int_bits must be an integer from 1 to 16, not 0"),
    (dict(eps=-1.0), "eps must be a number in \\[0, 1\\), not -1.0"),
    (dict(rsqrt_table_bits=1), "rsqrt_table_bits must be an integer from 2 to 10, not 1"),
    (dict(newton_steps=4), "newton_steps must be an integer from 0 to 3, not 4"),
    (dict(rsqrt_bits=1), "rsqrt_bits must be an integer from 2 to 20, not 1"),
    (dict(rsqrt_bits=2, rsqrt_table_bits=7), "rsqrt_table_bits must be at most rsqrt_bits \\+ 4"),
    (dict(norm_frac_bits=0), "norm_frac_bits must be an integer from 1 to 20, not 0"),
    (dict(out_frac_bits=25), "out_frac_bits must be an integer from 0 to 24, not 25"),
    (dict(out_int_bits=17), "out_int_bits must be an integer from 1 to 16, not 17"),
    (dict(int_bits=16, frac_bits=20), "is too wide for row_length 64"),
])
def test_spec_rejects(kw, message):
    with pytest.raises(ValueError, match=message):
        LayerNormSpec(F8, F8, F8, **{"row_length": 64, **kw})


@pytest.mark.parametrize("kw, error, message", [
    (dict(in_format=None), TypeError, "Format must be an MXIntFormat, not None"),
    (dict(out_format=1), TypeError, "Format must be an MXIntFormat, not 1"),
    (dict(param_format="x"), TypeError, "Format must be an MXIntFormat, not 'x'"),
    (dict(row_length=12), ValueError, "row_length must be a multiple of the block size"),
    (dict(frac_bits=-1), ValueError, "frac_bits must be an integer from 0 to 20, not -1"),
    (dict(int_bits=17), ValueError, "int_bits must be an integer from 1 to 16, not 17"),
    (dict(eps=2.0), ValueError, "eps must be a number in \\[0, 1\\), not 2.0"),
    (dict(rsqrt_table_bits=11), ValueError, "rsqrt_table_bits must be an integer from 2 to 10"),
    (dict(newton_steps=-1), ValueError, "newton_steps must be an integer from 0 to 3, not -1"),
    (dict(rsqrt_bits=21), ValueError, "rsqrt_bits must be an integer from 2 to 20, not 21"),
    (dict(norm_frac_bits=21), ValueError, "norm_frac_bits must be an integer from 1 to 20"),
    (dict(out_frac_bits=-1), ValueError, "out_frac_bits must be an integer from 0 to 24"),
    (dict(out_int_bits=0), ValueError, "out_int_bits must be an integer from 1 to 16, not 0"),
    (dict(buffer_blocks=1), ValueError, "buffer_blocks must be an integer from 4 to 4096, not 1"),
    (dict(tree_levels=0), ValueError, "tree_levels must be an integer from 1 to 8, not 0"),
    (dict(multiplier_chunk_bits=3), ValueError,
     "multiplier_chunk_bits must be None or an integer from 4 to 32, not 3"),
])
def test_component_rejects(kw, error, message):
    args = dict(in_format=F8, out_format=F8, param_format=F8, row_length=32)
    args.update(kw)
    with pytest.raises(error, match=message):
        MXIntLayerNorm(**args)


def test_component_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        MXIntLayerNorm(F8, F8, F8)


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_layernorm", **data}, source="t.yaml")
    return str(info.value)


@pytest.mark.parametrize("data, text", [
    ({"row_length": 36}, "t.yaml: row_length: got 36; allowed: a multiple of block_size (8)"),
    ({"rsqrt_table_bits": 9, "rsqrt_bits": 4},
     "t.yaml: rsqrt_table_bits: got 9; allowed: at most rsqrt_bits + 4 (8)"),
    ({"int_bits": 16, "frac_bits": 20, "row_length": 4096},
     "t.yaml: frac_bits: got 20; allowed: a value with int_bits + frac_bits <= "),
    ({"buffer_blocks": 3}, "t.yaml: buffer_blocks: got 3; allowed: null or at least "
                           "row_length / block_size (4)"),
    ({"eps": 0.6}, "t.yaml: eps: got 0.6; allowed: number 0.0 .. 0.5"),
    ({"newton_steps": 5}, "t.yaml: newton_steps: got 5; allowed: integer 0 .. 3"),
])
def test_config_rejects(data, text):
    assert text in _reject(data)


def test_presets_cover_the_design_space():
    assert len(PRESETS) >= 3
    assert {0, 1, 2} <= {c.newton_steps for c in PRESETS}
    assert len({c.block_size for c in PRESETS}) >= 3
    assert any(c.buffer_blocks is not None for c in PRESETS)
    assert any(c.buffer_blocks is None for c in PRESETS)


# ---------------------------------------------------------------- fast tier (amaranth.sim)

class _Small:
    block_size = 4
    row_length = 12
    row_blocks = 3
    in_fmt = MXIntFormat(8, 4, 6)
    out_fmt = MXIntFormat(6, 4, 6)
    param_fmt = MXIntFormat(6, 4, 6)
    args = dict(row_length=12, frac_bits=6, int_bits=5, rsqrt_table_bits=5, newton_steps=1,
                rsqrt_bits=10, norm_frac_bits=8, out_frac_bits=8, out_int_bits=5, eps=1e-5)
    spec = LayerNormSpec(in_fmt, out_fmt, param_fmt, **args)


# three profiles for the default pipeline (the cocotb regressions run all five), the pipeline
# variants under one: amaranth.sim takes seconds to build these units
_RUNS = [({}, prof) for prof in ("smooth", "backpressure", "bursty")]


@pytest.mark.parametrize("variant, profile", _RUNS + [
    (v, prof) for v in (dict(buffer_blocks=3),
                        dict(tree_levels=1, multiplier_chunk_bits=4, newton_steps=2))
    for prof in ("smooth",)])
def test_pysim_matches_golden(profile, variant):
    cfg = _Small()
    args = {**cfg.args, **{k: v for k, v in variant.items() if k in cfg.args}}
    extra = {k: v for k, v in variant.items() if k not in cfg.args}
    cfg.spec = LayerNormSpec(cfg.in_fmt, cfg.out_fmt, cfg.param_fmt, **args)
    dut = MXIntLayerNorm(in_format=cfg.in_fmt, out_format=cfg.out_fmt, param_format=cfg.param_fmt,
                         **args, **extra)
    rng = np.random.default_rng(len(variant))
    rows = corner_rows(cfg) + random_rows(rng, cfg, 16)
    params = random_params(rng, cfg)
    want = expected_rows(cfg, rows, params)
    run = run_streams(dut, {"params": param_beats(cfg, params), "operands": row_beats(cfg, rows)},
                      {"results": len(want)}, profile=profile, seed=9)
    assert run.outputs["results"] == want
    # no row was admitted before the parameters were complete
    assert run.cycles["operands"][0] > run.cycles["params"][-1]
    if profile == "smooth":
        lat = dut.latencies
        n = len(rows) * cfg.row_blocks
        taken, emitted = softmax_cycles([cfg.row_blocks] * len(rows), row_info=lat["row_info"],
                                        second_pass=lat["second_pass"],
                                        buffer_blocks=lat["buffer_blocks"],
                                        row_slots=lat["row_slots"],
                                        arrivals=[run.cycles["operands"][0]] * n)
        assert run.cycles["operands"] == taken
        assert run.cycles["results"] == emitted


@pytest.mark.parametrize("row_length, block_size", [(16, 4), (32, 8), (32, 16), (64, 8)])
def test_default_buffer_sustains_one_block_per_cycle(row_length, block_size):
    """Back-to-back rows, smooth traffic: the cycle model (held equal to the RTL above) takes
    and emits one block per cycle with the default buffer."""
    f = MXIntFormat(8, block_size)
    dut = MXIntLayerNorm(in_format=f, out_format=f, param_format=f, row_length=row_length)
    lat = dut.latencies
    taken, emitted = softmax_cycles([row_length // block_size] * 40, row_info=lat["row_info"],
                                    second_pass=lat["second_pass"],
                                    buffer_blocks=lat["buffer_blocks"],
                                    row_slots=lat["row_slots"])
    assert np.all(np.diff(taken) == 1) and np.all(np.diff(emitted) == 1)


def test_parameter_reload_waits_for_rows_in_flight():
    """Rows are held until the first parameter set is complete; a second set offered while rows
    are in flight is taken only once the unit is idle; rows before it use the old set, rows
    after it the new one."""
    from amaranth.sim import Simulator
    from cosim.pysim import to_python

    cfg = _Small()
    dut = MXIntLayerNorm(in_format=cfg.in_fmt, out_format=cfg.out_fmt,
                         param_format=cfg.param_fmt, **cfg.args)
    rng = np.random.default_rng(1)
    rows1, rows2 = random_rows(rng, cfg, 2), random_rows(rng, cfg, 2)
    p1, p2 = random_params(rng, cfg), random_params(rng, cfg)
    want = expected_rows(cfg, rows1, p1) + expected_rows(cfg, rows2, p2)
    got, events = [], {}

    async def bench(ctx):
        ctx.set(dut.results.ready, 1)
        # rows1 is offered from the start, together with p1; p2 once rows1 is taken; rows2
        # once p2 is taken
        queues = {"params": param_beats(cfg, p1), "operands": row_beats(cfg, rows1)}
        later = {"params": param_beats(cfg, p2), "operands": row_beats(cfg, rows2)}
        for cycle in range(600):
            offered = []
            for name in ("params", "operands"):
                port = getattr(dut, name)
                if queues[name]:
                    ctx.set(port.payload, queues[name][0])
                    ctx.set(port.valid, 1)
                    offered.append(name)
                else:
                    ctx.set(port.valid, 0)
            if ctx.get(dut.results.valid):
                got.append(to_python(ctx.get(dut.results.payload)))
                events.setdefault("first_out", cycle)
            taken = [n for n in offered if ctx.get(getattr(dut, n).ready)]
            await ctx.tick()
            for name in taken:
                events.setdefault(name, []).append(cycle)
                queues[name].pop(0)
            if not queues["operands"] and later["params"] is not None:
                queues["params"], later["params"] = later["params"], None
            if not queues["params"] and later["params"] is None and later["operands"]:
                queues["operands"], later["operands"] = later["operands"], []

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == want
    nb = cfg.row_blocks
    # the first row beat (offered before any parameters) waited for the whole first set
    assert events["operands"][0] > events["params"][nb - 1]
    # the second set waited for every row of the first batch to leave the row buffer
    assert events["params"][nb] >= events["first_out"] + len(rows1) * nb - 1 - \
        dut.latencies["second_pass"]


# ---------------------------------------------------------------- cocotb + Verilator

@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_layernorm_cosim(config):
    result = run_cosim(config, "cosim.mxint_layernorm")
    assert result.tests["random_and_corner_rows"]["checked"] >= 150
    stress = [t for name, t in result.tests.items() if name.startswith("stress")]
    assert len(stress) == 4 and all(t["checked"] >= 30 for t in stress)
    cycles = result.records("cycle_model")
    assert cycles["cycle_model_matches"] == 1      # the harness records bools as ints
    if config.buffer_blocks is None:
        assert cycles["blocks_per_cycle"] == 1.0
