"""Force components as classes (SPEC §5): the paper's equal-width bins and equal-population bins.

Both encoders bin each component of `(T, 2)` float64 forces into `K` classes and decode a class
back to a representative force. `fit` sees the training split only.
"""

from __future__ import annotations

import numpy as np

from mdkeras import potentials
from mdkeras.checks import check_choice, check_finite, check_int, check_number
from mdkeras.errors import MdkerasError

ENCODINGS = ("paper", "quantile")


def encode(forces, *, f_max: float, classes: int) -> np.ndarray:
    """The paper's rule: `clip(floor((F + f_max) / (2 f_max) * K), 0, K - 1)` per component.

    Args:
        forces: `(..., 2)` finite float64 forces; f_max: the class range `|f(h)|`; classes: `K`.
    Returns:
        int64 classes of `forces`' shape.
    """
    f_max = _check_f_max(f_max)
    classes = _check_classes(classes)
    forces = check_finite("forces", forces)
    with np.errstate(over="ignore", invalid="ignore"):
        k = np.floor((forces + f_max) / (2.0 * f_max) * classes)
    if np.isnan(k).any():  # inf / inf where a finite force near the float64 limit overflowed
        k[np.isnan(k)] = np.where(forces[np.isnan(k)] > 0, classes - 1, 0)
    return np.clip(k, 0, classes - 1).astype(np.int64)


class PaperEncoder:
    """Equal-width bins over `[-f_max, f_max]`; decodes to bin centres, edge bins to the median
    training force inside them (their forces run far past the range)."""

    name = "paper"

    def __init__(self, f_max: float, classes: int):
        self.f_max = _check_f_max(f_max)
        self.classes = _check_classes(classes)
        width = 2.0 * self.f_max / self.classes
        centres = -self.f_max + width * (np.arange(self.classes) + 0.5)
        self.values = np.stack([centres, centres], axis=1)  # (K, 2) decoded force per class

    def fit(self, train_forces) -> PaperEncoder:
        train_forces = check_finite("training forces", train_forces)
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
        self.classes = _check_classes(classes)
        self.edges = None  # (K-1, 2) inner bin edges per component
        self.values = None

    def fit(self, train_forces) -> QuantileEncoder:
        train_forces = check_finite("training forces", train_forces)
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
        forces = check_finite("forces", forces)
        out = np.empty(forces.shape, dtype=np.int64)
        for c in range(2):
            out[..., c] = np.searchsorted(self.edges[:, c], forces[..., c], side="right")
        return out

    def decode(self, classes) -> np.ndarray:
        if self.values is None:
            raise MdkerasError("quantile encoder used before fit: call fit(train_forces) first.")
        return _decode(self.values, classes)

    def state(self) -> dict:
        return {"name": self.name, "edges": self.edges.tolist(), "values": self.values.tolist()}


def make_encoder(name: str, *, classes: int, f_max: float | None = None):
    """An unfitted encoder by name; `paper` needs `f_max`."""
    check_choice("encoding", name, ENCODINGS)
    if name == "paper":
        if f_max is None:
            raise MdkerasError("the paper encoding needs f_max: pass f_max=|f(h)|.")
        return PaperEncoder(f_max, classes)
    return QuantileEncoder(classes)


def _decode(values: np.ndarray, classes) -> np.ndarray:
    classes = np.asarray(classes)
    k = len(values)
    if classes.shape[-1:] != (2,) or not np.issubdtype(classes.dtype, np.integer):
        raise MdkerasError(
            f"classes to decode have {classes.dtype} shape {classes.shape}: expected integer "
            "classes of shape (..., 2)."
        )
    bad = (classes < 0) | (classes >= k)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise MdkerasError(
            f"class {int(classes[where])} at index {where} is out of range: expected 0 <= class "
            f"< {k}."
        )
    return np.stack([values[classes[..., 0], 0], values[classes[..., 1], 1]], axis=-1)


def _check_f_max(f_max) -> float:
    return check_number("f_max", f_max, positive=True)


def _check_classes(classes) -> int:
    return check_int("classes", classes, min=2)


def fit_encoder(
    encoding: str, *, potential: str, window: float, grid: int, classes: int, train_forces
):
    """The encoder of a case or recovery setting, fitted on its training forces only; the paper
    encoding's range is `f_max = |f(h)|` at the cell side `h = window / grid` (SPEC §5)."""
    fm = potentials.f_max(potential, window / grid) if encoding == "paper" else None
    return make_encoder(encoding, classes=classes, f_max=fm).fit(train_forces)
