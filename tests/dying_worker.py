"""Workers that die on a chosen case, as the kernel's OOM killer would make them: for the tests
that check a dead worker takes down only its own case.

- `python tests/dying_worker.py PATTERN LOG TASKS.json RESULTS_DIR`: `benchmarks.worker`, except
  that a case whose name matches the glob PATTERN appends the process id to LOG and SIGKILLs
  the process as it starts. Tests make `LocalExecutor` start this instead of the real worker.
- `dying_payload(PATTERN, LOG)`: the same for `run_payload`, for Ray tasks (a nested function,
  so Ray ships it by value).
"""

from __future__ import annotations

import sys


def dying_payload(pattern: str, log: str, run_payload=None):
    """`run_payload` (by default `benchmarks.worker`'s, imported where it runs) that dies on
    the cases matching `pattern`."""

    def dying(task: dict) -> dict:
        import fnmatch
        import os
        import signal

        from mdkeras.config import Case

        if fnmatch.fnmatchcase(Case.from_dict(task["case"]).name, pattern):
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
            os.kill(os.getpid(), signal.SIGKILL)
        if run_payload is not None:
            return run_payload(task)
        from benchmarks import worker

        return worker.run_payload(task)

    return dying


def main(argv: list[str]) -> int:
    from benchmarks import worker

    pattern, log, *rest = argv
    worker.run_payload = dying_payload(pattern, log, worker.run_payload)
    return worker.main(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
