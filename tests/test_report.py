import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from posemachines.cli.main import cli

from posemachines.api import compare
from posemachines.errors import PoseMachinesError


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, mean_model_dir, forest_model_dir, synthetic_test):
    import scipy.io

    tmp = tmp_path_factory.mktemp("report")
    # published-style predictions: ground truth plus noise, 1-based, shape (P, 2, N)
    noisy = synthetic_test.joints + np.random.default_rng(0).normal(
        0, 3, synthetic_test.joints.shape
    )
    scipy.io.savemat(tmp / "published.mat", {"pred": noisy.transpose(1, 2, 0) + 1})
    return compare(
        [mean_model_dir, forest_model_dir, tmp / "published.mat"],
        dataset="synthetic",
        synthetic_size=len(synthetic_test),
        out=tmp / "out",
        timing_images=3,
    )


def test_report_files_and_numbers(report_dir):
    results = json.loads((report_dir / "results.json").read_text())
    assert [e["kind"] for e in results["entries"]] == ["mean", "forest", "predictions"]
    assert results["n"] == 20 and "versions" in results and results["command"]
    assert any("prediction files" in n for n in results["notes"])
    md = (report_dir / "report.md").read_text()
    html = (report_dir / "report.html").read_text()
    for e in results["entries"]:
        value = f"{100 * e['result']['metrics']['pck@0.2']:.1f}"
        assert value in md and f"<td>{value}</td>" in html
    for name in (
        "pck_curve",
        "pck_by_stage",
        "per_joint_by_stage",
        "skeletons",
        "beliefs_by_stage",
        "worst_cases",
    ):
        assert (report_dir / f"{name}.png").stat().st_size > 1000
        assert f"alt='{name}'" in html
    assert "src='data:image/png;base64," in html and "<img src='http" not in html


@pytest.mark.slow
def test_report_is_reproducible(report_dir, mean_model_dir, forest_model_dir, tmp_path):
    again = compare(
        [mean_model_dir],
        dataset="synthetic",
        synthetic_size=20,
        out=tmp_path / "a",
        timing_images=2,
    )
    twice = compare(
        [mean_model_dir],
        dataset="synthetic",
        synthetic_size=20,
        out=tmp_path / "b",
        timing_images=2,
    )
    assert (again / "pck_curve.png").read_bytes() == (twice / "pck_curve.png").read_bytes()


def test_different_skeletons_are_refused(tmp_path, synthetic_test):
    from posemachines.backends.mean.stage import MeanPoseStage
    from posemachines.core.model import PoseModel
    from posemachines.core.skeletons import MPII16
    from posemachines.core.targets import BeliefCodec
    from posemachines.files.model_dir import save_model

    model = PoseModel(
        "mean", MPII16, BeliefCodec(64, 4, 4.0), [MeanPoseStage(np.zeros((17, 16, 16), np.float32))]
    )
    save_model(model, tmp_path / "mpii")
    with pytest.raises(PoseMachinesError, match="different skeletons are not comparable"):
        compare([tmp_path / "mpii"], dataset="synthetic", synthetic_size=4, out=tmp_path / "r")


@pytest.mark.slow
def test_bare_compare_uses_latest_runs(tmp_path, monkeypatch, mean_model_dir, forest_model_dir):
    runs = tmp_path / "runs"
    shutil.copytree(mean_model_dir, runs / "mean-1")
    shutil.copytree(mean_model_dir, runs / "mean-2")
    shutil.copytree(forest_model_dir, runs / "demo" / "forest")  # found in sub-folders too
    (runs / "forest-2").mkdir()  # an unfinished run is passed over
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compare", "--synthetic-size", "6", "--timing-images", "2"])
    assert result.exit_code == 0, result.output
    assert "runs/compare-1/report.html" in result.output
    doc = json.loads((runs / "compare-1" / "results.json").read_text())
    assert [e["path"] for e in doc["entries"]] == ["runs/mean-2", "runs/demo/forest"]


def test_bare_compare_without_runs_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["compare"])
    assert result.exit_code == 1 and "no trained runs" in result.output


def test_bench_prints_timing(mean_model_dir):
    result = CliRunner().invoke(
        cli, ["bench", str(mean_model_dir), "--timing-images", "3", "--dataset", "synthetic"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ms_per_image"] > 0 and doc["batch_size"] == 1 and doc["device"] == "cpu"


def test_report_renders_in_a_browser(report_dir):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            (report_dir / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    sizes = re.findall(r'data-rendered="(\d+)x(\d+)"', dom)
    assert len(sizes) == 6 and all(int(w) > 0 and int(h) > 0 for w, h in sizes)
    results = json.loads((report_dir / "results.json").read_text())
    cells = re.findall(r"<td>([^<]*)</td>", dom)
    for e in results["entries"]:
        for key in ("pck@0.2", "pckh@0.5", "pcp"):
            assert f"{100 * e['result']['metrics'][key]:.1f}" in cells


@pytest.mark.slow
def test_two_supervisions_report_gradients_and_receptive_fields(tmp_path, synthetic_train):
    """The report of a run with a loss at every stage and one with the last stage only embeds
    both experiment figures, and its JSON holds the numbers they show."""
    torch = pytest.importorskip("torch")  # noqa: F841
    from posemachines.backends.cnn.settings import CNNSettings
    from posemachines.backends.cnn.trainer import train_cnn

    outs = []
    for supervision in ("all", "final"):
        settings = CNNSettings(
            config="cpm-tiny", epochs=2, batch_size=8, grad_every=4, supervision=supervision
        )
        out = tmp_path / supervision
        train_cnn(synthetic_train, settings, out).save(out)
        outs.append(out)
    report = compare(outs, dataset="synthetic", synthetic_size=6, out=tmp_path / "r")
    html = (report / "report.html").read_text()
    for name in ("gradients_by_stage", "receptive_field"):
        assert f"alt='{name}'" in html and (report / f"{name}.png").stat().st_size > 1000
    entries = json.loads((report / "results.json").read_text())["entries"]
    assert [e["supervision"] for e in entries] == ["all", "final"]
    assert entries[0]["receptive_field_px"] == [37, 61]
    groups = entries[0]["pck_by_group_and_stage"]
    assert set(groups) == {"head and shoulders", "elbows, wrists, knees, ankles"}
    assert all(len(v) == 2 for v in groups.values())


def test_the_default_compare_list_comes_from_the_registry(tmp_path, mean_model_dir):
    """A backend registered by a plugin has its latest run compared by a bare pm compare; a
    backend of no pose stages (the people model) has none."""
    import json
    from dataclasses import dataclass

    from posemachines.evaluation.comparison import default_entries
    from posemachines.registry import register_backend, unregister_backend

    runs = tmp_path / "runs"
    shutil.copytree(mean_model_dir, runs / "mean-1")
    shutil.copytree(mean_model_dir, runs / "knn-1")
    manifest = json.loads((runs / "knn-1" / "manifest.json").read_text())
    (runs / "knn-1" / "manifest.json").write_text(json.dumps({**manifest, "backend": "knn"}))
    assert default_entries(runs) == [runs / "mean-1"]

    @dataclass(frozen=True)
    class KNNSettings:
        neighbours: int = 5

    register_backend("knn", settings=KNNSettings, trainer=object, stages={"knn": object})
    try:
        assert default_entries(runs) == [runs / "mean-1", runs / "knn-1"]
    finally:
        unregister_backend("knn")
