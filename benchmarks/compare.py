"""The accuracy regression gate: results against a reference `summary.csv`, matched on
(case, scale). A reference case whose joint accuracy dropped by more than the tolerance, or that
is missing from the results, is a problem.
"""

from __future__ import annotations

import math

import pandas as pd

from mdkeras.errors import MdkerasError

KEYS = ["case", "scale"]
COLUMNS = ["case", "scale", "reference", "result", "delta", "status"]


def comparison(
    results: pd.DataFrame, reference: pd.DataFrame, tolerance: float = 0.03
) -> pd.DataFrame:
    """One row per reference (case, scale): reference and result joint accuracy, delta, status.

    status is "ok", "dropped" (result < reference - tolerance) or "missing" (no result).
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise MdkerasError(f"tolerance={tolerance!r} is not allowed: expected a number >= 0.")
    ref = reference[KEYS + ["joint_accuracy"]].dropna(subset=["joint_accuracy"])
    res = results[KEYS + ["joint_accuracy"]].drop_duplicates(subset=KEYS)
    merged = ref.merge(res, on=KEYS, how="left", suffixes=("_ref", "_res"))
    rows = []
    for _, r in merged.iterrows():
        reference_value, result_value = r["joint_accuracy_ref"], r["joint_accuracy_res"]
        if pd.isna(result_value):
            status, delta = "missing", math.nan
        else:
            delta = result_value - reference_value
            status = "dropped" if result_value < reference_value - tolerance - 1e-12 else "ok"
        rows.append([r["case"], r["scale"], reference_value, result_value, delta, status])
    return pd.DataFrame(rows, columns=COLUMNS)


def compare(
    results: pd.DataFrame, reference: pd.DataFrame, tolerance: float = 0.03
) -> pd.DataFrame:
    """The problems only: reference cases that dropped by more than `tolerance` or are missing."""
    table = comparison(results, reference, tolerance)
    return table[table["status"] != "ok"].reset_index(drop=True)
