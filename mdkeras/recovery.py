"""Recover the pair force `f(r)` from (grid, force) samples: a learned linear kernel, deconvolved.

Why it works (uniform sampler): given the counts `X[c]`, the neighbours are iid uniform within
their cells, so `E[F | X] = sum_c X[c] k[c]` exactly, where `k[c]` (a 2-vector) is the *cell
average* of the pair force `-f(r) d/r` over cell `c`. Least squares on (grid, force) pairs
therefore estimates that cell-averaged kernel. Two traps, two remedies:

1. The cells touching the target have an unbounded cell average (the force diverges at the
   target), and cells near the target carry heavy-tailed within-cell noise. So the kernel is fit
   at several exclusion radii `R`: the fit at `R` uses only samples whose cells within `R` of the
   target (closest point of the cell) are empty, and estimates the cells beyond `R`; each cell is
   taken from the largest `R` that still includes it. The stitched kernel is symmetrised over D4.
2. Cell averaging biases a naive fit of `f` at cell centres (for LJ the force changes by orders of
   magnitude across one cell). So `f` is fitted so that the *cell average of the model kernel*
   (Gauss-Legendre quadrature over every cell, vectorised) matches the learned kernel: `A r^-p`
   (Coulomb), `A r^-13 - B r^-7` (LJ), and a free-form shell-wise `f` (one value per radial
   shell one cell wide).

Uncertainties come from a bootstrap over configurations (samples of one configuration share
neighbours). The kernel replicates are one-step (linearised) bootstrap replicates:
`k*_b = k + G^-1 sum_g (w_bg - 1) X_g^T r_g` with multinomial configuration weights `w_b`, the
Gram matrix `G` and the residuals `r_g` of configuration `g`; this is the bootstrap to first order
in 1/configurations and costs one solve for all replicates (residuals leverage-corrected, as HC2).
Every parameter is then re-fitted on every replicate, cells weighted by 1/sigma^2 and each D4
orbit counted once. The learned kernel, completed at the touching cells, is also a linear
force predictor; its forces, encoded like a case's labels, give a joint accuracy.
Units: reduced (sigma = epsilon = 1); kernels in force units per neighbour. Arrays are float64;
grids `(S, n, n)` are indexed `[iy, ix]` (rows +y, columns +x, SPEC §3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from mdkeras.encoding import make_encoder
from mdkeras.errors import MdkerasError
from mdkeras.metrics import (
    BAYES_DRAWS,
    BAYES_SAMPLES,
    bayes_limit,
    cell_centre_forces,
    classification_metrics,
    majority,
)
from mdkeras.potentials import check_potential, f_max, force_over_r, pair_force
from mdkeras.symmetry import MATRICES, transform_grids

BOOTSTRAP = 64  # bootstrap replicates
QUADRATURE_ORDER = 16  # Gauss-Legendre nodes per cell side
MIN_FRACTION = 0.05  # an exclusion radius needs at least this fraction of the training samples
MIN_SAMPLES = 200  # ... and at least this many samples
SAMPLES_PER_CELL = 4  # ... and this many per cell it fits (else the fit nearly interpolates)
RADIUS_STEP = 0.5  # exclusion radii R = h, 1.5 h, 2 h, ... (in cells)
MAX_RADII = 12  # at most this many radii (evenly thinned, first and last kept)
MIN_OCCUPIED = 10  # a cell needs neighbours in this many samples of its fit to be estimated
RIDGE = 1e-10  # relative diagonal ridge for the normal equations (unobserved cells -> 0)
PAIR_CHUNK = 4_000_000  # (cell, cell) pairs per chunk when accumulating the Gram matrix
TOL = 1e-9  # relative tolerance when comparing distances to radii (in cells)
TRUTH = {"lj": {"A": 48.0, "B": 24.0}, "coulomb": {"A": 1.0, "p": 2.0}}
MODEL_FORMS = {"lj": "A r^-13 - B r^-7", "coulomb": "A r^-p"}
LJ_ZERO = 2.0 ** (1.0 / 6.0)  # f(r) = 0
LJ_WELL = (26.0 / 7.0) ** (1.0 / 6.0)  # f(r) most attractive (most negative)


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
    if not (isinstance(window, (int, float)) and math.isfinite(window) and window > 0):
        raise MdkerasError(f"window={window!r} is not allowed: expected a window side > 0.")
    if isinstance(grid, bool) or int(grid) != grid or grid < 2:
        raise MdkerasError(f"grid={grid!r} is not allowed: expected an integer >= 2.")
    n = int(grid)
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


def cell_average(g_of_r2, geo: Geometry, *, mode: str = "average", order: int = QUADRATURE_ORDER):
    """Cell average of the force `-g(r^2) d` over every cell: `(n, n, 2)`.

    Args:
        g_of_r2: vectorised `f(r)/r` as a function of `r^2` (as `potentials.force_over_r`).
        mode: `"average"` (Gauss-Legendre, `order^2` nodes per cell) or `"centre"` (the force at
            the cell centre: what a neighbour exactly at the centre exerts).
    Returns:
        float64 `(n, n, 2)`, force units; touching cells are returned but meaningless.
    """
    everything = np.ones((geo.grid, geo.grid), dtype=bool)
    avg = masked_average(geo, everything, mode=mode, order=order)
    return avg(g_of_r2).reshape(geo.grid, geo.grid, 2)


def masked_average(geo: Geometry, mask, *, mode: str = "average", order=QUADRATURE_ORDER):
    """`cell_average` restricted to the `m` masked cells, nodes computed once: returns
    `avg(g_of_r2)` -> `(2 m,)` = `cell_average(g_of_r2, geo, mode=mode)[mask].ravel()`."""
    if mode == "centre":
        x, y = geo.centre[mask][:, 0, None, None], geo.centre[mask][:, 1, None, None]
        wts = np.ones((1, 1))
    elif mode == "average":
        t, w = np.polynomial.legendre.leggauss(int(order))
        t, w = 0.5 * (t + 1.0), 0.5 * w  # nodes and weights on [0, 1]
        lower = geo.lower[mask]  # (m, 2); x varies along the last node axis, y along the other
        x = lower[:, 0, None, None] + geo.cell * t[None, None, :] + 0.0 * t[None, :, None]
        y = lower[:, 1, None, None] + geo.cell * t[None, :, None] + 0.0 * t[None, None, :]
        wts = w[:, None] * w[None, :]
    else:
        raise MdkerasError(f"mode={mode!r} is not allowed: expected 'average' or 'centre'.")
    r2 = x * x + y * y

    def avg(g_of_r2):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            g = g_of_r2(r2) * wts
            fx, fy = np.sum(g * x, axis=(-2, -1)), np.sum(g * y, axis=(-2, -1))
        return -np.stack([fx, fy], axis=1).ravel()

    return avg


def power_g(power: float):
    """`g(r^2) = r^-(power + 1)`, i.e. the `f(r) = r^-power` term as `f(r)/r`."""
    return lambda r2: r2 ** (-0.5 * (power + 1.0))


def true_kernel(potential: str, geo: Geometry, *, mode: str = "average") -> np.ndarray:
    """The true kernel `(n, n, 2)`: cell average (or cell-centre value) of the pair force."""
    check_potential(potential)
    return cell_average(lambda r2: force_over_r(potential, r2), geo, mode=mode)


# --- symmetry ------------------------------------------------------------------------------------


def symmetrise(kernel: np.ndarray) -> np.ndarray:
    """D4 average of kernels `(..., n, n, 2)`: `(1/8) sum_g M_g T_g(k)`.

    A symmetric kernel maps a neighbour in cell `c` to force `k[c]` and one in the image cell
    `g(c)` to `M_g k[c]`; `T_g` is `symmetry.transform_grids` (on each component plane) and
    `M_g` the element's 2x2 matrix. NaN (unobserved) cells stay NaN only where every image is NaN.
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


# --- the kernel fit ------------------------------------------------------------------------------


@dataclass
class KernelFit:
    """A learned kernel and its bootstrap replicates.

    `kernel` `(n, n, 2)` stitched and D4-symmetrised (NaN: touching or unobserved cells);
    `replicates` `(B, n, n, 2)`; `sigma` `(n, n, 2)` their standard deviation; `radius_index`
    `(n, n)` which exclusion radius each cell came from (-1: none); `radii` the radii `R`,
    `samples` the training samples each used; `raw` the stitched kernel before symmetrising.
    """

    geo: Geometry
    kernel: np.ndarray
    replicates: np.ndarray
    sigma: np.ndarray
    radius_index: np.ndarray
    radii: list[float]
    samples: list[int]
    raw: np.ndarray

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
    level = np.searchsorted(np.array(radii) - TOL * h, occupied_min, side="right")
    return radii, level


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
) -> KernelFit:
    """Least-squares kernel of `forces ~ sum_c grids[c] k[c]` at several exclusion radii.

    Args:
        grids: `(S, n, n)` counts (the training split); forces: `(S, 2)` float64 window forces;
        config: `(S,)` configuration id per sample (the bootstrap resamples configurations);
        window: window side `W`; bootstrap: replicates `B`; seed: their generator's seed.
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
    if isinstance(bootstrap, bool) or int(bootstrap) != bootstrap or bootstrap < 2:
        raise MdkerasError(f"bootstrap={bootstrap!r} is not allowed: expected an integer >= 2.")
    geo = geometry(window, grids.shape[-1])
    _, config = np.unique(np.asarray(config), return_inverse=True)
    n_config = int(config.max()) + 1
    if n_config < 2:
        raise MdkerasError("the samples come from one configuration: expected at least two.")
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_config, np.full(n_config, 1.0 / n_config), size=int(bootstrap))
    radii, level = exclusion_radii(
        grids, geo, step=step, min_fraction=min_fraction, min_samples=min_samples
    )
    flat = grids.reshape(len(grids), -1)
    md = geo.min_dist.ravel()
    ncell = md.size
    raw = np.full((ncell, 2), np.nan)
    reps = np.full((int(bootstrap), ncell, 2), np.nan)
    index = np.full(ncell, -1)
    samples = []
    for j, r in enumerate(radii):
        rows = np.flatnonzero(level > j)
        cells = np.flatnonzero(md >= r - TOL * geo.cell)
        k, kb = _fit_one_radius(flat, forces, config, rows, cells, n_config, weights)
        upper = radii[j + 1] if j + 1 < len(radii) else np.inf
        take = md[cells] < upper - TOL * geo.cell
        raw[cells[take]] = k[take]
        reps[:, cells[take]] = kb[:, take]
        index[cells[take]] = j
        samples.append(len(rows))
    n = geo.grid
    raw = raw.reshape(n, n, 2)
    replicates = symmetrise(reps.reshape(-1, n, n, 2))
    kernel = symmetrise(raw)
    return KernelFit(
        geo=geo,
        kernel=kernel,
        replicates=replicates,
        sigma=np.std(replicates, axis=0, ddof=1),
        radius_index=index.reshape(n, n),
        radii=radii,
        samples=samples,
        raw=raw,
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


# --- deconvolution -------------------------------------------------------------------------------


def _weighted(kernel, sigma, mask):
    """Flattened `(kernel, 1/sigma)` over the masked cells and both components."""
    return kernel[mask].ravel(), 1.0 / sigma[mask].ravel()


def _wls(design, target, w):
    """Weighted least squares: `argmin || w (design @ theta - target) ||`; design `(m, p)`."""
    theta, *_ = np.linalg.lstsq(design * w[:, None], target * w, rcond=None)
    return theta


def _chi2(design, theta, target, w) -> float:
    return float(np.sum((w * (design @ theta - target)) ** 2))


def fit_lj(kernels, sigma, mask, geo: Geometry, *, mode: str = "average") -> np.ndarray:
    """`(A, B)` of `f = A r^-13 - B r^-7` per kernel `(..., n, n, 2)`: `(..., 2)`."""
    avg = masked_average(geo, mask, mode=mode)
    q13, q7 = avg(power_g(13.0)), avg(power_g(7.0))
    design = np.stack([q13, -q7], axis=1)
    w = 1.0 / sigma[mask].ravel()
    ks = np.asarray(kernels)
    flat = ks.reshape(-1, *ks.shape[-3:])
    out = np.array([_wls(design, k[mask].ravel(), w) for k in flat])
    return out.reshape(*ks.shape[:-3], 2)


def _best_a(q, target, w) -> float:
    """The weighted least-squares `A` of `target ~ A q`."""
    return float(np.sum(w * w * q * target) / np.sum(w * w * q * q))


def _profile_power(p, target, w, basis_of):
    """Best `A` and chi^2 for exponent `p` (variable projection)."""
    q = basis_of(p)
    a = _best_a(q, target, w)
    return a, float(np.sum((w * (a * q - target)) ** 2))


def fit_power(
    kernels, sigma, mask, geo: Geometry, *, mode: str = "average", bounds=(0.5, 6.0)
) -> np.ndarray:
    """`(A, p)` of `f = A r^-p` per kernel `(..., n, n, 2)`: `(..., 2)`.

    For each `p` the best `A` is linear; `p` minimises the weighted chi^2 (a scan, then a
    golden-section search around the best scan point).
    """
    w = 1.0 / sigma[mask].ravel()
    avg = masked_average(geo, mask, mode=mode)

    def basis_of(p):
        return avg(power_g(p))

    grid_p = np.linspace(bounds[0], bounds[1], 56)
    bases = [basis_of(p) for p in grid_p]
    ks = np.asarray(kernels)
    flat = ks.reshape(-1, *ks.shape[-3:])
    out = []
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    for k in flat:
        t = k[mask].ravel()
        chi = [np.sum((w * (_best_a(b, t, w) * b - t)) ** 2) for b in bases]
        i = int(np.argmin(chi))
        lo, hi = grid_p[max(i - 1, 0)], grid_p[min(i + 1, len(grid_p) - 1)]
        c, d = hi - invphi * (hi - lo), lo + invphi * (hi - lo)
        fc, fd = _profile_power(c, t, w, basis_of)[1], _profile_power(d, t, w, basis_of)[1]
        for _ in range(32):
            if fc < fd:
                hi, d, fd = d, c, fc
                c = hi - invphi * (hi - lo)
                fc = _profile_power(c, t, w, basis_of)[1]
            else:
                lo, c, fc = c, d, fd
                d = lo + invphi * (hi - lo)
                fd = _profile_power(d, t, w, basis_of)[1]
        p = 0.5 * (lo + hi)
        out.append((_profile_power(p, t, w, basis_of)[0], p))
    return np.array(out).reshape(*ks.shape[:-3], 2)


def fit_parameters(potential, kernels, sigma, mask, geo, *, mode="average") -> dict:
    """Parameters of the potential's form (`MODEL_FORMS`) per kernel: `{name: (...,) array}`."""
    check_potential(potential)
    if potential == "lj":
        ab = fit_lj(kernels, sigma, mask, geo, mode=mode)
        return {"A": ab[..., 0], "B": ab[..., 1]}
    ap = fit_power(kernels, sigma, mask, geo, mode=mode)
    return {"A": ap[..., 0], "p": ap[..., 1]}


def model_force(potential: str, params: dict, r) -> np.ndarray:
    """The fitted `f(r)` for parameters `params` (scalars or arrays broadcasting with `r`)."""
    r = np.asarray(r, dtype=np.float64)
    if potential == "lj":
        return params["A"] * r**-13.0 - params["B"] * r**-7.0
    return params["A"] * r ** -np.asarray(params["p"])


def fundamental_domain(geo: Geometry) -> np.ndarray:
    """`(n, n)` one cell per D4 orbit (centre with `0 <= y <= x`): a symmetrised kernel holds
    no more information, and fitting each orbit once keeps chi^2 honest."""
    c = geo.centre
    tol = 1e-9 * geo.cell
    return (c[..., 0] >= -tol) & (c[..., 1] >= -tol) & (c[..., 1] <= c[..., 0] + tol)


def shell_design(geo: Geometry, edges: np.ndarray, mask: np.ndarray, *, sub: int = 48):
    """Cell averages `(m, 2, J)` of `-1[r in shell j] d/r` over the `m` masked cells.

    Shells `[edges[j], edges[j + 1])`; a midpoint rule with `sub x sub` points per cell (the
    indicator is discontinuous, so no Gauss rule); `f(r) = sum_j f_j 1[r in shell j]`.
    """
    t = (np.arange(int(sub)) + 0.5) / int(sub)
    h = geo.cell
    lower = geo.lower[mask]  # (m, 2)
    x = lower[:, 0, None, None] + h * t[None, None, :] + 0.0 * t[None, :, None]  # (m, s, s)
    y = lower[:, 1, None, None] + h * t[None, :, None] + 0.0 * t[None, None, :]
    r = np.hypot(x, y)
    j = np.searchsorted(edges, r, side="right") - 1
    inside = (j >= 0) & (j < len(edges) - 1)
    shells, m = len(edges) - 1, len(lower)
    index = (np.arange(m)[:, None, None] * shells + np.clip(j, 0, shells - 1)).ravel()
    out = np.empty((m, 2, shells))
    for comp, d in enumerate((x, y)):
        u = np.where(inside, -d / r, 0.0).ravel() / (sub * sub)
        out[:, comp] = np.bincount(index, weights=u, minlength=m * shells).reshape(m, shells)
    return out


def fit_shells(kernels, sigma, mask, geo: Geometry, edges, *, sub: int = 48) -> np.ndarray:
    """Free-form shell-wise `f`: one value per shell `[edges[j], edges[j+1])`, per kernel.

    Weighted least squares of the cell-averaged shell indicators against the learned kernel
    `(..., n, n, 2)`; returns `(..., J)` (NaN for shells no masked cell reaches).
    """
    edges = np.asarray(edges, dtype=np.float64)
    design = shell_design(geo, edges, mask, sub=sub).reshape(-1, len(edges) - 1)
    w = 1.0 / sigma[mask].ravel()
    seen = np.any(design != 0, axis=0)
    ks = np.asarray(kernels)
    flat = ks.reshape(-1, *ks.shape[-3:])
    out = np.full((len(flat), len(edges) - 1), np.nan)
    for i, k in enumerate(flat):
        out[i, seen] = _wls(design[:, seen], k[mask].ravel(), w)
    return out.reshape(*ks.shape[:-3], len(edges) - 1)


def derived_points(potential: str, params: dict) -> dict:
    """LJ only: the zero crossing `(A/B)^(1/6)` and the most attractive point
    `(13 A / (7 B))^(1/6)` of `A r^-13 - B r^-7`, per parameter set (arrays broadcast)."""
    if potential != "lj":
        return {}
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.asarray(params["A"]) / np.asarray(params["B"])
        return {
            "zero_crossing": ratio ** (1.0 / 6.0),
            "well_minimum": (13.0 / 7.0 * ratio) ** (1.0 / 6.0),
        }


DERIVED_TRUTH = {"zero_crossing": LJ_ZERO, "well_minimum": LJ_WELL}
SHELL_START = 2.0  # free-form shells start this many cells from the target ...
SHELL_WIDTH = 1.0  # ... and are this many cells wide


def _estimate(value: float, replicates: np.ndarray, truth: float | None) -> dict:
    """`{value, error, truth, relative_error, z}` of one estimate and its bootstrap replicates."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    err = float(np.std(finite, ddof=1)) if finite.size >= 2 else math.nan
    out = {"value": float(value), "error": err}
    if truth is not None:
        out["truth"] = float(truth)
        out["relative_error"] = float(value / truth - 1.0)
        out["z"] = float((value - truth) / err) if err > 0 else None  # NaN err: no z
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def kernel_agreement(fit: KernelFit, truth: np.ndarray, mask: np.ndarray) -> dict:
    """How well the learned kernel matches the true cell average on the masked cells.

    `correlation` (Pearson over both components), `correlation_asinh` (Pearson of
    `asinh(k / s)`, `s` the median true magnitude: every decade counts), `chi2_per_dof` of
    `(learned - true) / sigma`, `within_2sigma` (fraction of components).
    """
    k, t, s = fit.kernel[mask].ravel(), truth[mask].ravel(), fit.sigma[mask].ravel()
    scale = float(np.median(np.abs(t)))
    z = (k - t) / s
    return {
        "cells": int(mask.sum()),
        "correlation": _pearson(k, t),
        "correlation_asinh": _pearson(np.arcsinh(k / scale), np.arcsinh(t / scale)),
        "chi2_per_dof": float(np.mean(z * z)),
        "within_2sigma": float(np.mean(np.abs(z) <= 2.0)),
    }


def score_predictor(forces_pred, test_classes, encoder) -> dict:
    """Classification metrics of predicted forces `(S, 2)` encoded with `encoder`."""
    return classification_metrics(test_classes, encoder.encode(forces_pred))


def fit_encoder(encoding: str, potential: str, window: float, grid: int, classes: int, train):
    """The case's encoder fitted on the training forces (as `mdkeras.training.fit_encoder`)."""
    fm = f_max(potential, window / grid) if encoding == "paper" else None
    return make_encoder(encoding, classes=classes, f_max=fm).fit(train)


def recover(
    data,
    *,
    encodings=("paper",),
    classes: int = 10,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    bayes: bool = True,
) -> tuple[dict, dict]:
    """Recover `f(r)` from a `datasets.Dataset` and score the linear predictor.

    The kernel is fitted on the `train` split; the linear predictor is scored on `test` (nothing
    is chosen on it). Returns `(summary, arrays)`: a JSON-ready dict (parameters ± bootstrap
    error vs the truth, shells, kernel agreement, linear-predictor joint accuracy and baselines
    per encoding) and the arrays behind it, for plots.
    """
    spec = data.spec
    potential, window, grid = spec.potential, float(spec.window), int(spec.grid)
    idx = data.split_indices()
    tr, te = idx["train"], idx["test"]
    fit = fit_kernel(
        data.grids[tr], data.forces[tr], data.config[tr], window, bootstrap=bootstrap, seed=seed
    )
    geo = fit.geo
    mask = fit.usable & fundamental_domain(geo)
    truth_kernel = true_kernel(potential, geo)

    params = fit_parameters(potential, fit.kernel, fit.sigma, mask, geo)
    boot = fit_parameters(potential, fit.replicates, fit.sigma, mask, geo)
    naive = fit_parameters(potential, fit.kernel, fit.sigma, mask, geo, mode="centre")
    truth = TRUTH[potential]
    parameters = {k: _estimate(params[k], boot[k], truth[k]) for k in params}
    derived = derived_points(potential, params)
    derived_boot = derived_points(potential, boot)
    model_kernel = _model_kernel(potential, params, geo)
    resid = (model_kernel - fit.kernel)[mask] / fit.sigma[mask]

    h = geo.cell
    edges = np.arange(SHELL_START * h, window / math.sqrt(2.0) + SHELL_WIDTH * h, SHELL_WIDTH * h)
    shell_mask = mask & (geo.min_dist >= SHELL_START * h * (1 - TOL))
    shells = fit_shells(fit.kernel, fit.sigma, shell_mask, geo, edges)
    shells_boot = fit_shells(fit.replicates, fit.sigma, shell_mask, geo, edges)
    shells_truth = fit_shells(truth_kernel, fit.sigma, shell_mask, geo, edges)
    mid = 0.5 * (edges[:-1] + edges[1:])

    learned = predictor_kernel(fit, data.grids[tr], data.forces[tr])
    fitted = np.where(geo.touching[..., None], learned, model_kernel)
    test_grids, test_forces = data.grids[te], data.forces[te]
    scores = {}
    for enc_name in encodings:
        enc = fit_encoder(enc_name, potential, window, grid, classes, data.forces[tr])
        true_cls = enc.encode(test_forces)
        entry = {
            "linear_predictor": score_predictor(linear_forces(test_grids, learned), true_cls, enc),
            "recovered_kernel": score_predictor(linear_forces(test_grids, fitted), true_cls, enc),
            "majority": majority(enc.encode(data.forces[tr]), true_cls, classes),
            "cell_centre": score_predictor(
                cell_centre_forces(test_grids, potential, window), true_cls, enc
            )["joint_accuracy"],
        }
        if bayes:
            nb = min(BAYES_SAMPLES, len(te))
            p, se = bayes_limit(
                test_grids[:nb],
                true_cls[:nb],
                enc,
                potential=potential,
                window=window,
                draws=BAYES_DRAWS,
                seed=seed,
            )
            entry.update(bayes_limit=p, bayes_limit_se=se, bayes_samples=nb)
            entry["linear_fraction_of_bayes"] = (
                entry["linear_predictor"]["joint_accuracy"] / p if p > 0 else None
            )
        scores[enc_name] = entry

    summary = {
        "model": MODEL_FORMS[potential],
        "parameters": parameters,
        "naive_cell_centre_fit": {k: float(v) for k, v in naive.items()},
        "derived": {k: _estimate(derived[k], derived_boot[k], DERIVED_TRUTH[k]) for k in derived},
        "deconvolution": {
            "cells": int(mask.sum()),
            "components": int(2 * mask.sum()),
            "chi2_per_dof": float(np.sum(resid**2) / max(resid.size - len(params), 1)),
            "quadrature_order": QUADRATURE_ORDER,
        },
        "kernel": {
            **kernel_agreement(fit, truth_kernel, mask),
            "radii": [float(r) for r in fit.radii],
            "samples_per_radius": fit.samples,
            "bootstrap": int(bootstrap),
        },
        "shells": {
            "edges": edges.tolist(),
            "value": shells.tolist(),
            "error": np.std(shells_boot, axis=0, ddof=1).tolist(),  # NaN: shell out of reach
            "truth_projected": shells_truth.tolist(),
            "truth_at_mid": pair_force(potential, mid).tolist(),
        },
        "scores": scores,
        "split_sizes": {k: int(len(v)) for k, v in idx.items()},
    }
    arrays = {
        "geo": geo,
        "fit": fit,
        "mask": mask,
        "truth_kernel": truth_kernel,
        "model_kernel": model_kernel,
        "params": params,
        "boot": boot,
        "edges": edges,
        "shells": shells,
        "shells_boot": shells_boot,
        "shells_truth": shells_truth,
    }
    return _clean(summary), arrays


def _model_kernel(potential: str, params: dict, geo: Geometry) -> np.ndarray:
    """Cell-averaged kernel `(n, n, 2)` of the fitted `f(r)`."""
    if potential == "lj":
        a, b = float(params["A"]), float(params["B"])
        return cell_average(lambda r2: a * r2**-7.0 - b * r2**-4.0, geo)
    a, p = float(params["A"]), float(params["p"])
    return cell_average(lambda r2: a * r2 ** (-0.5 * (p + 1.0)), geo)


def _clean(obj):
    """JSON-ready: NumPy scalars to floats, NaN/inf to None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
