"""What one benchmark run is: a `Case` (the physics and the model) and a `Scale` (how big).

Both are frozen records; a case's `name` reads as the case, e.g. `lj-rho0.50-w8-n28-lenet-paper`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mdkeras.encoding import ENCODINGS
from mdkeras.errors import MdkerasError
from mdkeras.potentials import check_potential

SAMPLERS = ("uniform",)
ARCHITECTURES = ("lenet", "alexnet", "forcemap")
HEADS = ("separate", "joint")
PAPER_REFERENCE = 0.71  # the paper's best joint-class accuracy


def _fmt_number(x: float) -> str:
    """`8.0 -> '8'`, `2.5 -> '2.5'`: compact numbers for case names."""
    return f"{x:g}"


@dataclass(frozen=True)
class Case:
    """One benchmark case (SPEC §8): the physics, the descriptor, the model and its labels."""

    potential: str
    density: float
    window: float
    grid: int
    architecture: str = "lenet"
    encoding: str = "paper"
    classes: int = 10
    head: str = "separate"
    sampler: str = "uniform"
    augment: bool = False  # train with random D4 rotations/reflections of grid and force

    def __post_init__(self):
        check_potential(self.potential)
        _check_choice("sampler", self.sampler, SAMPLERS)
        _check_choice("architecture", self.architecture, ARCHITECTURES)
        _check_choice("encoding", self.encoding, ENCODINGS)
        _check_choice("head", self.head, HEADS)
        if not (math.isfinite(self.density) and self.density > 0):
            raise MdkerasError(f"density={self.density!r} is not allowed: expected a number > 0.")
        if not (math.isfinite(self.window) and self.window > 0):
            raise MdkerasError(f"window={self.window!r} is not allowed: expected a number > 0.")
        if int(self.grid) != self.grid or self.grid < 2:
            raise MdkerasError(f"grid={self.grid!r} is not allowed: expected an integer >= 2.")
        if int(self.classes) != self.classes or self.classes < 2:
            raise MdkerasError(
                f"classes={self.classes!r} is not allowed: expected an integer >= 2."
            )

    @property
    def name(self) -> str:
        """`lj-rho0.50-w8-n28-lenet-paper`; non-default axes are appended (`-joint`, `-k20`)."""
        return f"{self.setting}-{self.variant}"

    @property
    def setting(self) -> str:
        """The data half of the name, `lj-rho0.50-w8-n28`: what the model sees and must predict."""
        parts = [self.potential, f"rho{self.density:.2f}", f"w{_fmt_number(self.window)}"]
        parts.append(f"n{self.grid}")
        if self.sampler != "uniform":
            parts.insert(0, self.sampler)
        return "-".join(parts)

    @property
    def variant(self) -> str:
        """The model half of the name, `lenet-paper[-joint][-k20][-d4]`: how it is learned."""
        parts = [self.architecture, self.encoding]
        if self.head != "separate":
            parts.append(self.head)
        if self.classes != 10:
            parts.append(f"k{self.classes}")
        if self.augment:
            parts.append("d4")
        return "-".join(parts)

    @property
    def is_paper_reproduction(self) -> bool:
        """The paper's own setting: n = 28, LeNet, `paper` encoding, separate heads, 10 classes."""
        return (
            self.grid == 28
            and self.architecture == "lenet"
            and self.encoding == "paper"
            and self.head == "separate"
            and self.classes == 10
            and self.sampler == "uniform"
            and not self.augment
        )

    @property
    def paper_reference(self) -> float | None:
        return PAPER_REFERENCE if self.is_paper_reproduction else None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclass(frozen=True)
class Scale:
    """How big a run is (SPEC §8): samples (train + test), max epochs, early-stopping patience."""

    name: str
    samples: int
    max_epochs: int
    patience: int | None = None  # None: no early stopping, train max_epochs and keep the last


SCALES = {
    "smoke": Scale("smoke", samples=2_000, max_epochs=2),
    "ci": Scale("ci", samples=10_000, max_epochs=8, patience=3),
    "paper": Scale("paper", samples=50_000, max_epochs=30, patience=3),
}


MIN_SAMPLES = 1_000  # four configurations of 250 targets: train, validation, test and one more


def with_samples(scale: Scale, samples: int) -> Scale:
    """`scale` with another sample count (train + test), named `<scale>-s<samples>`."""
    if isinstance(samples, bool) or int(samples) != samples or samples < MIN_SAMPLES:
        raise MdkerasError(
            f"--samples {samples} is not allowed: expected an integer >= {MIN_SAMPLES:,} "
            "(at least four configurations of 250 targets)."
        )
    return dataclasses.replace(scale, name=f"{scale.name}-s{samples}", samples=int(samples))


def get_scale(name: str) -> Scale:
    """The named scale, or one clear error listing the allowed names."""
    _check_choice("scale", name, tuple(SCALES))
    return SCALES[name]


def _check_choice(what: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise MdkerasError(
            f"{what}={value!r} is not allowed: expected one of {', '.join(map(repr, allowed))}."
        )
