"""Train one case at one scale and seed, evaluate it, and return its result record (SPEC §6–7).

Plain Keras: `model.fit` on the `tf.data` pipeline with Adam 1e-3, batch 128, cross-entropy,
early stopping on the *validation* joint accuracy (restoring the best weights), seeded and
deterministic on CPU. `run_case` is the list of steps below: load the splits and the encoder,
build the pipelines, build and compile the model, fit it (the architecture's recipe), evaluate
it on the test split, compute the baselines, and build the record (`mdkeras.records`).

A `force` head (`Case.head`) regresses the raw window force instead: targets in physical units,
a Huber loss whose delta is `FORCE_HUBER_DELTA` robust force scales (`force_scale` of the
training forces, baked into the model's output), early stopping on the validation Huber loss,
and the test split's force errors beside the zero force, the cell-centre force and the
recovered kernel's linear predictor (`mdkeras.metrics.force_baselines`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from mdkeras.architectures import BATCH_SIZE, LEARNING_RATE, check_grid, get_architecture
from mdkeras.checks import check_int
from mdkeras.config import Case, Scale
from mdkeras.datasets import DatasetSpec, load_or_build
from mdkeras.encoding import fit_encoder
from mdkeras.errors import MdkerasError
from mdkeras.lazy import resolve
from mdkeras.metrics import (
    baselines,
    classification_metrics,
    collapse,
    confusion_matrix,
    force_baselines,
    force_errors,
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

# The force head's robust loss: Huber, quadratic within FORCE_HUBER_DELTA robust force scales
# (`force_scale`: the robust sd of one force component, 1.4826 * median |F|), linear beyond, so
# the heavy tail of near-overlap forces (uniform LJ: up to 1e20 and more) pulls no harder than
# a force one scale off. Targets are clipped to +-FORCE_TARGET_CLIP scales (float32-safe: LJ
# overlaps overflow float32); beyond the delta the clip leaves the loss's gradient unchanged.
FORCE_HUBER_DELTA = 1.0
FORCE_TARGET_CLIP = 1e6
ROBUST_SD = 1.4826  # sd / MAD of a normal distribution

__all__ = [
    "BATCH_SIZE",
    "FORCE_HUBER_DELTA",
    "LEARNING_RATE",
    "RECORD_FORMAT_VERSION",
    "compile_model",
    "force_scale",
    "model_path",
    "run_case",
]


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
    model_dir: str | os.PathLike | None = None,
) -> dict:
    """Build or load the dataset, train, evaluate, compute the baselines; return the record.

    The dataset, the initial weights, the shuffling and the augmentation all derive from `seed`.
    A capped scale (smoke) cuts the splits to the architecture's smoke budget. With `model_dir`,
    the trained model is also saved there as `model_path(model_dir, case, scale, seed)`
    (`<case>--<scale>--seed<k>.keras`, the record's name with `.keras`: beside the record when
    `model_dir` is the records' directory) and the record's `model_file` names it.
    """
    check_options(case, seed, deterministic=deterministic, mixed_precision=mixed_precision, xla=xla)
    wall0 = time.perf_counter()
    splits = load_splits(case, scale, seed, cache_dir=cache_dir, progress=verbose > 0)
    dataset_seconds = time.perf_counter() - wall0
    if not get_architecture(case.architecture).network:
        return _run_physics_case(
            case, scale, seed, splits, wall0=wall0, cache_dir=cache_dir, verbose=verbose
        )
    if case.head == "force":
        return _run_force_case(
            case,
            scale,
            seed,
            splits,
            wall0=wall0,
            dataset_seconds=dataset_seconds,
            verbose=verbose,
            deterministic=deterministic,
            mixed_precision=mixed_precision,
            xla=xla,
            model_dir=model_dir,
        )

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
    metrics, base, baseline_seconds = score_classes(case, splits, seed, pred)

    timing = _timing(fit, wall0, dataset_seconds, eval_seconds, baseline_seconds)
    options = {"deterministic": deterministic, "mixed_precision": mixed_precision, "xla": xla}
    record = build_record(
        case, scale, seed, splits, fit, model, pred, metrics, base, timing, options
    )
    if model_dir is not None:
        record["model_file"] = save_model(model, model_path(model_dir, case, scale, seed)).name
    if verbose:
        _report(case, seed, metrics, base, record)
    if not (scale.reuse_models and not mixed_precision):
        keras.backend.clear_session()
    return record


def _run_force_case(
    case: Case,
    scale: Scale,
    seed: int,
    splits: Splits,
    *,
    wall0: float,
    dataset_seconds: float,
    verbose: int,
    deterministic: bool,
    mixed_precision: bool,
    xla: bool,
    model_dir,
) -> dict:
    """`run_case`'s steps 2-7 for a `force` head: regress the forces, score force errors."""
    unit = force_scale(splits.forces["train"])
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    pipes = make_pipelines(case, splits, seed, force_unit=unit)
    model = new_model(case, mixed_precision=mixed_precision, force_scale=unit)
    reuse = scale.reuse_models and not mixed_precision
    model = compiled_model(model, case, xla=xla) if reuse else compile_model(model, xla=xla)
    if verbose:
        _announce(case, scale, seed, splits, model)
    fit = fit_model(model, case, scale, pipes, splits, verbose=verbose)

    t0 = time.perf_counter()
    pred = predict_forces(model, pipes.test)
    eval_seconds = time.perf_counter() - t0
    metrics = force_errors(pred, splits.forces["test"])
    metrics.update(top_class_share=None, collapsed=None)  # class rules: not for a regression

    t0 = time.perf_counter()
    base = force_baselines(
        splits.grids["train"],
        splits.forces["train"],
        splits.config["train"],
        splits.grids["test"],
        splits.forces["test"],
        potential=case.potential,
        window=case.window,
        seed=seed,
    )
    baseline_seconds = time.perf_counter() - t0
    timing = _timing(fit, wall0, dataset_seconds, eval_seconds, baseline_seconds)
    training = {
        **_training_fields(fit, splits, scale),
        "loss": "huber",
        "force_scale": unit,
        "huber_delta": FORCE_HUBER_DELTA * unit,
        "huber_delta_in_force_scales": FORCE_HUBER_DELTA,
        "target_clip": FORCE_TARGET_CLIP * unit,
        "monitor": fit.monitor,
    }
    options = {"deterministic": deterministic, "mixed_precision": mixed_precision, "xla": xla}
    record = _fitted_record(
        case, scale, seed, splits, fit, model, metrics, base, training, timing, options
    )
    if model_dir is not None:
        record["model_file"] = save_model(model, model_path(model_dir, case, scale, seed)).name
    if verbose:
        _report_force(case, seed, metrics, base, record)
    if not reuse:
        keras.backend.clear_session()
    return record


def _run_physics_case(
    case: Case, scale: Scale, seed: int, splits: Splits, *, wall0: float, cache_dir, verbose: int
) -> dict:
    """`run_case`'s steps for a model that is not a network (`recovered`): fit it on the
    training split (the architecture's `runner`), predict the test split, score the baselines,
    build the record; its own section (the fit, the paired comparisons) is `record[arch]`."""
    arch = get_architecture(case.architecture)
    reason = arch.too_few_samples(scale, case.grid)
    if reason is not None:
        raise MdkerasError(f"{case.name} cannot run: {reason}; use a larger scale or --samples.")
    dataset_seconds = time.perf_counter() - wall0
    data = load_or_build(splits.spec, cache_dir=cache_dir, progress=False)

    def say(message: str) -> None:
        if verbose:
            print(f"{case.name} seed={seed}: {message}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    model = resolve(arch.runner)(data, seed=seed, progress=say)
    fit_seconds = time.perf_counter() - t0
    say(f"fitted {model.method}: " + ", ".join(f"{k} = {v:.5g}" for k, v in model.params.items()))
    t0 = time.perf_counter()
    pred, section = model.evaluate(
        splits.grids["test"], splits.classes["test"], splits.encoder, seed=seed
    )
    eval_seconds = time.perf_counter() - t0
    metrics, base, baseline_seconds = score_classes(case, splits, seed, pred)
    record = build_run_record(
        case,
        scale,
        seed,
        metrics=metrics,
        baselines=base,
        history=[],
        best_epoch=0,
        training={"fitted": "the training split", "method": model.method},
        split_sizes={name: len(g) for name, g in splits.grids.items()},
        **_class_fields(splits, pred, case.classes),
        parameters=len(model.params),
        dataset_key=splits.spec.key(),
        timing={
            "dataset_seconds": dataset_seconds,
            "train_seconds": fit_seconds,
            "eval_seconds": eval_seconds,
            "baseline_seconds": baseline_seconds,
            "samples_per_second": None,
            "wall_seconds": time.perf_counter() - wall0,
        },
        provenance={**provenance(), "deterministic": True, "mixed_precision": False, "xla": False},
    )
    record[arch.name] = section
    if verbose:
        _report(case, seed, metrics, base, record)
    return record


def _timing(fit, wall0: float, dataset: float, evaluation: float, baseline: float) -> dict:
    """The record's `timing`: seconds per step, training throughput, wall time since `wall0`."""
    return {
        "dataset_seconds": dataset,
        "train_seconds": fit.seconds,
        "eval_seconds": evaluation,
        "baseline_seconds": baseline,
        "samples_per_second": fit.samples * len(fit.history) / fit.seconds if fit.seconds else None,
        "wall_seconds": time.perf_counter() - wall0,
    }


def force_scale(forces: np.ndarray) -> float:
    """The force head's unit: the robust sd of one force component, `1.4826 * median |F|` over
    both components of the training forces `(S, 2)` (their centre is 0 by symmetry), so the
    near-overlap tail cannot set it. Raises if it is not a positive finite number."""
    forces = np.asarray(forces, dtype=np.float64)
    scale = ROBUST_SD * float(np.median(np.abs(forces))) if forces.size else 0.0
    if not (np.isfinite(scale) and scale > 0):
        raise MdkerasError(
            f"the training forces' robust scale is {scale!r}: expected a finite number > 0 "
            "(most training forces are zero?); use more samples or another setting."
        )
    return scale


def force_targets(forces: np.ndarray, unit: float) -> np.ndarray:
    """Float32 training targets: the forces in physical units, clipped to
    `+-FORCE_TARGET_CLIP * unit` (beyond the Huber delta that changes the loss, not its
    gradient)."""
    bound = FORCE_TARGET_CLIP * unit
    return np.clip(np.asarray(forces, dtype=np.float64), -bound, bound).astype(np.float32)


def model_path(model_dir: str | os.PathLike, case: Case, scale: Scale, seed: int) -> Path:
    """`{model_dir}/{case}--{scale}--seed{seed}.keras`: the run record's name, `.keras`."""
    return Path(model_dir) / f"{case.name}--{scale.name}--seed{seed}.keras"


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """`model.save` to `path` (`.keras`) atomically: into a temporary file beside it, then
    `os.replace`. Load it with `mdkeras.models.load_force_model` (or `keras.saving.load_model`
    after importing `mdkeras.models`, which registers the custom layers)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise MdkerasError(f"model path {path} is not allowed: expected a name ending in .keras.")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".keras")
        os.close(fd)
        model.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise MdkerasError(
            f"cannot write model {path} ({e.strerror or type(e).__name__}): choose a writable "
            "directory with free space."
        ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


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
    split, the encoder fitted on the training forces, the dataset's spec, the cap a capped
    scale put on every split (None: whole splits) and each sample's configuration id."""

    spec: DatasetSpec
    grids: dict[str, np.ndarray]
    forces: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]
    encoder: object
    cap: int | None = None
    config: dict[str, np.ndarray] | None = None


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
    config = {k: data.config[v] for k, v in idx.items()}
    return Splits(spec, grids, forces, classes, encoder, cap, config)


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


def make_pipelines(
    case: Case, splits: Splits, seed: int, *, force_unit: float | None = None
) -> Pipelines:
    """Step 2: `tf.data` pipelines; training shuffles (and augments) with seeds from `seed`;
    validation and test keep their order. A `force` head's labels are `{"force": (S, 2)}`
    float32 forces (`force_targets` with `force_unit`), not classes."""
    grids, classes = splits.grids, splits.classes
    if case.head == "force":
        if force_unit is None:
            raise MdkerasError("head 'force' needs force_unit: pass force_scale(train forces).")
        forces = splits.forces["train"]
        forces = all_transforms(forces) if case.augmented else forces  # (S, 8, 2) augmenting
        train = make_dataset(
            grids["train"],
            {"force": force_targets(forces, force_unit)},
            batch_size=BATCH_SIZE,
            shuffle_seed=seed,
            augment_seed=seed + 1 if case.augmented else None,
        )
        val, test = (
            make_dataset(
                grids[k],
                {"force": force_targets(splits.forces[k], force_unit)},
                batch_size=EVAL_BATCH_SIZE,
            )
            for k in ("val", "test")
        )
        return Pipelines(train, val, test)
    if case.augmented:
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


def new_model(
    case: Case, *, mixed_precision: bool = False, force_scale: float = 1.0
) -> keras.Model:
    """Step 3a: the case's uncompiled model (float16 compute under `mixed_precision`);
    `force_scale` is a `force` head's output unit (`build_model`)."""
    policy = keras.mixed_precision.dtype_policy()
    if mixed_precision:
        keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        return build_model(
            case.architecture, case.grid, case.classes, case.head, force_scale=force_scale
        )
    finally:
        keras.mixed_precision.set_dtype_policy(policy)


def compile_model(model: keras.Model, *, xla: bool = False) -> keras.Model:
    """Step 3b: compile as every case trains: Adam(`LEARNING_RATE`), cross-entropy and accuracy
    per output; a `force` head: Huber with delta `FORCE_HUBER_DELTA` times its output unit
    (`_force_unit`), no metrics. XLA is off by default: it has no deterministic MaxPool
    gradient."""
    if "force" in model.output_names:
        delta = FORCE_HUBER_DELTA * _force_unit(model)
        model.compile(
            optimizer=keras.optimizers.Adam(LEARNING_RATE),
            loss={"force": keras.losses.Huber(delta=delta)},
            jit_compile=bool(xla),
        )
        return model
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss={name: "sparse_categorical_crossentropy" for name in model.output_names},
        metrics={name: ["accuracy"] for name in model.output_names},
        jit_compile=bool(xla),
    )
    return model


def _force_unit(model: keras.Model) -> float:
    """A `force` model's output unit: the scale of its `force` Rescaling layer."""
    return float(model.get_layer("force").scale)


_COMPILED: dict[tuple, keras.Model] = {}  # model shape -> compiled model (`compiled_model`)


def compiled_model(fresh: keras.Model, case: Case, *, xla: bool = False) -> keras.Model:
    """Step 3b at `Scale.reuse_models`: this process's compiled model of `fresh`'s shape, with
    every variable of `fresh` (weights and dropout seed states) copied in and the optimizer
    reset, so it trains exactly as `fresh` would, without tracing its steps again."""
    key = (case.architecture, case.grid, case.classes, case.head, xla)
    if case.head == "force":  # the unit (output scale, Huber delta) is traced into the steps
        key += (_force_unit(fresh),)
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
    monitor: str = "val_joint_accuracy"  # what early stopping and the recipe watch
    mode: str = "max"

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights the model kept (the last one without early stopping)."""
        val = [h[self.monitor] for h in self.history]
        pick = np.argmax if self.mode == "max" else np.argmin
        return int(pick(val)) + 1 if (self.patience and val) else len(self.history)


def fit_model(
    model, case: Case, scale: Scale, pipes: Pipelines, splits: Splits, *, verbose: int = 1
) -> Fit:
    """Step 4: `model.fit` for `scale.max_epochs` with the architecture's recipe, early stopping
    on the validation joint accuracy (a `force` head: the validation Huber loss) where the scale
    has a patience."""
    recipe = get_architecture(case.architecture).recipe
    patience = recipe.stop_patience(scale)
    if case.head == "force":
        recorder = ForceEpochRecorder(pipes.val, splits.forces["val"], _force_unit(model))
        monitor, mode = "val_force_huber", "min"
    else:
        recorder = EpochRecorder(pipes.val, splits.classes["val"], case)
        monitor, mode = "val_joint_accuracy", "max"
    # Keras runs callbacks in list order at each epoch end: the recorder comes first because it
    # writes `monitor` into the epoch logs that the recipe's ReduceLROnPlateau and
    # EarlyStopping then read (after it, they would see last epoch's value or none at all).
    callbacks = [recorder, keras.callbacks.TerminateOnNaN(), *recipe.callbacks(monitor, mode)]
    if patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor,
                mode=mode,
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
    samples = len(splits.grids["train"])
    return Fit(recorder.history, patience, recipe, samples, seconds, monitor, mode)


def predict_classes(model, ds, case: Case) -> np.ndarray:
    """`(S, 2)` predicted classes of a model on an unshuffled dataset."""
    out = model.predict(ds, verbose=0)
    if case.head == "joint":
        joint = np.argmax(out["joint"], axis=-1)
        return np.stack([joint // case.classes, joint % case.classes], axis=1)
    return np.stack([np.argmax(out["fx"], axis=-1), np.argmax(out["fy"], axis=-1)], axis=1)


def predict_forces(model, ds) -> np.ndarray:
    """`(S, 2)` float64 forces of a `force`-head model on an unshuffled dataset."""
    return np.asarray(model.predict(ds, verbose=0)["force"], dtype=np.float64)


def evaluate(pred: np.ndarray, splits: Splits) -> dict:
    """Step 5: test-split metrics of the predicted classes `(S, 2)`: the classification
    metrics, and the decoded force's mean (`force_mae`) and median (`force_median_ae`, robust to
    LJ's near-overlap forces) absolute errors."""
    true_forces = splits.forces["test"]
    metrics = classification_metrics(splits.classes["test"], pred)
    metrics["force_mae"] = force_mae(splits.encoder, pred, true_forces)
    metrics["force_median_ae"] = force_median_ae(splits.encoder, pred, true_forces)
    return metrics


def score_classes(case: Case, splits: Splits, seed: int, pred: np.ndarray):
    """Steps 5-6 for the predicted test classes `(S, 2)` of any class-head model: its metrics
    (`evaluate`, and the did-not-learn rule), the baselines and the seconds they took."""
    metrics = evaluate(pred, splits)
    t0 = time.perf_counter()
    base = case_baselines(case, splits, seed)
    seconds = time.perf_counter() - t0
    metrics.update(collapse(pred, case.classes, metrics["joint_accuracy"], base["majority"]))
    return metrics, base, seconds


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
    training = _training_fields(fit, splits, scale)
    return _fitted_record(
        case,
        scale,
        seed,
        splits,
        fit,
        model,
        metrics,
        base,
        training,
        timing,
        options,
        **_class_fields(splits, pred, case.classes),
    )


def _class_fields(splits: Splits, pred: np.ndarray, k: int) -> dict:
    """A class head's record fields: the test split's confusion matrices ([true class][predicted
    class] counts per component), the training split's class counts, the encoder's state."""
    test, train = splits.classes["test"], splits.classes["train"]
    return {
        "confusion": {
            axis: confusion_matrix(test[:, c], pred[:, c], k).tolist()
            for c, axis in enumerate(("x", "y"))
        },
        "class_histogram": {
            axis: np.bincount(train[:, c], minlength=k).tolist()
            for c, axis in enumerate(("x", "y"))
        },
        "encoder": splits.encoder.state(),
    }


def _fitted_record(
    case, scale, seed, splits, fit, model, metrics, base, training, timing, options, **classes
) -> dict:
    """`build_run_record` of a fitted case, the fields every head shares filled in; `classes`:
    `confusion`, `class_histogram`, `encoder` (None each for the force head)."""
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
        confusion=classes.get("confusion"),
        class_histogram=classes.get("class_histogram"),
        encoder=classes.get("encoder"),
        parameters=int(model.count_params()),
        dataset_key=splits.spec.key(),
        timing=timing,
        provenance={**provenance(), **options},
    )


def _training_fields(fit: Fit, splits: Splits, scale: Scale) -> dict:
    """The record's `training`: optimizer, rate, batch, patience, the recipe, and the smoke cap
    and model reuse where they applied."""
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
    return training


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
    epochs = f"best epoch {record['best_epoch']}/{record['epochs_run']}"
    print(
        f"{case.name} seed={seed}: joint accuracy {metrics['joint_accuracy']:.4f} "
        f"(majority {base['majority']:.4f}, cell centre {base['cell_centre']:.4f}, "
        f"{bayes_text}), {epochs if record['epochs_run'] else 'no training'}{learned}",
        file=sys.stderr,
        flush=True,
    )


def _report_force(case, seed, metrics, base, record) -> None:
    linear = base.get("linear_predictor")
    linear_text = f", linear predictor {linear['force_mae']:.4g}" if linear else ""
    print(
        f"{case.name} seed={seed}: force MAE {metrics['force_mae']:.4g}, RMSE "
        f"{metrics['force_rmse']:.4g} (zero force {base['zero']['force_mae']:.4g}, cell centre "
        f"{base['cell_centre_force']['force_mae']:.4g}{linear_text}), best epoch "
        f"{record['best_epoch']}/{record['epochs_run']}",
        file=sys.stderr,
        flush=True,
    )


def huber(err: np.ndarray, delta: float) -> np.ndarray:
    """Elementwise Huber loss of errors `err`: `err² / 2` within `delta`, linear beyond (as
    `keras.losses.Huber` before its mean)."""
    a = np.abs(err)
    return np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))


class ForceEpochRecorder(keras.callbacks.Callback):
    """A `force` head's `EpochRecorder`: adds to the epoch logs the validation Huber loss in
    force units (`val_force_huber`: errors over the unit, delta `FORCE_HUBER_DELTA`, targets
    clipped as in training), the validation force MAE and median absolute error, and keeps a
    history row per epoch."""

    def __init__(self, val_ds, val_forces: np.ndarray, unit: float):
        super().__init__()
        self.val_ds, self.val_forces, self.unit = val_ds, val_forces, float(unit)
        self.history: list[dict] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        seconds = time.perf_counter() - self._t0
        pred = predict_forces(self.model, self.val_ds)
        err = (pred - force_targets(self.val_forces, self.unit)) / self.unit
        logs["val_force_huber"] = float(np.mean(huber(err, FORCE_HUBER_DELTA)))
        errors = force_errors(pred, self.val_forces)
        logs["val_force_mae"] = errors["force_mae"]
        logs["val_force_median_ae"] = errors["force_median_ae"]
        row = {"epoch": epoch + 1, "seconds": seconds}
        row.update({k: float(v) for k, v in logs.items()})
        row["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        self.history.append(row)


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
