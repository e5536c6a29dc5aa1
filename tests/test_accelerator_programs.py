"""Programs of the accelerator (software_model/accelerator_programs.py): the seeded random legal
program generator over presets and random configs, the directed programs against compositions of
the golden operations, and the fused attention against the two-pass computation (bit-exact where
the softmax docstring says online == two-pass) and against float64 within the stated bound."""

from __future__ import annotations

import numpy as np
import pytest

from gen.config import config_from_dict, load_config
from gen.config.accelerator import random_accelerator_config
from software_model.accelerator import (accnorm, accst, cycle_model, matmul, matrix_values,
                                        quantize_matrix, vadd, vgelu, vlnorm)
from software_model.accelerator_programs import (
    attention_error_bound, attention_head, directed_programs, ffn_program, gemm_program,
    layernorm_program, race_free, random_program,
)
from software_model.isa import Opcode, TensorClass, assemble, decode_program, disassemble, \
    encode_program
from software_model.mxint_fixed import fixed_to_mxint
from software_model.mxint_softmax import mxint_softmax

ACT, WGT, KV = TensorClass.ACTIVATION, TensorClass.WEIGHT, TensorClass.KV
PRESETS = ("small", "plena", "square")


def preset(name):
    return load_config(f"configs/accelerator_{name}.yaml").accelerator_params()


# --------------------------------------------------------------------------------------------
# Random programs


def _acc_dump_sp_words(params):
    from software_model.accelerator_programs import _acc_dump_shape
    rows, tiles = _acc_dump_shape(params)
    piece = max(1, min(rows, params.sp_words // (tiles * params.cols // params.block_size)))
    return piece * tiles * params.cols // params.block_size


def _check_random(params, seed, length=60):
    prog = random_program(params, seed, length=length)
    ops = {i.op for i in prog.instructions}
    assert ops == set(Opcode), f"missing {set(Opcode) - ops}"
    assert race_free(prog.instructions, params, prog.dram_words)
    state = prog.run(params)                    # raises on any illegal instruction
    assert state.executed == len(prog.instructions)
    return prog, state


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("seed", range(2))
def test_random_programs_run_on_presets(name, seed):
    params = preset(name)
    prog, state = _check_random(params, seed)
    # the SP dump holds the whole scratchpad (the ACC dump reused only its first words)
    e, m = prog.read(state, "sp")
    last = _acc_dump_sp_words(params)
    assert np.array_equal(m[last:, 0], state.sp.mans[last:].astype(np.int64))


@pytest.mark.parametrize("index", range(12))
def test_random_programs_run_on_random_configs(config_seed, index):
    cfg = config_from_dict(random_accelerator_config(config_seed * 100 + index))
    _check_random(cfg.accelerator_params(), config_seed + index, length=40)


def test_random_programs_have_every_kind_of_cross_queue_dependency():
    params = preset("small")
    totals = {"RAW": 0, "WAR": 0, "WAW": 0}
    for seed in range(4):
        prog = random_program(params, seed, length=60)
        for kind, n in prog.hazard_barriers.items():
            totals[kind] += n
        # without its barriers the program races
        bare = [i for i in prog.instructions if i.op != Opcode.BARRIER]
        assert not race_free(bare, params, prog.dram_words)
    assert all(n > 0 for n in totals.values()), totals


def test_dram_image_is_the_initial_state_as_bit_vectors():
    from software_model.accelerator import unpack_words
    params = preset("small")
    prog = gemm_program(params, m=2, k=16, n=8, seed=0)
    state = prog.initial_state(params)
    for address, words in prog.dram_image(params):
        e, m = unpack_words(words, params)
        se, sm = state.dram.gather(address + np.arange(len(words)))
        assert np.array_equal(e, se) and np.array_equal(m, sm)
    assert state.dram.words_as_ints(params, 0, 4) == prog.dram_image(params)[0][1][:4]


def test_random_programs_are_seeded_and_encode():
    params = preset("small")
    a, b = random_program(params, 7), random_program(params, 7)
    assert a.instructions == b.instructions
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a.dram, b.dram))
    assert random_program(params, 8).instructions != a.instructions
    assert decode_program(encode_program(a.instructions)) == a.instructions
    assert assemble(disassemble(a.instructions)) == a.instructions


def test_random_program_dump_compares_everything():
    """The SP dump is the final scratchpad and the ACC dump rounds every accumulator word:
    changing any SP or ACC word before the dumps changes DRAM."""
    params = preset("small")
    prog = random_program(params, 3, length=30)
    dump_at = max(i for i, ins in enumerate(prog.instructions) if ins.op == Opcode.STORE
                  and ins.m == params.sp_words)
    from software_model.accelerator import execute
    base = execute(prog.instructions[:dump_at], prog.initial_state(params))
    for poke in ("sp", "acc"):
        state = base.copy()
        if poke == "sp":
            state.sp.mans[params.sp_words - 1, 0] ^= 1
        else:
            state.acc[params.acc_words - 1, 0] += 1 << 20
        full = execute(prog.instructions[dump_at:], base.copy())
        poked = execute(prog.instructions[dump_at:], state)
        assert not np.array_equal(full.dram.mans, poked.dram.mans), poke


# --------------------------------------------------------------------------------------------
# Directed programs against compositions of the golden operations


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("m", [1, 4, 9])
def test_gemm_gemv_and_decode_shapes(name, m):
    params = preset(name)
    B = params.block_size
    k, n = 4 * B, 3 * max(B, params.cols)
    prog = gemm_program(params, m=m, k=k, n=n, seed=m, n_tile=B if n > B else None, k_tile=2)
    assert race_free(prog.instructions, params, prog.dram_words)
    state = prog.run(params)
    (_, x_e, x_m), (_, w_e, w_m) = [_input_region(prog, params, r) for r in ("x", "w")]
    acc = matmul(x_e, x_m, w_e, w_m, params, a_class=ACT, b_class=WGT)
    want_e, want_m = accst(acc, params, ACT)
    got_e, got_m = prog.read(state, "y")
    assert np.array_equal(got_e, want_e) and np.array_equal(got_m, want_m)
    # and it is the product: within a few output ulps of float64 on the quantised inputs
    ref = matrix_values(x_e, x_m, params, ACT) @ matrix_values(w_e, w_m, params, WGT).T
    got = matrix_values(got_e, got_m, params, ACT)
    ulp = np.repeat(2.0 ** (got_e - params.fraction_bits(ACT)), B, axis=-1)
    assert np.all(np.abs(got - ref) <= ulp + 16 * 2.0 ** params.acc_lsb)


def _input_region(prog, params, name):
    """(region, exps, mans) of a named program input, read back from its DRAM image."""
    regions = {"x": 0, "w": 1}
    order = sorted(prog.dram, key=lambda t: t[0])
    address, exps, mans = order[regions[name]]
    if name == "x":
        rows = prog.inputs["x"].shape[0]
    else:
        rows = prog.inputs["w"].shape[0]
    blocks = len(exps) // rows
    state = prog.initial_state(params)
    e, m = state.dram.read_matrix(address, rows, blocks, rows)
    return address, e, m


def test_layernorm_program():
    params = preset("small")
    prog = layernorm_program(params, m=3, seed=2)
    state = prog.run(params)
    st0 = prog.initial_state(params)
    nb = params.layernorm.row_length // params.block_size
    xe, xm = st0.dram.read_matrix(0, 3, nb, 3)
    ge, gm = st0.dram.gather(6 * nb + np.arange(2 * nb))       # after x and y
    want = vlnorm(xe, xm, ge[:nb], gm[:nb], ge[nb:], gm[nb:], params)
    got = prog.read(state, "y")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    y = matrix_values(*got, params)
    assert np.all(np.abs(y.mean(axis=1) - prog.inputs["beta"].mean()) < 0.2)


@pytest.mark.parametrize("name", ["small", "plena"])
def test_ffn_block_is_the_composition_of_its_operations(name):
    params = preset(name)
    B = params.block_size
    hidden = params.layernorm.row_length
    ffn = 2 * hidden
    prog = ffn_program(params, m=2, ffn=ffn, seed=1)
    assert race_free(prog.instructions, params, prog.dram_words)
    state = prog.run(params)
    st0 = prog.initial_state(params)
    hb, fb = hidden // B, ffn // B
    at = 0

    def take(rows, blocks):
        nonlocal at
        e, m = st0.dram.read_matrix(at, rows, blocks, rows)
        at += rows * blocks
        return e, m
    x = take(2, hb)
    w1 = take(ffn, hb)
    w2 = take(hidden, fb)
    b1 = take(1, fb)
    b2 = take(1, hb)
    take(2, hb)                                    # y
    g = take(1, 2 * hb)
    h = accst(matmul(*x, *w1, params, a_class=ACT, b_class=WGT), params)
    h = vadd(*h, np.broadcast_to(b1[0], h[0].shape), np.broadcast_to(b1[1], h[1].shape), params)
    h = vgelu(*h, params)
    y = accst(matmul(*h, *w2, params, a_class=ACT, b_class=WGT), params)
    y = vadd(*y, np.broadcast_to(b2[0], y[0].shape), np.broadcast_to(b2[1], y[1].shape), params)
    y = vadd(*y, *x, params)
    want = vlnorm(*y, g[0][0, :hb], g[1][0, :hb], g[0][0, hb:], g[1][0, hb:], params)
    got = prog.read(state, "y")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.mark.parametrize("name", PRESETS)
def test_directed_set_runs_race_free_and_fits(name):
    params = preset(name)
    progs = directed_programs(params)
    assert [p.name for p in progs] == ["gemm", "gemv", "gemm_decode", "layernorm",
                                       "attention_head", "ffn_block"]
    for prog in progs:
        assert race_free(prog.instructions, params, prog.dram_words), prog.name
        prog.run(params)
        assert cycle_model(prog.instructions, params).cycles > 0
    attn = progs[4]
    # keys and values do not fit the scratchpad: the head runs in tiles
    words_kv = 2 * attn.inputs["k"].shape[0] * attn.inputs["k"].shape[1] // params.block_size
    assert words_kv > params.sp_words
    assert attn.count(Opcode.VSMAXO) > 2 and attn.count(Opcode.ACCSCALE) > 1


# --------------------------------------------------------------------------------------------
# Fused attention


def _attention_inputs(prog, params):
    st0 = prog.initial_state(params)
    B = params.block_size
    mq, d = prog.inputs["q"].shape
    length = prog.inputs["k"].shape[0]
    lp = -(-length // B) * B
    qe, qm = st0.dram.read_matrix(0, mq, d // B, mq)
    at = mq * d // B
    ke, km = st0.dram.read_matrix(at, lp, d // B, lp)
    at += lp * d // B
    ve, vm = st0.dram.read_matrix(at, d, lp // B, d)
    return (qe, qm), (ke, km), (ve, vm), length


def two_pass_attention(params, q, k, vt, length):
    """The same units, two-pass: all scores at once, VSMAX's numbers, one P . V, and the
    division of ACCNORM by the two-pass sum."""
    spec = params.softmax
    B = params.block_size
    s = accst(matmul(*q, *k, params, a_class=ACT, b_class=KV), params, ACT)
    mask = np.zeros(s[1].shape, bool)
    mask.reshape(mask.shape[0], -1)[:, :length] = True
    res = mxint_softmax(*s, spec, mask=mask)
    pe, pm = fixed_to_mxint(res.terms, -spec.exp_bits, spec.out_fmt)
    o = matmul(pe, pm, *vt, params, a_class=ACT, b_class=KV)
    return accnorm(o, res.row_sum, params, ACT), res


@pytest.mark.parametrize("name, tile_blocks", [("small", 2), ("small", 3), ("plena", 2),
                                               ("square", 1)])
def test_attention_equals_two_pass_when_the_max_is_in_the_first_tile(name, tile_blocks):
    """mxint_softmax's docstring: online == two-pass (max, terms, sum, outputs) when every
    row's maximum lies in the first tile; then no ACCSCALE shifts and the fused head must
    equal the two-pass composition bit for bit."""
    params = preset(name)
    B = params.block_size
    d, mq = 2 * B, min(4, params.softmax_rows)
    length = min(params.softmax.max_row_blocks * B, 6 * tile_blocks * B) - 3
    rng = np.random.default_rng(11)
    q = rng.normal(size=(mq, d)) * 0.3
    k = rng.normal(size=(length, d)) * 0.3
    q[:, 0] = 2.0
    k[1, 0] = 1.9                 # key 1 (first tile) is every row's maximum (int8 kv: < 2)
    prog = attention_head(params, mq=mq, length=length, d=d, tile=tile_blocks * B, seed=3,
                          q=q, k=k)
    state = prog.run(params)
    q_b, k_b, vt_b, _ = _attention_inputs(prog, params)
    (want_e, want_m), res = two_pass_attention(params, q_b, k_b, vt_b, length)
    scores = matrix_values(*q_b, params, ACT) @ matrix_values(*k_b, params, KV)[:length].T
    assert np.all(scores.argmax(axis=1) == 1)       # sanity: the first tile holds the max
    got_e, got_m = prog.read(state, "out")
    assert np.array_equal(got_e, want_e) and np.array_equal(got_m, want_m)
    assert state.rescale is not None and not state.rescale.any()


@pytest.mark.parametrize("name, seed", [("small", 0), ("small", 1), ("plena", 2),
                                        ("square", 3)])
def test_attention_within_the_stated_error_of_float64(name, seed):
    params = preset(name)
    prog = [p for p in directed_programs(params) if p.name == "attention_head"][0]
    tile = max(i.n for i in prog.instructions if i.op == Opcode.VSMAXO)
    rng = np.random.default_rng(seed)
    mq, d = prog.inputs["q"].shape
    length = prog.inputs["k"].shape[0]
    q = rng.normal(size=(mq, d)) * 2 / np.sqrt(d)        # 1/sqrt(d) folded into the queries
    k = rng.normal(size=(length, d)) * (1 + np.arange(length)[:, None] / length)  # later max
    v = rng.normal(size=(length, d))
    prog = attention_head(params, mq=mq, length=length, d=d, tile=tile, q=q, k=k, v=v)
    state = prog.run(params)
    assert state.rescale is not None
    q_b, k_b, vt_b, _ = _attention_inputs(prog, params)
    qv = matrix_values(*q_b, params, ACT)
    kv = matrix_values(*k_b, params, KV)[:length]
    vv = matrix_values(*vt_b, params, KV)[:, :length].T
    ref, bound = attention_error_bound(params, qv, kv, vv, tile=tile)
    got = matrix_values(*prog.read(state, "out"), params, ACT)
    err = np.abs(got - ref)
    assert np.all(err <= bound), float((err - bound).max())
    # the bound is not vacuous: an all-zero result would break it
    assert np.any(np.abs(ref) > bound)
    # rescales happened (the max moved to later tiles), so this is not the trivial case
    shifts = [i for i in prog.instructions if i.op == Opcode.ACCSCALE]
    assert shifts
