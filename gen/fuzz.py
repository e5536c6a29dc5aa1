"""Fuzzing the input contract: mutated presets and sweep files through the real CLI.

Every case starts from a shipped file (configs/*.yaml or configs/dse/*.yaml), applies one to three
seeded mutations (hostile values and names, schema boundaries, typos, deleted keys, repeated keys,
encodings, truncation, binary noise, deep nesting, YAML aliases) and runs the result through
``accelgen check`` and ``rtl`` (configs) or ``dse --check`` (sweep files), and sometimes
``cycles``, in this process, as a user would. It asserts the contract of README "Configs":

* the exit status is 0 or 2 (never 1, an internal error, or a traceback);
* a rejection (2) names the file;
* nothing is written outside the output folder, and nothing at all when the input is rejected
  (no folder, no staging or ``.old`` leftovers);
* ``rtl`` succeeds on every config ``check`` accepts (up to ``rtl_max_cells`` estimated cells,
  to keep a campaign fast; above it, ``rtl --max-cells`` must refuse it with exit 2 and write
  nothing), and writes exactly ``OUT/<name>/``.

``accelgen fuzz --cases N`` runs a campaign and writes OUT/summary.json (with every violating
input saved beside it); tests/test_fuzz.py runs a few hundred cases in ``make test``.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

__all__ = ["Case", "Outcome", "make_case", "run_case", "run_campaign", "seed_files"]

#: Values a careless or hostile user might put anywhere.
HOSTILE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 3, 7, 63, 64, 65, 1000, 4096, 65536, 10**6, 2**31, 2**63,
    -(2**63), 10**40, 0.5, 1.0, -0.0, 1e308, "", " ", "x", "int8", "int1", "int17", "fp16",
    "fp8", "mxint", "wrap", "lut", "true", "null", "2024-01-01", "../x", "/tmp/x", "\x00",
    "\udcff", "é", "名前", "a" * 500, [], [1, 2], [None], {}, {"a": 1}, {"kind": "x"}, [[[[1]]]],
]
#: Design names that must never escape or replace anything.
HOSTILE_NAMES: list[Any] = [
    "", ".", "..", "../escape", "../../escape", "a/b", "a\\b", "/tmp/accelgen_fuzz_abs",
    "x\nmodule injected; endmodule //", "a" * 65, "a" * 300, "x\x00y", "\udcff", "module",
    "wire", "CON", "nul", "-rf", " name", "name ", "名前", "1abc", "$top", "a.b", "ok_name",
    "A" * 64, "_", None, 7, ["x"], {"n": 1}, True,
]
#: Text inserted into a YAML document as a whole line.
HOSTILE_LINES = [
    "kind: systolic_array", "name: dup", "rows: 4\nrows: 8", "\tbad: tab", "x: [1, 2", "y: {",
    "z: !!binary aGVsbG8=", "s: !!set {a, b}", "p: !!python/object/apply:os.system ['true']",
    "d: 2024-01-01", "big: " + "9" * 5000, "deep: " + "[" * 3000 + "]" * 3000, "- item",
    "? [a, b]\n: c", "n: &a [*a]", "---\nkind: float_add", "...", "%YAML 1.1", "'unterminated",
    "k: \"\\udcff\"", "k: \"\\x00\"", "<<: {rows: 3}",
]
_LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
HOSTILE_LINES.append("l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + _LAUGHS.rstrip("\n"))


def seed_files() -> list[Path]:
    from gen.config import PRESET_DIR
    return sorted(PRESET_DIR.glob("*.yaml")) + sorted((PRESET_DIR / "dse").glob("*.yaml"))


@dataclass
class Case:
    number: int
    origin: str                  # seed file it started from (relative to the repo)
    is_sweep: bool
    mutations: list[str]
    filename: str
    data: bytes
    cycles_args: list[str] | None = None

    def describe(self) -> dict:
        return {"case": self.number, "origin": self.origin, "mutations": self.mutations,
                "filename": self.filename, "bytes": len(self.data),
                "preview": self.data[:300].decode("utf-8", "backslashreplace"),
                "cycles": self.cycles_args}


@dataclass
class Outcome:
    case: Case
    steps: list[dict] = field(default_factory=list)      # command, exit, stderr tail
    accepted: bool | None = None
    generated: bool = False
    guarded: bool = False
    violations: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {**self.case.describe(), "accepted": self.accepted, "generated": self.generated,
                "guarded": self.guarded, "violations": self.violations, "steps": self.steps}


# --------------------------------------------------------------------------- mutation


def _schema_values(kind: str, key: str, rng: random.Random) -> list[Any]:
    """Boundary values of ``key`` from the schema: min-1, min, max, max+1, every choice and a
    misspelt one. Scaling a size key to its maximum is how giant designs arise."""
    import dataclasses

    from gen.config import GENERATORS, config_class
    if kind not in GENERATORS:
        return []
    fields = {f.name: f for f in dataclasses.fields(config_class(kind))}
    if key not in fields:
        return []
    meta = fields[key].metadata
    out: list[Any] = []
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None:
        out += [lo - 1, lo]
    if hi is not None:
        out += [hi, hi + 1, max(lo or 1, hi // 2)]
    for choice in meta.get("choices") or ():
        out += [choice, str(choice).upper(), str(choice)[:-1]]
    return out


def _valid_change(data: dict, kind: str, rng: random.Random) -> str | None:
    """Set one key to a value its schema accepts on its own (a small random size, another
    choice), so a good share of mutants is accepted and goes on to rtl."""
    import dataclasses

    from gen.config import GENERATORS, config_class
    if kind not in GENERATORS:
        return None
    f = rng.choice(dataclasses.fields(config_class(kind)))
    meta = f.metadata
    if meta.get("choices"):
        data[f.name] = rng.choice(meta["choices"])
    elif meta.get("min") is not None and meta.get("max") is not None:
        lo = int(meta["min"])
        current = data.get(f.name)
        top = current * 2 if isinstance(current, int) and not isinstance(current, bool) else 16
        data[f.name] = rng.randint(lo, max(lo, min(int(meta["max"]), top)))
    elif f.name in ("a_type", "b_type"):
        data[f.name] = f"int{rng.randint(2, 16)}"
    elif f.name == "activation":
        data[f.name] = rng.choice(["int4", "int8", "fp16", "bf16", f"int{rng.randint(2, 16)}"])
    elif isinstance(data.get(f.name), bool) or f.default in (True, False):
        data[f.name] = rng.random() < 0.5
    else:
        return None
    return f"{f.name}={_short(data[f.name])} (valid alone)"


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 2:
        return word + "x"
    i = rng.randrange(len(word) - 1)
    op = rng.randrange(3)
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + rng.choice("aeiouxz") + word[i:]


def _mutate_data(data: Any, rng: random.Random, is_sweep: bool) -> tuple[Any, str]:
    if not isinstance(data, dict) or not data:
        return rng.choice(HOSTILE_VALUES), "replace document"
    data = dict(data)
    keys = list(data)
    kind = data.get("kind") if isinstance(data.get("kind"), str) else ""
    op = rng.choice(["value", "value", "boundary", "boundary", "valid", "valid", "valid", "name",
                     "delete", "unknown", "kind", "nest", "grow"])
    if is_sweep and op in ("boundary", "grow"):
        op = "sweep"
    if op == "value":
        key = rng.choice(keys)
        data[key] = rng.choice(HOSTILE_VALUES)
        return data, f"{key}={_short(data[key])}"
    if op == "boundary":
        from gen.config import GENERATORS, config_class
        import dataclasses
        if kind in GENERATORS:
            key = rng.choice([f.name for f in dataclasses.fields(config_class(kind))])
            values = _schema_values(kind, key, rng)
            if values:
                data[key] = rng.choice(values)
                return data, f"{key}={_short(data[key])} (boundary)"
        op = "value"
        key = rng.choice(keys)
        data[key] = rng.choice(HOSTILE_VALUES)
        return data, f"{key}={_short(data[key])}"
    if op == "valid":
        changed = _valid_change(data, kind, rng)
        if changed is not None:
            return data, changed
        op = "grow"
    if op == "grow":
        sizes = [k for k, v in data.items() if isinstance(v, int) and not isinstance(v, bool)
                 and k != "kind"]
        if sizes:
            key = rng.choice(sizes)
            data[key] = data[key] * rng.choice([2, 4, 16, 64, 1024])
            return data, f"{key}*={data[key]}"
        return data, "grow (nothing numeric)"
    if op == "name":
        data["name"] = rng.choice(HOSTILE_NAMES)
        return data, f"name={_short(data['name'])}"
    if op == "delete":
        key = rng.choice(keys)
        del data[key]
        return data, f"delete {key}"
    if op == "unknown":
        key = (_typo(str(rng.choice(keys)), rng) if rng.random() < 0.7
               else f"extra_{rng.randrange(99)}")
        data[key] = rng.choice(HOSTILE_VALUES)
        return data, f"add {key}"
    if op == "kind":
        data["kind"] = rng.choice([_typo(kind or "kind", rng), None, ["systolic_array"], {}, 7,
                                   "flattened_array", "float_add", "ternary_lut", "nope"])
        return data, f"kind={_short(data['kind'])}"
    if op == "nest":
        key = rng.choice(keys)
        value: Any = data[key]
        for _ in range(rng.choice([2, 10, 40])):
            value = [value]
        data[key] = value
        return data, f"nest {key}"
    # sweep-specific: long lists, odd axes
    op = rng.choice(["throughput", "axis", "workload", "synthesize"])
    if op == "throughput":
        data["throughput"] = rng.choice([list(range(1, rng.choice([3, 70, 2000]))), [0], [-8],
                                         ["8"], 8, [8, 8], [2**40]])
        return data, f"throughput={_short(data['throughput'])}"
    if op == "axis":
        axes = dict(data.get("axes") or {}) if isinstance(data.get("axes"), dict) else {}
        axes[rng.choice(["mu", "lanes_k", "activation", "lanes_l", 7, None, "mirrorred",
                         "architecture"])] = rng.choice([[1, 2], [], "x", [2, 2],
                                                         list(range(1, 100)), [None], [{}]])
        data["axes"] = axes
        return data, "axes mutated"
    if op == "workload":
        data["workload"] = rng.choice([{"reduction": 0}, {"columns": 2**40}, [], {"x": 1},
                                       {"reduction": True}])
        return data, f"workload={_short(data['workload'])}"
    data["synthesize"] = rng.choice(["some", [{}], [{"bogus": 1}], [[1]], True, None, 3])
    return data, f"synthesize={_short(data['synthesize'])}"


def _short(value: Any) -> str:
    from gen.schema import show_value
    return show_value(value, 30)


def _dump(data: Any) -> bytes:
    try:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=4096)
    except yaml.YAMLError:
        text = json.dumps(data, default=str)
    return text.encode("utf-8", "surrogatepass")


def _mutate_text(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    op = rng.choice(["line", "line", "line", "duplicate", "truncate", "bytes", "utf16", "bom",
                     "latin1", "empty", "crlf"])
    lines = raw.split(b"\n")
    if op == "line":
        text = rng.choice(HOSTILE_LINES)
        lines.insert(rng.randrange(len(lines) + 1), text.encode("utf-8", "surrogatepass"))
        return b"\n".join(lines), f"insert line {text[:20]!r}"
    if op == "duplicate":
        content = [ln for ln in lines if ln.strip() and not ln.startswith((b"#", b" "))]
        if content:
            lines.append(rng.choice(content))
        return b"\n".join(lines), "duplicate a key"
    if op == "truncate":
        return raw[:rng.randrange(len(raw) + 1)], "truncate"
    if op == "bytes":
        pos = rng.randrange(len(raw) + 1)
        noise = bytes(rng.randrange(256) for _ in range(rng.choice([1, 4, 64])))
        return raw[:pos] + noise + raw[pos:], "insert random bytes"
    if op == "utf16":
        return raw.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass"), "utf-16"
    if op == "bom":
        return b"\xef\xbb\xbf" + raw, "utf-8 bom"
    if op == "latin1":
        return raw + "\nname: café\n".encode("latin-1"), "latin-1 byte"
    if op == "crlf":
        return raw.replace(b"\n", b"\r\n"), "crlf line ends"
    return b"", "empty file"


def make_case(number: int, seed: int, seeds: list[Path] | None = None) -> Case:
    """Case ``number`` of campaign ``seed``: a pure function of both (reproducible alone)."""
    from gen.config import REPO_ROOT

    rng = random.Random(f"accelgen-fuzz-{seed}-{number}")
    seeds = seeds if seeds is not None else seed_files()
    origin = rng.choice(seeds)
    is_sweep = origin.parent.name == "dse"
    raw = origin.read_bytes()
    data = yaml.safe_load(raw)
    mutations = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        data, what = _mutate_data(data, rng, is_sweep)
        mutations.append(what)
    raw = _dump(data) if mutations else raw
    if rng.random() < 0.3:
        raw, what = _mutate_text(raw, rng)
        mutations.append(what)
    filename = origin.name if rng.random() < 0.8 else rng.choice(
        ["fuzz case.yaml", "名前.yaml", "module.yaml", "1st.yaml", "a.b.yaml", "x.yml", "noext"])
    cycles = None
    if not is_sweep and "systolic" in origin.name and rng.random() < 0.4:
        pool = ["0", "-1", "1", "7", "64", "1024", "100000", str(10**9), str(2**40), "x", "1.5"]
        cycles = ["--m", rng.choice(pool), "--k", rng.choice(pool), "--n", rng.choice(pool)]
    return Case(number=number, origin=str(origin.relative_to(REPO_ROOT)), is_sweep=is_sweep,
                mutations=mutations, filename=filename, data=raw, cycles_args=cycles)


# --------------------------------------------------------------------------- running


#: ``accelgen``'s entry point (``gen.cli.main``), passed in by the caller: the CLI is what this
#: module tests, and the CLI's ``fuzz`` command calls this module, so importing it here would
#: make a circle.
CliMain = Callable[[list[str]], int]


def _cli(main: CliMain, argv: list[str]) -> tuple[int, str, str]:
    """``accelgen argv`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:           # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with (size, mtime_ns): what a run may not have touched."""
    out = {}
    for path in sorted(root.rglob("*")):
        try:
            st = path.lstat()
        except OSError:
            continue
        out[str(path.relative_to(root))] = (st.st_size if path.is_file() else -1, st.st_mtime_ns)
    return out


def _repo_snapshot() -> set[str]:
    """The repository's top level and configs/ (build/ and dot-folders are caches)."""
    from gen.config import REPO_ROOT
    entries = {p.name for p in REPO_ROOT.iterdir()
               if p.name != "build" and not p.name.startswith(".")}
    entries |= {f"configs/{p.name}" for p in (REPO_ROOT / "configs").iterdir()}
    return entries


def run_case(case: Case, workdir: Path, *, cli: CliMain, rtl_max_cells: int = 20_000,
             generate: bool = True) -> Outcome:
    """Run one case in an empty ``workdir`` and check the contract; returns the outcome.

    ``generate=False`` skips ``rtl`` for an accepted config small enough to generate (the
    in-suite test samples a few generations to stay fast); rejections and the size guard are
    always exercised."""
    from gen.config import load_config
    from gen.estimate import estimate
    from gen.schema import ConfigError

    outcome = Outcome(case=case)
    inputs, out, sentinel = workdir / "in", workdir / "out", workdir / "sentinel"
    inputs.mkdir(parents=True)
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("must survive")
    path = inputs / case.filename
    path.write_bytes(case.data)
    # Absolute names in the hostile pool point here; nothing may ever appear there.
    outside = Path("/tmp/accelgen_fuzz_abs")
    outside_before = outside.exists()
    before_work = _tree(workdir)
    before_repo = _repo_snapshot()

    def step(argv: list[str], *, names_file: bool = True) -> int:
        code, stdout, stderr = _cli(cli, argv)
        outcome.steps.append({"argv": argv[:1] + [a if a != str(path) else "<input>"
                                                  for a in argv[1:]],
                              "exit": code, "stderr": stderr[-600:]})
        if code not in (0, 2):
            outcome.violations.append(f"{argv[0]}: exit {code}: {stderr.strip()[-300:]}")
        if "Traceback" in stdout + stderr or "internal error" in stderr:
            outcome.violations.append(f"{argv[0]}: internal error or traceback: "
                                      f"{stderr.strip()[-300:]}")
        if code == 2 and names_file and str(path) not in stderr:
            outcome.violations.append(f"{argv[0]}: rejection does not name the file: "
                                      f"{stderr.strip()[:300]}")
        return code

    if case.is_sweep:
        code = step(["dse", "--check", str(path)])
        outcome.accepted = code == 0
    else:
        code = step(["check", str(path)])
        outcome.accepted = code == 0
        config = None
        if outcome.accepted:
            try:
                config = load_config(path)
            except ConfigError as exc:
                outcome.violations.append(f"check accepted but load_config rejects: {exc}")
        est = estimate(config) if config is not None else None
        small = est is None or est.cells <= rtl_max_cells
        argv = ["rtl", str(path), "--out", str(out)]
        if not small:
            argv += ["--max-cells", str(rtl_max_cells)]
        skip = config is not None and small and not generate
        code = 0 if skip else step(argv)
        if skip:
            pass
        elif config is not None and small:
            outcome.generated = code == 0
            if code != 0:
                outcome.violations.append(f"rtl failed (exit {code}) on a config check accepts")
            else:
                expected = {config.name}
                got = {p.name for p in out.iterdir()} if out.exists() else set()
                if got != expected:
                    outcome.violations.append(f"rtl wrote {sorted(got)}, expected "
                                              f"{sorted(expected)}")
                elif not (out / config.name / f"{config.top_name}.v").is_file():
                    outcome.violations.append("rtl exit 0 but no Verilog file")
        elif config is not None:
            outcome.guarded = code == 2
            if code != 2 or "--max-cells" not in outcome.steps[-1]["stderr"]:
                outcome.violations.append(f"rtl --max-cells {rtl_max_cells} did not refuse a "
                                          f"config estimated at {est.cells} cells")
        if code != 0 and out.exists() and any(out.iterdir()):
            left = sorted(p.name for p in out.iterdir())
            outcome.violations.append(f"rejected, yet rtl left {left}")
        if case.cycles_args is not None:
            step(["cycles", str(path), *case.cycles_args], names_file=False)
    # Nothing outside out/ may change; the input and the sentinel stay as they were.
    after_work = _tree(workdir)
    changed = sorted(k for k in set(before_work) | set(after_work)
                     if before_work.get(k) != after_work.get(k) and not k.startswith("out"))
    if changed:
        outcome.violations.append(f"written outside the output folder: {changed[:5]}")
    if out.exists():
        leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
        if leftovers:
            outcome.violations.append(f"temporary folders left in the output folder: {leftovers}")
    if _repo_snapshot() - before_repo:
        outcome.violations.append(f"new files in the repository: "
                                  f"{sorted(_repo_snapshot() - before_repo)[:5]}")
    if outside.exists() and not outside_before:
        outcome.violations.append(f"{outside} was created")
    return outcome


def run_cases(numbers, seed: int, *, cli: CliMain, rtl_max_cells: int = 20_000,
              max_generations: int | None = None,
              on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run the given case numbers; at most ``max_generations`` of them generate Verilog."""
    seeds = seed_files()
    outcomes = []
    generations = 0
    for number in numbers:
        case = make_case(number, seed, seeds)
        workdir = Path(tempfile.mkdtemp(prefix="accelgen-fuzz-"))
        generate = max_generations is None or generations < max_generations
        try:
            outcome = run_case(case, workdir, cli=cli, rtl_max_cells=rtl_max_cells,
                               generate=generate)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        generations += outcome.generated
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def run_campaign(*, cases: int, seed: int, out: Path, cli: CliMain,
                 rtl_max_cells: int = 20_000, progress: bool = True) -> int:
    """``accelgen fuzz``: run ``cases`` cases, write ``out/summary.json`` (and each violating
    input under ``out/violations/``); exit status 1 if any case broke the contract."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    counts = {"cases": 0, "accepted": 0, "rejected": 0, "generated": 0, "guarded": 0,
              "violating": 0}
    violations = []
    every = max(1, cases // 20)

    def record(outcome: Outcome) -> None:
        counts["cases"] += 1
        counts["accepted" if outcome.accepted else "rejected"] += 1
        counts["generated"] += outcome.generated
        counts["guarded"] += outcome.guarded
        if outcome.violations:
            counts["violating"] += 1
            violations.append(outcome.to_dict())
            folder = out / "violations"
            folder.mkdir(exist_ok=True)
            (folder / f"case{outcome.case.number}-{Path(outcome.case.origin).stem}.yaml") \
                .write_bytes(outcome.case.data)
        if progress and (counts["cases"] % every == 0 or counts["cases"] == cases):
            print(f"fuzz: {counts['cases']}/{cases} cases, {counts['violating']} violating, "
                  f"{time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)

    run_cases(range(cases), seed, cli=cli, rtl_max_cells=rtl_max_cells, on_outcome=record)
    summary = {"seed": seed, "rtl_max_cells": rtl_max_cells, **counts,
               "seconds": round(time.monotonic() - start, 1), "violations": violations}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"fuzz: {counts['cases']} cases ({counts['accepted']} accepted, {counts['generated']} "
          f"generated, {counts['guarded']} refused as too large, {counts['rejected']} rejected), "
          f"{counts['violating']} violating the contract -> {out / 'summary.json'}")
    return 1 if violations else 0
