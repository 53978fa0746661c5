"""Where a result came from: git commit, package versions, device, time."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def git_commit() -> str | None:
    """The commit of the checkout the package's source lives in (with `-dirty` if modified), else
    of the working directory's checkout (an installed package run from the repository), or None."""
    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        commit = _git_commit_at(root)
        if commit:
            return commit
    return None


def _git_commit_at(root: Path) -> str | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name() -> str:
    """The GPU TensorFlow uses, else the CPU model and core count."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return f"CPU: {cpu_name()} ({os.cpu_count()} cores)"


def provenance() -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from mdkeras import __version__

    return {
        "git_commit": git_commit(),
        "mdkeras_version": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "keras_backend": keras.backend.backend(),
        "device": device_name(),
        "platform": platform.platform(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
