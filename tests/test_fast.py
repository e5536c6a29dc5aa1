"""Native stream harness (cosim/fast.py): payload packing, the traffic arithmetic in C++, the
same answers as cocotb and amaranth.sim, and tiled GEMMs on the fast path."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cosim.fast import TRAFFIC_H, Design, FastSimError, cpp_port_name, harness_sources, simulate
from cosim.harness import pack, unpack
from cosim.payload import columns_from_values, pack_beats, to_values, unpack_beats
from cosim.stimulus import random_columns, random_inputs
from cosim.traffic import STRESS_PROFILES, Pattern
from gen.config import load_config, preset_paths

# -- payload packing ---------------------------------------------------------------------------


def _int_layout(width, signed):
    return {"type": "int", "width": width, "signed": signed}


@st.composite
def layouts(draw, depth=0):
    kind = draw(st.sampled_from(["int", "int", "struct", "array"] if depth < 3 else ["int"]))
    if kind == "int":
        # word-boundary widths (32, 64 and their neighbours) often: that is where packing breaks
        width = draw(st.one_of(st.sampled_from([1, 8, 16, 31, 32, 33, 63, 64, 65, 96]),
                               st.integers(1, 100)))
        return _int_layout(width, draw(st.booleans()))
    if kind == "array":
        elem = draw(layouts(depth + 1))
        length = draw(st.integers(1, 4))
        return {"type": "array", "width": elem["width"] * length, "length": length,
                "element": elem}
    fields, offset = {}, 0
    for i in range(draw(st.integers(1, 4))):
        offset += draw(st.integers(0, 5))          # unused bits between fields
        sub = draw(layouts(depth + 1))
        fields[f"f{i}"] = {"offset": offset, "layout": sub}
        offset += sub["width"]
    return {"type": "struct", "width": offset + draw(st.integers(0, 3)), "fields": fields}


@settings(max_examples=150, deadline=None)
@given(layout=layouts(), seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6))
def test_vectorised_pack_equals_per_beat_pack(layout, seed, n):
    columns = random_columns(layout, n, np.random.default_rng(seed))
    words = pack_beats(layout, columns)
    values = to_values(layout, columns)
    assert [sum(int(w) << (32 * i) for i, w in enumerate(row)) for row in words] == \
        [pack(layout, v) for v in values]
    assert to_values(layout, unpack_beats(layout, words)) == values == \
        [unpack(layout, pack(layout, v)) for v in values]
    assert (pack_beats(layout, columns_from_values(layout, values)) == words).all()


def test_pack_places_fields_at_their_offsets():
    layout = {"type": "struct", "width": 65, "fields": {
        "a": {"offset": 0, "layout": {"type": "array", "width": 32, "length": 4,
                                      "element": _int_layout(8, True)}},
        "b": {"offset": 32, "layout": {"type": "array", "width": 32, "length": 4,
                                       "element": _int_layout(8, True)}},
        "last": {"offset": 64, "layout": _int_layout(1, False)}}}
    words = pack_beats(layout, {"a": np.array([[1, -1, 2, -128]]), "b": np.array([[0, 0, 0, 5]]),
                                "last": np.array([1])})
    assert words.tolist() == [[0x80_02_FF_01, 0x05_00_00_00, 1]]


@pytest.mark.parametrize("columns,message", [
    ({"a": np.array([128]), "b": np.array([0])}, "a: 128 does not fit a signed 8-bit field"),
    ({"a": np.array([0])}, "'b' missing"),
    ({"a": np.array([0]), "b": np.array([0]), "c": np.array([0])},
     r"unknown payload fields \['c'\]"),
    ({"a": np.array([[0]]), "b": np.array([0])}, r"a must have shape \(beats\), not \(1, 1\)"),
    ({"a": np.array([0, 1]), "b": np.array([0])}, "b has 1 beats, other fields have 2"),
    ({"a": np.array([0.5]), "b": np.array([0])}, "a must hold integers"),
])
def test_pack_rejects_bad_columns(columns, message):
    layout = {"type": "struct", "width": 12, "fields": {
        "a": {"offset": 0, "layout": _int_layout(8, True)},
        "b": {"offset": 8, "layout": _int_layout(4, False)}}}
    with pytest.raises((ValueError, KeyError, TypeError), match=message):
        pack_beats(layout, columns)


# -- traffic arithmetic in C++ -------------------------------------------------------------------

_MASK_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include "accelgen_traffic.h"
int main(int argc, char** argv) {
    accelgen::Gate g;
    g.init(strtoull(argv[1], 0, 0), argv[2], strtoull(argv[3], 0, 0), strtoull(argv[4], 0, 0));
    unsigned long long start = strtoull(argv[5], 0, 0), count = strtoull(argv[6], 0, 0);
    for (unsigned long long c = start; c < start + count; ++c) putchar(g.blocked(c) ? '1' : '0');
    return 0;
}
"""


@pytest.fixture(scope="module")
def mask_tool(tmp_path_factory):
    """The harness's traffic header, compiled alone with a main that prints blocked cycles."""
    folder = tmp_path_factory.mktemp("traffic")
    (folder / "accelgen_traffic.h").write_text(TRAFFIC_H)
    (folder / "main.cpp").write_text(_MASK_MAIN)
    subprocess.run(["g++", "-O1", "-o", str(folder / "masks"), str(folder / "main.cpp")],
                   check=True, cwd=folder)
    return folder / "masks"


@pytest.mark.parametrize("pattern", [Pattern(0.0), Pattern(0.2), Pattern(0.9), Pattern(1.0),
                                     Pattern(0.3, 8), Pattern(0.5, 16), Pattern(0.01, 3)],
                         ids=lambda p: f"p{p.p}-b{p.burst}")
@pytest.mark.parametrize("seed", [1, 7, 2**31 + 5, 2**40 + 3])
def test_cpp_traffic_masks_equal_python(mask_tool, pattern, seed):
    for stream, start in (("operands", 0), ("results", 12345), ("weights", 2**33 + 17)):
        out = subprocess.run([str(mask_tool), str(seed), stream, str(pattern.threshold),
                              str(pattern.burst), str(start), "3000"], check=True,
                             capture_output=True, text=True).stdout
        want = pattern.blocked(seed, stream, start, 3000)
        assert out == "".join("1" if b else "0" for b in want), (stream, start)


# -- generated C++ ---------------------------------------------------------------------------------


def test_cpp_port_names_follow_verilator_mangling():
    assert cpp_port_name("operands__payload") == "operands___05Fpayload"
    assert cpp_port_name("a_exp") == "a_exp"
    assert cpp_port_name("x__y__valid") == "x___05Fy___05Fvalid"


def _design(name: str) -> Design:
    from gen.sim import design_for
    return design_for(load_config(preset_paths(prefix=name)[0]))


def test_harness_source_drives_every_stream_of_the_manifest():
    design = _design("systolic_ws_8x8")
    cpp = harness_sources(design)["accelgen_harness.h"]
    for stream in ("weights", "activations"):
        assert f"put_{stream}(" in cpp and f"top->{stream}___05Fvalid" in cpp
    assert "get_results(" in cpp and "top->results___05Fready" in cpp
    assert [s.name for s in design.inputs] == ["weights", "activations"]


def test_simulate_rejects_unknown_streams():
    design = _design("systolic_os_4x4")
    with pytest.raises(ValueError, match=r"no input stream\(s\) \['weights'\]"):
        simulate(design, {"weights": []})
    with pytest.raises(ValueError, match=r"no output stream\(s\) \['sums'\]"):
        simulate(design, {"operands": []}, expect={"sums": 1})
    with pytest.raises(ValueError, match="stream operands: payload field a: 300 does not fit"):
        simulate(design, {"operands": {"a": np.full((1, 4), 300), "b": np.zeros((1, 4), int),
                                       "last": np.ones(1, int)}})


# -- against amaranth.sim and the golden model (Verilator) -----------------------------------------


def _os_jobs(rng, n_jobs, rows=4, cols=4):
    ks = rng.integers(1, 9, size=n_jobs)
    a = [rng.integers(-128, 128, (rows, k)) for k in ks]
    b = [rng.integers(-128, 128, (k, cols)) for k in ks]
    beats = {"a": np.concatenate([x.T for x in a]), "b": np.concatenate(b),
             "last": np.concatenate([np.arange(k) == k - 1 for k in ks]).astype(int)}
    return a, b, beats


@pytest.mark.cosim
@pytest.mark.parametrize("profile", ["smooth", *STRESS_PROFILES])
def test_native_equals_amaranth_sim_and_golden(profile):
    from cosim.pysim import run_streams
    from software_model.systolic import gemm

    cfg = load_config(preset_paths(prefix="systolic_os_4x4")[0])
    design = _design("systolic_os_4x4")
    a, b, beats = _os_jobs(np.random.default_rng(4), 40)
    # the regression's build (cocotb's main + the native harness), shared with test_systolic
    run = simulate(design, {"operands": beats}, expect={"results": 4 * len(a)}, profile=profile,
                   seed=9, harness="cocotb")
    want = np.concatenate([np.array(gemm(x, y, a_width=8, b_width=8,
                                         acc_width=cfg.accumulator_width), dtype=np.int64)
                           for x, y in zip(a, b)])
    assert (run.outputs["results"]["c"] == want).all()
    assert run.outputs["results"]["last"].tolist() == [0, 0, 0, 1] * len(a)
    ref = run_streams(cfg.elaborate(), {"operands": to_values(design.inputs[0].layout, beats)},
                      {"results": 4 * len(a)}, profile=profile, seed=9)
    assert run.beats("results") == ref.outputs["results"]
    assert run.cycles["operands"].tolist() == ref.cycles["operands"]
    assert run.cycles["results"].tolist() == ref.cycles["results"]
    assert run.total_cycles == ref.total_cycles


@pytest.mark.cosim
def test_native_reports_extra_beats_and_timeouts():
    design = _design("systolic_os_4x4")
    _a, _b, beats = _os_jobs(np.random.default_rng(5), 3)
    with pytest.raises(FastSimError, match=r"extra_beats .* results: 12/8 out"):
        simulate(design, {"operands": beats}, expect={"results": 8}, harness="cocotb")
    with pytest.raises(FastSimError, match=r"timeout .* results: 12/13 out"):
        simulate(design, {"operands": beats}, expect={"results": 13}, timeout_cycles=500,
                 harness="cocotb")
    # no expected count: the run ends once the outputs stay idle
    run = simulate(design, {"operands": beats}, idle_cycles=50, harness="cocotb")
    assert len(run.words["results"]) == 12 and run.sim_cycles == run.total_cycles + 50


# -- the same answers as cocotb: one small preset per kind ----------------------------------------

EQUIVALENCE_PRESETS = [
    "systolic_os_4x4_int8", "systolic_ws_8x8_int8", "flattened_b4_m4_mxint8_square",
    "mxint_cast_fp32_w4_k8", "mxint_dot_w4_k8", "mxint_accumulator_exact_l1_w21",
    "mxint_linear_w2_k8_e7_fp32", "ternary_lut_int8_mu2_l4_k4", "float_add_fp16",
    "mxint_softmax_k8_w6_r2_table", "mxint_layernorm_k2_n8_w8_out6", "mxint_gelu_k4_w8_table",
]


@pytest.mark.cosim
@pytest.mark.parametrize("name", EQUIVALENCE_PRESETS)
def test_native_harness_equals_cocotb(name):
    """Identical beats through cocotb (cosim.replay, StreamSource/StreamSink) and the native
    harness under every stress profile: identical output beats and handshake cycles."""
    from gen.crosscheck import Case, differences, run_both

    cfg = load_config(preset_paths(prefix=name)[0])
    design = _design(name)
    rng = np.random.default_rng(11)
    cases = [Case(random_inputs(design.manifest, 250, rng), profile)
             for profile in STRESS_PROFILES]
    results = run_both(cfg, design, cases, seed=13)
    for case, (fast, cocotb) in zip(cases, results):
        assert differences(fast, cocotb) == [], case.profile
        assert all(len(fast.cycles[s.name]) > 0 for s in design.streams), case.profile
        assert sum(len(v) for v in fast.words.values()) > 0


@pytest.mark.cosim
def test_optimised_native_build_equals_cocotb_build():
    """The standalone build (accelgen sim, benches: its own Verilation, no VPI, optimised C++;
    -O1 here to keep the build short) gives the answers of the -O0 cocotb build that the
    equivalence test checks."""
    design = _design("systolic_os_4x4")
    inputs = random_inputs(design.manifest, 2000, np.random.default_rng(2))
    for profile in ("mild", "bursty"):
        fast = simulate(design, inputs, profile=profile, seed=3, harness="fast", opt="O1")
        ref = simulate(design, inputs, profile=profile, seed=3, harness="cocotb")
        assert fast.build.dir != ref.build.dir
        assert (fast.words["results"] == ref.words["results"]).all()
        assert all((fast.cycles[k] == ref.cycles[k]).all() for k in ref.cycles)
        assert len(ref.words["results"]) > 100


# -- tiled GEMMs on the fast path (were cocotb tests) ---------------------------------------------

GEMM_PRESETS = [p.stem for kind in ("systolic_array", "flattened_array") for p in
                preset_paths(kind)]


def _gemm_shape(cfg):
    if cfg.kind == "flattened_array":
        k = 2 * cfg.block_size if cfg.mxint else cfg.max_k
        return cfg.blen + 1, k, 3 * cfg.blen
    if cfg.dataflow == "weight_stationary":
        return 3 * cfg.rows + 1, 2 * cfg.rows + 1, 2 * cfg.cols + 3
    return 2 * cfg.rows + 1, cfg.max_k + 5, 2 * cfg.cols - 1


@pytest.mark.cosim
@pytest.mark.parametrize("name", GEMM_PRESETS)
@pytest.mark.parametrize("profile", ["smooth", "bursty"])
def test_tiled_gemm_on_native_harness(name, profile):
    """A GEMM larger than the array, every result row against the golden model; gap-free, the
    measured cycles equal the cycle model's (an upper bound when a K-chunk is short)."""
    from gen.sim import tiled_gemm

    cfg = load_config(preset_paths(prefix=name)[0])
    m, k, n = _gemm_shape(cfg)
    run = tiled_gemm(cfg, m, k, n, seed=3, profile=profile, harness="cocotb")
    width = cfg.blen if cfg.kind == "flattened_array" else cfg.cols
    assert run.mismatches == [] and run.checked >= m * -(-n // width) > 0
    if profile == "smooth":
        uneven = cfg.kind == "systolic_array" and cfg.dataflow == "output_stationary" and \
            k % min(k, cfg.max_k)
        assert run.rtl_cycles <= run.model_cycles if uneven else \
            run.rtl_cycles == run.model_cycles


@pytest.mark.cosim
def test_long_gemm_runs_on_native_harness():
    """Workloads over 10^5 cycles run natively: a 64 x 1024 x 64 GEMM on the 4x4 array."""
    from gen.sim import random_operands, tiled_gemm

    cfg = load_config(preset_paths(prefix="systolic_os_4x4")[0])
    run = tiled_gemm(cfg, 64, 1024, 64, seed=1, harness="cocotb")
    assert run.rtl_cycles > 10**5 and run.rtl_cycles == run.model_cycles
    assert run.mismatches == [] and run.checked == 16 * 16 * -(-1024 // cfg.max_k) * 4
    # C is the exact sum over K-chunks of each chunk's product wrapped to the accumulator
    ops = random_operands(cfg, 64, 1024, 64, seed=1)
    half, chunk = 1 << (cfg.accumulator_width - 1), cfg.max_k
    want = sum((ops["a"][:, k:k + chunk] @ ops["b"][k:k + chunk] + half) % (2 * half) - half
               for k in range(0, 1024, chunk))
    assert (run.c.astype(np.int64) == want).all()


# -- accelgen sim ----------------------------------------------------------------------------------


def _cli(capsys, *args):
    from gen.cli import main
    code = main(["sim", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_sim_rejects_bad_arguments(tmp_path, capsys):
    cfg = str(preset_paths(prefix="float_add_fp16")[0])
    np.savez(tmp_path / "bad.npz", **{"sums.a": np.zeros(3)})
    np.savez(tmp_path / "partial.npz", **{"operands.a": np.zeros(3, int)})
    (tmp_path / "bad.yaml").write_text("kind: float_add\nformat: fp17\n")
    cases = [
        ([cfg, "--inputs", str(tmp_path / "none.npz")], "--inputs .*none.npz: no such file"),
        ([cfg, "--inputs", str(tmp_path / "bad.npz")],
         "sums.a: float_add_fp16 has no input stream 'sums'; inputs: operands"),
        ([cfg, "--inputs", str(tmp_path / "partial.npz")], "payload field 'b' missing"),
        ([cfg, "--random", "10", "--expect", "sums=x"], "--expect 'sums=x': allowed: STREAM=N"),
        ([cfg, "--random", "10", "--expect", "results=3"], "has no output stream 'results'"),
        ([cfg, "--random", "10", "--timeout", "0"], "--timeout: got 0; allowed: a positive"),
        ([str(tmp_path / "bad.yaml"), "--random", "10"], "bad.yaml: format: got 'fp17'"),
    ]
    for args, message in cases:
        code, _out, err = _cli(capsys, *args)
        assert code == 2, (args, err)
        assert re.search(message, err), (message, err)


@pytest.mark.cosim
def test_cli_sim_round_trip(tmp_path, capsys):
    """npz in, npz out: output fields, words and handshake cycles equal the Python API's."""
    design = _design("systolic_os_4x4")
    a, _b, beats = _os_jobs(np.random.default_rng(8), 30)
    np.savez(tmp_path / "x.npz", **{f"operands.{k}": v for k, v in beats.items()})
    cfg = str(preset_paths(prefix="systolic_os_4x4")[0])
    code, out, err = _cli(capsys, cfg, "--inputs", str(tmp_path / "x.npz"), "--out",
                          str(tmp_path / "y.npz"), "--profile", "bursty", "--seed", "4",
                          "--expect", f"results={4 * len(a)}", "--opt", "O1")
    assert code == 0, err
    assert "systolic_os_4x4_int8: ok" in out
    ref = simulate(design, {"operands": beats}, expect={"results": 4 * len(a)},
                   profile="bursty", seed=4, opt="O1")
    with np.load(tmp_path / "y.npz") as y:
        assert (y["results.c"] == ref.outputs["results"]["c"]).all()
        assert (y["results@words"] == ref.words["results"]).all()
        assert (y["operands@cycles"] == ref.cycles["operands"]).all()
        assert (y["results@cycles"] == ref.cycles["results"]).all()
        assert json.loads(str(y["meta"]))["status"] == "ok"
    code, _out, err = _cli(capsys, cfg, "--inputs", str(tmp_path / "x.npz"), "--opt", "O1",
                           "--expect", f"results={4 * len(a) - 1}")
    assert code == 1 and "extra_beats" in err
