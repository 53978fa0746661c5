"""Table entries name their functions as `"module:function"` and import them on first use, so
reading a table (the command line's checks) never imports TensorFlow or LAMMPS."""

from __future__ import annotations

import importlib


def resolve(target: str):
    """The function named by `"module:function"`, importing the module on first use."""
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)
