"""One path through training: `pm train` runs the Python API, every option reaches what it says
(or is refused in one line), and what the commands print suits a log as well as a terminal."""

import hashlib
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from posemachines.cli.main import cli
from test_datasets import coco_file, coco_people, draw

import posemachines as pm


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


def digests(folder) -> dict:
    """The SHA-256 of every weight file of a model directory."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.suffix == ".safetensors"
    }


@pytest.mark.slow
def test_the_command_line_and_the_api_train_the_same_model(tmp_path):
    run("train", "--backend", "forest", "--dataset", "synthetic", "--synthetic-size", "30",
        "--stages", "2", "--trees", "4", "--seed", "3", "--out", tmp_path / "cli")  # fmt: skip
    data = pm.load_dataset("synthetic", "train", size=30, seed=3)
    pm.train("forest", data, seed=3, stages=2, trees=4).save(tmp_path / "api")
    cli_files, api_files = digests(tmp_path / "cli"), digests(tmp_path / "api")
    assert set(cli_files) == {"stage1.forest.safetensors", "stage2.forest.safetensors"}
    assert cli_files == api_files  # byte for byte


def test_train_and_evaluate_are_one_path_in_the_command_and_the_api(tmp_path):
    """pm.train(out=...) owns and writes its folder as pm train --out does (same weight bytes,
    same manifest but the command), and pm.evaluate(record=True) records what pm evaluate
    records."""
    run("train", "--backend", "forest", "--dataset", "synthetic", "--synthetic-size", "24",
        "--stages", "1", "--trees", "3", "--seed", "2", "--out", tmp_path / "cli")  # fmt: skip
    request = pm.DataRequest("synthetic", "train", synthetic_size=24, seed=2)
    model = pm.train("forest", request, out=tmp_path / "api", seed=2, stages=1, trees=3)
    assert digests(tmp_path / "cli") == digests(tmp_path / "api") != {}
    manifests = [json.loads((tmp_path / f / "manifest.json").read_text()) for f in ("cli", "api")]
    commands = [m["training"].pop("command") for m in manifests]
    assert commands[0].startswith("pm train") and commands[1].startswith("posemachines.train")
    for m in manifests:  # what differs: when and how long
        m.pop("saved_at"), m["training"].pop("seconds")
        m["training"]["details"].pop("train_seconds_stages")
    assert manifests[0] == manifests[1]
    assert not (tmp_path / "api" / "checkpoint").exists()
    with pytest.raises(pm.PoseMachinesError, match="not empty"):  # owned: never written over
        pm.train("forest", request, out=tmp_path / "api", stages=1, trees=3)
    assert model.record.settings == pm.load_model(tmp_path / "api").record.settings

    run("evaluate", tmp_path / "cli", "--synthetic-size", "12")
    test = pm.DataRequest("synthetic", "test", synthetic_size=12)
    result = pm.evaluate(tmp_path / "api", test, record=True)
    recorded = [
        json.loads((tmp_path / f / "manifest.json").read_text())["evaluations"]
        for f in ("cli", "api")
    ]
    assert recorded[0] == recorded[1] and list(recorded[0]) == ["synthetic:test:image"]
    assert recorded[1]["synthetic:test:image"]["metrics"] == result.metrics


def test_the_api_trains_stacks_and_refuses_what_a_backend_does_not_use(tmp_path):
    data = pm.load_dataset("synthetic", "train", size=24, seed=0)
    model = pm.train("mean:1,forest:1", data, trees=3, folds=2, out=tmp_path / "s")
    assert [s.kind for s in model.stages] == ["mean", "forest"]
    assert model.record.settings["stack"] == "mean:1,forest:1"
    for backend, options, message in (
        ("forest", {"device": "cuda"}, "device does not apply to the forest backend"),
        ("forest", {"optimizer": "sgd"}, "optimizer does not apply to the forest backend"),
        ("mean", {"val_fraction": 0.1}, "val_fraction does not apply to the mean backend"),
        ("mean:1,forest:1", {"stages": 2}, "stages does not apply to the stack"),
        ("cnn", {"folds": 3}, "folds does not apply to the cnn backend"),
        ("svm", {}, "unknown backend 'svm'"),
    ):
        with pytest.raises(pm.PoseMachinesError, match=message):
            pm.train(backend, data, **options)


@pytest.mark.slow
def test_the_api_resumes_an_interrupted_run(tmp_path, monkeypatch):
    import posemachines.backends.forest.trainer as trainer

    data = pm.load_dataset("synthetic", "train", size=24, seed=0)
    options = dict(stages=2, trees=3, n_jobs=1)
    whole = pm.train("forest", data, out=tmp_path / "whole", **options)
    real = trainer._save_checkpoint

    def save_then_die(*args):
        real(*args)
        raise KeyboardInterrupt  # killed right after stage 1 was checkpointed

    monkeypatch.setattr(trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        pm.train("forest", data, out=tmp_path / "cut", **options)
    monkeypatch.setattr(trainer, "_save_checkpoint", real)
    resumed = pm.train("forest", data, out=tmp_path / "cut", resume=True, **options)
    test = pm.load_dataset("synthetic", "test", size=8, seed=0)
    assert (resumed.predict(test).keypoints == whole.predict(test).keypoints).all()
    with pytest.raises(pm.PoseMachinesError, match="resume needs out"):
        pm.train("forest", data, resume=True, **options)


@pytest.mark.parametrize(
    "options",
    [
        ["--backend", "forest", "--device", "cuda"],
        ["--backend", "forest", "--optimizer", "sgd"],
        ["--backend", "forest", "--val-fraction", "0.1"],
        ["--backend", "mean", "--trees", "3"],
        ["--stack", "forest:1,cnn:1", "--stages", "2"],
    ],
)
def test_an_option_the_backend_does_not_use_is_one_line(options):
    result = run("train", *options, "--dataset", "synthetic", ok=False)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "does not apply to" in lines[0], result.output


@pytest.fixture
def bad_image_root(tmp_path):
    """A folder of one's own keypoints (COCO format) with 12 people, the third image broken."""
    root = tmp_path / "data"
    coco_file(root / "mine" / "keypoints.json", coco_people(12))
    for i in range(12):
        draw(root / "mine" / "images" / f"{i:012d}.jpg", shade=20 * i)
    (root / "mine" / "images" / "000000000002.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.mark.parametrize("stack", ["forest:1,cnn:1", "cnn:1,forest:1"])
def test_a_stack_stops_on_a_bad_image_in_either_part(stack, bad_image_root, tmp_path):
    pytest.importorskip("torch")
    data = ["--dataset", "mine", "--split", "all", "--data-root", bad_image_root]
    small = ["--trees", "3", "--config", "cpm-tiny", "--epochs", "1", "--folds", "2"]
    args = ["train", "--stack", stack, *data, *small]
    stopped = run(*args, "--on-bad-image", "stop", "--out", tmp_path / "stop", ok=False)
    assert stopped.exit_code == 1 and "000000000002.jpg" in stopped.output
    assert "Traceback" not in stopped.output
    run(*args, "--out", tmp_path / "skip")  # the default: skipped and counted
    record = json.loads((tmp_path / "skip" / "manifest.json").read_text())["training"]
    skipped = record["skipped_images"]  # once, though both parts met it
    assert len(skipped) == 1 and skipped[0].startswith("000000000002.jpg")


def test_progress_in_a_log_is_one_line_per_phase(tmp_path):
    """Piped output (a log file, CI) gets one line per phase, not carriage-return updates."""
    result = subprocess.run(
        [sys.executable, "-m", "posemachines.cli.main", "train", "--backend", "mean",
         "--dataset", "synthetic", "--synthetic-size", "30", "--out", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr + result.stdout
    assert [line for line in result.stderr.splitlines() if line.startswith("mean: 30 img in")]


def test_bench_and_compare_of_a_packed_model_ask_for_the_dataset(tmp_path):
    pytest.importorskip("torch")
    run("data", "pack", "synthetic", "--synthetic-size", "20", "--side", "48",
        "--out", tmp_path / "p.npz")  # fmt: skip
    run("train", "--backend", "cnn", "--config", "cpm-tiny", "--data", tmp_path / "p.npz",
        "--epochs", "1", "--device", "cpu", "--out", tmp_path / "cnn")  # fmt: skip
    for command in (["bench", tmp_path / "cnn"], ["compare", tmp_path / "cnn"]):
        result = (
            run(*command, "--out", tmp_path / "r", ok=False)
            if command[0] == "compare"
            else (run(*command, ok=False))
        )
        assert result.exit_code == 1 and "pack of crops" in result.output
        assert "name the dataset" in result.output
    timed = run("bench", tmp_path / "cnn", "--dataset", "synthetic", "--timing-images", "2")
    assert json.loads(timed.stdout)["device"] == "cpu"


def test_compare_takes_the_protocol_and_the_images_of_a_coco_format_file(tmp_path):
    coco_file(tmp_path / "people.json", coco_people(3))
    for i in range(3):
        draw(tmp_path / "images" / f"{i:012d}.jpg")
    name = f"coco-format:{tmp_path / 'people.json'}"
    data = pm.load_dataset(name, "all", images=tmp_path / "images")
    pm.train("mean", data).save(tmp_path / "m")
    run("compare", tmp_path / "m", "--dataset", name, "--images", tmp_path / "images",
        "--protocol", "gt", "--split", "all", "--out", tmp_path / "r")  # fmt: skip
    doc = json.loads((tmp_path / "r" / "results.json").read_text())
    assert doc["protocol"] == "gt" and doc["n"] == 3
