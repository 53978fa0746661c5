"""Command-line plumbing shared by every `python -m benchmarks` command: usage errors in one
line, and the one place that turns bad input into `error: ...` on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from mdkeras.errors import MdkerasError


class UsageError(Exception):
    """A command-line usage error, printed as one line."""


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose errors raise `UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def guarded(body: Callable[[], int]) -> int:
    """Run a command's `body`; bad input becomes one `error:` line and exit code 2."""
    try:
        return body()
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except (UsageError, MdkerasError) as e:
        return fail(str(e))
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        return fail(f"{e.strerror or e}{where}")
    except KeyboardInterrupt:
        return fail("interrupted; finished records are kept (rerun with --resume)", code=130)


def fail(message: str, code: int = 2) -> int:
    """Print `error: message` (on one line) to stderr and return `code`."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return code


def add_pattern(group) -> None:
    """The `-k PATTERN` case selector shared by `list`, `run` and `recover` (repeatable)."""
    group.add_argument(
        "-k",
        dest="pattern",
        action="append",
        metavar="PATTERN",
        help="glob over case names; a bare word matches as a substring (repeatable)",
    )


def directory_arg(flag: str, text: str | None) -> Path | None:
    """A directory option's path; `''` is an error (it would silently mean the working dir)."""
    if text is None:
        return None
    if not str(text).strip():
        raise MdkerasError(f"{flag} {str(text)!r} is not allowed: expected a directory path.")
    return Path(text)


def check_directory(flag: str, path: Path, *, create: bool) -> None:
    """One error unless `path` is (or, with `create`, can be made) a directory this process can
    write files in; `create=False` checks without making anything (for --dry-run)."""
    fix = "choose a writable directory"
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "it is a file" if existing == path else f"{existing} is a file"
        raise MdkerasError(f"cannot write to {flag} {path} ({what}): {fix}.")
    if not create:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise MdkerasError(f"cannot write to {flag} {path} (permission denied): {fix}.")
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MdkerasError(f"cannot write to {flag} {path} ({e.strerror or e}): {fix}.") from None


def check_output_file(flag: str, text: str) -> Path:
    """The path of an output file option, checked before any work: not empty, not a
    directory, and in a directory that exists or can be made and is writable."""
    path = directory_arg(flag, text)
    if path.is_dir():
        raise MdkerasError(f"cannot write {flag} {path} (it is a directory): name a file.")
    check_directory(flag, path.parent if str(path.parent) else Path("."), create=True)
    return path
