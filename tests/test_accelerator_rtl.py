"""The whole accelerator (hw/accelerator.py) in amaranth.sim against the ISA-level golden model,
on the DRAM model (cosim/dram.py): programs that LOAD operands, compute, STORE every result,
under memory stall profiles. The decoder's error event. Constructor rejections."""

from __future__ import annotations

import numpy as np
import pytest

from cosim.dram import DramModel, DramParams, simulate_with_dram
from hw.accelerator import Accelerator, event_layout
from software_model.accelerator import (AcceleratorParams, AcceleratorState, TensorFormat,
                                        execute, pack_words)
from software_model.isa import Instruction, encode

SMALL = dict(block_size=8, exponent_width=5,
             formats=(TensorFormat("mxint", 8), TensorFormat("mxint", 4), TensorFormat("int", 6)),
             rows=2, cols=2, sub_arrays=2, acc_width=28, acc_lsb=-12, acc_words=64,
             sp_words=256, sp_banks=4, address_bits=12, port_words=2, softmax_rows=8)


def accelerator_parameters(p: AcceleratorParams, **extra) -> dict:
    return dict(block_size=p.block_size, exponent_width=p.exponent_width,
                class_widths=tuple(f.element_width for f in p.formats),
                class_types=tuple(f.type for f in p.formats), rows=p.rows, cols=p.cols,
                sub_arrays=p.sub_arrays, acc_width=p.acc_width, acc_lsb=p.acc_lsb,
                acc_words=p.acc_words, sp_words=p.sp_words, sp_banks=p.sp_banks,
                address_bits=p.address_bits, port_words=p.port_words,
                softmax_rows=p.softmax_rows, softmax=p.softmax, layernorm=p.layernorm,
                gelu=p.gelu, **extra)


def _events(raw):
    layout = event_layout()
    out = []
    for cycle, v in raw:
        c = layout.from_bits(v)
        out.append((int(c.tag), int(c.cycle), int(c.error)))
    return out


def run_program(p, dram_init, program, *, profile="smooth", seed=1, latency=6, wpc=1,
                dram_words=1 << 12, max_cycles=200_000, pipelined=True):
    """RTL run: returns (DRAM words, events [(tag, cycle, error)], cycles)."""
    dut = Accelerator(**accelerator_parameters(p, pipelined=pipelined))
    dram = DramModel(words=dram_words, port_words=p.port_words,
                     params=DramParams(latency=latency, words_per_cycle=wpc), profile=profile,
                     seed=seed)
    dram.load(0, dram_init)
    barriers = sum(i.op.name == "BARRIER" for i in program)
    got, cycles = simulate_with_dram(
        dut, dram, inputs={"commands": [encode(i) for i in program]}, outputs=["events"],
        done=lambda ctx, out, cycle: len(out["events"]) >= barriers, max_cycles=max_cycles)
    return dram.dump(), _events(got["events"]), cycles


def golden(p, dram_init, program, dram_words=1 << 12):
    state = AcceleratorState(p, dram_words=dram_words)
    from software_model.accelerator import unpack_words
    e, m = unpack_words(dram_init, p)
    state.dram.scatter(np.arange(len(dram_init)), e, m)
    execute(program, state)
    return [int(v) for v in pack_words(state.dram.exps, state.dram.mans, p)], state


def random_words(p, rng, n):
    lo, hi = p.mantissa_range
    mans = rng.integers(lo, hi + 1, size=(n, p.block_size))
    exps = rng.integers(p.emin, p.emax + 1, size=n)
    return [int(v) for v in pack_words(exps, mans, p)]


def _first_difference(got, want):
    for a, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"DRAM word {a}: expected {w:#x}, got {g:#x}"
    return None


def _gemm_program(p):
    """LOAD A (4 x 16) and B^T (6 x 16) from DRAM, MATMUL, ACCST, VCAST to kv, STORE both."""
    I = Instruction.make
    return [
        I("LOAD", d=0, a=0, m=4, n=2, d_stride=4, a_stride=100),      # A: 2 block columns
        I("LOAD", d=16, a=200, m=6, n=2, d_stride=6, a_stride=50),    # B^T
        I("BARRIER", tag=1),
        I("MATMUL", d=0, a=0, b=16, m=4, n=6, kb=2, a_stride=4, b_stride=6, d_stride=4,
          shift=-2),
        I("ACCST", d=64, a=0, m=4, n=8, a_stride=4, d_stride=4),
        I("VCAST", d=80, a=64, m=4, n=8, a_stride=4, d_stride=4, d_class="kv", exp=-3),
        I("BARRIER", tag=2),
        I("STORE", d=1000, a=64, m=4, n=1, a_stride=4, d_stride=4),
        I("STORE", d=1100, a=80, m=4, n=1, a_stride=4, d_stride=4),
        I("BARRIER", tag=3),
    ]


@pytest.mark.parametrize("profile", ["bursty", "backpressure"])
def test_gemm_program_matches_golden(profile):
    p = AcceleratorParams(**SMALL)
    rng = np.random.default_rng(4)
    dram_init = random_words(p, rng, 400)
    program = _gemm_program(p)
    got, events, cycles = run_program(p, dram_init, program, profile=profile, seed=3)
    want, state = golden(p, dram_init, program)
    assert _first_difference(got, want) is None, _first_difference(got, want)
    assert [e[0] for e in events] == [t for t, _ in state.events] == [1, 2, 3]
    assert all(e[2] == 0 for e in events)
    assert events[0][1] < events[1][1] < events[2][1] <= cycles


@pytest.mark.parametrize("bad", [
    encode(Instruction.make("LOAD", d=0, a=0, m=1, n=1)) & ~(0xFFFF << 128) | (0x01),  # m = 0
    0x7F,                                                                # unknown opcode
    encode(Instruction.make("VCAST", d=0, a=0, m=1, n=8)) | (3 << 16),  # class code 3
])
def test_decoder_error_cases(bad):
    p = AcceleratorParams(**SMALL)
    dut = Accelerator(**accelerator_parameters(p))
    dram = DramModel(words=1 << 12, port_words=p.port_words)
    got, _ = simulate_with_dram(dut, dram, inputs={"commands": [bad]}, outputs=["events"],
                                done=lambda ctx, out, cycle: cycle > 12, max_cycles=40)
    events = _events(got["events"])
    assert [(e[0], e[2]) for e in events] == [(bad & 0xFF, 1)]


def test_illegal_instruction_reports_and_halts():
    """A reserved bit set: an error event with the opcode as tag, then nothing more is taken."""
    p = AcceleratorParams(**SMALL)
    bad = encode(Instruction.make("BARRIER", tag=5)) | (1 << 30)     # word 0 bit 30: reserved
    dut = Accelerator(**accelerator_parameters(p))
    dram = DramModel(words=1 << 12, port_words=p.port_words)
    got, _ = simulate_with_dram(
        dut, dram, inputs={"commands": [encode(Instruction.make("BARRIER", tag=1)), bad]},
        outputs=["events"], done=lambda ctx, out, cycle: cycle > 40, max_cycles=100)
    events = _events(got["events"])
    assert [(e[0], e[2]) for e in events] == [(1, 0), (0x30, 1)]


@pytest.mark.parametrize("kw,message", [
    (dict(sp_words=300), "Scratchpad words must be a power of two, not 300"),
    (dict(sp_banks=3), "Scratchpad banks must be a power of two, not 3"),
    (dict(queue_depth=0), "Queue depth must be a positive integer, not 0"),
    (dict(port_words=8), r"Port words must be at most the scratchpad banks \(4\), not 8"),
    (dict(rows=0), "Rows must be a positive integer, not 0"),
    (dict(pipelined=1), "Pipelined must be True or False, not 1"),
])
def test_rejects_bad_arguments(kw, message):
    p = AcceleratorParams(**SMALL)
    params = accelerator_parameters(p)
    params.update(kw)
    with pytest.raises(ValueError, match=message):
        Accelerator(**params)


def _isolated_program(p):
    """Every instruction once, each closed by a BARRIER (so its event marks its end)."""
    I = Instruction.make
    B = p.block_size
    nbl = p.layernorm.row_length // B
    body = [
        I("LOAD", d=0, a=0, m=200, n=1),
        I("LOAD", d=0, a=5, m=5, n=3, d_stride=5, a_stride=9),
        I("MATMUL", d=0, a=0, b=64, m=1, n=1, kb=1, a_stride=1, b_stride=1, d_stride=1),
        I("MATMUL", d=0, a=3, b=64, m=5, n=5, kb=5, a_stride=5, b_stride=5, d_stride=5),
        I("MATMUL", d=0, a=0, b=65, m=3, n=4, kb=2, a_stride=7, b_stride=9, d_stride=3),
        I("VCAST", d=100, a=0, m=3, n=16, d_stride=3, a_stride=3),
        I("VADD", d=100, a=0, b=51, m=4, n=16, d_stride=4, a_stride=4, b_stride=4),
        I("VGELU", d=100, a=0, m=3, n=16, d_stride=3, a_stride=3),
        I("VSMAX", d=100, a=0, m=3, n=16, d_stride=3, a_stride=3),
        I("VLNORM", d=100, a=0, b=60, m=2, n=nbl * B, d_stride=2, a_stride=2),
        I("ACCST", d=100, a=0, m=3, n=16, d_stride=3, a_stride=3),
        I("VSMAXO", d=100, a=0, m=3, n=16, d_stride=3, a_stride=3, init=1),
        I("ACCSCALE", d=0, m=3, n=5, d_stride=3),
        I("ACCNORM", d=100, a=0, m=3, n=8, d_stride=3, a_stride=3),
        I("STORE", d=800, a=100, m=5, n=3, d_stride=5, a_stride=7),
        I("STORE", d=900, a=100, m=1, n=1),
    ]
    prog = []
    for k, ins in enumerate(body):
        prog += [ins, I("BARRIER", tag=k)]
    return body, prog


@pytest.mark.parametrize("latency,wpc,pipelined", [(6, 1, True), (6, 1, False)])
def test_cycle_model_is_exact_for_each_instruction(latency, wpc, pipelined):
    """Smooth traffic, one instruction at a time: the model's event cycles equal the RTL's for
    every instruction (VADD's operand streams may collide in a bank: at most 2 cycles), with
    the accelerator pipelined (the default) and not: the design's cycle_costs() carry the
    difference; the results equal the golden model's either way."""
    from software_model.accelerator import CycleCosts, MemoryModel, cycle_model
    p = AcceleratorParams(**SMALL)
    rng = np.random.default_rng(1)
    body, prog = _isolated_program(p)
    init = random_words(p, rng, 600)
    dram, events, _ = run_program(p, init, prog, latency=latency, wpc=wpc,
                                  pipelined=pipelined)
    want, _ = golden(p, init, prog)
    assert _first_difference(dram, want) is None
    costs = CycleCosts(**Accelerator(**accelerator_parameters(
        p, pipelined=pipelined)).cycle_costs())
    model = cycle_model(prog, p, MemoryModel(latency=latency, words_per_cycle=wpc),
                        costs=costs)
    measured = [b[1] - a[1] for a, b in zip([(0, 0, 0)] + events, events)]
    predicted = [b[1] - a[1] for a, b in zip([(0, 0)] + list(model.events), model.events)]
    for instr, got, want in zip(body, measured, predicted):
        slack = 2 if instr.op.name == "VADD" else 0
        assert want <= got <= want + slack, (str(instr), got, want)


@pytest.mark.parametrize("name", ["small", "plena", "square"])
def test_presets_map_onto_the_rtl(name):
    """Each preset's config maps onto the component's parameters (gen/config/accelerator.py
    ``parameters()``) and the component takes them: the mapping and the RTL's own checks
    agree with the config's rules."""
    from gen.config import REPO_ROOT, load_config
    cfg = load_config(REPO_ROOT / "configs" / f"accelerator_{name}.yaml")
    params = cfg.parameters()
    p = cfg.accelerator_params()
    assert params["class_widths"] == tuple(f.element_width for f in p.formats)
    assert params["softmax"] == p.softmax and params["layernorm"] == p.layernorm
    dut = cfg.elaborate()
    assert isinstance(dut, Accelerator) and dut.port_words == p.port_words
    assert dut.word.size == p.word_bits
    if name == "small":     # the cycle model's defaults are accelerator_small's depths
        from software_model.accelerator import CycleCosts
        defaults = CycleCosts()
        measured = dut.cycle_costs()
        assert {k: getattr(defaults, k) for k in measured} == measured


def test_random_valid_configs_build():
    """Seeded random valid configs (gen.config.accelerator.random_accelerator_config): the
    RTL accepts every one the config's rules accept."""
    from gen.config import config_from_dict
    from gen.config.accelerator import random_accelerator_config
    for seed in range(8):
        cfg = config_from_dict(random_accelerator_config(seed))
        dut = Accelerator(**cfg.parameters())
        assert dut.sp_words == cfg.scratchpad.words
