"""Recovery on equilibrium data: g-weighted cell averages, iterated to a fixed point with MD.

The weighted deconvolution reduces to the uniform one for g = 1 (NumPy only); the iteration is
checked on small LJ MD data of a known force (N = 500, a 4 x 4 window of 8 x 8 cells): from the
truth one iteration stays there, from the uniform-assumption fit it converges to the truth
within its errors, and it stops with one clear error when it cannot converge.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from lammps_marks import needs_lammps

from mdkeras import md
from mdkeras import recovery as rc
from mdkeras.errors import MdkerasError
from mdkeras.recovery import equilibrium as eq
from mdkeras.recovery.deconvolution import cell_average, derived_points, shell_design
from mdkeras.symmetry import fundamental_domain

TRUTH = {"A": 48.0, "B": 24.0}
STATE = {"density": 0.5, "temperature": 1.0}
SIZES = {"configurations": 60, "targets": 100, "particles": 500}
WINDOW, GRID = 4.0, 8
RUN = md.Protocol(timestep=0.01, damp=1.0, equilibration=3.0, spacing=0.5, drift=0.0)


def ones(r):
    return np.ones(np.shape(r))


def test_unit_weight_is_the_uniform_average():
    geo = rc.geometry(8.0, 28)
    pair = lambda r2: r2**-7.0 - 0.5 * r2**-4.0  # noqa: E731 (an LJ-like f(r)/r)
    np.testing.assert_allclose(
        cell_average(pair, geo, weight=ones), cell_average(pair, geo), rtol=1e-13, atol=1e-300
    )
    mask = ~geo.touching
    edges = np.linspace(0.5, 5.0, 10)
    np.testing.assert_allclose(
        shell_design(geo, edges, mask, weight=ones), shell_design(geo, edges, mask), atol=1e-15
    )
    ideal = eq.Correlation(np.linspace(0.0, 6.0, 97), np.ones(97))  # an ideal gas's g(r)
    np.testing.assert_allclose(
        cell_average(pair, geo, weight=ideal), cell_average(pair, geo), rtol=1e-13, atol=1e-300
    )


def test_weight_moves_the_average_towards_where_g_is():
    """A cell straddling r = 1 with g = 0 inside r = 1: its weighted average is the average of
    f over the part beyond 1 only (brute force on a fine grid)."""
    geo = rc.geometry(4.0, 8)  # h = 0.5: cell [iy=4, ix=5] spans x in [0.5, 1], y in [0, 0.5]
    pair = lambda r2: r2**-3.0  # noqa: E731
    step = eq.Correlation(np.array([0.0, 0.999999, 1.000001, 6.0]), np.array([0, 0, 1, 1.0]))
    got = cell_average(pair, geo, weight=step, order=64)[4, 5]
    t = (np.arange(2000) + 0.5) / 2000
    x, y = np.meshgrid(0.5 + 0.5 * t, 0.5 * t)
    r2 = x * x + y * y
    keep = r2 > 1.0
    want = -np.array([np.mean((pair(r2) * x)[keep]), np.mean((pair(r2) * y)[keep])])
    np.testing.assert_allclose(got, want, rtol=2e-3)


def test_methods_are_chosen_by_sampler():
    assert rc.resolve_method("auto", "md") == "equilibrium"
    assert rc.resolve_method("auto", "uniform") == "uniform"
    assert rc.resolve_method("uniform", "md") == "uniform"
    with pytest.raises(MdkerasError, match="not allowed for 'uniform' data"):
        rc.resolve_method("equilibrium", "uniform")
    with pytest.raises(MdkerasError, match="method"):
        rc.resolve_method("gibbs", "md")


def test_negative_weight_is_an_error():
    geo = rc.geometry(4.0, 8)
    with pytest.raises(MdkerasError, match="g\\(r\\) >= 0"):
        cell_average(lambda r2: r2**-3.0, geo, weight=lambda r: -ones(r))


def observe(seed: int):
    """A kernel learned from MD data of the true LJ force (MD seed `seed`), its mask, the fit
    weighted by the counts' own g and the uniform fit."""
    grids, forces, config, _, _ = eq.simulate(
        "lj", TRUTH, **STATE, window=WINDOW, grid=GRID, seed=seed, run=RUN, **SIZES
    )
    fit = rc.fit_kernel(grids, forces, config, WINDOW, bootstrap=16, seed=0)
    mask = fit.usable & fundamental_domain(GRID)
    counted = rc.count_correlation(grids, fit.geo, STATE["density"])
    start = rc.fit_parameters("lj", fit.kernel, fit.sigma, mask, fit.geo, weight=counted)
    uniform = rc.fit_parameters("lj", fit.kernel, fit.sigma, mask, fit.geo)
    return fit, mask, {k: float(v) for k, v in start.items()}, uniform


@pytest.fixture(scope="module")
def observed():
    return observe(1)


def _recover(observed, start, **kwargs):
    fit, mask, _, _ = observed
    return eq.recover_equilibrium(
        fit, mask, potential="lj", **STATE, start=start, seed=0, run=RUN, **SIZES, **kwargs
    )


def _errors(result):
    return {k: float(np.std(v, ddof=1)) for k, v in result.replicates.items()}


@needs_lammps
def test_uniform_fit_of_md_data_is_biased(observed):
    """The premise: on MD data the uniform-in-cell deconvolution is far from the truth."""
    _, _, _, uniform = observed
    assert uniform["A"] < 0.5 * TRUTH["A"]


@needs_lammps
def test_one_iteration_from_the_truth_stays_at_the_truth(observed):
    result = _recover(observed, TRUTH, iterations=1, tolerance=math.inf)
    errors = _errors(result)
    assert len(result.iterations) == 1
    # Measured over the observed data's MD seeds 1-20 (`SPREAD` below): (A - 48) / error and
    # (B - 24) / error have sd 1.15, at most 2.6 in 40 values; 4 errors is 3.5 sd.
    for k, v in TRUTH.items():
        assert abs(result.params[k] - v) < 4 * errors[k], (k, result.params)


# What a different CPU changes here: LAMMPS rounds differently, the chaotic MD diverges, and the
# observed data of "seed 1" become another sample of the same state: the spread over MD seeds
# is the spread over CPUs. Measured on one CPU for the observed data's MD seeds 1-20 (the
# fixture's `seed=1` replaced, everything else as in these tests; OMP_NUM_THREADS=1 and 2 gave
# the same bits, LAMMPS running serial) by `python tests/test_equilibrium.py 1-20` (below):
#   A / 48 - 1: mean -3.1 %, sd 10.2 %, range -22 % .. +23 %  (B alike: sd 9.8 %)
#   zero crossing - truth, in bootstrap errors: mean -0.57, sd 1.26, range -2.36 .. +2.51
#   iterations to converge: 6-8, once 9 (seed 8: with the default 8 it stops unconverged)
SPREAD = {"scale": 0.102, "crossing_z": 1.26}
ITERATIONS = 2 * eq.MAX_ITERATIONS  # 9 were needed once in 20 seeds


@needs_lammps
def test_fixed_point_from_the_data_is_the_truth(observed):
    """From the fit weighted by the counts' own cell-resolution g (what `recover` starts at).

    The kernel pins the core's position, not its stiffness: along the valley that keeps the
    zero crossing (A/B)^(1/6) in place the statistic hardly moves (README, "On equilibrium
    data"), so the iteration stops within its tolerance anywhere along it, where depending on
    the MD's rounding. The crossing is what the method determines: asserted within 4 sd of its
    measured spread; A and B only within 4 sd of theirs along the valley (`SPREAD`), which
    still tells the fixed point from the uniform-assumption fit (A below half the truth)."""
    _, _, start, _ = observed
    result = _recover(observed, start, iterations=ITERATIONS)
    assert 1 < len(result.iterations) <= ITERATIONS
    assert result.iterations[-1].difference < eq.TOLERANCE
    crossing = derived_points("lj", result.params)["zero_crossing"]
    replicates = derived_points("lj", result.replicates)["zero_crossing"]
    truth = derived_points("lj", TRUTH)["zero_crossing"]
    error = np.std(replicates, ddof=1)
    assert abs(crossing - truth) < 4 * SPREAD["crossing_z"] * error, result.params
    for k, v in TRUTH.items():
        assert abs(result.params[k] / v - 1) < 4 * SPREAD["scale"], (k, result.params)
    assert all(it.md_seconds > 0 for it in result.iterations)
    described = result.describe()
    assert described["md_seed"] == eq.md_seed(0) and len(described["iterations"]) == len(
        result.iterations
    )


def test_no_iterations_is_a_one_line_error():
    with pytest.raises(MdkerasError, match="iterations=0 is not allowed: expected at least 1"):
        eq.recover_equilibrium(
            None, None, potential="lj", **STATE, start=TRUTH, seed=0, **SIZES, iterations=0
        )


@needs_lammps
def test_iteration_that_cannot_converge_stops_with_one_error(observed):
    _, _, start, _ = observed
    with pytest.raises(MdkerasError, match="did not converge in 1 iteration"):
        _recover(observed, start, iterations=1, tolerance=1e-9)


def test_cli_refuses_the_equilibrium_method_on_uniform_data(tmp_path, capsys):
    from benchmarks import recover as cli

    code = cli.main(["-k", "lj-rho0.50-w8-n28", "--method", "equilibrium", "--no-plots",
                     "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: method='equilibrium' is not allowed for 'uniform' data")
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["-k", "md-lj-rho0.50", "--iterations", "0", "--no-plots"]) == 2
    assert "--iterations" in capsys.readouterr().err


def test_the_two_methods_never_share_a_file_name():
    from mdkeras import records, tables

    record = {"kind": "recovery", "setting": "md-lj-rho0.50-t1.00-w8-n28", "scale": "paper",
              "seed": 0, "physics": {"potential": "lj", "sampler": "md"},
              "model": "A r^-13 - B r^-7"}  # fmt: skip
    assert records.recovery_stem(record) == "md-lj-rho0.50-t1.00-w8-n28--paper--seed0"
    assert records.upgrade(record)["method"] == "uniform"  # a record from before the method
    equilibrium = {**record, "method": "equilibrium"}
    assert records.recovery_stem(equilibrium) == (
        "md-lj-rho0.50-t1.00-w8-n28--paper-equilibrium--seed0"
    )
    from mdkeras.potentials import get

    record["model"] = equilibrium["model"] = get("lj").model.formula
    assert tables.table_name(record, "parametric") != tables.table_name(equilibrium, "parametric")
    assert "paper-equilibrium" in tables.table_name(equilibrium, "shells")


def test_given_radii_reproduce_the_fit_that_chose_them():
    rng = np.random.default_rng(3)
    grids = rng.poisson(0.03, size=(3000, 8, 8)).astype(np.uint8)
    geo = rc.geometry(4.0, 8)
    kernel = np.where(geo.touching[..., None], 0.0, rc.true_kernel("coulomb", geo))
    forces = rc.linear_forces(grids, kernel) + rng.normal(0, 0.1, (3000, 2))
    config = np.arange(3000) // 50
    chosen = rc.fit_kernel(grids, forces, config, 4.0, bootstrap=4, seed=0)
    given = rc.fit_kernel(grids, forces, config, 4.0, bootstrap=4, seed=0, radii=chosen.radii)
    assert given.radii == chosen.radii and given.samples == chosen.samples
    np.testing.assert_array_equal(given.kernel, chosen.kernel)
    fewer = rc.fit_kernel(grids, forces, config, 4.0, bootstrap=4, seed=0, radii=chosen.radii[:1])
    assert fewer.radii == chosen.radii[:1] and len(chosen.radii) > 1
    assert np.all(np.isfinite(chosen.kernel[~geo.touching]))


def spread(seeds) -> None:
    """Print, per MD seed of the observed data, what the two iteration tests assert on (the
    measurement behind `SPREAD`): `python tests/test_equilibrium.py 1-20`."""
    truth = derived_points("lj", TRUTH)["zero_crossing"]
    rows = []
    for seed in seeds:
        fit, mask, start, _ = observe(seed)
        result = eq.recover_equilibrium(
            fit, mask, potential="lj", **STATE, start=start, seed=0, run=RUN, **SIZES,
            iterations=ITERATIONS,
        )  # fmt: skip
        crossing = derived_points("lj", result.replicates)["zero_crossing"]
        z = (derived_points("lj", result.params)["zero_crossing"] - truth) / np.std(
            crossing, ddof=1
        )
        one = eq.recover_equilibrium(
            fit, mask, potential="lj", **STATE, start=TRUTH, seed=0, run=RUN, **SIZES,
            iterations=1, tolerance=math.inf,
        )  # fmt: skip
        errors = _errors(one)
        ones = [(one.params[k] - v) / errors[k] for k, v in TRUTH.items()]
        rows.append((result.params["A"] / 48 - 1, result.params["B"] / 24 - 1, z, *ones))
        print(f"seed {seed}: A {rows[-1][0]:+.3f}  B {rows[-1][1]:+.3f}  crossing {z:+.2f} "
              f"errors  iterations {len(result.iterations)}  one step from the truth "
              f"{ones[0]:+.2f} {ones[1]:+.2f} errors", flush=True)  # fmt: skip
    a = np.array(rows)
    sd = [*a[:, :3].std(axis=0, ddof=1), a[:, 3:].std(ddof=1)]
    print("sd over seeds: A {:.3f}  B {:.3f}  crossing {:.2f}  one step {:.2f}".format(*sd))


if __name__ == "__main__":
    import sys

    lo, _, hi = (sys.argv[1] if len(sys.argv) > 1 else "1-20").partition("-")
    spread(range(int(lo), int(hi or lo) + 1))
