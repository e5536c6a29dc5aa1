"""Config loading: YAML file -> the generator's config dataclass, with every problem reported at once.

A config file is a YAML mapping whose ``kind:`` picks the generator. ``name:`` defaults to the file's
stem; it names the Verilog top and the output folder.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from gen.registry import KINDS
from gen.schema import ConfigBase, ConfigError, Problem, key_text, name_problem, show_value

__all__ = ["GENERATORS", "ConfigError", "config_class", "config_from_dict", "load_config",
           "preset_paths", "read_yaml", "MAX_FILE_BYTES", "MAX_DEPTH", "MAX_VALUES"]

#: ``kind`` -> ``module:ConfigClass``, from the registry (gen/registry.py: one record per kind).
#: Imported lazily so a broken generator can't break the others.
GENERATORS: dict[str, str] = {name: record.config for name, record in KINDS.items()}

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = REPO_ROOT / "configs"


def config_class(kind: str) -> type[ConfigBase]:
    module_name, _, class_name = GENERATORS[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def config_from_dict(data: Any, *, source: str = "<config>", default_name: str | None = None):
    """Validate parsed YAML ``data``; raise :class:`ConfigError` naming ``source`` on any problem.

    ``default_name`` (a file's stem) is the name when the mapping has none; without it the
    kind's own default applies. A missing or unknown ``kind`` is reported with the nearest
    known kind, and the rest of the mapping is still checked against that kind's schema so one
    round trip shows every problem.
    """
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", data, "", message=(
            f"the file must hold a YAML mapping with a 'kind:' key, not {_yaml_kind(data)}"))])
    kind = data.get("kind")
    if isinstance(kind, str) and kind in GENERATORS:
        cls = config_class(kind)
        return cls.from_dict(data, source=source, defaults=_name_default(default_name))
    known = sorted(GENERATORS)
    close, similar = _nearest_kind(kind, known)
    hint = f" (did you mean '{close}'?)" if close else ""
    value = show_value(kind) if "kind" in data else "nothing (the key is required)"
    problems = [Problem("kind", kind, "", message=(
        f"got {value}{hint}; allowed: one of " + ", ".join(known)))]
    if close and similar:
        # Check everything else as the nearest kind would, so a typo in 'kind' does not hide
        # the other problems of the file.
        try:
            config_class(close).from_dict({**data, "kind": close}, source=source,
                                          defaults=_name_default(default_name))
        except ConfigError as exc:
            problems += [replace(p, message=(p.message or f"got {show_value(p.value)}; allowed: "
                                             f"{p.allowed}") + f" (checked as {close})")
                         for p in exc.problems]
    elif "name" in data:
        why = name_problem(data["name"])
        if why is not None:
            problems.append(Problem("name", data["name"], why))
    raise ConfigError(source, problems)


def _nearest_kind(kind: Any, known: list[str]) -> tuple[str | None, bool]:
    """The known kind nearest to ``kind`` (ignoring case, '-' for '_'), and whether it is near
    enough to check the rest of the file against (a suggestion costs nothing; checking against
    a wrong kind would bury the real problems)."""
    if not isinstance(kind, str) or not kind.strip():
        return None, False
    text = kind.strip().lower().replace("-", "_").replace(" ", "_")
    scored = sorted(((difflib.SequenceMatcher(None, text, k).ratio(), k) for k in known),
                    reverse=True)
    ratio, best = scored[0]
    if text in best.split("_") or best.startswith(text):      # 'lut', 'systolic', 'mxint'
        ratio = max(ratio, 0.6)
    if ratio < 0.4:
        return None, False
    return best, ratio >= 0.6


def _name_default(default_name: str | None) -> dict:
    return {"name": default_name} if default_name is not None else {}


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    names = {list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


def load_config(path: str | Path):
    """Read and validate one YAML config file (see :func:`read_yaml` for what a file may be)."""
    path = Path(path)
    data = read_yaml(path)
    return config_from_dict(data, source=str(path), default_name=path.stem)


# --------------------------------------------------------------------------- safe YAML reading

#: Largest config or sweep file read (a config is a few hundred bytes).
MAX_FILE_BYTES = 1 << 20
#: Deepest nesting of lists/mappings a file may have (configs use two or three levels).
MAX_DEPTH = 32
#: Most values (scalars, lists, mappings) a file may expand to: YAML aliases can make a 1 kB
#: file expand to 10^9 values ("billion laughs"); a sweep file has a few hundred.
MAX_VALUES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, stricter: a repeated key is an error (not "last one wins"), dates
    stay text (``2024-01-01`` is a string, as every config value that looks like one), and
    nesting deeper than :data:`MAX_DEPTH` stops the scanner at once (PyYAML's composer
    recurses per level: 3000 nested lists took 2 s to end in a RecursionError)."""

    def _too_deep(self):
        return yaml.scanner.ScannerError(
            None, None, f"nested more than {MAX_DEPTH} levels deep; a config uses two or three",
            self.get_mark())

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level >= MAX_DEPTH:
            raise self._too_deep()
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column):
        if len(self.indents) >= MAX_DEPTH:
            raise self._too_deep()
        return super().add_indent(column)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue            # '<<:' merges: keys given next to it override, as YAML says
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found a list or mapping as a "
                "key", key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"key {show_value(key, 40)} appears twice (first on line {seen[key] + 1}); each "
                "key may be given once", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
# Explicit tags a config has no use for become plain text, so they are reported as values.
_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp",
                              yaml.SafeLoader.construct_yaml_str)


def _file_problem(source: str, message: str) -> ConfigError:
    return ConfigError(source, [Problem("", None, "", message=message)])


def decode_text(raw: bytes, source: str) -> str:
    """UTF-8 text of a config file (a UTF-8 byte-order mark is allowed), or a :class:`ConfigError`
    that says what the file is instead."""
    # A BOM, or (without one) ASCII text in UTF-16: every other byte is NUL.
    no_bom_utf16 = (len(raw) > 1 and (raw[0] == 0) != (raw[1] == 0)
                    and raw.count(b"\x00") * 3 > len(raw))
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or no_bom_utf16:
        raise _file_problem(source, "is UTF-16 text; save it as UTF-8")
    if b"\x00" in raw:
        raise _file_problem(source, "is a binary file (it contains NUL bytes), not YAML text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise _file_problem(source, f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} on line "
                                    f"{line} (byte offset {exc.start}); save it as UTF-8") from None


def read_yaml(path: str | Path) -> Any:
    """Parse one YAML file defensively; every way a file can be unreadable is a
    :class:`ConfigError` naming it: unreadable, too large, not UTF-8, bad YAML (line, column),
    a repeated key, nesting deeper than :data:`MAX_DEPTH`, a value YAML can't turn into plain
    data (an integer of more than 4300 digits, binary data, a set)."""
    path = Path(path)
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise _file_problem(source, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _file_problem(source, f"is larger than {MAX_FILE_BYTES >> 20} MiB; a config or "
                                    "sweep file is a few hundred bytes")
    text = decode_text(raw, source)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise _file_problem(source, f"bad YAML: {where}{what}") from None
    except RecursionError:
        raise _file_problem(source, f"bad YAML: nested too deeply (at most {MAX_DEPTH} levels of "
                                    "lists and mappings)") from None
    except (ValueError, OverflowError, TypeError) as exc:
        what = str(exc)
        if "digits" in what:        # Python's int-from-text limit (sys.int_info)
            what = "an integer has more than 4300 digits"
        raise _file_problem(source, f"bad YAML value: {what}") from None
    problem = plain_data_problem(data)
    if problem is not None:
        raise ConfigError(source, [problem])
    return data


def plain_data_problem(data: Any) -> Problem | None:
    """The first place ``data`` is not plain YAML data (str, int, float, bool, null, lists and
    mappings with scalar keys), nests deeper than :data:`MAX_DEPTH` or holds more than
    :data:`MAX_VALUES` values; None if it is fine."""
    stack = [(data, "", 0)]
    seen = 0
    while stack:
        value, path, depth = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            return Problem("", None, "", message=(
                f"expands to more than {MAX_VALUES:,} values (YAML aliases?); a config has a "
                "few dozen"))
        if depth > MAX_DEPTH:
            return Problem(path, value, "", message=(
                f"nested more than {MAX_DEPTH} levels deep; a config uses two or three"))
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, (str, int, float, bool, type(None))):
                    return Problem(path, key, "", message="a mapping key must be a plain value")
                stack.append((item, f"{path}.{key_text(key)}" if path else key_text(key),
                              depth + 1))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                stack.append((item, f"{path}[{i}]", depth + 1))
        elif not isinstance(value, (str, int, float, bool, type(None))):
            return Problem(path, value, "", message=(
                f"got {show_value(value)}; allowed: text, numbers, true/false, null, lists and "
                "mappings"))
    return None


def preset_paths(kind: str | None = None, prefix: str | None = None) -> list[Path]:
    """The YAML presets shipped in ``configs/``, optionally only one kind or file-name prefix."""
    paths = []
    for path in sorted(PRESET_DIR.glob("*.yaml")):
        if prefix is not None and not path.stem.startswith(prefix):
            continue
        if kind is not None:
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError:
                continue
            if not isinstance(data, dict) or data.get("kind") != kind:
                continue
        paths.append(path)
    return paths
