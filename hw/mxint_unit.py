"""What the MXInt nonlinear units (GELU, softmax, LayerNorm) share, written once.

* :class:`MXIntUnit`: the pipeline knobs (``tree_levels``, ``multiplier_chunk_bits``) and their
  checks, a :class:`~hw.mxint_fixed.Pipeline` built with them, ``repr`` from the spec, and the
  drive of an output stream of MXInt blocks from the pipeline's last stage.
* :class:`TwoPassUnit`: the row-at-a-time units (softmax, LayerNorm). A row must be complete
  before any of it can be finished, so a free-running first pass writes a row buffer and a row
  statistic (row-info FIFO) and a second pass, stalled by the output, reads them. Work is
  admitted only against block credits (row buffer) and row credits (row-info FIFO), so the first
  pass never needs to stall; this class holds the buffer sizing, the credits and the two FIFOs.
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.data import ArrayLayout, StructLayout
from amaranth.lib.fifo import SyncFIFO

from hw.mxint_common import exponent_shape
from hw.mxint_fixed import Pipeline, Staged, check_chunk_bits, check_int, fixed_to_mxint

__all__ = ["MXIntUnit", "TwoPassUnit", "row_result_layout"]


def row_result_layout(fmt, block_size: int) -> StructLayout:
    """An output beat of a two-pass unit: one MXInt block of ``block_size`` elements of ``fmt``
    and ``last`` (1 on a row's final block)."""
    return StructLayout({
        "exponent": exponent_shape(fmt),
        "mantissas": ArrayLayout(signed(fmt.element_width), block_size),
        "last": 1})


class MXIntUnit(wiring.Component):
    """Base of the nonlinear units: a subclass sets ``self.spec`` (its golden model's spec),
    calls :meth:`_pipeline_knobs` in its constructor and names in ``_spec_repr`` the spec's
    attributes its ``repr`` shows besides the block size and the element widths."""

    _spec_repr: tuple = ()

    def _pipeline_knobs(self, tree_levels, multiplier_chunk_bits):
        """``tree_levels``: tree levels between registers; ``multiplier_chunk_bits``: split the
        multipliers' second operand into registered chunks of this many bits (None: never)."""
        self.tree_levels = check_int("tree_levels", tree_levels, 1, 8)
        self.multiplier_chunk_bits = check_chunk_bits(multiplier_chunk_bits)

    def _pipeline(self, m: Module, name: str, *, enable=None) -> Pipeline:
        return Pipeline(m, name, enable=enable, tree_levels=self.tree_levels,
                        chunk_bits=self.multiplier_chunk_bits)

    def _repr_fields(self) -> dict:
        s = self.spec
        return {"k": s.block_size, "in_w": s.in_fmt.element_width,
                "out_w": s.out_fmt.element_width,
                **{name: getattr(s, name) for name in self._spec_repr}}

    def __repr__(self):
        if getattr(self, "spec", None) is None:     # rejected in the constructor
            return f"{type(self).__name__}(<invalid arguments>)"
        shown = ", ".join(f"{k}={v}" for k, v in self._repr_fields().items())
        return f"{type(self).__name__}({shown})"

    def _round_out(self, p: Pipeline, y: Staged, lsb: Staged, valid):
        """The fixed-point result ``y`` (its LSB weighs ``2^lsb``) rounded once into a block of
        the output format, and the valid bit of its beat (``valid`` at stage 0) beside it."""
        out = fixed_to_mxint(p, y, lsb, self.spec.out_fmt, "q")
        out_valid = p.at(Staged(valid, 0), out.stage, control=True)
        return out, out_valid

    @staticmethod
    def _drive_blocks(m: Module, port, out, out_valid, out_last=None):
        """``port`` (an output stream of ``{exponent, mantissas[, last]}``) from the pipeline's
        result ``out`` (``(exponent field, mantissas)``), its valid and, if given, its last."""
        field, mans = out.value
        stmts = [port.valid.eq(out_valid), port.payload.exponent.eq(field)]
        if out_last is not None:
            stmts.append(port.payload.last.eq(out_last))
        m.d.comb += stmts
        m.d.comb += [port.payload.mantissas[i].eq(mans[i]) for i in range(len(mans))]


class TwoPassUnit(MXIntUnit):
    """Base of the two-pass units. A subclass gives ``_pass1_latency()`` (first-pass and
    row-info latencies) and ``_pass2_latency()``, and calls :meth:`_size_buffers` in its
    constructor."""

    def _round_row_out(self, p: Pipeline, y: Staged, lsb: Staged, valid, last: Staged):
        """:meth:`_round_out` and the beat's ``last`` bit: the second pass's result, valid,
        last and stage."""
        out, out_valid = self._round_out(p, y, lsb, valid)
        return out, out_valid, p.at(last, out.stage), out.stage

    def _repr_fields(self) -> dict:
        return {**super()._repr_fields(), "buffer_blocks": getattr(self, "buffer_blocks", None)}

    def _size_buffers(self, buffer_blocks, *, row_blocks: int):
        """Latencies, then ``buffer_blocks`` (None: :attr:`default_buffer_blocks`), at least a
        whole row of (at most) ``row_blocks`` blocks."""
        self._row_blocks = row_blocks
        self.first_pass_latency, self.row_info_latency = self._pass1_latency()
        self.second_pass_latency = self._pass2_latency()
        if buffer_blocks is None:
            buffer_blocks = self.default_buffer_blocks
        self.buffer_blocks = check_int("buffer_blocks", buffer_blocks, row_blocks, 4096)

    @property
    def default_buffer_blocks(self) -> int:
        """Enough for one block per cycle: a row plus everything in flight before its row
        statistic is ready."""
        return self._row_blocks + self.row_info_latency + 3

    @property
    def latencies(self) -> dict:
        """Cycles from a block's admission to its row-buffer write (``first_pass``), from a
        row's last block's admission to its row-info write (``row_info``), from a buffer read to
        the output beat (``second_pass``), and the credits (for the softmax: the arguments of
        :func:`software_model.mxint_softmax.softmax_cycles`)."""
        return {"first_pass": self.first_pass_latency, "row_info": self.row_info_latency,
                "second_pass": self.second_pass_latency, "buffer_blocks": self.buffer_blocks,
                "row_slots": self.row_slots}

    def _credits(self):
        """Block and row credits, ``first`` (the next block starts a row) and the block
        count within the row."""
        credits = Signal(range(self.buffer_blocks + 1), init=self.buffer_blocks)
        rows_free = Signal(range(self.row_slots + 1), init=self.row_slots)
        first = Signal(init=1)                       # the next block starts a row
        count = Signal(range(max(2, self._row_blocks)))
        return SimpleNamespace(credits=credits, rows_free=rows_free, first=first, count=count)

    @staticmethod
    def _admit(m: Module, c, operands, row_start_ok=()):
        """``operands.ready`` while a block credit is free and, for a row's first block, a row
        credit is free and every term of ``row_start_ok``; returns the take strobe."""
        row_ok = c.rows_free != 0
        for term in row_start_ok:
            row_ok = row_ok & term
        ready = Signal()
        m.d.comb += ready.eq((c.credits != 0) & (~c.first | row_ok))
        m.d.comb += operands.ready.eq(ready)
        take = Signal()
        m.d.comb += take.eq(operands.valid & ready)
        return take

    @staticmethod
    def _count_blocks(m: Module, c, take, ends_row):
        """Each taken block advances the count; the one that ``ends_row`` makes the next one a
        row's first."""
        with m.If(take):
            m.d.sync += [c.first.eq(ends_row), c.count.eq(Mux(ends_row, 0, c.count + 1))]

    def _row_fifos(self, m: Module, buffer_width: int, info_width: int):
        """The row buffer (``buffer_blocks`` entries) and the row-info FIFO (``row_slots``)."""
        fifo = m.submodules.row_buffer = SyncFIFO(width=buffer_width,
                                                  depth=max(2, self.buffer_blocks))
        # a depth-1 SyncFIFO has a zero-width address; the credits bound the level anyway
        infos = m.submodules.row_info = SyncFIFO(width=info_width,
                                                 depth=max(2, self.row_slots))
        return fifo, infos

    @staticmethod
    def _return_credits(m: Module, c, take, pop, row_done):
        """A block credit back per buffer read, a row credit back when a row is finished."""
        m.d.sync += [
            c.credits.eq(c.credits - take + pop),
            c.rows_free.eq(c.rows_free - (take & c.first) + (pop & row_done)),
        ]
