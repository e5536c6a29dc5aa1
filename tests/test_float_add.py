"""FP16/BF16 adder: golden model vs exact rational arithmetic, RTL vs golden (Amaranth simulator
for the combinational adder and multiplier, Verilator/cocotb for the streamed adder)."""
import re
from fractions import Fraction

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from cosim.float_add import random_pairs
from cosim.pysim import run_streams
from gen.cosim_run import preset_configs, run_cosim
from gen.config import config_from_dict
from gen.schema import ConfigError
from hw.float_add import FloatAdderUnit, float_add, float_mul
from software_model import float16

FORMATS = ("fp16", "bf16")


# ------------------------------------------------------------------ exact reference (no ml_dtypes)

def _decode(bits, f):
    sign = -1 if bits >> (f.width - 1) else 1
    exponent = (bits >> f.mantissa_bits) & f.exponent_max
    fraction = bits & ((1 << f.mantissa_bits) - 1)
    if exponent == f.exponent_max:
        return None if fraction else sign * float("inf")
    if exponent == 0:
        return sign * Fraction(fraction, 1 << (f.mantissa_bits + f.bias - 1)), sign
    return sign * Fraction((1 << f.mantissa_bits) | fraction) * Fraction(2) ** (
        exponent - f.bias - f.mantissa_bits), sign


def _round_exact(value, zero_sign, f):
    """Correct RNE rounding of an exact rational to the format's bit pattern."""
    if value == 0:
        return (f.sign_mask if zero_sign < 0 else 0)
    sign = f.sign_mask if value < 0 else 0
    magnitude = abs(value)
    exponent = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if magnitude < Fraction(2) ** exponent:          # floor(log2(magnitude))
        exponent -= 1
    exponent = max(exponent, f.min_normal_exponent)
    quantum = Fraction(2) ** (exponent - f.mantissa_bits)
    units = magnitude / quantum
    whole = units.numerator // units.denominator
    remainder = units - whole
    if remainder > Fraction(1, 2) or (remainder == Fraction(1, 2) and whole % 2):
        whole += 1
    rounded = whole * quantum
    largest = (2 - Fraction(2) ** -f.mantissa_bits) * Fraction(2) ** (f.exponent_max - 1 - f.bias)
    if rounded > largest:
        return sign | f.positive_infinity
    if rounded < Fraction(2) ** f.min_normal_exponent:          # subnormal
        return sign | int(rounded / Fraction(2) ** (f.min_normal_exponent - f.mantissa_bits))
    e = exponent if rounded < Fraction(2) ** (exponent + 1) else exponent + 1
    fraction = int(rounded / Fraction(2) ** (e - f.mantissa_bits)) - (1 << f.mantissa_bits)
    return sign | ((e + f.bias) << f.mantissa_bits) | fraction


def _exact(a, b, f, op):
    da, db = _decode(a, f), _decode(b, f)
    if da is None or db is None:
        return f.canonical_nan
    inf_a, inf_b = isinstance(da, float), isinstance(db, float)
    if op == "add":
        if inf_a and inf_b:
            return f.canonical_nan if da != db else (a & f.sign_mask) | f.positive_infinity
        if inf_a or inf_b:
            return ((a if inf_a else b) & f.sign_mask) | f.positive_infinity
        zero_sign = -1 if (da[1] < 0 and db[1] < 0) else 1
        return _round_exact(da[0] + db[0], zero_sign, f)
    sign = (a ^ b) & f.sign_mask
    if inf_a or inf_b:
        other = db if inf_a else da
        if not isinstance(other, float) and other[0] == 0:
            return f.canonical_nan
        return sign | f.positive_infinity
    return _round_exact(da[0] * db[0], -1 if sign else 1, f)


def _pairs(fmt, count, seed):
    rng = np.random.default_rng(seed)
    specials = float16.special_values(fmt)
    a = np.concatenate([np.repeat(specials, specials.size), rng.integers(0, 1 << 16, count)])
    b = np.concatenate([np.tile(specials, specials.size), rng.integers(0, 1 << 16, count)])
    return a.astype(np.uint16), b.astype(np.uint16)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", ("add", "mul"))
def test_golden_matches_exact_rounding(fmt, op):
    """The float32/float64 + ml_dtypes shortcut equals exact rational arithmetic rounded once."""
    f = float16.FORMATS[fmt]
    a, b = _pairs(fmt, 2000, seed=11)
    got = (float16.add if op == "add" else float16.mul)(a, b, fmt)
    want = [_exact(int(x), int(y), f, op) for x, y in zip(a, b)]
    assert len(want) == a.size > 3000
    mismatches = [(hex(x), hex(y), hex(g), hex(w)) for x, y, g, w in zip(a, b, got, want)
                  if int(g) != w]
    assert mismatches == []


def test_golden_zero_signs_and_nan():
    one, minus_one = 0x3C00, 0xBC00
    assert float16.add(np.uint16(one), np.uint16(minus_one), "fp16") == 0x0000
    assert float16.add(np.uint16(0x8000), np.uint16(0x8000), "fp16") == 0x8000
    assert float16.add(np.uint16(0x7C00), np.uint16(0xFC00), "fp16") == 0x7E00
    assert float16.mul(np.uint16(0x0000), np.uint16(0x7C00), "fp16") == 0x7E00
    assert float16.add(np.uint16(0xFF81), np.uint16(one), "bf16") == 0x7FC0


# ------------------------------------------------------------------ RTL in the Amaranth simulator

@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", ("add", "mul"))
def test_combinational_rtl_matches_golden(fmt, op):
    """Specials x specials plus random pairs through float_add/float_mul (bit-exact)."""
    m = Module()
    a, b = Signal(16), Signal(16)
    result = (float_add if op == "add" else float_mul)(m, a, b, fmt)
    xs, ys = _pairs(fmt, 800, seed=5)
    want = (float16.add if op == "add" else float16.mul)(xs, ys, fmt)
    mismatches = []

    async def bench(ctx):
        for x, y, w in zip(xs, ys, want):
            ctx.set(a, int(x))
            ctx.set(b, int(y))
            got = ctx.get(result)
            if got != int(w):
                mismatches.append((hex(x), hex(y), hex(got), hex(w)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert xs.size > 2500
    assert mismatches == []


# ------------------------------------------------------------------ config and constructor checks

def test_float_add_config_wrong_format():
    with pytest.raises(ConfigError, match=r"format: got 'fp32'; allowed: one of 'fp16', 'bf16'"):
        config_from_dict({"kind": "float_add", "format": "fp32"})


def test_float_add_config_wrong_pipeline_stages():
    with pytest.raises(ConfigError, match=r"pipeline_stages: got 4; allowed: integer 0 .. 3"):
        config_from_dict({"kind": "float_add", "pipeline_stages": 4})


@pytest.mark.parametrize("change,message", [
    ({"format": "fp8"}, "Float format must be one of 'fp16', 'bf16', not 'fp8'"),
    ({"pipeline_stages": 4}, "Pipeline stages must be one of 0, 1, 2, 3, not 4"),
    ({"pipeline_stages": -1}, "Pipeline stages must be one of 0, 1, 2, 3, not -1"),
])
def test_float_adder_unit_rejects_bad_arguments(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        FloatAdderUnit(**{"format": "fp16", **change})


def test_float_adder_unit_takes_a_format_object():
    unit = FloatAdderUnit(format=float16.FORMATS["bf16"], pipeline_stages=1)
    assert (unit.format, unit.latency) == ("bf16", 3)
    assert repr(unit) == "FloatAdderUnit(format='bf16', pipeline_stages=1)"


def test_float_add_latency():
    assert config_from_dict({"kind": "float_add", "pipeline_stages": 1}).latency == 3
    assert config_from_dict({"kind": "float_add"}).latency == 5     # default: fully pipelined
    assert FloatAdderUnit(format="fp16").latency == 5


# ------------------------------------------------------------------ fast tier (amaranth.sim)

PROFILES = ("smooth", "backpressure", "bursty")


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("fmt,stages", [("fp16", 0), ("fp16", 1), ("fp16", 2), ("fp16", 3),
                                        ("bf16", 0), ("bf16", 1), ("bf16", 2), ("bf16", 3)])
def test_float_adder_unit_fast(fmt, stages, profile):
    """Special pairs (a stride through specials x specials, which the combinational test covers
    in full) and random pairs streamed through the unit, against the model."""
    cfg = config_from_dict({"kind": "float_add", "format": fmt, "pipeline_stages": stages})
    specials = float16.special_values(fmt)
    a = np.repeat(specials, specials.size)[::29]
    b = np.tile(specials, specials.size)[::29]
    ra, rb = random_pairs(np.random.default_rng(7), fmt, 48)
    a, b = np.concatenate([a, ra]), np.concatenate([b, rb])
    expected = [int(v) for v in float16.add(a, b, fmt)]
    run = run_streams(cfg.elaborate(), {"operands": [{"a": int(x), "b": int(y)}
                                                     for x, y in zip(a, b)]},
                      {"sums": len(expected)}, profile=profile, seed=5)
    assert len(run.outputs["sums"]) == len(expected) == 109
    assert run.outputs["sums"] == expected
    if profile == "smooth":     # no gaps or stalls: the stated latency, one sum per cycle
        ops, sums = run.cycles["operands"], run.cycles["sums"]
        assert sums[0] - ops[0] == cfg.latency == 2 + stages
        assert sums[-1] - sums[0] == len(expected) - 1


# ------------------------------------------------------------------ Verilator co-simulation

@pytest.mark.cosim
@pytest.mark.parametrize("config", preset_configs("float_add"), ids=lambda c: c.name)
def test_float_add_cosim(config):
    result = run_cosim(config, "cosim.float_add")
    specials = float16.special_values(config.format).size ** 2
    assert result.tests["special_classes"]["checked"] == specials
    assert result.tests["random_operands"]["checked"] >= 20000
    assert result.tests["full_throughput"]["checked"] == 258
    assert result.records("full_throughput")["latency"] == config.latency
