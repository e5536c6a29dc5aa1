"""The accelerator's instruction set (docs/isa.md): opcodes, the :class:`Instruction` record,
256-bit encoding and decoding, and a text assembler / disassembler.

Every instruction is 256 bits: eight 32-bit words, word 0 least significant (so the byte form is
the integer in little-endian order), with every field at the same place for every opcode:

====  =======  ============  ==================================================================
word  bits     field         meaning
====  =======  ============  ==================================================================
0     7:0      ``op``        opcode (:class:`Opcode`)
0     15:8     ``flags``     bit 0: ``accumulate`` (MATMUL), ``broadcast`` (VADD), ``init``
                             (VSMAXO); bits 7:1 reserved
0     17:16    ``a_class``   class of operand a (:class:`TensorClass`; 3 is reserved)
0     19:18    ``b_class``   class of operand b
0     21:20    ``d_class``   class of the destination
0     31:22    --            reserved
1     31:0     ``d``         destination address
2     31:0     ``a``         operand a address
3     31:0     ``b``         operand b address
4     15:0     ``m``         rows (M), or words per segment (DMA)
4     31:16    ``n``         columns (N, elements), or segments (DMA)
5     15:0     ``kb``        reduction length in blocks (MATMUL)
5     31:16    ``d_stride``  destination stride (words)
6     31:0     ``a_stride``  operand a stride (words)
7     15:0     ``b_stride``  operand b stride (words)
7     23:16    ``imm``       signed: ``shift`` (MATMUL), ``exp`` (conversions), ``tag`` (BARRIER)
7     31:24    ``valid``     valid elements of a row's last block (VSMAX, VSMAXO; 0 = all)
====  =======  ============  ==================================================================

A field an opcode does not use must be zero (:data:`OPERANDS` lists what each opcode uses); the
decoder rejects unknown opcodes, reserved bits and class code 3, and :class:`Instruction` rejects
out-of-range fields, with messages that name the opcode, the field and the value.  Checks that
need the accelerator's parameters (addresses inside the memories, ``n`` a multiple of the block
size, ...) are made by :func:`software_model.accelerator.check_instruction`.

Assembly: one instruction per line, ``OP field=value ...`` (``#`` starts a comment), addresses
optionally prefixed by their memory (``d=acc:0 a=sp:16``), classes by name, the immediate and the
flag under the opcode's own names (``shift``, ``exp``, ``tag``; ``accumulate``, ``broadcast``,
``init``).  ``assemble(disassemble(p)) == p`` for every program.
"""

from __future__ import annotations

import enum
import operator
import re
from dataclasses import dataclass, fields, replace
from typing import Iterable, Union

__all__ = ["Opcode", "TensorClass", "Queue", "Instruction", "OperandSpec", "OPERANDS",
           "FIELD_BITS", "INSTRUCTION_BITS", "INSTRUCTION_BYTES", "encode", "decode",
           "encode_program", "decode_program", "assemble", "disassemble", "format_instruction",
           "parse_instruction"]

INSTRUCTION_BITS = 256
INSTRUCTION_BYTES = INSTRUCTION_BITS // 8


class Opcode(enum.IntEnum):
    LOAD = 0x01
    STORE = 0x02
    MATMUL = 0x10
    ACCST = 0x11
    ACCSCALE = 0x12
    ACCNORM = 0x13
    VADD = 0x20
    VCAST = 0x21
    VGELU = 0x22
    VLNORM = 0x23
    VSMAX = 0x24
    VSMAXO = 0x25
    BARRIER = 0x30


class TensorClass(enum.IntEnum):
    """Which of the config's ``formats`` an operand is read or written in."""
    ACTIVATION = 0
    WEIGHT = 1
    KV = 2

    @property
    def key(self) -> str:
        """The class's name in configs and assembly (``activation``, ``weight``, ``kv``)."""
        return self.name.lower()


class Queue(enum.Enum):
    """The queue an opcode is dispatched to (docs/accelerator.md section 7)."""
    LOAD = "load"
    STORE = "store"
    EXECUTE = "execute"
    BARRIER = "barrier"


#: field -> (word, low bit, width); ``imm`` is two's complement, every other field unsigned
FIELD_BITS: dict[str, tuple[int, int, int]] = {
    "op": (0, 0, 8), "flags": (0, 8, 8), "a_class": (0, 16, 2), "b_class": (0, 18, 2),
    "d_class": (0, 20, 2), "d": (1, 0, 32), "a": (2, 0, 32), "b": (3, 0, 32),
    "m": (4, 0, 16), "n": (4, 16, 16), "kb": (5, 0, 16), "d_stride": (5, 16, 16),
    "a_stride": (6, 0, 32), "b_stride": (7, 0, 16), "imm": (7, 16, 8), "valid": (7, 24, 8),
}
_RESERVED_WORD0 = 0xFFC00000          # word 0 bits 31:22

#: fields of :class:`Instruction` in encoding order (the assembler prints them in this order)
_FIELD_ORDER = ("d", "a", "b", "m", "n", "kb", "d_stride", "a_stride", "b_stride", "imm",
                "valid", "flags", "a_class", "b_class", "d_class")


@dataclass(frozen=True)
class OperandSpec:
    """What one opcode uses.  ``spaces``: memory of each address field (``sp``, ``acc``,
    ``dram``); ``positive``: count fields that must be at least 1; ``imm``: the immediate's name
    (or None); ``flag``: bit 0's name (or None); ``classes``: class fields it reads; ``queue``."""
    queue: Queue
    spaces: dict
    positive: tuple = ()
    others: tuple = ()
    imm: str | None = None
    flag: str | None = None
    classes: tuple = ()

    @property
    def used(self) -> tuple:
        names = tuple(self.spaces) + self.positive + self.others
        if self.imm:
            names += ("imm",)
        if self.flag:
            names += ("flags",)
        return names + self.classes


_STRIDES2 = ("d_stride", "a_stride")
#: what each opcode uses (docs/isa.md "Instructions")
OPERANDS: dict[Opcode, OperandSpec] = {
    Opcode.LOAD: OperandSpec(Queue.LOAD, {"d": "sp", "a": "dram"}, ("m", "n"), _STRIDES2),
    Opcode.STORE: OperandSpec(Queue.STORE, {"d": "dram", "a": "sp"}, ("m", "n"), _STRIDES2),
    Opcode.MATMUL: OperandSpec(Queue.EXECUTE, {"d": "acc", "a": "sp", "b": "sp"},
                               ("m", "n", "kb"), _STRIDES2 + ("b_stride",), imm="shift",
                               flag="accumulate", classes=("a_class", "b_class")),
    Opcode.ACCST: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "acc"}, ("m", "n"), _STRIDES2,
                              imm="exp", classes=("d_class",)),
    Opcode.ACCSCALE: OperandSpec(Queue.EXECUTE, {"d": "acc"}, ("m", "n"), ("d_stride",)),
    Opcode.ACCNORM: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "acc"}, ("m", "n"), _STRIDES2,
                                imm="exp", classes=("d_class",)),
    Opcode.VADD: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "sp", "b": "sp"}, ("m", "n"),
                             _STRIDES2 + ("b_stride",), imm="exp", flag="broadcast",
                             classes=("a_class", "b_class", "d_class")),
    Opcode.VCAST: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "sp"}, ("m", "n"), _STRIDES2,
                              imm="exp", classes=("a_class", "d_class")),
    Opcode.VGELU: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "sp"}, ("m", "n"), _STRIDES2),
    Opcode.VLNORM: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "sp", "b": "sp"}, ("m", "n"),
                               _STRIDES2),
    Opcode.VSMAX: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "sp"}, ("m", "n"),
                              _STRIDES2 + ("valid",)),
    Opcode.VSMAXO: OperandSpec(Queue.EXECUTE, {"d": "sp", "a": "sp"}, ("m", "n"),
                               _STRIDES2 + ("valid",), flag="init"),
    Opcode.BARRIER: OperandSpec(Queue.BARRIER, {}, imm="tag"),
}

_CLASS_FIELDS = ("a_class", "b_class", "d_class")


def _field_range(name: str) -> tuple[int, int]:
    width = FIELD_BITS[name][2]
    if name == "imm":
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


@dataclass(frozen=True)
class Instruction:
    """One instruction, fields named as in the encoding (docs/isa.md).  Construction validates
    every field: range, opcode, class codes, reserved flag bits, unused fields zero, counts
    positive; a bad one raises ``ValueError`` naming the opcode, field and value.

    ``imm`` is the signed immediate (``shift`` / ``exp`` / ``tag``), ``flags`` bit 0 the opcode's
    flag (``accumulate`` / ``broadcast`` / ``init``).  :meth:`make` accepts those names, class
    names and the opcode's name, e.g. ``Instruction.make("MATMUL", d=0, ..., shift=-2,
    accumulate=True, b_class="weight")``."""
    op: Opcode
    d: int = 0
    a: int = 0
    b: int = 0
    m: int = 0
    n: int = 0
    kb: int = 0
    d_stride: int = 0
    a_stride: int = 0
    b_stride: int = 0
    imm: int = 0
    valid: int = 0
    flags: int = 0
    a_class: TensorClass = TensorClass.ACTIVATION
    b_class: TensorClass = TensorClass.ACTIVATION
    d_class: TensorClass = TensorClass.ACTIVATION

    def __post_init__(self):
        op = _as_opcode(self.op)
        object.__setattr__(self, "op", op)
        name = op.name
        for f in _FIELD_ORDER:
            value = getattr(self, f)
            if f in _CLASS_FIELDS:
                if isinstance(value, str):
                    value = _parse_class(value, f"{name}: {f}")
                if not _is_int(value) or int(value) not in TensorClass._value2member_map_:
                    raise ValueError(f"{name}: {f} must be 0 (activation), 1 (weight) or 2 (kv), "
                                     f"not {_show(value)}")
                object.__setattr__(self, f, TensorClass(int(value)))
                continue
            lo, hi = _field_range(f)
            if not _is_int(value) or not lo <= value <= hi:
                raise ValueError(f"{name}: {f} must be an integer from {lo} to {hi}, "
                                 f"not {_show(value)}")
            object.__setattr__(self, f, int(value))
        spec = OPERANDS[op]
        if self.flags & ~1:
            raise ValueError(f"{name}: flags bits 7:1 are reserved and must be zero, not "
                             f"0x{self.flags:02x}")
        used = spec.used
        for f in _FIELD_ORDER:
            if f not in used and getattr(self, f) != 0:
                what = "flags bit 0" if f == "flags" else f
                raise ValueError(f"{name}: {what} is not an operand of {name} and must be zero, "
                                 f"not {_show(getattr(self, f))}")
        for f in spec.positive:
            if getattr(self, f) < 1:
                lo, hi = _field_range(f)
                raise ValueError(f"{name}: {f} must be an integer from 1 to {hi}, "
                                 f"not {getattr(self, f)}")

    # -- named views -------------------------------------------------------------------------
    @property
    def spec(self) -> OperandSpec:
        return OPERANDS[self.op]

    @property
    def queue(self) -> Queue:
        return OPERANDS[self.op].queue

    @property
    def flag(self) -> bool:
        """Bit 0 of ``flags``: ``accumulate`` (MATMUL), ``broadcast`` (VADD), ``init``
        (VSMAXO)."""
        return bool(self.flags & 1)

    @property
    def accumulate(self) -> bool:
        return self.op == Opcode.MATMUL and self.flag

    @property
    def broadcast(self) -> bool:
        return self.op == Opcode.VADD and self.flag

    @property
    def init(self) -> bool:
        return self.op == Opcode.VSMAXO and self.flag

    @property
    def shift(self) -> int:
        return self.imm

    @property
    def exp(self) -> int:
        return self.imm

    @property
    def tag(self) -> int:
        return self.imm

    @classmethod
    def make(cls, op: Union[Opcode, str, int], **fields_) -> "Instruction":
        """Build from named fields; accepts the immediate's and flag's opcode-specific names
        (``shift=``, ``exp=``, ``tag=``, ``accumulate=``, ``broadcast=``, ``init=``) and class
        names (``"kv"``)."""
        instr_op = _as_opcode(op)
        spec = OPERANDS[instr_op]
        out = {}
        for key, value in fields_.items():
            if spec.imm is not None and key == spec.imm:
                key = "imm"
            elif spec.flag is not None and key == spec.flag:
                if not isinstance(value, bool) and value not in (0, 1):
                    raise ValueError(f"{instr_op.name}: {spec.flag} must be 0 or 1, "
                                     f"not {_show(value)}")
                key, value = "flags", int(value)
            elif key not in _FIELD_ORDER:
                raise ValueError(f"{instr_op.name}: unknown field {key!r}; fields: "
                                 + ", ".join(_field_names(spec)))
            if key in out:
                raise ValueError(f"{instr_op.name}: field {key!r} given twice")
            out[key] = value
        return cls(instr_op, **out)

    def replace(self, **changes) -> "Instruction":
        return replace(self, **changes)

    def __str__(self) -> str:
        return format_instruction(self)

    def __repr__(self) -> str:
        return f"<{format_instruction(self)}>"


def _is_int(v) -> bool:
    """An integer (Python or numpy), not a bool."""
    if isinstance(v, bool) or type(v).__name__ == "bool_":
        return False
    try:
        operator.index(v)
    except TypeError:
        return False
    return True


def _show(v) -> str:
    return str(int(v)) if _is_int(v) else repr(v)


def _as_opcode(op) -> Opcode:
    if isinstance(op, Opcode):
        return op
    if isinstance(op, str):
        return _parse_opcode(op)
    if not _is_int(op) or int(op) not in Opcode._value2member_map_:
        raise ValueError(f"Unknown opcode {_show(op)}; known: " + ", ".join(
            f"{o.name} (0x{o.value:02x})" for o in Opcode))
    return Opcode(int(op))


def _parse_opcode(text: str) -> Opcode:
    try:
        return Opcode[text.upper()]
    except KeyError:
        raise ValueError(f"Unknown opcode {text!r}; known: "
                         + ", ".join(o.name for o in Opcode)) from None


def _parse_class(text: str, where: str) -> TensorClass:
    try:
        return TensorClass[text.upper()]
    except KeyError:
        raise ValueError(f"{where} must be activation, weight or kv, not {text!r}") from None


def _field_names(spec: OperandSpec) -> list[str]:
    names = []
    for f in _FIELD_ORDER:
        if f not in spec.used:
            continue
        names.append({"imm": spec.imm, "flags": spec.flag}.get(f, f))
    return names


# --------------------------------------------------------------------------------------------
# Binary encoding


def encode(instr: Instruction) -> int:
    """The instruction as a 256-bit unsigned integer (word 0 least significant)."""
    if not isinstance(instr, Instruction):
        raise TypeError(f"encode needs an Instruction, not {type(instr).__name__}")
    value = 0
    for f, (word, lo, width) in FIELD_BITS.items():
        v = int(getattr(instr, f))
        value |= (v & ((1 << width) - 1)) << (32 * word + lo)
    return value


def decode(word: Union[int, bytes, bytearray]) -> Instruction:
    """The instruction of a 256-bit integer or 32 bytes (little-endian); ``ValueError`` for an
    unknown opcode, a reserved bit set, class code 3, or any field the opcode rejects."""
    if isinstance(word, (bytes, bytearray)):
        if len(word) != INSTRUCTION_BYTES:
            raise ValueError(f"An instruction is {INSTRUCTION_BYTES} bytes, not {len(word)}")
        word = int.from_bytes(word, "little")
    if not _is_int(word) or not 0 <= word < 1 << INSTRUCTION_BITS:
        raise ValueError(f"An encoded instruction must be an integer from 0 to 2^256 - 1, "
                         f"not {_show(word)}")
    word = int(word)
    raw = {}
    for f, (w, lo, width) in FIELD_BITS.items():
        raw[f] = (word >> (32 * w + lo)) & ((1 << width) - 1)
    if raw["op"] not in Opcode._value2member_map_:
        raise ValueError(f"Unknown opcode 0x{raw['op']:02x}; known: " + ", ".join(
            f"{o.name} (0x{o.value:02x})" for o in Opcode))
    op = Opcode(raw["op"])
    reserved = word & _RESERVED_WORD0
    if reserved:
        raise ValueError(f"{op.name}: word 0 bits 31:22 are reserved and must be zero, not "
                         f"0x{reserved >> 22:03x}")
    for f in _CLASS_FIELDS:
        if raw[f] == 3:
            raise ValueError(f"{op.name}: {f} code 3 is reserved (0 activation, 1 weight, 2 kv)")
    imm = raw["imm"]
    raw["imm"] = imm - 256 if imm >= 128 else imm
    del raw["op"]
    return Instruction(op, **raw)


def encode_program(program: Iterable[Instruction]) -> bytes:
    """Instructions -> the command stream's bytes (32 per instruction, little-endian)."""
    return b"".join(encode(i).to_bytes(INSTRUCTION_BYTES, "little") for i in program)


def decode_program(data: Union[bytes, bytearray]) -> list[Instruction]:
    if len(data) % INSTRUCTION_BYTES:
        raise ValueError(f"A program is a whole number of {INSTRUCTION_BYTES}-byte instructions, "
                         f"not {len(data)} bytes")
    out = []
    for i in range(0, len(data), INSTRUCTION_BYTES):
        try:
            out.append(decode(bytes(data[i:i + INSTRUCTION_BYTES])))
        except ValueError as exc:
            raise ValueError(f"instruction {i // INSTRUCTION_BYTES}: {exc}") from None
    return out


# --------------------------------------------------------------------------------------------
# Assembly text


def format_instruction(instr: Instruction) -> str:
    """Canonical assembly of one instruction: every field the opcode uses, in encoding order."""
    spec = instr.spec
    parts = [instr.op.name]
    for f in _FIELD_ORDER:
        if f not in spec.used:
            continue
        value = getattr(instr, f)
        if f in spec.spaces:
            parts.append(f"{f}={spec.spaces[f]}:{value}")
        elif f == "imm":
            parts.append(f"{spec.imm}={value}")
        elif f == "flags":
            parts.append(f"{spec.flag}={value & 1}")
        elif f in _CLASS_FIELDS:
            parts.append(f"{f}={value.key}")
        else:
            parts.append(f"{f}={value}")
    return " ".join(parts)


def disassemble(program: Union[Instruction, Iterable[Instruction], bytes, bytearray]) -> str:
    """Assembly text of instructions (or of encoded bytes), one per line."""
    if isinstance(program, (bytes, bytearray)):
        program = decode_program(program)
    elif isinstance(program, Instruction):
        program = [program]
    return "".join(format_instruction(i) + "\n" for i in program)


_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+|[0-9]+)")


def _parse_int(text: str, where: str) -> int:
    """Decimal, 0x hexadecimal or 0b binary, optionally signed."""
    if not _INT.fullmatch(text):
        raise ValueError(f"{where} must be an integer, not {text!r}")
    sign = -1 if text[0] == "-" else 1
    body = text.lstrip("+-")
    base = {"0x": 16, "0X": 16, "0b": 2, "0B": 2}.get(body[:2], 10)
    return sign * int(body[2:] if base != 10 else body, base)


def parse_instruction(line: str) -> Instruction:
    """One line of assembly (without comment) -> :class:`Instruction`."""
    tokens = line.split()
    if not tokens:
        raise ValueError("empty line")
    op = _parse_opcode(tokens[0])
    spec = OPERANDS[op]
    imm_name, flag_name = spec.imm, spec.flag
    kwargs = {}
    for token in tokens[1:]:
        key, eq, text = token.partition("=")
        if not eq or not key or not text:
            raise ValueError(f"{op.name}: expected field=value, not {token!r}")
        if key == imm_name:
            field = "imm"
        elif key == flag_name:
            field = "flags"
        elif key in _FIELD_ORDER and key not in ("imm", "flags"):
            field = key
        else:
            raise ValueError(f"{op.name}: unknown field {key!r}; fields: "
                             + ", ".join(_field_names(spec)))
        if field not in spec.used:
            raise ValueError(f"{op.name}: {key} is not an operand of {op.name}; fields: "
                             + ", ".join(_field_names(spec)))
        if field in kwargs:
            raise ValueError(f"{op.name}: field {key!r} given twice")
        where = f"{op.name}: {key}"
        if field in _CLASS_FIELDS:
            value = _parse_class(text, where) if not _INT.fullmatch(text) else \
                _parse_int(text, where)
        elif field in spec.spaces:
            space, colon, number = text.rpartition(":")
            if colon and space != spec.spaces[field]:
                raise ValueError(f"{where}: the {field} operand of {op.name} is in "
                                 f"{spec.spaces[field]}, not {space!r}")
            value = _parse_int(number, where)
        elif field == "flags":
            value = _parse_int(text, where)
            if value not in (0, 1):
                raise ValueError(f"{where} must be 0 or 1, not {text}")
        else:
            value = _parse_int(text, where)
        kwargs[field] = value
    return Instruction(op, **kwargs)


def assemble(text: str) -> list[Instruction]:
    """Assembly text -> instructions.  ``ValueError`` names the line of the first problem."""
    program = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            program.append(parse_instruction(line))
        except ValueError as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return program
