"""Coulomb scale invariance under the paper encoding, shown on the data.

Scaling every length by `s` (density `ρ → ρ/s²`, window `W → s·W`, so the box `B → s·B` and the
cell `h → s·h`) leaves the counts unchanged in distribution and multiplies every Coulomb force,
`1/r²`, by `1/s²`, and `f_max = |f(h)| = 1/h²` by `1/s²` too: the classes, hence the task, do
not change. Lennard-Jones has a length scale (σ), so the same scaling changes its task; that
contrast shows these tests can fail.

- With `s = 2` and the same seed, the sampler draws the same uniform numbers scaled exactly by 2
  (`B` doubles exactly), so Coulomb grids and classes agree sample by sample and the baselines
  agree exactly; LJ grids agree too but its classes do not.
- With `s = 3` and independent seeds, Coulomb class histograms and baselines agree within
  sampling error; the LJ histograms differ far beyond it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mdkeras.datasets import DatasetSpec, generate
from mdkeras.encoding import make_encoder
from mdkeras.metrics import bayes_limit, cell_centre_forces, classification_metrics, majority
from mdkeras.potentials import f_max

K = 10
GRID = 16
SAMPLES = 10_000  # 40 configurations: 29 train, 3 validation, 8 test (2,000 test samples)
CHI2_9DF_P001 = 27.877  # chi-square critical value, 9 degrees of freedom, p = 0.001
Z = 4.0  # "within sampling error": every difference under 4 standard errors


def _task(potential: str, density: float, window: float, seed: int, baselines=True) -> dict:
    """Dataset, paper-encoded classes, training class histograms and the three baselines."""
    data = generate(DatasetSpec(potential, density, window, GRID, SAMPLES, seed), progress=False)
    encoder = make_encoder("paper", f_max=f_max(potential, window / GRID), classes=K)
    idx = data.split_indices()
    classes = encoder.encode(data.forces)
    train, test = classes[idx["train"]], classes[idx["test"]]
    task = {
        "data": data,
        "classes": classes,
        "hist": [np.bincount(train[:, c], minlength=K) for c in (0, 1)],
        "n_test": len(test),
    }
    if baselines:
        grids = data.grids[idx["test"]]
        centre = encoder.encode(cell_centre_forces(grids, potential, window))
        task["majority"] = majority(train, test, K)
        task["cell_centre"] = classification_metrics(test, centre)["joint_accuracy"]
        task["bayes_limit"], task["bayes_limit_se"] = bayes_limit(
            grids, test, encoder, potential=potential, window=window, draws=128, seed=seed
        )
    return task


def _histogram_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample comparison of class counts: (chi-square statistic, largest |Δp| / se)."""
    table = np.stack([a, b]).astype(float)
    keep = table.sum(axis=0) > 0
    table = table[:, keep]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    na, nb = table.sum(axis=1)
    pa, pb = table[0] / na, table[1] / nb
    pooled = table.sum(axis=0) / table.sum()
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    return chi2, float(np.max(np.abs(pa - pb) / se))


def _within(a: float, b: float, se_a: float, se_b: float) -> bool:
    return abs(a - b) < Z * math.hypot(se_a, se_b)


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / n)


@pytest.fixture(scope="module")
def coulomb_s3():
    return _task("coulomb", 0.5, 5.0, seed=1), _task("coulomb", 0.5 / 9, 15.0, seed=2)


def test_coulomb_same_draws_scaled_by_two_give_identical_samples():
    a = _task("coulomb", 0.5, 5.0, seed=0)
    b = _task("coulomb", 0.125, 10.0, seed=0)
    assert b["data"].spec.box == 2 * a["data"].spec.box
    np.testing.assert_array_equal(a["data"].grids, b["data"].grids)
    np.testing.assert_allclose(b["data"].forces * 4, a["data"].forces, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(a["classes"], b["classes"])
    for key in ("majority", "cell_centre", "bayes_limit"):
        assert a[key] == b[key], key
    central = a["classes"][:, 0] // 2 == 2  # classes 4 and 5: most of the mass, not all of it
    assert 0.5 < central.mean() < 0.95


def test_lj_same_draws_scaled_by_two_change_the_classes():
    """The contrast: the same scaled draws give the same grids, but LJ forces do not scale as
    a power law, so some classes change."""
    a = _task("lj", 0.5, 8.0, seed=0, baselines=False)
    b = _task("lj", 0.125, 16.0, seed=0, baselines=False)
    np.testing.assert_array_equal(a["data"].grids, b["data"].grids)
    changed = np.any(a["classes"] != b["classes"], axis=1)
    assert changed.sum() > 50


def test_coulomb_histograms_agree_within_sampling_error(coulomb_s3):
    a, b = coulomb_s3
    for c in (0, 1):
        chi2, z = _histogram_stats(a["hist"][c], b["hist"][c])
        assert np.all(a["hist"][c] > 0)  # 10 classes populated: 9 degrees of freedom
        assert chi2 < CHI2_9DF_P001 and z < Z, (c, chi2, z)


def test_coulomb_baselines_agree_within_sampling_error(coulomb_s3):
    a, b = coulomb_s3
    for key in ("majority", "cell_centre"):
        se_a, se_b = _binomial_se(a[key], a["n_test"]), _binomial_se(b[key], b["n_test"])
        assert _within(a[key], b[key], se_a, se_b), (key, a[key], b[key])
    assert _within(a["bayes_limit"], b["bayes_limit"], a["bayes_limit_se"], b["bayes_limit_se"])


def test_lj_histograms_differ_beyond_sampling_error():
    """The contrast with the same statistics: LJ under the same 3x scaling is another task."""
    a = _task("lj", 0.5, 8.0, seed=1, baselines=False)
    b = _task("lj", 0.5 / 9, 24.0, seed=2, baselines=False)
    for c in (0, 1):
        chi2, z = _histogram_stats(a["hist"][c], b["hist"][c])
        assert chi2 > 3 * CHI2_9DF_P001 and z > Z, (c, chi2, z)
