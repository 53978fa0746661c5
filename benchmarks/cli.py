"""`python -m benchmarks`: list, run, report and compare benchmark cases.

Exit codes: 0 success; 1 a case failed (run) or accuracy dropped (compare); 2 bad input, printed
as one `error: ...` line on stderr. TensorFlow is imported only when a case actually runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from benchmarks import compare as compare_mod
from benchmarks import executors, records, registry
from benchmarks import report as report_mod
from benchmarks.cmdline import Parser, add_pattern, guarded
from mdkeras.config import HEADS, SCALES, get_scale, with_samples
from mdkeras.errors import MdkerasError

PROG = "python -m benchmarks"
DEFAULT_SCALE = "smoke"


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
        help="comma-separated seeds, integers >= 0 (default 0)",
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="record directory (default results/runs/<scale>)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip (case, seed) pairs that already have a valid record; retry failed",
    )
    p.add_argument(
        "--head",
        choices=HEADS,
        help="override every selected case's head (joint: one K*K-way network)",
    )
    p.add_argument(
        "--augment",
        action="store_true",
        help="train with random D4 rotations/reflections (case name gains -d4)",
    )
    p.add_argument(
        "--samples",
        type=int,
        metavar="N",
        help="samples (train + test) instead of the scale's; the scale is named <scale>-s<N>",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would run or be skipped")
    p.add_argument("--cache-dir", type=Path, metavar="DIR", help="dataset cache for run_case")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-epoch progress")
    g = p.add_argument_group("executors (where each (case, seed) runs)")
    g.add_argument(
        "--executor",
        choices=executors.EXECUTORS,
        default="local",
        help="local: a fresh worker process per (case, seed) on this machine (default); "
        "ray: one Ray task per (case, seed) on a Ray cluster",
    )
    g.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="local: run N at once (default: 1, or one per visible GPU); "
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

    p = sub.add_parser(
        "compare",
        help="accuracy gate against a reference summary.csv",
        description="Exit 1 if a reference case's joint accuracy dropped by more than the "
        "tolerance or is missing from DIR; 0 otherwise.",
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
        ("perf", "speed benchmarks: featurize, pipeline, bayes"),
        ("plot", "PNG figures from a record directory"),
        ("recover", "recover the pair force f(r) from the data and plot it against the truth"),
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
    """`"0,1,2"` → `[0, 1, 2]`; anything else is one clear error."""
    seeds = []
    for item in text.split(","):
        item = item.strip()
        if not item.isdigit():
            raise MdkerasError(
                f"--seeds {text!r} is not allowed: expected comma-separated integers >= 0, "
                "e.g. --seeds 0,1,2."
            )
        if int(item) in seeds:
            raise MdkerasError(f"--seeds {text!r} repeats seed {int(item)}: list each seed once.")
        seeds.append(int(item))
    return seeds


def format_duration(seconds: float) -> str:
    """`83 → '1m23s'`, `7300 → '2h01m'`."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


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


def _training():
    """`mdkeras.training`, imported on first use (it brings in TensorFlow)."""
    try:
        return importlib.import_module("mdkeras.training")
    except ImportError as e:
        raise MdkerasError(
            f"cannot import mdkeras.training ({e}): expected mdkeras and its dependencies "
            "(TensorFlow, Keras, tqdm) installed; run pip install -e ."
        ) from None


def _plan(args, cases, scale, seeds, out) -> list[tuple]:
    """(action, case, seed, path) per pair; action is run, overwrite, retry or skip."""
    plan = []
    for seed in seeds:
        for case in cases:
            path = records.record_path(out, case.name, scale.name, seed)
            if args.resume and path.exists():
                version = _training().RECORD_FORMAT_VERSION
                action = records.resume_decision(path, case, scale, seed, version)
            else:
                action = "overwrite" if path.exists() else "run"
            plan.append((action, case, seed, path))
    return plan


def _ensure_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise MdkerasError(
            f"cannot write to --out {out} ({e.strerror or e}): choose a writable directory."
        ) from None


def run_variants(args, cases: list, scale):
    """Apply `run`'s overrides (--head, --augment, --samples) to the selected cases and scale."""
    changes = {}
    if args.head:
        changes["head"] = args.head
    if args.augment:
        changes["augment"] = True
    cases = [dataclasses.replace(c, **changes) for c in cases] if changes else cases
    if args.samples is not None:
        scale = with_samples(scale, args.samples)
    return cases, scale


def _cmd_run(args) -> int:
    seeds = parse_seeds(args.seeds)
    executors.check_options(args)
    cases, scale = run_variants(args, select_cases(args), get_scale(args.scale))
    out = args.out if args.out is not None else default_out(scale.name)
    plan = _plan(args, cases, scale, seeds, out)
    todo = [p for p in plan if p[0] != "skip"]

    if args.dry_run:
        rows = [[action, case.name, seed, str(path)] for action, case, seed, path in plan]
        print(tabulate(rows, headers=["action", "case", "seed", "record"], tablefmt="plain"))
        print(
            f"dry run, scale {scale.name}: would run {len(todo)}, "
            f"skip {len(plan) - len(todo)}; nothing written"
        )
        return 0

    _ensure_writable(out)
    skipped = len(plan) - len(todo)
    if skipped:
        print(f"skipping {skipped} (case, seed) with a valid record in {out}", file=sys.stderr)
    failed = 0
    start = time.monotonic()
    if todo:
        training = _training()
        kwargs = executors.run_kwargs(args, training)
        jobs = [
            executors.Job(k, case, seed, path) for k, (_, case, seed, path) in enumerate(todo, 1)
        ]
        executor = executors.make_executor(
            args.executor,
            jobs=args.jobs,
            address=args.address,
            training=training,
            total=len(jobs),
            quiet=args.quiet,
        )
        if executor.capacity > 1:
            jobs = executors.schedule(jobs)
        failed = executors.run_jobs(
            jobs,
            executor,
            scale=scale,
            kwargs=kwargs,
            format_version=training.RECORD_FORMAT_VERSION,
            format_duration=format_duration,
        )

    total = format_duration(time.monotonic() - start)
    print(
        f"ran {len(todo)} in {total}: {len(todo) - failed} ok, {failed} failed, "
        f"{skipped} skipped; records in {out}",
        file=sys.stderr,
    )
    df = report_mod.report(out)
    print(report_mod.to_markdown(df), end="")
    return 1 if failed else 0


def _cmd_report(args) -> int:
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
            f"{args.tolerance:g} or missing"
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
OWN_PARSERS = {"perf": "perf", "plot": "plots", "recover": "recover"}


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` and run one command; returns the exit code (never raises for bad input)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in OWN_PARSERS:  # these parse their own arguments, --help included
        return importlib.import_module(f"benchmarks.{OWN_PARSERS[argv[0]]}").main(argv[1:])
    return guarded(lambda: _dispatch(build_parser().parse_args(argv)))


def _dispatch(args) -> int:
    return COMMANDS[args.command](args)
