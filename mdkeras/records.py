"""The result records: their format versions, builders, validation on load and upgrades.

Four kinds of JSON record, each one file:

- a **run record** (one case at one scale and seed): status "ok" with metrics, baselines,
  history and provenance (`build_run_record`), or status "failed" with a one-line `error`
  (`build_failed_record`);
- a **recovery record** (`"kind": "recovery"`, one physics setting): the recovered pair force
  against the truth (`build_recovery_record`);
- a **simulation record** (`"kind": "simulation"`, one MD run of one force source at one state
  and seed): the run's schedule and its observables (`build_simulation_record`);
- an **energy record** (`"kind": "energy"`, one energy model trained at one MD state, scale and
  seed): its descriptor, data, training history and test force errors (`build_energy_record`).

`load_record` reads one, checks its format version and the type of every field the report and
the plots read, and `upgrade`s it: fields that records written before they existed lack are
filled from what the record holds, or set to None where they cannot be. Readers then need no
fallbacks of their own. Additive fields do not bump a format version; a version is bumped when a
field changes meaning or goes, and `upgrade` then converts the older version.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from mdkeras.checks import check_int
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_write

RUN_FORMAT_VERSION = 1
RECOVERY_FORMAT_VERSION = 1
SIMULATION_FORMAT_VERSION = 1
ENERGY_FORMAT_VERSION = 1
KINDS = ("run", "recovery", "simulation", "energy")
STATUSES = ("ok", "failed")

# "Did not learn": the most frequent predicted joint class covers at least this share of the
# test samples, or the joint accuracy is no better than always predicting the majority class.
COLLAPSE_SHARE = 0.9
LEARNING_RULE = (  # `did_not_learn` in words: when a model did not learn
    f"its most frequent predicted joint class covers ≥ {COLLAPSE_SHARE:.0%} of the test samples, "
    "or its joint accuracy is ≤ the majority baseline"
)

_FIX = "delete the file or re-run its case"


def did_not_learn(joint_accuracy: float, majority: float, top_class_share: float) -> bool:
    """The one rule for a collapsed model (`LEARNING_RULE`), from test-split numbers."""
    return bool(top_class_share >= COLLAPSE_SHARE or joint_accuracy <= majority)


# --- builders --------------------------------------------------------------------------------


def _case_fields(case, scale, seed: int) -> dict:
    return {
        "case_name": case.name,
        "case": case.to_dict(),
        "scale": scale.name,
        "seed": int(seed),
        "samples": scale.samples,
        "max_epochs": scale.max_epochs,
    }


def build_run_record(
    case,
    scale,
    seed: int,
    *,
    metrics: Mapping,
    baselines: Mapping,
    history: list[dict],
    best_epoch: int,
    training: Mapping,
    split_sizes: Mapping,
    confusion: Mapping,
    class_histogram: Mapping,
    encoder: Mapping,
    parameters: int,
    dataset_key: str,
    timing: Mapping,
    provenance: Mapping,
) -> dict:
    """The record of a finished run (status "ok").

    `metrics` are the test-split metrics (`joint_accuracy`, ..., `force_median_ae`, and
    `top_class_share` / `collapsed` from `mdkeras.metrics.collapse`, which applies
    `did_not_learn`; for a `force` head `FORCE_METRICS` instead, from
    `mdkeras.metrics.force_errors`, with `baselines` from `force_baselines` and no confusion,
    histogram or encoder); `fraction_of_bayes`, `paper_reference`, `epochs_run` and
    `terminated_on_nan` are derived here.
    """
    metrics = dict(metrics)
    bayes = baselines.get("bayes_limit")
    return {
        "format_version": RUN_FORMAT_VERSION,
        "kind": "run",
        "status": "ok",
        **_case_fields(case, scale, seed),
        "training": dict(training),
        "split_sizes": dict(split_sizes),
        "metrics": metrics,
        "baselines": dict(baselines),
        "fraction_of_bayes": metrics["joint_accuracy"] / bayes if bayes else None,
        "paper_reference": case.paper_reference,
        "epochs_run": len(history),
        "best_epoch": int(best_epoch),
        "terminated_on_nan": any(not math.isfinite(h["loss"]) for h in history),
        "history": list(history),
        # [true class][predicted class] counts, test split (None: a `force` head, no classes)
        "confusion": _dict_or_none(confusion),
        "class_histogram": _dict_or_none(class_histogram),  # training-split class counts
        "encoder": _dict_or_none(encoder),
        "parameters": int(parameters),
        "dataset_key": dataset_key,
        "timing": dict(timing),
        "provenance": dict(provenance),
    }


def _dict_or_none(value):
    return None if value is None else dict(value)


def build_failed_record(
    case, scale, seed: int, error: BaseException, format_version: int = RUN_FORMAT_VERSION
) -> dict:
    """The record of a run that raised: status "failed" and a one-line `error`."""
    message = " ".join(str(error).split()) or "(no message)"
    return {
        "format_version": format_version,
        "status": "failed",
        **_case_fields(case, scale, seed),
        "paper_reference": case.paper_reference,
        "error": f"{type(error).__name__}: {message}",
        "traceback": "".join(traceback.format_exception(error)),
        "provenance": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def build_recovery_record(
    *,
    setting: str,
    physics: Mapping,
    cases: list[str],
    scale: str,
    samples: int,
    seed: int,
    dataset_key: str,
    summary: Mapping,
    timing: Mapping,
    provenance: Mapping,
) -> dict:
    """The record of one physics setting's recovery: `summary` is `mdkeras.recovery.recover`'s
    (parameters, shells, kernel agreement, scores per encoding)."""
    return {
        "format_version": RECOVERY_FORMAT_VERSION,
        "kind": "recovery",
        "setting": setting,
        "physics": dict(physics),
        "cases": list(cases),
        "scale": scale,
        "samples": int(samples),
        "seed": int(seed),
        "dataset_key": dataset_key,
        **summary,
        "timing": dict(timing),
        "provenance": dict(provenance),
    }


def recovery_stem(record: Mapping) -> str:
    """The file stem of a recovery record: `{setting}--{scale}--seed{seed}`, the scale suffixed
    `-equilibrium` when the equilibrium method made it (`recovery_scale_label`)."""
    return f"{record['setting']}--{recovery_scale_label(record)}--seed{record['seed']}"


def recovery_scale_label(record: Mapping) -> str:
    """A recovery record's scale as its file names show it (`paper`, `paper-s250000`, and
    `paper-equilibrium` for the equilibrium method), so the two methods never share a name."""
    method = record.get("method", "uniform")
    return f"{record['scale']}" + ("" if method == "uniform" else f"-{method}")


def build_simulation_record(
    *,
    state: Mapping,
    source: Mapping,
    seed: int,
    schedule: Mapping,
    observables: Mapping,
    timing: Mapping,
    provenance: Mapping,
) -> dict:
    """The record of one MD run: `state` (potential, density, temperature, particles, name),
    `source` (what moved the particles: its kind, tag and identity), the schedule of steps and
    `mdkeras.simulate.score`'s observables."""
    return {
        "format_version": SIMULATION_FORMAT_VERSION,
        "kind": "simulation",
        "state": dict(state),
        "source": dict(source),
        "seed": int(seed),
        "schedule": dict(schedule),
        "observables": dict(observables),
        "timing": dict(timing),
        "provenance": dict(provenance),
    }


def build_energy_record(**fields) -> dict:
    """The record of one trained energy model (`benchmarks.energy`): `case`, `state`,
    `descriptor` (window, grid, sigma), `architecture`, `parameters`, `scale`, `seed`, `data`,
    `training`, `test` (`mdkeras.energy.score`), `model_file`, `timing`, `provenance`."""
    return {"format_version": ENERGY_FORMAT_VERSION, "kind": "energy", **fields}


# --- writing ---------------------------------------------------------------------------------


def to_json(record: Mapping, *, allow_nan: bool = True) -> str:
    """`record` as indented JSON text (NumPy scalars and arrays allowed)."""
    return json.dumps(record, indent=2, default=_json_default, allow_nan=allow_nan) + "\n"


def write_record(path: str | os.PathLike, record: Mapping, *, allow_nan: bool = True) -> Path:
    """Serialise `record` to JSON and write it atomically (`mdkeras.files.atomic_write`)."""
    try:
        text = to_json(record, allow_nan=allow_nan)
    except (TypeError, ValueError) as e:
        raise MdkerasError(
            f"record for {Path(path).name} is not JSON-serialisable ({e}): "
            "expected plain numbers, strings, lists and dicts."
        ) from None
    return atomic_write(path, text, fix="choose a writable --out with free space")


def _json_default(obj):
    if hasattr(obj, "tolist"):  # NumPy arrays and scalars
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


# --- reading and validation ------------------------------------------------------------------


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in `path`; anything else raises `MdkerasError` naming the file."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MdkerasError(
            f"record {path} is not valid JSON ({e.msg} at line {e.lineno}): {_FIX}."
        ) from None
    except UnicodeDecodeError:
        raise MdkerasError(f"record {path} is not UTF-8 text: {_FIX}.") from None
    except OSError as e:
        raise MdkerasError(f"cannot read record {path} ({e.strerror or e}).") from None
    if not isinstance(record, dict):
        raise MdkerasError(f"record {path} is not a JSON object: {_FIX}.")
    return record


def load_record(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Read, validate and upgrade one record (`kind`, one of `KINDS`: require that kind).

    A record of an unknown format, or whose fields have the wrong type, raises `MdkerasError`
    naming the file and the field.
    """
    path = Path(path)
    record = read_json(path)
    validate(record, path)
    if kind is not None and record_kind(record) != kind:
        raise MdkerasError(
            f"record {path} is a {record_kind(record)} record: expected a {kind} record here."
        )
    return upgrade(record)


def record_kind(record: Mapping) -> str:
    """One of `KINDS` ("run" for run records made before `kind` existed, which have none)."""
    kind = record.get("kind")
    return kind if kind in ("recovery", "simulation", "energy") else "run"


class _Checker:
    """Type checks on one record's fields; the first failure raises naming file and field."""

    def __init__(self, record: Mapping, path):
        self.record, self.path = record, path

    def fail(self, field: str, value, expected: str):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise MdkerasError(
            f"record {self.path}: {field}={shown} is not allowed: expected {expected}; {_FIX}."
        )

    def get(self, field: str, required: bool):
        value = self.record
        for part in field.split("."):
            if not isinstance(value, Mapping) or part not in value:
                if required:
                    raise MdkerasError(
                        f"record {self.path} lacks key {field!r}: expected a record "
                        f"written by `python -m benchmarks`; {_FIX}."
                    )
                return _MISSING
            value = value[part]
        return value

    def check(self, field: str, test, expected: str, *, required=True, nullable=False):
        value = self.get(field, required)
        if value is _MISSING or (nullable and value is None):
            return value
        if not test(value):
            self.fail(field, value, expected)
        return value

    def number(self, field, **kw):
        return self.check(field, _is_number, "a number", **kw)

    def integer(self, field, minimum=None, **kw):
        expected = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        return self.check(field, lambda v: _is_int(v, minimum), expected, **kw)

    def string(self, field, **kw):
        return self.check(field, lambda v: isinstance(v, str) and v != "", "a string", **kw)

    def mapping(self, field, **kw):
        return self.check(field, lambda v: isinstance(v, Mapping), "an object", **kw)


_MISSING = object()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value, minimum=None) -> bool:
    """`checks.check_int`'s rule (integral floats such as 28.0 pass, bools do not)."""
    try:
        check_int("value", value, min=minimum)
    except MdkerasError:
        return False
    return True


RUN_METRICS = (
    "joint_accuracy",
    "accuracy_x",
    "accuracy_y",
    "joint_within_one",
    "force_mae",
    "force_median_ae",
    "top_class_share",
)
RUN_BASELINES = ("majority", "cell_centre", "bayes_limit", "bayes_limit_se")
# A `force` head's test metrics (`mdkeras.metrics.force_errors`) and its baselines (each a
# mapping of the same metrics, or None with a reason).
FORCE_METRICS = (
    "force_mae",
    "force_rmse",
    "force_median_ae",
    "force_vector_mae",
    "force_vector_rmse",
    "force_mae_x",
    "force_mae_y",
    "force_rmse_x",
    "force_rmse_y",
)
FORCE_BASELINES = ("zero", "cell_centre_force", "linear_predictor")


def validate(record: Mapping, path) -> None:
    """Check `record`'s format version and the types of the fields readers use."""
    c = _Checker(record, path)
    kind = record_kind(record)
    current = {
        "run": RUN_FORMAT_VERSION,
        "recovery": RECOVERY_FORMAT_VERSION,
        "simulation": SIMULATION_FORMAT_VERSION,
        "energy": ENERGY_FORMAT_VERSION,
    }[kind]
    c.check(
        "format_version",
        lambda v: _is_int(v) and 1 <= v <= current,
        f"a {kind} record format from 1 to {current} (a newer one needs a newer mdkeras)",
    )
    if kind == "recovery":
        _validate_recovery(c)
    elif kind == "simulation":
        _validate_simulation(c)
    elif kind == "energy":
        _validate_energy(c)
    else:
        _validate_run(c)


def _validate_run(c: _Checker) -> None:
    status = c.check("status", lambda v: v in STATUSES, "'ok' or 'failed'")
    c.string("case_name")
    c.string("scale")
    c.integer("seed", minimum=0)
    c.mapping("case")
    for field in ("potential", "architecture", "encoding"):
        c.string(f"case.{field}")
    for field in ("head", "sampler"):
        c.string(f"case.{field}", required=False)
    c.number("case.density")
    c.number("case.window")
    c.integer("case.grid", minimum=2)
    c.integer("case.classes", minimum=2, required=False)
    c.check("case.augment", lambda v: isinstance(v, bool), "true or false", required=False)
    _check_case_values(c)
    c.integer("samples", minimum=1, required=False, nullable=True)
    c.number("paper_reference", required=False, nullable=True)
    if status == "failed":
        c.string("error", required=False)
        return
    c.mapping("metrics")
    if c.record["case"].get("head") == "force":
        _validate_force_run(c)
    else:
        c.number("metrics.joint_accuracy")
    for m in RUN_METRICS[1:]:
        c.number(f"metrics.{m}", required=False, nullable=True)
    c.check(
        "metrics.collapsed",
        lambda v: isinstance(v, bool),
        "true or false",
        required=False,
        nullable=True,
    )
    c.mapping("baselines")
    for b in RUN_BASELINES:
        c.number(f"baselines.{b}", required=False, nullable=True)
    c.number("fraction_of_bayes", required=False, nullable=True)
    c.integer("epochs_run", minimum=0, required=False, nullable=True)
    c.integer("best_epoch", minimum=0, required=False, nullable=True)
    c.mapping("timing", required=False)
    c.number("timing.train_seconds", required=False, nullable=True)
    c.mapping("provenance", required=False)
    c.string("provenance.device", required=False, nullable=True)
    c.check("history", lambda v: isinstance(v, list), "a list", required=False)
    c.mapping("confusion", required=False, nullable=True)
    c.mapping("class_histogram", required=False, nullable=True)


def _validate_force_run(c: _Checker) -> None:
    """A `force` head's record: regression metrics and baselines instead of class accuracies."""
    for m in FORCE_METRICS:
        c.number(f"metrics.{m}")
    c.mapping("baselines")
    for b in FORCE_BASELINES:
        c.mapping(f"baselines.{b}", nullable=b == "linear_predictor")
        if c.get(f"baselines.{b}", True) is not None:
            for m in FORCE_METRICS:
                c.number(f"baselines.{b}.{m}")
    c.number("training.force_scale")


def _check_case_values(c: _Checker) -> None:
    from mdkeras.config import Case  # a potential's, encoding's, ... allowed values

    try:
        Case.from_dict(c.record["case"])
    except MdkerasError as e:
        raise MdkerasError(
            f"record {c.path} has a case the suite does not know ({str(e).rstrip('.')}): {_FIX}."
        ) from None


def _validate_recovery(c: _Checker) -> None:
    c.string("setting")
    c.mapping("physics")
    c.string("physics.potential")
    c.number("physics.density")
    c.number("physics.window")
    c.integer("physics.grid", minimum=2)
    c.string("scale")
    c.integer("samples", minimum=1)
    c.integer("seed", minimum=0)
    c.mapping("parameters")
    c.mapping("scores", required=False)


def _validate_energy(c: _Checker) -> None:
    c.string("case")
    c.mapping("state")
    c.string("state.potential")
    c.mapping("descriptor")
    for key in ("window", "sigma"):
        c.number(f"descriptor.{key}")
    c.integer("descriptor.grid", minimum=2)
    c.string("architecture")
    c.integer("seed", minimum=0)
    c.mapping("training")
    c.mapping("test")
    for who in ("model", "zero"):
        for key in ("force_mae", "force_rmse"):
            c.number(f"test.{who}.{key}")
    c.string("model_file")


def _validate_simulation(c: _Checker) -> None:
    c.mapping("state")
    c.string("state.name")
    c.string("state.potential")
    c.number("state.density")
    c.number("state.temperature")
    c.integer("state.particles", minimum=2)
    c.mapping("source")
    c.string("source.kind")
    c.string("source.tag")
    c.integer("seed", minimum=0)
    c.mapping("schedule")
    c.number("schedule.timestep")
    c.integer("schedule.steps", minimum=1)
    c.mapping("observables")
    c.mapping("observables.rdf")
    for key in ("r", "g", "g_err"):
        c.check(f"observables.rdf.{key}", lambda v: isinstance(v, list), "a list of numbers")
    for key in ("temperature", "pressure", "true_potential_energy"):
        c.number(f"observables.{key}.mean")
        c.number(f"observables.{key}.sem")
    c.mapping("observables.potential_energy", nullable=True)
    c.number("observables.diffusion.value")
    c.mapping("observables.stability")
    c.check("observables.stability.stable", lambda v: isinstance(v, bool), "true or false")


# --- upgrades --------------------------------------------------------------------------------


def upgrade(record: Mapping) -> dict:
    """`record` (validated) with what readers expect of the current format filled in.

    Run records made before these fields existed get `paper_reference` from their case,
    `samples` from their named scale (None for a `--samples` variant), `fraction_of_bayes` from
    their accuracy and Bayes limit, and `metrics.collapsed` / `metrics.top_class_share` from
    their confusion matrices where those decide it (else None); `metrics.force_median_ae` needs
    the per-sample errors, which old records do not hold: None.
    """
    record = dict(record)
    if record_kind(record) == "recovery":
        record.setdefault("method", "uniform")  # before the equilibrium method existed
    if record_kind(record) in ("recovery", "simulation", "energy"):
        return record
    if "paper_reference" not in record:
        record["paper_reference"] = _paper_reference(record["case"])
    if record.get("samples") is None:
        record["samples"] = _named_scale_samples(record["scale"])
    if record["status"] != "ok":
        return record
    metrics = dict(record["metrics"])
    baselines = record["baselines"]
    record["metrics"] = metrics
    if "fraction_of_bayes" not in record:
        bayes = baselines.get("bayes_limit")
        record["fraction_of_bayes"] = metrics["joint_accuracy"] / bayes if bayes else None
    metrics.setdefault("force_median_ae", None)
    if "top_class_share" not in metrics or "collapsed" not in metrics:
        low, high = top_class_share_bounds(record.get("confusion"))
        share = metrics.get("top_class_share")
        if share is None and low is not None and math.isclose(low, high):
            share = low
        metrics.setdefault("top_class_share", share)
        if "collapsed" not in metrics:
            metrics["collapsed"] = _collapsed(
                metrics["joint_accuracy"], baselines.get("majority"), share, low, high
            )
    return record


def _named_scale_samples(scale: str) -> int | None:
    from mdkeras.config import SCALES

    return SCALES[scale].samples if scale in SCALES else None


def _paper_reference(case: Mapping) -> float | None:
    from mdkeras.config import Case

    return Case.from_dict(case).paper_reference


def top_class_share_bounds(confusion) -> tuple[float | None, float | None]:
    """Bounds on the share of the most frequent predicted joint class, from the per-component
    confusion matrices (`{"x": K×K, "y": K×K}`): the joint share of `(a, b)` lies between
    `p_x(a) + p_y(b) - 1` and `min(p_x(a), p_y(b))`. `(None, None)` without matrices."""
    if not isinstance(confusion, Mapping) or not {"x", "y"} <= set(confusion):
        return None, None
    shares = []
    for axis in ("x", "y"):
        columns = [sum(col) for col in zip(*confusion[axis], strict=True)]
        total = sum(columns)
        if not total:
            return None, None
        shares.append(max(columns) / total)
    px, py = shares
    return max(px + py - 1.0, 0.0), min(px, py)


def _collapsed(joint, majority, share, low, high) -> bool | None:
    """`did_not_learn` where the numbers decide it: True if either half of
    the rule holds for sure, False if neither can, None if an unknown half might."""
    below = None if majority is None else joint <= majority
    if share is not None:
        concentrated = share >= COLLAPSE_SHARE
    elif low is not None and low >= COLLAPSE_SHARE:
        concentrated = True
    elif high is not None and high < COLLAPSE_SHARE:
        concentrated = False
    else:
        concentrated = None
    if below or concentrated:
        return True
    if below is False and concentrated is False:
        return False
    return None
