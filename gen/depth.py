"""Name the deepest pipeline stage of a synthesized design: which block, which operations.

``gen.synth`` reports the longest combinational path in mapped gates (``ltp -noff`` after ABC).
ABC renames the gates it makes, but the path still passes through wires that carry design names:
the register (or input port) it starts from, the register it ends in, and intermediate signals
Amaranth named in the Verilog (``acc``, ``\\$10``, ``pe_1_2.shadow``). This module reads that path
from the synthesis log, splits it into segments between named wires, and finds for each segment
the word-level operations between its two ends in the design before technology mapping
(``proc; flatten``: ``$add``, ``$neg``, ``$shr``, ``$mux`` with their Verilog source lines), so a
segment of 256 gate levels reads as "negate, design.v:262 ``assign \\$9 = - final``".

The block is the Amaranth submodule path of the stage's end register (``sub3_pe_0_1`` in a
flattened array), or the top module. Cones are computed conservatively (every input bit of a
word-level cell reaches every output bit), so a segment may list a few more operations than lie on
the exact bit path; the gate-level depth itself is ABC's.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gen.toolchain import yosys_command

__all__ = ["PathNode", "StageReport", "parse_ltp", "analyse_stage", "OP_NAMES"]

#: Yosys word-level cell type -> what it does, in words.
OP_NAMES: dict[str, str] = {
    "$add": "add", "$sub": "subtract", "$neg": "negate", "$mul": "multiply", "$alu": "add",
    "$macc": "multiply-add", "$div": "divide", "$mod": "modulo", "$divfloor": "divide",
    "$shr": "shift", "$shl": "shift", "$sshr": "shift", "$sshl": "shift", "$shift": "shift",
    "$shiftx": "shift", "$mux": "mux", "$pmux": "mux", "$bmux": "mux", "$demux": "demux",
    "$eq": "compare", "$ne": "compare", "$lt": "compare", "$le": "compare", "$gt": "compare",
    "$ge": "compare", "$eqx": "compare", "$nex": "compare",
    "$reduce_or": "reduce", "$reduce_and": "reduce", "$reduce_xor": "reduce",
    "$reduce_bool": "reduce", "$reduce_xnor": "reduce", "$logic_not": "logic",
    "$logic_and": "logic", "$logic_or": "logic", "$not": "bitwise", "$and": "bitwise",
    "$or": "bitwise", "$xor": "bitwise", "$xnor": "bitwise", "$pos": "wire", "$neg_": "negate",
}
# Arithmetic and shifts make depth; muxes and bit logic only add a level or two each. Used to pick
# the operation a segment is named after.
_DEPTH_RANK = {"multiply": 0, "multiply-add": 0, "divide": 0, "modulo": 0, "add": 1,
               "subtract": 1, "negate": 1, "shift": 2, "compare": 3, "reduce": 4, "mux": 5}

_STATE_CELLS = ("$dff", "$dffe", "$sdff", "$sdffe", "$sdffce", "$adff", "$adffe", "$aldff",
                "$aldffe", "$dffsr", "$dffsre", "$dlatch", "$adlatch", "$sr", "$mem", "$mem_v2",
                "$memrd", "$memrd_v2", "$memwr", "$memwr_v2", "$meminit", "$meminit_v2", "$ff")

_LTP_HEAD = re.compile(r"Longest topological path in (\S+) \(length=(\d+)\):")
_LTP_NODE = re.compile(r"^\s*(\d+|ff): (\S+)(?: \[(\d+)\])?(?: \(via .*\))?\s*$")


@dataclass(frozen=True)
class PathNode:
    level: int | None       # gate level along the path; None for the end register
    wire: str               # Yosys wire name without the leading backslash
    bit: int | None
    public: bool            # a design name (not $abc$/$auto$)


def parse_ltp(log_text: str) -> tuple[int, list[PathNode]]:
    """The last ``ltp`` path in a Yosys log: (length, nodes in order)."""
    heads = list(_LTP_HEAD.finditer(log_text))
    if not heads:
        raise ValueError("no 'Longest topological path' in the log")
    head = heads[-1]
    nodes = []
    for line in log_text[head.end():].splitlines()[1:]:
        match = _LTP_NODE.match(line)
        if not match:
            break
        level, name, bit = match.groups()
        public = name.startswith("\\")
        nodes.append(PathNode(None if level == "ff" else int(level), name.removeprefix("\\"),
                              int(bit) if bit is not None else None, public))
    return int(head.group(2)), nodes


@dataclass
class Segment:
    start: str
    end: str
    levels: int
    operations: list[dict]          # [{"op": "add", "cell": "$add", "count": n, "src": [...]}]
    chain: list[dict] = field(default_factory=list)   # heaviest word-level chain, in order

    @property
    def main(self) -> dict | None:
        """The operation with the most estimated levels on the chain, and its heaviest cell."""
        totals: Counter = Counter()
        for c in self.chain:
            if c["op"] not in ("wire", "bitwise", "logic"):
                totals[c["op"]] += c["levels"]
        if not totals:
            return None
        op = max(sorted(totals), key=lambda o: (totals[o], -_DEPTH_RANK.get(o, 9)))
        cell = max((c for c in self.chain if c["op"] == op), key=lambda c: c["levels"])
        count = sum(1 for c in self.chain if c["op"] == op)
        top = [f"{o} {totals[o]}" for o in sorted(totals, key=lambda o: (-totals[o], o))[:3]]
        return {"op": op, "src": cell["src"], "count": count, "estimate": totals[op],
                "top": top}

    @property
    def main_op(self) -> str | None:
        main = self.main
        return main["op"] if main else None


@dataclass
class StageReport:
    top: str
    length: int
    block: str                       # submodule path of the end register, or the top's name
    start: str                       # register or input port the path starts from
    end: str                         # register (or output port) it ends in
    segments: list[Segment]
    deepest: dict                    # the segment with most levels, summarised
    source_lines: dict[str, str] = field(default_factory=dict)   # "design.v:N" -> Verilog text

    def to_dict(self) -> dict:
        out = asdict(self)
        return out

    def summary(self) -> str:
        d = self.deepest
        what = ", ".join(d.get("ops_estimated_levels") or []) or d["op"] or "logic"
        where = f" ({d['src']}: {d['text']})" if d.get("src") else ""
        return (f"{self.block}: {self.start} -> {self.end}; {d['levels']} of {self.length} levels "
                f"in {what} {d['start']} -> {d['end']}{where}")


def _bit_label(node: PathNode) -> str:
    return node.wire if node.bit is None else f"{node.wire}[{node.bit}]"


def _block_of(wire: str, top: str) -> str:
    return wire.rsplit(".", 1)[0] if "." in wire else top


def word_netlist(workdir: Path, verilog_name: str, top: str, timeout: float = 1800) -> dict:
    """Word-level, flattened netlist (``proc; flatten``) of ``workdir/verilog_name`` as JSON."""
    out = workdir / "word.json"
    if out.exists() and out.stat().st_mtime >= (workdir / verilog_name).stat().st_mtime:
        return json.loads(out.read_text())
    script = (f"read_verilog -sv {verilog_name}\nhierarchy -top {top}\nproc\nflatten\n"
              "opt_clean\nwrite_json word.json\n")
    (workdir / "word.ys").write_text(script)
    proc = subprocess.run([*yosys_command(), "-q", "-l", "word.log", "-s", "word.ys"], cwd=workdir,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys (word-level netlist) failed in {workdir}: "
                           + (proc.stdout + proc.stderr).strip()[-2000:])
    return json.loads(out.read_text())


class _Graph:
    """Bit-level connectivity of a word-level module, stopping at state elements."""

    def __init__(self, module: dict):
        self.nets = {name.removeprefix("\\"): info["bits"]
                     for name, info in module["netnames"].items()}
        self.cells = module["cells"]
        self.driver: dict[int, str] = {}
        self.readers: dict[int, list[str]] = {}
        for cname, cell in self.cells.items():
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                for b in bits:
                    if not isinstance(b, int):
                        continue
                    if dirs.get(port) == "output":
                        self.driver[b] = cname
                    else:
                        self.readers.setdefault(b, []).append(cname)

    def _comb(self, cname: str) -> bool:
        return self.cells[cname]["type"] not in _STATE_CELLS

    def _ports(self, cname, direction):
        cell = self.cells[cname]
        dirs = cell.get("port_directions", {})
        for port, bits in cell["connections"].items():
            if (dirs.get(port) == "output") == (direction == "output"):
                yield from (b for b in bits if isinstance(b, int))

    def bit(self, wire: str, index: int | None) -> int | None:
        bits = self.nets.get(wire)
        if not bits:
            return None
        b = bits[index or 0] if (index or 0) < len(bits) else None
        return b if isinstance(b, int) else None

    def d_inputs(self, q_bit: int) -> list[int]:
        """Bits feeding the state element that drives ``q_bit`` (its D bit when it has one)."""
        cname = self.driver.get(q_bit)
        if cname is None:
            return []
        conn = self.cells[cname]["connections"]
        if "D" in conn and "Q" in conn and q_bit in conn["Q"]:
            d = conn["D"][conn["Q"].index(q_bit)]
            return [d] if isinstance(d, int) else []
        return list(self._ports(cname, "input"))

    def width(self, cname: str, port: str) -> int:
        return len(self.cells[cname]["connections"].get(port, ()))

    def levels_estimate(self, cname: str) -> int:
        """Rough gate levels of one word-level cell as Yosys maps it without ABC's restructuring:
        ripple adders and comparators one level per bit, log-depth reductions and shifters, a
        multiplier its two widths. Only used to rank the operations of one segment."""
        ctype = self.cells[cname]["type"]
        op = OP_NAMES.get(ctype, "")
        a, b, y = (self.width(cname, p) for p in ("A", "B", "Y"))
        if op in ("add", "subtract", "negate", "multiply-add"):
            return max(a, b, y, 1)
        if op == "multiply":
            return a + b
        if ctype in ("$lt", "$le", "$gt", "$ge"):
            return max(a, b, 1)
        if op == "shift":
            return 2 * max(b, 1)
        if op in ("compare", "reduce"):
            return max(a, b, 1).bit_length() + 1
        if ctype == "$pmux":
            return max(self.width(cname, "S"), 1).bit_length() + 1
        return 1

    def heaviest_chain(self, cone: set[str]) -> list[str]:
        """Cells of ``cone`` on the chain with the largest summed ``levels_estimate``."""
        succ: dict[str, set[str]] = {c: set() for c in cone}
        for c in cone:
            for ob in self._ports(c, "output"):
                for r in self.readers.get(ob, ()):
                    if r in cone and r != c:
                        succ[c].add(r)
        best: dict[str, tuple[int, str | None]] = {}
        on_stack: set[str] = set()

        def visit(c: str) -> int:
            if c in best:
                return best[c][0]
            on_stack.add(c)
            tail, nxt = 0, None
            for r in sorted(succ[c]):
                if r in on_stack:       # a word-level loop the bits do not close: skip it
                    continue
                w = visit(r)
                if w > tail:
                    tail, nxt = w, r
            on_stack.discard(c)
            best[c] = (self.levels_estimate(c) + tail, nxt)
            return best[c][0]

        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10 * len(cone) + 1000))
        try:
            starts = sorted(cone)
            for c in starts:
                visit(c)
        finally:
            sys.setrecursionlimit(limit)
        if not best:
            return []
        head = max(sorted(best), key=lambda c: best[c][0])
        chain = []
        while head is not None:
            chain.append(head)
            head = best[head][1]
        return chain

    def backward(self, bit: int) -> set[str]:
        seen, queue = set(), deque([bit])
        visited_bits = {bit}
        while queue:
            b = queue.popleft()
            c = self.driver.get(b)
            if c is None or c in seen or not self._comb(c):
                continue
            seen.add(c)
            for ib in self._ports(c, "input"):
                if ib not in visited_bits:
                    visited_bits.add(ib)
                    queue.append(ib)
        return seen

    def forward(self, bit: int) -> set[str]:
        seen, queue = set(), deque([bit])
        visited_bits = {bit}
        while queue:
            b = queue.popleft()
            for c in self.readers.get(b, ()):
                if c in seen or not self._comb(c):
                    continue
                seen.add(c)
                for ob in self._ports(c, "output"):
                    if ob not in visited_bits:
                        visited_bits.add(ob)
                        queue.append(ob)
        return seen


def _src_key(src: str) -> str | None:
    match = re.match(r"([^:|]+):(\d+)", src or "")
    return f"{match.group(1)}:{match.group(2)}" if match else None


def analyse_stage(log_text: str, word: dict, verilog_lines: list[str], top: str) -> StageReport:
    """Split the ``ltp`` path of ``log_text`` into named segments and name their operations."""
    length, nodes = parse_ltp(log_text)
    module = word["modules"].get(top) or word["modules"].get(f"\\{top}") \
        or next(iter(word["modules"].values()))
    graph = _Graph(module)
    points = [n for n in nodes if n.public and n.wire in graph.nets]
    # the path's first node (the register or port it starts from) is always a boundary
    if nodes and (not points or points[0] is not nodes[0]) and nodes[0].public:
        points.insert(0, nodes[0])
    end_node = nodes[-1] if nodes and nodes[-1].level is None else None
    segments: list[Segment] = []
    for a, b in zip(points, points[1:]):
        a_level = a.level or 0
        b_level = b.level if b.level is not None else length
        if b.level is None and a.level == length:
            continue        # the D input to Q of the end register: no logic
        a_bit, b_bit = graph.bit(a.wire, a.bit), graph.bit(b.wire, b.bit)
        ops: list[dict] = []
        chain: list[dict] = []
        if a_bit is not None and b_bit is not None:
            if b.level is None:         # end register: the path reaches its D input
                back = set().union(*(graph.backward(x) for x in graph.d_inputs(b_bit)))
            else:
                back = graph.backward(b_bit)
            cone = back & graph.forward(a_bit)
            counts: Counter = Counter()
            srcs: dict[str, Counter] = {}
            for cname in sorted(cone):     # sorted: ties resolve the same every run
                cell = graph.cells[cname]
                ctype = cell["type"]
                op = OP_NAMES.get(ctype, ctype.lstrip("$"))
                if op == "wire":
                    continue
                counts[(op, ctype)] += 1
                key = _src_key(cell.get("attributes", {}).get("src", ""))
                if key:
                    srcs.setdefault(op, Counter())[key] += 1
            for (op, ctype), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
                ops.append({"op": op, "cell": ctype, "count": n,
                            "src": [s for s, _ in srcs.get(op, Counter()).most_common(3)]})
            for cname in graph.heaviest_chain(cone):
                cell = graph.cells[cname]
                chain.append({"op": OP_NAMES.get(cell["type"], cell["type"].lstrip("$")),
                              "cell": cell["type"], "levels": graph.levels_estimate(cname),
                              "src": _src_key(cell.get("attributes", {}).get("src", ""))})
        segments.append(Segment(_bit_label(a), _bit_label(b), b_level - a_level, ops, chain))
    start = _bit_label(nodes[0]) if nodes else ""
    end = _bit_label(end_node) if end_node else (_bit_label(nodes[-1]) if nodes else "")
    end_wire = end_node.wire if end_node else (nodes[-1].wire if nodes else top)
    lines: dict[str, str] = {}

    def text_of(key):
        if key not in lines:
            try:
                lines[key] = verilog_lines[int(key.rsplit(":", 1)[1]) - 1].strip()
            except (IndexError, ValueError):
                lines[key] = ""
        return lines[key]

    deepest = {"levels": 0, "start": start, "end": end, "op": None, "src": None, "text": ""}
    if segments:
        seg = max(segments, key=lambda s: s.levels)
        main = seg.main or {}
        src = main.get("src")
        deepest = {"levels": seg.levels, "start": seg.start, "end": seg.end,
                   "op": main.get("op"), "op_cells": main.get("count"),
                   "ops_estimated_levels": main.get("top", []), "src": src,
                   "text": text_of(src) if src else ""}
    for seg in segments:
        for o in seg.operations:
            for s in o["src"]:
                text_of(s)
        for c in seg.chain:
            if c["src"]:
                text_of(c["src"])
    return StageReport(top=top, length=length, block=_block_of(end_wire, top), start=start,
                       end=end, segments=segments, deepest=deepest, source_lines=lines)
