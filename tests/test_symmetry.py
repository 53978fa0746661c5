"""The D4 group of the square window on vectors and grids (the featurize equivariance itself is
tested in test_descriptors.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mdkeras.metrics import cell_centre_kernel
from mdkeras.symmetry import (
    MATRICES,
    all_transforms,
    fundamental_domain,
    symmetrise,
    transform_grids,
    transform_vectors,
)

ROT = np.array([[0, -1], [1, 0]])  # 90 degrees counter-clockwise
FLIP = np.array([[-1, 0], [0, 1]])  # x -> -x


def index_of(m):
    hits = [k for k in range(8) if np.array_equal(MATRICES[k], m)]
    assert len(hits) == 1, m
    return hits[0]


def test_matrices_are_the_eight_distinct_orthogonal_integer_matrices():
    assert MATRICES.shape == (8, 2, 2)
    assert np.array_equal(MATRICES, np.round(MATRICES))
    for m in MATRICES:
        np.testing.assert_array_equal(m @ m.T, np.eye(2))
        assert round(np.linalg.det(m)) in (1, -1)
    assert len({m.tobytes() for m in MATRICES.astype(np.int64)}) == 8
    np.testing.assert_array_equal(MATRICES[0], np.eye(2))
    dets = np.round(np.linalg.det(MATRICES))
    np.testing.assert_array_equal(dets, [1, 1, 1, 1, -1, -1, -1, -1])


def test_element_numbering():
    """k rotates by (k % 4) quarter turns counter-clockwise, then reflects x -> -x for k >= 4."""
    for k in range(8):
        m = np.linalg.matrix_power(ROT, k % 4)
        if k >= 4:
            m = FLIP @ m
        np.testing.assert_array_equal(MATRICES[k], m)
    np.testing.assert_array_equal(transform_vectors(np.array([1.0, 0.0]), 1), [0.0, 1.0])


def test_group_closure_identity_and_inverses():
    table = np.zeros((8, 8), dtype=int)
    for a, b in itertools.product(range(8), repeat=2):
        table[a, b] = index_of(MATRICES[a] @ MATRICES[b])
    for row in table:  # a Latin square: every product lands in the group, each once per row
        assert sorted(row) == list(range(8))
    for col in table.T:
        assert sorted(col) == list(range(8))
    for a in range(8):
        assert 0 in table[a]  # inverse exists
    # non-abelian: a quarter turn and a reflection do not commute
    assert table[1, 4] != table[4, 1]


def test_all_transforms_matches_transform_vectors():
    v = np.random.default_rng(0).normal(size=(20, 2))
    allv = all_transforms(v)
    assert allv.shape == (20, 8, 2)
    for k in range(8):
        np.testing.assert_array_equal(allv[:, k], transform_vectors(v, k))
        np.testing.assert_array_equal(transform_vectors(v, k), v @ MATRICES[k].T)
    # lengths are preserved and the 8 images of a generic vector are distinct
    np.testing.assert_allclose(
        np.linalg.norm(allv, axis=-1), np.repeat(np.linalg.norm(v, axis=-1)[:, None], 8, axis=1)
    )
    assert len(np.unique(np.round(allv[0], 12), axis=0)) == 8


def one_hot(n, ix, iy):
    g = np.zeros((n, n), dtype=np.uint8)
    g[iy, ix] = 1
    return g


@pytest.mark.parametrize("n", [4, 5])
@pytest.mark.parametrize("k", range(8))
def test_transform_grids_moves_cells_like_vectors(n, k):
    """The centre of cell (ix, iy) is at ((ix + 1/2) h - W/2, ...): a cell moves to the cell whose
    centre is the transformed centre."""
    for ix, iy in itertools.product(range(n), repeat=2):
        centre = np.array([ix + 0.5 - n / 2, iy + 0.5 - n / 2])  # in units of h
        moved = transform_vectors(centre, k)
        jx, jy = (moved + n / 2 - 0.5).round().astype(int)
        np.testing.assert_array_equal(transform_grids(one_hot(n, ix, iy), k), one_hot(n, jx, jy))


def test_transform_grids_composes_like_matrices():
    g = np.random.default_rng(1).integers(0, 255, size=(3, 6, 6), dtype=np.uint8)
    for a, b in itertools.product(range(8), repeat=2):
        c = index_of(MATRICES[b] @ MATRICES[a])  # first a, then b
        np.testing.assert_array_equal(
            transform_grids(transform_grids(g, a), b), transform_grids(g, c)
        )


def test_transform_grids_batch_shape_and_dtype():
    g = np.random.default_rng(2).integers(0, 9, size=(2, 3, 5, 5), dtype=np.uint8)
    for k in range(8):
        out = transform_grids(g, k)
        assert out.shape == g.shape and out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out[1, 2], transform_grids(g[1, 2], k))
        assert out.sum() == g.sum()


# --- the fundamental domain and symmetrised kernels -------------------------------------------


def orbits(n):
    """The D4 orbits of the cells of an `n x n` grid, by brute force: sets of flat indices."""
    cells = np.arange(n * n).reshape(n, n)
    images = np.stack([transform_grids(cells, k).ravel() for k in range(8)])
    return {frozenset(images[:, c]) for c in range(n * n)}


@pytest.mark.parametrize("n", [2, 3, 4, 7, 8, 16, 28])
def test_fundamental_domain_holds_one_cell_of_every_orbit(n):
    domain = fundamental_domain(n)
    assert domain.shape == (n, n) and domain.dtype == bool
    chosen = set(np.flatnonzero(domain))
    for orbit in orbits(n):
        assert len(orbit & chosen) == 1, sorted(orbit)
    # centres with 0 <= y <= x: the lower-right octant of the upper-right quadrant
    h = (n + 1) // 2
    assert domain.sum() == h * (h + 1) // 2
    iy, ix = np.nonzero(domain)
    assert np.all(2 * ix + 1 >= n) and np.all(iy <= ix)


def test_models_build_forcemap_orbits_from_the_same_domain():
    from mdkeras.models import d4_orbit_maps

    for n in (5, 16, 28):
        np.testing.assert_array_equal(d4_orbit_maps(n)[0], np.flatnonzero(fundamental_domain(n)))


def test_symmetrise_is_a_projection_onto_d4_symmetric_kernels():
    centre = cell_centre_kernel("coulomb", 5.0, 16)
    np.testing.assert_allclose(symmetrise(centre), centre, rtol=1e-12, atol=1e-15)
    k = symmetrise(np.random.default_rng(0).normal(size=(3, 16, 16, 2)))
    np.testing.assert_allclose(symmetrise(k), k, atol=1e-12)
    for g in range(8):  # a neighbour in cell g(c) exerts M_g k[c]
        planes = transform_grids(np.moveaxis(k, -1, -3), g)
        img = np.einsum("ij,...jyx->...yxi", MATRICES[g], planes)
        np.testing.assert_allclose(img, k, atol=1e-12)


def test_symmetrise_keeps_nan_only_where_every_image_is_nan():
    k = np.random.default_rng(3).normal(size=(8, 8, 2))
    k[0, 0] = np.nan  # one corner unobserved: its images fill it
    assert np.all(np.isfinite(symmetrise(k)))
    corners = k.copy()
    corners[[0, 0, 7, 7], [0, 7, 0, 7]] = np.nan  # the whole orbit of a corner
    out = symmetrise(corners)
    assert np.isnan(out[[0, 0, 7, 7], [0, 7, 0, 7]]).all()
    assert np.isfinite(out).sum() == out.size - 8
