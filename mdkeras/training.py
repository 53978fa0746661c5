"""Train one case at one scale and seed, evaluate it, and return its result record (SPEC §6–7).

Plain Keras: `model.fit` on the `tf.data` pipeline with Adam 1e-3, batch 128, cross-entropy,
early stopping on the *validation* joint accuracy (restoring the best weights), seeded and
deterministic on CPU. `run_case` is the list of steps below: load the splits and the encoder,
build the pipelines, build and compile the model, fit it (the architecture's recipe), evaluate
it on the test split, compute the baselines, and build the record (`mdkeras.records`).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import keras
import numpy as np
import tensorflow as tf

from mdkeras.architectures import BATCH_SIZE, LEARNING_RATE, check_grid, get_architecture
from mdkeras.checks import check_int
from mdkeras.config import Case, Scale
from mdkeras.datasets import DatasetSpec, load_or_build
from mdkeras.encoding import fit_encoder
from mdkeras.errors import MdkerasError
from mdkeras.metrics import (
    baselines,
    classification_metrics,
    collapse,
    confusion_matrix,
    force_mae,
    force_median_ae,
    joint_index,
)
from mdkeras.models import build_model
from mdkeras.pipeline import make_dataset
from mdkeras.provenance import provenance
from mdkeras.records import RUN_FORMAT_VERSION, build_run_record
from mdkeras.sampling import get_sampler
from mdkeras.symmetry import all_transforms

RECORD_FORMAT_VERSION = RUN_FORMAT_VERSION  # the run record's format (`mdkeras.records`)
EVAL_BATCH_SIZE = 512

__all__ = ["BATCH_SIZE", "LEARNING_RATE", "RECORD_FORMAT_VERSION", "compile_model", "run_case"]


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
    A capped scale (smoke) cuts the splits to the architecture's smoke budget.
    """
    check_options(case, seed, deterministic=deterministic, mixed_precision=mixed_precision, xla=xla)
    wall0 = time.perf_counter()
    splits = load_splits(case, scale, seed, cache_dir=cache_dir, progress=verbose > 0)
    dataset_seconds = time.perf_counter() - wall0

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    pipes = make_pipelines(case, splits, seed)
    model = new_model(case, mixed_precision=mixed_precision)
    if scale.reuse_models and not mixed_precision:  # loss scaling has state of its own
        model = compiled_model(model, case, xla=xla)
    else:
        model = compile_model(model, xla=xla)
    if verbose:
        _announce(case, scale, seed, splits, model)
    fit = fit_model(model, case, scale, pipes, splits, verbose=verbose)

    t0 = time.perf_counter()
    pred = predict_classes(model, pipes.test, case)
    eval_seconds = time.perf_counter() - t0
    metrics = evaluate(pred, splits)

    t0 = time.perf_counter()
    base = case_baselines(case, splits, seed)
    baseline_seconds = time.perf_counter() - t0
    metrics.update(collapse(pred, case.classes, metrics["joint_accuracy"], base["majority"]))

    timing = {
        "dataset_seconds": dataset_seconds,
        "train_seconds": fit.seconds,
        "eval_seconds": eval_seconds,
        "baseline_seconds": baseline_seconds,
        "samples_per_second": fit.samples * len(fit.history) / fit.seconds if fit.seconds else None,
        "wall_seconds": time.perf_counter() - wall0,
    }
    options = {"deterministic": deterministic, "mixed_precision": mixed_precision, "xla": xla}
    record = build_record(
        case, scale, seed, splits, fit, model, pred, metrics, base, timing, options
    )
    if verbose:
        _report(case, seed, metrics, base, record)
    if not (scale.reuse_models and not mixed_precision):
        keras.backend.clear_session()
    return record


# --- the steps ---------------------------------------------------------------------------------


def check_options(case: Case, seed, *, deterministic: bool, mixed_precision: bool, xla: bool):
    """Reject a bad seed, a non-deterministic speed option under determinism, or a grid too
    small for the architecture, before any work."""
    check_int("seed", seed, min=0)
    if deterministic and (mixed_precision or xla):
        raise MdkerasError(
            "mixed precision and XLA are not deterministic: pass deterministic=False "
            "(--no-determinism) to use them."
        )
    check_grid(case.architecture, case.grid)


@dataclass
class Splits:
    """A case's dataset cut into `train`/`val`/`test`: grids, float64 forces and classes per
    split, the encoder fitted on the training forces, the dataset's spec, and the cap a capped
    scale put on every split (None: whole splits)."""

    spec: DatasetSpec
    grids: dict[str, np.ndarray]
    forces: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]
    encoder: object
    cap: int | None = None


def load_splits(case: Case, scale: Scale, seed: int, *, cache_dir=None, progress=True) -> Splits:
    """Step 1: the case's dataset at `scale` (cached), the encoder fitted on the training
    split, and the splits (each cut to the architecture's smoke budget at a capped scale)."""
    spec = DatasetSpec(
        case.potential,
        case.density,
        case.window,
        case.grid,
        scale.samples,
        seed,
        sampler=case.sampler,
        temperature=case.temperature,
    )
    data = load_or_build(spec, cache_dir=cache_dir, progress=progress)
    full = data.split_indices()
    encoder = fit_encoder(
        case.encoding,
        potential=case.potential,
        window=case.window,
        grid=case.grid,
        classes=case.classes,
        train_forces=data.forces[full["train"]],
    )
    cap = get_architecture(case.architecture).split_cap(scale, case.grid)
    if cap is not None and all(len(v) <= cap for v in full.values()):
        cap = None  # the budget cuts nothing
    idx = {k: v[:cap] for k, v in full.items()}
    grids = {k: data.grids[v] for k, v in idx.items()}
    forces = {k: data.forces[v] for k, v in idx.items()}
    classes = {k: encoder.encode(v) for k, v in forces.items()}
    return Splits(spec, grids, forces, classes, encoder, cap)


def head_labels(case: Case, classes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-output labels from `(..., 2)` classes: `fx`/`fy`, or `joint = cx * K + cy`."""
    if case.head == "joint":
        return {"joint": joint_index(classes, case.classes)}
    return {"fx": classes[..., 0], "fy": classes[..., 1]}


@dataclass
class Pipelines:
    train: tf.data.Dataset
    val: tf.data.Dataset
    test: tf.data.Dataset


def make_pipelines(case: Case, splits: Splits, seed: int) -> Pipelines:
    """Step 2: `tf.data` pipelines; training shuffles (and augments) with seeds from `seed`;
    validation and test keep their order."""
    grids, classes = splits.grids, splits.classes
    if case.augment:
        forces = splits.forces["train"]
        train_labels = head_labels(case, splits.encoder.encode(all_transforms(forces)))
        train = make_dataset(
            grids["train"],
            train_labels,
            batch_size=BATCH_SIZE,
            shuffle_seed=seed,
            augment_seed=seed + 1,
        )
    else:
        train = make_dataset(
            grids["train"],
            head_labels(case, classes["train"]),
            batch_size=BATCH_SIZE,
            shuffle_seed=seed,
        )
    val, test = (
        make_dataset(grids[k], head_labels(case, classes[k]), batch_size=EVAL_BATCH_SIZE)
        for k in ("val", "test")
    )
    return Pipelines(train, val, test)


def new_model(case: Case, *, mixed_precision: bool = False) -> keras.Model:
    """Step 3a: the case's uncompiled model (float16 compute under `mixed_precision`)."""
    policy = keras.mixed_precision.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        return build_model(case.architecture, case.grid, case.classes, case.head)
    finally:
        keras.mixed_precision.set_dtype_policy(policy)


def compile_model(model: keras.Model, *, xla: bool = False) -> keras.Model:
    """Step 3b: compile as every case trains: Adam(`LEARNING_RATE`), cross-entropy and accuracy
    per output. XLA is off by default: it has no deterministic MaxPool gradient."""
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={name: "sparse_categorical_crossentropy" for name in model.output_names},
        metrics={name: ["accuracy"] for name in model.output_names},
        jit_compile=bool(xla),
    )
    return model


_COMPILED: dict[tuple, keras.Model] = {}  # model shape -> compiled model (`compiled_model`)


def compiled_model(fresh: keras.Model, case: Case, *, xla: bool = False) -> keras.Model:
    """Step 3b at `Scale.reuse_models`: this process's compiled model of `fresh`'s shape, with
    every variable of `fresh` (weights and dropout seed states) copied in and the optimizer
    reset, so it trains exactly as `fresh` would, without tracing its steps again."""
    key = (case.architecture, case.grid, case.classes, case.head, xla)
    model = _COMPILED.get(key)
    if model is None:
        _COMPILED[key] = model = compile_model(fresh, xla=xla)
        return model
    for target, source in zip(model.variables, fresh.variables, strict=True):
        target.assign(source)
    for variable in model.optimizer.variables:  # step count and Adam moments
        variable.assign(tf.zeros_like(variable))
    model.optimizer.learning_rate.assign(LEARNING_RATE)
    return model


@dataclass
class Fit:
    """What training left: the per-epoch history, the early-stopping patience (None: none) and
    the recipe it followed, and the seconds `model.fit` took."""

    history: list[dict]
    patience: int | None
    recipe: object
    samples: int  # training samples fitted per epoch
    seconds: float

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights the model kept (the last one without early stopping)."""
        val = [h["val_joint_accuracy"] for h in self.history]
        return int(np.argmax(val)) + 1 if (self.patience and val) else len(self.history)


def fit_model(
    model, case: Case, scale: Scale, pipes: Pipelines, splits: Splits, *, verbose: int = 1
) -> Fit:
    """Step 4: `model.fit` for `scale.max_epochs` with the architecture's recipe, early stopping
    on the validation joint accuracy where the scale has a patience."""
    recipe = get_architecture(case.architecture).recipe
    patience = recipe.stop_patience(scale)
    recorder = EpochRecorder(pipes.val, splits.classes["val"], case)
    # Keras runs callbacks in list order at each epoch end: EpochRecorder comes first because it
    # writes `val_joint_accuracy` into the epoch logs that the recipe's ReduceLROnPlateau and
    # EarlyStopping then read (after it, they would see last epoch's value or none at all).
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
    t0 = time.perf_counter()
    model.fit(
        pipes.train,
        epochs=scale.max_epochs,
        callbacks=callbacks,
        shuffle=False,
        verbose=(1 if sys.stdout.isatty() else 2) if verbose else 0,
    )
    seconds = time.perf_counter() - t0
    return Fit(recorder.history, patience, recipe, len(splits.grids["train"]), seconds)


def predict_classes(model, ds, case: Case) -> np.ndarray:
    """`(S, 2)` predicted classes of a model on an unshuffled dataset."""
    out = model.predict(ds, verbose=0)
    if case.head == "joint":
        joint = np.argmax(out["joint"], axis=-1)
        return np.stack([joint // case.classes, joint % case.classes], axis=1)
    return np.stack([np.argmax(out["fx"], axis=-1), np.argmax(out["fy"], axis=-1)], axis=1)


def evaluate(pred: np.ndarray, splits: Splits) -> dict:
    """Step 5: test-split metrics of the predicted classes `(S, 2)`: the classification
    metrics, and the decoded force's mean (`force_mae`) and median (`force_median_ae`, robust to
    LJ's near-overlap forces) absolute errors."""
    true_forces = splits.forces["test"]
    metrics = classification_metrics(splits.classes["test"], pred)
    metrics["force_mae"] = force_mae(splits.encoder, pred, true_forces)
    metrics["force_median_ae"] = force_median_ae(splits.encoder, pred, true_forces)
    return metrics


def case_baselines(case: Case, splits: Splits, seed: int) -> dict:
    """Step 6: `metrics.baselines` on the test split (the Monte Carlo is the Bayes limit only
    for samplers whose neighbours are iid uniform in their cells given the counts, SPEC §2b)."""
    return baselines(
        splits.classes["train"],
        splits.classes["test"],
        splits.grids["test"],
        splits.encoder,
        potential=case.potential,
        window=case.window,
        seed=seed,
        uniform_in_cells=get_sampler(case.sampler).uniform_in_cells,
    )


def build_record(
    case: Case,
    scale: Scale,
    seed: int,
    splits: Splits,
    fit: Fit,
    model,
    pred: np.ndarray,
    metrics: dict,
    base: dict,
    timing: dict,
    options: dict,
) -> dict:
    """Step 7: the run record (`mdkeras.records.build_run_record`) of a fitted, evaluated case;
    `options` are the speed options, kept in the provenance."""
    test, train = splits.classes["test"], splits.classes["train"]
    k = case.classes
    training = {
        "optimizer": "adam",
        "learning_rate": LEARNING_RATE,
        "batch_size": BATCH_SIZE,
        "stop_patience": fit.patience,
        **asdict(fit.recipe),
    }
    if splits.cap is not None:  # a capped (smoke) scale cut the splits to this many samples
        training["split_cap"] = splits.cap
    if scale.reuse_models:
        training["reused_model"] = True
    return build_run_record(
        case,
        scale,
        seed,
        metrics=metrics,
        baselines=base,
        history=fit.history,
        best_epoch=fit.best_epoch,
        training=training,
        split_sizes={name: len(g) for name, g in splits.grids.items()},
        confusion={  # [true class][predicted class] counts on the test split
            axis: confusion_matrix(test[:, c], pred[:, c], k).tolist()
            for c, axis in enumerate(("x", "y"))
        },
        class_histogram={  # training-split class counts per component
            axis: np.bincount(train[:, c], minlength=k).tolist()
            for c, axis in enumerate(("x", "y"))
        },
        encoder=splits.encoder.state(),
        parameters=int(model.count_params()),
        dataset_key=splits.spec.key(),
        timing=timing,
        provenance={**provenance(), **options},
    )


def _announce(case, scale, seed, splits: Splits, model) -> None:
    capped = f" (smoke budget: at most {splits.cap} per split)" if splits.cap else ""
    print(
        f"{case.name} scale={scale.name} seed={seed}: {len(splits.grids['train'])} train, "
        f"{len(splits.grids['val'])} val, {len(splits.grids['test'])} test samples{capped}; "
        f"{model.count_params():,} parameters",
        file=sys.stderr,
        flush=True,
    )


def _report(case, seed, metrics, base, record) -> None:
    if base.get("bayes_limit") is not None:
        bayes_text = f"Bayes limit {base['bayes_limit']:.4f} ± {base['bayes_limit_se']:.4f}"
    else:
        bayes_text = f"uniform-gas Bayes classifier {base['uniform_bayes']:.4f}"
    learned = ", did not learn" if metrics["collapsed"] else ""
    print(
        f"{case.name} seed={seed}: joint accuracy {metrics['joint_accuracy']:.4f} "
        f"(majority {base['majority']:.4f}, cell centre {base['cell_centre']:.4f}, "
        f"{bayes_text}), best epoch {record['best_epoch']}/{record['epochs_run']}{learned}",
        file=sys.stderr,
        flush=True,
    )


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
