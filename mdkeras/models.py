"""Keras 3 CNNs that map an `(n, n, 1)` grid of neighbour counts to force-component classes.

`build_model(architecture, grid, classes, head)` returns an uncompiled `keras.Model` with one
input `"grid"` and either two K-way softmax outputs `"fx"`, `"fy"` (the paper's `separate` head:
two independent towers) or one K²-way softmax output `"joint"` (class index `cx * K + cy`).
Outputs are always a dict keyed by output name.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import keras
from keras import layers

from mdkeras.config import HEADS
from mdkeras.errors import MdkerasError


def lenet_trunk(x, grid: int, prefix: str):
    """The paper's Fig. 2 LeNet, up to the last hidden layer (Dense 500, ReLU).

    For n = 28 the output shapes read 24×24×20, 12×12×20, 8×8×50, 4×4×50, 800, 500; with the
    Dense K head, 431,080 parameters for K = 10 (per tower).
    """
    check_grid("lenet", grid)
    x = layers.Conv2D(20, 5, activation="relu", name=f"{prefix}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool1")(x)
    x = layers.Conv2D(50, 5, activation="relu", name=f"{prefix}_conv2")(x)
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool2")(x)
    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    return layers.Dense(500, activation="relu", name=f"{prefix}_dense1")(x)


ALEXNET_DENSE = 1024


def alexnet_trunk(x, grid: int, prefix: str):
    """AlexNet's shape with a small-grid stem (stride 1, `same` padding), up to the last dropout.

    Layers and output shapes for n = 28 (parameters in brackets; K = 10 head adds 10,250):

    - conv1 96 5×5 ReLU    28×28×96   [2,496]
    - pool1 2×2            14×14×96
    - conv2 256 3×3 ReLU   14×14×256  [221,440]
    - pool2 2×2            7×7×256
    - conv3 384 3×3 ReLU   7×7×384    [885,120]
    - conv4 384 3×3 ReLU   7×7×384    [1,327,488]
    - conv5 256 3×3 ReLU   7×7×256    [884,992]
    - pool5 2×2            3×3×256
    - flatten              2304
    - dense1 1024 ReLU, dropout 0.5   [2,360,320]
    - dense2 1024 ReLU, dropout 0.5   [1,049,600]

    Total with the K = 10 head: 6,741,706 parameters per tower. conv2 is 3×3 (not AlexNet's 5×5)
    and the dense layers are 1024 wide (not 4096) to keep training tolerable on a 2-core CPU.
    """
    check_grid("alexnet", grid)
    x = layers.Conv2D(96, 5, padding="same", activation="relu", name=f"{prefix}_conv1")(x)
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool1")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name=f"{prefix}_conv2")(x)
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name=f"{prefix}_conv3")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name=f"{prefix}_conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name=f"{prefix}_conv5")(x)
    x = layers.MaxPooling2D(2, name=f"{prefix}_pool5")(x)
    x = layers.Flatten(name=f"{prefix}_flatten")(x)
    x = layers.Dense(ALEXNET_DENSE, activation="relu", name=f"{prefix}_dense1")(x)
    x = layers.Dropout(0.5, name=f"{prefix}_drop1")(x)
    x = layers.Dense(ALEXNET_DENSE, activation="relu", name=f"{prefix}_dense2")(x)
    return layers.Dropout(0.5, name=f"{prefix}_drop2")(x)


# Trunk builders `(x, grid, prefix) -> features before the final Dense K`.
ARCHITECTURE_BUILDERS: dict[str, Callable] = {"lenet": lenet_trunk, "alexnet": alexnet_trunk}

# LeNet's two valid 5×5 convolutions and two 2×2 pools need n >= 16 (16 -> 12 -> 6 -> 2 -> 1).
# AlexNet (same padding, three pools) shares the floor so both run on the same grids.
MIN_GRID = {"lenet": 16, "alexnet": 16}


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURE_BUILDERS:
        raise MdkerasError(
            f"architecture={architecture!r} is not allowed: expected one of "
            f"{', '.join(map(repr, ARCHITECTURE_BUILDERS))}."
        )


def min_grid(architecture: str) -> int:
    """The smallest grid size `n` the architecture accepts."""
    _check_architecture(architecture)
    return MIN_GRID[architecture]


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


def build_model(
    architecture: str, grid: int, classes: int = 10, head: str = "separate"
) -> keras.Model:
    """An uncompiled model: input `"grid"` `(grid, grid, 1)` float32 -> softmax class outputs.

    `separate`: dict outputs `"fx"`, `"fy"` (K-way each) from two towers sharing no weights.
    `joint`: one trunk, one output `"joint"` (K²-way, class index `cx * K + cy`), also returned
    in a dict so `fit`/`predict` take and give `{name: array}` for both heads.
    """
    _check_architecture(architecture)
    if head not in HEADS:
        raise MdkerasError(
            f"head={head!r} is not allowed: expected one of {', '.join(map(repr, HEADS))}."
        )
    if isinstance(classes, bool) or not isinstance(classes, numbers.Integral) or classes < 2:
        raise MdkerasError(
            f"classes={classes!r} is not allowed: expected an integer >= 2; use --classes 10."
        )
    check_grid(architecture, grid)
    grid, classes = int(grid), int(classes)
    trunk = ARCHITECTURE_BUILDERS[architecture]
    inputs = keras.Input(shape=(grid, grid, 1), dtype="float32", name="grid")
    if head == "separate":
        outputs = {
            name: layers.Dense(classes, activation="softmax", name=name)(trunk(inputs, grid, name))
            for name in ("fx", "fy")
        }
    else:
        features = trunk(inputs, grid, "joint")
        joint = layers.Dense(classes * classes, activation="softmax", name="joint")(features)
        outputs = {"joint": joint}  # a dict too, so training code handles both heads alike
    return keras.Model(inputs, outputs, name=f"{architecture}_{head}")
