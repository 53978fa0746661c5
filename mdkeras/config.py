"""What one benchmark run is: a `Case` (the physics and the model) and a `Scale` (how big).

Both are frozen records; a case's `name` reads as the case, e.g. `lj-rho0.50-w8-n28-lenet-paper`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mdkeras.architectures import ARCHITECTURES, get_architecture
from mdkeras.checks import check_choice, check_int, check_number
from mdkeras.encoding import ENCODINGS
from mdkeras.errors import MdkerasError
from mdkeras.potentials import check_potential
from mdkeras.sampling import SAMPLERS, get_sampler

HEADS = ("separate", "joint", "force")
CLASS_HEADS = ("separate", "joint")  # heads that predict classes; `force` regresses (F_x, F_y)
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
    temperature: float | None = None  # samplers with a temperature only; None: its default

    def __post_init__(self):
        check_potential(self.potential)
        check_choice("sampler", self.sampler, SAMPLERS)
        check_choice("architecture", self.architecture, ARCHITECTURES)
        default_t = get_sampler(self.sampler).temperature
        if default_t is None and self.temperature is not None:
            raise MdkerasError(
                f"temperature={self.temperature!r} is not allowed for sampler "
                f"{self.sampler!r}: it has no temperature; leave it unset."
            )
        if default_t is not None and self.temperature is None:
            object.__setattr__(self, "temperature", float(default_t))
        if self.temperature is not None:
            check_number("temperature", self.temperature, positive=True, noun="a number")
        check_choice("encoding", self.encoding, ENCODINGS)
        check_choice("head", self.head, HEADS)
        if self.head == "force":
            self._check_force_head()
        self._check_network_axes()
        check_number("density", self.density, positive=True, noun="a number")
        check_number("window", self.window, positive=True, noun="a number")
        check_int("grid", self.grid, min=2)
        check_int("classes", self.classes, min=2)

    def _check_force_head(self) -> None:
        """A force head regresses the force itself: the class axes (encoding, classes) do not
        apply, so they must stay at their defaults (the name leaves them out)."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for axis in ("encoding", "classes"):
            if getattr(self, axis) != defaults[axis]:
                raise MdkerasError(
                    f"{axis}={getattr(self, axis)!r} does not apply to head 'force': it "
                    f"regresses (F_x, F_y), no classes; leave {axis} at its default "
                    f"({defaults[axis]!r}) or use head 'separate' or 'joint'."
                )

    def _check_network_axes(self) -> None:
        """A model that is not a network (`Architecture.network`) predicts classes and trains
        nothing: no force head, no augmentation."""
        arch = get_architecture(self.architecture)
        if arch.network:
            return
        for axis, bad in (("head", self.head == "force"), ("augment", self.augment)):
            if bad:
                raise MdkerasError(
                    f"{axis}={getattr(self, axis)!r} is not allowed for architecture "
                    f"{self.architecture!r}: it is not a network (it trains nothing and "
                    "predicts classes); use head 'separate' or 'joint' without --augment, or "
                    "a network architecture."
                )

    @property
    def augmented(self) -> bool:
        """Whether training draws random D4 transforms: the case's `augment`, or an
        architecture whose recipe always does (`Recipe.augment`)."""
        return self.augment or get_architecture(self.architecture).recipe.augment

    @property
    def name(self) -> str:
        """`lj-rho0.50-w8-n28-lenet-paper`; non-default axes are appended (`-joint`, `-k20`)."""
        return f"{self.setting}-{self.variant}"

    @property
    def setting(self) -> str:
        """The data half of the name, `lj-rho0.50-w8-n28` (`md-lj-rho0.50-t1.00-w8-n28` for a
        sampler other than `uniform`, with its temperature): what the model sees and predicts."""
        parts = [self.potential, f"rho{self.density:.2f}"]
        if self.temperature is not None:
            parts.append(f"t{self.temperature:.2f}")
        parts += [f"w{_fmt_number(self.window)}", f"n{self.grid}"]
        if self.sampler != "uniform":
            parts.insert(0, self.sampler)
        return "-".join(parts)

    @property
    def variant(self) -> str:
        """The model half of the name, `lenet-paper[-joint][-k20][-d4]`: how it is learned; a
        force head has no encoding or classes, `lenet-force[-d4]`."""
        if self.head == "force":
            return "-".join([self.architecture, "force", *(["d4"] if self.augment else [])])
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
        """The fields, without `temperature` when the sampler has none (records stay as they
        were before samplers had temperatures)."""
        d = dataclasses.asdict(self)
        if d["temperature"] is None:
            del d["temperature"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Case:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclass(frozen=True)
class Scale:
    """How big a run is (SPEC §8): samples (train + test), max epochs, early-stopping patience.

    A `capped` scale cuts each split to the architecture's smoke budget
    (`Architecture.smoke_cells`: AlexNet keeps 8-24 samples per split, LeNet 312 at n = 56,
    everything else the whole splits). `smoke` is capped and is a plumbing check: it guarantees
    that every case builds its dataset, trains, evaluates, scores its baselines and writes a
    complete record, in seconds; it does not guarantee that a model learns (the record's
    `metrics.collapsed` says when it did not). `ci` and `paper` are never capped.
    """

    name: str
    samples: int
    max_epochs: int
    patience: int | None = None  # None: no early stopping, train max_epochs and keep the last
    capped: bool = False  # cut the splits to `Architecture.smoke_cells`
    # Keep one compiled model per model shape in the process and reset its variables for each
    # case (`training.compiled_model`): tracing a training step costs 2-6 s per case on two CPU
    # cores, more than a smoke case's whole training; the records are the same as without.
    reuse_models: bool = False


SCALES = {
    "smoke": Scale("smoke", samples=2_000, max_epochs=2, capped=True, reuse_models=True),
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
    return SCALES[check_choice("scale", name, SCALES)]
