"""Energy models: a network maps each particle's smooth grid to its energy, forces by autodiff.

SPEC §3b. A trunk maps the smooth grid `D_sigma(i)` (`mdkeras.smooth`) of particle `i` to its
energy `eps_i`; the configuration's energy is `E = sum_i eps_i`, and every force is its exact
negative gradient through the descriptor, `F_k = -dE/dr_k`. Only the displacements
`d_ij = r_j - r_i` of the (particle, neighbour) pairs of the neighbour table enter, so with
`g_ij = dE/dd_ij`:

    F_k = sum_j g_kj - sum_(i, j = k) g_ij         (Newton's third law pair by pair: sum F = 0)
    W_ab = -sum_pairs d_a g_b                       (the virial, LAMMPS's sum r_a F_b)

and the energy is conserved by the dynamics up to the integrator. Hard counts would make `E`
piecewise constant (zero force almost everywhere); the Gaussians make it smooth.

Trunks (`TRUNKS`): `lenet` (the paper's network, its ReLUs included) and `smoothmap`, the fast
one: the grid's linear map to `SMOOTHMAP_CHANNELS` features (a sum over neighbours of a smooth
learned pair function, as `forcemap`'s first layer), then a softplus MLP, so the energy is
smooth in every position.

Training is force matching on whole `md` configurations (every particle's force is a label:
the potential's, recorded by LAMMPS apart from the thermostat's), one configuration a step
under a random D4 rotation/reflection (exact: the window is square and centred on its
particle), with an optional weight on the energy per particle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from mdkeras import smooth
from mdkeras.checks import check_choice, check_int, check_number
from mdkeras.errors import MdkerasError

TRUNKS = ("smoothmap", "lenet")
SMOOTHMAP_CHANNELS = 16
SMOOTHMAP_HIDDEN = (64, 64)
LEARNING_RATE = 1e-3
HUBER_DELTA = 1.0  # in units of the force scale: a near-overlap's large force counts linearly
PAD = 8  # neighbour tables are padded to a multiple of this many columns (fewer retracings)
SKIN = 0.5  # Verlet-list skin of an MD force field (reduced length units)
# The eight D4 elements as 2 x 2 matrices acting on column vectors (d' = R d).
D4 = np.array(
    [
        [[c, -s], [s, c]] if not m else [[c, s], [s, -c]]
        for m in (False, True)
        for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1))
    ],
    dtype=np.float64,
)


@dataclass(frozen=True)
class Descriptor:
    """The smooth grid a model sees: window side, cells a side, Gaussian width (cell sides)."""

    window: float
    grid: int
    sigma: float

    def __post_init__(self):
        smooth._check_smooth(self.window, self.grid, self.sigma)

    @property
    def reach(self) -> float:
        """How far from a particle (in x and in y) a neighbour still enters its grid."""
        return 0.5 * self.window + smooth.SUPPORT * self.sigma * self.window / self.grid


# --------------------------------------------------------------------------------- the model


def smoothmap_trunk(x, grid: int, prefix: str):
    """Flatten -> linear map to `SMOOTHMAP_CHANNELS` (no bias: an empty grid maps to 0) ->
    Dense 64 softplus -> Dense 64 softplus. For n = 28: 12,544 + 1,088 + 4,160 weights."""
    from keras import layers

    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    x = layers.Dense(SMOOTHMAP_CHANNELS, use_bias=False, name=f"{prefix}_map")(x)
    for i, units in enumerate(SMOOTHMAP_HIDDEN, 1):
        x = layers.Dense(units, activation="softplus", name=f"{prefix}_dense{i}")(x)
    return x


def build_energy_model(
    architecture: str, grid: int, *, energy_scale: float = 1.0, dtype: str = "float32"
):
    """An uncompiled Keras model: input `"grid"` `(grid, grid, 1)` -> output `"energy"` `(1,)`,
    each particle's energy: a `Dense(1)` in units of `energy_scale` times `energy_scale` (the
    network works at O(1)). `dtype`: of every layer (float64 for tests against finite
    differences)."""
    import keras
    from keras import layers

    check_choice("architecture", architecture, TRUNKS)
    grid = check_int("grid", grid, min=2)
    scale = check_number("energy_scale", energy_scale, positive=True, noun="a number")
    if architecture == "lenet":
        from mdkeras.models import lenet_trunk as trunk
    else:
        trunk = smoothmap_trunk
    # every layer in `dtype`, whatever global policy is set (e.g. a mixed-precision run's)
    previous = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        inputs = keras.Input(shape=(grid, grid, 1), dtype=dtype, name="grid")
        unit = layers.Dense(1, name="energy_unit")(trunk(inputs, grid, "energy"))
        energy = layers.Rescaling(scale, name="energy")(unit)
    finally:
        keras.config.set_floatx(previous[0])
        keras.config.set_dtype_policy(previous[1])
    return keras.Model(inputs, {"energy": energy}, name=f"{architecture}_energy")


def is_energy_model(model) -> bool:
    return "energy" in model.output_names and len(model.input_shape) == 4


def make_evaluator(model, descriptor: Descriptor, *, jit_compile: bool = False):
    """`evaluate(d (N, K, 2), mask (N, K), index (N, K)) -> (forces (N, 2), E, virial (2, 2))`,
    TensorFlow tensors: the model's energy of a configuration given as its neighbour table
    (`index[i, k]` the neighbour of particle `i` at displacement `d[i, k]`) and the exact
    forces and virial from `g = dE/dd` (module docstring). Differentiable with respect to the
    model's weights (training takes gradients of the forces)."""
    import tensorflow as tf

    dtype = model.inputs[0].dtype

    def evaluate(d, mask, index, training=False):
        d = tf.cast(d, dtype)
        with tf.GradientTape() as tape:
            tape.watch(d)
            grids = smooth.smooth_grids_tf(
                d,
                mask,
                window=descriptor.window,
                grid=descriptor.grid,
                sigma=descriptor.sigma,
                dtype=dtype,
            )
            eps = model(grids[..., None], training=training)["energy"][:, 0]
            energy = tf.reduce_sum(eps)
        g = tape.gradient(energy, d)
        n = tf.shape(d)[0]
        flat = tf.reshape(g, (-1, 2))
        forces = tf.reduce_sum(g, axis=1) - tf.math.unsorted_segment_sum(
            flat, tf.reshape(index, (-1,)), n
        )
        virial = -tf.einsum("nka,nkb->ab", d, g)
        return forces, energy, virial

    if jit_compile:
        return tf.function(evaluate, reduce_retracing=True, jit_compile=True)
    return evaluate


def table(positions, box, descriptor: Descriptor, *, pad: int = PAD):
    """The neighbour table of every particle of a configuration, padded to a multiple of
    `pad` columns: `(d (N, K, 2) float64, mask (N, K) bool, index (N, K) int32)`."""
    index, d, mask = smooth.neighbour_table(
        positions, box, window=descriptor.window, grid=descriptor.grid, sigma=descriptor.sigma
    )
    k = d.shape[1]
    width = max(pad, int(math.ceil(k / pad)) * pad)
    if width > k:
        extra = width - k
        d = np.pad(d, ((0, 0), (0, extra), (0, 0)))
        mask = np.pad(mask, ((0, 0), (0, extra)))
        index = np.pad(index, ((0, 0), (0, extra)))
    return d, mask, index.astype(np.int32)


def check_configuration(positions, box, *, closest: float = 0.0) -> None:
    """One error if two particles are closer than `closest` (an overlap: no model has seen it)."""
    if closest <= 0 or len(positions) < 2:
        return
    from scipy.spatial import cKDTree

    tree = cKDTree(np.mod(positions, box), boxsize=box)
    pairs = tree.query_pairs(closest, output_type="ndarray")
    if len(pairs):
        i, j = pairs[0]
        raise MdkerasError(
            f"particles {i} and {j} overlap (closer than {closest:g}): expected a configuration "
            "without overlapping particles; minimise or thermalise it first."
        )


def evaluator_name(model) -> str:
    """Which evaluator `field` uses for `model`: `"pairsum"` (a `smoothmap`-like model as a
    compiled sum over pairs, `mdkeras.pairsum`; needs numba, in the `md` extra) or
    `"tensorflow"` (any energy model, `make_evaluator`)."""
    from mdkeras import pairsum

    if pairsum.supports(model) and pairsum.available():
        return "pairsum"
    return "tensorflow"


def field(
    model,
    descriptor: Descriptor,
    *,
    jit_compile: bool = True,
    skin: float = SKIN,
    evaluator: str | None = None,
):
    """`field(positions (N, 2), box) -> (forces (N, 2), energy, virial 6-vector)` in float64
    for `fix external` (`engine.Simulation.external`): the model's energy, its exact gradient
    and virial on a Verlet list, inference only.

    `evaluator`: `"pairsum"` (`mdkeras.pairsum`, a `smoothmap`-like model compiled as a sum
    over pairs: the fast one), `"tensorflow"` (`make_evaluator`, one compiled TensorFlow call
    unless the trunk pools) or None for `evaluator_name(model)`.

    The list holds every pair within `reach + skin` (Chebyshev distance) of the positions it was
    built at, and is rebuilt once a particle has moved by more than `skin / 2` since: until then
    no pair within `reach` can be missing. The pairs between `reach` and `reach + skin` add
    Gaussian tails beyond `SUPPORT` deviations (below 3e-7 of a neighbour each) and keep the
    energy smooth when a pair crosses `reach`. LAMMPS's virial is symmetric: `xy` gets the mean
    of `W_xy` and `W_yx` (equal for a rotation-invariant energy)."""
    import tensorflow as tf

    from mdkeras import pairsum

    evaluator = evaluator or evaluator_name(model)
    check_choice("evaluator", evaluator, ("pairsum", "tensorflow"))
    if evaluator == "pairsum":
        fast = pairsum.PairSum(model, descriptor)
    else:
        # XLA has no deterministic MaxPool gradient: under op determinism a pooling trunk
        # (LeNet) runs without it (the training tests and `run` turn determinism on)
        pools = any("pool" in layer.name for layer in model.layers)
        evaluate = make_evaluator(model, descriptor, jit_compile=jit_compile and not pools)
        dtype = model.inputs[0].dtype
    reach = descriptor.reach + float(skin)
    cache: dict = {}

    def rebuild(x, box):
        if box <= 2 * reach:
            raise MdkerasError(
                f"box side {box:.4g} is too small for the model's reach {reach:.4g} "
                f"(window {descriptor.window:g}, sigma {descriptor.sigma:g}, skin {skin:g}): "
                "expected box > 2 x reach; use more particles."
            )
        cache.update(x=x.copy(), box=box, builds=cache.get("builds", 0) + 1)
        if evaluator == "pairsum":
            start, neighbour = pairsum.neighbours(x, box, reach)
            cache.update(start=start, neighbour=neighbour)
            return
        i, j, _ = smooth._pairs(x, box, np.arange(len(x)), reach)
        index, _, mask = smooth._pad(i, j, np.zeros((len(i), 2)), len(x))
        width = max(PAD, int(math.ceil(index.shape[1] / PAD)) * PAD)
        extra = width - index.shape[1]
        cache.update(
            index=np.pad(index, ((0, 0), (0, extra))).astype(np.int32),
            mask=np.pad(mask, ((0, 0), (0, extra))),
        )

    def compute(positions, box):
        x = np.asarray(positions, dtype=np.float64)
        ref = cache.get("x")
        if ref is not None and cache["box"] == box and ref.shape == x.shape:
            moved = x - ref
            moved -= box * np.round(moved / box)
            stale = bool(np.abs(moved).max() > 0.5 * skin)
        else:
            stale = True
        if stale:
            rebuild(x, box)
        if evaluator == "pairsum":
            forces, energy, w = fast.evaluate(x, box, cache["start"], cache["neighbour"])
        else:
            index, mask = cache["index"], cache["mask"]
            d = x[index] - x[:, None, :]
            d -= box * np.round(d / box)
            d[~mask] = 0.0
            forces, energy, w = evaluate(
                tf.constant(d, dtype), tf.constant(mask), tf.constant(index)
            )
            forces, energy, w = forces.numpy(), float(energy.numpy()), w.numpy()
        w = np.asarray(w, dtype=np.float64)
        return (
            np.asarray(forces, dtype=np.float64),
            float(energy),
            [w[0, 0], w[1, 1], 0.0, 0.5 * (w[0, 1] + w[1, 0]), 0.0, 0.0],
        )

    compute.cache = cache
    compute.evaluator = evaluator
    compute.reach = reach  # a box must exceed twice this (simulate.check_particles)
    return compute


def load_energy_model(path):
    """A saved energy model (`.keras`) and its descriptor (stored in the file's metadata by
    `save_energy_model`); one clear error for anything else."""
    import json
    import zipfile
    from pathlib import Path

    import keras

    path = Path(path)
    if path.suffix != ".keras" or not path.is_file():
        raise MdkerasError(
            f"model {path} is not allowed: expected an existing .keras file of an energy model "
            "(`python -m benchmarks energy ... --out DIR` writes one)."
        )
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("mdkeras.json"))
        model = keras.saving.load_model(path, compile=False)
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as err:
        raise MdkerasError(
            f"model {path} cannot be read as an energy model ({type(err).__name__}; truncated, "
            "empty or not a .keras file): expected a .keras file written by `save_energy_model`."
        ) from None
    if not is_energy_model(model):
        raise MdkerasError(
            f"model {path} has outputs {list(model.output_names)}: expected an 'energy' output "
            "(an energy model); a force or class model is not conservative."
        )
    return model, Descriptor(**meta["descriptor"]), meta


def save_energy_model(model, path, descriptor: Descriptor, meta: dict) -> None:
    """The Keras file with `mdkeras.json` (descriptor and `meta`) added, written atomically."""
    import json
    import os
    import tempfile
    import zipfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as z:
            z.writestr("mdkeras.json", json.dumps({"descriptor": asdict(descriptor), **meta}))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class Frames:
    """Configurations with their labels: positions `(C, N, 2)`, forces `(C, N, 2)` (the
    potential's), potential energy per particle `(C,)`, trajectory ids `(C,)`, box side."""

    positions: np.ndarray
    forces: np.ndarray
    energy: np.ndarray
    trajectory: np.ndarray
    box: float


def force_errors(predicted, true) -> dict:
    """Force MAE (per component), RMSE (per component) and median |F - F_true|."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return {
        "force_mae": float(np.mean(np.abs(diff))),
        "force_rmse": float(np.sqrt(np.mean(diff**2))),
        "force_median_ae": float(np.median(np.abs(diff))),
    }


def train(
    frames: Frames,
    split: dict,
    descriptor: Descriptor,
    *,
    architecture: str = "smoothmap",
    epochs: int = 20,
    patience: int = 4,
    energy_weight: float = 0.0,
    augment: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
):
    """Force matching (module docstring) on `split["train"]` configurations, the epoch with
    the lowest validation force MAE kept (early stopping after `patience` epochs without a
    better one). Returns `(model, history, scales)`: `history` one dict per epoch, `scales`
    the force unit of the loss and the energy unit of the model's output."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(int(seed))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    train_ids = np.asarray(split["train"])
    force_scale = float(np.std(frames.forces[train_ids]))
    h = descriptor.window / descriptor.grid
    model = build_energy_model(architecture, descriptor.grid, energy_scale=force_scale * h)
    evaluate = make_evaluator(model, descriptor)
    optimizer = keras.optimizers.Adam(LEARNING_RATE)
    tables = {}

    def get(c):
        if c not in tables:
            tables[c] = table(frames.positions[c], frames.box, descriptor, pad=32)
        return tables[c]

    n = frames.positions.shape[1]
    e_scale = float(np.std(frames.energy[train_ids])) or 1.0

    @tf.function(reduce_retracing=True)
    def step(d, mask, index, forces, energy):
        with tf.GradientTape() as tape:
            pred, e, _ = evaluate(d, mask, index, training=True)
            loss = tf.reduce_mean(
                tf.keras.losses.huber(forces / force_scale, pred / force_scale, HUBER_DELTA)
            )
            if energy_weight:
                loss += energy_weight * tf.square((e / n - energy) / e_scale)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    def predict(c):
        d, mask, index = get(c)
        f, e, _ = evaluate(tf.constant(d, tf.float32), tf.constant(mask), tf.constant(index))
        return f.numpy(), float(e.numpy())

    history, best, best_weights, waited = [], math.inf, None, 0
    for epoch in range(1, int(epochs) + 1):
        t0 = time.perf_counter()
        losses = []
        for c in rng.permutation(train_ids):
            d, mask, index = get(c)
            forces = frames.forces[c]
            if augment:
                r = D4[rng.integers(len(D4))]
                d, forces = d @ r.T, forces @ r.T
            loss = step(
                tf.constant(d, tf.float32),
                tf.constant(mask),
                tf.constant(index),
                tf.constant(forces, tf.float32),
                tf.constant(frames.energy[c], tf.float32),
            )
            losses.append(float(loss))
        val = np.concatenate([predict(c)[0] - frames.forces[c] for c in split["val"]])
        val_mae = float(np.mean(np.abs(val)))
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)),
                "val_force_mae": val_mae,
                "seconds": time.perf_counter() - t0,
            }
        )
        if progress is not None:
            progress(
                f"epoch {epoch}/{epochs}: loss {history[-1]['loss']:.4f}, validation force MAE "
                f"{val_mae:.4f} ({history[-1]['seconds']:.0f} s)"
            )
        if val_mae < best:
            best, best_weights, waited = val_mae, model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.set_weights(best_weights)
    return model, history, {"force_scale": force_scale, "energy_scale": force_scale * h}


def score(model, frames: Frames, ids, descriptor: Descriptor) -> dict:
    """Test-split figures: force errors against the zero force's, the largest |sum F| per
    configuration, and the energy per particle's error after removing its mean offset."""
    import tensorflow as tf

    evaluate = make_evaluator(model, descriptor)
    pred, true, energies, sums = [], [], [], []
    for c in ids:
        d, mask, index = table(frames.positions[c], frames.box, descriptor, pad=32)
        f, e, _ = evaluate(tf.constant(d, tf.float32), tf.constant(mask), tf.constant(index))
        f = f.numpy().astype(np.float64)
        pred.append(f)
        true.append(frames.forces[c])
        energies.append(float(e.numpy()) / len(f))
        sums.append(float(np.max(np.abs(f.sum(axis=0)))))
    pred, true = np.concatenate(pred), np.concatenate(true)
    e_pred, e_true = np.array(energies), frames.energy[np.asarray(ids)]
    offset = float(np.mean(e_pred - e_true))
    return {
        "model": force_errors(pred, true),
        "zero": force_errors(np.zeros_like(true), true),
        "max_abs_total_force": float(max(sums)),
        "energy_offset": offset,
        "energy_rmse_after_offset": float(np.sqrt(np.mean((e_pred - e_true - offset) ** 2))),
        "test_configurations": len(ids),
        "test_forces": int(len(true)),
    }
