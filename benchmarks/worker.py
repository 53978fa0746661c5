"""Run (case, seed) tasks in this process and hand their records back: what every executor runs.

`python -m benchmarks.worker TASKS.json RESULTS_DIR` (what the `local` executor starts) reads a
list of tasks written by `benchmarks.executors` and runs them one after the other; for task `k`
it creates `RESULTS_DIR/started-k` before the case and writes `RESULTS_DIR/result-k.json`
(`{"record": ..., "seconds": ...}`) atomically after it, so the parent can record each case as
soon as it ends and knows which case was in flight if this process dies. The `ray` executor
calls `run_payload` in a Ray worker and gets the same dict back; `inline` calls it in the
driver. A case that raises gives a failed record (status "failed", one-line `error`), never an
exception; only a process that dies gives no result.

TensorFlow's start-up chatter (CUDA probing, absl's pre-init notice, oneDNN) is captured while
`mdkeras.training` is imported and shown only if the import fails.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import records
from mdkeras.config import Case, Scale


def quiet_tensorflow_environment(environ=os.environ) -> None:
    """Settings that keep TensorFlow's C++ and absl logging to errors (set before its import)."""
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    environ.setdefault("KERAS_BACKEND", "tensorflow")


def import_training():
    """`mdkeras.training`, imported with TensorFlow's start-up lines on stderr captured (they
    reach stderr only if the import fails); Python-side TensorFlow warnings (e.g. about
    retracing) are turned down to errors. A module already imported is returned as it is."""
    if "mdkeras.training" in sys.modules:
        return sys.modules["mdkeras.training"]
    quiet_tensorflow_environment()
    with _captured_stderr() as captured:
        try:
            training = importlib.import_module("mdkeras.training")
            import tensorflow as tf

            tf.config.list_physical_devices()  # CUDA is probed here: its notices are captured
        except BaseException:
            captured.failed = True
            raise
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return training


class _Capture:
    failed = False


@contextlib.contextmanager
def _captured_stderr():
    """Point file descriptor 2 at a temporary file (C++ libraries write there directly);
    replay it to stderr only if the block fails."""
    capture = _Capture()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. pytest's captured stderr
        yield capture
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(fd)
        os.dup2(tmp.fileno(), fd)
        try:
            yield capture
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            if capture.failed:
                tmp.seek(0)
                sys.stderr.write(tmp.read().decode("utf-8", "replace"))
                sys.stderr.flush()


def run_one(
    case: Case, scale: Scale, seed: int, options: dict, format_version: int, *, executor: str
) -> dict:
    """`run_case(case, scale, seed, **options)`'s record, or a failed record if it raises.

    The record's provenance gains `executor`, `host` (the machine that ran it) and
    `tf_intra_op_threads` (`$TF_NUM_INTRAOP_THREADS`; None: TensorFlow's default, all cores).
    """
    try:
        record = import_training().run_case(case, scale, seed, **options)
    except Exception as e:  # one bad case must not stop the suite
        record = records.failed_record(case, scale, seed, e, format_version)
    provenance = record.setdefault("provenance", {})
    if isinstance(provenance, dict):
        threads = os.environ.get("TF_NUM_INTRAOP_THREADS")
        provenance.update(
            executor=executor,
            host=socket.gethostname(),
            tf_intra_op_threads=int(threads) if threads and threads.isdigit() else None,
        )
    return record


def run_payload(payload: dict) -> dict:
    """Run the task `payload` (a JSON-able dict made by `benchmarks.executors.payload`) here.

    Returns `{"record": record, "seconds": wall seconds}`. The task's `env` (the submitting
    process's TensorFlow thread settings) is applied first, before TensorFlow is imported.
    """
    t0 = time.monotonic()
    os.environ.update(payload.get("env") or {})
    record = run_one(
        Case.from_dict(payload["case"]),
        Scale(**payload["scale"]),
        int(payload["seed"]),
        dict(payload["options"]),
        int(payload["format_version"]),
        executor=payload["executor"],
    )
    return {"record": record, "seconds": time.monotonic() - t0}


def started_path(results: Path, k: int) -> Path:
    return Path(results) / f"started-{k}"


def result_path(results: Path, k: int) -> Path:
    return Path(results) / f"result-{k}.json"


def run_batch(tasks: list[dict], results: Path) -> None:
    """Run `tasks` in order, marking each started and writing each result as it ends."""
    for task in tasks:
        k = int(task["k"])
        started_path(results, k).touch()
        records.write_record(result_path(results, k), run_payload(task))


def _exit_with_parent(poll_s: float = 2.0) -> None:
    """End this worker if the `run` process that started it dies (killed without cleaning up):
    cases nobody will record must not keep holding a GPU."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker TASKS.json RESULTS_DIR", file=sys.stderr)
        return 2
    tasks, results = map(Path, argv)
    _exit_with_parent()
    run_batch(json.loads(tasks.read_text(encoding="utf-8")), results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
