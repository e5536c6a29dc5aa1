"""Config loading: YAML file -> the generator's config dataclass, with every problem reported at once.

A config file is a YAML mapping whose ``kind:`` picks the generator. ``name:`` defaults to the file's
stem; it names the Verilog top and the output folder.
"""

from __future__ import annotations

import difflib
import importlib
from pathlib import Path
from typing import Any

import yaml

from gen.schema import ConfigBase, ConfigError, Problem

__all__ = ["GENERATORS", "ConfigError", "config_class", "config_from_dict", "load_config",
           "preset_paths"]

#: ``kind`` -> ``module:ConfigClass``. Imported lazily so a broken generator can't break the others.
GENERATORS: dict[str, str] = {
    "systolic_array": "gen.config.systolic:SystolicArrayConfig",
    "ternary_lut": "gen.config.ternary_lut:TernaryLUTConfig",
    "float_add": "gen.config.float_add:FloatAddConfig",
    "mxint_cast": "gen.config.mxint:MXIntCastConfig",
    "mxint_dot": "gen.config.mxint:MXIntDotConfig",
    "mxint_accumulator": "gen.config.mxint:MXIntAccumulatorConfig",
    "mxint_linear": "gen.config.mxint:MXIntLinearConfig",
    "flattened_array": "gen.config.flattened:FlattenedArrayConfig",
    "accelerator": "gen.config.accelerator:AcceleratorConfig",
}

REPO_ROOT = Path(__file__).resolve().parents[2]
PRESET_DIR = REPO_ROOT / "configs"


def config_class(kind: str) -> type[ConfigBase]:
    module_name, _, class_name = GENERATORS[kind].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def config_from_dict(data: Any, *, source: str = "<config>", default_name: str = "config"):
    """Validate parsed YAML ``data``; raise :class:`ConfigError` naming ``source`` on any problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("", data, "", message=(
            f"the file must hold a YAML mapping with a 'kind:' key, not {type(data).__name__}"))])
    kind = data.get("kind")
    if kind not in GENERATORS:
        known = sorted(GENERATORS)
        close = difflib.get_close_matches(str(kind), known, n=1) if kind is not None else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        value = kind if kind is not None else "nothing (the key is required)"
        raise ConfigError(source, [Problem("kind", value, "", message=(
            f"got {value!r}{hint}; allowed: one of " + ", ".join(known)))])
    cls = config_class(kind)
    return cls.from_dict(data, source=source, defaults={"name": default_name})


def load_config(path: str | Path):
    """Read and validate one YAML config file."""
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(source, [Problem("", None, "", message=f"cannot read: {exc.strerror}")])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem("", None, "", message=f"bad YAML: {where}{what}")])
    return config_from_dict(data, source=source, default_name=path.stem)


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
