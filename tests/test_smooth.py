"""The smooth occupancy grid (SPEC, smooth grid): its cell weights, the hard-count limit, the mass
it holds, the neighbour table, continuity at the window's edges, and the differentiable
TensorFlow version against NumPy and finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from mdkeras.descriptors import occupancy
from mdkeras.errors import MdkerasError
from mdkeras.smooth import (
    SUPPORT,
    cell_weights,
    check_sigma,
    image_shift,
    neighbour_table,
    pairs,
    smooth_occupancy,
)

W, N_GRID = 8.0, 28
H = W / N_GRID


def random_config(seed, particles=300, box=24.0, targets=5):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0.0, box, size=(particles, 2))
    chosen = rng.choice(particles, size=targets, replace=False)
    return positions, box, chosen


def direct_grids(positions, box, targets, sigma):
    """The SPEC formula summed over every other particle, with no support cut."""
    s = sigma * H
    edges = -0.5 * W + H * np.arange(N_GRID + 1)
    out = []
    for t in targets:
        d = np.delete(positions - positions[t], t, axis=0)
        d -= box * np.round(d / box)
        m = ndtr((edges[1:] - d[..., None]) / s) - ndtr((edges[:-1] - d[..., None]) / s)
        out.append(m[:, 1].T @ m[:, 0])
    return np.array(out)


def grids(positions, box, targets, sigma, **kw):
    return smooth_occupancy(positions, box, targets, window=W, grid=N_GRID, sigma=sigma, **kw)


# --- cell weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [1e-6, 0.3, 0.5, 1.0])
def test_cell_weights_sum_to_one_inside_and_are_never_negative(sigma):
    margin = 8.0 * sigma * H  # Phi(-8) ~ 6e-16: no mass leaves the window
    u = np.linspace(-0.5 * W + margin, 0.5 * W - margin, 1001)
    m = cell_weights(u, window=W, grid=N_GRID, sigma=sigma)
    assert m.shape == (1001, N_GRID) and m.dtype == np.float64
    np.testing.assert_allclose(m.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    far = cell_weights(np.linspace(-3 * W, 3 * W, 2001), window=W, grid=N_GRID, sigma=sigma)
    assert (far >= 0).all() and (far <= 1).all()


def test_cell_weights_shape_and_hand_values():
    m = cell_weights(np.zeros((3, 4)), window=W, grid=N_GRID, sigma=0.5)
    assert m.shape == (3, 4, N_GRID)
    # u = 0 sits on the edge between cells 13 and 14: each holds Phi(2) - 1/2 (h / s = 2)
    np.testing.assert_allclose(m[0, 0, 13:15], ndtr(2.0) - 0.5, rtol=1e-15)
    np.testing.assert_allclose(m[0, 0, 12], ndtr(4.0) - ndtr(2.0), rtol=1e-14)


def test_far_cells_are_small_but_accurate():
    """A cell 10 to 12 standard deviations away holds Phi(-10) - Phi(-12) ~ 7.6e-24, which
    a plain difference of CDFs near 1 would round to 0."""
    sigma = 0.5
    s = sigma * H
    u = -0.5 * W + 0.5 * H  # the centre of cell 0; cell i starts at (i - 0.5) h / s = 2i - 1
    m = cell_weights(np.array([u, -u]), window=W, grid=N_GRID, sigma=sigma)
    expected = ndtr(-(5.5 * H) / s) - ndtr(-(6.5 * H) / s)  # cell 6: 11 to 13 deviations
    assert expected > 0
    np.testing.assert_allclose(m[0, 6], expected, rtol=1e-12)
    np.testing.assert_allclose(m[1, N_GRID - 7], expected, rtol=1e-12)  # the mirror image


# --- the grids ---------------------------------------------------------------------------------


def near_an_edge(positions, box, targets, gap):
    """Whether any neighbour of a target lies within `gap` of a cell edge (in x or y)."""
    for t in targets:
        d = np.delete(positions - positions[t], t, axis=0)
        d -= box * np.round(d / box)
        offset = (d + 0.5 * W) / H
        inside = (np.abs(d) < 0.5 * W + gap).all(axis=1)
        if (np.abs(offset - np.round(offset))[inside] * H < gap).any():
            return True
    return False


def test_small_sigma_gives_the_hard_counts():
    used = 0
    for seed in range(12):
        positions, box, targets = random_config(seed)
        if near_an_edge(positions, box, targets, gap=1e-5):  # 35 deviations at sigma = 1e-6
            continue
        used += 1
        got = grids(positions, box, targets, 1e-6)
        hard = occupancy(positions, box, targets, window=W, grid=N_GRID).astype(np.float64)
        assert hard.sum() > 50
        np.testing.assert_allclose(got, hard, rtol=0, atol=1e-9)
    assert used >= 8


@pytest.mark.parametrize("sigma", [0.25, 0.5, 1.5])
def test_equals_the_formula_over_every_particle(sigma):
    """Up to the support cut: each dropped neighbour carried less than Phi(-5) per cell."""
    positions, box, targets = random_config(3, targets=6)
    positions[targets[:2]] = [[0.3, 23.9], [23.8, 0.1]]  # windows across the box's edges
    got = grids(positions, box, targets, sigma)
    np.testing.assert_allclose(got, direct_grids(positions, box, targets, sigma), atol=2e-6)
    assert (got >= 0).all()


def test_grid_sums_to_the_neighbours_well_inside():
    """Neighbours at least 8 deviations inside the window give one count each, those beyond
    W/2 + 6 deviations (in x or y) nothing."""
    sigma = 0.5
    s = sigma * H
    rng = np.random.default_rng(7)
    box = 30.0
    target = np.array([[12.0, 15.0]])
    inside = target + rng.uniform(-0.5 * W + 8 * s, 0.5 * W - 8 * s, size=(25, 2))
    outside = target + rng.uniform(0.5 * W + 6 * s, 0.5 * box - 0.5, size=(40, 2)) * rng.choice(
        [-1, 1], size=(40, 2)
    )
    mixed = target + np.stack(
        [rng.uniform(-0.5 * W, 0.5 * W, 15), rng.uniform(0.5 * W + 6 * s, 10.0, 15)], axis=1
    )  # in the window's columns, but far above it
    positions = np.concatenate([target, inside, outside, mixed])
    got = grids(positions, box, [0], sigma)
    assert got.sum() == pytest.approx(25.0, abs=1e-9)

    partial = target + np.array([[0.5 * W, 0.0], [0.0, -0.5 * W + s], [0.5 * W + 3 * s, 1.0]])
    total = grids(np.concatenate([positions, partial]), box, [0], sigma).sum()
    assert 25.0 < total < 28.0
    assert total == pytest.approx(25.0 + 0.5 + ndtr(1.0) + ndtr(-3.0), abs=1e-9)


def test_target_is_not_its_own_neighbour_but_a_twin_is():
    positions = np.array([[5.0, 5.0], [5.0, 5.0], [15.0, 15.0]])
    got = grids(positions, 20.0, [0, 2], 0.5)
    assert got[0].sum() == pytest.approx(1.0, abs=1e-12)  # the twin at d = 0, not itself
    assert got[1].sum() == 0.0


@pytest.mark.parametrize("sigma", [0.2, 0.5, 1.0])
def test_a_neighbour_leaves_the_window_smoothly(sigma):
    s = sigma * H
    box = 40.0
    cut = 0.5 * W + SUPPORT * s

    def grid_at(dx, dy=0.37):
        positions = np.array([[10.0, 10.0], [10.0 + dx, 10.0 + dy]])
        return grids(positions, box, [0], sigma)[0]

    eps = 1e-9
    for u in (cut, -cut):  # the candidates' cut, where the neighbour is dropped
        inner, outer = grid_at(u - math.copysign(eps, u)), grid_at(u + math.copysign(eps, u))
        assert inner.sum() > 0 and outer.sum() == 0
        assert np.abs(inner - outer).max() < 1e-6
        assert np.abs(grid_at(0.37, u - math.copysign(eps, u))).max() < 1e-6  # and in y
    for u in (0.5 * W, -0.5 * W, 0.5 * W - H):  # the window's and a cell's edge
        assert np.abs(grid_at(u - 1e-8) - grid_at(u + 1e-8)).max() < 1e-6


def test_neighbour_table_matches_the_pairs_and_the_shift_rebuilds_it():
    positions, box, targets = random_config(5, targets=7)
    positions[targets[0]] = [0.2, 0.1]
    kw = dict(window=W, grid=N_GRID, sigma=0.5)
    i, j, d = pairs(positions, box, targets=targets, **kw)
    index, displacement, mask = neighbour_table(positions, box, targets=targets, **kw)
    assert index.dtype == np.int64 and displacement.dtype == np.float64 and mask.dtype == bool
    assert mask.sum(axis=1).max() == index.shape[1]
    np.testing.assert_array_equal(index[mask], j)
    np.testing.assert_array_equal(displacement[mask], d)
    np.testing.assert_array_equal(np.nonzero(mask)[0], i)
    assert (index[~mask] == 0).all() and (displacement[~mask] == 0).all()
    assert (index != targets[:, None])[mask].all()
    reach = 0.5 * W + SUPPORT * 0.5 * H
    assert (np.abs(d) < reach).all()
    # every particle within the reach is there (brute force)
    for a, t in enumerate(targets):
        dd = positions - positions[t]
        dd -= box * np.round(dd / box)
        near = set(np.flatnonzero((np.abs(dd) < reach).all(axis=1))) - {t}
        assert near == set(index[a][mask[a]])
    shift = image_shift(positions, box, index, targets)
    rebuilt = positions[index] - positions[targets][:, None] + shift
    np.testing.assert_array_equal(rebuilt[mask], d)
    # default targets: every particle
    every = neighbour_table(positions, box, **kw)
    assert every[0].shape[0] == len(positions)


def test_empty_targets_and_lonely_targets():
    positions = np.array([[1.0, 1.0], [10.0, 10.0]])
    assert grids(positions, 20.0, [], 0.5).shape == (0, N_GRID, N_GRID)
    assert (grids(positions, 20.0, [0, 1], 0.5) == 0).all()
    index, displacement, mask = neighbour_table(
        positions, 20.0, window=W, grid=N_GRID, sigma=0.5, targets=[]
    )
    assert index.shape == (0, 0) and displacement.shape == (0, 0, 2) and mask.shape == (0, 0)


def test_chunks_do_not_change_the_result(monkeypatch):
    import mdkeras.smooth as smooth

    positions, box, _ = random_config(9)
    targets = np.arange(40)
    whole = grids(positions, box, targets, 0.5)
    monkeypatch.setattr(smooth, "CHUNK_ENTRIES", 1)  # one target at a time
    np.testing.assert_array_equal(grids(positions, box, targets, 0.5), whole)


# --- TensorFlow --------------------------------------------------------------------------------


def test_tensorflow_grids_and_gradient_match_numpy():
    tf = pytest.importorskip("tensorflow")
    from mdkeras.smooth import displacements_tf, smooth_grids_tf

    sigma = 0.5
    positions, box, targets = random_config(11, targets=4)
    positions[targets[0]] = [23.9, 0.2]  # a window across the box's corner
    kw = dict(window=W, grid=N_GRID, sigma=sigma)
    index, displacement, mask = neighbour_table(positions, box, targets=targets, **kw)
    shift = image_shift(positions, box, index, targets)
    expected = grids(positions, box, targets, sigma)

    got = smooth_grids_tf(tf.constant(displacement), mask, dtype=tf.float64, **kw)
    assert got.dtype == tf.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    as32 = smooth_grids_tf(displacement, mask, **kw)
    assert as32.dtype == tf.float32
    np.testing.assert_allclose(as32.numpy(), expected, rtol=0, atol=1e-5)

    weights = np.random.default_rng(1).normal(size=expected.shape)
    variable = tf.Variable(positions, dtype=tf.float64)
    with tf.GradientTape() as tape:
        d = displacements_tf(variable, targets, index, shift)
        loss = tf.reduce_sum(weights * smooth_grids_tf(d, mask, dtype=tf.float64, **kw))
    np.testing.assert_array_equal(d.numpy()[mask], displacement[mask])
    gradient = tf.convert_to_tensor(tape.gradient(loss, variable)).numpy()  # from IndexedSlices

    def functional(p):
        return float((weights * grids(p, box, targets, sigma)).sum())

    assert loss.numpy() == pytest.approx(functional(positions), abs=1e-12)
    neighbours = index[0][mask[0]][:4]
    step = 1e-6
    checked = 0
    for particle in [*targets[:2], *neighbours]:
        for axis in (0, 1):
            up, down = positions.copy(), positions.copy()
            up[particle, axis] += step
            down[particle, axis] -= step
            fd = (functional(up) - functional(down)) / (2 * step)
            assert gradient[particle, axis] == pytest.approx(fd, rel=1e-6, abs=1e-7)
            checked += abs(fd) > 1e-3
    assert checked >= 6
    far = np.setdiff1d(np.arange(len(positions)), np.concatenate([targets, index[mask]]))
    assert (gradient[far] == 0).all()


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0, -1, 0.0, float("nan"), float("inf"), "0.5", None, True])
def test_bad_sigma_is_one_clear_error(sigma):
    with pytest.raises(MdkerasError) as info:
        check_sigma(sigma)
    assert str(info.value) == (
        f"sigma={sigma!r} is not allowed: expected a finite number > 0 "
        "(the Gaussian's width in cell sides, e.g. 0.5)."
    )
    positions, box, targets = random_config(0)
    with pytest.raises(MdkerasError, match="sigma"):
        grids(positions, box, targets, sigma)
    with pytest.raises(MdkerasError, match="sigma"):
        cell_weights([0.0], window=W, grid=N_GRID, sigma=sigma)


def test_sigma_accepts_numbers():
    assert check_sigma(np.float32(0.5)) == 0.5 and type(check_sigma(1)) is float


def test_box_too_small_for_the_enlarged_window():
    positions = np.random.default_rng(0).uniform(0, 12.0, size=(50, 2))
    # W + 2 * 5 * sigma * h = 8 + 10 * 1.5 * 8 / 28 = 12.29 > 12
    with pytest.raises(MdkerasError) as info:
        grids(positions, 12.0, [0], 1.5)
    message = str(info.value)
    assert "box=12.0" in message and "window=8.0" in message and "sigma=1.5" in message
    assert "12.2857" in message
    assert grids(positions, 12.0, [0], 1.0).shape == (1, N_GRID, N_GRID)  # 10.86 < 12


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(grid=1), "grid"),
        (dict(window=-8.0), "window"),
        (dict(positions=np.zeros((3, 3))), "shape"),
        (dict(targets=[7]), "out of range"),
        (dict(box=0.0), "box"),
    ],
)
def test_other_bad_input(change, needle):
    args = dict(
        positions=np.array([[1.0, 1.0], [2.0, 2.0]]),
        box=30.0,
        targets=[0],
        window=W,
        grid=N_GRID,
        sigma=0.5,
    )
    args.update(change)
    with pytest.raises(MdkerasError, match=needle):
        smooth_occupancy(**args)


def test_tensorflow_inside_a_function_with_tensor_tables():
    tf = pytest.importorskip("tensorflow")
    from mdkeras.smooth import displacements_tf, smooth_grids_tf

    positions, box, targets = random_config(13, targets=3)
    kw = dict(window=W, grid=N_GRID, sigma=0.5)
    index, _, mask = neighbour_table(positions, box, targets=targets, **kw)
    shift = image_shift(positions, box, index, targets)

    @tf.function
    def run(p, targets, index, shift, mask):
        return smooth_grids_tf(displacements_tf(p, targets, index, shift), mask, **kw)

    got = run(*(tf.constant(x) for x in (positions, targets, index, shift, mask)))
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), grids(positions, box, targets, 0.5), atol=2e-5)
    with pytest.raises(MdkerasError, match="expected \\(T, K, 2\\)"):
        smooth_grids_tf(np.zeros((2, 3)), np.ones((2, 3), bool), **kw)
