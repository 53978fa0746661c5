"""The occupancy-grid descriptor and its window force (SPEC §3–4), against hand calculations,
physical laws, the D4 symmetry, and the brute-force reference in `tests/reference.py`."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference import featurize_bruteforce

import mdkeras
from mdkeras.descriptors import featurize
from mdkeras.errors import MdkerasError
from mdkeras.symmetry import MATRICES, transform_grids, transform_vectors


def lj_f(r):
    return 48.0 * r**-13 - 24.0 * r**-7


def coulomb_f(r):
    return r**-2


HAND_F = {"lj": lj_f, "coulomb": coulomb_f}


def hand_force(potential, d):
    """-f(|d|) d/|d| for one displacement, from the SPEC formulas."""
    r = math.hypot(*d)
    f = HAND_F[potential](r)
    return np.array([-f * d[0] / r, -f * d[1] / r])


def random_config(rng, particles, density, targets):
    box = math.sqrt(particles / density)
    positions = rng.uniform(0.0, box, size=(particles, 2))
    chosen = rng.choice(particles, size=targets, replace=False)
    return positions, box, chosen


def separated_cluster(rng, count, side, min_dist, origin, avoid=()):
    """`count` random points in a `side` square at `origin`, pairwise (and from the points in
    `avoid`) at least `min_dist` apart."""
    pts = []
    while len(pts) < count:
        p = origin + rng.uniform(0, side, size=2)
        if all(np.hypot(*(p - q)) >= min_dist for q in [*avoid, *pts]):
            pts.append(p)
    return np.array(pts)


def assert_forces_close(actual, expected, scale, rtol=1e-10):
    """|actual - expected| <= rtol |expected| + 1e-13 * (sum of |pair forces|) per target."""
    tol = rtol * np.abs(expected) + 1e-13 * np.asarray(scale)[:, None]
    bad = np.abs(actual - expected) > tol
    assert not bad.any(), (
        f"{bad.any(axis=1).sum()} targets differ, e.g. {actual[bad.any(axis=1)][:3]} vs "
        f"{expected[bad.any(axis=1)][:3]}"
    )


# --- hand-computed two-particle cases -------------------------------------------------------


@pytest.mark.parametrize(
    ("potential", "d", "cell", "mirror_cell"),
    [
        # W = 4, n = 8, h = 0.5: ix = floor((d_x + 2) / 0.5), iy = floor((d_y + 2) / 0.5)
        ("lj", (1.3, -0.8), (2, 6), (5, 1)),  # (iy, ix); mirror d = (-1.3, 0.8)
        ("coulomb", (1.3, -0.8), (2, 6), (5, 1)),
        ("lj", (-1.7, 0.3), (4, 0), (3, 7)),
        ("coulomb", (-0.2, 1.9), (7, 3), (0, 4)),
        ("lj", (0.9, 0.6), (5, 5), (2, 2)),
    ],
)
def test_two_particles_cell_and_force(potential, d, cell, mirror_cell):
    target = np.array([10.0, 10.0])
    positions = np.array([target, target + d])
    grids, forces = mdkeras.featurize(
        positions, 20.0, np.array([0, 1]), potential=potential, window=4.0, grid=8
    )
    assert grids.dtype == np.uint8 and grids.shape == (2, 8, 8)
    assert forces.dtype == np.float64 and forces.shape == (2, 2)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[cell] = 1
    np.testing.assert_array_equal(grids[0], expected)  # the target itself is not counted
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[mirror_cell] = 1
    np.testing.assert_array_equal(grids[1], expected)
    np.testing.assert_allclose(forces[0], hand_force(potential, d), rtol=1e-12)
    np.testing.assert_allclose(forces[1], -forces[0], rtol=1e-12)


def test_lone_target_has_empty_grid_and_zero_force():
    positions = np.array([[1.0, 1.0], [10.0, 10.0]])
    grids, forces = featurize(positions, 20.0, [0], potential="coulomb", window=4.0, grid=8)
    assert grids.sum() == 0
    np.testing.assert_array_equal(forces, [[0.0, 0.0]])


def test_square_window_not_radial_cutoff():
    """A corner particle (radius > W/2) is counted; one just past the edge (radius < W/2 + a bit)
    is not, even though the Coulomb force from it is far from negligible."""
    target = np.array([15.0, 15.0])
    corner = target + [3.9, 3.9]  # radius 5.5 > W/2 = 4, inside the square
    outside = target + [-4.1, 0.0]  # radius 4.1, outside the square
    positions = np.array([target, corner, outside])
    grids, forces = featurize(positions, 30.0, [0], potential="coulomb", window=8.0, grid=16)
    assert grids.sum() == 1 and grids[0, 15, 15] == 1
    np.testing.assert_allclose(forces[0], hand_force("coulomb", (3.9, 3.9)), rtol=1e-12)


# --- physical laws -------------------------------------------------------------------------


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_newton_third_law_isolated_clusters(potential):
    rng = np.random.default_rng(11)
    a = separated_cluster(rng, 6, 3.0, 0.95, np.array([10.0, 10.0]))
    b = separated_cluster(rng, 5, 3.0, 0.95, np.array([30.0, 32.0]))  # far from cluster a
    positions = np.concatenate([a, b])
    targets = np.arange(len(positions))
    grids, forces = featurize(positions, 50.0, targets, potential=potential, window=8.0, grid=16)
    # everyone in a cluster sees exactly the rest of its cluster
    np.testing.assert_array_equal(grids.sum(axis=(1, 2)), [5] * 6 + [4] * 5)
    biggest = np.abs(forces).max()
    assert biggest > 0
    assert np.all(np.abs(forces[:6].sum(axis=0)) < 1e-12 * biggest)
    assert np.all(np.abs(forces[6:].sum(axis=0)) < 1e-12 * biggest)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_newton_third_law_whole_periodic_configuration(potential):
    """With every particle a target, each counted pair appears twice with opposite forces."""
    rng = np.random.default_rng(12)
    positions, box, _ = random_config(rng, 300, 0.5, 1)
    targets = np.arange(300)
    _, forces = featurize(positions, box, targets, potential=potential, window=5.0, grid=16)
    scale = np.abs(forces).sum()
    assert np.all(np.abs(forces.sum(axis=0)) < 1e-12 * scale)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_superposition(potential):
    rng = np.random.default_rng(5)
    target = np.array([[15.0, 15.0]])
    ab = separated_cluster(rng, 9, 7.0, 0.8, target[0] - 3.5, avoid=target)
    a, b = ab[:4], ab[4:]
    b = np.concatenate([b, target + [[5.0, 0.5]]])  # plus one outside the window: adds nothing

    def run(neighbours):
        return featurize(
            np.concatenate([target, neighbours]),
            30.0,
            [0],
            potential=potential,
            window=8.0,
            grid=16,
        )

    g_ab, f_ab = run(np.concatenate([a, b]))
    g_a, f_a = run(a)
    g_b, f_b = run(b)
    np.testing.assert_array_equal(g_ab, g_a + g_b)
    assert g_ab.sum() == len(a) + len(b) - 1
    np.testing.assert_allclose(f_ab, f_a + f_b, rtol=1e-12, atol=1e-12 * np.abs(f_ab).max())
    by_hand = sum(hand_force(potential, p - target[0]) for p in np.concatenate([a, b[:-1]]))
    np.testing.assert_allclose(f_ab[0], by_hand, rtol=1e-10)


# --- symmetry ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sym_config():
    rng = np.random.default_rng(21)
    return random_config(rng, 600, 0.5, 60)


@pytest.mark.parametrize("grid", [16, 7])
@pytest.mark.parametrize("potential", ["lj", "coulomb"])
@pytest.mark.parametrize("k", range(8))
def test_d4_equivariance(sym_config, potential, grid, k):
    positions, box, targets = sym_config
    g, f = featurize(positions, box, targets, potential=potential, window=6.0, grid=grid)
    assert g.sum() > 0 and len(np.unique(g.reshape(len(g), -1), axis=0)) == len(g)
    g2, f2 = featurize(
        transform_vectors(positions, k), box, targets, potential=potential, window=6.0, grid=grid
    )
    np.testing.assert_array_equal(g2, transform_grids(g, k))
    np.testing.assert_allclose(f2, f @ MATRICES[k].T, rtol=1e-12, atol=1e-12 * np.abs(f).max())


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_quarter_turn_and_reflection_explicitly(sym_config, potential):
    positions, box, targets = sym_config
    kw = dict(potential=potential, window=6.0, grid=16)
    g, f = featurize(positions, box, targets, **kw)
    x, y = positions[:, 0], positions[:, 1]
    # 90 degrees counter-clockwise: (x, y) -> (-y, x); rows are +y, so the array turns clockwise
    g_rot, f_rot = featurize(np.stack([-y, x], axis=1), box, targets, **kw)
    np.testing.assert_array_equal(g_rot, np.rot90(g, -1, axes=(1, 2)))
    np.testing.assert_allclose(
        f_rot, np.stack([-f[:, 1], f[:, 0]], axis=1), rtol=1e-12, atol=1e-12 * np.abs(f).max()
    )
    # reflection x -> -x: the columns reverse
    g_ref, f_ref = featurize(np.stack([-x, y], axis=1), box, targets, **kw)
    np.testing.assert_array_equal(g_ref, g[:, :, ::-1])
    np.testing.assert_allclose(
        f_ref, np.stack([-f[:, 0], f[:, 1]], axis=1), rtol=1e-12, atol=1e-12 * np.abs(f).max()
    )
    # and the library's own element numbering agrees: k = 1 is the quarter turn, k = 4 the flip
    np.testing.assert_array_equal(transform_grids(g, 1), np.rot90(g, -1, axes=(1, 2)))
    np.testing.assert_array_equal(transform_grids(g, 4), g[:, :, ::-1])


def test_quarter_turn_single_neighbour_by_hand():
    # d = (1.3, 0.2) in W = 4, n = 8: ix = 6, iy = 4. Turned: d = (-0.2, 1.3): ix = 3, iy = 6.
    kw = dict(potential="lj", window=4.0, grid=8)
    g, _ = featurize(np.array([[10.0, 10.0], [11.3, 10.2]]), 20.0, [0], **kw)
    g2, _ = featurize(np.array([[-10.0, 10.0], [-10.2, 11.3]]), 20.0, [0], **kw)
    assert g[0, 4, 6] == 1 and g2[0, 6, 3] == 1
    np.testing.assert_array_equal(g2, np.rot90(g, -1, axes=(1, 2)))


# --- periodic boundaries -------------------------------------------------------------------


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_neighbour_across_the_box_edge(potential):
    # box 10, W = 4, n = 8. Target at x = 0.5, neighbour at x = 9.7: d = (-0.8, 0)
    positions = np.array([[0.5, 5.0], [9.7, 5.0]])
    grids, forces = featurize(positions, 10.0, [0], potential=potential, window=4.0, grid=8)
    assert grids.sum() == 1 and grids[0, 4, 2] == 1  # ix = floor(1.2/0.5) = 2, iy = 4
    assert forces[0, 0] > 0  # repulsion across the edge pushes the target to +x
    np.testing.assert_allclose(forces[0], hand_force(potential, (-0.8, 0.0)), rtol=1e-12)


def test_neighbour_across_the_corner():
    # target near the top-left corner, neighbour near the bottom-right one: d = (-0.4, +0.4)
    positions = np.array([[0.2, 9.9], [9.8, 0.3]])
    grids, forces = featurize(positions, 10.0, [0, 1], potential="coulomb", window=4.0, grid=8)
    assert grids[0, 4, 3] == 1 and grids[0].sum() == 1  # ix = floor(1.6/.5), iy = floor(2.4/.5)
    assert grids[1, 3, 4] == 1 and grids[1].sum() == 1
    assert forces[0, 0] > 0 and forces[0, 1] < 0  # pushed away: +x, -y
    np.testing.assert_allclose(forces[0], hand_force("coulomb", (-0.4, 0.4)), rtol=1e-12)
    np.testing.assert_allclose(forces[1], -forces[0], rtol=1e-12)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_unwrapped_positions_give_the_same_result(potential):
    rng = np.random.default_rng(8)
    positions, box, targets = random_config(rng, 500, 0.5, 50)
    shifted = positions + box * rng.integers(-3, 4, size=positions.shape)
    kw = dict(potential=potential, window=6.0, grid=16)
    g, f = featurize(positions, box, targets, **kw)
    g2, f2 = featurize(shifted, box, targets, **kw)
    np.testing.assert_array_equal(g2, g)
    _, _, _, scale = featurize_bruteforce(
        positions, box, targets, potential, 6.0, 16, return_extra=True
    )
    assert_forces_close(f2, f, scale, rtol=1e-9)


# --- cell boundaries -----------------------------------------------------------------------

BELOW_8 = np.nextafter(8.0, -np.inf)
BELOW_12 = np.nextafter(12.0, -np.inf)


@pytest.mark.parametrize(
    ("neighbour", "cell"),
    [
        ((8.0, 10.25), (4, 0)),  # d_x = -W/2 exactly: counted, column 0
        ((12.0, 10.25), None),  # d_x = +W/2 exactly: outside (half-open)
        ((BELOW_12, 10.25), (4, 7)),  # just inside the upper edge: last column
        ((BELOW_8, 10.25), None),  # just outside the lower edge
        ((10.25, 8.0), (0, 4)),  # the same along y
        ((10.25, 12.0), None),
        ((10.25, BELOW_12), (7, 4)),
        ((10.25, BELOW_8), None),
        ((8.0, 8.0), (0, 0)),  # lower-left corner point is inside
        ((8.0, 12.0), None),
        ((BELOW_12, BELOW_12), (7, 7)),
        ((10.0, 10.5), (5, 4)),  # d = (0, h): an inner cell edge belongs to the upper cell
        ((10.0, np.nextafter(10.5, 0)), (4, 4)),
    ],
)
@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_window_and_cell_edges(potential, neighbour, cell):
    # box 20, target (10, 10), W = 4, n = 8, h = 0.5
    positions = np.array([[10.0, 10.0], neighbour])
    grids, forces = featurize(positions, 20.0, [0], potential=potential, window=4.0, grid=8)
    if cell is None:
        assert grids.sum() == 0
        np.testing.assert_array_equal(forces, [[0.0, 0.0]])
    else:
        assert grids.sum() == 1 and grids[0][cell] == 1
        d = np.asarray(neighbour) - 10.0
        np.testing.assert_allclose(forces[0], hand_force(potential, d), rtol=1e-12)


# --- the fast path against the brute-force reference ---------------------------------------

CASES = {
    # name: (potential, particles, density, window, targets)
    "lj": ("lj", 2000, 0.5, 8.0, 250),
    "coulomb": ("coulomb", 2000, 0.5, 5.0, 250),
}


@pytest.mark.parametrize("grid", [16, 28, 56])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fast_path_equals_reference(case, grid):
    potential, particles, density, window, n_targets = CASES[case]
    rng = np.random.default_rng(1000 + grid + len(case))
    positions, box, targets = random_config(rng, particles, density, n_targets)
    g, f = featurize(positions, box, targets, potential=potential, window=window, grid=grid)
    g_ref, f_ref, in_window, scale = featurize_bruteforce(
        positions, box, targets, potential, window, grid, return_extra=True
    )
    np.testing.assert_array_equal(g, g_ref)
    np.testing.assert_array_equal(g.sum(axis=(1, 2)), in_window)
    assert in_window.min() > 0
    assert_forces_close(f, f_ref, scale)


@pytest.mark.parametrize(
    ("potential", "particles", "box", "window", "grid"),
    [
        ("lj", 100, 10.0, 7.0, 16),  # W > 2B/3: fewer than 3 cells a side, no cell list
        ("coulomb", 100, 10.0, 9.5, 28),  # W close to B
        ("coulomb", 150, 10.0, 6.0, 16),  # B/2 < W < 2B/3: exactly 3 cells, all neighbours
        ("lj", 400, 20.0, 5.0, 7),  # odd grid, target at a cell centre
        ("coulomb", 3000, 30.0, 2.0, 2),  # many cells, a 2 x 2 grid
    ],
)
def test_fast_path_equals_reference_special_boxes(potential, particles, box, window, grid):
    rng = np.random.default_rng(77)
    positions = rng.uniform(0.0, box, size=(particles, 2))
    targets = rng.choice(particles, size=min(particles, 80), replace=False)
    g, f = featurize(positions, box, targets, potential=potential, window=window, grid=grid)
    g_ref, f_ref, in_window, scale = featurize_bruteforce(
        positions, box, targets, potential, window, grid, return_extra=True
    )
    np.testing.assert_array_equal(g, g_ref)
    np.testing.assert_array_equal(g.sum(axis=(1, 2)), in_window)
    assert_forces_close(f, f_ref, scale)


def test_target_order_and_duplicates_do_not_matter():
    rng = np.random.default_rng(4)
    positions, box, targets = random_config(rng, 800, 0.5, 40)
    kw = dict(potential="lj", window=8.0, grid=28)
    g, f = featurize(positions, box, targets, **kw)
    perm = rng.permutation(40)
    g2, f2 = featurize(positions, box, np.concatenate([targets[perm], targets[:3]]), **kw)
    np.testing.assert_array_equal(g2[:40], g[perm])
    np.testing.assert_array_equal(g2[40:], g[:3])
    _, _, _, scale = featurize_bruteforce(positions, box, targets, "lj", 8.0, 28, return_extra=True)
    assert_forces_close(f2[:40], f[perm], scale[perm], rtol=1e-12)
    assert_forces_close(f2[40:], f[:3], scale[:3], rtol=1e-12)


# --- counts at the uint8 limit ---------------------------------------------------------------


def crowded(count):
    """A target at (10, 10) and `count` particles inside cell [iy=5, ix=5] of W = 4, n = 8."""
    rng = np.random.default_rng(count)
    cell = 10.5 + rng.uniform(0.01, 0.49, size=(count, 2))
    return np.concatenate([[[10.0, 10.0]], cell])


def test_255_in_one_cell_is_fine():
    grids, forces = featurize(crowded(255), 20.0, [0], potential="coulomb", window=4.0, grid=8)
    assert grids[0, 5, 5] == 255 and grids.sum() == 255
    assert forces[0, 0] < 0 and forces[0, 1] < 0  # all of them push down-left


@pytest.mark.parametrize("count", [256, 300])
def test_too_many_in_one_cell_is_an_error_not_a_wrap(count):
    with pytest.raises(MdkerasError, match=str(count)):
        featurize(crowded(count), 20.0, [0], potential="coulomb", window=4.0, grid=8)


# --- bad input -----------------------------------------------------------------------------

GOOD = dict(
    positions=np.array([[1.0, 1.0], [2.0, 2.5], [5.0, 5.0]]),
    box=10.0,
    targets=np.array([0, 1]),
    potential="lj",
    window=4.0,
    grid=8,
)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"potential": "morse"}, "morse"),
        ({"window": 0.0}, "window=0.0"),
        ({"window": -2.0}, "window=-2.0"),
        ({"window": float("nan")}, "window=nan"),
        ({"window": 10.0}, "window=10.0"),  # window == box
        ({"window": 12.5}, "window=12.5"),  # window > box
        ({"grid": 1}, "grid=1"),
        ({"grid": 0}, "grid=0"),
        ({"grid": 2.5}, "grid=2.5"),
        ({"box": 0.0}, "box=0.0"),
        ({"box": float("inf")}, "box=inf"),
        ({"positions": np.array([[1.0, 1.0], [np.nan, 2.0], [5.0, 5.0]])}, "NaN"),
        ({"positions": np.array([[1.0, 1.0], [2.0, np.inf], [5.0, 5.0]])}, "inf"),
        ({"targets": np.array([0, 3])}, "3"),
        ({"targets": np.array([-1])}, "-1"),
        ({"targets": np.array([0.0, 1.0])}, "float64"),
        ({"positions": np.zeros((4, 3))}, r"\(4, 3\)"),
        ({"positions": np.zeros(6)}, r"\(6,\)"),
        ({"positions": np.array([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])}, "distance 0"),
    ],
)
def test_bad_input_is_one_clear_error(change, needle):
    kw = {**GOOD, **change}
    with pytest.raises(MdkerasError, match=needle):
        featurize(kw.pop("positions"), kw.pop("box"), kw.pop("targets"), **kw)


def test_good_input_baseline_works():
    kw = dict(GOOD)
    grids, forces = featurize(kw.pop("positions"), kw.pop("box"), kw.pop("targets"), **kw)
    assert grids.shape == (2, 8, 8) and grids.sum() == 2


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"grid": "x"}, "grid='x' is not allowed: expected an integer >= 2"),
        ({"grid": None}, "grid=None is not allowed"),
        ({"grid": True}, "grid=True is not allowed"),
        ({"grid": float("inf")}, "grid=inf is not allowed"),
        ({"window": "x"}, "window='x' is not allowed: expected a window side > 0"),
        ({"window": None}, "window=None is not allowed"),
        ({"window": float("inf")}, "window=inf is not allowed"),
        ({"box": "20"}, "box='20' is not allowed: expected a box side > 0"),
        ({"box": None}, "box=None is not allowed"),
        ({"box": float("nan")}, "box=nan is not allowed"),
        ({"box": np.int64(-3)}, r"box=np.int64\(-3\) is not allowed"),
        ({"positions": [["a", "b"]]}, "positions are not an array of numbers"),
        ({"targets": np.array([True, False])}, "bool"),
        ({"targets": np.zeros((2, 1), dtype=np.int64)}, r"\(2, 1\)"),
    ],
)
def test_bad_arguments_are_mdkeras_errors(change, needle):
    kw = {**GOOD, **change}
    with pytest.raises(MdkerasError, match=needle):
        featurize(kw.pop("positions"), kw.pop("box"), kw.pop("targets"), **kw)


@pytest.mark.parametrize(
    "change",
    [
        {"box": np.int64(10)},
        {"box": np.float32(10.0)},
        {"box": 10},
        {"window": np.float64(4.0)},
        {"window": 4},
        {"grid": np.int64(8)},
        {"grid": 8.0},
        {"targets": [0, 1]},
        {"targets": np.array([0, 1], dtype=np.uint8)},
    ],
)
def test_numpy_scalars_and_plain_numbers_give_identical_results(change):
    kw = dict(GOOD)
    g, f = featurize(kw.pop("positions"), kw.pop("box"), kw.pop("targets"), **kw)
    kw = {**GOOD, **change}
    g2, f2 = featurize(kw.pop("positions"), kw.pop("box"), kw.pop("targets"), **kw)
    assert g2.tobytes() == g.tobytes() and f2.tobytes() == f.tobytes()


def test_nonfinite_positions_one_error_with_count_and_place():
    positions = np.array([[1.0, 1.0], [np.nan, 2.0], [5.0, np.inf], [6.0, 6.0]])
    with pytest.raises(MdkerasError) as info:
        featurize(positions, 10.0, [0], potential="lj", window=4.0, grid=8)
    message = str(info.value)
    assert message.startswith("positions contain 2 non-finite value(s) (NaN or inf)")
    assert "first at index (1, 0)" in message and "\n" not in message


# --- empty inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("targets", [[], np.array([], dtype=np.int64), np.array([])])
@pytest.mark.parametrize("grid", [2, 8, 28])
def test_empty_targets_give_empty_arrays(targets, grid):
    grids, forces = featurize(
        GOOD["positions"], 10.0, targets, potential="lj", window=4.0, grid=grid
    )
    assert grids.shape == (0, grid, grid) and grids.dtype == np.uint8
    assert forces.shape == (0, 2) and forces.dtype == np.float64


@pytest.mark.parametrize("positions", [np.zeros((0, 2)), [], np.array([])])
def test_empty_configuration(positions):
    """No particles: no targets to featurize (empty results), and any target index is an error."""
    grids, forces = featurize(positions, 10.0, [], potential="coulomb", window=4.0, grid=8)
    assert grids.shape == (0, 8, 8) and grids.dtype == np.uint8
    assert forces.shape == (0, 2) and forces.dtype == np.float64
    with pytest.raises(MdkerasError, match="target index 0 is out of range: positions hold no"):
        featurize(positions, 10.0, [0], potential="coulomb", window=4.0, grid=8)


def test_empty_targets_still_check_the_other_arguments():
    with pytest.raises(MdkerasError, match="window=12.0"):
        featurize(GOOD["positions"], 10.0, [], potential="lj", window=12.0, grid=8)
    with pytest.raises(MdkerasError, match="grid='x'"):
        featurize(GOOD["positions"], 10.0, [], potential="lj", window=4.0, grid="x")


# --- near-coincident neighbours --------------------------------------------------------------


@pytest.mark.parametrize(
    ("potential", "gap", "shown"),
    [
        ("lj", 1e-30, "distance 1e-30"),
        ("lj", 1e-200, "distance 1e-200"),  # r^2 underflows to 0; the distance is still right
        ("lj", 0.0, "distance 0,"),
        ("coulomb", 0.0, "distance 0,"),
        ("coulomb", 1e-160, "distance 1e-160"),
    ],
)
def test_too_close_neighbour_names_its_distance_and_target(potential, gap, shown):
    positions = np.array([[5.0, 5.0], [0.0, 0.0], [gap, 0.0]])
    with pytest.raises(MdkerasError) as info:
        featurize(positions, 10.0, [0, 2], potential=potential, window=4.0, grid=8)
    message = str(info.value)
    assert message.startswith(f"target 1 (particle 2) has a neighbour at {shown}")
    assert "1 such pair(s)" in message and "\n" not in message


def test_close_but_finite_coulomb_pair_is_kept():
    """Coulomb at 1e-30 is a huge but finite force: it is a label, not an error."""
    positions = np.array([[0.0, 0.0], [1e-30, 0.0]])
    _, forces = featurize(positions, 10.0, [0, 1], potential="coulomb", window=4.0, grid=8)
    np.testing.assert_allclose(forces, [[-1e60, 0.0], [1e60, 0.0]], rtol=1e-12)


# --- sparse boxes: cells are allocated for particles, not for the box's area -----------------


def clustered(rng, box, clusters, per, spread):
    centres = rng.uniform(0.0, box, size=(clusters, 2))
    return (np.repeat(centres, per, axis=0) + rng.uniform(0, spread, (clusters * per, 2))) % box


def test_huge_sparse_box_allocates_little_and_matches_reference():
    """box=1e5, window=1 once asked for a 4e5 x 4e5 cell table (1.16 TiB)."""
    import tracemalloc

    rng = np.random.default_rng(9)
    positions = clustered(rng, 1e5, 40, 25, 1.2)
    targets = rng.choice(len(positions), 300, replace=False)
    tracemalloc.start()
    try:
        g, f = featurize(positions, 1e5, targets, potential="lj", window=1.0, grid=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"featurize peaked at {peak / 1e6:.0f} MB for 1000 particles"
    g_ref, f_ref, in_window, scale = featurize_bruteforce(
        positions, 1e5, targets, "lj", 1.0, 8, return_extra=True
    )
    np.testing.assert_array_equal(g, g_ref)
    assert in_window.sum() > 300  # the clusters put neighbours in the windows
    assert_forces_close(f, f_ref, scale)


def test_astronomical_box_is_still_exact():
    positions = np.array([[3.0, 3.0], [3.3, 2.9], [1e299, 5e298]])
    g, f = featurize(positions, 1e300, [0, 1, 2], potential="coulomb", window=1.0, grid=4)
    assert g.sum(axis=(1, 2)).tolist() == [1, 1, 0]
    np.testing.assert_allclose(f[0], hand_force("coulomb", (0.3, -0.1)), rtol=1e-9)
    np.testing.assert_array_equal(f[2], [0.0, 0.0])


@pytest.mark.parametrize(
    ("potential", "particles", "density", "window", "grid"),
    [
        ("lj", 2000, 0.5, 8.0, 28),
        ("coulomb", 2000, 0.05, 5.0, 16),
        ("lj", 1500, 0.2, 1.0, 8),  # many cells per particle
        ("coulomb", 400, 0.5, 6.0, 7),
    ],
)
def test_sorted_cell_lookup_is_byte_identical_to_the_dense_table(
    monkeypatch, potential, particles, density, window, grid
):
    """The two cell-list lookups visit the same candidates in the same order, so the summed
    forces agree to the last bit (the dataset cache depends on it), and match the reference."""
    import mdkeras.descriptors as descriptors

    rng = np.random.default_rng(particles + grid)
    positions, box, targets = random_config(rng, particles, density, 200)
    kw = dict(potential=potential, window=window, grid=grid)
    g, f = featurize(positions, box, targets, **kw)
    monkeypatch.setattr(descriptors, "DENSE_CELLS_MIN", 0)
    monkeypatch.setattr(descriptors, "DENSE_CELLS_PER_PARTICLE", 0)
    g2, f2 = featurize(positions, box, targets, **kw)
    assert g2.tobytes() == g.tobytes() and f2.tobytes() == f.tobytes()
    g_ref, f_ref, _, scale = featurize_bruteforce(
        positions, box, targets, potential, window, grid, return_extra=True
    )
    np.testing.assert_array_equal(g, g_ref)
    assert_forces_close(f, f_ref, scale)


def test_occupancy_is_featurize_without_the_forces():
    from mdkeras.descriptors import occupancy

    rng = np.random.default_rng(7)
    x = rng.uniform(0, 20.0, (300, 2))
    targets = np.arange(0, 300, 3)
    grids, _ = featurize(x, 20.0, targets, potential="lj", window=8.0, grid=28)
    assert np.array_equal(occupancy(x, 20.0, targets, window=8.0, grid=28), grids)
    assert occupancy(x, 20.0, [], window=8.0, grid=28).shape == (0, 28, 28)
