"""Datasets of (grid, force) samples with configuration-wise splits, cached on disk (SPEC §2).

A dataset is fully determined by its `DatasetSpec` (physics, descriptor, size, seed) and
`FORMAT_VERSION`; that determines the cache key. The cache is our own `.npz`, written atomically
and checked on load, so an interrupted or corrupted file is detected and rebuilt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mdkeras.descriptors import check_window, featurize
from mdkeras.errors import MdkerasError
from mdkeras.potentials import check_potential
from mdkeras.sampling import box_side, uniform_configuration

FORMAT_VERSION = 1
TEST_FRACTION = 0.2  # of configurations, the last ones
VALIDATION_FRACTION = 0.1  # of the training configurations, carved from their end
CACHE_ENV = "MDKERAS_CACHE"


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a dataset's bytes."""

    potential: str
    density: float
    window: float
    grid: int
    samples: int
    seed: int
    particles: int = 2_000
    targets: int = 250
    sampler: str = "uniform"

    def __post_init__(self):
        check_potential(self.potential)
        box = box_side(self.particles, self.density)
        check_window(self.window, self.grid, box)
        if self.sampler != "uniform":
            raise MdkerasError(f"sampler={self.sampler!r} is not allowed: expected 'uniform'.")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed or self.seed < 0:
            raise MdkerasError(f"seed={self.seed!r} is not allowed: expected an integer >= 0.")
        if int(self.targets) != self.targets or not 1 <= self.targets <= self.particles:
            raise MdkerasError(
                f"targets={self.targets!r} is not allowed: expected 1 <= targets <= particles."
            )
        if int(self.samples) != self.samples or self.samples < 3 * self.targets:
            raise MdkerasError(
                f"samples={self.samples!r} is not allowed: expected an integer >= "
                f"{3 * self.targets} (three configurations of {self.targets} targets: train, "
                "validation, test)."
            )

    @property
    def box(self) -> float:
        return box_side(self.particles, self.density)

    @property
    def configurations(self) -> int:
        return math.ceil(self.samples / self.targets)

    def key(self) -> str:
        """Hex digest of the spec and the format version: the cache key."""
        blob = json.dumps({"format": FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def filename(self) -> str:
        return (
            f"{self.sampler}-{self.potential}-rho{self.density:g}-w{self.window:g}-n{self.grid}"
            f"-s{self.samples}-seed{self.seed}-{self.key()[:12]}.npz"
        )


@dataclass
class Dataset:
    """Grids `(S, n, n)` uint8, forces `(S, 2)` float64, configuration id per sample `(S,)`."""

    spec: DatasetSpec
    grids: np.ndarray
    forces: np.ndarray
    config: np.ndarray

    def split_indices(self) -> dict[str, np.ndarray]:
        """Sample indices of `train`, `val`, `test`, split by configuration (SPEC §2)."""
        c = self.spec.configurations
        n_test = max(1, round(c * TEST_FRACTION))
        n_val = max(1, round((c - n_test) * VALIDATION_FRACTION))
        n_train = c - n_test - n_val
        bounds = {
            "train": (0, n_train),
            "val": (n_train, n_train + n_val),
            "test": (n_train + n_val, c),
        }
        return {
            name: np.flatnonzero((self.config >= lo) & (self.config < hi))
            for name, (lo, hi) in bounds.items()
        }

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`(grids, forces)` of one split."""
        idx = self.split_indices()
        if name not in idx:
            raise MdkerasError(f"split={name!r} is not allowed: expected 'train', 'val' or 'test'.")
        return self.grids[idx[name]], self.forces[idx[name]]

    def digest(self) -> str:
        return _digest(self.grids, self.forces, self.config)


def generate(spec: DatasetSpec, *, progress: bool = True) -> Dataset:
    """Sample `spec.configurations` configurations and featurize their targets.

    Configuration `i` uses its own generator from `SeedSequence(seed).spawn`, so the bytes
    depend only on the spec.
    """
    children = np.random.SeedSequence(spec.seed).spawn(spec.configurations)
    grids, forces, config = [], [], []
    remaining = spec.samples
    bar = tqdm(
        children,
        desc=f"dataset {spec.potential} rho={spec.density:g} n={spec.grid}",
        unit="config",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        mininterval=0.5,
    )
    for i, child in enumerate(bar):
        rng = np.random.default_rng(child)
        positions, box, targets = uniform_configuration(
            rng, spec.particles, spec.density, spec.targets
        )
        targets = targets[: min(remaining, spec.targets)]
        g, f = featurize(
            positions, box, targets, potential=spec.potential, window=spec.window, grid=spec.grid
        )
        grids.append(g)
        forces.append(f)
        config.append(np.full(len(targets), i, dtype=np.int32))
        remaining -= len(targets)
    return Dataset(spec, np.concatenate(grids), np.concatenate(forces), np.concatenate(config))


def default_cache_dir() -> Path:
    """`$MDKERAS_CACHE`, else `$XDG_CACHE_HOME/mdkeras`, else `~/.cache/mdkeras`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mdkeras"


def load_or_build(
    spec: DatasetSpec, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> Dataset:
    """The dataset for `spec`: from the cache if present and intact, else generated and cached.

    A truncated or corrupt cache file is reported in one line on stderr and rebuilt.
    """
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / spec.filename
    if path.exists():
        try:
            return _read(path, spec)
        except MdkerasError as err:
            print(f"warning: {err} Rebuilding it.", file=sys.stderr)
    data = generate(spec, progress=progress)
    try:
        _write(path, data)
    except OSError as err:
        raise MdkerasError(
            f"cannot write the dataset cache {path}: {err.strerror}; set {CACHE_ENV} or pass "
            "a writable cache directory."
        ) from None
    return data


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _write(path: Path, data: Dataset) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "spec": dataclasses.asdict(data.spec),
        "sha256": data.digest(),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                grids=data.grids,
                forces=data.forces,
                config=data.config,
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path, spec: DatasetSpec) -> Dataset:
    """Load and verify a cache file; any defect raises `MdkerasError` in one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            grids, forces, config = z["grids"], z["forces"], z["config"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise MdkerasError(
            f"dataset cache {path} is corrupt or truncated ({type(err).__name__})."
        ) from None
    if meta.get("format") != FORMAT_VERSION or meta.get("spec") != dataclasses.asdict(spec):
        raise MdkerasError(f"dataset cache {path} was made for another spec or format.")
    if _digest(grids, forces, config) != meta.get("sha256"):
        raise MdkerasError(f"dataset cache {path} fails its checksum.")
    return Dataset(spec, grids, forces, config)
