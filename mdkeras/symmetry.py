"""The D4 symmetry of the square window: 4 rotations x optional reflection, on vectors and grids.

Element `k` in `0..7` rotates by `(k % 4) * 90` degrees counter-clockwise, then (for `k >= 4`)
reflects `x -> -x`. A vector (position or force) maps by the matrix `MATRICES[k]`; a grid
`D[iy, ix]` (rows +y, columns +x) maps by `transform_grids`, so that featurizing transformed
positions gives the transformed grid and the transformed force. A D4-symmetric kernel is fixed
by one cell per orbit (`fundamental_domain`); `symmetrise` projects any kernel onto those.
"""

from __future__ import annotations

import numpy as np

_ROT = np.array([[0.0, -1.0], [1.0, 0.0]])  # 90 degrees counter-clockwise
_FLIP = np.array([[-1.0, 0.0], [0.0, 1.0]])  # x -> -x
MATRICES = np.stack(
    [
        np.linalg.matrix_power(_ROT, k % 4)
        if k < 4
        else _FLIP @ np.linalg.matrix_power(_ROT, k % 4)
        for k in range(8)
    ]
)


def transform_vectors(v: np.ndarray, k: int) -> np.ndarray:
    """Apply element `k` to vectors `v` (..., 2)."""
    return np.asarray(v, dtype=np.float64) @ MATRICES[k].T


def all_transforms(v: np.ndarray) -> np.ndarray:
    """All 8 images of vectors `v` (S, 2): `(S, 8, 2)`."""
    return np.einsum("kij,sj->ski", MATRICES, np.asarray(v, dtype=np.float64))


def transform_grids(grids: np.ndarray, k: int) -> np.ndarray:
    """Apply element `k` to grids `(..., n, n)` indexed `[iy, ix]`.

    With rows along +y, a counter-clockwise quarter turn of the plane is `np.rot90(D, -1)`;
    the reflection `x -> -x` reverses the columns.
    """
    out = np.rot90(grids, -(k % 4), axes=(-2, -1))
    if k >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def fundamental_domain(grid: int) -> np.ndarray:
    """`(n, n)` bool: one cell per D4 orbit of an `n x n` grid, those with centre `0 <= y <= x`.

    A D4-symmetric kernel holds no more information than these cells, so fits count each orbit
    once. Exact: centres are compared in half-cell units (`2 i + 1 - n`), which are integers.
    """
    n = int(grid)
    c = 2 * np.arange(n) + 1 - n  # cell centres along one axis, in half cells
    cx, cy = np.meshgrid(c, c, indexing="xy")
    return (cx >= 0) & (cy >= 0) & (cy <= cx)


def symmetrise(kernel: np.ndarray) -> np.ndarray:
    """D4 average of vector kernels `(..., n, n, 2)`: `(1/8) sum_g M_g T_g(k)`.

    A symmetric kernel maps a neighbour in cell `c` to force `k[c]` and one in the image cell
    `g(c)` to `M_g k[c]`; `T_g` is `transform_grids` (on each component plane) and `M_g` the
    element's 2x2 matrix. NaN (unobserved) cells stay NaN only where every image is NaN.
    """
    k = np.moveaxis(np.asarray(kernel, dtype=np.float64), -1, -3)  # (..., 2, n, n)
    total = np.zeros(k.shape)
    count = np.zeros(k.shape)
    for g in range(8):
        img = np.einsum("ij,...jyx->...iyx", MATRICES[g], transform_grids(k, g))
        ok = np.isfinite(img)
        total += np.where(ok, img, 0.0)
        count += ok
    with np.errstate(invalid="ignore"):
        return np.moveaxis(np.where(count > 0, total / np.maximum(count, 1), np.nan), -3, -1)
