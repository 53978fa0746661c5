"""Run records on disk: one JSON file per (case, scale, seed), written atomically.

A record is the dict `mdkeras.training.run_case` returns (status "ok"), or a failure record
(status "failed", with a one-line `error`) that the suite writes when a case raises.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import traceback
from datetime import datetime, timezone
from pathlib import Path

from mdkeras.config import Case, Scale
from mdkeras.errors import MdkerasError

RECORD_GLOB = "*--*--seed*.json"
REQUIRED_KEYS = ("format_version", "status", "case_name", "case", "scale", "seed")
REQUIRED_OK_KEYS = ("metrics", "baselines")
STATUSES = ("ok", "failed")


def record_path(out: str | os.PathLike, case_name: str, scale: str, seed: int) -> Path:
    """`{out}/{case_name}--{scale}--seed{seed}.json`."""
    return Path(out) / f"{case_name}--{scale}--seed{seed}.json"


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` via a temp file in the same directory, fsync and `os.replace`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_record(path: str | os.PathLike, record: dict) -> Path:
    """Serialise `record` to JSON (NumPy scalars and arrays allowed) and write it atomically."""
    try:
        text = json.dumps(record, indent=2, default=_json_default) + "\n"
    except (TypeError, ValueError) as e:
        raise MdkerasError(
            f"record for {Path(path).name} is not JSON-serialisable ({e}): "
            "expected plain numbers, strings, lists and dicts."
        ) from None
    return atomic_write_text(path, text)


def _json_default(obj):
    if hasattr(obj, "tolist"):  # NumPy arrays and scalars
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def load_record(path: str | os.PathLike) -> dict:
    """Read and validate one record; a malformed one raises `MdkerasError` naming the file."""
    path = Path(path)
    fix = "delete it or re-run its case"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MdkerasError(
            f"record {path} is not valid JSON ({e.msg} at line {e.lineno}): {fix}."
        ) from None
    except UnicodeDecodeError:
        raise MdkerasError(f"record {path} is not UTF-8 text: {fix}.") from None
    if not isinstance(record, dict):
        raise MdkerasError(f"record {path} is not a JSON object: {fix}.")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if record.get("status") == "ok":
        missing += [k for k in REQUIRED_OK_KEYS if k not in record]
    if missing:
        raise MdkerasError(
            f"record {path} lacks key(s) {', '.join(map(repr, missing))}: expected a record "
            f"written by `python -m benchmarks run`; {fix}."
        )
    if record["status"] not in STATUSES:
        raise MdkerasError(
            f"record {path} has status={record['status']!r}: expected 'ok' or 'failed'; {fix}."
        )
    if not isinstance(record["case"], dict):
        raise MdkerasError(f"record {path} has a 'case' that is not an object: {fix}.")
    if record["status"] == "ok" and not (
        isinstance(record["metrics"], dict) and "joint_accuracy" in record["metrics"]
    ):
        raise MdkerasError(f"record {path} has no metrics.joint_accuracy: {fix}.")
    return record


def load_records(directory: str | os.PathLike) -> list[tuple[Path, dict]]:
    """All records in `directory` (files named like `record_path`), sorted by file name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MdkerasError(
            f"no results directory {directory}: expected the --out of `python -m benchmarks run`."
        )
    paths = sorted(directory.glob(RECORD_GLOB))
    if not paths:
        raise MdkerasError(
            f"no records in {directory}: expected files named <case>--<scale>--seed<k>.json; "
            "run `python -m benchmarks run` first."
        )
    return [(p, load_record(p)) for p in paths]


def resume_decision(path: Path, case: Case, scale: Scale, seed: int, format_version: int) -> str:
    """For `--resume`: "skip" (a valid record exists), "retry" (a failed one) or "run" (none).

    A record made for another case definition, scale size or record format is never silently
    reused or overwritten: that raises `MdkerasError` telling the user how to proceed.
    """
    if not path.exists():
        return "run"
    record = load_record(path)
    if record["status"] != "ok":
        return "retry"
    stale = []
    if record["format_version"] != format_version:
        stale.append(f"record format {record['format_version']!r} (now {format_version})")
    if record["case"] != case.to_dict():
        stale.append("case definition")
    if record["scale"] != scale.name or record["seed"] != seed:
        stale.append("scale/seed")
    for key in ("samples", "max_epochs"):
        if key in record and record[key] != getattr(scale, key):
            stale.append(f"{key} {record[key]!r} (now {getattr(scale, key)!r})")
    if stale:
        raise MdkerasError(
            f"--resume cannot reuse {path}: its {', '.join(stale)} differs from the current one; "
            "use a fresh --out or delete the file."
        )
    return "skip"


def failed_record(
    case: Case, scale: Scale, seed: int, error: BaseException, format_version: int
) -> dict:
    """The record written when `run_case` raises: status "failed" and a one-line `error`."""
    message = " ".join(str(error).split()) or "(no message)"
    return {
        "format_version": format_version,
        "status": "failed",
        "case_name": case.name,
        "case": case.to_dict(),
        "scale": scale.name,
        "seed": seed,
        "samples": scale.samples,
        "max_epochs": scale.max_epochs,
        "paper_reference": case.paper_reference,
        "error": f"{type(error).__name__}: {message}",
        "traceback": "".join(traceback.format_exception(error)),
        "provenance": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }
