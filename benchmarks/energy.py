"""`python -m benchmarks energy`: train energy models (SPEC §3b, `mdkeras.energy`) on `md` data
by force matching, score them on the test trajectory, and save them for `benchmarks md`.

A case is an MD state (`registry.MD_STATES`) with the registry's window for its potential, the
grid `registry.MD_GRID`, an energy trunk and the smooth grid's width, named like
`md-lj-rho0.50-t1.00-w8-n28-smoothmap-energy-sigma0.50`. Its data are the `md` sampler's
configurations at the scale (`scale.samples / 250` configurations of N = 2,000, split by
trajectory as the `md` datasets are); every particle's force is a label. One JSON record and
one `.keras` model per (case, scale, seed) in `--out`: `{case}--{scale}--seed{k}.json/.keras`.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import registry
from benchmarks.cmdline import Parser, check_directory, directory_arg, guarded
from mdkeras.errors import MdkerasError

PROG = "python -m benchmarks energy"
DEFAULT_OUT = Path("results") / "md" / "energy"
TARGETS_PER_CONFIGURATION = 250  # a scale's samples / this = its configurations (as `md` data)
WINDOWS = {p: w for p, _rho, w, _t in registry.MD_PHYSICS}


@dataclass(frozen=True)
class EnergyCase:
    state: registry.MDState
    window: float
    grid: int
    architecture: str
    sigma: float

    @property
    def name(self) -> str:
        return (
            f"md-{self.state.name}-w{self.window:g}-n{self.grid}-{self.architecture}"
            f"-energy-sigma{self.sigma:.2f}"
        )

    def descriptor(self):
        from mdkeras.energy import Descriptor

        return Descriptor(self.window, self.grid, self.sigma)


def stem(case_name: str, scale: str, seed: int) -> str:
    return f"{case_name}--{scale}--seed{seed}"


def parse_case(name: str) -> EnergyCase:
    """The energy case of a name `case.name` gives; one error for any other name."""
    for state in registry.MD_STATES.values():
        for arch in ("smoothmap", "lenet"):
            head = f"md-{state.name}-w{WINDOWS[state.potential]:g}-n{registry.MD_GRID}-{arch}"
            prefix = f"{head}-energy-sigma"
            if name.startswith(prefix):
                try:
                    sigma = float(name[len(prefix) :])
                except ValueError:
                    break
                case = EnergyCase(state, WINDOWS[state.potential], registry.MD_GRID, arch, sigma)
                if case.name == name:
                    return case
    raise MdkerasError(
        f"--model {name!r} is not an energy case: expected a name like "
        "md-lj-rho0.50-t1.00-w8-n28-smoothmap-energy-sigma0.50 (`python -m benchmarks energy`)."
    )


def build_parser() -> argparse.ArgumentParser:
    from mdkeras.config import SCALES
    from mdkeras.energy import TRUNKS

    parser = Parser(
        prog=PROG,
        description="Train energy models (smooth grid -> per-particle energy, forces by "
        "autodiff) on md data by force matching; write a record and the model per case and "
        f"seed to --out (default {DEFAULT_OUT}).",
    )
    parser.add_argument(
        "-k", dest="pattern", action="append", required=True, metavar="STATE",
        help="MD state name or glob (e.g. lj-rho0.50-t1.00)",
    )  # fmt: skip
    parser.add_argument("--architecture", choices=TRUNKS, default="smoothmap")
    parser.add_argument("--sigma", type=float, default=0.5, help="Gaussian width, cell sides")
    parser.add_argument("--scale", choices=sorted(SCALES), default="paper")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, help="at most this many (default: the scale's)")
    parser.add_argument(
        "--energy-weight", type=float, default=0.0,
        help="weight of the energy per particle in the loss (default 0: forces only)",
    )  # fmt: skip
    parser.add_argument("--no-augment", action="store_true", help="no D4 augmentation")
    parser.add_argument("--out", metavar="DIR", help=f"default {DEFAULT_OUT}")
    parser.add_argument("--resume", action="store_true", help="keep finished records")
    parser.add_argument("--dry-run", action="store_true", help="list what would run")
    return parser


def main(argv: list[str] | None = None) -> int:
    return guarded(lambda: _main(build_parser().parse_args(argv)))


def _main(args) -> int:
    from benchmarks.cli import parse_seeds
    from mdkeras.config import SCALES
    from mdkeras.energy import Descriptor

    states = registry.md_states(args.pattern)
    seeds = parse_seeds(args.seeds)
    Descriptor(8.0, registry.MD_GRID, args.sigma)  # sigma checked before anything runs
    if args.epochs is not None and args.epochs < 1:
        raise MdkerasError(f"--epochs {args.epochs} is not allowed: expected at least 1.")
    if not (np.isfinite(args.energy_weight) and args.energy_weight >= 0):
        raise MdkerasError(
            f"--energy-weight {args.energy_weight} is not allowed: expected a number >= 0."
        )
    scale = SCALES[args.scale]
    out = directory_arg("--out", args.out) or DEFAULT_OUT
    check_directory("--out", out, create=not args.dry_run)
    plans = []
    for state in states:
        case = EnergyCase(
            state, WINDOWS[state.potential], registry.MD_GRID, args.architecture, args.sigma
        )
        for seed in seeds:
            path = out / f"{stem(case.name, args.scale, seed)}.json"
            if path.exists() and not args.resume:
                raise MdkerasError(
                    f"{path} exists: pass --resume to keep finished records, or use a fresh --out."
                )
            if path.exists():
                print(f"skipping {path.name}: a record exists", file=sys.stderr)
                continue
            plans.append((case, seed, path))
    configurations = max(5, scale.samples // TARGETS_PER_CONFIGURATION)
    for case, seed, _path in plans:
        print(
            f"{'would train' if args.dry_run else 'training'} {case.name} at {args.scale} "
            f"({configurations} configurations of 2,000 particles), seed {seed}",
            file=sys.stderr,
        )
    if args.dry_run:
        return 0
    for case, seed, path in plans:
        _run(case, scale, seed, path, configurations, args)
    return 0


def _run(case, scale, seed, path, configurations, args) -> None:
    from mdkeras import energy, md
    from mdkeras.datasets import split_groups
    from mdkeras.provenance import provenance
    from mdkeras.records import build_energy_record, write_record

    t0 = time.perf_counter()
    say = lambda text: print(f"{case.name} seed {seed}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    conf = md.generate(
        case.state.potential,
        case.state.density,
        case.state.temperature,
        configurations=configurations,
        seed=seed,
    )
    say(f"{configurations} configurations in {time.perf_counter() - t0:.0f} s")
    frames = energy.Frames(
        conf.positions, conf.forces, conf.potential_energy, conf.trajectory, conf.box
    )
    split = {k: np.asarray(v) for k, v in split_groups(conf.trajectory).items()}
    descriptor = case.descriptor()
    t1 = time.perf_counter()
    model, history, scales = energy.train(
        frames,
        split,
        descriptor,
        architecture=case.architecture,
        epochs=args.epochs or scale.max_epochs,
        patience=scale.patience or 4,
        energy_weight=args.energy_weight,
        augment=not args.no_augment,
        seed=seed,
        progress=say,
    )
    train_seconds = time.perf_counter() - t1
    scores = energy.score(model, frames, split["test"], descriptor)
    model_path = path.with_suffix(".keras")
    meta = {"case": case.name, "scale": args.scale, "seed": seed}
    energy.save_energy_model(model, model_path, descriptor, meta)
    record = build_energy_record(
        case=case.name,
        state=case.state.describe(),
        descriptor={"window": case.window, "grid": case.grid, "sigma": case.sigma},
        architecture=case.architecture,
        parameters=int(model.count_params()),
        scale=args.scale,
        seed=seed,
        data={
            "configurations": configurations,
            "particles": int(conf.positions.shape[1]),
            "split": {k: len(v) for k, v in split.items()},
            "md": conf.metadata,
        },
        training={
            "energy_weight": args.energy_weight,
            "augment": not args.no_augment,
            "epochs_run": len(history),
            "best_epoch": int(np.argmin([h["val_force_mae"] for h in history])) + 1,
            "history": history,
            **scales,
        },
        test=scores,
        model_file=model_path.name,
        timing={"train_seconds": train_seconds, "wall_seconds": time.perf_counter() - t0},
        provenance=provenance(),
    )
    write_record(path, record)
    m, z = scores["model"], scores["zero"]
    say(
        f"test force MAE {m['force_mae']:.3f} (zero force {z['force_mae']:.3f}), RMSE "
        f"{m['force_rmse']:.3f}; wrote {path}"
    )
