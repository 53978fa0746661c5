"""`python -m benchmarks md`: molecular dynamics with the truth, a recovered potential or a
learned force field, scored as a simulation (`mdkeras.simulate`).

Each selected MD state (`registry.MD_STATES`, named like `lj-rho0.50-t1.00`) runs the protocol
of `mdkeras.simulate` once per seed with the force source `--model` names:

- `true`: the potential itself (LJ as native `lj/cut`, others as their own spline table);
- `recovered` / `recovered-shells`: the parametric fit / the free-form shell estimate of a
  recovery record (`--recovery FILE`, else the one `default_recovery` picks), exported as a
  LAMMPS `pair_style table` file written to `--tables` (default `<out>/tables`);
- a force-head case name: that case's trained model (`--model-dir`, `--model-scale`,
  `--model-seed`) predicting every particle's force each step through `fix external`.

One JSON record per (state, source, seed): `{out}/{state}--{source tag}--seed{k}.json`; with
`--resume` finished ones are kept. Bad input (a recovery record of another potential, a model
that is not a force model, a missing file) is one `error:` line before any MD, exit 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import registry
from benchmarks.cmdline import Parser, check_directory, directory_arg, guarded
from mdkeras import simulate, tables
from mdkeras.errors import MdkerasError
from mdkeras.provenance import provenance
from mdkeras.records import build_simulation_record, load_record, read_json, write_record

PROG = "python -m benchmarks md"
DEFAULT_OUT = Path("results") / "runs" / "md"
RECOVERIES = Path("results") / "recovery"
MODELS = Path("results") / "md"
FITS = {"recovered": "parametric", "recovered-shells": "shells"}
DEFAULT_SEEDS = "0,1,2"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Run MD of each selected state with the true potential, a recovered one or "
        f"a learned force field; write one JSON record per state and seed to --out (default "
        f"{DEFAULT_OUT}).",
    )
    sel = parser.add_mutually_exclusive_group(required=True)
    sel.add_argument("--all", action="store_true", help="every MD state")
    sel.add_argument(
        "-k",
        dest="pattern",
        action="append",
        metavar="PATTERN",
        help="glob over state names (e.g. lj-rho0.50-t1.00); a bare word matches as a substring",
    )
    parser.add_argument(
        "--model",
        default="true",
        metavar="MODEL",
        help="true (default), recovered, recovered-shells, a force-head case name, or an "
        "energy case name (`python -m benchmarks energy`)",
    )
    parser.add_argument(
        "--recovery", metavar="FILE", help="the recovery record behind recovered/-shells"
    )
    parser.add_argument(
        "--recovery-sampler",
        choices=("uniform", "md"),
        default="uniform",
        help="without --recovery: take the record recovered from this sampler's data",
    )
    parser.add_argument(
        "--model-dir",
        default=str(MODELS),
        metavar="DIR",
        help=f"where a force-head or energy case's trained model is (default {MODELS})",
    )
    parser.add_argument("--model-scale", default="paper", help="its scale (default paper)")
    parser.add_argument("--model-seed", type=int, default=0, help="its seed (default 0)")
    parser.add_argument(
        "--steps",
        type=int,
        default=simulate.STEPS,
        metavar="N",
        help=f"NVT production steps (default {simulate.STEPS:,})",
    )
    parser.add_argument(
        "--nve-steps",
        type=int,
        default=simulate.NVE_STEPS,
        metavar="N",
        help=f"NVE steps after production (default {simulate.NVE_STEPS:,})",
    )
    parser.add_argument(
        "--particles", type=int, default=simulate.md.PARTICLES, metavar="N", help="N (2,000)"
    )
    parser.add_argument("--seeds", default=DEFAULT_SEEDS, help=f"default {DEFAULT_SEEDS}")
    parser.add_argument("--out", metavar="DIR", help=f"default {DEFAULT_OUT}")
    parser.add_argument("--tables", metavar="DIR", help="where tables go (default <out>/tables)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep finished records and go on from an interrupted run's checkpoint",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=float,
        default=simulate.CHECKPOINT_SECONDS,
        metavar="SECONDS",
        help="wall seconds between a run's checkpoints (<out>/<record>.checkpoint.npz, "
        f"removed once its record is written; default {simulate.CHECKPOINT_SECONDS:g})",
    )
    parser.add_argument("--no-plots", action="store_true", help="write no PNG figures")
    return parser


def select_states(args) -> list[registry.MDState]:
    return registry.md_states(None if args.all else args.pattern)


def default_recovery(potential: str, sampler: str, density: float, root: Path = RECOVERIES):
    """The recovery record for `potential` from `sampler` data under `root`: the equilibrium
    method's first (exact on md data), then the most samples, the density nearest `density`,
    the grid nearest 28, the name."""
    found = []
    for path in sorted(root.glob("*--*--seed*.json")) if root.is_dir() else ():
        record = read_json(path)
        physics = record.get("physics", {})
        if record.get("kind") != "recovery" or physics.get("potential") != potential:
            continue
        if physics.get("sampler", "uniform") != sampler:
            continue
        rank = (
            record.get("method", "uniform") != "equilibrium",
            -int(record["samples"]),
            abs(float(physics["density"]) - density),
            abs(int(physics["grid"]) - 28),
            path.name,
        )
        found.append((rank, path))
    if not found:
        raise MdkerasError(
            f"no recovery record of {potential} from {sampler} data under {root}: run "
            f"`python -m benchmarks recover` first or pass --recovery FILE."
        )
    return min(found)[1]


def _recovered_source(state, fit_kind: str, path: Path, table_dir: Path):
    record = load_record(path, kind="recovery")
    got = record["physics"]["potential"]
    if got != state.potential:
        raise MdkerasError(
            f"--recovery {path} recovered the {got} potential: expected a {state.potential} "
            f"record for state {state.name}."
        )
    fit = FITS[fit_kind]
    interaction = tables.export(record, fit)
    name = tables.table_name(record, fit)
    table_dir.mkdir(parents=True, exist_ok=True)
    tables.write_table(interaction, table_dir / name)
    identity = {
        "kind": fit_kind,
        "fit": fit,
        "recovery": str(path),
        "recovery_setting": record["setting"],
        "recovery_sampler": record["physics"].get("sampler", "uniform"),
        "recovery_samples": record["samples"],
        "table": name,
        "interaction": interaction.describe(),
    }
    stem = path.stem.replace("--", "_")
    return simulate.ForceSource(fit_kind, interaction, identity), f"{fit_kind}_from_{stem}"


def resolve_source(args, state, table_dir: Path):
    """(ForceSource, tag) of `--model` at `state`; one error for anything not usable."""
    model = args.model
    if model == "true":
        return simulate.true_source(state.potential), "true"
    if model in FITS:
        path = Path(args.recovery) if args.recovery else None
        if path is None:
            path = default_recovery(state.potential, args.recovery_sampler, state.density)
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "does not exist"
            raise MdkerasError(
                f"--recovery {path} {what}: expected a recovery record (a .json file written "
                "by `python -m benchmarks recover`)."
            )
        return _recovered_source(state, model, path, table_dir)
    if "-energy-" in model:
        return _energy_source(args, state)
    try:
        case = registry.get_case(model)
    except MdkerasError:
        raise MdkerasError(
            f"--model {model!r} is not allowed: expected true, recovered, recovered-shells or a "
            "force-head case name (`python -m benchmarks list -k force`)."
        ) from None
    if case.head != "force":
        raise MdkerasError(
            f"--model {model!r} is not a force model (its head is {case.head!r}: it predicts "
            "classes): expected a force-head case, e.g. md-lj-rho0.50-t1.00-w8-n28-forcemap-force."
        )
    path = _trained_model(
        args,
        case.name,
        case.potential,
        state,
        f"run -k {case.name} --scale {args.model_scale} --seeds {args.model_seed} --save-model",
    )
    from mdkeras import forcefield  # TensorFlow only for a learned force field

    return forcefield.learned_source(
        case, path
    ), f"{case.name}_{args.model_scale}_seed{args.model_seed}"


def _trained_model(args, name: str, potential: str, state, train: str) -> Path:
    """The `.keras` file of the model `name` (`--model-dir`, `--model-scale`, `--model-seed`),
    which learned `potential`; one error if it is not `state`'s potential or not there yet
    (with the command that trains it: `python -m benchmarks {train} --out DIR`)."""
    if potential != state.potential:
        raise MdkerasError(
            f"--model {name!r} learned the {potential} potential: expected a "
            f"{state.potential} model for state {state.name}."
        )
    path = Path(args.model_dir) / f"{name}--{args.model_scale}--seed{args.model_seed}.keras"
    if not path.is_file():
        raise MdkerasError(
            f"no trained model {path}: train it first with `python -m benchmarks {train} "
            f"--out {args.model_dir}`."
        )
    return path


def _energy_source(args, state):
    """The force source of a trained energy model (`python -m benchmarks energy`): forces,
    energy and virial through `fix external`."""
    from benchmarks.energy import parse_case

    case = parse_case(args.model)
    path = _trained_model(
        args,
        case.name,
        case.state.potential,
        state,
        f"energy -k {case.state.name} --architecture {case.architecture} --sigma "
        f"{case.sigma:g} --scale {args.model_scale} --seeds {args.model_seed}",
    )
    from mdkeras import forcefield

    source = forcefield.energy_source(case.name, path)
    got = source.identity["descriptor"]
    want = {"window": case.window, "grid": case.grid, "sigma": case.sigma}
    if got != want:
        raise MdkerasError(
            f"model {path} sees window {got['window']:g}, grid {got['grid']}, sigma "
            f"{got['sigma']:g}: expected {want['window']:g}, {want['grid']}, {want['sigma']:g} "
            f"as its case name {case.name} says; retrain it or use its own case name."
        )
    return source, f"{case.name}_{args.model_scale}_seed{args.model_seed}"


def record_path(out: Path, state, tag: str, seed: int) -> Path:
    return out / f"{state.name}--{tag}--seed{seed}.json"


def checkpoint_path(record: Path) -> Path:
    """Where an unfinished run of `record` keeps its state (`simulate.run`'s checkpoint)."""
    return record.with_name(record.stem + ".checkpoint.npz")


def _reusable(path: Path, schedule: dict, identity: dict, particles: int) -> bool:
    """For --resume: True if `path` holds this run's record; one error if it holds another."""
    if not path.exists():
        return False
    record = load_record(path, kind="simulation")
    same = record["schedule"] == schedule and record["state"]["particles"] == particles
    if not same or record["source"]["identity"] != identity:
        raise MdkerasError(
            f"--resume cannot reuse {path}: its schedule or force source differs from this "
            "run's; use a fresh --out or delete the file."
        )
    return True


class _Clock:
    """Progress with an estimate of the time left, over `total` runs."""

    def __init__(self, total: int):
        self.total, self.t0 = total, time.monotonic()

    def within(self, k: int, tag: str):
        """A `progress(fraction)` for run `k`: one line at every further tenth of it."""
        shown = [0]

        def progress(fraction: float) -> None:
            tenth = int(fraction * 10)
            if tenth > shown[0]:
                shown[0] = tenth
                self.say(k + fraction, f"{tag} {tenth * 10} % of the MD steps")

        return progress

    def say(self, done: float, text: str) -> None:
        elapsed = time.monotonic() - self.t0
        left = f", about {elapsed / done * (self.total - done):.0f} s left" if done > 0 else ""
        print(f"{text} (elapsed {elapsed:.0f} s{left})", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    return guarded(lambda: _main(build_parser().parse_args(argv)))


def _main(args) -> int:
    from benchmarks.cli import parse_seeds

    states = select_states(args)
    seeds = parse_seeds(args.seeds)
    out = directory_arg("--out", args.out) or DEFAULT_OUT
    table_dir = directory_arg("--tables", args.tables) or out / "tables"
    check_directory("--out", out, create=True)
    check_directory("--tables", table_dir, create=False)
    from benchmarks import simulation_report

    simulation_report.existing(out)  # a foreign record in --out: an error now, not after the MD
    every = args.checkpoint_every
    if not (every > 0 and every < float("inf")):
        raise MdkerasError(
            f"--checkpoint-every {every:g} is not allowed: expected a number of seconds > 0."
        )
    plans = []
    for state in states:  # every error before any MD
        schedule = simulate.schedule(
            state.potential,
            state.density,
            state.temperature,
            steps=args.steps,
            nve_steps=args.nve_steps,
        )
        source, tag = resolve_source(args, state, table_dir)
        sources = [(source, tag)]
        if tag != "true":  # scored against the truth's run at the same seed: run it first
            sources.insert(0, (simulate.true_source(state.potential), "true"))
        for src, _ in sources:
            simulate.check_particles(args.particles, state.density, src)
        for seed in seeds:
            for src, name in sources:
                path = record_path(out, state, name, seed)
                if path.exists() and not args.resume and name == tag:
                    raise MdkerasError(
                        f"{path} exists: pass --resume to keep finished records, or use a "
                        "fresh --out."
                    )
                if path.exists() and name != tag:  # the truth beside a model: reuse it
                    _reusable(path, schedule.describe(), src.identity, args.particles)
                    continue
                if _reusable(path, schedule.describe(), src.identity, args.particles):
                    print(f"skipping {path.name}: a valid record exists", file=sys.stderr)
                    continue
                if checkpoint_path(path).exists():
                    if not args.resume:
                        raise MdkerasError(
                            f"{checkpoint_path(path)} holds an interrupted run: pass --resume "
                            "to go on from it, or delete it to start afresh."
                        )
                    key = simulate.checkpoint_key(
                        state.potential,
                        state.density,
                        state.temperature,
                        src,
                        seed,
                        schedule,
                        args.particles,
                    )
                    simulate.load_checkpoint(checkpoint_path(path), key)  # this run's, or error
                plans.append((state, schedule, src, name, seed, path))
    clock = _Clock(len(plans))
    failed = []
    for k, (state, schedule, source, tag, seed, path) in enumerate(plans):
        clock.say(k, f"[{k + 1}/{len(plans)}] {state.name} {tag} seed={seed}")
        t0 = time.perf_counter()
        try:
            traj = simulate.run(
                state.potential,
                state.density,
                state.temperature,
                source,
                seed=seed,
                plan=schedule,
                particles=args.particles,
                progress=clock.within(k, f"[{k + 1}/{len(plans)}]"),
                checkpoint=checkpoint_path(path),
                checkpoint_seconds=every,
            )
        except MdkerasError as err:  # e.g. the run lost its atoms: report it, go on
            checkpoint_path(path).unlink(missing_ok=True)  # a failed run starts afresh
            failed.append(f"{path.name}: {' '.join(str(err).split())}")
            print(f"[{k + 1}/{len(plans)}] failed: {failed[-1]}", file=sys.stderr, flush=True)
            continue
        reference = None
        if tag != "true":
            rdf = load_record(record_path(out, state, "true", seed), kind="simulation")
            rdf = rdf["observables"]["rdf"]
            reference = (np.asarray(rdf["r"]), np.asarray(rdf["g"]))
        # which code evaluated a learned field (`energy.field`): timing, not identity
        evaluator = {"evaluator": getattr(source.field, "evaluator", None)} if source.field else {}
        observables = simulate.score(
            traj,
            state.temperature,
            reference=reference,
            has_energy=source.field is None or source.kind == "energy",
            window=schedule.stability_window,
        )
        record = build_simulation_record(
            state={**state.describe(), "particles": args.particles},
            source={"kind": source.kind, "tag": tag, "identity": source.identity},
            seed=seed,
            schedule=schedule.describe(),
            observables=observables,
            timing={**traj.timings, "wall_seconds": time.perf_counter() - t0, **evaluator},
            provenance=provenance(),
        )
        write_record(path, record)
        checkpoint_path(path).unlink(missing_ok=True)
        clock.say(k + 1, f"[{k + 1}/{len(plans)}] wrote {path}")
    from benchmarks import simulation_report

    table = simulation_report.report(out)
    print(simulation_report.to_markdown(table), end="")
    print(f"summary table: {out / 'summary.md'} (and {out / 'summary.csv'})", file=sys.stderr)
    if not args.no_plots:
        from benchmarks import simulation_plots

        paths = simulation_plots.figures(out)
        print(f"figures: {len(paths)} PNG files in {out}", file=sys.stderr)
    for line in failed:
        print(f"failed (no record written): {line}", file=sys.stderr)
    return 1 if failed else 0
