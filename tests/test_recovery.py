"""Recovering the pair force from (grid, force) data: kernel fit, symmetry, deconvolution, CLI.

Fast (NumPy only, small data) except the CLI test, which imports TensorFlow for provenance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdkeras import recovery as rc
from mdkeras.datasets import DatasetSpec, generate
from mdkeras.errors import MdkerasError
from mdkeras.metrics import cell_centre_forces, cell_centre_kernel
from mdkeras.potentials import force_over_r
from mdkeras.symmetry import MATRICES, transform_grids

SETTINGS = {"lj": 8.0, "coulomb": 5.0}  # potential -> window


def synthetic(potential: str, window: float, n: int, samples: int, seed: int, rate=0.03):
    """Random counts (Poisson `rate` per cell) in `samples // 100` configurations, with every
    neighbour exactly at its cell centre: the forces are exactly linear in the counts."""
    rng = np.random.default_rng(seed)
    grids = rng.poisson(rate, size=(samples, n, n)).astype(np.uint8)
    forces = cell_centre_forces(grids, potential, window)
    config = np.arange(samples) // 100
    return grids, forces, config


# --- geometry, quadrature, symmetry --------------------------------------------------------------


def test_geometry_touching_cells_and_distances():
    even, odd = rc.geometry(4.0, 8), rc.geometry(4.0, 7)
    assert even.touching.sum() == 4 and even.touching[3:5, 3:5].all()
    assert odd.touching.sum() == 1 and odd.touching[3, 3]
    h = 0.5
    assert even.min_dist[4, 5] == pytest.approx(h)  # one cell right of a touching one
    assert even.min_dist[5, 5] == pytest.approx(h * np.sqrt(2))
    np.testing.assert_allclose(even.centre[4, 4], [0.25, 0.25])
    with pytest.raises(MdkerasError, match="grid"):
        rc.geometry(4.0, 1)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_centre_mode_is_the_cell_centre_kernel_and_average_matches_brute_force(potential):
    window, n = SETTINGS[potential], 16
    geo = rc.geometry(window, n)
    np.testing.assert_array_equal(
        rc.true_kernel(potential, geo, mode="centre"), cell_centre_kernel(potential, window, n)
    )
    avg = rc.true_kernel(potential, geo)
    # brute force: a 400 x 400 midpoint rule on one cell near the target, one far away
    t = (np.arange(400) + 0.5) / 400
    for iy, ix in ((8, 10), (2, 13)):
        x = geo.lower[iy, ix, 0] + geo.cell * t[None, :]
        y = geo.lower[iy, ix, 1] + geo.cell * t[:, None]
        g = force_over_r(potential, x * x + y * y)
        brute = -np.array([np.mean(g * x), np.mean(g * y)])
        np.testing.assert_allclose(avg[iy, ix], brute, rtol=1e-4)


def test_symmetrise_is_a_projection_onto_d4_symmetric_kernels():
    centre = cell_centre_kernel("coulomb", 5.0, 16)
    np.testing.assert_allclose(rc.symmetrise(centre), centre, rtol=1e-12, atol=1e-15)
    k = rc.symmetrise(np.random.default_rng(0).normal(size=(3, 16, 16, 2)))
    np.testing.assert_allclose(rc.symmetrise(k), k, atol=1e-12)
    for g in range(8):  # a neighbour in cell g(c) exerts M_g k[c]
        planes = transform_grids(np.moveaxis(k, -1, -3), g)
        img = np.einsum("ij,...jyx->...yxi", MATRICES[g], planes)
        np.testing.assert_allclose(img, k, atol=1e-12)


# --- the noise-free check ------------------------------------------------------------------------


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_noise_free_fit_recovers_cell_centre_kernel_and_true_parameters(potential):
    window, n = SETTINGS[potential], 16
    grids, forces, config = synthetic(potential, window, n, samples=6000, seed=1)
    fit = rc.fit_kernel(grids, forces, config, window, bootstrap=4)
    truth = cell_centre_kernel(potential, window, n)
    ok = np.all(np.isfinite(fit.kernel), axis=-1)
    assert ok.sum() == n * n - 4 and not ok[fit.geo.touching].any()
    np.testing.assert_allclose(fit.kernel[ok], truth[ok], rtol=1e-7, atol=1e-9)
    # touching cells: the median residual of the samples with one neighbour there
    full = rc.predictor_kernel(fit, grids, forces)
    np.testing.assert_allclose(full, truth, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(rc.linear_forces(grids, full), forces, rtol=1e-7, atol=1e-6)
    # deconvolution with point evaluation at the cell centres returns the truth
    mask = ok & rc.fundamental_domain(fit.geo)
    sigma = np.broadcast_to(np.abs(truth).max(axis=-1, keepdims=True), truth.shape)
    params = rc.fit_parameters(potential, fit.kernel, sigma, mask, fit.geo, mode="centre")
    for name, value in rc.TRUTH[potential].items():
        assert float(params[name]) == pytest.approx(value, rel=1e-6), name
    # ... while treating centre values as cell averages would not (the bias deconvolution fixes)
    biased = rc.fit_parameters(potential, fit.kernel, sigma, mask, fit.geo)
    assert abs(float(biased["A"]) / rc.TRUTH[potential]["A"] - 1) > 1e-3


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_average_mode_deconvolution_of_the_true_cell_average_is_exact(potential):
    geo = rc.geometry(SETTINGS[potential], 16)
    truth = rc.true_kernel(potential, geo)
    mask = ~geo.touching & rc.fundamental_domain(geo)
    sigma = np.broadcast_to(np.abs(truth).max(axis=-1, keepdims=True), truth.shape)
    params = rc.fit_parameters(potential, truth, sigma, mask, geo)
    for name, value in rc.TRUTH[potential].items():
        assert float(params[name]) == pytest.approx(value, rel=1e-6), name
    derived = rc.derived_points(potential, params)
    for name, value in derived.items():
        assert float(value) == pytest.approx(rc.DERIVED_TRUTH[name], rel=1e-6)


def test_bad_inputs_are_one_line_errors():
    grids, forces, config = synthetic("coulomb", 5.0, 16, samples=600, seed=0)
    with pytest.raises(MdkerasError, match=r"\(S, 2\)"):
        rc.fit_kernel(grids, forces[:10], config, 5.0)
    with pytest.raises(MdkerasError, match="bootstrap"):
        rc.fit_kernel(grids, forces, config, 5.0, bootstrap=1)
    with pytest.raises(MdkerasError, match="one configuration"):
        rc.fit_kernel(grids, forces, np.zeros(len(grids)), 5.0)
    with pytest.raises(MdkerasError, match="more samples") as err:
        rc.fit_kernel(grids[::10], forces[::10], config[::10], 5.0)
    assert "\n" not in str(err.value)
    with pytest.raises(MdkerasError, match="mode"):
        rc.cell_average(rc.power_g(2.0), rc.geometry(5.0, 16), mode="corner")


# --- noisy data: symmetry and honest error bars --------------------------------------------------


def small_dataset(seed: int, samples: int = 10_000):
    """Uniform LJ gas, 50 targets per configuration (200 configurations, 140 for training)."""
    spec = DatasetSpec("lj", 0.5, 8.0, 16, samples, seed, targets=50)
    return generate(spec, progress=False)


def test_stitched_kernel_is_d4_symmetric_and_close_to_the_truth():
    data = small_dataset(0)
    tr = data.split_indices()["train"]
    fit = rc.fit_kernel(data.grids[tr], data.forces[tr], data.config[tr], 8.0, bootstrap=16)
    for k in (fit.kernel, fit.replicates):
        np.testing.assert_allclose(rc.symmetrise(k), k, rtol=1e-12, atol=1e-12)
    assert len(fit.radii) >= 2 and fit.radii[0] == pytest.approx(fit.geo.cell)
    assert fit.samples == sorted(fit.samples, reverse=True)
    mask = fit.usable
    z = (fit.kernel - rc.true_kernel("lj", fit.geo))[mask] / fit.sigma[mask]
    assert 0.6 < np.sqrt(np.mean(z * z)) < 1.6  # bootstrap errors are the right size


def test_parameters_sit_within_their_bootstrap_intervals_at_the_stated_rate():
    """10 independent small Coulomb datasets (5,000 samples, n = 16): A and p each within
    2 sigma of the truth in at least 9 of 10 (95 % expected) and within 1 sigma in at least 5 of
    10 (68 % expected), with sigma below 1 % (an informative interval, not a wide one)."""
    within1 = {"A": 0, "p": 0}
    within2 = {"A": 0, "p": 0}
    for seed in range(10):
        spec = DatasetSpec("coulomb", 0.5, 5.0, 16, 5_000, 100 + seed, targets=50)
        summary, _ = rc.recover(
            generate(spec, progress=False), bootstrap=32, seed=seed, bayes=False
        )
        for name, est in summary["parameters"].items():
            assert est["error"] < 0.01 * est["truth"]
            within1[name] += abs(est["z"]) <= 1.0
            within2[name] += abs(est["z"]) <= 2.0
    assert all(v >= 9 for v in within2.values()), within2
    assert all(v >= 5 for v in within1.values()), within1


def test_recover_summary_is_json_ready_and_scores_the_linear_predictor():
    summary, arrays = rc.recover(small_dataset(1), encodings=("paper", "quantile"), bootstrap=8)
    text = json.dumps(summary, allow_nan=False)
    assert "relative_error" in text
    for enc in ("paper", "quantile"):
        s = summary["scores"][enc]
        assert s["majority"] < s["linear_predictor"]["joint_accuracy"] <= 1.0
        assert s["majority"] < s["recovered_kernel"]["joint_accuracy"]
        assert 0 < s["bayes_limit"] <= 1 and s["bayes_samples"] == 2_000
    assert set(summary["parameters"]) == {"A", "B"}
    assert set(summary["derived"]) == {"zero_crossing", "well_minimum"}
    assert len(summary["shells"]["value"]) == len(summary["shells"]["edges"]) - 1
    assert arrays["fit"].kernel.shape == (16, 16, 2)


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_writes_record_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from benchmarks.recover import main

    out = tmp_path / "rec"
    argv = ["-k", "coulomb-rho0.50-w5-n16", "--samples", "5000", "--bootstrap", "8"]
    argv += ["--no-bayes", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    stem = "coulomb-rho0.50-w5-n16--paper-s5000--seed0"
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["kind"] == "recovery" and record["physics"]["grid"] == 16
    assert set(record["scores"]) == {"paper", "quantile"}  # both encodings' cases selected
    assert len(record["cases"]) == 6  # lenet, alexnet, forcemap x paper, quantile
    assert abs(record["parameters"]["p"]["relative_error"]) < 0.1
    assert "git_commit" in json.dumps(record["provenance"]) or record["provenance"]
    for suffix in ("force", "kernel"):
        assert (out / f"{stem}-{suffix}.png").stat().st_size > 1000
    assert "coulomb-rho0.50-w5-n16" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["-k", "nosuchcase"], "nosuchcase"),
        (["--all", "--samples", "10"], "--samples"),
        (["--all", "--bootstrap", "1"], "--bootstrap"),
        (["--all", "--scale", "huge"], "huge"),
        ([], "required"),
    ],
)
def test_cli_bad_input_is_one_error_line(argv, needle, capsys):
    from benchmarks.recover import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_physics_settings_deduplicate_cases():
    from benchmarks import registry
    from benchmarks.recover import physics_settings

    settings = physics_settings(registry.list_cases("n28"))
    assert len(settings) == 6
    assert all(s["encodings"] == ["paper", "quantile"] and len(s["cases"]) == 6 for s in settings)
    assert len(physics_settings(registry.list_cases())) == 18
