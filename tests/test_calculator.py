"""The ASE calculators against LAMMPS on the same configuration: an energy model through
`fix external` (its forces, energy and pressure) and a recovered potential as LAMMPS's spline
table (`tables.export`); 2D cells only, one error otherwise."""

from pathlib import Path

import numpy as np
import pytest
from lammps_marks import needs_lammps

pytest.importorskip("ase")
from ase import Atoms  # noqa: E402

from mdkeras import energy as en  # noqa: E402
from mdkeras import engine, tables  # noqa: E402
from mdkeras.calculator import (  # noqa: E402
    EnergyModelCalculator,
    RecoveredPotentialCalculator,
    plane,
)
from mdkeras.errors import MdkerasError  # noqa: E402
from mdkeras.records import load_record  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LJ_RECOVERY = ROOT / "results/recovery/lj-rho0.50-w8-n28--paper-s250000--seed0.json"
DESC = en.Descriptor(window=4.0, grid=8, sigma=0.5)


def atoms_of(positions, box, z=0.0):
    xyz = np.column_stack([positions, np.full(len(positions), z)])
    return Atoms(f"Ar{len(positions)}", positions=xyz, cell=[box, box, 1.0], pbc=[1, 1, 0])


def lammps_pressure(frame, box):
    return frame.pressure, np.sum(frame.velocities**2)


def calculator_pressure(atoms, kinetic, box):
    s = atoms.get_stress(voigt=True)
    area = box * box
    return (kinetic - area * (s[0] + s[1])) / (2 * area)


@needs_lammps
def test_energy_model_calculator_equals_lammps_with_the_model(tmp_path):
    import keras

    keras.utils.set_random_seed(11)
    model = en.build_energy_model("smoothmap", DESC.grid, energy_scale=0.5)
    path = tmp_path / "m.keras"
    en.save_energy_model(model, path, DESC, {})
    field = en.field(model, DESC, jit_compile=False)
    with engine.Simulation(
        particles=80, density=0.4, interaction=engine.ideal_gas(1.0), seed=11
    ) as sim:
        sim.place(overlap=0.8, minimize=False)
        sim.thermalize(1.0)
        box = sim.box
        sim.external(lambda step, x: field(x, box))
        sim.nve(0.002)
        sim.run(20)
        frame = sim.frame()
    atoms = atoms_of(frame.positions, box, z=0.3)
    atoms.calc = EnergyModelCalculator(path)
    f = atoms.get_forces()
    scale = np.abs(f).max()
    np.testing.assert_allclose(f[:, :2], frame.forces, rtol=0, atol=1e-6 * scale)
    assert np.all(f[:, 2] == 0)
    assert atoms.get_potential_energy() / 80 == pytest.approx(frame.potential_energy, rel=1e-6)
    pressure, kinetic = lammps_pressure(frame, box)
    assert calculator_pressure(atoms, kinetic, box) == pytest.approx(pressure, rel=1e-6)


@needs_lammps
def test_recovered_potential_calculator_equals_lammps_with_its_table():
    record = load_record(LJ_RECOVERY, kind="recovery")
    table = tables.export(record, "parametric")
    with engine.Simulation(particles=300, density=0.5, interaction=table, seed=12) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.005)
        sim.run(200)
        frame, box = sim.frame(), sim.box
    atoms = atoms_of(frame.positions, box)
    atoms.calc = RecoveredPotentialCalculator(record)
    f = atoms.get_forces()[:, :2]
    # LAMMPS's cubic spline in r^2 against the exact f: ~1e-7 of the largest force (the
    # tables' own tests measure it); the energy per particle and the virial alike
    np.testing.assert_allclose(f, frame.forces, rtol=0, atol=1e-6 * np.abs(f).max())
    assert atoms.get_potential_energy() / 300 == pytest.approx(frame.potential_energy, rel=1e-6)
    pressure, kinetic = lammps_pressure(frame, box)
    assert calculator_pressure(atoms, kinetic, box) == pytest.approx(pressure, rel=1e-6)


def test_a_cell_that_is_not_a_2d_square_is_one_error():
    good = atoms_of(np.array([[1.0, 1.0], [2.0, 2.5]]), 10.0)
    assert plane(good)[1] == 10.0
    bad = good.copy()
    bad.set_cell([10.0, 12.0, 1.0])
    with pytest.raises(MdkerasError, match="expected a square in the xy plane"):
        plane(bad)
    bad = good.copy()
    bad.pbc = [True, False, False]
    with pytest.raises(MdkerasError, match="expected periodic x and y"):
        plane(bad)
    bad = good.copy()
    bad.positions[1, 2] = 0.5
    with pytest.raises(MdkerasError, match="one plane of constant z"):
        plane(bad)


def test_an_energy_model_refuses_overlapping_particles(tmp_path):
    import keras

    keras.utils.set_random_seed(13)
    model = en.build_energy_model("smoothmap", DESC.grid)
    path = tmp_path / "m.keras"
    en.save_energy_model(model, path, DESC, {})
    atoms = atoms_of(np.array([[1.0, 1.0], [1.2, 1.0], [5.0, 5.0]]), 12.0)
    atoms.calc = EnergyModelCalculator(path)
    with pytest.raises(MdkerasError, match="particles 0 and 1 overlap"):
        atoms.get_forces()
