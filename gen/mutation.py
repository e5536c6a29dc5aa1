"""Mutation score: inject single faults into the RTL generators and see whether the tests notice.

Each :class:`Mutant` replaces one exact piece of source text in hw/ (it must occur exactly once:
a mutant whose text is gone is reported ``stale``, never silently skipped). A mutant runs in a
private copy of the repository under ``build/mutation/<id>/``: first that block's fast tier
(amaranth.sim and unit tests, seconds), and only if every test still passes, its Verilator
co-simulation. ``killed`` means a test failed (or hung past the timeout); ``survived`` means the
whole regression passed with the fault in place. A survivor is either a missing test (write it)
or an equivalent mutant (the fault cannot change any output): :data:`EQUIVALENT` explains each
one the catalogue knows to be equivalent, and the report says which survivors are explained.

``accelgen bench mutation`` runs the catalogue and writes ``mutation.json`` and ``mutation.md``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["Mutant", "CATALOGUE", "EQUIVALENT", "MutantResult", "run_mutant", "run_catalogue"]


@dataclass(frozen=True)
class Mutant:
    id: str
    block: str              # the block whose regression must catch it
    file: str               # path relative to the repository root
    find: str               # exact text, must occur once
    replace: str
    fault: str              # what the fault means in hardware terms
    tests: tuple[str, ...]  # pytest paths of the block's regression


_SYS = ("tests/test_systolic.py", "tests/test_result_buffer.py")
_FLAT = ("tests/test_flattened.py", "tests/test_result_buffer.py")

CATALOGUE: tuple[Mutant, ...] = (
    # -- shared primitives: credit-reserved result buffer ----------------------------------------
    Mutant("credit_no_return", "primitives", "hw/primitives.py",
           "self.credits - self.reserve + popped", "self.credits - self.reserve",
           "a credit is never returned when a row leaves (deadlock once the buffer was full)",
           _SYS),
    Mutant("fifo_one_short", "primitives", "hw/primitives.py",
           "SyncFIFO(width=self._width, depth=self.depth)",
           "SyncFIFO(width=self._width, depth=max(1, self.depth - 1))",
           "the result FIFO holds one row fewer than the credits promise", _SYS),
    Mutant("fifo_buffered", "primitives", "hw/primitives.py",
           "fifo = m.submodules.fifo = SyncFIFO(width=self._width, depth=self.depth)",
           "from amaranth.lib.fifo import SyncFIFOBuffered\n"
           "        fifo = m.submodules.fifo = SyncFIFOBuffered(width=self._width, depth=self.depth)",
           "the original data-loss bug: a buffered FIFO refuses a write at depth 2", _SYS),
    # -- systolic: arithmetic -------------------------------------------------------------------
    Mutant("sat_no_high_clamp", "systolic", "hw/systolic.py",
           "return Mux(total > hi, hi, Mux(total < lo, lo, total[:width].as_signed()))",
           "return Mux(total < lo, lo, total[:width].as_signed())",
           "saturation forgets the positive limit (wraps instead)", _SYS),
    Mutant("sat_no_low_clamp", "systolic", "hw/systolic.py",
           "return Mux(total > hi, hi, Mux(total < lo, lo, total[:width].as_signed()))",
           "return Mux(total > hi, hi, total[:width].as_signed())",
           "saturation forgets the negative limit", _SYS),
    Mutant("wrap_one_bit_short", "systolic", "hw/systolic.py",
           "return (acc + product)[:width].as_signed()",
           "return (acc + product)[:width - 1].as_signed()",
           "the wrapping accumulator loses its top bit", _SYS),
    Mutant("os_never_restart", "systolic", "hw/systolic.py",
           "m.d.comb += total.eq(Mux(first, product, accumulate(acc, product, w, self.overflow)))",
           "m.d.comb += total.eq(accumulate(acc, product, w, self.overflow))",
           "a new job keeps the previous job's sum", _SYS),
    Mutant("os_shadow_any_last", "systolic", "hw/systolic.py",
           "with m.If(valid & last):",
           "with m.If(last):",
           "a bubble carrying a stale last flag moves the sum to the shadow", _SYS),
    Mutant("os_chain_shadow_first", "systolic", "hw/systolic.py",
           "        with m.If(self.chain_in.valid):\n"
           "            m.d.sync += [chain.eq(self.chain_in.value), chain_valid.eq(1)]\n"
           "        with m.Elif(shadow_valid):",
           "        with m.If(self.chain_in.valid & ~shadow_valid):\n"
           "            m.d.sync += [chain.eq(self.chain_in.value), chain_valid.eq(1)]\n"
           "        with m.Elif(shadow_valid):",
           "a PE's own result overtakes (and drops) the results of the PEs above", _SYS),
    Mutant("os_skew_off_by_one", "systolic", "hw/systolic.py",
           'left.a.eq(delay(m, self.a[i], i, name=f"a_skew{i}")),',
           'left.a.eq(delay(m, self.a[i], i + (i == 1), name=f"a_skew{i}")),',
           "row 1's operands arrive a cycle late and meet the wrong B", _SYS),
    Mutant("os_deskew_wrong", "systolic", "hw/systolic.py",
           "m.d.comb += self.c[j].eq(delay(m, bottom[j].chain_out.value, cols - 1 - j,",
           "m.d.comb += self.c[j].eq(delay(m, bottom[j].chain_out.value, cols - j - (j > 0),",
           "the output deskew of columns > 0 is a cycle short", _SYS),
    # -- systolic: control ------------------------------------------------------------------------
    Mutant("os_credit_off_by_one", "systolic", "hw/systolic.py",
           "last_ok=lambda spaced: (buffer.credits >= rows) & spaced)",
           "last_ok=lambda spaced: (buffer.credits >= rows - 1) & spaced)",
           "a job is admitted with one result row too few reserved", _SYS),
    Mutant("os_drain_rate", "systolic", "hw/primitives.py",
           "return self.since_last >= self.spacing",
           "return self.since_last >= self.spacing - 1",
           "jobs finish faster than a column's result chain drains", _SYS),
    Mutant("os_last_row_flag", "systolic", "hw/systolic.py",
           "buffer.write.payload.last.eq(row_index == rows - 1),",
           "buffer.write.payload.last.eq(row_index == 0),",
           "``last`` marks the first row of a job instead of the last", _SYS),
    Mutant("ws_below_last_wrong_side", "systolic", "hw/systolic.py",
           "below_last = north.last & (north.tag < self.row) if self.row else Const(0)",
           "below_last = north.last & (north.tag > self.row) if self.row else Const(0)",
           "a short reduction zeroes the rows above instead of the stale rows below", _SYS),
    Mutant("ws_weight_buffer_swapped", "systolic", "hw/systolic.py",
           "weight = Mux(west.buffer, weights[1], weights[0])",
           "weight = Mux(west.buffer, weights[0], weights[1])",
           "activations multiply the weights of the other job", _SYS),
    Mutant("ws_overwrite_busy_buffer", "systolic", "hw/systolic.py",
           "self.weights.ready.eq(loaded <= 1),",
           "self.weights.ready.eq(loaded <= 2),",
           "a third weight packet overwrites a buffer still in use", _SYS),
    Mutant("ws_no_credit_check", "systolic", "hw/systolic.py",
           "self.activations.ready.eq((loaded >= 1) & (buffer.credits >= 1)),",
           "self.activations.ready.eq(loaded >= 1),",
           "activations enter without a free result row", _SYS),
    # -- flattened array ---------------------------------------------------------------------------
    Mutant("flat_transpose_ignored", "flattened", "hw/flattened.py",
           "b_lanes.append(Mux(ops.payload.transpose, ops.payload.b[j * subs + s], plain))",
           "b_lanes.append(plain)",
           "transposed B beats are read in plain lane order", _FLAT),
    Mutant("flat_emit_extra_row", "flattened", "hw/flattened.py",
           "emit = tree_valid & (row_index < tag.rows)",
           "emit = tree_valid & (row_index <= tag.rows)",
           "a job emits one row more than its M", _FLAT),
    Mutant("flat_head_dropped", "flattened", "hw/flattened.py",
           "out_row.head.eq(head),", "out_row.head.eq(0),",
           "results lose their head tag", _FLAT),
    Mutant("flat_credit_ignores_rows", "flattened", "hw/flattened.py",
           "reserve = Mux(emits, ops.payload.rows, 0)",
           "reserve = Mux(emits, 1, 0)",
           "a job reserves one result row whatever its M", _FLAT),
    Mutant("flat_tree_valid_early", "flattened", "hw/flattened.py",
           'm.d.comb += self.valid_out.eq(delay(m, self.valid_in, self.levels, name="valid",',
           'm.d.comb += self.valid_out.eq(delay(m, self.valid_in, max(0, self.levels - 1), '
           'name="valid",',
           "the tree's valid runs a level ahead of its sums", _FLAT),
    Mutant("flat_mx_never_restart", "flattened", "hw/flattened.py",
           "base = Mux(first_k, 0, previous)",
           "base = previous",
           "an MXInt tile keeps the previous tile's aligned sum", _FLAT),
    Mutant("flat_mx_exponent_bias", "flattened", "hw/flattened.py",
           "m.d.comb += a_rel.eq(tag.a_exp[r].as_unsigned() ^ half)",
           "m.d.comb += a_rel.eq(tag.a_exp[r].as_unsigned())",
           "A's exponent is read as unsigned instead of two's complement", _FLAT),
    # -- MXInt datapaths ----------------------------------------------------------------------
    Mutant("cast_tie_rule_inverted", "mxint_cast", "hw/mxint_common.py",
           "up = round_bit & (sticky | q[0]) if", "up = round_bit & (sticky | ~q[0]) if",
           "half-even rounding breaks ties toward odd", ("tests/test_mxint_cast.py",)),
    Mutant("cast_emax_unclamped", "mxint_linear", "hw/mxint_common.py",
           "    with m.Elif(e_true > fmt.emax):", "    with m.Elif(e_true > fmt.emax + 1):",
           "a shared exponent one above emax is not clamped",
           ("tests/test_mxint_linear.py", "tests/test_mxint_cast.py")),
    Mutant("dot_biased_exponent", "mxint_dot", "hw/mxint_dot.py",
           "+ decode_exponent(b.exponent, f))", "+ b.exponent.as_signed())",
           "B's biased exponent is read as two's complement", ("tests/test_mxint_dot.py",)),
    Mutant("accumulator_lane0_overflow", "mxint_accumulator", "hw/mxint_accumulator.py",
           "Cat(s[a] ^ s[a - 1] for s in sums)", "Cat(s[a] ^ s[a - 1] for s in sums[:1])",
           "shift-mode overflow is detected on lane 0 only",
           ("tests/test_mxint_accumulator.py",)),
    Mutant("accumulator_shift_far_ignored", "mxint_accumulator", "hw/mxint_accumulator.py",
           "Mux(far, value >> (len(value) - 1),\n"
           "                                               value >> amount[:low])",
           "Mux(far, value >> amount[:low],\n"
           "                                               value >> amount[:low])",
           "shift mode: an exponent difference past the shifter's low bits is not sign-filled",
           ("tests/test_mxint_accumulator.py",)),
    Mutant("dot_tree_exponent_early", "mxint_dot", "hw/mxint_dot.py",
           'exponent = self._register(m, ctl.advance, exponent, f"exponent_s{stage}")',
           'exponent = exponent',
           "with tree_stages > 1 the exponent does not wait beside the tree's partial sums",
           ("tests/test_mxint_dot.py",)),
    Mutant("accumulator_exponent_narrow", "mxint_accumulator", "hw/mxint_accumulator.py",
           "self.shift_exponent_max().bit_length() + 1)", "0)",
           "the shift-mode sum exponent is too narrow for long sums (the bug the fast tier found)",
           ("tests/test_mxint_accumulator.py",)),
    Mutant("linear_fp32_half_away", "mxint_linear", "hw/mxint_linear.py",
           'rounding="half_even", name=f"fp_{n}", keep=26',
           'rounding="half_away", name=f"fp_{n}", keep=26',
           "FP32 outputs round ties away from zero", ("tests/test_mxint_linear.py",)),
    Mutant("linear_subnormal_boundary", "mxint_linear", "hw/mxint_linear.py",
           "normal = top >= -126", "normal = top >= -127",
           "FP32 subnormal boundary off by one (-127)", ("tests/test_mxint_linear.py",)),
    Mutant("linear_subnormal_boundary_up", "mxint_linear", "hw/mxint_linear.py",
           "normal = top >= -126", "normal = top >= -125",
           "FP32 subnormal boundary off by one (-125)", ("tests/test_mxint_linear.py",)),
    # -- floating-point adder and ternary units -----------------------------------------------
    Mutant("float_add_stall_ignored", "float_add", "hw/primitives.py",
           "return register(self._m, value, name=name, enable=self.advance)",
           "return register(self._m, value, name=name, enable=None)",
           "the pipelined adder's inner stages (GlobalEnable.register) load while the pipeline "
           "is stalled",
           ("tests/test_float_add.py",)),
    Mutant("lut_negation_carry_dropped", "ternary_lut", "hw/ternary_lut.py",
           "            total = total + sum(negations)", "            total = total",
           "the +1 of inverted (negated) integer lookups is dropped",
           ("tests/test_ternary_lut.py",)),
    Mutant("addsub_float_not_negated", "ternary_lut", "hw/ternary_baseline.py",
           "Cat(a[:-1], a[-1] ^ code[1])", "Cat(a[:-1], a[-1])",
           "float activations of -1 weights are added, not subtracted",
           ("tests/test_ternary_lut.py",)),
    Mutant("multiplier_lanes_reversed", "ternary_lut", "hw/ternary_baseline.py",
           "product = self.staged_mul(m, advance, activations[r], lane[r],",
           "product = self.staged_mul(m, advance, activations[r], lane[-1 - r],",
           "the multiplier baseline takes a lane's weights in reverse order",
           ("tests/test_ternary_lut.py",)),
    Mutant("ternary_partial_stale", "ternary_lut", "hw/ternary_lut.py",
           "held.append(Mux(filled[p], partial, neg_zero))", "held.append(partial)",
           "a float job shorter than accumulator_stages beats sums the previous job's partials",
           ("tests/test_ternary_lut.py",)),
    Mutant("ternary_job_restart_lost", "ternary_lut", "hw/ternary_lut.py",
           'first = delay(m, ~in_job, depth, name="beat_first", enable=advance)',
           'first = delay(m, C(0), depth, name="beat_first", enable=advance)',
           "a job's first beat adds to the previous job's sum", ("tests/test_ternary_lut.py",)),
    # -- MXInt nonlinear units --------------------------------------------------------------------
    Mutant("softmax_running_max_frozen", "mxint_softmax", "hw/mxint_softmax.py",
           "Mux(f_at | (bm.value > m_reg), bm.value, m_reg)", "Mux(f_at, bm.value, m_reg)",
           "the row's running max keeps its first block's value (a later, larger block is not "
           "rescaled)", ("tests/test_mxint_softmax.py",)),
    Mutant("gelu_negative_tail", "mxint_gelu", "hw/mxint_gelu.py",
           "Mux(x < -half, 0, y)", "Mux(x < -half, y, y)",
           "inputs below the polynomial's range get the polynomial's edge value instead of 0",
           ("tests/test_mxint_gelu.py",)),
    Mutant("layernorm_row_sum_carried", "mxint_layernorm", "hw/mxint_layernorm.py",
           "[Mux(f_at, 0, acc_s), Mux(f_at, 0, acc_c)]", "[acc_s, Mux(f_at, 0, acc_c)]",
           "half of a row's carry-save sum is not cleared at the next row",
           ("tests/test_mxint_layernorm.py",)),
    # -- an equivalent mutant, kept to show the report explains them ----------------------------
    Mutant("tree_operands_swapped", "primitives", "hw/primitives.py",
           "total = add(values[p], values[p + 1])",
           "total = add(values[p + 1], values[p])",
           "the adder tree adds each pair in the other order", _FLAT),
)

#: Mutants known to be equivalent, and why no test can kill them.
EQUIVALENT: dict[str, str] = {
    "linear_subnormal_boundary_up": "at a result exponent of -126 the normal and the subnormal "
                                    "encodings give the same FP32 bits (the subnormal path "
                                    "shifts by zero), so the comparison's boundary cannot be "
                                    "told apart there",
    "tree_operands_swapped": "every adder in the tree is commutative (wrapping or saturating "
                             "two's-complement addition of two operands gives the same result in "
                             "either order); the pairing, which does matter, is unchanged",
}

_COPY = ("hw", "gen", "cosim", "software_model", "tests", "configs", "pyproject.toml")


@dataclass
class MutantResult:
    id: str
    block: str
    fault: str
    status: str                 # killed | survived | stale | error
    tier: str = ""              # which tier killed it: fast | cosim
    seconds: float = 0.0
    detail: str = ""
    equivalent: str = ""


def _repo_root() -> Path:
    from gen.config import REPO_ROOT
    return REPO_ROOT


def _prepare(mutant: Mutant, root: Path, work: Path) -> str | None:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in _COPY:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, work / name)
    target = work / mutant.file
    text = target.read_text()
    count = text.count(mutant.find)
    if count != 1:
        return f"the text to mutate occurs {count} times in {mutant.file}"
    target.write_text(text.replace(mutant.find, mutant.replace))
    return None


def _pytest(work: Path, tests: tuple[str, ...], marker: str, timeout: float) -> tuple[int, str]:
    # Pinned seeds: the score must not depend on which random configs a run happened to draw.
    env = dict(os.environ, PYTHONPATH=str(work),
               ACCELGEN_SEED=os.environ.get("ACCELGEN_SEED", "1"),
               ACCELGEN_CONFIG_SEED=os.environ.get("ACCELGEN_CONFIG_SEED", "1"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", marker,
           "-n", "0", *tests]
    try:
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout:.0f} s (a hang counts as caught)"
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
    return proc.returncode, tail


def run_mutant(mutant: Mutant, *, cosim: bool = True, timeout: float = 1800) -> MutantResult:
    """Apply one fault in a private copy and run its block's regression, fast tier first."""
    root = _repo_root()
    work = root / "build" / "mutation" / mutant.id
    result = MutantResult(mutant.id, mutant.block, mutant.fault, "error",
                          equivalent=EQUIVALENT.get(mutant.id, ""))
    start = time.monotonic()
    problem = _prepare(mutant, root, work)
    if problem:
        result.status, result.detail = "stale", problem
        return result
    tiers = [("fast", "not cosim and not synth")] + ([("cosim", "cosim")] if cosim else [])
    for tier, marker in tiers:
        code, tail = _pytest(work, mutant.tests, marker, timeout)
        if code not in (0, 5):          # 5: no tests collected for that marker
            result.status, result.tier, result.detail = "killed", tier, tail
            break
    else:
        result.status, result.detail = "survived", "every test passed with the fault in place"
    result.seconds = round(time.monotonic() - start, 1)
    shutil.rmtree(work, ignore_errors=True)
    return result


def run_catalogue(out_dir: Path, *, only: list[str] | None = None, cosim: bool = True,
                  progress=print) -> dict:
    """Run the catalogue (or the mutants named in ``only``); write mutation.json / .md."""
    mutants = [m for m in CATALOGUE if not only or m.id in only]
    results = []
    for n, mutant in enumerate(mutants, 1):
        progress(f"[{n}/{len(mutants)}] {mutant.id} ({mutant.block}): {mutant.fault}")
        res = run_mutant(mutant, cosim=cosim)
        progress(f"    {res.status}{' by ' + res.tier if res.tier else ''} in {res.seconds} s")
        results.append(res)
    scored = [r for r in results if r.status in ("killed", "survived")]
    killed = sum(r.status == "killed" for r in scored)
    unexplained = [r.id for r in results if r.status == "survived" and not r.equivalent]
    nonequivalent = [r for r in scored if not r.equivalent]
    summary = {
        "mutants": len(results), "killed": killed,
        "survived": len(scored) - killed,
        "stale": sum(r.status == "stale" for r in results),
        "score": round(killed / len(scored), 4) if scored else None,
        "score_excluding_equivalent": round(
            sum(r.status == "killed" for r in nonequivalent) / len(nonequivalent), 4)
        if nonequivalent else None,
        "unexplained_survivors": unexplained,
        "results": [asdict(r) for r in results],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "mutation.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = ["| mutant | block | fault | result | tier | seconds |", "|---|---|---|---|---|---:|"]
    for r in results:
        status = r.status + (" (equivalent: " + r.equivalent + ")" if r.equivalent and
                             r.status == "survived" else "")
        lines.append(f"| {r.id} | {r.block} | {r.fault} | {status} | {r.tier} | {r.seconds} |")
    lines.append("")
    lines.append(f"Killed {killed} of {len(scored)} ({summary['score']}); excluding equivalent "
                 f"mutants: {summary['score_excluding_equivalent']}; unexplained survivors: "
                 f"{', '.join(unexplained) or 'none'}.")
    (out_dir / "mutation.md").write_text("\n".join(lines) + "\n")
    return summary
