import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import run_in_fresh_python
from posemachines.cli.main import cli


def run(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_help_does_not_import_torch():
    run_in_fresh_python(
        "import sys",
        "from click.testing import CliRunner",
        "from posemachines.cli.main import cli",
        "r = CliRunner().invoke(cli, ['--help'])",
        "assert r.exit_code == 0",
        "assert 'torch' not in sys.modules, 'torch imported'",
        # pm train's options include the CNN's, made from its settings without torch
        "r = CliRunner().invoke(cli, ['train', '--help'])",
        "assert r.exit_code == 0 and '--time-budget' in r.output",
        "assert 'torch' not in sys.modules, 'torch imported by pm train --help'",
    )


def test_train_mean_then_evaluate_json_contract(tmp_path):
    out = tmp_path / "m"
    run(
        "train", "--backend", "mean", "--dataset", "synthetic", "--synthetic-size", 30, "--out", out
    )
    result = run("evaluate", out, "--json", "--synthetic-size", 10)
    doc = json.loads(result.stdout)
    for key in ("dataset", "split", "n", "metrics", "per_joint", "per_stage"):
        assert key in doc
    assert doc["dataset"] == "synthetic" and doc["split"] == "test" and doc["n"] == 10
    for key in ("pck@0.2", "pck@0.1", "pckh@0.5", "pcp", "auc"):
        assert 0 <= doc["metrics"][key] <= 1
        assert key in doc["per_joint"]["r_ankle"] and key in doc["per_stage"][0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert (
        manifest["evaluations"]["synthetic:test:image"]["metrics"]["pck@0.2"]
        == doc["metrics"]["pck@0.2"]
    )


def test_train_without_out_makes_numbered_run_dirs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("POSEMACHINES_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r1 = run("train", "--backend", "mean", "--synthetic-size", 10)
    r2 = run("train", "--backend", "mean", "--synthetic-size", 10)
    assert "training on synthetic" in r1.stderr
    assert "runs/mean-1" in r1.stdout and "runs/mean-2" in r2.stdout


def test_predict_writes_keypoints_and_overlays(mean_model_dir, tmp_path, synthetic_test):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(3):
        Image.fromarray(synthetic_test[i].image).save(images / f"p{i}.png")
    out = tmp_path / "pred"
    run("predict", mean_model_dir, images, "--out", out)
    doc = json.loads((out / "keypoints.json").read_text())
    assert len(doc["results"]) == 3 and len(doc["results"][0]["keypoints"]) == 14 * 3
    assert (out / "p0.png").is_file()


def test_evaluate_external_prediction_files(tmp_path, synthetic_test):
    import scipy.io

    gt = synthetic_test.joints[:10]
    scipy.io.savemat(tmp_path / "gt.mat", {"preds": gt.transpose(1, 2, 0) + 1.0})
    doc = json.loads(
        run(
            "evaluate",
            tmp_path / "gt.mat",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            10,
            "--json",
        ).stdout
    )
    assert doc["metrics"]["pck@0.2"] == 1.0 and doc["protocol"] == "external"
    (tmp_path / "p.json").write_text(json.dumps({"keypoints": (gt + 100).tolist()}))
    doc = json.loads(
        run(
            "evaluate",
            tmp_path / "p.json",
            "--dataset",
            "synthetic",
            "--synthetic-size",
            10,
            "--json",
        ).stdout
    )
    assert doc["metrics"]["pck@0.2"] == 0.0


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--backend", "mean", "--dataset", "lsp", "--data-root", "/nonexistent"],
            "does not exist",
        ),
        (["train", "--backend", "mean", "--dataset", "imagenet"], "dataset 'imagenet' not found"),
        (
            ["train", "--backend", "forest", "--stages", "0", "--dataset", "synthetic"],
            "--stages must be at least 1",
        ),
        (["evaluate", "/"], "not a model directory"),
    ],
)
def test_bad_input_gives_one_line_errors(args, message):
    result = run(*args, ok=False)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_backend_is_refused():
    result = run("train", "--backend", "svm", ok=False)
    assert result.exit_code == 2 and "svm" in result.output


def test_skeleton_mismatch_is_refused(mean_model_dir, tmp_path):
    from posemachines.core.skeletons import MPII16
    from posemachines.errors import PoseMachinesError
    from posemachines.loading import load_model

    model = load_model(mean_model_dir)
    from posemachines.data import load_dataset

    data = load_dataset("synthetic", "test", size=2)
    data.skeleton = MPII16
    with pytest.raises(PoseMachinesError, match="skeleton mismatch"):
        model.predict(data)


def test_data_lists_datasets(tmp_path):
    """Every dataset gets a line; a broken one says why and the others are still listed."""
    (tmp_path / "lspet").mkdir()
    (tmp_path / "lspet" / "joints.mat").write_bytes(b"not a MATLAB file")
    out = run("data", "--data-root", tmp_path).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(lines) == {"lsp", "lspet", "mpii", "coco", "flic", "synthetic", "synthetic-crowd"}
    assert "not found" in lines["lsp"] and "unreadable" in lines["lspet"]
    assert "built in" in lines["synthetic"]


def test_predict_on_a_video_with_boxes(mean_model_dir, tmp_path, synthetic_test):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    frames = np.stack([synthetic_test[i].image for i in range(4)])
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, frames, fps=5)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"clip.mp4#000001": [10, 10, 100, 120]}))
    out = tmp_path / "pred"
    run("predict", mean_model_dir, video, "--out", out, "--boxes", boxes)
    doc = json.loads((out / "keypoints.json").read_text())
    # a pose for the frame's one box; frames without a box have nobody
    assert [r["image_id"] for r in doc["results"]] == ["clip.mp4#000001"]
    assert doc["results"][0]["bbox"] == [10, 10, 100, 120]
    assert (out / "clip_overlay.mp4").stat().st_size > 0
    run("predict", mean_model_dir, video, "--out", tmp_path / "every", "--no-overlays")
    doc = json.loads((tmp_path / "every" / "keypoints.json").read_text())
    assert [r["image_id"] for r in doc["results"]] == [f"clip.mp4#{k:06d}" for k in range(4)]


def test_saved_predictions_carry_each_joints_confidence(tmp_path, forest_model_dir):
    """`pm evaluate --save-predictions` writes the belief at each joint's peak, every stage,
    as the Python API predicts it (it wrote zeros before)."""
    import json

    import numpy as np

    from posemachines.data import load_dataset
    from posemachines.loading import load_model

    out = tmp_path / "p.json"
    run("evaluate", forest_model_dir, "--dataset", "synthetic", "--synthetic-size", "6",
        "--save-predictions", out, "--json")  # fmt: skip
    saved = np.array(json.loads(out.read_text())["confidence"], dtype=float)
    test = load_dataset("synthetic", "test", size=6, seed=0)
    expected = load_model(forest_model_dir).predict(test).confidence
    assert saved.shape == expected.shape == (2, 6, 14)
    np.testing.assert_allclose(saved, expected, rtol=1e-6)
    assert (saved > 0).all() and (saved <= 1).all()
