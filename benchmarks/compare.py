"""The accuracy regression gate: results against a reference `summary.csv`, matched on
(case, scale). A reference case whose joint accuracy dropped by more than the tolerance, whose
model did not learn (`learned` false: `mdkeras.records.LEARNING_RULE`), or that is missing from
the results, is a problem.
"""

from __future__ import annotations

import math

import pandas as pd

from mdkeras.checks import check_number

KEYS = ["case", "scale"]
COLUMNS = ["case", "scale", "reference", "result", "delta", "status"]


def comparison(
    results: pd.DataFrame, reference: pd.DataFrame, tolerance: float = 0.03
) -> pd.DataFrame:
    """One row per reference (case, scale): reference and result joint accuracy, delta, status.

    status is "ok", "dropped" (result < reference - tolerance), "collapsed" (the result's model
    did not learn, whatever its accuracy) or "missing" (no result).
    """
    tolerance = check_number("tolerance", tolerance, min=0, noun="a number")
    ref = reference[KEYS + ["joint_accuracy"]].dropna(subset=["joint_accuracy"])
    res = results.assign(learned=_learned_column(results))
    res = res[KEYS + ["joint_accuracy", "learned"]].drop_duplicates(subset=KEYS)
    merged = ref.merge(res, on=KEYS, how="left", suffixes=("_ref", "_res"))
    rows = []
    for _, r in merged.iterrows():
        reference_value, result_value = r["joint_accuracy_ref"], r["joint_accuracy_res"]
        if pd.isna(result_value):
            status, delta = "missing", math.nan
        else:
            delta = result_value - reference_value
            if _is_false(r["learned"]):
                status = "collapsed"
            elif result_value < reference_value - tolerance - 1e-12:
                status = "dropped"
            else:
                status = "ok"
        rows.append([r["case"], r["scale"], reference_value, result_value, delta, status])
    return pd.DataFrame(rows, columns=COLUMNS)


def _learned_column(results: pd.DataFrame) -> list:
    """`learned` per row as True, False or None (None: unknown, or no such column)."""
    if "learned" not in results.columns:
        return [None] * len(results)
    return [None if v is None or pd.isna(v) else bool(v) for v in results["learned"]]


def _is_false(value) -> bool:
    return value is not None and not pd.isna(value) and not bool(value)


def compare(
    results: pd.DataFrame, reference: pd.DataFrame, tolerance: float = 0.03
) -> pd.DataFrame:
    """The problems only: reference cases that dropped by more than `tolerance`, collapsed, or
    are missing."""
    table = comparison(results, reference, tolerance)
    return table[table["status"] != "ok"].reset_index(drop=True)
