"""The mutation catalogue stays in step with the code it mutates, and the runner can tell a
killed mutant from a survivor (one fast-tier mutant of each kind is run for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gen.config import REPO_ROOT
from gen.mutation import CATALOGUE, EQUIVALENT, run_mutant


@pytest.mark.parametrize("mutant", CATALOGUE, ids=lambda m: m.id)
def test_mutant_applies_exactly_once(mutant):
    text = (REPO_ROOT / mutant.file).read_text()
    assert text.count(mutant.find) == 1, f"{mutant.id}: stale mutant, update gen/mutation.py"
    assert mutant.find != mutant.replace
    for test in mutant.tests:
        assert (REPO_ROOT / test).exists(), test


def test_catalogue_ids_unique_and_equivalents_known():
    ids = [m.id for m in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert set(EQUIVALENT) <= set(ids)


def test_a_real_fault_is_killed_by_the_fast_tier():
    mutant = next(m for m in CATALOGUE if m.id == "fifo_buffered")
    result = run_mutant(mutant, cosim=False, timeout=600)
    assert result.status == "killed" and result.tier == "fast", result


def test_an_equivalent_fault_survives():
    mutant = next(m for m in CATALOGUE if m.id == "tree_operands_swapped")
    mutant = type(mutant)(**{**mutant.__dict__, "tests": ("tests/test_result_buffer.py",)})
    result = run_mutant(mutant, cosim=False, timeout=600)
    assert result.status == "survived" and result.equivalent, result
