"""Shared test setup.

`tests/reference.py` (the brute-force featurize reference) is imported as `reference`; putting
this directory on `sys.path` keeps that working under any pytest import mode. The package itself
is imported as installed (`pip install -e .`), or from the repository root with
`python -m pytest`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
