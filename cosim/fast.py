"""Native stream harness: C++ generated from ``manifest.json`` drives the Verilated model.

cocotb drives every beat from Python (2-4 k cycles/s on the systolic arrays); this harness runs the
same stream protocol in a C++ loop around the Verilated model, so long workloads (tiled GEMMs,
whole encoder layers) run at the speed of the model itself:

* Input beats of every input stream are packed by numpy (:mod:`cosim.payload`) into ``uint32``
  words and handed over as binary files in a scratch folder (tmpfs ``/dev/shm`` when there is one,
  so the "files" are shared memory).
* Every cycle follows the same rules as the cocotb (:mod:`cosim.harness`) and ``amaranth.sim``
  (:mod:`cosim.pysim`) harnesses, with the :mod:`cosim.traffic` profile computed by the same
  integer arithmetic in C++: a source offers its next beat at a cycle its pattern does not block and
  holds it (valid high, payload unchanged) until taken; a sink's ``ready`` is low exactly at its
  pattern's blocked cycles. Cycle 0 is the first cycle after reset is released (three reset
  cycles, as ``Testbench.start``).
* Output beats and the handshake cycle of every beat of every stream come back as numpy arrays.

Stopping: once every input beat is taken and each output stream with an expected count has that
many beats, the run drains ``drain_cycles`` more cycles with outputs always ready (a beat beyond
the expected count is an error, as in :func:`cosim.pysim.run_streams`). Output streams without an
expected count end the run when none of them has been valid for ``idle_cycles`` cycles. No
handshake for ``timeout_cycles`` cycles before that is a timeout.

This module works from plain data (an exported design folder, or a Verilog path and the manifest
dict); it does not import the generators.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cosim.payload import columns_from_values, pack_beats, to_values, unpack_beats, words_for
from cosim.traffic import Profile, profile as make_profile
from cosim.verilator import Build, BuildError, build_model, cpp_port_name

__all__ = ["Design", "Stream", "FastRun", "FastSimError", "Words", "simulate", "build",
           "harness_sources", "cpp_port_name", "bare_loop", "read_inputs_npz", "write_run_npz",
           "run_summary", "TRAFFIC_H", "RESET_CYCLES"]

#: Clock edges with reset high before cycle 0 (as ``cosim.harness.Testbench.start``).
RESET_CYCLES = 3


class FastSimError(AssertionError):
    """The simulation ended abnormally (timeout, extra output beats); the partial run is kept."""

    def __init__(self, message: str, run: "FastRun | None" = None):
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class Stream:
    name: str
    direction: str          # "input" (we drive it) or "output" (we sink it)
    layout: dict

    @property
    def width(self) -> int:
        return self.layout["width"]

    @property
    def nwords(self) -> int:
        return words_for(self.width)


@dataclass
class Design:
    """A generated design as plain data: the Verilog file and its manifest."""

    verilog: Path
    manifest: dict

    @classmethod
    def from_folder(cls, folder: str | Path) -> "Design":
        """A folder written by ``accelgen rtl`` (verilog and manifest.json)."""
        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        return cls(folder / manifest["files"][0], manifest)

    @property
    def top(self) -> str:
        return self.manifest["top"]

    @property
    def name(self) -> str:
        return self.manifest.get("name", self.top)

    @property
    def streams(self) -> list[Stream]:
        ports = {p["name"]: p for p in self.manifest["ports"]}
        out = []
        for name, port in ports.items():
            if not name.endswith("__payload"):
                continue
            base = name[: -len("__payload")]
            if f"{base}__valid" in ports and f"{base}__ready" in ports:
                out.append(Stream(base, port["direction"], port["layout"]))
        return out

    @property
    def inputs(self) -> list[Stream]:
        return [s for s in self.streams if s.direction == "input"]

    @property
    def outputs(self) -> list[Stream]:
        return [s for s in self.streams if s.direction == "output"]

    def stream(self, name: str) -> Stream:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(f"{self.top} has no stream {name!r}; streams: "
                       + ", ".join(s.name for s in self.streams))

    def other_inputs(self) -> list[dict]:
        """Input ports that are neither clock, reset nor part of a stream (held at zero)."""
        stream_ports = {f"{s.name}__{m}" for s in self.streams for m in ("valid", "ready",
                                                                          "payload")}
        return [p for p in self.manifest["ports"] if p["direction"] == "input"
                and p["name"] not in stream_ports | {"clk", "rst"}]


@dataclass(frozen=True)
class Words:
    """Already-packed beats: ``uint32`` words ``[beats, ceil(width / 32)]`` (see cosim.payload)."""

    words: np.ndarray


@dataclass
class FastRun:
    """What came out: beats per output stream (column trees of numpy arrays, see
    :mod:`cosim.payload`), the handshake cycle of every beat of every stream, and timing."""

    design: Design
    outputs: dict[str, Any] = field(default_factory=dict)
    words: dict[str, np.ndarray] = field(default_factory=dict)
    cycles: dict[str, np.ndarray] = field(default_factory=dict)
    total_cycles: int = 0       # last handshake cycle + 1
    sim_cycles: int = 0         # cycles simulated, including drain / idle
    loop_seconds: float = 0.0   # the C++ loop alone
    loop_cpu_seconds: float = 0.0   # its CPU time (robust on a shared machine)
    wall_seconds: float = 0.0   # pack, write, run, read and unpack (not the build)
    build_seconds: float = 0.0  # building the simulator, or finding it in the cache
    status: str = "ok"
    profile: str = ""
    seed: int = 0
    build: Build | None = None
    #: cycles each stream's beat waited: a source offered and not taken, a sink valid and
    #: not ready (streams driven by devices: see the device's ``stats``)
    stalled: dict = field(default_factory=dict)

    def beats(self, name: str) -> list:
        """Output beats of ``name`` as Python values (as :func:`cosim.harness.unpack` gives)."""
        return to_values(self.design.stream(name).layout, self.outputs[name])

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per second of the whole call (packing and file I/O included)."""
        return self.sim_cycles / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def loop_cycles_per_second(self) -> float:
        return self.sim_cycles / self.loop_seconds if self.loop_seconds else 0.0


# ------------------------------------------------------------------------------------------------
# C++ sources
# ------------------------------------------------------------------------------------------------

#: Traffic patterns in C++: the same integer arithmetic as :func:`cosim.traffic.blocked_cycles`
#: (SplitMix64 of the seed, the stream name's CRC-32 and the burst index). A test compiles this
#: header alone and compares its masks with ``Pattern.blocked``.
TRAFFIC_H = r"""// accelgen traffic patterns: must equal cosim/traffic.py bit for bit.
#pragma once
#include <cstdint>
#include <cstring>

namespace accelgen {

static inline uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint32_t crc32(const char* s) {      // zlib.crc32
    uint32_t crc = 0xFFFFFFFFu;
    for (const unsigned char* p = (const unsigned char*)s; *p; ++p) {
        crc ^= *p;
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

// blocked(cycle) = top 32 bits of splitmix64(key ^ splitmix64(cycle / burst)) < threshold,
// key = (seed mod 2^32) << 32 | crc32(stream); threshold 0: never, >= 2^32: always.
struct Gate {
    uint64_t key = 0, threshold = 0, burst = 1, block = ~0ULL, in_block = 0;
    bool state = false, never = true, always = false;
    void init(uint64_t seed, const char* stream, uint64_t thr, uint64_t burst_) {
        key = ((seed & 0xFFFFFFFFULL) << 32) | crc32(stream);
        threshold = thr;
        burst = burst_ ? burst_ : 1;
        never = thr == 0;
        always = thr >= (1ULL << 32);
    }
    inline bool blocked(uint64_t cycle) {
        if (never) return false;
        if (always) return true;
        uint64_t b = cycle / burst;
        if (b != block) {
            block = b;
            state = (splitmix64(key ^ splitmix64(b)) >> 32) < threshold;
        }
        return state;
    }
};

}  // namespace accelgen
"""

_HARNESS_CPP = r"""// Generated by cosim/fast.py from the manifest of @TOP@: native stream harness.
// Usage: <binary> --accelgen-fast key=value ...   (see cosim/fast.py)
// Included by the executable's one main .cpp (one compile unit: the headers are parsed once).
#pragma once
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#include "accelgen_traffic.h"

namespace accelgen {

struct Source {
    const char* name;
    uint32_t nwords;
    std::vector<uint32_t> data;
    uint64_t n = 0, sent = 0, stalled = 0;
    bool offered = false;
    Gate gate;
    std::vector<uint64_t> cycles;
};

struct Sink {
    const char* name;
    uint32_t nwords;
    int64_t expect = -1;
    uint64_t received = 0, stalled = 0;
    bool progress = false;
    Gate gate;
    std::vector<uint32_t> data;
    std::vector<uint64_t> cycles;
};

static std::string arg(int argc, char** argv, const char* key, const char* dflt) {
    size_t k = strlen(key);
    for (int i = 0; i < argc; ++i)
        if (!strncmp(argv[i], key, k) && argv[i][k] == '=') return std::string(argv[i] + k + 1);
    return dflt;
}
static uint64_t argu(int argc, char** argv, const char* key, uint64_t dflt) {
    std::string v = arg(argc, argv, key, "");
    return v.empty() ? dflt : strtoull(v.c_str(), nullptr, 0);
}
static int64_t argi(int argc, char** argv, const char* key, int64_t dflt) {
    std::string v = arg(argc, argv, key, "");
    return v.empty() ? dflt : strtoll(v.c_str(), nullptr, 0);
}

static double cpu_now() {     // CPU time of this process: meaningful on a shared machine
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static bool read_file(const std::string& path, std::vector<uint32_t>& out) {
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    out.resize(size / 4);
    size_t got = size ? fread(out.data(), 4, out.size(), f) : 0;
    fclose(f);
    return got == out.size();
}

template <typename T>
static void write_file(const std::string& path, const std::vector<T>& v) {
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) { fprintf(stderr, "accelgen-fast: cannot write %s\n", path.c_str()); exit(2); }
    if (!v.empty()) fwrite(v.data(), sizeof(T), v.size(), f);
    fclose(f);
}

// ---- ports of @TOP@ (generated) --------------------------------------------------------------
@PORT_FUNCS@
@DEVICE_INCLUDE@

static int run(int argc, char** argv, bool bare) {
    std::string dir = arg(argc, argv, "dir", ".");
    uint64_t seed = argu(argc, argv, "seed", 1);
    uint64_t max_cycles = argu(argc, argv, "max_cycles", ~0ULL);
    uint64_t drain = argu(argc, argv, "drain", 16);
    uint64_t idle = argu(argc, argv, "idle", 1000);
    uint64_t timeout = argu(argc, argv, "timeout", 100000);
    uint64_t reset = argu(argc, argv, "reset", @RESET@);

    const int NIN = @NIN@, NOUT = @NOUT@;
    Source src[NIN > 0 ? NIN : 1];
    Sink snk[NOUT > 0 ? NOUT : 1];
@INIT_STREAMS@
    for (int i = 0; i < NIN; ++i) {
        src[i].gate.init(seed, src[i].name, argu(argc, argv, "src_thr", 0),
                         argu(argc, argv, "src_burst", 1));
        if (bare) continue;
        std::string path = dir + "/in_" + src[i].name + ".bin";
        if (!read_file(path, src[i].data)) {
            fprintf(stderr, "accelgen-fast: cannot read %s\n", path.c_str());
            return 2;
        }
        src[i].n = src[i].data.size() / src[i].nwords;
    }
    bool all_expected = true;
    for (int i = 0; i < NOUT; ++i) {
        snk[i].gate.init(seed, snk[i].name, argu(argc, argv, "snk_thr", 0),
                         argu(argc, argv, "snk_burst", 1));
        snk[i].expect = argi(argc, argv, (std::string("expect_") + snk[i].name).c_str(), -1);
        snk[i].progress = argu(argc, argv, (std::string("progress_") + snk[i].name).c_str(), 0);
        if (snk[i].expect < 0) all_expected = false;
    }
    const int NDEV = @NDEV@;
    MemoryDevice dev[NDEV > 0 ? NDEV : 1];
@DEVICE_INIT@

    VerilatedContext ctx;
    Vtop* top = new Vtop{&ctx, "TOP"};
    top->clk = 0;
    top->rst = 1;
    top->eval();
    for (uint64_t r = 0; r < reset; ++r) {
        top->clk = 1; top->eval();
        top->clk = 0; top->eval();
    }
    top->rst = 0;

    const char* status = "ok";
    uint64_t cycle = 0, last_event = 0, handshakes = 0;
    bool any_event = false, draining = false;
    uint64_t done_at = 0, quiet = 0;
    std::vector<uint32_t> scratch(64);
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;
    auto t0 = std::chrono::steady_clock::now();
    double c0 = cpu_now();

    if (bare) {
        // The ceiling: every input valid with fresh pseudo-random payload bits each cycle, every
        // output always ready, nothing recorded.
        uint64_t cycles = argu(argc, argv, "cycles", 1000000);
        for (cycle = 0; cycle < cycles; ++cycle) {
@BARE_BODY@
            top->eval();
            top->clk = 1; top->eval();
            top->clk = 0;
        }
        handshakes = rng;   // keep the generator live
    } else {
        for (;;) {
            if (cycle >= max_cycles) { status = "max_cycles"; break; }
@SET_INPUTS@
@DEVICE_DRIVE@
            top->eval();
            bool event = false, out_valid = false;
@SAMPLE@
@DEVICE_SAMPLE@
            top->clk = 1; top->eval();
            top->clk = 0;
@DEVICE_COMMIT@
            if (event) { last_event = cycle; any_event = true; }
            ++cycle;
            if (draining) {
                if (cycle - done_at >= drain) break;
                continue;
            }
            bool all_sent = true;
            for (int i = 0; i < NIN; ++i) all_sent = all_sent && src[i].sent == src[i].n;
            bool counts = true;
            for (int i = 0; i < NOUT; ++i)
                if (snk[i].expect >= 0 && (int64_t)snk[i].received < snk[i].expect) counts = false;
            if (all_sent && counts) {
                if (all_expected) { draining = true; done_at = cycle; if (!drain) break; continue; }
                // Streams without an expected count end the run by staying invalid.
                quiet = out_valid ? 0 : quiet + 1;
                if (quiet >= idle) break;
                if (quiet) continue;
            }
            if (cycle - (any_event ? last_event + 1 : 0) >= timeout) {
                status = "timeout";
                break;
            }
        }
    }
    auto t1 = std::chrono::steady_clock::now();
    double seconds = std::chrono::duration<double>(t1 - t0).count();
    double cpu_seconds = cpu_now() - c0;
    for (int i = 0; i < NOUT; ++i)
        if (snk[i].expect >= 0 && (int64_t)snk[i].received > snk[i].expect) status = "extra_beats";

    if (!bare) {
        for (int i = 0; i < NIN; ++i)
            write_file(dir + "/cyc_" + src[i].name + ".bin", src[i].cycles);
        for (int i = 0; i < NOUT; ++i) {
            write_file(dir + "/out_" + snk[i].name + ".bin", snk[i].data);
            write_file(dir + "/cyc_" + snk[i].name + ".bin", snk[i].cycles);
        }
@DEVICE_FINISH@
    }
    for (int i = 0; i < NDEV; ++i)
        if (dev[i].bad) status = "bad_request";
    FILE* f = fopen((dir + "/result.json").c_str(), "w");
    if (!f) { fprintf(stderr, "accelgen-fast: cannot write result.json\n"); return 2; }
    fprintf(f, "{\"status\": \"%s\", \"sim_cycles\": %llu, \"total_cycles\": %llu, "
               "\"loop_seconds\": %.9f, \"loop_cpu_seconds\": %.9f, \"handshakes\": %llu, "
               "\"sent\": {", status,
            (unsigned long long)cycle, (unsigned long long)(any_event ? last_event + 1 : 0),
            seconds, cpu_seconds, (unsigned long long)handshakes);
    for (int i = 0; i < NIN; ++i)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", src[i].name, (unsigned long long)src[i].sent);
    fprintf(f, "}, \"received\": {");
    for (int i = 0; i < NOUT; ++i)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", snk[i].name,
                (unsigned long long)snk[i].received);
    fprintf(f, "}, \"stalled\": {");
    for (int i = 0; i < NIN; ++i)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", src[i].name,
                (unsigned long long)src[i].stalled);
    for (int i = 0; i < NOUT; ++i)
        fprintf(f, "%s\"%s\": %llu", i || NIN ? ", " : "", snk[i].name,
                (unsigned long long)snk[i].stalled);
    fprintf(f, "}, \"devices\": {");
    for (int i = 0; i < NDEV; ++i) {
        if (i) fprintf(f, ", ");
        dev[i].json(f);
    }
    fprintf(f, "}}\n");
    fclose(f);
    top->final();
    delete top;
    return 0;
}

}  // namespace accelgen

static int accelgen_fast_main(int argc, char** argv) {
    std::string mode = accelgen::arg(argc, argv, "mode", "run");
    return accelgen::run(argc, argv, mode == "bare");
}
"""

_FAST_MAIN_CPP = r"""// Native harness executable: main() is the accelgen harness.
#include <cstring>
#include "accelgen_harness.h"
double sc_time_stamp() { return 0; }
int main(int argc, char** argv) {
    if (argc > 1 && !strcmp(argv[1], "--accelgen-fast"))
        return accelgen_fast_main(argc - 2, argv + 2);
    return accelgen_fast_main(argc - 1, argv + 1);
}
"""

_COCOTB_MAIN_CPP = r"""// cocotb's Verilator main and the accelgen native harness in one executable,
// so a test that runs both on one design shares one build: `--accelgen-fast` as the first
// argument selects the native harness, anything else is cocotb's main, untouched.
#include <cstring>
#define main accelgen_cocotb_main
#include "@COCOTB_MAIN@"
#undef main
#include "accelgen_harness.h"
int main(int argc, char** argv) {
    if (argc > 1 && !strcmp(argv[1], "--accelgen-fast"))
        return accelgen_fast_main(argc - 2, argv + 2);
    return accelgen_cocotb_main(argc, argv);
}
"""


def _ctype(width: int) -> str:
    if width <= 8:
        return "CData"
    if width <= 16:
        return "SData"
    if width <= 32:
        return "IData"
    if width <= 64:
        return "QData"
    return "wide"


def _port_funcs(design: Design) -> str:
    lines = []
    for s in design.streams:
        member = cpp_port_name(f"{s.name}__payload")
        ct = _ctype(s.width)
        if s.direction == "input":
            lines.append(f"static inline void put_{s.name}(Vtop* t, const uint32_t* w) {{")
            if ct == "wide":
                lines.append(f"    for (int i = 0; i < {s.nwords}; ++i) t->{member}[i] = w[i];")
            elif ct == "QData":
                hi = "((QData)w[1] << 32)" if s.nwords > 1 else "0"
                lines.append(f"    t->{member} = (QData)w[0] | {hi};")
            else:
                lines.append(f"    t->{member} = ({ct})w[0];")
            lines.append("}")
        else:
            lines.append(f"static inline void get_{s.name}(Vtop* t, uint32_t* w) {{")
            if ct == "wide":
                lines.append(f"    for (int i = 0; i < {s.nwords}; ++i) w[i] = t->{member}[i];")
            elif ct == "QData":
                lines.append(f"    w[0] = (uint32_t)t->{member};")
                if s.nwords > 1:
                    lines.append(f"    w[1] = (uint32_t)(t->{member} >> 32);")
            else:
                lines.append(f"    w[0] = (uint32_t)t->{member};")
            lines.append("}")
    return "\n".join(lines)


def harness_sources(design: Design, devices: tuple = ()) -> dict[str, str]:
    """The generated C++ of ``design``'s native harness (file name -> text).

    ``devices``: models attached to stream pairs instead of sources and sinks (e.g.
    :class:`cosim.memory_device.MemoryDevice` on a memory port); their streams are driven by
    the device's C++ (snippets from its ``cpp(design, index)``)."""
    claimed = {name for d in devices for name in d.streams()}
    for name in claimed:
        design.stream(name)                       # raises naming the design's streams
    ins = [s for s in design.inputs if s.name not in claimed]
    outs = [s for s in design.outputs if s.name not in claimed]
    snippets = [d.cpp(design, i) for i, d in enumerate(devices)]
    init = []
    for i, s in enumerate(ins):
        init.append(f'    src[{i}].name = "{s.name}"; src[{i}].nwords = {s.nwords};')
    for i, s in enumerate(outs):
        init.append(f'    snk[{i}].name = "{s.name}"; snk[{i}].nwords = {s.nwords};')
    for p in design.other_inputs():
        init.append(f"    // {p['name']}: not a stream port, held at zero")
    set_inputs, sample, bare = [], [], []
    for i, s in enumerate(ins):
        v, pl = cpp_port_name(f"{s.name}__valid"), cpp_port_name(f"{s.name}__payload")
        set_inputs += [
            f"            {{ Source& s = src[{i}];",
            "              if (!s.offered && s.sent < s.n && !s.gate.blocked(cycle)) {",
            f"                  put_{s.name}(top, &s.data[s.sent * {s.nwords}]);",
            "                  s.offered = true;",
            "              }",
            f"              top->{v} = s.offered; }}",
        ]
        r = cpp_port_name(f"{s.name}__ready")
        sample += [
            f"            if (src[{i}].offered && top->{r}) {{",
            f"                src[{i}].cycles.push_back(cycle); ++src[{i}].sent;",
            f"                src[{i}].offered = false; event = true; ++handshakes;",
            f"            }} else if (src[{i}].offered) ++src[{i}].stalled;",
        ]
        mask_last = (1 << (s.width - 32 * (s.nwords - 1))) - 1
        bare += [
            f"            for (int i = 0; i < {s.nwords}; ++i) {{",
            "                rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;",
            "                scratch[i] = (uint32_t)rng;",
            "            }",
            f"            scratch[{s.nwords - 1}] &= {mask_last:#x}u;",
            f"            put_{s.name}(top, scratch.data());",
            f"            top->{v} = 1;",
        ]
    for i, s in enumerate(outs):
        r = cpp_port_name(f"{s.name}__ready")
        v = cpp_port_name(f"{s.name}__valid")
        set_inputs.append(f"            top->{r} = draining ? 1 : !snk[{i}].gate.blocked(cycle);")
        sample += [
            f"            if (top->{v}) {{",
            "                out_valid = true;",
            f"                if (top->{r}) {{",
            f"                    Sink& o = snk[{i}];",
            f"                    get_{s.name}(top, scratch.data());",
            f"                    o.data.insert(o.data.end(), scratch.begin(), scratch.begin() + "
            f"{s.nwords});",
            "                    o.cycles.push_back(cycle); ++o.received; event = true; "
            "++handshakes;",
            "                    if (o.progress) { printf(\"beat %s %llu %llu\\n\", o.name, "
            "(unsigned long long)o.received, (unsigned long long)cycle); fflush(stdout); }",
            f"                }} else ++snk[{i}].stalled;",
            "            }",
        ]
        bare.append(f"            top->{r} = 1;")
    if max((s.nwords for s in design.streams), default=1) > 64:
        raise ValueError("payloads wider than 2048 bits are not supported by the native harness")
    for snip in snippets:
        bare.append(snip["bare"])
    dev = {key: "\n".join(snip[key] for snip in snippets)
           for key in ("init", "drive", "sample", "commit", "finish")}
    cpp = (_HARNESS_CPP.replace("@TOP@", design.top)
           .replace("@PORT_FUNCS@", _port_funcs(design))
           .replace("@DEVICE_INCLUDE@", '#include "accelgen_memory_device.h"' if devices
                    else "struct MemoryDevice { bool bad = false; void json(FILE*) {} };")
           .replace("@NDEV@", str(len(devices)))
           .replace("@DEVICE_INIT@", dev["init"]).replace("@DEVICE_DRIVE@", dev["drive"])
           .replace("@DEVICE_SAMPLE@", dev["sample"]).replace("@DEVICE_COMMIT@", dev["commit"])
           .replace("@DEVICE_FINISH@", dev["finish"])
           .replace("@RESET@", str(RESET_CYCLES))
           .replace("@NIN@", str(len(ins))).replace("@NOUT@", str(len(outs)))
           .replace("@INIT_STREAMS@", "\n".join(init))
           .replace("@SET_INPUTS@", "\n".join(set_inputs))
           .replace("@SAMPLE@", "\n".join(sample))
           .replace("@BARE_BODY@", "\n".join(bare)))
    out = {"accelgen_traffic.h": TRAFFIC_H, "accelgen_harness.h": cpp}
    if devices:
        from cosim.memory_device import MEMORY_DEVICE_H
        out["accelgen_memory_device.h"] = MEMORY_DEVICE_H
    return out


# ------------------------------------------------------------------------------------------------
# Builds
# ------------------------------------------------------------------------------------------------


def build(design: Design, *, harness: str = "fast", opt: str | None = None,
          waves: bool = False, devices: tuple = ()) -> Build:
    """Build ``design`` with the native harness (cached, see :mod:`cosim.verilator`).

    ``harness="fast"``: the native harness alone (default ``-O2``, for long workloads).
    ``harness="cocotb"``: cocotb's Verilator main plus the native harness in one executable
    (default ``-O0``); the runner (``gen/cosim_run.py``) uses this build for every cocotb regression, so a test
    that also runs the native harness on a preset needs no build of its own. ``waves`` (cocotb
    only): FST tracing, or VCD where the compiler lacks ``lz4.h`` (which Verilator's FST writer
    needs).
    """
    sources = harness_sources(design, tuple(devices))
    if harness == "fast":
        if not design.streams:
            raise ValueError(f"{design.top} has no stream ports; the native harness drives "
                             "streams")
        if waves:
            raise ValueError("waveforms come from the cocotb build (accelgen cosim --waves)")
        sources["accelgen_main.cpp"] = _FAST_MAIN_CPP
        return build_model(design.verilog, design.top, harness="fast", sources=sources,
                           main="accelgen_main.cpp", opt=opt or "O2")
    if harness != "cocotb":
        raise ValueError(f"harness must be 'fast' or 'cocotb', not {harness!r}")
    import cocotb_tools.config as cocotb_config

    libs = cocotb_config.libs_dir
    main_cpp = cocotb_config.share_dir / "lib" / "verilator" / "verilator.cpp"
    sources["accelgen_main.cpp"] = _COCOTB_MAIN_CPP.replace("@COCOTB_MAIN@", str(main_cpp))
    # cocotb's main is included by path: hash its text too, so a cocotb upgrade rebuilds.
    sources["cocotb_verilator.cpp.ref"] = main_cpp.read_text()
    # Only the top-level ports are made visible to VPI (cocotb's runner would pass
    # --public-flat-rw, which quadruples the C++ of a 16x8 array and its compile time): the
    # testbenches only touch ports.
    common = dict(sources=sources, main="accelgen_main.cpp", opt=opt or "O0",
                  ldflags=f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator",
                  make_vars=[f"VM_TRACE={int(waves)}"])
    vargs = ["--vpi", "--public-depth", "1"]
    if not waves:
        return build_model(design.verilog, design.top, harness="cocotb", verilator_args=vargs,
                           **common)
    try:
        return build_model(design.verilog, design.top, harness="cocotb-fst",
                           verilator_args=[*vargs, "--trace-fst", "--trace-structs"], **common)
    except BuildError as exc:
        if "lz4.h" not in str(exc) and "lz4.h" not in _log_text(exc):
            raise
    return build_model(design.verilog, design.top, harness="cocotb-vcd",
                       verilator_args=[*vargs, "--trace", "--trace-structs"], **common)


def _log_text(exc: Exception) -> str:
    import re
    match = re.search(r"log: (\S+)", str(exc))
    try:
        return Path(match.group(1)).read_text() if match else ""
    except OSError:
        return ""


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def _scratch_dir() -> str:
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.mkdtemp(prefix="accelgen-fast-", dir=base)


def _pack_stream(stream: Stream, beats: Any) -> np.ndarray:
    if isinstance(beats, Words):
        words = np.ascontiguousarray(beats.words, dtype=np.uint32)
        if words.ndim != 2 or words.shape[1] != stream.nwords:
            raise ValueError(f"{stream.name}: packed words must have shape (beats, "
                             f"{stream.nwords}), not {words.shape}")
        return words
    if isinstance(beats, (list, tuple)):
        if not beats:
            return np.zeros((0, stream.nwords), dtype=np.uint32)
        beats = columns_from_values(stream.layout, list(beats))
    try:
        return np.ascontiguousarray(pack_beats(stream.layout, beats))
    except (KeyError, ValueError, TypeError) as exc:
        raise type(exc)(f"stream {stream.name}: {exc.args[0]}") from None


def _binary_command(bld: Build, design: Design) -> list[str]:
    return [str(bld.binary), "--accelgen-fast"]


def simulate(design: "Design | str | Path", inputs: Mapping[str, Any], *,
             expect: Mapping[str, int] | None = None, profile: "str | Profile" = "smooth",
             seed: int = 1, drain_cycles: int = 16, idle_cycles: int = 1000,
             timeout_cycles: int = 100_000, max_cycles: int | None = None,
             harness: str = "fast", opt: str | None = None, check: bool = True,
             devices: tuple = (), progress=None) -> FastRun:
    """Run ``inputs`` (stream name -> beats) through ``design`` on the native harness.

    ``design``: a :class:`Design` or an exported folder (``manifest.json`` + Verilog). Beats of a
    stream: a column tree of numpy arrays (dict per struct, see :mod:`cosim.payload`), a numpy
    structured array, a list of per-beat Python values, or :class:`Words`. ``expect``: beats per
    output stream; streams left out end the run by idling (see the module doc). ``profile`` and
    ``seed``: the :mod:`cosim.traffic` profile. Raises :class:`FastSimError` on a timeout or extra
    output beats (``check=False`` returns the partial run instead, with ``status`` set).

    ``devices``: models that drive stream pairs of the design in C++ instead of sources and sinks
    (:class:`cosim.memory_device.MemoryDevice`); their streams take no ``inputs`` and no
    ``expect``, their handshakes count as activity for ``timeout_cycles``, and after the run
    each device holds its results (``memory``, ``stats``). ``progress``: a mapping ``{stream:
    callback}``; ``callback(stream, beats, cycle)`` is called as each beat of the named output
    streams is taken, while the harness runs.
    """
    start = time.perf_counter()
    if not isinstance(design, Design):
        design = Design.from_folder(design)
    prof = make_profile(profile)
    devices = tuple(devices)
    claimed = {name for d in devices for name in d.streams()}
    names_in = {s.name for s in design.inputs} - claimed
    names_out = {s.name for s in design.outputs} - claimed
    unknown = set(inputs) - names_in
    if unknown:
        raise ValueError(f"{design.top} has no input stream(s) {sorted(unknown)}; inputs: "
                         f"{sorted(names_in)}")
    expect = dict(expect or {})
    unknown = set(expect) - names_out
    if unknown:
        raise ValueError(f"{design.top} has no output stream(s) {sorted(unknown)}; outputs: "
                         f"{sorted(names_out)}")
    progress = dict(progress or {})
    unknown = set(progress) - names_out
    if unknown:
        raise ValueError(f"{design.top} has no output stream(s) {sorted(unknown)} to report; "
                         f"outputs: {sorted(names_out)}")
    packed = {s.name: _pack_stream(s, inputs.get(s.name, [])) for s in design.inputs
              if s.name not in claimed}
    build_start = time.perf_counter()
    bld = build(design, harness=harness, opt=opt, devices=devices)
    build_seconds = time.perf_counter() - build_start
    work = _scratch_dir()
    try:
        for name, words in packed.items():
            words.tofile(os.path.join(work, f"in_{name}.bin"))
        for d in devices:
            d.write_inputs(work, design)
        args = [f"dir={work}", f"seed={int(seed)}", f"src_thr={prof.source.threshold}",
                f"src_burst={prof.source.burst}", f"snk_thr={prof.sink.threshold}",
                f"snk_burst={prof.sink.burst}", f"drain={int(drain_cycles)}",
                f"idle={int(idle_cycles)}", f"timeout={int(timeout_cycles)}"]
        if max_cycles is not None:
            args.append(f"max_cycles={int(max_cycles)}")
        args += [f"expect_{k}={int(v)}" for k, v in expect.items()]
        args += [f"progress_{k}=1" for k in progress]
        for d in devices:
            args += d.args()
        if progress:
            proc = _run_reporting(_binary_command(bld, design) + args, progress)
        else:
            proc = subprocess.run(_binary_command(bld, design) + args, capture_output=True,
                                  text=True)
        if proc.returncode != 0 or not os.path.exists(os.path.join(work, "result.json")):
            raise FastSimError(f"native harness of {design.top} failed (exit {proc.returncode}):"
                               f"\n{(proc.stdout + proc.stderr)[-3000:]}")
        result = json.loads(Path(work, "result.json").read_text())
        run = FastRun(design=design, total_cycles=result["total_cycles"],
                      sim_cycles=result["sim_cycles"], loop_seconds=result["loop_seconds"],
                      loop_cpu_seconds=result["loop_cpu_seconds"],
                      status=result["status"], profile=prof.name, seed=int(seed), build=bld)
        run.stalled = dict(result.get("stalled", {}))
        for d in devices:
            d.read_outputs(work, design, result)
        for s in design.streams:
            if s.name in claimed:
                continue
            run.cycles[s.name] = np.fromfile(os.path.join(work, f"cyc_{s.name}.bin"),
                                             dtype=np.uint64).astype(np.int64)
        for s in design.outputs:
            if s.name in claimed:
                continue
            words = np.fromfile(os.path.join(work, f"out_{s.name}.bin"), dtype=np.uint32)
            words = words.reshape(-1, s.nwords)
            run.words[s.name] = words
            run.outputs[s.name] = unpack_beats(s.layout, words)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # the build (or the cache lookup) is not part of the simulation's time
    run.wall_seconds = time.perf_counter() - start - build_seconds
    run.build_seconds = build_seconds
    if check and run.status != "ok":
        progress = ", ".join([f"{n}: {result['sent'][n]}/{len(packed[n])} in" for n in packed]
                             + [f"{n}: {result['received'][n]}/{expect.get(n, '?')} out"
                                for n in result["received"]])
        raise FastSimError(f"{design.top}: {run.status} after {run.sim_cycles} cycles "
                           f"({prof.name}, seed {seed}): {progress}", run)
    return run


def _run_reporting(cmd: list[str], progress: dict) -> subprocess.CompletedProcess:
    """Run the harness, passing each ``beat NAME COUNT CYCLE`` line it prints to
    ``progress[NAME](NAME, COUNT, CYCLE)`` as it comes; other output is kept."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)
    kept = []
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if len(parts) == 4 and parts[0] == "beat" and parts[1] in progress:
            progress[parts[1]](parts[1], int(parts[2]), int(parts[3]))
        else:
            kept.append(line)
    err = proc.stderr.read() if proc.stderr else ""
    proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(kept), err)


def bare_loop(design: "Design | str | Path", cycles: int = 1_000_000, *, seed: int = 1,
              harness: str = "fast", opt: str | None = None) -> dict:
    """The ceiling: the same build's C++ loop with no I/O (every input valid with fresh random
    payload bits every cycle, every output ready, nothing recorded). Returns cycles, seconds and
    cycles per second of the loop."""
    if not isinstance(design, Design):
        design = Design.from_folder(design)
    bld = build(design, harness=harness, opt=opt)
    work = _scratch_dir()
    try:
        proc = subprocess.run(_binary_command(bld, design) + [
            "mode=bare", f"dir={work}", f"cycles={int(cycles)}", f"seed={int(seed)}"],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise FastSimError(f"bare loop of {design.top} failed (exit {proc.returncode}):\n"
                               f"{(proc.stdout + proc.stderr)[-3000:]}")
        result = json.loads(Path(work, "result.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    secs, cpu = result["loop_seconds"], result["loop_cpu_seconds"]
    return {"cycles": result["sim_cycles"], "seconds": secs, "cpu_seconds": cpu,
            "cycles_per_second": result["sim_cycles"] / secs if secs else 0.0,
            "cycles_per_cpu_second": result["sim_cycles"] / cpu if cpu else 0.0}


# ------------------------------------------------------------------------------------------------
# .npz files (``accelgen sim --inputs X.npz --out Y.npz``)
# ------------------------------------------------------------------------------------------------


def _flatten(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}"))
        return out
    return {prefix: np.asarray(tree)}


def read_inputs_npz(design: Design, path: str | Path) -> dict[str, Any]:
    """Input beats from an ``.npz``: for each input stream either one array per payload field,
    named ``<stream>.<field>[.<subfield>]`` (``<stream>`` alone for a plain int or array
    payload), beat index first; or packed words as ``<stream>@words`` (``uint32``, see
    :mod:`cosim.payload`). A stream with no entry gets no beats. Raises ``ValueError`` naming
    the file and the entry on anything else."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    names = {s.name for s in design.inputs}
    out: dict[str, Any] = {}
    with data:
        for key in data.files:
            stream, _, rest = key.partition("@") if "@" in key else key.partition(".")
            if stream not in names:
                raise ValueError(f"{path}: {key}: {design.top} has no input stream {stream!r}; "
                                 f"inputs: {', '.join(sorted(names))}")
            if "@" in key:
                if rest != "words":
                    raise ValueError(f"{path}: {key}: unknown entry (use {stream}@words)")
                out[stream] = Words(data[key])
                continue
            if isinstance(out.get(stream), Words):
                raise ValueError(f"{path}: {key}: {stream} is given as words already")
            if not rest:
                out[stream] = data[key]
                continue
            node = out.setdefault(stream, {})
            parts = rest.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = data[key]
    return out


def write_run_npz(run: FastRun, path: str | Path) -> None:
    """Save a run: ``<stream>.<field>`` per output field, ``<stream>@words`` and
    ``<stream>@cycles`` (handshake cycles of every stream, inputs included) and ``meta`` (JSON:
    status, cycles, seconds, profile, seed)."""
    arrays: dict[str, np.ndarray] = {}
    for s in run.design.outputs:
        tree = run.outputs[s.name]
        arrays.update(_flatten(tree, s.name) if isinstance(tree, dict) else {s.name: tree})
        arrays[f"{s.name}@words"] = run.words[s.name]
    for name, cycles in run.cycles.items():
        arrays[f"{name}@cycles"] = cycles
    arrays["meta"] = np.array(json.dumps(run_summary(run)))
    np.savez(path, **arrays)


def run_summary(run: FastRun) -> dict:
    return {"design": run.design.name, "status": run.status, "profile": run.profile,
            "seed": run.seed, "total_cycles": run.total_cycles, "sim_cycles": run.sim_cycles,
            "loop_seconds": round(run.loop_seconds, 6),
            "loop_cpu_seconds": round(run.loop_cpu_seconds, 6),
            "wall_seconds": round(run.wall_seconds, 6),
            "cycles_per_second": round(run.cycles_per_second, 1),
            "beats": {name: int(len(c)) for name, c in run.cycles.items()},
            "build": str(run.build.dir) if run.build else None}
