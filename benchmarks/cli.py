"""`python -m benchmarks`: list, run, report and compare benchmark cases.

Exit codes: 0 success; 1 a case failed or its record could not be saved (run), or accuracy
dropped (compare); 2 bad input, printed as one `error: ...` line on stderr. Every argument is
checked before any work starts; TensorFlow is imported only where a case actually runs (a
worker process, or this one with `--executor inline`).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from benchmarks import compare as compare_mod
from benchmarks import executors, plan, records, registry
from benchmarks import report as report_mod
from benchmarks.cmdline import Parser, add_pattern, check_directory, directory_arg, guarded
from benchmarks.plan import format_duration
from mdkeras.architectures import get_architecture
from mdkeras.checks import check_int
from mdkeras.config import HEADS, SCALES, get_scale, with_samples
from mdkeras.datasets import CACHE_ENV, default_cache_dir
from mdkeras.errors import MdkerasError
from mdkeras.sampling import get_sampler

PROG = "python -m benchmarks"
DEFAULT_SCALE = "smoke"
MAX_SEED = 2**32 - 1  # seeds feed NumPy's and TensorFlow's 32-bit seeding
RECORD_BYTES = 256 * 1024  # room one record needs on disk (they are ~20-100 KB)


def default_out(scale: str) -> Path:
    """Where `run` writes by default: `results/runs/<scale>`, relative to the working dir."""
    return Path("results") / "runs" / scale


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered cases", description="List registered cases.")
    sel = p.add_mutually_exclusive_group()
    add_pattern(sel)
    _add_ci(sel)
    _add_exclude(p)

    p = sub.add_parser(
        "run",
        help="run cases and write one record per (case, seed)",
        description="Run cases, write one JSON record per (case, seed), then summarise --out.",
    )
    sel = p.add_mutually_exclusive_group(required=True)
    sel.add_argument("--all", action="store_true", help="every registered case")
    add_pattern(sel)
    _add_ci(sel)
    _add_exclude(p)
    p.add_argument(
        "--scale",
        choices=tuple(SCALES),
        default=DEFAULT_SCALE,
        help=f"run size (default {DEFAULT_SCALE})",
    )
    p.add_argument(
        "--seeds",
        default="0",
        metavar="0,1,2",
        help=f"comma-separated seeds, integers in [0, {MAX_SEED}] (default 0)",
    )
    p.add_argument("--out", metavar="DIR", help="record directory (default results/runs/<scale>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip (case, seed) pairs that already have a valid record; retry failed",
    )
    p.add_argument(
        "--head",
        choices=HEADS,
        help="override every selected case's head (joint: one K*K-way network; force: "
        "regress (F_x, F_y))",
    )
    p.add_argument(
        "--save-model",
        action="store_true",
        help="also save each trained model beside its record (<case>--<scale>--seed<k>.keras), "
        "e.g. a force-head model for `python -m benchmarks md --model CASE`",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="train with random D4 rotations/reflections (case name gains -d4; a case whose "
        "architecture's recipe always does, alexnet, is left as it is)",
    )
    p.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="samples (train + test) instead of the scale's; the scale is named <scale>-s<N>",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="show the plan (what would run or be skipped, and the time estimate)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help=f"dataset cache (default ${CACHE_ENV} or ~/.cache)"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no per-epoch progress")
    g = p.add_argument_group("executors (where each (case, seed) runs)")
    g.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        default="local",
        help="local: worker processes on this machine, several (case, seed) per process on "
        "CPU and a fresh one per (case, seed) with GPUs (default); inline: one after the other "
        "in this process (for debuggers); ray: one Ray task per (case, seed) on a Ray cluster",
    )
    g.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help=f"local: run N at once (default: one per visible GPU; on CPU {executors.CPU_JOBS}, "
        "or 1 on a one-core machine); "
        "with GPUs each job gets one GPU via CUDA_VISIBLE_DEVICES",
    )
    g.add_argument(
        "--address",
        metavar="ADDR",
        help="ray: the cluster to use (e.g. auto, or HOST:6379); default: start a local one",
    )
    g = p.add_argument_group("speed (GPU) options")
    g.add_argument(
        "--no-determinism",
        action="store_true",
        help="do not enable TensorFlow op determinism (required by --mixed-precision, --xla)",
    )
    g.add_argument(
        "--mixed-precision",
        action="store_true",
        help="train with the mixed_float16 policy (needs --no-determinism)",
    )
    g.add_argument(
        "--xla", action="store_true", help="compile the model with XLA (needs --no-determinism)"
    )

    p = sub.add_parser(
        "report",
        help="summarise a record directory",
        description="Summarise records into DIR/summary.csv and DIR/summary.md; print the table.",
    )
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=default_out(DEFAULT_SCALE),
        metavar="DIR",
        help=f"record directory (default {default_out(DEFAULT_SCALE)})",
    )
    p.add_argument(
        "--readme",
        type=Path,
        metavar="FILE",
        help="instead: rewrite FILE's generated tables (<!-- mdkeras:table NAME --> sections) "
        "from the committed records under results/ beside it",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="with --readme: write nothing; exit 1 if FILE's tables are out of date",
    )

    p = sub.add_parser(
        "compare",
        help="accuracy gate against a reference summary.csv",
        description="Exit 1 if a reference case's joint accuracy dropped by more than the "
        "tolerance, its model did not learn, or it is missing from DIR; 0 otherwise.",
    )
    p.add_argument(
        "--reference",
        type=Path,
        required=True,
        metavar="FILE",
        help="a summary.csv written by `report`",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.03,
        help="allowed drop in joint accuracy (default 0.03)",
    )
    p.add_argument(
        "dir",
        nargs="?",
        type=Path,
        default=default_out(DEFAULT_SCALE),
        metavar="DIR",
        help=f"record directory or a summary.csv (default {default_out(DEFAULT_SCALE)})",
    )
    # Listed for --help; `main` hands their arguments to their own modules.
    for name, text in (
        ("perf", "speed benchmarks: featurize, pipeline, bayes, md, train"),
        ("plot", "PNG figures from a record directory"),
        ("recover", "recover the pair force f(r) from the data and plot it against the truth"),
        ("md", "molecular dynamics with the true, recovered or learned force, scored"),
        ("energy", "train energy models (forces by autodiff) on md data for `md --model`"),
    ):
        sub.add_parser(name, help=f"{text} (see `{name} --help`)", add_help=False)
    return parser


def _add_ci(group) -> None:
    group.add_argument("--ci", action="store_true", help="the CI gate's cases (CI_CASES)")


def _add_exclude(parser) -> None:
    parser.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="drop cases matching this glob (repeatable)",
    )


def select_cases(args) -> list:
    """The cases named by --all / -k / --ci, minus --exclude."""
    if getattr(args, "ci", False):
        allowed = {c.name for c in registry.list_cases(exclude=args.exclude)}
        cases = [c for c in registry.ci_cases() if c.name in allowed]
    else:
        cases = registry.list_cases(args.pattern, args.exclude)
    if not cases:
        raise MdkerasError(
            f"--exclude {' '.join(args.exclude or [])} leaves no case to select: "
            "expected at least one; loosen --exclude."
        )
    return cases


def parse_seeds(text: str) -> list[int]:
    """`"0,1,2"` -> `[0, 1, 2]`; each seed an integer in [0, 2**32 - 1], listed once."""
    seeds = []
    for item in text.split(","):
        item = item.strip()
        if not (item.isascii() and item.isdigit()):
            raise MdkerasError(
                f"--seeds {text!r} is not allowed: expected comma-separated integers in "
                f"[0, {MAX_SEED}], e.g. --seeds 0,1,2."
            )
        seed = check_int("--seeds", int(item), min=0, max=MAX_SEED, hint="e.g. --seeds 0,1,2")
        if seed in seeds:
            raise MdkerasError(f"--seeds {text!r} repeats seed {seed}: list each seed once.")
        seeds.append(seed)
    return seeds


def _cmd_list(args) -> int:
    cases = select_cases(args)
    rows = [
        [
            c.name,
            c.potential,
            f"{c.density:g}",
            f"{c.window:g}",
            c.grid,
            c.architecture,
            c.encoding,
            c.head,
        ]
        for c in cases
    ]
    headers = ["case", "potential", "density", "window", "grid", "architecture", "encoding", "head"]
    print(tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True))
    print(f"{len(cases)} case{'s' if len(cases) != 1 else ''}")
    return 0


def _plan(args, cases, scale, seeds, out) -> list[tuple]:
    """(action, case, seed, path) per pair; action is run, overwrite, retry, skip, retrain
    (`--resume --save-model` and a finished record without its model file) or `too-small`
    (the scale has too few samples for the architecture: not run)."""
    plan_ = []
    for seed in seeds:
        for case in cases:
            path = records.record_path(out, case.name, scale.name, seed)
            if get_architecture(case.architecture).too_few_samples(scale, case.grid):
                action = TOO_SMALL
            elif args.resume and path.exists():
                action = records.resume_decision(path, case, scale, seed)
                if action == "skip" and args.save_model and not path.with_suffix(".keras").exists():
                    action = "retrain"  # the record is there, the model --save-model asks for not
            else:
                action = "overwrite" if path.exists() else "run"
            plan_.append((action, case, seed, path))
    return plan_


TOO_SMALL = "too-small"


def too_small_note(pairs, scale) -> str:
    """One line naming the pairs `_plan` marked `too-small` and why ('' if none)."""
    small = [case for action, case, _seed, _path in pairs if action == TOO_SMALL]
    if not small:
        return ""
    reasons = dict.fromkeys(
        get_architecture(c.architecture).too_few_samples(scale, c.grid) for c in small
    )
    return (
        f"not run: {len(small)} (case, seed) at scale {scale.name}: "
        + "; ".join(reasons)
        + "; use a larger --scale or --samples"
    )


def check_free_space(out: Path, runs: int) -> None:
    """One error, before any training, if `out` has no room for the records of `runs`."""
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return
    need = RECORD_BYTES * (runs + 4)  # + the summary files
    if free < need:
        raise MdkerasError(
            f"--out {out} has {free / 1024:,.0f} KiB free, and {runs} record(s) and the summary "
            f"need about {need / 1024:,.0f} KiB: free some space or choose another --out."
        )


def _cache_dir(args) -> tuple[str, Path]:
    """The dataset cache `run` will use, and the option or variable that chose it."""
    cache = directory_arg("--cache-dir", args.cache_dir)
    if cache is not None:
        return "--cache-dir", cache
    return (CACHE_ENV if os.environ.get(CACHE_ENV) else "the dataset cache"), default_cache_dir()


class RecordSaver:
    """Writes each record to its path; if that fails (a full disk, a vanished directory), keeps
    the record in a fallback directory and says where, so no computed result is lost."""

    def __init__(self, fallback_dirs=None):
        self.fallback_dirs = fallback_dirs or [
            Path(tempfile.gettempdir()) / "mdkeras-unsaved",
            Path.home() / "mdkeras-unsaved",
        ]
        self.unsaved: list[Path] = []

    def __call__(self, path: Path, record: dict) -> Path:
        try:
            return records.write_record(path, record)
        except (OSError, MdkerasError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            for directory in self.fallback_dirs:
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                    kept = records.write_record(directory / path.name, record)
                except (OSError, MdkerasError):
                    continue
                self.unsaved.append(kept)
                print(
                    f"warning: cannot write record {path} ({reason}); kept it as {kept}: move "
                    f"it into {path.parent} once there is room (then --resume skips it)",
                    file=sys.stderr,
                    flush=True,
                )
                return kept
            raise MdkerasError(
                f"cannot write record {path} ({reason}), nor a copy in "
                f"{', '.join(map(str, self.fallback_dirs))}: free some disk space."
            ) from None


def run_variants(args, cases: list, scale):
    """Apply `run`'s overrides (--head, --augment, --samples) to the selected cases and scale."""
    changes = {}
    if args.head:
        changes["head"] = args.head
    cases = [dataclasses.replace(c, **changes) for c in cases] if changes else cases
    if args.augment:  # a case whose recipe augments already keeps its name: one name per training
        cases = [c if c.augmented else dataclasses.replace(c, augment=True) for c in cases]
    if args.samples is not None:
        scale = with_samples(scale, args.samples)
    return cases, scale


def _cmd_run(args) -> int:
    # Every check comes before any work: nothing runs, and TensorFlow is not imported, until
    # the whole command line is known to be good.
    seeds = parse_seeds(args.seeds)
    executors.check_options(args)
    cases, scale = run_variants(args, select_cases(args), get_scale(args.scale))
    for sampler in dict.fromkeys(c.sampler for c in cases):
        get_sampler(sampler).check_available()
    plan.check_memory(scale.samples, max(c.grid for c in cases))
    out = directory_arg("--out", args.out)
    out = out if out is not None else default_out(scale.name)
    args.model_dir = str(out.resolve()) if args.save_model else None
    cache_flag, cache = _cache_dir(args)
    args.cache_dir = cache
    check_directory(cache_flag, cache, create=not args.dry_run)
    check_directory("--out", out, create=False)
    pairs = _plan(args, cases, scale, seeds, out)
    todo = [p for p in pairs if p[0] not in ("skip", TOO_SMALL)]
    skipped = sum(p[0] == "skip" for p in pairs)
    small = too_small_note(pairs, scale)
    jobs = [executors.Job(k, case, seed, path) for k, (_, case, seed, path) in enumerate(todo, 1)]
    at_once = args.jobs or 1
    if args.executor == "local" and args.jobs is None:
        at_once = executors.default_jobs(executors.visible_gpus())
    if args.executor == "ray" or at_once > 1:
        jobs = executors.schedule(jobs)
    estimates = {job.k: plan.estimate_seconds(job.case, scale) for job in jobs}
    serial = sum(estimates.values())
    if args.executor == "local" and jobs:
        serial += plan.WORKER_START_SECONDS * -(-len(jobs) // executors.CPU_CASES_PER_WORKER)
    cpu = args.executor != "ray" and not executors.visible_gpus()
    wall = plan.wall_seconds(serial, min(at_once, len(jobs)), cpu=cpu)
    summary_line = plan.describe_plan(len(cases), len(seeds), len(todo), skipped, wall)

    if args.dry_run:
        rows = [[action, case.name, seed, str(path)] for action, case, seed, path in pairs]
        print(tabulate(rows, headers=["action", "case", "seed", "record"], tablefmt="plain"))
        print(summary_line)
        if small:
            print(small)
        print(
            f"dry run, scale {scale.name}: would run {len(todo)}, skip {skipped}; nothing written"
        )
        return 0

    check_directory("--out", out, create=True)
    check_free_space(out, len(todo))
    executor = None
    if jobs:  # before the plan is printed: a cluster that cannot be reached is one error line
        executor = executors.make_executor(
            args.executor,
            jobs=args.jobs,
            address=args.address,
            total=len(jobs),
            out=out,
            quiet=args.quiet,
        )
    print(summary_line, file=sys.stderr, flush=True)
    if small:
        print(small, file=sys.stderr, flush=True)
    if skipped:
        print(f"skipping {skipped} (case, seed) with a valid record in {out}", file=sys.stderr)
    failed = 0
    saver = RecordSaver()
    start = time.monotonic()
    if executor is not None:
        progress = plan.Progress(len(jobs), estimates=estimates, quiet=args.quiet)
        failed = executors.run_jobs(
            jobs,
            executor,
            scale=scale,
            options=executors.run_options(args),
            format_version=records.RUN_FORMAT_VERSION,
            progress=progress,
            save=saver,
        )

    total = format_duration(time.monotonic() - start)
    print(
        f"ran {len(todo)} in {total}: {len(todo) - failed} ok, {failed} failed, "
        f"{skipped} skipped; records in {out}",
        file=sys.stderr,
    )
    if saver.unsaved:
        print(
            f"warning: {len(saver.unsaved)} record(s) could not be written to {out} and are "
            f"kept in {saver.unsaved[0].parent}",
            file=sys.stderr,
        )
    try:
        df = report_mod.report(out)
    except MdkerasError as e:
        if not saver.unsaved:
            raise
        print(f"warning: no summary table: {e}", file=sys.stderr)
        return 1
    print(report_mod.to_markdown(df), end="")
    print(f"summary table: {out / 'summary.md'} (and {out / 'summary.csv'})", file=sys.stderr)
    return 1 if failed or saver.unsaved else 0


def _cmd_report(args) -> int:
    if args.readme is not None:
        changed = report_mod.update_readme(args.readme, check=args.check)
        state = "out of date" if changed and args.check else "updated" if changed else "up to date"
        print(f"{args.readme}: generated tables {state}", file=sys.stderr)
        return 1 if changed and args.check else 0
    if args.check:
        raise MdkerasError("--check is allowed only with --readme FILE.")
    from benchmarks import simulation_report

    if simulation_report.holds_simulations(args.dir):
        df = simulation_report.report(args.dir)
        print(simulation_report.to_markdown(df), end="")
        print(f"wrote {args.dir / 'summary.csv'} and {args.dir / 'summary.md'}", file=sys.stderr)
        return 0
    df = report_mod.report(args.dir)
    print(report_mod.to_markdown(df), end="")
    print(f"wrote {args.dir / 'summary.csv'} and {args.dir / 'summary.md'}", file=sys.stderr)
    return 0


def _cmd_compare(args) -> int:
    reference = report_mod.load_summary(args.reference)
    if args.dir.is_file():
        results = report_mod.load_summary(args.dir)
    else:
        results = report_mod.summarize_dir(args.dir)
    table = compare_mod.comparison(results, reference, args.tolerance)
    problems = table[table["status"] != "ok"]
    shown = problems if len(problems) else table
    print(
        tabulate(
            shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".3f", missingval=""
        )
    )
    if len(problems):
        print(
            f"FAIL: {len(problems)} of {len(table)} reference case(s) dropped by more than "
            f"{args.tolerance:g}, collapsed or missing"
        )
        return 1
    print(f"OK: {len(table)} reference case(s) within {args.tolerance:g}")
    return 0


COMMANDS = {
    "list": _cmd_list,
    "run": _cmd_run,
    "report": _cmd_report,
    "compare": _cmd_compare,
}


# Commands in modules of their own, which parse their own arguments.
OWN_PARSERS = {
    "perf": "perf",
    "plot": "plots",
    "recover": "recover",
    "md": "simulation",
    "energy": "energy",
}


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run one command; returns the exit code (never raises for bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in OWN_PARSERS:  # these parse their own arguments, --help included
        return importlib.import_module(f"benchmarks.{OWN_PARSERS[argv[0]]}").main(argv[1:])
    return guarded(lambda: _dispatch(build_parser().parse_args(argv)))


def _dispatch(args) -> int:
    return COMMANDS[args.command](args)
