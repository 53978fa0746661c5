"""`benchmarks.report` and `benchmarks.compare`: the committed results report as committed, the
README's tables are what the records say, a model that did not learn is marked and fails the
gate, and a bad record or reference is one `error:` line with exit 2."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import compare, registry, report
from benchmarks.cli import main
from mdkeras import records
from mdkeras.config import get_scale

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
LJ = "lj-rho0.50-w8-n28-lenet-paper"
LJ16 = "lj-rho0.50-w8-n16-lenet-quantile"


def run_record(
    name=LJ, scale="ci", seed=0, joint=0.7, share=0.4, median=0.5, baselines=None
) -> dict:
    case = registry.get_case(name) if isinstance(name, str) else name
    majority = 0.2
    conf = np.zeros((10, 10), dtype=int)
    conf[:, 4] = 40
    return records.build_run_record(
        case,
        get_scale(scale),
        seed,
        metrics={
            "joint_accuracy": joint,
            "force_mae": 1.0,
            "force_median_ae": median,
            "top_class_share": share,
            "collapsed": records.did_not_learn(joint, majority, share),
        },
        baselines=baselines or {"majority": majority, "cell_centre": 0.8, "bayes_limit": 0.8},
        history=[{"epoch": 1, "loss": 1.0}],
        best_epoch=1,
        training={},
        split_sizes={},
        confusion={"x": conf.tolist(), "y": conf.tolist()},
        class_histogram={},
        encoder={},
        parameters=1,
        dataset_key="k",
        timing={"train_seconds": 2.0},
        provenance={"device": "CPU"},
    )


def write(directory: Path, record: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record['case_name']}--{record['scale']}--seed{record['seed']}.json"
    path.write_text(json.dumps(record))
    return path


def one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert "Traceback" not in text
    return lines[0]


# --- the committed results -----------------------------------------------------------------


@pytest.mark.parametrize("folder", ["paper", "samples"])
def test_committed_records_report_as_their_committed_summary(folder):
    df = report.summarize_dir(RESULTS / folder)
    committed = pd.read_csv(RESULTS / folder / "summary.csv")
    fresh = pd.read_csv(io.StringIO(df.to_csv(index=False)))
    assert list(fresh.columns) == list(committed.columns) == list(report.COLUMNS)
    pd.testing.assert_frame_equal(fresh, committed)
    assert fresh["learned"].all()  # every committed model learned


def test_the_readme_tables_are_generated_from_the_committed_records():
    """Fails when README.md drifts: `python -m benchmarks report --readme README.md` fixes it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert {m["name"] for m in report.README_SECTION.finditer(text)} == set(report.README_TABLES)
    assert report.render_readme(text, RESULTS) == text
    assert "| LJ ρ = 0.5, W = 8 | 0.212 | 0.814 | 0.821 | 0.716 ± 0.001 | +0.006 |" in text
    assert "0.802 ± 0.002 (0.973)" in text  # what summary.md says (typed by hand: ± 0.003)


def test_readme_option_rewrites_only_the_marked_sections(tmp_path, capsys):
    readme = tmp_path / "README.md"
    (tmp_path / "results").symlink_to(RESULTS, target_is_directory=True)
    good = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = good.replace("| 0.716 ± 0.001 |", "| 0.799 ± 0.001 |")  # in the table only
    assert stale != good
    readme.write_text(stale, encoding="utf-8")
    assert main(["report", "--readme", str(readme), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert readme.read_text(encoding="utf-8") == stale  # --check writes nothing
    assert main(["report", "--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == good
    assert main(["report", "--readme", str(readme), "--check"]) == 0


MD = "md-lj-rho0.50-t1.00-w8-n28"
MD_BASE = {"majority": 0.25, "cell_centre": 0.61, "bayes_limit": None, "uniform_bayes": 0.611}
UNIFORM_BASE = {"majority": 0.21, "cell_centre": 0.81, "bayes_limit": 0.82}


def test_sampler_table_puts_md_beside_uniform(tmp_path):
    """One row per md setting (registry order): its baselines and LeNet/forcemap accuracies on
    md beside the same setting's uniform ones (seeds averaged), the md Bayes cell the footnoted
    uniform-gas classifier; other variants, encodings, scales and unmatched settings stay out."""
    md, uniform = tmp_path / "md", tmp_path / "paper"
    for name, joint in [("lenet-paper", 0.58), ("forcemap-paper", 0.62), ("lenet-quantile", 0.9)]:
        write(md, run_record(f"{MD}-{name}", scale="paper", joint=joint, baselines=MD_BASE))
    dense = {**MD_BASE, "majority": 0.245, "uniform_bayes": 0.569}
    name = "md-lj-rho0.70-t1.00-w8-n28-forcemap-paper"
    write(md, run_record(name, scale="paper", joint=0.57, baselines=dense))  # no uniform twin
    for seed, joint in [(0, 0.71), (1, 0.72)]:
        write(uniform, run_record(LJ, "paper", seed, joint, baselines=UNIFORM_BASE))
    forcemap = "lj-rho0.50-w8-n28-forcemap-paper"
    write(uniform, run_record(forcemap, "paper", joint=0.80, baselines=UNIFORM_BASE))
    write(uniform, run_record(forcemap, "ci", joint=0.9, baselines=UNIFORM_BASE))
    joint_d4 = dataclasses.replace(registry.get_case(LJ), head="joint", augment=True)
    for other in [joint_d4, "coulomb-rho0.50-w5-n28-lenet-paper"]:
        write(uniform, run_record(other, "paper", joint=0.99, baselines=UNIFORM_BASE))
    text = report.sampler_table(tmp_path)
    lines = text.splitlines()
    assert lines[0].startswith("| setting (n = 28, paper encoding, T = 1) | majority, md |")
    assert "| Bayes limit, md¹ | Bayes limit, uniform | LeNet, md | LeNet, uniform |" in lines[0]
    assert lines[2:4] == [
        "| LJ ρ = 0.5, W = 8 | 0.250 | 0.210 | 0.610 | 0.810 | 0.611¹ | 0.820 | 0.580 "
        "| 0.715 ± 0.007 | 0.620 | 0.800 |",
        "| LJ ρ = 0.7, W = 8 | 0.245 |  | 0.610 |  | 0.569¹ |  |  |  | 0.570 |  |",
    ]
    assert lines[4] == "" and len(lines) == 6  # the two settings, then the footnote
    assert lines[5] == report.SAMPLER_FOOTNOTE
    assert "¹ `md` data have no Bayes limit" in lines[5] and "`uniform_bayes`" in lines[5]
    readme = "x\n<!-- mdkeras:table samplers -->\nold\n<!-- /mdkeras:table -->\n"
    assert report.render_readme(readme, tmp_path) == readme.replace("old\n", text)


@pytest.mark.parametrize(
    "text, words",
    [
        ("no tables here\n", "no `<!-- mdkeras:table NAME -->` section"),
        ("<!-- mdkeras:table pie -->\nx\n<!-- /mdkeras:table -->\n", "'pie'"),
        ("<!-- mdkeras:table paper -->\nx\n", "without its"),
    ],
)
def test_bad_readme_is_one_error_line(tmp_path, capsys, text, words):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert main(["report", "--readme", str(readme)]) == 2
    assert words in one_error_line(capsys.readouterr().err)
    assert readme.read_text() == text


def test_reference_still_gates():
    reference = report.load_summary(RESULTS / "reference" / "ci.csv")
    assert len(reference) >= 4 and reference["joint_accuracy"].notna().all()
    assert compare.compare(reference, reference).empty
    assert (
        main(
            [
                "compare",
                "--reference",
                str(RESULTS / "reference" / "ci.csv"),
                str(RESULTS / "reference" / "ci.csv"),
            ]
        )
        == 0
    )


# --- did the model learn -------------------------------------------------------------------


def test_a_model_that_did_not_learn_is_marked(tmp_path):
    write(tmp_path, run_record(seed=0, joint=0.70))
    write(tmp_path, run_record(seed=1, joint=0.70, share=0.95))  # one class for 95 %
    write(tmp_path, run_record(LJ16, seed=0, joint=0.15))  # below the majority baseline
    old = run_record(LJ16, scale="smoke")
    del old["metrics"]["collapsed"], old["metrics"]["top_class_share"], old["confusion"]
    write(tmp_path, old)  # older record without confusion: cannot say
    df = report.report(tmp_path)
    rows = {(r.case, r.scale): r for r in df.itertuples()}
    assert rows[LJ, "ci"].learned is False and rows[LJ, "ci"].collapsed_seeds == 1
    assert rows[LJ16, "ci"].learned is False and rows[LJ16, "ci"].collapsed_seeds == 1
    assert rows[LJ16, "smoke"].learned is None
    assert rows[LJ, "ci"].force_median_ae == pytest.approx(0.5)
    md = (tmp_path / "summary.md").read_text()
    assert "**NO** (1 of 2 seeds)" in md and "| **NO** " in md
    assert records.LEARNING_RULE in md.splitlines()[-1]
    csv = report.load_summary(tmp_path / "summary.csv")
    assert list(csv["learned"]) == list(df["learned"])


def test_a_collapsed_ci_case_fails_the_gate(tmp_path, capsys):
    runs = tmp_path / "runs"
    write(runs, run_record(seed=0, joint=0.70))
    report.report(runs)
    reference = tmp_path / "reference.csv"
    (runs / "summary.csv").rename(reference)
    assert main(["compare", "--reference", str(reference), str(runs)]) == 0
    write(runs, run_record(seed=0, joint=0.71, share=0.93))  # better, yet one class for 93 %
    assert main(["compare", "--reference", str(reference), str(runs)]) == 1
    out = capsys.readouterr().out
    assert "collapsed" in out and LJ in out
    problems = compare.compare(report.summarize_dir(runs), report.load_summary(reference))
    assert list(problems["status"]) == ["collapsed"]
    report.report(runs)  # the same verdict from a summary.csv
    assert main(["compare", "--reference", str(reference), str(runs / "summary.csv")]) == 1


def test_non_numeric_reference_accuracy_is_one_error_line(tmp_path, capsys):
    runs = tmp_path / "runs"
    write(runs, run_record())
    reference = tmp_path / "reference.csv"
    pd.DataFrame(
        {"case": [LJ, LJ16], "scale": ["ci", "ci"], "joint_accuracy": ["0.7", "high"]}
    ).to_csv(reference, index=False)
    assert main(["compare", "--reference", str(reference), str(runs)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(reference) in line and "'high'" in line and LJ16 in line


# --- bad records: the whole report stops with one line naming the file and the field ---------


PROBES = {
    "format_version": (lambda r: r.update(format_version=999), "format_version=999"),
    "string accuracy": (
        lambda r: r["metrics"].update(joint_accuracy="0.7"),
        "metrics.joint_accuracy='0.7'",
    ),
    "missing potential": (lambda r: r["case"].pop("potential"), "lacks key 'case.potential'"),
    "seed zero": (lambda r: r.update(seed="zero"), "seed='zero'"),
}


@pytest.mark.parametrize("probe", PROBES)
def test_bad_record_stops_report_with_one_line(tmp_path, capsys, probe):
    spoil, words = PROBES[probe]
    write(tmp_path, run_record(LJ16))
    bad = run_record()
    spoil(bad)
    path = tmp_path / f"{LJ}--ci--seed0.json"
    path.write_text(json.dumps(bad))
    assert main(["report", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert words in line and str(path) in line
    assert not (tmp_path / "summary.csv").exists()  # nothing summarised without it


def test_bad_record_through_the_command_line(tmp_path):
    bad = run_record()
    bad["seed"] = "zero"
    write(tmp_path, {**bad, "seed": 0}).write_text(json.dumps(bad))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "report", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "seed='zero'" in one_error_line(proc.stderr)
