"""The tf.data pipeline: batches, seeded shuffling, and D4 augmentation consistent with physics."""

import numpy as np

from mdkeras.descriptors import featurize
from mdkeras.encoding import make_encoder
from mdkeras.pipeline import make_dataset
from mdkeras.potentials import f_max
from mdkeras.symmetry import all_transforms, transform_vectors


def _batches(ds):
    return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]


def test_batches_have_model_shapes_and_keep_order_without_shuffle():
    grids = np.arange(10 * 4 * 4, dtype=np.uint8).reshape(10, 4, 4)
    out = _batches(make_dataset(grids, {"fx": np.arange(10)}, batch_size=4))
    assert [x.shape for x, _ in out] == [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
    assert out[0][0].dtype == np.float32
    np.testing.assert_array_equal(np.concatenate([y["fx"] for _, y in out]), np.arange(10))
    np.testing.assert_array_equal(out[0][0][..., 0], grids[:4])


def test_shuffle_is_seeded():
    grids = np.zeros((50, 4, 4), dtype=np.uint8)
    labels = {"fx": np.arange(50)}

    def order(seed):
        return np.concatenate(
            [y["fx"] for _, y in _batches(make_dataset(grids, labels, shuffle_seed=seed))]
        )

    assert (order(1) == order(1)).all()
    assert not (order(1) == order(2)).all()
    assert sorted(order(1)) == list(range(50))


def test_augmentation_matches_featurize_of_transformed_positions():
    # Each augmented sample must be exactly what featurize gives for the positions transformed by
    # the drawn D4 element, with the label of the transformed force re-encoded.
    rng = np.random.default_rng(0)
    box, window, n = 25.0, 6.0, 16
    positions = rng.uniform(0, box, size=(300, 2))
    targets = np.arange(40)
    grids, forces = featurize(positions, box, targets, potential="coulomb", window=window, grid=n)
    enc = make_encoder("paper", classes=10, f_max=f_max("coulomb", 4 * window / n)).fit(forces)
    labels = enc.encode(all_transforms(forces))  # (S, 8, 2)
    which = np.tile(np.arange(8), (len(grids), 1))  # reveals the drawn element
    ds = make_dataset(
        grids,
        {"fx": labels[..., 0], "fy": labels[..., 1], "k": which},
        batch_size=16,
        augment_seed=3,
    )
    xs, fx, fy, ks = [], [], [], []
    for x, y in _batches(ds):
        xs.append(x[..., 0])
        fx.append(y["fx"])
        fy.append(y["fy"])
        ks.append(y["k"])
    xs, fx, fy, ks = map(np.concatenate, (xs, fx, fy, ks))
    assert len(set(ks.tolist())) > 4  # several elements were drawn
    for k in range(8):
        g_k, f_k = featurize(
            transform_vectors(positions, k),
            box,
            targets,
            potential="coulomb",
            window=window,
            grid=n,
        )
        np.testing.assert_allclose(f_k, transform_vectors(forces, k), rtol=1e-9, atol=1e-12)
        sel = ks == k
        np.testing.assert_array_equal(xs[sel], g_k[sel])
        np.testing.assert_array_equal(np.stack([fx[sel], fy[sel]], 1), enc.encode(f_k[sel]))
