"""Scoring a simulation: g(r) against brute force, lattices and the ideal gas; unwrapping, MSD
and diffusion against analytic walks and the Langevin free particle in LAMMPS; block averages,
drift and the stability criterion against known series."""

import math

import numpy as np
import pytest
from lammps_marks import needs_lammps

from mdkeras import engine, observables
from mdkeras.errors import MdkerasError
from mdkeras.observables import (
    block_average,
    diffusion,
    drift,
    msd,
    rdf,
    rdf_error,
    rdf_frames,
    stability,
    unwrap,
)


def one_line(match):
    """pytest.raises for an MdkerasError whose message is one line matching `match`."""
    return pytest.raises(MdkerasError, match=rf"^(?!.*\n).*{match}")


# ------------------------------------------------------------------------------------- g(r)


def brute_rdf(x, box, r_max, bins):
    """g(r) by a double loop over pairs, the minimum image taken as the nearest of 9 images."""
    edges = np.linspace(0, r_max, bins + 1)
    counts = np.zeros(bins)
    frames, n = x.shape[:2]
    for f in range(frames):
        for i in range(n):
            for j in range(i + 1, n):
                r = min(
                    math.hypot(*(x[f, j] - x[f, i] + box * np.array([a, b])))
                    for a in (-1, 0, 1)
                    for b in (-1, 0, 1)
                )
                if r < r_max:
                    counts[int(r / r_max * bins)] += 1
    ideal = frames * n * (n - 1) / 2 * np.pi * np.diff(edges**2) / box**2
    return counts / ideal


def test_rdf_equals_a_brute_force_double_loop(monkeypatch):
    rng = np.random.default_rng(1)
    box = 5.0
    x = rng.uniform(0, box, (3, 9, 2))
    r, g, _ = rdf(x, box, r_max=2.4, bins=12)
    np.testing.assert_allclose(r, 0.1 + 0.2 * np.arange(12), rtol=1e-14)
    np.testing.assert_allclose(g, brute_rdf(x, box, 2.4, 12), rtol=1e-12)
    # the chunked pair loop (one row of one frame at a time) counts the same pairs
    monkeypatch.setattr(observables, "CHUNK", 1)
    _, g_chunked = rdf_frames(x, box, r_max=2.4, bins=12)
    np.testing.assert_allclose(g_chunked.mean(axis=0), g, rtol=1e-14)


def test_ideal_gas_rdf_is_one_within_its_sampling_error():
    rng = np.random.default_rng(2)
    n, box = 500, math.sqrt(500 / 0.5)
    x = rng.uniform(0, box, (40, n, 2))
    r, g, g_err = rdf(x, box, r_max=8.0, bins=80)
    assert np.all(g_err > 0)
    z = (g - 1) / g_err
    assert np.mean(np.abs(z) < 4) >= 0.97  # t with 9 dof beyond 4: 0.3 %
    assert abs(g.mean() - 1) < 4 * math.sqrt(np.sum(g_err**2)) / g.size
    # the error is the right size: Poisson counts of independent frames
    pairs = 40 * n * (n - 1) / 2 * np.pi * np.diff(np.linspace(0, 8.0, 81) ** 2) / box**2
    np.testing.assert_allclose(np.median(g_err * np.sqrt(pairs)), 1.0, rtol=0.25)


def test_square_lattice_rdf_peaks_at_its_spacing_with_the_exact_shell_count():
    a, side = 1.0, 12
    box = a * side
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side)), axis=-1).reshape(-1, 2) * a
    n = len(grid)
    # bins 0.07 wide: no lattice distance below 4.9 lies within 0.005 of a bin edge
    r, g, _ = rdf(grid[None] + 0.3, box, r_max=4.9, bins=70)
    peak = np.argmax(g)
    assert r[peak] - 0.035 < a < r[peak] + 0.035
    assert np.all(g[r < a - 0.035] == 0)
    # shells: 4 neighbours at a, 4 at sqrt(2) a, 4 at 2a, 8 at sqrt(5) a, ...
    v = np.arange(-5, 6)
    lengths = np.hypot(*np.meshgrid(v, v)).ravel() * a
    lengths = lengths[(lengths > 0) & (lengths < 4.9)]
    expected = np.bincount((lengths / 0.07).astype(int), minlength=70)
    shells = np.pi * np.diff(np.linspace(0, 4.9, 71) ** 2)
    np.testing.assert_allclose(g, expected * box**2 / ((n - 1) * shells), rtol=1e-12)


def test_rdf_is_invariant_under_a_global_periodic_translation():
    rng = np.random.default_rng(3)
    box = 10.0
    x = rng.uniform(0, box, (4, 60, 2))
    shifted = np.mod(x + rng.uniform(-30, 30, 2), box)
    _, g = rdf_frames(x, box, r_max=4.0, bins=40)
    _, g_shifted = rdf_frames(shifted, box, r_max=4.0, bins=40)
    np.testing.assert_allclose(g_shifted, g, rtol=1e-12)


def test_rdf_error_is_the_integral_of_the_absolute_difference():
    r, g, _ = rdf(np.random.default_rng(4).uniform(0, 10, (2, 50, 2)), 10.0, r_max=4.0, bins=40)
    assert rdf_error(r, g, g) == 0.0
    assert rdf_error(r, g + 0.1, g) == pytest.approx(0.1 * 4.0)
    bump = np.where(r < 1.0, -0.5, 0.0)  # 0.5 over [0, 1]
    assert rdf_error(r, g + bump, g) == pytest.approx(rdf_error(r, g, g + bump)) == 0.5


def test_bad_rdf_input_is_one_line():
    x = np.zeros((2, 10, 2))
    with one_line(r"r_max=5 is not allowed: expected r_max < box/2 = 5"):
        rdf(x, 10.0, r_max=5.0, bins=10)
    with one_line(r"frames of shape \(10, 2\) are not allowed: expected \(frames, particles, 2\)"):
        rdf(x[0], 10.0, r_max=4.0, bins=10)
    with one_line(r"frames contain 1 non-finite value"):
        rdf(np.where(np.arange(40).reshape(2, 10, 2) == 7, np.nan, x), 10.0, r_max=4.0, bins=10)
    r = np.arange(10) * 0.4 + 0.2
    with one_line(r"do not match r's 10 bins"):
        rdf_error(r, np.ones(10), np.ones(11))
    with one_line(r"r are not the centres of uniform bins"):
        rdf_error(r + 0.1, np.ones(10), np.ones(10))


# ------------------------------------------------------------------------------- dynamics


def random_walk(rng, frames, n, step):
    return rng.uniform(0, 10, (1, n, 2)) + np.cumsum(rng.normal(0, step, (frames, n, 2)), axis=0)


def test_unwrap_inverts_wrapping_of_a_random_walk():
    rng = np.random.default_rng(5)
    walk = random_walk(rng, 200, 30, 0.4)
    box = 10.0
    crossings = np.count_nonzero(np.diff(np.floor(walk / box), axis=0))
    assert crossings > 100  # the walks cross the box's edges many times
    wrapped = np.mod(walk, box)
    unwrapped = unwrap(wrapped, box)
    np.testing.assert_array_equal(unwrapped[0], wrapped[0])  # starts in the box
    np.testing.assert_allclose(unwrapped - unwrapped[0], walk - walk[0], atol=1e-9)
    jump = wrapped.copy()
    jump[100:, 3, 0] = np.mod(jump[100:, 3, 0] + 4.0, box)
    with one_line(r"particle 3 moves [\d.]+ between frames 99 and 100, above 0.25"):
        unwrap(jump, box)


def test_msd_of_ballistic_motion_is_exact_and_uniform_drift_gives_zero():
    rng = np.random.default_rng(6)
    t = np.arange(50)[:, None, None] * 0.1
    v = rng.normal(size=(1, 40, 2))
    x0 = rng.uniform(0, 10, (1, 40, 2))
    lags = np.array([0, 1, 7, 49])
    speed2 = np.mean(np.sum((v - v.mean(axis=1)) ** 2, axis=-1))  # centre of mass removed
    np.testing.assert_allclose(msd(x0 + v * t, lags), speed2 * (lags * 0.1) ** 2, rtol=1e-12)
    drifting = x0 + np.array([0.3, -0.2]) * t
    np.testing.assert_allclose(msd(drifting, lags), 0.0, atol=1e-25)


def test_msd_equals_a_loop_over_origins_and_particle_groups():
    rng = np.random.default_rng(7)
    u = random_walk(rng, 30, 12, 0.5)
    lags = np.array([1, 4, 29])
    c = u - u.mean(axis=1, keepdims=True)
    loop = np.array(
        [
            [np.mean([np.sum((c[t + lag, i] - c[t, i]) ** 2) for t in range(30 - lag)])
             for i in range(12)]
            for lag in lags
        ]
    )  # fmt: skip
    np.testing.assert_allclose(msd(u, lags), loop.mean(axis=1), rtol=1e-12)
    groups = msd(u, lags, blocks=3)
    np.testing.assert_allclose(groups, loop.reshape(3, 3, 4).mean(axis=2).T, rtol=1e-12)


def test_msd_of_a_random_walk_is_linear_with_its_analytic_diffusion():
    rng = np.random.default_rng(8)
    step, n = 0.2, 400
    u = random_walk(rng, 400, n, step)
    lags = np.arange(1, 41)
    per_group = msd(u, lags, blocks=10)
    exact = 2 * step**2 * lags * (1 - 1 / n)  # 2D, centre of mass removed
    sem = per_group.std(axis=0, ddof=1) / math.sqrt(10)
    assert np.all(np.abs(per_group.mean(axis=0) - exact) < 4 * sem)
    d, d_err = diffusion(lags * 1.0, per_group, lag_range=(5, 40))
    d_exact = step**2 / 2 * (1 - 1 / n)  # MSD = 4 D t with t in frames
    assert abs(d - d_exact) < 3 * d_err
    assert 0.003 < d_err / d_exact < 0.05
    d_mean, nan = diffusion(lags * 1.0, per_group.mean(axis=0), lag_range=(5, 40))
    assert d_mean == pytest.approx(d) and math.isnan(nan)


def test_diffusion_of_an_exact_line_and_bad_input():
    t = np.linspace(0, 10, 21)
    assert diffusion(t, 4 * 0.7 * t + 3.0, lag_range=(2, 8))[0] == pytest.approx(0.7)
    with one_line(r"lag_range=\(20, 30\) holds 0 lag time\(s\): expected at least 2"):
        diffusion(t, t, lag_range=(20, 30))
    with one_line(r"msd of shape \(20,\) does not match 21 lag times"):
        diffusion(t, t[1:], lag_range=(2, 8))
    with one_line(r"lags from 0 to 30 are not allowed: expected 0 <= lag < 30"):
        msd(np.zeros((30, 4, 2)), np.arange(31))


@needs_lammps
def test_free_particles_diffuse_with_the_langevin_thermostats_analytic_d():
    """Ideal gas under Langevin (damping tau, temperature T, mass 1): D = T tau and
    MSD(t) = 4 D (t - tau (1 - exp(-t/tau))), times (1 - 1/N) with the centre of mass removed
    (the thermostat's random forces sum to zero). Velocity Verlet keeps D exact."""
    n, temperature, tau, dt, every, frames = 300, 1.0, 0.5, 0.01, 10, 400
    with engine.Simulation(
        particles=n, density=0.5, interaction=engine.ideal_gas(), seed=11
    ) as sim:
        sim.place()
        sim.thermalize(temperature)
        sim.langevin(temperature, tau, dt)
        positions = [sim.positions()]
        for _ in range(frames):
            sim.run(every)
            positions.append(sim.positions())
        box = sim.box
    u = unwrap(np.stack(positions), box)
    lags = np.arange(5, 201, 5)
    t = lags * every * dt
    per_group = msd(u, lags, blocks=10)
    d_exact = temperature * tau
    exact = (1 - 1 / n) * 4 * d_exact * (t - tau * (1 - np.exp(-t / tau)))
    # the curve beyond tau, within 4 of its typical relative standard error (over 20 seeds the
    # worst lag reached 2.8); 10-block errors of single lags are too noisy to use one by one
    late = t >= tau
    relative = (per_group.mean(axis=0) / exact - 1)[late]
    relative_sem = (per_group.std(axis=0, ddof=1) / math.sqrt(10) / exact)[late]
    assert np.max(np.abs(relative)) < 4 * np.median(relative_sem)
    d, d_err = diffusion(t, per_group, lag_range=(2.0, 10.0))
    d_fit = diffusion(t, exact, lag_range=(2.0, 10.0))[0]  # the analytic curve, same fit
    assert d_fit == pytest.approx(d_exact * (1 - 1 / n), rel=2e-3)
    assert abs(d - d_fit) < 3 * d_err
    assert 0.01 < d_err / d_exact < 0.06  # the expected size (2-4 % over 20 seeds), not inflated


# -------------------------------------------------------------------------------- averages


def test_block_average_sem_matches_the_iid_formula_on_white_noise():
    rng = np.random.default_rng(9)
    x = rng.normal(2.0, 3.0, (300, 1000))
    results = [block_average(row, blocks=10) for row in x]
    means = np.array([m for m, _ in results])
    sems = np.array([s for _, s in results])
    np.testing.assert_allclose(means, x.mean(axis=1), rtol=1e-13)
    assert np.mean(sems**2) == pytest.approx(9.0 / 1000, rel=0.1)
    mean, sem = block_average(x.T, blocks=20)  # (T, ...) series: per-column results
    assert mean.shape == sem.shape == (300,)
    with one_line(r"x has 5 samples, fewer than blocks=10"):
        block_average(np.ones(5))


def test_block_average_sem_stays_honest_for_correlated_samples():
    rng = np.random.default_rng(10)
    phi, count = 0.9, 20_000
    noise = rng.normal(size=(100, count))
    x = np.zeros_like(noise)
    for k in range(1, count):
        x[:, k] = phi * x[:, k - 1] + noise[:, k]
    sems = np.array([block_average(row, blocks=10)[1] for row in x])
    true = np.std(x.mean(axis=1))  # the spread of 100 independent means
    assert np.sqrt(np.mean(sems**2)) == pytest.approx(true, rel=0.2)


def ar1(rng, shape, phi):
    noise = rng.normal(size=shape)
    out = np.zeros(shape)
    for k in range(1, shape[-1]):
        out[..., k] = phi * out[..., k - 1] + noise[..., k]
    return out


@pytest.mark.parametrize("phi", [0.0, 0.95])
def test_drift_recovers_a_known_slope_and_its_error_covers_it(phi):
    """White noise and AR(1) noise of correlation time ~40 samples (50 of them in the series):
    the error matches the spread of 200 slopes (for AR(1) ~10 % low, from 10 blocks; the
    ordinary least-squares error would be 6x too small)."""
    rng = np.random.default_rng(11)
    t = np.linspace(0, 50, 2000)
    values = 3.0 - 0.02 * t + 0.1 * ar1(rng, (200, t.size), phi)
    fits = np.array([drift(t, v) for v in values])
    slope, err = fits[:, 0], fits[:, 1]
    assert abs(slope.mean() + 0.02) < 4 * slope.std() / math.sqrt(len(slope))
    assert np.sqrt(np.mean(err**2)) == pytest.approx(slope.std(), rel=0.25)
    assert 0.8 <= np.mean(np.abs(slope + 0.02) < 2 * err) <= 0.99  # ~0.92 for t with 9 dof
    noise_rms = np.std(values - (3.0 - 0.02 * t))
    ols = noise_rms / math.sqrt(np.sum((t - t.mean()) ** 2))
    if phi == 0.0:  # white noise: the ordinary least-squares error
        assert np.median(err) == pytest.approx(ols, rel=0.1)
    else:
        assert ols < 0.3 * slope.std()
    assert drift(t, 1.5 * t + 2.0) == pytest.approx((1.5, 0.0), abs=1e-12)


# ------------------------------------------------------------------------------- stability


def reference_and_series(rng, frames=400, spacing=0.1, bins=50):
    r = (np.arange(bins) + 0.5) * 0.1
    g_ref = 1 + np.exp(-((r - 1.1) ** 2) / 0.02) - np.exp(-(r**2) / 0.3)
    t = 2.0 + spacing * np.arange(frames)
    return t, r, g_ref, g_ref + rng.normal(0, 0.05, (frames, bins))


def brute_first_failure(t, series, r, g_ref, threshold, window):
    """The first frame whose (t - window, t] mean g has h(r) MAE above threshold: a plain loop."""
    for k in range(len(t)):
        if t[k] - t[0] < window - 1e-9:
            continue
        inside = (t > t[k] - window + 1e-9) & (t <= t[k])
        if rdf_error(r, series[inside].mean(axis=0), g_ref) > threshold:
            return k
    return None


def test_stability_is_stable_on_a_reference_series():
    t, r, g_ref, series = reference_and_series(np.random.default_rng(12))
    out = stability(t, series, (r, g_ref), temperatures=np.full(t.size, 1.02), temperature=1.0)
    assert out == {
        "stable": True,
        "time": pytest.approx(t[-1] - t[0]),
        "reason": None,
        "threshold": observables.STABILITY_THRESHOLD,
        "window": observables.STABILITY_WINDOW,
    }


def test_stability_fails_when_the_structure_departs():
    t, r, g_ref, series = reference_and_series(np.random.default_rng(13))
    series[t >= 20.0] += 0.2  # from t = 20 on, g is 0.2 too high everywhere: MAE 1.0
    k = brute_first_failure(t, series, r, g_ref, 0.10, 5.0)
    out = stability(t, series, (r, g_ref), window=5.0)
    assert not out["stable"] and out["time"] == pytest.approx(t[k] - t[0])
    assert 20.0 <= t[k] <= 20.0 + 5.0
    assert out["reason"].startswith("g(r) error ")
    # a wider window and a looser threshold fail later, at the loop's frame
    k = brute_first_failure(t, series, r, g_ref, 0.5, 10.0)
    wide = stability(t, series, (r, g_ref), threshold=0.5, window=10.0)
    assert wide["time"] == pytest.approx(t[k] - t[0]) and wide["time"] > out["time"]
    assert (wide["threshold"], wide["window"]) == (0.5, 10.0)


def test_stability_fails_when_the_temperature_runs_away_or_atoms_are_lost():
    t, r, g_ref, series = reference_and_series(np.random.default_rng(14))
    temps = np.where(t < 30.0, 1.0, np.exp(t - 30.0))  # passes 10 T at t = 30 + ln 10
    out = stability(t, series, (r, g_ref), temperatures=temps, temperature=1.0)
    first = np.flatnonzero(temps > 10.0)[0]
    assert not out["stable"] and out["time"] == pytest.approx(t[first] - t[0])
    assert out["reason"].startswith("temperature ")
    cold = stability(t, series, (r, g_ref), temperatures=np.full(t.size, 0.09), temperature=1.0)
    assert not cold["stable"] and cold["time"] == 0.0
    # positions: the same verdicts as their g(r) series, and a NaN frame is atoms lost
    rng = np.random.default_rng(15)
    box = 12.0
    x = rng.uniform(0, box, (120, 80, 2))
    times = 0.1 * np.arange(120)
    r, g, _ = rdf(x, box, r_max=5.0, bins=25)
    _, per_frame = rdf_frames(x, box, r_max=5.0, bins=25)
    for threshold in (0.3, 3.0):
        assert stability(times, x, (r, g), box=box, threshold=threshold) == stability(
            times, per_frame, (r, g), threshold=threshold
        )
    x[70, 5] = np.nan
    lost = stability(times, x, (r, g), box=box, threshold=3.0)
    assert not lost["stable"] and lost["time"] == pytest.approx(7.0)
    assert lost["reason"].startswith("non-finite positions")


def test_bad_stability_input_is_one_line():
    t, r, g_ref, series = reference_and_series(np.random.default_rng(16))
    with one_line("temperatures and temperature go together"):
        stability(t, series, (r, g_ref), temperatures=np.ones(t.size))
    with one_line(r"frames of shape \(400, 49\) are not allowed"):
        stability(t, series[:, 1:], (r, g_ref))
    with one_line("frames are positions but box is None"):
        stability(t, np.zeros((t.size, 5, 2)), (r, g_ref))
    with one_line("times are not increasing"):
        stability(t[::-1], series, (r, g_ref))
