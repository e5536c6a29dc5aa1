"""Run an accelerator program on the Verilated RTL in the native harness (:mod:`cosim.fast`) with
the DRAM model as a C++ memory device (:mod:`cosim.memory_device`).

The program's instructions go in on ``commands`` (one 256-bit beat each,
``software_model.isa.encode``), its DRAM image is the memory's initial contents, ``events``
collects one beat per BARRIER (tag, cycle since reset, error); the run ends when every BARRIER's
event has come out (a program ending with a BARRIER has then finished every STORE).  Returns the
final DRAM as packed words and the events, which the caller compares with the golden model
(``software_model.accelerator.execute``) word for word.

Words are handled as ``uint32`` arrays ``(words, ceil(word_bits / 32))``: :func:`pack_words_u32`
and :func:`unpack_words_u32` convert them from and to decoded exponents and mantissas,
vectorised (the bit layout of ``software_model.accelerator.pack_word``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from cosim.fast import Design, FastSimError, Words, simulate
from cosim.memory_device import MemoryDevice
from software_model.accelerator import AcceleratorParams
from software_model.isa import Instruction, Opcode, encode

__all__ = ["pack_words_u32", "unpack_words_u32", "dram_image_u32", "RtlRun",
           "run_program_native", "command_words"]


def _fields(params: AcceleratorParams):
    """(offset, width) of every field of a word: mantissas, then the exponent."""
    w, B = params.element_bits, params.block_size
    return [(i * w, w) for i in range(B)] + [(B * w, params.exponent_width)]


def words_u32(params: AcceleratorParams) -> int:
    return -(-params.word_bits // 32)


def pack_words_u32(exps, mans, params: AcceleratorParams) -> np.ndarray:
    """Decoded words (``exps (n,)``, ``mans (n, B)``) -> ``uint32 (n, nw)``."""
    exps = np.asarray(exps, np.int64).reshape(-1)
    mans = np.asarray(mans, np.int64).reshape(-1, params.block_size)
    n, nw = exps.shape[0], words_u32(params)
    out = np.zeros((n, nw + 1), np.uint64)
    values = [mans[:, i] for i in range(params.block_size)] + [exps]
    for (off, width), v in zip(_fields(params), values):
        v = v.astype(np.uint64) & np.uint64((1 << width) - 1)
        q, s = off // 32, off % 32
        out[:, q] |= (v << np.uint64(s)) & np.uint64(0xFFFFFFFF)
        if s + width > 32:
            out[:, q + 1] |= v >> np.uint64(32 - s)
    return out[:, :nw].astype(np.uint32)


def unpack_words_u32(words, params: AcceleratorParams):
    """``uint32 (n, nw)`` -> ``(exps (n,), mans (n, B))`` (two's complement fields)."""
    words = np.asarray(words, np.uint64)
    n = words.shape[0]
    padded = np.concatenate([words, np.zeros((n, 1), np.uint64)], axis=1)
    out = []
    for off, width in _fields(params):
        q, s = off // 32, off % 32
        v = (padded[:, q] >> np.uint64(s)) | (padded[:, q + 1] << np.uint64(32 - s)
                                              if s else np.uint64(0))
        v = (v & np.uint64((1 << width) - 1)).astype(np.int64)
        out.append(np.where(v >> (width - 1), v - (1 << width), v))
    return out[-1], np.stack(out[:-1], axis=1)


def dram_image_u32(program, params: AcceleratorParams) -> np.ndarray:
    """A :class:`software_model.accelerator_programs.Program`'s initial DRAM, all
    ``program.dram_words`` words (zero where the image has nothing)."""
    image = np.zeros((program.dram_words, words_u32(params)), np.uint32)
    for address, exps, mans in program.dram:
        image[address:address + len(exps)] = pack_words_u32(exps, mans, params)
    return image


def command_words(instructions: Sequence[Instruction]) -> np.ndarray:
    """The ``commands`` beats: each instruction's 256 bits as eight ``uint32`` (word 0 first)."""
    raw = b"".join(encode(i).to_bytes(32, "little") for i in instructions)
    return np.frombuffer(raw, dtype="<u4").reshape(-1, 8).astype(np.uint32)


@dataclass
class RtlRun:
    """The RTL's side of a run: final DRAM (``uint32 (words, nw)``), the events ``(tag, cycle,
    error)``, the cycles to the last event, the harness's stall counters and the memory
    device's, and how long it took."""
    memory: np.ndarray
    events: list
    cycles: int
    sim_cycles: int
    stalled: dict
    memory_stats: dict
    loop_seconds: float
    loop_cpu_seconds: float
    wall_seconds: float
    build_seconds: float
    build_dir: str
    status: str = "ok"


def run_program_native(design, instructions: Sequence[Instruction], image: np.ndarray,
                       params: AcceleratorParams, *, latency: int = 8,
                       words_per_cycle: int = 1, profile: str = "smooth", seed: int = 1,
                       on_event: Optional[Callable[[int, int], None]] = None,
                       opt: Optional[str] = None,
                       timeout_cycles: int = 2_000_000) -> RtlRun:
    """Run ``instructions`` on the exported accelerator ``design`` (a folder or
    :class:`cosim.fast.Design`) from DRAM ``image`` (``uint32 (words, nw)``).  ``on_event(index,
    cycle)`` is called as each BARRIER's event comes out.  Raises
    :class:`cosim.fast.FastSimError` if the run does not finish (a timeout: no handshake on any
    stream or the memory for ``timeout_cycles``) or the decoder reports an error."""
    from cosim.fast import build
    if not isinstance(design, Design):
        design = Design.from_folder(design)
    barriers = sum(i.op == Opcode.BARRIER for i in instructions)
    device = MemoryDevice(words=int(image.shape[0]), latency=latency,
                          words_per_cycle=words_per_cycle, image=image)
    bld = build(design, opt=opt, devices=(device,))
    build_seconds = bld.seconds
    progress = None
    if on_event is not None:
        progress = {"events": lambda name, count, cycle: on_event(count - 1, cycle)}
    run = simulate(design, {"commands": Words(command_words(instructions))},
                   expect={"events": barriers}, profile=profile, seed=seed, opt=opt,
                   devices=(device,), progress=progress, timeout_cycles=timeout_cycles,
                   check=False)
    events = []
    if "events" in run.outputs:
        beats = run.beats("events")
        events = [(int(b["tag"]), int(b["cycle"]), int(b["error"])) for b in beats]
    result = RtlRun(memory=device.memory, events=events,
                    cycles=int(events[-1][1]) if events else run.total_cycles,
                    sim_cycles=run.sim_cycles, stalled=run.stalled,
                    memory_stats=device.stats, loop_seconds=run.loop_seconds,
                    loop_cpu_seconds=run.loop_cpu_seconds, wall_seconds=run.wall_seconds,
                    build_seconds=build_seconds, build_dir=str(bld.dir), status=run.status)
    errors = [e for e in events if e[2]]
    if run.status != "ok" or errors:
        what = f"decoder error event for opcode {errors[0][0]:#x}" if errors else run.status
        raise FastSimError(f"{design.top}: {what} after {run.sim_cycles} cycles; "
                           f"{len(events)} of {barriers} BARRIER events came out", run)
    return result
