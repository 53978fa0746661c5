"""The occupancy-grid descriptor and its window force (SPEC §3–4).

Around each target, the square window of side `W` is split into `n x n` cells of side `h = W/n`.
`D[iy, ix]` counts the other particles with `ix = floor((d_x + W/2) / h)` and
`iy = floor((d_y + W/2) / h)` in `[0, n)`, where `d = r_j - r_t` is the minimum-image displacement
(rows follow +y, columns +x; cells are half-open). The label is the float64 force on the target
from exactly the particles counted in `D`.
"""

from __future__ import annotations

import numpy as np

from mdkeras.checks import check_finite, check_int, check_number
from mdkeras.errors import MdkerasError
from mdkeras.potentials import check_potential
from mdkeras.potentials import force_over_r as pair_force_over_r

MAX_COUNT = 255  # counts are stored as uint8; more is an error, not a wrap
# A cell list keeps a dense table of cells while it has at most this many cells per particle
# (and always up to DENSE_CELLS_MIN); beyond, it looks up the occupied cells in sorted order, so
# a sparse box (box=1e5, window=1) costs memory for its particles, not for its area.
DENSE_CELLS_PER_PARTICLE = 16
DENSE_CELLS_MIN = 2**16
MAX_CELLS_SIDE = 2**31  # cell ids `cy * ncell + cx` must fit in int64; larger cells stay correct


def check_window(window, grid, box: float | None = None) -> tuple[float, int]:
    """Validate the window side, grid size and (if given) that the window fits in the box.

    Returns `(window, grid)` as a float and an int."""
    side = check_number("window", window, positive=True, noun="a window side")
    grid = check_int("grid", grid, min=2, hint="use e.g. grid=28")
    if box is not None and side >= box:
        raise MdkerasError(
            f"window={window!r} is not allowed for box side {box:.4g}: expected window < box; "
            "use a smaller window or more particles (a larger box)."
        )
    return side, grid


def window_pairs(
    positions: np.ndarray,
    box: float,
    targets: np.ndarray,
    window: float,
    grid: int,
    *,
    cells_only: bool = False,
):
    """All (target, neighbour) pairs whose neighbour falls in a cell of the target's window.

    A cell list with cell side >= W/4 gives each target its 5 x 5 block of candidate cells (a
    dense table of cells, or for a sparse box a binary search among the occupied ones: the same
    candidates in the same order); the cell test of SPEC §3 on the minimum-image displacement
    then selects exactly the counted neighbours. Returns `(t, dx, dy, ix, iy)`, one entry per
    pair: `t` int64 index into `targets`, float64 displacements `r_j - r_t`, int64 cell indices
    in `[0, n)`. `cells_only`: `(t, cell, keep, per_target)` instead, for every candidate its
    target and flat cell `iy n + ix`, which candidates are counted, and the candidates per target
    (the same arithmetic: a learned force field's grids each MD step, without the gathers it
    does not need).
    """
    n_targets = len(targets)
    span = 2  # cells of side >= W/(2 span) on each side of the target's cell cover the window
    ncell = min(int(box // (0.5 * window / span * (1.0 + 1e-9))), MAX_CELLS_SIDE)
    px, py = positions[:, 0], positions[:, 1]
    if ncell > 2 * span:
        cxy = np.floor(positions * (ncell / box)).astype(np.int64) % ncell
        cell = cxy[:, 1] * ncell + cxy[:, 0]
        order = np.argsort(cell)
        if ncell * ncell <= max(DENSE_CELLS_MIN, DENSE_CELLS_PER_PARTICLE * len(positions)):
            count = np.bincount(cell, minlength=ncell * ncell)
            start = np.cumsum(count) - count
            wrap = np.arange(-span, ncell + span) % ncell  # wrap[c + span] = c mod ncell
            tc = cxy[targets] + span
            near = (
                wrap[tc[:, 1:2] + _BLOCK[:, 1]] * ncell + wrap[tc[:, 0:1] + _BLOCK[:, 0]]
            ).ravel()
            per = count[near]
            first = start[near]
        else:  # the same cells and order, found by binary search among the occupied ones
            tc = cxy[targets]
            near = (
                (tc[:, 1:2] + _BLOCK[:, 1]) % ncell * ncell + (tc[:, 0:1] + _BLOCK[:, 0]) % ncell
            ).ravel()
            sorted_cell = cell[order]
            first = np.searchsorted(sorted_cell, near, side="left")
            per = np.searchsorted(sorted_cell, near, side="right") - first
        base = first - (np.cumsum(per) - per)  # where each block starts in `order`
        j = np.take(order, np.repeat(base, per) + np.arange(per.sum()))
        per_target = per.reshape(n_targets, len(_BLOCK)).sum(axis=1)
    else:  # the window spans most of the box: every particle is a candidate
        j = np.tile(np.arange(len(positions)), n_targets)
        per_target = np.full(n_targets, len(positions))
    tj = np.repeat(targets, per_target)
    dx = _minimum_image(np.take(px, j) - np.repeat(px[targets], per_target), box)
    dy = _minimum_image(np.take(py, j) - np.repeat(py[targets], per_target), box)
    h = window / grid
    ix = np.floor((dx + 0.5 * window) / h).astype(np.int64)
    iy = np.floor((dy + 0.5 * window) / h).astype(np.int64)
    keep = (ix.view(np.uint64) < grid) & (iy.view(np.uint64) < grid) & (j != tj)
    t = np.repeat(np.arange(n_targets), per_target)
    if cells_only:  # the target and cell of every candidate: all a grid count needs
        return t, iy * grid + ix, keep, per_target
    t = t[keep]
    return t, dx[keep], dy[keep], ix[keep], iy[keep]


_BLOCK = np.array([(sx, sy) for sy in range(-2, 3) for sx in range(-2, 3)])


def _minimum_image(d: np.ndarray, box: float) -> np.ndarray:
    d -= box * np.round(d / box)
    return d


def featurize(
    positions, box, targets, *, potential: str, window: float, grid: int, force_over_r=None
):
    """Occupancy grids and window forces for `targets` of one periodic configuration.

    Args:
        positions: `(N, 2)` finite particle coordinates (reduced units), any real values
            (wrapped); `N = 0` (an empty configuration) allows only empty `targets`.
        box: side `B` of the periodic square box; must exceed `window`.
        targets: `(T,)` integer indices into `positions`; `T = 0` gives empty results.
        potential: `"lj"` or `"coulomb"`.
        window: window side `W`; grid: cells a side `n` (>= 2).
        force_over_r: `None` (the potential's pair force) or a vectorised `f(r)/r` of `r^2`
            that replaces it (a candidate force, e.g. a recovered one, on its own MD data).
    Returns:
        `(grids, forces)`: `(T, n, n)` uint8 counts `D[iy, ix]` and `(T, 2)` float64 forces
        `(F_x, F_y)` on each target from exactly the counted particles.
    """
    check_potential(potential)
    positions = _as_positions(positions)
    box = check_number("box", box, positive=True, noun="a box side")
    window, n = check_window(window, grid, box)
    targets = _as_targets(targets, len(positions))
    if len(targets) == 0:
        return np.zeros((0, n, n), dtype=np.uint8), np.zeros((0, 2), dtype=np.float64)
    t, dx, dy, ix, iy = window_pairs(positions, box, targets, window, n)
    grids = _count(t, ix, iy, len(targets), n)
    forces = sum_forces(
        potential, t, dx, dy, len(targets), targets=targets, force_over_r=force_over_r
    )
    return grids, forces


def occupancy(positions, box, targets, *, window: float, grid: int) -> np.ndarray:
    """The `(T, n, n)` uint8 grids of `featurize` alone, without the window forces: what a
    learned force field needs every MD step (arguments as for `featurize`)."""
    positions = _as_positions(positions)
    box = check_number("box", box, positive=True, noun="a box side")
    window, n = check_window(window, grid, box)
    targets = _as_targets(targets, len(positions))
    if len(targets) == 0:
        return np.zeros((0, n, n), dtype=np.uint8)
    t, cell, keep, per_target = window_pairs(positions, box, targets, window, n, cells_only=True)
    flat = (t * (n * n) + cell)[keep]
    return _count_flat(flat, len(targets), n, bound=int(per_target.max()))


def _count(t, ix, iy, targets: int, n: int) -> np.ndarray:
    """Cell counts `(targets, n, n)` uint8 of the window pairs `(t, ix, iy)`."""
    return _count_flat((t * n + iy) * n + ix, targets, n)


def _count_flat(flat, targets: int, n: int, *, bound: int | None = None) -> np.ndarray:
    """Cell counts `(targets, n, n)` uint8 of flat cell indices; `bound`, if given, caps any
    one target's pairs (no cell can then hold more, so at most `MAX_COUNT` needs no scan)."""
    counts = np.bincount(flat, minlength=targets * n * n)
    if counts.size and (bound is None or bound > MAX_COUNT) and counts.max() > MAX_COUNT:
        raise MdkerasError(
            f"a cell holds {int(counts.max())} particles: expected at most {MAX_COUNT} (uint8); "
            "use a finer grid or a lower density."
        )
    return counts.astype(np.uint8).reshape(targets, n, n)


def _as_positions(positions) -> np.ndarray:
    """`positions` as a finite float64 `(N, 2)` array (an empty list counts as `(0, 2)`)."""
    try:
        positions = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise MdkerasError(
            f"positions are not an array of numbers ({err}): expected an (N, 2) float array."
        ) from None
    if positions.size == 0 and positions.ndim == 1:
        positions = positions.reshape(0, 2)
    if positions.ndim != 2 or positions.shape[1] != 2:
        raise MdkerasError(f"positions have shape {positions.shape}: expected (N, 2).")
    return check_finite("positions", positions)


def _as_targets(targets, particles: int) -> np.ndarray:
    """`targets` as an int64 index array into `particles` positions (an empty list is allowed)."""
    targets = np.asarray(targets)
    if targets.ndim == 1 and targets.size == 0:
        return targets.astype(np.int64)
    if targets.ndim != 1 or not np.issubdtype(targets.dtype, np.integer):
        raise MdkerasError(
            f"targets must be a 1-D integer index array, got {targets.dtype} {targets.shape}."
        )
    if particles == 0:
        raise MdkerasError(
            f"target index {int(targets[0])} is out of range: positions hold no particles; "
            "pass targets=[] for an empty configuration."
        )
    bad = targets[(targets < 0) | (targets >= particles)]
    if bad.size:
        raise MdkerasError(
            f"target index {int(bad[0])} is out of range: expected 0 <= index < {particles}."
        )
    return targets.astype(np.int64)


def sum_forces(
    potential: str, owner: np.ndarray, dx, dy, size: int, *, targets=None, force_over_r=None
):
    """Sum the pair forces from displacements `(dx, dy)` (P,) into `size` targets by `owner`
    (`force_over_r`: as in `featurize`).

    A pair too close for a finite force (distance 0, or 1e-30 for LJ) is an error naming its
    distance and its target (`owner`, and the particle index `targets[owner]` if given).
    """
    r2 = dx * dx + dy * dy
    if force_over_r is None:
        g = pair_force_over_r(potential, r2)
    else:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            g = np.asarray(force_over_r(r2), dtype=np.float64)
    finite = np.isfinite(g)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        i = bad[0]
        who = f"target {int(owner[i])}"
        if targets is not None:
            who += f" (particle {int(targets[owner[i]])})"
        raise MdkerasError(
            f"{who} has a neighbour at distance {float(np.hypot(dx[i], dy[i])):.3g}, too close "
            f"for a finite {potential} pair force ({len(bad)} such pair(s)): expected distinct "
            "positions; check the configuration for overlapping particles."
        )
    out = np.empty((size, 2), dtype=np.float64)
    out[:, 0] = np.bincount(owner, weights=-g * dx, minlength=size)
    out[:, 1] = np.bincount(owner, weights=-g * dy, minlength=size)
    return out
