"""The 256-bit instruction as a struct (docs/isa.md "Encoding"), built from the one table of field
positions in :data:`software_model.isa.FIELD_BITS`, so the RTL and the assembler cannot disagree
on where a field lives."""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data

from software_model.isa import FIELD_BITS, INSTRUCTION_BITS, OPERANDS, Opcode, Queue

__all__ = ["instruction_layout", "INSTRUCTION", "Opcode", "used_field_mask", "QUEUE_OF"]


def instruction_layout() -> data.StructLayout:
    """Fields at their encoded bit offsets (word w, bit b -> offset 32 w + b); the gaps are the
    reserved bits, kept as ``reserved_*`` fields so a decoder can check them."""
    placed = sorted((32 * w + lo, width, name) for name, (w, lo, width) in FIELD_BITS.items())
    fields, at, gap = {}, 0, 0
    for offset, width, name in placed:
        if offset > at:
            fields[f"reserved_{gap}"] = unsigned(offset - at)
            gap += 1
        fields[name] = signed(width) if name == "imm" else unsigned(width)
        at = offset + width
    if at < INSTRUCTION_BITS:
        fields[f"reserved_{gap}"] = unsigned(INSTRUCTION_BITS - at)
    layout = data.StructLayout(fields)
    assert layout.size == INSTRUCTION_BITS
    return layout


INSTRUCTION = instruction_layout()

#: the queue each opcode goes to
QUEUE_OF = {op: spec.queue for op, spec in OPERANDS.items()}


def used_field_mask(op: Opcode) -> int:
    """Bits of the instruction ``op`` may set (its operands, the opcode itself, and bit 0 of
    ``flags`` if it has a flag): every other bit must be zero."""
    spec = OPERANDS[op]
    mask = (1 << 8) - 1                                  # the opcode
    for name in spec.used:
        w, lo, width = FIELD_BITS[name]
        if name == "flags":
            width = 1
        mask |= ((1 << width) - 1) << (32 * w + lo)
    return mask


assert Queue.BARRIER in QUEUE_OF.values()
