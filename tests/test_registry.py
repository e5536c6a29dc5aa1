"""One record per kind (gen/registry.py): every entry resolves, every kind, benchmark, testbench
and test file is in it, and the commands read it."""

from __future__ import annotations

import pkgutil

import pytest

from gen.config import GENERATORS, REPO_ROOT, config_class
from gen.registry import BENCHES, KINDS, load


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_record_resolves(name):
    record = KINDS[name]
    assert config_class(name).kind == name
    for path in record.rtl:
        assert isinstance(load(path), type), path
    assert callable(load(record.golden))
    if record.testbench:
        assert (REPO_ROOT / (record.testbench.replace(".", "/") + ".py")).exists()
    assert (REPO_ROOT / record.tests).exists()
    if record.cycles:
        assert callable(load(record.cycles))
    if record.dse:
        assert load(record.dse).kind == name
    if record.bench:
        assert record.bench in BENCHES
    assert record.summary


def test_generators_are_the_registry():
    assert GENERATORS == {name: r.config for name, r in KINDS.items()}


def test_every_benchmark_module_is_registered():
    import gen.bench
    modules = {name for _f, name, _p in pkgutil.iter_modules(gen.bench.__path__)
               if not name.startswith("_")}
    assert modules == {b.module.rsplit(".", 1)[-1] for b in BENCHES.values()}
    for bench in BENCHES.values():
        assert callable(load(bench.module).run), bench.name


def test_every_testbench_belongs_to_a_kind():
    testbenches = {r.testbench for r in KINDS.values() if r.testbench}
    for path in sorted((REPO_ROOT / "cosim").glob("*.py")):
        text = path.read_text()
        if "@cocotb.test" in text and path.stem not in ("replay",):
            assert f"cosim.{path.stem}" in testbenches, path.name


def test_cycles_command_covers_every_kind_with_a_model(capsys):
    from gen.cli import main
    for name, record in KINDS.items():
        presets = sorted((REPO_ROOT / "configs").glob("*.yaml"))
        preset = next((p for p in presets if config_class(name).kind == name
                       and f"kind: {name}" in p.read_text()), None)
        if preset is None:
            continue
        k = 64
        status = main(["cycles", str(preset), "--m", "4", "--k", str(k), "--n", "8", "--json"])
        out = capsys.readouterr()
        if record.cycles:
            assert status == 0, out.err
            assert '"cycles"' in out.out
        else:
            assert status == 2 and "no cycle model" in out.err
