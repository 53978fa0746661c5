"""Feed a split to Keras through `tf.data`: shuffle with an explicit seed, batch, prefetch.

Grids stay uint8 in memory and become float32 `(n, n, 1)` per batch. With `augment=True` each
sample gets a random D4 element (seeded), applied to the grid here and to the labels by
choosing the column of precomputed labels (`labels[name]` of shape `(S, 8)`: the class of the
transformed, re-encoded force), so encoding happens once, in NumPy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _grid_images(grids: tf.Tensor) -> tf.Tensor:
    """All 8 D4 images of a batch of grids `(B, n, n)`, stacked `(8, B, n, n)`.

    Matches `mdkeras.symmetry.transform_grids`: element k rotates by `np.rot90(D, -(k % 4))`
    and then, for k >= 4, reverses the columns.
    """
    out = []
    g = grids
    for _ in range(4):
        out.append(g)
        g = tf.reverse(tf.transpose(g, [0, 2, 1]), axis=[2])  # np.rot90(., -1) on the last two axes
    return tf.stack(out + [tf.reverse(x, axis=[2]) for x in out])


def make_dataset(
    grids: np.ndarray,
    labels: dict[str, np.ndarray],
    *,
    batch_size: int = 128,
    shuffle_seed: int | None = None,
    augment_seed: int | None = None,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `(grid float32 (B, n, n, 1), {name: int32 (B,)})`
    (float labels, a force head's targets, stay float: float32 `(B, 2)`).

    Args:
        grids: `(S, n, n)` uint8 counts.
        labels: output name -> int classes `(S,)`, or `(S, 8)` per D4 element when augmenting;
            float targets `(S, 2)`, or `(S, 8, 2)` when augmenting.
        shuffle_seed: shuffle every epoch with this seed; `None` keeps the order (evaluation).
        augment_seed: draw a random D4 element per sample with this seed; `None` = no augmentation.
    """
    ds = tf.data.Dataset.from_tensor_slices((grids, labels))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(grids), seed=shuffle_seed, reshuffle_each_iteration=True)
    if augment_seed is not None:
        ks = tf.data.Dataset.random(seed=augment_seed).map(lambda r: tf.cast(r % 8, tf.int32))
        ds = tf.data.Dataset.zip((ds, ks)).batch(batch_size).map(_augment_batch)
    else:
        ds = ds.batch(batch_size).map(_to_model)
    return ds.prefetch(tf.data.AUTOTUNE)


def _to_model(grids, labels):
    """Grids to float32 `(B, n, n, 1)`; class labels to int32, float targets (a force head's
    `(B, 2)` forces) to float32."""
    x = tf.expand_dims(tf.cast(grids, tf.float32), -1)
    return x, {
        name: tf.cast(y, tf.float32 if y.dtype.is_floating else tf.int32)
        for name, y in labels.items()
    }


def _augment_batch(batch, k):
    grids, labels = batch
    index = tf.stack([k, tf.range(tf.shape(k)[0])], axis=1)
    images = tf.gather_nd(_grid_images(grids), index)
    picked = {name: tf.gather(y, k, axis=1, batch_dims=1) for name, y in labels.items()}
    return _to_model(images, picked)
