"""Config validation through the CLI: every rejection class names file, key path, value and what
is allowed, exits with status 2, prints no traceback and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gen.cli import main
from gen.config import GENERATORS, config_class, config_from_dict, load_config, preset_paths
from gen.schema import ConfigError, check_name, show_value


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert "internal error" not in err
    return code, out, err


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    # bad YAML, with position
    ("kind: systolic_array\nrows: [4\n", ["bad YAML: line 3, column 1"]),
    # not a mapping
    ("- 1\n- 2\n", ["must hold a YAML mapping", "not a list"]),
    # missing / unknown kind, with did-you-mean
    ("rows: 4\n", ["kind: got nothing (the key is required); allowed: one of"]),
    ("kind: systolik_array\n", ["kind: got 'systolik_array' (did you mean 'systolic_array'?)"]),
    # a kind that is not a string at all (was: unhashable -> internal error)
    ("kind: [systolic_array]\n", ["kind: got ['systolic_array']; allowed: one of"]),
    ("kind: {}\n", ["kind: got {}; allowed: one of"]),
    ("kind: true\n", ["kind: got true;"]),
    # unknown key with did-you-mean, listing the known keys
    ("kind: systolic_array\ncolums: 4\n", ["colums: unknown key (did you mean 'cols'?)",
                                            "known keys: a_type"]),
    # a key that is not text is shown as YAML spells it
    ("kind: systolic_array\n7: 1\nnull: 2\n", ["bad.yaml: 7: unknown key", "null: unknown key"]),
    # repeated key (was: last one silently wins)
    ("kind: systolic_array\nrows: 4\nrows: 8\n",
     ["bad YAML: line 3, column 1: key 'rows' appears twice (first on line 2)"]),
    # wrong type
    ("kind: systolic_array\nrows: four\n", ["rows: got 'four'; allowed: integer 1 .. 64"]),
    ("kind: systolic_array\nrows: true\n", ["rows: got true; allowed: integer 1 .. 64"]),
    ("kind: systolic_array\nrows: 2024-01-01\n", ["rows: got '2024-01-01'; allowed"]),
    ("kind: systolic_array\nrows: .nan\n", ["rows: got .nan; allowed: integer 1 .. 64"]),
    # out of range
    ("kind: systolic_array\ncols: 65\n", ["cols: got 65; allowed: integer 1 .. 64"]),
    ("kind: systolic_array\noverflow: clamp\n",
     ["overflow: got 'clamp'; allowed: one of 'wrap', 'saturate'"]),
    # inconsistent combination
    ("kind: systolic_array\na_type: int8\nb_type: int8\nacc_width: 15\n",
     ["acc_width: got 15; allowed: at least 16 (the 8x8-bit product width)"]),
    # mlen < blen with an MXInt operand (was: ZeroDivisionError)
    ("kind: flattened_array\na_format: mxint\nblen: 4\nmlen: 2\n",
     ["mlen: got 2; allowed: a multiple of blen = 4"]),
    # null where a value is required
    ("kind: systolic_array\nrows: null\n", ["rows: got null; allowed: integer 1 .. 64"]),
    # YAML tags a config has no use for
    ("kind: systolic_array\nx: !!binary aGVsbG8=\n", ["x: got a bytes value; allowed: text"]),
    ("kind: systolic_array\nx: !!set {a, b}\n", ["x: got a set value"]),
    ("kind: systolic_array\nx: !!python/object/apply:os.system ['true']\n", ["bad YAML"]),
    # an integer Python refuses to read, nesting deep enough to overflow the parser's stack
    ("kind: systolic_array\nrows: " + "9" * 5000 + "\n",
     ["bad YAML value: an integer has more than 4300 digits"]),
    ("kind: systolic_array\nrows: " + "[" * 3000 + "]" * 3000 + "\n",
     ["bad YAML: line 2, column 39: nested more than 32 levels deep"]),
    ("kind: systolic_array\nrows: " + "[" * 40 + "]" * 40 + "\n",
     ["nested more than 32 levels deep"]),
    # a self-referencing alias, and aliases expanding to a billion values
    ("kind: systolic_array\nrows: &r [*r]\n", ["nested more than 32 levels deep"]),
    ("kind: systolic_array\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
     + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9)),
     ["expands to more than 100,000 values"]),
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


@pytest.mark.parametrize("data, message", [
    (b"kind: systolic_array\nname: caf\xe9\n", "is not UTF-8 text: byte 0xe9 on line 2"),
    ("kind: systolic_array\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8"),
    ("kind: systolic_array\n".encode("utf-16-le"), "is UTF-16 text"),
    (bytes(range(256)) * 4, "is a binary file"),
])
def test_file_encoding_problems_name_the_file(tmp_path, capsys, data, message):
    path = _write(tmp_path, "enc.yaml", data)
    code, _out, err = _run(capsys, "check", str(path))
    assert code == 2 and err.startswith(f"{path}: {message}")


def test_utf8_with_byte_order_mark_is_accepted(tmp_path, capsys):
    path = _write(tmp_path, "bom.yaml", b"\xef\xbb\xbfkind: float_add\n")
    assert _run(capsys, "check", str(path))[0] == 0


def test_oversized_file_rejected_without_reading_it_all(tmp_path, capsys):
    path = _write(tmp_path, "huge.yaml", "kind: systolic_array\n" + "# pad\n" * 300_000)
    code, _out, err = _run(capsys, "check", str(path))
    assert code == 2 and "is larger than 1 MiB" in err


def test_many_problems_are_capped(tmp_path, capsys):
    """5 MB of unknown keys once produced 30 MB of messages: now 20 lines and a count."""
    text = "kind: systolic_array\n" + "".join(f"bogus{i}: {i}\n" for i in range(5000))
    path = _write(tmp_path, "many.yaml", text)
    code, _out, err = _run(capsys, "check", str(path))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 21 and lines[-1].endswith("... and 4980 more problems (fix the ones "
                                                   "above first)")


def test_misspelt_kind_still_reports_the_other_problems(tmp_path, capsys):
    path = _write(tmp_path, "typo.yaml", "kind: systolik_array\nrows: 0\ncolz: 3\n")
    code, _out, err = _run(capsys, "check", str(path))
    assert code == 2
    assert "did you mean 'systolic_array'?" in err
    assert "rows: got 0; allowed: integer 1 .. 64 (checked as systolic_array)" in err
    assert "colz: unknown key (did you mean 'cols'?)" in err


@pytest.mark.parametrize("kind, nearest", [
    ("Systolic_Array", "systolic_array"), ("systolic", "systolic_array"), ("lut", "ternary_lut"),
    ("flattened-array", "flattened_array"), ("mxint_dots", "mxint_dot"), ("banana", None),
])
def test_kind_suggestions(tmp_path, capsys, kind, nearest):
    path = _write(tmp_path, "k.yaml", f"kind: {kind}\n")
    code, _out, err = _run(capsys, "check", str(path))
    assert code == 2
    if nearest:
        assert f"(did you mean '{nearest}'?)" in err
    else:
        assert "did you mean" not in err


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", [
    "", ".", "..", "../x", "../../etc", "/tmp/accelgen_abs", "a/b", "a\\b",
    "x\nmodule injected; endmodule //", "a" * 65, "a" * 300, "x\x00y", "\udcff", "1abc",
    "a.b", "a-b", "a b", "$top", "名前", "module", "wire", "endmodule", "config",
])
def test_hostile_names_rejected_before_anything_is_written(tmp_path, capsys, name):
    import json
    path = _write(tmp_path, "named.yaml", f"kind: float_add\nname: {json.dumps(name)}\n")
    out_dir = tmp_path / "out"
    before = sorted(p.name for p in tmp_path.iterdir())
    for command in (["check", str(path)], ["rtl", str(path), "--out", str(out_dir)]):
        code, _out, err = _run(capsys, *command)
        assert code == 2
        assert f"{path}: name: got " in err and "a Verilog module name" in err
        assert "\n" not in err.strip() or err.count(str(path)) == len(err.strip().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not Path("/tmp/accelgen_abs").exists()


def test_name_from_the_file_name_is_validated_and_says_so(tmp_path, capsys):
    path = _write(tmp_path, "my-config.yaml", "kind: float_add\n")
    code, _out, err = _run(capsys, "check", str(path))
    assert code == 2 and "name: got 'my-config'" in err and "rename it" in err
    ok = _write(tmp_path, "my_config.yaml", "kind: float_add\n")
    assert _run(capsys, "check", str(ok))[0] == 0


def test_longest_name_accepted():
    cfg = config_from_dict({"kind": "float_add", "name": "n" * 64})
    assert cfg.top_name == "n" * 64


def test_names_are_checked_for_configs_built_in_python(tmp_path):
    """export_rtl re-checks the name, so a dataclass made in Python cannot escape either."""
    from gen.config.float_add import FloatAddConfig
    from gen.export import export_rtl, output_dir

    cfg = FloatAddConfig(name="../escape")
    with pytest.raises(ValueError, match="Design name must be"):
        export_rtl(cfg, tmp_path / "out" / cfg.name)
    with pytest.raises(ValueError, match="Design name must be"):
        output_dir(tmp_path, cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="not ''"):
        check_name("")


def test_duplicate_names_rejected(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", "kind: systolic_array\nname: same\n")
    b = _write(tmp_path, "b.yaml", "kind: systolic_array\nname: same\n")
    code, _out, err = _run(capsys, "check", str(a), str(b))
    assert code == 2 and "name: got 'same'" in err


def test_names_differing_only_in_case_collide(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", "kind: float_add\nname: Adder\n")
    b = _write(tmp_path, "b.yaml", "kind: float_add\nname: adder\n")
    code, _out, err = _run(capsys, "check", str(a), str(b))
    assert code == 2 and "ignoring case" in err


# --------------------------------------------------------------------------- whole runs


def test_every_problem_of_every_file_reported_at_once(tmp_path, capsys):
    a = _write(tmp_path, "a.yaml", "kind: systolic_array\nrows: 0\ncols: 0\ndataflow: x\n")
    b = _write(tmp_path, "b.yaml", "kind: systolic_array\nmax_k: -1\n")
    good = _write(tmp_path, "good.yaml", "kind: systolic_array\n")
    out_dir = tmp_path / "out"
    code, _out, err = _run(capsys, "rtl", str(good), str(a), str(b), "--out", str(out_dir))
    assert code == 2
    assert err.count("a.yaml:") == 3 and err.count("b.yaml:") == 1
    assert not out_dir.exists(), "no config is generated while any is rejected"


def test_missing_file(tmp_path, capsys):
    code, _out, err = _run(capsys, "check", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: cannot read" in err


def test_folder_instead_of_file(tmp_path, capsys):
    code, _out, err = _run(capsys, "check", str(tmp_path))
    assert code == 2 and f"{tmp_path}: cannot read" in err


def test_check_accepts_every_preset_and_prints_its_size(capsys):
    paths = [str(p) for p in preset_paths()]
    code, out, err = _run(capsys, "check", *paths)
    assert code == 0 and out.count(": ok (") == len(paths)
    assert out.count("  size: ") == len(paths) and "cells" in out
    warned = {line.split(":")[0] for line in err.splitlines() if "warning" in line}
    assert all("accelerator_" in w for w in warned), \
        f"no block preset is near the size warning: {sorted(warned)}"


def test_explain_documents_every_key_of_every_kind(capsys):
    code, out, _err = _run(capsys, "explain")
    assert code == 0
    for kind in GENERATORS:
        assert f"kind: {kind}" in out
        for key, *_rest in config_class(kind).describe():
            assert f"  {key}: " in out


def test_unknown_command_line_option_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["rtl", "--bogus"])
    assert info.value.code == 2


def test_messages_use_yaml_spellings():
    import datetime
    assert show_value(None) == "null" and show_value(True) == "true"
    assert show_value([None, False]) == "[null, false]"
    assert show_value(datetime.date(2024, 1, 1)) == "a date value"
    assert show_value(float("inf")) == ".inf"
    assert show_value(10**200).startswith("an integer of about 201 digits")
    long = show_value("a" * 300)
    assert long.endswith("(300 characters)") and len(long) < 90
    assert show_value("x\ny") == "'x\\ny'" and show_value("\udcff") == "'\\udcff'"


def test_python_dict_configs_are_checked_the_same_way():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"kind": "systolic_array", "name": "../x"}, source="api")
    assert "api: name: got '../x'" in info.value.render()
    assert load_config(preset_paths(prefix="float_add_fp16")[0]).name == "float_add_fp16"
