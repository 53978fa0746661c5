"""Run records on disk: one JSON file per (case, scale, seed) in a results directory.

The record format (builders, validation, upgrades, the atomic write) is `mdkeras.records`; this
module is the suite's file layout: where a record goes, which files of a directory are records,
and what `--resume` does with one that exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from mdkeras.config import Case, Scale
from mdkeras.errors import MdkerasError
from mdkeras.records import RUN_FORMAT_VERSION, load_record, write_record
from mdkeras.records import build_failed_record as failed_record

__all__ = [
    "RECORD_GLOB",
    "RUN_FORMAT_VERSION",
    "failed_record",
    "load_record",
    "load_records",
    "record_path",
    "resume_decision",
    "write_record",
]

RECORD_GLOB = "*--*--seed*.json"


def record_path(out: str | os.PathLike, case_name: str, scale: str, seed: int) -> Path:
    """`{out}/{case_name}--{scale}--seed{seed}.json`."""
    return Path(out) / f"{case_name}--{scale}--seed{seed}.json"


def record_files(directory: str | os.PathLike) -> list[Path]:
    """The files of `directory` named like `record_path`, sorted by name."""
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
    return paths


def load_records(directory: str | os.PathLike) -> list[tuple[Path, dict]]:
    """Every run record in `directory`, validated and upgraded (`mdkeras.records.load_record`)."""
    return [(p, load_record(p, kind="run")) for p in record_files(directory)]


def resume_decision(
    path: Path, case: Case, scale: Scale, seed: int, format_version: int = RUN_FORMAT_VERSION
) -> str:
    """For `--resume`: "skip" (a valid record exists), "retry" (a failed one) or "run" (none).

    A record made for another case definition, scale size or record format is never silently
    reused or overwritten: that raises `MdkerasError` telling the user how to proceed.
    """
    if not path.exists():
        return "run"
    record = load_record(path, kind="run")
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
