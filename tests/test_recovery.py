"""Recovering the pair force from (grid, force) data: kernel fit, symmetry, deconvolution, CLI.

Fast (NumPy only, small data) except the CLI test, which imports TensorFlow for provenance.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mdkeras import recovery as rc
from mdkeras.datasets import DatasetSpec, generate
from mdkeras.encoding import fit_encoder
from mdkeras.errors import MdkerasError
from mdkeras.metrics import cell_centre_forces, cell_centre_kernel
from mdkeras.potentials import (
    POTENTIALS,
    ForceView,
    ModelForm,
    Potential,
    Term,
    f_max,
    force_over_r,
)
from mdkeras.symmetry import fundamental_domain, symmetrise

SETTINGS = {"lj": 8.0, "coulomb": 5.0}  # potential -> window
TRUTH = {"lj": {"A": 48.0, "B": 24.0}, "coulomb": {"A": 1.0, "p": 2.0}}  # SPEC §1 by hand
LJ_POINTS = {"zero_crossing": 2.0 ** (1 / 6), "well_minimum": (26.0 / 7.0) ** (1 / 6)}


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
    mask = ok & fundamental_domain(n)
    sigma = np.broadcast_to(np.abs(truth).max(axis=-1, keepdims=True), truth.shape)
    params = rc.fit_parameters(potential, fit.kernel, sigma, mask, fit.geo, mode="centre")
    for name, value in TRUTH[potential].items():
        assert float(params[name]) == pytest.approx(value, rel=1e-6), name
    # ... while treating centre values as cell averages would not (the bias deconvolution fixes)
    biased = rc.fit_parameters(potential, fit.kernel, sigma, mask, fit.geo)
    assert abs(float(biased["A"]) / TRUTH[potential]["A"] - 1) > 1e-3


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_average_mode_deconvolution_of_the_true_cell_average_is_exact(potential):
    geo = rc.geometry(SETTINGS[potential], 16)
    truth = rc.true_kernel(potential, geo)
    mask = ~geo.touching & fundamental_domain(16)
    sigma = np.broadcast_to(np.abs(truth).max(axis=-1, keepdims=True), truth.shape)
    params = rc.fit_parameters(potential, truth, sigma, mask, geo)
    assert list(params) == list(TRUTH[potential])
    for name, value in TRUTH[potential].items():
        assert float(params[name]) == pytest.approx(value, rel=1e-6), name
    derived = rc.derived_points(potential, params)
    assert set(derived) == (set(LJ_POINTS) if potential == "lj" else set())
    for name, value in derived.items():
        assert float(value) == pytest.approx(LJ_POINTS[name], rel=1e-6)
    # the fitted form's kernel is the true kernel again
    np.testing.assert_allclose(
        rc.model_kernel(potential, params, geo)[mask], truth[mask], rtol=1e-5, atol=1e-9
    )


def test_a_model_form_with_a_fitted_exponent_and_several_terms_is_fitted_exactly():
    """The general route (coefficients by least squares, one exponent by profiling) on the exact
    cell-averaged kernel of `3 r^-3 - 2 r^-7`; and a one-term form with a fixed exponent."""
    geo = rc.geometry(5.0, 16)
    mask = ~geo.touching & fundamental_domain(16)
    two = ModelForm(
        "A r^-p - B r^-7",
        (Term("A", "p"), Term("B", 7.0, sign=-1.0)),
        truth={"A": 3.0, "p": 3.0, "B": 2.0},
        bounds=(1.0, 5.0),
    )
    assert two.parameters == ("A", "B", "p")
    kernel = rc.cell_average(two.force_over_r(two.truth), geo)
    sigma = np.ones_like(kernel)
    params = rc.fit_model(two, kernel, sigma, mask, geo)
    for name, value in two.truth.items():
        assert float(params[name]) == pytest.approx(value, rel=1e-6), name
    # two kernels at once: one parameter set each
    both = rc.fit_model(two, np.stack([kernel, 2 * kernel]), sigma, mask, geo)
    np.testing.assert_allclose(both["A"], [3.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(both["p"], [3.0, 3.0], rtol=1e-6)
    one = ModelForm("A r^-2", (Term("A", 2.0),), truth={"A": 1.0})
    coulomb = rc.true_kernel("coulomb", geo)
    assert float(rc.fit_model(one, coulomb, sigma, mask, geo)["A"]) == pytest.approx(1.0, 1e-9)


def test_fit_encoder_is_the_case_encoder_fitted_on_training_forces():
    forces = np.random.default_rng(0).normal(scale=3.0, size=(500, 2))
    paper = fit_encoder(
        "paper", potential="lj", window=8.0, grid=28, classes=10, train_forces=forces
    )
    assert paper.f_max == f_max("lj", 8.0 / 28) and paper.classes == 10
    quantile = fit_encoder(
        "quantile", potential="lj", window=8.0, grid=28, classes=4, train_forces=forces
    )
    np.testing.assert_array_equal(
        np.bincount(quantile.encode(forces)[:, 0], minlength=4), [125, 125, 125, 125]
    )
    with pytest.raises(MdkerasError, match="'onehot'"):
        fit_encoder("onehot", potential="lj", window=8.0, grid=28, classes=4, train_forces=forces)
    with pytest.raises(MdkerasError, match="'morse'"):
        fit_encoder("paper", potential="morse", window=8.0, grid=28, classes=4, train_forces=forces)


def test_a_new_potential_is_one_table_entry(monkeypatch):
    """`U = r^-3` (`f = 3 r^-4`) added to `POTENTIALS` alone: datasets and recovery use it, and
    recovery finds its truth within a few bootstrap errors."""
    entry = Potential(
        name="r3",
        label="r^-3",
        force_over_r=lambda r2: 3.0 * r2**-2.5,
        energy=lambda r: r**-3.0,
        model=ModelForm("A r^-p", (Term("A", "p"),), truth={"A": 3.0, "p": 4.0}, bounds=(1, 8)),
        md_cutoff=5.0,
        view=ForceView(log=True),
    )
    monkeypatch.setitem(POTENTIALS, "r3", entry)
    data = generate(DatasetSpec("r3", 0.5, 5.0, 16, 5_000, 0, targets=50), progress=False)
    summary, _ = rc.recover(data, bootstrap=16, bayes=False)
    assert summary["model"] == "A r^-p" and set(summary["parameters"]) == {"A", "p"}
    for est in summary["parameters"].values():
        assert abs(est["z"]) < 4 and abs(est["relative_error"]) < 0.05, est


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
        np.testing.assert_allclose(symmetrise(k), k, rtol=1e-12, atol=1e-12)
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
    assert len(record["cases"]) == 8  # lenet, alexnet, forcemap, recovered x paper, quantile
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

    settings = physics_settings(registry.list_cases("n28", exclude="md-"))
    assert len(settings) == 6
    assert all(s["encodings"] == ["paper", "quantile"] and len(s["cases"]) == 8 for s in settings)
    md = physics_settings(registry.list_cases("md-"))  # md data is its own setting
    assert len(md) == 7 and all(s["sampler"] == "md" and s["name"].startswith("md-") for s in md)
    assert md[2]["key"] == settings[2]["key"] and md[2]["name"] != settings[2]["name"]
    assert len(physics_settings(registry.list_cases())) == 18 + 7


def test_committed_recovery_records_load_and_match_the_potential_table():
    """Every record under results/recovery/ loads, and its model, parameter names and truths
    are the ones the `POTENTIALS` table gives today."""
    from pathlib import Path

    from mdkeras.records import load_record

    paths = sorted((Path(__file__).parents[1] / "results" / "recovery").glob("*.json"))
    assert paths
    for path in paths:
        record = load_record(path, kind="recovery")
        form = POTENTIALS[record["physics"]["potential"]].model
        assert record["model"] == form.formula, path
        assert list(record["parameters"]) == list(form.parameters), path
        assert {k: v["truth"] for k, v in record["parameters"].items()} == form.truth, path
        derived = {k: float(v) for k, v in form.derived(form.truth).items()}
        assert {k: v["truth"] for k, v in record["derived"].items()} == derived, path
