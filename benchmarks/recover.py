"""`python -m benchmarks recover`: recover the pair force f(r) from the data, against the truth.

For every selected physics setting (cases deduplicated to unique potential, density, window,
grid: recovery does not depend on the model), fit the cell-averaged linear kernel on the training
split, deconvolve it into `f(r)` (`mdkeras.recovery`), and write per setting

- `{setting}--{scale}--seed{seed}.json`: fitted parameters ± bootstrap error, relative error vs
  the truth, kernel agreement, free-form shells, the linear predictor's joint accuracy beside the
  baselines for each encoding of the selected cases, provenance. `--method` (default `auto`:
  `equilibrium` for `md` data, else `uniform`) picks the deconvolution; an equilibrium record
  also holds the uniform-assumption fit and every MD iteration (seed, parameters, seconds), and
  its name carries the method: `{setting}--{scale}-equilibrium--seed{seed}.json`;
- `{setting}--{scale}--seed{seed}-force.png`: recovered vs true `f(r)` (log-log for Coulomb,
  linear around the well for LJ), and `...-kernel.png`: learned vs true kernel maps.

Exit 0 on success, 2 on bad input (one `error: ...` line).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import plan, registry
from benchmarks.cmdline import (
    Parser,
    add_pattern,
    check_directory,
    directory_arg,
    guarded,
)
from mdkeras.checks import check_int
from mdkeras.config import SCALES, with_samples
from mdkeras.datasets import DatasetSpec, load_or_build
from mdkeras.encoding import ENCODINGS
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_writer
from mdkeras.potentials import POTENTIALS, pair_force
from mdkeras.records import build_recovery_record, recovery_stem, write_record
from mdkeras.recovery import BOOTSTRAP, MAX_ITERATIONS, METHODS, recover, resolve_method

PROG = "python -m benchmarks recover"
DEFAULT_OUT = Path("results") / "runs" / "recovery"  # never the committed results/ unless asked
DEFAULT_SCALE = "paper"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Recover the pair force f(r) from the data of each selected physics setting "
        "(cases deduplicated to potential, density, window, grid); write a JSON record and two "
        f"PNG plots per setting to --out (default {DEFAULT_OUT}).",
    )
    sel = parser.add_mutually_exclusive_group(required=True)
    sel.add_argument("--all", action="store_true", help="every registered physics setting")
    add_pattern(sel)
    parser.add_argument(
        "--scale",
        choices=tuple(SCALES),
        default=DEFAULT_SCALE,
        help=f"dataset size of the scale (default {DEFAULT_SCALE}: 50,000 samples)",
    )
    parser.add_argument(
        "--samples", type=int, metavar="N", help="samples instead of the scale's (>= 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="dataset seed (default 0)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=BOOTSTRAP,
        metavar="B",
        help=f"bootstrap replicates over configurations (default {BOOTSTRAP})",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="auto (default: equilibrium for md data, else uniform), uniform (neighbours uniform "
        "in their cells) or equilibrium (g-weighted cell averages, iterated with MD)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=MAX_ITERATIONS,
        metavar="K",
        help=f"at most K MD runs of the equilibrium method (default {MAX_ITERATIONS})",
    )
    parser.add_argument("--out", metavar="DIR", help=f"default {DEFAULT_OUT}")
    parser.add_argument("--cache-dir", metavar="DIR", help="dataset cache directory")
    parser.add_argument("--no-plots", action="store_true", help="write the JSON records only")
    parser.add_argument(
        "--no-bayes", action="store_true", help="skip the Monte-Carlo Bayes limit (faster)"
    )
    return parser


def physics_settings(cases) -> list[dict]:
    """Cases grouped by `(potential, density, window, grid)` and sampler (with its temperature:
    `Case.setting`), in registration order, each with the encodings and class counts its cases
    use."""
    groups: dict[str, dict] = {}
    for case in cases:
        key = (case.potential, float(case.density), float(case.window), int(case.grid))
        g = groups.setdefault(
            case.setting,
            {
                "key": key,
                "name": case.setting,
                "sampler": case.sampler,
                "temperature": case.temperature,
                "encodings": set(),
                "classes": set(),
                "cases": [],
            },
        )
        g["encodings"].add(case.encoding)
        g["classes"].add(int(case.classes))
        g["cases"].append(case.name)
    for g in groups.values():
        g["encodings"] = [e for e in ENCODINGS if e in g["encodings"]]
        if len(g["classes"]) != 1:
            raise MdkerasError(
                f"cases {g['cases'][0]!r}... mix class counts {sorted(g['classes'])}: expected one "
                "per physics setting; select fewer cases."
            )
        g["classes"] = g["classes"].pop()
    return list(groups.values())


def _progress(message: str) -> None:
    print(f"recover: {message}", file=sys.stderr, flush=True)


def run_setting(setting: dict, args, samples: int, scale_name: str) -> tuple[dict, dict]:
    potential, density, window, grid = setting["key"]
    spec = DatasetSpec(
        potential,
        density,
        window,
        grid,
        samples,
        args.seed,
        sampler=setting["sampler"],
        temperature=setting["temperature"],
    )
    t0 = time.perf_counter()
    data = load_or_build(spec, cache_dir=args.cache_dir, progress=False)
    t1 = time.perf_counter()
    summary, arrays = recover(
        data,
        encodings=setting["encodings"],
        classes=setting["classes"],
        bootstrap=args.bootstrap,
        seed=args.seed,
        bayes=not args.no_bayes,
        method=args.method,
        iterations=args.iterations,
        progress=lambda message: _progress(f"  {setting['name']}: {message}"),
    )
    t2 = time.perf_counter()
    from mdkeras.provenance import provenance  # imports TensorFlow (device name)

    record = build_recovery_record(
        setting=setting["name"],
        physics={
            "potential": potential,
            "density": density,
            "window": window,
            "grid": grid,
            "cell": window / grid,
            "sampler": spec.sampler,
            **({} if spec.temperature is None else {"temperature": spec.temperature}),
        },
        cases=setting["cases"],
        scale=scale_name,
        samples=samples,
        seed=args.seed,
        dataset_key=spec.key(),
        summary=summary,
        timing={"dataset_seconds": t1 - t0, "recovery_seconds": t2 - t1},
        provenance=provenance(),
    )
    return record, arrays


def _fmt(est: dict) -> str:
    if est.get("value") is None or est.get("error") is None:
        return f"n/a (truth {est['truth']:g})"
    return f"{est['value']:.4g} ± {est['error']:.2g} (truth {est['truth']:g}, " + (
        f"{100 * est['relative_error']:+.2f} %)"
    )


def _report_line(record: dict) -> str:
    parts = [f"{k} = {_fmt(v)}" for k, v in record["parameters"].items()]
    parts += [f"{k} = {_fmt(v)}" for k, v in record["derived"].items()]
    for enc, s in record["scores"].items():
        bayes = s.get("bayes_limit")
        parts.append(
            f"{enc}: linear {s['linear_predictor']['joint_accuracy']:.3f}, recovered kernel "
            f"{s['recovered_kernel']['joint_accuracy']:.3f}, cell centre {s['cell_centre']:.3f}"
            + (f", Bayes {bayes:.3f}" if bayes is not None else "")
        )
    return f"{record['setting']}: " + "; ".join(parts)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MdkerasError(
            'plots need matplotlib: pip install "mdkeras[plot]" (or pass --no-plots).'
        ) from None
    return plt


def plot_force(record: dict, arrays: dict, path: Path) -> None:
    """Recovered vs true `f(r)`: the parametric fit with its bootstrap band, free-form shells."""
    from mdkeras.recovery import model_force

    plt = _pyplot()
    potential = record["physics"]["potential"]
    window, h = record["physics"]["window"], record["physics"]["cell"]
    params, boot = arrays["params"], arrays["boot"]
    edges, shells = arrays["edges"], arrays["shells"]
    err = np.std(arrays["shells_boot"], axis=0, ddof=1)
    mid = 0.5 * (edges[:-1] + edges[1:])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    view = POTENTIALS[potential].view
    if not view.log:
        r = np.linspace(*view.r, 400)
        keep = (mid >= view.r[0]) & (mid <= view.r[1])
    else:
        r = np.geomspace(h, window / np.sqrt(2.0), 400)
        keep = np.isfinite(shells) & (shells > 0)
    band = np.array(
        [
            model_force(potential, {k: v[i] for k, v in boot.items()}, r)
            for i in range(len(next(iter(boot.values()))))
        ]
    )
    label = ", ".join(
        f"{k} = {v['value']:.4g} ± {v['error']:.2g}" for k, v in record["parameters"].items()
    )
    ax.plot(r, pair_force(potential, r), "k-", lw=2, label="true f(r)")
    ax.plot(r, model_force(potential, params, r), "C3--", label=f"fit: {label}")
    ax.fill_between(r, *np.percentile(band, [16, 84], axis=0), color="C3", alpha=0.25, lw=0)
    uniform = record.get("uniform_fit")
    if uniform is not None:  # the equilibrium method: the uniform-assumption fit beside it
        plain = {k: v["value"] for k, v in uniform["parameters"].items()}
        shown = ", ".join(f"{k} = {v:.4g}" for k, v in plain.items())
        ax.plot(r, model_force(potential, plain, r), ":", color="0.45", label=f"uniform: {shown}")
    ax.errorbar(
        mid[keep],
        shells[keep],
        err[keep],
        xerr=0.5 * (edges[1] - edges[0]),
        fmt="o",
        ms=4,
        color="C0",
        label="free-form shells (±1σ)",
    )
    ax.plot(
        mid[keep],
        arrays["shells_truth"][keep],
        "s",
        mfc="none",
        color="C2",
        ms=6,
        label="true f projected on shells",
    )
    if not view.log:
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_ylim(*view.f)
        ax.set_xlabel("r (σ)")
    else:
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([0.2, 0.5, 1.0, 2.0, 3.0])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("r (σ), log")
    ax.set_ylabel("f(r) = -U'(r)")
    phys = record["physics"]
    ax.set_title(
        f"{potential} ρ={phys['density']:g} W={phys['window']:g} n={phys['grid']}: "
        f"{record['model']}, {record['samples']:,} samples"
        + (f", {record['method']} method" if record.get("method", "uniform") != "uniform" else ""),
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def plot_kernel(record: dict, arrays: dict, path: Path) -> None:
    """Learned vs true cell-averaged kernel maps (`k_x`, signed log colour scale)."""
    plt = _pyplot()
    from matplotlib.colors import SymLogNorm

    fit, truth = arrays["fit"], arrays["truth_kernel"]
    half = 0.5 * record["physics"]["window"]
    learned = np.where(fit.geo.touching[..., None], np.nan, fit.kernel)
    true = np.where(fit.geo.touching[..., None], np.nan, truth)
    z = (learned - true) / fit.sigma
    vmax = float(np.nanmax(np.abs(true[..., 0])))
    lin = float(np.nanmedian(np.abs(true[..., 0])))
    norm = SymLogNorm(linthresh=lin, vmin=-vmax, vmax=vmax)
    from matplotlib import colormaps

    diverging = colormaps["RdBu_r"].with_extremes(bad="0.75")
    zmap = colormaps["PuOr"].with_extremes(bad="0.75")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    ext = (-half, half, -half, half)
    for ax, img, title in (
        (axes[0], learned[..., 0], "learned k_x (least squares)"),
        (axes[1], true[..., 0], "true cell-averaged k_x"),
    ):
        im = ax.imshow(img, origin="lower", extent=ext, cmap=diverging, norm=norm)
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.85)
    im = axes[2].imshow(z[..., 0], origin="lower", extent=ext, cmap=zmap, vmin=-4, vmax=4)
    axes[2].set_title(
        f"(learned - true) / σ: χ²/dof {record['kernel']['chi2_per_dof']:.2f}", fontsize=10
    )
    fig.colorbar(im, ax=axes[2], shrink=0.85)
    for ax in axes:
        ax.set_xlabel("x (σ)")
        ax.set_ylabel("y (σ)")
    fig.suptitle(f"{record['setting']}: target at the centre; grey = touching cells", fontsize=10)
    fig.tight_layout()
    with atomic_writer(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Recover `f(r)` for the selected physics settings; 0 ok, 2 bad input."""
    return guarded(lambda: _main(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    check_int("--bootstrap", args.bootstrap, min=2)
    check_int("--seed", args.seed, min=0, max=2**32 - 1)
    scale = SCALES[args.scale]
    if args.samples is not None:
        scale = with_samples(scale, args.samples)
    samples, scale_name = scale.samples, scale.name
    if not args.no_plots:
        _pyplot()  # fail before hours of work, not after
    settings = physics_settings(registry.list_cases(None if args.all else args.pattern))
    plan.check_memory(samples, max(s["key"][3] for s in settings))
    args.out = directory_arg("--out", args.out) or DEFAULT_OUT
    args.cache_dir = directory_arg("--cache-dir", args.cache_dir)
    if args.cache_dir is not None:
        check_directory("--cache-dir", args.cache_dir, create=True)
    check_directory("--out", args.out, create=True)
    check_int("--iterations", args.iterations, min=1)
    for setting in settings:
        resolve_method(args.method, setting["sampler"])  # one error before any work
    for i, setting in enumerate(settings, 1):
        name = setting["name"]
        _progress(f"[{i}/{len(settings)}] {name}: {samples:,} samples, seed {args.seed}")
        record, arrays = run_setting(setting, args, samples, scale_name)
        stem = recovery_stem(record)
        write_record(args.out / f"{stem}.json", record, allow_nan=False)
        if not args.no_plots:
            plot_force(record, arrays, args.out / f"{stem}-force.png")
            plot_kernel(record, arrays, args.out / f"{stem}-kernel.png")
        print(_report_line(record), flush=True)
    _progress(f"wrote {len(settings)} record(s) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
