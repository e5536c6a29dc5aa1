"""Stimulus and expected beats shared by the MXInt nonlinear units' regressions (cocotb and the
amaranth.sim fast tier): random and corner-case MXInt blocks and rows, and the golden models'
results turned into the payloads the RTL emits.

MXInt has no NaN or Inf code, so the "NaN/Inf inputs" corner does not exist for these units; the
extremes that do exist are the exponent field's ends (emin, emax), the most negative mantissa
code -2^(w-1) (never produced by a cast, but a legal input), full-scale mantissas at emax
(saturating every fixed-point conversion), all-zero blocks and all-equal rows.
"""
from __future__ import annotations

import numpy as np

from software_model.mxint import MXIntFormat, encode_exponent

__all__ = ["exponent_field", "block_payload", "random_block", "BLOCK_STYLES", "corner_blocks",
           "mask_bits"]

#: value distributions of random blocks
BLOCK_STYLES = ("uniform", "gauss", "extreme", "zero", "saturate", "most_negative", "tiny")


def exponent_field(e: int, fmt: MXIntFormat) -> int:
    """Decoded exponent -> the field value as the harness packs/unpacks it (signed for two's
    complement, unsigned codes for biased)."""
    code = int(encode_exponent(e, fmt))
    if fmt.exponent_encoding == "twos_complement" and code >> (fmt.exponent_width - 1):
        code -= 1 << fmt.exponent_width
    return code


def block_payload(e, m, fmt: MXIntFormat) -> dict:
    return {"exponent": exponent_field(int(e), fmt), "mantissas": [int(v) for v in m]}


def mask_bits(mask) -> int:
    return int(sum(int(bool(b)) << i for i, b in enumerate(mask)))


def random_block(rng, fmt: MXIntFormat, style: str | None = None, *, centre: int = 0,
                 spread: int = 4):
    """One block ``(e, mantissas)`` in ``fmt``: exponents around ``centre`` +- ``spread`` (clipped
    to the field) unless the style fixes them."""
    k, w = fmt.block_size, fmt.element_width
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    if style is None:
        style = BLOCK_STYLES[int(rng.integers(len(BLOCK_STYLES)))] if rng.random() < 0.3 \
            else ("gauss" if rng.random() < 0.5 else "uniform")
    e = int(np.clip(centre + rng.integers(-spread, spread + 1), fmt.emin, fmt.emax))
    if style == "uniform":
        m = rng.integers(lo, hi + 1, size=k)
    elif style == "gauss":
        # what a cast produces: the largest magnitude in the top binade
        v = rng.normal(size=k)
        m = np.clip(np.round(v / np.abs(v).max() * (hi - rng.integers(0, hi // 2 + 1))), -hi, hi)
    elif style == "extreme":
        m = rng.choice([lo, hi, lo + 1, -1, 0, 1], size=k)
    elif style == "zero":
        m = np.zeros(k, int)
    elif style == "saturate":
        e, m = fmt.emax, rng.choice([hi, -hi], size=k)
    elif style == "most_negative":
        e, m = int(rng.choice([fmt.emax, fmt.emin, e])), np.full(k, lo)
    elif style == "tiny":
        e, m = fmt.emin, rng.integers(lo, hi + 1, size=k)
    else:
        raise ValueError(f"unknown block style {style!r}; known: {', '.join(BLOCK_STYLES)}")
    return int(e), np.asarray(m, np.int64)


def corner_blocks(fmt: MXIntFormat):
    """Blocks every nonlinear regression sends: zeros, all-equal, the field's ends, the most
    negative code, full scale at emax, one dominant element."""
    k, w = fmt.block_size, fmt.element_width
    lo, hi = -(1 << (w - 1)), (1 << (w - 1)) - 1
    one_big = np.zeros(k, int)
    one_big[k // 2] = hi
    return [
        (fmt.emin, np.zeros(k, int)),
        (0, np.full(k, 1 << (w - 2))),               # all equal to 1.0
        (fmt.emax, np.full(k, hi)),                  # saturating
        (fmt.emax, np.full(k, lo)),                  # most negative code at emax
        (fmt.emin, np.full(k, lo)),
        (fmt.emin, np.full(k, hi)),
        (min(3, fmt.emax), one_big),                 # one dominant element (in the field)
        (0, np.resize([hi, lo, 0, 1, -1], k)),
    ]
