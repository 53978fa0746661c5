"""Scoring a simulation itself, in the manner of MDsim (Fu et al., TMLR 2023): radial distribution
function and its h(r) error, unwrapped trajectories, mean-squared displacement and diffusion,
block averages, drift, and the liquid stability criterion.

Everything is a pure NumPy function of arrays. Geometry: a 2D periodic square box of side `B`
(positions wrapped into `[0, B)`, minimum image for every pair); units: reduced LJ units
(lengths in sigma, times in tau, energies in epsilon, mass 1).
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.checks import check_finite, check_int, check_number
from mdkeras.errors import MdkerasError

BLOCKS = 10  # contiguous blocks for a standard error (block_average, rdf, drift)
# Stability (MDsim's liquid criterion): a run fails when g(r) averaged over the last
# STABILITY_WINDOW time units departs from the reference by more than STABILITY_THRESHOLD in
# h(r) MAE (rdf_error), or T leaves TEMPERATURE_BOUNDS times the target, or a position is not
# finite. Noise floor measured at N = 2,000, T = 1, r_max 5, dr 0.05, against another seed's
# 40 tau run: LJ rho 0.5, 5 tau windows, mean (max) 0.028 (0.034) with frames 0.1 tau apart,
# 0.053 (0.065) 0.5 tau apart; rho 0.7: 0.025 (0.032), 0.044 (0.052). The floor grows as the
# window holds fewer frames or particles, or the bins narrow: restate the threshold then. The
# MD protocol's window (`STABILITY_WINDOW`, 10 tau) holds twice the frames of those measured.
STABILITY_THRESHOLD = 0.10
STABILITY_WINDOW = 10.0
TEMPERATURE_BOUNDS = (0.1, 10.0)
UNWRAP_LIMIT = 0.25  # largest displacement component between frames unwrap accepts, over B
CHUNK = 1 << 21  # pair (or particle-origin) entries held at once: ~16 MB per float64 array


# ---------------------------------------------------------------------------------- checks


def _box(box) -> float:
    return check_number("box", box, positive=True, noun="a box side")


def _frames(what: str, frames, *, particles: int = 1) -> np.ndarray:
    """`frames` as a finite float64 `(F, N, 2)` array with `F >= 1`, `N >= particles`."""
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != 2 or x.shape[0] < 1 or x.shape[1] < particles:
        raise MdkerasError(
            f"{what} of shape {x.shape} are not allowed: expected (frames, particles, 2) with at "
            f"least 1 frame and {particles} particle(s); stack (N, 2) positions along axis 0."
        )
    return check_finite(what, x)


def _series(what: str, values, length: int | None = None) -> np.ndarray:
    """`values` as a finite 1D float64 array (of `length`, if given)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or (length is not None and v.shape[0] != length):
        want = f"({length},)" if length is not None else "one dimension"
        raise MdkerasError(
            f"{what} of shape {v.shape} are not allowed: expected {want}; pass one value per frame."
        )
    return check_finite(what, v)


def _times(times, length: int | None = None) -> np.ndarray:
    t = _series("times", times, length)
    if t.size > 1 and not np.all(np.diff(t) > 0):
        raise MdkerasError("times are not increasing: expected strictly increasing frame times.")
    return t


def _edges(box: float, r_max, bins) -> np.ndarray:
    """Bin edges on `[0, r_max]`; `r_max < B/2` so every shell lies inside the minimum image."""
    r_max = check_number("r_max", r_max, positive=True, noun="a radius")
    bins = check_int("bins", bins, min=1)
    if r_max >= box / 2:
        raise MdkerasError(
            f"r_max={r_max:g} is not allowed: expected r_max < box/2 = {box / 2:g}, beyond which "
            "minimum-image shells are incomplete; lower r_max or use a larger box."
        )
    return np.linspace(0.0, r_max, bins + 1)


def _bin_width(r) -> float:
    """The width of the uniform bins on `[0, r_max]` whose centres are `r` (as `rdf` returns)."""
    r = _series("r", r)
    if r.size < 1:
        raise MdkerasError("r is empty: expected the bin centres that rdf returns.")
    width = 2.0 * r[0]
    centres = width * (np.arange(r.size) + 0.5)
    if not width > 0 or not np.allclose(r, centres, rtol=1e-9, atol=1e-12 * width):
        raise MdkerasError(
            "r are not the centres of uniform bins starting at 0: expected r as rdf returns it."
        )
    return float(width)


# ---------------------------------------------------------------------------------- structure


def rdf_frames(frames, box, *, r_max, bins) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame radial distribution function of `(F, N, 2)` positions in a periodic box of side
    `box`: `(r, g)` with bin centres `r` `(bins,)` on `[0, r_max]` and `g` `(F, bins)`.

    All `N (N - 1) / 2` minimum-image pairs are counted (in chunks of `CHUNK` pairs, so memory
    stays bounded for any `N`); each shell is normalised by the ideal-gas count
    `N (N - 1) / 2 * pi (r_hi^2 - r_lo^2) / B^2` (density `(N - 1) / B^2` around each particle),
    so g = 1 exactly on average for uniform positions. Needs `r_max < B / 2`.
    """
    box = _box(box)
    x = np.mod(_frames("frames", frames, particles=2), box)  # then |dx| < B per coordinate
    edges = _edges(box, r_max, bins)
    bins, r_max = len(edges) - 1, float(edges[-1])
    count, n = x.shape[:2]
    scale, cut2 = bins / r_max, r_max * r_max
    rows = max(1, min(n - 1, CHUNK // n))
    batch = max(1, CHUNK // (rows * n))  # frames at once, when N is small
    hist = np.zeros((count, bins), np.int64)
    buffers = np.empty((3, batch * rows * (n - 1)))  # reused: fresh arrays cost page faults
    for f0 in range(0, count, batch):
        xs = x[f0 : f0 + batch]  # (b, N, 2)
        for a in range(0, n - 1, rows):
            b = min(a + rows, n - 1)
            shape = (xs.shape[0], b - a, n - a - 1)
            d, e, r2 = (buf[: math.prod(shape)].reshape(shape) for buf in buffers)
            for axis in range(2):
                np.subtract(xs[:, None, a + 1 :, axis], xs[:, a:b, None, axis], out=d)
                np.abs(d, out=d)
                np.minimum(d, np.subtract(box, d, out=e), out=d)  # minimum image
                if axis == 0:
                    np.multiply(d, d, out=r2)
                else:
                    r2 += np.multiply(d, d, out=e)
            upper = np.arange(a + 1, n)[None, :] > np.arange(a, b)[:, None]  # j > i
            inside = upper & (r2 < cut2)
            frame, _, _ = np.nonzero(inside)
            k = np.minimum((np.sqrt(r2[inside]) * scale).astype(np.intp), bins - 1)
            hist[f0 : f0 + xs.shape[0]] += np.bincount(
                frame * bins + k, minlength=xs.shape[0] * bins
            ).reshape(-1, bins)
    shells = np.pi * np.diff(edges**2)
    g = hist * (2.0 * box * box / (n * (n - 1))) / shells
    return 0.5 * (edges[:-1] + edges[1:]), g


def rdf(frames, box, *, r_max, bins, blocks: int = BLOCKS):
    """Radial distribution function of `(F, N, 2)` positions (box side `box`, reduced lengths):
    `(r, g, g_err)`, each `(bins,)`: bin centres on `[0, r_max]`, g averaged over all frames
    (`rdf_frames`), and its standard error over `min(blocks, F)` contiguous blocks of frames
    (`block_average`; NaN for a single frame). Needs `r_max < B / 2`."""
    blocks = check_int("blocks", blocks, min=2)
    r, per_frame = rdf_frames(frames, box, r_max=r_max, bins=bins)
    if per_frame.shape[0] < 2:
        return r, per_frame[0], np.full(r.shape, np.nan)
    g, g_err = block_average(per_frame, blocks=min(blocks, per_frame.shape[0]))
    return r, g, g_err


def rdf_error(r, g, g_ref) -> float:
    """MDsim's structure error, the h(r) MAE `integral |g - g_ref| dr` over `[0, r_max]` (reduced
    length units), as a midpoint sum on the bins whose centres are `r`; `g` and `g_ref` must be
    on those same bins (`(bins,)` each, e.g. both from `rdf` with the same `r_max` and `bins`)."""
    width = _bin_width(r)
    bins = len(r)
    g = _series("g", g)
    g_ref = _series("g_ref", g_ref)
    if g.shape != (bins,) or g_ref.shape != (bins,):
        raise MdkerasError(
            f"g of shape {g.shape} and g_ref of shape {g_ref.shape} do not match r's {bins} bins: "
            "expected both on the same bins; compute them with the same r_max and bins."
        )
    return float(np.sum(np.abs(g - g_ref)) * width)


# ---------------------------------------------------------------------------------- dynamics


def unwrap(frames, box) -> np.ndarray:
    """Unwrapped trajectories `(F, N, 2)` from positions wrapped into a periodic box of side
    `box`: the first frame plus the cumulative minimum-image displacements between frames.

    Exact only if no particle moves more than `B / 2` (per coordinate) between frames; a
    displacement component above `UNWRAP_LIMIT * B` (B/4) is taken as ambiguous and raises:
    store frames more often.
    """
    box = _box(box)
    x = _frames("frames", frames)
    step = np.diff(x, axis=0)
    step -= box * np.rint(step / box)
    if step.size and np.max(np.abs(step)) > UNWRAP_LIMIT * box:
        f, i, _ = np.unravel_index(int(np.argmax(np.abs(step))), step.shape)
        raise MdkerasError(
            f"particle {i} moves {np.max(np.abs(step)):.4g} between frames {f} and {f + 1}, "
            f"above {UNWRAP_LIMIT:g} of the box side {box:g}: expected small steps to unwrap "
            "unambiguously; store frames more often."
        )
    out = np.empty_like(x)
    out[0] = x[0]
    np.cumsum(step, axis=0, out=out[1:])
    out[1:] += x[0]
    return out


def msd(unwrapped, lags, *, blocks: int | None = None) -> np.ndarray:
    """Mean-squared displacement at integer frame `lags` `(L,)` of `(F, N, 2)` unwrapped
    positions (`unwrap`), averaged over all particles and all time origins `0 <= t0 < F - lag`,
    with the centre of mass removed frame by frame (reduced length^2).

    Returns `(L,)`; with `blocks=K`, the particles (in id order) are split into `K` contiguous
    groups and the result is `(K, L)`, one MSD per group, for `diffusion`'s standard error.
    """
    u = _frames("unwrapped", unwrapped)
    count, n = u.shape[:2]
    lags = np.asarray(lags)
    if lags.ndim != 1 or lags.size < 1 or not np.issubdtype(lags.dtype, np.integer):
        raise MdkerasError(
            f"lags={lags!r} is not allowed: expected a 1D array of integer frame lags."
        )
    if lags.min() < 0 or lags.max() >= count:
        raise MdkerasError(
            f"lags from {lags.min()} to {lags.max()} are not allowed: expected 0 <= lag < "
            f"{count} (the number of frames)."
        )
    groups = 1 if blocks is None else check_int("blocks", blocks, min=2, max=n)
    u = u - u.mean(axis=1, keepdims=True)  # centre of mass removed
    per_particle = np.zeros((lags.size, n))
    for k, lag in enumerate(lags.tolist()):
        if lag == 0:
            continue
        width = max(1, CHUNK // (count - lag))
        for a in range(0, n, width):
            d = u[lag:, a : a + width] - u[:-lag, a : a + width]
            per_particle[k, a : a + width] = np.mean(np.sum(d * d, axis=2), axis=0)
    if blocks is None:
        return per_particle.mean(axis=1)
    return np.stack([p.mean(axis=1) for p in np.array_split(per_particle, groups, axis=1)])


def diffusion(times, msd, *, lag_range) -> tuple[float, float]:
    """Diffusion coefficient `D` (reduced length^2 per time) from 2D MSD = 4 D t + c: a
    least-squares line through the MSD at lag `times` `(L,)` inside `lag_range = (lo, hi)`,
    `D = slope / 4`. Returns `(D, D_err)`.

    `msd` is `(L,)` (then `D_err` is NaN: neighbouring lags are correlated, so a fit residual is
    no error) or `(K, L)` from `msd(..., blocks=K)`: `D` is the mean of the `K` groups' slopes
    over 4 and `D_err` their standard error (particles in different groups move independently,
    up to O(1/N) correlations).
    """
    t = _series("times", times)
    values = np.asarray(msd, dtype=np.float64)
    rows = values[None] if values.ndim == 1 else values
    if rows.ndim != 2 or rows.shape[1] != t.size:
        raise MdkerasError(
            f"msd of shape {values.shape} does not match {t.size} lag times: expected ({t.size},) "
            f"or (blocks, {t.size})."
        )
    rows = check_finite("msd", rows)
    try:
        lo, hi = (float(v) for v in lag_range)
    except (TypeError, ValueError):
        raise MdkerasError(
            f"lag_range={lag_range!r} is not allowed: expected (lo, hi) lag times."
        ) from None
    use = (t >= lo) & (t <= hi)
    if np.count_nonzero(use) < 2:
        raise MdkerasError(
            f"lag_range=({lo:g}, {hi:g}) holds {np.count_nonzero(use)} lag time(s): expected at "
            "least 2 to fit a line; widen it or add lags."
        )
    tc = t[use] - t[use].mean()
    slopes = (rows[:, use] @ tc) / (tc @ tc) / 4.0
    d = float(slopes.mean())
    if slopes.size < 2:
        return d, math.nan
    return d, float(slopes.std(ddof=1) / math.sqrt(slopes.size))


# ---------------------------------------------------------------------------------- averages


def block_average(x, blocks: int = BLOCKS):
    """Mean and standard error of a time series `x` `(T, ...)` (time along axis 0): the mean of
    all samples, and the standard error from `blocks` contiguous blocks (lengths differing by at
    most 1), `std(block means, ddof=1) / sqrt(blocks)`, which stays honest for correlated
    samples once a block is longer than the correlation time. Floats for 1D `x`, else arrays
    of shape `x.shape[1:]`."""
    values = np.asarray(x, dtype=np.float64)
    if values.ndim < 1:
        raise MdkerasError("x is a scalar: expected a time series along axis 0.")
    values = check_finite("x", values)
    blocks = check_int("blocks", blocks, min=2)
    if values.shape[0] < blocks:
        raise MdkerasError(
            f"x has {values.shape[0]} samples, fewer than blocks={blocks}: expected at least one "
            "sample per block; use fewer blocks or a longer series."
        )
    means = np.stack([b.mean(axis=0) for b in np.array_split(values, blocks, axis=0)])
    mean = values.mean(axis=0)
    sem = means.std(axis=0, ddof=1) / math.sqrt(blocks)
    if values.ndim == 1:
        return float(mean), float(sem)
    return mean, sem


def drift(times, values, *, blocks: int = BLOCKS) -> tuple[float, float]:
    """Linear drift of `values` `(T,)` per unit of `times` `(T,)` (e.g. NVE energy per particle
    per tau): the least-squares slope and its standard error `(slope, slope_err)`.

    The error is the ordinary least-squares one, `sqrt(s^2 / sum (t - mean t)^2)`, inflated by
    the residuals' statistical inefficiency, `(block sem / iid sem)^2` over `blocks` contiguous
    blocks (at least 1), so correlated noise does not give an overconfident slope.
    """
    blocks = check_int("blocks", blocks, min=2)
    t = _times(times)
    y = _series("values", values, t.size)
    if t.size < max(3, blocks):
        raise MdkerasError(
            f"{t.size} samples are too few: expected at least {max(3, blocks)} to fit a drift "
            "with a standard error."
        )
    tc = t - t.mean()
    slope = float(tc @ (y - y.mean()) / (tc @ tc))
    residual = y - y.mean() - slope * tc
    s2 = float(residual @ residual) / (t.size - 2)
    if s2 == 0.0:
        return slope, 0.0
    _, block_sem = block_average(residual, blocks=blocks)
    inefficiency = max(1.0, block_sem**2 / (float(residual.var(ddof=1)) / t.size))
    return slope, math.sqrt(inefficiency * s2 / float(tc @ tc))


# ---------------------------------------------------------------------------------- stability


def stability(
    times,
    frames,
    reference,
    *,
    box=None,
    temperatures=None,
    temperature=None,
    threshold: float = STABILITY_THRESHOLD,
    window: float = STABILITY_WINDOW,
) -> dict:
    """MDsim's stability of a liquid run: the simulated time until it fails, or its length.

    `times` `(F,)` are frame times (reduced time); `frames` are either positions `(F, N, 2)`
    (then `box` is the box side) or a per-frame g(r) series `(F, bins)` (`rdf_frames`), on the
    bins of `reference = (r, g_ref)` (as `rdf` returns). The run fails at the first frame where

    - a position is not finite (atoms lost; checked before anything else at that frame),
    - `temperatures[k]` (optional, with the target `temperature`) leaves
      `[0.1 T, 10 T]` (`TEMPERATURE_BOUNDS`),
    - g(r) averaged over the frames in `(t_k - window, t_k]` has `rdf_error` above `threshold`
      against `g_ref` (checked once a full window has elapsed since the first frame).

    Defaults: `STABILITY_THRESHOLD` (h(r) MAE 0.10) over `STABILITY_WINDOW` (10 tau). Returns
    `{"stable", "time", "reason", "threshold", "window"}`: `time` from the first frame to the
    failing frame (or to the last frame if stable), `reason` a one-line cause or None. A run that
    LAMMPS stopped is scored on the frames it saved; the caller reports the stop itself.
    """
    threshold = check_number("threshold", threshold, positive=True, noun="an h(r) MAE")
    window = check_number("window", window, positive=True, noun="a time")
    try:
        r_ref, g_ref = reference
    except (TypeError, ValueError):
        raise MdkerasError(
            "reference is not allowed: expected the pair (r, g_ref) that rdf returns first."
        ) from None
    width = _bin_width(r_ref)
    g_ref = _series("g_ref", g_ref, len(r_ref))
    bins = g_ref.size
    data = np.asarray(frames, dtype=np.float64)
    t = _times(times)
    count = t.size
    if data.shape[:1] != (count,) or not (data.ndim == 3 or data.shape == (count, bins)):
        raise MdkerasError(
            f"frames of shape {data.shape} are not allowed: expected positions ({count}, N, 2) or "
            f"a g(r) series ({count}, {bins}) on the reference's bins."
        )
    failures = []  # (frame index, priority, reason)
    usable = count
    if data.ndim == 3:
        if box is None:
            raise MdkerasError("frames are positions but box is None: pass the box side.")
        lost = np.flatnonzero(~np.all(np.isfinite(data), axis=(1, 2)))
        if lost.size:
            usable = int(lost[0])
            failures.append((usable, 0, f"non-finite positions at t = {t[usable]:.6g}"))
        series = (
            rdf_frames(data[:usable], box, r_max=width * bins, bins=bins)[1]
            if usable
            else np.zeros((0, bins))
        )
    else:
        series = check_finite("the g(r) series", data)
    if (temperatures is None) != (temperature is None):
        raise MdkerasError(
            "temperatures and temperature go together: pass both (the per-frame temperatures and "
            "the target) or neither."
        )
    if temperatures is not None:
        temps = np.asarray(temperatures, dtype=np.float64)
        if temps.shape != (count,):
            raise MdkerasError(
                f"temperatures of shape {temps.shape} are not allowed: expected ({count},)."
            )
        target = check_number("temperature", temperature, positive=True, noun="a temperature")
        lo, hi = (target * b for b in TEMPERATURE_BOUNDS)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~((temps >= lo) & (temps <= hi)))
        if bad.size:
            k = int(bad[0])
            failures.append(
                (k, 1, f"temperature {temps[k]:.4g} outside [{lo:.4g}, {hi:.4g}] at t = {t[k]:.6g}")
            )
    if usable:
        tol = 1e-9 * window
        ends = np.flatnonzero(t[:usable] - t[0] >= window - tol)
        if ends.size:
            starts = np.searchsorted(t[:usable], t[ends] - window + tol, side="left")
            sums = np.concatenate([np.zeros((1, bins)), np.cumsum(series, axis=0)])
            mean = (sums[ends + 1] - sums[starts]) / (ends + 1 - starts)[:, None]
            errors = np.sum(np.abs(mean - g_ref), axis=1) * width
            over = np.flatnonzero(errors > threshold)
            if over.size:
                k = int(ends[over[0]])
                failures.append(
                    (
                        k,
                        2,
                        f"g(r) error {errors[over[0]]:.4g} > {threshold:g} over the window "
                        f"ending at t = {t[k]:.6g}",
                    )
                )
    result = {"stable": True, "time": float(t[-1] - t[0]), "reason": None}
    if failures:
        k, _, reason = min(failures)
        result = {"stable": False, "time": float(t[k] - t[0]), "reason": reason}
    return {**result, "threshold": threshold, "window": window}
