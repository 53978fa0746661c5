"""Where `python -m benchmarks run` runs each (case, seed): the `local` and `ray` executors.

- `local` (default): each pair in a fresh `python -m benchmarks.worker` process (TensorFlow does
  not give GPU memory back inside a process, and a crash takes only its own case down); `--jobs N`
  run at once; with GPUs, each job gets one through `CUDA_VISIBLE_DEVICES`.
- `ray`: one Ray task per pair on a local or existing cluster (`--address`): `max_calls=1`, so a
  fresh worker process per task; `num_gpus=1` when the cluster has GPUs; a task whose worker
  dies is retried `RAY_MAX_RETRIES` times.

Every executor hands the record back to this process, which writes it to `--out` atomically, so
records, `--resume` and `report` are the same whichever ran them (Ray workers need no shared
file system). A case that raises, or whose worker dies, is recorded as failed with a one-line
error and the sweep goes on. If `mdkeras.training` was replaced in memory (tests, notebooks), a
fresh process could not see the replacement, so `local` then runs the pairs in this process.
"""

from __future__ import annotations

import collections
import dataclasses
import fnmatch
import importlib.util
import inspect
import json
import logging
import math
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import records
from benchmarks import worker as worker_mod
from mdkeras.config import Case, Scale
from mdkeras.errors import MdkerasError

EXECUTORS = ("local", "ray")
RAY_MAX_RETRIES = 2  # a task whose worker process dies runs at most 1 + this many times
RAY_INSTALL = 'pip install "mdkeras[ray]"'
TEST_KILL_ENV = "BENCHMARKS_TEST_KILL"  # test hook: comma-separated case names to SIGKILL
TEST_KILL_LOG_ENV = "BENCHMARKS_TEST_KILL_LOG"  # test hook: file that gets a line per kill
OUTPUT_TAIL_LINES = 20
# TensorFlow's thread settings: Ray tasks get the driver's (a local worker inherits them anyway).
# On CPU the intra-op thread count can change a result's last digits, so every worker uses the
# same: TensorFlow's default (all cores) unless set here.
THREADS_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
# Run flags passed to run_case only when given: (flag, argparse dest, run_case keyword, value).
RUN_OPTIONS = (
    ("--no-determinism", "no_determinism", "deterministic", False),
    ("--mixed-precision", "mixed_precision", "mixed_precision", True),
    ("--xla", "xla", "xla", True),
)


@dataclasses.dataclass(frozen=True)
class Job:
    """One (case, seed) to run: `k` is its 1-based place in the run, `path` its record."""

    k: int
    case: Case
    seed: int
    path: Path


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished job: its record (ok or failed), or None and `error` if the worker died."""

    job: Job
    record: dict | None
    seconds: float
    error: str | None = None
    output: str | None = None  # the worker's last lines of output, for a worker that died


_NOT_INSTALLED = object()


class WorkerDied(RuntimeError):
    """A worker process ended without handing back a record."""


# --- options -------------------------------------------------------------------------------


def run_kwargs(args, training) -> dict:
    """The keyword arguments `run_case` gets: `cache_dir`, `verbose`, and each of
    `--no-determinism`, `--mixed-precision`, `--xla` only when given. One error if this
    `run_case` does not take a keyword a given flag needs."""
    kwargs = {"cache_dir": args.cache_dir, "verbose": 0 if args.quiet else 1}
    try:
        params = inspect.signature(training.run_case).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for flag, dest, keyword, value in RUN_OPTIONS:
        if getattr(args, dest):
            if params and not takes_any and keyword not in params:
                raise MdkerasError(
                    f"{flag} needs mdkeras.training.run_case({keyword}=...), which this mdkeras "
                    f"does not have: update mdkeras or drop {flag}."
                )
            kwargs[keyword] = value
    return kwargs


def check_options(args) -> None:
    """Reject option combinations before anything runs (one `MdkerasError` each)."""
    for flag, dest in (("--mixed-precision", "mixed_precision"), ("--xla", "xla")):
        if getattr(args, dest) and not args.no_determinism:
            raise MdkerasError(
                f"{flag} is not deterministic: add --no-determinism to use it "
                "(runs are deterministic by default)."
            )
    if args.executor == "ray":
        if args.jobs is not None:
            raise MdkerasError(
                "--jobs applies to --executor local: Ray runs as many tasks at once as the "
                "cluster's CPUs/GPUs allow; drop --jobs."
            )
        require_ray()
    else:
        if args.address is not None:
            raise MdkerasError("--address applies to --executor ray: add --executor ray.")
        if args.jobs is not None and args.jobs < 1:
            raise MdkerasError(f"--jobs {args.jobs} is not allowed: expected an integer >= 1.")


def require_ray() -> None:
    """One error saying how to install Ray if it is not importable."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MdkerasError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL}.")


# --- scheduling ----------------------------------------------------------------------------


def dataset_key(case: Case, seed: int) -> tuple:
    """Pairs with equal keys share a dataset (and its cache file)."""
    return (case.potential, case.density, case.window, case.grid, seed)


def schedule(jobs: list[Job]) -> list[Job]:
    """The order for running in parallel: costly cases first (AlexNet, then larger grids; the
    long ones should not be left for the end), and pairs sharing a dataset spread apart so that
    two workers do not build the same dataset at once. Renumbers `k`."""
    seen: dict[tuple, int] = collections.Counter()
    keyed = []
    for index, job in enumerate(jobs):
        key = dataset_key(job.case, job.seed)
        rank = seen[key]
        seen[key] += 1
        cost = (4 if job.case.architecture == "alexnet" else 1) * job.case.grid**2
        keyed.append((-cost, rank, index, job))
    ordered = [job for *_, job in sorted(keyed, key=lambda t: t[:3])]
    return [dataclasses.replace(job, k=k) for k, job in enumerate(ordered, 1)]


def test_kill_cases(environ=os.environ) -> list[str]:
    return [n.strip() for n in environ.get(TEST_KILL_ENV, "").split(",") if n.strip()]


def payload(job: Job, scale: Scale, kwargs: dict, format_version: int, executor: str) -> dict:
    """The JSON-able task a worker runs (see `benchmarks.worker.run_payload`)."""
    kwargs = dict(kwargs)
    if kwargs.get("cache_dir") is not None:
        kwargs["cache_dir"] = str(Path(kwargs["cache_dir"]).resolve())
    task = {
        "case": job.case.to_dict(),
        "scale": dataclasses.asdict(scale),
        "seed": job.seed,
        "run_kwargs": kwargs,
        "format_version": format_version,
        "executor": executor,
        "env": {k: os.environ[k] for k in THREADS_ENV if os.environ.get(k)},
    }
    if any(fnmatch.fnmatchcase(job.case.name, p) for p in test_kill_cases()):
        task["test_kill"] = True
        task["test_kill_log"] = os.environ.get(TEST_KILL_LOG_ENV)
    return task


# --- the driver loop -----------------------------------------------------------------------


def run_jobs(
    jobs: list[Job],
    executor,
    *,
    scale: Scale,
    kwargs: dict,
    format_version: int,
    format_duration,
    log=None,
) -> int:
    """Run `jobs` on `executor`, write each record as soon as it is back, print progress;
    return how many failed. Finished records are never lost: each is written when it arrives."""
    log = log or sys.stderr
    total = len(jobs)
    pending = collections.deque(jobs)
    running = finished = failed = 0
    start = time.monotonic()

    def say(text: str) -> None:
        print(text, file=log, flush=True)

    def eta() -> str:
        if not finished:
            return ""
        left = (time.monotonic() - start) / finished * (total - finished)
        return f", ~{format_duration(left)} left"

    def tag(job: Job) -> str:
        return f"[{job.k}/{total}] {job.case.name} seed={job.seed}"

    previous_sigterm = _sigterm_interrupts()
    try:
        say(executor.describe())
        while pending or running:
            while pending and running < executor.capacity:
                job = pending.popleft()
                if executor.announces_starts:
                    elapsed = format_duration(time.monotonic() - start)
                    say(f"{tag(job)} ... elapsed {elapsed}{eta()}")
                executor.submit(job, payload(job, scale, kwargs, format_version, executor.name))
                running += 1
            for outcome in executor.wait():
                running -= 1
                finished += 1
                job, record = outcome.job, outcome.record
                if record is None:
                    error = WorkerDied(outcome.error)
                    record = records.failed_record(job.case, scale, job.seed, error, format_version)
                    if outcome.output is not None:
                        record["worker_output"] = outcome.output
                    record.setdefault("provenance", {})["executor"] = executor.name
                try:
                    records.write_record(job.path, record)
                except MdkerasError as e:  # not JSON-serialisable: record that instead
                    record = records.failed_record(job.case, scale, job.seed, e, format_version)
                    records.write_record(job.path, record)
                took = format_duration(outcome.seconds)
                progress = ""
                if executor.capacity > 1:
                    progress = (
                        f" ({finished}/{total} done, elapsed "
                        f"{format_duration(time.monotonic() - start)}{eta()})"
                    )
                if record.get("status") != "ok":
                    failed += 1
                    say(f"{tag(job)} FAILED after {took}: {record.get('error')}{progress}")
                else:
                    joint = (record.get("metrics") or {}).get("joint_accuracy")
                    shown = f"joint_accuracy={joint:.3f}" if isinstance(joint, float) else "done"
                    say(f"{tag(job)} {shown} in {took}{progress}")
    finally:
        executor.close()
        if previous_sigterm is not _NOT_INSTALLED:
            signal.signal(signal.SIGTERM, previous_sigterm or signal.SIG_DFL)
    return failed


def _sigterm_interrupts():
    """Make SIGTERM (e.g. SLURM ending a job) interrupt the run like Ctrl-C, so the workers
    are stopped and the finished records kept; returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return _NOT_INSTALLED

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


# --- executors -----------------------------------------------------------------------------


def make_executor(
    name: str, *, jobs: int | None, address: str | None, training, total: int, quiet: bool = False
):
    """The executor `--executor name` asks for (see the module docstring). `quiet`: do not
    relay the workers' output (a local worker's is still kept for the error if it dies)."""
    if name == "ray":
        return RayExecutor(address, quiet=quiet)
    if not runs_in_child(training):
        return InlineExecutor(training)
    return LocalExecutor(jobs, total=total, relay=not quiet)


def runs_in_child(training) -> bool:
    """Whether a fresh process would run this `training.run_case`: the module is the importable
    `mdkeras.training` file and `run_case` is its own (not replaced in memory)."""
    run_case = getattr(training, "run_case", None)
    return (
        getattr(training, "__file__", None) is not None
        and getattr(training, "__name__", None) == "mdkeras.training"
        and inspect.getmodule(run_case) is training
    )


class InlineExecutor:
    """Runs the pairs one by one in this process, with the given `mdkeras.training`."""

    name = "local"
    capacity = 1
    announces_starts = True

    def __init__(self, training):
        self.training = training
        self._job = None

    def describe(self) -> str:
        return "local executor: in this process (mdkeras.training was replaced in memory)"

    def submit(self, job: Job, task: dict) -> None:
        self._job = (job, task)

    def wait(self) -> list[Outcome]:
        (job, task), self._job = self._job, None
        t0 = time.monotonic()
        kwargs = dict(task["run_kwargs"])
        record = worker_mod.run_one(
            job.case,
            Scale(**task["scale"]),
            job.seed,
            kwargs,
            task["format_version"],
            executor=self.name,
            training=self.training,
        )
        return [Outcome(job, record, time.monotonic() - t0)]

    def close(self) -> None:
        pass


def visible_gpus(environ=os.environ) -> list[str]:
    """The GPUs jobs may use: `CUDA_VISIBLE_DEVICES` if set (empty or -1: none), else the
    GPUs `nvidia-smi -L` lists, else none."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        gpus = []
        for item in environ["CUDA_VISIBLE_DEVICES"].split(","):
            item = item.strip()
            if not item or item == "-1":
                break  # CUDA ignores everything from the first invalid entry on
            gpus.append(item)
        return gpus
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def worker_env(slot: int, jobs: int, gpus: list[str], base: dict) -> dict:
    """The environment of the worker in job slot `slot` (0-based) of `jobs`.

    With GPUs: `CUDA_VISIBLE_DEVICES` = one GPU, round-robin (more jobs than GPUs share them,
    with `TF_FORCE_GPU_ALLOW_GROWTH`). TensorFlow's thread counts are left alone: on CPU a
    different intra-op thread count can change a result's last digits, and `--jobs` must not.
    """
    env = dict(base)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        if jobs > len(gpus):
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    # the worker imports the same benchmarks/mdkeras code as this process
    roots = []
    for module in ("benchmarks", "mdkeras"):
        spec = importlib.util.find_spec(module)
        if spec and spec.origin:
            root = str(Path(spec.origin).resolve().parent.parent)
            if root not in roots:
                roots.append(root)
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(roots + ([extra] if extra else []))
    return env


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = ""
        if name == "SIGKILL":
            hint = " (out of memory? the kernel's OOM killer sends SIGKILL)"
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {returncode} without a record"


class LocalExecutor:
    """Each pair in a fresh `python -m benchmarks.worker` process, `jobs` at once."""

    name = "local"
    announces_starts = True

    def __init__(self, jobs: int | None, *, total: int, relay: bool = True, environ=None):
        self.relay = relay
        environ = dict(os.environ if environ is None else environ)
        self.gpus = visible_gpus(environ)
        self.capacity = jobs if jobs is not None else max(1, len(self.gpus))
        self.environ = environ
        self.total = total
        self._free = list(range(self.capacity))
        self._done: queue.Queue = queue.Queue()
        self._procs: dict[int, subprocess.Popen] = {}
        self._tmp = Path(tempfile.mkdtemp(prefix="mdkeras-run-"))
        self._lock = threading.Lock()

    def describe(self) -> str:
        jobs = f"{self.capacity} job{'s' if self.capacity != 1 else ''} at once"
        if self.gpus:
            where = f"GPUs {','.join(self.gpus)}, one per job"
            if self.capacity > len(self.gpus):
                where += " (shared round-robin, memory growth on)"
        else:
            threads = self.environ.get(THREADS_ENV[0])
            where = f"CPU, {threads or 'all cores'} TensorFlow threads each"
        return f"local executor: {jobs}, each (case, seed) in a fresh process; {where}"

    def submit(self, job: Job, task: dict) -> None:
        slot = self._free.pop(0)
        task_file = self._tmp / f"task-{job.k}.json"
        result_file = self._tmp / f"result-{job.k}.json"
        records.write_record(task_file, task)
        env = worker_env(slot, self.capacity, self.gpus, self.environ)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", str(task_file), str(result_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        with self._lock:
            self._procs[job.k] = proc
        prefix = f"[{job.k}/{self.total}] " if self.capacity > 1 else ""
        threading.Thread(
            target=self._watch,
            args=(job, proc, slot, result_file, t0, prefix),
            daemon=True,
        ).start()

    def _watch(self, job, proc, slot, result_file, t0, prefix) -> None:
        tail = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                tail.append(line)
                if self.relay:
                    print(f"{prefix}{line}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass
        returncode = proc.wait()
        seconds = time.monotonic() - t0
        outcome = None
        if result_file.exists():
            try:
                result = json.loads(result_file.read_text(encoding="utf-8"))
                outcome = Outcome(job, result["record"], seconds)
            except (OSError, ValueError, KeyError, TypeError):
                outcome = None
        if outcome is None:
            last = next((line.strip() for line in reversed(tail) if line.strip()), "")
            error = f"{describe_exit(returncode)} after {seconds:.0f}s"
            if last:
                error += f"; last output: {last}"
            outcome = Outcome(job, None, seconds, error=error, output="\n".join(tail))
        with self._lock:
            self._procs.pop(job.k, None)
        self._done.put((outcome, slot))

    def wait(self) -> list[Outcome]:
        outcomes = []
        while not outcomes:
            try:
                outcome, slot = self._done.get(timeout=0.5)
            except queue.Empty:
                continue
            self._free.append(slot)
            outcomes.append(outcome)
        while True:  # anything else that finished meanwhile
            try:
                outcome, slot = self._done.get_nowait()
            except queue.Empty:
                return outcomes
            self._free.append(slot)
            outcomes.append(outcome)

    def close(self) -> None:
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:  # interrupted: stop the workers we started
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self._tmp, ignore_errors=True)


class RayExecutor:
    """One Ray task per pair; Ray queues them and runs as many as the cluster has room for."""

    name = "ray"
    capacity = math.inf
    announces_starts = False

    def __init__(self, address: str | None, *, quiet: bool = False):
        require_ray()
        try:
            import ray
        except ImportError as e:
            raise MdkerasError(
                f"--executor ray needs Ray, which cannot be imported ({e}): {RAY_INSTALL}."
            ) from None
        self.ray = ray
        self.address = address
        self.owns = not ray.is_initialized()
        if self.owns:
            check_reachable(address)
            init = {"address": address, "logging_level": logging.WARNING}
            if quiet:
                init["log_to_driver"] = False  # workers' output stays in Ray's log files
            if address is None:
                init["include_dashboard"] = False
            try:
                ray.init(**init)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise MdkerasError(
                    f"cannot start or reach {where} ({_first_line(e)}): check --address, or "
                    "start a cluster with `ray start --head`."
                ) from None
        resources = ray.cluster_resources()
        self.cpus = resources.get("CPU", 0)
        self.gpus = resources.get("GPU", 0)
        self.options = {"num_gpus": 1} if self.gpus else {}
        self.remote = ray.remote(max_calls=1, max_retries=RAY_MAX_RETRIES)(worker_mod.run_payload)
        self._refs: dict = {}

    def describe(self) -> str:
        where = f"cluster at {self.address}" if self.address else "local instance"
        if not self.owns:
            where = "the Ray instance this process is connected to"
        per_task = "1 GPU per task" if self.gpus else "1 CPU per task"
        return (
            f"ray executor: {where} ({self.cpus:g} CPUs, {self.gpus:g} GPUs); one task per "
            f"(case, seed), {per_task}, a fresh worker process each, "
            f"{RAY_MAX_RETRIES} retries if a worker dies"
        )

    def submit(self, job: Job, task: dict) -> None:
        ref = self.remote.options(**self.options).remote(task)
        self._refs[ref] = (job, time.monotonic())

    def wait(self) -> list[Outcome]:
        ray = self.ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        more, _ = ray.wait([r for r in self._refs if r not in ready], timeout=0)
        outcomes = []
        for ref in [*ready, *more]:
            job, t0 = self._refs.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                error = f"{type(e).__name__}: {_first_line(e)}"
                if isinstance(e, _ray_worker_died(ray)):
                    error = f"Ray worker died in all {1 + RAY_MAX_RETRIES} attempts ({error})"
                outcomes.append(Outcome(job, None, time.monotonic() - t0, error=error))
            else:
                outcomes.append(Outcome(job, result["record"], result["seconds"]))
        return outcomes

    def close(self) -> None:
        for ref in list(self._refs):  # interrupted: cancel what has not finished
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
        self._refs.clear()
        if self.owns:
            self.ray.shutdown()


def check_reachable(address: str | None, timeout: float = 10.0) -> None:
    """One error, at once, if `address` is `HOST:PORT` and nothing listens there (Ray itself
    would keep retrying for minutes). `auto`, `ray://...` and None are left to Ray."""
    if not address or "://" in address or address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise MdkerasError(
            f"--address {address!r} is not allowed: expected auto, HOST:PORT (e.g. "
            "10.0.0.1:6379, the head node's `ray start --head` port) or ray://HOST:PORT."
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise MdkerasError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}): start it with "
            "`ray start --head` on that machine, or check --address."
        ) from None


def _ray_worker_died(ray) -> tuple:
    names = ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ActorDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
