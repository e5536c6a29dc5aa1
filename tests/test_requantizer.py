"""Requantizer (hw/requantizer.py) against software_model.accelerator.convert_fixed: every class
type and width, extreme values and shifts, under traffic profiles."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from cosim.pysim import run_streams
from hw.requantizer import Requantizer
from software_model.accelerator import AcceleratorParams, TensorFormat, convert_fixed

FORMATS = (TensorFormat("mxint", 8), TensorFormat("mxint", 4), TensorFormat("int", 6))


class _Fixed(wiring.Component):
    """The requantizer with its instruction inputs tied to constants."""

    def __init__(self, unit, cls, exp):
        self.unit, self.cls, self.exp = unit, cls, exp
        super().__init__({"values": In(stream.Signature(unit.in_layout)),
                          "words": Out(stream.Signature(unit.word))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        wiring.connect(m, wiring.flipped(self.values), self.unit.values)
        wiring.connect(m, self.unit.words, wiring.flipped(self.words))
        m.d.comb += [self.unit.cls.eq(self.cls), self.unit.exp.eq(self.exp)]
        return m


def _unit(p, value_width=30, lsb_width=9):
    return Requantizer(block_size=p.block_size, value_width=value_width, lsb_width=lsb_width,
                       exponent_width=p.exponent_width, element_width=p.element_bits,
                       class_widths=tuple(f.element_width for f in p.formats),
                       class_types=tuple(f.type for f in p.formats))


def _blocks(rng, n, k, width, lsb_range):
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    vals = []
    for i in range(n):
        style = i % 5
        if style == 0:
            v = rng.integers(lo, hi + 1, k)
        elif style == 1:
            v = rng.choice([lo, hi, -1, 0, 1], k)
        elif style == 2:
            v = np.zeros(k, int)
        elif style == 3:
            v = rng.integers(-4, 5, k)
        else:
            v = rng.integers(lo, hi + 1, k) >> int(rng.integers(0, width))
        vals.append(v)
    lsbs = rng.integers(lsb_range[0], lsb_range[1] + 1, n)
    return np.array(vals, np.int64), lsbs


@pytest.mark.parametrize("cls", [0, 1, 2])
@pytest.mark.parametrize("profile", ["smooth", "bursty", "backpressure"])
def test_matches_convert_fixed(cls, profile):
    p = AcceleratorParams(block_size=8, exponent_width=4, formats=FORMATS)
    rng = np.random.default_rng([cls, len(profile)])
    vals, lsbs = _blocks(rng, 60, 8, 30, (-40, 20))
    exp = 3 if p.is_int(cls) else 0
    unit = _unit(p)
    beats = [{"values": [int(x) for x in v], "lsb": int(l)} for v, l in zip(vals, lsbs)]
    run = run_streams(_Fixed(unit, cls, exp), {"values": beats}, {"words": len(beats)},
                      profile=profile, seed=2)
    for n, (got, v, l) in enumerate(zip(run.outputs["words"], vals, lsbs)):
        e, mans = convert_fixed(v[None, :], int(l), p, cls, exp)
        assert got == {"mantissas": [int(x) for x in mans[0]], "exponent": int(e[0])}, \
            (n, v.tolist(), int(l))


def test_int_class_exponents_at_the_field_ends():
    p = AcceleratorParams(block_size=8, exponent_width=4, formats=FORMATS)
    rng = np.random.default_rng(9)
    for exp in (p.emin, p.emax, 0):
        vals, lsbs = _blocks(rng, 25, 8, 30, (-30, 10))
        unit = _unit(p)
        beats = [{"values": [int(x) for x in v], "lsb": int(l)} for v, l in zip(vals, lsbs)]
        run = run_streams(_Fixed(unit, 2, exp), {"values": beats}, {"words": len(beats)})
        for got, v, l in zip(run.outputs["words"], vals, lsbs):
            e, mans = convert_fixed(v[None, :], int(l), p, 2, exp)
            assert got["mantissas"] == [int(x) for x in mans[0]] and got["exponent"] == exp


@pytest.mark.parametrize("kw,message", [
    (dict(block_size=0), "Block size must be a positive integer, not 0"),
    (dict(value_width=65), "Value width must be at most 64, not 65"),
    (dict(lsb_width=1), "LSB width must be an integer >= 2, not 1"),
    (dict(exponent_width=1), "Exponent width must be an integer >= 2, not 1"),
    (dict(class_widths=(8, 4)), "Class widths must be a tuple of 3 integers from 2 to 16"),
    (dict(class_types=("mxint", "int", "fp")), "Class types must be a tuple of 3 of"),
    (dict(element_width=6), r"Element width must be the widest class \(8\), not 6"),
])
def test_rejects_bad_arguments(kw, message):
    params = dict(block_size=8, value_width=30, lsb_width=9, exponent_width=4, element_width=8,
                  class_widths=(8, 4, 6), class_types=("mxint", "mxint", "int"))
    params.update(kw)
    with pytest.raises(ValueError, match=message):
        Requantizer(**params)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 11])
def test_leading_one_tree_exhaustive(width):
    from amaranth import Module, Signal
    from amaranth.sim import Simulator

    from hw.requantizer import leading_one_tree
    m = Module()
    value = Signal(width)
    out = leading_one_tree(m, value, "top")
    seen = []

    async def bench(ctx):
        for x in range(1 << width):
            ctx.set(value, x)
            seen.append((ctx.get(out), max(x.bit_length() - 1, 0)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert len(seen) == 1 << width and all(g == w for g, w in seen)
