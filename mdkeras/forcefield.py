"""A learned force field for MD: a force-head model (`head="force"`) predicting every particle's
force from its occupancy grid, each step, handed to LAMMPS through `fix external`.

What it is, and what that implies for the scores: the predicted force on a particle depends on
its own window only, so nothing makes it the gradient of an energy (no energy, not conservative)
or antisymmetric between pairs (no Newton's third law: total momentum is not conserved). The MD
records therefore carry the momentum drift and the NVE drift of kinetic + true potential energy,
and the pressure of the true potential on the frames (the field has no virial of its own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mdkeras import engine, models
from mdkeras.descriptors import occupancy, window_pairs
from mdkeras.simulate import ForceSource

# `pair_style zero` only sizes LAMMPS's neighbour lists here (nothing uses them): any small
# cut-off is right, and a small one keeps the lists cheap.
NEIGHBOUR_CUTOFF = 1.0
THREADS = 2  # a forcemap field finds the window pairs of this many blocks of particles at once


def learned_field(model, *, potential: str, window: float, grid: int) -> Callable:
    """`field(positions (N, 2), box) -> forces (N, 2)`: every particle's grid (`occupancy`, the
    descriptor the model was trained on), then the model's forces in physical units (one XLA-
    compiled call: inference only, so determinism's limits on XLA do not apply); a `forcemap`
    model takes the window pairs without the grids (`models.pair_force_predictor`: the same
    forces, faster). `potential` names what the model learned; the grids do not depend on it."""
    del potential
    pairs = models.pair_force_predictor(model, jit_compile=True)
    if pairs is not None:  # forcemap: its linear map summed over the window pairs directly
        pool = ThreadPoolExecutor(max_workers=THREADS)

        def part(positions, box, targets):
            t, cell, keep, _ = window_pairs(positions, box, targets, window, grid, cells_only=True)
            return t[keep] + targets[0], cell[keep]

        def field(positions, box):
            blocks = np.array_split(np.arange(len(positions)), THREADS)
            found = list(pool.map(lambda b: part(positions, box, b), [b for b in blocks if len(b)]))
            owner = np.concatenate([o for o, _ in found])
            cell = np.concatenate([c for _, c in found])
            return pairs(owner, cell, len(positions))

        return field
    predict = models.force_predictor(model, jit_compile=True)

    def field(positions, box):
        targets = np.arange(len(positions))
        return predict(occupancy(positions, box, targets, window=window, grid=grid))

    return field


def learned_source(case, path: str | Path) -> ForceSource:
    """The force source of a trained force-head `case`'s model file (`.keras`)."""
    path = Path(path)
    model = models.load_force_model(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    identity = {
        "kind": "learned",
        "case": case.name,
        "model_file": path.name,
        "model_sha256": digest,
    }
    field = learned_field(model, potential=case.potential, window=case.window, grid=case.grid)
    return ForceSource("learned", engine.ideal_gas(NEIGHBOUR_CUTOFF), identity, field=field)


def energy_source(case_name: str, path: str | Path) -> ForceSource:
    """The force source of a trained energy model file (`.keras`, `energy.save_energy_model`):
    forces, energy and virial from the model (SPEC §3b) through `fix external`."""
    from mdkeras import energy

    path = Path(path)
    model, descriptor, meta = energy.load_energy_model(path)
    identity = {
        "kind": "energy",
        "case": case_name,
        "model_file": path.name,
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "descriptor": {
            "window": descriptor.window,
            "grid": descriptor.grid,
            "sigma": descriptor.sigma,
        },
    }
    compute = energy.field(model, descriptor, jit_compile=True)
    return ForceSource("energy", engine.ideal_gas(NEIGHBOUR_CUTOFF), identity, field=compute)
