"""Metrics and baselines on hand-made data (SPEC §6)."""

import numpy as np
import pytest

from mdkeras.descriptors import featurize
from mdkeras.encoding import make_encoder
from mdkeras.errors import MdkerasError
from mdkeras.metrics import (
    BAYES_DRAWS,
    baselines,
    bayes_limit,
    cell_centre_forces,
    cell_centre_kernel,
    classification_metrics,
    collapse,
    force_baselines,
    force_errors,
    force_mae,
    force_median_ae,
    joint_index,
    majority,
)
from mdkeras.potentials import f_max, force_on_target


def test_classification_metrics_on_hand_made_arrays():
    true = np.array([[4, 5], [4, 5], [0, 9], [3, 3]])
    pred = np.array([[4, 5], [4, 6], [1, 9], [5, 3]])
    m = classification_metrics(true, pred)
    assert m["joint_accuracy"] == 0.25
    assert m["accuracy_x"] == 0.5
    assert m["accuracy_y"] == 0.75
    assert m["joint_within_one"] == 0.75


def test_joint_index_and_majority():
    assert joint_index(np.array([[2, 3]]), 10).tolist() == [23]
    train = np.array([[4, 5]] * 5 + [[5, 4]] * 3)
    test = np.array([[4, 5], [5, 4], [4, 5], [0, 0]])
    assert majority(train, test, 10) == 0.5


def test_force_mae_uses_decoded_values():
    enc = make_encoder("paper", classes=10, f_max=10.0)
    enc.fit(np.array([[0.5, -0.5], [1.5, 3.0]]))
    pred = np.array([[5, 4]])  # centres +1 and -1
    assert force_mae(enc, pred, np.array([[2.0, -1.0]])) == pytest.approx(0.5)


def test_force_median_ae_is_robust_to_a_near_overlap_force():
    enc = make_encoder("paper", classes=10, f_max=10.0).fit(np.array([[0.5, -0.5], [1.5, 3.0]]))
    pred = np.array([[5, 4]] * 5)  # decoded (+1, -1) each
    true = np.array([[1.5, -1.0], [1.0, -1.25], [0.0, -1.0], [1.0, 1e30], [1.0, -1.0]])
    # absolute errors: 0.5 0 | 0 0.25 | 1 0 | 0 1e30 | 0 0 -> sorted 0 x6, 0.25, 0.5, 1, 1e30
    assert force_median_ae(enc, pred, true) == 0.0
    assert force_mae(enc, pred, true) == pytest.approx(1e29)
    shifted = true + np.array([[0.0, 0.0]] * 4 + [[2.0, 2.0]])
    # last row now errs by 2, 2: sorted 0 x4, 0.25, 0.5, 1, 2, 2, 1e30 -> (0.25 + 0.5) / 2
    assert force_median_ae(enc, pred, shifted) == pytest.approx(0.375)


def test_a_constant_predictor_collapsed_and_a_perfect_one_did_not():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 10, size=(200, 2))
    constant = np.tile([[4, 5]], (200, 1))
    acc = classification_metrics(true, constant)["joint_accuracy"]
    out = collapse(constant, 10, acc, majority_accuracy=0.02)
    assert out == {"top_class_share": 1.0, "collapsed": True}
    perfect = collapse(true, 10, 1.0, majority_accuracy=0.02)
    assert perfect["collapsed"] is False and perfect["top_class_share"] < 0.1
    # spread predictions that are no better than the majority baseline did not learn either
    assert collapse(true, 10, 0.02, majority_accuracy=0.02)["collapsed"] is True
    # 90 % of one class is collapsed even when accurate
    mostly = np.vstack([np.tile([[1, 1]], (180, 1)), true[:20]])
    assert collapse(mostly, 10, 0.95, majority_accuracy=0.5) == {
        "top_class_share": pytest.approx(0.9 + 0.1 * np.mean((true[:20] == [1, 1]).all(1))),
        "collapsed": True,
    }
    spread = np.vstack([np.tile([[1, 1]], (170, 1)), np.tile([[2, 2]], (30, 1))])
    assert collapse(spread, 10, 0.95, majority_accuracy=0.5) == {
        "top_class_share": 0.85,
        "collapsed": False,
    }


def test_baselines_are_the_three_baselines_of_the_split():
    window, n = 8.0, 16
    enc = make_encoder("paper", classes=10, f_max=f_max("lj", window / n)).fit(np.zeros((4, 2)))
    rng = np.random.default_rng(5)
    grids = rng.poisson(0.1, size=(64, n, n)).astype(np.uint8)
    test, train = rng.integers(3, 7, size=(64, 2)), rng.integers(3, 7, size=(128, 2))
    out = baselines(train, test, grids, enc, potential="lj", window=window, seed=7)
    assert out["majority"] == majority(train, test, 10)
    centre = enc.encode(cell_centre_forces(grids, "lj", window))
    assert out["cell_centre"] == classification_metrics(test, centre)["joint_accuracy"]
    p, se = bayes_limit(grids, test, enc, potential="lj", window=window, seed=7)
    assert (out["bayes_limit"], out["bayes_limit_se"]) == (p, se)
    assert out["bayes_samples"] == 64 and out["bayes_draws"] == BAYES_DRAWS
    without = baselines(train, test, grids, enc, potential="lj", window=window, seed=7, bayes=False)
    assert without == {"majority": out["majority"], "cell_centre": out["cell_centre"]}
    # a sampler whose neighbours are not uniform in their cells (md): the same Monte Carlo is a
    # baseline classifier, not the Bayes limit
    md = baselines(
        train, test, grids, enc, potential="lj", window=window, seed=7, uniform_in_cells=False
    )
    assert md["bayes_limit"] is None and md["bayes_limit_se"] is None
    assert "not iid uniform" in md["bayes_limit_reason"]
    assert (md["uniform_bayes"], md["uniform_bayes_se"]) == (p, se)
    assert md["majority"] == out["majority"] and md["bayes_samples"] == 64


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_cell_centre_is_exact_when_particles_sit_at_cell_centres(potential):
    window, n, box = 6.0, 16, 40.0
    h = window / n
    rng = np.random.default_rng(3)
    target = np.array([20.0, 20.0])
    cells = rng.choice(n * n, size=25, replace=False)
    cells = cells[~np.isin(cells, [(n // 2 - 1) * n + n // 2 - 1, (n // 2) * n + n // 2])]
    ix, iy = cells % n, cells // n
    others = target + np.stack([(ix + 0.5) * h, (iy + 0.5) * h], axis=1) - window / 2
    positions = np.vstack([target, others])
    grids, forces = featurize(
        positions, box, np.array([0]), potential=potential, window=window, grid=n
    )
    assert grids.sum() == len(others)
    np.testing.assert_allclose(cell_centre_forces(grids, potential, window), forces, rtol=1e-12)


def test_cell_centre_kernel_orientation():
    k = cell_centre_kernel("coulomb", 4.0, 4)  # cell centres at -1.5, -0.5, 0.5, 1.5
    # a neighbour in the cell [iy=2, ix=3] sits at (+1.5, +0.5): it pushes the target to -x, -y
    np.testing.assert_allclose(k[2, 3], force_on_target("coulomb", np.array([1.5, 0.5])))
    assert k[2, 3, 0] < 0 and k[2, 3, 1] < 0


def _one_neighbour_grid(n, ix, iy):
    g = np.zeros((1, n, n), dtype=np.uint8)
    g[0, iy, ix] = 1
    return g


def test_bayes_limit_is_one_when_the_class_cannot_change_within_cells():
    # Coulomb, paper encoding: f_max = 1/h^2 dwarfs the force of one far neighbour, and a
    # neighbour off both axes fixes both signs, so every realisation has the same joint class.
    window, n = 5.0, 28
    enc = make_encoder("paper", classes=10, f_max=f_max("coulomb", window / n)).fit(
        np.zeros((4, 2))
    )
    rng = np.random.default_rng(0)
    grids, labels = [], []
    for _ in range(50):
        ix, iy = rng.choice([0, 1, 2, 25, 26, 27], size=2)
        g = _one_neighbour_grid(n, ix, iy)
        grids.append(g[0])
        d = np.array([(ix + 0.5) * window / n - window / 2, (iy + 0.5) * window / n - window / 2])
        labels.append(enc.encode(force_on_target("coulomb", d)))
    acc, se = bayes_limit(
        np.array(grids), np.array(labels), enc, potential="coulomb", window=window
    )
    assert acc == 1.0 and se == 0.0


def test_bayes_limit_matches_a_brute_force_histogram():
    # One neighbour in a cell next to the target: its joint class varies within the cell. The
    # Bayes classifier predicts the modal class; its accuracy on true positions drawn uniformly in
    # the cell is the modal class's probability, computed here by fine quadrature.
    window, n, potential = 8.0, 16, "lj"
    h = window / n
    ix, iy = n // 2 + 1, n // 2  # cell [0.5, 1.0) x [0, 0.5)
    enc = make_encoder("paper", classes=4, f_max=40.0).fit(np.zeros((4, 2)))
    corner = np.array([ix * h - window / 2, iy * h - window / 2])
    u = (np.arange(400) + 0.5) / 400
    fine = corner + h * np.stack(np.meshgrid(u, u), axis=-1).reshape(-1, 2)
    fine_joint = joint_index(enc.encode(force_on_target(potential, fine)), 4)
    p = np.bincount(fine_joint, minlength=16) / len(fine)
    assert 0.3 < p.max() < 0.95  # a genuinely uncertain cell

    rng = np.random.default_rng(1)
    true_d = corner + h * rng.random((3000, 2))
    labels = enc.encode(force_on_target(potential, true_d))
    grids = np.repeat(_one_neighbour_grid(n, ix, iy), len(true_d), axis=0)
    acc, se = bayes_limit(grids, labels, enc, potential=potential, window=window, seed=2)
    assert acc == pytest.approx(p.max(), abs=4 * se)
    # the plug-in mean of the max probability would be the same here; the estimator must use
    # the true labels: relabelling every sample to a non-modal class drives it to zero
    wrong = np.tile(
        np.array([[int(np.argsort(p)[-2]) // 4, int(np.argsort(p)[-2]) % 4]]), (3000, 1)
    )
    acc_wrong, _ = bayes_limit(grids, wrong, enc, potential=potential, window=window, seed=2)
    assert acc_wrong == 0.0


def test_bayes_limit_is_seeded():
    window, n = 8.0, 16
    enc = make_encoder("paper", classes=10, f_max=f_max("lj", window / n)).fit(np.zeros((4, 2)))
    rng = np.random.default_rng(5)
    grids = rng.poisson(0.1, size=(64, n, n)).astype(np.uint8)
    labels = rng.integers(3, 7, size=(64, 2))
    a = bayes_limit(grids, labels, enc, potential="lj", window=window, seed=7)
    b = bayes_limit(grids, labels, enc, potential="lj", window=window, seed=7)
    assert a == b


def test_confusion_matrix_rows_are_true_classes():
    from mdkeras.metrics import confusion_matrix

    m = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


# --- force regression ------------------------------------------------------------------------


def test_force_errors_on_hand_made_arrays():
    true = np.array([[0.0, 0.0], [1.0, -1.0]])
    pred = np.array([[3.0, 4.0], [1.0, -1.0]])  # errors (3, 4) and (0, 0)
    e = force_errors(pred, true)
    assert e["force_mae_x"] == 1.5 and e["force_mae_y"] == 2.0 and e["force_mae"] == 1.75
    assert e["force_rmse_x"] == pytest.approx(np.sqrt(4.5))
    assert e["force_rmse_y"] == pytest.approx(np.sqrt(8.0))
    assert e["force_rmse"] == pytest.approx(np.sqrt(25.0 / 4))
    assert e["force_vector_mae"] == 2.5 and e["force_vector_rmse"] == pytest.approx(np.sqrt(12.5))
    assert e["force_median_ae"] == 1.5  # median of (3, 4, 0, 0)
    with pytest.raises(MdkerasError, match=r"expected two \(S, 2\) arrays"):
        force_errors(np.zeros((3, 3)), np.zeros((3, 3)))


def _linear_gas(potential, window, grid, samples, seed):
    """Poisson grids and forces exactly linear in them, with the cell-centre kernel."""
    rng = np.random.default_rng(seed)
    grids = rng.poisson(0.05, (samples, grid, grid)).astype(np.uint8)
    forces = cell_centre_forces(grids, potential, window)
    config = np.arange(samples) // 100
    return grids, forces, config


def test_force_baselines_recover_an_exactly_linear_force():
    grids, forces, config = _linear_gas("coulomb", 5.0, 16, 4_000, 0)
    tr, te = slice(0, 3_000), slice(3_000, None)
    b = force_baselines(
        grids[tr],
        forces[tr],
        config[tr],
        grids[te],
        forces[te],
        potential="coulomb",
        window=5.0,
        seed=0,
    )
    assert b["zero"] == force_errors(np.zeros_like(forces[te]), forces[te])
    assert b["cell_centre_force"]["force_mae"] == 0.0  # the forces are the cell-centre ones
    assert b["linear_predictor"]["force_rmse"] < 1e-6 * b["zero"]["force_rmse"]
    assert b["zero"]["force_mae"] > 0.1


def test_force_baselines_without_a_fittable_kernel_say_why():
    grids, forces, config = _linear_gas("coulomb", 5.0, 16, 400, 1)
    kwargs = dict(potential="coulomb", window=5.0, seed=0)
    b = force_baselines(grids, forces, config, grids, forces, **kwargs)
    assert b["linear_predictor"] is None and "use more samples" in b["linear_predictor_reason"]
    b = force_baselines(grids, forces, config, grids, forces, linear=False, **kwargs)
    assert b["linear_predictor"] is None and "linear=False" in b["linear_predictor_reason"]
