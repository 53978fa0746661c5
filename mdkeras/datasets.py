"""Datasets of (grid, force) samples with configuration-wise splits, cached on disk (SPEC §2).

A dataset is fully determined by its `DatasetSpec` (physics, descriptor, size, seed),
`FORMAT_VERSION` and its sampler's provenance (for `md`: LAMMPS version, run protocol,
interaction); that determines the cache key. The cache is our own `.npz`, written atomically
and checked on load, so an interrupted or corrupted file is detected and rebuilt.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mdkeras.checks import check_int
from mdkeras.descriptors import check_window, featurize
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_writer
from mdkeras.potentials import check_potential
from mdkeras.sampling import box_side, get_sampler

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
    temperature: float | None = None  # samplers with a temperature only (`Sampler.temperature`)

    def __post_init__(self):
        check_potential(self.potential)
        box = box_side(self.particles, self.density)
        check_window(self.window, self.grid, box)
        sampler = get_sampler(self.sampler)
        if (self.temperature is None) != (sampler.temperature is None):
            raise MdkerasError(
                f"temperature={self.temperature!r} is not allowed for sampler {self.sampler!r}: "
                + (
                    "expected None (it has no temperature)."
                    if sampler.temperature is None
                    else "expected a number > 0."
                )
            )
        check_int("seed", self.seed, min=0)
        check_int("targets", self.targets, min=1, max=self.particles)
        check_int(
            "samples",
            self.samples,
            min=3 * self.targets,
            hint=f"three configurations of {self.targets} targets: train, validation, test",
        )

    @property
    def box(self) -> float:
        return box_side(self.particles, self.density)

    @property
    def configurations(self) -> int:
        return math.ceil(self.samples / self.targets)

    def to_dict(self) -> dict:
        """The fields, without `temperature` when it is None (so uniform keys stay as they were)."""
        d = dataclasses.asdict(self)
        if d["temperature"] is None:
            del d["temperature"]
        return d

    @functools.cached_property
    def provenance(self) -> dict | None:
        """What fixes the bytes beyond the fields, from the sampler (`Sampler.describe`: for
        `md` the LAMMPS version, protocol and interaction), or None (`uniform`)."""
        return get_sampler(self.sampler).describe(self)

    def key(self) -> str:
        """Hex digest of the spec, the format version and the sampler's provenance (if any):
        the cache key. Without provenance the digest is that of the spec alone, as before."""
        payload = {"format": FORMAT_VERSION, **self.to_dict()}
        if self.provenance is not None:
            payload["provenance"] = self.provenance
        blob = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def filename(self) -> str:
        t = "" if self.temperature is None else f"-t{self.temperature:g}"
        return (
            f"{self.sampler}-{self.potential}-rho{self.density:g}{t}-w{self.window:g}"
            f"-n{self.grid}-s{self.samples}-seed{self.seed}-{self.key()[:12]}.npz"
        )


def split_groups(
    groups,
    *,
    test_fraction: float = TEST_FRACTION,
    validation_fraction: float = VALIDATION_FRACTION,
) -> dict[str, np.ndarray]:
    """Configuration indices of `train`, `val`, `test` from `(C,)` non-decreasing group ids
    (the trajectory of each configuration; `arange(C)` when each is its own).

    The last `max(1, round(k test_fraction))` of the `k` groups are the test split, so a test
    configuration never shares a group with a training or validation one; validation is the
    last `max(1, round(n validation_fraction))` of the `n` training configurations (SPEC §2:
    with one configuration per group, the last fifth tests, the tenth before it validates).
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or np.any(np.diff(groups) < 0):
        raise MdkerasError(
            f"groups of shape {groups.shape} are not allowed: expected one non-decreasing id "
            "per configuration."
        )
    ids = np.unique(groups)
    if len(ids) < 2:
        raise MdkerasError(
            f"{len(ids)} trajectory cannot be split: expected >= 2 (test trajectories apart "
            "from training ones); generate more trajectories."
        )
    n_test = min(len(ids) - 1, max(1, round(len(ids) * test_fraction)))
    is_test = np.isin(groups, ids[-n_test:])
    test, rest = np.flatnonzero(is_test), np.flatnonzero(~is_test)
    if len(rest) < 2:
        raise MdkerasError(
            f"{len(rest)} training configuration cannot give a validation part: expected >= 2."
        )
    n_val = min(len(rest) - 1, max(1, round(len(rest) * validation_fraction)))
    return {"train": rest[:-n_val], "val": rest[-n_val:], "test": test}


@dataclass
class Dataset:
    """Grids `(S, n, n)` uint8, forces `(S, 2)` float64, configuration id per sample `(S,)`."""

    spec: DatasetSpec
    grids: np.ndarray
    forces: np.ndarray
    config: np.ndarray

    def split_indices(self) -> dict[str, np.ndarray]:
        """Sample indices of `train`, `val`, `test`, split by configuration (SPEC §2) and, for a
        sampler whose configurations come in trajectories, by trajectory (`split_groups`)."""
        groups = get_sampler(self.spec.sampler).configuration_groups(self.spec)
        parts = split_groups(groups)
        return {name: np.flatnonzero(np.isin(self.config, c)) for name, c in parts.items()}

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """`(grids, forces)` of one split."""
        idx = self.split_indices()
        if name not in idx:
            raise MdkerasError(f"split={name!r} is not allowed: expected 'train', 'val' or 'test'.")
        return self.grids[idx[name]], self.forces[idx[name]]

    def digest(self) -> str:
        return _digest(self.grids, self.forces, self.config)


def generate(spec: DatasetSpec, *, progress: bool = True) -> Dataset:
    """Make `spec.configurations` configurations with the spec's sampler and featurize their
    targets; the bytes depend only on the spec (each sampler seeds from `spec.seed`)."""
    grids, forces, config = [], [], []
    remaining = spec.samples
    bar = tqdm(
        get_sampler(spec.sampler).generate(spec),
        total=spec.configurations,
        desc=f"dataset {spec.potential} rho={spec.density:g} n={spec.grid}",
        unit="config",
        disable=not progress,
        file=sys.stderr,
        leave=False,
        mininterval=0.5,
    )
    for i, (positions, box, targets) in enumerate(bar):
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
    """Write atomically (`mdkeras.files.atomic_writer`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "spec": data.spec.to_dict(),
        "sha256": data.digest(),
    }
    if data.spec.provenance is not None:
        meta["provenance"] = data.spec.provenance
    fix = f"set {CACHE_ENV} or pass a writable cache directory"
    with atomic_writer(path, fix=fix) as fh:
        np.savez(
            fh,
            grids=data.grids,
            forces=data.forces,
            config=data.config,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
        )


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata stored with a cached dataset: format, spec, checksum and, for a sampler
    with provenance, what fixed its bytes (for `md`: timestep, damping, equilibration,
    spacing, measured NVE drift, interaction, LAMMPS version)."""
    return _load(path)[0]


def _load(path, *arrays: str) -> tuple[dict, list[np.ndarray]]:
    """A cache file's metadata and the named arrays; any defect raises `MdkerasError`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(z["meta"].tobytes().decode()), [z[name] for name in arrays]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise MdkerasError(
            f"dataset cache {path} is corrupt or truncated ({type(err).__name__})."
        ) from None


def _read(path: Path, spec: DatasetSpec) -> Dataset:
    """Load and verify a cache file; any defect raises `MdkerasError` in one line."""
    meta, (grids, forces, config) = _load(path, "grids", "forces", "config")
    if (
        meta.get("format") != FORMAT_VERSION
        or meta.get("spec") != spec.to_dict()
        or meta.get("provenance") != spec.provenance
    ):
        raise MdkerasError(f"dataset cache {path} was made for another spec or format.")
    if _digest(grids, forces, config) != meta.get("sha256"):
        raise MdkerasError(f"dataset cache {path} fails its checksum.")
    return Dataset(spec, grids, forces, config)
