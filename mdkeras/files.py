"""The one atomic write: a temporary file in the target's directory, fsync, then `os.replace`.

A reader never sees a half-written file: it finds the old one or the new one. A full disk or an
unwritable path raises `MdkerasError` naming the path, and no temporary file is left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mdkeras.errors import MdkerasError

DEFAULT_FIX = "choose a writable location with free space"


@contextlib.contextmanager
def atomic_writer(
    path: str | os.PathLike, *, fix: str = DEFAULT_FIX, mode: int = 0o644
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` when the block ends without an exception.

    `fix` is the advice in the error message when the write fails; `mode` the file's permissions
    (`mkstemp` would leave 0o600).
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise MdkerasError(f"cannot write {path} ({reason}): {fix}.") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write(
    path: str | os.PathLike, data: str | bytes, *, fix: str = DEFAULT_FIX, mode: int = 0o644
) -> Path:
    """Write `data` (text as UTF-8, or bytes) to `path` atomically; return the path."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    with atomic_writer(path, fix=fix, mode=mode) as f:
        f.write(raw)
    return Path(path)
