"""Pair tables of recovered forces: the force each fit means, the integrated energy, the inner
extension, the file's name and header, and LAMMPS running the true force's table exactly as its
analytic pair style."""

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.interpolate import PchipInterpolator
from test_engine import brute_force, needs_lammps

from mdkeras import engine, tables
from mdkeras.errors import MdkerasError
from mdkeras.potentials import get, pair_force
from mdkeras.records import load_record

RECOVERY = Path(__file__).resolve().parents[1] / "results" / "recovery"
LJ_RECORD = RECOVERY / "lj-rho0.50-w8-n28--paper-s250000--seed0.json"
COULOMB_RECORD = RECOVERY / "coulomb-rho0.50-w5-n28--paper--seed0.json"


@pytest.fixture(scope="module")
def lj_record():
    return load_record(LJ_RECORD, "recovery")


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["A"].update(value="47.9"),  # a number as a string
        lambda p: p["A"].update(value=True),
        lambda p: p.update(A=48.0),  # not a dict
        lambda p: p.pop("B"),
    ],
)
def test_a_record_with_malformed_parameters_is_one_error(lj_record, change):
    record = copy.deepcopy(lj_record)
    change(record["parameters"])
    for make in (lambda: tables.recovered_force(record, "parametric"),
                 lambda: tables.export(record, "parametric")):  # fmt: skip
        with pytest.raises(MdkerasError, match="has no finite values for the parameters"):
            make()


def test_an_extra_parameter_is_ignored(lj_record):
    record = copy.deepcopy(lj_record)
    record["parameters"]["note"] = 5  # not a parameter of the form, not even a dict
    plain = tables.export(lj_record, "parametric")
    assert tables.export(record, "parametric").table == plain.table


def _lj_shifted(r, cutoff=4.0):
    r = np.asarray(r, float)
    return 4 * (r**-12 - r**-6) - 4 * (cutoff**-12 - cutoff**-6)


def _with_truth(record):
    rec = copy.deepcopy(record)
    for p in rec["parameters"].values():
        p["value"] = p["truth"]
    return rec


# ------------------------------------------------------------------------------ forces


@pytest.mark.parametrize("path", [LJ_RECORD, COULOMB_RECORD])
def test_parametric_force_with_the_true_parameters_is_the_true_force(path):
    rec = _with_truth(load_record(path, "recovery"))
    potential = rec["physics"]["potential"]
    r = np.linspace(0.3, get(potential).md_cutoff, 1001)
    force = tables.recovered_force(rec, "parametric")
    np.testing.assert_allclose(force(r), pair_force(potential, r), rtol=1e-13, atol=1e-15)


def test_parametric_force_uses_the_recorded_values(lj_record):
    force = tables.recovered_force(lj_record, "parametric")
    a, b = (lj_record["parameters"][k]["value"] for k in ("A", "B"))
    assert a != 48.0 and force(1.3) == pytest.approx(a * 1.3**-13 - b * 1.3**-7, rel=1e-14)


def test_pchip_matches_scipy_and_does_not_overshoot():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 5, 12))
    y = np.cumsum(rng.normal(size=12))
    t = np.linspace(x[0], x[-1], 2001)
    np.testing.assert_allclose(tables.pchip(x, y, t), PchipInterpolator(x, y)(t), atol=1e-12)
    mono = np.exp(-x)
    v = tables.pchip(x, mono, t)
    assert np.all(np.diff(v) <= 1e-15) and v.max() <= mono.max() and v.min() >= mono.min()


def test_shell_force_passes_through_shell_values_at_midpoints(lj_record):
    force = tables.recovered_force(lj_record, "shells")
    s = lj_record["shells"]
    edges, value = np.array(s["edges"]), np.array(s["value"])
    mid = 0.5 * (edges[:-1] + edges[1:])
    used = list(force.shells)
    assert used == list(range(12))  # midpoints up to 3.86 < r_c = 4; all constrained
    np.testing.assert_allclose(force(mid[used]), value[used], rtol=1e-14)
    # held at the last value to the last shell's edge (= r_c here), 0 beyond r_c
    assert force(3.95) == pytest.approx(value[11], rel=1e-12) and force(4.01) == 0.0
    # between midpoints it stays within the neighbouring shell values (no overshoot)
    r = np.linspace(mid[2], mid[3], 101)
    assert np.all((force(r) >= value[2]) & (force(r) <= value[3]))


def test_shell_force_falls_to_zero_at_the_cutoff_when_the_shells_end_before_it():
    rec = load_record(COULOMB_RECORD, "recovery")  # shells end at 3.75, r_c = 5
    force = tables.recovered_force(rec, "shells")
    last_edge = rec["shells"]["edges"][-1]
    assert last_edge < 5.0
    last = rec["shells"]["value"][-1]
    assert force(last_edge) == pytest.approx(last, rel=1e-12)
    assert force(5.0) == pytest.approx(0.0, abs=1e-15)
    r = np.linspace(last_edge, 5.0, 50)
    assert np.all(np.diff(force(r)) <= 0) and np.all(force(r) >= 0)


def test_inner_extension_is_a_repulsive_monotone_power_law_reaching_50_kt(lj_record):
    force = tables.recovered_force(lj_record, "shells")
    s = lj_record["shells"]
    m0, m1 = (0.5 * (s["edges"][j] + s["edges"][j + 1]) for j in (0, 1))
    slope = math.log(s["value"][0] / s["value"][1]) / math.log(m1 / m0)
    assert force.exponent == pytest.approx(slope, rel=1e-14) and force.exponent > 2
    r = np.geomspace(0.05, force.r[0], 200)
    f = force(r)
    assert np.all(f > 0) and np.all(np.diff(f) < 0)
    np.testing.assert_allclose(f, s["value"][0] * (r / m0) ** -slope, rtol=1e-12)
    energy = tables.recovered_energy(force, 4.0)
    inner = engine.inner_radius(energy, 4.0)
    assert energy(inner) == pytest.approx(engine.INNER_ENERGY, rel=1e-9)
    assert 0.5 < inner < 0.95


def test_inner_exponent_is_floored_and_falls_back_when_one_shell_is_repulsive(lj_record):
    rec = copy.deepcopy(lj_record)
    rec["shells"]["value"][1] = -1.0  # only the innermost shell repulsive: a hard wall
    assert tables.recovered_force(rec, "shells").exponent == tables.FALLBACK_EXPONENT
    rec["shells"]["value"][1] = 0.99 * rec["shells"]["value"][0]  # nearly flat: floored
    assert tables.recovered_force(rec, "shells").exponent == tables.MIN_EXPONENT


def test_unreached_inner_shells_are_skipped_and_a_coreless_estimate_is_refused():
    rec = load_record(RECOVERY / "lj-rho0.05-w8-n56--paper--seed0.json", "recovery")
    assert rec["shells"]["value"][0] < 1e-11  # no pair came that close
    assert tables.constrained_shells(rec)[0] == 2
    coreless = load_record(RECOVERY / "lj-rho0.05-w8-n16--paper--seed0.json", "recovery")
    assert coreless["shells"]["value"][0] < 0  # a 16 grid's shells start at r = 1
    with pytest.raises(MdkerasError, match="has no repulsive core.*use the parametric fit"):
        tables.recovered_force(coreless, "shells")


def test_shells_all_unconstrained_is_one_error(lj_record):
    rec = copy.deepcopy(lj_record)
    rec["shells"]["error"] = [float("nan")] * len(rec["shells"]["error"])
    with pytest.raises(MdkerasError, match="no constrained shell inside r_c = 4"):
        tables.recovered_force(rec, "shells")
    with pytest.raises(MdkerasError, match="no constrained shell"):
        tables.export(rec, "shells")


def test_unknown_fit_and_other_records_are_one_error(lj_record):
    with pytest.raises(MdkerasError, match="fit='spline' is not allowed.*'parametric', 'shells'"):
        tables.recovered_force(lj_record, "spline")
    with pytest.raises(MdkerasError, match="fit='spline' is not allowed"):
        tables.table_name(lj_record, "spline")
    run = {"kind": "simulation", "setting": "x"}
    with pytest.raises(MdkerasError, match="a simulation record cannot be exported.*recovery"):
        tables.export(run, "parametric")
    other = copy.deepcopy(lj_record)
    other["model"] = "A r^-p"
    with pytest.raises(MdkerasError, match="fitted 'A r\\^-p': expected the lj model"):
        tables.recovered_force(other, "parametric")
    broken = copy.deepcopy(lj_record)
    del broken["parameters"]["B"]
    with pytest.raises(MdkerasError, match="no finite values for the parameters"):
        tables.recovered_force(broken, "parametric")


# ------------------------------------------------------------------------------ energy


def test_energy_integral_matches_the_analytic_shifted_lj_energy():
    energy = tables.recovered_energy(lambda r: pair_force("lj", r), 4.0)
    r = np.sqrt(np.linspace(0.79**2, 16.0, 20_000))
    exact = _lj_shifted(r)
    np.testing.assert_allclose(energy(r), exact, rtol=1e-6, atol=1e-12)
    assert np.max(np.abs(energy(r) - exact) / np.maximum(np.abs(exact), 1.0)) < 1e-12
    assert energy(1.1) == pytest.approx(_lj_shifted(1.1), rel=1e-12)  # a scalar alone
    assert energy(4.0) == 0.0 and energy(4.5) == 0.0 and np.isnan(energy(-1.0))
    assert energy(np.ones((2, 3))).shape == (2, 3)


# ---------------------------------------------------------------------- name and header


def test_table_name_and_header_state_potential_fit_source_and_lammps_lines(lj_record, tmp_path):
    name = tables.table_name(lj_record, "parametric")
    assert name == "lj-parametric--uniform-rho0.50-w8-n28--paper-s250000--seed0.table"
    md = dict(lj_record, setting="md-lj-rho0.50-t1.00-w8-n28", scale="paper")
    md["physics"] = dict(lj_record["physics"], sampler="md")
    assert (
        tables.table_name(md, "shells") == "lj-shells--md-rho0.50-t1.00-w8-n28--paper--seed0.table"
    )
    inter = tables.export(lj_record, "shells", points=500)
    keyword = "LJ-SHELLS--UNIFORM-RHO0.50-W8-N28--PAPER-S250000--SEED0"
    header = [line for line in inter.table.splitlines() if line.startswith("#")]
    assert "# pair_style table spline 500" in header
    assert f"# pair_coeff 1 1 FILE {keyword} 4" in header
    assert any("recovery record lj-rho0.50-w8-n28--paper-s250000--seed0" in h for h in header)
    assert any(h.startswith("# fit: shells") for h in header)
    assert inter.commands == (
        "pair_style table spline 500",
        f"pair_coeff 1 1 {{table}} {keyword} 4",
    )
    param = tables.export(lj_record, "parametric", points=500).table
    a = lj_record["parameters"]["A"]["value"]
    assert f"A = {a:.10g}" in param
    path = tables.write_table(inter, tmp_path / tables.table_name(lj_record, "shells"))
    assert path.read_text() == inter.table
    with pytest.raises(MdkerasError, match="has no table"):
        tables.write_table(engine.interaction("lj"), tmp_path / "x.table")


def test_exported_table_starts_where_the_integrated_energy_is_50_kt(lj_record):
    inter = tables.export(lj_record, "parametric", points=1000)
    rows = np.array([line.split() for line in inter.table.splitlines() if line[:1].isdigit()])
    r, u, f = rows[:, 1:].astype(float).T
    a, b = (lj_record["parameters"][k]["value"] for k in ("A", "B"))
    exact = -a / 12 * (4.0**-12 - r**-12) + b / 6 * (4.0**-6 - r**-6)
    np.testing.assert_allclose(u, exact, rtol=1e-10, atol=1e-13)
    assert u[0] == pytest.approx(engine.INNER_ENERGY, rel=1e-9) and u[-1] == 0.0
    np.testing.assert_allclose(f, a * r**-13 - b * r**-7, rtol=1e-14)


# ---------------------------------------------------------------------------- in LAMMPS


def _thermal_state(interaction, seed):
    """The frame after a short Langevin run at T = 1 (300 particles) and the box side."""
    with engine.Simulation(particles=300, density=0.5, interaction=interaction, seed=seed) as sim:
        sim.place()
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.002)
        sim.run(50)
        return sim.frame(), sim.box


@contextlib.contextmanager
def _simulation_at(interaction, positions, seed=0):
    """A simulation of `interaction` with particles at `positions` (ids in order), at rest."""
    with engine.Simulation(
        particles=len(positions), density=0.5, interaction=interaction, seed=seed
    ) as sim:
        sim.command(*(f"create_atoms 1 single {x:.17g} {y:.17g} 0 units box" for x, y in positions))
        yield sim


def _at_positions(interaction, positions):
    """Forces, potential energy per particle and pressure at `positions` (`run 0`, at rest)."""
    with _simulation_at(interaction, positions) as sim:
        sim.nve(0.002)
        sim.run(0)
        t = sim.thermo()
        return sim.forces(), t["PotEng"], t["Press"]


@needs_lammps
def test_true_lj_table_reproduces_the_native_pair_style():
    frame, box = _thermal_state(engine.interaction("lj"), seed=21)
    table = tables.true_table("lj")
    assert table.table is not None and table.cutoff == 4.0
    forces, pe, press = _at_positions(table, frame.positions)
    # per-component force errors, measured against the largest force component
    np.testing.assert_allclose(forces, frame.forces, rtol=0, atol=1e-6 * np.abs(frame.forces).max())
    assert pe == pytest.approx(frame.potential_energy, rel=1e-5)
    kinetic = np.sum(frame.velocities**2) / (2 * box * box)  # the table's run is at rest
    assert press == pytest.approx(frame.pressure - kinetic, rel=1e-5)


@needs_lammps
def test_true_coulomb_table_reproduces_direct_pair_sums():
    frame, box = _thermal_state(engine.interaction("coulomb"), seed=22)
    forces, pe, _ = _at_positions(tables.true_table("coulomb"), frame.positions)
    expected, _, r = brute_force("coulomb", frame.positions, box, 5.0)
    np.testing.assert_allclose(forces, expected, rtol=0, atol=1e-6 * np.abs(expected).max())
    u = 1 / r - 1 / 5.0
    assert pe == pytest.approx(0.5 * u[r < 5.0].sum() / 300, rel=1e-5)


@needs_lammps
@pytest.mark.parametrize("fit", tables.FITS)
def test_recovered_tables_run_from_the_true_potentials_state(lj_record, fit):
    start, box = _thermal_state(engine.interaction("lj"), seed=23)
    inter = tables.export(lj_record, fit)
    inner = float(inter.table.split(" RSQ ")[1].split()[0])
    with _simulation_at(inter, start.positions, seed=24) as sim:
        sim.thermalize(1.0)
        sim.langevin(1.0, 1.0, 0.002)
        sim.run(200)
        frame = sim.frame()
    _, _, r = brute_force("lj", frame.positions, box, 4.0)
    # Over seeds 23-62 (`python tests/test_tables.py 0-19`), both fits: the closest approach is
    # at least 0.078 beyond the inner end; the frame's T is 0.748-0.974 (mean 0.848, sd 0.055:
    # 0.4 time units after a minimised start are not equilibrium), so 0.6 is 4.5 sd below the
    # mean; a run that blows up is far above 1.3.
    assert r.min() > inner + 0.02  # the table covers the closest approach with room to spare
    assert np.all(np.isfinite(frame.forces)) and 0.6 < frame.temperature < 1.3


def test_a_higher_barrier_starts_the_table_further_in(lj_record):
    rows = {
        b: tables.export(lj_record, "shells", points=100, barrier=b).table.split(" RSQ ")[1]
        for b in (50.0, 200.0)
    }
    assert float(rows[200.0].split()[0]) < float(rows[50.0].split()[0])


def spread(seeds) -> None:
    """Per pair of seeds `(2k + 23, 2k + 24)` (the start's and the run's, as the test's 23 and
    24), each fit's frame temperature and closest approach beyond the table's inner end (the
    measurement behind that test's bounds): `python tests/test_tables.py 0-19`."""
    record = load_record(LJ_RECORD, "recovery")
    temps, rooms = [], []
    for k in seeds:
        start, box = _thermal_state(engine.interaction("lj"), seed=2 * k + 23)
        for fit in tables.FITS:
            inter = tables.export(record, fit)
            inner = float(inter.table.split(" RSQ ")[1].split()[0])
            with _simulation_at(inter, start.positions, seed=2 * k + 24) as sim:
                sim.thermalize(1.0)
                sim.langevin(1.0, 1.0, 0.002)
                sim.run(200)
                frame = sim.frame()
            _, _, r = brute_force("lj", frame.positions, box, 4.0)
            temps.append(frame.temperature)
            rooms.append(r.min() - inner)
            print(f"seeds {2 * k + 23},{2 * k + 24} {fit}: T {temps[-1]:.3f}, room {rooms[-1]:.3f}")
    print(f"T {min(temps):.3f}-{max(temps):.3f} (mean {np.mean(temps):.3f}, sd "
          f"{np.std(temps, ddof=1):.3f}); room at least {min(rooms):.3f}")  # fmt: skip


if __name__ == "__main__":
    import sys

    lo, _, hi = (sys.argv[1] if len(sys.argv) > 1 else "0-19").partition("-")
    spread(range(int(lo), int(hi or lo) + 1))
