"""Sweep files: what to sweep, validated like configs before anything runs.

A sweep file is a YAML mapping read by the configs' strict reader. Its common keys are ``kind``,
``name``, ``description``, ``fixed`` (config keys held constant), ``axes`` (config keys swept as a
cartesian product) and ``synthesize`` (none, all, or filters); every other top-level key belongs
to the kind's own options, a :class:`~gen.schema.ConfigBase` dataclass declared by the kind
(:mod:`gen.dse.kinds`), so it is checked by the same schema machinery as a config: unknown keys
with a did-you-mean, types, ranges, every problem at once, ``file: key.path: got V; allowed: A``.
Each ``fixed`` value and each axis value is then checked against the config schema of ``kind``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gen.schema import MISSING, ConfigBase, ConfigError, Problem, key_text

__all__ = ["Sweep", "sweep_from_dict", "load_sweep", "COMMON_KEYS", "MAX_LIST",
           "MAX_COMBINATIONS", "MAX_JOBS", "positive_int_list"]

#: Keys every sweep file may have; the kind's options add their own.
COMMON_KEYS = ("kind", "name", "description", "fixed", "axes", "synthesize")
#: Size limits, checked before anything expands: the largest shipped sweep (ternary_tiling) has
#: 9,120 combinations and validates in about 3 s.
MAX_LIST = 64                    # entries of each list-valued option and of each axis
MAX_COMBINATIONS = 20_000        # the kind's option lists x the product of the axes
MAX_JOBS = 256                   # local worker processes


@dataclass(frozen=True)
class Sweep:
    name: str
    kind: str
    description: str
    options: ConfigBase              # the kind's own keys, validated
    fixed: dict
    axes: dict
    synthesize: Any                  # "none", "all" or a tuple of filter dicts
    source: str = "<sweep>"

    def __getattr__(self, name: str):
        # The kind's options read like the sweep's own (sweep.throughput, sweep.gemms).
        options = self.__dict__.get("options")
        if options is not None and name in {f.name for f in dataclasses.fields(options)}:
            return getattr(options, name)
        raise AttributeError(name)

    def replace(self, **changes) -> "Sweep":
        return dataclasses.replace(self, **changes)


def positive_int_list(maximum: int):
    """``parse=`` for an option that is one positive integer or a list of distinct ones."""
    allowed = (f"a positive integer (at most {maximum:,}) or a non-empty list of at most "
               f"{MAX_LIST} of them, without repeats")

    def parse(raw: Any) -> tuple[int, ...]:
        values = raw if isinstance(raw, (list, tuple)) else [raw]
        if not values or len(values) > MAX_LIST or len(set(map(str, values))) != len(values) or \
                any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= maximum
                    for v in values):
            raise ValueError(allowed)
        return tuple(values)

    parse.allowed = allowed
    return parse


def _identity(value: Any) -> str:
    """Text identity of an axis value, for repeats (a list or mapping value is not hashable)."""
    return json.dumps(value, sort_keys=True, default=repr)


def sweep_from_dict(data: Any, *, source: str = "<sweep>", default_name: str = "sweep") -> Sweep:
    """Validate a parsed sweep file; raise :class:`ConfigError` listing every problem found."""
    from gen.dse.kinds import DSE_KINDS, dse_kind

    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", data, "", message=(
            "a sweep file must hold a YAML mapping with 'kind' and 'axes'"))])
    kind = data.get("kind")
    spec = dse_kind(kind) if isinstance(kind, str) and kind in DSE_KINDS else None
    if spec is None:
        guess = _guess_kind(kind, data)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        problems.append(Problem("kind", kind if "kind" in data else MISSING,
                                "one of " + ", ".join(sorted(DSE_KINDS))
                                + f" (the kinds with a cost and cycle model for sweeps){hint}"))
        # Still check what can be checked: the options of the kind the file most looks like.
        spec = dse_kind(guess) if guess else None
    option_names = [f.name for f in dataclasses.fields(spec.options)] if spec else []
    known = (*COMMON_KEYS, *option_names)
    for key in data:
        if key not in known and spec is not None:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(Problem(key_text(key), data[key], "", message=(
                f"unknown key{hint}; known keys: " + ", ".join(known))))
    name = data.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        problems.append(Problem("name", name, "1 to 64 ASCII letters, digits, '_' and '-' (it "
                                              "names the output folder)"))
    description = data.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem("description", description, "a string"))

    options = None
    if spec is not None:
        before = len(problems)
        options = spec.options._build({k: data[k] for k in option_names if k in data}, "",
                                      problems, {})
        if len(problems) != before:
            options = None

    fixed = data.get("fixed", {}) or {}
    axes = data.get("axes", None)
    if not isinstance(fixed, dict):
        problems.append(Problem("fixed", fixed, "a mapping of config keys to single values"))
        fixed = {}
    if not isinstance(axes, dict) or not axes:
        problems.append(Problem("axes", axes, "a non-empty mapping of config keys to lists of "
                                              "values"))
        axes = {}
    derived = spec.derived_keys if spec else ()
    for section, mapping in (("fixed", fixed), ("axes", axes)):
        for key, value in mapping.items():
            where = f"{section}.{key_text(key)}"
            if key in derived or key in ("kind", "name"):
                problems.append(Problem(where, value, "", message=(
                    f"is derived by the sweep and cannot be set ({spec.derived_help if spec else ''}"
                    "; name from the parameters; kind at the top)")))
            elif section == "axes" and (not isinstance(value, list) or not value
                                        or len(value) > MAX_LIST):
                problems.append(Problem(where, value, f"a non-empty list of at most {MAX_LIST} "
                                                      "values"))
            elif section == "axes" and len(set(map(_identity, value))) != len(value):
                problems.append(Problem(where, value, "a list without repeated values"))
    for key in sorted(set(fixed) & set(axes), key=str):
        problems.append(Problem(f"axes.{key_text(key)}", axes[key], "", message=(
            "is also in 'fixed'; a key is either held fixed or swept, not both")))
    if not problems and options is not None:
        combinations = spec.combinations(options) * math.prod(len(v) for v in axes.values())
        if combinations > MAX_COMBINATIONS:
            problems.append(Problem("axes", None, "", message=(
                f"the sweep expands to {combinations:,} combinations; at most "
                f"{MAX_COMBINATIONS:,}: split it into several sweep files")))

    synthesize = data.get("synthesize", "none")
    if isinstance(synthesize, bool):
        synthesize = "all" if synthesize else "none"
    if isinstance(synthesize, str):
        if synthesize not in ("none", "all"):
            problems.append(Problem("synthesize", synthesize, "none, all, or a list of filters "
                                                              "such as [{throughput: 8}]"))
    elif isinstance(synthesize, list):
        filter_keys = set(axes) | set(fixed) | set(spec.point_keys if spec else ())
        for i, item in enumerate(synthesize):
            if not isinstance(item, dict) or not item:
                problems.append(Problem(f"synthesize[{i}]", item, "a non-empty mapping of point "
                                                                   "keys to values"))
                continue
            for key in item:
                if key not in filter_keys:
                    problems.append(Problem(f"synthesize[{i}].{key_text(key)}", item[key], "",
                                            message="unknown point key; allowed: "
                                                    + ", ".join(sorted(map(str, filter_keys)))))
        synthesize = tuple(synthesize)
    else:
        problems.append(Problem("synthesize", synthesize, "none, all, or a list of filters"))

    if spec is not None and spec.kind == kind and not problems:
        problems.extend(_check_against_schema(kind, fixed, axes, derived))
    if problems:
        raise ConfigError(source, problems)
    return Sweep(name=name, kind=kind, description=description, options=options,
                 fixed=dict(fixed), axes={k: list(v) for k, v in axes.items()},
                 synthesize=synthesize, source=source)


def _guess_kind(kind: Any, data: dict) -> str | None:
    """The sweep kind a file with a bad ``kind`` most likely meant: the nearest name, else the
    kind whose own keys the file uses most."""
    from gen.dse.kinds import DSE_KINDS, dse_kind

    close = difflib.get_close_matches(str(kind), sorted(DSE_KINDS), n=1, cutoff=0.6)
    if close:
        return close[0]
    used = set(data) - set(COMMON_KEYS)
    best = max(sorted(DSE_KINDS), key=lambda k: len(used & {
        f.name for f in dataclasses.fields(dse_kind(k).options)}))
    overlap = used & {f.name for f in dataclasses.fields(dse_kind(best).options)}
    return best if overlap else None


def _check_against_schema(kind: str, fixed: dict, axes: dict, derived) -> list[Problem]:
    """Run every fixed key and axis value through the config schema's per-field checks."""
    from gen.config import config_class

    cls = config_class(kind)
    fields = {f.name for f in dataclasses.fields(cls)}
    problems = []
    for section, mapping in (("fixed", fixed), ("axes", axes)):
        for key, value in mapping.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), sorted(fields), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(Problem(f"{section}.{key_text(key)}", value, "", message=(
                    f"not a {kind} config key{hint}; known keys: "
                    + ", ".join(sorted(fields - set(derived) - {"name"})))))
                continue
            values = value if section == "axes" else [value]
            for i, item in enumerate(values):
                where = f"{section}.{key}" + (f"[{i}]" if section == "axes" else "")
                problems.extend(dataclasses.replace(p, key=where)
                                for p in cls.field_problems(key, item))
    return problems


def load_sweep(path: str | Path) -> Sweep:
    """Read (with the configs' strict YAML reader: encoding, repeated keys, nesting, size) and
    validate one sweep file."""
    from gen.config import read_yaml

    path = Path(path)
    data = read_yaml(path)
    return sweep_from_dict(data, source=str(path), default_name=path.stem)
