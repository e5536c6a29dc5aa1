"""hw/primitives.py: the single register (``register``, ``GlobalEnable.register``) and the
protocol text of a global-enable pipeline, checked in amaranth.sim; argument rejections."""

from __future__ import annotations

import random

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
