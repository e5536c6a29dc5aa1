"""Seeded fuzzing of every preset and sweep file through the CLI (gen/fuzz.py): exit 0 or 2
only, rejections name the file, nothing written outside the output folder or left behind on
rejection, and rtl succeeds on what check accepts. `make fuzz` runs thousands of cases."""

from __future__ import annotations

import pytest

import gen.cli
from gen.fuzz import make_case, run_case, run_cases, seed_files

CHUNKS = 4
CASES_PER_CHUNK = 75          # 300 cases in all
GENERATIONS_PER_CHUNK = 2     # Verilog for a sample of the accepted configs (a second each)
SEED = 20240909


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_mutated_inputs_keep_the_contract(chunk):
    numbers = range(chunk * CASES_PER_CHUNK, (chunk + 1) * CASES_PER_CHUNK)
    outcomes = run_cases(numbers, SEED, cli=gen.cli.main, rtl_max_cells=8000,
                         max_generations=GENERATIONS_PER_CHUNK)
    bad = [o.to_dict() for o in outcomes if o.violations]
    assert not bad, "\n".join(f"case {b['case']} from {b['origin']} {b['mutations']}: "
                              f"{b['violations']}" for b in bad[:5])
    # The campaign must exercise both sides of the contract, not only rejections.
    assert sum(o.accepted for o in outcomes) >= 3
    assert sum(not o.accepted for o in outcomes) >= CASES_PER_CHUNK // 2


def test_every_seed_file_is_used_and_cases_are_reproducible():
    seeds = seed_files()
    assert len([s for s in seeds if s.parent.name == "dse"]) >= 5
    origins = {make_case(n, SEED, seeds).origin for n in range(CHUNKS * CASES_PER_CHUNK)}
    assert len(origins) >= len(seeds) - 2
    again = make_case(17, SEED, seeds)
    assert make_case(17, SEED, seeds).data == again.data


def test_a_broken_contract_is_caught(tmp_path, monkeypatch):
    """The checker itself can fail: an rtl that writes a stray file outside --out, and a check
    that crashes, are both reported as violations."""
    import gen.cli

    case = make_case(0, SEED)
    case.data = b"kind: float_add\nname: ok_name\n"
    case.filename, case.is_sweep, case.cycles_args = "x.yaml", False, None
    real = gen.cli.cmd_rtl

    def leaky_rtl(args):
        (tmp_path / "w1" / "stray.v").write_text("escaped")
        return real(args)

    monkeypatch.setattr(gen.cli, "cmd_rtl", leaky_rtl)      # build_parser reads it per call
    outcome = run_case(case, tmp_path / "w1", cli=gen.cli.main)
    assert any("written outside the output folder" in v for v in outcome.violations)

    def crashing_check(args):
        raise ZeroDivisionError("integer modulo by zero")

    monkeypatch.setattr(gen.cli, "cmd_check", crashing_check)
    outcome = run_case(case, tmp_path / "w2", cli=gen.cli.main)
    assert any("exit 1" in v for v in outcome.violations)
    assert any("internal error" in v for v in outcome.violations)

