"""Pair potentials (SPEC §1): values, signs, extrema, f = -U', f_max and the force direction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

import mdkeras
from mdkeras.errors import MdkerasError
from mdkeras.potentials import (
    POTENTIALS,
    ModelForm,
    Term,
    check_potential,
    f_max,
    force_on_target,
    label,
    pair_force,
)


def lj_energy(r):
    return 4.0 * (r**-12.0 - r**-6.0)


def coulomb_energy(r):
    return 1.0 / r


ENERGY = {"lj": lj_energy, "coulomb": coulomb_energy}


# --- Lennard-Jones ---------------------------------------------------------------------------


def test_lj_force_vanishes_at_two_to_the_sixth():
    r0 = 2.0 ** (1.0 / 6.0)
    assert abs(pair_force("lj", r0)) < 1e-12
    # and changes sign there: repulsive just inside, attractive just outside
    assert pair_force("lj", r0 * (1 - 1e-6)) > 0
    assert pair_force("lj", r0 * (1 + 1e-6)) < 0


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (0.5, 48.0 * 2.0**13 - 24.0 * 2.0**7),  # 390144, strongly repulsive
        (1.0, 24.0),  # 48 - 24
        (2.0, 48.0 / 2.0**13 - 24.0 / 2.0**7),  # -0.181640625, attractive
        (1.5, 48.0 / 1.5**13 - 24.0 / 1.5**7),  # about -1.158
        (3.0, 48.0 / 3.0**13 - 24.0 / 3.0**7),
    ],
)
def test_lj_values_by_hand(r, expected):
    assert pair_force("lj", r) == pytest.approx(expected, rel=1e-14)


def test_lj_hand_values_have_the_expected_signs():
    assert pair_force("lj", 0.5) == pytest.approx(390144.0)
    assert pair_force("lj", 2.0) == pytest.approx(-0.181640625)
    r = np.array([0.8, 0.95, 1.05, 1.12])  # all below 2^(1/6) ~ 1.1225
    assert np.all(pair_force("lj", r) > 0)
    r = np.array([1.13, 1.3, 2.0, 5.0, 10.0])
    assert np.all(pair_force("lj", r) < 0)


def test_lj_most_attractive_at_26_over_7_to_the_sixth():
    r_star = (26.0 / 7.0) ** (1.0 / 6.0)
    res = minimize_scalar(
        lambda r: pair_force("lj", r), bounds=(1.0, 3.0), method="bounded", options={"xatol": 1e-10}
    )
    assert res.x == pytest.approx(r_star, abs=1e-6)
    grid = np.linspace(1.0, 5.0, 40_001)
    f = pair_force("lj", grid)
    assert grid[np.argmin(f)] == pytest.approx(r_star, abs=1e-4)
    # analytic depth: f(r*) = 48 r*^-13 - 24 r*^-7
    assert f.min() == pytest.approx(48 * r_star**-13 - 24 * r_star**-7, rel=1e-6)
    assert pair_force("lj", r_star) < pair_force("lj", r_star * 0.99)
    assert pair_force("lj", r_star) < pair_force("lj", r_star * 1.01)


# --- Coulomb --------------------------------------------------------------------------------


@pytest.mark.parametrize("r", [0.1, 0.5, 1.0, 2.0, 7.5])
def test_coulomb_inverse_square(r):
    assert pair_force("coulomb", r) == pytest.approx(1.0 / r**2, rel=1e-14)
    assert pair_force("coulomb", r) > 0  # like charges always repel


# --- general --------------------------------------------------------------------------------


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_force_is_minus_energy_derivative(potential):
    r = np.linspace(0.9, 4.0, 50)
    eps = 1e-6 * r
    u = ENERGY[potential]
    numeric = -(u(r + eps) - u(r - eps)) / (2 * eps)
    f = pair_force(potential, r)
    scale = np.maximum(np.abs(f), 1e-3)
    assert np.all(np.abs(f - numeric) / scale < 1e-6)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_pair_force_shapes_and_dtype(potential):
    assert isinstance(pair_force(potential, 1.3), float)
    r = np.full((3, 4), 1.3, dtype=np.float32)
    f = pair_force(potential, r)
    assert f.shape == (3, 4) and f.dtype == np.float64
    assert np.all(f == pair_force(potential, float(np.float32(1.3))))


def test_near_overlap_is_finite_in_float64():
    # 48 * 0.001^-13 = 4.8e40 overflows float32 (max ~3.4e38) but not float64
    f = pair_force("lj", 0.001)
    assert np.isfinite(f) and f == pytest.approx(4.8e40, rel=1e-9)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
@pytest.mark.parametrize("h", [8 / 28, 5 / 28, 8 / 16, 1.5, 2.0])
def test_f_max_is_abs_pair_force_at_cell_side(potential, h):
    by_hand = abs(48 * h**-13 - 24 * h**-7) if potential == "lj" else h**-2
    assert f_max(potential, h) == pytest.approx(by_hand, rel=1e-13)
    assert mdkeras.f_max(potential, h) == abs(pair_force(potential, h))
    assert f_max(potential, h) > 0  # also where the LJ force is attractive (h = 1.5, 2)


@pytest.mark.parametrize("cell", [0.0, -1.0, float("nan"), float("inf")])
def test_f_max_rejects_bad_cell(cell):
    with pytest.raises(MdkerasError, match="cell="):
        f_max("lj", cell)


@pytest.mark.parametrize(
    "call",
    [
        lambda: pair_force("morse", 1.0),
        lambda: f_max("morse", 0.5),
        lambda: force_on_target("morse", np.array([1.0, 0.0])),
        lambda: check_potential("morse"),
        lambda: mdkeras.featurize(
            np.zeros((2, 2)) + [[0, 0], [1, 1]], 10.0, [0], potential="morse", window=4.0, grid=8
        ),
    ],
)
def test_unknown_potential_names_bad_and_allowed_values(call):
    with pytest.raises(MdkerasError) as info:
        call()
    msg = str(info.value)
    assert "morse" in msg and "lj" in msg and "coulomb" in msg
    assert isinstance(info.value, ValueError)


def test_potential_names_are_case_sensitive_and_exact():
    for bad in ("LJ", "Coulomb", "lj ", ""):
        with pytest.raises(MdkerasError):
            check_potential(bad)
    assert check_potential("lj") == "lj"


# --- force on the target --------------------------------------------------------------------


def test_repulsion_pushes_target_away():
    # LJ at r = 1: f = 24 (repulsive); neighbour on +x -> target pushed to -x
    np.testing.assert_allclose(force_on_target("lj", [1.0, 0.0]), [-24.0, 0.0], rtol=1e-14)
    # Coulomb, neighbour at +2 y: f = 1/4, target pushed to -y
    np.testing.assert_allclose(force_on_target("coulomb", [0.0, 2.0]), [0.0, -0.25], rtol=1e-14)
    # neighbour to the lower left pushes up and right, along the diagonal
    F = force_on_target("coulomb", [-3.0, -4.0])  # r = 5, f = 1/25
    np.testing.assert_allclose(F, [3.0 / 125.0, 4.0 / 125.0], rtol=1e-14)


def test_attraction_pulls_target_towards_neighbour():
    # LJ at r = 2 is attractive: f = -0.181640625; neighbour at -2 x pulls the target to -x
    np.testing.assert_allclose(force_on_target("lj", [-2.0, 0.0]), [-0.181640625, 0.0], rtol=1e-14)
    d = np.array([1.2, -0.9])  # r = 1.5, attractive
    F = force_on_target("lj", d)
    assert np.dot(F, d) > 0  # towards the neighbour
    assert np.linalg.norm(F) == pytest.approx(abs(48 / 1.5**13 - 24 / 1.5**7), rel=1e-13)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_force_on_target_batched(potential):
    rng = np.random.default_rng(3)
    d = rng.uniform(-3, 3, size=(3, 4, 2))
    F = force_on_target(potential, d)
    assert F.shape == (3, 4, 2) and F.dtype == np.float64
    r = np.linalg.norm(d, axis=-1)
    f = pair_force(potential, r)
    # anti-parallel to d with magnitude |f|, sign by repulsion/attraction
    np.testing.assert_allclose(np.linalg.norm(F, axis=-1), np.abs(f), rtol=1e-12)
    cos = np.einsum("...i,...i->...", F, d) / (np.linalg.norm(F, axis=-1) * r)
    np.testing.assert_allclose(cos, -np.sign(f), atol=1e-12)


# --- bad input: one clear error naming the value --------------------------------------------


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
@pytest.mark.parametrize(
    ("r", "shown"),
    [
        (0.0, "r=0.0"),  # f diverges: NaN before
        (-1.5, "r=-1.5"),  # a negative distance: a sign-flipped force before
        (float("nan"), "r=nan"),
        (float("inf"), "r=inf"),
        (-float("inf"), "r=-inf"),
        ("a", "r='a'"),
        (None, "r=None"),
        (True, "r=True"),
    ],
)
def test_pair_force_rejects_a_bad_distance(potential, r, shown):
    with pytest.raises(MdkerasError) as info:
        pair_force(potential, r)
    msg = str(info.value)
    assert msg.startswith(f"{shown} is not allowed") and "> 0" in msg and "\n" not in msg


@pytest.mark.parametrize(
    ("r", "shown", "where"),
    [
        ([1.0, 0.0, 2.0], "r=0.0", "r[1] of shape (3,)"),
        (np.array([[1.0, 2.0], [3.0, -4.0]]), "r=-4.0", "r[1, 1] of shape (2, 2)"),
        (np.array([1.0, np.nan, -1.0]), "r=nan", "r[1] of shape (3,)"),
    ],
)
def test_pair_force_names_the_first_bad_distance_of_an_array(r, shown, where):
    with pytest.raises(MdkerasError) as info:
        pair_force("lj", r)
    assert str(info.value).startswith(f"{shown} is not allowed") and where in str(info.value)


def test_pair_force_rejects_non_numeric_arrays():
    with pytest.raises(MdkerasError, match="dtype <U1"):
        pair_force("coulomb", np.array(["a", "b"]))
    with pytest.raises(MdkerasError, match="r="):
        pair_force("coulomb", [[1.0, 2.0], [3.0]])  # ragged


@pytest.mark.parametrize("cell", ["a", None, True, [0.5]])
def test_f_max_rejects_a_cell_that_is_not_a_number(cell):
    with pytest.raises(MdkerasError) as info:
        f_max("lj", cell)
    assert str(info.value).startswith(f"cell={cell!r} is not allowed")


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_f_max_rejects_a_cell_whose_class_range_overflows(potential):
    with pytest.raises(MdkerasError) as info:
        f_max(potential, 1e-200)  # |f(h)| is inf in float64
    msg = str(info.value)
    assert "cell=1e-200" in msg and "inf" in msg and "finite" in msg


def test_tiny_distances_overflow_to_inf_as_documented():
    """`f(r)/r` is computed as a power of `1/r^2`: inf below r ~ 1e-22 (LJ), 1e-102 (Coulomb)."""
    assert pair_force("lj", 1e-21) == pytest.approx(48e273) and pair_force("lj", 1e-23) == np.inf
    assert pair_force("coulomb", 1e-100) == pytest.approx(1e200)
    assert pair_force("coulomb", 1e-104) == np.inf


# --- the table ------------------------------------------------------------------------------


def test_table_is_the_allowed_names():
    assert list(POTENTIALS) == ["lj", "coulomb"]
    assert "lj" in POTENTIALS and "morse" not in POTENTIALS
    for name, entry in POTENTIALS.items():
        assert entry.name == name
    assert label("lj") == "LJ" and label("coulomb") == "Coulomb"
    assert label("morse") == "morse"  # a name from an old record, shown as it is


@pytest.mark.parametrize("potential", list(POTENTIALS))
def test_model_form_at_its_truth_is_the_pair_force(potential):
    entry = POTENTIALS[potential]
    r = np.geomspace(0.3, 10.0, 200)
    f = pair_force(potential, r)
    np.testing.assert_allclose(entry.model.force(entry.model.truth, r), f, rtol=1e-12)
    g = entry.model.force_over_r(entry.model.truth)
    np.testing.assert_allclose(r * g(r * r), f, rtol=1e-12)
    assert set(entry.model.truth) == set(entry.model.parameters)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_table_energy_is_the_spec_energy(potential):
    r = np.linspace(0.9, 4.0, 50)
    np.testing.assert_allclose(POTENTIALS[potential].energy(r), ENERGY[potential](r), rtol=1e-14)


@pytest.mark.parametrize("potential", list(POTENTIALS))
def test_every_entry_is_consistent_force_minus_energy_derivative(potential):
    entry = POTENTIALS[potential]
    r = np.linspace(0.9, 4.0, 50)
    eps = 1e-6 * r
    numeric = -(entry.energy(r + eps) - entry.energy(r - eps)) / (2 * eps)
    f = pair_force(potential, r)
    assert np.all(np.abs(f - numeric) / np.maximum(np.abs(f), 1e-3) < 1e-6)


def test_lj_derived_points_at_the_truth_are_the_zero_and_the_well():
    model = POTENTIALS["lj"].model
    points = model.derived(model.truth)
    assert float(points["zero_crossing"]) == 2.0 ** (1.0 / 6.0)
    assert float(points["well_minimum"]) == pytest.approx((26.0 / 7.0) ** (1.0 / 6.0), rel=1e-15)
    assert abs(pair_force("lj", float(points["zero_crossing"]))) < 1e-12
    assert POTENTIALS["coulomb"].model.derived(POTENTIALS["coulomb"].model.truth) == {}


def test_md_cutoffs_follow_spec_2b():
    assert POTENTIALS["lj"].md_cutoff == 4.0 and POTENTIALS["coulomb"].md_cutoff == 5.0
    # beyond the LJ cut-off the neglected force is below 2e-3 (SPEC §2b)
    assert abs(pair_force("lj", 4.0)) < 2e-3


def test_model_forms_reject_more_than_one_fitted_exponent_or_a_wrong_truth():
    with pytest.raises(MdkerasError, match="at most one"):
        ModelForm("A r^-p + B r^-q", (Term("A", "p"), Term("B", "q")), {}, bounds=(1, 2))
    with pytest.raises(MdkerasError, match="with bounds"):
        ModelForm("A r^-p", (Term("A", "p"),), {"A": 1.0, "p": 2.0})
    with pytest.raises(MdkerasError, match="truth"):
        ModelForm("A r^-2", (Term("A", 2.0),), {"B": 1.0})
