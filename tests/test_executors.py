"""The executors of `python -m benchmarks run`: local worker processes (`--jobs`) and Ray.

The option checks, GPU assignment and scheduling are fast and need no TensorFlow. The `slow`
tests train real smoke-scale LeNet n=16 cases (a few seconds each) in worker processes; the Ray
ones start a real local Ray instance and are skipped when Ray is not installed
(`pip install "mdkeras[ray]"`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types

import pandas as pd
import pytest

from benchmarks import executors, records, registry
from benchmarks.cli import main
from mdkeras.config import Case

CASES = (
    "lj-rho0.05-w8-n16-lenet-paper",
    "lj-rho0.05-w8-n16-lenet-quantile",  # shares its dataset with the first
    "coulomb-rho0.05-w5-n16-lenet-paper",
)
TIMING_COLUMNS = ["train_seconds"]


@pytest.fixture(scope="module")
def ray():
    """Ray, or skip: listed first, so a skipped test sets nothing else up."""
    return pytest.importorskip(
        "ray", reason='Ray is not installed (pip install "mdkeras[ray]"; tox -e py has it)'
    )


def run_argv(out, cache, *extra, cases=CASES):
    argv = ["run", "--out", str(out), "--cache-dir", str(cache), "-q"]
    for name in cases:
        argv += ["-k", name]
    return [*argv, *extra]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def load(out, name, seed=0) -> dict:
    return records.load_record(records.record_path(out, name, "smoke", seed))


def same_result(a: dict, b: dict) -> None:
    """Two ok records of the same pair agree on everything but timings and provenance (on CPU,
    with the same TensorFlow thread count, which no executor changes)."""
    assert a["status"] == b["status"] == "ok"
    assert a["metrics"] == b["metrics"]
    assert a["baselines"] == b["baselines"]
    assert a["epochs_run"] == b["epochs_run"]

    def history(r):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in r["history"]]

    assert history(a) == history(b)


# --- options (fast) ------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--xla", "--mixed-precision"])
def test_speed_options_need_no_determinism(flag, tmp_path, capsys):
    assert main(run_argv(tmp_path / "out", tmp_path / "cache", flag)) == 2
    line = one_error_line(capsys)
    assert flag in line and "--no-determinism" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--jobs", "0"], "--jobs 0"),
        (["--address", "auto"], "--executor ray"),
        (["--executor", "ray", "--jobs", "2"], "--jobs applies to --executor local"),
        (["--executor", "dask"], "dask"),
    ],
)
def test_executor_option_errors(extra, needle, tmp_path, capsys):
    assert main(run_argv(tmp_path / "out", tmp_path / "cache", *extra)) == 2
    assert needle in one_error_line(capsys)


def test_ray_executor_without_ray_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    assert main(run_argv(tmp_path / "out", tmp_path / "cache", "--executor", "ray")) == 2
    assert 'pip install "mdkeras[ray]"' in one_error_line(capsys)


def test_unreachable_ray_address_is_one_line_error(ray, tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address, needle in [(f"127.0.0.1:{port}", "cannot reach"), ("nohost", "HOST:PORT")]:
        argv = run_argv(tmp_path / "out", tmp_path / "cache", "--executor", "ray")
        assert main([*argv, "--address", address]) == 2
        assert needle in one_error_line(capsys)


def fake_training(monkeypatch, run_case):
    module = types.ModuleType("mdkeras.training")
    module.RECORD_FORMAT_VERSION = 1
    module.run_case = run_case
    monkeypatch.setitem(sys.modules, "mdkeras.training", module)
    return module


def test_speed_options_reach_run_case_only_when_set(tmp_path, monkeypatch, capsys):
    from test_benchmarks import make_record

    calls = []

    def run_case(case, scale, seed, *, cache_dir=None, verbose=1, **options):
        calls.append(options)
        return make_record(case.name, scale.name, seed)

    fake_training(monkeypatch, run_case)
    argv = run_argv(tmp_path / "out", tmp_path / "cache", cases=CASES[:1])
    assert main(argv) == 0
    assert main([*argv, "--no-determinism"]) == 0
    assert main([*argv, "--no-determinism", "--xla", "--mixed-precision"]) == 0
    assert calls == [
        {},
        {"deterministic": False},
        {"deterministic": False, "mixed_precision": True, "xla": True},
    ]
    record = load(tmp_path / "out", CASES[0])
    assert record["provenance"]["executor"] == "local" and record["provenance"]["host"]


def test_speed_option_that_run_case_lacks_is_one_line_error(tmp_path, monkeypatch, capsys):
    def run_case(case, scale, seed, *, cache_dir=None, verbose=1, deterministic=True):
        raise AssertionError("must not run")

    fake_training(monkeypatch, run_case)
    argv = run_argv(tmp_path / "out", tmp_path / "cache", "--no-determinism", "--xla")
    assert main(argv) == 2
    assert "run_case(xla=...)" in one_error_line(capsys)


# --- GPUs and scheduling (fast) ------------------------------------------------------------


@pytest.mark.parametrize(
    "value, gpus",
    [
        ("0,1", ["0", "1"]),
        ("", []),
        ("-1", []),
        ("2, 3,-1,4", ["2", "3"]),
        ("GPU-ab12", ["GPU-ab12"]),
    ],
)
def test_visible_gpus_follow_cuda_visible_devices(value, gpus):
    assert executors.visible_gpus({"CUDA_VISIBLE_DEVICES": value}) == gpus


def test_one_gpu_per_job_and_thread_settings_left_alone():
    env = executors.worker_env(1, 2, ["4", "7"], {"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "7" and "TF_FORCE_GPU_ALLOW_GROWTH" not in env
    assert env["PATH"] == "/bin"
    shared = [executors.worker_env(s, 4, ["0", "1"], {}) for s in range(4)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in shared] == ["0", "1", "0", "1"]
    assert all(e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in shared)
    cpu = executors.worker_env(0, 2, [], {"TF_NUM_INTRAOP_THREADS": "3"})
    assert "CUDA_VISIBLE_DEVICES" not in cpu and cpu["TF_NUM_INTRAOP_THREADS"] == "3"
    assert "TF_NUM_INTRAOP_THREADS" not in executors.worker_env(0, 2, [], {})


def test_local_jobs_default_to_one_per_gpu():
    for environ, jobs, capacity in [
        ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, None, 3),
        ({"CUDA_VISIBLE_DEVICES": ""}, None, 1),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 1, 1),
    ]:
        executor = executors.LocalExecutor(jobs, total=1, environ=environ)
        try:
            assert executor.capacity == capacity
            assert ("GPUs 0,1,2" in executor.describe()) == bool(environ["CUDA_VISIBLE_DEVICES"])
        finally:
            executor.close()


def test_schedule_runs_costly_cases_first_and_spreads_shared_datasets():
    names = [
        "lj-rho0.50-w8-n16-lenet-paper",
        "lj-rho0.50-w8-n16-lenet-quantile",
        "lj-rho0.20-w8-n16-lenet-paper",
        "lj-rho0.50-w8-n56-alexnet-paper",
        "lj-rho0.20-w8-n16-lenet-quantile",
    ]
    jobs = [executors.Job(k, registry.get_case(n), 0, None) for k, n in enumerate(names, 1)]
    ordered = executors.schedule(jobs)
    assert [j.k for j in ordered] == [1, 2, 3, 4, 5]
    assert [j.case.name for j in ordered] == [
        "lj-rho0.50-w8-n56-alexnet-paper",
        "lj-rho0.50-w8-n16-lenet-paper",
        "lj-rho0.20-w8-n16-lenet-paper",
        "lj-rho0.50-w8-n16-lenet-quantile",
        "lj-rho0.20-w8-n16-lenet-quantile",
    ]


# --- real runs (slow) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, cache):
    """CASES run by the local executor with --jobs 1 and with --jobs 2."""
    outs = {}
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"jobs{jobs}")
        assert main(run_argv(out, cache, "--jobs", str(jobs))) == 0
        outs[jobs] = out
    return outs


@pytest.mark.slow
def test_jobs_2_gives_the_same_records_and_table_as_jobs_1(local_runs):
    for name in CASES:
        one, two = load(local_runs[1], name), load(local_runs[2], name)
        same_result(one, two)
        assert one["provenance"]["executor"] == "local"
        assert one["provenance"]["device"] == two["provenance"]["device"]
    tables = [
        pd.read_csv(local_runs[j] / "summary.csv").drop(columns=TIMING_COLUMNS) for j in (1, 2)
    ]
    assert len(tables[0]) == len(CASES)
    pd.testing.assert_frame_equal(tables[0], tables[1])


@pytest.mark.slow
def test_local_worker_killed_mid_case_is_recorded_failed_and_nothing_finished_is_lost(
    tmp_path, cache, monkeypatch, capsys
):
    kills = tmp_path / "kills"
    monkeypatch.setenv(executors.TEST_KILL_ENV, CASES[0])
    monkeypatch.setenv(executors.TEST_KILL_LOG_ENV, str(kills))
    out = tmp_path / "out"
    argv = run_argv(out, cache, "--jobs", "2")
    assert main(argv) == 1  # the sweep went on
    failed = load(out, CASES[0])
    assert failed["status"] == "failed" and "SIGKILL" in failed["error"]
    assert "\n" not in failed["error"] and failed["provenance"]["executor"] == "local"
    assert len(kills.read_text().splitlines()) == 1
    finished = {n: records.record_path(out, n, "smoke", 0).read_bytes() for n in CASES[1:]}
    assert all(json.loads(text)["status"] == "ok" for text in finished.values())
    err = capsys.readouterr().err
    assert f"{CASES[0]} seed=0 FAILED" in err and "1 failed" in err

    monkeypatch.delenv(executors.TEST_KILL_ENV)
    assert main([*argv, "--resume"]) == 0  # only the failed pair runs again
    assert load(out, CASES[0])["status"] == "ok"
    for name, text in finished.items():
        assert records.record_path(out, name, "smoke", 0).read_bytes() == text
    assert "skipping 2" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_keeps_finished_records(tmp_path, cache):
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "benchmarks", *run_argv(out, cache, "--jobs", "1")]
    first = records.record_path(out, CASES[0], "smoke", 0)
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the executor's task files go here
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first.exists(), proc.communicate(timeout=60)[1].decode()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "interrupted; finished records are kept" in err.decode()
    assert records.load_record(first)["status"] == "ok"
    assert not list(tmp_path.glob("mdkeras-run-*"))  # the executor cleaned up after its workers


@pytest.mark.slow
def test_ray_executor_records_equal_the_local_executors(ray, tmp_path, cache, local_runs, capsys):
    out = tmp_path / "ray"
    assert main(run_argv(out, cache, "--executor", "ray")) == 0
    for name in CASES:
        record = load(out, name)
        same_result(record, load(local_runs[1], name))
        assert record["provenance"]["executor"] == "ray" and record["provenance"]["device"]
    assert "ray executor" in capsys.readouterr().err
    expected = pd.read_csv(local_runs[1] / "summary.csv").drop(columns=TIMING_COLUMNS)
    got = pd.read_csv(out / "summary.csv").drop(columns=TIMING_COLUMNS)
    pd.testing.assert_frame_equal(got, expected)
    assert main(["report", str(out)]) == 0


@pytest.mark.slow
def test_ray_worker_killed_mid_case_is_retried_then_recorded_failed(
    ray, tmp_path, cache, monkeypatch, capsys
):
    kills = tmp_path / "kills"
    monkeypatch.setenv(executors.TEST_KILL_ENV, CASES[2])
    monkeypatch.setenv(executors.TEST_KILL_LOG_ENV, str(kills))
    out = tmp_path / "ray"
    assert main(run_argv(out, cache, "--executor", "ray")) == 1
    failed = load(out, CASES[2])
    assert failed["status"] == "failed" and "Ray worker died" in failed["error"]
    assert "\n" not in failed["error"] and failed["provenance"]["executor"] == "ray"
    assert len(kills.read_text().splitlines()) == 1 + executors.RAY_MAX_RETRIES
    assert all(load(out, name)["status"] == "ok" for name in CASES[:2])
    assert "Failed runs (1)" in (out / "summary.md").read_text()


def test_case_round_trips_through_a_task():
    case = Case("coulomb", 0.5, 5.0, 28, head="joint", augment=True)
    job = executors.Job(1, case, 3, None)
    from mdkeras.config import get_scale

    task = executors.payload(job, get_scale("ci"), {"cache_dir": None, "verbose": 0}, 1, "local")
    task = json.loads(json.dumps(task))
    assert Case.from_dict(task["case"]) == case and task["seed"] == 3
    assert "test_kill" not in task
