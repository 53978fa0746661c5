"""The learned kernel: least squares of window forces on counts, at several exclusion radii.

Given the counts `X[c]` of a uniform sample, `E[F | X] = sum_c X[c] k[c]` with `k[c]` the cell
average of the pair force over cell `c`, so least squares on (grid, force) pairs estimates that
kernel. The cells touching the target have an unbounded cell average and cells near it carry
heavy-tailed noise, so the kernel is fit at several exclusion radii `R` (the fit at `R` uses only
samples whose cells within `R` of the target are empty) and each cell is taken from the largest
`R` that still includes it; the stitched kernel is D4-symmetrised. Bootstrap replicates over
configurations are one-step (linearised): `k*_b = k + G^-1 sum_g (w_bg - 1) X_g^T r_g`, one solve
for all replicates, residuals leverage-corrected (HC2). The kernel, completed at the touching
cells, is also a linear force predictor.

Units: reduced (sigma = epsilon = 1); kernels in force units per neighbour; float64; grids
`(S, n, n)` indexed `[iy, ix]` (rows +y, columns +x, SPEC §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mdkeras.checks import check_int, check_number
from mdkeras.errors import MdkerasError
from mdkeras.symmetry import symmetrise

BOOTSTRAP = 64  # bootstrap replicates
MIN_FRACTION = 0.05  # an exclusion radius needs at least this fraction of the training samples
MIN_SAMPLES = 200  # ... and at least this many samples
SAMPLES_PER_CELL = 4  # ... and this many per cell it fits (else the fit nearly interpolates)
RADIUS_STEP = 0.5  # exclusion radii R = h, 1.5 h, 2 h, ... (in cells)
MAX_RADII = 12  # at most this many radii (evenly thinned, first and last kept)
MIN_OCCUPIED = 10  # a cell needs neighbours in this many samples of its fit to be estimated
RIDGE = 1e-10  # relative diagonal ridge for the normal equations (unobserved cells -> 0)
PAIR_CHUNK = 4_000_000  # (cell, cell) pairs per chunk when accumulating the Gram matrix
TOL = 1e-9  # relative tolerance when comparing distances to radii (in cells)


# --- geometry ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Cells of an `n x n` window of side `W` around a target at the origin.

    `lower[iy, ix]` is the lower-left corner `(x0, y0)` of cell `[iy, ix]` `(n, n, 2)`,
    `centre` its centre, `min_dist` `(n, n)` the distance from the target to the closest point
    of the closed cell, `touching` `(n, n)` the cells whose closure contains the target (their
    cell-averaged force is unbounded).
    """

    window: float
    grid: int
    lower: np.ndarray = field(repr=False)
    centre: np.ndarray = field(repr=False)
    min_dist: np.ndarray = field(repr=False)
    touching: np.ndarray = field(repr=False)

    @property
    def cell(self) -> float:
        return self.window / self.grid


def geometry(window: float, grid: int) -> Geometry:
    """The `Geometry` of a window of side `window` split into `grid x grid` cells."""
    window = check_number("window", window, positive=True, noun="a window side")
    n = check_int("grid", grid, min=2)
    h = window / n
    a = 2 * np.arange(n) - n  # cell [a, a + 2] in units of h/2 along one axis
    gap = np.maximum(0, np.maximum(a, -(a + 2)))  # distance to 0 along the axis, units of h/2
    lo = a * (0.5 * h)
    lower = np.stack(np.meshgrid(lo, lo, indexing="xy"), axis=-1)
    gx, gy = np.meshgrid(gap, gap, indexing="xy")
    return Geometry(
        window=float(window),
        grid=n,
        lower=lower,
        centre=lower + 0.5 * h,
        min_dist=0.5 * h * np.hypot(gx, gy),
        touching=(gx == 0) & (gy == 0),
    )


@dataclass
class KernelFit:
    """A learned kernel and its bootstrap replicates.

    `kernel` `(n, n, 2)` stitched and D4-symmetrised (NaN: touching or unobserved cells);
    `replicates` `(B, n, n, 2)`; `sigma` `(n, n, 2)` their standard deviation; `radii` the
    exclusion radii `R`, `samples` the training samples each used.
    """

    geo: Geometry
    kernel: np.ndarray
    replicates: np.ndarray
    sigma: np.ndarray
    radii: list[float]
    samples: list[int]

    @property
    def usable(self) -> np.ndarray:
        """`(n, n)` cells with a finite learned kernel and a positive bootstrap spread."""
        return (
            np.all(np.isfinite(self.kernel), axis=-1)
            & np.all(self.sigma > 0, axis=-1)
            & ~self.geo.touching
        )


def exclusion_radii(
    grids: np.ndarray,
    geo: Geometry,
    *,
    step: float = RADIUS_STEP,
    min_fraction: float = MIN_FRACTION,
    min_samples: int = MIN_SAMPLES,
) -> tuple[list[float], np.ndarray]:
    """Exclusion radii `R = h, h (1 + step), ...` while enough samples have them empty (at
    least `min_samples`, `min_fraction` of all, and `SAMPLES_PER_CELL` per fitted cell); radii
    that exclude no more cells than the one before are skipped, and at most `MAX_RADII` are kept
    (evenly thinned, the first and the last among them).

    Returns `(radii, level)`: `level[s]` `(S,)` is the number of radii whose excluded cells
    (closest point within `R`) are all empty in sample `s` (0: not even the first).
    """
    h = geo.cell
    s, c = np.nonzero(grids.reshape(len(grids), -1))
    occupied_min = np.full(len(grids), np.inf)
    np.minimum.at(occupied_min, s, geo.min_dist.ravel()[c])
    need = max(int(min_samples), int(math.ceil(min_fraction * len(grids))))
    md = np.sort(geo.min_dist.ravel())
    radii: list[float] = []
    r = h

    def enough(r):
        cells = md.size - np.searchsorted(md, r - TOL * h)
        have = np.count_nonzero(occupied_min >= r - TOL * h)
        return have >= max(need, SAMPLES_PER_CELL * cells)

    while r <= md[-1] and enough(r):
        # a radius that excludes no more cells than the previous one adds nothing
        if not radii or np.searchsorted(md, radii[-1] - TOL * h) < np.searchsorted(md, r - TOL * h):
            radii.append(r)
        r += step * h
    if len(radii) > MAX_RADII:
        keep = np.unique(np.round(np.linspace(0, len(radii) - 1, MAX_RADII)).astype(int))
        radii = [radii[i] for i in keep]
    if not radii:
        raise MdkerasError(
            f"only {np.count_nonzero(occupied_min >= h)} of {len(grids)} training samples have "
            f"the cells touching the target empty: expected at least {need} and "
            f"{SAMPLES_PER_CELL} per cell; use more samples."
        )
    return radii, radius_levels(grids, geo, radii, occupied_min=occupied_min)


def radius_levels(grids, geo: Geometry, radii, *, occupied_min=None) -> np.ndarray:
    """`(S,)` the number of `radii` whose excluded cells (closest point within `R`) are all
    empty in each sample (0: not even the first)."""
    if occupied_min is None:
        s, c = np.nonzero(np.asarray(grids).reshape(len(grids), -1))
        occupied_min = np.full(len(grids), np.inf)
        np.minimum.at(occupied_min, s, geo.min_dist.ravel()[c])
    return np.searchsorted(np.array(radii) - TOL * geo.cell, occupied_min, side="right")


def _pairs(rows_flat: np.ndarray):
    """Chunks `(s, ci, cj, xi * xj)` over every ordered pair of nonzero cells of each sample
    `s` of the count rows `rows_flat` `(S, ncell)`: the sparse route to `X^T X`."""
    s, c = np.nonzero(rows_flat)
    x = rows_flat[s, c].astype(np.float64)
    m = np.bincount(s, minlength=len(rows_flat))
    start = np.cumsum(m) - m
    per = m[s]  # partners of each nonzero: every nonzero of its sample
    lo = 0
    while lo < len(s):
        cum = np.cumsum(per[lo:])
        hi = lo + max(1, int(np.searchsorted(cum, PAIR_CHUNK, side="right")))
        e = np.repeat(np.arange(lo, hi), per[lo:hi])
        offset = np.arange(len(e)) - np.repeat(np.cumsum(per[lo:hi]) - per[lo:hi], per[lo:hi])
        p = start[s[e]] + offset
        yield s[e], c[e], c[p], x[e] * x[p]
        lo = hi


def _fit_one_radius(flat, forces, config, rows, cells, n_config, weights):
    """LS kernel `(len(cells), 2)` on samples `rows` over `cells`, and its one-step bootstrap
    replicates `(B, len(cells), 2)` for configuration weights `weights` `(B, n_config)`.

    Sparse throughout (a window holds tens of neighbours in hundreds of cells). Residuals are
    leverage-corrected (`r_s / sqrt(1 - h_ss)`, as HC2) before they enter the replicates: with
    hundreds of cells and a few thousand samples the raw residuals are shrunk by the fit and
    would understate the spread.
    """
    ncell, m = flat.shape[1], len(cells)
    sub = flat[rows]
    pos = np.full(ncell, -1)
    pos[cells] = np.arange(m)
    gram = np.zeros(m * m)
    for _, ci, cj, xx in _pairs(sub):
        gram += np.bincount(pos[ci] * m + pos[cj], weights=xx, minlength=m * m)
    gram = gram.reshape(m, m)
    s, c = np.nonzero(sub)
    x = sub[s, c].astype(np.float64)
    pc = pos[c]
    if np.any(pc < 0):
        raise MdkerasError("an excluded cell is occupied in its fit: expected it empty.")
    f = forces[rows]
    rhs = np.stack([np.bincount(pc, weights=x * f[s, j], minlength=m) for j in (0, 1)], axis=1)
    diag = np.diag(gram).copy()
    ridge = RIDGE * max(float(diag.mean()), 1.0)
    a_inv = np.linalg.inv(gram + np.diag(np.where(diag > 0, ridge, 1.0)))
    k = a_inv @ rhs
    lev = np.zeros(len(rows))
    for si, ci, cj, xx in _pairs(sub):
        lev += np.bincount(si, weights=xx * a_inv[pos[ci], pos[cj]], minlength=len(rows))
    pred = np.stack(
        [np.bincount(s, weights=x * k[pc, j], minlength=len(rows)) for j in (0, 1)], axis=1
    )
    resid = (f - pred) / np.sqrt(np.clip(1.0 - lev, 1e-3, 1.0))[:, None]
    # u[g] = X_g^T r_g, the configuration's contribution to the normal equations.
    owner = config[rows][s] * m + pc
    u = np.stack(
        [np.bincount(owner, weights=x * resid[s, j], minlength=n_config * m) for j in (0, 1)],
        axis=-1,
    ).reshape(n_config, m, 2)
    shift = np.einsum("bg,gcj->bcj", weights - 1.0, u)
    reps = np.einsum("cd,bdj->bcj", a_inv, shift)
    occupied = np.bincount(pc, minlength=m)  # samples with a neighbour in each cell
    unobserved = occupied < MIN_OCCUPIED  # too few to estimate (or to bootstrap) honestly
    k[unobserved] = np.nan
    reps[:, unobserved] = np.nan
    return k, k[None] + reps


def fit_kernel(
    grids,
    forces,
    config,
    window: float,
    *,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    step: float = RADIUS_STEP,
    min_fraction: float = MIN_FRACTION,
    min_samples: int = MIN_SAMPLES,
    radii=None,
) -> KernelFit:
    """Least-squares kernel of `forces ~ sum_c grids[c] k[c]` at several exclusion radii.

    Args:
        grids: `(S, n, n)` counts (the training split); forces: `(S, 2)` float64 window forces;
        config: `(S,)` configuration id per sample (the bootstrap resamples configurations);
        window: window side `W`; bootstrap: replicates `B`; seed: their generator's seed.
        radii: `None` (choose them, `exclusion_radii`) or the exclusion radii to use, e.g.
            another fit's, so that two datasets' kernels are the same estimator.
    Returns:
        A `KernelFit`: each cell from the largest radius `R <= min_dist(cell)`, D4-symmetrised.
    """
    grids = np.asarray(grids)
    forces = np.asarray(forces, dtype=np.float64)
    if grids.ndim != 3 or grids.shape[1] != grids.shape[2]:
        raise MdkerasError(f"grids have shape {grids.shape}: expected (S, n, n).")
    if forces.shape != (len(grids), 2) or np.shape(config) != (len(grids),):
        raise MdkerasError(
            f"forces {forces.shape} and config {np.shape(config)} do not match "
            f"{len(grids)} grids: expected (S, 2) and (S,)."
        )
    bootstrap = check_int("bootstrap", bootstrap, min=2)
    geo = geometry(window, grids.shape[-1])
    _, config = np.unique(np.asarray(config), return_inverse=True)
    n_config = int(config.max()) + 1
    if n_config < 2:
        raise MdkerasError("the samples come from one configuration: expected at least two.")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_config, np.full(n_config, 1.0 / n_config), size=int(bootstrap))
    if radii is None:
        radii, level = exclusion_radii(
            grids, geo, step=step, min_fraction=min_fraction, min_samples=min_samples
        )
    else:
        radii, level = [float(r) for r in radii], radius_levels(grids, geo, radii)
    flat = grids.reshape(len(grids), -1)
    md = geo.min_dist.ravel()
    ncell = md.size
    raw = np.full((ncell, 2), np.nan)
    reps = np.full((int(bootstrap), ncell, 2), np.nan)
    samples = []
    for j, r in enumerate(radii):
        rows = np.flatnonzero(level > j)
        cells = np.flatnonzero(md >= r - TOL * geo.cell)
        k, kb = _fit_one_radius(flat, forces, config, rows, cells, n_config, weights)
        upper = radii[j + 1] if j + 1 < len(radii) else np.inf
        take = md[cells] < upper - TOL * geo.cell
        raw[cells[take]] = k[take]
        reps[:, cells[take]] = kb[:, take]
        samples.append(len(rows))
    n = geo.grid
    replicates = symmetrise(reps.reshape(-1, n, n, 2))
    return KernelFit(
        geo=geo,
        kernel=symmetrise(raw.reshape(n, n, 2)),
        replicates=replicates,
        sigma=np.std(replicates, axis=0, ddof=1),
        radii=radii,
        samples=samples,
    )


def predictor_kernel(fit: KernelFit, grids, forces) -> np.ndarray:
    """The learned kernel `(n, n, 2)` completed for prediction.

    Touching cells (unbounded cell average) get, per component, the median residual force of the
    training samples with exactly one neighbour in that cell (then D4-symmetrised); unobserved
    cells get 0.
    """
    grids = np.asarray(grids)
    k = np.where(np.isfinite(fit.kernel), fit.kernel, 0.0)
    base = linear_forces(grids, k)
    resid = np.asarray(forces, dtype=np.float64) - base
    fill = np.full(k.shape, np.nan)
    for iy, ix in zip(*np.nonzero(fit.geo.touching), strict=True):
        one = grids[:, iy, ix] == 1
        if np.any(one):
            fill[iy, ix] = np.median(resid[one], axis=0)
    fill = symmetrise(fill)
    touch = fit.geo.touching[..., None] & np.isfinite(fill)
    return np.where(touch, fill, k)


def linear_forces(grids, kernel) -> np.ndarray:
    """Forces `(S, 2)` of the linear predictor `sum_c grids[c] kernel[c]` (sparse: grids
    `(S, n, n)` counts, kernel `(n, n, 2)`)."""
    grids = np.asarray(grids)
    flat = grids.reshape(len(grids), -1)
    s, c = np.nonzero(flat)
    x = flat[s, c].astype(np.float64)
    k = np.asarray(kernel, dtype=np.float64).reshape(-1, 2)
    return np.stack(
        [np.bincount(s, weights=x * k[c, j], minlength=len(grids)) for j in (0, 1)], axis=1
    )
