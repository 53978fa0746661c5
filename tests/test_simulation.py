"""`python -m benchmarks md` and `mdkeras.simulate`: the MD protocol with the truth and with a
recovered table, its records, resume, the comparison table, and one error line on bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from lammps_marks import MISSING, needs_lammps

from benchmarks import simulation, simulation_report
from benchmarks.cli import main as cli_main
from mdkeras import engine, simulate
from mdkeras.errors import MdkerasError
from mdkeras.potentials import get
from mdkeras.records import load_record

ROOT = Path(__file__).resolve().parents[1]
LJ_RECOVERY = ROOT / "results/recovery/lj-rho0.50-w8-n28--paper-s250000--seed0.json"
COULOMB_RECOVERY = ROOT / "results/recovery/coulomb-rho0.50-w5-n28--paper-s250000--seed0.json"
SMALL = ["--particles", "200", "--steps", "400", "--nve-steps", "500"]
ENERGY_PAIR_SD = 0.0154  # sd of (model - truth) U/N, 2 seeds a side (see the test that uses it)


def model_truth(table):
    return table[table["source"] == "true"].iloc[0]


def md_main(args):
    return simulation.main([str(a) for a in args])


@pytest.fixture(scope="module")
def md_dir(tmp_path_factory):
    """The truth and the recovered LJ potential at rho = 0.5, two seeds, N = 200."""
    if MISSING is not None:
        pytest.skip(f"LAMMPS unavailable: {MISSING}")
    out = tmp_path_factory.mktemp("md")
    code = md_main(
        ["-k", "lj-rho0.50-t1.00", "--model", "recovered", "--recovery", LJ_RECOVERY]
        + ["--seeds", "0,1", "--out", out, *SMALL]
    )
    assert code == 0
    return out


@needs_lammps
def test_a_model_run_brings_the_truth_at_the_same_seeds_and_valid_records(md_dir):
    names = sorted(p.name for p in md_dir.glob("*--seed*.json"))
    tag = "recovered_from_lj-rho0.50-w8-n28--paper-s250000--seed0".replace("--", "_")
    assert names == sorted(
        [f"lj-rho0.50-t1.00--true--seed{s}.json" for s in (0, 1)]
        + [f"lj-rho0.50-t1.00--{tag}--seed{s}.json" for s in (0, 1)]
    )
    record = load_record(md_dir / f"lj-rho0.50-t1.00--{tag}--seed0.json", kind="simulation")
    assert record["state"] == {
        "name": "lj-rho0.50-t1.00",
        "potential": "lj",
        "density": 0.5,
        "temperature": 1.0,
        "particles": 200,
    }
    assert record["source"]["identity"]["fit"] == "parametric"
    assert record["schedule"]["steps"] == 400 and record["schedule"]["nve_steps"] == 500
    obs = record["observables"]
    assert len(obs["rdf"]["r"]) == len(obs["rdf"]["g"]) == simulate.RDF_BINS
    # per-run mean T over seeds 0-23 (`python tests/test_simulation.py 24`): 0.94-1.07, sd 0.031
    assert obs["temperature"]["mean"] == pytest.approx(1.0, abs=0.15)
    assert set(record["provenance"]) >= {"git_commit", "timestamp"}
    table = md_dir / "tables" / record["source"]["identity"]["table"]
    text = table.read_text()
    assert text.startswith("# mdkeras") and "pair_style table spline" in text


@needs_lammps
def test_recovered_lj_is_close_to_the_truth_and_the_truth_own_energy_is_its_true_energy(md_dir):
    for path in md_dir.glob("*--true--seed*.json"):
        obs = load_record(path, kind="simulation")["observables"]
        # the true potential evaluated in Python on the frames is LAMMPS's own energy, pressure
        assert obs["true_potential_energy"]["mean"] == pytest.approx(
            obs["potential_energy"]["mean"], abs=3 * obs["potential_energy"]["sem"] + 1e-3
        )
        assert obs["true_pressure"]["mean"] == pytest.approx(
            obs["pressure"]["mean"], abs=3 * obs["pressure"]["sem"] + 1e-2
        )
    table = simulation_report.summarize_dir(md_dir)
    model = table[table["source"] != "true"].iloc[0]
    assert model["seeds"] == 2 and not np.isnan(model["g_error"])
    # A and B are within 0.2 % of the truth, so what separates the two means is the seeds: a z
    # from 2 seeds a side has a t-tail (it reached 6.5 in 1 of 12 disjoint seed pairs). The
    # difference of the means itself, over 12 disjoint pairs of seeds 0-23 on one CPU
    # (`python tests/test_simulation.py 24`), has sd 0.0154 per particle (at most 0.025): a CPU
    # that rounds differently draws another pair, so allow 4 sd.
    assert abs(model["energy"] - model_truth(table)["energy"]) < 4 * ENERGY_PAIR_SD


@needs_lammps
def test_resume_keeps_finished_records_and_without_it_refuses(md_dir, capsys):
    before = {p: p.stat().st_mtime_ns for p in md_dir.glob("*--seed*.json")}
    args = ["-k", "lj-rho0.50-t1.00", "--model", "recovered", "--recovery", LJ_RECOVERY]
    args += ["--seeds", "0,1", "--out", md_dir, *SMALL]
    assert md_main([*args, "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in md_dir.glob("*--seed*.json")} == before
    assert "skipping" in capsys.readouterr().err
    assert md_main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert md_main([*args[:-6], "--particles", "100", "--steps", "400", "--resume"]) == 2
    assert "cannot reuse" in capsys.readouterr().err


@needs_lammps
def test_report_command_summarises_a_simulation_directory(md_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(md_dir, copy)
    assert cli_main(["report", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "lj-rho0.50-t1.00" in out and "reference" in out
    assert (copy / "summary.csv").is_file() and (copy / "summary.md").is_file()


@needs_lammps
def test_start_positions_are_the_true_minimised_placement_and_seeded():
    a = simulate.start_positions("lj", 0.5, 200, 3)
    b = simulate.start_positions("lj", 0.5, 200, 3)
    c = simulate.start_positions("lj", 0.5, 200, 4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    d = a[:, None, :] - a[None, :, :]
    box = np.sqrt(200 / 0.5)
    d -= box * np.round(d / box)
    r = np.hypot(d[..., 0], d[..., 1])[np.triu_indices(200, 1)]
    assert r.min() > 0.8  # minimised: no near-overlap left


@needs_lammps
def test_same_seed_same_observables():
    plan = simulate.schedule("lj", 0.5, 1.0, steps=400, nve_steps=500)
    runs = [
        simulate.run("lj", 0.5, 1.0, simulate.true_source("lj"), seed=5, plan=plan, particles=100)
        for _ in range(2)
    ]
    for name in ("temperature", "pressure", "unwrapped", "structure", "nve_true_energy"):
        assert np.array_equal(getattr(runs[0], name), getattr(runs[1], name)), name


@pytest.mark.parametrize(
    "args, message",
    [
        (["-k", "argon"], "matches no MD state"),
        (["-k", ""], "empty case pattern"),
        (["-k", "lj-rho0.50", "--model", "recovered", "--recovery", COULOMB_RECOVERY], "coulomb"),
        (["-k", "lj-rho0.50", "--model", "recovered", "--recovery", "nope.json"], "nope.json"),
        (["-k", "lj-rho0.50", "--model", "recovered", "--recovery", ROOT], "is a directory"),
        (["-k", "lj-rho0.50", "--model", "recovered", "--tables", LJ_RECOVERY], "it is a file"),
        (["-k", "lj-rho0.50", "--model", "lj-rho0.50-w8-n28-lenet-paper"], "not a force"),
        (["-k", "lj-rho0.50", "--model", "no-such-model"], "no-such-model"),
        (["-k", "lj-rho0.50", "--nve-steps", "75"], "nve_steps=75"),
        (["-k", "lj-rho0.50", "--seeds", "0,0"], "repeats seed 0"),
        (["-k", "lj-rho0.50", "--particles", "5"], "--particles 5 is not allowed"),
        (["-k", "lj-rho0.50", "--particles", "0"], "--particles 0 is not allowed"),
        (["-k", "lj-rho0.50", "--particles", "1000000000"], "expected 51 to 100,000"),
        (["-k", "lj-rho0.50", "--steps", "360"], "steps=360 is not allowed"),
        (["-k", "lj-rho0.50", "--checkpoint-every", "-1"], "--checkpoint-every -1"),
    ],
)
def test_bad_input_is_one_error_line_before_any_md(args, message, tmp_path, capsys):
    assert md_main([*args, "--out", tmp_path / "out"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not list((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else True


def test_default_recovery_takes_the_most_samples_of_the_potential_and_sampler():
    root = ROOT / "results/recovery"
    assert simulation.default_recovery("lj", "uniform", 0.7, root=root) == LJ_RECOVERY
    md = simulation.default_recovery("lj", "md", 0.7, root=root)
    assert json.loads(md.read_text())["physics"]["density"] == 0.7
    with pytest.raises(MdkerasError, match="no recovery record"):
        simulation.default_recovery("lj", "uniform", 0.5, root=ROOT / "tests")


@needs_lammps
def test_speed_measurement_runs_every_kind_of_source():
    for source in (simulate.true_source("lj"), simulate.python_pair_source("lj")):
        speed = simulate.steps_per_second("lj", 0.5, 1.0, source, particles=200, steps=5)
        assert np.isfinite(speed) and speed > 0


@needs_lammps
def test_a_learned_force_field_drives_md_through_fix_external(tmp_path):
    """An (untrained) forcemap force head saved like a trained one: the md command loads it,
    drives LAMMPS with its forces and records the momentum it does not conserve."""
    from benchmarks import registry
    from mdkeras import forcefield, models
    from mdkeras.descriptors import featurize

    case = registry.get_case("md-lj-rho0.50-t1.00-w8-n28-forcemap-force")
    model = models.build_model("forcemap", 28, head="force", force_scale=3.0)
    path = tmp_path / f"{case.name}--paper--seed0.keras"
    model.save(path)
    field = forcefield.learned_field(model, potential="lj", window=8.0, grid=28)
    x = np.random.default_rng(0).uniform(0, 20.0, (200, 2))
    grids, _ = featurize(x, 20.0, np.arange(200), potential="lj", window=8.0, grid=28)
    expected = model(grids[..., None].astype("float32"), training=False)["force"].numpy()
    assert np.allclose(field(x, 20.0), expected, rtol=1e-5, atol=1e-6)

    out = tmp_path / "md"
    args = ["-k", "lj-rho0.50-t1.00", "--model", case.name, "--model-dir", tmp_path]
    assert md_main([*args, "--seeds", "0", "--out", out, "--no-plots", *SMALL]) == 0
    learned = list(out.glob(f"*--{case.name}_paper_seed0--seed0.json"))
    assert len(learned) == 1 and (out / "lj-rho0.50-t1.00--true--seed0.json").is_file()
    record = load_record(learned[0], kind="simulation")
    assert record["source"]["identity"]["case"] == case.name
    assert record["observables"]["potential_energy"] is None  # no energy of its own
    assert record["observables"]["pressure_source"] == "true potential on the frames"
    assert record["observables"]["nve"]["momentum_drift"] is not None


def test_a_model_for_another_potential_or_missing_file_is_refused(tmp_path, capsys):
    case = "md-lj-rho0.50-t1.00-w8-n28-forcemap-force"
    args = ["--model", case, "--model-dir", tmp_path, "--out", tmp_path / "o"]
    assert md_main(["-k", "coulomb-rho0.50", *args]) == 2
    assert "learned the lj potential" in capsys.readouterr().err
    assert md_main(["-k", "lj-rho0.50-t1.00", *args]) == 2
    assert "no trained model" in capsys.readouterr().err


@needs_lammps
def test_a_table_that_does_not_cover_the_closest_approach_is_refused_before_md():
    lj = get("lj")
    u_cut = float(lj.energy(lj.md_cutoff))
    table = engine.tabulated(  # the true LJ, but starting beyond the well, at r = 1.2
        "lj",
        lambda r: r * lj.force_over_r(r * r),
        lambda r: lj.energy(r) - u_cut,
        cutoff=lj.md_cutoff,
        inner=1.2,
    )
    source = simulate.ForceSource("recovered", table, {"kind": "recovered"})
    plan = simulate.schedule("lj", 0.5, 1.0, steps=400, nve_steps=500)
    with pytest.raises(MdkerasError, match="covers the closest approach"):
        simulate.run("lj", 0.5, 1.0, source, seed=0, plan=plan, particles=200)


def test_md_states_are_selected_by_the_case_rule():
    """The same rule as `list`/`run`/`recover`: case-insensitive globs, words as substrings."""
    from benchmarks import registry

    assert [s.name for s in registry.md_states(["LJ-RHO0.70"])] == ["lj-rho0.70-t1.00"]
    assert [s.name for s in registry.md_states(["coulomb-*0.50*"])] == ["coulomb-rho0.50-t1.00"]
    with pytest.raises(MdkerasError, match="empty case pattern"):
        registry.md_states(["  "])


def test_a_foreign_record_in_out_is_an_error_before_any_md(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "junk--a--seed0.json").write_text('{"x": 1}')
    assert md_main(["-k", "lj-rho0.50", "--out", out, *SMALL]) == 2
    assert "junk--a--seed0.json lacks key" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["junk--a--seed0.json"]


def spread(seeds: int) -> None:
    """Run the `md_dir` fixture's MD for seeds 0 .. seeds-1 and print, per disjoint pair of
    seeds, the model-minus-truth U/N and its z, and every run's mean T (the measurement behind
    `ENERGY_PAIR_SD`): `python tests/test_simulation.py 24`."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        md_main(["-k", "lj-rho0.50-t1.00", "--model", "recovered", "--recovery", LJ_RECOVERY,
                 "--seeds", ",".join(map(str, range(seeds))), "--out", out, "--no-plots",
                 *SMALL])  # fmt: skip
        records = [load_record(p, kind="simulation") for p in Path(out).glob("*--seed*.json")]
    deltas = []
    for a in range(0, seeds - 1, 2):
        table = simulation_report.summarize([r for r in records if r["seed"] in (a, a + 1)])
        model = table[table["source"] != "true"].iloc[0]
        deltas.append(model["energy"] - model_truth(table)["energy"])
        print(
            f"seeds {a},{a + 1}: U/N model - truth {deltas[-1]:+.4f} (z {model['energy_z']:+.2f})"
        )
    temps = [r["observables"]["temperature"]["mean"] for r in records]
    sd_t, sd_u = np.std(temps, ddof=1), np.std(deltas, ddof=1)
    print(
        f"sd of the differences {sd_u:.4f}; mean T {min(temps):.3f}-{max(temps):.3f}, sd {sd_t:.3f}"
    )


if __name__ == "__main__":
    import sys

    spread(int(sys.argv[1]) if len(sys.argv) > 1 else 24)
