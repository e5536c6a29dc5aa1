"""The closed form ``scalesim_cycles`` against the real SCALE-Sim v3 (gen/scalesim.py), the
single-tile comparison, the K-split accounting and the memory model.

The simulator tests are skipped only when the optional ``scalesim`` group is not installed
(``pip install -e '.[scalesim]'``; ``make bench`` installs it).
"""

import json

import pytest

from gen.scalesim import available, scalesim_run
from software_model.memory import MemorySettings, gemm_traffic, memory_bound
from software_model.systolic import (ksplit_accumulation, scalesim_cycles, single_tile_cycles,
                                     tiled_gemm_cycles)

needs_scalesim = pytest.mark.skipif(not available(), reason="optional group 'scalesim' absent")

OS, WS = "output_stationary", "weight_stationary"
# (M, K, N, R, C, dataflow): square and rectangular arrays, shapes that divide and that do not,
# M = 1 (decode), K = 1, single folds and many folds. 24 cases.
CASES = [
    (16, 128, 16, 16, 16, OS), (1, 64, 64, 8, 8, OS), (1, 64, 64, 8, 8, WS),
    (37, 50, 23, 8, 4, OS), (37, 50, 23, 8, 4, WS), (4, 1, 4, 4, 4, OS), (5, 1, 7, 4, 4, WS),
    (64, 64, 64, 8, 8, OS), (64, 64, 64, 8, 8, WS), (8, 256, 32, 4, 4, OS), (8, 256, 32, 4, 4, WS),
    (33, 17, 9, 16, 8, OS), (33, 17, 9, 16, 8, WS), (100, 20, 30, 4, 8, OS),
    (100, 20, 30, 4, 8, WS), (3, 300, 5, 2, 2, OS), (3, 300, 5, 2, 2, WS), (32, 32, 32, 32, 32, OS),
    (32, 32, 32, 32, 32, WS), (7, 9, 11, 3, 5, OS), (7, 9, 11, 3, 5, WS), (16, 512, 8, 16, 8, OS),
    (256, 8, 16, 8, 8, WS), (2, 1024, 64, 4, 16, OS),
]


@needs_scalesim
@pytest.mark.parametrize("m,k,n,rows,cols,dataflow", CASES)
def test_closed_form_equals_the_simulator(m, k, n, rows, cols, dataflow):
    real = scalesim_run(m, k, n, rows=rows, cols=cols, dataflow=dataflow, use_cache=False)
    assert real["stall_cycles"] == 0
    assert real["cycles"] == real["total_cycles"] + 1
    assert scalesim_cycles(m, k, n, rows=rows, cols=cols, dataflow=dataflow) == real["cycles"]
    # its "Overall Util" is MKN over (reported cycles x R x C)
    assert real["utilization"] == pytest.approx(m * k * n / (real["total_cycles"] * rows * cols))


def test_enough_simulator_cases():
    assert len(CASES) >= 20 and len(set(CASES)) == len(CASES)
    assert {c[-1] for c in CASES} == {OS, WS}


def test_scalesim_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match="m must be a positive integer, not 0"):
        scalesim_run(0, 4, 4, rows=4, cols=4, dataflow=OS)
    with pytest.raises(ValueError, match="dataflow must be one of"):
        scalesim_run(4, 4, 4, rows=4, cols=4, dataflow="row_stationary")


def test_closed_form_is_not_the_paper_formula():
    # The paper's 2R + C + T - 2 per fold (the old figures' OS formula): v3 simulates R less.
    assert scalesim_cycles(16, 128, 16, rows=16, cols=16, dataflow=OS) == 158
    assert scalesim_cycles(1, 1024, 1024, rows=8, cols=8, dataflow=WS) == 376832


@pytest.mark.parametrize("rows,cols", [(4, 4), (8, 8), (16, 8), (16, 16)])
@pytest.mark.parametrize("t", [1, 8, 128])
def test_single_tile_extra_cycles_are_the_documented_ones(rows, cols, t):
    """Ours (cycle model = RTL) is above SCALE-Sim on one tile: R + 3 OS, 3 WS."""
    os_ = single_tile_cycles(t, rows=rows, cols=cols, dataflow=OS)
    assert os_["extra"] == rows + 3
    ws = single_tile_cycles(t, rows=rows, cols=cols, dataflow=WS)
    assert ws["extra"] == 3


@pytest.mark.parametrize("dataflow", [OS, WS])
@pytest.mark.parametrize("shape", [(256, 256, 256), (1, 1024, 1024), (8, 512, 256), (64, 64, 64)])
def test_tiled_cycles_below_scalesim_once_folds_overlap(dataflow, shape):
    m, k, n = shape
    ours = tiled_gemm_cycles(m, k, n, rows=8, cols=8, dataflow=dataflow)["cycles"]
    assert ours < scalesim_cycles(m, k, n, rows=8, cols=8, dataflow=dataflow)


def test_ksplit_accounting():
    ks = ksplit_accumulation(16, 1024, 16, rows=4, cols=4, dataflow=OS, max_k=64, acc_width=32)
    assert ks["chunks"] == 16
    assert ks["adds"] == 16 * 16 * 15 and ks["reads"] == ks["adds"]
    assert ks["buffer_words"] == 16 and ks["buffer_bits"] == 16 * 32
    assert ks["port_cycles"] == 16 * 16 * 16 // 4 and ks["extra_cycles"] == 1
    ws = ksplit_accumulation(256, 1024, 256, rows=8, cols=8, dataflow=WS)
    assert ws["chunks"] == 128 and ws["buffer_words"] == 256 * 8
    none = ksplit_accumulation(16, 64, 16, rows=4, cols=4, dataflow=OS, max_k=64)
    assert none["chunks"] == 1 and none["adds"] == 0 and none["extra_cycles"] == 0


def test_memory_model_traffic_and_bound():
    t = gemm_traffic(8, 64, 32, tile_m=4, tile_n=4)
    assert t == {"a_words": 8 * 64 * 8, "b_words": 64 * 32 * 2, "c_words": 8 * 32, "c_reads": 0}
    split = gemm_traffic(8, 64, 32, tile_m=4, tile_n=4, chunks=4)
    assert split["c_words"] == 4 * 8 * 32 and split["c_reads"] == 3 * 8 * 32
    mem = MemorySettings("narrow", a_words_per_cycle=4, b_words_per_cycle=1, c_words_per_cycle=4,
                         offchip_bytes_per_cycle=1e9)
    b = memory_bound(100, 8, 64, 32, tile_m=4, tile_n=4, memory=mem)
    assert b["bound"] == "b_port" and b["cycles"] == 64 * 32 * 2
    wide = MemorySettings("wide", 1 << 20, 1 << 20, 1 << 20, 1e9)
    assert memory_bound(100, 8, 64, 32, tile_m=4, tile_n=4, memory=wide)["bound"] == "compute"
    with pytest.raises(ValueError, match="a_words_per_cycle must be a positive number, not 0"):
        MemorySettings("bad", 0, 1, 1, 1)


def test_gemv_at_equal_bandwidth_has_no_flattened_gain():
    """M = 1 reads every weight once: at the same B port both arrays are B-port bound."""
    from software_model.flattened import flat_tiled_cycles, square_tiled_cycles
    mem = MemorySettings("64 words", 64, 64, 64, 1e9, b_capacity_bytes=1 << 30)
    sq = square_tiled_cycles(1, 4096, 4096, side=64, memory=mem)["memory"]
    fl = flat_tiled_cycles(1, 4096, 4096, blen=4, mlen=1024, memory=mem)["memory"]
    assert fl["bound"] == "b_port" and fl["cycles"] == 4096 * 4096 // 64
    assert sq["cycles"] <= fl["cycles"] * 1.01


def test_cli_cycles_json(capsys):
    from gen.cli import main
    from gen.config import REPO_ROOT
    assert main(["cycles", str(REPO_ROOT / "configs" / "systolic_os_4x4_int8.yaml"), "--m", "4",
                 "--k", "64", "--n", "4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["cycles"] == tiled_gemm_cycles(4, 64, 4, rows=4, cols=4, dataflow=OS,
                                                       max_k=64)["cycles"]
    assert out["scalesim_closed_form"]["cycles"] == scalesim_cycles(4, 64, 4, rows=4, cols=4,
                                                                    dataflow=OS)
    if available():
        assert out["scalesim"]["cycles"] == out["scalesim_closed_form"]["cycles"]
    else:
        assert out["scalesim"] is None
