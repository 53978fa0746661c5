"""Molecular dynamics with a given force source at one state, and the scores of the simulation.

The protocol (one seed; every force source of a comparison runs it with the same seeds):
place `N` particles at random (LAMMPS `create_atoms`) and minimise with the true potential (so
every source starts from the same state, `start_positions`), draw Maxwell-Boltzmann velocities
at `T` (the same for every source at a seed), equilibrate under Langevin
NVT for the state's `md.protocol` equilibration time, then

- **NVT production** for `steps` steps: a frame every `sample_every` steps (temperature,
  pressure, energy, unwrapped positions for the MSD), a structure frame every `structure_every`
  steps (g(r), the true potential's energy, stability);
- **NVE** for `nve_steps` steps from the last production state (energy and momentum drift).

The Langevin thermostat slows diffusion (the measured D is that of the thermostatted liquid,
the same for every source), so D compares sources, not the NVE liquid.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mdkeras import engine, md, observables, pairforces
from mdkeras.checks import check_int
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_writer
from mdkeras.potentials import check_potential, get

STEPS = 20_000  # NVT production steps (200 time units at dt = 0.01)
NVE_STEPS = 10_000
SAMPLE_EVERY = 20  # steps between thermo/MSD frames (0.2 time units at dt = 0.01)
STRUCTURE_EVERY = 40  # steps between g(r) frames: 25 frames in a stability window
NVE_SAMPLE_EVERY = 50  # steps between NVE frames (each evaluates the true potential)
MAX_PARTICLES = 100_000  # a run's samples are kept in memory: ~2.4 GB at the default steps
CHECKPOINT_SECONDS = 300.0  # wall seconds between checkpoints of a run given a checkpoint file
STABILITY_WINDOW = observables.STABILITY_WINDOW  # time units of g(r) per stability check
RDF_BINS = 200
RDF_MAX = 5.0  # r_max of g(r) (reduced units)
MSD_MAX_LAG = 20.0  # longest MSD lag (time units)
DIFFUSION_LAGS = (5.0, 20.0)  # lag range of the D fit: past the ballistic and thermostat times


@dataclass(frozen=True)
class Schedule:
    """The steps of one run: timestep, Langevin damping and the step counts of each phase."""

    timestep: float
    damp: float
    equilibration_steps: int
    steps: int
    nve_steps: int
    sample_every: int
    structure_every: int
    nve_sample_every: int = NVE_SAMPLE_EVERY
    stability_window: float = STABILITY_WINDOW

    def describe(self) -> dict:
        return asdict(self)


def schedule(
    potential: str,
    density: float,
    temperature: float,
    *,
    steps: int = STEPS,
    nve_steps: int = NVE_STEPS,
    sample_every: int = SAMPLE_EVERY,
    structure_every: int = STRUCTURE_EVERY,
) -> Schedule:
    """The schedule at a state: timestep, damping and equilibration from `md.protocol`."""
    p = md.protocol(potential, density, temperature)
    steps = check_int("steps", steps, min=1)
    nve_steps = check_int("nve_steps", nve_steps, min=0)
    sample_every = check_int("sample_every", sample_every, min=1)
    structure_every = check_int("structure_every", structure_every, min=1)
    if nve_steps % NVE_SAMPLE_EVERY:
        raise MdkerasError(
            f"nve_steps={nve_steps} is not allowed: expected a multiple of {NVE_SAMPLE_EVERY}."
        )
    if structure_every % sample_every or steps % structure_every:
        raise MdkerasError(
            f"steps={steps}, structure_every={structure_every}, sample_every={sample_every}: "
            "expected steps a multiple of structure_every, and that a multiple of sample_every."
        )
    shortest = observables.BLOCKS * structure_every
    if steps < shortest:
        raise MdkerasError(
            f"steps={steps} is not allowed: expected at least {shortest} "
            f"({observables.BLOCKS} structure frames, one per block of the standard errors)."
        )
    return Schedule(
        timestep=p.timestep,
        damp=p.damp,
        equilibration_steps=p.steps(p.equilibration),
        steps=steps,
        nve_steps=nve_steps,
        sample_every=sample_every,
        structure_every=structure_every,
    )


@dataclass(frozen=True)
class ForceSource:
    """What moves the particles: a pair `interaction` (the truth, a recovered table) or, for a
    force field from Python, `ideal_gas` plus `field(positions (N, 2), box) -> forces (N, 2)`
    through `fix external`. `identity` is JSON-ready (kind, source, table digest...)."""

    kind: str
    interaction: engine.Interaction
    identity: dict
    field: Callable | None = None


def true_source(potential: str) -> ForceSource:
    inter = engine.interaction(potential)
    return ForceSource("true", inter, {"kind": "true", "interaction": inter.describe()})


@dataclass
class Trajectory:
    """What one run produced. NVT arrays over its `F` frames: `times` (F,), `temperature`,
    `pressure`, `potential_energy` (the source's own, per particle), `momentum` (F, 2) per
    particle, `unwrapped` (F, N, 2); over its `S` structure frames: `structure_times` (S,),
    `structure` (S, N, 2) wrapped positions, `true_energy` (S,) the true potential's energy per
    particle and `true_pressure` (S,) its virial pressure on those frames. NVE: `nve_times`,
    `nve_energy` (the source's total energy per particle),
    `nve_true_energy` (kinetic + true potential, per particle, on every sampled NVE frame),
    `nve_momentum` (per particle)."""

    box: float
    times: np.ndarray
    temperature: np.ndarray
    pressure: np.ndarray
    potential_energy: np.ndarray
    momentum: np.ndarray
    unwrapped: np.ndarray
    structure_times: np.ndarray
    structure: np.ndarray
    true_energy: np.ndarray
    true_pressure: np.ndarray
    nve_times: np.ndarray
    nve_energy: np.ndarray
    nve_true_energy: np.ndarray
    nve_momentum: np.ndarray
    timings: dict


def _true_energy(potential: str, positions, box) -> float:
    """The true potential's energy per particle (shifted to zero at its MD cut-off)."""
    return _true_state(potential, positions, box, 0.0)[0]


def _true_state(potential: str, positions, box, temperature: float) -> tuple[float, float]:
    """(energy per particle, pressure) of the true potential on `positions` at the kinetic
    `temperature`: LAMMPS's 2D virial pressure `(dof T + W_xx + W_yy) / (2 B^2)`, dof = 2N - 2."""
    cutoff = get(potential).md_cutoff
    _, energy, virial = pairforces.pair_forces(potential, positions, box, cutoff)
    n = len(positions)
    pressure = ((2 * n - 2) * temperature + virial[0] + virial[1]) / (2.0 * box * box)
    return energy / n, float(pressure)


def check_particles(particles, density: float, source: ForceSource) -> int:
    """`particles` if a run of this module can score them at `density` with `source`: a box
    wider than twice g(r)'s range, the interaction's cut-off and a learned field's reach (its
    `reach` attribute, e.g. `energy.field`'s), and at most `MAX_PARTICLES` (the samples are
    kept in memory); one error naming `--particles` otherwise."""
    try:
        n = check_int("particles", particles, min=2)
    except MdkerasError:
        n = None
    reach = max(RDF_MAX, source.interaction.cutoff, getattr(source.field, "reach", 0.0))
    least = int(math.floor(density * (2 * reach) ** 2)) + 1
    if n is None or n < least or n > MAX_PARTICLES:
        raise MdkerasError(
            f"--particles {particles} is not allowed at density {density:g}: expected "
            f"{least:,} to {MAX_PARTICLES:,} (the box must exceed 2 x {reach:.4g}: g(r)'s range, "
            "the cut-off or the model's reach; larger runs' samples would not fit in memory)."
        )
    return n


def start_positions(potential: str, density: float, particles: int, seed: int) -> np.ndarray:
    """The initial state of every run at a seed: the random placement, minimised with the
    **true** potential (a recovered table's inner end may lie above what a minimiser's trial
    steps reach; a force field from Python has no energy to minimise)."""
    with engine.Simulation(
        particles=particles, density=density, interaction=engine.interaction(potential), seed=seed
    ) as sim:
        sim.place()
        return sim.positions()


def check_covers(source: ForceSource, start: np.ndarray, box: float) -> None:
    """One error if `source`'s table starts above the closest pair of `start` (LAMMPS would
    stop the run on its first step): before any MD."""
    inner = source.interaction.inner
    if inner is None:
        return
    closest = pairforces.closest_distance(start, box)
    if closest <= inner:
        raise MdkerasError(
            f"the {source.interaction.name} table starts at r = {inner:.4g} but the start has a "
            f"pair at r = {closest:.4g}: expected a table that covers the closest approach; "
            "export it with a higher energy barrier (tables.export(..., barrier=...))."
        )


def run(
    potential: str,
    density: float,
    temperature: float,
    source: ForceSource,
    *,
    seed: int,
    plan: Schedule,
    particles: int = md.PARTICLES,
    progress: Callable[[float], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> Trajectory:
    """Run the protocol of this module with `source`; `progress(fraction)` after each chunk.

    `checkpoint`: a file (`.npz`) the run's state is written to, atomically, at the first chunk
    boundary after every `checkpoint_seconds` of wall time: positions, velocities, the periodic
    images crossed, the samples so far and the seconds spent. A run given an existing
    checkpoint of the same run (potential, state, seed, plan, source) goes on from it; one of
    another run is an error. The thermostat's random stream after a resume is a new one (seeded
    from the seed and the step), so a resumed run is another sample of the same statistics, not
    the same trajectory (as a run on another CPU is). The file is left for the caller to remove
    once the result is safe."""
    check_potential(potential)
    t0 = time.perf_counter()
    key = checkpoint_key(potential, density, temperature, source, seed, plan, particles)
    saved = load_checkpoint(checkpoint, key) if checkpoint is not None else None
    done = 0 if saved is None else int(saved["done"])
    start = None
    if saved is None:
        start = start_positions(potential, density, particles, seed)
        check_covers(source, start, math.sqrt(particles / density))
    eq_end = plan.equilibration_steps
    prod_end = eq_end + plan.steps
    total = prod_end + plan.nve_steps // plan.nve_sample_every * plan.nve_sample_every
    # the samples so far, the seconds of each phase, the steps runs were resumed at
    samples = {
        name: [] if saved is None else list(saved[name])
        for name in ("thermo", "unwrapped", "structure", "true_energy", "nve")
    }
    seconds = dict.fromkeys(("equilibration", "production", "nve"), 0.0)
    resumed = []
    if saved is not None:
        seconds.update(json.loads(str(saved["seconds"])))
        resumed = [*json.loads(str(saved["resumed"])), done]
    # a resumed run's thermostat starts a stream of its own (seed and step); its placement
    # draws are overwritten by the saved state
    sim_seed = seed if saved is None else _resume_seed(seed, done)
    sim = engine.Simulation(
        particles=particles, density=density, interaction=source.interaction, seed=sim_seed
    )
    with sim:
        box = sim.box
        sim.place(minimize=False)  # the same random stream as `start_positions`, then its state
        if saved is None:
            sim.set_state(start)
            sim.thermalize(temperature)
            shift = np.zeros((particles, 2))
        else:
            sim.set_state(saved["positions"], saved["velocities"])
            shift = np.asarray(saved["shift"], dtype=np.float64)  # images crossed before
        if source.field is not None:
            sim.external(lambda step, x: source.field(x, box))
        if done < prod_end:
            sim.langevin(temperature, plan.damp, plan.timestep)
        else:
            sim.nve(plan.timestep)
        if saved is None:  # set-up and minimisation count with the equilibration
            seconds["equilibration"] += time.perf_counter() - t0
        last_save = time.perf_counter()

        def phase(step: int) -> str:
            return "equilibration" if step < eq_end else "production" if step < prod_end else "nve"

        def advance(steps):
            nonlocal done
            t = time.perf_counter()
            sim.run(steps)
            if not np.all(np.isfinite(sim.positions())):
                raise MdkerasError(f"{source.kind} run lost its atoms at step {done + steps}.")
            seconds[phase(done)] += time.perf_counter() - t
            done += steps
            if progress is not None:
                progress(done / total)

        def save_if_due():
            nonlocal last_save
            if checkpoint is None or time.perf_counter() - last_save < checkpoint_seconds:
                return
            wrapped = sim.positions()
            _save_checkpoint(
                checkpoint,
                key,
                done=done,
                positions=wrapped,
                velocities=sim.velocities(),
                shift=sim.unwrapped_positions() + shift - wrapped,
                samples=samples,
                seconds=seconds,
                resumed=resumed,
            )
            last_save = time.perf_counter()

        chunk = max(plan.sample_every, plan.equilibration_steps // 20 or 1)
        while done < eq_end:
            advance(min(chunk, eq_end - done))
            save_if_due()
        while done < prod_end:
            advance(plan.sample_every)
            t = sim.thermo()
            v = sim.velocities()
            samples["thermo"].append((t["Temp"], t["Press"], t["PotEng"], *v.mean(axis=0)))
            samples["unwrapped"].append(sim.unwrapped_positions() + shift)
            if (done - eq_end) % plan.structure_every == 0:
                x = sim.positions()
                samples["structure"].append(x)
                samples["true_energy"].append(_true_state(potential, x, box, t["Temp"]))
            if done == prod_end:
                sim.nve(plan.timestep)
            save_if_due()
        while done < total:
            advance(plan.nve_sample_every)
            t = sim.thermo()
            v = sim.velocities()
            u_true = _true_energy(potential, sim.positions(), box)
            samples["nve"].append((t["TotEng"], t["KinEng"] + u_true, *v.mean(axis=0)))
            save_if_due()

    thermo = np.asarray(samples["thermo"], dtype=np.float64).reshape(-1, 5)
    nve = np.asarray(samples["nve"], dtype=np.float64).reshape(-1, 4)
    true_energy = np.asarray(samples["true_energy"], dtype=np.float64).reshape(-1, 2)
    structure = np.asarray(samples["structure"], dtype=np.float64).reshape(-1, particles, 2)
    dt = plan.timestep * plan.sample_every
    timings = {
        "equilibration_seconds": seconds["equilibration"],
        "production_seconds": seconds["production"],
        "nve_seconds": seconds["nve"],
        "steps_per_second": (plan.steps + plan.nve_steps)
        / max(seconds["production"] + seconds["nve"], 1e-9),
    }
    if resumed:
        timings["resumed_at_steps"] = resumed
    return Trajectory(
        box=box,
        times=dt * np.arange(1, len(thermo) + 1),
        temperature=thermo[:, 0],
        pressure=thermo[:, 1],
        potential_energy=thermo[:, 2],
        momentum=thermo[:, 3:5],
        unwrapped=np.asarray(samples["unwrapped"], dtype=np.float64).reshape(-1, particles, 2),
        structure_times=plan.timestep
        * plan.structure_every
        * np.arange(1, len(structure) + 1, dtype=np.float64),
        structure=structure,
        true_energy=true_energy[:, 0],
        true_pressure=true_energy[:, 1],
        nve_times=plan.timestep * plan.nve_sample_every * np.arange(1, len(nve) + 1),
        nve_energy=nve[:, 0],
        nve_true_energy=nve[:, 1],
        nve_momentum=nve[:, 2:4],
        timings=timings,
    )


def _resume_seed(seed: int, step: int) -> int:
    """The seed of a run resumed at `step`: a stream apart from the original's and from any
    other resume's."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0] % (2**31 - 1))


def _save_checkpoint(path, key: dict, *, samples: dict, seconds: dict, resumed, **arrays) -> None:
    """The run's state as `.npz`, written atomically (`files.atomic_writer`)."""
    with atomic_writer(path) as f:
        np.savez(
            f,
            key=json.dumps(key, sort_keys=True),
            seconds=json.dumps(seconds),
            resumed=json.dumps(list(resumed)),
            **arrays,
            **{name: np.asarray(values, dtype=np.float64) for name, values in samples.items()},
        )


def checkpoint_key(
    potential: str,
    density: float,
    temperature: float,
    source: ForceSource,
    seed: int,
    plan: Schedule,
    particles: int,
) -> dict:
    """What a checkpoint must match to be this run's."""
    return {
        "potential": potential,
        "density": float(density),
        "temperature": float(temperature),
        "seed": int(seed),
        "particles": int(particles),
        "plan": plan.describe(),
        "source": source.identity,
    }


def load_checkpoint(path, key: dict):
    """The saved state of this run at `path`, None if there is no file; one error if the file
    is not a checkpoint or belongs to another run."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            saved = {name: data[name] for name in data.files}
        stored = json.loads(str(saved["key"]))
    except (OSError, ValueError, KeyError) as err:
        raise MdkerasError(
            f"checkpoint {path} cannot be read ({type(err).__name__}): delete it to start the "
            "run afresh."
        ) from None
    if stored != json.loads(json.dumps(key, sort_keys=True)):
        raise MdkerasError(
            f"checkpoint {path} belongs to another run (its state, seed, schedule or force "
            "source differs): delete it, or use a fresh --out."
        )
    return saved


def python_pair_source(potential: str) -> ForceSource:
    """The true pair force computed in Python (`pairforces.pair_forces`, with its energy and
    virial) through `fix external`: what a learned force field costs without the model."""
    cutoff = get(potential).md_cutoff
    return ForceSource(
        "python-pair",
        engine.ideal_gas(cutoff),
        {"kind": "python-pair", "potential": potential},
        field=lambda x, box: pairforces.pair_forces(potential, x, box, cutoff),
    )


def steps_per_second(
    potential: str,
    density: float,
    temperature: float,
    source: ForceSource,
    *,
    particles: int = md.PARTICLES,
    steps: int = 200,
    seed: int = 0,
) -> float:
    """Langevin MD steps per second with `source` from the protocol's start (set-up, neighbour
    lists and first forces untimed; `engine.steps_per_second`)."""
    plan = md.protocol(potential, density, temperature)
    start = start_positions(potential, density, particles, seed)
    with engine.Simulation(
        particles=particles, density=density, interaction=source.interaction, seed=seed
    ) as sim:
        sim.place(minimize=False)
        sim.set_state(start)
        sim.thermalize(temperature)
        if source.field is not None:
            box = sim.box
            sim.external(lambda step, x: source.field(x, box))
        sim.langevin(temperature, plan.damp, plan.timestep)
        return engine.steps_per_second(sim, steps)


def _mean_sem(x) -> dict:
    mean, sem = observables.block_average(np.asarray(x, dtype=np.float64))
    return {"mean": float(mean), "sem": float(sem)}


def _slope(times, values) -> dict:
    slope, err = observables.drift(times, values)
    return {"value": float(slope), "error": float(err)}


def score(
    traj: Trajectory,
    temperature: float,
    *,
    reference=None,
    has_energy: bool = True,
    window: float = STABILITY_WINDOW,
) -> dict:
    """The simulation's observables (JSON-ready): g(r), pressure, energies, temperature, MSD and
    D, NVE drifts and MDsim's stability, against `reference = (r, g_ref)` (the true potential's
    g(r) at the same state and seed; None: the run's own g(r), for the truth itself).
    `has_energy`: False for a force field without an energy (its own energy and drift: None);
    `window`: time units of g(r) per stability check."""
    r_max = min(RDF_MAX, 0.49 * traj.box)
    r, g, g_err = observables.rdf(traj.structure, traj.box, r_max=r_max, bins=RDF_BINS)
    if reference is None:
        reference = (r, g)
    dt = float(traj.times[1] - traj.times[0])
    max_lag = max(1, min(len(traj.times) - 1, round(MSD_MAX_LAG / dt)))
    lags = np.unique(np.round(np.geomspace(1, max_lag, 60)).astype(int))
    unwrapped = traj.unwrapped
    groups = observables.msd(unwrapped, lags, blocks=observables.BLOCKS)
    msd = groups.mean(axis=0)  # equal groups (N a multiple of BLOCKS) or nearly so
    lag_times = lags * dt
    hi = min(DIFFUSION_LAGS[1], lag_times[-1])  # a short run fits the upper half of its lags
    lo = min(DIFFUSION_LAGS[0], hi / 2)
    d, d_err = observables.diffusion(lag_times, groups, lag_range=(lo, hi))
    p_norm = np.linalg.norm(traj.nve_momentum, axis=1)
    has_nve = len(traj.nve_times) >= observables.BLOCKS  # drift needs a block error
    stability = observables.stability(
        traj.structure_times,
        traj.structure,
        reference,
        box=traj.box,
        temperatures=traj.temperature[
            np.searchsorted(traj.times, traj.structure_times).clip(0, len(traj.times) - 1)
        ],
        temperature=temperature,
        window=window,
    )
    return {
        "rdf": {"r": r.tolist(), "g": g.tolist(), "g_err": g_err.tolist(), "r_max": r_max},
        "temperature": _mean_sem(traj.temperature),
        # a force field without pair virial has no pressure of its own: the truth's on its frames
        "pressure": _mean_sem(traj.pressure if has_energy else traj.true_pressure),
        "pressure_source": "own virial" if has_energy else "true potential on the frames",
        "true_pressure": _mean_sem(traj.true_pressure),
        "potential_energy": _mean_sem(traj.potential_energy) if has_energy else None,
        "true_potential_energy": _mean_sem(traj.true_energy),
        "msd": {"lag": lag_times.tolist(), "value": msd.tolist()},
        "diffusion": {"value": float(d), "error": float(d_err), "lag_range": [lo, hi]},
        "nve": {
            "energy_drift": _slope(traj.nve_times, traj.nve_energy)
            if has_energy and has_nve
            else None,
            "true_energy_drift": _slope(traj.nve_times, traj.nve_true_energy) if has_nve else None,
            "momentum_drift": _slope(traj.nve_times, p_norm) if has_nve else None,
            "final_momentum": float(p_norm[-1]) if has_nve else None,
        },
        "stability": stability,
        "traces": _traces(traj),
    }


def _traces(traj: Trajectory, points: int = 200) -> dict:
    """Temperature and energy traces, thinned to about `points` values each, for plots."""

    def thin(t, *ys):
        step = max(1, math.ceil(len(t) / points))
        return [np.asarray(a)[::step].tolist() for a in (t, *ys)]

    t, temp, pe = thin(traj.times, traj.temperature, traj.potential_energy)
    nt, ne, nte = thin(traj.nve_times, traj.nve_energy, traj.nve_true_energy)
    return {
        "time": t,
        "temperature": temp,
        "potential_energy": pe,
        "nve_time": nt,
        "nve_energy": ne,
        "nve_true_energy": nte,
    }
