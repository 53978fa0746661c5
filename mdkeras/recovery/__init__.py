"""Recover the pair force `f(r)` from (grid, force) samples: a learned linear kernel, deconvolved.

Why it works (uniform sampler): given the counts `X[c]`, the neighbours are iid uniform within
their cells, so `E[F | X] = sum_c X[c] k[c]` exactly, where `k[c]` (a 2-vector) is the *cell
average* of the pair force `-f(r) d/r` over cell `c`. Least squares on (grid, force) pairs
therefore estimates that cell-averaged kernel. Two traps, two remedies, one module each:

1. `kernel`: the cells touching the target have an unbounded cell average and cells near it carry
   heavy-tailed noise, so the kernel is fit at several exclusion radii and stitched, then
   D4-symmetrised (`mdkeras.symmetry`); bootstrap replicates over configurations give its errors
   (samples of one configuration share neighbours). Completed at the touching cells, the learned
   kernel is also a linear force predictor.
2. `deconvolution`: cell averaging biases a naive fit of `f` at cell centres, so `f` is fitted so
   that the cell average of the model kernel matches the learned one: the potential's parametric
   form (its `potentials.POTENTIALS` entry) and a free-form shell-wise `f`.

On equilibrium (`md`) data the neighbours follow the pair correlation inside their cells, so the
cell averages are g-weighted and made self-consistent by MD of the estimate (`equilibrium`);
`recover` picks that method for `md` data and records the uniform-assumption fit beside it.

`recover` runs both on a dataset, re-fits every parameter on every bootstrap replicate (each D4
orbit counted once) and scores the linear predictor's forces, encoded like a case's labels, beside
the baselines. Units: reduced (sigma = epsilon = 1); kernels in force units per neighbour; arrays
float64; grids `(S, n, n)` indexed `[iy, ix]` (rows +y, columns +x, SPEC §3).
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.checks import check_choice
from mdkeras.encoding import fit_encoder
from mdkeras.errors import MdkerasError
from mdkeras.metrics import baselines, classification_metrics
from mdkeras.potentials import get, pair_force
from mdkeras.recovery.deconvolution import (
    QUADRATURE_ORDER,
    SHELL_START,
    SHELL_WIDTH,
    cell_average,
    derived_points,
    fit_model,
    fit_parameters,
    fit_shells,
    masked_average,
    model_force,
    model_kernel,
    power_g,
    shell_design,
    true_kernel,
)
from mdkeras.recovery.equilibrium import (
    MAX_ITERATIONS,
    Correlation,
    corrected_shells,
    count_correlation,
    recover_equilibrium,
)
from mdkeras.recovery.kernel import (
    BOOTSTRAP,
    TOL,
    Geometry,
    KernelFit,
    exclusion_radii,
    fit_kernel,
    geometry,
    linear_forces,
    predictor_kernel,
)
from mdkeras.symmetry import fundamental_domain, symmetrise

__all__ = [
    "BOOTSTRAP",
    "METHODS",
    "Correlation",
    "QUADRATURE_ORDER",
    "Geometry",
    "KernelFit",
    "cell_average",
    "count_correlation",
    "derived_points",
    "exclusion_radii",
    "fit_kernel",
    "fit_model",
    "fit_parameters",
    "fit_shells",
    "geometry",
    "kernel_agreement",
    "linear_forces",
    "masked_average",
    "model_force",
    "model_kernel",
    "power_g",
    "predictor_kernel",
    "recover",
    "recover_equilibrium",
    "resolve_method",
    "score_predictor",
    "shell_design",
    "symmetrise",
    "true_kernel",
]


METHODS = ("auto", "uniform", "equilibrium")


def resolve_method(method: str, sampler: str) -> str:
    """The recovery method for data of `sampler`: `auto` is `equilibrium` for `md` data (the
    neighbours are correlated) and `uniform` otherwise; `equilibrium` needs `md` data."""
    check_choice("method", method, METHODS)
    if method == "auto":
        return "equilibrium" if sampler == "md" else "uniform"
    if method == "equilibrium" and sampler != "md":
        raise MdkerasError(
            f"method='equilibrium' is not allowed for {sampler!r} data: its neighbours are "
            "uniform in their cells (g = 1), so the uniform recovery is exact; use 'uniform'."
        )
    return method


def recover(
    data,
    *,
    encodings=("paper",),
    classes: int = 10,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
    bayes: bool = True,
    method: str = "auto",
    iterations: int = MAX_ITERATIONS,
    progress=None,
) -> tuple[dict, dict]:
    """Recover `f(r)` from a `datasets.Dataset` and score the linear predictor.

    The kernel is fitted on the `train` split; the linear predictor is scored on `test` (nothing
    is chosen on it). `method` (`resolve_method`): `uniform` deconvolves plain cell averages;
    `equilibrium` iterates g-weighted ones with MD of the estimate (`equilibrium`, at most
    `iterations` MD runs, each reported to `progress`). Returns `(summary, arrays)`: a
    JSON-ready dict (parameters ± bootstrap error vs the truth, shells, kernel agreement,
    linear-predictor joint accuracy and baselines per encoding) and the arrays behind it.
    """
    spec = data.spec
    method = resolve_method(method, spec.sampler)
    potential, window, grid = spec.potential, float(spec.window), int(spec.grid)
    idx = data.split_indices()
    tr, te = idx["train"], idx["test"]
    fit = fit_kernel(
        data.grids[tr], data.forces[tr], data.config[tr], window, bootstrap=bootstrap, seed=seed
    )
    geo = fit.geo
    mask = fit.usable & fundamental_domain(geo.grid)
    truth_kernel = true_kernel(potential, geo)
    form = get(potential).model

    params = fit_parameters(potential, fit.kernel, fit.sigma, mask, geo)
    boot = fit_parameters(potential, fit.replicates, fit.sigma, mask, geo)
    naive = fit_parameters(potential, fit.kernel, fit.sigma, mask, geo, mode="centre")
    derived_truth = form.derived(form.truth)
    h = geo.cell
    edges = np.arange(SHELL_START * h, window / math.sqrt(2.0) + SHELL_WIDTH * h, SHELL_WIDTH * h)
    shell_mask = mask & (geo.min_dist >= SHELL_START * h * (1 - TOL))
    weight, extra = None, {}
    if method == "equilibrium":
        uniform = _fit_summary(form, params, boot, derived_truth)
        counted = count_correlation(data.grids[tr], geo, spec.density)
        start = fit_parameters(potential, fit.kernel, fit.sigma, mask, geo, weight=counted)
        eq = recover_equilibrium(
            fit,
            mask,
            potential=potential,
            density=spec.density,
            temperature=spec.temperature,
            start={k: float(v) for k, v in start.items()},
            configurations=spec.configurations,
            targets=spec.targets,
            particles=spec.particles,
            seed=seed,
            iterations=iterations,
            progress=progress,
        )
        params = {k: np.float64(v) for k, v in eq.params.items()}
        boot, weight = eq.replicates, eq.correlation
        shells, shells_boot = corrected_shells(eq, fit, shell_mask, edges, potential=potential)
        extra = {"uniform_fit": uniform, "equilibrium": eq.describe()}
    else:
        shells = fit_shells(fit.kernel, fit.sigma, shell_mask, geo, edges)
        shells_boot = fit_shells(fit.replicates, fit.sigma, shell_mask, geo, edges)
    parameters = {k: _estimate(params[k], boot[k], form.truth[k]) for k in params}
    derived, derived_boot = form.derived(params), form.derived(boot)
    fitted_kernel = model_kernel(potential, params, geo, weight=weight)
    resid = (fitted_kernel - fit.kernel)[mask] / fit.sigma[mask]
    weighted_truth = truth_kernel if weight is None else true_kernel(potential, geo, weight=weight)
    shells_truth = fit_shells(weighted_truth, fit.sigma, shell_mask, geo, edges, weight=weight)
    mid = 0.5 * (edges[:-1] + edges[1:])

    learned = predictor_kernel(fit, data.grids[tr], data.forces[tr])
    fitted = np.where(geo.touching[..., None], learned, fitted_kernel)
    test_grids, test_forces = data.grids[te], data.forces[te]
    scores = {}
    for enc_name in encodings:
        enc = fit_encoder(
            enc_name,
            potential=potential,
            window=window,
            grid=grid,
            classes=classes,
            train_forces=data.forces[tr],
        )
        true_cls = enc.encode(test_forces)
        entry = {
            "linear_predictor": score_predictor(linear_forces(test_grids, learned), true_cls, enc),
            "recovered_kernel": score_predictor(linear_forces(test_grids, fitted), true_cls, enc),
            **baselines(
                enc.encode(data.forces[tr]),
                true_cls,
                test_grids,
                enc,
                potential=potential,
                window=window,
                seed=seed,
                bayes=bayes,
            ),
        }
        if bayes:
            p = entry["bayes_limit"]
            entry["linear_fraction_of_bayes"] = (
                entry["linear_predictor"]["joint_accuracy"] / p if p > 0 else None
            )
        scores[enc_name] = entry

    summary = {
        "model": form.formula,
        "method": method,
        "parameters": parameters,
        "naive_cell_centre_fit": {k: float(v) for k, v in naive.items()},
        "derived": {k: _estimate(derived[k], derived_boot[k], derived_truth[k]) for k in derived},
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
        **extra,
    }
    arrays = {
        "geo": geo,
        "fit": fit,
        "mask": mask,
        "truth_kernel": truth_kernel,
        "model_kernel": fitted_kernel,
        "params": params,
        "boot": boot,
        "edges": edges,
        "shells": shells,
        "shells_boot": shells_boot,
        "shells_truth": shells_truth,
        "weight": weight,
    }
    return _clean(summary), arrays


def _fit_summary(form, params: dict, boot: dict, derived_truth: dict) -> dict:
    """`{parameters, derived}` estimates of one fit and its replicates (as in the summary)."""
    derived, derived_boot = form.derived(params), form.derived(boot)
    return {
        "parameters": {k: _estimate(params[k], boot[k], form.truth[k]) for k in params},
        "derived": {k: _estimate(derived[k], derived_boot[k], derived_truth[k]) for k in derived},
    }


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
