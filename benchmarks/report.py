"""Aggregate a directory of run records into one table: a row per (case, scale), seeds averaged.

`report(directory)` writes `summary.csv` (every column, full precision) and `summary.md`
(a compact, rounded table plus one line per failed run) and returns the DataFrame.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from benchmarks.records import load_records
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_write
from mdkeras.records import LEARNING_RULE

AXES = (
    "potential",
    "density",
    "window",
    "grid",
    "architecture",
    "encoding",
    "head",
    "sampler",
    "temperature",
)
METRICS = (
    "joint_accuracy",
    "majority",
    "cell_centre",
    "bayes_limit",
    "fraction_of_bayes",
    "uniform_bayes",
    "accuracy_x",
    "accuracy_y",
    "joint_within_one",
    "force_mae",
    "force_median_ae",
    "top_class_share",
)
COLUMNS = (
    ["case", *AXES, "scale", "seeds"]
    + [f"{m}{suffix}" for m in METRICS for suffix in ("", "_sd", "_n")]
    + ["paper_reference", "delta_vs_paper", "epochs", "train_seconds", "device"]
    + ["collapsed_seeds", "learned"]
)
MARKDOWN_METRICS = (
    "majority",
    "cell_centre",
    "bayes_limit",
    "fraction_of_bayes",
    "uniform_bayes",
    "force_mae",
    "force_median_ae",
)


def flatten(record: dict) -> dict:
    """One successful record (loaded by `mdkeras.records.load_record`, so upgraded) as a flat
    row of per-seed values (missing values are NaN)."""
    metrics = record.get("metrics") or {}
    baselines = record.get("baselines") or {}
    row = {"case": record["case_name"], "scale": record["scale"], "seed": record["seed"]}
    row.update({axis: record["case"].get(axis) for axis in AXES})
    for m in METRICS:
        value = metrics.get(m, baselines.get(m, record.get(m)))
        row[m] = _number(value)
    row["paper_reference"] = _number(record.get("paper_reference"))
    row["collapsed"] = metrics.get("collapsed")
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
        row["collapsed_seeds"], row["learned"] = _learned(list(group["collapsed"]))
        out.append(row)
    df = pd.DataFrame(out)
    axes = ["sampler", *(a for a in AXES if a != "sampler")]  # cases grouped by sampler
    order = [*axes, "samples", "scale", "case"]  # paper-s10000 before paper-s100000
    return df.sort_values(order, kind="stable").reset_index(drop=True)[COLUMNS]


def _learned(collapsed: list) -> tuple[float, object]:
    """`(seeds that did not learn, learned)` of one row: `learned` is False if any seed's model
    did not learn, True if every seed's learned, None if some are unknown (older records)."""
    known = [c for c in collapsed if c is not None and not pd.isna(c)]
    if any(known):
        return float(sum(bool(c) for c in known)), False
    if len(known) == len(collapsed):
        return 0.0, True
    return (0.0 if known else math.nan), None


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
                "learned": [
                    _learned_mark(learned, n, seeds)
                    for learned, n, seeds in zip(
                        df["learned"], df["collapsed_seeds"], df["seeds"], strict=True
                    )
                ],
            }
        )
        lines.append(
            tabulate(
                table, headers="keys", tablefmt="github", showindex=False, disable_numparse=True
            )
        )
        legend = f"learned: **NO** where the model of some seed did not learn ({LEARNING_RULE})."
        lines += ["", legend]
    else:
        lines.append("No successful runs.")
    failed = df.attrs.get("failed", [])
    if failed:
        lines += ["", f"Failed runs ({len(failed)}):", ""]
        lines += [f"- {line}" for line in failed]
    return "\n".join(lines) + "\n"


def _learned_mark(learned, collapsed_seeds, seeds: str) -> str:
    """`yes`, `**NO**` (with `k of n seeds` when not all), or blank (records too old to say)."""
    if learned is None or pd.isna(learned):
        return ""
    if bool(learned):
        return "yes"
    n = len(str(seeds).split(","))
    k = int(collapsed_seeds)
    return "**NO**" if k == n else f"**NO** ({k} of {n} seeds)"


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
    df = summarize_dir(directory)
    return write_summary(directory, df, to_markdown(df))


def write_summary(directory: str | os.PathLike, df: pd.DataFrame, markdown: str) -> pd.DataFrame:
    """Write `df` as `directory/summary.csv` and `markdown` as `directory/summary.md`, each
    atomically (run and simulation directories alike); return `df`."""
    directory = Path(directory)
    atomic_write(directory / "summary.csv", df.to_csv(index=False))
    atomic_write(directory / "summary.md", markdown)
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
    numbers = pd.to_numeric(df["joint_accuracy"], errors="coerce")
    bad = df["joint_accuracy"].notna() & numbers.isna()
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise MdkerasError(
            f"{path} row {i + 2} ({df['case'].iloc[i]}) has joint_accuracy="
            f"{df['joint_accuracy'].iloc[i]!r}: expected a number or an empty cell; fix or "
            "regenerate it with `report`."
        )
    df["joint_accuracy"] = numbers
    if "learned" in df.columns:
        df["learned"] = df["learned"].map(_parse_learned)
    return df


def _parse_learned(value):
    """`learned` as read back from CSV: True, False or None."""
    text = str(value).strip().lower()
    return {"true": True, "false": False}.get(text)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- README tables ---------------------------------------------------------------------------
#
# `python -m benchmarks report --readme README.md` rewrites every section of the README between
# `<!-- mdkeras:table NAME -->` and `<!-- /mdkeras:table -->` with the table NAME made from the
# committed records under `results/` beside it; a test fails when the README drifts from them.

README_SECTION = re.compile(
    r"(?P<open><!-- mdkeras:table (?P<name>[\w.-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- /mdkeras:table -->)",
    re.S,
)
PAPER_VARIANTS = (  # (column, case variant, scale) of the paper-scale table
    ("LeNet, paper's setting", "lenet-paper", "paper"),
    ("LeNet joint + D4", "lenet-paper-joint-d4", "paper"),
    ("AlexNet joint (D4 by its recipe)", "alexnet-paper-joint", "paper"),
    ("forcemap", "forcemap-paper", "paper"),
    ("forcemap, 250,000 samples", "forcemap-paper", "paper-s250000"),
    ("recovered f(r)", "recovered-paper", "paper"),
)
QUANTILE_VARIANTS = (  # (column, case variant) of the paper-scale quantile-encoding table
    ("LeNet", "lenet-quantile"),
    ("forcemap", "forcemap-quantile"),
    ("recovered f(r)", "recovered-quantile"),
)
SAMPLE_VARIANTS = (
    ("LeNet", "lenet-paper"),
    ("LeNet + D4", "lenet-paper-d4"),
    ("forcemap", "forcemap-paper"),
)


def _settings(df: pd.DataFrame, variant: str) -> list:
    """The settings (in registry order) with a row of `variant` at n = 28 in `df`."""
    from benchmarks.registry import list_cases

    have = {c.rsplit(f"-{variant}", 1)[0] for c in df["case"] if c.endswith(f"-{variant}")}
    return [c for c in dict.fromkeys(c.setting for c in list_cases()) if c in have]


def _row(df: pd.DataFrame, case: str, scale: str):
    rows = df[(df["case"] == case) & (df["scale"] == scale)]
    return rows.iloc[0] if len(rows) else None


def _accuracy_cell(row, fraction: bool = True) -> str:
    """`0.929 ± 0.004 (0.984)`: joint accuracy mean (± sd over seeds), fraction of Bayes."""
    if row is None:
        return ""
    text = f"{row['joint_accuracy']:.3f}"
    if row["joint_accuracy_n"] > 1:
        text += f" ± {row['joint_accuracy_sd']:.3f}"
    if fraction and not pd.isna(row["fraction_of_bayes"]):
        text += f" ({row['fraction_of_bayes']:.3f})"
    if _is_false(row["learned"]):
        text += " **did not learn**"
    return text


def _is_false(value) -> bool:
    return value is not None and not pd.isna(value) and not bool(value)


def _setting_label(first, with_window: bool = True) -> str:
    from mdkeras.potentials import label

    text = f"{label(first['potential'])} ρ = {first['density']:g}"
    return text + (f", W = {first['window']:g}" if with_window else "")


def _markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def paper_table(results: Path) -> str:
    """The paper-scale accuracy table: per n = 28 `paper`-encoding setting, the baselines (means
    over the LeNet seeds), LeNet against the paper's 71 %, LeNet joint + D4 and `forcemap`."""
    df = summarize_dir(results / "paper")
    rows = []
    for setting in _settings(df, "lenet-paper"):
        lenet = _row(df, f"{setting}-lenet-paper", "paper")
        if lenet is None or not setting.endswith("-n28"):
            continue
        cells = [_setting_label(lenet)]
        cells += [_fmt(lenet[m]) for m in ("majority", "cell_centre", "bayes_limit")]
        cells.append(_accuracy_cell(lenet, fraction=False))
        cells.append(_fmt(lenet["delta_vs_paper"], signed=True).replace("-", "−"))
        for _, variant, scale in PAPER_VARIANTS[1:]:
            cells.append(_accuracy_cell(_row(df, f"{setting}-{variant}", scale)) or "—")
        rows.append(cells)
    headers = ["setting (n = 28, paper encoding)", "majority", "cell centre", "Bayes limit"]
    headers += [PAPER_VARIANTS[0][0], "vs 71 %", *(c for c, _, _ in PAPER_VARIANTS[1:])]
    return _markdown(headers, rows)


def quantile_table(results: Path) -> str:
    """The paper-scale `quantile`-encoding table: per n = 28 setting, the baselines and each
    model of `QUANTILE_VARIANTS` (seed 0 or the seeds' mean) with its fraction of Bayes."""
    df = summarize_dir(results / "paper")
    rows = []
    for setting in _settings(df, "lenet-quantile"):
        found = [_row(df, f"{setting}-{variant}", "paper") for _, variant in QUANTILE_VARIANTS]
        first = next((r for r in found if r is not None), None)
        if first is None or not setting.endswith("-n28"):
            continue
        cells = [_setting_label(first)]
        cells += [_fmt(first[m]) for m in ("majority", "cell_centre", "bayes_limit")]
        cells += [_accuracy_cell(r) for r in found]
        rows.append(cells)
    headers = ["setting (n = 28, quantile encoding)", "majority", "cell centre", "Bayes limit"]
    return _markdown(headers + [c for c, _ in QUANTILE_VARIANTS], rows)


def alexnet_table(results: Path) -> str:
    """AlexNet against LeNet at `ci` scale on the n = 28 `paper`-encoding settings
    (`results/alexnet`): each one's joint accuracy (mean ± sd over its seeds, the seeds
    listed), AlexNet minus LeNet on seed 0, and, from `results/alexnet-recipes`, AlexNet under
    its earlier recipes: D4 augmentation at a constant rate (`constant-rate/`), and batch
    normalisation only."""
    df = summarize_dir(results / "alexnet")
    earlier = [summarize_dir(results / "alexnet-recipes" / "constant-rate")]
    earlier.append(summarize_dir(results / "alexnet-recipes"))
    rows = []
    for setting in _settings(df, "lenet-paper"):
        lenet = _row(df, f"{setting}-lenet-paper", "ci")
        alex = _row(df, f"{setting}-alexnet-paper", "ci")
        if lenet is None or not setting.endswith("-n28"):
            continue
        cells = [_setting_label(lenet), _fmt(lenet["bayes_limit"])]
        cells += [_accuracy_cell(lenet, fraction=False), f"{lenet['seeds']}"]
        old_cells = []
        for before in earlier:
            old = _row(before, f"{setting}-alexnet-paper", "ci")
            if old is None:
                old_cells.append("not run")
            else:
                old_cells.append(f"{_accuracy_cell(old, fraction=False)} ({old['seeds']})")
        if alex is None:
            rows.append(cells + ["not run", "", "", *old_cells])
            continue
        first = [
            r
            for _, r in load_records(results / "alexnet")
            if r["status"] == "ok" and r["case_name"] == f"{setting}-alexnet-paper"
            and r["scale"] == "ci" and r["seed"] == 0
        ]  # fmt: skip
        delta = first[0]["metrics"]["joint_accuracy"] - lenet["joint_accuracy"] if first else None
        cells += [_accuracy_cell(alex, fraction=False), f"{alex['seeds']}"]
        cells.append("" if delta is None else f"{delta:+.4f}".replace("-", "−"))
        rows.append(cells + old_cells)
    headers = ["setting (n = 28, paper encoding, ci)", "Bayes limit", "LeNet", "seeds",
               "AlexNet", "seeds", "AlexNet − LeNet (seed 0)",
               "AlexNet, D4 at a constant rate (seeds)",
               "AlexNet without augmentation (seeds)"]  # fmt: skip
    return _markdown(headers, rows)


def recovered_table(results: Path) -> str:
    """The recovered model on the n = 28 settings at paper scale, seed 0 (`results/paper`): its
    joint accuracy, the true-force Monte Carlo on the same test samples and draws, the fraction
    of it with its standard error, the paired difference from the cell-centre oracle, and the
    fit's largest relative parameter error."""
    from mdkeras.potentials import label

    found = {}
    for _, r in load_records(results / "paper"):
        c = r.get("case", {})
        if r["status"] == "ok" and c.get("architecture") == "recovered" and r["scale"] == "paper":
            if c["grid"] == 28 and r["seed"] == 0 and c.get("sampler", "uniform") == "uniform":
                found[(c["potential"], c["density"], c["encoding"])] = r
    rows = []
    order = {"lj": 0, "coulomb": 1}
    for (pot, rho, enc), r in sorted(found.items(), key=lambda kv: (order[kv[0][0]], *kv[0][1:])):
        sec = r["recovered"]
        mc, cc = sec["true_force_monte_carlo"], sec["cell_centre"]
        params = sec["fit"]["parameters"]
        worst = max(params, key=lambda k: abs(params[k]["relative_error"]))
        rows.append(
            [
                f"{label(pot)} ρ = {rho:g}",
                enc,
                f"{r['metrics']['joint_accuracy']:.4f}",
                f"{mc['joint_accuracy']:.4f}",
                f"{mc['fraction']:.4f} ± {mc['se'] / mc['joint_accuracy']:.4f}",
                f"{cc['difference']:+.4f} ± {cc['se']:.4f}".replace("-", "−"),
                f"{worst} {100 * params[worst]['relative_error']:+.2f} %".replace("-", "−"),
            ]
        )
    headers = ["setting (n = 28)", "encoding", "recovered", "true-force Monte Carlo",
               "fraction of it", "minus cell centre", "largest parameter error"]  # fmt: skip
    return _markdown(headers, rows)


def forcemap_bayes_table(results: Path) -> str:
    """`forcemap`'s fraction of the Bayes limit per seed on the n = 28 `paper`-encoding
    settings, at the `paper` scale's 50,000 samples and at 250,000."""
    per_seed = {}
    for _, r in load_records(results / "paper"):
        if r["status"] == "ok" and r["case_name"].endswith("-n28-forcemap-paper"):
            per_seed.setdefault((r["case_name"], r["scale"]), []).append(r)
    df = summarize_dir(results / "paper")
    scales = (("50,000 samples", "paper"), ("250,000 samples", "paper-s250000"))
    rows = []
    for setting in _settings(df, "forcemap-paper"):
        case = f"{setting}-forcemap-paper"
        first = _row(df, case, "paper")
        if first is None or not setting.endswith("-n28"):
            continue
        cells = [_setting_label(first, with_window=False)]
        for _, scale in scales:
            recs = sorted(per_seed.get((case, scale), []), key=lambda r: r["seed"])
            cells.append(", ".join(f"{r['fraction_of_bayes']:.3f}" for r in recs))
        rows.append(cells)
    return _markdown(["setting", *(c for c, _ in scales)], rows)


def samples_table(results: Path) -> str:
    """Joint accuracy (fraction of Bayes) against samples on `lj-rho0.50-w8-n28`, per variant,
    with the Bayes limit ± its standard error (`results/samples`)."""
    from benchmarks.plots import sample_curve_table

    loaded = [r for _, r in load_records(results / "samples") if r["status"] == "ok"]
    settings = list(dict.fromkeys(r["case_name"].rsplit("-", 2)[0] for r in loaded))
    table = sample_curve_table(loaded, settings[0])
    rows = []
    for samples, group in table.groupby("samples", sort=True):
        by_variant = {v: g.iloc[0] for v, g in group.groupby("variant")}
        cells = [f"{int(samples):,}"]
        for _, variant in SAMPLE_VARIANTS:
            r = by_variant.get(variant)
            cells.append(
                "" if r is None else f"{r['joint_accuracy']:.3f} ({r['fraction_of_bayes']:.3f})"
            )
        cells.append(f"{group['bayes_limit'].mean():.3f} ± {group['bayes_limit_se'].mean():.3f}")
        rows.append(cells)
    headers = ["samples (train + test)", *(c for c, _ in SAMPLE_VARIANTS), "Bayes limit"]
    return _markdown(headers, rows)


SAMPLER_MODELS = (("LeNet", "lenet"), ("forcemap", "forcemap"))


def _sampler_variants(encoding: str) -> tuple[tuple[str, str], ...]:
    """`(column name, case-name suffix)` of each model in `SAMPLER_MODELS` at `encoding`."""
    return tuple((name, f"{arch}-{encoding}") for name, arch in SAMPLER_MODELS)


SAMPLER_BASELINES = (("majority", "majority"), ("cell centre", "cell_centre"))
NO_BAYES = "¹"
SAMPLER_FOOTNOTE = (
    "Accuracies are means over the recorded seeds, ± their sd where there are several. "
    f"{NO_BAYES} `md` data have no Bayes limit: given the counts, neighbours are no longer "
    "independent and uniform in their cells, so the uniform-gas Monte Carlo bounds nothing there "
    "and the records carry `bayes_limit: null`. The `md` column shows `uniform_bayes` instead, "
    "that Monte Carlo's classifier applied to the `md` grids: a baseline, which a model may beat "
    "by learning the correlations."
)


def sampler_rows(results: Path, scale: str = "paper", encoding: str = "paper") -> list[dict]:
    """Per `md` physics setting with an `encoding` LeNet or `forcemap` row at `scale` (in
    registry order): its `md` and `uniform` summary rows (`results/md`, `results/paper`) of each
    model (None where not recorded), matched on potential, density, window and grid, and the
    rows that give each sampler's baselines (the LeNet one, else `forcemap`'s)."""
    from benchmarks.registry import list_cases

    variants = _sampler_variants(encoding)
    md = summarize_dir(results / "md")
    uniform = summarize_dir(results / "paper")
    md = md[(md["sampler"] == "md") & (md["scale"] == scale)]
    uniform = uniform[(uniform["sampler"] == "uniform") & (uniform["scale"] == scale)]
    order = list(dict.fromkeys(c.setting for c in list_cases() if c.sampler == "md"))
    found = {}
    for _, row in md.iterrows():
        for _, variant in variants:
            if row["case"].endswith(f"-{variant}"):
                found.setdefault(row["case"][: -len(variant) - 1], {})[variant] = row
    rank = {s: i for i, s in enumerate(order)}
    out = []
    for setting in sorted(found, key=lambda s: (rank.get(s, len(rank)), s)):
        by_variant = found[setting]
        first = next(iter(by_variant.values()))
        same = uniform[
            (uniform["potential"] == first["potential"])
            & (uniform["density"] == first["density"])
            & (uniform["window"] == first["window"])
            & (uniform["grid"] == first["grid"])
        ]
        entry = {"setting": setting, "first": first, "md": {}, "uniform": {}}
        for _, variant in variants:
            entry["md"][variant] = by_variant.get(variant)
            rows = same[same["case"].str.endswith(f"-n{first['grid']}-{variant}")]
            entry["uniform"][variant] = rows.iloc[0] if len(rows) else None
        for sampler in ("md", "uniform"):
            rows = [entry[sampler][v] for _, v in variants]
            entry[f"{sampler}_baselines"] = next((r for r in rows if r is not None), None)
        out.append(entry)
    return out


def sampler_table(results: Path, encoding: str = "paper") -> str:
    """The `md` sampler beside the uniform one: per physics setting (`paper` scale, `encoding`),
    majority, cell centre and Bayes limit, and the joint accuracy of LeNet and `forcemap`, each
    on `md` and on `uniform` data; the `md` Bayes cell is `uniform_bayes`, footnoted."""
    variants = _sampler_variants(encoding)
    entries = sampler_rows(results, encoding=encoding)
    shared = {}  # axes with one value over the rows go in the header, the others in each row
    for axis, symbol in (("grid", "n"), ("temperature", "T")):
        values = {e["first"][axis] for e in entries}
        shared[symbol] = next(iter(values)) if len(values) == 1 else None
    rows = []
    for e in entries:
        label = _setting_label(e["first"])
        for axis, symbol in (("grid", "n"), ("temperature", "T")):
            if shared[symbol] is None:
                label += f", {symbol} = {e['first'][axis]:g}"
        cells = [label]
        md_base, uni_base = e["md_baselines"], e["uniform_baselines"]
        for _, metric in SAMPLER_BASELINES:
            cells += [_baseline(md_base, metric), _baseline(uni_base, metric)]
        uniform_bayes = _baseline(md_base, "uniform_bayes")
        cells.append(uniform_bayes + NO_BAYES if uniform_bayes else "")
        cells.append(_baseline(uni_base, "bayes_limit"))
        for _, variant in variants:
            cells += [
                _accuracy_cell(e["md"][variant], fraction=False),
                _accuracy_cell(e["uniform"][variant], fraction=False),
            ]
        rows.append(cells)
    common = [f"{k} = {v:g}" for k, v in shared.items() if v is not None]
    what = f"setting ({', '.join([*common[:1], f'{encoding} encoding', *common[1:]])})"
    headers = [what]
    for name, _ in SAMPLER_BASELINES:
        headers += [f"{name}, md", f"{name}, uniform"]
    headers += [f"Bayes limit, md{NO_BAYES}", "Bayes limit, uniform"]
    for name, _ in variants:
        headers += [f"{name}, md", f"{name}, uniform"]
    return _markdown(headers, rows) + "\n" + SAMPLER_FOOTNOTE + "\n"


def _baseline(row, metric: str) -> str:
    return "" if row is None else _fmt(row[metric])


def simulations_table(results: Path) -> str:
    """MD with the recovered potentials against the truth (`results/md/simulations`)."""
    from benchmarks import simulation_report

    return simulation_report.to_markdown(
        simulation_report.summarize_dir(Path(results) / "md" / "simulations")
    )


def _with_error(value: float, error: float) -> str:
    """`value ± error`, the value to the error's second significant digit."""
    digits = max(0, 1 - math.floor(math.log10(error))) if error and error > 0 else 4
    return f"{value:.{digits}f} ± {error:.2g}"


def equilibrium_table(results: Path) -> str:
    """The recovery on `md` data (`results/recovery/*-equilibrium--seed*.json`): per setting and
    parameter, the uniform-assumption fit, the equilibrium method's estimate ± error, the truth
    and the relative error, with the MD iterations it took and their seconds each."""
    from mdkeras.potentials import label
    from mdkeras.records import load_record

    rows = []
    for path in sorted((Path(results) / "recovery").glob("*-equilibrium--seed*.json")):
        r = load_record(path, kind="recovery")
        eq, phys = r["equilibrium"], r["physics"]
        setting = f"{label(phys['potential'])} ρ = {phys['density']:g}, T = {phys['temperature']:g}"
        runs = f"{len(eq['iterations'])} × {eq['md_seconds_per_iteration']:.0f} s"
        plain = {**r["uniform_fit"]["parameters"], **r["uniform_fit"]["derived"]}
        for name, est in {**r["parameters"], **r["derived"]}.items():
            before = plain.get(name, {}).get("value")
            rows.append(
                [
                    setting,
                    name.replace("_", " "),
                    "—" if before is None else f"{before:.4g}",
                    _with_error(est["value"], est["error"]),
                    f"{est['truth']:.4g}",
                    f"{100 * est['relative_error']:+.2f} %",
                    runs,
                ]
            )
            setting, runs = "", ""
    headers = ["md data (paper scale, seed 0)", "parameter", "uniform fit", "equilibrium fit",
               "truth", "relative error", "MD iterations"]  # fmt: skip
    return _markdown(headers, rows)


README_TABLES = {
    "recovery-equilibrium": equilibrium_table,
    "paper": paper_table,
    "quantile": quantile_table,
    "alexnet": alexnet_table,
    "recovered": recovered_table,
    "simulations": simulations_table,
    "forcemap-bayes": forcemap_bayes_table,
    "samples": samples_table,
    "samplers": sampler_table,
    "samplers-quantile": lambda results: sampler_table(results, "quantile"),
}


def render_readme(text: str, results: str | os.PathLike, *, source: str = "README") -> str:
    """`text` with every marked table section regenerated from the records under `results`."""
    results = Path(results)
    names = [m["name"] for m in README_SECTION.finditer(text)]
    unknown = [n for n in names if n not in README_TABLES]
    if unknown:
        raise MdkerasError(
            f"{source} marks table(s) {', '.join(map(repr, unknown))}: expected one of "
            f"{', '.join(map(repr, README_TABLES))}."
        )
    if text.count("<!-- mdkeras:table ") != len(names):
        raise MdkerasError(
            f"{source} has a `<!-- mdkeras:table NAME -->` without its `<!-- /mdkeras:table -->`"
            ": close every generated section."
        )
    tables = {n: README_TABLES[n](results) for n in dict.fromkeys(names)}
    return README_SECTION.sub(lambda m: m["open"] + tables[m["name"]] + m["close"], text)


def update_readme(path: str | os.PathLike, *, check: bool = False) -> bool:
    """Regenerate the marked tables of the README at `path` from `results/` beside it; return
    whether it changed (with `check`, write nothing)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MdkerasError(f"cannot read --readme {path} ({e.strerror or e}).") from None
    if "<!-- mdkeras:table " not in text:
        raise MdkerasError(
            f"--readme {path} has no `<!-- mdkeras:table NAME -->` section: expected the "
            "project's README.md."
        )
    new = render_readme(text, path.parent / "results", source=str(path))
    if new != text and not check:
        atomic_write(path, new)
    return new != text
