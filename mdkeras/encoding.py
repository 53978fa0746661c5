"""Force components as classes (SPEC §5): the paper's equal-width bins and equal-population bins.

Both encoders bin each component of `(T, 2)` float64 forces into `K` classes and decode a class
back to a representative force. `fit` sees the training split only.
"""

from __future__ import annotations

import numpy as np

from mdkeras.errors import MdkerasError

ENCODINGS = ("paper", "quantile")


def encode(forces, *, f_max: float, classes: int) -> np.ndarray:
    """The paper's rule: `clip(floor((F + f_max) / (2 f_max) * K), 0, K - 1)` per component.

    Args:
        forces: `(..., 2)` float64 forces; f_max: the class range `|f(h)|`; classes: `K`.
    Returns:
        int64 classes of `forces`' shape.
    """
    _check_f_max(f_max)
    _check_classes(classes)
    forces = np.asarray(forces, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        k = np.floor((forces + f_max) / (2.0 * f_max) * classes)
    return np.clip(np.nan_to_num(k, nan=0.0), 0, classes - 1).astype(np.int64)


class PaperEncoder:
    """Equal-width bins over `[-f_max, f_max]`; decodes to bin centres, edge bins to the median
    training force inside them (their forces run far past the range)."""

    name = "paper"

    def __init__(self, f_max: float, classes: int):
        _check_f_max(f_max)
        _check_classes(classes)
        self.f_max = float(f_max)
        self.classes = int(classes)
        width = 2.0 * self.f_max / self.classes
        centres = -self.f_max + width * (np.arange(self.classes) + 0.5)
        self.values = np.stack([centres, centres], axis=1)  # (K, 2) decoded force per class

    def fit(self, train_forces) -> PaperEncoder:
        train_forces = np.asarray(train_forces, dtype=np.float64)
        k = self.encode(train_forces)
        for c in range(2):
            for edge in (0, self.classes - 1):
                inside = train_forces[k[:, c] == edge, c]
                if inside.size:
                    self.values[edge, c] = np.median(inside)
        return self

    def encode(self, forces) -> np.ndarray:
        return encode(forces, f_max=self.f_max, classes=self.classes)

    def decode(self, classes) -> np.ndarray:
        return _decode(self.values, classes)

    def state(self) -> dict:
        return {"name": self.name, "f_max": self.f_max, "values": self.values.tolist()}


class QuantileEncoder:
    """`K` equal-population bins per component, edges fitted on training forces; decodes to the
    median training force of each bin."""

    name = "quantile"

    def __init__(self, classes: int):
        _check_classes(classes)
        self.classes = int(classes)
        self.edges = None  # (K-1, 2) inner bin edges per component
        self.values = None

    def fit(self, train_forces) -> QuantileEncoder:
        train_forces = np.asarray(train_forces, dtype=np.float64)
        if len(train_forces) < self.classes:
            raise MdkerasError(
                f"{len(train_forces)} training forces cannot fit {self.classes} quantile classes: "
                "expected at least one sample per class."
            )
        q = np.arange(1, self.classes) / self.classes
        self.edges = np.quantile(train_forces, q, axis=0)
        k = self.encode(train_forces)
        self.values = np.empty((self.classes, 2))
        for c in range(2):
            for b in range(self.classes):
                inside = train_forces[k[:, c] == b, c]
                self.values[b, c] = np.median(inside) if inside.size else np.nan
        return self

    def encode(self, forces) -> np.ndarray:
        if self.edges is None:
            raise MdkerasError("quantile encoder used before fit: call fit(train_forces) first.")
        forces = np.asarray(forces, dtype=np.float64)
        out = np.empty(forces.shape, dtype=np.int64)
        for c in range(2):
            out[..., c] = np.searchsorted(self.edges[:, c], forces[..., c], side="right")
        return out

    def decode(self, classes) -> np.ndarray:
        return _decode(self.values, classes)

    def state(self) -> dict:
        return {"name": self.name, "edges": self.edges.tolist(), "values": self.values.tolist()}


def make_encoder(name: str, *, classes: int, f_max: float | None = None):
    """An unfitted encoder by name; `paper` needs `f_max`."""
    if name == "paper":
        if f_max is None:
            raise MdkerasError("the paper encoding needs f_max: pass f_max=|f(h)|.")
        return PaperEncoder(f_max, classes)
    if name == "quantile":
        return QuantileEncoder(classes)
    raise MdkerasError(
        f"encoding={name!r} is not allowed: expected one of {', '.join(map(repr, ENCODINGS))}."
    )


def _decode(values: np.ndarray, classes) -> np.ndarray:
    classes = np.asarray(classes, dtype=np.int64)
    return np.stack([values[classes[..., 0], 0], values[classes[..., 1], 1]], axis=-1)


def _check_f_max(f_max) -> None:
    if not (np.isfinite(f_max) and f_max > 0):
        raise MdkerasError(f"f_max={f_max!r} is not allowed: expected a finite number > 0.")


def _check_classes(classes) -> None:
    if isinstance(classes, bool) or int(classes) != classes or classes < 2:
        raise MdkerasError(f"classes={classes!r} is not allowed: expected an integer >= 2.")
