"""Datasets (SPEC §2): determinism, configuration-wise splits, and the on-disk cache."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
from reference import featurize_bruteforce

import mdkeras.datasets as ds
from mdkeras.config import Case
from mdkeras.datasets import Dataset, DatasetSpec, generate, load_or_build
from mdkeras.errors import MdkerasError
from mdkeras.sampling import SAMPLERS, Sampler, get_sampler, uniform_configuration

SMALL = dict(
    potential="lj", density=0.5, window=8.0, grid=16, samples=400, seed=3, particles=400, targets=50
)


def small(**change) -> DatasetSpec:
    return DatasetSpec(**{**SMALL, **change})


@pytest.fixture(scope="module")
def small_data() -> Dataset:
    return generate(small(), progress=False)


# --- generation ------------------------------------------------------------------------------


def test_shapes_dtypes_and_configuration_ids(small_data):
    d = small_data
    assert d.grids.shape == (400, 16, 16) and d.grids.dtype == np.uint8
    assert d.forces.shape == (400, 2) and d.forces.dtype == np.float64
    assert d.config.shape == (400,)
    np.testing.assert_array_equal(d.config, np.repeat(np.arange(8), 50))
    assert small().configurations == 8
    assert np.all(np.isfinite(d.forces)) and d.grids.sum() > 0


def test_samples_not_a_multiple_of_targets():
    spec = small(samples=420)  # 9 configurations, the last one with 20 targets
    d = generate(spec, progress=False)
    assert spec.configurations == 9 and len(d.grids) == len(d.forces) == len(d.config) == 420
    assert np.bincount(d.config).tolist() == [50] * 8 + [20]


def test_samples_are_the_featurized_configurations(small_data):
    """Configuration i is built from SeedSequence(seed).spawn(...)[i]; re-featurizing it with the
    brute-force reference gives the stored grids and forces."""
    spec = small()
    child = np.random.SeedSequence(spec.seed).spawn(spec.configurations)[2]
    positions, box, targets = uniform_configuration(
        np.random.default_rng(child), spec.particles, spec.density, spec.targets
    )
    g, f = featurize_bruteforce(positions, box, targets, spec.potential, spec.window, spec.grid)
    rows = small_data.config == 2
    np.testing.assert_array_equal(small_data.grids[rows], g)
    np.testing.assert_allclose(small_data.forces[rows], f, rtol=1e-9, atol=1e-12 * np.abs(f).max())


def test_same_seed_same_bytes(small_data):
    again = generate(small(), progress=False)
    assert again.digest() == small_data.digest()
    np.testing.assert_array_equal(again.grids, small_data.grids)
    np.testing.assert_array_equal(again.forces, small_data.forces)
    np.testing.assert_array_equal(again.config, small_data.config)


def test_different_seed_different_data(small_data):
    other = generate(small(seed=4), progress=False)
    assert other.digest() != small_data.digest()
    assert not np.array_equal(other.grids, small_data.grids)
    assert not np.array_equal(other.forces, small_data.forces)


def test_configurations_are_independent(small_data):
    g = small_data.grids.reshape(8, 50, -1)
    assert not any(np.array_equal(g[0], g[i]) for i in range(1, 8))


def test_key_depends_on_every_field():
    base = small()
    changes = dict(
        potential="coulomb",
        density=0.6,
        window=7.0,
        grid=28,
        samples=450,
        seed=9,
        particles=500,
        targets=40,
    )
    keys = {base.key()}
    for field, value in changes.items():
        spec = dataclasses.replace(base, **{field: value})
        keys.add(spec.key())
        assert spec.filename != base.filename
    assert len(keys) == len(changes) + 1
    assert small().key() == base.key()  # and is stable


# --- splits ----------------------------------------------------------------------------------


def check_splits(data: Dataset):
    idx = data.split_indices()
    assert set(idx) == {"train", "val", "test"}
    everything = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert len(everything) == len(data.config)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(data.config)))  # disjoint
    configs = {name: set(np.unique(data.config[i]).tolist()) for name, i in idx.items()}
    assert not configs["train"] & configs["val"]
    assert not configs["train"] & configs["test"]
    assert not configs["val"] & configs["test"]
    c = data.spec.configurations
    # test = the last configurations; val = the training configurations' end; train = the start
    assert max(configs["train"]) < min(configs["val"]) <= max(configs["val"]) < min(configs["test"])
    assert configs["train"] | configs["val"] | configs["test"] == set(range(c))
    assert max(configs["test"]) == c - 1 and min(configs["train"]) == 0
    return idx, configs


def test_small_splits(small_data):
    idx, configs = check_splits(small_data)
    # 8 configurations: test = round(8 * 0.2) = 2, val = round(6 * 0.1) -> at least 1
    assert configs == {"train": {0, 1, 2, 3, 4}, "val": {5}, "test": {6, 7}}
    assert [len(idx[k]) for k in ("train", "val", "test")] == [250, 50, 100]
    g, f = small_data.split("test")
    np.testing.assert_array_equal(g, small_data.grids[300:])
    np.testing.assert_array_equal(f, small_data.forces[300:])


def test_split_rejects_unknown_name(small_data):
    with pytest.raises(MdkerasError, match="'validation'"):
        small_data.split("validation")


def test_paper_size_split_arithmetic():
    """50,000 samples of 250 targets: 200 configurations, the last 40 test (SPEC §2); 16 of the
    160 training configurations validate."""
    spec = DatasetSpec(potential="lj", density=0.5, window=8.0, grid=28, samples=50_000, seed=0)
    assert spec.configurations == 200 and spec.targets == 250 and spec.particles == 2000
    config = np.repeat(np.arange(200, dtype=np.int32), 250)
    fake = Dataset(spec, np.zeros((50_000, 1, 1), np.uint8), np.zeros((50_000, 2)), config)
    idx, configs = check_splits(fake)
    assert {k: len(v) for k, v in idx.items()} == {"train": 36_000, "val": 4_000, "test": 10_000}
    assert configs["test"] == set(range(160, 200))
    assert configs["val"] == set(range(144, 160))
    assert len(idx["train"]) + len(idx["val"]) == 40_000


def test_paper_size_generated_dataset_splits():
    """The same arithmetic on a real 50,000-sample dataset (under a second to generate)."""
    spec = DatasetSpec(
        potential="coulomb", density=0.5, window=5.0, grid=16, samples=50_000, seed=1
    )
    data = generate(spec, progress=False)
    assert len(data.grids) == 50_000
    idx, configs = check_splits(data)
    assert {k: len(v) for k, v in idx.items()} == {"train": 36_000, "val": 4_000, "test": 10_000}
    assert configs["test"] == set(range(160, 200))
    g, f = data.split("val")
    assert g.shape == (4_000, 16, 16) and f.shape == (4_000, 2)


@pytest.mark.parametrize(
    ("samples", "targets"), [(750, 250), (2000, 250), (10_000, 250), (1000, 100), (777, 37)]
)
def test_split_arithmetic_other_sizes(samples, targets):
    spec = small(samples=samples, targets=targets)
    c = spec.configurations
    config = np.repeat(np.arange(c, dtype=np.int32), targets)[:samples]
    fake = Dataset(spec, np.zeros((samples, 1, 1), np.uint8), np.zeros((samples, 2)), config)
    idx, configs = check_splits(fake)
    assert all(len(v) > 0 for v in idx.values())
    assert len(configs["test"]) == max(1, round(0.2 * c))


# --- the cache -------------------------------------------------------------------------------


def no_generate(*args, **kwargs):
    raise AssertionError("generate() called although the cache holds the dataset")


def test_cache_hit_returns_identical_arrays(tmp_path, monkeypatch, small_data):
    spec = small()
    first = load_or_build(spec, cache_dir=tmp_path, progress=False)
    assert first.digest() == small_data.digest()
    assert sorted(p.name for p in tmp_path.iterdir()) == [spec.filename]  # no temporary files
    monkeypatch.setattr(ds, "generate", no_generate)
    second = load_or_build(spec, cache_dir=tmp_path, progress=False)
    assert second.digest() == first.digest()
    np.testing.assert_array_equal(second.grids, first.grids)
    np.testing.assert_array_equal(second.forces, first.forces)
    np.testing.assert_array_equal(second.config, first.config)
    assert second.spec == spec


def test_cache_distinguishes_specs(tmp_path, monkeypatch):
    a = load_or_build(small(), cache_dir=tmp_path, progress=False)
    b = load_or_build(small(seed=4), cache_dir=tmp_path, progress=False)
    assert a.digest() != b.digest()
    assert len(list(tmp_path.iterdir())) == 2
    monkeypatch.setattr(ds, "generate", no_generate)
    assert load_or_build(small(seed=4), cache_dir=tmp_path, progress=False).digest() == b.digest()


def grids_payload_offset(path):
    """Byte offset, inside the .npz, of the middle of the `grids` array's data."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("grids.npy")
        assert info.compress_type == zipfile.ZIP_STORED
    raw = path.read_bytes()
    start = info.header_offset
    name_len = int.from_bytes(raw[start + 26 : start + 28], "little")
    extra_len = int.from_bytes(raw[start + 28 : start + 30], "little")
    data = start + 30 + name_len + extra_len
    return data + info.file_size // 2


def corrupt_truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def corrupt_flip(path):
    raw = bytearray(path.read_bytes())
    at = grids_payload_offset(path)
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as z:  # the zip still opens: only the payload is wrong
        assert "grids.npy" in z.namelist()


def corrupt_tamper(path):
    """A well-formed .npz (valid zip CRCs) whose grids no longer match the stored checksum."""
    with np.load(path) as z:
        arrays = {name: z[name].copy() for name in z.files}
    arrays["grids"][7, 3, 4] += 1
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def corrupt_garbage(path):
    path.write_bytes(b"this is not a zip file" * 100)


def corrupt_empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize(
    "corrupt", [corrupt_truncate, corrupt_flip, corrupt_tamper, corrupt_garbage, corrupt_empty]
)
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, capsys, monkeypatch, small_data, corrupt):
    spec = small()
    path = tmp_path / spec.filename
    load_or_build(spec, cache_dir=tmp_path, progress=False)
    good = path.read_bytes()
    corrupt(path)
    assert path.read_bytes() != good
    capsys.readouterr()
    rebuilt = load_or_build(spec, cache_dir=tmp_path, progress=False)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "warning" in lines[0].lower() and spec.filename in lines[0], err
    assert rebuilt.digest() == small_data.digest()  # rebuilt with identical data bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == [spec.filename]
    # and the rebuilt file is a clean hit holding the same arrays
    monkeypatch.setattr(ds, "generate", no_generate)
    again = load_or_build(spec, cache_dir=tmp_path, progress=False)
    assert capsys.readouterr().err.strip() == ""
    assert again.digest() == small_data.digest()
    np.testing.assert_array_equal(again.grids, small_data.grids)
    np.testing.assert_array_equal(again.forces, small_data.forces)


def test_cache_for_another_spec_under_this_name_is_rebuilt(tmp_path, capsys, small_data):
    spec = small()
    other = small(seed=4)
    load_or_build(other, cache_dir=tmp_path, progress=False)
    (tmp_path / other.filename).rename(tmp_path / spec.filename)
    capsys.readouterr()
    data = load_or_build(spec, cache_dir=tmp_path, progress=False)
    assert data.digest() == small_data.digest()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_env_var_sets_the_cache_dir(tmp_path, monkeypatch):
    where = tmp_path / "from-env" / "nested"
    monkeypatch.setenv("MDKERAS_CACHE", str(where))
    assert ds.default_cache_dir() == where
    spec = small()
    data = load_or_build(spec, progress=False)
    assert (where / spec.filename).is_file()
    monkeypatch.setattr(ds, "generate", no_generate)
    assert load_or_build(spec, progress=False).digest() == data.digest()


def test_cache_dir_argument_beats_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("MDKERAS_CACHE", str(tmp_path / "env"))
    spec = small()
    load_or_build(spec, cache_dir=tmp_path / "arg", progress=False)
    assert (tmp_path / "arg" / spec.filename).is_file()
    assert not (tmp_path / "env").exists()


# --- bad specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"density": 0.0}, "density=0.0"),
        ({"density": -0.5}, "density=-0.5"),
        ({"window": 0.0}, "window=0.0"),
        ({"window": -1.0}, "window=-1.0"),
        ({"window": 40.0}, "window=40.0"),  # box is sqrt(400 / 0.5) = 28.3
        ({"density": 4.0, "window": 10.0}, "window=10.0"),  # box 10: window == box
        ({"seed": -1}, "seed=-1"),
        ({"seed": 1.5}, "seed=1.5"),
        ({"samples": 149}, "samples=149"),  # fewer than 3 * 50
        ({"samples": 100}, "samples=100"),
        ({"potential": "morse"}, "morse"),
        ({"grid": 1}, "grid=1"),
        ({"targets": 0}, "targets=0"),
        ({"targets": 401}, "targets=401"),
        ({"sampler": "vmc"}, "sampler='vmc' is not allowed: expected one of 'uniform'"),
        ({"temperature": 1.0}, "temperature=1.0 is not allowed for sampler 'uniform'"),
    ],
)
def test_bad_spec_is_one_clear_error(change, needle):
    with pytest.raises(MdkerasError, match=needle):
        small(**change)


def test_smallest_allowed_sample_count():
    spec = small(samples=150)
    assert spec.configurations == 3
    config = np.repeat(np.arange(3, dtype=np.int32), 50)
    fake = Dataset(spec, np.zeros((150, 1, 1), np.uint8), np.zeros((150, 2)), config)
    idx, configs = check_splits(fake)
    assert configs == {"train": {0}, "val": {1}, "test": {2}}


# --- the sampler table -------------------------------------------------------------------------


def test_uniform_keys_are_those_of_the_committed_records():
    """The sampler table and the optional temperature leave uniform cache keys (and so the
    `dataset_key` of every committed record) as they were."""
    spec = DatasetSpec("lj", 0.5, 8.0, 28, 2_000, 0)
    assert "temperature" not in spec.to_dict()
    assert spec.key() == "e57fc5c0d91518278333d9c9a0e3fa8c9d08c849fb6166a4ed689e45b2fa014e"
    assert "temperature" not in Case("lj", 0.5, 8.0, 28).to_dict()


def md_spec(**change) -> DatasetSpec:
    return small(**{"sampler": "md", "temperature": 1.0, **change})


def test_md_keys_carry_the_sampler_provenance(monkeypatch):
    """The md cache key covers what fixes the bytes beyond the spec (LAMMPS version, run
    protocol, interaction); uniform specs have none, so their keys stay as they were."""
    from mdkeras import engine, md

    monkeypatch.setattr(engine, "lammps_version", lambda: 20250722)
    assert small().provenance is None
    spec = md_spec()
    prov = spec.provenance
    run = md.protocol("lj", 0.5, 1.0)
    assert prov["lammps_version"] == 20250722 and prov["sampler"] == "md"
    assert (prov["timestep"], prov["damp"], prov["drift"]) == (run.timestep, run.damp, run.drift)
    assert prov["equilibration"] == run.equilibration and prov["spacing"] == run.spacing
    assert prov["interaction"]["commands"][0] == "pair_style lj/cut 4"
    assert md_spec(potential="coulomb", window=5.0).provenance["interaction"]["table_sha256"]
    monkeypatch.setitem(md.PROTOCOLS, ("lj", 0.5, 2.0), run)  # not measured here: minutes
    keys = {spec.key(), md_spec(temperature=2.0).key(), small().key()}
    monkeypatch.setattr(engine, "lammps_version", lambda: 20990101)
    keys.add(md_spec().key())
    monkeypatch.setitem(md.PROTOCOLS, ("lj", 0.5, 1.0), dataclasses.replace(run, spacing=1.0))
    keys.add(md_spec().key())
    assert len(keys) == 5
    assert "-t1-" in spec.filename and "-t" not in small().filename.split("rho")[1][:6]


@pytest.mark.parametrize("samples", [150, 400, 2_000, 10_000, 50_000])
def test_md_splits_keep_trajectories_apart(samples):
    """md configurations come in trajectories (`md.trajectory_ids`): no trajectory is on both
    sides of the test boundary, validation comes from training trajectories, and the split is
    the configuration-wise split of SPEC §2 (the trajectories' boundaries fall on it)."""
    from mdkeras.md import trajectory_ids

    spec = md_spec(samples=samples)
    c = spec.configurations
    config = np.repeat(np.arange(c, dtype=np.int32), spec.targets)[:samples]
    fake = Dataset(spec, np.zeros((samples, 1, 1), np.uint8), np.zeros((samples, 2)), config)
    idx, configs = check_splits(fake)  # the configuration-wise shape of SPEC §2
    uniform = Dataset(small(samples=samples), fake.grids, fake.forces, config).split_indices()
    assert all(np.array_equal(idx[k], uniform[k]) for k in idx)
    trajectory = trajectory_ids(c)
    test = set(trajectory[sorted(configs["test"])].tolist())
    rest = set(trajectory[sorted(configs["train"] | configs["val"])].tolist())
    assert test and rest and not test & rest


def test_split_groups_rejects_bad_groups():
    with pytest.raises(MdkerasError, match="1 trajectory cannot be split"):
        ds.split_groups(np.zeros(10, int))
    with pytest.raises(MdkerasError, match="expected one non-decreasing id per configuration"):
        ds.split_groups(np.array([0, 1, 0, 1]))


def lattice_configurations(spec):
    """A test sampler: particles on a square lattice shifted by a seeded offset (T unused)."""
    side = int(np.ceil(np.sqrt(spec.particles)))
    spacing = spec.box / side
    ij = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)
    lattice = ij[: spec.particles] * spacing
    for child in np.random.SeedSequence(spec.seed).spawn(spec.configurations):
        rng = np.random.default_rng(child)
        positions = (lattice + rng.uniform(0, spacing, 2)) % spec.box
        yield positions, spec.box, rng.choice(spec.particles, spec.targets, replace=False)


def test_a_new_sampler_is_one_table_entry(monkeypatch):
    entry = Sampler("lattice", f"{__name__}:lattice_configurations", temperature=0.5)
    monkeypatch.setitem(SAMPLERS, "lattice", entry)
    case = Case("lj", 0.5, 8.0, 28, sampler="lattice")
    assert case.temperature == 0.5  # the sampler's default
    assert case.name == "lattice-lj-rho0.50-t0.50-w8-n28-lenet-paper"
    assert Case.from_dict(case.to_dict()) == case
    assert Case("lj", 0.5, 8.0, 28, sampler="lattice", temperature=2.0).setting.endswith(
        "-t2.00-w8-n28"
    )
    with pytest.raises(MdkerasError, match="temperature=-1.0 is not allowed"):
        Case("lj", 0.5, 8.0, 28, sampler="lattice", temperature=-1.0)
    spec = small(sampler="lattice", temperature=0.5)
    assert spec.key() != small().key() != small(sampler="lattice", temperature=0.7).key()
    with pytest.raises(MdkerasError, match="temperature=None is not allowed for sampler 'lat"):
        small(sampler="lattice")
    data = generate(spec, progress=False)
    assert data.grids.shape == (400, 16, 16) and len(np.unique(data.config)) == 8
    positions, box, targets = next(lattice_configurations(spec))
    g, f = featurize_bruteforce(positions, box, targets, "lj", 8.0, 16)
    np.testing.assert_array_equal(data.grids[:50], g)


def test_sampler_table_entries_and_errors():
    uniform = get_sampler("uniform")
    assert uniform.temperature is None and uniform.uniform_in_cells
    first = next(uniform.generate(small()))
    child = np.random.SeedSequence(3).spawn(8)[0]
    again = uniform_configuration(np.random.default_rng(child), 400, 0.5, 50)
    np.testing.assert_array_equal(first[0], again[0])
    with pytest.raises(MdkerasError, match="sampler='vmc' is not allowed: expected one of"):
        get_sampler("vmc")
