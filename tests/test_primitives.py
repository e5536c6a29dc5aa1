"""hw/primitives.py: the single register (``register``, ``GlobalEnable.register``), the wide
adds (``carry_select_add``, ``split_add``) and the
protocol text of a global-enable pipeline, checked in amaranth.sim; argument rejections."""

from __future__ import annotations

import random
import re

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import stream
from amaranth.sim import Simulator

from hw.primitives import (GlobalEnable, delay, global_enable_output, global_enable_ready,
                           global_enable_timing, register)


def _run(m, bench):
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("gated", [False, True])
def test_register_loads_one_cycle_later_only_when_enabled(gated):
    m = Module()
    value = Signal(signed(7))
    enable = Signal()
    reg = register(m, value, name="r", enable=enable if gated else None)
    assert reg.shape() == signed(7) and reg.name == "r" and reg.reset_less
    rng = random.Random(7)
    checked = []

    async def bench(ctx):
        held = 0
        for _ in range(200):
            x, en = rng.randrange(-64, 64), rng.random() < 0.5
            ctx.set(value, x)
            ctx.set(enable, en)
            await ctx.tick()
            if en or not gated:
                held = x
            assert ctx.get(reg) == held
            checked.append(held)

    _run(m, bench)
    assert len(checked) == 200


def test_register_control_resets():
    m = Module()
    reg = register(m, Signal(3), name="ctl", reset_less=False)
    assert not reg.reset_less


@pytest.mark.parametrize("name", ["", None, 3])
def test_register_rejects_bad_name(name):
    with pytest.raises(ValueError, match=r"^Register name must be a non-empty string, not "):
        register(Module(), Signal(2), name=name)


def test_delay_rejects_negative_cycles():
    with pytest.raises(ValueError, match=r"^Delay must be a non-negative integer, not -1$"):
        delay(Module(), Signal(2), -1, name="d")


@pytest.mark.parametrize("stages", [0, -1, 1.5, True])
def test_global_enable_rejects_bad_stages(stages):
    src = stream.Signature(4).create()
    snk = stream.Signature(4).flip().create()
    with pytest.raises(ValueError, match=r"^Stages must be a positive integer, not "):
        GlobalEnable(Module(), source=src, sink=snk, stages=stages)


def test_global_enable_register_holds_while_stalled():
    """Two stages built with ``GlobalEnable.register``: beats arrive in order under random input
    gaps and output stalls, none lost or repeated (a register that loaded while stalled would
    overwrite a held beat)."""
    m = Module()
    src = stream.Signature(8).flip().create(path=("src",))
    snk = stream.Signature(8).create(path=("snk",))
    ctl = GlobalEnable(m, source=src, sink=snk, stages=2, name="t")
    s1 = ctl.register(src.payload + 1, "s1")
    s2 = ctl.register(s1 * 1, "s2")
    m.d.comb += snk.payload.eq(s2[:8])
    rng = random.Random(3)
    sent = list(range(100))
    got = []

    async def bench(ctx):
        pending = list(sent)
        for _ in range(1000):
            offer = bool(pending) and rng.random() < 0.7
            ctx.set(src.valid, offer)
            if offer:
                ctx.set(src.payload, pending[0])
            ready = rng.random() < 0.4
            ctx.set(snk.ready, ready)
            taken = offer and ctx.get(src.ready)
            out = ctx.get(snk.valid) and ready
            value = ctx.get(snk.payload)
            await ctx.tick()
            if taken:
                pending.pop(0)
            if out:
                got.append(value)
            if len(got) == len(sent):
                break

    _run(m, bench)
    assert got == [(x + 1) & 0xff for x in sent]


def test_global_enable_protocol_text():
    assert "~results.valid | results.ready" in global_enable_ready("operands", "results")
    assert global_enable_output("blocks") == {
        "order": "one beat per blocks beat, in order",
        "backpressure": "holds the whole pipeline; nothing is dropped"}
    assert global_enable_timing(5, taken="a block", offered="its result", unit="block") == {
        "buffers": "none besides the 5 pipeline registers",
        "latency": "5 cycles from a block taken to its result offered; one block per cycle"}


@pytest.mark.parametrize("spacing", [1, 3])
@pytest.mark.parametrize("caller_drives", [False, True])
def test_job_admission_holds_last_beats(spacing, caller_drives):
    """Against a model: a beat without last is always ready; a last beat only with room and
    ``spacing`` cycles since the previous last beat; ``in_job`` after a first beat."""
    from amaranth.lib import data

    from hw.primitives import JobAdmission
    m = Module()
    ops = stream.Signature(data.StructLayout({"x": 4, "last": 1})).flip().create(path=("ops",))
    room = Signal()
    jobs = JobAdmission(m, ops, spacing=spacing,
                        last_ok=None if caller_drives else (lambda spaced: room & spaced))
    if caller_drives:
        m.d.comb += jobs.last_ok.eq(room & jobs.spaced)
    rng = random.Random(spacing)
    checked = []

    async def bench(ctx):
        since, in_job = spacing, False
        for _ in range(400):
            valid, last, r = rng.random() < 0.8, rng.random() < 0.4, rng.random() < 0.6
            ctx.set(ops.valid, valid)
            ctx.set(ops.payload.last, last)
            ctx.set(room, r)
            ready = (not last) or (r and since >= spacing)
            assert ctx.get(ops.ready) == ready
            assert ctx.get(jobs.in_job) == in_job
            fire = valid and ready
            assert ctx.get(jobs.fire_last) == (fire and last)
            await ctx.tick()
            if fire and last:
                since = 1
            elif since < spacing:
                since += 1
            if fire:
                in_job = not last
            checked.append(fire)

    _run(m, bench)
    assert len(checked) == 400 and any(checked)


@pytest.mark.parametrize("spacing", [0, -2, 2.0, None])
def test_job_admission_rejects_bad_spacing(spacing):
    from hw.primitives import JobAdmission
    ops = stream.Signature(1).flip().create()
    with pytest.raises(ValueError, match=r"^Spacing must be a positive integer, not "):
        JobAdmission(Module(), ops, spacing=spacing)


@pytest.mark.parametrize("a_shape,b_shape", [
    (signed(4), signed(4)), (unsigned(4), unsigned(3)), (signed(3), unsigned(4)),
    (signed(41), signed(44)), (unsigned(1), signed(2)),
])
def test_carry_select_add_is_the_exact_sum(a_shape, b_shape):
    """Every pair of small operands, seeded random pairs of wide ones (their extremes
    included): the carry-select adder equals a + b, in a shape that holds it."""
    from amaranth import Shape

    from hw.primitives import carry_select_add
    a, b = Signal(a_shape), Signal(b_shape)
    m = Module()
    out = carry_select_add(m, a, b, name="t")

    def values(shape):
        shape = Shape.cast(shape)
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
        if shape.width <= 4:
            return list(range(lo, hi + 1))
        rng = random.Random(shape.width)
        return [lo, hi, 0, -1 if shape.signed else 1] + [rng.randint(lo, hi) for _ in range(60)]

    pairs = [(x, y) for x in values(a_shape) for y in values(b_shape)]
    checked = []
    sim = Simulator(m)

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            checked.append((ctx.get(out), x + y))

    sim.add_testbench(bench)
    sim.run()
    assert len(checked) == len(pairs) > 0
    assert all(got == want for got, want in checked), \
        next((g, w) for g, w in checked if g != w)


@pytest.mark.parametrize("width, cut", [(1 + 1, 1), (4, 1), (4, 2), (4, 3), (5, 3), (44, 22),
                                        (50, 37)])
def test_split_add_is_the_exact_sum_a_cycle_later_under_its_enable(width, cut):
    """Every pair of small operands, seeded random pairs of wide ones (extremes included), fed
    one per cycle with the enable dropped at random: the value split_add returns equals, a cycle
    after the last enabled beat, the exact a + b of that beat (held while the enable is low)."""
    from hw.primitives import split_add
    a, b, enable = Signal(signed(width)), Signal(signed(width)), Signal()
    m = Module()
    with m.If(enable):
        out = split_add(m, a, b, cut, names=("lo", "ha", "hb"))
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    if width <= 5:
        pairs = [(x, y) for x in range(lo, hi + 1) for y in range(lo, hi + 1)]
    else:
        rng = random.Random(width * 100 + cut)
        edges = [lo, hi, 0, -1]
        pairs = [(x, y) for x in edges for y in edges] + \
            [(rng.randint(lo, hi), rng.randint(lo, hi)) for _ in range(200)]
    rng = random.Random(cut)
    checked = []

    async def bench(ctx):
        want = None
        for x, y in pairs:
            while True:
                gate = rng.random() < 0.7
                ctx.set(a, x)
                ctx.set(b, y)
                ctx.set(enable, gate)
                await ctx.tick()
                if want is not None or gate:
                    want = x + y if gate else want
                    checked.append((ctx.get(out), want))
                if gate:
                    break

    _run(m, bench)
    assert len(out) == width + 2 and out.shape().signed
    assert len(checked) >= len(pairs) > 0
    assert all(got == w for got, w in checked), next((g, w) for g, w in checked if g != w)


@pytest.mark.parametrize("a_shape, b_shape, cut, message", [
    (signed(8), signed(9), 4, "two signed operands of one width"),
    (unsigned(8), unsigned(8), 4, "two signed operands of one width"),
    (signed(8), signed(8), 0, "Cut must be an integer in 1..7, not 0"),
    (signed(8), signed(8), 8, "Cut must be an integer in 1..7, not 8"),
    (signed(8), signed(8), 2.5, "Cut must be an integer in 1..7, not 2.5"),
])
def test_split_add_rejects_bad_arguments(a_shape, b_shape, cut, message):
    from hw.primitives import split_add
    with pytest.raises(ValueError, match=re.escape(message)):
        split_add(Module(), Signal(a_shape), Signal(b_shape), cut, names=("l", "a", "b"))
