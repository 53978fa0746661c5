"""The `uniform` sampler (SPEC §2): particles uniform at random in a periodic square box."""

from __future__ import annotations

import math

import numpy as np

from mdkeras.errors import MdkerasError


def box_side(particles: int, density: float) -> float:
    """Side `B = sqrt(N / rho)` of the periodic box holding `N` particles at density `rho`."""
    if not (isinstance(density, (int, float)) and math.isfinite(density) and density > 0):
        raise MdkerasError(f"density={density!r} is not allowed: expected a number > 0.")
    if int(particles) != particles or particles < 2:
        raise MdkerasError(f"particles={particles!r} is not allowed: expected an integer >= 2.")
    return math.sqrt(particles / density)


def uniform_configuration(rng: np.random.Generator, particles: int, density: float, targets: int):
    """One configuration: positions uniform in `[0, B)^2` and target indices without replacement.

    Returns:
        `(positions (N, 2) float64, box B, targets (T,) int64)`.
    """
    box = box_side(particles, density)
    if int(targets) != targets or not 1 <= targets <= particles:
        raise MdkerasError(
            f"targets={targets!r} is not allowed: expected an integer in [1, {particles}]."
        )
    positions = rng.uniform(0.0, box, size=(particles, 2))
    chosen = rng.choice(particles, size=targets, replace=False).astype(np.int64)
    return positions, box, chosen
