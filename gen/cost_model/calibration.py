"""Unit areas for the cost model, measured once by synthesizing one small probe per primitive.

The analytical model (gen/cost_model/__init__.py) counts primitives (integer adders of a given
width, N-way lookups with a constant-zero way, negations, increments, integer multipliers, the
LUT unit's weight decoder and table builder, FP16/BF16 adders and multipliers, flip-flops); what
one primitive costs in NAND2 equivalents is taken from gen.synth itself, so the model and the
synthesis it is validated against share one gate library. Each probe registers its operands and
its result (so nothing is optimised across the boundary, TOOLCHAIN.md) and the combinational
area (``logic_area``) of the synthesized probe is the primitive's cost; flip-flops are costed
exactly from gen.synth.FLOP_AREA instead.

Integer primitives are measured on a grid of widths and interpolated linearly between grid points
(extrapolated from the last two beyond it). The FP primitives are measured per format, one
instance each. Results are memoised in build/dse/calibration-<digest>.json; the digest covers the
gate library and synthesis flow, this file, hw/float_add.py and the LUT unit's weight decoder and
table builder, so a change to any of them re-measures.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

__all__ = ["GRIDS", "UnitAreas", "unit_areas", "measure_probe", "calibration_digest",
           "refresh_snapshot"]

#: Widths / way counts each integer primitive is measured at.
GRIDS: dict[str, tuple[int, ...]] = {
    "add": (2, 4, 6, 8, 12, 16, 24, 32, 48),
    "minus": (2, 4, 8, 12, 16, 24, 32),
    "inc": (2, 4, 8, 12, 16, 24, 32),
    "mul": (2, 3, 4, 6, 8, 12, 16),
    "lookup": (3, 5, 8, 10, 14, 16, 27, 41, 64, 122, 365),
    "table4": (2, 3, 4, 5, 6),              # mu: one LUT table's build logic, int4 activations
    "table8": (2, 3, 4, 5, 6),              # mu: the same for int8
    "decode": (2, 3, 4, 5, 6),              # mu: the LUT unit's weight-code ROM, mirrored
    "decode_full": (2, 3, 4, 5, 6),         # mu: the same ROM for full (unmirrored) tables
}
FLOAT_FORMATS = ("fp16", "bf16")
#: Independent copies per integer probe: amortises the probe's fixed overhead and averages ABC's
#: per-instance choices.
COPIES = 4
MUX_WIDTH = 8


def _probe(kind: str, size: int):
    """An Amaranth component computing COPIES (or one FP) instances of one primitive."""
    from amaranth import Module, Signal, signed, unsigned
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    if kind == "add":
        ins, outs = [signed(size)] * 2, signed(size + 1)
    elif kind == "minus":
        ins, outs = [signed(size)], signed(size)
    elif kind == "inc":
        ins, outs = [unsigned(size), unsigned(1)], unsigned(size + 1)
    elif kind == "mul":
        ins, outs = [signed(size)] * 2, signed(2 * size)
    elif kind in ("decode", "decode_full"):
        half = (3 ** size - 1) // 2
        ins = [unsigned(2 * size)]
        outs = unsigned((1 + half).bit_length() + 1) if kind == "decode" else \
            unsigned((3 ** size - 1).bit_length())
    elif kind in ("fadd", "fmul"):
        ins, outs = [unsigned(16)] * 2, unsigned(16)
    elif kind == "faddpair":
        ins, outs = [unsigned(16)] * 2, unsigned(32)
    else:
        raise ValueError(f"Probe kind must be one of {sorted(GRIDS)}, fadd or fmul, not {kind!r}")
    copies = 1 if kind in ("fadd", "fmul", "faddpair", "decode", "decode_full") else COPIES

    class Probe(wiring.Component):
        def __init__(self):
            members = {}
            for c in range(copies):
                for i, shape in enumerate(ins):
                    members[f"in{c}_{i}"] = In(shape)
                members[f"out{c}"] = Out(outs)
            super().__init__(members)

        def elaborate(self, platform):
            from amaranth import Cat

            from hw.float_add import float_add, float_mul, float_neg

            m = Module()
            for c in range(copies):
                regs = []
                for i, shape in enumerate(ins):
                    reg = Signal(shape, reset_less=True, name=f"r{c}_{i}")
                    m.d.sync += reg.eq(getattr(self, f"in{c}_{i}"))
                    regs.append(reg)
                if kind == "add":
                    value = regs[0] + regs[1]
                elif kind == "minus":
                    value = -regs[0]
                elif kind == "inc":
                    value = regs[0] + regs[1]
                elif kind == "mul":
                    value = regs[0] * regs[1]
                elif kind in ("decode", "decode_full"):
                    value = _decode(m, regs[0], size, kind == "decode", f"p{c}")
                elif kind == "faddpair":
                    # a + b and a - b side by side, as a table builds each entry pair.
                    fmt = FLOAT_FORMATS[size]
                    value = Cat(float_add(m, regs[0], regs[1], fmt, name=f"p{c}"),
                                float_add(m, regs[0], float_neg(regs[1], fmt), fmt,
                                          name=f"s{c}"))
                elif kind == "fadd":
                    value = float_add(m, regs[0], regs[1], FLOAT_FORMATS[size], name=f"p{c}")
                else:
                    value = float_mul(m, regs[0], regs[1], FLOAT_FORMATS[size], name=f"p{c}")
                result = Signal(outs, reset_less=True, name=f"q{c}")
                m.d.sync += result.eq(value)
                m.d.comb += getattr(self, f"out{c}").eq(result)
            return m

    return Probe(), copies


def _decode(m, code_bits, mu, mirrored, name):
    """The LUT unit's own weight decoder (hw/ternary_lut.py), outside the unit."""
    from amaranth import Cat

    from hw.ternary_lut import decode_group

    codes = [code_bits[2 * j:2 * j + 2] for j in range(mu)]
    negate, index = decode_group(m, codes, mu=mu, mirrored=mirrored, name=name)
    return index if negate is None else Cat(index, negate)


LOOKUP_LANES = 2


def _lookup_probe(ways: int):
    """LOOKUP_LANES lanes reading one registered table of ways - 1 entries (+ the constant zero)
    and inverting the entry on request, as the LUT unit's lookups do."""
    from amaranth import Array, C, Module, Mux, Signal, unsigned
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    index_shape = unsigned(max(1, (ways - 1).bit_length()))

    class LookupProbe(wiring.Component):
        def __init__(self):
            super().__init__({"entries": In(unsigned(MUX_WIDTH)).array(ways - 1),
                              "index": In(index_shape).array(LOOKUP_LANES),
                              "negate": In(1).array(LOOKUP_LANES),
                              "looked": Out(unsigned(MUX_WIDTH)).array(LOOKUP_LANES)})

        def elaborate(self, platform):
            m = Module()
            entries = []
            for i in range(ways - 1):
                reg = Signal(MUX_WIDTH, reset_less=True, name=f"e{i}")
                m.d.sync += reg.eq(self.entries[i])
                entries.append(reg)
            for k in range(LOOKUP_LANES):
                index = Signal(index_shape, reset_less=True, name=f"i{k}")
                negate = Signal(reset_less=True, name=f"n{k}")
                value = Signal(MUX_WIDTH, name=f"v{k}")
                looked = Signal(MUX_WIDTH, reset_less=True, name=f"q{k}")
                m.d.sync += [index.eq(self.index[k]), negate.eq(self.negate[k])]
                m.d.comb += value.eq(Array(entries + [C(0, MUX_WIDTH)])[index])
                m.d.sync += looked.eq(Mux(negate, ~value, value))
                m.d.comb += self.looked[k].eq(looked)
            return m

    return LookupProbe(), LOOKUP_LANES * MUX_WIDTH


def _table_probe(mu: int, width: int):
    """One table built by the LUT unit's own build_table, activations and entries registered."""
    from amaranth import Module, Signal, signed
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from hw.ternary_lut import build_table, signed_bits

    half = (3 ** mu - 1) // 2
    entry_width = signed_bits(mu << (width - 1))           # as TernaryLUTUnit derives it

    class TableProbe(wiring.Component):
        def __init__(self):
            super().__init__({"activations": In(signed(width)).array(mu),
                              "entries": Out(signed(entry_width)).array(half)})

        def elaborate(self, platform):
            m = Module()
            group = []
            for j in range(mu):
                reg = Signal(signed(width), reset_less=True, name=f"a{j}")
                m.d.sync += reg.eq(self.activations[j])
                group.append(reg)
            for i, entry in enumerate(build_table(m, group, mu=mu,
                                                  entry_shape=signed(entry_width), name="t")):
                reg = Signal(signed(entry_width), reset_less=True, name=f"q{i}")
                m.d.sync += reg.eq(entry)
                m.d.comb += self.entries[i].eq(reg)
            return m

    return TableProbe(), 1


def measure_probe(kind: str, size: int) -> float:
    """Combinational area (GE) of one instance of the primitive (a lookup: per bit)."""
    from amaranth.back import verilog

    from gen.synth import synthesize_verilog

    if kind == "lookup":
        component, copies = _lookup_probe(size)
    elif kind in ("table4", "table8"):
        component, copies = _table_probe(size, int(kind[5:]))
    else:
        component, copies = _probe(kind, size)
    text = verilog.convert(component, name="probe", emit_src=False)
    report = synthesize_verilog(text, "probe")
    return report.logic_area / copies


def calibration_digest() -> str:
    from gen.config import REPO_ROOT
    from gen.synth import FLOP_AREA, GATE_LIBRARY

    h = hashlib.sha256()
    h.update(json.dumps([GATE_LIBRARY, FLOP_AREA, GRIDS, COPIES, MUX_WIDTH],
                        sort_keys=True).encode())
    for rel in ("gen/cost_model/calibration.py", "hw/float_add.py"):
        h.update((REPO_ROOT / rel).read_bytes())
    import inspect

    from gen import synth
    from hw import ternary_lut
    # The synthesis flow itself (script, library), not the rest of gen/synth.py.
    h.update(inspect.getsource(synth.synthesize_verilog).encode())
    h.update(inspect.getsource(synth._genlib).encode())
    h.update(str(getattr(synth, "_ABC_SCRIPT", "")).encode())
    # Only the decoder and table builder of the LUT unit are probed: the rest may change freely.
    h.update(inspect.getsource(ternary_lut.decode_group).encode())
    h.update(inspect.getsource(ternary_lut.build_table).encode())
    return h.hexdigest()[:16]


def _measure_all() -> dict:
    table: dict = {}
    for kind, grid in GRIDS.items():
        table[kind] = {str(size): round(measure_probe(kind, size), 3) for size in grid}
    for i, fmt in enumerate(FLOAT_FORMATS):
        table[f"fadd_{fmt}"] = round(measure_probe("fadd", i), 3)
        table[f"fmul_{fmt}"] = round(measure_probe("fmul", i), 3)
        table[f"faddpair_{fmt}"] = round(measure_probe("faddpair", i), 3)
    return table


class UnitAreas:
    """Measured primitive costs (GE) with interpolation between grid points."""

    def __init__(self, table: dict, digest: str = ""):
        self.table = table
        self.digest = digest

    def _interp(self, kind: str, size: float) -> float:
        points = sorted((int(k), v) for k, v in self.table[kind].items())
        if not points:
            raise KeyError(f"no calibration for {kind!r}")
        if size <= points[0][0]:
            (x0, y0), (x1, y1) = points[0], points[1]
            # Below the grid: scale the smallest probe linearly towards zero.
            return max(0.0, y0 * size / x0) if size < x0 else y0
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if size <= x1:
                return y0 + (y1 - y0) * (size - x0) / (x1 - x0)
        (x0, y0), (x1, y1) = points[-2], points[-1]
        if kind.startswith(("decode", "table")):
            # A ROM of 4^mu rows, a table of (3^mu-1)/2 entries: beyond the grid grow
            # geometrically, not linearly.
            return y1 * (y1 / y0) ** ((size - x1) / (x1 - x0))
        return y1 + (y1 - y0) * (size - x1) / (x1 - x0)

    def add(self, width: int) -> float:
        """Two's-complement adder/subtractor with width-bit operands."""
        return self._interp("add", width)

    def minus(self, width: int) -> float:
        """Unconditional negation of a width-bit value."""
        return self._interp("minus", width)

    def inc(self, width: int) -> float:
        """width-bit value plus one bit (a counter step; the popcount of the negations)."""
        return self._interp("inc", width)

    def decode(self, mu: int, mirrored: bool) -> float:
        """The weight-code ROM of one group (2*mu code bits -> entry index and sign)."""
        return self._interp("decode" if mirrored else "decode_full", mu)

    def mul(self, width: int) -> float:
        """Signed width x width multiplier, full product."""
        return self._interp("mul", width)

    def lookup(self, ways: int, width: int) -> float:
        """ways-to-one selection of width-bit values, one of the ways the constant zero, and
        the optional inversion of the result (the mirrored table's negation)."""
        if ways <= 1:
            return 0.0
        return self._interp("lookup", ways) * width

    def table_build(self, mu: int, width: int) -> float:
        """Build logic of one integer table of group size mu for int<width> activations
        (measured at int4 and int8, linear in the width between and beyond)."""
        at4, at8 = self._interp("table4", mu), self._interp("table8", mu)
        return max(0.0, at4 + (at8 - at4) * (width - 4) / 4)

    def fadd(self, fmt: str) -> float:
        return self.table[f"fadd_{fmt}"]

    def fadd_pair(self, fmt: str) -> float:
        """a + b and a - b of the same operands (the pair shares compare and alignment)."""
        return self.table[f"faddpair_{fmt}"]

    def fmul(self, fmt: str) -> float:
        return self.table[f"fmul_{fmt}"]

    def to_dict(self) -> dict:
        return {"digest": self.digest, "table": self.table}


def _cache_path(digest: str) -> Path:
    from gen.config import REPO_ROOT
    return REPO_ROOT / "build" / "dse" / f"calibration-{digest}.json"


SNAPSHOT = Path(__file__).with_name("unit_areas.json")


@lru_cache(maxsize=None)
def unit_areas() -> UnitAreas:
    """The memoised calibration.

    Looked up by digest in build/dse/, then in the snapshot committed next to this file
    (``python -m gen.cost_model calibrate`` refreshes it); measured (a minute or two) only when
    neither matches the current gate library and RTL.
    """
    digest = calibration_digest()
    path = _cache_path(digest)
    for candidate in (path, SNAPSHOT):
        if candidate.exists():
            data = json.loads(candidate.read_text())
            if data.get("digest") == digest:
                return UnitAreas(data["table"], digest)
    table = _measure_all()
    write_table(path, digest, table)
    return UnitAreas(table, digest)


def write_table(path: Path, digest: str, table: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"digest": digest, "table": table}, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


def refresh_snapshot() -> UnitAreas:
    """Re-measure every probe and rewrite the committed snapshot (and the build/ cache)."""
    digest = calibration_digest()
    table = _measure_all()
    write_table(SNAPSHOT, digest, table)
    write_table(_cache_path(digest), digest, table)
    unit_areas.cache_clear()
    return UnitAreas(table, digest)
