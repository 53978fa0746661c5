"""Recovery on equilibrium data: correlation-weighted deconvolution, made exact by simulation.

On `md` data a neighbour inside a cell is not uniform: its position follows the pair correlation
`g(r)` around the target, steep across the repulsive core. So the learned kernel is (nearly) the
*g-weighted* cell average `int_c f g / int_c g` of the pair force, not the plain one
(`deconvolution.cell_average(..., weight=g)`). `g` at sub-cell resolution is not in the data; it
comes from MD of the current estimate at the data's density and temperature, which makes the
recovery a fixed-point iteration, in the manner of iterative Boltzmann inversion. What is left
(the kernel is not exactly the g-weighted average when the neighbours' positions depend on one
another: many-body correlations, strong in a dense liquid) is removed by indirect inference:

    theta_{k+1} = theta_k + a(K_obs; g_k) - a(K_k; g_k),

where `a(K; g)` is the g-weighted parametric fit of a kernel, `g_k` and `K_k` the pair
correlation and the kernel learned (by the same `kernel.fit_kernel`) from MD data of `theta_k`
itself, featurized the same way; a run of steps in one direction is extrapolated (Aitken's
geometric tail along the step, `_accelerated`). At the fixed point the estimate
gives the observed kernel statistic; where the weighted fit is exact (`a(K_k; g_k) = theta_k`)
the plain step is the self-consistent update `theta_{k+1} = a(K_obs; g_k)`. On uniform data
`g = 1` and the weighted fit is today's. Every MD run takes the same seed (common random
numbers), derived from the recovery's. Units: reduced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mdkeras import md, tables
from mdkeras.descriptors import featurize
from mdkeras.errors import MdkerasError
from mdkeras.observables import rdf_frames
from mdkeras.potentials import get
from mdkeras.recovery.deconvolution import fit_parameters, fit_shells, model_kernel
from mdkeras.recovery.kernel import KernelFit, fit_kernel

MAX_ITERATIONS = 8
TOLERANCE = 2.0  # it ends when the two fits agree within this many errors of their difference
ACCELERATE_ABOVE = 5.0  # steps are extrapolated only while the difference exceeds this (errors)
RDF_BINS_PER_CELL = 16  # g(r) bins per cell side: sub-cell resolution
SEED_STREAM = 2  # SeedSequence([seed, SEED_STREAM]) seeds every MD run of the iteration
MAX_STRETCH = 4.0  # a step is at most this many times the plain step x += residual ...
ALIGNED = 0.8  # ... and longer than it only when the last two residuals align this well (cos)
KERNEL_BOOTSTRAP = 2  # the simulated kernel's own replicates (unused: the weights are observed)


@dataclass(frozen=True)
class Correlation:
    """A pair correlation `g(r)` on bin centres `r` `(bins,)`, as a cell-average weight:
    linear between centres, `g[0]` inside the first, 1 beyond the last (an ideal gas far out)."""

    r: np.ndarray = field(repr=False)
    g: np.ndarray = field(repr=False)

    def __call__(self, r) -> np.ndarray:
        return np.interp(np.asarray(r, dtype=np.float64), self.r, self.g, left=self.g[0], right=1.0)


@dataclass(frozen=True)
class Iteration:
    """One step: the parameters MD ran with, the weighted fits of the observed and of the
    simulated kernel under that run's `g`, the step taken, the largest difference of the two
    fits in errors of that difference, and wall time."""

    params: dict
    observed: dict
    simulated: dict
    step: dict
    difference: float
    md_seconds: float
    fit_seconds: float

    def describe(self) -> dict:
        return {
            "params": self.params,
            "observed_fit": self.observed,
            "simulated_fit": self.simulated,
            "step": self.step,
            "difference_in_errors": self.difference,
            "md_seconds": self.md_seconds,
            "fit_seconds": self.fit_seconds,
        }


@dataclass
class EquilibriumFit:
    """The fixed point: parameters `{name: float}`, their bootstrap replicates `{name: (B,)}`,
    the last MD run's `correlation`, the `iterations`, and the MD seed every run took."""

    params: dict
    replicates: dict
    correlation: Correlation
    iterations: list[Iteration]
    seed: int
    simulated: KernelFit
    simulated_mask: np.ndarray = field(repr=False)

    def describe(self) -> dict:
        return {
            "method": "equilibrium",
            "md_seed": self.seed,
            "iterations": [it.describe() for it in self.iterations],
            "md_seconds": float(sum(it.md_seconds for it in self.iterations)),
            "md_seconds_per_iteration": float(np.mean([it.md_seconds for it in self.iterations])),
            "rdf_bin": float(self.correlation.r[1] - self.correlation.r[0]),
        }


def count_correlation(grids, geo, density: float) -> Correlation:
    """The pair correlation the counts themselves show, at cell resolution: each cell's mean
    count over the samples `(S, n, n)` over `density h^2` is the cell average of `g`, placed
    at the cell centre's radius (cells at one radius averaged). Smooth across the core, but
    the data's own: the iteration's first weight, so its first MD runs a repulsive core."""
    mean = np.asarray(grids, dtype=np.float64).mean(axis=0) / (density * geo.cell**2)
    radius = np.hypot(geo.centre[..., 0], geo.centre[..., 1])
    key = np.round(radius / geo.cell, 9).ravel()
    r, inverse = np.unique(key, return_inverse=True)
    g = np.bincount(inverse, weights=mean.ravel()) / np.bincount(inverse)
    return Correlation(r * geo.cell, g)


def md_seed(seed: int) -> int:
    """The MD seed of every run of a recovery seeded `seed` (a stream apart from the data's)."""
    return int(np.random.SeedSequence([int(seed), SEED_STREAM]).generate_state(1)[0] >> 2)


def simulate(
    potential: str,
    params: dict,
    *,
    density: float,
    temperature: float,
    window: float,
    grid: int,
    configurations: int,
    targets: int,
    particles: int,
    seed: int,
    bins_per_cell: int = RDF_BINS_PER_CELL,
    run: md.Protocol | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Correlation, float]:
    """MD data of the model `f` with `params`, made as the `md` sampler makes its own: the
    state's protocol with the model's table (`tables.model_table`), `targets` per configuration
    featurized with the model's force. Returns `(grids, forces, config, g, seconds)`: `g` the
    pair correlation of every particle of every frame, binned `bins_per_cell` per cell side out
    to the window's half-diagonal."""
    form = get(potential).model
    table = tables.model_table(potential, params, name=f"{potential}-iterate")
    pair = form.force_over_r(params)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    h = window / grid
    r_max = window / math.sqrt(2.0) + h
    bins = int(math.ceil(r_max / h * bins_per_cell))
    grids, forces, config, hist = [], [], [], []
    t0 = time.perf_counter()
    for i, (_, frame, box) in enumerate(
        md.frames(
            potential,
            density,
            temperature,
            configurations=configurations,
            seed=seed,
            particles=particles,
            interaction=table,
            run=run,
        )
    ):
        chosen = rng.choice(particles, size=targets, replace=False).astype(np.int64)
        d, f = featurize(
            frame.positions,
            box,
            chosen,
            potential=potential,
            window=window,
            grid=grid,
            force_over_r=pair,
        )
        grids.append(d)
        forces.append(f)
        config.append(np.full(targets, i, dtype=np.int32))
        r, g = rdf_frames(frame.positions[None], box, r_max=r_max, bins=bins)
        hist.append(g[0])
    seconds = time.perf_counter() - t0
    corr = Correlation(r, np.mean(hist, axis=0))
    return np.concatenate(grids), np.concatenate(forces), np.concatenate(config), corr, seconds


def recover_equilibrium(
    observed: KernelFit,
    mask: np.ndarray,
    *,
    potential: str,
    density: float,
    temperature: float,
    start: dict,
    configurations: int,
    targets: int,
    particles: int,
    seed: int,
    iterations: int = MAX_ITERATIONS,
    tolerance: float = TOLERANCE,
    run: md.Protocol | None = None,
    progress: Callable[[str], None] | None = None,
) -> EquilibriumFit:
    """The fixed point of the module docstring's iteration from `start` (`{name: float}`, e.g.
    the uniform-assumption fit), for the kernel `observed` fitted on the masked cells `mask`.

    Each iteration runs MD of the current parameters (`simulate`, sizes as the observed data's,
    seed `md_seed(seed)` every time); it ends when the observed and simulated fits agree within
    `tolerance` errors of their difference in every parameter (the observed fit's bootstrap
    error times `sqrt(1 + S_obs / S_sim)`, S the samples: the simulated data's noise enters
    the difference and the estimate too, as in indirect inference), after that iteration's
    plain step. The replicates are the observed fit's bootstrap replicates about the estimate,
    scaled by that factor. The simulated kernel uses the observed fit's exclusion radii. One
    `MdkerasError` if the fits do not agree within `iterations` iterations (the message gives
    the last difference), or if an iterate has no repulsive core to run MD with.
    """
    if int(iterations) < 1:
        raise MdkerasError(f"iterations={iterations!r} is not allowed: expected at least 1.")
    geo = observed.geo
    names = get(potential).model.parameters
    theta = {k: float(start[k]) for k in names}
    sim_seed = md_seed(seed)
    history: list[Iteration] = []
    previous = None  # (x, residual) of the last iteration, error units
    for k in range(int(iterations)):
        try:
            grids, forces, config, corr, md_seconds = simulate(
                potential,
                theta,
                density=density,
                temperature=temperature,
                window=geo.window,
                grid=geo.grid,
                configurations=configurations,
                targets=targets,
                particles=particles,
                seed=sim_seed,
                run=run,
            )
        except MdkerasError as err:
            raise MdkerasError(
                f"iteration {k + 1} of the equilibrium recovery cannot run MD with "
                f"{_show(theta)}: {err}"
            ) from None
        t0 = time.perf_counter()
        sim = fit_kernel(
            grids,
            forces,
            config,
            geo.window,
            bootstrap=KERNEL_BOOTSTRAP,
            seed=seed,
            radii=observed.radii,  # the same estimator as the observed kernel's
        )
        noise = math.sqrt(1.0 + observed.samples[0] / sim.samples[0])
        both = mask & sim.usable
        obs = _fit(potential, observed.kernel, observed.sigma, both, geo, corr)
        boot = fit_parameters(
            potential, observed.replicates, observed.sigma, both, geo, weight=corr
        )
        simd = _fit(potential, sim.kernel, observed.sigma, both, geo, corr)
        errors = np.array([float(np.std(boot[n], ddof=1)) for n in names])
        if not np.all(errors > 0):
            raise MdkerasError(
                f"the observed kernel's bootstrap gives no spread to {list(names)} "
                f"({errors.tolist()}): expected positive errors; use more bootstrap replicates."
            )
        errors = errors * noise  # the difference carries the simulated data's noise too
        x = np.array([theta[n] for n in names]) / errors
        residual = np.array([obs[n] - simd[n] for n in names]) / errors
        size = float(np.max(np.abs(residual)))
        factor = _accelerated(previous, residual) if size > ACCELERATE_ABOVE else 1.0
        move = residual * factor
        previous = (x, residual)
        step = {n: float(move[i] * errors[i]) for i, n in enumerate(names)}
        history.append(
            Iteration(dict(theta), obs, simd, step, size, md_seconds, time.perf_counter() - t0)
        )
        new = {n: theta[n] + step[n] for n in names}
        if progress is not None:
            progress(
                f"iteration {k + 1}: MD with {_show(theta)} ({md_seconds:.0f} s), observed "
                f"minus simulated fit {size:.2g} errors -> {_show(new)}"
            )
        theta = new
        if size < tolerance:
            replicates = {n: theta[n] + noise * (boot[n] - obs[n]) for n in names}
            return EquilibriumFit(theta, replicates, corr, history, sim_seed, sim, both)
    last = history[-1]
    raise MdkerasError(
        f"the equilibrium recovery did not converge in {iterations} iteration(s): the observed "
        f"and simulated fits still differ by {last.difference:.2g} errors at "
        f"{_show(last.params)}, expected below {tolerance:g}; allow more iterations or use more "
        "samples."
    )


def _accelerated(previous, residual) -> float:
    """The factor on the plain step `x += residual`: `1 / (1 - c)` with `c` the contraction
    of the last two residuals when they point the same way (a linear fixed-point map's
    geometric tail, summed: Aitken's extrapolation along the step), at most `MAX_STRETCH`;
    1 after a turn (an overshoot) or at the first iteration."""
    if previous is None:
        return 1.0
    last = previous[1]
    norm, before = float(np.linalg.norm(residual)), float(np.linalg.norm(last))
    if before == 0 or norm == 0 or float(residual @ last) < ALIGNED * norm * before:
        return 1.0
    c = min(norm / before, 1.0 - 1.0 / MAX_STRETCH)
    return 1.0 / (1.0 - c)


def corrected_shells(
    result: EquilibriumFit,
    observed: KernelFit,
    mask: np.ndarray,
    edges: np.ndarray,
    *,
    potential: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Free-form shells on equilibrium data: the g-weighted shell fit of the observed kernel,
    less its bias measured on the last MD data (the shell fit of the simulated kernel minus the
    shells of the model that made those data). Returns `(shells (J,), replicates (B, J))`."""
    geo, corr = observed.geo, result.correlation
    both = mask & result.simulated_mask
    last = result.iterations[-1].params
    exact = model_kernel(potential, last, geo, weight=corr)
    obs = fit_shells(observed.kernel, observed.sigma, both, geo, edges, weight=corr)
    boot = fit_shells(observed.replicates, observed.sigma, both, geo, edges, weight=corr)
    sim = fit_shells(result.simulated.kernel, observed.sigma, both, geo, edges, weight=corr)
    model = fit_shells(exact, observed.sigma, both, geo, edges, weight=corr)
    bias = sim - model
    return obs - bias, boot - bias


def _fit(potential, kernel, sigma, mask, geo, corr) -> dict:
    p = fit_parameters(potential, kernel, sigma, mask, geo, weight=corr)
    return {k: float(v) for k, v in p.items()}


def _show(params: dict) -> str:
    return ", ".join(f"{k} = {v:.5g}" for k, v in params.items())
