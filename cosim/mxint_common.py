"""Stimulus helpers shared by the MXInt testbenches (random floats in FP16/BF16/FP32 bit
patterns, MXInt operands, corner cases) and the throughput check."""
import dataclasses
from collections.abc import Mapping

import ml_dtypes
import numpy as np

from software_model.mxint import INPUT_FORMATS, MXIntFormat, encode_exponent

__all__ = ["float_bits", "random_float_block", "corner_float_blocks", "random_mantissas",
           "random_exponent_codes", "exponent_field", "block_payload", "expected_block",
           "check_one_per_cycle", "mxint_format", "with_formats", "spec_from"]


_FORMAT_FIELDS = frozenset(f.name for f in dataclasses.fields(MXIntFormat))


def mxint_format(data: Mapping) -> MXIntFormat:
    """An MXInt format from its plain data in manifest.json (a mapping of its fields)."""
    return MXIntFormat(**{k: data[k] for k in _FORMAT_FIELDS})


def with_formats(parameters: Mapping) -> dict:
    """The manifest's component parameters with every MXInt format mapping turned back into an
    :class:`MXIntFormat`: keyword arguments for the hw component and its golden model."""
    return {k: mxint_format(v) if isinstance(v, Mapping) and set(v) == _FORMAT_FIELDS else v
            for k, v in parameters.items()}


def spec_from(spec_class, kwargs: dict, **formats):
    """A golden model's spec dataclass (``SoftmaxSpec``, ...) from component keyword arguments:
    the spec's formats given by name, its other fields taken from ``kwargs``."""
    names = {f.name for f in dataclasses.fields(spec_class)} - set(formats)
    return spec_class(**formats, **{k: kwargs[k] for k in names if k in kwargs})


def float_bits(values, input_format):
    """float64 values -> raw bit patterns of ``input_format`` (round to nearest even)."""
    v = np.asarray(values, np.float64)
    if input_format == "fp16":
        with np.errstate(over="ignore"):
            return v.astype(np.float16).view(np.uint16).astype(np.int64)
    if input_format == "bf16":
        return v.astype(np.float32).astype(ml_dtypes.bfloat16).view(np.uint16).astype(np.int64)
    with np.errstate(over="ignore"):
        return v.astype(np.float32).view(np.uint32).astype(np.int64)


def _exponent_range(input_format):
    exp_bits, frac_bits, _ = INPUT_FORMATS[input_format]
    bias = (1 << (exp_bits - 1)) - 1
    return 1 - bias - frac_bits, bias        # smallest subnormal, largest normal exponent


def random_float_block(rng, k, input_format):
    """One block from a mix of distributions that together reach every code path."""
    _, frac_bits, width = INPUT_FORMATS[input_format]
    lo, hi = _exponent_range(input_format)
    kind = rng.integers(6)
    if kind == 0:       # any bit pattern: NaN, Inf, subnormals, huge and tiny all appear
        return rng.integers(0, 1 << width, size=k)
    if kind == 1:       # Gaussian block at a random scale (the common case)
        scale = 2.0 ** rng.integers(lo, hi)
        return float_bits(rng.normal(size=k) * scale, input_format)
    if kind == 2:       # wide dynamic range inside one block: most elements round to 0
        exps = rng.integers(lo, hi + 1, size=k)
        return float_bits(np.ldexp(rng.uniform(1, 2, size=k), exps)
                          * rng.choice([-1, 1], size=k), input_format)
    if kind == 3:       # subnormals only
        return rng.integers(0, 1 << frac_bits, size=k) | (rng.integers(0, 2, size=k)
                                                          << (width - 1))
    if kind == 4:       # a few distinct magnitudes: many exact ties once aligned
        base = 2.0 ** rng.integers(-8, 8)
        return float_bits(rng.integers(-64, 65, size=k) * base / 16, input_format)
    # near-saturation: the largest element's mantissa is all ones, sometimes negative
    e = rng.integers(-20, 15)
    vals = rng.normal(size=k) * 2.0 ** (e - 2)
    vals[rng.integers(k)] = (2 - 2.0 ** -frac_bits) * 2.0 ** e * rng.choice([-1, 1])
    return float_bits(vals, input_format)


def corner_float_blocks(k, input_format):
    """Blocks every cast regression sends: zeros, extremes, NaN/Inf, single subnormal, ties."""
    exp_bits, frac_bits, width = INPUT_FORMATS[input_format]
    sign = 1 << (width - 1)
    inf = ((1 << exp_bits) - 1) << frac_bits
    max_finite = inf - 1
    out = [
        np.zeros(k, np.int64),                                  # all +0
        np.full(k, sign, np.int64),                             # all -0
        np.full(k, max_finite, np.int64),                       # largest finite
        np.full(k, max_finite | sign, np.int64),
        np.full(k, 1, np.int64),                                # smallest subnormal
        np.full(k, inf, np.int64),                              # +Inf everywhere
        np.full(k, inf | 1, np.int64),                          # NaN everywhere -> all zero
        np.array([inf | sign] + [1 << frac_bits] * (k - 1), np.int64),   # -Inf with 2^-bias
        np.array([inf | 1 << (frac_bits - 1)] + [max_finite] * (k - 1), np.int64),
        np.array([1] + [0] * (k - 1), np.int64),                # one subnormal, rest zero
        float_bits(np.arange(k) * 0.5 - k / 4, input_format),   # ramp of halves: ties
        float_bits(np.resize([1.0, -1.0, 3.0, -1.5, 0.75, 2.0 ** -14], k), input_format),
    ]
    return [b.astype(np.int64) for b in out]


def random_exponent_codes(rng, fmt, size):
    """Field codes: uniform, with the extremes of the range over-represented."""
    codes = rng.integers(0, 1 << fmt.exponent_width, size=size)
    ends = encode_exponent(np.array([fmt.emin, fmt.emax]), fmt)
    pick = rng.random(size=size) < 0.2
    return np.where(pick, rng.choice(ends, size=size), codes)


def random_mantissas(rng, width, size):
    """Signed ``width``-bit values, extremes (incl. -2^(w-1)) and zeros over-represented."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    v = rng.integers(lo, hi + 1, size=size)
    special = rng.choice([lo, hi, 0, -hi, 1, -1], size=size)
    return np.where(rng.random(size=size) < 0.15, special, v)


def exponent_field(fmt, code):
    """Exponent field code -> the int a payload holds (signed for two's complement fields,
    as unpack() returns and pack() takes them)."""
    code = int(code)
    if fmt.exponent_encoding == "twos_complement" and code >> (fmt.exponent_width - 1):
        code -= 1 << fmt.exponent_width
    return code


def block_payload(fmt, code, mantissas):
    """An MXInt block payload from its exponent code and mantissas."""
    return {"exponent": exponent_field(fmt, code), "mantissas": [int(x) for x in mantissas]}


def expected_block(e, m, fmt):
    """Golden (decoded exponent, mantissas) -> the payload dict the DUT emits."""
    return block_payload(fmt, encode_exponent(e, fmt), m)


def check_one_per_cycle(tb, sink, n):
    """With no gaps and no backpressure the last n results must arrive on consecutive cycles."""
    beats = sink.beat_cycles[-n:]
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    per_cycle = len(gaps) > 0 and all(g == 1 for g in gaps)
    tb.record("back_to_back_results", len(beats))
    tb.record("max_cycles_between_results", max(gaps) if gaps else None)
    tb.scoreboard.check(True, per_cycle, f"one result per cycle over {len(beats)} results "
                                         f"(gaps {sorted(set(gaps))})")
