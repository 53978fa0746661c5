"""The `md` sampler's configurations: physics of the saved frames (structure, temperature,
pressure, forces against the window labels), determinism and trajectory-wise splits."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from lammps_marks import MISSING, needs_lammps
from scipy import stats
from scipy.spatial import cKDTree

from mdkeras import engine, md
from mdkeras.datasets import split_groups
from mdkeras.descriptors import featurize
from mdkeras.errors import MdkerasError
from mdkeras.potentials import pair_force

N = 1_000


@pytest.fixture(scope="module")
def lj():
    """LJ rho = 0.5, T = 1 with the registry's protocol: 40 frames from 4 trajectories."""
    if MISSING is not None:
        pytest.skip(f"LAMMPS unavailable: {MISSING}")
    return md.generate("lj", 0.5, 1.0, configurations=40, trajectories=4, particles=N, seed=3)


def pairs(positions, box, cutoff):
    """Minimum-image pairs closer than `cutoff`: `(i, j, d = r_j - r_i, r)`."""
    i, j = cKDTree(positions, boxsize=box).query_pairs(cutoff, output_type="ndarray").T
    d = positions[j] - positions[i]
    d -= box * np.round(d / box)
    return i, j, d, np.hypot(d[:, 0], d[:, 1])


@needs_lammps
def test_frames_are_wrapped_float64_with_metadata(lj):
    assert lj.positions.shape == (40, N, 2) and lj.positions.dtype == np.float64
    assert np.all((lj.positions >= 0) & (lj.positions < lj.box))
    assert lj.box == pytest.approx(np.sqrt(N / 0.5))
    assert np.array_equal(lj.trajectory, md.trajectory_ids(40, 4))
    assert np.array_equal(np.bincount(lj.trajectory), [11, 11, 10, 8])  # test: the last fifth
    meta = lj.metadata
    run = md.protocol("lj", 0.5, 1.0)
    assert meta["timestep"] == run.timestep and meta["spacing_steps"] == run.steps(run.spacing)
    assert meta["lammps_version"] == engine.lammps_version()
    assert meta["interaction"]["commands"][0] == "pair_style lj/cut 4"
    assert set(lj.timings) >= {"equilibration", "sampling", "steps_per_second"}


@needs_lammps
def test_lj_no_pair_closer_than_0_8(lj):
    closest = min(pairs(x, lj.box, 0.8)[3].size for x in lj.positions)
    assert closest == 0


@needs_lammps
def test_lj_kinetic_temperature_within_two_percent(lj):
    # Per frame the kinetic temperature fluctuates by sqrt(2 / (2N - 2)) = 3.2 %; over 40
    # decorrelated frames the mean's standard error is 0.5 %, so 2 % is 4 standard errors.
    t = np.sum(lj.velocities**2, axis=(1, 2)) / (2 * N - 2)
    np.testing.assert_allclose(t, lj.temperature, rtol=1e-12)
    assert t.mean() == pytest.approx(1.0, rel=0.02)


@needs_lammps
def test_lj_pressure_from_the_virial_equals_lammps(lj):
    for x, v, p in zip(lj.positions, lj.velocities, lj.pressure, strict=True):
        _, _, _, r = pairs(x, lj.box, 4.0)
        virial = np.sum(r * pair_force("lj", r))
        assert (np.sum(v * v) + virial) / (2 * lj.box**2) == pytest.approx(p, rel=1e-6)


@needs_lammps
def test_window_forces_are_the_pair_forces_of_the_window_particles(lj):
    w, n, rc = 8.0, 28, 4.0
    rng = np.random.default_rng(0)
    for c in (0, 17, 39):
        x, box = lj.positions[c], lj.box
        # LAMMPS's per-particle force is the pair force summed over all particles within r_c.
        i, j, d, r = pairs(x, box, rc)
        pf = (pair_force("lj", r) / r)[:, None] * d
        total = np.zeros((N, 2))
        np.add.at(total, i, -pf)
        np.add.at(total, j, pf)
        np.testing.assert_allclose(lj.forces[c], total, rtol=0, atol=1e-10 * np.abs(total).max())
        targets = rng.choice(N, 50, replace=False)
        _, window = featurize(x, box, targets, potential="lj", window=w, grid=n)
        for t, f in zip(targets, window, strict=True):
            dd = x - x[t]
            dd -= box * np.round(dd / box)
            cell = np.floor((dd + w / 2) / (w / n))
            inside = np.all((cell >= 0) & (cell < n), axis=1)
            inside[t] = False
            rr = np.hypot(dd[inside, 0], dd[inside, 1])
            ref = np.sum(-(pair_force("lj", rr) / rr)[:, None] * dd[inside], axis=0)
            np.testing.assert_allclose(f, ref, rtol=1e-12, atol=1e-12)
            # SPEC §2b: window particles beyond r_c feel (almost) nothing from the target.
            assert np.all(np.abs(pair_force("lj", rr[rr >= rc])) < 2e-3)
            # so the window label differs from LAMMPS's force only by the far particles.
            near = np.hypot(dd[:, 0], dd[:, 1]) < rc
            near[t] = False
            outside = near & ~inside
            ro = np.hypot(dd[outside, 0], dd[outside, 1])
            far = np.sum(-(pair_force("lj", ro) / ro)[:, None] * dd[outside], axis=0)
            beyond = rr >= rc
            counted_far = np.sum(
                -(pair_force("lj", rr[beyond]) / rr[beyond])[:, None] * dd[inside][beyond], axis=0
            )
            np.testing.assert_allclose(lj.forces[c, t], f + far - counted_far, atol=1e-9)


@needs_lammps
def test_ideal_gas_cell_counts_are_poisson():
    rho, h = 0.5, 1.0
    # Free particles under Langevin diffuse with D = T damp = 1: rms displacement 4.5 over the
    # equilibration and 2.8 per spacing, both well above the cell side.
    run = md.Protocol(timestep=0.01, damp=1.0, equilibration=5.0, spacing=2.0, drift=0.0)
    gas = md.generate(
        "lj", rho, 1.0, configurations=8, trajectories=2, particles=2_000, seed=5, run=run,
        interaction=engine.ideal_gas(),
    )  # fmt: skip
    m = int(gas.box // h)
    side = gas.box / m
    cells = np.floor(gas.positions / side).astype(int) % m
    counts = np.concatenate([np.bincount(c[:, 1] * m + c[:, 0], minlength=m * m) for c in cells])
    mean = rho * side * side
    top = 4
    observed = np.bincount(np.minimum(counts, top), minlength=top + 1)
    p = stats.poisson.pmf(np.arange(top), mean)
    expected = counts.size * np.append(p, 1 - p.sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert counts.mean() == pytest.approx(mean, rel=1e-12)  # N fixed: only the mean is exact


def _small(seed, **kwargs):
    run = md.Protocol(timestep=0.005, damp=1.0, equilibration=0.5, spacing=0.25, drift=0.0)
    return md.generate(
        "lj", 0.5, 1.0, configurations=3, trajectories=2, particles=200, seed=seed, run=run,
        **kwargs,
    )  # fmt: skip


@needs_lammps
def test_same_seed_same_bytes():
    a, b, c = _small(1), _small(1), _small(2)
    assert a.positions.tobytes() == b.positions.tobytes()
    assert a.metadata == b.metadata
    assert a.positions.tobytes() != c.positions.tobytes()
    assert np.array_equal(a.trajectory, [0, 0, 1])
    # trajectories are independent: their first frames differ
    assert not np.allclose(a.positions[0], a.positions[2])


def test_trajectory_ids_are_contiguous_and_balanced():
    assert md.trajectory_ids(8, 5).tolist() == [0, 0, 1, 1, 2, 3, 4, 4]
    assert md.trajectory_ids(2, 5).tolist() == [0, 1]
    assert np.array_equal(np.bincount(md.trajectory_ids(200)), [40] * 5)
    with pytest.raises(MdkerasError, match="trajectories=1 is not allowed"):
        md.trajectory_ids(10, 1)


def test_trajectory_boundaries_fall_on_the_configuration_wise_split():
    # So a split by configuration (SPEC §2: the last fifth tests, validation the last tenth
    # of the rest) never puts one trajectory on both sides of the test boundary.
    for k in (2, 5, 10):
        for c in range(2 * k, 301):
            ids = md.trajectory_ids(c, k)
            assert np.all(np.diff(ids) >= 0) and ids[-1] == k - 1
            n_test = max(1, round(c * 0.2))
            n_val = max(1, round((c - n_test) * 0.1))
            split = split_groups(ids)
            assert split["test"].tolist() == list(range(c - n_test, c)), (k, c)
            assert split["val"].tolist() == list(range(c - n_test - n_val, c - n_test))
            assert ids[c - n_test - 1] != ids[c - n_test]


def test_split_of_one_configuration_per_trajectory_is_spec_section_2():
    split = split_groups(np.arange(200))  # the uniform sampler: each its own
    assert split["train"].tolist() == list(range(144))
    assert split["val"].tolist() == list(range(144, 160))
    assert split["test"].tolist() == list(range(160, 200))


@needs_lammps
def test_sampler_hook_yields_the_generator_frames_and_distinct_targets():
    spec = SimpleNamespace(
        potential="lj", density=0.5, temperature=1.0, configurations=3, seed=4,
        particles=300, targets=50,
    )  # fmt: skip
    out = list(md.md_configurations(spec))
    ref = md.generate("lj", 0.5, 1.0, configurations=3, seed=4, particles=300)
    assert len(out) == 3
    assert md.md_provenance(spec) == ref.metadata
    for (x, box, targets), y in zip(out, ref.positions, strict=True):
        assert x.tobytes() == y.tobytes() and box == ref.box
        assert len(set(targets.tolist())) == 50 and targets.min() >= 0 and targets.max() < 300
    again = list(md.md_configurations(spec))
    assert all(a[2].tobytes() == b[2].tobytes() for a, b in zip(out, again, strict=True))


def test_split_groups_keeps_test_trajectories_apart():
    trajectory = np.repeat(np.arange(5), 40)
    split = split_groups(trajectory)
    assert sorted(np.concatenate(list(split.values()))) == list(range(200))
    test_ids = set(trajectory[split["test"]])
    assert test_ids == {4}
    assert not test_ids & set(trajectory[np.concatenate([split["train"], split["val"]])])
    assert len(split["val"]) == 16 and len(split["test"]) == 40
    ten = np.repeat(np.arange(10), [3, 3, 2, 2, 2, 2, 2, 2, 1, 1])
    uneven = split_groups(ten)
    assert set(ten[uneven["test"]]) == {8, 9} and len(uneven["val"]) == 2
    with pytest.raises(MdkerasError, match="1 trajectory cannot be split"):
        split_groups(np.zeros(10, int))


def test_bad_input_is_one_line():
    with pytest.raises(MdkerasError, match="configurations=0 is not allowed"):
        md.generate("lj", 0.5, configurations=0, seed=0)
    with pytest.raises(MdkerasError, match="temperature=-1 is not allowed"):
        md.generate("lj", 0.5, -1, configurations=3, seed=0)
    with pytest.raises(MdkerasError, match="potential='morse' is not allowed"):
        md.generate("morse", 0.5, configurations=3, seed=0)
    with pytest.raises(MdkerasError, match="seed=-1 is not allowed"):
        md.generate("lj", 0.5, configurations=3, seed=-1)


@needs_lammps
def test_drift_measurement_separates_good_and_bad_timesteps():
    kwargs = dict(particles=200, steps=1_000, equilibration=1.0, every=50, seed=0)
    good = md.energy_drift("lj", 0.5, 1.0, 0.005, **kwargs)
    bad = md.energy_drift("lj", 0.5, 1.0, 0.03, **kwargs)
    assert abs(good["drift"]) < md.DRIFT_LIMIT
    assert bad["drift"] == float("inf") and "Lost atoms" in bad["error"]


def test_spacing_choice_needs_both_criteria():
    lag = np.arange(11) * 0.1
    acf = np.array([1, 0.5, 0.2, -0.06, 0.01, 0.02, -0.01, 0, 0, 0, 0])
    disp = lag * 0.8
    assert md.choose_spacing({"lag": lag, "acf": acf, "displacement": disp}) == pytest.approx(0.7)
    assert md.choose_spacing({"lag": lag, "acf": acf, "displacement": disp * 10}) == 0.4
    with pytest.raises(MdkerasError, match="do not decorrelate"):
        md.choose_spacing({"lag": lag, "acf": acf, "displacement": disp * 0.1})
    assert dataclasses.asdict(md.protocol("lj", 0.5, 1.0))["drift"] <= md.DRIFT_LIMIT


@needs_lammps
def test_md_datasets_split_by_trajectory(tmp_path):
    from mdkeras.datasets import DatasetSpec, load_or_build, read_metadata

    spec = DatasetSpec(
        "lj", 0.5, 8.0, 16, samples=500, seed=2, particles=300, targets=50,
        sampler="md", temperature=1.0,
    )  # fmt: skip
    data = load_or_build(spec, cache_dir=tmp_path, progress=False)
    assert data.grids.shape == (500, 16, 16) and np.all(np.isfinite(data.forces))
    assert np.array_equal(np.bincount(data.config), [50] * 10)
    trajectory = md.trajectory_ids(spec.configurations)[data.config]
    assert np.array_equal(np.bincount(md.trajectory_ids(10)), [2] * 5)
    split = data.split_indices()
    test = set(trajectory[split["test"]])
    train, val = set(trajectory[split["train"]]), set(trajectory[split["val"]])
    assert test == {4} and train == {0, 1, 2, 3} and val <= train  # val: from training ones
    assert not test & (train | val)
    # the samples are those of the frames: configuration 3's first target, featurized again
    (x, box, targets) = list(md.md_configurations(spec))[3]
    g, f = featurize(x, box, targets[:1], potential="lj", window=8.0, grid=16)
    assert np.array_equal(data.grids[150], g[0]) and np.array_equal(data.forces[150], f[0])
    # the metadata written with it: how the MD was run
    meta = read_metadata(tmp_path / spec.filename)["provenance"]
    run = md.protocol("lj", 0.5, 1.0)
    assert meta == md.md_provenance(spec) == spec.provenance
    assert (meta["timestep"], meta["damp"], meta["drift"]) == (run.timestep, run.damp, run.drift)
    assert (meta["equilibration"], meta["spacing"]) == (run.equilibration, run.spacing)
    assert meta["lammps_version"] == engine.lammps_version() and meta["trajectories"] == 5
    again = load_or_build(spec, cache_dir=tmp_path, progress=False)  # from the cache
    assert again.digest() == data.digest()


def test_registry_md_cases_cover_every_setting_with_a_measured_protocol():
    from benchmarks import registry
    from mdkeras.architectures import ARCHITECTURES

    cases = [c for c in registry.list_cases("md-") if c.head != "force"]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)) == 7 * len(ARCHITECTURES) * 2 == 56
    assert "md-lj-rho0.50-t1.00-w8-n28-lenet-paper" in names
    assert "md-lj-rho0.70-t1.00-w8-n28-forcemap-quantile" in names
    assert all(c.sampler == "md" and c.temperature == 1.0 and c.grid == 28 for c in cases)
    assert all(c.paper_reference is None for c in cases)  # not the paper's (uniform) data
    states = {(c.potential, c.density, c.window) for c in cases}
    assert states == set(registry.PHYSICS) | {("lj", 0.7, 8.0)}
    # every registry state runs with the measured protocol, never a measurement at run time
    assert {(c.potential, c.density, c.temperature) for c in cases} <= set(md.PROTOCOLS)
