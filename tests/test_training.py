"""Real Keras training at smoke scale: beats chance, is deterministic under a seed, records all."""

import json

import numpy as np
import pytest

from mdkeras.config import SCALES, Case
from mdkeras.errors import MdkerasError
from mdkeras.training import run_case

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_records(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    case = Case("lj", 0.5, 8.0, 28)
    first = run_case(case, SCALES["smoke"], 0, cache_dir=cache, verbose=0)
    second = run_case(case, SCALES["smoke"], 0, cache_dir=cache, verbose=0)
    return first, second


def test_smoke_training_beats_the_majority_baseline(smoke_records):
    rec, _ = smoke_records
    assert rec["metrics"]["joint_accuracy"] > rec["baselines"]["majority"] + 0.05
    assert rec["baselines"]["majority"] < rec["baselines"]["cell_centre"]
    assert (
        rec["baselines"]["cell_centre"]
        <= rec["baselines"]["bayes_limit"] + 4 * rec["baselines"]["bayes_limit_se"]
    )


def test_same_seed_gives_the_same_accuracy(smoke_records):
    a, b = smoke_records
    assert a["metrics"] == b["metrics"]
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


def test_record_is_complete_and_json_serialisable(smoke_records):
    rec, _ = smoke_records
    json.dumps(rec, allow_nan=False)
    assert rec["epochs_run"] == SCALES["smoke"].max_epochs == len(rec["history"])
    assert {"loss", "val_joint_accuracy", "seconds"} <= set(rec["history"][0])
    assert rec["split_sizes"] == {"train": 1250, "val": 250, "test": 500}
    assert rec["paper_reference"] == 0.71
    assert rec["fraction_of_bayes"] == pytest.approx(
        rec["metrics"]["joint_accuracy"] / rec["baselines"]["bayes_limit"]
    )
    for key in ("git_commit", "tensorflow", "keras", "numpy", "device", "timestamp"):
        assert key in rec["provenance"]
    assert rec["timing"]["samples_per_second"] > 0
    for axis, acc in (("x", "accuracy_x"), ("y", "accuracy_y")):
        m = np.array(rec["confusion"][axis])
        assert m.sum() == 500 and np.trace(m) / 500 == pytest.approx(rec["metrics"][acc])
        assert sum(rec["class_histogram"][axis]) == 1250


def test_joint_head_with_augmentation_and_quantile_encoding_trains(tmp_path):
    case = Case("coulomb", 0.5, 5.0, 16, encoding="quantile", head="joint", augment=True)
    rec = run_case(case, SCALES["smoke"], 1, cache_dir=tmp_path, verbose=0)
    assert rec["case_name"] == "coulomb-rho0.50-w5-n16-lenet-quantile-joint-d4"
    assert rec["paper_reference"] is None
    assert 0.0 <= rec["metrics"]["joint_accuracy"] <= 1.0


def test_too_small_grid_is_rejected_before_any_work(tmp_path):
    with pytest.raises(MdkerasError, match="grid=12"):
        run_case(Case("lj", 0.5, 8.0, 12), SCALES["smoke"], 0, cache_dir=tmp_path, verbose=0)
    assert not any(tmp_path.iterdir())
