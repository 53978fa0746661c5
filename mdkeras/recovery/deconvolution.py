"""Deconvolution: from the learned (cell-averaged) kernel back to the pair force `f(r)`.

Cell averaging biases a naive fit of `f` at cell centres (for LJ the force changes by orders of
magnitude across one cell), so `f` is fitted so that the *cell average of the model kernel*
(Gauss-Legendre quadrature over every cell, vectorised) matches the learned kernel: the
potential's parametric form (`potentials.POTENTIALS[...].model`, e.g. `A r^-13 - B r^-7`, `A r^-p`)
and a free-form shell-wise `f` (one value per radial shell). Cells are weighted by 1/sigma^2 and
the caller passes one cell per D4 orbit, so chi^2 counts each orbit once.

Units: reduced; kernels `(..., n, n, 2)` float64 in force units per neighbour.
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.errors import MdkerasError
from mdkeras.potentials import ModelForm, check_potential, force_over_r, get, power_g
from mdkeras.recovery.kernel import Geometry

QUADRATURE_ORDER = 16  # Gauss-Legendre nodes per cell side
SCAN_POINTS = 56  # a fitted exponent is first scanned at this many points within its bounds ...
GOLDEN_STEPS = 32  # ... then refined by this many golden-section steps around the best one
SHELL_START = 2.0  # free-form shells start this many cells from the target ...
SHELL_WIDTH = 1.0  # ... and are this many cells wide


# --- cell averages -------------------------------------------------------------------------------


def cell_average(
    g_of_r2, geo: Geometry, *, mode: str = "average", order: int = QUADRATURE_ORDER, weight=None
):
    """Cell average of the force `-g(r^2) d` over every cell: `(n, n, 2)`.

    Args:
        g_of_r2: vectorised `f(r)/r` as a function of `r^2` (as `potentials.force_over_r`).
        mode: `"average"` (Gauss-Legendre, `order^2` nodes per cell) or `"centre"` (the force at
            the cell centre: what a neighbour exactly at the centre exerts).
        weight: `None` (uniform: a neighbour is equally likely anywhere in its cell) or a
            vectorised `w(r) >= 0`, the pair correlation `g(r)` of correlated data: the average
            becomes `int_c f w / int_c w` (`"average"` mode only).
    Returns:
        float64 `(n, n, 2)`, force units; touching cells are returned but meaningless.
    """
    everything = np.ones((geo.grid, geo.grid), dtype=bool)
    avg = masked_average(geo, everything, mode=mode, order=order, weight=weight)
    return avg(g_of_r2).reshape(geo.grid, geo.grid, 2)


def masked_average(
    geo: Geometry, mask, *, mode: str = "average", order=QUADRATURE_ORDER, weight=None
):
    """`cell_average` restricted to the `m` masked cells, nodes computed once: returns
    `avg(g_of_r2)` -> `(2 m,)` = `cell_average(g_of_r2, geo, mode=mode, weight=weight)[mask]
    .ravel()`."""
    if mode == "centre":
        if weight is not None:
            raise MdkerasError("a weighted cell average needs mode='average', not 'centre'.")
        x, y = geo.centre[mask][:, 0, None, None], geo.centre[mask][:, 1, None, None]
        wts = np.ones((1, 1))
    elif mode == "average":
        t, w = np.polynomial.legendre.leggauss(int(order))
        t, w = 0.5 * (t + 1.0), 0.5 * w  # nodes and weights on [0, 1]
        lower = geo.lower[mask]  # (m, 2); x varies along the last node axis, y along the other
        x = lower[:, 0, None, None] + geo.cell * t[None, None, :] + 0.0 * t[None, :, None]
        y = lower[:, 1, None, None] + geo.cell * t[None, :, None] + 0.0 * t[None, None, :]
        wts = w[:, None] * w[None, :]
        if weight is not None:
            wts = _weighted(wts, weight(np.hypot(x, y)))
    else:
        raise MdkerasError(f"mode={mode!r} is not allowed: expected 'average' or 'centre'.")
    r2 = x * x + y * y

    def avg(g_of_r2):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            g = g_of_r2(r2) * wts
            fx, fy = np.sum(g * x, axis=(-2, -1)), np.sum(g * y, axis=(-2, -1))
        return -np.stack([fx, fy], axis=1).ravel()

    return avg


def _weighted(wts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Quadrature weights `wts` (summing to 1 per cell) times the correlation `w` at the nodes
    `(m, s, s)`, renormalised per cell; a cell where `w` vanishes everywhere keeps `wts`."""
    w = np.asarray(w, dtype=np.float64)
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise MdkerasError(
            "the correlation weight has negative or non-finite values: expected "
            "g(r) >= 0 (a pair correlation function)."
        )
    ww = wts * w
    norm = ww.sum(axis=(-2, -1), keepdims=True)
    return np.where(norm > 0, ww / np.where(norm > 0, norm, 1.0), wts * np.ones_like(w))


def true_kernel(potential: str, geo: Geometry, *, mode: str = "average", weight=None) -> np.ndarray:
    """The true kernel `(n, n, 2)`: cell average (or cell-centre value) of the pair force
    (`weight` as in `cell_average`)."""
    check_potential(potential)
    return cell_average(lambda r2: force_over_r(potential, r2), geo, mode=mode, weight=weight)


def model_kernel(potential: str, params: dict, geo: Geometry, *, weight=None) -> np.ndarray:
    """Cell-averaged kernel `(n, n, 2)` of the fitted `f(r)` (one parameter set of scalars;
    `weight` as in `cell_average`)."""
    return cell_average(get(potential).model.force_over_r(params), geo, weight=weight)


def model_force(potential: str, params: dict, r) -> np.ndarray:
    """The fitted `f(r)` for parameters `params` (scalars or arrays broadcasting with `r`)."""
    return get(potential).model.force(params, r)


def derived_points(potential: str, params: dict) -> dict:
    """Named points of the potential's model curve per parameter set (LJ: zero crossing and
    most attractive point); `{}` where the form has none."""
    return get(potential).model.derived(params)


# --- parametric fit ------------------------------------------------------------------------------


def fit_parameters(potential, kernels, sigma, mask, geo, *, mode="average", weight=None) -> dict:
    """Parameters of the potential's model form (`fit_model`) per kernel: `{name: (...,)}`."""
    return fit_model(get(potential).model, kernels, sigma, mask, geo, mode=mode, weight=weight)


def fit_model(form: ModelForm, kernels, sigma, mask, geo, *, mode="average", weight=None) -> dict:
    """Parameters of a model form per kernel `(..., n, n, 2)`: `{name: (...,) array}`.

    Weighted least squares (weights `1/sigma` on the masked cells) of the cell-averaged model
    terms against each kernel. The coefficients are linear; a fitted exponent is profiled: for
    each value the best coefficients are linear, and the exponent minimises chi^2 (a scan over
    its bounds, then a golden-section search around the best scan point). `weight`: the
    cell averages' pair correlation (`cell_average`); `None` for uniform data.
    """
    avg = masked_average(geo, mask, mode=mode, weight=weight)
    w = 1.0 / sigma[mask].ravel()

    def design(exponent=None):
        exps = form.exponents({form.free_exponent: exponent})
        return np.stack(
            [t.sign * avg(power_g(e)) for t, e in zip(form.terms, exps, strict=True)], 1
        )

    ks = np.asarray(kernels)
    flat = ks.reshape(-1, *ks.shape[-3:])
    targets = [k[mask].ravel() for k in flat]
    if form.free_exponent is None:
        fixed = design()
        out = np.array([_linear(fixed, t, w) for t in targets])
    else:
        scan = np.linspace(*form.bounds, SCAN_POINTS)
        designs = [design(p) for p in scan]
        out = np.array([_profile(design, scan, designs, t, w) for t in targets])
    out = out.reshape(*ks.shape[:-3], len(form.parameters))
    return {name: out[..., i] for i, name in enumerate(form.parameters)}


def _linear(design, target, w) -> np.ndarray:
    """Weighted least-squares coefficients of `target ~ design @ theta`; design `(m, p)`. One
    column has the closed form `sum w^2 q t / sum w^2 q^2`."""
    if design.shape[1] == 1:
        q = design[:, 0]
        return np.array([float(np.sum(w * w * q * target) / np.sum(w * w * q * q))])
    return _wls(design, target, w)


def _wls(design, target, w):
    """Weighted least squares: `argmin || w (design @ theta - target) ||`; design `(m, p)`."""
    theta, *_ = np.linalg.lstsq(design * w[:, None], target * w, rcond=None)
    return theta


def _best_fit(design, target, w) -> tuple[np.ndarray, float]:
    """The best linear coefficients for `design` and their weighted chi^2."""
    theta = _linear(design, target, w)
    pred = theta[0] * design[:, 0]
    for j in range(1, len(theta)):
        pred = pred + theta[j] * design[:, j]
    return theta, float(np.sum((w * (pred - target)) ** 2))


def _profile(design, scan, designs, target, w) -> np.ndarray:
    """`(coefficients..., exponent)` minimising chi^2 over the fitted exponent (variable
    projection): the best scan point, then golden-section steps between its neighbours."""
    chi = [_best_fit(d, target, w)[1] for d in designs]
    i = int(np.argmin(chi))
    lo, hi = scan[max(i - 1, 0)], scan[min(i + 1, len(scan) - 1)]
    invphi = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = hi - invphi * (hi - lo), lo + invphi * (hi - lo)
    fc, fd = _best_fit(design(c), target, w)[1], _best_fit(design(d), target, w)[1]
    for _ in range(GOLDEN_STEPS):
        if fc < fd:
            hi, d, fd = d, c, fc
            c = hi - invphi * (hi - lo)
            fc = _best_fit(design(c), target, w)[1]
        else:
            lo, c, fc = c, d, fd
            d = lo + invphi * (hi - lo)
            fd = _best_fit(design(d), target, w)[1]
    p = 0.5 * (lo + hi)
    return np.append(_best_fit(design(p), target, w)[0], p)


# --- free-form shells ----------------------------------------------------------------------------


def shell_design(geo: Geometry, edges: np.ndarray, mask: np.ndarray, *, sub: int = 48, weight=None):
    """Cell averages `(m, 2, J)` of `-1[r in shell j] d/r` over the `m` masked cells.

    Shells `[edges[j], edges[j + 1])`; a midpoint rule with `sub x sub` points per cell (the
    indicator is discontinuous, so no Gauss rule); `f(r) = sum_j f_j 1[r in shell j]`;
    `weight` as in `cell_average`.
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
    k = int(sub)
    wts = None if weight is None else _weighted(np.full((1, k, k), 1.0 / k**2), weight(r))
    out = np.empty((m, 2, shells))
    for comp, d in enumerate((x, y)):
        u = np.where(inside, -d / r, 0.0)
        u = u.ravel() / (sub * sub) if wts is None else (u * wts).ravel()
        out[:, comp] = np.bincount(index, weights=u, minlength=m * shells).reshape(m, shells)
    return out


def fit_shells(
    kernels, sigma, mask, geo: Geometry, edges, *, sub: int = 48, weight=None
) -> np.ndarray:
    """Free-form shell-wise `f`: one value per shell `[edges[j], edges[j+1])`, per kernel.

    Weighted least squares of the cell-averaged shell indicators (`weight` as in
    `cell_average`) against the learned kernel `(..., n, n, 2)`; returns `(..., J)` (NaN for
    shells no masked cell reaches).
    """
    edges = np.asarray(edges, dtype=np.float64)
    design = shell_design(geo, edges, mask, sub=sub, weight=weight).reshape(-1, len(edges) - 1)
    w = 1.0 / sigma[mask].ravel()
    seen = np.any(design != 0, axis=0)
    ks = np.asarray(kernels)
    flat = ks.reshape(-1, *ks.shape[-3:])
    out = np.full((len(flat), len(edges) - 1), np.nan)
    for i, k in enumerate(flat):
        out[i, seen] = _wls(design[:, seen], k[mask].ravel(), w)
    return out.reshape(*ks.shape[:-3], len(edges) - 1)
