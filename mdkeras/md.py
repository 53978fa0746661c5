"""The `md` sampler's configurations (SPEC §2b): snapshots of equilibrated 2D Langevin MD.

For a state (potential, density, temperature) the generator runs several independent
trajectories (own placement, velocities and thermostat noise, each from
`SeedSequence(seed).spawn`), equilibrates each, then takes snapshots `spacing` apart. Every
configuration carries its trajectory id, so splits keep test trajectories apart from
training and validation (`datasets.split_groups`, fed by `md_trajectories`).

The run protocol per state (timestep, damping, equilibration, spacing) comes from `PROTOCOLS`,
measured once with this module's own functions (`energy_drift`, `decorrelation`,
`relaxation`); a state not in the table is measured on first use (`measure_protocol`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from mdkeras import engine
from mdkeras.checks import check_int, check_number
from mdkeras.datasets import TEST_FRACTION
from mdkeras.errors import MdkerasError
from mdkeras.potentials import check_potential

DRIFT_LIMIT = 1e-4  # NVE energy drift allowed, per particle per unit time, over DRIFT_STEPS
DRIFT_STEPS = 10_000
TIMESTEPS = (0.01, 0.005, 0.0025, 0.001)  # candidates, largest first
ACF_LIMIT = 0.05  # force autocorrelation allowed at the snapshot spacing
DISPLACEMENT = 0.5  # mean displacement required per spacing: the largest registry cell (8/16)
DAMP = 1.0  # Langevin damping time (reduced units)
TRAJECTORIES = 5  # the fewest that give a 20 % test split of whole trajectories
PARTICLES = 2_000


@dataclass(frozen=True)
class Protocol:
    """How one state is run: timestep, Langevin damping, equilibration and snapshot spacing (all
    reduced time), and the measured NVE drift (per particle per unit time) at that timestep."""

    timestep: float
    damp: float
    equilibration: float
    spacing: float
    drift: float

    def steps(self, duration: float) -> int:
        return max(1, round(duration / self.timestep))


# Measured with `measure_protocol(potential, density, 1.0)` (N = 2,000, seed 0, LAMMPS 20250722,
# Coulomb table of 20,000 knots). Every state passes at the largest candidate timestep, 0.01.
# Comments: NVE drift per particle per unit time over 10^4 steps; PE/N and the spread of counts
# in 8 x 8 blocks from the placement to 30 time units; force autocorrelation C and mean
# displacement at the spacing (C stays below 0.05 from there to 4 time units).
PROTOCOLS: dict[tuple[str, float, float], Protocol] = {
    # drift 1.6e-8; PE/N -0.346 -> -0.165, spread 1.74 -> 1.91; C 0.016, displacement 2.59
    ("lj", 0.05, 1.0): Protocol(0.01, DAMP, 26.0, 3.5, 1.6e-8),
    # drift 3.7e-8; PE/N -1.263 -> -0.591, spread 3.66 -> 3.58; C -0.025, displacement 0.52
    ("lj", 0.2, 1.0): Protocol(0.01, DAMP, 10.0, 0.5, 3.7e-8),
    # drift 2.5e-11; PE/N -2.280 -> -1.339, spread 4.60 -> 3.23; C -0.009, displacement 0.52
    ("lj", 0.5, 1.0): Protocol(0.01, DAMP, 19.0, 0.65, 2.5e-11),
    # drift 1.4e-7; PE/N -2.678 -> -1.881, spread 4.13 -> 2.80; C -0.004, displacement 0.50
    ("lj", 0.7, 1.0): Protocol(0.01, DAMP, 10.0, 0.95, 1.4e-7),
    # drift 8.9e-7; PE/N 0.043 -> 0.241, spread 0.82 -> 1.58; C 0.039, displacement 2.63
    ("coulomb", 0.05, 1.0): Protocol(0.01, DAMP, 20.0, 3.3, 8.9e-7),
    # drift -9.3e-8; PE/N 2.647 -> 2.994, spread 1.27 -> 2.74; C -0.044, displacement 1.30
    ("coulomb", 0.5, 1.0): Protocol(0.01, DAMP, 10.0, 1.45, -9.3e-8),
    # drift -1.5e-6; PE/N 13.048 -> 13.517, spread 2.70 -> 2.57; C -0.041, displacement 0.73
    ("coulomb", 2.0, 1.0): Protocol(0.01, DAMP, 10.0, 0.85, -1.5e-6),
}


@dataclass
class Configurations:
    """Snapshots of one state. Per configuration `c`: positions `(C, N, 2)` float64 in `[0, B)`,
    velocities and pair forces `(C, N, 2)`, the trajectory id `(C,)` int32, and LAMMPS's
    thermo `(C,)`: kinetic temperature, pressure, potential and kinetic energy per particle.
    `metadata` is everything that fixed the bytes (JSON-ready); `timings` is wall time (s)."""

    box: float
    positions: np.ndarray
    velocities: np.ndarray
    forces: np.ndarray
    trajectory: np.ndarray
    temperature: np.ndarray
    pressure: np.ndarray
    potential_energy: np.ndarray
    kinetic_energy: np.ndarray
    metadata: dict
    timings: dict = field(default_factory=dict)


def _check_state(potential, density, temperature):
    check_potential(potential)
    check_number("density", density, positive=True, noun="a number")
    check_number("temperature", temperature, positive=True, noun="a number")


def _positive_int(name, value, minimum=1):
    return check_int(name, value, min=minimum)


def protocol(potential: str, density: float, temperature: float) -> Protocol:
    """The run protocol of a state: from `PROTOCOLS`, else measured now (minutes of MD)."""
    _check_state(potential, density, temperature)
    key = (potential, float(density), float(temperature))
    if key not in PROTOCOLS:
        PROTOCOLS[key] = measure_protocol(potential, density, temperature)
    return PROTOCOLS[key]


def _simulation(
    potential, density, temperature, particles, seed, *, timestep, damp=DAMP, interaction=None
):
    """A placed, thermalised Langevin run (not yet equilibrated)."""
    sim = engine.Simulation(
        particles=particles,
        density=density,
        interaction=interaction or engine.interaction(potential),
        seed=seed,
    )
    try:
        sim.place()
        sim.thermalize(temperature)
        sim.langevin(temperature, damp, timestep)
    except Exception:
        sim.close()
        raise
    return sim


def trajectory_ids(
    configurations: int, trajectories: int = TRAJECTORIES, *, test_fraction: float = TEST_FRACTION
) -> np.ndarray:
    """`(C,)` int32 trajectory id of each configuration, contiguous and in order.

    Trajectory boundaries fall on SPEC §2's split: the last `max(1, round(C test_fraction))`
    configurations (the test split of any configuration-wise split) make up the last
    `max(1, round(k test_fraction))` of the `k = min(trajectories, C)` trajectories, and the
    rest share the others, balanced (the first ones one longer when it does not divide).
    """
    configurations = _positive_int("configurations", configurations, 2)
    k = min(_positive_int("trajectories", trajectories, 2), configurations)
    k_test = min(k - 1, max(1, round(k * test_fraction)))
    n_test = min(configurations - (k - k_test), max(1, round(configurations * test_fraction)))
    n_test = max(n_test, k_test)

    def balanced(n, parts):
        return [n // parts + (i < n % parts) for i in range(parts)]

    per = balanced(configurations - n_test, k - k_test) + balanced(n_test, k_test)
    return np.repeat(np.arange(k, dtype=np.int32), per)


def describe(
    potential: str,
    density: float,
    temperature: float = 1.0,
    *,
    configurations: int,
    seed: int,
    particles: int = PARTICLES,
    trajectories: int = TRAJECTORIES,
    run: Protocol | None = None,
    interaction: engine.Interaction | None = None,
) -> dict:
    """Everything that fixes the bytes of `generate(...)` with these arguments (JSON-ready):
    the state, sizes, seed, protocol, interaction and LAMMPS version. A cache key for md data."""
    _check_state(potential, density, temperature)
    particles = _positive_int("particles", particles, 2)
    seed = check_int("seed", seed, min=0)
    ids = trajectory_ids(configurations, trajectories)
    run = run or protocol(potential, density, temperature)
    inter = interaction or engine.interaction(potential)
    return {
        "sampler": "md",
        "potential": potential,
        "density": float(density),
        "temperature": float(temperature),
        "particles": particles,
        "configurations": len(ids),
        "trajectories": int(ids[-1]) + 1,
        "seed": int(seed),
        "interaction": inter.describe(),
        "lammps_version": engine.lammps_version(),
        **{key: float(value) for key, value in asdict(run).items()},
        "equilibration_steps": run.steps(run.equilibration),
        "spacing_steps": run.steps(run.spacing),
    }


def frames(
    potential: str,
    density: float,
    temperature: float = 1.0,
    *,
    configurations: int,
    seed: int,
    particles: int = PARTICLES,
    trajectories: int = TRAJECTORIES,
    run: Protocol | None = None,
    interaction: engine.Interaction | None = None,
    timings: dict | None = None,
) -> Iterator[tuple[int, engine.Frame, float]]:
    """Yield `(trajectory id, frame, box)` for each configuration, in order, as the MD runs
    (arguments as `generate`). `timings`, if given, accumulates wall seconds of `setup`,
    `equilibration` and `sampling` and the MD `steps` run."""
    _check_state(potential, density, temperature)
    ids = trajectory_ids(configurations, trajectories)
    particles = _positive_int("particles", particles, 2)
    seed = check_int("seed", seed, min=0)
    run = run or protocol(potential, density, temperature)
    clock = timings if timings is not None else {}
    for key in ("setup", "equilibration", "sampling", "steps"):
        clock.setdefault(key, 0)
    counts = np.bincount(ids)
    children = np.random.SeedSequence(int(seed)).spawn(len(counts))
    for t, (child, count) in enumerate(zip(children, counts, strict=True)):
        t0 = time.perf_counter()
        with _simulation(
            potential,
            density,
            temperature,
            particles,
            child,
            timestep=run.timestep,
            damp=run.damp,
            interaction=interaction,
        ) as sim:
            t1 = time.perf_counter()
            sim.run(run.steps(run.equilibration))
            t2 = time.perf_counter()
            clock["setup"] += t1 - t0
            clock["equilibration"] += t2 - t1
            clock["steps"] += run.steps(run.equilibration)
            for _ in range(count):
                t3 = time.perf_counter()
                sim.run(run.steps(run.spacing))
                frame = sim.frame()
                clock["sampling"] += time.perf_counter() - t3
                clock["steps"] += run.steps(run.spacing)
                yield t, frame, sim.box


def generate(
    potential: str,
    density: float,
    temperature: float = 1.0,
    *,
    configurations: int,
    seed: int,
    particles: int = PARTICLES,
    trajectories: int = TRAJECTORIES,
    run: Protocol | None = None,
    interaction: engine.Interaction | None = None,
) -> Configurations:
    """`configurations` equilibrated snapshots from `min(trajectories, configurations)`
    independent Langevin trajectories (`trajectory_ids` says which frame comes from which).

    Trajectory `k` is seeded by `SeedSequence(seed).spawn(k_total)[k]`; `run` overrides the
    state's `protocol` (tests use short ones); `interaction` replaces the potential's SPEC §2b
    interaction (`engine.ideal_gas()`, a recovered table). Same arguments, same bytes.
    """
    kwargs = dict(
        configurations=configurations,
        seed=seed,
        particles=particles,
        trajectories=trajectories,
        run=run,
        interaction=interaction,
    )
    metadata = describe(potential, density, temperature, **kwargs)
    timings: dict = {}
    out = list(frames(potential, density, temperature, timings=timings, **kwargs))
    md_seconds = timings["equilibration"] + timings["sampling"]
    timings["steps_per_second"] = timings["steps"] / md_seconds if md_seconds else math.nan

    def stack(name):
        return np.stack([getattr(f, name) for _, f, _ in out])

    def scalars(name):
        return np.array([getattr(f, name) for _, f, _ in out], dtype=np.float64)

    return Configurations(
        box=out[0][2],
        positions=stack("positions"),
        velocities=stack("velocities"),
        forces=stack("forces"),
        trajectory=np.array([t for t, _, _ in out], dtype=np.int32),
        temperature=scalars("temperature"),
        pressure=scalars("pressure"),
        potential_energy=scalars("potential_energy"),
        kinetic_energy=scalars("kinetic_energy"),
        metadata=metadata,
        timings=timings,
    )


def md_provenance(spec) -> dict:
    """`describe` for the configurations `md_configurations(spec)` yields: what a dataset's
    cache key and metadata need beyond the spec (protocol, interaction, LAMMPS version)."""
    return describe(
        spec.potential,
        spec.density,
        spec.temperature,
        configurations=spec.configurations,
        seed=spec.seed,
        particles=spec.particles,
    )


def md_trajectories(spec) -> np.ndarray:
    """The sampler table's hook: the `(C,)` trajectory id of each configuration that
    `md_configurations(spec)` yields (what `datasets.split_groups` keeps apart)."""
    return trajectory_ids(spec.configurations)


def md_configurations(
    spec, *, timings: dict | None = None
) -> Iterator[tuple[np.ndarray, float, np.ndarray]]:
    """The sampler table's hook: `spec.configurations` tuples `(positions (N, 2), box B,
    targets (T,))` of a `datasets.DatasetSpec` with `sampler="md"`, in configuration order.

    Frames come from `frames` (trajectories `trajectory_ids(spec.configurations)`; `timings`
    as there); targets are drawn without replacement from `SeedSequence([spec.seed, 1])`, a
    stream apart from the MD's.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(spec.seed), 1]))
    for _, frame, box in frames(
        spec.potential,
        spec.density,
        spec.temperature,
        configurations=spec.configurations,
        seed=spec.seed,
        particles=spec.particles,
        timings=timings,
    ):
        targets = rng.choice(spec.particles, size=spec.targets, replace=False).astype(np.int64)
        yield frame.positions, box, targets


# ------------------------------------------------------------------------------ measurements


def energy_drift(
    potential: str,
    density: float,
    temperature: float,
    timestep: float,
    *,
    particles: int = PARTICLES,
    steps: int = DRIFT_STEPS,
    equilibration: float = 10.0,
    every: int = 100,
    seed: int = 0,
) -> dict:
    """NVE energy conservation at `timestep`: equilibrate under Langevin for `equilibration`
    time, drop the thermostat, run `steps`, sample `E/N` every `every` steps.

    Returns `drift` (least-squares slope of `E/N` against time: per particle per unit time;
    inf if the run blows up), `rms` (rms of `E/N` about its mean) and the trace.
    """
    _check_state(potential, density, temperature)
    energy = []
    with _simulation(potential, density, temperature, particles, seed, timestep=timestep) as sim:
        try:
            sim.run(max(1, round(equilibration / timestep)))
            sim.nve(timestep)
            for _ in range(steps // every + 1):
                sim.run(every if energy else 0)
                energy.append(sim.thermo()["TotEng"])
        except MdkerasError as err:  # lost atoms, non-numeric coordinates: the step is too long
            return {"timestep": timestep, "drift": math.inf, "rms": math.inf, "error": str(err)}
    energy = np.asarray(energy)
    t = np.arange(len(energy)) * every * timestep
    slope = float(np.polyfit(t, energy, 1)[0])
    return {
        "timestep": timestep,
        "drift": slope,
        "rms": float(energy.std()),
        "steps": steps,
        "time": t,
        "energy": energy,
    }


def choose_timestep(
    potential: str, density: float, temperature: float, *, candidates=TIMESTEPS, **kwargs
) -> tuple[float, float]:
    """The largest candidate timestep whose NVE drift is within `DRIFT_LIMIT`: `(dt, drift)`."""
    for dt in candidates:
        drift = energy_drift(potential, density, temperature, dt, **kwargs)["drift"]
        if abs(drift) <= DRIFT_LIMIT:
            return dt, drift
    raise MdkerasError(
        f"no timestep in {candidates} keeps the NVE drift within {DRIFT_LIMIT} for {potential} "
        f"at density {density:g}, temperature {temperature:g}: expected one; pass smaller ones."
    )


def decorrelation(
    potential: str,
    density: float,
    temperature: float,
    timestep: float,
    *,
    particles: int = PARTICLES,
    equilibration: float = 10.0,
    duration: float = 4.0,
    stride: float = 0.05,
    origins: int = 3,
    seed: int = 0,
) -> dict:
    """How fast snapshots decorrelate: per-particle force autocorrelation
    `C(t) = <F_i(0).F_i(t)> / <F_i.F_i>` and mean displacement `<|r_i(t) - r_i(0)|>` for lags
    up to `duration` (reduced time, sampled every `stride`), averaged over particles and
    `origins` successive windows of one equilibrated Langevin trajectory."""
    _check_state(potential, density, temperature)
    every = max(1, round(stride / timestep))
    lags = int(round(duration / (every * timestep)))
    acf = np.zeros(lags + 1)
    disp = np.zeros(lags + 1)
    with _simulation(potential, density, temperature, particles, seed, timestep=timestep) as sim:
        sim.run(max(1, round(equilibration / timestep)))
        for _ in range(origins):
            f0, x_prev = sim.forces(), sim.positions()
            moved = np.zeros_like(x_prev)
            norm = np.mean(np.sum(f0 * f0, axis=1))
            for lag in range(1, lags + 1):
                sim.run(every)
                x = sim.positions()
                step = x - x_prev
                moved += step - sim.box * np.round(step / sim.box)
                x_prev = x
                acf[lag] += np.mean(np.sum(f0 * sim.forces(), axis=1)) / norm / origins
                disp[lag] += np.mean(np.hypot(moved[:, 0], moved[:, 1])) / origins
    acf[0] = 1.0
    return {"lag": np.arange(lags + 1) * every * timestep, "acf": acf, "displacement": disp}


def choose_spacing(measured: dict) -> float:
    """The shortest lag from which on `|C| < ACF_LIMIT` and where the mean displacement has
    reached `DISPLACEMENT`, from a `decorrelation` result."""
    lag, acf, disp = measured["lag"], measured["acf"], measured["displacement"]
    above = np.flatnonzero(np.abs(acf) >= ACF_LIMIT)
    first_acf = above[-1] + 1 if above.size else 0
    reached = np.flatnonzero(disp >= DISPLACEMENT)
    if first_acf >= len(lag) or not reached.size:
        raise MdkerasError(
            f"the snapshots do not decorrelate within {lag[-1]:g}: expected |C| < {ACF_LIMIT} "
            f"and displacement >= {DISPLACEMENT}; measure over a longer duration."
        )
    return round(float(lag[max(first_acf, reached[0])]), 9)


def relaxation(
    potential: str,
    density: float,
    temperature: float,
    timestep: float,
    *,
    particles: int = PARTICLES,
    duration: float = 30.0,
    every: float = 0.5,
    block: float = 8.0,
    seed: int = 0,
) -> dict:
    """Equilibration from the placement: potential energy per particle and the standard
    deviation of particle counts in `block x block` squares (the window's scale), every
    `every` time units for `duration`."""
    _check_state(potential, density, temperature)
    steps = max(1, round(every / timestep))
    pe, spread = [], []
    with _simulation(potential, density, temperature, particles, seed, timestep=timestep) as sim:
        cells = max(1, int(sim.box // block))
        for _ in range(int(round(duration / every)) + 1):
            sim.run(steps if pe else 0)
            pe.append(sim.thermo()["PotEng"])
            idx = np.minimum((sim.positions() / sim.box * cells).astype(int), cells - 1)
            counts = np.bincount(idx[:, 1] * cells + idx[:, 0], minlength=cells * cells)
            spread.append(counts.std())
    t = np.arange(len(pe)) * steps * timestep
    return {"time": t, "potential_energy": np.asarray(pe), "count_std": np.asarray(spread)}


def choose_equilibration(measured: dict, *, factor: float = 2.0, floor: float = 10.0) -> float:
    """`factor` times the first time after which both the potential energy and the block-count
    spread stay within three standard deviations of their second-half means (from a
    `relaxation` result), and at least `floor`."""
    t = measured["time"]
    start = 0.0
    for trace in (measured["potential_energy"], measured["count_std"]):
        late = trace[len(trace) // 2 :]
        out = np.flatnonzero(np.abs(trace - late.mean()) > 3 * late.std())
        if out.size:
            start = max(start, t[min(out[-1] + 1, len(t) - 1)])
    return float(max(factor * start, floor))


def measure_protocol(
    potential: str, density: float, temperature: float, *, seed: int = 0, report=None
) -> Protocol:
    """Measure a state's `Protocol` from scratch: the timestep (`choose_timestep`), the
    equilibration (`choose_equilibration` of `relaxation`), the spacing (`choose_spacing` of
    `decorrelation`). `report`, if given, is called with each measurement's summary line."""
    say = report or (lambda line: None)
    dt, drift = choose_timestep(potential, density, temperature, seed=seed)
    say(f"timestep {dt:g}: NVE drift {drift:.2e} per particle per unit time")
    rel = relaxation(potential, density, temperature, dt, seed=seed)
    equilibration = choose_equilibration(rel)
    say(
        f"equilibration {equilibration:g}: PE/N {rel['potential_energy'][0]:.4f} -> "
        f"{rel['potential_energy'][-1]:.4f}, count std {rel['count_std'][0]:.2f} -> "
        f"{rel['count_std'][-1]:.2f}"
    )
    dec = decorrelation(potential, density, temperature, dt, seed=seed)
    spacing = choose_spacing(dec)
    i = int(round(spacing / (dec["lag"][1] - dec["lag"][0])))
    say(
        f"spacing {spacing:g}: force acf {dec['acf'][i]:.3f}, mean displacement "
        f"{dec['displacement'][i]:.3f}"
    )
    return Protocol(
        timestep=dt, damp=DAMP, equilibration=equilibration, spacing=spacing, drift=drift
    )
