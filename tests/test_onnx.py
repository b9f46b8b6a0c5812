"""Models that leave Python: pm export to ONNX, ONNX Runtime behind the same PoseModel, int8."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_pm as run

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    """A demo-like CNN: cpm-small, a few epochs on the synthetic set."""
    out = tmp_path_factory.mktemp("models") / "cnn"
    run("train", "--backend", "cnn", "--config", "cpm-small", "--dataset", "synthetic",
        "--synthetic-size", "80", "--epochs", "3", "--device", "cpu", "--out", out)  # fmt: skip
    return out


def test_onnx_runtime_gives_torchs_beliefs_and_scores(cnn_dir, tmp_path):
    import onnx

    from posemachines.api import evaluate
    from posemachines.data import load_dataset
    from posemachines.loading import load_model, load_pose_model

    out = tmp_path / "cnn.onnx"
    run("export", cnn_dir, "--out", out)
    proto = onnx.load(out)
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    assert [o.name for o in proto.graph.output] == ["stage1", "stage2", "stage3"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["posemachines"])
    assert meta["skeleton"]["name"] == "lsp14" and meta["codec"]["input_size"] == 128
    assert meta["input"]["channels"] == "RGB" and meta["input"]["range"] == [0, 255]
    assert "crop" in meta["crop_protocol"] and meta["training"]["dataset_name"] == "synthetic"

    test = load_dataset("synthetic", "test", size=40)
    torch_model, ort_model = load_model(cnn_dir), load_pose_model(out)
    crops = np.stack([test[i].image for i in range(8)])
    from posemachines.core.crops import person_crop

    crops = np.stack([person_crop(test[i], 128, test.skeleton).image for i in range(16)])
    for a, b in zip(torch_model.stage_beliefs(crops), ort_model.stage_beliefs(crops)):
        assert np.abs(a - b).max() < 1e-4
    pck = [evaluate(m, test).metrics["pck@0.2"] for m in (torch_model, ort_model)]
    assert abs(pck[0] - pck[1]) < 1e-3
    on_the_fly = load_pose_model(cnn_dir, runtime="onnxruntime")
    assert {s.kind for s in on_the_fly.stages} == {"onnx"}


@pytest.mark.slow
def test_an_onnx_file_goes_wherever_a_model_directory_does(cnn_dir, tmp_path):
    out = tmp_path / "cnn.onnx"
    run("export", cnn_dir, "--out", out)
    data = ["--dataset", "synthetic", "--synthetic-size", "6"]
    scores = json.loads(run("evaluate", out, *data, "--json").stdout)
    same = json.loads(run("evaluate", cnn_dir, *data, "--json", "--runtime", "onnxruntime").stdout)
    assert scores["metrics"] == same["metrics"]
    pred = tmp_path / "pred"
    run("predict", out, ROOT / "examples" / "images", "--out", pred, "--flip")
    assert len(json.loads((pred / "keypoints.json").read_text())["results"]) == 3
    bench = json.loads(run("bench", cnn_dir, "--timing-images", "2").stdout)
    assert set(bench["runtimes"]) == {"torch", "onnxruntime"}
    report = tmp_path / "report"
    run("compare", cnn_dir, out, *data, "--out", report, "--timing-images", "1")
    assert (
        "cnn.onnx" in (report / "report.md").read_text()
        or "cnn" in (report / "report.md").read_text()
    )


def test_stacks_of_cnn_parts_export_and_forests_are_refused(tmp_path, forest_model_dir):
    stack = tmp_path / "stack"
    run("train", "--stack", "cnn:1,cnn:1", "--config", "cpm-tiny", "--epochs", "1",
        "--folds", "1", "--dataset", "synthetic", "--synthetic-size", "12", "--device", "cpu",
        "--out", stack)  # fmt: skip
    out = tmp_path / "stack.onnx"
    run("export", stack, "--out", out)
    from posemachines.data import load_dataset
    from posemachines.loading import load_model, load_pose_model

    test = load_dataset("synthetic", "test", size=6)
    a = load_model(stack).predict(test).keypoints
    b = load_pose_model(out).predict(test).keypoints
    assert np.abs(a - b).max() < 0.05  # pixels
    refused = run("export", forest_model_dir, "--out", tmp_path / "f.onnx", expect_fail=True)
    assert "only CNN stages export" in refused.stderr and not (tmp_path / "f.onnx").exists()


def test_edited_or_truncated_onnx_files_are_one_line(cnn_dir, tmp_path):
    out = tmp_path / "cnn.onnx"
    run("export", cnn_dir, "--out", out)
    data = out.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    bad = run("evaluate", tmp_path / "cut.onnx", "--dataset", "synthetic", expect_fail=True)
    assert "cut.onnx" in bad.stderr
    import onnx

    proto = onnx.load(out)
    weights = proto.graph.initializer[0]
    raw = bytearray(weights.raw_data)
    raw[0] ^= 0xFF
    weights.raw_data = bytes(raw)
    (tmp_path / "edited.onnx").write_bytes(proto.SerializeToString())
    bad = run("predict", tmp_path / "edited.onnx", ROOT / "examples" / "images",
              "--out", tmp_path / "p", expect_fail=True)  # fmt: skip
    assert "changed since pm export wrote it" in bad.stderr
    (tmp_path / "mine.onnx").write_bytes(b"my own")
    bad = run("export", cnn_dir, "--out", tmp_path / "mine.onnx", expect_fail=True)
    assert (tmp_path / "mine.onnx").read_bytes() == b"my own"
    again = run("export", cnn_dir, "--out", out, expect_fail=True)  # replaced only when asked
    assert "--overwrite" in again.stderr
    run("export", cnn_dir, "--out", out, "--overwrite")  # an earlier export of ours


@pytest.mark.slow
def test_int8_export_prints_the_accuracy_change(cnn_dir, tmp_path):
    out = tmp_path / "int8.onnx"
    result = run("export", cnn_dir, "--int8", "--calibration", "16", "--out", out)
    assert "int8" in result.stdout and "points)" in result.stdout
    assert out.stat().st_size < (cnn_dir / "network1.safetensors").stat().st_size / 2


def test_the_example_runs_an_export_with_onnxruntime_alone(cnn_dir, tmp_path):
    out = tmp_path / "cnn.onnx"
    run("export", cnn_dir, "--out", out)
    example = ROOT / "examples" / "onnx_predict.py"
    import ast

    tree = ast.parse(example.read_text())
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported == {"hashlib", "json", "sys", "numpy", "onnxruntime", "PIL"}
    done = subprocess.run(
        [sys.executable, example, out, ROOT / "examples" / "images" / "figure1.jpg"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 + 14 and lines[1].split()[0] == "r_ankle"


def test_an_exported_model_runs_without_torch(cnn_dir, tmp_path):
    from conftest import run_in_fresh_python

    out = tmp_path / "cnn.onnx"
    run("export", cnn_dir, "--out", out)
    image = ROOT / "examples" / "images" / "figure1.jpg"
    run_in_fresh_python(
        "import sys",
        "sys.modules['torch'] = None",
        "import posemachines as pm",
        f"m = pm.load_model({str(out)!r})",
        f"p = m.predict([{str(image)!r}])",
        "assert p.keypoints.shape == (3, 1, 14, 2), p.keypoints.shape",
    )
