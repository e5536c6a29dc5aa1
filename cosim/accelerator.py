"""cocotb regression of the whole accelerator (hw/accelerator.py) against the ISA-level golden
model (software_model.accelerator), on the DRAM model of cosim/dram.py.

Every test runs programs through the four stream ports only (``commands``, ``mem_req``,
``mem_resp``, ``events``; nothing is poked through VPI, so the native harness can run the same
programs): the DRAM starts with the program's image, the program ends by storing every
scratchpad word (and, for random programs, every accumulator word through ACCST) to DRAM, and
the whole DRAM must then equal the golden model's, word for word. Event tags must match the
golden model's BARRIERs.

* ``random_programs``: ``ACCELGEN_SAMPLES`` seeded random legal programs
  (``software_model.accelerator_programs.random_program``: every instruction, cross-queue
  hazards separated by barriers), split over the stress traffic profiles (the DRAM's request
  and response streams, the command source and the event sink all follow the profile).
* ``directed``: GEMM, GEMV, decode GEMM, LayerNorm, one attention head with more keys than the
  scratchpad holds, an FFN block (``directed_programs``), under ``mild`` and ``bursty``.
* ``cycle_model``: smooth traffic; every event's cycle against
  ``software_model.accelerator.cycle_model`` with the design's own pipeline depths: exact per
  instruction when instructions are isolated; for whole programs within ``CYCLE_BOUND``.

A failure names the seed, the program, the first differing DRAM word (address, expected, got)
and the command that reproduces it.
"""

from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from cosim.dram import DramModel, DramParams
from cosim.harness import STRESS_PROFILES, Testbench

#: the cycle model against the RTL on whole programs (smooth traffic): |measured - predicted|
#: at every event at most CYCLE_BOUND_CYCLES + CYCLE_BOUND_FRACTION * measured. What it does not
#: model: bank conflicts between queues, loads and stores sharing the memory port, VADD's two
#: operand streams colliding in a bank.
CYCLE_BOUND_CYCLES = 16
CYCLE_BOUND_FRACTION = 0.05

#: the DRAM behind the port in these tests
DRAM = DramParams(latency=int(os.environ.get("ACCELGEN_DRAM_LATENCY", "8")),
                  words_per_cycle=int(os.environ.get("ACCELGEN_DRAM_WORDS_PER_CYCLE", "1")))


class DramDriver:
    """Drives ``mem_req.ready`` and ``mem_resp`` from a :class:`cosim.dram.DramModel` every
    cycle and tells it what the design did."""

    def __init__(self, tb: Testbench, model: DramModel, word_bits: int):
        self.tb, self.model, self.word_bits = tb, model, word_bits
        dut = tb.dut
        self.req_valid, self.req_ready = dut.mem_req__valid, dut.mem_req__ready
        self.req_payload = dut.mem_req__payload
        self.resp_valid, self.resp_ready = dut.mem_resp__valid, dut.mem_resp__ready
        self.resp_payload = dut.mem_resp__payload
        layout = next(p for p in tb.manifest["ports"]
                      if p["name"] == "mem_req__payload")["layout"]["fields"]
        self.fields = {name: (f["offset"], f["layout"]["width"]) for name, f in layout.items()}
        self.req_ready.value = 0
        self.resp_valid.value = 0
        self.task = cocotb.start_soon(self._run())

    def _split(self, raw: int):
        def get(name):
            off, width = self.fields[name]
            return (raw >> off) & ((1 << width) - 1)
        data = get("data")
        mask = (1 << self.word_bits) - 1
        words = [(data >> (k * self.word_bits)) & mask for k in range(self.model.port_words)]
        return get("write"), get("addr"), get("count"), words

    async def _run(self):
        while True:
            model = self.model          # a test swaps in a fresh DRAM between programs
            cycle = self.tb.cycle
            ready, resp_valid, resp_words = model.drive(cycle)
            self.req_ready.value = int(ready)
            self.resp_valid.value = int(resp_valid)
            if resp_valid:
                raw = 0
                for k, w in enumerate(resp_words):
                    raw |= int(w) << (k * self.word_bits)
                self.resp_payload.value = raw
            await ReadOnly()
            request = None
            if ready and int(self.req_valid.value):
                request = self._split(int(self.req_payload.value))
            taken = resp_valid and bool(int(self.resp_ready.value))
            model.observe(cycle, request, taken)
            await RisingEdge(self.tb.clk)


def closed(program):
    """``program`` ending with a BARRIER (tag 0xEE added if it does not): its event is the one
    sign that every queue, the last STORE included, has finished."""
    import dataclasses

    from software_model.isa import Instruction, Opcode
    if program.instructions and program.instructions[-1].op == Opcode.BARRIER:
        return program
    return dataclasses.replace(program, instructions=list(program.instructions)
                               + [Instruction.make("BARRIER", tag=-18)])


def accelerator_kwargs(parameters) -> dict:
    """``hw.accelerator.Accelerator``'s keyword arguments from the manifest's plain
    ``parameters`` (the vector unit's specs rebuilt from their recorded fields)."""
    from cosim.mxint_common import with_formats
    from software_model.mxint_gelu import GeluSpec
    from software_model.mxint_layernorm import LayerNormSpec
    from software_model.mxint_softmax import SoftmaxSpec
    kw = dict(parameters)
    for name, spec in (("softmax", SoftmaxSpec), ("layernorm", LayerNormSpec),
                       ("gelu", GeluSpec)):
        if kw.get(name) is not None:
            kw[name] = spec(**with_formats(kw[name]))
    kw["class_widths"], kw["class_types"] = tuple(kw["class_widths"]), tuple(kw["class_types"])
    return kw


def golden_params(parameters):
    """The golden model's :class:`~software_model.accelerator.AcceleratorParams` from the
    manifest's plain ``parameters``."""
    from software_model.accelerator import AcceleratorParams, TensorFormat
    kw = accelerator_kwargs(parameters)
    kw.pop("pipelined", None)       # an RTL structure knob, not the golden model's
    formats = tuple(TensorFormat(t, w) for t, w in zip(kw.pop("class_types"),
                                                         kw.pop("class_widths")))
    return AcceleratorParams(formats=formats, **kw)


def _params(tb: Testbench):
    return golden_params(tb.parameters)


def _image(program, params) -> list[int]:
    from software_model.accelerator import pack_words
    image = [0] * program.dram_words
    for address, exps, mans in program.dram:
        for k, word in enumerate(pack_words(exps, mans, params)):
            image[address + k] = int(word)
    return image


class Session:
    """The command source, the event sink and the DRAM driver of one cocotb test (created once:
    each drives its signals every cycle); programs run one after the other on fresh DRAM
    images (the design keeps its memories: every program loads what it reads)."""

    def __init__(self, tb: Testbench):
        self.tb = tb
        self.params = _params(tb)
        self.source = tb.source("commands")
        self.sink = tb.sink("events")
        self.dram = DramModel(words=1, port_words=self.params.port_words, params=DRAM,
                              profile=tb.profile, seed=tb.seed)
        self.driver = DramDriver(tb, self.dram, self.params.word_bits)

    async def run(self, program, *, timeout_cycles: int = 400_000):
        """Play ``program`` on a fresh DRAM image; returns (DRAM words, events
        [(tag, cycle, error)], the cycle its first command was taken)."""
        from software_model.isa import Opcode, encode
        tb, params = self.tb, self.params
        assert program.instructions[-1].op == Opcode.BARRIER, "run closed(program)"
        dram = DramModel(words=program.dram_words, port_words=params.port_words, params=DRAM,
                         profile=tb.profile, seed=tb.seed)
        dram.load(0, _image(program, params))
        self.driver.model = dram
        first = len(self.source.beat_cycles)
        for instr in program.instructions:
            self.source.send_nowait({"instruction": encode(instr)})
        barriers = sum(i.op == Opcode.BARRIER for i in program.instructions)
        events = []
        for _ in range(barriers):
            ev = await self.sink.recv(timeout_cycles)
            events.append((ev["tag"], ev["cycle"], ev["error"]))
        while not dram.idle:
            await RisingEdge(tb.clk)
        return dram.dump(0, program.dram_words), events, self.source.beat_cycles[first]


def check_program(tb: Testbench, program, got, events) -> bool:
    """DRAM and event tags against the golden model; logs the first differing word."""
    from software_model.accelerator import pack_words
    params = _params(tb)
    state = program.run(params)
    want = [int(v) for v in pack_words(state.dram.exps, state.dram.mans, params)]
    sb = tb.scoreboard
    bad = [a for a, (g, w) in enumerate(zip(got, want)) if g != w]
    sb.checked += len(want)
    if bad:
        a = bad[0]
        msg = (f"MISMATCH {program.name} (seed {tb.seed}, profile {tb.profile.name}): "
               f"{len(bad)} DRAM words differ; first at address {a}: expected {want[a]:#x}, "
               f"got {got[a]:#x}")
        sb.mismatches.append(msg)
        tb.log.error(msg)
    tags = [(tag & 0xFF, 0) for tag, _index in state.events]
    sb.check(tags, [(t, e) for t, _c, e in events], f"{program.name} event tags")
    return not bad


def _costs(tb: Testbench):
    from hw.accelerator import Accelerator
    from software_model.accelerator import CycleCosts
    return CycleCosts(**Accelerator(**accelerator_kwargs(tb.parameters)).cycle_costs())


@cocotb.test()
@cocotb.parametrize(profile=STRESS_PROFILES)
async def random_programs(dut, profile):
    from software_model.accelerator_programs import random_program
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    session = Session(tb)
    params = session.params
    count = max(1, tb.samples // (50 * len(STRESS_PROFILES)))
    length = int(os.environ.get("ACCELGEN_PROGRAM_LENGTH", "40"))
    for k in range(count):
        seed = tb.seed * 1000 + STRESS_PROFILES.index(profile) * 100 + k
        program = closed(random_program(params, seed, length=length))
        got, events, _ = await session.run(program)
        check_program(tb, program, got, events)
    tb.record("programs", count)
    tb.finish()


@cocotb.test()
@cocotb.parametrize(profile=("mild", "bursty"))
async def directed(dut, profile):
    from software_model.accelerator_programs import directed_programs
    tb = await Testbench.start(dut)
    tb.use_profile(profile)
    session = Session(tb)
    names = []
    for program in map(closed, directed_programs(session.params)):
        got, events, _ = await session.run(program)
        check_program(tb, program, got, events)
        names.append(program.name)
    tb.record("programs", names)
    tb.finish()


@cocotb.test()
async def cycle_model(dut):
    """Smooth traffic: every event cycle against the model (directed programs and one random
    program), within the bound; the largest error is recorded."""
    from software_model.accelerator import MemoryModel, cycle_model as model_cycles
    from software_model.accelerator_programs import directed_programs, random_program
    tb = await Testbench.start(dut)
    tb.use_profile("smooth")
    session = Session(tb)
    params = session.params
    costs = _costs(tb)
    memory = MemoryModel(latency=DRAM.latency, words_per_cycle=DRAM.words_per_cycle)
    worst = {}
    programs = directed_programs(params) + [random_program(params, tb.seed, length=30)]
    for program in map(closed, programs):
        got, events, origin = await session.run(program)
        check_program(tb, program, got, events)
        report = model_cycles(program.instructions, params, memory, costs=costs)
        errors = []
        for (tag, counter, _e), (_t, predicted) in zip(events, report.events):
            cycle = counter - origin        # the model counts from the first command
            bound = CYCLE_BOUND_CYCLES + CYCLE_BOUND_FRACTION * cycle
            errors.append(cycle - predicted)
            tb.scoreboard.check(True, abs(cycle - predicted) <= bound,
                                f"{program.name} event {tag} at cycle {cycle}: model "
                                f"{predicted} (bound {bound:.0f})")
        worst[program.name] = {"events": len(errors), "cycles": events[-1][1] - origin,
                               "max_abs_error": max(map(abs, errors)),
                               "final_error": errors[-1]}
    tb.record("cycle_errors", worst)
    tb.finish()
