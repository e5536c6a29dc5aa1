"""Golden model of one job of the accelerator's matrix unit (hw/matrix_unit.py).

A job is one K chunk of an output tile: sub-array ``s`` reduces one MXInt block of A rows and
B^T rows exactly, the sum is aligned to the accumulator grid by its exponents with
:func:`software_model.mxint_fixed.scale_saturate`, and the ``S`` aligned tiles are summed exactly
(docs/accelerator.md section 3). The accelerator-level ``matmul`` (software_model.accelerator)
is this job repeated over tiles and chunks, plus the saturating accumulate into ACC.
"""

from __future__ import annotations

import numpy as np

from software_model.mxint_fixed import scale_saturate

__all__ = ["matrix_unit_job"]


def matrix_unit_job(a, b, a_exp, b_exp, *, shift: int, acc_lsb: int, acc_width: int):
    """``a``: (S, rows, B) A mantissas, ``b``: (S, cols, B) B^T mantissas, ``a_exp``: (S, rows),
    ``b_exp``: (S, cols) block exponents. Returns the (rows, cols) int64 tile
    ``sum_s scale_saturate(a[s] . b[s]^T, a_exp[s][:, None] + b_exp[s][None, :] + shift - acc_lsb,
    acc_width)``."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    a_exp = np.asarray(a_exp, np.int64)
    b_exp = np.asarray(b_exp, np.int64)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"need a (S, rows, B) and b (S, cols, B), got {a.shape} and {b.shape}")
    if a_exp.shape != a.shape[:2] or b_exp.shape != b.shape[:2]:
        raise ValueError(f"need exponents of shape {a.shape[:2]} and {b.shape[:2]}, got "
                         f"{a_exp.shape} and {b_exp.shape}")
    sums = np.einsum("sik,sjk->sij", a, b)
    amounts = a_exp[:, :, None] + b_exp[:, None, :] + shift - acc_lsb
    return scale_saturate(sums, amounts, acc_width).sum(axis=0)
