"""The paper's metric, its companions and the baselines (SPEC §6), on `(S, 2)` class arrays.

Baselines answer "compared with what?": `majority` (chance), `cell_centre` (a physics oracle
that puts each counted neighbour at its cell centre) and `bayes_limit` (the best joint accuracy
any model can reach from the counts alone, by Monte Carlo over positions within the cells);
`baselines` computes all of them for one split. `collapse` is the one "did not learn" rule.
A `force`-head model is scored by `force_errors` (MAE, RMSE) beside `force_baselines` (zero
force, the cell-centre force, the recovered kernel's linear predictor).
"""

from __future__ import annotations

import math

import numpy as np

from mdkeras.descriptors import sum_forces
from mdkeras.errors import MdkerasError
from mdkeras.potentials import force_on_target
from mdkeras.records import did_not_learn


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
    components). For LJ on the uniform gas it is dominated by near-overlap forces (10²²+)."""
    return float(np.mean(np.abs(encoder.decode(pred) - true_forces)))


def force_median_ae(encoder, pred: np.ndarray, true_forces: np.ndarray) -> float:
    """Median absolute error of the decoded force components (both pooled) against the true
    float64 forces: the robust force error, which a few near-overlap forces cannot dominate
    (meaningful for LJ, where `force_mae` is not)."""
    return float(np.median(np.abs(encoder.decode(pred) - true_forces)))


def force_errors(pred_forces: np.ndarray, true_forces: np.ndarray) -> dict[str, float]:
    """Regression metrics of predicted forces `(S, 2)` against the true ones `(S, 2)` (force
    units, float64): `force_mae` / `force_rmse` over both components pooled, `_x` / `_y` per
    component, `force_vector_mae` / `force_vector_rmse` of the error vector's length `|ΔF|`,
    and `force_median_ae` (pooled components; robust to uniform LJ's near-overlap forces)."""
    err = np.asarray(pred_forces, dtype=np.float64) - np.asarray(true_forces, dtype=np.float64)
    if err.ndim != 2 or err.shape[1] != 2 or not len(err):
        raise MdkerasError(
            f"forces of shape {np.shape(pred_forces)} against {np.shape(true_forces)} are not "
            "allowed: expected two (S, 2) arrays with S >= 1."
        )
    a = np.abs(err)
    length = np.hypot(err[:, 0], err[:, 1])
    out = {
        "force_mae": float(np.mean(a)),
        "force_rmse": float(np.sqrt(np.mean(err * err))),
        "force_median_ae": float(np.median(a)),
        "force_vector_mae": float(np.mean(length)),
        "force_vector_rmse": float(np.sqrt(np.mean(length * length))),
    }
    for c, axis in enumerate("xy"):
        out[f"force_mae_{axis}"] = float(np.mean(a[:, c]))
        out[f"force_rmse_{axis}"] = float(np.sqrt(np.mean(err[:, c] ** 2)))
    return out


LINEAR_BOOTSTRAP = 2  # the kernel's bootstrap replicates: only the kernel is used, not its errors


def force_baselines(
    train_grids: np.ndarray,
    train_forces: np.ndarray,
    train_config: np.ndarray,
    test_grids: np.ndarray,
    test_forces: np.ndarray,
    *,
    potential: str,
    window: float,
    seed: int,
    linear: bool = True,
) -> dict:
    """The force-regression baselines of one test split, each as `force_errors`: `zero` (always
    predict no force), `cell_centre_force` (`cell_centre_forces`, the physics oracle; named
    apart from the class baselines' `cell_centre` accuracy) and, with
    `linear`, `linear_predictor` (`mdkeras.recovery`'s kernel fitted on the training split by
    least squares, completed at the touching cells, applied to the test grids). A kernel that
    cannot be fitted (too few training samples with the touching cells empty) gives None and
    `linear_predictor_reason`; without `linear` it is None with its reason too.
    """
    from mdkeras.recovery.kernel import fit_kernel, linear_forces, predictor_kernel

    out = {
        "zero": force_errors(np.zeros_like(test_forces, dtype=np.float64), test_forces),
        "cell_centre_force": force_errors(
            cell_centre_forces(test_grids, potential, window), test_forces
        ),
    }
    if not linear:
        out.update(linear_predictor=None, linear_predictor_reason="not computed (linear=False)")
        return out
    try:
        fit = fit_kernel(
            train_grids, train_forces, train_config, window, bootstrap=LINEAR_BOOTSTRAP, seed=seed
        )
    except MdkerasError as e:
        out.update(linear_predictor=None, linear_predictor_reason=str(e))
        return out
    kernel = predictor_kernel(fit, train_grids, train_forces)
    out["linear_predictor"] = force_errors(linear_forces(test_grids, kernel), test_forces)
    return out


def collapse(pred: np.ndarray, k: int, joint_accuracy: float, majority_accuracy: float) -> dict:
    """The "did not learn" rule (`mdkeras.records.did_not_learn`) on `(S, 2)` predicted test
    classes of `k` classes per component.

    `top_class_share` is the share of test samples given the single most frequent predicted
    joint class; `collapsed` is true when that share is >= `records.COLLAPSE_SHARE` (0.9) or the
    joint accuracy does not exceed the majority baseline (the model is no better than chance).
    """
    joint = joint_index(np.asarray(pred), k)
    share = float(np.bincount(joint, minlength=k * k).max() / len(joint)) if len(joint) else 1.0
    return {
        "top_class_share": share,
        "collapsed": did_not_learn(joint_accuracy, majority_accuracy, share),
    }


def majority(train_classes: np.ndarray, test_classes: np.ndarray, k: int) -> float:
    """Joint accuracy of always predicting the most frequent training `(cx, cy)` pair."""
    mode = np.bincount(joint_index(train_classes, k), minlength=k * k).argmax()
    return float(np.mean(joint_index(test_classes, k) == mode))


def cell_centre_kernel(potential: str, window: float, grid: int) -> np.ndarray:
    """Force `(n, n, 2)` on the target from one neighbour at the centre of each cell `[iy, ix]`."""
    h = window / grid
    c = (np.arange(grid) + 0.5) * h - 0.5 * window
    d = np.stack(np.meshgrid(c, c, indexing="xy"), axis=-1)  # d[iy, ix] = (c[ix], c[iy])
    kernel = force_on_target(potential, d)
    if grid % 2:  # odd n: the middle cell's centre is the target itself; by symmetry, no force
        kernel[grid // 2, grid // 2] = 0.0
    return kernel


def cell_centre_forces(grids: np.ndarray, potential: str, window: float) -> np.ndarray:
    """Window forces `(S, 2)` with every counted neighbour moved to its cell's centre."""
    kernel = cell_centre_kernel(potential, window, grids.shape[-1])
    return np.einsum("sij,ijc->sc", grids.astype(np.float64), kernel)


NOT_UNIFORM_IN_CELLS = (
    "given the counts, this sampler's neighbours are not iid uniform in their cells, so the "
    "uniform-gas Monte Carlo is a baseline classifier (uniform_bayes), not the Bayes limit"
)
BAYES_SAMPLES = 50_000  # score every test sample up to this, so fraction_of_bayes is paired
BAYES_DRAWS = 256  # position realisations per descriptor (SPEC's default M)


def monte_carlo_classes(
    grids: np.ndarray,
    encoder,
    *,
    potential: str,
    window: float,
    draws: int = BAYES_DRAWS,
    seed: int = 0,
    force_over_r=None,
    chunk: int = 128,
) -> np.ndarray:
    """The most frequent joint class `(S,)` of each descriptor's window force over `draws`
    realisations of its neighbours, iid uniform within their cells.

    The pair force is the potential's, or `force_over_r` (`f(r)/r` as a function of `r^2`,
    e.g. a recovered model's). The draws depend only on `seed`, the grids, `draws` and `chunk`,
    never on the force: two calls with the same arguments but different forces are paired
    (common random numbers), so their accuracies differ only where the forces' votes do.
    """
    rng = np.random.default_rng(seed)
    k = encoder.classes
    n = grids.shape[-1]
    h = window / n
    out = np.empty(len(grids), dtype=np.int64)
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
        f = sum_forces(potential, slot, dx, dy, draws * len(g), force_over_r=force_over_r)
        votes = joint_index(encoder.encode(f.reshape(draws, len(g), 2)), k)  # (M, chunk)
        tally = np.zeros((len(g), k * k), dtype=np.int64)
        np.add.at(tally, (np.broadcast_to(np.arange(len(g)), votes.shape), votes), 1)
        out[lo : lo + len(g)] = tally.argmax(axis=1)
    return out


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
    the most frequent joint class (`monte_carlo_classes`); score that classifier against the
    *true* labels.

    Returns:
        `(accuracy, standard_error)` over the `len(grids)` samples.
    """
    pred = monte_carlo_classes(
        grids, encoder, potential=potential, window=window, draws=draws, seed=seed, chunk=chunk
    )
    p = float(np.mean(pred == joint_index(true_classes, encoder.classes)))
    return p, math.sqrt(p * (1.0 - p) / len(grids))


def baselines(
    train_classes: np.ndarray,
    test_classes: np.ndarray,
    test_grids: np.ndarray,
    encoder,
    *,
    potential: str,
    window: float,
    seed: int,
    bayes: bool = True,
    uniform_in_cells: bool = True,
) -> dict:
    """The baselines of one test split (SPEC §6), the same for a trained model and a recovery.

    `majority` and `cell_centre` joint accuracies; with `bayes`, the Monte Carlo of
    `bayes_limit` and its standard error over the first `bayes_samples` (up to `BAYES_SAMPLES`)
    test samples with `bayes_draws` draws each, seeded with `seed`. It is the Bayes limit only
    when, given the counts, neighbours are iid uniform in their cells (the `uniform` sampler);
    otherwise (`uniform_in_cells=False`, SPEC §2b) `bayes_limit` is None with the reason, and
    the same Monte Carlo is reported as the baseline classifier `uniform_bayes`.
    """
    out = {
        "majority": majority(train_classes, test_classes, encoder.classes),
        "cell_centre": classification_metrics(
            test_classes, encoder.encode(cell_centre_forces(test_grids, potential, window))
        )["joint_accuracy"],
    }
    if bayes:
        nb = min(BAYES_SAMPLES, len(test_grids))
        p, se = bayes_limit(
            test_grids[:nb],
            test_classes[:nb],
            encoder,
            potential=potential,
            window=window,
            draws=BAYES_DRAWS,
            seed=seed,
        )
        if uniform_in_cells:
            out.update(bayes_limit=p, bayes_limit_se=se)
        else:
            out.update(
                bayes_limit=None,
                bayes_limit_se=None,
                bayes_limit_reason=NOT_UNIFORM_IN_CELLS,
                uniform_bayes=p,
                uniform_bayes_se=se,
            )
        out.update(bayes_samples=nb, bayes_draws=BAYES_DRAWS)
    return out
