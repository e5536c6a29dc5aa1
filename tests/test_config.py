"""Config validation through the CLI: every rejection class names file, key path, value and what
is allowed, exits with status 2, prints no traceback and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gen.cli import main
from gen.config import GENERATORS, config_class, preset_paths


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    # bad YAML, with position
    ("kind: systolic_array\nrows: [4\n", ["bad YAML: line 3, column 1"]),
    # not a mapping
    ("- 1\n- 2\n", ["must hold a YAML mapping"]),
    # missing / unknown kind, with did-you-mean
    ("rows: 4\n", ["kind: got 'nothing (the key is required)'"]),
    ("kind: systolik_array\n", ["kind: got 'systolik_array' (did you mean 'systolic_array'?)"]),
    # unknown key with did-you-mean, listing the known keys
    ("kind: systolic_array\ncolums: 4\n", ["colums: unknown key (did you mean 'cols'?)",
                                            "known keys: a_type"]),
    # wrong type
    ("kind: systolic_array\nrows: four\n", ["rows: got 'four'; allowed: integer 1 .. 64"]),
    ("kind: systolic_array\nrows: true\n", ["rows: got true; allowed: integer 1 .. 64"]),
    # out of range
    ("kind: systolic_array\ncols: 65\n", ["cols: got 65; allowed: integer 1 .. 64"]),
    ("kind: systolic_array\noverflow: clamp\n",
     ["overflow: got 'clamp'; allowed: one of 'wrap', 'saturate'"]),
    # inconsistent combination
    ("kind: systolic_array\na_type: int8\nb_type: int8\nacc_width: 15\n",
     ["acc_width: got 15; allowed: at least 16 (the 8x8-bit product width)"]),
    # null where a value is required
    ("kind: systolic_array\nrows: null\n", ["rows: got null; allowed: integer 1 .. 64"]),
])
def test_rejection_classes(tmp_path, capsys, text, expected):
    path = _write(tmp_path, "bad.yaml", text)
    out_dir = tmp_path / "out"
    code, out, err = _run(capsys, "rtl", str(path), "--out", str(out_dir))
    assert code == 2
    for fragment in expected:
        assert fragment in err
    assert f"{path}" in err
    assert not out_dir.exists(), "a rejected config must not leave output behind"


def test_every_problem_of_every_file_reported_at_once(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", "kind: systolic_array\nrows: 0\ncols: 0\ndataflow: x\n")
    b = _write(tmp_path, "b.yaml", "kind: systolic_array\nmax_k: -1\n")
    good = _write(tmp_path, "good.yaml", "kind: systolic_array\n")
    out_dir = tmp_path / "out"
    code, _out, err = _run(capsys, "rtl", str(good), str(a), str(b), "--out", str(out_dir))
    assert code == 2
    assert err.count("a.yaml:") == 3 and err.count("b.yaml:") == 1
    assert not out_dir.exists(), "no config is generated while any is rejected"


def test_duplicate_names_rejected(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", "kind: systolic_array\nname: same\n")
    b = _write(tmp_path, "b.yaml", "kind: systolic_array\nname: same\n")
    code, _out, err = _run(capsys, "check", str(a), str(b))
    assert code == 2 and "name: got 'same'" in err


def test_missing_file(tmp_path, capsys):
    code, _out, err = _run(capsys, "check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: cannot read" in err


def test_check_accepts_every_preset(capsys):
    paths = [str(p) for p in preset_paths()]
    code, out, _err = _run(capsys, "check", *paths)
    assert code == 0 and out.count(": ok (") == len(paths)


def test_explain_documents_every_key_of_every_kind(capsys):
    code, out, _err = _run(capsys, "explain")
    assert code == 0
    for kind in GENERATORS:
        assert f"kind: {kind}" in out
        for key, *_rest in config_class(kind).describe():
            assert key in out


def test_unknown_command_line_option_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["rtl", "--bogus"])
    assert info.value.code == 2
