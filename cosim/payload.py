"""Vectorised packing of stream payloads from the manifest's layouts, millions of beats at a time.

A payload port is a flat bit vector whose fields are described in ``manifest.json`` (``struct``
fields with offsets, ``array`` elements, signed or unsigned ``int`` leaves; see
the exporter's ``layout_json`` in gen/export.py). :mod:`cosim.harness` packs one beat at a time with Python ints,
which is right for cocotb and far too slow for long workloads. Here a batch of ``n`` beats is

* a *column* tree that follows the layout: a ``dict`` per struct, a numpy array per int leaf with
  the beat index first (an ``array`` layout adds its length as the next axis, so an array of structs
  becomes a dict of ``[n, length, ...]`` arrays);
* packed into ``uint32`` words, ``[n, ceil(width / 32)]``, little-endian: word ``i`` holds bits
  ``32 i .. 32 i + 31``, which is also the order of Verilator's ``VlWide`` words.

Leaves up to 64 bits are ``int64`` (``uint64`` for unsigned 64-bit ones); wider leaves are object
arrays of Python ints (packed beat by beat; no preset has them on a hot path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Leaf", "leaves", "words_for", "pack_beats", "unpack_beats", "columns_from_values",
           "to_values", "beat_count"]


@dataclass(frozen=True)
class Leaf:
    """One int field, repeated over ``shape`` at ``strides`` bits (arrays), at ``offset``."""

    path: tuple[str, ...]
    offset: int
    width: int
    signed: bool
    shape: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return ".".join(self.path) or "<payload>"

    def dtype(self):
        if self.width > 64:
            return object
        if self.width == 64 and not self.signed:
            return np.uint64
        return np.int64

    def offsets(self) -> list[tuple[tuple[int, ...], int]]:
        """(index within ``shape``, bit offset) of every element."""
        out = []
        for idx in np.ndindex(*self.shape) if self.shape else [()]:
            out.append((idx, self.offset + sum(i * s for i, s in zip(idx, self.strides))))
        return out


def leaves(layout: dict, path: tuple[str, ...] = (), offset: int = 0) -> list[Leaf]:
    kind = layout["type"]
    if kind == "int":
        return [Leaf(path, offset, layout["width"], bool(layout["signed"]))]
    if kind == "struct":
        out = []
        for name, field in layout["fields"].items():
            out += leaves(field["layout"], path + (name,), offset + field["offset"])
        return out
    if kind == "array":
        elem = layout["element"]
        return [Leaf(lf.path, lf.offset, lf.width, lf.signed, (layout["length"],) + lf.shape,
                     (elem["width"],) + lf.strides)
                for lf in leaves(elem, path, offset)]
    raise ValueError(f"unknown layout type {kind!r}")


def words_for(width: int) -> int:
    return max(1, -(-width // 32))


def _get(tree: Any, path: tuple[str, ...], leaf: Leaf) -> Any:
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, dict):
            raise TypeError(f"payload field {'.'.join(path[:i]) or '<payload>'} must be a dict of "
                            f"fields, not {type(node).__name__}")
        if key not in node:
            raise KeyError(f"payload field {'.'.join(path[:i + 1])!r} missing (have "
                           f"{sorted(node)})")
        node = node[key]
    return node


def _set(tree: dict, path: tuple[str, ...], value) -> Any:
    if not path:
        return value
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return tree


def _check_keys(layout: dict, tree: Any, path: str = "") -> None:
    if layout["type"] == "struct":
        extra = set(tree) - set(layout["fields"])
        if extra:
            raise KeyError(f"unknown payload fields {sorted(extra)}"
                           + (f" in {path}" if path else ""))
        for name, field in layout["fields"].items():
            if name in tree:
                _check_keys(field["layout"], tree[name], f"{path}.{name}".lstrip("."))
    elif layout["type"] == "array" and layout["element"]["type"] != "int":
        _check_keys(layout["element"], tree, path)


def beat_count(layout: dict, columns: Any) -> int:
    lf = leaves(layout)[0]
    return len(np.asarray(_get(columns, lf.path, lf), dtype=object if lf.width > 64 else None))


def pack_beats(layout: dict, columns: Any) -> np.ndarray:
    """Column tree (see module doc) -> ``uint32`` words ``[n, ceil(width / 32)]``. Raises
    ``ValueError`` naming the field if a value does not fit its field."""
    width = layout["width"]
    nwords = words_for(width)
    if isinstance(columns, np.ndarray) and columns.dtype.names:
        columns = _from_structured(columns)
    _check_keys(layout, columns)
    n = None
    words = None
    for leaf in leaves(layout):
        raw = _get(columns, leaf.path, leaf)
        values = np.asarray(raw, dtype=object if leaf.width > 64 else None)
        if values.dtype == object:
            # Python ints (the slow path): check them here, then use a fixed-width integer type
            # where the field fits one (uint64 for unsigned 64-bit fields, whose top half an
            # int64 cannot hold).
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                       for v in values.flat):
                raise TypeError(f"payload field {leaf.name} must hold integers")
            if values.size:
                _check_range(leaf, values)
            if leaf.width <= 64:
                values = values.astype(np.uint64 if leaf.width == 64 and not leaf.signed
                                       else np.int64)
        elif values.dtype.kind not in "iub":
            raise TypeError(f"payload field {leaf.name} must hold integers, not {values.dtype}")
        if values.ndim != 1 + len(leaf.shape) or tuple(values.shape[1:]) != leaf.shape:
            want = "(beats" + "".join(f", {d}" for d in leaf.shape) + ")"
            raise ValueError(f"payload field {leaf.name} must have shape {want}, not "
                             f"{values.shape}")
        if n is None:
            n = values.shape[0]
            words = np.zeros((n, nwords), dtype=np.uint32)
        elif values.shape[0] != n:
            raise ValueError(f"payload field {leaf.name} has {values.shape[0]} beats, other "
                             f"fields have {n}")
        if n == 0:
            continue
        _check_range(leaf, values)
        if leaf.width > 64:
            _pack_wide(words, leaf, values)
            continue
        if _pack_aligned(words, leaf, values):
            continue
        small = leaf.width <= 32
        utype = np.uint32 if small else np.uint64
        u = values.astype(utype) if values.dtype != utype else values
        mask = utype((1 << leaf.width) - 1)
        for idx, off in leaf.offsets():
            col = u[(slice(None),) + idx] & mask
            if small and (off & 31) + leaf.width <= 32:
                words[:, off >> 5] |= col << np.uint32(off & 31)
            else:
                _or_bits(words, col.astype(np.uint64), off, leaf.width)
    if words is None:
        raise ValueError("payload layout has no fields")
    return words


def _pack_aligned(words: np.ndarray, leaf: Leaf, values: np.ndarray) -> bool:
    """Byte-, half-word-, word- or double-word-sized elements on their own alignment, laid out
    contiguously (int8 vectors and the like): one strided store per leaf instead of shifts."""
    width = leaf.width
    if width not in (8, 16, 32, 64) or leaf.offset % width or len(leaf.shape) > 1:
        return False
    if leaf.shape and leaf.strides[0] != width:
        return False
    if (words.shape[1] * 32) % width:
        return False
    view = words.view(np.dtype(f"<u{width // 8}"))
    start = leaf.offset // width
    count = leaf.shape[0] if leaf.shape else 1
    # astype to an unsigned type of the field's width wraps negative values to two's complement.
    block = values.astype(view.dtype, copy=False).reshape(len(values), count)
    view[:, start:start + count] = block
    return True


def _check_range(leaf: Leaf, values: np.ndarray) -> None:
    if values.dtype == np.bool_:
        values = values.astype(np.int64)
    lo = -(1 << (leaf.width - 1)) if leaf.signed else 0
    hi = (1 << (leaf.width - 1)) - 1 if leaf.signed else (1 << leaf.width) - 1
    vmin, vmax = values.min(), values.max()
    if int(vmin) < lo or int(vmax) > hi:
        bad = int(vmin) if int(vmin) < lo else int(vmax)
        raise ValueError(f"payload field {leaf.name}: {bad} does not fit a "
                         f"{'signed' if leaf.signed else 'unsigned'} {leaf.width}-bit field "
                         f"({lo} .. {hi})")


def _or_bits(words: np.ndarray, col: np.ndarray, off: int, width: int) -> None:
    w, sh = off >> 5, off & 31
    low = np.uint64(0xFFFFFFFF)
    words[:, w] |= ((col << np.uint64(sh)) & low).astype(np.uint32)
    if sh + width > 32:
        words[:, w + 1] |= ((col >> np.uint64(32 - sh)) & low).astype(np.uint32)
    if sh + width > 64:
        words[:, w + 2] |= ((col >> np.uint64(64 - sh)) & low).astype(np.uint32)


def _pack_wide(words: np.ndarray, leaf: Leaf, values: np.ndarray) -> None:
    mask = (1 << leaf.width) - 1
    nwords = words.shape[1]
    for idx, off in leaf.offsets():
        col = values[(slice(None),) + idx]
        for b in range(len(col)):
            v = (int(col[b]) & mask) << (off & 31)
            w = off >> 5
            while v and w < nwords:
                words[b, w] |= np.uint32(v & 0xFFFFFFFF)
                v >>= 32
                w += 1


def unpack_beats(layout: dict, words: np.ndarray) -> Any:
    """``uint32`` words ``[n, nwords]`` -> column tree (signed where the layout says so)."""
    words = np.asarray(words, dtype=np.uint32)
    if words.ndim != 2 or words.shape[1] != words_for(layout["width"]):
        raise ValueError(f"need words of shape (beats, {words_for(layout['width'])}), got "
                         f"{words.shape}")
    n = words.shape[0]
    w64 = words.astype(np.uint64)
    tree: Any = {}
    for leaf in leaves(layout):
        out = np.empty((n, *leaf.shape), dtype=leaf.dtype())
        for idx, off in leaf.offsets():
            if leaf.width > 64:
                out[(slice(None),) + idx] = _unpack_wide(words, off, leaf.width, leaf.signed)
            else:
                out[(slice(None),) + idx] = _extract(w64, off, leaf.width, leaf.signed)
        tree = _set(tree, leaf.path, out)
    return tree


def _extract(w64: np.ndarray, off: int, width: int, signed: bool) -> np.ndarray:
    w, sh = off >> 5, off & 31
    u = w64[:, w] >> np.uint64(sh)
    if sh + width > 32:
        u = u | (w64[:, w + 1] << np.uint64(32 - sh))
    if sh + width > 64:
        u = u | (w64[:, w + 2] << np.uint64(64 - sh))
    if width == 64:
        return u.view(np.int64) if signed else u
    # Shift the field to the top, then back down: the bits above it fall off, and an arithmetic
    # shift of the signed view sign-extends it (two passes instead of mask, compare and select).
    top = np.uint64(64 - width)
    u <<= top
    return (u.view(np.int64) if signed else u) >> (64 - width if signed else top)


def _unpack_wide(words: np.ndarray, off: int, width: int, signed: bool) -> np.ndarray:
    out = np.empty(words.shape[0], dtype=object)
    first, last = off >> 5, (off + width - 1) >> 5
    for b in range(words.shape[0]):
        v = 0
        for w in range(last, first - 1, -1):
            v = (v << 32) | int(words[b, w])
        v = (v >> (off & 31)) & ((1 << width) - 1)
        if signed and v >> (width - 1):
            v -= 1 << width
        out[b] = v
    return out


def _from_structured(arr: np.ndarray) -> dict:
    out = {}
    for name in arr.dtype.names:
        col = arr[name]
        out[name] = _from_structured(col) if col.dtype.names else col
    return out


def columns_from_values(layout: dict, values: list) -> Any:
    """Per-beat Python values (dicts / lists / ints, as :func:`cosim.harness.pack` takes them) ->
    column tree."""
    kind = layout["type"]
    if kind == "int":
        dtype = Leaf((), 0, layout["width"], bool(layout["signed"])).dtype()
        return np.array([int(v) for v in values], dtype=dtype).reshape(len(values))
    if kind == "struct":
        out = {}
        for name, field in layout["fields"].items():
            try:
                col = [v[name] for v in values]
            except KeyError:
                have = sorted(next(v for v in values if name not in v))
                raise KeyError(f"payload field {name!r} missing (have {have})") from None
            out[name] = columns_from_values(field["layout"], col)
        for v in values:
            extra = set(v) - set(layout["fields"])
            if extra:
                raise KeyError(f"unknown payload fields {sorted(extra)}")
        return out
    if kind == "array":
        length = layout["length"]
        for v in values:
            if len(v) != length:
                raise ValueError(f"array payload needs {length} elements, got {len(v)}")
        flat = columns_from_values(layout["element"], [e for v in values for e in v])
        return _tree_map(flat, lambda a: a.reshape((len(values), length) + a.shape[1:]))
    raise ValueError(f"unknown layout type {kind!r}")


def _tree_map(tree, fn):
    if isinstance(tree, dict):
        return {k: _tree_map(v, fn) for k, v in tree.items()}
    return fn(tree)


def to_values(layout: dict, columns: Any) -> list:
    """Column tree -> per-beat Python values, equal to what :func:`cosim.harness.unpack` gives."""
    kind = layout["type"]
    if kind == "int":
        return [int(v) for v in np.asarray(columns).reshape(-1)] if np.ndim(columns) else \
            [int(columns)]
    if kind == "struct":
        names = list(layout["fields"])
        cols = [to_values(layout["fields"][k]["layout"], columns[k]) for k in names]
        return [dict(zip(names, vals)) for vals in zip(*cols)]
    if kind == "array":
        length = layout["length"]
        flat = to_values(layout["element"],
                         _tree_map(columns, lambda a: np.asarray(a).reshape(
                             (-1,) + np.asarray(a).shape[2:])))
        return [flat[i * length:(i + 1) * length] for i in range(len(flat) // length)]
    raise ValueError(f"unknown layout type {kind!r}")
