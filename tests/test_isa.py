"""The accelerator ISA (software_model/isa.py): every instruction round-trips through the binary
encoding and the assembly text; every rejection names opcode, field and value."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from software_model.isa import (
    FIELD_BITS, INSTRUCTION_BYTES, OPERANDS, Instruction, Opcode, Queue, TensorClass, assemble,
    decode, decode_program, disassemble, encode, encode_program,
)


def _range(field):
    width = FIELD_BITS[field][2]
    if field == "imm":
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


@st.composite
def instructions(draw, op=None):
    op = draw(st.sampled_from(list(Opcode))) if op is None else op
    spec = OPERANDS[op]
    kwargs = {}
    for field in spec.used:
        if field in ("a_class", "b_class", "d_class"):
            kwargs[field] = draw(st.sampled_from(list(TensorClass)))
        elif field == "flags":
            kwargs[field] = draw(st.integers(0, 1))
        else:
            lo, hi = _range(field)
            if field in spec.positive:
                lo = 1
            # the extremes of every field and values in between
            kwargs[field] = draw(st.one_of(st.sampled_from([lo, hi]), st.integers(lo, hi)))
    return Instruction(op, **kwargs)


@settings(max_examples=200, deadline=None)
@given(instructions())
def test_every_instruction_round_trips(instr):
    word = encode(instr)
    assert 0 <= word < 1 << 256
    assert decode(word) == instr
    assert decode(word.to_bytes(INSTRUCTION_BYTES, "little")) == instr
    assert assemble(disassemble(instr)) == [instr]
    assert assemble(str(instr)) == [instr]


@pytest.mark.parametrize("op", list(Opcode), ids=lambda o: o.name)
def test_each_opcode_round_trips_at_its_extremes(op):
    spec = OPERANDS[op]
    for pick in (0, 1):
        kwargs = {}
        for field in spec.used:
            if field in ("a_class", "b_class", "d_class"):
                kwargs[field] = TensorClass.KV if pick else TensorClass.ACTIVATION
            elif field == "flags":
                kwargs[field] = pick
            else:
                lo, hi = _range(field)
                kwargs[field] = hi if pick else (1 if field in spec.positive else lo)
        instr = Instruction(op, **kwargs)
        assert decode(encode(instr)) == instr
        assert assemble(disassemble([instr])) == [instr]


@settings(max_examples=50, deadline=None)
@given(st.lists(instructions(), max_size=12))
def test_programs_round_trip_as_bytes_and_text(program):
    data = encode_program(program)
    assert len(data) == INSTRUCTION_BYTES * len(program)
    assert decode_program(data) == program
    assert assemble(disassemble(data)) == program


def test_field_positions_follow_the_encoding_table():
    instr = Instruction(Opcode.MATMUL, d=0x11111111, a=0x22222222, b=0x33333333, m=0x4444,
                        n=0x5555, kb=0x6666, d_stride=0x7777, a_stride=0x88888888,
                        b_stride=0x9999, imm=-2, flags=1, a_class=TensorClass.WEIGHT,
                        b_class=TensorClass.KV, d_class=TensorClass.ACTIVATION)
    words = [(encode(instr) >> (32 * i)) & 0xFFFFFFFF for i in range(8)]
    assert words == [0x10 | 1 << 8 | 1 << 16 | 2 << 18, 0x11111111, 0x22222222, 0x33333333,
                     0x55554444, 0x77776666, 0x88888888, 0x00FE9999]
    smax = Instruction(Opcode.VSMAX, d=1, a=2, m=3, n=16, valid=5)
    assert encode(smax) >> (32 * 7 + 24) == 5
    # byte form is little-endian: the opcode is the first byte
    assert encode_program([smax])[0] == 0x24


def test_worked_example_of_the_docs_assembles():
    text = ("MATMUL d=acc:0 a=sp:0 b=sp:384 m=4 n=384 kb=12 d_stride=4 a_stride=4 "
            "b_stride=384 shift=0 accumulate=0 a_class=activation b_class=weight")
    (instr,) = assemble(text)
    assert instr.op == Opcode.MATMUL and instr.b_class == TensorClass.WEIGHT
    assert instr.queue == Queue.EXECUTE and not instr.accumulate
    assert disassemble([instr]).strip() == text


def test_make_accepts_opcode_names_of_immediate_and_flag():
    instr = Instruction.make("VSMAXO", d=8, a=0, m=2, n=16, init=True, valid=3)
    assert instr.init and instr.flags == 1 and instr.valid == 3
    assert Instruction.make("BARRIER", tag=-7).tag == -7
    assert Instruction.make(Opcode.ACCST, d=0, a=0, m=1, n=8, exp=-3,
                            d_class="kv").d_class == TensorClass.KV


# --------------------------------------------------------------------------------------------
# Rejections


@pytest.mark.parametrize("kwargs, message", [
    (dict(op=0x55), "Unknown opcode 85"),
    (dict(op="FOO"), "Unknown opcode 'FOO'"),
    (dict(op="LOAD", d=0, a=0, m=0, n=1), "LOAD: m must be an integer from 1 to 65535, not 0"),
    (dict(op="LOAD", d=0, a=0, m=1, n=0), "LOAD: n must be an integer from 1 to 65535, not 0"),
    (dict(op="MATMUL", m=1, n=1, kb=0), "MATMUL: kb must be an integer from 1 to 65535, not 0"),
    (dict(op="LOAD", d=-1, a=0, m=1, n=1), "LOAD: d must be an integer from 0 to 4294967295, "
                                           "not -1"),
    (dict(op="LOAD", d=1 << 32, m=1, n=1), "LOAD: d must be an integer from 0 to 4294967295"),
    (dict(op="STORE", m=1 << 16, n=1), "STORE: m must be an integer from 0 to 65535, not 65536"),
    (dict(op="MATMUL", m=1, n=1, kb=1, imm=128), "MATMUL: imm must be an integer from -128 to "
                                                 "127, not 128"),
    (dict(op="MATMUL", m=1, n=1, kb=1, imm=-129), "not -129"),
    (dict(op="VSMAX", m=1, n=1, valid=256), "VSMAX: valid must be an integer from 0 to 255"),
    (dict(op="MATMUL", m=1, n=1, kb=1, a_class=3), "MATMUL: a_class must be 0 (activation), "
                                                   "1 (weight) or 2 (kv), not 3"),
    (dict(op="MATMUL", m=1, n=1, kb=1, b_class="bias"), "MATMUL: b_class must be activation, "
                                                        "weight or kv, not 'bias'"),
    (dict(op="MATMUL", m=1, n=1, kb=1, flags=2), "MATMUL: flags bits 7:1 are reserved"),
    (dict(op="MATMUL", m=1.5, n=1, kb=1), "MATMUL: m must be an integer from 0 to 65535, "
                                          "not 1.5"),
    (dict(op="MATMUL", m=True, n=1, kb=1), "not True"),
    # unused fields must be zero
    (dict(op="LOAD", m=1, n=1, b=4), "LOAD: b is not an operand of LOAD and must be zero, not 4"),
    (dict(op="ACCST", m=1, n=8, flags=1), "ACCST: flags bit 0 is not an operand of ACCST"),
    (dict(op="VGELU", m=1, n=8, imm=1), "VGELU: imm is not an operand of VGELU"),
    (dict(op="VGELU", m=1, n=8, a_class=1), "VGELU: a_class is not an operand of VGELU"),
    (dict(op="MATMUL", m=1, n=1, kb=1, d_class=2), "MATMUL: d_class is not an operand"),
    (dict(op="MATMUL", m=1, n=1, kb=1, valid=2), "MATMUL: valid is not an operand"),
    (dict(op="ACCSCALE", m=1, n=1, a=3), "ACCSCALE: a is not an operand"),
    (dict(op="BARRIER", m=1), "BARRIER: m is not an operand"),
])
def test_instruction_rejects(kwargs, message):
    with pytest.raises(ValueError) as info:
        Instruction(**kwargs)
    assert message in str(info.value)


def _with_bits(instr, word, lo, width, value):
    raw = encode(instr)
    mask = ((1 << width) - 1) << (32 * word + lo)
    return (raw & ~mask) | (value << (32 * word + lo))


@pytest.mark.parametrize("word, lo, width, value, message", [
    (0, 0, 8, 0x03, "Unknown opcode 0x03"),
    (0, 0, 8, 0xFF, "Unknown opcode 0xff"),
    (0, 22, 10, 1, "word 0 bits 31:22 are reserved and must be zero, not 0x001"),
    (0, 31, 1, 1, "word 0 bits 31:22 are reserved"),
    (0, 9, 1, 1, "flags bits 7:1 are reserved"),
    (0, 16, 2, 3, "a_class code 3 is reserved"),
    (0, 18, 2, 3, "b_class code 3 is reserved"),
    (0, 20, 2, 3, "d_class code 3 is reserved"),
    (0, 20, 2, 1, "MATMUL: d_class is not an operand of MATMUL"),
    (7, 24, 8, 4, "MATMUL: valid is not an operand"),
    (4, 0, 16, 0, "MATMUL: m must be an integer from 1 to 65535, not 0"),
])
def test_decode_rejects(word, lo, width, value, message):
    instr = Instruction(Opcode.MATMUL, m=1, n=1, kb=1)
    with pytest.raises(ValueError) as info:
        decode(_with_bits(instr, word, lo, width, value))
    assert message in str(info.value)


@pytest.mark.parametrize("data, message", [
    (-1, "must be an integer from 0 to 2^256 - 1, not -1"),
    (1 << 256, "must be an integer from 0 to 2^256 - 1"),
    (b"\x01" * 31, "An instruction is 32 bytes, not 31"),
    ("LOAD", "must be an integer from 0 to 2^256 - 1, not 'LOAD'"),
])
def test_decode_rejects_bad_words(data, message):
    with pytest.raises(ValueError) as info:
        decode(data)
    assert message in str(info.value)


def test_decode_program_names_the_bad_instruction():
    good = encode_program([Instruction(Opcode.BARRIER)])
    with pytest.raises(ValueError, match="instruction 1: Unknown opcode 0x00"):
        decode_program(good + bytes(INSTRUCTION_BYTES))
    with pytest.raises(ValueError, match="whole number of 32-byte instructions, not 33"):
        decode_program(good + b"\x00")


def test_encode_rejects_non_instructions():
    with pytest.raises(TypeError, match="encode needs an Instruction, not str"):
        encode("BARRIER")


@pytest.mark.parametrize("text, message", [
    ("FOO d=1", "line 1: Unknown opcode 'FOO'"),
    ("BARRIER\nLOAD d=sp:0 a=dram:0 m=1 n=1 shift=1", "line 2: LOAD: unknown field 'shift'; "
                                                       "fields: d, a, m, n, d_stride, a_stride"),
    ("LOAD d=sp:0 a=dram:0 m=1 n=1 b=2", "LOAD: b is not an operand of LOAD"),
    ("LOAD d=acc:0 a=dram:0 m=1 n=1", "LOAD: d: the d operand of LOAD is in sp, not 'acc'"),
    ("LOAD d=sp:0 a=dram:x m=1 n=1", "LOAD: a must be an integer, not 'x'"),
    ("LOAD d=sp:0 a=dram:0 m 1 n=1", "LOAD: expected field=value, not 'm'"),
    ("LOAD d=sp:0 a=dram:0 m=1 m=2 n=1", "LOAD: field 'm' given twice"),
    ("LOAD d=sp:0 a=dram:0 m=0 n=1", "LOAD: m must be an integer from 1 to 65535, not 0"),
    ("MATMUL d=acc:0 a=sp:0 b=sp:0 m=1 n=1 kb=1 accumulate=2", "accumulate must be 0 or 1"),
    ("MATMUL d=acc:0 a=sp:0 b=sp:0 m=1 n=1 kb=1 a_class=foo",
     "MATMUL: a_class must be activation, weight or kv, not 'foo'"),
    ("MATMUL d=acc:0 a=sp:0 b=sp:0 m=1 n=1 kb=1 shift=200", "imm must be an integer from -128"),
    ("BARRIER imm=3", "BARRIER: unknown field 'imm'; fields: tag"),
    ("VADD d=sp:0 a=sp:0 b=sp:0 m=1 n=8 flags=1", "VADD: unknown field 'flags'"),
])
def test_assemble_rejects(text, message):
    with pytest.raises(ValueError) as info:
        assemble(text)
    assert message in str(info.value)


def test_assembler_accepts_comments_hex_and_bare_addresses():
    program = assemble("""
        # load two segments
        LOAD d=0x10 a=dram:0b101 m=4 n=2 d_stride=4 a_stride=100   # trailing comment
        BARRIER tag=-1
    """)
    assert program == [Instruction(Opcode.LOAD, d=16, a=5, m=4, n=2, d_stride=4, a_stride=100),
                       Instruction(Opcode.BARRIER, imm=-1)]


def test_make_rejects_unknown_and_duplicate_names():
    with pytest.raises(ValueError, match="VADD: unknown field 'shift'"):
        Instruction.make("VADD", m=1, n=8, shift=1)
    with pytest.raises(ValueError, match="field 'imm' given twice"):
        Instruction.make("VADD", m=1, n=8, exp=1, imm=2)
    with pytest.raises(ValueError, match="broadcast must be 0 or 1, not 2"):
        Instruction.make("VADD", m=1, n=8, broadcast=2)


def test_docs_worked_example_assembles_encodes_and_runs():
    """docs/isa.md's worked example: the block assembles and round-trips, MATMUL's encoding is
    the one printed there, the cycle model gives the table's total, and the program computes
    GELU(X W^T + b) within a few output ulps of float64."""
    import re
    from pathlib import Path

    import numpy as np

    from gen.config import load_config
    from software_model.accelerator import (AcceleratorState, cycle_model, execute,
                                            matrix_values, quantize_matrix)
    from software_model.mxint_gelu import gelu_erf64

    doc = (Path(__file__).resolve().parents[1] / "docs" / "isa.md").read_text()
    block = re.search(r"<!-- worked-example -->\n```\n(.*?)```", doc, re.S).group(1)
    program = assemble(block)
    assert disassemble(program) == block
    words = re.search(r"MATMUL encodes as \(word 0 first\) `([0-9a-f ]+)\n([0-9a-f ]+)`", doc)
    printed = (words.group(1) + " " + words.group(2)).split()
    mm = encode(program[4])
    assert printed == [f"{(mm >> (32 * i)) & 0xFFFFFFFF:08x}" for i in range(8)]
    p = load_config("configs/accelerator_small.yaml").accelerator_params()
    report = cycle_model(program, p)
    total = int(re.search(r"(\d+) cycles in all", doc).group(1))
    assert report.cycles == total
    rng = np.random.default_rng(0)
    state = AcceleratorState(p, 64)
    x, w, b = rng.normal(size=(4, 16)), rng.normal(size=(8, 16)) / 4, rng.normal(size=(1, 8)) / 4
    parts = [quantize_matrix(x, p, 0), quantize_matrix(w, p, 1), quantize_matrix(b, p, 0)]
    for (e, m), (base, stride) in zip(parts, [(0, 4), (8, 8), (24, 1)]):
        state.dram.write_matrix(base, stride, e, m, p)
    execute(program, state)
    got = matrix_values(*state.dram.read_matrix(40, 4, 1, 4), p)
    xv, wv, bv = (matrix_values(e, m, p, c) for (e, m), c in zip(parts, (0, 1, 0)))
    want = gelu_erf64(xv @ wv.T + bv)
    assert np.all(np.abs(got - want) <= 3 * 2.0 ** (np.log2(np.abs(want).max()) - 6))
