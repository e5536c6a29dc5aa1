"""MXIntCast: config rules and the bit-exact cocotb regression over every preset."""
import pytest

from cosim.runner import preset_configs
from cosim.runner import run_cosim
from gen.config import config_from_dict
from gen.schema import ConfigError

PRESETS = preset_configs("mxint_cast")


def test_presets_cover_widths_and_block_sizes():
    assert len(PRESETS) >= 4
    assert {4, 6, 8} <= {c.element_width for c in PRESETS}
    assert {8, 16, 32} <= {c.block_size for c in PRESETS}
    assert {"fp16", "bf16", "fp32"} <= {c.input_format for c in PRESETS}


@pytest.mark.parametrize("key,value,allowed", [
    ("input_format", "fp8", "one of 'fp16', 'bf16', 'fp32'"),
    ("element_width", 17, "integer 2 .. 16"),
    ("exponent_width", 1, "integer 2 .. 10"),
    ("rounding", "nearest", "one of 'half_even', 'half_away'"),
    ("exponent_encoding", "e8m0", "one of 'twos_complement', 'biased'"),
])
def test_config_rejects(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_cast", key: value}, source="t.yaml")
    assert f"t.yaml: {key}: got" in str(info.value) and allowed in str(info.value)



@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_cast_cosim(config):
    result = run_cosim(config, "cosim.mxint_cast")
    assert result.tests["random_and_corner_blocks"]["checked"] >= 200
    throughput = result.records("full_throughput")
    assert throughput["max_cycles_between_results"] == 1
    assert result.checked > 0
