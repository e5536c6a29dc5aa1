"""Area of the K-split accumulation that the systolic figures used to leave out.

A reduction longer than one job (output-stationary ``max_k``, weight-stationary ``rows``) leaves
partial sums that an accumulator buffer outside the array adds (as Gemmini's accumulator SRAM
does). Its cycles are in ``software_model.systolic.ksplit_accumulation`` and the result port of
``software_model.memory``; this module prices its logic by synthesis:

* the accumulate stage: one result row per cycle (``cols`` adders of ``acc_width`` bits, the
  load-or-add multiplexer, and the registered row written back), synthesized with gen.synth as
  :class:`AccumulateRowProbe`, the same way gen/cost_model/calibration.py probes primitives
  (operands and result registered so nothing is optimised away);
* the buffer itself: ``buffer_words * acc_width`` bits. Priced as flip-flops (gen.synth's
  enable flop, 5.5 GE/bit) when it holds one output-stationary tile; the weight-stationary buffer
  holds M rows, an SRAM, reported in bits only.

This is a costing probe, not a generated block: the RTL has no accumulator buffer (issue #12
chose "counted in cycles and area").
"""

from __future__ import annotations

__all__ = ["AccumulateRowProbe", "accumulate_row_area", "FLOP_GE_PER_BIT"]

FLOP_GE_PER_BIT = 5.5           # gen.synth.FLOP_AREA["$_DFFE_PP_"]: datapath flop with enable


def AccumulateRowProbe(*, cols: int, acc_width: int, saturate: bool = False):
    """One row of the accumulate stage: ``out[j] = first ? part[j] : old[j] + part[j]``."""
    from amaranth import Module, Mux, Signal, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    for key, value in (("cols", cols), ("acc_width", acc_width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, not {value!r}")

    class Probe(wiring.Component):
        def __init__(self):
            super().__init__({"part": In(signed(acc_width)).array(cols),
                              "old": In(signed(acc_width)).array(cols),
                              "first": In(1),
                              "out": Out(signed(acc_width)).array(cols)})

        def elaborate(self, platform):
            m = Module()
            first = Signal(reset_less=True)
            m.d.sync += first.eq(self.first)
            lo, hi = -(1 << (acc_width - 1)), (1 << (acc_width - 1)) - 1
            for j in range(cols):
                part = Signal(signed(acc_width), reset_less=True, name=f"part{j}")
                old = Signal(signed(acc_width), reset_less=True, name=f"old{j}")
                out = Signal(signed(acc_width), reset_less=True, name=f"out{j}")
                m.d.sync += [part.eq(self.part[j]), old.eq(self.old[j])]
                total = old + part
                if saturate:
                    total = Mux(total > hi, hi, Mux(total < lo, lo, total))
                m.d.sync += out.eq(Mux(first, part, total[:acc_width]))
                m.d.comb += self.out[j].eq(out)
            return m

    return Probe()


def accumulate_row_area(*, cols: int, acc_width: int, saturate: bool = False) -> dict:
    """Synthesized logic area (GE) of the accumulate stage, without its probe registers."""
    from amaranth.back import verilog

    from gen.synth import synthesize_verilog

    probe = AccumulateRowProbe(cols=cols, acc_width=acc_width, saturate=saturate)
    top = f"acc_row_c{cols}_w{acc_width}{'_sat' if saturate else ''}"
    report = synthesize_verilog(verilog.convert(probe, name=top, emit_src=False), top)
    return {"cols": cols, "acc_width": acc_width, "saturate": saturate,
            "logic_area_ge": report.logic_area,
            # the written-back row register is part of the stage; the probe's input registers
            # (part, old, first) are not
            "row_register_ge": cols * acc_width * FLOP_GE_PER_BIT,
            "stage_area_ge": round(report.logic_area + cols * acc_width * FLOP_GE_PER_BIT, 2),
            "synth_seconds": report.seconds}
