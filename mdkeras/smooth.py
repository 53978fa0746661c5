"""The smooth occupancy grid: each neighbour a Gaussian spread over the cells (SPEC, smooth grid).

With width `sigma > 0` in cell sides `h = W/n`, each neighbour `j` at the minimum-image
displacement `d = r_j - r_t` is a normalised 2D Gaussian of standard deviation `s = sigma h`, and
cell `(iy, ix)` holds the part of it inside the cell:

    D_sigma[iy, ix] = sum_j m(ix; d_x) m(iy; d_y),
    m(i; u) = Phi((e_{i+1} - u) / s) - Phi((e_i - u) / s),  e_i = -W/2 + i h,

`Phi` the standard normal CDF (rows follow +y, columns +x; the target is never its own
neighbour). As `sigma -> 0` it tends to the hard counts of `descriptors.occupancy` for every
neighbour off a cell edge. The Gaussians are cut at `SUPPORT` standard deviations: the candidates
are the particles within `W/2 + SUPPORT s` of the target in x and in y, so a neighbour leaves the
window smoothly (it carries at most `Phi(-SUPPORT) ~ 2.9e-7` of a count when it is dropped).

NumPy (`smooth_occupancy`) gives the float64 grids; TensorFlow (`smooth_grids_tf` on a padded
neighbour table, `displacements_tf` for the displacements) gives grids differentiable with
respect to the displacements or the positions they are gathered from.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import ndtr

from mdkeras.checks import check_number
from mdkeras.descriptors import _as_positions, _as_targets, check_window
from mdkeras.errors import MdkerasError

SUPPORT = 5.0  # the Gaussians are cut at SUPPORT standard deviations from their centre
# NumPy grids are built this many padded (target, neighbour, axis, edge) entries at a time: each
# of the few float64 temporaries then takes at most 16 MB, so T = 2,000 targets stay under 200 MB
CHUNK_ENTRIES = 2**21


def check_sigma(sigma) -> float:
    """Return the Gaussian width `sigma` (in cell sides) as a float if it is finite and > 0."""
    try:
        return check_number("sigma", sigma, positive=True)
    except MdkerasError:
        raise MdkerasError(
            f"sigma={sigma!r} is not allowed: expected a finite number > 0 "
            "(the Gaussian's width in cell sides, e.g. 0.5)."
        ) from None


def _check_smooth(window, grid, sigma, box: float | None = None) -> tuple[float, int, float]:
    """`(window, grid, sigma)` checked; with `box`, also that the window enlarged by the
    Gaussians' support fits in it. Returns the window side, the grid size and the reach
    `W/2 + SUPPORT sigma h` of the candidates."""
    window_side, n = check_window(window, grid, box)
    sigma = check_sigma(sigma)
    reach = 0.5 * window_side + SUPPORT * sigma * window_side / n
    if box is not None and not 2.0 * reach < box:
        raise MdkerasError(
            f"box={box!r} is not allowed for window={window!r} and sigma={sigma!r}: expected "
            f"box > window + 2*{SUPPORT:g}*sigma*window/grid = {2.0 * reach:.6g} (the window "
            "enlarged by the Gaussians' support); use a larger box, a smaller window or sigma."
        )
    return window_side, n, reach


def cell_weights(u, *, window: float, grid: int, sigma: float) -> np.ndarray:
    """The part `m(i; u)` of a 1D Gaussian centred at `u` inside each cell `i = 0..n-1`.

    `u`: displacements along one axis, any shape; returns float64 of shape `u.shape + (n,)`.
    Each edge's CDF is kept as the Gaussian's tail beyond it, away from `u`
    (`q = Phi(z)` below `u`, `Phi(z) - 1` above), so that a cell on either side of `u` is a
    difference of two small tails and the cell holding `u` adds back the 1: a far cell gets a
    small but accurate weight, never a negative one. The weights sum to 1 up to the tails
    beyond the window.
    """
    window, n = check_window(window, grid)
    sigma = check_sigma(sigma)
    u = np.asarray(u, dtype=np.float64)
    h = window / n
    edges = -0.5 * window + h * np.arange(n + 1)
    z = (edges - u[..., None]) * (1.0 / (sigma * h))  # the cell edges in standard deviations
    above = np.signbit(-z)  # the edges at or above u, where q = Phi(z) - 1 (z = +0: -1/2)
    q = np.abs(z)
    ndtr(np.negative(q, out=q), out=q)  # the tail beyond each edge, away from u
    np.copysign(q, -z, out=q)
    m = q[..., 1:] - q[..., :-1]
    m += above[..., 1:] != above[..., :-1]  # the cell holding u: Phi(hi) - Phi(lo) needs the 1
    return np.maximum(m, 0.0, out=m)


def pairs(positions, box, *, window: float, grid: int, sigma: float, targets=None):
    """Every (target, candidate neighbour) pair of a periodic configuration, as flat arrays.

    The candidates of target `t` are all particles `j != t` with `|d_x| < W/2 + SUPPORT sigma h`
    and `|d_y| <` the same, `d = r_j - r_t` the minimum-image displacement (found with a periodic
    `cKDTree` in the Chebyshev metric).

    Args:
        positions: `(N, 2)` finite coordinates, any real values (wrapped).
        box: side of the periodic square box; must exceed `W + 2 SUPPORT sigma h`.
        window, grid, sigma: the window side `W`, cells a side `n` and the width in cell sides.
        targets: `(T,)` integer indices into `positions`, or None for every particle.
    Returns:
        `(i, j, d)`: int64 `(P,)` index into `targets`, int64 `(P,)` particle index of the
        neighbour and float64 `(P, 2)` displacement, sorted by `i` then `j`.
    """
    positions, box, targets, _, _, _, reach = _prepare(positions, box, window, grid, sigma, targets)
    return _pairs(positions, box, targets, reach)


def _prepare(positions, box, window, grid, sigma, targets):
    """Every argument checked: `(positions, box, targets, window, n, sigma, reach)`, `targets`
    every particle if None."""
    positions = _as_positions(positions)
    box = check_number("box", box, positive=True, noun="a box side")
    window, n, reach = _check_smooth(window, grid, sigma, box)
    if targets is None:
        targets = np.arange(len(positions), dtype=np.int64)
    targets = _as_targets(targets, len(positions))
    return positions, box, targets, window, n, check_sigma(sigma), reach


def _pairs(positions: np.ndarray, box: float, targets: np.ndarray, reach: float):
    if len(targets) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.float64)
    wrapped = positions % box
    wrapped[wrapped >= box] = 0.0  # -1e-20 % box rounds to box, which the tree rejects
    everyone = cKDTree(wrapped, boxsize=box)
    chosen = cKDTree(wrapped[targets], boxsize=box)
    # a little beyond the reach, so that the wrap's rounding loses no pair; the exact test is
    # on the minimum-image displacement below
    found = chosen.sparse_distance_matrix(
        everyone, reach * (1.0 + 1e-9) + 1e-12 * box, p=np.inf, output_type="ndarray"
    )
    i = found["i"].astype(np.int64)
    j = found["j"].astype(np.int64)
    d = positions[j] - positions[targets[i]]
    d -= box * np.round(d / box)
    keep = (np.abs(d) < reach).all(axis=1) & (j != targets[i])
    i, j, d = i[keep], j[keep], d[keep]
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def neighbour_table(positions, box, *, window: float, grid: int, sigma: float, targets=None):
    """The candidate neighbours of each target (see `pairs`), padded to `K`, the most any has.

    Returns `(index, displacement, mask)`: int64 `(T, K)` particle indices `j` (0 where padded),
    float64 `(T, K, 2)` minimum-image displacements `r_j - r_t` (0 where padded) and bool
    `(T, K)` marking the real entries, each row's neighbours in increasing `j`. `image_shift`
    gives the periodic shifts that `displacements_tf` needs to rebuild the displacements.
    """
    positions, box, targets, _, _, _, reach = _prepare(positions, box, window, grid, sigma, targets)
    i, j, d = _pairs(positions, box, targets, reach)
    return _pad(i, j, d, len(targets))


def _pad(i, j, d, size: int):
    counts = np.bincount(i, minlength=size)
    width = int(counts.max()) if size else 0
    slot = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
    index = np.zeros((size, width), dtype=np.int64)
    displacement = np.zeros((size, width, 2), dtype=np.float64)
    mask = np.zeros((size, width), dtype=bool)
    index[i, slot] = j
    displacement[i, slot] = d
    mask[i, slot] = True
    return index, displacement, mask


def image_shift(positions, box, index, targets=None) -> np.ndarray:
    """The periodic shifts `(T, K, 2)` float64 with `r_j - r_t + shift` the minimum-image
    displacement for every entry `j = index[t, k]` of a neighbour table of `targets` (None:
    every particle), computed as `neighbour_table` computes the displacements, so that
    `displacements_tf` reproduces them exactly in float64 (padded entries get a shift too, of
    their padding index 0; the mask drops them)."""
    positions = _as_positions(positions)
    box = check_number("box", box, positive=True, noun="a box side")
    if targets is None:
        targets = np.arange(len(positions), dtype=np.int64)
    targets = _as_targets(targets, len(positions))
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[0] != len(targets):
        raise MdkerasError(
            f"index has shape {index.shape}: expected (T, K) with T = {len(targets)} targets."
        )
    raw = positions[index] - positions[targets][:, None, :]
    return -box * np.round(raw / box)


def smooth_occupancy(
    positions, box, targets, *, window: float, grid: int, sigma: float
) -> np.ndarray:
    """The `(T, n, n)` float64 smooth grids `D_sigma[iy, ix]` of `targets` (arguments as for
    `pairs`; `targets` may be empty, None is every particle).

    Each chunk of targets takes the cell weights of its neighbours, padded with zero rows, and
    sums their outer products as one batched matrix product `My^T Mx`.
    """
    checked = _prepare(positions, box, window, grid, sigma, targets)
    positions, box, targets, window, n, sigma, reach = checked
    size = len(targets)
    out = np.zeros((size, n, n), dtype=np.float64)
    i, _, d = _pairs(positions, box, targets, reach)
    if len(i) == 0:
        return out
    counts = np.bincount(i, minlength=size)
    width = int(counts.max())
    start = np.cumsum(counts) - counts
    step = max(1, CHUNK_ENTRIES // (2 * width * (n + 1)))
    for first in range(0, size, step):
        last = min(first + step, size)
        lo, hi = start[first], start[last - 1] + counts[last - 1]
        rows = i[lo:hi] - first
        slot = np.arange(lo, hi) - np.repeat(start[first:last], counts[first:last])
        weights = cell_weights(d[lo:hi], window=window, grid=n, sigma=sigma)  # (P, 2, n)
        mx = np.zeros((last - first, width, n))
        my = np.zeros((last - first, width, n))
        mx[rows, slot] = weights[:, 0]
        my[rows, slot] = weights[:, 1]
        np.matmul(my.transpose(0, 2, 1), mx, out=out[first:last])
    return out


def displacements_tf(positions, targets, index, shift):
    """The displacements `(T, K, 2)` `positions[index] - positions[targets] + shift` as a
    TensorFlow tensor of `positions`' dtype, differentiable with respect to `positions` (an
    `(N, 2)` tensor or variable); `index` and `shift` are from `neighbour_table` and
    `image_shift` of the same configuration, `targets` its `(T,)` target indices (arrays or
    tensors). The gradient with respect to a variable comes back as `tf.IndexedSlices`
    (`tf.convert_to_tensor` makes it dense). In float32, wrap the positions into the box
    first: the displacement's round-off grows with their size."""
    import tensorflow as tf

    positions = tf.convert_to_tensor(positions)
    index, targets = (
        x if tf.is_tensor(x) else tf.constant(np.asarray(x, dtype=np.int64))
        for x in (index, targets)
    )
    shift = tf.cast(shift, positions.dtype)
    gathered = tf.gather(positions, index)  # (T, K, 2)
    centre = tf.gather(positions, targets)[:, None, :]
    return gathered - centre + shift


def smooth_grids_tf(displacement, mask, *, window: float, grid: int, sigma: float, dtype="float32"):
    """The smooth grids `(T, n, n)` of a padded neighbour table in TensorFlow, differentiable
    with respect to `displacement`.

    Args:
        displacement: `(T, K, 2)` displacements `r_j - r_t` (a tensor, e.g. from
            `displacements_tf`, or an array); cast to `dtype`.
        mask: `(T, K)` bool, the real entries; the others contribute 0.
        window, grid, sigma: as for `smooth_occupancy`.
        dtype: the TensorFlow dtype (or its name) of the computation and the result.
    `Phi(x) = (1 + erf(x / sqrt 2)) / 2` is differenced directly, so a far cell's weight is
    accurate to the dtype's round-off in absolute terms (not relative ones as in NumPy). The
    differences are a matrix product and x and y are taken apart once: no slices of the large
    tensors, whose gradients would cost more than the rest together.
    """
    import tensorflow as tf

    window, n = check_window(window, grid)
    sigma = check_sigma(sigma)
    dtype = tf.as_dtype(dtype)
    displacement = tf.cast(displacement, dtype)
    shape = displacement.shape
    if shape.rank is not None and (shape.rank != 3 or shape[-1] not in (2, None)):
        raise MdkerasError(f"displacement has shape {displacement.shape}: expected (T, K, 2).")
    scale = 1.0 / (math.sqrt(2.0) * sigma * window / n)  # erf's argument per unit length
    edges = tf.constant((-0.5 * window + window / n * np.arange(n + 1)) * scale, dtype=dtype)
    difference = np.zeros((n + 1, n))  # 0.5 erf(upper edge) - 0.5 erf(lower edge), per cell
    difference[np.arange(n), np.arange(n)] = -0.5
    difference[np.arange(1, n + 1), np.arange(n)] = 0.5
    difference = tf.constant(difference, dtype=dtype)
    centre = displacement * tf.constant(scale, dtype)
    keep = tf.cast(mask, dtype)[..., None]
    mx, my = (
        tf.linalg.matmul(tf.math.erf(edges - centre[:, :, axis, None]), difference) * keep
        for axis in (0, 1)
    )
    return tf.linalg.matmul(my, mx, transpose_a=True)
