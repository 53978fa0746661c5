"""`python -m benchmarks plot`: figures from a directory of run records.

- `accuracy.png` — joint accuracy per case (mean ± sd over seeds) beside the paper's 71 % and the
  baselines (majority, cell centre, Bayes limit ± its standard error), one scale.
- `learning-curves-<case>.png` — training accuracy per output and validation joint accuracy per
  epoch, every seed, the best (restored) epoch marked.
- `confusion-<case>.png` — test-split confusion matrices of the `F_x` and `F_y` classes.
- `descriptor.png` — particles around a target with the window and its grid, beside the count
  matrix they give (in the manner of the paper's Fig. 1); made from a seeded configuration.
- `class-histograms.png` — training class histograms under the paper encoding, per setting.
- For a directory of `md` records, `accuracy.png` is instead joint accuracy against density on
  `md` beside `uniform` data (`--uniform DIR`, default `paper` beside DIR), with the baselines,
  and `class-histograms.png` the two samplers' paper-encoding histograms (and quantile edges).
- `samples-<setting>.png` — joint accuracy and fraction of the Bayes limit against the number of
  samples (`run --samples N`), one line per model variant of one setting (e.g.
  `lj-rho0.50-w8-n28`), from every scale of one family (`paper`, `paper-s10000`, ...).

Each `plot_*` function takes data and an output path and returns the path; PNGs are written
atomically. Matplotlib (the `plot` extra) is imported only when a figure is drawn, with the Agg
canvas and no pyplot state. Exit codes: 0 success; 2 bad input or missing data, one `error:` line.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.cmdline import Parser, UsageError, guarded
from benchmarks.records import load_records
from benchmarks.registry import case_glob
from benchmarks.report import summarize
from mdkeras.config import PAPER_REFERENCE, SCALES, Case
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_writer
from mdkeras.potentials import label as potential_label

PROG = "python -m benchmarks plot"
DEFAULT_DIR = Path("results") / "paper"
DEFAULT_OUT = Path("results") / "runs" / "plots"  # never a committed folder unless asked
DEFAULT_CASE = "lj-rho0.50-w8-n28-lenet-paper"
PLOTS = ("accuracy", "curves", "confusion", "descriptor", "histograms", "samples")
CENTRAL = (4, 5)  # the two central classes of the paper encoding with K = 10
DPI = 120


class MissingDataError(MdkerasError):
    """The records lack what one figure needs (e.g. made before a field existed)."""


# --- matplotlib, lazily -----------------------------------------------------------------------


def _matplotlib():
    """`(Figure, FigureCanvasAgg, colors)`, or one error naming the extra to install."""
    try:
        import matplotlib
        from matplotlib import colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise MdkerasError(
            f'matplotlib is not installed ({e}): the plots need it; pip install "mdkeras[plot]"'
        ) from None
    del matplotlib
    return Figure, FigureCanvasAgg, colors


def _figure(figsize: tuple[float, float]):
    """A figure on the Agg canvas (no pyplot, no global backend switch)."""
    figure_cls, canvas_cls, _ = _matplotlib()
    fig = figure_cls(figsize=figsize, layout="constrained")
    canvas_cls(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Render `fig` as PNG to `path` atomically (`mdkeras.files.atomic_writer`); return it."""
    path = Path(path)
    with atomic_writer(path, fix="choose a writable --out with free space") as f:
        fig.savefig(f, format="png", dpi=DPI)
    return path


# --- data ----------------------------------------------------------------------------------------


def scale_size(record: dict) -> int:
    """Samples of a record's scale (`mdkeras.records.upgrade` fills it for old records; 0 where
    nothing says)."""
    return record.get("samples") or 0


def choose_scale(records: Sequence[dict], scale: str | None = None) -> str:
    """`scale` if some record has it, else the largest named scale present (`paper` before
    `ci`), else the largest present (by samples): `--samples` variants never take the default."""
    present = {r["scale"]: scale_size(r) for r in records}
    if not present:
        raise MissingDataError("no successful records: expected at least one with status 'ok'.")
    if scale is None:
        known = {name: i for i, name in enumerate(SCALES)}
        return max(present, key=lambda s: (s in known, present[s], known.get(s, -1), s))
    if scale not in present:
        raise MdkerasError(
            f"--scale {scale!r} has no successful records: expected one of "
            f"{', '.join(map(repr, sorted(present)))}."
        )
    return scale


def select_records(
    records: Sequence[dict], scale: str, patterns: Sequence[str] | None = None
) -> list[dict]:
    """Successful records of `scale` whose case matches any pattern, under the registry's one
    case-selection rule (`registry.case_glob`); a pattern matching no record is an error."""
    out = [r for r in records if r.get("status") == "ok" and r["scale"] == scale]
    if patterns:
        globs = {p: case_glob(p) for p in patterns}
        for p, g in globs.items():
            if not any(fnmatch.fnmatchcase(r["case_name"], g) for r in out):
                raise MdkerasError(
                    f"-k {p} matches no record at scale {scale!r}: "
                    "expected a glob over case names, e.g. -k 'lj-*-n28-*'."
                )
        out = [
            r for r in out if any(fnmatch.fnmatchcase(r["case_name"], g) for g in globs.values())
        ]
    return out


def choose_case(records: Sequence[dict], case: str | None = None) -> str:
    """`case` if recorded, else `DEFAULT_CASE` if recorded, else the first recorded case."""
    names = list(dict.fromkeys(r["case_name"] for r in records))
    if case is not None:
        if case not in names:
            raise MdkerasError(
                f"--case {case!r} has no record here: expected one of "
                f"{', '.join(map(repr, names))}."
            )
        return case
    return DEFAULT_CASE if DEFAULT_CASE in names else names[0]


def case_records(records: Sequence[dict], case: str) -> list[dict]:
    """The records of one case, by seed."""
    return sorted((r for r in records if r["case_name"] == case), key=lambda r: r["seed"])


def accuracy_table(records: Sequence[dict]) -> pd.DataFrame:
    """`report.summarize` of `records` plus `bayes_limit_se`: the standard error of the seeds'
    mean Bayes limit, `sqrt(sum se_i^2) / n`."""
    df = summarize(list(records))
    se = {}
    for r in records:
        value = (r.get("baselines") or {}).get("bayes_limit_se")
        if isinstance(value, (int, float)) and math.isfinite(value):
            se.setdefault((r["case_name"], r["scale"]), []).append(float(value))
    df["bayes_limit_se"] = [
        math.sqrt(sum(v * v for v in s)) / len(s) if (s := se.get((c, k))) else math.nan
        for c, k in zip(df["case"], df["scale"], strict=True)
    ]
    return df


def paper_histograms(records: Sequence[dict], *, progress=None) -> dict[str, tuple[list, list]]:
    """Training class histograms `(x, y)` under the paper encoding (K = 10), one per physics
    setting (potential, density, window, grid) in that order, labelled like `LJ ρ=0.50 W=8 n=28`,
    from the lowest-seed paper-encoded record of the setting. A setting with only other
    encodings is left out (`progress` says so); none at all raises `MissingDataError`."""
    return _per_setting(records, "paper", _histogram, "a class histogram", progress)


def _histogram(record: dict):
    h = record.get("class_histogram")
    return (list(h["x"]), list(h["y"])) if isinstance(h, dict) and {"x", "y"} <= set(h) else None


def _quantile_edges(record: dict):
    edges = (record.get("encoder") or {}).get("edges")
    if not isinstance(edges, list) or not edges:
        return None
    return [float(e[0]) for e in edges], [float(e[1]) for e in edges]


def _per_setting(records, encoding: str, take, what: str, progress) -> dict:
    """`take(record)` of the lowest-seed `encoding` (K = 10) record that has it, per physics
    setting (potential, density, window, grid), in that order, by `_setting_label`."""
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(records, key=lambda r: r["seed"]):
        c = r["case"]
        groups.setdefault((c["potential"], c["density"], c["window"], c["grid"]), []).append(r)
    out, left_out = {}, []
    for key, group in sorted(groups.items()):
        label = _setting_label(*key)
        found = [
            value
            for r in group
            if r["case"].get("encoding") == encoding
            and r["case"].get("classes", 10) == 10
            and (value := take(r)) is not None
        ]
        if found:
            out[label] = found[0]
        else:
            left_out.append(label)
    if not out:
        field = "class_histogram" if take is _histogram else "encoder.edges"
        raise MissingDataError(
            f"no {encoding}-encoded record with a {field}: expected records of "
            f"`{encoding}`-encoding cases written by `python -m benchmarks run`."
        )
    for label in left_out if progress else ():
        progress(f"{label}: no {encoding}-encoded record with {what}; left out")
    return out


def uniform_counterparts(
    directory: str | os.PathLike,
    md_records: Sequence[dict],
    *,
    progress=None,
    required: bool = False,
) -> list[dict]:
    """The successful `uniform`-sampler records of `directory` at the scale of `md_records` whose
    physics setting (potential, density, window, grid) is one of theirs; `[]` (and a note) when
    the directory has no records, unless `required`."""
    try:
        loaded = [r for _, r in load_records(directory) if r.get("status") == "ok"]
    except MdkerasError as e:
        if required:
            raise
        if progress:
            progress(f"no uniform-sampler records to compare with ({' '.join(str(e).split())})")
        return []
    scales = {r["scale"] for r in md_records}
    settings = {_physics(r) for r in md_records}
    return [
        r
        for r in loaded
        if r["case"].get("sampler", "uniform") == "uniform"
        and r["scale"] in scales
        and _physics(r) in settings
    ]


def _physics(record: dict) -> tuple:
    c = record["case"]
    return c["potential"], c["density"], c["window"], c["grid"]


def is_md(records: Sequence[dict]) -> bool:
    """Whether `records` are all of the `md` sampler (and there is at least one)."""
    return bool(records) and all(r["case"].get("sampler") == "md" for r in records)


def sampler_histograms(
    md_records: Sequence[dict], uniform_records: Sequence[dict], *, progress=None
) -> dict[str, dict[str, dict]]:
    """What each encoding makes of the two samplers' forces, per physics setting of `md_records`:
    `{"paper": {label: {"md": (x, y), "uniform": (x, y)}}, "quantile": {label: {...}}}`, where a
    paper entry is a training class histogram and a quantile entry the encoder's class edges
    `(x, y)` (its training histogram is flat by construction, so the edges are what differs).
    A sampler without the record is absent; no paper-encoded `md` histogram raises
    `MissingDataError`; `quantile` is empty without quantile-encoded `md` records."""
    out = {"paper": {}, "quantile": {}}
    for encoding, take, what in (
        ("paper", _histogram, "a class histogram"),
        ("quantile", _quantile_edges, "quantile edges"),
    ):
        try:
            md = _per_setting(md_records, encoding, take, what, progress)
        except MissingDataError:
            if encoding == "paper":
                raise
            continue
        try:
            uniform = _per_setting(uniform_records, encoding, take, what, None)
        except MissingDataError:
            uniform = {}
        out[encoding] = {
            label: {"md": value, **({"uniform": uniform[label]} if label in uniform else {})}
            for label, value in md.items()
        }
    return out


def sampler_accuracy_table(
    md_records: Sequence[dict], uniform_records: Sequence[dict]
) -> pd.DataFrame:
    """One row per (sampler, encoding, architecture, physics setting) of the plain variants
    (separate heads, K = 10, no augmentation) of the encodings the `md` records have: joint
    accuracy (mean, sd, seeds), majority, cell centre and `bayes` (the Bayes limit on `uniform`
    data; on `md`, which has none, the uniform-gas classifier `uniform_bayes`)."""
    frames = []
    encodings = {r["case"].get("encoding") for r in md_records}
    for sampler, recs in (("md", md_records), ("uniform", uniform_records)):
        plain = [
            r
            for r in recs
            if r["case"].get("head", "separate") == "separate"
            and not r["case"].get("augment")
            and r["case"].get("classes", 10) == 10
            and r["case"].get("encoding") in encodings
        ]
        df = summarize(plain)
        if not len(df):
            continue
        df = df.assign(sampler=sampler)
        df["bayes"] = df["uniform_bayes"] if sampler == "md" else df["bayes_limit"]
        frames.append(df)
    if not frames or frames[0]["sampler"].iloc[0] != "md":
        raise MissingDataError("no md records to plot: expected records of `md` cases.")
    columns = ["sampler", "encoding", "architecture", "potential", "density", "window", "grid"]
    metrics = ["joint_accuracy", "joint_accuracy_sd", "joint_accuracy_n", "majority"]
    table = pd.concat(frames, ignore_index=True)[[*columns, *metrics, "cell_centre", "bayes"]]
    return table.sort_values(columns, kind="stable").reset_index(drop=True)


def _setting_label(potential: str, density: float, window: float, grid: int) -> str:
    name = potential_label(potential)
    return f"{name} ρ={density:.2f} W={window:g} n={grid}"


# --- figures -----------------------------------------------------------------------------------


def plot_accuracy(table: pd.DataFrame, out: str | os.PathLike, *, title: str = "") -> Path:
    """Horizontal bars: joint accuracy mean ± sd per case, with majority, cell-centre and Bayes
    limit (± se) markers and the paper's 71 % line. `table` is `accuracy_table`'s."""
    if not len(table):
        raise MissingDataError("no cases to plot: expected at least one successful record.")
    n = len(table)
    fig = _figure((10.5, 1.7 + 0.45 * n))
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    sd = table["joint_accuracy_sd"].to_numpy(dtype=float)  # NaN (one seed): no error bar
    ax.barh(
        y,
        table["joint_accuracy"],
        height=0.7,
        color="tab:blue",
        alpha=0.7,
        label="model: joint accuracy, mean over seeds",
    )
    ax.errorbar(
        table["joint_accuracy"],
        y,
        xerr=sd,
        fmt="none",
        ecolor="navy",
        capsize=4,
        lw=1.2,
        label="± sd over seeds",
    )
    ax.scatter(
        table["majority"], y, marker="v", s=40, color="0.4", zorder=3, label="majority (chance)"
    )
    ax.scatter(
        table["cell_centre"],
        y + 0.17,
        marker="D",
        s=28,
        color="tab:green",
        zorder=3,
        label="cell centre (physics oracle)",
    )
    ax.errorbar(
        table["bayes_limit"],
        y - 0.17,
        xerr=table["bayes_limit_se"],
        fmt="s",
        ms=4.5,
        color="black",
        capsize=3,
        zorder=4,
        label="Bayes limit ± se (best possible)",
    )
    ax.axvline(
        PAPER_REFERENCE,
        color="tab:red",
        ls="--",
        lw=1.5,
        label=f"paper's best ({PAPER_REFERENCE:.0%})",
    )
    for yi, (m, s, k) in zip(
        y,
        table[["joint_accuracy", "joint_accuracy_sd", "joint_accuracy_n"]].to_numpy(),
        strict=True,
    ):
        seeds = f"{int(k)} seed" + ("s" if k != 1 else "")
        text = f"{m:.3f}" + (f" ± {s:.3f}" if k > 1 else "") + f" ({seeds})"
        ax.text(1.01, yi, text, transform=ax.get_yaxis_transform(), va="center", fontsize=8.5)
    ax.set_yticks(y, table["case"], fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("joint accuracy on the test split (both force classes right)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "Joint accuracy per case", loc="left")
    fig.legend(loc="outside lower center", ncols=3, fontsize=8.5, frameon=False)
    return save_figure(fig, out)


def _train_accuracy_keys(history: Sequence[dict]) -> list[str]:
    keys = [k for k in history[0] if k.endswith("accuracy") and not k.startswith("val")]
    return sorted(keys)


def _output_label(key: str) -> str:
    head = key[: -len("accuracy")].rstrip("_")
    return {"fx": "train $F_x$ class", "fy": "train $F_y$ class"}.get(head, "train joint class")


def check_history(records: Sequence[dict]) -> None:
    """Raise `MissingDataError` unless every record has a per-epoch history."""
    if not records:
        raise MissingDataError("no records for the learning curves.")
    missing = [
        r["seed"]
        for r in records
        if not r.get("history") or any("val_joint_accuracy" not in h for h in r["history"])
    ]
    if missing:
        raise MissingDataError(
            f"{records[0]['case_name']} seed(s) {missing} have no per-epoch history: "
            "expected records written by `python -m benchmarks run`."
        )


def plot_learning_curves(records: Sequence[dict], out: str | os.PathLike) -> Path:
    """Per epoch, every seed: training accuracy per output (thin) and validation joint accuracy
    (thick), a star on the best epoch (the weights kept), the paper's 71 % for scale."""
    check_history(records)
    fig = _figure((8.0, 4.8))
    ax = fig.add_subplot()
    styles = ("--", ":", "-.")
    for i, r in enumerate(records):
        color = f"C{i % 10}"
        hist = r["history"]
        epochs = [h["epoch"] for h in hist]
        for j, key in enumerate(_train_accuracy_keys(hist)):
            ax.plot(
                epochs,
                [h[key] for h in hist],
                ls=styles[j % 3],
                lw=1.2,
                color=color,
                label=f"seed {r['seed']}: {_output_label(key)}",
            )
        val = [h["val_joint_accuracy"] for h in hist]
        ax.plot(
            epochs,
            val,
            "-o",
            lw=2.2,
            ms=3.5,
            color=color,
            label=f"seed {r['seed']}: validation joint",
        )
        best = r.get("best_epoch") or epochs[int(np.argmax(val))]
        ax.plot([best], [val[epochs.index(best)]], "*", ms=16, color=color, mec="black", zorder=5)
    ax.axhline(PAPER_REFERENCE, color="tab:red", ls="--", lw=1, label="paper's best (71 %)")
    ax.plot([], [], "*", ms=12, color="0.6", mec="black", label="best epoch (weights kept)")
    last = max(h["epoch"] for r in records for h in r["history"])
    ax.set_xlim(0.6, last + 0.4)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    scale = records[0]["scale"]
    ax.set_title(
        f"{records[0]['case_name']} ({scale} scale): learning curves", loc="left", fontsize=11
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return save_figure(fig, out)


def check_confusion(record: dict) -> None:
    """Raise `MissingDataError` unless the record has `confusion` {"x", "y"}."""
    conf = record.get("confusion")
    if not isinstance(conf, dict) or not {"x", "y"} <= set(conf):
        raise MissingDataError(
            f"{record['case_name']} seed {record['seed']} has no confusion matrices (records "
            "made before they were recorded): re-run the case to get them."
        )


def plot_confusion(record: dict, out: str | os.PathLike) -> Path:
    """The test-split confusion matrices (rows true, columns predicted) of the `F_x` and `F_y`
    classes, log colour scale, non-zero counts written in the cells."""
    check_confusion(record)
    conf = record["confusion"]
    _, _, colors = _matplotlib()
    mats = [np.asarray(conf[a], dtype=np.int64) for a in ("x", "y")]
    vmax = max(1, max(int(m.max()) for m in mats))
    norm = colors.LogNorm(vmin=1, vmax=vmax)
    fig = _figure((12.0, 6.2))
    axes = fig.subplots(1, 2)
    metrics = record.get("metrics") or {}
    for ax, m, axis in zip(axes, mats, ("x", "y"), strict=True):
        k = len(m)
        image = ax.imshow(np.ma.masked_equal(m, 0), norm=norm, cmap="viridis")
        for t in range(k):
            for p in range(k):
                if m[t, p]:
                    dark = norm(m[t, p]) < 0.6
                    ax.text(
                        p,
                        t,
                        str(m[t, p]),
                        ha="center",
                        va="center",
                        fontsize=6.5,
                        color="white" if dark else "black",
                    )
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        acc = metrics.get(f"accuracy_{axis}")
        shown = f", accuracy {acc:.3f}" if isinstance(acc, (int, float)) else ""
        ax.set_title(f"$F_{axis}$ classes{shown}")
    fig.colorbar(image, ax=axes, shrink=0.8, label="test samples (log scale; blank: none)")
    fig.suptitle(
        f"{record['case_name']} ({record['scale']} scale, seed {record['seed']}): "
        "confusion on the test split",
        fontsize=11,
    )
    return save_figure(fig, out)


def descriptor_example(
    *,
    potential: str = "lj",
    density: float = 0.5,
    window: float = 8.0,
    grid: int = 28,
    particles: int = 2_000,
    seed: int = 0,
) -> dict:
    """One seeded configuration's first target: its grid `D`, its force and paper classes, and
    the minimum-image displacements `d` of every particle from it (the target's own is 0)."""
    from mdkeras.descriptors import featurize
    from mdkeras.encoding import encode
    from mdkeras.potentials import f_max
    from mdkeras.sampling import uniform_configuration

    rng = np.random.default_rng(seed)
    positions, box, targets = uniform_configuration(rng, particles, density, 1)
    grids, forces = featurize(
        positions, box, targets, potential=potential, window=window, grid=grid
    )
    d = positions - positions[targets[0]]
    d -= box * np.round(d / box)
    fm = f_max(potential, window / grid)
    return {
        "potential": potential,
        "density": density,
        "window": window,
        "grid": grid,
        "seed": seed,
        "counts": grids[0],
        "force": forces[0],
        "f_max": fm,
        "classes": encode(forces[0], f_max=fm, classes=10),
        "d": np.delete(d, targets[0], axis=0),
    }


def plot_descriptor(out: str | os.PathLike, example: dict | None = None) -> Path:
    """Particles around one target (red) with the window and its cells, beside the count matrix
    `D[iy, ix]` they give (rows follow +y, so `origin='lower'`), like the paper's Fig. 1.
    `example` is `descriptor_example(...)`'s (default: LJ, ρ = 0.5, W = 8, n = 28, seed 0)."""
    ex = example if example is not None else descriptor_example()
    _, _, colors = _matplotlib()
    counts, d, window, grid = ex["counts"], ex["d"], ex["window"], ex["grid"]
    half, h = 0.5 * window, window / grid
    inside = np.all((d >= -half) & (d < half), axis=1)
    margin = 0.2 * window
    near = np.all(np.abs(d) < half + margin, axis=1) & ~inside
    top = max(2, int(counts.max()))
    cmap = colors.ListedColormap(["white", *_blues(top)])
    norm = colors.BoundaryNorm(np.arange(-0.5, top + 1), cmap.N)

    fig = _figure((12.5, 6.0))
    left, right = fig.subplots(1, 2)
    occupied = np.ma.masked_equal(counts, 0)
    left.imshow(
        occupied,
        origin="lower",
        extent=(-half, half, -half, half),
        cmap=cmap,
        norm=norm,
        alpha=0.45,
        zorder=0,
    )
    ticks = -half + h * np.arange(grid + 1)
    left.vlines(ticks, -half, half, color="0.8", lw=0.5, zorder=1)
    left.hlines(ticks, -half, half, color="0.8", lw=0.5, zorder=1)
    left.add_patch(_rectangle(-half, window))
    left.scatter(*d[near].T, s=14, color="0.6", zorder=3, label="outside the window")
    left.scatter(
        *d[inside].T, s=16, color="tab:blue", zorder=3, label=f"counted ({int(counts.sum())})"
    )
    left.scatter([0], [0], s=80, color="red", edgecolor="black", zorder=4, label="target")
    left.set(
        xlim=(-half - margin, half + margin),
        ylim=(-half - margin, half + margin),
        aspect="equal",
        xlabel="$x - x_t$",
        ylabel="$y - y_t$",
    )
    left.legend(loc="upper right", fontsize=8, framealpha=0.95)
    left.set_title(f"window W={window:g}, {grid}×{grid} cells of side h={h:.3g}", fontsize=10)

    image = right.imshow(counts, origin="lower", cmap=cmap, norm=norm)
    for iy, ix in zip(*np.nonzero(counts), strict=True):
        right.text(
            ix,
            iy,
            str(counts[iy, ix]),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if counts[iy, ix] > 1 else "black",
        )
    right.plot([grid / 2 - 0.5], [grid / 2 - 0.5], "+", color="red", ms=12, mew=2)
    right.set_xticks(range(0, grid, 4))
    right.set_yticks(range(0, grid, 4))
    right.set(xlabel="column ix (+x)", ylabel="row iy (+y)")
    right.set_title("descriptor D[iy, ix]: particles per cell (origin lower)", fontsize=10)
    fig.colorbar(image, ax=right, shrink=0.8, ticks=range(top + 1), label="particles in the cell")

    name = potential_label(ex["potential"])
    (fx, fy), (cx, cy) = ex["force"], ex["classes"]
    fig.suptitle(
        f"{name} gas, ρ={ex['density']:g}, seed {ex['seed']}: force on the target "
        f"F = ({fx:.3g}, {fy:.3g}); paper encoding (f_max = |f(h)| = {ex['f_max']:.3g}, "
        f"K = 10): classes ({cx}, {cy})",
        fontsize=11,
    )
    return save_figure(fig, out)


def _blues(n: int) -> list:
    from matplotlib import colormaps

    return [colormaps["Blues"](v) for v in np.linspace(0.35, 1.0, n)]


def _rectangle(corner: float, side: float):
    from matplotlib.patches import Rectangle

    return Rectangle((corner, corner), side, side, fill=False, ec="black", lw=1.6, zorder=2)


def plot_class_histograms(
    histograms: Mapping[str, tuple[Sequence[int], Sequence[int]]], out: str | os.PathLike
) -> Path:
    """One panel per setting: the training fraction per class of `F_x` and `F_y`, with the mass
    in the two central classes written on it."""
    if not histograms:
        raise MissingDataError("no class histograms to plot.")
    n = len(histograms)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = _figure((max(6.4, 4.3 * ncols), 3.3 * nrows + 0.6))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for ax, (label, (hx, hy)) in zip(axes, histograms.items(), strict=False):
        hx, hy = np.asarray(hx, dtype=float), np.asarray(hy, dtype=float)
        k = len(hx)
        px, py = hx / max(hx.sum(), 1), hy / max(hy.sum(), 1)
        classes = np.arange(k)
        ax.bar(classes - 0.2, px, width=0.4, color="tab:blue", label="$F_x$")
        ax.bar(classes + 0.2, py, width=0.4, color="tab:orange", label="$F_y$")
        central = [c for c in CENTRAL if c < k] if k == 10 else [k // 2 - 1, k // 2]
        ax.axvspan(min(central) - 0.5, max(central) + 0.5, color="0.9", zorder=0)
        ax.text(
            0.5,
            0.97,
            f"classes {central[0]}+{central[1]}: {px[central].sum():.0%} ($F_x$), "
            f"{py[central].sum():.0%} ($F_y$)",
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=8.5,
        )
        ax.set_xticks(classes)
        ax.set_title(f"{label} (n={int(hx.sum()):,})", fontsize=9.5)
        ax.set_xlabel("class (paper encoding)")
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[::ncols]:
        ax.set_ylabel("fraction of training samples")
    top = max(max(np.max(h) / max(np.sum(h), 1) for pair in histograms.values() for h in pair), 0.4)
    axes[0].set_ylim(0, 1.18 * top)
    axes[0].legend(loc="upper left", bbox_to_anchor=(0, 0.9), fontsize=8, frameon=False)
    fig.suptitle("Training class histograms under the paper encoding (f_max = |f(h)|)", fontsize=11)
    return save_figure(fig, out)


# --- the md sampler beside the uniform one -----------------------------------------------------

SAMPLER_STYLE = {"md": dict(ls="-", marker="o"), "uniform": dict(ls="--", marker="s", mfc="white")}
SAMPLER_COLOURS = {"md": "tab:purple", "uniform": "0.55"}


def plot_sampler_histograms(
    histograms: Mapping[str, Mapping[str, Mapping[str, tuple]]], out: str | os.PathLike
) -> Path:
    """`sampler_histograms`' data, one panel per setting: top, the training fraction per class
    under the paper encoding (`F_x` and `F_y` pooled), `md` beside `uniform`, with the mass in the
    two central classes; below (when quantile-encoded `md` records exist), the quantile
    encoding's class edges of `F_x` on a symmetric log scale."""
    paper, quantile = histograms.get("paper") or {}, histograms.get("quantile") or {}
    if not paper:
        raise MissingDataError("no md class histograms to plot.")
    ncols = min(4, len(paper))
    rows_paper = math.ceil(len(paper) / ncols)
    rows_quantile = math.ceil(len(quantile) / ncols) if quantile else 0
    fig = _figure((3.6 * ncols + 0.6, 3.0 * (rows_paper + rows_quantile) + 1.0))
    parts = (
        [fig] if not quantile else fig.subfigures(2, 1, height_ratios=[rows_paper, rows_quantile])
    )
    top = np.atleast_1d(parts[0].subplots(rows_paper, ncols, sharey=True, squeeze=False)).ravel()
    for ax, (label, by_sampler) in zip(top, paper.items(), strict=False):
        _sampler_histogram_panel(ax, label, by_sampler)
    for ax in top[len(paper) :]:
        ax.set_visible(False)
    for ax in top[::ncols]:
        ax.set_ylabel("fraction of training samples")
    top[0].set_ylim(0, 1.05)
    top[0].legend(loc="upper left", fontsize=8, frameon=False)
    parts[0].suptitle(
        "Paper encoding (f_max = |f(h)|): training class histograms, F_x and F_y pooled",
        fontsize=11,
    )
    if quantile:
        low = np.atleast_1d(parts[1].subplots(rows_quantile, ncols, squeeze=False)).ravel()
        for ax, (label, by_sampler) in zip(low, quantile.items(), strict=False):
            _quantile_edges_panel(ax, label, by_sampler)
        for ax in low[len(quantile) :]:
            ax.set_visible(False)
        low[0].legend(loc="upper left", fontsize=8, frameon=False)
        parts[1].suptitle(
            "Quantile encoding: every training histogram is flat (10 % per class) by "
            "construction; shown are its class edges of F_x",
            fontsize=11,
        )
    return save_figure(fig, out)


def _sampler_histogram_panel(ax, label: str, by_sampler: Mapping[str, tuple]) -> None:
    samplers = [s for s in ("md", "uniform") if s in by_sampler]
    k = len(by_sampler[samplers[0]][0])
    classes = np.arange(k)
    central = [c for c in CENTRAL if c < k] if k == 10 else [k // 2 - 1, k // 2]
    ax.axvspan(min(central) - 0.5, max(central) + 0.5, color="0.92", zorder=0)
    lines = []
    width = 0.8 / len(samplers)
    for i, sampler in enumerate(samplers):
        pooled = np.sum(np.asarray(by_sampler[sampler], dtype=float), axis=0)
        p = pooled / max(pooled.sum(), 1)
        offset = (i - (len(samplers) - 1) / 2) * width
        ax.bar(classes + offset, p, width=width, color=SAMPLER_COLOURS[sampler], label=sampler)
        lines.append(f"{sampler}: {p[central].sum():.1%}")
    ax.text(
        0.97,
        0.97,
        f"classes {central[0]}+{central[1]}:\n" + "\n".join(lines),
        transform=ax.transAxes,
        ha="right",
        va="top",
        fontsize=8,
    )
    ax.set_xticks(classes)
    ax.set_title(label, fontsize=9.5)
    ax.set_xlabel("class")


def _quantile_edges_panel(ax, label: str, by_sampler: Mapping[str, tuple]) -> None:
    for sampler in ("md", "uniform"):
        if sampler in by_sampler:
            edges = np.asarray(by_sampler[sampler][0], dtype=float)
            ax.plot(
                np.arange(1, len(edges) + 1) - 0.5,
                edges,
                color=SAMPLER_COLOURS[sampler],
                label=sampler,
                **SAMPLER_STYLE[sampler],
            )
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("edge between classes k-1 and k")
    ax.set_ylabel("F_x at the edge")
    ax.set_title(label, fontsize=9.5)
    ax.grid(alpha=0.3)


BASELINE_STYLE = (  # (column, label, colour)
    ("majority", "majority", "0.45"),
    ("cell_centre", "cell centre", "tab:green"),
    ("bayes", "Bayes limit (uniform); uniform-gas Bayes classifier (md)", "black"),
)


def plot_sampler_accuracy(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Joint accuracy against density, one panel per (encoding, potential): each architecture and
    baseline of `sampler_accuracy_table` on `md` data (solid) and on `uniform` data (dashed);
    error bars are the sd over seeds."""
    if not len(table) or not (table["sampler"] == "md").any():
        raise MissingDataError("no md rows to plot.")
    encodings = sorted(set(table["encoding"]), key=lambda e: (e != "paper", e))
    potentials = sorted(set(table["potential"]), key=lambda p: (p != "lj", p))
    architectures = sorted(set(table["architecture"]))
    fig = _figure((5.4 * len(potentials) + 0.4, 4.0 * len(encodings) + 1.4))
    axes = np.atleast_2d(fig.subplots(len(encodings), len(potentials), squeeze=False))
    for i, encoding in enumerate(encodings):
        for j, potential in enumerate(potentials):
            ax = axes[i, j]
            here = table[(table["encoding"] == encoding) & (table["potential"] == potential)]
            if not len(here):
                ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
            for sampler, g in here.groupby("sampler"):
                style = SAMPLER_STYLE[sampler]
                for k, arch in enumerate(architectures):
                    a = g[g["architecture"] == arch].sort_values("density")
                    if len(a):
                        ax.errorbar(
                            a["density"],
                            a["joint_accuracy"],
                            yerr=a["joint_accuracy_sd"],
                            color=f"C{k}",
                            lw=1.8,
                            ms=5,
                            capsize=3,
                            **style,
                        )
                base = g.sort_values("density").drop_duplicates("density")
                for column, _, colour in BASELINE_STYLE:
                    ax.plot(base["density"], base[column], color=colour, lw=1, ms=3.5, **style)
            ax.set_xscale("log")
            densities = sorted(set(here["density"]))
            ax.set_xticks(densities, [f"{d:g}" for d in densities])
            ax.minorticks_off()
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.set_xlabel("density ρ (log scale)")
            ax.set_ylabel("joint accuracy (test split)")
            ax.set_title(f"{potential_label(potential)}, {encoding} encoding", fontsize=10)
    handles = [_legend_line(f"C{k}", "-", "", arch) for k, arch in enumerate(architectures)] + [
        _legend_line(colour, "-", "", name) for _, name, colour in BASELINE_STYLE
    ]
    handles += [
        _legend_line("black", style["ls"], style["marker"], f"{sampler} data", style.get("mfc"))
        for sampler, style in SAMPLER_STYLE.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8.5, frameon=False)
    fig.suptitle(
        "Joint accuracy on md (solid) and uniform (dashed) data, mean ± sd over seeds",
        fontsize=11,
    )
    return save_figure(fig, out)


def _legend_line(colour, ls: str, marker: str, label: str, mfc=None):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=colour, ls=ls, marker=marker or None, mfc=mfc, label=label)


# --- accuracy against the number of samples --------------------------------------------------


def scale_family(scale: str) -> str:
    """`paper` for `paper` and `paper-s250000`: the scale a `--samples` variant was made from."""
    base, sep, tail = scale.rpartition("-s")
    return base if sep and tail.isdigit() else scale


def choose_setting(records: Sequence[dict], setting: str | None = None) -> str:
    """`setting` if recorded, else that of `DEFAULT_CASE` if recorded, else the first's."""
    settings = list(dict.fromkeys(Case.from_dict(r["case"]).setting for r in records))
    if not settings:
        raise MissingDataError("no successful records: expected at least one with status 'ok'.")
    if setting is not None:
        if setting not in settings:
            raise MdkerasError(
                f"--setting {setting!r} has no record here: expected one of "
                f"{', '.join(map(repr, settings))}."
            )
        return setting
    default = DEFAULT_CASE.rsplit("-", 2)[0]
    return default if default in settings else settings[0]


def sample_curve_table(
    records: Sequence[dict], setting: str, family: str | None = None
) -> pd.DataFrame:
    """One row per (variant, samples) of `setting`, over one scale family (default: the one with
    the most records): joint accuracy and fraction of Bayes (mean, sd, seeds) and the Bayes
    limit (mean and the standard error of that mean), which depends on the variant's encoding."""
    rows = []
    for r in records:
        case = Case.from_dict(r["case"])
        if r.get("status") != "ok" or case.setting != setting or case.head == "force":
            continue  # a force head has no joint accuracy
        base = r.get("baselines") or {}
        rows.append(
            {
                "variant": case.variant,
                "encoding": case.encoding,
                "family": scale_family(r["scale"]),
                "samples": scale_size(r),
                "seed": r["seed"],
                "joint_accuracy": r["metrics"]["joint_accuracy"],
                "fraction_of_bayes": r.get("fraction_of_bayes", math.nan),
                "bayes_limit": base.get("bayes_limit", math.nan),
                "bayes_limit_se": base.get("bayes_limit_se", math.nan),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        raise MissingDataError(f"no successful record of setting {setting!r}.")
    if family is None:
        family = df["family"].value_counts().sort_index().idxmax()
    df = df[df["family"] == family].astype({"fraction_of_bayes": float})
    table = (
        df.groupby(["variant", "encoding", "samples"])
        .agg(
            joint_accuracy=("joint_accuracy", "mean"),
            joint_accuracy_sd=("joint_accuracy", "std"),
            fraction_of_bayes=("fraction_of_bayes", "mean"),
            fraction_of_bayes_sd=("fraction_of_bayes", "std"),
            bayes_limit=("bayes_limit", "mean"),
            bayes_limit_se=("bayes_limit_se", lambda v: math.sqrt(np.sum(np.square(v))) / len(v)),
            seeds=("seed", "nunique"),
        )
        .reset_index()
    )
    table.insert(0, "family", family)
    return table


def check_sample_curve(table: pd.DataFrame) -> None:
    """Raise `MissingDataError` unless some variant was run at two sample counts or more."""
    counts = table.groupby("variant")["samples"].nunique()
    if counts.empty or counts.max() < 2:
        raise MissingDataError(
            "no variant has records at two sample counts or more: expected runs with "
            "`python -m benchmarks run ... --samples N` for several N."
        )


def plot_sample_curve(table: pd.DataFrame, setting: str, out: str | os.PathLike) -> Path:
    """Left: joint accuracy (mean ± sd over seeds) against samples per variant, with the Bayes
    limit (± se, one line per encoding) and the paper's 71 %; right: the same as a fraction of
    each variant's Bayes limit."""
    check_sample_curve(table)
    fig = _figure((11.0, 4.6))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for i, (variant, g) in enumerate(table.groupby("variant", sort=True)):
        g = g.sort_values("samples")
        style = dict(color=f"C{i % 10}", marker="o", ms=5, lw=1.8, capsize=3, label=variant)
        left.errorbar(g["samples"], g["joint_accuracy"], yerr=g["joint_accuracy_sd"], **style)
        right.errorbar(
            g["samples"], g["fraction_of_bayes"], yerr=g["fraction_of_bayes_sd"], **style
        )
    encodings = sorted(set(table["encoding"]))
    for j, (encoding, g) in enumerate(table.groupby("encoding", sort=True)):
        bayes = g.groupby("samples").agg(p=("bayes_limit", "mean"), se=("bayes_limit_se", "mean"))
        left.errorbar(
            bayes.index,
            bayes["p"],
            yerr=bayes["se"],
            fmt="s" + ("--", "-.", ":")[j % 3],
            color="black",
            ms=4,
            lw=1,
            capsize=3,
            label="Bayes limit ± se" + (f" ({encoding} encoding)" if len(encodings) > 1 else ""),
        )
    left.axhline(PAPER_REFERENCE, color="tab:red", ls=":", lw=1.3, label="paper's best (71 %)")
    right.axhline(1.0, color="black", ls="--", lw=1, label="Bayes limit")
    right.axhline(0.98, color="0.5", ls=":", lw=1, label="0.98 of it")
    labels = ("joint accuracy (test split)", "fraction of the Bayes limit")
    for ax, label in zip((left, right), labels, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("samples (train + test), log scale")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, frameon=False, loc="lower right")
    family = table["family"].iloc[0]
    fig.suptitle(
        f"{setting}: accuracy against the number of samples ({family} scale, mean ± sd over seeds)",
        fontsize=11,
    )
    return save_figure(fig, out)


# --- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Draw accuracy, learning-curve, confusion, descriptor, class-histogram and "
        "accuracy-against-samples figures (PNG) from a record directory.",
    )
    parser.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"record directory (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--case",
        metavar="NAME",
        help=f"case for the learning curves and confusion matrices (default "
        f"{DEFAULT_CASE} if recorded, else the first)",
    )
    parser.add_argument(
        "--scale",
        metavar="NAME",
        help="scale to plot (default: the largest named scale in DIR); for samples.png, the "
        "scale family (default: the family with the most records)",
    )
    parser.add_argument(
        "--setting",
        metavar="NAME",
        help="setting for samples.png, e.g. lj-rho0.50-w8-n28 (default: that of the default "
        "case if recorded, else the first)",
    )
    parser.add_argument(
        "-k",
        dest="pattern",
        action="append",
        metavar="PATTERN",
        help="only cases matching this glob in accuracy.png and "
        "class-histograms.png (a bare word: a substring; repeatable)",
    )
    parser.add_argument(
        "--uniform",
        type=Path,
        metavar="DIR",
        help="for a directory of `md` records: the uniform-sampler records that accuracy.png and "
        "class-histograms.png compare them with (default: `paper` beside DIR, if it has records)",
    )
    parser.add_argument(
        "--only",
        metavar="PLOTS",
        help=f"comma-separated subset of {','.join(PLOTS)}; a listed figure "
        "whose data are missing is an error (default: all, skipping those)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=f"directory for the PNGs (default {DEFAULT_OUT}; pass DIR itself to write beside "
        "the records)",
    )
    return parser


def _parse_only(text: str | None) -> list[str]:
    if text is None:
        return list(PLOTS)
    chosen = [w.strip() for w in text.split(",") if w.strip()]
    bad = [w for w in chosen if w not in PLOTS]
    if bad or not chosen:
        raise UsageError(
            f"--only {text!r} is not allowed: expected a comma-separated subset of "
            f"{','.join(PLOTS)}"
        )
    return [p for p in PLOTS if p in chosen]


def _with_confusion(records: Sequence[dict]) -> dict:
    """The lowest-seed record holding confusion matrices, else the lowest-seed one."""
    return next((r for r in records if isinstance(r.get("confusion"), dict)), records[0])


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def check_out_dir(text: str | os.PathLike) -> Path:
    """The `--out` directory; `''`, a file, or a path under a file is one clear error."""
    if not str(text).strip():
        raise UsageError("--out '' is not allowed: expected a directory for the PNGs")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {out} is a file, not a directory: expected a directory for the PNGs "
            f"(default {DEFAULT_OUT})"
        )
    existing = next((p for p in out.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(
            f"--out {out} is under {existing}, which is a file: expected a directory for the PNGs"
        )
    return out


def render(args) -> list[Path]:
    """Draw the selected figures; returns the paths written."""
    selected = _parse_only(args.only)
    strict = args.only is not None
    _matplotlib()  # fail before any work if it is missing
    out = check_out_dir(args.out if args.out is not None else DEFAULT_OUT)
    written = []
    records, case_recs, table, scale, case, loaded = [], [], None, None, None, []
    if set(selected) - {"descriptor"}:
        loaded = [r for _, r in load_records(args.dir) if r.get("status") == "ok"]
        if not loaded:
            raise MissingDataError(
                f"no successful records in {args.dir}: expected at least one with status 'ok'."
            )
        scale = choose_scale(loaded, args.scale)
        scaled = select_records(loaded, scale)
        records = select_records(loaded, scale, args.pattern)
        case = choose_case(scaled, args.case)
        case_recs = case_records(scaled, case)
        table = accuracy_table(records)
    compare = is_md(records) and bool({"accuracy", "histograms"} & set(selected))
    uniform = []  # the uniform-sampler counterparts of md records
    if compare:
        given = getattr(args, "uniform", None)
        uniform = uniform_counterparts(
            given if given is not None else Path(args.dir).parent / "paper",
            records,
            progress=lambda m: _note(f"plot: {m}"),
            required=given is not None,
        )
    setting = choose_setting(loaded, args.setting) if "samples" in selected else None
    family = scale_family(args.scale) if args.scale else None
    made = {}  # what a check computes for its figure
    jobs = {
        "accuracy": lambda: (
            plot_sampler_accuracy(made["accuracy"], out / "accuracy.png")
            if compare
            else plot_accuracy(
                table,
                out / "accuracy.png",
                title=f"Joint accuracy per case, {scale} scale (bars: mean ± sd over seeds)",
            )
        ),
        "curves": lambda: plot_learning_curves(case_recs, out / f"learning-curves-{case}.png"),
        "confusion": lambda: plot_confusion(
            _with_confusion(case_recs), out / f"confusion-{case}.png"
        ),
        "descriptor": lambda: plot_descriptor(out / "descriptor.png"),
        "histograms": lambda: (plot_sampler_histograms if compare else plot_class_histograms)(
            made["histograms"], out / "class-histograms.png"
        ),
        "samples": lambda: plot_sample_curve(
            made["samples"], setting, out / f"samples-{setting}.png"
        ),
    }

    def check_accuracy():
        if compare:
            made["accuracy"] = sampler_accuracy_table(records, uniform)

    def check_histograms():
        progress = lambda m: _note(f"plot: {m}")  # noqa: E731
        if compare:
            made["histograms"] = sampler_histograms(records, uniform, progress=progress)
        else:
            made["histograms"] = paper_histograms(records, progress=progress)

    def check_samples():
        made["samples"] = sample_curve_table(loaded, setting, family)
        check_sample_curve(made["samples"])

    checks = {
        "accuracy": check_accuracy,
        "curves": lambda: check_history(case_recs),
        "confusion": lambda: check_confusion(_with_confusion(case_recs)),
        "histograms": check_histograms,
        "samples": check_samples,
    }
    drawable = []
    for name in selected:  # every check before any drawing: an error leaves nothing half-done
        try:
            checks.get(name, lambda: None)()
        except MissingDataError as e:
            if strict:
                raise
            _note(f"warning: skipped {name}: {' '.join(str(e).split())}")
        else:
            drawable.append(name)
    if drawable:
        out.mkdir(parents=True, exist_ok=True)
    for name in drawable:
        path = jobs[name]()
        _note(f"wrote {path}")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (the arguments after `plot`) and draw; 0 ok, 2 bad input or missing data."""
    return guarded(lambda: _main(argv))


def _main(argv) -> int:
    render(build_parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
