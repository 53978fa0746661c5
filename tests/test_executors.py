"""The executors of `python -m benchmarks run`: local worker processes (`--jobs`) and Ray.

The option checks, GPU assignment, scheduling, batching and progress are fast and need no
TensorFlow (the batch logic runs on stand-in worker processes). The `slow` tests train real
smoke-scale LeNet n=16 cases (a few seconds each) in worker processes; workers that must die
are `tests/dying_worker.py`. The Ray ones start a real local Ray instance and are skipped when
Ray is not installed (`pip install "mdkeras[ray]"`).
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
from pathlib import Path

import pandas as pd
import pytest
from dying_worker import dying_payload

from benchmarks import executors, plan, records, registry
from benchmarks import worker as worker_mod
from benchmarks.cli import main
from mdkeras.architectures import get_architecture
from mdkeras.config import Case, get_scale

DYING_WORKER = Path(__file__).resolve().parent / "dying_worker.py"

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
        (["--jobs", "0"], "--jobs 0 is not allowed: expected 1 to"),
        (["--jobs", "10000"], "--jobs 10000 is not allowed: expected 1 to"),
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


def test_run_options_reach_run_case(tmp_path, monkeypatch, capsys):
    from test_benchmarks import make_record

    calls = []

    def run_case(case, scale, seed, *, cache_dir=None, verbose=1, **options):
        calls.append(options)
        return make_record(case.name, scale.name, seed)

    fake_training(monkeypatch, run_case)
    argv = run_argv(tmp_path / "out", tmp_path / "cache", "--executor", "inline", cases=CASES[:1])
    assert main(argv) == 0
    assert main([*argv, "--no-determinism", "--xla", "--mixed-precision"]) == 0
    assert main([*argv, "--save-model"]) == 0
    out = str((tmp_path / "out").resolve())
    assert calls == [
        {"deterministic": True, "mixed_precision": False, "xla": False, "model_dir": None},
        {"deterministic": False, "mixed_precision": True, "xla": True, "model_dir": None},
        {"deterministic": True, "mixed_precision": False, "xla": False, "model_dir": out},
    ]
    record = load(tmp_path / "out", CASES[0])
    assert record["provenance"]["executor"] == "inline" and record["provenance"]["host"]


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
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["TF_NUM_INTRAOP_THREADS"] == "3"
    assert "TF_NUM_INTRAOP_THREADS" not in executors.worker_env(0, 2, [], {})
    assert cpu["TF_CPP_MIN_LOG_LEVEL"] == "2"  # TensorFlow's C++ start-up notices stay out


def test_no_nvidia_device_means_no_gpus_and_no_probe(tmp_path, monkeypatch):
    assert not executors.nvidia_device_present(tmp_path)
    (tmp_path / "nvidia0").touch()
    assert executors.nvidia_device_present(tmp_path)
    monkeypatch.setattr(executors, "nvidia_device_present", lambda: False)
    monkeypatch.setattr(executors.shutil, "which", lambda name: "/bin/false")
    assert executors.visible_gpus({}) == []  # nvidia-smi is not even asked


def test_local_jobs_default_to_one_per_gpu():
    for environ, jobs, capacity in [
        ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, None, 3),
        ({"CUDA_VISIBLE_DEVICES": ""}, None, executors.default_jobs([])),
        ({"CUDA_VISIBLE_DEVICES": "0,1,2"}, 1, 1),
    ]:
        executor = executors.LocalExecutor(jobs, total=1, environ=environ)
        try:
            assert executor.capacity == capacity
            gpus = bool(environ["CUDA_VISIBLE_DEVICES"])
            assert ("GPUs 0,1,2" in executor.describe()) == gpus
            # a fresh process per pair on GPUs (TensorFlow keeps GPU memory), batches on CPU
            assert executor.cases_per_worker == (1 if gpus else executors.CPU_CASES_PER_WORKER)
        finally:
            executor.close()


def test_cpu_runs_two_workers_at_once_unless_one_core():
    assert executors.default_jobs([], cpus=2) == executors.default_jobs([], cpus=16) == 2
    assert executors.default_jobs([], cpus=1) == 1
    assert executors.default_jobs(["0", "1", "2"], cpus=2) == 3


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


# --- batches of pairs per worker (fast: a stand-in worker without TensorFlow) ---------------

# Speaks the worker protocol (started-k, then result-k.json per task, in order) and dies by
# SIGKILL on the case named in its first argument, or exits at once if that is "exit".
STAND_IN_WORKER = """
import json, os, signal, sys
from pathlib import Path
die, tasks, results = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
if die == "exit":
    raise SystemExit(3)
for task in json.loads(tasks.read_text()):
    k = task["k"]
    (results / f"started-{k}").touch()
    name = task["case"]["architecture"] + "-" + str(task["case"]["grid"]) + "-" + str(task["seed"])
    if name == die:
        os.kill(os.getpid(), signal.SIGKILL)
    print(f"progress noise {k}", flush=True)
    print(f"warning: dataset cache c{k}.npz is corrupt or truncated. Rebuilding it.", flush=True)
    record = {"status": "ok", "pid": os.getpid(), "k": k}
    tmp = results / f".result-{k}.json"
    tmp.write_text(json.dumps({"record": record, "seconds": 0.01}))
    os.replace(tmp, results / f"result-{k}.json")
"""


def stand_in(tmp_path, monkeypatch, die: str) -> None:
    script = tmp_path / "stand_in_worker.py"
    script.write_text(STAND_IN_WORKER)
    monkeypatch.setattr(executors.LocalExecutor, "command", (sys.executable, str(script), die))
    monkeypatch.setattr(executors, "POLL_S", 0.02)


def batch_jobs(n: int) -> list:
    case = Case("lj", 0.5, 8.0, 16)
    return [executors.Job(k, case, seed, None) for k, seed in enumerate(range(n), 1)]


def run_local(tmp_path, jobs, *, capacity=1, per_worker=3):
    executor = executors.LocalExecutor(
        capacity,
        total=len(jobs),
        tasks=tmp_path / "out" / executors.TASKS_DIR,
        relay=False,
        environ={"CUDA_VISIBLE_DEVICES": ""},
        cases_per_worker=per_worker,
    )
    try:
        events = list(
            executor.run(
                jobs, lambda job: executors.payload(job, get_scale("smoke"), {}, 1, "local")
            )
        )
    finally:
        executor.close()
    assert not (tmp_path / "out" / executors.TASKS_DIR).exists()  # cleaned up
    return events


def test_a_worker_runs_a_batch_and_hands_back_each_record(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, die="none")
    events = run_local(tmp_path, batch_jobs(5), per_worker=3)
    outcomes = [e for e in events if isinstance(e, executors.Outcome)]
    assert [o.job.k for o in outcomes] == [1, 2, 3, 4, 5]
    pids = [o.record["pid"] for o in outcomes]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4]  # batches of 3 and 2
    started = [e.job.k for e in events if isinstance(e, executors.Started)]
    assert started == [1, 2, 3, 4, 5]


def test_quiet_workers_still_show_warnings_about_data(tmp_path, monkeypatch, capsys):
    stand_in(tmp_path, monkeypatch, die="none")
    run_local(tmp_path, batch_jobs(2))  # relay=False, as with -q
    err = capsys.readouterr().err
    assert "warning: dataset cache c1.npz is corrupt" in err and "c2.npz" in err
    assert "progress noise" not in err


def test_a_worker_killed_mid_batch_takes_down_only_the_case_in_flight(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, die="lenet-16-1")  # the second pair of the first batch
    outcomes = [e for e in run_local(tmp_path, batch_jobs(4)) if isinstance(e, executors.Outcome)]
    assert [o.job.k for o in outcomes] == [1, 2, 3, 4]
    first, died, *rest = outcomes
    assert first.record["status"] == "ok"
    assert died.record is None and "SIGKILL" in died.error
    assert all(o.record["status"] == "ok" for o in rest)  # run again, in a new worker
    assert rest[0].record["pid"] != first.record["pid"]


def test_a_worker_that_dies_before_any_case_fails_one_pair_at_a_time(tmp_path, monkeypatch):
    stand_in(tmp_path, monkeypatch, die="exit")
    outcomes = run_local(tmp_path, batch_jobs(3), capacity=2)
    assert sorted(o.job.k for o in outcomes) == [1, 2, 3]  # no pair retried forever
    assert all(o.record is None and "exited with code 3" in o.error for o in outcomes)


def test_stale_task_folders_of_a_killed_run_are_removed(tmp_path):
    tasks = tmp_path / executors.TASKS_DIR
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tasks / f"run-{dead.stdout.strip()}-abc"
    live = tasks / f"run-{os.getpid()}-def"
    for d in (stale, live):
        (d / "batch-1").mkdir(parents=True)
    assert executors.remove_stale_task_dirs(tasks) == [stale]
    assert live.exists() and not stale.exists()


# --- plan and progress (fast) --------------------------------------------------------------


def test_progress_estimates_the_time_left_from_the_plan(capsys):
    now = [0.0]
    jobs = batch_jobs(3)
    progress = plan.Progress(3, estimates={1: 10.0, 2: 10.0, 3: 20.0}, clock=lambda: now[0])
    progress.start("local executor")
    progress.started(jobs[0])
    now[0] = 5.0  # twice as fast as estimated
    progress.finished(jobs[0], {"status": "ok", "metrics": {"joint_accuracy": 0.5}}, 5.0)
    assert progress.left() == pytest.approx(15.0)
    now[0] = 20.0
    progress.finished(jobs[1], {"status": "failed", "error": "RuntimeError: x"}, 15.0)
    assert progress.left() == pytest.approx(20.0)  # 20 s in for 20 s of estimate
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "local executor"
    assert err[1].startswith("[1/3] lj-rho0.50-w8-n16-lenet-paper seed=0 ... elapsed 0s")
    assert "joint_accuracy=0.500 in 5s (1/3 done, elapsed 5s, ~15s left)" in err[2]
    assert "FAILED after 15s: RuntimeError: x (2/3 done, elapsed 20s, ~20s left)" in err[3]


def test_estimates_follow_the_cost_table():
    smoke, paper = get_scale("smoke"), get_scale("paper")
    lenet = Case("lj", 0.5, 8.0, 28)
    sizes = plan.split_sizes(lenet, paper)
    assert sizes == {"train": 36_000, "val": 4_000, "test": 10_000}  # 50,000 samples
    fixed, per = get_architecture("lenet").cpu_cost[28]
    evaluated = plan.EVALUATE_SHARE * (4_000 * paper.max_epochs + 10_000)
    expected = fixed + per * (36_000 * paper.max_epochs + evaluated)
    assert plan.estimate_seconds(lenet, paper) == pytest.approx(expected)
    assert plan.estimate_seconds(lenet, paper) > plan.estimate_seconds(lenet, smoke)
    big = Case("lj", 0.5, 8.0, 56, "alexnet")
    assert plan.estimate_seconds(big, paper) > plan.estimate_seconds(lenet, paper)
    joint = Case("lj", 0.5, 8.0, 28, head="joint")  # one trunk: half the cost per sample
    one_trunk = fixed + (expected - fixed) * plan.ONE_TRUNK_SHARE
    assert plan.estimate_seconds(joint, paper) == pytest.approx(one_trunk)
    assert max(plan.split_sizes(big, smoke).values()) < 100  # smoke's budget for AlexNet
    assert plan.cost("lenet", 40)[1] == pytest.approx(
        get_architecture("lenet").cpu_cost[28][1] * (40 / 28) ** 2
    )
    assert plan.wall_seconds(100.0, 2, cpu=False) == 50.0  # a GPU each
    if (os.cpu_count() or 1) >= 2:  # CPU workers share the cores
        assert 50.0 < plan.wall_seconds(100.0, 2) < 100.0


def test_run_and_dry_run_print_the_plan(tmp_path, capsys):
    assert main(["run", "--all", "--seeds", "0,1", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "plan: 203 cases x 2 seeds = 406 runs: 306 to run; estimated " in out
    assert "not run: 100 (case, seed) at scale smoke: recovered needs >= 10,000" in out
    assert "CPU cost table" in out
    assert not (tmp_path / "o").exists()


# --- real runs (slow) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory, cache):
    """CASES run by the local executor with --jobs 1 (all three in one worker process, as on
    CPU) and with --jobs 2 and a fresh process per pair (as on GPUs)."""
    outs = {}
    for jobs in (1, 2):
        out = tmp_path_factory.mktemp(f"jobs{jobs}")
        with pytest.MonkeyPatch.context() as mp:
            if jobs == 2:
                mp.setattr(executors, "CPU_CASES_PER_WORKER", 1)
            assert main(run_argv(out, cache, "--jobs", str(jobs))) == 0
        outs[jobs] = out
    return outs


@pytest.mark.slow
def test_batched_and_fresh_workers_give_the_same_records_and_table(local_runs):
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


def dying_local_worker(monkeypatch, pattern: str, log: Path) -> None:
    command = (sys.executable, str(DYING_WORKER), pattern, str(log))
    monkeypatch.setattr(executors.LocalExecutor, "command", command)


@pytest.mark.slow
def test_local_worker_killed_mid_batch_fails_its_case_only_and_resume_reruns_it(
    tmp_path, cache, monkeypatch, capsys
):
    kills = tmp_path / "kills"
    dying_local_worker(monkeypatch, CASES[1], kills)  # the second pair of the batch
    out = tmp_path / "out"
    argv = run_argv(out, cache, "--jobs", "1")
    assert main(argv) == 1  # the sweep went on
    failed = load(out, CASES[1])
    assert failed["status"] == "failed" and "SIGKILL" in failed["error"]
    assert "\n" not in failed["error"] and failed["provenance"]["executor"] == "local"
    assert len(kills.read_text().splitlines()) == 1
    finished = {
        n: records.record_path(out, n, "smoke", 0).read_bytes() for n in (CASES[0], CASES[2])
    }
    assert all(json.loads(text)["status"] == "ok" for text in finished.values())
    err = capsys.readouterr().err
    assert f"{CASES[1]} seed=0 FAILED" in err and "1 failed" in err
    assert not (out / executors.TASKS_DIR).exists()

    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0  # only the failed pair runs again
    assert load(out, CASES[1])["status"] == "ok"
    for name, text in finished.items():
        assert records.record_path(out, name, "smoke", 0).read_bytes() == text
    assert "skipping 2" in capsys.readouterr().err


def start_run(out, cache, tmp_path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "benchmarks", *run_argv(out, cache, "--jobs", "1")]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for(path, proc, seconds=180) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.exists(), proc.communicate(timeout=60)[1].decode()


@pytest.mark.slow
def test_sigterm_stops_the_workers_and_keeps_finished_records(tmp_path, cache):
    out = tmp_path / "out"
    first = records.record_path(out, CASES[0], "smoke", 0)
    proc = start_run(out, cache, tmp_path)
    try:
        wait_for(first, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err.decode()
    assert "interrupted; finished records are kept" in err.decode()
    assert records.load_record(first)["status"] == "ok"
    assert not (out / executors.TASKS_DIR).exists()  # the executor cleaned up after its workers
    assert not list(tmp_path.glob("mdkeras-run-*"))


@pytest.mark.slow
def test_a_driver_killed_by_sigkill_leaves_records_intact_and_the_next_run_cleans_up(
    tmp_path, cache
):
    out = tmp_path / "out"
    first = records.record_path(out, CASES[0], "smoke", 0)
    proc = start_run(out, cache, tmp_path)
    try:
        wait_for(first, proc)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = first.read_bytes()
    assert records.load_record(first)["status"] == "ok"
    assert list((out / executors.TASKS_DIR).glob(f"run-{proc.pid}-*"))  # left behind
    assert not list(tmp_path.glob("mdkeras-run-*"))  # nothing in the system temp dir
    assert main([*run_argv(out, cache), "--resume"]) == 0
    assert first.read_bytes() == kept
    assert not (out / executors.TASKS_DIR).exists()  # the stale folder is gone


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
    monkeypatch.setattr(worker_mod, "run_payload", dying_payload(CASES[2], str(kills)))
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
    task = executors.payload(job, get_scale("ci"), {"cache_dir": None, "verbose": 0}, 1, "local")
    task = json.loads(json.dumps(task))
    assert Case.from_dict(task["case"]) == case and task["seed"] == 3 and task["k"] == 1
