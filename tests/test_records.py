"""`mdkeras.records` and `mdkeras.files`: builders, validation on load, upgrades of older records,
and the one atomic write. Every committed record under `results/` must load."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks import registry
from mdkeras import files, records
from mdkeras.config import get_scale
from mdkeras.errors import MdkerasError

RESULTS = Path(__file__).resolve().parents[1] / "results"
LJ = "lj-rho0.50-w8-n28-lenet-paper"


def confusion(pred_x, pred_y, k: int = 10) -> dict:
    """Confusion matrices with every true class 0 and the given predicted classes."""
    out = {}
    for axis, pred in (("x", pred_x), ("y", pred_y)):
        m = np.zeros((k, k), dtype=int)
        np.add.at(m, (np.zeros(len(pred), dtype=int), np.asarray(pred)), 1)
        out[axis] = m.tolist()
    return out


def run_record(seed: int = 0, joint: float = 0.7, **metrics) -> dict:
    """A record as `training.run_case` builds it, through `build_run_record`."""
    case = registry.get_case(LJ)
    return records.build_run_record(
        case,
        get_scale("smoke"),
        seed,
        metrics={"joint_accuracy": joint, "force_mae": 1.0, **metrics},
        baselines={"majority": 0.2, "cell_centre": 0.8, "bayes_limit": 0.8, "bayes_limit_se": 0.01},
        history=[{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}],
        best_epoch=2,
        training={"optimizer": "adam"},
        split_sizes={"train": 1440, "val": 160, "test": 400},
        confusion=confusion([4] * 300 + [5] * 100, [4] * 200 + [5] * 200),
        class_histogram={"x": [1] * 10, "y": [1] * 10},
        encoder={"kind": "paper"},
        parameters=np.int64(1234),
        dataset_key="abc",
        timing={"train_seconds": 1.5},
        provenance={"device": "CPU"},
    )


def write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record))
    return path


# --- builders and round trip -------------------------------------------------------------


def test_run_record_round_trips_and_derives_its_fields(tmp_path):
    record = run_record(joint=0.6, top_class_share=0.5, collapsed=False, force_median_ae=0.3)
    assert record["format_version"] == records.RUN_FORMAT_VERSION
    assert record["fraction_of_bayes"] == pytest.approx(0.75)
    assert record["paper_reference"] == 0.71
    assert (record["epochs_run"], record["terminated_on_nan"]) == (2, False)
    path = records.write_record(tmp_path / "r.json", record)
    assert records.load_record(path) == json.loads(records.to_json(record))
    nan = run_record()
    nan["history"] = [{"epoch": 1, "loss": math.nan}]
    rebuilt = records.build_run_record(
        registry.get_case(LJ),
        get_scale("smoke"),
        0,
        **{k: nan[k] for k in ("metrics", "baselines", "history", "best_epoch", "training")},
        **{k: nan[k] for k in ("split_sizes", "confusion", "class_histogram", "encoder")},
        **{k: nan[k] for k in ("parameters", "dataset_key", "timing", "provenance")},
    )
    assert rebuilt["terminated_on_nan"] is True


def test_failed_and_recovery_records_load_as_their_kind(tmp_path):
    case, scale = registry.get_case(LJ), get_scale("ci")
    failed = records.build_failed_record(case, scale, 3, RuntimeError("out of\nmemory"))
    path = records.write_record(tmp_path / "failed.json", failed)
    loaded = records.load_record(path, kind="run")
    assert loaded["status"] == "failed" and loaded["error"] == "RuntimeError: out of memory"
    recovery = records.build_recovery_record(
        setting="lj-rho0.50-w8-n28",
        physics={"potential": "lj", "density": 0.5, "window": 8.0, "grid": 28},
        cases=[LJ],
        scale="paper",
        samples=np.int64(50_000),
        seed=0,
        dataset_key="k",
        summary={"model": "A r^-13 - B r^-7", "parameters": {"A": {"value": 48.0}}},
        timing={},
        provenance={},
    )
    path = records.write_record(tmp_path / "recovery.json", recovery, allow_nan=False)
    assert records.load_record(path, kind="recovery")["parameters"]["A"]["value"] == 48.0
    with pytest.raises(MdkerasError, match="is a recovery record: expected a run record"):
        records.load_record(path, kind="run")


# --- validation on load ------------------------------------------------------------------


def _set(record: dict, field: str, value) -> dict:
    *parents, last = field.split(".")
    target = record
    for part in parents:
        target = target[part]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return record


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("format_version", 999, "format_version=999"),
        ("format_version", "1", "format_version='1'"),
        ("metrics.joint_accuracy", "0.7", "joint_accuracy='0.7' is not allowed: expected a number"),
        ("metrics.joint_accuracy", KeyError, "lacks key 'metrics.joint_accuracy'"),
        ("metrics.force_median_ae", [1], "metrics.force_median_ae=[1]"),
        ("metrics.collapsed", "no", "metrics.collapsed='no'"),
        ("case.potential", KeyError, "lacks key 'case.potential'"),
        ("case.potential", "morse", "case the suite does not know"),
        ("case.grid", 28.5, "case.grid=28.5"),
        ("seed", "zero", "seed='zero' is not allowed: expected an integer >= 0"),
        ("seed", True, "seed=True is not allowed"),
        ("seed", -1, "seed=-1"),
        ("status", "done", "status='done'"),
        ("baselines.majority", "chance", "baselines.majority='chance'"),
        ("baselines", [], "baselines=[] is not allowed: expected an object"),
        ("provenance.device", 3, "provenance.device=3"),
    ],
)
def test_a_bad_field_is_one_error_naming_file_and_field(tmp_path, field, value, words):
    path = write(tmp_path / f"{LJ}--smoke--seed0.json", _set(run_record(), field, value))
    with pytest.raises(MdkerasError) as info:
        records.load_record(path)
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    "text, words", [("{not json", "not valid JSON"), ("[1]", "not a JSON object")]
)
def test_unreadable_record_names_the_file(tmp_path, text, words):
    path = tmp_path / "x.json"
    path.write_text(text)
    with pytest.raises(MdkerasError, match=words) as info:
        records.load_record(path)
    assert str(path) in str(info.value)


def test_recovery_record_of_a_newer_format_is_refused(tmp_path):
    path = write(tmp_path / "r.json", {"kind": "recovery", "format_version": 2})
    with pytest.raises(MdkerasError, match="format from 1 to 1"):
        records.load_record(path)


# --- upgrades ----------------------------------------------------------------------------


def _old(record: dict) -> dict:
    """`record` as records were written before these fields existed."""
    for key in ("paper_reference", "fraction_of_bayes", "samples", "kind"):
        record.pop(key)
    for key in ("collapsed", "top_class_share", "force_median_ae"):
        record["metrics"].pop(key, None)
    return record


def test_upgrade_fills_what_old_records_lack_from_what_they_hold():
    record = records.upgrade(_old(run_record(joint=0.6)))
    assert record["paper_reference"] == 0.71 and record["samples"] == 2_000
    assert record["fraction_of_bayes"] == pytest.approx(0.75)
    m = record["metrics"]
    assert m["force_median_ae"] is None  # needs per-sample errors: not recoverable
    # predicted x: 75 % class 4; y: 50 %: the joint share is at most 0.5 < 0.9, and 0.6 > 0.2
    assert m["top_class_share"] is None and m["collapsed"] is False


@pytest.mark.parametrize(
    "pred_x, pred_y, joint, share, collapsed",
    [
        ([4] * 400, [5] * 400, 0.3, 1.0, True),  # one class for everything: exactly known
        ([4] * 380 + [3] * 20, [5] * 390 + [6] * 10, 0.3, None, True),  # share >= 0.925
        ([4] * 380 + [3] * 20, [5] * 370 + [6] * 30, 0.3, None, None),  # 0.875..0.925: unknown
        ([4] * 200 + [3] * 200, [5] * 400, 0.15, 0.5, True),  # no better than majority (0.2)
    ],
)
def test_upgrade_decides_collapse_only_where_the_confusion_does(
    pred_x, pred_y, joint, share, collapsed
):
    record = _old(run_record(joint=joint))
    record["confusion"] = confusion(pred_x, pred_y)
    m = records.upgrade(record)["metrics"]
    assert m["top_class_share"] == share and m["collapsed"] is collapsed


def test_upgrade_keeps_what_new_records_carry():
    record = run_record(top_class_share=0.95, collapsed=True, force_median_ae=0.25)
    assert records.upgrade(record)["metrics"] == record["metrics"]
    assert records.upgrade(record) == record


def test_share_bounds_hold_for_random_predictions():
    """Brute force: the most frequent joint class's share lies within the bounds the
    per-component confusion matrices give."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, k = int(rng.integers(1, 300)), int(rng.integers(2, 6))
        px = rng.dirichlet(np.full(k, rng.choice([0.1, 1.0, 10.0])))
        x = rng.choice(k, size=n, p=px)
        y = np.where(rng.random(n) < rng.random(), x, rng.integers(0, k, size=n))
        exact = np.bincount(x * k + y).max() / n
        low, high = records.top_class_share_bounds(confusion(x, y, k))
        assert low - 1e-12 <= exact <= high + 1e-12


def test_the_learning_rule():
    assert records.did_not_learn(0.7, 0.2, 0.9) is True  # one class for 90 % of samples
    assert records.did_not_learn(0.2, 0.2, 0.3) is True  # no better than the majority class
    assert records.did_not_learn(0.7, 0.2, 0.899) is False
    assert f"{records.COLLAPSE_SHARE:.0%}" in records.LEARNING_RULE


# --- committed records ---------------------------------------------------------------------


def test_every_committed_record_loads():
    # not a run in progress (`.tasks/`), nor the ignored `results/runs/`, nor `perf --json`'s
    # timings in `results/perf/` (benchmark output, not records)
    skip = ("runs", "perf")
    paths = sorted(
        p
        for p in RESULTS.rglob("*.json")
        if not any(part.startswith(".") or part in skip for part in p.relative_to(RESULTS).parts)
    )
    assert len(paths) >= 90
    kinds = {}
    for path in paths:
        record = records.load_record(path)
        kinds[records.record_kind(record)] = kinds.get(records.record_kind(record), 0) + 1
        if records.record_kind(record) != "run" or record["status"] != "ok":
            continue
        if record["case"].get("head") == "force":  # learned: better than predicting zero force
            zero = record["baselines"]["zero"]
            assert record["metrics"]["force_mae"] < zero["force_mae"], path
            assert record["metrics"]["force_median_ae"] < zero["force_median_ae"], path
        else:
            assert record["metrics"]["collapsed"] is False, path  # every committed model learned
    assert kinds["run"] >= 70 and kinds["recovery"] >= 19


# --- the atomic write ----------------------------------------------------------------------


def test_atomic_write_text_and_bytes_leave_no_temp_files(tmp_path):
    path = tmp_path / "a.txt"
    assert files.atomic_write(path, "ρ = 0.5\n") == path
    assert path.read_text(encoding="utf-8") == "ρ = 0.5\n"
    files.atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_unwritable_path_is_one_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    for path in (blocker / "x.json", tmp_path / "missing" / "x.json"):
        with pytest.raises(MdkerasError) as info:
            files.atomic_write(path, "{}")
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_full_disk_keeps_the_old_file_and_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / "summary.csv"
    path.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(MdkerasError, match="No space left on device") as info:
        records.write_record(path, {"a": 1})
    assert str(path) in str(info.value)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_an_error_inside_the_block_writes_nothing(tmp_path):
    path = tmp_path / "fig.png"
    with pytest.raises(RuntimeError), files.atomic_writer(path) as f:
        f.write(b"half")
        raise RuntimeError("drawing failed")
    assert not list(tmp_path.iterdir())
