"""MPII, COCO, FLIC and COCO-format keypoints: small files in each official format, with
images the tests draw; the loaders' counts, joint orders and 0-/1-based conversions, the
official scorers against hand-computed values (and pycocotools for OKS AP)."""

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from posemachines.core.skeletons import COCO17, FLIC9, MPII16
from posemachines.data import load_dataset
from posemachines.data.coco import COCO_NAMES
from posemachines.errors import PoseMachinesError
from posemachines.evaluation.metrics import object_keypoint_similarity, score_keypoints


def struct_array(dicts):
    """A MATLAB struct array (1 x n) from dicts with the same fields."""
    arr = np.zeros((1, len(dicts)), dtype=[(f, object) for f in dicts[0]])
    for i, d in enumerate(dicts):
        for f, v in d.items():
            arr[0, i][f] = v
    return arr


def draw(path, w=120, h=90, shade=80):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (shade, 120, 200 - shade)).save(path)


# -- MPII ---------------------------------------------------------------------------------------


def mpii_person(k: int) -> dict:
    """A person of the JSON split files: 1-based joints, like the .mat they came from."""
    joints = [[10.0 + j + k, 20.0 + 2 * j] for j in range(16)]
    vis = [1] * 16
    vis[6] = 0  # pelvis not annotated
    return {
        "image": f"{k % 2:09d}.jpg",
        "center": [50.0, 40.0],
        "scale": 0.3,
        "joints": joints,
        "joints_vis": vis,
    }


@pytest.fixture
def mpii_root(tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        draw(root / "mpii" / "images" / f"{i:09d}.jpg")
    ann = root / "mpii" / "annotations"
    ann.mkdir(parents=True)
    (ann / "mpii_train.json").write_text(json.dumps([mpii_person(k) for k in range(3)]))
    (ann / "mpii_val.json").write_text(json.dumps([mpii_person(7)]))
    return root


def test_mpii_json_split_files(mpii_root):
    train = load_dataset("mpii", "train", mpii_root)
    assert len(train) == 3 and train.skeleton is MPII16 and train.protocol == "given"
    assert len(load_dataset("mpii", "val", mpii_root)) == 1
    # 1-based in the file, 0-based here; joint order as MPII's (0 r_ankle ... 15 l_wrist)
    np.testing.assert_allclose(train.joints[1, 0], [10.0 + 0 + 1 - 1, 19.0])
    np.testing.assert_allclose(train.joints[0, 15], [24.0, 49.0])
    assert not train.labelled[0, 6] and train.labelled[0, 7]
    sample = train[2]
    assert sample.image.shape == (90, 120, 3) and train.names[2] == "000000000.jpg#2"
    # the box: centre 0-based, moved down 15 x scale; side 1.25 x 200 x scale
    np.testing.assert_allclose(sample.centre, [49.0, 39.0 + 4.5])
    assert sample.box_side == pytest.approx(75.0)
    assert "head_size" not in train.scoring  # no head boxes in the JSON files


def test_an_evaluation_only_mpii_root_is_found(mpii_root):
    """mpii/annotations holding only mpii_val.json (the common evaluation set-up) is MPII with
    one split, not "not found"."""
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    from posemachines.data import dataset_splits

    (mpii_root / "mpii" / "annotations" / "mpii_train.json").unlink()
    assert dataset_splits("mpii", mpii_root) == ("val",)
    assert len(load_dataset("mpii", "val", mpii_root)) == 1
    listing = CliRunner().invoke(cli, ["data", "--data-root", str(mpii_root)]).output
    line = next(line for line in listing.splitlines() if line.split()[:1] == ["mpii"])
    assert line.endswith("val 1 (train: not there)"), line
    with pytest.raises(PoseMachinesError, match="mpii_train.json"):
        load_dataset("mpii", "train", mpii_root)


def test_mpii_official_release_mat(tmp_path):
    root = tmp_path / "data"
    draw(root / "mpii" / "images" / "a.jpg")
    draw(root / "mpii" / "images" / "b.jpg")
    points = struct_array(
        [
            {"id": 0, "x": 11.0, "y": 21.0, "is_visible": 1},
            {"id": 9, "x": 31.0, "y": 6.0, "is_visible": "0"},
        ]
    )
    rect = {
        "x1": 1.0,
        "y1": 2.0,
        "x2": 31.0,
        "y2": 42.0,
        "objpos": {"x": 21.0, "y": 31.0},
        "scale": 1.5,
        "annopoints": {"point": points},
    }
    rects = struct_array([rect, {**rect, "annopoints": np.zeros((0, 0))}])  # one unannotated
    annolist = struct_array(
        [
            {"image": {"name": "a.jpg"}, "annorect": rects},
            {"image": {"name": "b.jpg"}, "annorect": struct_array([rect])},
        ]
    )
    (root / "mpii" / "annotations").mkdir()
    scipy.io.savemat(
        root / "mpii" / "annotations" / "mpii_human_pose_v1_u12_1.mat",
        {"RELEASE": {"annolist": annolist, "img_train": np.array([1, 0])}},
    )
    train = load_dataset("mpii", "train", root)
    assert len(train) == 1  # b.jpg is a test image, a.jpg's second person has no joints
    np.testing.assert_allclose(train.joints[0, 0], [10.0, 20.0])
    np.testing.assert_allclose(train.joints[0, 9], [30.0, 5.0])
    assert train.labelled[0].sum() == 2 and train.visible[0, 0] and not train.visible[0, 9]
    assert train.scoring["head_size"][0] == pytest.approx(0.6 * 50.0)  # 0.6 x (30, 40)
    with pytest.raises(PoseMachinesError, match="only its training images"):
        load_dataset("mpii", "val", root)
    scipy.io.savemat(root / "mpii" / "annotations" / "mpii_human_pose_v1_u12_1.mat", {"x": 1})
    with pytest.raises(PoseMachinesError, match="no .RELEASE. in the file"):
        load_dataset("mpii", "train", root)


def test_mpii_scorer_pckh_with_head_boxes():
    """PCKh@0.5 with the official normaliser, by hand: two people, head sizes 10 and 20."""
    gt = np.zeros((2, 16, 2))
    labelled = np.ones((2, 16), bool)
    pred = gt.copy()
    pred[0, :, 0] = 4.0  # 4 px off: within 0.5 x 10 for person 0 ...
    pred[1, :, 0] = 12.0  # 12 px off: beyond 0.5 x 20 for person 1
    pred[1, 6, 0] = pred[1, 7, 0] = 1.0  # pelvis and thorax right, left out of the mean
    result = score_keypoints(
        pred, gt, labelled, MPII16, scoring={"head_size": np.array([10.0, 20.0])}
    )
    assert result.metrics["pckh@0.5"] == pytest.approx(18 / 32)
    assert result.metrics["pckh@0.5_mean"] == pytest.approx(14 / 28)
    assert result.metrics["pckh@0.1"] == pytest.approx(2 / 32)  # only the two 1-px ones
    assert any("head box" in n for n in result.notes)


# -- COCO ---------------------------------------------------------------------------------------


def coco_file(path, people, names=None, skeleton=None, category="person"):
    names = names or list(COCO_NAMES)
    images = [
        {"id": i, "file_name": f"{i:012d}.jpg", "width": 120, "height": 90}
        for i in range(len(people))
    ]
    annotations = []
    for i, kp in enumerate(people):
        kp = np.asarray(kp, float)
        annotations.append(
            {
                "id": 100 + i,
                "image_id": i,
                "category_id": 1,
                "iscrowd": 0,
                "keypoints": kp.ravel().tolist(),
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "bbox": [10.0, 5.0, 40.0, 60.0],
                "area": 1600.0,
            }
        )
    annotations.append({**annotations[0], "id": 999, "iscrowd": 1})  # crowd: left out
    doc = {
        "images": images,
        "annotations": annotations,
        "categories": [
            {
                "id": 1,
                "name": category,
                "keypoints": names,
                "skeleton": skeleton or [[16, 14], [14, 12]],
            }
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def coco_people(n, k=17, seed=0):
    rng = np.random.default_rng(seed)
    people = []
    for _ in range(n):
        kp = np.concatenate([rng.uniform(10, 80, (k, 2)), np.full((k, 1), 2.0)], 1)
        kp[1, 2], kp[2, 2] = 0, 1  # one unlabelled, one labelled but hidden
        people.append(kp)
    return people


@pytest.fixture
def coco_root(tmp_path):
    root = tmp_path / "data"
    people = coco_people(4)
    people.append(np.zeros((17, 3)))  # no labelled keypoint: left out
    coco_file(root / "coco" / "annotations" / "person_keypoints_val2017.json", people)
    for i in range(5):
        draw(root / "coco" / "val2017" / f"{i:012d}.jpg")
    return root, people


def test_coco_loader(coco_root):
    root, people = coco_root
    val = load_dataset("coco", "val", root)
    assert len(val) == 4 and val.skeleton is COCO17 and val.protocol == "given"
    np.testing.assert_allclose(val.joints[2, 0], people[2][0, :2])
    assert not val.labelled[0, 1] and val.labelled[0, 2] and not val.visible[0, 2]
    s = val[0]
    np.testing.assert_allclose(s.centre, [29.5, 34.5]) and s.box_side == pytest.approx(75.0)
    np.testing.assert_allclose(val.scoring["area"], 1600.0)
    with pytest.raises(PoseMachinesError, match="person_keypoints_train2017.json is missing"):
        load_dataset("coco", "train", root)


def test_oks_ap_by_hand_and_against_pycocotools(coco_root, tmp_path):
    root, people = coco_root
    val = load_dataset("coco", "val", root)
    rng = np.random.default_rng(1)
    pred = val.joints + rng.normal(0, 1, val.joints.shape) * np.array([1, 2, 4, 12])[:, None, None]
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    result = score_keypoints(
        pred, val.joints, val.labelled, COCO17, scoring=val.scoring, scores=scores
    )
    # by hand for person 0: OKS = mean over labelled joints of exp(-d^2 / (2 area (2 sigma)^2))
    from posemachines.evaluation.metrics import COCO_SIGMAS

    d2 = ((pred[0] - val.joints[0]) ** 2).sum(1)
    by_hand = np.exp(-d2 / (2 * 1600 * (2 * COCO_SIGMAS) ** 2))[val.labelled[0]].mean()
    oks = object_keypoint_similarity(
        pred, val.joints, val.labelled, val.scoring["area"], COCO_SIGMAS
    )
    assert oks[0] == pytest.approx(by_hand)
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    from pycocotools.coco import COCO

    gt = COCO(str(root / "coco" / "annotations" / "person_keypoints_val2017.json"))
    detections = []
    for i in range(4):
        kp = np.concatenate([pred[i], np.ones((17, 1))], 1).ravel().tolist()
        detections.append({"image_id": i, "category_id": 1, "keypoints": kp, "score": scores[i]})
    evaluator = cocoeval.COCOeval(gt, gt.loadRes(detections), "keypoints")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ap, ap50, ap75 = evaluator.stats[:3]
    assert result.metrics["oks_ap"] == pytest.approx(ap, abs=1e-9)
    assert result.metrics["oks_ap50"] == pytest.approx(ap50, abs=1e-9)
    assert result.metrics["oks_ap75"] == pytest.approx(ap75, abs=1e-9)
    assert 0 < ap < 1


def test_any_coco_format_keypoints_make_their_own_skeleton(tmp_path):
    names = ["wrist", "thumb_tip", "index_tip", "left_ear", "right_ear"]
    path = tmp_path / "hands.json"
    coco_file(path, coco_people(3, k=5), names=names, skeleton=[[1, 2], [1, 3]], category="hand")
    for i in range(3):
        draw(tmp_path / "imgs" / f"{i:012d}.jpg")
    data = load_dataset(f"coco-format:{path}", "all", images=tmp_path / "imgs")
    skeleton = data.skeleton
    assert skeleton.name == "custom-hand-5" and skeleton.joints == tuple(names)
    assert skeleton.flip_pairs == (("left_ear", "right_ear"),)
    assert skeleton.limbs == (("wrist", "thumb_tip"), ("wrist", "index_tip"))
    assert len(set(skeleton.torso)) == 2 and data[0].image.shape == (90, 120, 3)
    with pytest.raises(PoseMachinesError, match="needs --images"):
        load_dataset(f"coco-format:{path}", "all")
    bad = json.loads(path.read_text())
    bad["annotations"][0]["keypoints"] = [1, 2, 2]
    path.write_text(json.dumps(bad))
    with pytest.raises(
        PoseMachinesError, match="annotations.0. .id 100.: .keypoints. must be a list of 15"
    ):
        load_dataset(f"coco-format:{path}", "all", images=tmp_path / "imgs")


# -- FLIC ---------------------------------------------------------------------------------------


def flic_example(k, train=True):
    coords = np.full((2, 29), np.nan)
    for row in (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16):
        coords[:, row] = [11.0 + row + k, 21.0 + 2 * row]
    return {
        "filepath": f"frame{k}.jpg",
        "coords": coords,
        "istrain": int(train),
        "istest": int(not train),
        "torsobox": np.array([21.0, 31.0, 61.0, 91.0]),
    }


@pytest.fixture
def flic_root(tmp_path):
    root = tmp_path / "data"
    examples = [flic_example(0), flic_example(1), flic_example(2, train=False)]
    (root / "flic").mkdir(parents=True)
    scipy.io.savemat(root / "flic" / "examples.mat", {"examples": struct_array(examples)})
    for k in range(3):
        draw(root / "flic" / "images" / f"frame{k}.jpg")
    return root


def test_flic_loader_and_its_scorer(flic_root):
    root = flic_root
    train, test = load_dataset("flic", "train", root), load_dataset("flic", "test", root)
    assert len(train) == 2 and len(test) == 1 and train.skeleton is FLIC9
    np.testing.assert_allclose(train.joints[1, 0], [11.0, 20.0])  # l_shoulder, 0-based
    np.testing.assert_allclose(train.joints[0, 7], [19.0, 38.0])  # r_hip is coords row 9
    np.testing.assert_allclose(train.joints[0, 8], [(22 + 23 + 26) / 3, (44 + 46 + 52) / 3])
    assert train.protocol == "gt" and train.boxes[0][2] == pytest.approx(2.5 * 60)
    pred = test.joints.copy()
    pred[0, 1] += 100  # l_elbow far off, the other arm joints right
    result = score_keypoints(pred, test.joints, test.labelled, FLIC9, scoring=test.scoring)
    assert result.metrics["pck@0.2_elbows_wrists"] == pytest.approx(3 / 4)


# -- every backend on every skeleton --------------------------------------------------------------


@pytest.mark.parametrize("skeleton", ["mpii", "coco"])
def test_every_backend_trains_and_scores_on_other_skeletons(
    skeleton, tmp_path, mpii_root, coco_root
):
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    root = mpii_root if skeleton == "mpii" else coco_root[0]
    split = "train" if skeleton == "mpii" else "val"
    data = ["--dataset", skeleton, "--split", split, "--data-root", str(root)]
    for backend, extra in (
        ("mean", []),
        ("forest", ["--stages", "2", "--trees", "3", "--folds", "2"]),
        ("cnn", ["--config", "cpm-tiny", "--epochs", "1", "--device", "cpu"]),
    ):
        out = tmp_path / backend
        res = CliRunner().invoke(
            cli, ["train", "--backend", backend, *data, *extra, "--out", str(out)]
        )
        assert res.exit_code == 0, (backend, res.output)
        res = CliRunner().invoke(cli, ["evaluate", str(out), *data, "--json"])
        assert res.exit_code == 0, (backend, res.output)
        metrics = json.loads(res.stdout)["metrics"]
        assert "pck@0.2" in metrics
        assert ("pckh@0.5_mean" if skeleton == "mpii" else "oks_ap") in metrics


def test_pm_data_lists_each_dataset_and_a_mean_model_gets_each_scorer(
    mpii_root, coco_root, flic_root, tmp_path
):
    """The issue's walk-through: `pm data` lists mpii, coco and flic with their splits and
    counts; a mean model trained on each is scored with the dataset's own metric."""
    from click.testing import CliRunner
    from posemachines.cli.main import cli

    root = str(mpii_root)  # the three fixtures share one data root
    hands = mpii_root / "hands"
    names = ["wrist", "thumb_tip", "index_tip"]
    coco_file(hands / "keypoints_train.json", coco_people(2, k=3), names=names, skeleton=[[1, 2]])
    coco_file(hands / "keypoints_val.json", coco_people(1, k=3), names=names, skeleton=[[1, 2]])
    for i in range(2):
        draw(hands / "images" / f"{i:012d}.jpg")
    listing = CliRunner().invoke(cli, ["data", "--data-root", root])
    assert listing.exit_code == 0, listing.output
    lines = {line.split()[0]: line for line in listing.output.splitlines()[1:]}
    assert lines["mpii"].endswith("train 3, val 1")
    assert lines["coco"].endswith("val 4 (train: not there)")  # no train annotations here
    assert lines["flic"].endswith("train 2, test 1")
    assert lines["hands"].endswith("train 2, val 1")
    for name, split, metric in (
        ("coco", "val", "oks_ap"),
        ("mpii", "val", "pckh@0.5"),
        ("flic", "test", "pck@0.2_elbows_wrists"),
        ("hands", "val", "pck@0.2"),
    ):
        data = ["--dataset", name, "--split", split, "--data-root", root]
        out = str(tmp_path / f"model-{name}")
        res = CliRunner().invoke(cli, ["train", "--backend", "mean", *data, "--out", out])
        assert res.exit_code == 0, (name, res.output)
        res = CliRunner().invoke(cli, ["evaluate", out, *data, "--json"])
        assert res.exit_code == 0, (name, res.output)
        result = json.loads(res.stdout)
        assert metric in result["metrics"] and "pck@0.2" in result["metrics"], (name, result)
        if name == "coco":
            assert any("ground-truth boxes" in note for note in result["notes"]), result

    # An image named in the annotations but missing on disk: skipped and counted, or a stop.
    (coco_root[0] / "coco" / "val2017" / "000000000002.jpg").unlink()
    data = ["--dataset", "coco", "--split", "val", "--data-root", root]
    out = str(tmp_path / "model-coco")
    res = CliRunner().invoke(cli, ["evaluate", out, *data, "--json"])
    assert res.exit_code == 0, res.output
    assert "1 unreadable image(s) skipped" in res.stderr and "000000000002.jpg" in res.stderr
    assert "oks_ap" in json.loads(res.stdout)["metrics"]
    res = CliRunner().invoke(cli, ["evaluate", out, *data, "--on-bad-image", "stop"])
    assert res.exit_code == 1 and "image file is missing" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
