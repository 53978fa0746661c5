"""`benchmarks.plots`: every figure is drawn from hand-written minimal records as a valid PNG, and
missing data or bad input give one `error:` line and exit 2. No training, no TensorFlow."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from benchmarks import plots
from benchmarks.plots import main
from mdkeras.config import Case
from mdkeras.errors import MdkerasError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
needs_mpl = pytest.mark.skipif(
    not HAS_MPL, reason='matplotlib is not installed (pip install "mdkeras[plot]")'
)

CASES = {
    "lj-rho0.50-w8-n28-lenet-paper": ("lj", 0.5, 8.0, 28, "paper"),
    "coulomb-rho0.50-w5-n28-lenet-paper": ("coulomb", 0.5, 5.0, 28, "paper"),
    "lj-rho0.50-w8-n16-lenet-quantile": ("lj", 0.5, 8.0, 16, "quantile"),
}


def _record(name: str, seed: int, scale: str = "ci", **drop) -> dict:
    potential, density, window, grid, encoding = CASES[name]
    rng = np.random.default_rng(seed)
    conf = rng.integers(0, 50, size=(2, 10, 10)) * (rng.random((2, 10, 10)) < 0.4)
    conf[:, range(10), range(10)] += 400
    history = [
        {
            "epoch": e,
            "loss": 2.0 / e,
            "fx_accuracy": 0.6 + 0.05 * e,
            "fy_accuracy": 0.58 + 0.05 * e,
            "val_joint_accuracy": [0.5, 0.62, 0.66, 0.64][e - 1],
        }
        for e in range(1, 5)
    ]
    record = {
        "format_version": 1,
        "status": "ok",
        "case_name": name,
        "case": {
            "potential": potential,
            "density": density,
            "window": window,
            "grid": grid,
            "architecture": "lenet",
            "encoding": encoding,
            "classes": 10,
            "head": "separate",
            "sampler": "uniform",
            "augment": False,
        },
        "scale": scale,
        "seed": seed,
        "samples": {"smoke": 2_000, "ci": 10_000, "ci-s20000": 20_000}[scale],
        "metrics": {"joint_accuracy": 0.65 + 0.01 * seed, "accuracy_x": 0.8, "accuracy_y": 0.79},
        "fraction_of_bayes": (0.65 + 0.01 * seed) / 0.82,
        "baselines": {
            "majority": 0.21,
            "cell_centre": 0.81,
            "bayes_limit": 0.82,
            "bayes_limit_se": 0.009,
        },
        "epochs_run": 4,
        "best_epoch": 3,
        "history": history,
        "confusion": {"x": conf[0].tolist(), "y": conf[1].tolist()},
        "class_histogram": {
            "x": [400, 10, 20, 60, 3000, 3000, 60, 20, 10, 400],
            "y": [390, 12, 22, 58, 3010, 2990, 61, 19, 11, 407],
        },
    }
    for key in drop:
        record.pop(key)
    return record


def _write(directory, record: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record['case_name']}--{record['scale']}--seed{record['seed']}.json"
    path.write_text(json.dumps(record))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Run every test in its own directory: the default --out is relative."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def record_dir(tmp_path):
    d = tmp_path / "records"
    for name in CASES:
        for seed in (0, 1):
            _write(d, _record(name, seed))
    _write(d, _record("lj-rho0.50-w8-n28-lenet-paper", 0, scale="smoke"))
    _write(d, _record("lj-rho0.50-w8-n28-lenet-paper", 0, scale="ci-s20000"))  # run --samples
    return d


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@needs_mpl
def test_every_png_is_drawn(record_dir, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main([str(record_dir), "--out", str(out)]) == 0
    case = "lj-rho0.50-w8-n28-lenet-paper"
    expected = {
        "accuracy.png",
        f"learning-curves-{case}.png",
        f"confusion-{case}.png",
        "descriptor.png",
        "class-histograms.png",
        "samples-lj-rho0.50-w8-n28.png",
    }
    assert {p.name for p in out.iterdir()} == expected  # no temp files left behind
    for name in expected:
        _assert_png(out / name)
    assert "warning" not in capsys.readouterr().err


@needs_mpl
def test_case_scale_and_default_out(record_dir, tmp_path, capsys):
    """Without --out the figures go to results/runs/plots, never beside the records."""
    out = tmp_path / plots.DEFAULT_OUT
    case = "coulomb-rho0.50-w5-n28-lenet-paper"
    code = main([str(record_dir), "--case", case, "--only", "curves,confusion"])
    assert code == 0
    _assert_png(out / f"learning-curves-{case}.png")
    _assert_png(out / f"confusion-{case}.png")
    assert main([str(record_dir), "--scale", "smoke", "--only", "accuracy,histograms"]) == 0
    _assert_png(out / "accuracy.png")
    assert not list(record_dir.glob("*.png"))
    assert main([str(record_dir), "--only", "descriptor", "--out", str(record_dir)]) == 0
    _assert_png(record_dir / "descriptor.png")  # beside the records only when asked


@pytest.mark.parametrize("where", ["file", "under-file", "empty"])
def test_out_that_is_not_a_directory_is_one_error_line(record_dir, tmp_path, capsys, where):
    blocker = tmp_path / "accuracy.png"
    blocker.write_bytes(b"old")
    out = {"file": str(blocker), "under-file": str(blocker / "sub"), "empty": ""}[where]
    assert main([str(record_dir), "--only", "descriptor", "--out", out]) == 2
    line = _one_error_line(capsys)
    assert ("a file" in line or "''" in line) and "File exists" not in line
    assert blocker.read_bytes() == b"old"


@needs_mpl
def test_plot_functions_return_their_paths(record_dir, tmp_path):
    records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("*--ci--*.json"))]
    table = plots.accuracy_table(records)
    assert len(table) == 3 and table["bayes_limit_se"].iloc[0] == pytest.approx(0.009 / 2**0.5)
    out = tmp_path / "accuracy.png"
    assert plots.plot_accuracy(table, out) == out
    _assert_png(out)
    notes = []
    hist = plots.paper_histograms(records, progress=notes.append)
    assert list(hist) == ["Coulomb ρ=0.50 W=5 n=28", "LJ ρ=0.50 W=8 n=28"]
    assert hist["LJ ρ=0.50 W=8 n=28"][0][4] == 3000
    assert notes == ["LJ ρ=0.50 W=8 n=16: no paper-encoded record with a class histogram; left out"]


def test_default_scale_is_a_named_one_not_a_samples_variant(record_dir):
    records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("*.json"))]
    assert plots.choose_scale(records) == "ci"  # not ci-s20000, though it has more samples
    assert plots.choose_scale(records, "ci-s20000") == "ci-s20000"
    assert plots.scale_family("ci-s20000") == "ci" and plots.scale_family("paper") == "paper"


def test_sample_curve_table_groups_variants_and_sample_counts(record_dir):
    records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("*.json"))]
    d4 = _record("lj-rho0.50-w8-n28-lenet-paper", 0, scale="ci-s20000")
    d4["case"]["augment"] = True
    d4["metrics"]["joint_accuracy"] = 0.7
    table = plots.sample_curve_table([*records, d4], "lj-rho0.50-w8-n28")
    assert set(table["family"]) == {"ci"}  # the smoke record is another family
    rows = {(row.variant, row.samples): row for row in table.itertuples()}
    assert set(rows) == {
        ("lenet-paper", 10_000),
        ("lenet-paper", 20_000),
        ("lenet-paper-d4", 20_000),
    }
    ten = rows["lenet-paper", 10_000]
    assert ten.seeds == 2 and ten.joint_accuracy == pytest.approx(0.655)
    assert ten.fraction_of_bayes == pytest.approx(0.655 / 0.82)
    assert ten.bayes_limit_se == pytest.approx(0.009 / 2**0.5)
    assert rows["lenet-paper-d4", 20_000].joint_accuracy == pytest.approx(0.7)
    smoke = plots.sample_curve_table(records, "lj-rho0.50-w8-n28", "smoke")
    assert list(smoke["samples"]) == [2_000]
    with pytest.raises(plots.MissingDataError, match="two sample counts"):
        plots.check_sample_curve(smoke)


def test_histograms_come_from_records_only():
    """No dataset is regenerated for the class histograms: a quantile-only or histogram-less
    setting has none, and with no paper-encoded histogram at all the figure is skipped."""
    quantile = _record("lj-rho0.50-w8-n16-lenet-quantile", 3)
    old = _record("lj-rho0.50-w8-n28-lenet-paper", 0, class_histogram=None)
    with pytest.raises(plots.MissingDataError, match="no paper-encoded record"):
        plots.paper_histograms([quantile, old])


@needs_mpl
def test_histograms_without_data_are_skipped_with_a_warning(tmp_path, capsys):
    d = tmp_path / "quantile"
    _write(d, _record("lj-rho0.50-w8-n16-lenet-quantile", 0))
    assert main([str(d), "--only", "accuracy,histograms", "--out", str(tmp_path / "f")]) == 2
    assert "no paper-encoded record" in _one_error_line(capsys)
    assert main([str(d), "--out", str(tmp_path / "f")]) == 0
    assert "warning: skipped histograms" in capsys.readouterr().err
    assert not (tmp_path / "f" / "class-histograms.png").exists()


def test_pattern_rule_is_the_registry_one(record_dir):
    """`-k` in plot means what it means in list/run/recover: case-insensitive globs, a bare word a
    substring, and every pattern must match something."""
    records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("*--ci--*.json"))]
    picked = plots.select_records(records, "ci", ["LJ-*-n28-*"])
    assert {r["case_name"] for r in picked} == {"lj-rho0.50-w8-n28-lenet-paper"}
    assert len(plots.select_records(records, "ci", ["n16", "coulomb"])) == 4
    with pytest.raises(MdkerasError, match="-k alexnet matches no record"):
        plots.select_records(records, "ci", ["n16", "alexnet"])
    with pytest.raises(MdkerasError, match="empty case pattern"):
        plots.select_records(records, "ci", [" "])


def test_descriptor_example_matches_featurize():
    ex = plots.descriptor_example(potential="coulomb", density=0.5, window=5.0, grid=28, seed=3)
    half = 2.5
    inside = np.all((ex["d"] >= -half) & (ex["d"] < half), axis=1)
    assert ex["counts"].shape == (28, 28) and ex["counts"].sum() == inside.sum() > 0
    assert ex["f_max"] == pytest.approx(31.36)


@needs_mpl
def test_missing_confusion_is_skipped_by_default_and_an_error_when_asked(tmp_path, capsys):
    d = tmp_path / "old"
    _write(d, _record("lj-rho0.50-w8-n28-lenet-paper", 0, confusion=None))
    assert main([str(d), "--only", "accuracy,confusion,curves"]) == 2
    line = _one_error_line(capsys)
    assert "no confusion matrices" in line
    assert main([str(d), "--out", str(tmp_path / "figs")]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped confusion" in err
    assert not (tmp_path / "figs" / "confusion-lj-rho0.50-w8-n28-lenet-paper.png").exists()
    _assert_png(tmp_path / "figs" / "accuracy.png")


@needs_mpl
def test_missing_history_is_one_error_line(tmp_path, capsys):
    d = tmp_path / "old"
    _write(d, _record("lj-rho0.50-w8-n28-lenet-paper", 0, history=None))
    assert main([str(d), "--only", "curves"]) == 2
    assert "no per-epoch history" in _one_error_line(capsys)


@needs_mpl
@pytest.mark.parametrize(
    "args, words",
    [
        (["{missing}"], "no results directory"),
        (["{empty}"], "no records in"),
        (["{records}", "--case", "nope"], "--case 'nope' has no record"),
        (["{records}", "--setting", "lj-rho9"], "--setting 'lj-rho9' has no record"),
        (["{records}", "--only", "samples", "--scale", "smoke"], "two sample counts"),
        (["{records}", "--scale", "paper"], "--scale 'paper' has no successful records"),
        (["{records}", "-k", "alexnet"], "-k alexnet matches no record"),
        (["{records}", "--only", "pie"], "--only 'pie' is not allowed"),
        (["{records}", "--bogus"], "unrecognized arguments"),
        (["{broken}"], "is not valid JSON"),
        (["{failed}"], "no successful records"),
    ],
)
def test_bad_input_is_one_error_line(record_dir, tmp_path, capsys, args, words):
    (tmp_path / "empty").mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x--ci--seed0.json").write_text("{")
    failed = tmp_path / "failed"
    _write(failed, {**_record("lj-rho0.50-w8-n28-lenet-paper", 0), "status": "failed"})
    where = {
        "missing": tmp_path / "nowhere",
        "empty": tmp_path / "empty",
        "records": record_dir,
        "broken": broken,
        "failed": failed,
    }
    argv = [a.format(**{k: str(v) for k, v in where.items()}) for a in args]
    assert main(argv) == 2
    assert words in _one_error_line(capsys)


@needs_mpl
def test_unwritable_out_is_one_error_line(record_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main([str(record_dir), "--out", str(blocker / "sub"), "--only", "descriptor"]) == 2
    _one_error_line(capsys)


def test_missing_matplotlib_is_one_error_line(record_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises
    assert main([str(record_dir)]) == 2
    line = _one_error_line(capsys)
    assert 'pip install "mdkeras[plot]"' in line
    assert not list(record_dir.glob("*.png"))


# --- the md sampler beside the uniform one -------------------------------------------------


def _sampler_record(
    sampler: str, potential: str = "lj", density: float = 0.5, seed: int = 0, **case
) -> dict:
    """A minimal record of one md or uniform case (n = 28), built on `_record`."""
    r = _record("lj-rho0.50-w8-n28-lenet-paper", seed)
    window = 8.0 if potential == "lj" else 5.0
    r["case"].update(potential=potential, density=density, window=window, sampler=sampler)
    r["case"].update(case)
    if sampler == "md":
        r["case"]["temperature"] = 1.0
        r["baselines"].update(bayes_limit=None, bayes_limit_se=None, uniform_bayes=0.6)
        r["fraction_of_bayes"] = None
        r["class_histogram"] = {
            "x": [0, 0, 0, 0, 2, 2, 0, 0, 0, 0],
            "y": [0] * 4 + [3, 1] + [0] * 4,
        }
    c = Case.from_dict(r["case"])
    r["case_name"] = c.name
    if c.encoding == "quantile":
        r["class_histogram"] = {"x": [36] * 10, "y": [36] * 10}
        scale = 1.0 if sampler == "md" else 1e4
        r["encoder"] = {"name": "quantile", "edges": [[scale * e, scale * e] for e in range(-4, 5)]}
    return r


@pytest.fixture
def sampler_dirs(tmp_path):
    """`results/md` with LJ and Coulomb md records (LeNet, forcemap; LJ also quantile) and
    `results/paper` with their uniform twins plus records the comparison must leave out."""
    md, uniform = tmp_path / "results" / "md", tmp_path / "results" / "paper"
    for potential, density in [("lj", 0.05), ("lj", 0.5), ("coulomb", 0.5)]:
        for arch in ("lenet", "forcemap"):
            for sampler, directory in (("md", md), ("uniform", uniform)):
                _write(directory, _sampler_record(sampler, potential, density, architecture=arch))
    _write(md, _sampler_record("md", "lj", 0.7))  # the dense liquid: no uniform twin
    for sampler, directory in (("md", md), ("uniform", uniform)):
        _write(directory, _sampler_record(sampler, "lj", 0.5, encoding="quantile"))
    _write(uniform, _sampler_record("uniform", "lj", 0.5, seed=1))
    _write(uniform, _sampler_record("uniform", "lj", 0.5, augment=True))  # a variant: left out
    _write(uniform, _sampler_record("uniform", "lj", 0.2))  # no md twin: left out
    return md, uniform


def _loaded(directory):
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def test_sampler_accuracy_table_pairs_md_with_uniform(sampler_dirs):
    md, uniform = sampler_dirs
    md_recs = _loaded(md)
    twins = plots.uniform_counterparts(uniform, md_recs)
    assert {(r["case"]["density"], r["seed"]) for r in twins} >= {(0.5, 1), (0.05, 0)}
    assert all(r["case"]["density"] != 0.2 for r in twins)  # no md record of that setting
    table = plots.sampler_accuracy_table(md_recs, twins)
    assert set(table["encoding"]) == {"paper", "quantile"}
    assert (
        len(table[table["sampler"] == "md"]) == 8 and len(table[table["sampler"] == "uniform"]) == 7
    )
    row = table[
        (table["sampler"] == "uniform")
        & (table["density"] == 0.5)
        & (table["potential"] == "lj")
        & (table["architecture"] == "lenet")
        & (table["encoding"] == "paper")
    ].iloc[0]
    assert row.joint_accuracy_n == 2 and row.joint_accuracy == pytest.approx(0.655)  # no d4
    assert row.bayes == pytest.approx(0.82)  # uniform: the Bayes limit
    md_bayes = table.loc[table["sampler"] == "md", "bayes"]
    assert md_bayes.to_list() == pytest.approx([0.6] * 8)  # md: the uniform-gas classifier
    with pytest.raises(plots.MissingDataError, match="no md records"):
        plots.sampler_accuracy_table([], twins)


def test_sampler_histograms_carry_both_samplers_and_quantile_edges(sampler_dirs):
    md, uniform = sampler_dirs
    md_recs = _loaded(md)
    hist = plots.sampler_histograms(md_recs, plots.uniform_counterparts(uniform, md_recs))
    assert list(hist["paper"]) == [
        "Coulomb ρ=0.50 W=5 n=28",
        "LJ ρ=0.05 W=8 n=28",
        "LJ ρ=0.50 W=8 n=28",
        "LJ ρ=0.70 W=8 n=28",
    ]
    lj = hist["paper"]["LJ ρ=0.50 W=8 n=28"]
    assert lj["md"] == ([0, 0, 0, 0, 2, 2, 0, 0, 0, 0], [0, 0, 0, 0, 3, 1, 0, 0, 0, 0])
    assert lj["uniform"][0][0] == 400
    assert set(hist["paper"]["LJ ρ=0.70 W=8 n=28"]) == {"md"}
    assert list(hist["quantile"]) == ["LJ ρ=0.50 W=8 n=28"]
    edges = hist["quantile"]["LJ ρ=0.50 W=8 n=28"]
    assert edges["md"][0][0] == -4.0 and edges["uniform"][0][0] == -4e4
    paper_only = [r for r in md_recs if r["case"]["encoding"] == "paper"]
    assert plots.sampler_histograms(paper_only, [])["quantile"] == {}


@needs_mpl
def test_md_directory_draws_the_sampler_figures(sampler_dirs, tmp_path, capsys):
    md, _ = sampler_dirs
    out = tmp_path / "figures"
    assert main([str(md), "--only", "accuracy,histograms", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"accuracy.png", "class-histograms.png"}
    for name in ("accuracy.png", "class-histograms.png"):
        _assert_png(out / name)
    assert "warning" not in capsys.readouterr().err
    md_recs = _loaded(md)
    data = plots.sampler_histograms(md_recs, [])
    path = plots.plot_sampler_histograms(data, tmp_path / "md-only.png")  # no uniform twins
    _assert_png(path)
    path = plots.plot_sampler_accuracy(
        plots.sampler_accuracy_table(md_recs, []), tmp_path / "acc.png"
    )
    _assert_png(path)


@needs_mpl
def test_md_directory_without_uniform_records(sampler_dirs, tmp_path, capsys):
    """The default uniform directory missing: a note and md-only figures; a --uniform that
    does not exist: one error line."""
    md, uniform = sampler_dirs
    out = tmp_path / "figures"
    lone = tmp_path / "lone" / "md"
    lone.mkdir(parents=True)
    for p in md.glob("*.json"):
        (lone / p.name).write_text(p.read_text())
    assert main([str(lone), "--only", "accuracy,histograms", "--out", str(out)]) == 0
    assert "no uniform-sampler records to compare with" in capsys.readouterr().err
    _assert_png(out / "class-histograms.png")
    missing = tmp_path / "nowhere"
    args = [str(md), "--only", "accuracy", "--uniform", str(missing), "--out", str(out)]
    assert main(args) == 2
    assert str(missing) in _one_error_line(capsys)
