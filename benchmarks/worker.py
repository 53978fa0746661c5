"""Run one (case, seed) in this process and hand its record back: the unit both executors run.

`python -m benchmarks.worker TASK.json RESULT.json` (what the `local` executor starts, one fresh
process per pair) reads a task written by `benchmarks.executors`, calls
`mdkeras.training.run_case` and writes `{"record": ..., "seconds": ...}` to RESULT.json
atomically; the parent writes the record to `--out`. The `ray` executor calls `run_payload` in a
Ray worker and gets the same dict back. A case that raises gives a failed record (status
"failed", one-line `error`), never an exception; only a worker that dies gives no result.

Test hook: a task with `"test_kill": true` (set by the executor when the case is named in
`$BENCHMARKS_TEST_KILL`) SIGKILLs its own process one second into the case, as the kernel's
OOM killer would.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from benchmarks import records
from mdkeras.config import Case, Scale

TEST_KILL_DELAY_S = 1.0


def run_one(
    case: Case,
    scale: Scale,
    seed: int,
    run_kwargs: dict,
    format_version: int,
    *,
    executor: str,
    training=None,
) -> dict:
    """`run_case(case, scale, seed, **run_kwargs)`'s record, or a failed record if it raises.

    `training` is the `mdkeras.training` module to use (imported here if None). The record's
    provenance gains `executor`, `host` (the machine that ran it) and `tf_intra_op_threads`
    (`$TF_NUM_INTRAOP_THREADS`; None: TensorFlow's default, all cores).
    """
    try:
        if training is None:
            training = importlib.import_module("mdkeras.training")
        record = training.run_case(case, scale, seed, **run_kwargs)
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
    if payload.get("test_kill"):
        _kill_self_after(TEST_KILL_DELAY_S, payload.get("test_kill_log"))
    record = run_one(
        Case.from_dict(payload["case"]),
        Scale(**payload["scale"]),
        int(payload["seed"]),
        dict(payload["run_kwargs"]),
        int(payload["format_version"]),
        executor=payload["executor"],
    )
    return {"record": record, "seconds": time.monotonic() - t0}


def _kill_self_after(delay: float, log: str | None) -> None:
    def kill():
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    timer = threading.Timer(delay, kill)
    timer.daemon = True
    timer.start()


def _exit_with_parent(poll_s: float = 2.0) -> None:
    """End this worker if the `run` process that started it dies (killed without cleaning up):
    a case nobody will record must not keep holding a GPU."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker TASK.json RESULT.json", file=sys.stderr)
        return 2
    task, result = map(Path, argv)
    _exit_with_parent()
    payload = json.loads(task.read_text(encoding="utf-8"))
    records.write_record(result, run_payload(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
