"""Command-line plumbing shared by every `python -m benchmarks` command: usage errors in one
line, and the one place that turns bad input into `error: ...` on stderr and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

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
