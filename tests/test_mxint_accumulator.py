"""MXIntAccumulator: config rules and the bit-exact cocotb regression over every preset."""
import pytest

from cosim.runner import run_cosim
from cosim.runner import preset_configs
from gen.config import config_from_dict
from gen.schema import ConfigError

PRESETS = preset_configs("mxint_accumulator")


def test_presets_cover_both_modes_and_lane_counts():
    assert len(PRESETS) >= 4
    assert {"exact", "shift"} <= {c.mode for c in PRESETS}
    assert {1, 8, 16, 32} <= {c.lanes for c in PRESETS}


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_accumulator", **data}, source="t.yaml")
    return str(info.value)


def test_shift_mode_needs_acc_width():
    msg = _reject({"mode": "shift"})
    assert "t.yaml: acc_width: got null; allowed: an integer >= input_width (21)" in msg


def test_shift_mode_acc_width_at_least_input_width():
    msg = _reject({"mode": "shift", "input_width": 16, "acc_width": 12})
    assert "t.yaml: acc_width: got 12; allowed: an integer >= input_width (16)" in msg


def test_exact_mode_rejects_acc_width():
    msg = _reject({"mode": "exact", "acc_width": 32})
    assert "t.yaml: acc_width: got 32; allowed: null in exact mode" in msg


def test_exact_mode_width_limit():
    msg = _reject({"mode": "exact", "exponent_width": 9, "input_width": 64})
    assert "t.yaml: exponent_width: got 9; allowed: at most 8 here" in msg


def test_mode_choices():
    assert "t.yaml: mode: got 'round'; allowed: one of 'exact', 'shift'" in _reject(
        {"mode": "round"})



@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_accumulator_cosim(config):
    result = run_cosim(config, "cosim.mxint_accumulator")
    assert result.tests["random_and_corner_sums"]["checked"] >= 200
    assert result.records("one_term_per_cycle")["cycles_between_sums"] == [4]
