"""A memory device for the native stream harness (:mod:`cosim.fast`): a word memory in C++
behind a request/response stream pair, so a design with a memory port (the accelerator's
``mem_req`` / ``mem_resp``) runs a whole program in the harness's C++ loop.

The memory model is the one docs/accelerator.md section 6 states and ``cosim/dram.py``
implements for cocotb and amaranth.sim, cycle for cycle:

* ``words`` words of ``word_bits`` bits (the response's data element width), loaded from an
  image before cycle 0 (zero elsewhere), addressed modulo ``words``.
* The request stream is ready at cycle ``c`` when the memory is free (``c >= free_at``) and the
  traffic profile's sink pattern does not block the request stream at ``c``.
* A request taken at ``c`` occupies the memory ``ceil(count / words_per_cycle)`` cycles; a write
  stores ``data[0 .. count-1]`` at once; a read copies its words at once and its response is due
  at ``c + ceil(count / words_per_cycle) - 1 + latency``; responses queue in order.
* The response stream offers the queue's head at the first cycle ``>= due`` that the profile's
  source pattern does not block it, and holds it until taken; words past ``count`` are zero.

Payload layouts (from the design's manifest): the request a struct with ``write`` (1 bit),
``addr``, ``count`` and ``data`` (an array of ``port_words`` words), the response a struct with
``data`` (the same array).  Any field order and widths; the word's own structure (mantissas,
exponent) is opaque here.

Besides the final memory (``memory``, ``uint32`` words ``(words, ceil(word_bits / 32))``), the
device counts (``stats``): requests and words read and written, the cycles the memory was busy,
the cycles a request waited because the memory was busy (bandwidth) or because the profile
blocked it, the cycles a queued response waited for its due cycle (latency) and the cycles an
offered response was not taken (the design's backpressure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from cosim.payload import words_for

__all__ = ["MemoryDevice", "MEMORY_DEVICE_H"]

#: Bit-field helpers and the device's state, shared by every memory device of a harness.
MEMORY_DEVICE_H = r"""// accelgen memory device (cosim/memory_device.py): the DRAM model of docs/accelerator.md.
// Included by the harness inside namespace accelgen, after Gate and read_file.
#pragma once

// width bits of src starting at bit soff -> dst (dst zeroed first, nw words)
static inline void extract_bits(uint32_t* dst, uint32_t nw, const uint32_t* src, uint32_t soff,
                                uint32_t width) {
    for (uint32_t i = 0; i < nw; ++i) dst[i] = 0;
    uint32_t q = soff >> 5, s = soff & 31;
    for (uint32_t i = 0; i * 32 < width; ++i) {
        uint64_t v = src[q + i] >> s;
        if (s && (i * 32 + 32 - s) < width) v |= (uint64_t)src[q + i + 1] << (32 - s);
        uint32_t left = width - i * 32;
        dst[i] = (uint32_t)(left >= 32 ? v : (v & ((1ULL << left) - 1)));
    }
}

// width bits of src (from bit 0) -> dst at bit doff (dst bits there assumed zero)
static inline void deposit_bits(uint32_t* dst, uint32_t doff, const uint32_t* src,
                                uint32_t width) {
    uint32_t q = doff >> 5, s = doff & 31;
    for (uint32_t i = 0; i * 32 < width; ++i) {
        uint32_t left = width - i * 32;
        uint64_t v = left >= 32 ? src[i] : (src[i] & ((1ULL << left) - 1));
        dst[q + i] |= (uint32_t)(v << s);
        if (s && (32 - s) < (left < 32 ? left : 32)) dst[q + i + 1] |= (uint32_t)(v >> (32 - s));
    }
}

struct MemoryDevice {
    const char* name;
    uint32_t nw = 1, word_bits = 1, port_words = 1;
    uint64_t words = 1, latency = 8, wpc = 1, free_at = 0;
    std::vector<uint32_t> mem;
    struct Resp { uint64_t due; std::vector<uint32_t> data; };
    std::deque<Resp> queue;
    bool offered = false, ready = false, req_take = false, resp_take = false;
    std::vector<uint32_t> cur, req;
    Gate req_gate, resp_gate;
    uint64_t reads = 0, writes = 0, read_words = 0, write_words = 0, busy_cycles = 0;
    uint64_t wait_busy = 0, wait_profile = 0, resp_latency = 0, resp_backpressure = 0;
    bool bad = false;
    uint64_t bad_cycle = 0, bad_count = 0;

    bool load(const std::string& path) {
        mem.assign(words * nw, 0);
        std::vector<uint32_t> img;
        if (!read_file(path, img)) return false;
        if (img.size() > mem.size()) img.resize(mem.size());
        for (size_t i = 0; i < img.size(); ++i) mem[i] = img[i];
        return true;
    }
    // before eval: offer the due head of the response queue, set the request's ready
    inline bool drive(uint64_t cycle) {
        if (!offered && !queue.empty() && queue.front().due <= cycle &&
            !resp_gate.blocked(cycle)) {
            cur.swap(queue.front().data);
            queue.pop_front();
            offered = true;
        }
        ready = cycle >= free_at && !req_gate.blocked(cycle);
        return ready;
    }
    // after eval, before the clock edge: what the design does this cycle
    inline void sample(uint64_t cycle, bool req_valid, bool resp_ready) {
        req_take = ready && req_valid;
        resp_take = offered && resp_ready;
        if (req_valid && !ready) {
            if (cycle < free_at) ++wait_busy; else ++wait_profile;
        }
        if (!offered && !queue.empty()) ++resp_latency;
        if (offered && !resp_ready) ++resp_backpressure;
    }
    // after the clock edge: the request acts at once (requests act in order)
    inline void commit(uint64_t cycle, uint32_t write, uint64_t addr, uint64_t count,
                       const uint32_t* payload, uint32_t data_offset) {
        if (resp_take) offered = false;
        if (!req_take) return;
        if (count < 1 || count > port_words) {
            if (!bad) { bad = true; bad_cycle = cycle; bad_count = count; }
            return;
        }
        uint64_t busy = (count + wpc - 1) / wpc;
        free_at = cycle + busy;
        busy_cycles += busy;
        std::vector<uint32_t> w(nw);
        if (write) {
            for (uint64_t k = 0; k < count; ++k) {
                extract_bits(w.data(), nw, payload, data_offset + (uint32_t)k * word_bits,
                             word_bits);
                uint64_t a = (addr + k) % words;
                for (uint32_t i = 0; i < nw; ++i) mem[a * nw + i] = w[i];
            }
            ++writes;
            write_words += count;
        } else {
            Resp r;
            r.due = cycle + busy - 1 + latency;
            r.data.assign(port_words * nw, 0);
            for (uint64_t k = 0; k < count; ++k) {
                uint64_t a = (addr + k) % words;
                for (uint32_t i = 0; i < nw; ++i) r.data[k * nw + i] = mem[a * nw + i];
            }
            queue.push_back(std::move(r));
            ++reads;
            read_words += count;
        }
    }
    // the response payload: port_words words at data_offset + k * word_bits
    inline void response_payload(uint32_t* out, uint32_t out_words, uint32_t data_offset) {
        for (uint32_t i = 0; i < out_words; ++i) out[i] = 0;
        for (uint32_t k = 0; k < port_words; ++k)
            deposit_bits(out, data_offset + k * word_bits, &cur[k * nw], word_bits);
    }
    void json(FILE* f) {
        fprintf(f, "\"%s\": {\"reads\": %llu, \"writes\": %llu, \"read_words\": %llu, "
                   "\"write_words\": %llu, \"busy_cycles\": %llu, \"wait_busy\": %llu, "
                   "\"wait_profile\": %llu, \"response_latency\": %llu, "
                   "\"response_backpressure\": %llu, \"bad_count\": %llu, "
                   "\"bad_cycle\": %llu, \"bad\": %s}",
                name, (unsigned long long)reads, (unsigned long long)writes,
                (unsigned long long)read_words, (unsigned long long)write_words,
                (unsigned long long)busy_cycles, (unsigned long long)wait_busy,
                (unsigned long long)wait_profile, (unsigned long long)resp_latency,
                (unsigned long long)resp_backpressure, (unsigned long long)bad_count,
                (unsigned long long)bad_cycle, bad ? "true" : "false");
    }
};
"""


def _field(layout: dict, name: str, where: str) -> tuple[int, dict]:
    fields = layout.get("fields", {}) if layout.get("type") == "struct" else {}
    if name not in fields:
        raise ValueError(f"{where}: the payload has no field {name!r} (fields: "
                         f"{', '.join(fields) or 'none'})")
    return fields[name]["offset"], fields[name]["layout"]


def _int_field(layout, name, where, width=None):
    off, lay = _field(layout, name, where)
    if lay.get("type") != "int" or (width is not None and lay["width"] != width):
        raise ValueError(f"{where}: field {name!r} must be an int"
                         + (f" of {width} bit(s)" if width else ""))
    return off, lay["width"]


@dataclass
class MemoryDevice:
    """A word memory behind ``request`` (design output) / ``response`` (design input), see the
    module docstring.  ``image``: ``uint32`` words ``(n, ceil(word_bits/32))`` loaded at address
    0 (``n <= words``).  After :func:`cosim.fast.simulate`, ``memory`` holds the final contents
    and ``stats`` the counters."""
    words: int
    latency: int = 8
    words_per_cycle: int = 1
    image: Optional[np.ndarray] = None
    request: str = "mem_req"
    response: str = "mem_resp"
    name: str = "dram"
    memory: Optional[np.ndarray] = field(default=None, repr=False)
    stats: dict = field(default_factory=dict)

    def __post_init__(self):
        for attr in ("words", "latency", "words_per_cycle"):
            v = getattr(self, attr)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"memory device {attr} must be a positive integer, not {v!r}")
        if not self.name.isidentifier():
            raise ValueError(f"memory device name must be an identifier, not {self.name!r}")

    # -- what the harness generator needs ----------------------------------------------------
    def streams(self) -> tuple[str, str]:
        return self.request, self.response

    def geometry(self, design) -> dict:
        """Field offsets and sizes from the manifest (raises ``ValueError`` naming the stream)."""
        req, resp = design.stream(self.request), design.stream(self.response)
        if req.direction != "output" or resp.direction != "input":
            raise ValueError(f"{design.top}: {self.request} must be an output and "
                             f"{self.response} an input stream")
        where_q, where_r = f"{design.top}.{self.request}", f"{design.top}.{self.response}"
        w_off, _ = _int_field(req.layout, "write", where_q, 1)
        a_off, a_width = _int_field(req.layout, "addr", where_q)
        c_off, c_width = _int_field(req.layout, "count", where_q)
        d_off, d_lay = _field(req.layout, "data", where_q)
        r_off, r_lay = _field(resp.layout, "data", where_r)
        for where, lay in ((where_q, d_lay), (where_r, r_lay)):
            if lay.get("type") != "array":
                raise ValueError(f"{where}: field 'data' must be an array of words")
        if (d_lay["length"], d_lay["element"]["width"]) != \
                (r_lay["length"], r_lay["element"]["width"]):
            raise ValueError(f"{design.top}: {self.request}.data and {self.response}.data differ")
        if a_width > 64 or c_width > 32:
            raise ValueError(f"{where_q}: addr wider than 64 or count wider than 32 bits")
        word_bits = d_lay["element"]["width"]
        return {"write": w_off, "addr": (a_off, a_width), "count": (c_off, c_width),
                "data": d_off, "resp_data": r_off, "word_bits": word_bits,
                "port_words": d_lay["length"], "nw": words_for(word_bits),
                "req_words": req.nwords, "resp_words": resp.nwords}

    def cpp(self, design, index: int) -> dict:
        """C++ snippets for the harness's placeholders (see cosim.fast.harness_sources)."""
        from cosim.verilator import cpp_port_name
        g = self.geometry(design)
        dev = f"dev[{index}]"
        q_v = cpp_port_name(f"{self.request}__valid")
        q_r = cpp_port_name(f"{self.request}__ready")
        r_v = cpp_port_name(f"{self.response}__valid")
        r_r = cpp_port_name(f"{self.response}__ready")
        buf = f"dev{index}_req"
        rbuf = f"dev{index}_resp"
        a_off, a_w = g["addr"]
        c_off, c_w = g["count"]
        return {
            "init": "\n".join([
                f'    {dev}.name = "{self.name}"; {dev}.nw = {g["nw"]}; '
                f'{dev}.word_bits = {g["word_bits"]}; {dev}.port_words = {g["port_words"]};',
                f'    {dev}.words = argu(argc, argv, "{self.name}_words", 1);',
                f'    {dev}.latency = argu(argc, argv, "{self.name}_latency", 8);',
                f'    {dev}.wpc = argu(argc, argv, "{self.name}_wpc", 1);',
                f'    {dev}.req_gate.init(seed, "{self.request}", '
                f'argu(argc, argv, "snk_thr", 0), argu(argc, argv, "snk_burst", 1));',
                f'    {dev}.resp_gate.init(seed, "{self.response}", '
                f'argu(argc, argv, "src_thr", 0), argu(argc, argv, "src_burst", 1));',
                f'    if (!bare && !{dev}.load(dir + "/mem_{self.name}.bin")) {{',
                f'        fprintf(stderr, "accelgen-fast: cannot read memory image of '
                f'{self.name}\\n"); return 2; }}',
                f"    std::vector<uint32_t> {buf}({g['req_words']} + 1), "
                f"{rbuf}({g['resp_words']} + 1);",
            ]),
            "drive": "\n".join([
                f"            top->{q_r} = {dev}.drive(cycle);",
                f"            top->{r_v} = {dev}.offered;",
                f"            if ({dev}.offered) {{ {dev}.response_payload({rbuf}.data(), "
                f"{g['resp_words']}, {g['resp_data']}); put_{self.response}(top, "
                f"{rbuf}.data()); }}",
            ]),
            "sample": "\n".join([
                f"            {dev}.sample(cycle, top->{q_v}, top->{r_r});",
                f"            if ({dev}.req_take) {{ get_{self.request}(top, {buf}.data()); "
                f"event = true; }}",
                f"            if ({dev}.resp_take) event = true;",
            ]),
            "commit": "\n".join([
                f"            if ({dev}.req_take || {dev}.resp_take) {{",
                f"                uint32_t q_write[2], q_addr[3], q_count[2];",
                f"                extract_bits(q_write, 1, {buf}.data(), {g['write']}, 1);",
                f"                extract_bits(q_addr, 2, {buf}.data(), {a_off}, {a_w});",
                f"                extract_bits(q_count, 1, {buf}.data(), {c_off}, {c_w});",
                f"                {dev}.commit(cycle, q_write[0], (uint64_t)q_addr[0] | "
                f"((uint64_t)q_addr[1] << 32), q_count[0], {buf}.data(), {g['data']});",
                "            }",
            ]),
            "bare": "\n".join([f"            top->{q_r} = 1;", f"            top->{r_v} = 0;"]),
            "finish": f'        write_file(dir + "/memout_{self.name}.bin", {dev}.mem);',
        }

    # -- run time ----------------------------------------------------------------------------
    def args(self) -> list[str]:
        return [f"{self.name}_words={self.words}", f"{self.name}_latency={self.latency}",
                f"{self.name}_wpc={self.words_per_cycle}"]

    def write_inputs(self, work: str, design) -> None:
        nw = self.geometry(design)["nw"]
        image = np.zeros((0, nw), np.uint32) if self.image is None else \
            np.ascontiguousarray(self.image, dtype=np.uint32)
        if image.ndim != 2 or image.shape[1] != nw:
            raise ValueError(f"memory device {self.name}: image must be uint32 words of shape "
                             f"(n, {nw}), not {image.shape}")
        if image.shape[0] > self.words:
            raise ValueError(f"memory device {self.name}: image of {image.shape[0]} words is "
                             f"larger than the memory ({self.words} words)")
        image.tofile(os.path.join(work, f"mem_{self.name}.bin"))

    def read_outputs(self, work: str, design, result: dict) -> None:
        nw = self.geometry(design)["nw"]
        path = os.path.join(work, f"memout_{self.name}.bin")
        if os.path.exists(path):
            self.memory = np.fromfile(path, dtype=np.uint32).reshape(-1, nw)
        self.stats = dict(result.get("devices", {}).get(self.name, {}))
