"""The sampler table (`SAMPLERS`) and the `uniform` sampler (SPEC §2): particles uniform at
random in a periodic square box. Adding a sampler is one `Sampler` entry here plus the module
that makes its configurations (imported on first use, so reading the table stays light).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mdkeras.checks import check_choice, check_int, check_number
from mdkeras.errors import MdkerasError
from mdkeras.lazy import resolve


def box_side(particles: int, density: float) -> float:
    """Side `B = sqrt(N / rho)` of the periodic box holding `N` particles at density `rho`."""
    density = check_number("density", density, positive=True, noun="a number")
    particles = check_int("particles", particles, min=2)
    return math.sqrt(particles / density)


def uniform_configuration(rng: np.random.Generator, particles: int, density: float, targets: int):
    """One configuration: positions uniform in `[0, B)^2` and target indices without replacement.

    Returns:
        `(positions (N, 2) float64, box B, targets (T,) int64)`.
    """
    box = box_side(particles, density)
    targets = check_int("targets", targets, min=1, max=particles)
    positions = rng.uniform(0.0, box, size=(particles, 2))
    chosen = rng.choice(particles, size=targets, replace=False).astype(np.int64)
    return positions, box, chosen


def uniform_configurations(spec) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """`spec.configurations` independent uniform configurations of a `datasets.DatasetSpec`.

    Configuration `i` uses its own generator from `SeedSequence(spec.seed).spawn`, so the bytes
    depend only on the spec.
    """
    for child in np.random.SeedSequence(spec.seed).spawn(spec.configurations):
        yield uniform_configuration(
            np.random.default_rng(child), spec.particles, spec.density, spec.targets
        )


@dataclass(frozen=True)
class Sampler:
    """One way of making configurations: the sampler table's entry, read by `config` (valid
    names, the case's temperature), `datasets` (the configurations) and `training` (whether the
    uniform-gas Monte Carlo of `metrics.bayes_limit` is the Bayes limit).

    `configurations` is `"module:function"`, imported on first use; the function takes a
    `datasets.DatasetSpec` and yields `spec.configurations` tuples `(positions (N, 2), box B,
    targets (T,))` in configuration order (the splits take the last ones for test, SPEC §2).
    `provenance` (same form; None: nothing) returns, for a spec, the JSON-ready facts beyond the
    spec that fix the bytes (engine version, run protocol): part of the cache key and stored
    with the dataset. `groups` (same form; None: each configuration its own) returns the
    `(C,)` group id of each configuration (a trajectory); no group spans two splits.
    """

    name: str
    configurations: str
    temperature: float | None = None  # default temperature of its cases; None: has none
    uniform_in_cells: bool = True  # given the counts, neighbours are iid uniform in their cells
    summary: str = ""
    provenance: str | None = None
    groups: str | None = None
    requires: tuple[str, str] | None = None  # (Python module, mdkeras extra that installs it)

    def check_available(self) -> None:
        """Raise one clear error if the module the sampler needs is not installed (without
        importing it, so a command can check every case before any work)."""
        if self.requires is None:
            return
        module, extra = self.requires
        if importlib.util.find_spec(module) is None:
            raise MdkerasError(
                f"the {self.name} sampler needs the Python module {module!r}, which is not "
                f'installed: run pip install "mdkeras[{extra}]" (or leave out its cases, '
                f"e.g. --exclude '{self.name}-*')."
            )

    def generate(self, spec) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
        return resolve(self.configurations)(spec)

    def describe(self, spec) -> dict | None:
        """The sampler's provenance of `spec`'s dataset, or None if it has none."""
        return None if self.provenance is None else resolve(self.provenance)(spec)

    def configuration_groups(self, spec) -> np.ndarray:
        """`(C,)` int group (trajectory) id per configuration of `spec`, non-decreasing."""
        if self.groups is None:
            return np.arange(spec.configurations)
        return np.asarray(resolve(self.groups)(spec))


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler(
            "uniform",
            "mdkeras.sampling:uniform_configurations",
            summary="particles uniform at random in a periodic square box (the paper's)",
        ),
        Sampler(
            "md",
            "mdkeras.md:md_configurations",
            temperature=1.0,
            uniform_in_cells=False,
            summary="snapshots of equilibrated Langevin MD from LAMMPS (SPEC §2b)",
            provenance="mdkeras.md:md_provenance",
            groups="mdkeras.md:md_trajectories",
            requires=("lammps", "md"),
        ),
    )
}


def get_sampler(name: str) -> Sampler:
    """The table entry called `name`, or one clear error listing the allowed names."""
    return SAMPLERS[check_choice("sampler", name, SAMPLERS)]
