"""RTL primitives every accelgen block is built from, written once.

* :class:`PipelineStage`: one register slice of a stream (``ready`` looks only at the output
  register, so a chain of stages is fully pipelined and never combinationally long).
* :class:`GlobalEnable`: the control of a fixed-depth pipeline that advances as a whole whenever its
  output register is free (``advance = ~valid | ready``): the valid bit of every stage, the input's
  ``ready``. Cheaper than a :class:`PipelineStage` per stage when the datapath is wide.
* :func:`register`, :func:`delay`: one register, a line of registers (skew and deskew of
  systolic arrays, control that rides beside a datapath).
* :class:`CreditBuffer`: an output FIFO whose free rows are handed out as credits, so a datapath
  that cannot stall (a systolic array) only admits work whose results are sure to fit.
* :class:`JobAdmission`: a job's last beat held until its results have room and the previous
  job's last beat is far enough behind (the arrays that cannot stall).
* :func:`adder_tree`: pairwise sum in a fixed order, optionally one register per level.
* :func:`carry_select_add`, :func:`split_add`: a wide add at about half its ripple depth, in one
  stage or over two.
* :func:`max_tree`, :func:`leading_one`.
* :func:`global_enable_protocol` (from :func:`global_enable_ready`, :func:`global_enable_output`,
  :func:`global_enable_timing`): the manifest's protocol of a :class:`GlobalEnable` pipeline,
  worded once.

The golden models define the order of additions; :func:`adder_tree`'s order is
:func:`software_model.ternary.pairwise_sum_order` (adjacent pairs per level, an odd last term
passes through), which matters whenever an addition rounds, wraps or saturates.
"""

from __future__ import annotations

from typing import Callable, Sequence

from amaranth import Cat, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

__all__ = ["PipelineStage", "GlobalEnable", "CreditBuffer", "register", "delay", "adder_tree",
           "max_tree", "leading_one", "tree_depth", "check_positive", "check_flag", "check_choice",
           "parameter_repr", "global_enable_ready", "global_enable_output",
           "global_enable_timing", "global_enable_protocol", "JobAdmission",
           "carry_select_add", "split_add"]


def check_positive(name: str, value, *, minimum: int = 1) -> int:
    """Constructor argument check in the amaranth style: an integer >= ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, not {value!r}")
    return value


def parameter_repr(component, *names: str) -> str:
    """``Name(a=1, b='x')`` from the component's attributes; safe to call on a component whose
    constructor raised (amaranth reprs an unused elaboratable when it is collected)."""
    shown = ", ".join(f"{n}={getattr(component, n, '?')!r}" for n in names)
    return f"{type(component).__name__}({shown})"


def check_flag(name: str, value) -> bool:
    """Constructor argument check for a switch: exactly True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def check_choice(name: str, value, choices: Sequence) -> object:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, "
                         f"not {value!r}")
    return value


class PipelineStage(wiring.Component):
    """One register slice: ``i`` in, ``o`` out one cycle later.

    ``i.ready`` is ``~o.valid | o.ready``: the stage takes a beat when its register is empty or is
    being emptied. The payload register has no reset (it is meaningless while ``o.valid`` is low).
    """

    def __init__(self, layout):
        self._layout = layout
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        payload = Signal(self._layout, reset_less=True)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), payload.eq(self.i.payload)]
        m.d.comb += self.o.payload.eq(payload)
        return m


class GlobalEnable:
    """Control of a ``stages``-deep pipeline from ``source`` (an input stream) to ``sink`` (an
    output stream) whose registers all load when ``advance`` is high.

    ``advance = ~sink.valid | sink.ready``: the pipeline moves whenever its last register is empty
    or being read, so it holds one beat per stage at full rate and stalls as a whole under
    backpressure. ``valid[0]`` is the input's valid, ``valid[n]`` the valid bit of stage n's
    registers (reset to 0); ``sink.valid`` is ``valid[stages]``. The datapath registers of stage n
    load ``with m.If(ctl.advance)``, as :meth:`register` makes them.
    """

    def __init__(self, m: Module, *, source, sink, stages: int, name: str = "stage"):
        check_positive("Stages", stages)
        self._m = m
        self.stages = stages
        self.advance = Signal(name=f"{name}_advance")
        m.d.comb += [self.advance.eq(~sink.valid | sink.ready), source.ready.eq(self.advance)]
        self.valid = [source.valid]
        for n in range(stages):
            reg = Signal(name=f"{name}{n + 1}_valid")
            with m.If(self.advance):
                m.d.sync += reg.eq(self.valid[-1])
            self.valid.append(reg)
        m.d.comb += sink.valid.eq(self.valid[-1])

    def register(self, value, name: str) -> Signal:
        """A datapath register of this pipeline: ``value`` loaded whenever the pipeline advances
        (``reset_less``: its content only matters while the valid bit beside it is set)."""
        return register(self._m, value, name=name, enable=self.advance)

    @property
    def take(self) -> Value:
        """High in a cycle the input beat is taken."""
        return self.valid[0] & self.advance


def register(m: Module, value, *, name: str, enable: Value | None = None,
             reset_less: bool = True) -> Signal:
    """One register of ``value``'s shape named ``name``, loading every cycle or, if given, only
    while ``enable``. Data registers are ``reset_less``; pass ``reset_less=False`` for control."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"Register name must be a non-empty string, not {name!r}")
    value = Value.cast(value)
    reg = Signal(value.shape(), name=name, reset_less=reset_less)
    _load(m, reg, value, enable)
    return reg


def delay(m: Module, value, cycles: int, *, name: str, reset_less: bool = True,
          enable: Value | None = None):
    """``value`` delayed by ``cycles`` registers (loading only when ``enable``, if given).

    Data lines are ``reset_less``; a valid bit travelling beside them passes ``reset_less=False``
    so nothing is seen valid after reset.
    """
    if not isinstance(cycles, int) or cycles < 0:
        raise ValueError(f"Delay must be a non-negative integer, not {cycles!r}")
    for n in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{n}", reset_less=reset_less)
        _load(m, reg, value, enable)
        value = reg
    return value


def _load(m: Module, reg: Signal, value, enable: Value | None):
    """``reg <= value`` every cycle, or only while ``enable`` when one is given."""
    if enable is None:
        m.d.sync += reg.eq(value)
    else:
        with m.If(enable):
            m.d.sync += reg.eq(value)


class CreditBuffer(wiring.Component):
    """Output FIFO of ``depth`` rows plus the credit counter that keeps it from overflowing.

    A producer that cannot stall drives ``reserve`` with the rows a piece of work will write, in
    the cycle it admits that work, and admits it only while ``credits`` covers it; rows then
    arrive on ``write`` whenever they are ready (``write.ready`` is never needed). A credit comes
    back in the cycle after a row leaves on ``read``.

    The FIFO is a plain :class:`~amaranth.lib.fifo.SyncFIFO`: it accepts a write whenever fewer
    than ``depth`` rows are held, exactly what the credits count. ``SyncFIFOBuffered`` does not (at
    depth 2 it refuses the write in the cycle after one lands in an empty queue, while the row
    moves to its output register) and rows were lost.
    """

    def __init__(self, *, layout, depth: int):
        check_positive("Depth", depth)
        self.depth = depth
        self._width = Shape.cast(layout).width
        super().__init__({
            "write": In(stream.Signature(layout)),
            "read": Out(stream.Signature(layout)),
            "reserve": In(range(depth + 1)),
            "credits": Out(range(depth + 1), init=depth),
        })

    def elaborate(self, platform):
        m = Module()
        fifo = m.submodules.fifo = SyncFIFO(width=self._width, depth=self.depth)
        wiring.connect(m, wiring.flipped(self.write), fifo.w_stream)
        wiring.connect(m, fifo.r_stream, wiring.flipped(self.read))
        popped = self.read.valid & self.read.ready
        m.d.sync += self.credits.eq(self.credits - self.reserve + popped)
        return m


class JobAdmission:
    """Admission of jobs from a stream ``ops`` whose payload has ``last`` (1 on a job's final
    beat): beats without ``last`` are always taken; a last beat only while ``last_ok``.

    ``last_ok(spaced)`` gives the condition (room for the job's results, typically, and
    ``spaced``: ``spacing`` cycles have passed since the previous job's last beat); with
    ``last_ok=None`` the caller drives the signal :attr:`last_ok` itself (:attr:`spaced` is the
    same condition). ``since_last`` counts the cycles since the previous job's last beat
    (saturating at ``spacing``, its reset value). ``in_job`` is high between a job's first and
    last beats. ``fire``/``fire_last``: a beat, a last beat taken this cycle.
    """

    def __init__(self, m: Module, ops, *, spacing: int, last_ok: Callable | None = None):
        check_positive("Spacing", spacing)
        since_last = Signal(range(spacing + 1), init=spacing)
        in_job = Signal()
        self.last_ok = Signal(name="last_ok")
        self.since_last, self.in_job, self.spacing = since_last, in_job, spacing
        ready = ops.ready.eq(~ops.payload.last | self.last_ok)
        m.d.comb += [ready] if last_ok is None else [self.last_ok.eq(last_ok(self.spaced)), ready]
        self.fire = fire = ops.valid & ops.ready
        self.fire_last = fire_last = fire & ops.payload.last
        with m.If(fire_last):
            m.d.sync += since_last.eq(1)
        with m.Elif(since_last < spacing):
            m.d.sync += since_last.eq(since_last + 1)
        with m.If(fire):
            m.d.sync += in_job.eq(~ops.payload.last)

    @property
    def spaced(self) -> Value:
        return self.since_last >= self.spacing


def carry_select_add(m: Module, a, b, *, name: str = "csel") -> Value:
    """``a + b``, exact (one bit wider than the wider operand, signed if either is), as a
    carry-select adder: the low half's sum beside both sums of the high half (carry in 0 and 1),
    the low half's carry choosing one. Same result as ``a + b``, about half its ripple depth:
    a 41-bit add measured 43 gate levels as one ripple (the PLENA-like matrix unit's tree)."""
    a, b = Value.cast(a), Value.cast(b)
    is_signed = a.shape().signed or b.shape().signed
    width = max(len(a) + (is_signed and not a.shape().signed),
                len(b) + (is_signed and not b.shape().signed)) + 1
    shape = signed(width) if is_signed else unsigned(width)
    ax = Signal(shape, name=f"{name}_a")
    bx = Signal(shape, name=f"{name}_b")
    m.d.comb += [ax.eq(a), bx.eq(b)]
    half = width // 2
    low = Signal(half + 1, name=f"{name}_low")
    high0 = Signal(width - half, name=f"{name}_high0")
    high1 = Signal(width - half, name=f"{name}_high1")
    out = Signal(shape, name=f"{name}_sum")
    m.d.comb += [low.eq(ax[:half] + bx[:half]), high0.eq(ax[half:] + bx[half:]),
                 high1.eq(ax[half:] + bx[half:] + 1),
                 out.eq(Cat(low[:half], Mux(low[half], high1, high0)))]
    return out


def split_add(m: Module, a, b, cut: int, *, names: tuple[str, str, str]) -> Value:
    """``a + b`` of two signed operands of one width over two register stages, for an add whose
    carry chain is too deep for one: this call registers, in ``m.d.sync`` (so under whatever
    ``m.If`` encloses it), the low ``cut`` bits' sum with its carry out and both operands' high
    parts; the value returned adds the high parts and that carry, a cycle later. Exact: the
    full signed sum, in a shape two bits wider than the operands (one more than it needs).
    ``names`` are the three registers' names (low limb, ``a``'s high part, ``b``'s high
    part). :func:`hw.mxint_fixed.carry_propagate` is the same cut for ``Pipeline`` datapaths,
    in any number of limbs."""
    a, b = Value.cast(a), Value.cast(b)
    if len(a) != len(b) or not (a.shape().signed and b.shape().signed):
        raise ValueError(f"split_add adds two signed operands of one width, not {a.shape()} "
                         f"and {b.shape()}")
    if not isinstance(cut, int) or not 0 < cut < len(a):
        raise ValueError(f"Cut must be an integer in 1..{len(a) - 1}, not {cut!r}")
    low_name, high_a_name, high_b_name = names
    low = Signal(cut + 1, name=low_name, reset_less=True)
    high_a = Signal(signed(len(a) - cut), name=high_a_name, reset_less=True)
    high_b = Signal(signed(len(b) - cut), name=high_b_name, reset_less=True)
    m.d.sync += [low.eq(a[:cut] + b[:cut]), high_a.eq(a[cut:].as_signed()),
                 high_b.eq(b[cut:].as_signed())]
    return Cat(low[:cut], high_a + high_b + low[cut]).as_signed()


def tree_depth(count: int) -> int:
    """Levels of a pairwise tree over ``count`` terms."""
    return max(0, (count - 1).bit_length())


def adder_tree(m: Module, terms: Sequence, *, add: Callable | None = None, shape=None,
               registered: bool = False, enable: Value | None = None, name: str = "tree"):
    """Sum ``terms`` pairwise: adjacent pairs per level, an odd last term passes through.

    ``add(a, b)`` is the binary operation (default ``a + b``, which Amaranth widens by a bit per
    level so nothing overflows; pass a wrapping, saturating or floating-point adder to get that
    arithmetic in this order). With ``registered`` every level is a register stage (loading when
    ``enable``, if given) of ``shape`` (default: the width the sum needs), so the tree adds
    ``tree_depth(len(terms))`` cycles and one adder to the longest path.
    """
    values = list(terms)
    if not values:
        raise ValueError("Adder tree needs at least one term")
    add = add or (lambda a, b: a + b)
    level = 0
    while len(values) > 1:
        nxt = []
        for p in range(0, len(values) - 1, 2):
            total = add(values[p], values[p + 1])
            if registered:
                reg = Signal(shape if shape is not None else Value.cast(total).shape(),
                             name=f"{name}_l{level}_{p // 2}", reset_less=True)
                _load(m, reg, total, enable)
                total = reg
            nxt.append(total)
        if len(values) % 2:
            odd = values[-1]
            if registered:
                odd = delay(m, odd, 1, name=f"{name}_l{level}_pass", enable=enable)
            nxt.append(odd)
        values = nxt
        level += 1
    return values[0]


def max_tree(values: Sequence):
    """Balanced tree of 2-input maxima: depth ceil(log2 n) comparators instead of n - 1."""
    level = list(values)
    if not level:
        raise ValueError("Max tree needs at least one value")
    while len(level) > 1:
        nxt = [Mux(a > b, a, b) for a, b in zip(level[0::2], level[1::2])]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def leading_one(m: Module, value, name: str):
    """Index of the highest set bit of ``value`` (0 when ``value`` is 0)."""
    value = Value.cast(value)
    pos = Signal(range(max(2, len(value))), name=name)
    for i in range(len(value)):     # later (higher) bits override: the top set bit wins
        with m.If(value[i]):
            m.d.comb += pos.eq(i)
    return pos


def global_enable_ready(source: str, sink: str) -> str:
    """``ready`` text of an input stalled by a :class:`GlobalEnable`:
    ``source.ready = ~sink.valid | sink.ready``."""
    return (f"combinational on {sink}.ready: ready = ~{sink}.valid | {sink}.ready ({sink}.valid "
            f"is a register), so the whole pipeline stalls while a result is held; not a "
            f"function of {source}.valid or of any payload")


def global_enable_output(source: str, *, order: str | None = None) -> dict:
    """``order`` (default: one beat per ``source`` beat) and ``backpressure`` of the output of a
    :class:`GlobalEnable` pipeline."""
    return {"order": f"one beat per {source} beat, in order" if order is None else order,
            "backpressure": "holds the whole pipeline; nothing is dropped"}


def global_enable_timing(latency: int, *, taken: str, offered: str, unit: str) -> dict:
    """``buffers`` and ``latency`` of a :class:`GlobalEnable` pipeline of ``latency`` register
    stages that takes one ``unit`` per cycle (``taken``: what the input beat is, ``offered``:
    what the output beat is)."""
    return {"buffers": f"none besides the {latency} pipeline registers",
            "latency": f"{latency} cycles from {taken} taken to {offered} offered; one {unit} "
                       "per cycle"}


def global_enable_protocol(*, source: str, sink: str, source_beat: str, source_fields,
                           sink_beat: str, sink_fields, latency: int, taken: str, offered: str,
                           unit: str, arithmetic: str, order: str | None = None) -> dict:
    """The ``protocol()`` of a block that is one :class:`GlobalEnable` pipeline from the stream
    ``source`` to the stream ``sink``: each stream's beat and fields as given, the stall
    behaviour, ``order`` (:func:`global_enable_output`), buffers and latency
    (:func:`global_enable_timing`) and the ``arithmetic`` reference."""
    return {
        source: {"beat": source_beat, "fields": source_fields,
                 "ready": global_enable_ready(source, sink)},
        sink: {"beat": sink_beat, "fields": sink_fields,
               **global_enable_output(source, order=order)},
        **global_enable_timing(latency, taken=taken, offered=offered, unit=unit),
        "arithmetic": arithmetic,
    }
