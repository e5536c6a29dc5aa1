"""Declarative config schema: one frozen dataclass per generator, validated in one place.

A generator's config is a frozen dataclass deriving from :class:`ConfigBase` whose fields are declared
with :func:`param`. :meth:`ConfigBase.from_dict` turns a parsed YAML mapping into the dataclass and
collects *every* problem (unknown keys with a did-you-mean, wrong types, out-of-range values, then the
generator's own cross-field rules from :meth:`ConfigBase.check`) before raising one
:class:`ConfigError`, so a user fixes a config in one round trip instead of one error at a time.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

__all__ = ["ConfigBase", "ConfigError", "Problem", "param", "canonical_json", "parse_int_type"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (dotted key path), what was given, what is allowed."""

    key: str
    value: Any
    allowed: str
    message: str | None = None

    def render(self, source: str) -> str:
        where = f"{source}: {self.key}" if self.key else source
        if self.message is not None:
            return f"{where}: {self.message}"
        return f"{where}: got {_show(self.value)}; allowed: {self.allowed}"


class ConfigError(Exception):
    """A config was rejected. Carries every :class:`Problem` found, already attributed to a file."""

    def __init__(self, source: str, problems: Iterable[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(p.render(self.source) for p in self.problems)


_MISSING_VALUE = object()


def _show(value: Any) -> str:
    if value is _MISSING_VALUE:
        return "nothing (the key is required)"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) <= 60 else text[:57] + "..."
    return str(value)


def param(doc: str, *, default: Any = MISSING, min: float | None = None, max: float | None = None,
          choices: Iterable[Any] | None = None, parse: Callable[[Any], Any] | None = None,
          allowed: str | None = None) -> Any:
    """Declare one config field.

    ``doc`` is shown by ``accelgen check --explain`` and in the README's config reference. ``min``/
    ``max`` bound numbers (inclusive), ``choices`` lists the accepted values, ``parse`` converts a
    structured string (for example ``"int8"``) and raises ``ValueError`` whose text says what is
    allowed, ``allowed`` overrides the generated "allowed" text.
    """
    metadata = {"doc": doc, "min": min, "max": max,
                "choices": tuple(choices) if choices is not None else None,
                "parse": parse, "allowed": allowed}
    if isinstance(default, (list, dict, set)):
        raise TypeError("Mutable defaults are not allowed in config params; use a tuple")
    return dataclasses.field(default=default, metadata=metadata)


def parse_int_type(text: Any) -> int:
    """Parse ``int8`` style operand types to a signed width."""
    if isinstance(text, str):
        match = re.fullmatch(r"int([0-9]+)", text.strip())
        if match:
            return int(match.group(1))
    raise ValueError("a signed integer type such as 'int8' (int2 .. int16)")


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


class ConfigBase:
    """Mixin for generator config dataclasses (which must be ``@dataclass(frozen=True)``)."""

    kind: ClassVar[str] = ""
    #: cocotb test module for this generator (default ``cosim.<kind>``).
    cosim_module: ClassVar[str] = ""

    # -- generator hooks -------------------------------------------------------------------------

    def check(self) -> Iterator[Problem]:
        """Cross-field rules. Yield a :class:`Problem` for each violated rule."""
        return iter(())

    def elaborate(self):
        """Return the top-level Amaranth component for this config (imports hw/ lazily)."""
        raise NotImplementedError(f"{type(self).__name__} has no RTL")

    # -- derived facts ---------------------------------------------------------------------------

    @property
    def top_name(self) -> str:
        name = getattr(self, "name", "") or self.kind
        return re.sub(r"[^A-Za-z0-9_]", "_", name)

    def to_dict(self) -> dict:
        """The config as plain data, every field present (defaults resolved), ``kind`` first."""
        out: dict[str, Any] = {}
        if self.kind:
            out["kind"] = self.kind
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ConfigBase):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @property
    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_dict`: what generated files record."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()

    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{type(self).__name__}({fields})"

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(key, type, default, doc) rows for documentation and ``--explain``."""
        rows = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            default = "required" if f.default is MISSING else _show(f.default)
            rows.append((f.name, _type_name(tp), default, f.metadata.get("doc", "")))
            inner = _unwrap_optional(tp)[0]
            if isinstance(inner, type) and issubclass(inner, ConfigBase):
                for key, tname, d, doc in inner.describe():
                    rows.append((f"{f.name}.{key}", tname, d, doc))
        return rows

    @classmethod
    def field_problems(cls, key: str, value: Any, *, path: str | None = None) -> list[Problem]:
        """Problems the schema reports for ``key: value`` alone (cross-field rules excluded);
        for tools such as sweeps that hold lists of candidate values for one key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            return [Problem(path or key, value, ", ".join(sorted(fields)),
                            message=f"unknown key; known keys: {', '.join(sorted(fields))}")]
        problems: list[Problem] = []
        _convert(value, typing.get_type_hints(cls)[key], fields[key], path or key, problems)
        return problems

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<config>", path: str = "",
                  defaults: dict | None = None):
        """Build and validate. Raises :class:`ConfigError` with every problem found."""
        problems: list[Problem] = []
        value = cls._build(data, path, problems, defaults or {})
        if problems:
            raise ConfigError(source, problems)
        return value

    @classmethod
    def _build(cls, data: Any, path: str, problems: list[Problem], defaults: dict):
        if not isinstance(data, dict):
            problems.append(Problem(path, data, f"a mapping of {cls.__name__} keys"))
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        known = set(fields) | ({"kind"} if cls.kind else set())
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(Problem(_join(path, str(key)), data[key], "",
                                        message=f"unknown key{hint}; known keys: "
                                                + ", ".join(sorted(known))))
        kwargs = {}
        before = len(problems)
        for name, f in fields.items():
            key_path = _join(path, name)
            if name in data:
                raw = data[name]
            elif name in defaults:
                raw = defaults[name]
            elif f.default is not MISSING:
                kwargs[name] = f.default
                continue
            else:
                problems.append(Problem(key_path, _MISSING_VALUE, _allowed_text(hints[name], f)))
                continue
            ok, value = _convert(raw, hints[name], f, key_path, problems)
            if ok:
                kwargs[name] = value
        if len(problems) != before:
            return None
        instance = cls(**kwargs)
        for problem in instance.check():
            problems.append(dataclasses.replace(problem, key=_join(path, problem.key)))
        return instance


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _type_name(tp) -> str:
    inner, optional = _unwrap_optional(tp)
    if typing.get_origin(inner) is tuple:
        name = f"list of {typing.get_args(inner)[0].__name__}"
    elif isinstance(inner, type) and issubclass(inner, ConfigBase):
        name = "mapping"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} or null" if optional else name


def _allowed_text(tp, f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta.get("allowed"):
        return meta["allowed"]
    inner, optional = _unwrap_optional(tp)
    if meta.get("choices") is not None:
        text = "one of " + ", ".join(_show(c) for c in meta["choices"])
    elif typing.get_origin(inner) is tuple:
        elem = typing.get_args(inner)[0]
        text = f"a list of {elem.__name__}"
    elif isinstance(inner, type) and issubclass(inner, ConfigBase):
        text = "a mapping"
    else:
        name = {int: "integer", float: "number", bool: "true or false", str: "string"}.get(
            inner, getattr(inner, "__name__", str(inner)))
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and hi is not None:
            text = f"{name} {lo} .. {hi}"
        elif lo is not None:
            text = f"{name} >= {lo}"
        elif hi is not None:
            text = f"{name} <= {hi}"
        else:
            text = name
    if optional:
        text += ", or null"
    return text


def _convert(raw: Any, tp, f: dataclasses.Field, path: str, problems: list[Problem]):
    meta = f.metadata
    inner, optional = _unwrap_optional(tp)
    allowed = _allowed_text(tp, f)
    if raw is None:
        if optional:
            return True, None
        problems.append(Problem(path, raw, allowed))
        return False, None
    if meta.get("parse") is not None:
        try:
            return True, meta["parse"](raw)
        except (ValueError, TypeError) as exc:
            problems.append(Problem(path, raw, meta.get("allowed") or str(exc)))
            return False, None
    if isinstance(inner, type) and issubclass(inner, ConfigBase):
        before = len(problems)
        value = inner._build(raw, path, problems, {})
        return len(problems) == before, value
    if typing.get_origin(inner) is tuple:
        elem = typing.get_args(inner)[0]
        if not isinstance(raw, (list, tuple)):
            problems.append(Problem(path, raw, allowed))
            return False, None
        out = []
        ok = True
        for i, item in enumerate(raw):
            if not _is_type(item, elem):
                problems.append(Problem(f"{path}[{i}]", item, f"{elem.__name__}"))
                ok = False
            else:
                out.append(item)
        if ok:
            ok = _check_range(tuple(out), meta, path, allowed, problems, each=True)
        return ok, tuple(out)
    if not _is_type(raw, inner):
        problems.append(Problem(path, raw, allowed))
        return False, None
    value = float(raw) if inner is float else raw
    return _check_range(value, meta, path, allowed, problems), value


def _is_type(value: Any, tp) -> bool:
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return isinstance(value, tp)


def _check_range(value, meta, path, allowed, problems, each=False) -> bool:
    values = value if each else (value,)
    ok = True
    for v in values:
        if meta.get("choices") is not None and v not in meta["choices"]:
            ok = False
        if meta.get("min") is not None and v < meta["min"]:
            ok = False
        if meta.get("max") is not None and v > meta["max"]:
            ok = False
    if not ok:
        problems.append(Problem(path, list(value) if each else value, allowed))
    return ok
