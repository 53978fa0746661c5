"""The one way to check a choice, an integer, a number or an array of numbers given by a caller.

Each check returns the value in its plain Python form (or the array) and otherwise raises
`MdkerasError` in one line: `grid='x' is not allowed: expected an integer >= 2.`, with an
optional hint after a semicolon (`...; use e.g. --grid 28.`).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from mdkeras.errors import MdkerasError


def check_choice(what: str, value, allowed, *, hint: str = ""):
    """Return `value` if it is one of `allowed`, else raise naming every allowed value."""
    allowed = tuple(allowed)
    try:
        ok = not isinstance(value, bool) and value in allowed
    except (TypeError, ValueError):  # e.g. an array compared against strings
        ok = False
    if not ok:
        _fail(what, value, f"one of {', '.join(map(repr, allowed))}", hint)
    return value


def check_int(what: str, value, *, min: int | None = None, max: int | None = None, hint=""):
    """Return `value` as an `int` if it is an integer in `[min, max]` (either bound optional).

    Accepts Python and NumPy integers and integral floats (`28.0`); rejects bools, non-integral
    or non-finite floats, strings and None.
    """
    number = _real(value)
    ok = (
        number is not None
        and (isinstance(number, numbers.Integral) or math.isfinite(number))
        and int(number) == number
    )
    if ok:
        number = int(number)
        ok = (min is None or number >= min) and (max is None or number <= max)
    if not ok:
        _fail(what, value, "an integer" + _bounds(min, max, False, False), hint)
    return number


def check_number(
    what: str,
    value,
    *,
    positive: bool = False,
    min: float | None = None,
    max: float | None = None,
    finite: bool = True,
    noun: str = "a finite number",
    hint: str = "",
) -> float:
    """Return `value` as a `float` if it is a real number (Python or NumPy scalar) satisfying
    `> 0` (`positive`), `>= min`, `<= max` and, unless `finite=False`, finite; NaN never passes.

    `noun` names what is expected (`"a window side"`), the bounds follow it.
    """
    number = _real(value)
    ok = number is not None
    if ok:
        number = float(number)
        ok = not math.isnan(number) and (math.isfinite(number) or not finite)
        ok = ok and (not positive or number > 0)
        ok = ok and (min is None or number >= min) and (max is None or number <= max)
    if not ok:
        _fail(what, value, noun + _bounds(min, max, positive, True), hint)
    return number


def check_finite(what: str, values) -> np.ndarray:
    """Return `values` as a float64 array if every entry is finite, else raise saying how many
    are NaN or inf and where the first one is."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = first[0] if len(first) == 1 else first
        kinds = " or ".join(
            name
            for name, hit in (("NaN", np.isnan(values).any()), ("inf", np.isinf(values).any()))
            if hit
        )
        raise MdkerasError(
            f"{what} contain {int(bad.sum())} non-finite value(s) ({kinds}), the first at index "
            f"{where} of shape {values.shape}: expected finite numbers; check how they were made."
        )
    return values


def _real(value):
    """`value` as a Python/NumPy real scalar, or None if it is not one (bools are not)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    return value


def _bounds(lo, hi, positive: bool, real: bool) -> str:
    fmt = (lambda x: f"{x:g}") if real else str
    if positive and lo is None:
        lo_text = " > 0"
    elif lo is not None:
        lo_text = f" >= {fmt(lo)}"
    else:
        lo_text = ""
    if lo is not None and hi is not None and not positive:
        return f" in [{fmt(lo)}, {fmt(hi)}]"
    return lo_text + (f"{' and' if lo_text else ''} <= {fmt(hi)}" if hi is not None else "")


def _fail(what: str, value, expected: str, hint: str):
    raise MdkerasError(
        f"{what}={value!r} is not allowed: expected {expected}" + (f"; {hint}." if hint else ".")
    )
