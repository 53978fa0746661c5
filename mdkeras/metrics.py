"""The paper's metric, its companions and the baselines (SPEC §6), on `(S, 2)` class arrays.

Baselines answer "compared with what?": `majority` (chance), `cell_centre` (a physics oracle
that puts each counted neighbour at its cell centre) and `bayes_limit` (the best joint accuracy
any model can reach from the counts alone, by Monte Carlo over positions within the cells).
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.descriptors import sum_forces
from mdkeras.potentials import force_on_target


def joint_index(classes: np.ndarray, k: int) -> np.ndarray:
    """Joint class `cx * K + cy` of `(..., 2)` classes."""
    classes = np.asarray(classes)
    return classes[..., 0] * k + classes[..., 1]


def classification_metrics(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """`joint_accuracy` (the paper's metric), `accuracy_x`, `accuracy_y`, `joint_within_one`."""
    true, pred = np.asarray(true), np.asarray(pred)
    hit = true == pred
    near = np.abs(true - pred) <= 1
    return {
        "joint_accuracy": float(np.mean(hit.all(axis=1))),
        "accuracy_x": float(np.mean(hit[:, 0])),
        "accuracy_y": float(np.mean(hit[:, 1])),
        "joint_within_one": float(np.mean(near.all(axis=1))),
    }


def confusion_matrix(true: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """`(K, K)` counts, rows the true class, columns the predicted one, of one component."""
    return np.bincount(np.asarray(true) * k + np.asarray(pred), minlength=k * k).reshape(k, k)


def force_mae(encoder, pred: np.ndarray, true_forces: np.ndarray) -> float:
    """Mean absolute error of the decoded forces against the true float64 forces (both
    components)."""
    return float(np.mean(np.abs(encoder.decode(pred) - true_forces)))


def majority(train_classes: np.ndarray, test_classes: np.ndarray, k: int) -> float:
    """Joint accuracy of always predicting the most frequent training `(cx, cy)` pair."""
    mode = np.bincount(joint_index(train_classes, k), minlength=k * k).argmax()
    return float(np.mean(joint_index(test_classes, k) == mode))


def cell_centre_kernel(potential: str, window: float, grid: int) -> np.ndarray:
    """Force `(n, n, 2)` on the target from one neighbour at the centre of each cell `[iy, ix]`."""
    h = window / grid
    c = (np.arange(grid) + 0.5) * h - 0.5 * window
    d = np.stack(np.meshgrid(c, c, indexing="xy"), axis=-1)  # d[iy, ix] = (c[ix], c[iy])
    return force_on_target(potential, d)


def cell_centre_forces(grids: np.ndarray, potential: str, window: float) -> np.ndarray:
    """Window forces `(S, 2)` with every counted neighbour moved to its cell's centre."""
    kernel = cell_centre_kernel(potential, window, grids.shape[-1])
    return np.einsum("sij,ijc->sc", grids.astype(np.float64), kernel)


BAYES_SAMPLES = 50_000  # score every test sample up to this, so fraction_of_bayes is paired
BAYES_DRAWS = 256  # position realisations per descriptor (SPEC's default M)


def bayes_limit(
    grids: np.ndarray,
    true_classes: np.ndarray,
    encoder,
    *,
    potential: str,
    window: float,
    draws: int = BAYES_DRAWS,
    seed: int = 0,
    chunk: int = 128,
) -> tuple[float, float]:
    """Monte-Carlo estimate of the best joint accuracy any model can reach from the counts.

    For the uniform sampler, given the counts the neighbours are iid uniform in their cells. For
    each descriptor, draw `draws` position realisations, encode each window force, and predict
    the most frequent joint class; score that classifier against the *true* labels.

    Returns:
        `(accuracy, standard_error)` over the `len(grids)` samples.
    """
    rng = np.random.default_rng(seed)
    k = encoder.classes
    n = grids.shape[-1]
    h = window / n
    truth = joint_index(true_classes, k)
    hits = 0
    for lo in range(0, len(grids), chunk):
        g = grids[lo : lo + chunk]
        s, iy, ix = np.nonzero(g)
        reps = g[s, iy, ix].astype(np.int64)
        owner = np.repeat(s, reps)  # one entry per counted neighbour
        x0 = np.repeat(ix, reps) * h - 0.5 * window  # lower-left corner of each one's cell
        y0 = np.repeat(iy, reps) * h - 0.5 * window
        dx = (x0 + h * rng.random((draws, len(owner)))).ravel()  # (M * P,)
        dy = (y0 + h * rng.random((draws, len(owner)))).ravel()
        slot = (np.arange(draws)[:, None] * len(g) + owner[None]).ravel()
        f = sum_forces(potential, slot, dx, dy, draws * len(g)).reshape(draws, len(g), 2)
        votes = joint_index(encoder.encode(f), k)  # (M, chunk)
        tally = np.zeros((len(g), k * k), dtype=np.int64)
        np.add.at(tally, (np.broadcast_to(np.arange(len(g)), votes.shape), votes), 1)
        hits += int(np.sum(tally.argmax(axis=1) == truth[lo : lo + chunk]))
    p = hits / len(grids)
    return p, math.sqrt(p * (1.0 - p) / len(grids))
