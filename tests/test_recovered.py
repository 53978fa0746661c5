"""The recovered potential as a model: paired Monte Carlo, the fit, the record, the CLI."""

import numpy as np
import pytest

from mdkeras.config import SCALES, Case, with_samples
from mdkeras.datasets import DatasetSpec, load_or_build
from mdkeras.encoding import fit_encoder
from mdkeras.metrics import bayes_limit, joint_index, monte_carlo_classes
from mdkeras.potentials import get
from mdkeras.recovered import RecoveredModel, paired


@pytest.fixture(scope="module")
def coulomb(tmp_path_factory):
    """A small uniform Coulomb dataset, its test split and a quantile encoder."""
    spec = DatasetSpec("coulomb", 0.5, 5.0, 16, 1_000, 3)
    data = load_or_build(spec, cache_dir=tmp_path_factory.mktemp("cache"), progress=False)
    idx = data.split_indices()
    enc = fit_encoder(
        "quantile",
        potential="coulomb",
        window=5.0,
        grid=16,
        classes=10,
        train_forces=data.forces[idx["train"]],
    )
    grids = data.grids[idx["test"]]
    return grids, enc.encode(data.forces[idx["test"]]), enc


def _model(**params):
    truth = dict(get("coulomb").model.truth)
    return RecoveredModel("coulomb", 5.0, {**truth, **params}, "uniform", {})


def test_the_monte_carlo_with_the_potentials_own_force_is_the_bayes_limit(coulomb):
    grids, classes, enc = coulomb
    own = get("coulomb").model.force_over_r(get("coulomb").model.truth)
    plain = monte_carlo_classes(grids, enc, potential="coulomb", window=5.0, draws=64, seed=5)
    given = monte_carlo_classes(
        grids, enc, potential="coulomb", window=5.0, draws=64, seed=5, force_over_r=own
    )
    assert np.array_equal(plain, given)
    p, _ = bayes_limit(grids, classes, enc, potential="coulomb", window=5.0, draws=64, seed=5)
    assert p == np.mean(plain == joint_index(classes, 10))


def test_the_true_parameters_predict_exactly_the_true_force_monte_carlo(coulomb):
    grids, classes, enc = coulomb
    pred, section = _model().evaluate(grids, classes, enc, seed=1, draws=32)
    mc = section["true_force_monte_carlo"]
    assert mc["difference"] == 0.0 and mc["fraction"] == 1.0 and mc["same_prediction"] == 1.0
    assert pred.shape == (len(grids), 2) and section["draws"] == 32
    hits = np.all(pred == classes, axis=1)
    assert mc["joint_accuracy"] == pytest.approx(hits.mean())


def test_a_wrong_force_loses_accuracy_against_the_paired_monte_carlo(coulomb):
    grids, classes, enc = coulomb
    _, section = _model(A=3.0).evaluate(grids, classes, enc, seed=1, draws=32)
    mc = section["true_force_monte_carlo"]
    assert mc["same_prediction"] < 0.8 and mc["difference"] < -3 * mc["se"] < 0
    assert section["cell_centre"]["difference"] < 0


def test_paired_difference_and_its_standard_error():
    a = np.array([1, 1, 0, 1], bool)
    b = np.array([1, 0, 0, 0], bool)
    out = paired(a, b)
    assert out["difference"] == 0.5
    assert out["se"] == pytest.approx(np.std([0, 1, 0, 1], ddof=1) / 2)


def test_a_recovered_case_fits_the_training_split_and_writes_a_valid_record(tmp_path, monkeypatch):
    from mdkeras import recovered
    from mdkeras.records import load_record, write_record
    from mdkeras.training import run_case

    case = Case("coulomb", 0.5, 5.0, 16, architecture="recovered", encoding="quantile")
    scale = with_samples(SCALES["smoke"], 10_000)
    record = run_case(case, scale, 0, cache_dir=tmp_path, verbose=0)
    section = record["recovered"]
    fit = section["fit"]
    assert fit["method"] == "uniform" and record["parameters"] == 2
    assert fit["parameters"]["p"]["value"] == pytest.approx(2.0, abs=0.05)
    assert fit["parameters"]["A"]["value"] == pytest.approx(1.0, rel=0.05)
    assert record["epochs_run"] == 0 and record["history"] == []
    joint = record["metrics"]["joint_accuracy"]
    mc = section["true_force_monte_carlo"]
    assert joint == pytest.approx(mc["joint_accuracy"] + mc["difference"])
    assert mc["fraction"] > 0.97 and not record["metrics"]["collapsed"]
    assert section["samples"] == record["split_sizes"]["test"]
    loaded = load_record(write_record(tmp_path / "r.json", record))
    assert loaded["recovered"]["draws"] == section["draws"]
    # the other encoding's case shares the fit (same data and seed), not its scoring
    paper = Case("coulomb", 0.5, 5.0, 16, architecture="recovered", encoding="paper")
    calls = []
    monkeypatch.setattr(recovered, "recover", lambda *a, **k: calls.append(1))  # no new fit
    again = run_case(paper, scale, 0, cache_dir=tmp_path, verbose=0)
    assert again["recovered"]["fit"] == fit and again["encoder"]["name"] == "paper"
    assert calls == []  # shared, not refitted (a check of what happened, not of wall time)


def test_a_recovered_case_refuses_a_scale_too_small_to_fit(tmp_path):
    from mdkeras.errors import MdkerasError
    from mdkeras.training import run_case

    case = Case("coulomb", 0.5, 5.0, 16, architecture="recovered")
    with pytest.raises(MdkerasError, match="cannot run: recovered needs >= 10,000 samples"):
        run_case(case, SCALES["smoke"], 0, cache_dir=tmp_path, verbose=0)


def test_run_reports_the_cases_a_scale_is_too_small_for_and_refuses_a_force_head(tmp_path, capsys):
    from benchmarks.cli import main

    argv = ["run", "-k", "lj-rho0.50-w8-n*-recovered-paper", "--dry-run", "--out", str(tmp_path)]
    assert main([*argv, "--scale", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "not run: 3 (case, seed) at scale smoke: recovered needs >= 10,000" in out
    assert "would run 0, skip 0" in out
    assert main([*argv, "--scale", "ci"]) == 0
    out = capsys.readouterr().out
    assert "not run: 1 (case, seed) at scale ci: recovered needs >= 50,000" in out
    assert "would run 2, skip 0" in out
    assert main([*argv, "--scale", "ci", "--head", "force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: head='force' is not allowed")
