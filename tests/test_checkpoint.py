"""An MD run that is interrupted goes on from its checkpoint (`simulate.run(checkpoint=...)`,
`python -m benchmarks md --resume`): killed with SIGKILL mid-run, the rerun finishes with
every sample of an uninterrupted run, the unwrapped positions continue across the resume (the
MSD sees no jump of a box side), the record says where it resumed and the checkpoint is gone;
a checkpoint of another run, or one met without --resume, is one error before any MD."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lammps_marks import needs_lammps

from benchmarks import simulation
from mdkeras import simulate
from mdkeras.errors import MdkerasError
from mdkeras.records import load_record

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--particles", "200", "--steps", "400", "--nve-steps", "500"]


class Interrupt(Exception):
    pass


def plan():
    return simulate.schedule("lj", 0.5, 1.0, steps=400, nve_steps=500)


def interrupted_then_resumed(tmp_path, stop_at: float):
    """A run stopped (an exception from its progress callback) at `stop_at` of its steps,
    checkpointing at every chunk, then resumed from the checkpoint."""
    source = simulate.true_source("lj")
    checkpoint = tmp_path / "run.checkpoint.npz"

    def stop(fraction):
        if fraction >= stop_at:
            raise Interrupt

    kw = dict(seed=3, plan=plan(), particles=100, checkpoint=checkpoint, checkpoint_seconds=0)
    with pytest.raises(Interrupt):
        simulate.run("lj", 0.5, 1.0, source, progress=stop, **kw)
    assert checkpoint.exists()
    return simulate.run("lj", 0.5, 1.0, source, **kw), checkpoint


@needs_lammps
@pytest.mark.parametrize("stop_at", [0.3, 0.8, 0.97])  # equilibration, production, NVE
def test_a_resumed_run_has_every_sample_and_continuous_unwrapped_positions(tmp_path, stop_at):
    whole = simulate.run(
        "lj", 0.5, 1.0, simulate.true_source("lj"), seed=3, plan=plan(), particles=100
    )
    resumed, _ = interrupted_then_resumed(tmp_path, stop_at)
    for name in ("times", "structure_times", "nve_times"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))
    for name in ("unwrapped", "structure", "true_energy", "nve_energy", "temperature"):
        assert getattr(resumed, name).shape == getattr(whole, name).shape, name
        assert np.all(np.isfinite(getattr(resumed, name))), name
    (at,) = resumed.timings["resumed_at_steps"]
    assert 0 < at < plan().equilibration_steps + plan().steps + plan().nve_steps
    # the largest move of a coordinate between frames (0.2 time units) in uninterrupted runs of
    # seeds 0-11 was 0.59-0.74; a lost image shift would be a box side (14)
    step = np.abs(np.diff(resumed.unwrapped, axis=0)).max()
    assert step < 2.0, step
    # statistics, not states, after a resume: uninterrupted runs of seeds 0-11 had mean T 1.004,
    # sd 0.030 (0.93-1.03); the bounds are 6 sd
    assert 0.8 < resumed.temperature.mean() < 1.2


@needs_lammps
def test_a_checkpoint_of_another_run_is_an_error(tmp_path):
    _, checkpoint = interrupted_then_resumed(tmp_path, 0.5)
    source = simulate.true_source("lj")
    with pytest.raises(MdkerasError, match="belongs to another run"):
        simulate.run(
            "lj", 0.5, 1.0, source, seed=4, plan=plan(), particles=100, checkpoint=checkpoint
        )
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(MdkerasError, match="cannot be read"):
        simulate.run(
            "lj", 0.5, 1.0, source, seed=3, plan=plan(), particles=100, checkpoint=checkpoint
        )


@needs_lammps
def test_md_killed_mid_run_resumes_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["-k", "lj-rho0.50-t1.00", "--seeds", "0", "--out", str(out), "--no-plots", *SMALL]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "md", *args, "--checkpoint-every", "0.01"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    record = out / "lj-rho0.50-t1.00--true--seed0.json"
    checkpoint = simulation.checkpoint_path(record)
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no checkpoint written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not record.exists()
    # met without --resume: one error, the checkpoint kept
    assert simulation.main(args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert checkpoint.exists()
    assert simulation.main([*args, "--resume"]) == 0
    result = load_record(record, kind="simulation")
    assert result["timing"]["resumed_at_steps"][0] > 0
    assert not checkpoint.exists()


def test_checkpoint_every_must_be_positive(tmp_path, capsys):
    args = ["-k", "lj-rho0.50-t1.00", "--out", str(tmp_path), "--checkpoint-every", "0"]
    assert simulation.main(args) == 2
    assert "--checkpoint-every 0 is not allowed" in capsys.readouterr().err
