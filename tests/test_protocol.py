"""The ``protocol`` section of manifest.json: every stream port of every preset of every kind is
described (beat, fields, ready or order and backpressure, pairing between input streams, buffers,
latency), and what it says about latency and combinational ready paths holds in simulation."""

from __future__ import annotations

import json
import re

import pytest
from amaranth.lib.data import StructLayout
from amaranth.sim import Simulator

from gen.config import load_config, preset_paths
from gen.estimate import estimate
from gen.export import manifest_for
from gen.registry import KINDS


def _component(config):
    component = config.elaborate()
    component._MustUse__silence = True      # inspected, not elaborated
    return component


def _manifest(config) -> dict:
    return manifest_for(config, _component(config), f"{config.top_name}.v")


def stream_ports(manifest: dict) -> dict[str, dict]:
    """Stream name -> {direction of its payload (input/output), payload layout}, from the port
    table alone (as an integrator sees it)."""
    ports = {p["name"]: p for p in manifest["ports"]}
    streams = {}
    for name in ports:
        if name.endswith("__valid"):
            base = name[:-len("__valid")]
            if f"{base}__ready" in ports:
                valid = ports[name]
                payload = ports.get(f"{base}__payload")
                streams[base] = {"direction": valid["direction"],
                                 "layout": payload["layout"] if payload else None}
    return streams


def protocol_problems(manifest: dict) -> list[str]:
    """Everything missing from a manifest's protocol section (empty: complete)."""
    protocol = manifest.get("protocol")
    if not isinstance(protocol, dict):
        return ["no protocol section"]
    problems = []
    streams = stream_ports(manifest)
    if not streams:
        problems.append("no stream ports found")
    for name, port in streams.items():
        entry = protocol.get(name)
        if not isinstance(entry, dict):
            problems.append(f"{name}: no protocol entry")
            continue
        needed = ["beat", "fields"] + (["ready"] if port["direction"] == "input"
                                       else ["order", "backpressure"])
        for key in needed:
            if key not in entry or not entry[key]:
                problems.append(f"{name}: no {key!r}")
        fields = entry.get("fields") or {}
        layout = port["layout"]
        if layout is not None and layout["type"] == "struct":
            want = set(layout["fields"])
        else:
            want = {"payload"}
        if set(fields) != want:
            problems.append(f"{name}: fields {sorted(fields)} but the payload has {sorted(want)}")
        for key, text in fields.items():
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{name}.fields.{key}: empty")
    inputs = [n for n, p in streams.items() if p["direction"] == "input"]
    if len(inputs) > 1 and not protocol.get("pairing"):
        problems.append(f"inputs {inputs}: no 'pairing' rule between them")
    if not protocol.get("latency"):
        problems.append("no 'latency'")
    if not any("buffer" in key for key in protocol):
        problems.append("no buffer depths ('buffers' or '*_buffer_*')")
    try:
        json.dumps(protocol)
    except TypeError as exc:
        problems.append(f"not JSON: {exc}")
    return problems


PRESETS = [(kind, path) for kind in KINDS for path in preset_paths(kind)]


def test_every_kind_has_presets():
    assert {kind for kind, _ in PRESETS} == set(KINDS)


@pytest.mark.parametrize("kind,path", PRESETS, ids=[p.stem for _, p in PRESETS])
def test_preset_manifest_describes_every_stream(kind, path):
    manifest = _manifest(load_config(path))
    assert manifest["kind"] == kind
    assert protocol_problems(manifest) == []


def test_the_check_catches_a_missing_entry():
    """The checker itself fails on an incomplete protocol (it can fail)."""
    manifest = _manifest(load_config(preset_paths("mxint_dot")[0]))
    assert protocol_problems(manifest) == []
    broken = json.loads(json.dumps(manifest))
    del broken["protocol"]["results"]["order"]
    del broken["protocol"]["operands"]["fields"]["b"]
    problems = protocol_problems(broken)
    assert any("results: no 'order'" in p for p in problems), problems
    assert any("operands: fields" in p for p in problems), problems
    broken = json.loads(json.dumps(manifest))
    del broken["protocol"]
    assert protocol_problems(broken) == ["no protocol section"]
    ws = _manifest(load_config(preset_paths(prefix="systolic_ws")[0]))
    del ws["protocol"]["pairing"]
    assert any("pairing" in p for p in protocol_problems(ws))


# -- what the text says holds in simulation -------------------------------------------------------

#: Single-input pipelines whose protocol states a latency "N cycles from ... taken to ...".
PIPELINE_KINDS = ("mxint_cast", "mxint_dot", "mxint_accumulator", "mxint_linear", "mxint_gelu",
                  "ternary_lut", "float_add")


def _smallest_presets(kinds, per_top=True):
    """The smallest preset of each (kind, top component class)."""
    chosen = {}
    for kind in kinds:
        for path in preset_paths(kind):
            config = load_config(path)
            key = (kind, type(_component(config)).__name__ if per_top else "")
            cells = estimate(config).cells
            if key not in chosen or cells < chosen[key][0]:
                chosen[key] = (cells, path)
    return [path for _, path in chosen.values()]


def _streams(protocol):
    inputs = [n for n, e in protocol.items() if isinstance(e, dict) and "ready" in e]
    outputs = [n for n, e in protocol.items() if isinstance(e, dict) and "order" in e]
    return inputs, outputs


def _has_last(stream) -> bool:
    layout = stream.payload.shape()
    return isinstance(layout, StructLayout) and "last" in [name for name, _ in layout]


def _run(component, process):
    sim = Simulator(component)
    sim.add_clock(1e-6)
    sim.add_testbench(process)
    sim.run()


SIM_PRESETS = _smallest_presets(PIPELINE_KINDS)


@pytest.mark.parametrize("path", SIM_PRESETS, ids=[p.stem for p in SIM_PRESETS])
def test_stated_latency_and_ready_path_hold(path):
    """One job through an idle pipeline comes out exactly the stated latency after its last
    beat was taken; with the pipeline full and the output stalled, raising the output's ready
    raises the input's ready in the same cycle (the stated combinational path)."""
    config = load_config(path)
    component = _component(config)
    protocol = component.protocol()
    (source_name,), (sink_name,) = _streams(protocol)
    stated = int(re.match(r"(\d+) cycles?\b", protocol["latency"]).group(1))
    assert protocol[source_name]["ready"].startswith(f"combinational on {sink_name}.ready")
    source, sink = getattr(component, source_name), getattr(component, sink_name)
    beats = getattr(component, "k_blocks", 1)     # MXIntLinear: one tile is K / k beats
    last = _has_last(source)
    seen = {}

    async def process(ctx):
        ctx.set(sink.ready, 1)
        for b in range(beats):
            ctx.set(source.valid, 1)
            if last:
                ctx.set(source.payload.last, 1)
            for _ in range(100):
                taken = ctx.get(source.ready)
                await ctx.tick()
                if taken:
                    break
        ctx.set(source.valid, 0)
        cycles = 1                              # the cycle after the last beat was taken
        while not ctx.get(sink.valid) and cycles < 200:
            await ctx.tick()
            cycles += 1
        seen["latency"] = cycles
        await ctx.tick()
        # fill: offer closing beats with the output stalled until the input refuses
        ctx.set(sink.ready, 0)
        ctx.set(source.valid, 1)
        for _ in range(beats * (stated + 4) + 10):
            if not ctx.get(source.ready):
                break
            await ctx.tick()
        seen["refused"] = not ctx.get(source.ready)
        ctx.set(sink.ready, 1)
        seen["ready_follows"] = bool(ctx.get(source.ready))

    _run(component, process)
    assert seen["latency"] == stated
    assert seen["refused"]
    assert seen["ready_follows"]


def test_softmax_ready_is_not_combinational_on_probs():
    """MXIntSoftmax says scores.ready is registered state only: with the row buffer full and
    probs stalled, raising probs.ready does not raise scores.ready in the same cycle."""
    path = _smallest_presets(["mxint_softmax"])[0]
    component = _component(load_config(path))
    assert component.protocol()["scores"]["ready"].startswith("registered state only")
    seen = {}

    async def process(ctx):
        ctx.set(component.probs.ready, 0)
        ctx.set(component.scores.valid, 1)
        ctx.set(component.scores.payload.mask, -1)
        ctx.set(component.scores.payload.last, 0)  # full rows: the block credits run out
        for _ in range(500):
            if not ctx.get(component.scores.ready):
                break
            await ctx.tick()
        for _ in range(50):                     # let the first pass drain into the buffer
            await ctx.tick()
        seen["refused"] = not ctx.get(component.scores.ready)
        seen["out_valid"] = bool(ctx.get(component.probs.valid))
        ctx.set(component.probs.ready, 1)
        seen["same_cycle"] = bool(ctx.get(component.scores.ready))
        await ctx.tick()
        await ctx.tick()
        seen["later"] = bool(ctx.get(component.scores.ready))

    _run(component, process)
    assert seen["refused"] and seen["out_valid"]
    assert not seen["same_cycle"]
    assert seen["later"]            # a credit came back once the output moved


def test_layernorm_row_start_is_combinational_on_params_valid():
    """MXIntLayerNorm says a row's first block is refused in a cycle where params.valid is high:
    after a complete parameter set, operands.ready falls in the same cycle params.valid rises."""
    path = _smallest_presets(["mxint_layernorm"])[0]
    component = _component(load_config(path))
    assert "combinational on params.valid" in component.protocol()["operands"]["ready"]
    nb = component.spec.row_blocks
    seen = {}

    async def process(ctx):
        ctx.set(component.results.ready, 1)
        seen["before_params"] = bool(ctx.get(component.operands.ready))
        ctx.set(component.params.valid, 1)
        for _ in range(nb):                     # one complete parameter set
            while not ctx.get(component.params.ready):
                await ctx.tick()
            await ctx.tick()
        ctx.set(component.params.valid, 0)
        await ctx.tick()
        seen["after_params"] = bool(ctx.get(component.operands.ready))
        ctx.set(component.params.valid, 1)
        seen["load_offered"] = bool(ctx.get(component.operands.ready))
        ctx.set(component.params.valid, 0)
        seen["load_withdrawn"] = bool(ctx.get(component.operands.ready))

    _run(component, process)
    assert not seen["before_params"]            # no row before a complete parameter set
    assert seen["after_params"] and seen["load_withdrawn"]
    assert not seen["load_offered"]
