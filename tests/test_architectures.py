"""The architecture table: one entry per network, read by config, the registry and training."""

import subprocess
import sys

import pytest

from mdkeras.architectures import (
    ARCHITECTURES,
    BATCH_SIZE,
    LEARNING_RATE,
    MIN_SPLIT,
    NETWORKS,
    Architecture,
    Recipe,
    check_grid,
    get_architecture,
)
from mdkeras.config import SCALES, Case, Scale, with_samples
from mdkeras.errors import MdkerasError


def test_every_architecture_has_builder_min_grid_and_recipe():
    assert set(ARCHITECTURES) == {"lenet", "alexnet", "forcemap", "recovered"}
    assert NETWORKS == ("lenet", "alexnet", "forcemap")
    recovered = get_architecture("recovered")
    assert not recovered.network and recovered.runner == "mdkeras.recovered:fit"
    with pytest.raises(MdkerasError, match="'recovered' is not a network"):
        recovered.trunk()
    for name in NETWORKS:
        arch = ARCHITECTURES[name]
        assert arch.name == name
        module, _, function = arch.builder.partition(":")
        assert module == "mdkeras.models" and function == f"{name}_trunk"
        assert isinstance(arch.min_grid, int) and arch.min_grid >= 2
        assert isinstance(arch.recipe, Recipe)
        assert arch.smoke_cells is None or arch.smoke_cells >= MIN_SPLIT * 28**2


def test_lenet_trains_as_in_the_paper_constant_adam_1e3():
    lenet = get_architecture("lenet").recipe
    assert LEARNING_RATE == 1e-3 and BATCH_SIZE == 128
    assert lenet == Recipe() and lenet.plateau_factor is None and lenet.callbacks() == []
    assert lenet.stop_patience(SCALES["paper"]) == 3
    alexnet = get_architecture("alexnet").recipe  # cuts its rate as forcemap does
    assert alexnet.plateau_factor == 0.3 and len(alexnet.callbacks()) == 1
    assert alexnet.stop_patience(SCALES["paper"]) == 4


def test_forcemap_recipe_cuts_the_rate_and_floors_the_patience():
    forcemap = get_architecture("forcemap").recipe
    assert forcemap.stop_patience(SCALES["paper"]) == 4  # 3 from the scale, floored at 4
    assert forcemap.stop_patience(Scale("long", 1000, 50, patience=6)) == 6
    assert forcemap.stop_patience(SCALES["smoke"]) is None  # smoke never stops early
    assert len(forcemap.callbacks()) == 1


def test_only_capped_scales_cap_the_training_samples():
    assert SCALES["smoke"].capped and not SCALES["ci"].capped and not SCALES["paper"].capped
    assert with_samples(SCALES["smoke"], 5_000).capped
    alexnet, lenet = get_architecture("alexnet"), get_architecture("lenet")
    smoke = SCALES["smoke"]
    # samples x cells per split is bounded: a quarter of the samples at twice the grid
    assert [alexnet.split_cap(smoke, n) for n in (16, 28, 56)] == [24, 8, MIN_SPLIT]
    assert [lenet.split_cap(smoke, n) for n in (28, 56)] == [1250, 1250 // 4]
    assert alexnet.train_samples(smoke, 16, 1250) == 24
    assert alexnet.train_samples(smoke, 16, 10) == 10
    assert alexnet.split_cap(smoke, 1000) == MIN_SPLIT
    for scale in ("ci", "paper"):
        assert alexnet.split_cap(SCALES[scale], 56) is None
        assert alexnet.train_samples(SCALES[scale], 56, 6250) == 6250
    # LeNet keeps its whole smoke training split (1,250) up to the paper's n = 28
    assert [lenet.train_samples(smoke, n, 1250) for n in (16, 28, 56)] == [1250, 1250, 312]
    assert get_architecture("forcemap").split_cap(smoke, 56) is None


def test_config_and_registry_read_the_table(monkeypatch):
    from benchmarks import registry

    per_arch = {a: 0 for a in ARCHITECTURES}
    for name in registry.case_names():
        per_arch[registry.get_case(name).architecture] += 1
    per_physics = len(registry.PHYSICS) * len(registry.GRIDS) + len(registry.MD_PHYSICS)
    classes = per_physics * 2  # the class-head cases; networks also have the force head's
    assert per_arch == {
        a: classes + (len(registry.FORCE_PHYSICS) if a in NETWORKS else 0) for a in ARCHITECTURES
    }
    with pytest.raises(MdkerasError, match="architecture='vgg' is not allowed.*'forcemap'"):
        Case("lj", 0.5, 8.0, 28, architecture="vgg")
    entry = Architecture("vgg", "mdkeras.models:lenet_trunk", min_grid=20)
    monkeypatch.setitem(ARCHITECTURES, "vgg", entry)
    assert Case("lj", 0.5, 8.0, 28, architecture="vgg").name == "lj-rho0.50-w8-n28-vgg-paper"
    with pytest.raises(MdkerasError, match="grid=16 is too small for vgg"):
        check_grid("vgg", 16)


def test_unknown_architecture_is_one_line_naming_the_allowed():
    with pytest.raises(MdkerasError) as err:
        get_architecture("resnet")
    msg = str(err.value)
    assert "'resnet'" in msg and all(f"'{a}'" in msg for a in ARCHITECTURES) and "\n" not in msg


def test_reading_the_tables_does_not_import_tensorflow():
    code = (
        "import sys, mdkeras.config, benchmarks.registry, mdkeras.architectures; "
        "mdkeras.config.Case('lj', 0.5, 8.0, 28, architecture='alexnet'); "
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_scale_too_small_for_the_recovered_model_says_what_it_needs():
    recovered = get_architecture("recovered")
    msg = recovered.too_few_samples(SCALES["smoke"], 28)
    assert msg == "recovered needs >= 10,000 samples at n = 28 (smoke has 2,000)"
    assert recovered.too_few_samples(SCALES["ci"], 28) is None
    assert "50,000 samples at n = 56" in recovered.too_few_samples(SCALES["ci"], 56)
    assert recovered.too_few_samples(SCALES["paper"], 56) is None
    assert get_architecture("lenet").too_few_samples(SCALES["smoke"], 56) is None


@pytest.mark.parametrize("axes", [{"head": "force", "sampler": "md"}, {"augment": True}])
def test_the_recovered_model_has_no_force_head_and_no_augmentation(axes):
    with pytest.raises(MdkerasError, match="is not allowed for architecture 'recovered'"):
        Case("lj", 0.5, 8.0, 28, architecture="recovered", **axes)


def test_alexnet_always_trains_on_augmented_data_and_keeps_its_name():
    """AlexNet's recipe augments (the measurement is in `architectures`); LeNet's does not, so
    its results do not change; `run --augment` names only the cases it changes."""
    import argparse

    from benchmarks.cli import run_variants

    assert get_architecture("alexnet").recipe.augment
    assert not get_architecture("lenet").recipe.augment
    assert not get_architecture("forcemap").recipe.augment
    alexnet = Case("lj", 0.5, 8.0, 28, architecture="alexnet")
    lenet = Case("lj", 0.5, 8.0, 28, architecture="lenet")
    assert alexnet.augmented and not alexnet.augment and alexnet.variant == "alexnet-paper"
    assert not lenet.augmented
    args = argparse.Namespace(head=None, augment=True, samples=None)
    cases, _ = run_variants(args, [alexnet, lenet], SCALES["ci"])
    assert [c.name for c in cases] == [
        "lj-rho0.50-w8-n28-alexnet-paper",
        "lj-rho0.50-w8-n28-lenet-paper-d4",
    ]
    assert all(c.augmented for c in cases)


def test_an_augmenting_recipe_feeds_transformed_grids_to_training():
    """The training pipeline of an AlexNet case draws D4 transforms: some batches' grids are
    not the stored ones, while validation keeps them."""
    import numpy as np

    from mdkeras.datasets import DatasetSpec
    from mdkeras.encoding import fit_encoder
    from mdkeras.training import Splits, make_pipelines

    rng = np.random.default_rng(0)
    n, size = 16, 64
    grids = {k: rng.integers(0, 3, size=(size, n, n), dtype=np.uint8) for k in ("train", "val")}
    grids["test"] = grids["val"]
    forces = {k: rng.normal(size=(size, 2)) for k in grids}
    encoder = fit_encoder(
        "paper", potential="lj", window=8.0, grid=n, classes=10, train_forces=forces["train"]
    )
    classes = {k: encoder.encode(v) for k, v in forces.items()}
    spec = DatasetSpec("lj", 0.5, 8.0, n, 1000, 0)
    splits = Splits(spec, grids, forces, classes, encoder)
    for architecture, changed in (("alexnet", True), ("lenet", False)):
        case = Case("lj", 0.5, 8.0, n, architecture=architecture)
        pipes = make_pipelines(case, splits, seed=0)
        seen = np.concatenate([x.numpy()[..., 0] for x, _ in pipes.train])
        stored = {g.tobytes() for g in grids["train"]}
        moved = sum(g.astype(np.uint8).tobytes() not in stored for g in seen)
        assert (moved > size // 2) is changed, (architecture, moved)
        val = np.concatenate([x.numpy()[..., 0] for x, _ in pipes.val])
        np.testing.assert_array_equal(val.astype(np.uint8), grids["val"])
