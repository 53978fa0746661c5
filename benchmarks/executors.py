"""Where `python -m benchmarks run` runs each (case, seed): the `local`, `inline` and `ray`
executors, and the driver loop that writes each record as it comes back.

- `local` (default): worker processes (`python -m benchmarks.worker`) on this machine, `--jobs N`
  at once. On CPU a worker runs a batch of up to `CPU_CASES_PER_WORKER` pairs one after the
  other (TensorFlow's start-up is paid once per batch, not per case) and hands each record back
  as soon as it is done; two workers run at once by default (`default_jobs`). With GPUs each
  pair gets a fresh process (TensorFlow never gives GPU memory back inside a process) and one
  GPU through `CUDA_VISIBLE_DEVICES`, one job per GPU by default. A worker that dies
  takes down only the pair in flight: it is recorded as failed, and the pairs of its batch that
  had not started run in a new worker.
- `inline`: one after the other in this process (for debuggers and notebooks; a crash ends the
  run, and TensorFlow's state is shared by the pairs).
- `ray`: one Ray task per pair on a local or existing cluster (`--address`): `max_calls=1`, so a
  fresh worker process per task; `num_gpus=1` when the cluster has GPUs; a task whose worker
  dies is retried `RAY_MAX_RETRIES` times.

Every executor hands the record back to this process, which writes it to `--out` atomically, so
records, `--resume` and `report` are the same whichever ran them (Ray workers need no shared
file system). A case that raises, or whose worker dies, is recorded as failed with a one-line
error and the sweep goes on. The local executor's task files live in `--out/.tasks/`; folders
left there by a run that was killed are removed by the next run.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks import records
from benchmarks import worker as worker_mod
from mdkeras.checks import check_int
from mdkeras.config import Case, Scale
from mdkeras.errors import MdkerasError

EXECUTORS = ("local", "inline", "ray")
CPU_CASES_PER_WORKER = 12  # pairs per local worker process on CPU (TensorFlow starts once each)
CPU_JOBS = 2  # local workers at once on CPU by default (see `default_jobs`)
RAY_MAX_RETRIES = 2  # a task whose worker process dies runs at most 1 + this many times
RAY_INSTALL = 'pip install "mdkeras[ray]"'
OUTPUT_TAIL_LINES = 20
POLL_S = 0.2  # how often the local executor looks for finished pairs
TASKS_DIR = ".tasks"  # under --out: the local executor's task and result files
# TensorFlow's thread settings: Ray tasks get the driver's (a local worker inherits them anyway).
# On CPU the intra-op thread count can change a result's last digits, so every worker uses the
# same: TensorFlow's default (all cores) unless set here.
THREADS_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


@dataclasses.dataclass(frozen=True)
class Job:
    """One (case, seed) to run: `k` is its 1-based place in the run, `path` its record."""

    k: int
    case: Case
    seed: int
    path: Path


@dataclasses.dataclass(frozen=True)
class Started:
    """A job's case has begun (executors that know when say so)."""

    job: Job


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A finished job: its record (ok or failed), or None and `error` if the worker died."""

    job: Job
    record: dict | None
    seconds: float
    error: str | None = None
    output: str | None = None  # the worker's last lines of output, for a worker that died


class WorkerDied(RuntimeError):
    """A worker process ended without handing back a record."""


_NOT_INSTALLED = object()


# --- options -------------------------------------------------------------------------------


def run_options(args) -> dict:
    """The keyword arguments every `run_case` call gets from `run`'s flags."""
    return {
        "cache_dir": str(Path(args.cache_dir).resolve()) if args.cache_dir is not None else None,
        "verbose": 0 if args.quiet else 1,
        "deterministic": not args.no_determinism,
        "mixed_precision": bool(args.mixed_precision),
        "xla": bool(args.xla),
        "model_dir": getattr(args, "model_dir", None),
    }


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
        if args.jobs is not None and args.executor == "inline" and args.jobs != 1:
            raise MdkerasError(
                f"--jobs {args.jobs} is not allowed with --executor inline: it runs one pair "
                "at a time in this process; use --executor local."
            )
        if args.jobs is not None:
            cpus = os.cpu_count() or 1
            most = max(JOBS_PER_CPU * cpus, len(visible_gpus()))
            try:
                check_int("--jobs", args.jobs, min=1, max=most)
            except MdkerasError:
                raise MdkerasError(
                    f"--jobs {args.jobs} is not allowed: expected 1 to {most} (each job is a "
                    f"TensorFlow worker of about half a GB; this machine has {cpus} CPUs)."
                ) from None


JOBS_PER_CPU = 4  # --jobs at most this many workers per CPU (or one per visible GPU)


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
    """Pairs with equal keys share a dataset (and its cache file): the case's setting (physics,
    sampler and temperature, grid) and the seed."""
    return (case.setting, seed)


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


def payload(job: Job, scale: Scale, options: dict, format_version: int, executor: str) -> dict:
    """The JSON-able task a worker runs (see `benchmarks.worker.run_payload`)."""
    return {
        "k": job.k,
        "case": job.case.to_dict(),
        "scale": dataclasses.asdict(scale),
        "seed": job.seed,
        "options": dict(options),
        "format_version": format_version,
        "executor": executor,
        "env": {k: os.environ[k] for k in THREADS_ENV if os.environ.get(k)},
    }


# --- the driver loop -----------------------------------------------------------------------


def run_jobs(
    jobs: list[Job],
    executor,
    *,
    scale: Scale,
    options: dict,
    format_version: int,
    progress,
    save: Callable[[Path, dict], object] = records.write_record,
) -> int:
    """Run `jobs` on `executor`, `save` each record as soon as it is back, report to `progress`
    (`start(text)`, `started(job)`, `finished(job, record, seconds)`); return how many failed.
    Finished records are never lost: each is saved when it arrives."""

    def task_for(job: Job) -> dict:
        return payload(job, scale, options, format_version, executor.name)

    failed = 0
    previous_sigterm = _sigterm_interrupts()
    try:
        progress.start(executor.describe())
        for event in executor.run(jobs, task_for):
            if isinstance(event, Started):
                progress.started(event.job)
                continue
            job, record = event.job, event.record
            if record is None:
                error = WorkerDied(event.error)
                record = records.failed_record(job.case, scale, job.seed, error, format_version)
                if event.output is not None:
                    record["worker_output"] = event.output
                record.setdefault("provenance", {})["executor"] = executor.name
            if not _serialisable(record):
                error = MdkerasError(f"the record of {job.case.name} is not JSON-serialisable")
                record = records.failed_record(job.case, scale, job.seed, error, format_version)
            save(job.path, record)
            failed += record.get("status") != "ok"
            progress.finished(job, record, event.seconds)
    finally:
        executor.close()
        if previous_sigterm is not _NOT_INSTALLED:
            signal.signal(signal.SIGTERM, previous_sigterm or signal.SIG_DFL)
    return failed


def _serialisable(record: dict) -> bool:
    def default(obj):
        if hasattr(obj, "tolist"):  # NumPy arrays and scalars
            return obj.tolist()
        raise TypeError(type(obj).__name__)

    try:
        json.dumps(record, default=default)
    except (TypeError, ValueError):
        return False
    return True


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
    name: str,
    *,
    jobs: int | None,
    address: str | None,
    total: int,
    out: Path,
    quiet: bool = False,
):
    """The executor `--executor name` asks for (see the module docstring). `quiet`: do not
    relay the workers' output (warnings still are; a local worker's is kept for the error if it
    dies)."""
    if name == "ray":
        return RayExecutor(address, quiet=quiet)
    if name == "inline":
        return InlineExecutor()
    return LocalExecutor(jobs, total=total, tasks=Path(out) / TASKS_DIR, relay=not quiet)


class InlineExecutor:
    """Runs the pairs one by one in this process (`--executor inline`)."""

    name = "inline"
    capacity = 1

    def describe(self) -> str:
        return "inline executor: one (case, seed) after the other in this process"

    def run(self, jobs: list[Job], task_for) -> Iterator[Started | Outcome]:
        for job in jobs:
            yield Started(job)
            result = worker_mod.run_payload(task_for(job))
            yield Outcome(job, result["record"], result["seconds"])

    def close(self) -> None:
        pass


def visible_gpus(environ=os.environ) -> list[str]:
    """The GPUs jobs may use: `CUDA_VISIBLE_DEVICES` if set (empty or -1: none), else the
    GPUs `nvidia-smi -L` lists (none without an NVIDIA device node), else none."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        gpus = []
        for item in environ["CUDA_VISIBLE_DEVICES"].split(","):
            item = item.strip()
            if not item or item == "-1":
                break  # CUDA ignores everything from the first invalid entry on
            gpus.append(item)
        return gpus
    smi = shutil.which("nvidia-smi")
    if not smi or not nvidia_device_present():
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def nvidia_device_present(dev: Path = Path("/dev")) -> bool:
    """Whether this machine has an NVIDIA device node (`/dev/nvidia0`, ...); without one
    TensorFlow's CUDA probe can only fail."""
    try:
        return any(dev.glob("nvidia[0-9]*"))
    except OSError:
        return False


def default_jobs(gpus: list[str], cpus: int | None = None) -> int:
    """`--jobs` when not given: one per GPU; on CPU two (a case spends much of its time in
    single-threaded Python, building and tracing its model, so a second worker uses the core
    the first leaves idle), or one on a one-core machine."""
    if gpus:
        return len(gpus)
    return max(1, min(CPU_JOBS, cpus if cpus is not None else os.cpu_count() or 1))


def worker_env(slot: int, jobs: int, gpus: list[str], base: dict) -> dict:
    """The environment of the worker in job slot `slot` (0-based) of `jobs`.

    With GPUs: `CUDA_VISIBLE_DEVICES` = one GPU, round-robin (more jobs than GPUs share them,
    with `TF_FORCE_GPU_ALLOW_GROWTH`). Without: GPUs are hidden from TensorFlow
    (`CUDA_VISIBLE_DEVICES=""`, unless set) so it does not probe CUDA. TensorFlow's thread
    counts are left alone: on CPU a different intra-op thread count can change a result's last
    digits, and `--jobs` must not.
    """
    env = dict(base)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
        if jobs > len(gpus):
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    else:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    worker_mod.quiet_tensorflow_environment(env)
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


def remove_stale_task_dirs(tasks: Path) -> list[Path]:
    """Remove the task folders under `tasks` whose run process no longer exists (a run killed
    with SIGKILL cannot clean up after itself); returns the removed folders."""
    removed = []
    try:
        entries = list(tasks.iterdir())
    except OSError:
        return removed
    for entry in entries:
        pid = entry.name.split("-")[1] if entry.name.startswith("run-") else ""
        if not pid.isdigit() or _process_exists(int(pid)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Worker:
    """One local worker process and its batch of jobs, in order."""

    def __init__(self, proc, jobs: list[Job], results: Path, tail: collections.deque):
        self.proc, self.jobs, self.results, self.tail = proc, jobs, results, tail
        self.index = 0  # the first job without a result
        self.announced = -1  # the last job announced as started
        self.t0 = time.monotonic()  # when the job at `index` started (or the process)
        self.reader: threading.Thread | None = None
        self.unstarted: list[Job] = []  # after it died: the jobs to run in another worker

    def poll(self) -> tuple[list, bool]:
        """Events (Started, Outcome) since the last poll, and whether the worker has ended."""
        events = []
        exited = self.proc.poll() is not None
        if exited and self.reader is not None:
            self.reader.join(timeout=30)  # every line of output is in
        while self.index < len(self.jobs):
            job = self.jobs[self.index]
            started = worker_mod.started_path(self.results, job.k).exists()
            if started and self.announced < self.index:
                self.announced = self.index
                self.t0 = time.monotonic()
                events.append(Started(job))
            result = _read_result(worker_mod.result_path(self.results, job.k))
            if result is None:
                break
            events.append(Outcome(job, result["record"], result["seconds"]))
            self.index += 1
        if not exited:
            return events, False
        if self.index < len(self.jobs):
            in_flight = self.announced == self.index
            if in_flight or self.announced < 0:  # no case started: do not retry it forever
                job = self.jobs[self.index]
                seconds = time.monotonic() - self.t0
                error = f"{describe_exit(self.proc.returncode)} after {seconds:.0f}s"
                last = next((line.strip() for line in reversed(self.tail) if line.strip()), "")
                if last:
                    error += f"; last output: {last}"
                events.append(Outcome(job, None, seconds, error=error, output="\n".join(self.tail)))
                self.index += 1
            self.unstarted = self.jobs[self.index :]
        return events, True


def _read_result(path: Path) -> dict | None:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        return result if isinstance(result.get("record"), dict) else None
    except (OSError, ValueError, AttributeError):
        return None


class LocalExecutor:
    """Worker processes on this machine, `jobs` at once: batches of pairs per process on CPU,
    a fresh process per pair with GPUs."""

    name = "local"
    command = (sys.executable, "-m", "benchmarks.worker")  # + TASKS.json RESULTS_DIR

    def __init__(
        self,
        jobs: int | None,
        *,
        total: int,
        tasks: Path | None = None,
        relay: bool = True,
        environ=None,
        cases_per_worker: int | None = None,
    ):
        self.relay = relay
        environ = dict(os.environ if environ is None else environ)
        self.gpus = visible_gpus(environ)
        self.capacity = jobs if jobs is not None else default_jobs(self.gpus)
        if cases_per_worker is None:
            cases_per_worker = 1 if self.gpus else CPU_CASES_PER_WORKER
        self.cases_per_worker = cases_per_worker
        self.environ = environ
        self.total = total
        self._tasks_root = Path(tasks) if tasks is not None else None
        self._tmp: Path | None = None
        self._workers: dict[int, _Worker] = {}
        self._batches = 0

    def describe(self) -> str:
        jobs = f"{self.capacity} job{'s' if self.capacity != 1 else ''} at once"
        if self.gpus:
            where = f"GPUs {','.join(self.gpus)}, one per job"
            if self.capacity > len(self.gpus):
                where += " (shared round-robin, memory growth on)"
            per = "each (case, seed) in a fresh process"
        else:
            threads = self.environ.get(THREADS_ENV[0])
            where = f"CPU, {threads or 'all cores'} TensorFlow threads each"
            per = f"up to {self.cases_per_worker} (case, seed) per worker process"
        return f"local executor: {jobs}, {per}; {where}"

    def _task_dir(self) -> Path:
        if self._tmp is None:
            if self._tasks_root is None:
                self._tmp = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-"))
            else:
                self._tasks_root.mkdir(parents=True, exist_ok=True)
                remove_stale_task_dirs(self._tasks_root)
                self._tmp = Path(
                    tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=self._tasks_root)
                )
        return self._tmp

    def run(self, jobs: list[Job], task_for) -> Iterator[Started | Outcome]:
        pending = collections.deque(jobs)
        free = list(range(self.capacity))
        while pending or self._workers:
            while pending and free:
                slot = free.pop(0)
                # batches no longer than a fair share, so the last ones end together
                size = min(self.cases_per_worker, math.ceil(len(pending) / self.capacity))
                batch = [pending.popleft() for _ in range(max(1, size))]
                self._workers[slot] = self._start(slot, batch, task_for)
            time.sleep(POLL_S)
            for slot, worker in list(self._workers.items()):
                events, ended = worker.poll()
                yield from events
                if ended:
                    pending.extendleft(reversed(worker.unstarted))
                    del self._workers[slot]
                    free.append(slot)

    def _start(self, slot: int, batch: list[Job], task_for) -> _Worker:
        self._batches += 1
        directory = self._task_dir() / f"batch-{self._batches}"
        directory.mkdir()
        tasks_file = directory / "tasks.json"
        records.write_record(tasks_file, [task_for(job) for job in batch])
        env = worker_env(slot, self.capacity, self.gpus, self.environ)
        proc = subprocess.Popen(
            [*self.command, str(tasks_file), str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
        worker = _Worker(proc, batch, directory, collections.deque(maxlen=OUTPUT_TAIL_LINES))
        worker.reader = threading.Thread(target=self._relay, args=(worker,), daemon=True)
        worker.reader.start()
        return worker

    def _relay(self, worker: _Worker) -> None:
        """Keep the last lines of a worker's output; relay them (warnings always)."""
        try:
            for line in worker.proc.stdout:
                line = line.rstrip("\n")
                worker.tail.append(line)
                if self.relay or line.lstrip().lower().startswith("warning:"):
                    prefix = ""
                    if self.capacity > 1 and worker.index < len(worker.jobs):
                        prefix = f"[{worker.jobs[worker.index].k}/{self.total}] "
                    print(f"{prefix}{line}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:  # interrupted: stop the workers we started
            if worker.proc.poll() is None:
                worker.proc.kill()
        for worker in workers:
            try:
                worker.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            if self._tasks_root is not None:
                try:
                    self._tasks_root.rmdir()  # only if no other run is using it
                except OSError:
                    pass


class RayExecutor:
    """One Ray task per pair; Ray queues them and runs as many as the cluster has room for."""

    name = "ray"
    capacity = math.inf

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

    def run(self, jobs: list[Job], task_for) -> Iterator[Outcome]:
        ray = self.ray
        for job in jobs:
            ref = self.remote.options(**self.options).remote(task_for(job))
            self._refs[ref] = (job, time.monotonic())
        while self._refs:
            ready, _ = ray.wait(list(self._refs), num_returns=1)
            more, _ = ray.wait([r for r in self._refs if r not in ready], timeout=0)
            for ref in [*ready, *more]:
                job, t0 = self._refs.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    error = f"{type(e).__name__}: {_first_line(e)}"
                    if isinstance(e, _ray_worker_died(ray)):
                        error = f"Ray worker died in all {1 + RAY_MAX_RETRIES} attempts ({error})"
                    yield Outcome(job, None, time.monotonic() - t0, error=error)
                else:
                    yield Outcome(job, result["record"], result["seconds"])

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
