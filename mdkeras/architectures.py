"""The architecture table: one entry per network (builder, minimum grid, training recipe, smoke
budget), read by `config` (valid names), the registry (cases) and `training` (recipe, budget).

This module does not import TensorFlow or Keras: the command line reads the table to check its
arguments and must start fast. Builders live in `mdkeras.models` and are imported on first use.
Adding an architecture is one `Architecture` entry here plus its trunk builder.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from mdkeras.checks import check_choice
from mdkeras.errors import MdkerasError
from mdkeras.lazy import resolve

LEARNING_RATE = 1e-3  # Adam, every architecture (the paper's)
BATCH_SIZE = 128
MIN_SPLIT = 8  # a capped split keeps at least this many samples


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained beyond the shared Adam(1e-3), batch 128: an optional
    learning-rate cut on validation plateaus, a floor under the scale's early-stopping
    patience (so the cuts get epochs to work), and whether it always trains on random D4
    rotations/reflections of grid and force (the `augment` axis of a case, made part of how
    the network is trained, as AlexNet was trained on reflected crops)."""

    plateau_factor: float | None = None  # multiply the rate by this after a plateau; None: never
    plateau_patience: int = 1  # epochs without a better validation joint accuracy
    min_learning_rate: float = 1e-6
    min_stop_patience: int = 0
    augment: bool = False

    def stop_patience(self, scale) -> int | None:
        """The early-stopping patience at `scale` (None: the scale does not stop early)."""
        return max(scale.patience, self.min_stop_patience) if scale.patience else None

    def callbacks(self, monitor: str = "val_joint_accuracy", mode: str = "max") -> list:
        """Keras callbacks of the recipe, monitoring `monitor` (`mode` "max" or "min": the
        validation joint accuracy of a class head, a force head's validation loss)."""
        if self.plateau_factor is None:
            return []
        import keras

        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor,
                mode=mode,
                factor=self.plateau_factor,
                patience=self.plateau_patience,
                min_lr=self.min_learning_rate,
            )
        ]


@dataclass(frozen=True)
class Architecture:
    """One network: its trunk builder, the smallest grid it accepts, how it trains, and its
    budget at a capped scale (`Scale.capped`, i.e. smoke).

    The smoke budget `smoke_cells` bounds samples x cells per split, since a convolution's cost
    grows with `n²`: at a capped scale every split (train, val, test) keeps only its first
    `max(MIN_SPLIT, smoke_cells // n²)` samples (the encoder is still fitted on the whole
    training split). None: the whole splits.
    """

    name: str
    builder: str | None  # "module:function", a trunk `(x, grid, prefix) -> features before
    # Dense K`; None: not a network (`runner` makes its record)
    min_grid: int
    recipe: Recipe = Recipe()
    smoke_cells: int | None = None
    summary: str = ""
    # Seconds per (case, seed) on the 2-core CPU machine, by grid: (fixed, per training
    # sample-epoch), read by `benchmarks.plan` to estimate a run (see the measurement there).
    cpu_cost: dict[int, tuple[float, float]] = field(default_factory=dict)
    # A model that is not a network: "module:function" `(data, *, seed, progress) -> model`
    # fitting it on the training split of a `datasets.Dataset`, the model
    # having `method`, `params` and `evaluate(grids, classes, encoder, *, seed) -> (pred,
    # record section)`; `training.run_case` calls it instead of Keras. Class heads only.
    runner: str | None = None
    # The fewest samples (train + test) a scale needs for this architecture, by grid: a scale
    # with fewer is not run (`run` reports the pair as not runnable). {}: any scale.
    min_samples: dict[int, int] = field(default_factory=dict)

    @property
    def network(self) -> bool:
        """True for a Keras network (a trunk builder, every head, `perf train`)."""
        return self.builder is not None

    def trunk(self):
        """The trunk builder function (imports its module, and so Keras, on first use)."""
        if self.builder is None:
            raise MdkerasError(f"architecture {self.name!r} is not a network: it has no trunk.")
        return resolve(self.builder)

    def too_few_samples(self, scale, grid: int) -> str | None:
        """Why `scale` is too small for this architecture on an `n = grid` grid, or None."""
        need = self.min_samples.get(int(grid), 0)
        if scale.samples >= need:
            return None
        have = f"{scale.name} has {scale.samples:,}"
        return f"{self.name} needs >= {need:,} samples at n = {grid} ({have})"

    def split_cap(self, scale, grid: int) -> int | None:
        """The most samples a split keeps at `scale` on an `n = grid` grid (None: no cap)."""
        if not scale.capped or self.smoke_cells is None:
            return None
        return max(MIN_SPLIT, self.smoke_cells // int(grid) ** 2)

    def train_samples(self, scale, grid: int, available: int) -> int:
        """How many of the `available` training samples the model fits at `scale`."""
        cap = self.split_cap(scale, grid)
        return available if cap is None else min(available, cap)


# The recovered model fits the cell-averaged kernel by least squares, which needs at least 4
# training samples per fitted cell with the touching cells empty (`recovery.kernel`): 2,000
# samples (smoke) are too few at every grid, 10,000 enough at n = 16 and 28 (`ci`), n = 56 needs
# the paper's 50,000. Its cost is the fit plus the Monte Carlo, a fixed time per case: about
# 15 s (uniform) at paper scale, measured with `run -k 'lj-rho0.50-w8-n28-recovered-*' --scale
# paper` (the `md` cases add the MD runs of the equilibrium recovery, minutes).
RECOVERED_MIN_SAMPLES = {16: 10_000, 28: 10_000, 56: 50_000}
RECOVERED_COST = {16: (15.0, 0.0), 28: (15.0, 0.0), 56: (30.0, 0.0)}

# LeNet's two valid 5×5 convolutions and two 2×2 pools need n >= 16 (16 -> 12 -> 6 -> 2 -> 1).
# AlexNet (same padding, three pools) and forcemap (any n) share the floor so all three run on
# the same grids. LeNet and AlexNet train as in the paper, at a constant rate. forcemap is a
# near-linear map whose weights span decades: at a constant rate it stalls at the cell-centre
# accuracy, and cutting the rate on plateaus takes it to the Bayes limit (README, "Recovering
# the potential"). Smoke budgets (`smoke_cells`): LeNet keeps its whole smoke splits up to
# n = 28 (1,250 training samples) and 312 samples at n = 56. AlexNet costs ~0.8 / 2.4 / 9.6
# GFLOP per training sample at n = 16 / 28 / 56 (LeNet 0.03 at n = 28), i.e. seconds per
# sample on two CPU cores, so at smoke it keeps 24 / 8 / 8 samples per split: a plumbing check.
ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "lenet",
            "mdkeras.models:lenet_trunk",
            min_grid=16,
            smoke_cells=1_250 * 28**2,
            summary="the paper's LeNet (Fig. 2)",
            cpu_cost={16: (3.4, 0.00013), 28: (3.7, 0.0017), 56: (5.5, 0.0091)},
        ),
        Architecture(
            "alexnet",
            "mdkeras.models:alexnet_trunk",
            min_grid=16,
            # Measured at ci on lj-rho0.50-w8-n28 (seed 0, results/alexnet-recipes/): without
            # augmentation 0.623 (LeNet 0.623), training loss 0.34 against LeNet's 0.76 at the
            # last epoch, 13.5 M parameters on 7,250 samples; with it 0.687 (LeNet with it 0.649).
            # At a constant rate its validation accuracy still jumps by 0.02-0.03 from epoch to
            # epoch at the end of training, and it lost to LeNet at LJ rho = 0.05 (0.867 against
            # 0.881) and Coulomb rho = 0.05 (0.945 against 0.949); cutting the rate on plateaus
            # as forcemap does gave 0.893 and 0.954 (ci, seed 0, same machine;
            # results/alexnet-recipes/constant-rate/ has the constant-rate records).
            recipe=Recipe(
                augment=True, plateau_factor=0.3, plateau_patience=1, min_stop_patience=4
            ),
            smoke_cells=8 * 28**2,
            summary="AlexNet's shape with a small-grid stem, trained on D4-augmented data",
            cpu_cost={16: (5.2, 0.017), 28: (5.0, 0.045), 56: (6.0, 0.23)},
        ),
        Architecture(
            "forcemap",
            "mdkeras.models:forcemap_trunk",
            min_grid=16,
            recipe=Recipe(plateau_factor=0.3, plateau_patience=1, min_stop_patience=4),
            summary="a linear D4-symmetric force map, signed log readout and small MLP",
            cpu_cost={16: (4.0, 0.00006), 28: (4.4, 0.00008), 56: (4.1, 0.00012)},
        ),
        Architecture(
            "recovered",
            None,
            min_grid=16,
            runner="mdkeras.recovered:fit",
            min_samples=RECOVERED_MIN_SAMPLES,
            summary="no network: f(r) recovered from the training split, then the Monte Carlo "
            "of the Bayes limit with that force",
            cpu_cost=RECOVERED_COST,
        ),
    )
}


NETWORKS = tuple(name for name, a in ARCHITECTURES.items() if a.network)  # Keras models


def get_architecture(name: str) -> Architecture:
    """The table entry called `name`, or one clear error listing the allowed names."""
    return ARCHITECTURES[check_choice("architecture", name, ARCHITECTURES)]


def min_grid(architecture: str) -> int:
    """The smallest grid size `n` the architecture accepts."""
    return get_architecture(architecture).min_grid


def check_grid(architecture: str, grid: int) -> None:
    """Raise one clear `MdkerasError` if `grid` is not an integer >= `min_grid(architecture)`."""
    lo = min_grid(architecture)
    if isinstance(grid, bool) or not isinstance(grid, numbers.Integral):
        raise MdkerasError(
            f"grid={grid!r} is not allowed: expected an integer >= {lo}; use e.g. --grid 28."
        )
    if grid < lo:
        raise MdkerasError(
            f"grid={grid!r} is too small for {architecture}: expected grid >= {lo}; "
            f"use a larger --grid or a different --architecture."
        )
