"""Aggregate a directory of run records into one table: a row per (case, scale), seeds averaged.

`report(directory)` writes `summary.csv` (every column, full precision) and `summary.md`
(a compact, rounded table plus one line per failed run) and returns the DataFrame.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmarks.records import atomic_write_text, load_records
from mdkeras.config import Case
from mdkeras.errors import MdkerasError

AXES = ("potential", "density", "window", "grid", "architecture", "encoding", "head")
METRICS = (
    "joint_accuracy",
    "majority",
    "cell_centre",
    "bayes_limit",
    "fraction_of_bayes",
    "accuracy_x",
    "accuracy_y",
    "joint_within_one",
    "force_mae",
)
COLUMNS = (
    ["case", *AXES, "scale", "seeds"]
    + [f"{m}{suffix}" for m in METRICS for suffix in ("", "_sd", "_n")]
    + ["paper_reference", "delta_vs_paper", "epochs", "train_seconds", "device"]
)
MARKDOWN_METRICS = ("majority", "cell_centre", "bayes_limit", "fraction_of_bayes", "force_mae")


def flatten(record: dict) -> dict:
    """One successful record as a flat row of per-seed values (missing values are NaN)."""
    metrics = record.get("metrics") or {}
    baselines = record.get("baselines") or {}
    row = {"case": record["case_name"], "scale": record["scale"], "seed": record["seed"]}
    row.update({axis: record["case"].get(axis) for axis in AXES})
    for m in METRICS:
        value = metrics.get(m, baselines.get(m, record.get(m)))
        row[m] = _number(value)
    row["paper_reference"] = _paper_reference(record)
    row["epochs"] = _number(record.get("epochs_run"))
    row["train_seconds"] = _number((record.get("timing") or {}).get("train_seconds"))
    row["device"] = (record.get("provenance") or {}).get("device")
    row["samples"] = _number(record.get("samples"))
    return row


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _paper_reference(record: dict) -> float:
    if "paper_reference" in record:
        return _number(record["paper_reference"])
    try:
        return _number(Case.from_dict(record["case"]).paper_reference)
    except (MdkerasError, TypeError):
        return math.nan


def summarize(records: list[dict]) -> pd.DataFrame:
    """Successful records → one row per (case, scale) with mean, sd and n over seeds.

    Failed records are skipped here; `failures` lists them.
    """
    rows = [flatten(r) for r in records if r["status"] == "ok"]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    per_seed = pd.DataFrame(rows)
    out = []
    for (case, scale), group in per_seed.groupby(["case", "scale"], sort=False):
        group = group.sort_values("seed")
        first = group.iloc[0]
        row = {"case": case, **{axis: first[axis] for axis in AXES}, "scale": scale}
        row["seeds"] = ",".join(str(int(s)) for s in group["seed"])
        for m in METRICS:
            values = group[m].dropna()
            row[m] = values.mean() if len(values) else math.nan
            row[f"{m}_sd"] = values.std(ddof=1) if len(values) > 1 else math.nan
            row[f"{m}_n"] = len(values)
        ref = group["paper_reference"].dropna()
        row["paper_reference"] = ref.iloc[0] if len(ref) else math.nan
        row["delta_vs_paper"] = row["joint_accuracy"] - row["paper_reference"]
        row["epochs"] = group["epochs"].mean()
        row["train_seconds"] = group["train_seconds"].mean()
        row["device"] = "; ".join(sorted({str(d) for d in group["device"].dropna()}))
        row["samples"] = group["samples"].max()
        out.append(row)
    df = pd.DataFrame(out)
    order = [*AXES, "samples", "scale", "case"]  # paper-s10000 before paper-s100000
    return df.sort_values(order, kind="stable").reset_index(drop=True)[COLUMNS]


def failures(records: list[dict]) -> list[str]:
    """One line per failed record: `case--scale--seedK: error`."""
    return [
        f"{r['case_name']}--{r['scale']}--seed{r['seed']}: {r.get('error', '(no error message)')}"
        for r in records
        if r["status"] != "ok"
    ]


def summarize_dir(directory: str | os.PathLike) -> pd.DataFrame:
    """Load and summarise the records of `directory` without writing anything.

    The failed-run lines are in `df.attrs["failed"]`.
    """
    records = [record for _, record in load_records(directory)]
    df = summarize(records)
    df.attrs["failed"] = failures(records)
    return df


def to_markdown(df: pd.DataFrame) -> str:
    """A compact Markdown table (3 decimals) and a list of failed runs."""
    lines = []
    if len(df):
        table = pd.DataFrame(
            {
                "case": df["case"],
                "scale": df["scale"],
                "seeds": df["seeds"],
                "joint_accuracy": [
                    _mean_sd(m, sd, n)
                    for m, sd, n in zip(
                        df["joint_accuracy"],
                        df["joint_accuracy_sd"],
                        df["joint_accuracy_n"],
                        strict=True,
                    )
                ],
                **{m: df[m].map(_fmt) for m in MARKDOWN_METRICS},
                "paper": df["paper_reference"].map(_fmt),
                "vs paper": df["delta_vs_paper"].map(lambda v: _fmt(v, signed=True)),
                "epochs": df["epochs"].map(lambda v: _fmt(v, digits=1)),
                "train_s": df["train_seconds"].map(lambda v: _fmt(v, digits=1)),
            }
        )
        lines.append(
            tabulate(
                table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True
            )
        )
    else:
        lines.append("No successful runs.")
    failed = df.attrs.get("failed", [])
    if failed:
        lines += ["", f"Failed runs ({len(failed)}):", ""]
        lines += [f"- {line}" for line in failed]
    return "\n".join(lines) + "\n"


def _fmt(value, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if abs(value) >= 1e5:
        return f"{value:.2e}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean_sd(mean: float, sd: float, n: int) -> str:
    if math.isnan(mean):
        return ""
    if n <= 1:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {sd:.3f} (n={n})"


def report(directory: str | os.PathLike) -> pd.DataFrame:
    """Summarise `directory`, write `summary.csv` and `summary.md` there atomically, return it."""
    directory = Path(directory)
    df = summarize_dir(directory)
    atomic_write_text(directory / "summary.csv", df.to_csv(index=False))
    atomic_write_text(directory / "summary.md", to_markdown(df))
    return df


def load_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Read a `summary.csv` made by `report` (e.g. a CI reference)."""
    path = Path(path)
    if not path.is_file():
        raise MdkerasError(
            f"no summary file {path}: expected a summary.csv written by "
            "`python -m benchmarks report`."
        )
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MdkerasError(
            f"cannot read {path} as CSV ({_first_line(e)}): regenerate it with `report`."
        ) from None
    missing = [c for c in ("case", "scale", "joint_accuracy") if c not in df.columns]
    if missing:
        raise MdkerasError(
            f"{path} lacks column(s) {', '.join(map(repr, missing))}: expected a summary.csv "
            "written by `python -m benchmarks report`."
        )
    return df


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
