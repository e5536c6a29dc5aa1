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
import itertools
import json
import math
import re
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

__all__ = ["ConfigBase", "ConfigError", "Problem", "param", "canonical_json", "parse_int_type",
           "NAME_PATTERN", "NAME_MAX_LENGTH", "NAME_ALLOWED", "name_problem", "check_name",
           "show_value", "key_text", "MISSING", "MAX_PROBLEMS"]

#: A design ``name`` is the Verilog top module and the output folder, so it must be a plain
#: Verilog identifier (no escaped identifiers, no ``$``) that is also a safe single path
#: component on every file system: letters, digits and ``_``, not starting with a digit.
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NAME_MAX_LENGTH = 64
NAME_ALLOWED = (f"a Verilog module name: a letter or '_', then letters, digits or '_' "
                f"(at most {NAME_MAX_LENGTH} characters, not a Verilog keyword)")
#: Problems rendered per file; the rest are counted (a 5 MB file of typos is not 30 MB of text).
MAX_PROBLEMS = 20
#: Longest rendering of a value or key in a message before it is shortened.
_SHOW_LIMIT = 60

# IEEE 1364-2005 and 1800-2017 reserved words: a module named after one does not parse.
VERILOG_KEYWORDS = frozenset("""
accept_on alias always always_comb always_ff always_latch and assert assign assume automatic
before begin bind bins binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle
checker class clocking cmos config const constraint context continue cover covergroup coverpoint
cross deassign default defparam design disable dist do edge else end endcase endchecker endclass
endclocking endconfig endfunction endgenerate endgroup endinterface endmodule endpackage
endprimitive endprogram endproperty endspecify endsequence endtable endtask enum event eventually
expect export extends extern final first_match for force foreach forever fork forkjoin function
generate genvar global highz0 highz1 if iff ifnone ignore_bins illegal_bins implements implies
import incdir include initial inout input inside instance int integer interconnect interface
intersect join join_any join_none large let liblist library local localparam logic longint
macromodule matches medium modport module nand negedge nettype new nexttime nmos nor
noshowcancelled not notif0 notif1 null or output package packed parameter pmos posedge primitive
priority program property protected pull0 pull1 pulldown pullup pulsestyle_ondetect
pulsestyle_onevent pure rand randc randcase randsequence rcmos real realtime ref reg
reject_on release repeat restrict return rnmos rpmos rtran rtranif0 rtranif1 s_always
s_eventually s_nexttime s_until s_until_with scalared sequence shortint shortreal
showcancelled signed small soft solve specify specparam static string strong strong0 strong1
struct super supply0 supply1 sync_accept_on sync_reject_on table tagged task this throughout
time timeprecision timeunit tran tranif0 tranif1 tri tri0 tri1 triand trior trireg type
typedef union unique unique0 unsigned until until_with untyped use uwire var vectored virtual
void wait wait_order wand weak weak0 weak1 while wildcard wire with within wor xnor xor
""".split())


def name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a design name (None if it can). See :data:`NAME_PATTERN`."""
    if not isinstance(name, str):
        return NAME_ALLOWED
    if len(name) > NAME_MAX_LENGTH:
        return f"{NAME_ALLOWED}; this one has {len(name)}"
    if not NAME_PATTERN.fullmatch(name):
        return NAME_ALLOWED
    if name in VERILOG_KEYWORDS:
        return f"{NAME_ALLOWED}; '{name}' is a reserved word"
    return None


def check_name(name: Any) -> str:
    """Return ``name`` if it is a valid design name, else raise ``ValueError`` saying why: the
    guard every writer of ``<out>/<name>/`` calls, whichever way the config was built."""
    problem = name_problem(name)
    if problem is not None:
        raise ValueError(f"Design name must be {problem}, not {show_value(name)}")
    return name


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: where (dotted key path), what was given, what is allowed."""

    key: str
    value: Any
    allowed: str
    message: str | None = None

    def render(self, source: str) -> str:
        source = _printable(source, 200)
        where = f"{source}: {_printable(self.key, 120)}" if self.key else source
        if self.message is not None:
            return f"{where}: {self.message}"
        return f"{where}: got {show_value(self.value)}; allowed: {self.allowed}"


class ConfigError(Exception):
    """A config was rejected. Carries every :class:`Problem` found, already attributed to a file.

    ``render()`` prints at most :data:`MAX_PROBLEMS` of them and counts the rest.
    """

    def __init__(self, source: str, problems: Iterable[Problem]):
        self.source = str(source)
        self.problems = list(problems)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [p.render(self.source) for p in self.problems[:MAX_PROBLEMS]]
        extra = len(self.problems) - MAX_PROBLEMS
        if extra > 0:
            lines.append(f"{_printable(self.source, 200)}: ... and {extra} more problem"
                         f"{'s' if extra > 1 else ''} (fix the ones above first)")
        return "\n".join(lines)


_MISSING_VALUE = object()
#: The value of a required key that is absent: rendered as "nothing (the key is required)".
MISSING = _MISSING_VALUE


def _printable(text: Any, limit: int = _SHOW_LIMIT) -> str:
    """``text`` with control characters, lone surrogates and other unprintables escaped, and
    shortened to about ``limit`` characters: safe for any terminal and any stream encoding."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    if text.isprintable() and text.isascii():
        return text
    out = []
    for ch in text:
        if ch.isprintable() and not 0xD800 <= ord(ch) <= 0xDFFF:
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(out)


def show_value(value: Any, limit: int = _SHOW_LIMIT) -> str:
    """A value as the user wrote it in YAML (``null``, ``true``, ``'text'``, ``[1, 2]``),
    shortened when long, never Python's spelling (``None``, ``True``, ``datetime.date(...)``)."""
    if value is _MISSING_VALUE:
        return "nothing (the key is required)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        if value.bit_length() > 96:
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, str):
        if len(value) > limit:
            return _printable(repr(value[:limit - 5]) + "...", limit + 10) \
                + f" ({len(value)} characters)"
        return _printable(repr(value), limit + 10)
    if isinstance(value, (dict, list, tuple)):
        text = _flow(value, limit)
        return text if len(text) <= limit else text[:limit - 3] + "..."
    return _printable(f"a {type(value).__name__} value", limit)


def _flow(value: Any, budget: int) -> str:
    """YAML flow style of nested lists/mappings, stopping once ``budget`` characters are out
    (so a deeply nested or huge value costs nothing to show)."""
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size <= budget:
        item = stack.pop()
        if isinstance(item, _Token):
            text = item.text
        elif isinstance(item, (dict, list, tuple)):
            is_map = isinstance(item, dict)
            text = "{" if is_map else "["
            seq: list[Any] = []
            entries = itertools.islice(item.items() if is_map else item, budget)
            for i, entry in enumerate(entries):
                if i:
                    seq.append(_Token(", "))
                if is_map:
                    seq.append(_Token(f"{show_value(entry[0], 20)}: "))
                    entry = entry[1]
                seq.append(entry)
            seq.append(_Token("}" if is_map else "]"))
            stack.extend(reversed(seq))
        else:
            text = show_value(item, 20)
        out.append(text)
        size += len(text)
    return "".join(out)


class _Token:
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


_show = show_value


def param(doc: str, *, default: Any = MISSING, min: float | None = None, max: float | None = None,
          choices: Iterable[Any] | None = None, parse: Callable[[Any], Any] | None = None,
          allowed: str | None = None, omit_default: bool = False) -> Any:
    """Declare one config field.

    ``doc`` is shown by ``accelgen check --explain`` and in the README's config reference. ``min``/
    ``max`` bound numbers (inclusive), ``choices`` lists the accepted values, ``parse`` converts a
    structured string (for example ``"int8"``) and raises ``ValueError`` whose text says what is
    allowed, ``allowed`` overrides the generated "allowed" text. ``omit_default``: a knob added
    to an existing kind is left out of :meth:`ConfigBase.to_dict` while it has its default, so
    existing configs keep their hash and their generated files stay byte-identical.
    """
    metadata = {"doc": doc, "min": min, "max": max,
                "choices": tuple(choices) if choices is not None else None,
                "parse": parse, "allowed": allowed, "omit_default": omit_default}
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
        """The config as plain data, every field present (defaults resolved), ``kind`` first;
        only a field declared ``omit_default`` is left out while it has its default."""
        out: dict[str, Any] = {}
        if self.kind:
            out["kind"] = self.kind
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("omit_default") and value == f.default:
                continue
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
    def summary(cls) -> str:
        """The first paragraph of the class docstring ('' if the class has none of its own:
        a dataclass without a docstring gets its signature as ``__doc__``)."""
        doc = cls.__dict__.get("__doc__") or ""
        if not doc.strip() or doc.startswith(f"{cls.__name__}("):
            return ""
        return " ".join(doc.strip().split("\n\n")[0].split())

    @classmethod
    def reference(cls, prefix: str = "") -> list[dict]:
        """Every key as documentation renders it, from the schema itself: ``key``, ``type``
        (YAML), ``allowed`` (ranges, choices, the name pattern), ``default`` (YAML spelling)
        and ``doc``. Nested configs contribute ``outer.inner`` rows."""
        rows = []
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            inner, optional = _unwrap_optional(tp)
            if f.name == "name" and not prefix:
                allowed, default = NAME_ALLOWED, "the file name without .yaml"
            else:
                allowed = _allowed_text(tp, f)
                default = "required" if f.default is MISSING else yaml_text(f.default)
            rows.append({"key": prefix + f.name, "type": _yaml_type_name(tp, f),
                         "allowed": allowed, "default": default,
                         "doc": f.metadata.get("doc", "")})
            if isinstance(inner, type) and issubclass(inner, ConfigBase):
                rows.extend(inner.reference(prefix=f"{prefix}{f.name}."))
        return rows

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """(key, type, default, doc) rows for documentation and ``accelgen explain``."""
        return [(r["key"], r["type"], r["default"], r["doc"]) for r in cls.reference()]

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
        unknown = 0
        for key in data:
            if key not in known:
                unknown += 1
                # Past the rendered limit a did-you-mean is never shown: skip the search.
                close = (difflib.get_close_matches(str(key), sorted(known), n=1)
                         if unknown <= MAX_PROBLEMS else [])
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(Problem(_join(path, key_text(key)), data[key], "",
                                        message=f"unknown key{hint}; known keys: "
                                                + ", ".join(sorted(known))))
        kwargs = {}
        before = len(problems)
        for name, f in fields.items():
            key_path = _join(path, name)
            from_file_name = False
            if name in data:
                raw = data[name]
            elif name in defaults:
                raw = defaults[name]
                from_file_name = name == "name"
            elif f.default is not MISSING:
                kwargs[name] = f.default
                continue
            else:
                problems.append(Problem(key_path, _MISSING_VALUE, _allowed_text(hints[name], f)))
                continue
            ok, value = _convert(raw, hints[name], f, key_path, problems)
            if ok and name == "name":
                why = name_problem(value)
                if why is not None:
                    if from_file_name:
                        why += ("; the name defaults to the file's name: set 'name:' in the "
                                "file or rename it")
                    problems.append(Problem(key_path, value, why))
                    ok = False
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


def key_text(key: Any) -> str:
    """A mapping key as the user wrote it (``7``, ``null``), for key paths in messages."""
    return key if isinstance(key, str) else show_value(key, 40)


def _unwrap_optional(tp) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


_YAML_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def yaml_text(value: Any) -> str:
    """A default as YAML spells it: ``int8`` and ``wrap`` bare, ``null``, ``true``, ``[1, 2]``."""
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", value) \
            and value not in ("null", "true", "false", "yes", "no", "on", "off"):
        return value
    return show_value(value)


def _yaml_type_name(tp, f: dataclasses.Field) -> str:
    """The YAML type a key takes: a field parsed from text (``int8``) is a string in YAML even
    when the dataclass holds a number."""
    inner, optional = _unwrap_optional(tp)
    names = _YAML_TYPES
    if f.metadata.get("parse") is not None:
        name = "string"
    elif typing.get_origin(inner) is tuple:
        elem = typing.get_args(inner)[0]
        name = f"list of {names.get(elem, getattr(elem, '__name__', str(elem)))}"
    elif isinstance(inner, type) and issubclass(inner, ConfigBase):
        name = "mapping"
    else:
        name = names.get(inner, getattr(inner, "__name__", str(inner)))
    return f"{name} or null" if optional else name


def _allowed_text(tp, f: dataclasses.Field) -> str:
    meta = f.metadata
    if meta.get("allowed"):
        return meta["allowed"]
    inner, optional = _unwrap_optional(tp)
    if meta.get("choices") is not None:
        text = "one of " + ", ".join(_show(c) for c in meta["choices"])
    elif isinstance(inner, type) and issubclass(inner, ConfigBase):
        text = "a mapping"
    else:
        is_list = typing.get_origin(inner) is tuple
        elem = typing.get_args(inner)[0] if is_list else inner
        name = {int: "integer", float: "number", bool: "true or false", str: "string"}.get(
            elem, getattr(elem, "__name__", str(elem)))
        if is_list:
            name = f"a list of {name}s" if name != "true or false" else "a list of true/false"
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
        except Exception as exc:  # noqa: BLE001 - any failure to parse input is bad input
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
                problems.append(Problem(f"{path}[{i}]", item,
                                        f"{_YAML_TYPES.get(elem, elem.__name__)}"))
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
        if isinstance(v, float) and not math.isfinite(v):
            ok = False
        if meta.get("choices") is not None and v not in meta["choices"]:
            ok = False
        if meta.get("min") is not None and v < meta["min"]:
            ok = False
        if meta.get("max") is not None and v > meta["max"]:
            ok = False
    if not ok:
        problems.append(Problem(path, list(value) if each else value, allowed))
    return ok
