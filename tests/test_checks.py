"""The shared input checks: what passes, what it is returned as, and the one-line messages."""

from __future__ import annotations

import numpy as np
import pytest

from mdkeras.checks import check_choice, check_finite, check_int, check_number
from mdkeras.errors import MdkerasError

# --- check_choice ------------------------------------------------------------------------------


def test_choice_returns_the_value():
    assert check_choice("head", "joint", ("joint", "separate")) == "joint"
    assert check_choice("n", 3, range(5)) == 3


@pytest.mark.parametrize("value", ["morse", None, 1, True, np.array(["lj", "lj"]), ["lj"]])
def test_choice_rejects_and_names_every_allowed_value(value):
    with pytest.raises(MdkerasError) as info:
        check_choice("potential", value, ("lj", "coulomb"))
    assert str(info.value) == (
        f"potential={value!r} is not allowed: expected one of 'lj', 'coulomb'."
    )


def test_choice_hint():
    with pytest.raises(MdkerasError, match=r"expected one of 'a', 'b'; use --x a\.$"):
        check_choice("x", "c", ("a", "b"), hint="use --x a")


# --- check_int ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [2, 28, np.int64(20), np.uint8(7), 28.0, np.float32(4.0), 10**30])
def test_int_accepts_integers_and_returns_python_int(value):
    got = check_int("grid", value, min=2)
    assert type(got) is int and got == int(value)


@pytest.mark.parametrize(
    "value", ["x", "28", None, True, False, np.True_, 2.5, float("nan"), float("inf"), 3 + 0j, [3]]
)
def test_int_rejects_non_integers(value):
    with pytest.raises(MdkerasError) as info:
        check_int("grid", value, min=2)
    assert str(info.value) == f"grid={value!r} is not allowed: expected an integer >= 2."


@pytest.mark.parametrize(
    ("kw", "good", "bad", "expected"),
    [
        ({"min": 2}, [2, 3], [1, 0, -5], "an integer >= 2"),
        ({"max": 9}, [9, -3], [10], "an integer <= 9"),
        (
            {"min": 0, "max": 2**32 - 1},
            [0, 2**32 - 1],
            [-1, 2**32],
            "an integer in [0, 4294967295]",
        ),
        ({}, [-(10**9), 0], [], "an integer"),
    ],
)
def test_int_bounds_are_inclusive(kw, good, bad, expected):
    for value in good:
        assert check_int("seed", value, **kw) == value
    for value in bad:
        with pytest.raises(MdkerasError) as info:
            check_int("seed", value, **kw)
        assert str(info.value) == f"seed={value!r} is not allowed: expected {expected}."


def test_int_hint():
    with pytest.raises(MdkerasError) as info:
        check_int("grid", 1, min=16, hint="use e.g. --grid 28")
    assert (
        str(info.value) == "grid=1 is not allowed: expected an integer >= 16; use e.g. --grid 28."
    )


# --- check_number ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [20, 20.0, np.int64(20), np.float32(20.0), np.array(20.0)])
def test_number_accepts_real_scalars_and_returns_float(value):
    got = check_number("box", value, positive=True)
    assert type(got) is float and got == 20.0


@pytest.mark.parametrize(
    "value",
    [
        "20",
        None,
        True,
        np.bool_(True),
        float("nan"),
        float("inf"),
        -float("inf"),
        0,
        -1.0,
        1j,
        [1.0],
    ],
)
def test_number_rejects(value):
    with pytest.raises(MdkerasError) as info:
        check_number("box", value, positive=True, noun="a box side")
    assert str(info.value) == f"box={value!r} is not allowed: expected a box side > 0."


def test_number_bounds_and_infinity():
    assert check_number("tolerance", 0, min=0) == 0.0
    with pytest.raises(MdkerasError, match=r"tolerance=-0\.1 .* a finite number >= 0\.$"):
        check_number("tolerance", -0.1, min=0)
    assert check_number("x", float("inf"), positive=True, finite=False) == float("inf")
    with pytest.raises(MdkerasError, match="x=nan"):
        check_number("x", float("nan"), finite=False)
    with pytest.raises(MdkerasError, match=r"expected a finite number in \[0, 1\]\.$"):
        check_number("fraction", 1.5, min=0, max=1)
    with pytest.raises(MdkerasError, match=r"expected a finite number > 0 and <= 1\.$"):
        check_number("fraction", 0.0, positive=True, max=1)
    assert check_number("any", -3) == -3.0


# --- check_finite ------------------------------------------------------------------------------


def test_finite_returns_float_array():
    out = check_finite("forces", [[1, 2], [3, 4]])
    assert out.dtype == np.float64 and out.shape == (2, 2)


def test_finite_counts_and_locates_the_bad_values():
    forces = np.zeros((5, 2))
    forces[3, 1] = np.nan
    forces[4, 0] = np.inf
    with pytest.raises(MdkerasError) as info:
        check_finite("forces", forces)
    message = str(info.value)
    assert "2 non-finite value(s) (NaN or inf)" in message
    assert "index (3, 1) of shape (5, 2)" in message
    assert "\n" not in message


def test_finite_one_dimensional_index():
    with pytest.raises(
        MdkerasError, match=r"1 non-finite value\(s\) \(inf\), the first at index 2 "
    ):
        check_finite("r", [1.0, 2.0, -np.inf])
