"""Model builders: the paper's LeNet shapes and parameter count, AlexNet, heads, clear errors."""

import keras
import numpy as np
import pytest

from mdkeras.architectures import ARCHITECTURES, NETWORKS, check_grid, min_grid
from mdkeras.config import CLASS_HEADS, HEADS
from mdkeras.errors import MdkerasError
from mdkeras.models import build_model, force_predictor, load_force_model
from mdkeras.training import save_model

K = 10


def _conv(filters, kernel, in_channels):
    return filters * (kernel * kernel * in_channels + 1)


def _dense(units, inputs):
    return units * (inputs + 1)


# The paper's Fig. 2 for n = 28, one tower (by hand).
LENET_TOWER_28 = _conv(20, 5, 1) + _conv(50, 5, 20) + _dense(500, 800) + _dense(K, 500)


# AlexNet-style trunk for n = 28: 28 -> 14 -> 7 -> 3 after the three pools, 3·3·256 = 2304.
# Bias-free convs and dense layers, each followed by BatchNorm (gamma, beta, mean, variance).
def _bn_layer(outputs, fan_in):
    return fan_in * outputs + 4 * outputs


ALEXNET_TOWER_28 = (
    _bn_layer(96, 5 * 5 * 1)
    + _bn_layer(256, 3 * 3 * 96)
    + _bn_layer(384, 3 * 3 * 256)
    + _bn_layer(384, 3 * 3 * 384)
    + _bn_layer(256, 3 * 3 * 384)
    + _bn_layer(1024, 2304)
    + _bn_layer(1024, 1024)
    + _dense(K, 1024)
)


def _tower_layers(model, prefix):
    return [layer for layer in model.layers if layer.name.split("_")[0] == prefix]


def test_every_table_entry_builds_its_trunk_at_its_minimum_grid():
    assert NETWORKS == ("lenet", "alexnet", "forcemap")
    for name in NETWORKS:
        arch = ARCHITECTURES[name]
        assert arch.name == name and min_grid(name) == arch.min_grid == 16
        assert callable(arch.trunk())
        model = build_model(name, arch.min_grid)
        assert tuple(model.inputs[0].shape) == (None, arch.min_grid, arch.min_grid, 1)


def test_lenet_paper_shapes_and_parameter_count():
    model = build_model("lenet", 28)
    assert model.inputs[0].name == "grid" and model.inputs[0].dtype == "float32"
    assert tuple(model.inputs[0].shape) == (None, 28, 28, 1)
    expected = [
        ("conv1", (24, 24, 20)),
        ("pool1", (12, 12, 20)),
        ("conv2", (8, 8, 50)),
        ("pool2", (4, 4, 50)),
        ("flatten", (800,)),
        ("dense1", (500,)),
        (None, (10,)),
    ]
    for prefix in ("fx", "fy"):
        tower = _tower_layers(model, prefix)
        got = [(layer.name, tuple(layer.output.shape)[1:]) for layer in tower]
        want = [(f"{prefix}_{n}" if n else prefix, s) for n, s in expected]
        assert got == want
    assert LENET_TOWER_28 == 431_080
    print(f"lenet n=28 separate: {model.count_params():,d} parameters")
    assert model.count_params() == 2 * LENET_TOWER_28
    joint = build_model("lenet", 28, head="joint")
    assert joint.count_params() == LENET_TOWER_28 - _dense(K, 500) + _dense(K * K, 500)


def test_alexnet_parameter_count_matches_docstring():
    assert ALEXNET_TOWER_28 == 6_751_978
    model = build_model("alexnet", 28)
    print(f"alexnet n=28 separate: {model.count_params():,d} parameters")
    assert model.count_params() == 2 * ALEXNET_TOWER_28
    names = [layer.name for layer in _tower_layers(model, "fx")]
    convs = [
        layer for layer in _tower_layers(model, "fx") if isinstance(layer, keras.layers.Conv2D)
    ]
    assert [c.name for c in convs] == [f"fx_conv{i}" for i in range(1, 6)]
    assert not any(c.use_bias for c in convs)
    norms = [n for n in names if n.endswith("_bn")]
    assert norms == [f"fx_conv{i}_bn" for i in range(1, 6)] + ["fx_dense1_bn", "fx_dense2_bn"]
    assert [n for n in names if "pool" in n] == ["fx_pool1", "fx_pool2", "fx_pool5"]
    drops = [
        layer for layer in _tower_layers(model, "fx") if isinstance(layer, keras.layers.Dropout)
    ]
    assert [d.rate for d in drops] == [0.5, 0.5]


@pytest.mark.parametrize("architecture", NETWORKS)
@pytest.mark.parametrize("grid", [16, 28, 56])
def test_forward_pass_both_heads(architecture, grid):
    x = np.random.default_rng(0).random((3, grid, grid, 1), dtype=np.float32)
    for head, outputs in (("separate", {"fx": K, "fy": K}), ("joint", {"joint": K * K})):
        model = build_model(architecture, grid, classes=K, head=head)
        y = model(x, training=False)
        assert set(y) == set(outputs)
        for name, width in outputs.items():
            probs = keras.ops.convert_to_numpy(y[name])
            assert probs.shape == (3, width)
            assert np.all(probs >= 0)
            np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("head", CLASS_HEADS)
def test_fits_one_step_with_dict_labels(head):
    model = build_model("lenet", 16, classes=3, head=head)
    names = ["fx", "fy"] if head == "separate" else ["joint"]
    model.compile(optimizer="adam", loss={n: "sparse_categorical_crossentropy" for n in names})
    rng = np.random.default_rng(1)
    x = rng.random((8, 16, 16, 1), dtype=np.float32)
    y = {n: rng.integers(0, 3 if head == "separate" else 9, 8) for n in names}
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("architecture", NETWORKS)
def test_small_grid_rejected(architecture):
    with pytest.raises(MdkerasError) as err:
        build_model(architecture, 12)
    message = str(err.value)
    assert "12" in message and "16" in message and architecture in message
    assert "\n" not in message
    with pytest.raises(MdkerasError, match="16"):
        check_grid(architecture, 15)
    check_grid(architecture, 16)
    build_model(architecture, 17)  # odd sizes floor through the pools


@pytest.mark.parametrize("bad", [28.0, "28", True])
def test_non_integer_grid_rejected(bad):
    with pytest.raises(MdkerasError, match="integer"):
        check_grid("lenet", bad)


def test_unknown_architecture_and_head_rejected():
    with pytest.raises(MdkerasError) as err:
        build_model("resnet", 28)
    assert "'resnet'" in str(err.value)
    assert all(f"'{a}'" in str(err.value) for a in ARCHITECTURES)
    with pytest.raises(MdkerasError) as err:
        min_grid("vgg")
    assert "'vgg'" in str(err.value)
    with pytest.raises(MdkerasError) as err:
        build_model("lenet", 28, head="shared")
    assert "'shared'" in str(err.value)
    assert all(f"'{h}'" in str(err.value) for h in HEADS)


@pytest.mark.parametrize("classes", [1, 0, 2.5, True])
def test_bad_classes_rejected(classes):
    with pytest.raises(MdkerasError, match="classes"):
        build_model("lenet", 28, classes=classes)


@pytest.mark.parametrize("architecture", NETWORKS)
def test_separate_towers_share_no_weights(architecture):
    model = build_model(architecture, 16)
    fx = {id(w) for layer in _tower_layers(model, "fx") for w in layer.weights}
    fy = {id(w) for layer in _tower_layers(model, "fy") for w in layer.weights}
    assert fx and fy and not fx & fy
    assert fx | fy == {id(w) for w in model.weights}
    if architecture == "lenet":  # changing one tower leaves the other's predictions alone
        x = np.random.default_rng(2).random((4, 16, 16, 1), dtype=np.float32)
        before = model.predict(x, verbose=0)
        conv = model.get_layer("fx_conv1")
        conv.set_weights([np.zeros_like(w) for w in conv.get_weights()])
        after = model.predict(x, verbose=0)
        np.testing.assert_array_equal(before["fy"], after["fy"])
        assert not np.allclose(before["fx"], after["fx"])


# --- the force head ------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", NETWORKS)
def test_force_head_is_one_linear_float32_output_in_physical_units(architecture):
    model = build_model(architecture, 16, head="force", force_scale=4.0)
    assert model.output_names == ["force"] and tuple(model.outputs[0].shape) == (None, 2)
    x = np.random.default_rng(0).poisson(0.3, (5, 16, 16, 1)).astype(np.float32)
    y = keras.ops.convert_to_numpy(model(x, training=False)["force"])
    assert y.shape == (5, 2) and y.dtype == np.float32
    unit = keras.Model(model.input, model.get_layer("force_unit").output)
    u = keras.ops.convert_to_numpy(unit(x, training=False))
    np.testing.assert_allclose(y, 4.0 * u, rtol=1e-6)  # Dense(2) in units of the scale


def test_force_predictor_matches_the_model_and_checks_its_input():
    model = build_model("forcemap", 16, head="force", force_scale=2.5)
    grids = np.random.default_rng(1).poisson(0.2, (37, 16, 16)).astype(np.uint8)
    want = keras.ops.convert_to_numpy(model(grids[..., None].astype(np.float32))["force"])
    for kwargs in ({}, {"batch_size": 10}):
        got = force_predictor(model, **kwargs)(grids)
        assert got.shape == (37, 2) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(MdkerasError, match=r"expected \(N, 16, 16\)"):
        force_predictor(model)(grids[:, :8])
    with pytest.raises(MdkerasError, match="expected a 'force' head"):
        force_predictor(build_model("lenet", 16))


def test_pair_force_predictor_is_the_model_on_the_grids():
    """forcemap's fast path (its linear map summed over the window pairs) against the model on
    the dense grids, with kernel weights spanning orders of magnitude; None for a CNN."""
    from mdkeras.descriptors import occupancy, window_pairs
    from mdkeras.models import pair_force_predictor

    rng = np.random.default_rng(4)
    model = build_model("forcemap", 16, head="force", force_scale=5.0)
    for w in model.weights:
        if w.name.startswith("b_"):
            w.assign(rng.normal(0.0, 0.3, w.shape).astype("float32"))
    box, n = 14.0, 16
    x = rng.uniform(0, box, (150, 2))
    targets = np.arange(150)
    want = force_predictor(model)(occupancy(x, box, targets, window=4.0, grid=n))
    t, cell, keep, _ = window_pairs(x, box, targets, 4.0, n, cells_only=True)
    got = pair_force_predictor(model)(t[keep], cell[keep], 150)
    assert got.shape == (150, 2) and got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    assert pair_force_predictor(build_model("lenet", 16, head="force")) is None


def test_a_saved_force_model_loads_and_predicts_the_same(tmp_path):
    model = build_model("forcemap", 16, head="force", force_scale=3.0)
    grids = np.random.default_rng(2).poisson(0.2, (9, 16, 16)).astype(np.uint8)
    path = save_model(model, tmp_path / "m.keras")
    loaded = load_force_model(path)
    np.testing.assert_array_equal(force_predictor(loaded)(grids), force_predictor(model)(grids))
    save_model(build_model("lenet", 16), tmp_path / "classes.keras")
    with pytest.raises(MdkerasError, match="expected a 'force' head"):
        load_force_model(tmp_path / "classes.keras")
    with pytest.raises(MdkerasError, match=r"expected an existing \.keras file"):
        load_force_model(tmp_path / "missing.keras")
    whole = path.read_bytes()
    for name, content in [("empty", b""), ("cut", whole[: len(whole) // 3]), ("noise", b"x" * 999)]:
        bad = tmp_path / f"{name}.keras"
        bad.write_bytes(content)
        with pytest.raises(MdkerasError, match="cannot be read as a Keras model"):
            load_force_model(bad)
    with pytest.raises(MdkerasError, match=r"ending in \.keras"):
        save_model(model, tmp_path / "m.h5")


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf"), True, "1"])
def test_bad_force_scale_rejected(scale):
    with pytest.raises(MdkerasError, match="force_scale"):
        build_model("lenet", 16, head="force", force_scale=scale)


def test_force_scale_applies_to_the_force_head_only():
    with pytest.raises(MdkerasError, match="applies to head 'force' only"):
        build_model("lenet", 16, head="joint", force_scale=2.0)
