"""The compiled pair-sum evaluation of a `smoothmap` energy model (`mdkeras.pairsum`): the same
energy, forces and virial as the TensorFlow evaluation through the grids (brute force), forces
that are minus the finite-difference gradient of its own energy, Newton's third law to
round-off, the cell list equal to the periodic tree's pairs, and `energy.field` choosing it for
the models it can evaluate and only for them.

`python tests/test_pairsum.py 0-9` prints the measured differences over seeds, from which the
bounds below come."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from mdkeras import energy as en
from mdkeras import pairsum, smooth

DESCRIPTORS = {
    "w4-n8": en.Descriptor(window=4.0, grid=8, sigma=0.5),  # blocks wider than half the window
    "w8-n28": en.Descriptor(window=8.0, grid=28, sigma=0.5),  # the MD cases' descriptor
    "w5-n28-s0.3": en.Descriptor(window=5.0, grid=28, sigma=0.3),
}


def random_model(grid, seed, dtype="float64"):
    """A smoothmap energy model with weights of the trained models' size (N(0, 0.3))."""
    import keras

    keras.utils.set_random_seed(seed)
    model = en.build_energy_model("smoothmap", grid, energy_scale=2.0, dtype=dtype)
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(0.0, 0.3, w.shape))
    return model


def liquid(n, density, seed):
    """A jittered square lattice: no overlaps, every kind of displacement."""
    rng = np.random.default_rng(seed)
    box = float(np.sqrt(n / density))
    side = int(np.ceil(np.sqrt(n)))
    grid = (np.arange(side) + 0.5) * box / side
    x, y = np.meshgrid(grid, grid)
    positions = np.c_[x.ravel(), y.ravel()][:n] + rng.normal(0.0, 0.25, (n, 2))
    return np.mod(positions, box), box


def both(name, seed, n=300, density=0.5, dtype="float64"):
    """`(tensorflow (F, E, W), pairsum (F, E, W))` for a random model and configuration."""
    desc = DESCRIPTORS[name]
    model = random_model(desc.grid, seed, dtype)
    x, box = liquid(n, density, seed)
    d, mask, index = en.table(x, box, desc)
    tf_result = [
        t.numpy()
        for t in en.make_evaluator(model, desc)(
            tf.constant(d), tf.constant(mask), tf.constant(index)
        )
    ]
    start, neighbour = pairsum.neighbours(x, box, desc.reach + en.SKIN)
    return tf_result, pairsum.PairSum(model, desc).evaluate(x, box, start, neighbour)


def differences(name, seed, **kw):
    (f, e, w), (f2, e2, w2) = both(name, seed, **kw)
    return {
        "energy": abs(e2 - e) / abs(e),
        "forces": np.abs(f2 - f).max() / np.abs(f).max(),
        "virial": np.abs(w2 - w).max() / np.abs(w).max(),
    }


# Over seeds 0-9 and the three descriptors (`python tests/test_pairsum.py 0-9`), float64: energy
# at most 2.8e-7 of |E|, forces 1.8e-6 of the largest force, virial 2.9e-6 of its largest entry:
# what the Gaussians' cut at SUPPORT deviations (Phi(-5) ~ 2.9e-7 of a count a cell) leaves.
# The bounds are about 10x that, and 30x below what a wrong cell, sign or block gives (>= 1e-3).
BOUNDS = {"energy": 3e-6, "forces": 2e-5, "virial": 3e-5}


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
def test_pairsum_equals_the_tensorflow_evaluation_through_the_grids(name):
    for seed in (0, 1):
        measured = differences(name, seed)
        for key, bound in BOUNDS.items():
            assert measured[key] < bound, (name, seed, key, measured)


def test_float32_pairsum_agrees_to_float32_round_off():
    # float32 (the trained models), seeds 0-5 at N = 600: energy at most 2.2e-7 of |E|, forces
    # 2.3e-6 of the largest, virial 1.5e-6: float32's round-off; bounds 10x that
    measured = differences("w8-n28", 0, n=600, dtype="float32")
    assert measured["energy"] < 3e-6 and measured["forces"] < 3e-5, measured
    assert measured["virial"] < 2e-5, measured


def test_forces_are_minus_the_finite_difference_gradient_of_its_own_energy():
    desc = DESCRIPTORS["w4-n8"]
    model = random_model(desc.grid, 3)
    x, box = liquid(150, 0.5, 3)
    fast = pairsum.PairSum(model, desc)
    start, neighbour = pairsum.neighbours(x, box, desc.reach + 1.0)

    def energy_at(y):
        return fast.evaluate(y, box, start, neighbour)[1]

    forces, _, _ = fast.evaluate(x, box, start, neighbour)
    step = 1e-6
    for k in (0, 11, 97):
        for a in (0, 1):
            up, down = x.copy(), x.copy()
            up[k, a] += step
            down[k, a] -= step
            fd = -(energy_at(up) - energy_at(down)) / (2 * step)
            # the Hermite table's derivative is its own: truncation ~ step^2, round-off
            # ~ 1e-16 |E| / step ~ 1e-9
            assert forces[k, a] == pytest.approx(fd, rel=1e-6, abs=1e-7), (k, a)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10 * np.abs(forces).max()


@pytest.mark.parametrize("n, density, reach", [(500, 0.5, 5.21), (60, 0.4, 5.0), (400, 2.0, 2.1)])
def test_cell_list_finds_the_periodic_trees_pairs(n, density, reach):
    x, box = liquid(n, density, 4)
    x[0] = [0.0, box * (1 - 1e-17)]  # an edge of the box
    start, neighbour = pairsum.neighbours(x, box, reach)
    i, j, _ = smooth._pairs(x, box, np.arange(n), reach)
    owner = np.repeat(np.arange(n), np.diff(start))
    found = sorted(zip(owner.tolist(), neighbour.tolist(), strict=True))
    assert found == sorted(zip(i.tolist(), j.tolist(), strict=True))


def test_field_uses_the_pair_sum_for_smoothmap_and_tensorflow_for_lenet():
    desc = DESCRIPTORS["w8-n28"]
    smoothmap = random_model(28, 5)
    lenet = en.build_energy_model("lenet", 28, dtype="float64")
    assert pairsum.supports(smoothmap) and not pairsum.supports(lenet)
    assert en.evaluator_name(smoothmap) == "pairsum"
    assert en.evaluator_name(lenet) == "tensorflow"
    x, box = liquid(300, 0.5, 5)
    fast = en.field(smoothmap, desc)
    slow = en.field(smoothmap, desc, evaluator="tensorflow", jit_compile=False)
    assert (fast.evaluator, slow.evaluator) == ("pairsum", "tensorflow")
    (f, e, w), (f2, e2, w2) = fast(x, box), slow(x, box)
    assert e == pytest.approx(e2, rel=BOUNDS["energy"])
    np.testing.assert_allclose(f, f2, rtol=0, atol=BOUNDS["forces"] * np.abs(f2).max())
    np.testing.assert_allclose(w, w2, rtol=0, atol=BOUNDS["virial"] * np.abs(w2).max())


if __name__ == "__main__":
    first, _, last = sys.argv[1].partition("-")
    seeds = range(int(first), int(last or first) + 1)
    worst: dict = {}
    for name in sorted(DESCRIPTORS):
        for seed in seeds:
            measured = differences(name, seed)
            print(name, seed, {k: f"{v:.2e}" for k, v in measured.items()})
            for k, v in measured.items():
                worst[k] = max(worst.get(k, 0.0), v)
    print("largest:", {k: f"{v:.2e}" for k, v in worst.items()})
