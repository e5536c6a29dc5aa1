"""MXIntDotProduct: config rules and the bit-exact cocotb regression over every preset."""
import pytest

from cosim.runner import preset_configs
from cosim.runner import run_cosim
from gen.config import config_from_dict
from gen.schema import ConfigError

PRESETS = preset_configs("mxint_dot")


def test_presets_cover_widths_and_block_sizes():
    assert len(PRESETS) >= 4
    assert {4, 6, 8} <= {c.element_width for c in PRESETS}
    assert {8, 16, 32} <= {c.block_size for c in PRESETS}
    assert {"twos_complement", "biased"} <= {c.exponent_encoding for c in PRESETS}


def test_result_widths_hold_the_extremes():
    # (-2^(w-1))^2 * k is the largest magnitude; both exponent extremes must fit the result field
    for c in PRESETS:
        f = c.fmt
        worst = (1 << (2 * f.element_width - 2)) * f.block_size
        assert worst <= (1 << (c.total_width - 1)) - 1
        assert -(1 << (c.result_exponent_width - 1)) <= 2 * f.emin
        assert 2 * f.emax <= (1 << (c.result_exponent_width - 1)) - 1


@pytest.mark.parametrize("key,value,allowed", [
    ("block_size", 0, "integer 1 .. 64"),
    ("element_width", 17, "integer 2 .. 16"),
    ("exponent_width", 1, "integer 2 .. 10"),
    ("rounding", "nearest", "one of 'half_even', 'half_away'"),
    ("exponent_encoding", "e8m0", "one of 'twos_complement', 'biased'"),
])
def test_config_rejects(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_dot", key: value}, source="t.yaml")
    assert f"t.yaml: {key}: got" in str(info.value) and allowed in str(info.value)



@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_dot_cosim(config):
    result = run_cosim(config, "cosim.mxint_dot")
    assert result.tests["random_and_corner_blocks"]["checked"] >= 200
    throughput = result.records("full_throughput")
    assert throughput["max_cycles_between_results"] == 1
    assert result.checked > 0
