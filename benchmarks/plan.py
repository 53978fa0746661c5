"""What a `run` will cost before it starts, and how far it has got while it runs.

`estimate_seconds` prices one (case, seed) from the architecture's `cpu_cost`, measured on the
project's 2-core CPU machine; `describe_plan` is the line `run` and `run --dry-run` print first;
`Progress` prints one line per pair with the elapsed time and an estimate of the time left
(the table's estimates, rescaled by how fast the finished pairs actually went).
"""

from __future__ import annotations

import math
import os
import sys
import time

from mdkeras.architectures import ARCHITECTURES, get_architecture
from mdkeras.config import Case, Scale
from mdkeras.datasets import TEST_FRACTION, VALIDATION_FRACTION
from mdkeras.errors import MdkerasError

# The per-architecture costs are `Architecture.cpu_cost` (seconds per (case, seed) on the 2-core
# CPU machine, TensorFlow 2.21, default threads, by grid: fixed, per training sample-epoch).
# Measured on LJ rho = 0.5, W = 8 with `mdkeras.training.run_case` in one warm worker process,
# the machine shared with other jobs (load 2-4), so treat them as +-50 %: `fixed` is a smoke
# case's wall time less its steady epochs (building the model, the first epoch, baselines),
# from `run -k lj-rho0.50-w8 --scale smoke`; `per sample-epoch` is the fastest epoch after the
# first divided by the training samples, at 1,000 samples (500 training) x 2-3 epochs uncapped.
# Evaluating a sample (validation each epoch, test once) is counted as a third of training it.
# An architecture without measured costs is priced as the dearest measured one.
# A case at `Scale.reuse_models` (smoke) pays no tracing: building a fresh model and copying its
# variables into the compiled one, evaluation and baselines (a reused forcemap n = 28 smoke case
# took 0.86 s in all, training included).
REUSED_FIXED_SECONDS = 0.5
TARGETS = 250  # samples per configuration (`DatasetSpec.targets`)
EVALUATE_SHARE = 1 / 3  # a forward pass against a training step
WORKER_START_SECONDS = 6.0  # a fresh worker process importing TensorFlow
BUILD_SECONDS_PER_SAMPLE = 2e-5  # generating and featurizing a dataset not in the cache
# What each CPU worker beyond the first adds, as a share of one: `run -k lj-rho0.50-w8 --scale
# smoke` took 163 s with --jobs 1 and 102 s with --jobs 2 on the 2-core machine.
EXTRA_CPU_WORKER_SHARE = 0.6
# The costs are for separate heads, one trunk per force component; a joint or force head trains
# one trunk: `perf train` counts 1,202 against 2,405 training MFLOP per sample for AlexNet at
# n = 28 and 13.7 against 27.5 for LeNet.
ONE_TRUNK_SHARE = 0.5


def split_sizes(case: Case, scale: Scale) -> dict[str, int]:
    """About how many samples each split has at `scale` (configurations of 250 targets split
    as `mdkeras.datasets` does, then the architecture's cap at a capped scale)."""
    configs = max(3, scale.samples // TARGETS)
    test = max(1, round(configs * TEST_FRACTION))
    val = max(1, round((configs - test) * VALIDATION_FRACTION))
    sizes = {"train": configs - test - val, "val": val, "test": test}
    cap = get_architecture(case.architecture).split_cap(scale, case.grid)
    return {k: min(v * TARGETS, cap) if cap else v * TARGETS for k, v in sizes.items()}


def cost(architecture: str, grid: int) -> tuple[float, float]:
    """`(fixed seconds, seconds per sample-epoch)` from the architecture's `cpu_cost`; other
    grids scale the nearest measured one's per-sample cost with the number of cells."""
    table = get_architecture(architecture).cpu_cost
    if not table:
        measured = [a.name for a in ARCHITECTURES.values() if a.cpu_cost]
        return max((cost(a, grid) for a in measured), key=lambda c: c[1])
    if grid in table:
        return table[grid]
    nearest = min(table, key=lambda g: abs(g - grid))
    fixed, per = table[nearest]
    return fixed, per * (grid / nearest) ** 2


def estimate_seconds(case: Case, scale: Scale, *, cached: bool = True) -> float:
    """Estimated wall seconds of one (case, seed) at `scale`, training every epoch (early
    stopping only makes it shorter); `cached=False` adds building its dataset."""
    fixed, per = cost(case.architecture, case.grid)
    if case.head != "separate":
        per *= ONE_TRUNK_SHARE
    if scale.reuse_models:  # the model is traced once per shape and worker, not per case
        fixed = REUSED_FIXED_SECONDS
    n = split_sizes(case, scale)
    samples = n["train"] * scale.max_epochs
    samples += EVALUATE_SHARE * (n["val"] * scale.max_epochs + n["test"])
    seconds = fixed + per * samples
    if not cached:
        seconds += BUILD_SECONDS_PER_SAMPLE * scale.samples
    return seconds


def wall_seconds(serial: float, workers: int, *, cpu: bool = True) -> float:
    """The wall time of `serial` seconds of pairs spread over `workers` at once (on CPU the
    workers share the cores; with GPUs or a cluster each has its own)."""
    workers = max(1, workers)
    if not cpu:
        return serial / workers
    cores = os.cpu_count() or 1
    return serial / (1 + (min(workers, cores) - 1) * EXTRA_CPU_WORKER_SHARE)


def describe_plan(n_cases: int, n_seeds: int, todo: int, skipped: int, seconds: float) -> str:
    """`run`'s first line: what runs and about how long it takes."""
    line = (
        f"plan: {n_cases} case{'s' if n_cases != 1 else ''} x {n_seeds} "
        f"seed{'s' if n_seeds != 1 else ''} = {n_cases * n_seeds} "
        f"run{'s' if n_cases * n_seeds != 1 else ''}: {todo} to run"
    )
    if skipped:
        line += f", {skipped} skipped (valid record)"
    if todo:
        line += (
            f"; estimated {format_duration(seconds)} (2-core CPU cost table, benchmarks/plan.py)"
        )
    return line


def format_duration(seconds: float) -> str:
    """`83 -> '1m23s'`, `7300 -> '2h01m'`."""
    seconds = int(round(max(seconds, 0)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Prints a run's progress to `log`: the executor, each pair as it starts (unless `quiet`)
    and as it ends, with done/total, elapsed time and an estimate of the time left.

    `estimates` (job number -> estimated seconds) weight the pairs still to run; the estimate
    is rescaled by how long the finished pairs took against their estimates. Without
    estimates, every pair counts the same."""

    def __init__(self, total: int, *, estimates=None, quiet=False, log=None, clock=time.monotonic):
        self.total = total
        self.estimates = dict(estimates or {})
        self.quiet = quiet
        self.log = log
        self.clock = clock
        self.t0 = clock()
        self.done: set[int] = set()
        self.failed = 0

    def _say(self, text: str) -> None:
        print(text, file=self.log or sys.stderr, flush=True)

    def _tag(self, job) -> str:
        return f"[{job.k}/{self.total}] {job.case.name} seed={job.seed}"

    def elapsed(self) -> float:
        return self.clock() - self.t0

    def left(self) -> float | None:
        """Estimated seconds until every pair is done; None before the first one is."""
        if not self.done:
            return None
        ks = set(self.estimates) if self.estimates else set()
        if ks and self.done <= ks:
            finished = sum(self.estimates[k] for k in self.done)
            remaining = sum(v for k, v in self.estimates.items() if k not in self.done)
            rate = self.elapsed() / finished if finished > 0 else 0.0
            return remaining * rate
        return self.elapsed() / len(self.done) * (self.total - len(self.done))

    def _clock_text(self) -> str:
        left = self.left()
        text = f"elapsed {format_duration(self.elapsed())}"
        if left is not None and len(self.done) < self.total:
            text += f", ~{format_duration(left)} left"
        return text

    def start(self, description: str) -> None:
        self.t0 = self.clock()
        self._say(description)

    def started(self, job) -> None:
        if not self.quiet:
            self._say(f"{self._tag(job)} ... {self._clock_text()}")

    def finished(self, job, record: dict, seconds: float) -> None:
        self.done.add(job.k)
        took = format_duration(seconds)
        where = f"({len(self.done)}/{self.total} done, {self._clock_text()})"
        if record.get("status") != "ok":
            self.failed += 1
            self._say(f"{self._tag(job)} FAILED after {took}: {record.get('error')} {where}")
            return
        joint = (record.get("metrics") or {}).get("joint_accuracy")
        shown = f"joint_accuracy={joint:.3f}" if isinstance(joint, float) else "done"
        if math.isfinite(seconds):
            shown += f" in {took}"
        self._say(f"{self._tag(job)} {shown} {where}")


# Bytes a worker holds per sample of an n x n grid: the dataset's uint8 grids, the split copies
# and tf.data's copy of the training split (about 3 n^2), plus forces, labels and indices.
def dataset_bytes(samples: int, grid: int) -> int:
    """About how many bytes of memory a case's dataset takes while it trains."""
    return int(samples) * (3 * int(grid) ** 2 + 64)


def available_memory() -> int | None:
    """Bytes of memory available to new processes (`MemAvailable`), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(samples: int, grid: int, *, flag: str = "--samples", available=None) -> None:
    """One clear error if a dataset of `samples` at grid `grid` cannot fit in memory."""
    available = available_memory() if available is None else available
    need = dataset_bytes(samples, grid)
    if available is not None and need > available:
        raise MdkerasError(
            f"{flag} {samples:,} is too large for this machine: a dataset at grid n={grid} needs "
            f"about {_gib(need)} of memory and {_gib(available)} is available; use fewer "
            "samples or a machine with more memory."
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
