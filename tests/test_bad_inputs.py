"""Every anticipated mistake gives one line and a non-zero exit, never a traceback; nothing the
user had is lost; and the readers of annotation and prediction files survive any input."""

import json
import os
import shutil
import stat
from collections import defaultdict

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from posemachines.cli.main import cli

from posemachines.errors import PoseMachinesError


def invoke(*args, cwd=None):
    runner = CliRunner()
    if cwd is None:
        return runner.invoke(cli, [str(a) for a in args])
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return runner.invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, mean_model_dir):
    """Broken files of every kind the commands read."""
    root = tmp_path_factory.mktemp("bad")
    files = {}
    for name, doc in {
        "ragged": {"keypoints": [[[1, 2], [3]]]},
        "flat": {"keypoints": [1, 2, 3]},
        "strings": {"keypoints": [[["a", "b"]] * 14] * 4},
        "not_a_dict": [1, 2],
        "booleans": {"keypoints": [[[True, False]] * 14] * 4},
    }.items():
        files[name] = root / f"{name}.json"
        files[name].write_text(json.dumps(doc))
    files["garbage_mat"] = root / "garbage.mat"
    files["garbage_mat"].write_bytes(b"MATLAB? no")

    def model_copy(name, edit):
        folder = root / name
        shutil.copytree(mean_model_dir, folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        edit(folder, manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    files["stages_number"] = model_copy("stages_number", lambda f, m: m.update(stages=3))
    files["no_skeleton"] = model_copy("no_skeleton", lambda f, m: m.pop("skeleton"))

    def not_safetensors(folder, manifest):
        from posemachines.files.owned import sha256

        (folder / "stage1.safetensors").write_bytes(b"\x00" * 64)
        manifest["sha256"]["stage1.safetensors"] = sha256(folder / "stage1.safetensors")

    files["weights_garbage"] = model_copy("weights_garbage", not_safetensors)

    def not_skops(folder, manifest):
        from posemachines.files.owned import sha256

        (folder / "stage1.skops").write_bytes(b"PK\x03\x04 not a zip")
        manifest["stages"][0].update(kind="forest", file="stage1.skops")
        manifest["sha256"]["stage1.skops"] = sha256(folder / "stage1.skops")

    files["skops_garbage"] = model_copy("skops_garbage", not_skops)

    def broken_tree_arrays(folder, manifest):
        from safetensors.numpy import save_file

        from posemachines.files.owned import sha256

        path = folder / "stage1.forest.safetensors"
        metadata = {"kind": "ExtraTreesClassifier", "params": "{}", "n_features": "3"}
        save_file({"feature": np.array([0, -1, 7], np.int16)}, str(path), metadata=metadata)
        manifest["stages"][0].update(kind="forest", file=path.name)
        manifest["sha256"][path.name] = sha256(path)

    files["tree_arrays_garbage"] = model_copy("tree_arrays_garbage", broken_tree_arrays)
    files["full"] = root / "full"
    files["full"].mkdir()
    (files["full"] / "keep.txt").write_text("mine")
    return files


def cases(files, model):
    synthetic = ["--dataset", "synthetic", "--synthetic-size", "4"]
    return {
        "jobs 0": ["train", "--backend", "forest", "--jobs", "0", *synthetic],
        "negative lr": ["train", "--backend", "cnn", "--lr", "-1", *synthetic],
        "epochs and budget": ["train", "--backend", "cnn", "--epochs", "1", "--time-budget", "1"],
        "option of another backend": ["train", "--backend", "mean", "--trees", "3"],
        "max features out of range": ["train", "--backend", "forest", "--max-features", "2"],
        "max features a word": ["train", "--backend", "forest", "--max-features", "all"],
        "unknown config": ["train", "--backend", "cnn", "--config", "cpm-huge", *synthetic],
        "resume without out": ["train", "--backend", "forest", "--resume"],
        "out not empty": ["train", "--backend", "mean", *synthetic, "--out", files["full"]],
        "missing data root": ["train", "--dataset", "lsp", "--data-root", "/no/such/folder"],
        "unknown dataset": ["evaluate", model, "--dataset", "mpii-nope"],
        "ragged predictions": ["evaluate", files["ragged"], "--dataset", "synthetic"],
        "flat predictions": ["evaluate", files["flat"], "--dataset", "synthetic"],
        "string predictions": ["evaluate", files["strings"], "--dataset", "synthetic"],
        "boolean predictions": ["evaluate", files["booleans"], "--dataset", "synthetic"],
        "JSON list": ["evaluate", files["not_a_dict"], "--dataset", "synthetic"],
        "broken .mat": ["evaluate", files["garbage_mat"], "--dataset", "synthetic"],
        "stages a number": ["evaluate", files["stages_number"], *synthetic],
        "no skeleton": ["evaluate", files["no_skeleton"], *synthetic],
        "weights not safetensors": ["evaluate", files["weights_garbage"], *synthetic],
        "weights not skops": ["evaluate", files["skops_garbage"], *synthetic],
        "malformed tree arrays": ["evaluate", files["tree_arrays_garbage"], *synthetic],
        "bad scales": ["evaluate", model, *synthetic, "--scales", "0.7,x"],
        "scales out of range": ["evaluate", model, *synthetic, "--scales", "0"],
        "image missing": ["predict", model, "/no/such/image.jpg"],
        "negative box": ["predict", model, "/no/such/image.jpg", "--box-side", "-3"],
        "bench zero images": ["bench", model, "--timing-images", "0"],
        "pack side": ["data", "pack", "synthetic:train", "--side", "8", "--out", "x.npz"],
        "pack pad": ["data", "pack", "synthetic:train", "--pad", "9", "--out", "x.npz"],
        "compare into a full folder": ["compare", model, *synthetic, "--out", files["full"]],
        "stack of zero stages": ["train", "--stack", "cnn:0", *synthetic],
        "stack of an unknown kind": ["train", "--stack", "tree:1", *synthetic],
        "stack without counts": ["train", "--stack", "forest", *synthetic],
        "stack and backend": ["train", "--stack", "cnn:1", "--backend", "cnn", *synthetic],
        "stack with --stages": ["train", "--stack", "cnn:1", "--stages", "2", *synthetic],
        "folds for a CNN": ["train", "--backend", "cnn", "--folds", "3", *synthetic],
    }


CASES = list(cases(defaultdict(str), "model"))  # the names; the files come from the fixture


@pytest.mark.parametrize("case", CASES)
def test_bad_input_gives_one_line_and_no_traceback(case, bad_files, mean_model_dir, tmp_path):
    args = cases(bad_files, mean_model_dir)[case]
    result = invoke(*args, cwd=tmp_path)
    assert result.exit_code in (1, 2), (case, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        case,
        repr(result.exception),
    )
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, (case, result.output)
    assert (bad_files["full"] / "keep.txt").read_text() == "mine"
    assert list(tmp_path.iterdir()) == []  # nothing half-made left behind


@pytest.mark.slow
def test_out_folder_is_refused_unless_overwrite_and_then_kept(tmp_path):
    """The issue's must-show, and --out . / --out .. from a folder with work in it."""
    x = tmp_path / "X"
    x.mkdir()
    (x / "keep").touch()
    res = invoke("train", "--backend", "mean", "--dataset", "synthetic", "--out", x)
    assert res.exit_code == 1 and "--overwrite" in res.output and (x / "keep").exists()
    res = invoke("train", "--backend", "mean", "--dataset", "synthetic", "--out", x, "--overwrite")
    assert res.exit_code == 0, res.output
    assert (x / "keep").exists() and (x / "manifest.json").exists()
    sub = x / "sub"
    sub.mkdir()
    (sub / "thesis.txt").write_text("chapter 1")
    for out in (".", ".."):
        res = invoke("train", "--backend", "mean", "--dataset", "synthetic", "--out", out, cwd=sub)
        assert res.exit_code == 1 and "not empty" in res.output
    assert (sub / "thesis.txt").read_text() == "chapter 1" and (x / "keep").exists()
    res = invoke(
        "train",
        "--backend",
        "mean",
        "--dataset",
        "synthetic",
        "--out",
        ".",
        "--overwrite",
        cwd=sub,
    )
    assert res.exit_code == 0 and (sub / "thesis.txt").read_text() == "chapter 1"


def test_failed_runs_leave_no_empty_run_folders(tmp_path, monkeypatch):
    monkeypatch.delenv("POSEMACHINES_DATA", raising=False)
    res = invoke("train", "--backend", "mean", "--dataset", "lsp", "--data-root", tmp_path / "no")
    assert res.exit_code == 1
    res = invoke("train", "--backend", "mean", "--dataset", "lsp", cwd=tmp_path)
    assert res.exit_code == 1
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "m"
        res = invoke("train", "--backend", "mean", "--dataset", "synthetic", "--out", out)
        assert res.exit_code == 0, res.output
        res = invoke("compare", out, "--dataset", "synthetic", "--out", tmp_path / "r")
        assert res.exit_code == 0, res.output
    finally:
        os.umask(old)
    for path in [out, tmp_path / "r", *out.iterdir(), *(tmp_path / "r").iterdir()]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_the_nan_advice_works_when_followed(tmp_path, monkeypatch):
    """The loss turns NaN above a learning rate; the message says to train again with a lower
    --lr into a new --out or with --overwrite, and doing so trains."""
    import posemachines.backends.cnn.trainer as tc

    real = tc.train_step

    def unstable(runner, optimizer, *args, **options):
        losses = real(runner, optimizer, *args, **options)
        return losses * float("nan") if optimizer.param_groups[0]["lr"] > 2e-3 else losses

    monkeypatch.setattr(tc, "train_step", unstable)
    out = tmp_path / "d"
    args = ["train", "--backend", "cnn", "--config", "cpm-tiny", "--dataset", "synthetic"]
    args += ["--synthetic-size", "40", "--device", "cpu", "--epochs", "3", "--out", out]
    res = invoke(*args, "--lr", "1e-2")
    assert res.exit_code == 1 and "lower --lr" in res.output and "--overwrite" in res.output
    res = invoke(*args, "--lr", "1e-3", "--overwrite")
    assert res.exit_code == 0, res.output
    assert (out / "manifest.json").is_file() and (out / "train_log.jsonl").is_file()


def test_skipped_images_are_counted_everywhere(tmp_path, mean_model_dir):
    """One unreadable image: evaluate, compare, bench, predict and pack go on, count it and
    say so; with --on-bad-image stop they stop with one line."""
    from PIL import Image

    root = tmp_path / "data" / "lsp"
    (root / "images").mkdir(parents=True)
    joints = np.random.default_rng(0).uniform(20, 80, (3, 14, 2000))
    joints[2] = 0
    scipy.io.savemat(root / "joints.mat", {"joints": joints})
    for i in range(1001, 2001):
        Image.new("RGB", (40, 40), (i % 255, 40, 90)).save(root / "images" / f"im{i}.jpg")
    (root / "images" / "im1002.jpg").write_bytes(b"broken")
    from posemachines.data import load_dataset

    assert len(load_dataset("lsp", "test", tmp_path / "data")) == 1000
    # a model trained on the synthetic set scores LSP-14 as well
    model = tmp_path / "m"
    shutil.copytree(mean_model_dir, model)
    lsp = ["--dataset", "lsp", "--data-root", tmp_path / "data"]
    res = invoke("bench", model, *lsp, "--timing-images", "3")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["skipped_images"] == ["im1002.jpg"]
    res = invoke("bench", model, *lsp, "--timing-images", "3", "--on-bad-image", "stop")
    assert res.exit_code == 1 and "im1002.jpg" in res.output
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("im1001.jpg", "im1002.jpg"):
        shutil.copy(root / "images" / name, folder / name)
    res = invoke("predict", model, folder, "--out", tmp_path / "p")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "p" / "keypoints.json").read_text())
    assert len(doc["results"]) == 1 and doc["skipped_images"] == ["im1002.jpg"]
    assert "1 unreadable image skipped" in res.output
    res = invoke("predict", model, folder, "--out", tmp_path / "q", "--on-bad-image", "stop")
    assert res.exit_code == 1 and not (tmp_path / "q").exists()  # nothing partial left
    res = invoke("data", "pack", "lsp:test", *lsp[2:], "--side", "32", "--out", tmp_path / "k.npz")
    assert res.exit_code == 0 and "1 unreadable image skipped" in res.output


def test_evaluate_and_compare_report_skipped_images(tmp_path, mean_model_dir):
    """A synthetic data set whose second image cannot be produced stands for a bad file."""
    import posemachines.data.synthetic as synthetic
    from posemachines.data import CorruptImageError

    real = synthetic.SyntheticDataset._image

    def broken(self, i):
        if self.names[i] == self.names[1]:
            raise CorruptImageError(f"{self.names[i]}: cannot decode image (test)")
        return real(self, i)

    model = tmp_path / "m"
    shutil.copytree(mean_model_dir, model)
    synthetic.SyntheticDataset._image = broken
    try:
        res = invoke("evaluate", model, "--dataset", "synthetic", "--synthetic-size", "4", "--json")
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        assert len(doc["skipped_images"]) == 1 and "scored as missing" in res.stderr
        manifest = json.loads((model / "manifest.json").read_text())
        assert manifest["evaluations"]["synthetic:test:image"]["skipped_images"] == 1
        res = invoke(
            "compare",
            model,
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "4",
            "--out",
            tmp_path / "r",
        )
        assert res.exit_code == 0, res.output
        results = json.loads((tmp_path / "r" / "results.json").read_text())
        assert len(results["skipped_images"]) == 1
        assert "unreadable" in (tmp_path / "r" / "report.md").read_text()
    finally:
        synthetic.SyntheticDataset._image = real


# -- the readers survive any input --------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_values | st.fixed_dictionaries({"keypoints": json_values}))
def test_prediction_json_reader_never_fails_otherwise(doc, tmp_path_factory):
    from posemachines.core.skeletons import LSP14
    from posemachines.files.prediction_files import read_predictions

    path = tmp_path_factory.mktemp("fuzz") / "p.json"
    path.write_text(json.dumps(doc))
    try:
        out = read_predictions(path, LSP14, 2)
    except PoseMachinesError as exc:
        assert "\n" not in str(exc)
    else:
        assert out.shape[1:] == (2, 14, 2)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300))
def test_binary_readers_never_fail_otherwise(data, tmp_path_factory):
    from posemachines.core.skeletons import LSP14
    from posemachines.data.lsp import load_lsp
    from posemachines.data.pack import load_pack
    from posemachines.files.model_dir import read_manifest
    from posemachines.files.prediction_files import read_predictions

    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "joints.mat").write_bytes(data)
    (folder / "p.mat").write_bytes(data)
    (folder / "pack.npz").write_bytes(data)
    (folder / "manifest.json").write_bytes(data)
    for read in (
        lambda: load_lsp(folder, "train"),
        lambda: read_predictions(folder / "p.mat", LSP14, 2),
        lambda: load_pack(folder / "pack.npz"),
        lambda: read_manifest(folder),
    ):
        try:
            read()
        except PoseMachinesError as exc:
            assert "\n" not in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    joints=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=90),
    shape=st.sampled_from([(3, 14, 2000), (3, 14, 3), (14, 3, 2), (2, 14), (3, 13, 2000)]),
)
def test_lsp_annotation_arrays_never_fail_otherwise(joints, shape, tmp_path_factory):
    from posemachines.data.lsp import load_lsp

    folder = tmp_path_factory.mktemp("fuzz")
    values = np.resize(np.array(joints or [1.0]), int(np.prod(shape))).reshape(shape)
    scipy.io.savemat(folder / "joints.mat", {"joints": values})
    try:
        load_lsp(folder, "test")
    except PoseMachinesError as exc:
        assert "\n" not in str(exc)
