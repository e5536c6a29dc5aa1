"""Seeded random *valid* configs of every kind: test the space, not the presets.

Values are drawn from each field's own schema (its choices, its min .. max range, null for an
optional field), narrowed by :data:`SMALL` so a design builds and simulates in seconds, then the
config is validated by the same rules a user's file meets; a draw the rules reject is drawn again.
So a new field or rule is covered without touching this file, and a bug that only a non-preset
config shows can be found.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import numpy as np

from gen.config import GENERATORS, config_class
from gen.schema import ConfigBase, ConfigError, _unwrap_optional

__all__ = ["SMALL", "random_config", "random_configs"]

#: Per kind: field -> the values or (lo, hi) range to draw from, narrower than the schema allows,
#: so random designs stay small (a Verilator build well under a minute). Fields not listed draw
#: from their schema; structured text fields (operand types) must be listed.
SMALL: dict[str, dict[str, Any]] = {
    "systolic_array": {
        "rows": (1, 4), "cols": (1, 4), "a_type": [f"int{w}" for w in range(2, 9)],
        "b_type": [f"int{w}" for w in range(2, 9)], "max_k": (1, 40), "acc_width": (4, 24),
        "result_buffer": (1, 12),
    },
    "flattened_array": {
        "blen": (1, 4), "mlen": [1, 2, 4, 8, 16], "a_type": [f"int{w}" for w in range(2, 9)],
        "b_type": [f"int{w}" for w in range(2, 9)], "block_size": [1, 2, 4, 8, 16],
        "exponent_width": (2, 4), "max_blocks": (1, 8), "max_k": (1, 40),
        "acc_width": (4, 24), "heads": (1, 4), "result_buffer": (1, 24),
        "segment_bits": (4, 24),
    },
    "mxint_cast": {"block_size": (1, 8), "element_width": (2, 10), "exponent_width": (2, 8)},
    "mxint_dot": {"block_size": (1, 8), "element_width": (2, 8), "exponent_width": (2, 6),
                  "tree_stages": (1, 3)},
    "mxint_accumulator": {"lanes": (1, 4), "input_width": (2, 24), "exponent_width": (2, 5),
                          "acc_width": (2, 32), "max_terms": (1, 64)},
    "mxint_linear": {"in_features": (1, 32), "out_features": (1, 8), "n_tile": (1, 4),
                     "block_size": (1, 8), "element_width": (2, 8), "exponent_width": (2, 6)},
    "ternary_lut": {"mu": (1, 4), "lanes_l": (1, 3), "lanes_k": (1, 3),
                    "activation": [f"int{w}" for w in range(2, 9)] + ["fp16", "bf16"],
                    "acc_width": (4, 32), "max_reduction": (1, 64)},
    "float_add": {},
}

#: Kinds made of nested mappings whose cross-field rules a field-by-field draw rarely meets:
#: ``module:function`` of their own seeded generator of valid config data (rng -> dict).
DRAWERS: dict[str, str] = {
    "accelerator": "gen.config.accelerator:random_accelerator_config",
}

_MAX_TRIES = 400


def _draw_field(rng: np.random.Generator, field: dataclasses.Field, tp, narrow) -> Any:
    inner, optional = _unwrap_optional(tp)
    if optional and rng.random() < 0.5:
        return None
    meta = field.metadata
    if narrow is not None:
        if isinstance(narrow, tuple):
            lo, hi = narrow
            return int(rng.integers(lo, hi + 1))
        return narrow[int(rng.integers(len(narrow)))]
    if meta.get("choices") is not None:
        choices = meta["choices"]
        return choices[int(rng.integers(len(choices)))]
    if inner is bool:
        return bool(rng.random() < 0.5)
    if inner is int:
        lo = int(meta["min"]) if meta.get("min") is not None else 0
        hi = int(meta["max"]) if meta.get("max") is not None else lo + 16
        return int(rng.integers(lo, min(hi, lo + 16) + 1))
    if field.default is not dataclasses.MISSING:
        return field.default
    raise ValueError(f"no way to draw {field.name!r}: add it to SMALL")


def random_config(kind: str, rng: np.random.Generator, *, name: str | None = None) -> ConfigBase:
    """One random valid config of ``kind`` (drawn until the schema and its rules accept it)."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown kind {kind!r}; known: {', '.join(sorted(GENERATORS))}")
    cls = config_class(kind)
    if kind in DRAWERS:
        import importlib
        module, _, function = DRAWERS[kind].partition(":")
        data = getattr(importlib.import_module(module), function)(rng)
        data["name"] = name or f"random_{kind}"
        return cls.from_dict(data, source=f"<random {kind}>")
    hints = typing.get_type_hints(cls)
    narrow = SMALL.get(kind, {})
    last_error = None
    for attempt in range(_MAX_TRIES):
        data: dict[str, Any] = {"kind": kind}
        for field in dataclasses.fields(cls):
            if field.name == "name":
                continue
            data[field.name] = _draw_field(rng, field, hints[field.name], narrow.get(field.name))
        data["name"] = name or f"random_{kind}"
        try:
            return cls.from_dict(data, source=f"<random {kind}>")
        except ConfigError as exc:
            last_error = exc
    raise RuntimeError(f"no valid {kind} config in {_MAX_TRIES} draws; last rejection:\n"
                       f"{last_error.render() if last_error else ''}")


def random_configs(kind: str, count: int, seed: int) -> list[ConfigBase]:
    """``count`` random valid configs of ``kind``, named ``random_<kind>_<seed>_<n>``."""
    rng = np.random.default_rng([seed, sum(map(ord, kind))])
    return [random_config(kind, rng, name=f"random_{kind}_{seed}_{n}") for n in range(count)]
