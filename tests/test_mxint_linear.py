"""MXIntLinear: config rules and the bit-exact cocotb regression over every preset."""
import pytest

from cosim.runner import run_cosim
from cosim.runner import preset_configs
from gen.config import config_from_dict
from gen.schema import ConfigError

PRESETS = preset_configs("mxint_linear")


def test_presets_cover_widths_block_sizes_and_outputs():
    assert len(PRESETS) >= 4
    assert {4, 6, 8} <= {c.element_width for c in PRESETS}
    assert {8, 16, 32} <= {c.block_size for c in PRESETS}
    assert {"fp32", "mxint"} <= {c.output_format for c in PRESETS}
    # one FP32 preset whose exponent range reaches FP32 subnormals and overflow (Inf)
    assert any(c.output_format == "fp32" and c.acc_lsb_exponent < -149 + 24
               and 2 * c.fmt.emax + (c.block_size * c.k_blocks).bit_length() > 128
               for c in PRESETS)


def _reject(data):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "mxint_linear", **data}, source="t.yaml")
    return str(info.value)


def test_in_features_multiple_of_block_size():
    assert ("t.yaml: in_features: got 40; allowed: a multiple of block_size (32)"
            in _reject({"in_features": 40, "block_size": 32}))


def test_out_features_multiple_of_n_tile():
    assert ("t.yaml: out_features: got 10; allowed: a multiple of n_tile (4)"
            in _reject({"out_features": 10, "n_tile": 4}))


def test_accumulator_width_limit():
    msg = _reject({"exponent_width": 8, "element_width": 16, "in_features": 4096})
    assert "t.yaml: exponent_width: got 8; allowed: a smaller value: the exact accumulator" in msg
    assert "(limit 512)" in msg


def test_output_format_choices():
    assert "t.yaml: output_format: got 'bf16'; allowed: one of 'fp32', 'mxint'" in _reject(
        {"output_format": "bf16"})



@pytest.mark.cosim
@pytest.mark.parametrize("config", PRESETS, ids=lambda c: c.name)
def test_mxint_linear_cosim(config):
    result = run_cosim(config, "cosim.mxint_linear")
    assert result.tests["random_and_corner_tiles"]["checked"] >= 200
    assert result.records("full_throughput")["cycles_between_tiles"] == [config.k_blocks]
