"""The folder layering (gen -> cosim -> hw -> software_model, docs/FRAMEWORK.md) and the testbenches'
plain-data views of manifest.json.

A testbench reads the manifest's ``config`` (the YAML mapping with defaults) and ``parameters``
(the component's keyword arguments as plain JSON), never gen/'s config dataclasses. What a
testbench derives from them must equal what the config dataclass derives: checked here for every
preset, without a simulator.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import pytest

from cosim.harness import PlainData
from gen.config import load_config, preset_paths
from gen.export import _plain
from gen.registry import KINDS

ROOT = Path(__file__).resolve().parent.parent

#: folder -> the folders it may import (itself included)
ALLOWED = {
    "gen": {"gen", "cosim", "hw", "software_model"},
    "cosim": {"cosim", "hw", "software_model"},
    "hw": {"hw", "software_model"},
    "software_model": {"software_model"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folders_import_only_downward(folder):
    """Every import (module level or inside a function) of a project folder goes to itself or a
    folder below it; software_model/ does not import amaranth."""
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[folder]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if folder == "software_model" and top == "amaranth":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (anywhere in the file, so the imports
    inside functions count too)."""
    files = {_module_name(p): p for folder in ALLOWED for p in (ROOT / folder).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def test_no_import_circles_between_files():
    """No two project files import each other, directly or through others (Tarjan's strongly
    connected components of the import graph)."""
    graph = _import_graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def _manifest_data(config) -> tuple[PlainData, PlainData]:
    """``config`` and ``parameters`` exactly as manifest.json carries them (through JSON)."""
    manifest = json.loads(json.dumps({"config": config.to_dict(),
                                      "parameters": _plain(config.parameters())}))
    return PlainData(manifest["config"], "config"), PlainData(manifest["parameters"], "parameters")


def _presets():
    for name, record in sorted(KINDS.items()):
        if record.testbench is None:
            continue
        for path in preset_paths(name):
            yield pytest.param(record.testbench, path, id=path.stem)
        yield pytest.param(record.testbench, f"random:{name}", id=f"random-{name}")


def _configs(source):
    """A preset, or (``random:<kind>``) a handful of seeded random valid configs of the kind."""
    if str(source).startswith("random:"):
        from gen.random_configs import random_configs
        return random_configs(str(source).partition(":")[2], 6, seed=11)
    return [load_config(source)]


def test_plain_data_is_read_only():
    data = PlainData({"rows": 4, "fmt": {"block_size": 8}, "widths": [1, 2]}, "parameters")
    assert data.rows == 4 and data["rows"] == 4
    assert data.fmt.block_size == 8 and dict(data.fmt) == {"block_size": 8}
    assert data.widths == (1, 2)
    with pytest.raises(AttributeError, match="read-only"):
        data.rows = 5
    with pytest.raises(AttributeError, match="parameters has no 'cols'; it has: fmt, rows"):
        data.cols


@pytest.mark.parametrize("module,source", list(_presets()))
def test_testbench_view_matches_config(module, source):
    """Every attribute a testbench's ``view`` derives from the manifest equals the config
    dataclass's own (the helpers take either), for every preset and random configs."""
    for config in _configs(source):
        _check_view(module, config)


def _check_view(module, config):
    tb = importlib.import_module(module)
    cfg, params = _manifest_data(config)
    if module == "cosim.accelerator":
        assert tb.golden_params(params) == config.accelerator_params()
        assert tb.accelerator_kwargs(params) == config.parameters()
        return
    if not hasattr(tb, "view"):
        # the testbench reads only config keys: each must be one the manifest has
        return
    view = tb.view(cfg, params)
    compared = 0
    for name, value in vars(view).items():
        if name == "elaborate":
            continue
        if not hasattr(config, name):
            continue        # a component parameter the config names differently
        want = getattr(config, name)
        assert value == want, \
            f"{config.name}: {module}.view().{name} = {value!r}, the config says {want!r}"
        compared += 1
    assert compared >= 2, f"{module}.view() shares only {compared} attributes with the config"
    if hasattr(view, "elaborate"):      # the component rebuilt from the recorded parameters
        got, want = view.elaborate(), config.elaborate()
        for c in (got, want):
            c._MustUse__silence = True
        assert type(got) is type(want) and repr(got) == repr(want)
        for name in ("latency", "latencies"):
            if hasattr(want, name):
                assert getattr(got, name) == getattr(want, name)
