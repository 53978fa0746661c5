"""Train one case at one scale and seed, evaluate it, and return its result record (SPEC §6–7).

Plain Keras: `model.fit` on the `tf.data` pipeline with Adam 1e-3, batch 128, cross-entropy,
early stopping on the *validation* joint accuracy (restoring the best weights), seeded and
deterministic on CPU. The record holds the metrics, the baselines, the history and provenance.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from mdkeras.config import Case, Scale
from mdkeras.datasets import DatasetSpec, load_or_build
from mdkeras.encoding import make_encoder
from mdkeras.errors import MdkerasError
from mdkeras.metrics import (
    BAYES_DRAWS,
    BAYES_SAMPLES,
    bayes_limit,
    cell_centre_forces,
    classification_metrics,
    confusion_matrix,
    force_mae,
    joint_index,
    majority,
)
from mdkeras.models import build_model, check_grid
from mdkeras.pipeline import make_dataset
from mdkeras.potentials import f_max
from mdkeras.provenance import provenance
from mdkeras.symmetry import all_transforms

RECORD_FORMAT_VERSION = 1
LEARNING_RATE = 1e-3
BATCH_SIZE = 128


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained beyond the shared Adam(1e-3), batch 128: an optional
    learning-rate cut on validation plateaus and a floor under the scale's early-stopping
    patience (so the cuts get epochs to work)."""

    plateau_factor: float | None = None  # multiply the rate by this after a plateau; None: never
    plateau_patience: int = 1  # epochs without a better validation joint accuracy
    min_learning_rate: float = 1e-6
    min_stop_patience: int = 0

    def stop_patience(self, scale: Scale) -> int | None:
        """The early-stopping patience at `scale` (None: the scale does not stop early)."""
        return max(scale.patience, self.min_stop_patience) if scale.patience else None

    def callbacks(self) -> list:
        if self.plateau_factor is None:
            return []
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_joint_accuracy",
                mode="max",
                factor=self.plateau_factor,
                patience=self.plateau_patience,
                min_lr=self.min_learning_rate,
            )
        ]


# LeNet and AlexNet train as in the paper, at a constant rate. forcemap is a near-linear map
# whose weights span decades: at a constant rate it stalls at the cell-centre accuracy, and
# cutting the rate on plateaus takes it to the Bayes limit (README, "Recovering the potential").
RECIPES = {
    "lenet": Recipe(),
    "alexnet": Recipe(),
    "forcemap": Recipe(plateau_factor=0.3, plateau_patience=1, min_stop_patience=4),
}


def fit_encoder(case: Case, train_forces: np.ndarray):
    """The case's encoder, fitted on the training forces only."""
    fm = f_max(case.potential, case.window / case.grid) if case.encoding == "paper" else None
    return make_encoder(case.encoding, classes=case.classes, f_max=fm).fit(train_forces)


def head_labels(case: Case, classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-output labels from `(..., 2)` classes: `fx`/`fy`, or `joint = cx * K + cy`."""
    if case.head == "joint":
        return {"joint": joint_index(classes, case.classes)}
    return {"fx": classes[..., 0], "fy": classes[..., 1]}


def predict_classes(model, ds, case: Case) -> np.ndarray:
    """`(S, 2)` predicted classes of a model on an unshuffled dataset."""
    out = model.predict(ds, verbose=0)
    if case.head == "joint":
        joint = np.argmax(out["joint"], axis=-1)
        return np.stack([joint // case.classes, joint % case.classes], axis=1)
    return np.stack([np.argmax(out["fx"], axis=-1), np.argmax(out["fy"], axis=-1)], axis=1)


def run_case(
    case: Case,
    scale: Scale,
    seed: int,
    *,
    cache_dir=None,
    verbose: int = 1,
    deterministic: bool = True,
    mixed_precision: bool = False,
    xla: bool = False,
) -> dict:
    """Build or load the dataset, train, evaluate, compute the baselines; return the record.

    The dataset, the initial weights, the shuffling and the augmentation all derive from `seed`.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise MdkerasError(f"seed={seed!r} is not allowed: expected an integer >= 0.")
    if deterministic and (mixed_precision or xla):
        raise MdkerasError(
            "mixed precision and XLA are not deterministic: pass deterministic=False "
            "(--no-determinism) to use them."
        )
    check_grid(case.architecture, case.grid)
    wall0 = time.perf_counter()
    n_samples = scale.samples
    spec = DatasetSpec(case.potential, case.density, case.window, case.grid, n_samples, seed)
    data = load_or_build(spec, cache_dir=cache_dir, progress=verbose > 0)
    dataset_seconds = time.perf_counter() - wall0
    idx = data.split_indices()
    grids = {k: data.grids[v] for k, v in idx.items()}
    forces = {k: data.forces[v] for k, v in idx.items()}
    encoder = fit_encoder(case, forces["train"])
    classes = {k: encoder.encode(v) for k, v in forces.items()}

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if case.augment:
        train_labels = head_labels(case, encoder.encode(all_transforms(forces["train"])))
        train_ds = make_dataset(
            grids["train"],
            train_labels,
            batch_size=BATCH_SIZE,
            shuffle_seed=seed,
            augment_seed=seed + 1,
        )
    else:
        train_ds = make_dataset(
            grids["train"],
            head_labels(case, classes["train"]),
            batch_size=BATCH_SIZE,
            shuffle_seed=seed,
        )
    val_ds = make_dataset(grids["val"], head_labels(case, classes["val"]), batch_size=512)
    test_ds = make_dataset(grids["test"], head_labels(case, classes["test"]), batch_size=512)

    policy = keras.mixed_precision.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model = build_model(case.architecture, case.grid, case.classes, case.head)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={name: "sparse_categorical_crossentropy" for name in model.output_names},
        metrics={name: ["accuracy"] for name in model.output_names},
        jit_compile=bool(xla),  # off by default: XLA has no deterministic MaxPool gradient
    )
    recipe = RECIPES[case.architecture]
    patience = recipe.stop_patience(scale)
    recorder = EpochRecorder(val_ds, classes["val"], case)
    callbacks = [recorder, keras.callbacks.TerminateOnNaN(), *recipe.callbacks()]
    if patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_joint_accuracy",
                mode="max",
                patience=patience,
                restore_best_weights=True,
            )
        )
    if verbose:
        print(
            f"{case.name} scale={scale.name} seed={seed}: {len(grids['train'])} train, "
            f"{len(grids['val'])} val, {len(grids['test'])} test samples; "
            f"{model.count_params():,} parameters",
            file=sys.stderr,
            flush=True,
        )
    t0 = time.perf_counter()
    model.fit(
        train_ds,
        epochs=scale.max_epochs,
        callbacks=callbacks,
        shuffle=False,
        verbose=(1 if sys.stdout.isatty() else 2) if verbose else 0,
    )
    train_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    pred = predict_classes(model, test_ds, case)
    eval_seconds = time.perf_counter() - t0
    metrics = classification_metrics(classes["test"], pred)
    metrics["force_mae"] = force_mae(encoder, pred, forces["test"])

    t0 = time.perf_counter()
    nb = min(BAYES_SAMPLES, len(grids["test"]))
    bayes, bayes_se = bayes_limit(
        grids["test"][:nb],
        classes["test"][:nb],
        encoder,
        potential=case.potential,
        window=case.window,
        draws=BAYES_DRAWS,
        seed=seed,
    )
    baselines = {
        "majority": majority(classes["train"], classes["test"], case.classes),
        "cell_centre": classification_metrics(
            classes["test"],
            encoder.encode(cell_centre_forces(grids["test"], case.potential, case.window)),
        )["joint_accuracy"],
        "bayes_limit": bayes,
        "bayes_limit_se": bayes_se,
        "bayes_samples": nb,
        "bayes_draws": BAYES_DRAWS,
    }
    baseline_seconds = time.perf_counter() - t0
    history = recorder.history
    epochs_run = len(history)
    val = [h["val_joint_accuracy"] for h in history]
    best_epoch = int(np.argmax(val)) + 1 if (patience and val) else epochs_run
    n_train = len(grids["train"])
    record = {
        "format_version": RECORD_FORMAT_VERSION,
        "status": "ok",
        "case_name": case.name,
        "case": case.to_dict(),
        "scale": scale.name,
        "seed": int(seed),
        "samples": n_samples,
        "max_epochs": scale.max_epochs,
        "training": {
            "optimizer": "adam",
            "learning_rate": LEARNING_RATE,
            "batch_size": BATCH_SIZE,
            "stop_patience": patience,
            **asdict(recipe),
        },
        "split_sizes": {k: len(v) for k, v in grids.items()},
        "metrics": metrics,
        "baselines": baselines,
        "fraction_of_bayes": metrics["joint_accuracy"] / bayes if bayes > 0 else None,
        "paper_reference": case.paper_reference,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "terminated_on_nan": any(not math.isfinite(h["loss"]) for h in history),
        "history": history,
        "confusion": {  # [true class][predicted class] counts on the test split
            axis: confusion_matrix(classes["test"][:, c], pred[:, c], case.classes).tolist()
            for c, axis in enumerate(("x", "y"))
        },
        "class_histogram": {  # training-split class counts per component
            axis: np.bincount(classes["train"][:, c], minlength=case.classes).tolist()
            for c, axis in enumerate(("x", "y"))
        },
        "encoder": encoder.state(),
        "parameters": int(model.count_params()),
        "dataset_key": spec.key(),
        "timing": {
            "dataset_seconds": dataset_seconds,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "baseline_seconds": baseline_seconds,
            "samples_per_second": n_train * epochs_run / train_seconds if train_seconds else None,
            "wall_seconds": time.perf_counter() - wall0,
        },
        "provenance": {
            **provenance(),
            "deterministic": deterministic,
            "mixed_precision": mixed_precision,
            "xla": xla,
        },
    }
    if verbose:
        print(
            f"{case.name} seed={seed}: joint accuracy {metrics['joint_accuracy']:.4f} "
            f"(majority {baselines['majority']:.4f}, cell centre {baselines['cell_centre']:.4f}, "
            f"Bayes limit {bayes:.4f} ± {bayes_se:.4f}), best epoch {best_epoch}/{epochs_run}",
            file=sys.stderr,
            flush=True,
        )
    keras.backend.clear_session()
    return record


class EpochRecorder(keras.callbacks.Callback):
    """Adds `val_joint_accuracy` to the epoch logs (for early stopping) and keeps a history row
    per epoch: losses, accuracies, validation joint accuracy, seconds."""

    def __init__(self, val_ds, val_classes: np.ndarray, case: Case):
        super().__init__()
        self.val_ds, self.val_classes, self.case = val_ds, val_classes, case
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self._t0
        pred = predict_classes(self.model, self.val_ds, self.case)
        logs["val_joint_accuracy"] = float(np.mean((pred == self.val_classes).all(axis=1)))
        row = {"epoch": epoch + 1, "seconds": seconds}
        row.update({k: float(v) for k, v in logs.items()})
        row["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        self.history.append(row)
