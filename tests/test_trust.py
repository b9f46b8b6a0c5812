"""What the toolkit promises about the user's files and inputs, attacked as a user would:
outputs it owns and nothing else, inputs checked where they are read, model files that stay
inside their folder, images as people have them, and one line for every error."""

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from posemachines.cli.main import cli

from posemachines.errors import PoseMachinesError

PNG_HEADER = b"\x89PNG"


MEAN = ["train", "--backend", "mean", "--dataset", "synthetic", "--synthetic-size", "6"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(res) -> str:
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, res.output
    return lines[0]


def write_image(path, side=40, colour=(200, 120, 60)):
    Image.new("RGB", (side, side), colour).save(path)


# -- owned outputs ------------------------------------------------------------------------------


def test_predict_never_replaces_a_users_keypoints_json(tmp_path, mean_model_dir):
    """The README's own custom-dataset layout: hands/keypoints.json beside hands/images."""
    hands = tmp_path / "hands"
    (hands / "images").mkdir(parents=True)
    write_image(hands / "images" / "a.png")
    users = b'{"images": [], "annotations": [], "categories": []}'
    (hands / "keypoints.json").write_bytes(users)
    for extra in ([], ["--overwrite"]):
        res = invoke("predict", mean_model_dir, hands / "images", "--out", hands, *extra)
        assert "Error:" in one_line_error(res)
        assert (hands / "keypoints.json").read_bytes() == users
    assert sorted(p.name for p in hands.iterdir()) == ["images", "keypoints.json"]


def test_predict_overwrite_never_replaces_the_users_images(tmp_path, mean_model_dir):
    mine = tmp_path / "mine"
    mine.mkdir()
    write_image(mine / "a.png")
    before = (mine / "a.png").read_bytes()
    line = one_line_error(invoke("predict", mean_model_dir, mine, "--out", mine, "--overwrite"))
    assert "a.png" in line and "not written by posemachines" in line
    assert (mine / "a.png").read_bytes() == before
    assert not (mine / "keypoints.json").exists()  # a failed prediction leaves nothing


def test_predict_reruns_into_its_own_folder_and_replaces_only_its_files(tmp_path, mean_model_dir):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png")
    out = tmp_path / "out"
    from posemachines.files.owned import RECORD

    assert invoke("predict", mean_model_dir, images, "--out", out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    assert invoke("predict", mean_model_dir, images, "--out", out).exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"
    record = json.loads((out / RECORD).read_text())
    assert record["command"] == "predict" and set(record["files"]) == {"a.png", "keypoints.json"}
    # another command does not take it for its own
    res = invoke("compare", mean_model_dir, "--synthetic-size", "4", "--out", out)
    assert "not an earlier `pm compare` output" in one_line_error(res)


def test_compare_never_replaces_a_users_results_or_report(tmp_path, mean_model_dir):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "results.json").write_text('{"mine": 1}')
    (thesis / "report.md").write_text("# my thesis")
    for extra in ([], ["--overwrite"]):
        res = invoke("compare", mean_model_dir, "--synthetic-size", "4", "--out", thesis, *extra)
        one_line_error(res)
    assert (thesis / "results.json").read_text() == '{"mine": 1}'
    assert (thesis / "report.md").read_text() == "# my thesis"
    assert not [p for p in thesis.iterdir() if ".pm-tmp-" in p.name]


def test_a_report_appears_whole_or_not_at_all(tmp_path, mean_model_dir, monkeypatch):
    """The disk fills up while the report's files are being put in place: what is there
    afterwards is the previous report, every file of it."""
    import posemachines.files.owned as files

    out = tmp_path / "report"
    args = ["compare", mean_model_dir, "--synthetic-size", "4", "--timing-images", "1"]
    assert invoke(*args, "--out", out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert {"results.json", "report.md", "report.html"} <= set(before)
    real = os.replace
    renames = {"n": 0}

    def failing_rename(src, dst):
        if Path(dst).parent == out and not Path(dst).name.startswith("."):
            renames["n"] += 1
            if renames["n"] == 2:  # one file of the new report is in place already
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_rename)
    res = invoke(*args, "--synthetic-size", "5", "--out", out)
    monkeypatch.undo()
    assert renames["n"] >= 2 and "No space left on device" in one_line_error(res)
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert after == before
    assert not [p for p in out.iterdir() if ".pm-tmp-" in p.name]


def test_two_writers_of_one_folder_one_is_refused(tmp_path):
    from posemachines.files.owned import OwnedFolder

    out = tmp_path / "run"
    with OwnedFolder(out, "train"):
        res = invoke("train", "--backend", "mean", "--dataset", "synthetic", "--out", out)
        assert "being written by another pm command" in one_line_error(res)
    res = invoke(*MEAN, "--out", out)
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_two_trainings_into_one_folder_at_once(tmp_path):
    """Two processes: one finishes, the other is refused in one line; no model is lost
    silently."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-c",
        "from posemachines.cli.main import cli; cli()",
        "train",
        "--backend",
        "forest",
        "--dataset",
        "synthetic",
        "--synthetic-size",
        "12",
        "--stages",
        "1",
        "--trees",
        "2",
        "--depth",
        "4",
        "--jobs",
        "1",
        "--out",
        str(out),
    ]
    procs = [
        subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [p.communicate() + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    written = [r for r in results if "model written to" in r[0]]
    assert codes == [0, 1] and len(written) == 1, results
    refused = next(r for r in results if r[2] == 1)
    assert "Error:" in refused[1] and "Traceback" not in refused[1]


def test_a_dangling_out_link_and_a_read_only_folder_are_one_line(tmp_path, mean_model_dir):
    link = tmp_path / "gone"
    link.symlink_to(tmp_path / "nowhere")
    res = invoke("predict", mean_model_dir, mean_model_dir, "--out", link)
    assert "missing" in one_line_error(res)
    if os.geteuid() == 0:
        return  # root writes into read-only folders
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        one_line_error(invoke("train", "--backend", "mean", "--out", locked / "m"))
    finally:
        locked.chmod(stat.S_IRWXU)


def test_os_errors_at_the_command_boundary_are_one_line(tmp_path, monkeypatch):
    import posemachines.files.owned as files

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "x.safetensors")

    monkeypatch.setattr(files.os, "fsync", full_disk)
    res = invoke(*MEAN, "--out", tmp_path / "m")
    line = one_line_error(res)
    assert "No space left on device" in line and "free some space" in line


def test_evaluate_prints_its_scores_when_the_model_is_read_only(
    tmp_path, mean_model_dir, monkeypatch
):
    import posemachines.files.model_dir as io

    model = tmp_path / "model"
    shutil.copytree(mean_model_dir, model)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(model / "manifest.json"))

    monkeypatch.setattr(io, "update_manifest", read_only)
    res = invoke("evaluate", model, "--synthetic-size", "4", "--json")
    assert res.exit_code == 0, res.output
    assert "not recorded" in res.stderr
    assert "per_stage" in json.loads(res.stdout)


# -- validated inputs ---------------------------------------------------------------------------


def coco_doc(n=6, names=("a", "b", "c")):
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"im{i}.png"} for i in range(n)]
    anns = []
    for i in range(n):
        xy = rng.uniform(5, 35, (len(names), 2))
        kp = np.concatenate([xy, np.full((len(names), 1), 2)], 1).ravel().tolist()
        anns.append(
            {
                "id": 100 + i,
                "image_id": i,
                "keypoints": kp,
                "num_keypoints": 3,
                "bbox": [2, 2, 36, 36],
                "area": 900.0,
                "iscrowd": 0,
                "category_id": 1,
            }
        )
    category = {"id": 1, "name": "thing", "keypoints": list(names), "skeleton": [[1, 2]]}
    return {"images": images, "annotations": anns, "categories": [category]}


def coco_folder(tmp_path, doc, name="things"):
    folder = tmp_path / "root" / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for im in doc["images"]:
        if isinstance(im, dict) and not (folder / "images" / str(im.get("file_name"))).exists():
            write_image(folder / "images" / str(im["file_name"]))
    (folder / "keypoints.json").write_text(json.dumps(doc))
    return folder


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda d: d["annotations"][2]["keypoints"].__setitem__(0, float("nan")), "keypoints"),
        (lambda d: d["annotations"][2]["keypoints"].__setitem__(1, float("inf")), "keypoints"),
        (lambda d: d["annotations"][2]["bbox"].__setitem__(0, float("nan")), "bbox"),
        (lambda d: d["annotations"][2]["bbox"].__setitem__(2, 0), "bbox"),
        (lambda d: d["annotations"][2]["keypoints"].__setitem__(0, "12"), "keypoints"),
        (lambda d: d["annotations"][2].__setitem__("area", "big"), "area"),
        (lambda d: d["annotations"][2].__setitem__("image_id", 99), "image_id"),
        (lambda d: d["images"][3].__setitem__("id", 2), "id 2"),
    ],
)
def test_a_bad_annotation_is_one_line_or_skipped_and_counted(tmp_path, edit, field):
    doc = coco_doc()
    edit(doc)
    folder = coco_folder(tmp_path, doc)
    root = folder.parent
    out = tmp_path / "mean"
    args = ["train", "--backend", "mean", "--dataset", "things", "--data-root", root]
    line = one_line_error(invoke(*args, "--out", out))
    assert "keypoints.json" in line and field in line and "--on-bad-annotation skip" in line
    res = invoke(*args, "--out", out, "--on-bad-annotation", "skip")
    assert res.exit_code == 0, res.output
    assert "bad annotation(s) left out" in res.stderr
    from posemachines.loading import load_model

    model = load_model(out)
    assert np.isfinite(model.stages[0].mean_beliefs_).all()
    assert f"({4 if field == 'id 2' else 5} samples" in model.record.dataset
    assert model.record.skipped_annotations


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["categories"][0].__setitem__("skeleton", "1-2"),
        lambda d: d["categories"][0].__setitem__("skeleton", [[1, 9]]),
        lambda d: d["categories"][0].__setitem__("sigmas", ["a", "b", "c"]),
        lambda d: d["categories"][0].__setitem__("sigmas", [0.1]),
        lambda d: d["categories"][0].__setitem__("keypoints", "abc"),
        lambda d: d.__setitem__("images", {"id": 1}),
        lambda d: d.__setitem__("annotations", 7),
    ],
)
def test_coco_fields_of_the_wrong_type_are_one_line(tmp_path, edit):
    doc = coco_doc()
    edit(doc)
    folder = coco_folder(tmp_path, doc)
    from posemachines.data import load_dataset

    with pytest.raises(PoseMachinesError, match="keypoints.json"):
        load_dataset("things", "all", folder.parent)


def test_a_deeply_nested_file_is_one_line(tmp_path, mean_model_dir):
    model = tmp_path / "model"
    shutil.copytree(mean_model_dir, model)
    (model / "manifest.json").write_text("[" * 100000 + "]" * 100000)
    assert "not valid JSON" in one_line_error(invoke("evaluate", model))
    doc = tmp_path / "root" / "deep"
    doc.mkdir(parents=True)
    (doc / "keypoints.json").write_text("[" * 100000 + "]" * 100000)
    res = invoke("evaluate", mean_model_dir, "--dataset", "deep", "--data-root", doc.parent)
    one_line_error(res)


def test_predictions_are_matched_by_name_not_order(tmp_path, mean_model_dir):
    from posemachines.data import load_dataset
    from posemachines.files.prediction_files import write_predictions
    from posemachines.loading import load_model

    test = load_dataset("synthetic", "test", size=12, seed=0)
    model = load_model(mean_model_dir)
    preds = model.predict(test)
    # perturb so that each image's prediction is its own: the truth, a little off
    preds.keypoints = test.joints[None] + np.random.default_rng(0).normal(0, 1, (1, 12, 14, 2))
    preds.confidence = preds.confidence[-1:]
    path = tmp_path / "p.json"
    write_predictions(path, preds, test.skeleton)
    doc = json.loads(path.read_text())
    order = np.random.default_rng(1).permutation(12)
    shuffled = dict(
        doc,
        names=[doc["names"][i] for i in order],
        stages=[[s[i] for i in order] for s in doc["stages"]],
    )
    (tmp_path / "shuffled.json").write_text(json.dumps(shuffled))

    def score(name):
        res = invoke(
            "evaluate",
            tmp_path / name,
            "--dataset",
            "synthetic",
            "--synthetic-size",
            "12",
            "--json",
        )
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)["metrics"]["pck@0.2"]

    assert score("p.json") == score("shuffled.json") > 0.9
    missing = dict(doc, names=["x"] + doc["names"][1:])
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    res = invoke(
        "evaluate", tmp_path / "missing.json", "--dataset", "synthetic", "--synthetic-size", "12"
    )
    assert "no prediction for 1" in one_line_error(res)


def test_skeletons_are_told_apart_by_their_joints_in_order(tmp_path):
    """Two custom sets, one category name and joint count, another joint order."""
    doc = coco_doc()
    coco_folder(tmp_path, doc, "abc")
    other = coco_doc(names=("c", "b", "a"))
    coco_folder(tmp_path, other, "cba")
    root = tmp_path / "root"
    res = invoke(
        "train",
        "--backend",
        "mean",
        "--dataset",
        "abc",
        "--data-root",
        root,
        "--out",
        tmp_path / "m",
    )
    assert res.exit_code == 0, res.output
    res = invoke("evaluate", tmp_path / "m", "--dataset", "cba", "--data-root", root)
    assert "joints differ in name or order" in one_line_error(res)
    res = invoke(
        "compare", tmp_path / "m", "--dataset", "cba", "--data-root", root, "--out", tmp_path / "c"
    )
    assert "joints differ in name or order" in one_line_error(res)


# -- contained model files ----------------------------------------------------------------------


@pytest.mark.parametrize("exists", [True, False])
@pytest.mark.parametrize("name", ["../outside.safetensors", "ABSOLUTE", "sub/stage1.safetensors"])
def test_a_manifest_names_only_plain_files_in_its_folder(tmp_path, mean_model_dir, name, exists):
    model = tmp_path / "model"
    shutil.copytree(mean_model_dir, model)
    target = tmp_path / "outside.safetensors"
    if exists:
        shutil.copy(model / "stage1.safetensors", target)
    if name == "ABSOLUTE":
        name = str(target)
    manifest = json.loads((model / "manifest.json").read_text())
    digest = manifest["sha256"].pop("stage1.safetensors")
    manifest["stages"][0]["file"] = name
    manifest["sha256"][name] = digest
    (model / "manifest.json").write_text(json.dumps(manifest))
    line = one_line_error(invoke("evaluate", model, "--synthetic-size", "4"))
    assert "plain names inside its own folder" in line
    assert "missing" not in line  # says nothing of what is outside


def test_a_linked_weight_file_is_refused(tmp_path, mean_model_dir):
    model = tmp_path / "model"
    shutil.copytree(mean_model_dir, model)
    (model / "stage1.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (model / "stage1.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    assert "not a regular file" in one_line_error(invoke("evaluate", model))


def test_a_mean_model_with_beliefs_of_the_wrong_shape_is_one_line(tmp_path, mean_model_dir):
    from safetensors.numpy import save_file

    from posemachines.files.owned import sha256

    model = tmp_path / "model"
    shutil.copytree(mean_model_dir, model)
    save_file({"mean_beliefs": np.zeros((3, 4), np.float32)}, str(model / "stage1.safetensors"))
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["sha256"]["stage1.safetensors"] = sha256(model / "stage1.safetensors")
    (model / "manifest.json").write_text(json.dumps(manifest))
    assert "mean_beliefs has shape (3, 4)" in one_line_error(invoke("evaluate", model))


# -- images as users have them ------------------------------------------------------------------


def test_a_16_bit_png_keeps_its_tones(tmp_path):
    from posemachines.data import read_image

    grey = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (32, 1))
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image = read_image(tmp_path / "deep.png")
    assert image.shape == (32, 64, 3) and image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 255
    assert 120 <= image[0, 32, 0] <= 135  # the middle stays in the middle, not white


def test_exif_orientation_is_applied(tmp_path):
    from posemachines.data import read_image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape[:2] == (40, 20)  # upright: taller than wide
    assert image[:10].mean() > 200 and image[-10:].mean() < 50  # the band is now on top


def test_a_gif_in_a_folder_is_predicted_not_passed_over(tmp_path, mean_model_dir):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (30, 30), (10, 200, 10)).save(folder / "wave.gif")
    write_image(folder / "a.png")
    res = invoke("predict", mean_model_dir, folder, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())["results"]
    assert sorted(r["image_id"] for r in results) == ["a.png", "wave.gif"]


def test_a_decompression_bomb_is_skipped_and_counted(tmp_path, mean_model_dir, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "a.png", side=20)
    write_image(folder / "b_bomb.png", side=200)
    write_image(folder / "c.png", side=20)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 15000)  # 200 x 200 is over twice this
    res = invoke("predict", mean_model_dir, folder, "--out", tmp_path / "out")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert [r["image_id"] for r in doc["results"]] == ["a.png", "c.png"]
    assert doc["skipped_images"] == ["b_bomb.png"]
    assert "1 unreadable image skipped" in res.stderr


# -- memory that follows the model --------------------------------------------------------------


def test_the_mean_prior_streams_its_crops(monkeypatch):
    import posemachines.backends.mean.trainer as mean
    from posemachines.api import train
    from posemachines.data import load_dataset

    seen = []
    real = mean.crop_dataset

    def spy(dataset, *args, **kwargs):
        seen.append(len(dataset))
        return real(dataset, *args, **kwargs)

    data = load_dataset("synthetic", "train", size=50, seed=0)
    whole = train("mean", data, input_size=64).stages[0].mean_beliefs_
    monkeypatch.setattr(mean, "CHUNK", 16)
    monkeypatch.setattr(mean, "crop_dataset", spy)
    streamed = train("mean", data, input_size=64).stages[0].mean_beliefs_
    assert seen == [16, 16, 16, 2]
    assert np.allclose(whole, streamed, atol=1e-6)


def test_orphaned_joblib_folders_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    from posemachines.parallel import sweep_orphaned_memmaps

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / f"joblib_memmapping_folder_{dead}_abc_def").mkdir()
    (tmp_path / f"joblib_memmapping_folder_{os.getpid()}_abc_def").mkdir()
    (tmp_path / "someone_elses").mkdir()
    assert sweep_orphaned_memmaps(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"joblib_memmapping_folder_{os.getpid()}_abc_def",
        "someone_elses",
    ]


def test_outputs_written_before_records_existed_are_claimed_by_nobody(tmp_path, mean_model_dir):
    """Outputs are known by their folder's record alone: a model or a report of a version
    before the record reads as anyone's files, so even --overwrite leaves them as they are."""
    from posemachines.files.owned import RECORD

    model = tmp_path / "model"
    shutil.copytree(mean_model_dir, model)
    (model / RECORD).unlink(missing_ok=True)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    res = invoke(*MEAN, "--out", model, "--overwrite")
    assert res.exit_code == 1 and "not written by posemachines" in res.output
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    report = tmp_path / "report"
    args = ["compare", mean_model_dir, "--synthetic-size", "4", "--timing-images", "1"]
    assert invoke(*args, "--out", report).exit_code == 0
    (report / RECORD).unlink()
    kept = {p.name: p.read_bytes() for p in report.iterdir()}
    assert "not an earlier `pm compare` output" in one_line_error(invoke(*args, "--out", report))
    assert invoke(*args, "--out", report, "--overwrite").exit_code == 1
    assert {p.name: p.read_bytes() for p in report.iterdir()} == kept


def test_saved_predictions_replace_only_earlier_predictions(tmp_path, mean_model_dir):
    args = ["evaluate", mean_model_dir, "--synthetic-size", "4", "--save-predictions"]
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    assert "not written by posemachines" in one_line_error(invoke(*args, notes))
    assert notes.read_text() == '{"my": "notes"}'
    for _ in range(2):  # written, then refreshed
        assert invoke(*args, tmp_path / "preds.json").exit_code == 0


def test_the_python_api_never_replaces_a_users_files_either(tmp_path, mean_model_dir):
    from posemachines.loading import load_model

    model = load_model(mean_model_dir)
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"my": "project"}')
    with pytest.raises(PoseMachinesError, match="not written by posemachines"):
        model.save(folder)
    assert (folder / "manifest.json").read_text() == '{"my": "project"}'
    model.save(tmp_path / "new")
    model.save(tmp_path / "new")  # its own earlier save
    assert load_model(tmp_path / "new").num_stages == 1
