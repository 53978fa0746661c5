"""Metrics and baselines on hand-made data (SPEC §6)."""

import numpy as np
import pytest

from mdkeras.descriptors import featurize
from mdkeras.encoding import make_encoder
from mdkeras.metrics import (
    bayes_limit,
    cell_centre_forces,
    cell_centre_kernel,
    classification_metrics,
    force_mae,
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
