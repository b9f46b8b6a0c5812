"""The model zoo: every shipped entry loads, its checksums hold, it sees a real person; names
go wherever a model directory does; fine-tuning starts from a model's weights."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import real_data_root, run_pm
from PIL import Image

from posemachines import zoo
from posemachines.files.owned import sha256
from posemachines.loading import load_model

ENTRIES = zoo.names()


def test_the_table_lists_what_is_shipped_and_the_wheel_carries_it():
    assert set(ENTRIES) == set(zoo.ENTRIES)
    toml = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"posemachines.zoo"' in toml
    shipped = sum(f.stat().st_size for f in zoo.ZOO_DIR.rglob("*") if f.is_file())
    assert shipped <= 40e6


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    """scikit-image's public-domain photograph of a person, as a file."""
    from skimage.data import astronaut

    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(astronaut()).save(path)
    return path


@pytest.mark.parametrize("name", ENTRIES)
def test_an_entry_loads_its_checksums_hold_and_it_sees_a_real_person(name, astronaut):
    folder = zoo.entry_path(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    for file, digest in manifest["sha256"].items():
        assert sha256(folder / file) == digest, file
    made = zoo.info(name)
    for key in ("command", "data", "terms", "ms_per_image"):
        assert made.get(key), key
    model = load_model(name)
    keypoints = model.predict([astronaut]).keypoints[-1][0]
    assert np.isfinite(keypoints).all() and keypoints.shape == (model.skeleton.num_joints, 2)
    head, ankles = keypoints[13], keypoints[[0, 5]]  # lsp14: head top, the ankles
    assert head[1] < ankles[:, 1].min()  # upright: the head above the feet


@pytest.mark.slow
@pytest.mark.skipif(real_data_root() is None, reason="LSP is not in the data root")
@pytest.mark.parametrize("name", ENTRIES)
def test_its_recorded_lsp_score_is_what_evaluate_gives_now(name):
    folder = zoo.entry_path(name)
    manifest = json.loads((folder / "manifest.json").read_text())
    recorded = manifest["evaluations"][zoo.LSP_KEY]["metrics"]["pck@0.2"]
    result = run_pm("evaluate", name, "--dataset", "lsp", "--split", "test", "--json",
                    "--data-root", real_data_root())  # fmt: skip
    now = json.loads(result.stdout.strip().splitlines()[-1])["metrics"]["pck@0.2"]
    assert now == pytest.approx(recorded, abs=0.002)  # 28 of 14,000 joints: other CPUs' sums
    assert json.loads((folder / "manifest.json").read_text()) == manifest  # nothing written


def test_models_lists_every_entry():
    listed = json.loads(run_pm("models", "--json").stdout)
    assert [r["name"] for r in listed] == ENTRIES
    for row in listed:
        assert row["size_mb"] > 0 and row["command"].startswith("pm train")


def test_a_folder_of_yours_wins_over_a_zoo_name(mean_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "ENTRIES", {**zoo.ENTRIES, "mine": "a test entry"})
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path / "zoo")
    shutil.copytree(mean_model_dir, tmp_path / "zoo" / "mine")
    (tmp_path / "zoo" / "mine" / "zoo.json").write_text(json.dumps({"command": "pm train x"}))
    image = Path(__file__).parent.parent / "examples" / "images" / "figure1.jpg"
    monkeypatch.chdir(tmp_path)
    run_pm("predict", "mine", image, "--out", "p1")  # the zoo's
    shipped = (tmp_path / "zoo" / "mine" / "manifest.json").read_bytes()
    run_pm("evaluate", "mine", "--dataset", "synthetic", "--synthetic-size", "4")
    assert (tmp_path / "zoo" / "mine" / "manifest.json").read_bytes() == shipped  # not written
    shutil.copytree(mean_model_dir, tmp_path / "mine")  # now a folder of that name here
    said = run_pm("predict", "mine", image, "--out", "p2")
    assert "using your folder" in said.stderr


def test_an_unknown_name_is_one_line():
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    result = CliRunner().invoke(cli, ["evaluate", "no-such-model", "--dataset", "synthetic"])
    assert result.exit_code == 2 and "no such model directory" in result.output
    assert "Traceback" not in result.output


def test_predict_with_no_model_uses_the_default_and_says_so(tmp_path):
    image = Path(__file__).parent.parent / "examples" / "images" / "figure1.jpg"
    if zoo.entry_path(zoo.DEFAULT_CNN) is None:
        from click.testing import CliRunner
        from posemachines.cli.main import cli

        result = CliRunner().invoke(cli, ["predict", str(image), "--out", str(tmp_path / "p")])
        assert result.exit_code != 0 and "not in this installation" in result.output
        return
    said = run_pm("predict", image, "--out", tmp_path / "p")
    assert f"using the zoo's {zoo.DEFAULT_CNN}" in said.stderr
    assert (tmp_path / "p" / "figure1.png").is_file()


# -- fine-tuning ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("zoo-cnn") / "cnn"
    run_pm("train", "--backend", "cnn", "--config", "cpm-tiny", "--dataset", "synthetic",
           "--synthetic-size", "16", "--epochs", "1", "--device", "cpu", "--out", out)  # fmt: skip
    return out


def upper_body_set(tmp_path: Path) -> tuple[Path, Path]:
    """Synthetic figures written as a COCO-format file with six upper-body joints of LSP's,
    in another order and under other names: another skeleton."""
    from posemachines.data import load_dataset

    data = load_dataset("synthetic", "train", size=16, seed=0)
    keep = [12, 13, 8, 9, 7, 10]  # neck, head top, shoulders, elbows (LSP's indices)
    names = ["neck", "top", "right_shoulder", "left_shoulder", "right_elbow", "left_elbow"]
    folder = tmp_path / "images"
    folder.mkdir()
    images, people = [], []
    for i in range(len(data)):
        sample = data[i]
        Image.fromarray(sample.image).save(folder / f"{i}.png")
        h, w = sample.image.shape[:2]
        images.append({"id": i, "file_name": f"{i}.png", "width": w, "height": h})
        kp = [[*sample.joints[j], 2] for j in keep]
        people.append({"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, w, h],
                       "keypoints": [v for p in kp for v in p]})  # fmt: skip
    category = {"id": 1, "name": "upper", "keypoints": names, "skeleton": [[1, 2], [1, 3]]}
    path = tmp_path / "upper.json"
    path.write_text(json.dumps({"images": images, "annotations": people, "categories": [category]}))
    return path, folder


def test_fine_tuning_loads_all_weights_on_the_same_skeleton(tiny_cnn, tmp_path):
    said = run_pm("train", "--backend", "cnn", "--init", tiny_cnn, "--dataset", "synthetic",
                  "--synthetic-size", "16", "--epochs", "1", "--device", "cpu", "--out",
                  tmp_path / "tuned")  # fmt: skip
    assert "all of its weights" in said.output
    record = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["training"]
    assert record["settings"]["init"] == str(tiny_cnn)
    assert record["settings"]["config"] == "cpm-tiny"  # taken from the model
    assert record["details"]["started_from"]["loaded"] == "all"


def test_fine_tuning_on_another_skeleton_loads_the_trunk_alone(tiny_cnn, tmp_path):
    import torch
    from safetensors.torch import load_file

    coco, images = upper_body_set(tmp_path)
    said = run_pm("train", "--backend", "cnn", "--init", tiny_cnn, "--dataset",
                  f"coco-format:{coco}", "--images", images, "--epochs", "1", "--device",
                  "cpu", "--lr", "1e-12", "--out", tmp_path / "tuned")  # fmt: skip
    assert "image trunk of its weights" in said.output
    record = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["training"]
    assert record["details"]["started_from"]["loaded"] == "image trunk"
    before = load_file(tiny_cnn / "network1.safetensors")
    after = load_file(tmp_path / "tuned" / "network1.safetensors")
    trunk = [k for k in before if k.startswith("features.") and k.endswith("weight")]
    assert trunk and all(torch.allclose(before[k], after[k], atol=1e-6) for k in trunk)
    assert load_model(tmp_path / "tuned").skeleton.num_joints == 6


def test_fine_tuning_from_another_network_or_a_forest_is_one_line(
    tiny_cnn, forest_model_dir, tmp_path
):
    common = ["--dataset", "synthetic", "--synthetic-size", "16", "--epochs", "1"]
    common += ["--device", "cpu", "--backend", "cnn"]
    refused = run_pm(
        "train", "--config", "cpm-small", "--init", tiny_cnn, *common, "--out", tmp_path / "a",
        expect_fail=True,
    )  # fmt: skip
    assert "give the --config it was trained with" in refused.stderr
    refused = run_pm(
        "train", "--config", "cpm-tiny", "--init", forest_model_dir, *common,
        "--out", tmp_path / "b", expect_fail=True,
    )  # fmt: skip
    assert "give a CNN model" in refused.stderr
