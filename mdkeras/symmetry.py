"""The D4 symmetry of the square window: 4 rotations x optional reflection, on vectors and grids.

Element `k` in `0..7` rotates by `(k % 4) * 90` degrees counter-clockwise, then (for `k >= 4`)
reflects `x -> -x`. A vector (position or force) maps by the matrix `MATRICES[k]`; a grid
`D[iy, ix]` (rows +y, columns +x) maps by `transform_grids`, so that featurizing transformed
positions gives the transformed grid and the transformed force.
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
