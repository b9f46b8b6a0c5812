"""Every person in the photo: synthetic-crowd, person boxes from files and from the people
model, multi-person prediction and tracking, COCO's detected-box protocol."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_pm as run
from PIL import Image

from posemachines.core.skeletons import LSP14
from posemachines.data import load_dataset
from posemachines.data.crowd import SyntheticCrowdDataset
from posemachines.errors import PoseMachinesError
from posemachines.people.boxes import box_ap, read_detections
from posemachines.people.multiperson import Person, oks_nms
from posemachines.people.tracking import Tracker

EXAMPLES = Path(__file__).parent.parent / "examples" / "images"


@pytest.fixture(scope="module")
def crowd():
    return load_dataset("synthetic-crowd", "test", size=12)


def test_synthetic_crowd_is_deterministic_and_crowded(crowd):
    again = SyntheticCrowdDataset("test", size=12)
    np.testing.assert_array_equal(crowd.joints, again.joints)
    np.testing.assert_array_equal(crowd[5].image, again[5].image)
    counts = [len(v) for v in crowd.people_by_image().values()]
    assert len(counts) == 12 and max(counts) > 2 and min(counts) >= 1 and max(counts) <= 6
    assert not crowd.labelled.all()  # figures cut by the border
    assert (crowd.labelled & ~crowd.visible).any()  # joints covered by a nearer figure
    other = SyntheticCrowdDataset("train", size=12)
    assert not np.allclose(other.joints[:3], crowd.joints[:3])
    # the crop box is the clipped person box, as COCO's boxes are cropped
    box = crowd.scoring["bbox"][0]
    assert crowd[0].box_side == pytest.approx(1.25 * max(box[2:]))


def test_people_boxes_of_a_single_person_set_enclose_the_joints():
    from posemachines.people.boxes import person_boxes

    data = load_dataset("synthetic", "test", size=5)
    boxes = person_boxes(data, range(5), (160, 160))
    for box, joints in zip(boxes, data.joints):
        assert (joints >= box[:2] - 0.5).all() and (joints <= box[:2] + box[2:]).all()
        assert box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= 160


def test_detections_in_both_forms_and_bad_boxes_counted(tmp_path):
    coco = tmp_path / "det.json"
    coco.write_text(json.dumps([
        {"image_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9, "category_id": 1},
        {"image_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9, "category_id": 3},  # a car
        {"image_id": 1, "bbox": [10, 10, 0, 80], "score": 0.9},  # no width
        {"image_id": 2, "bbox": [10, 10, -4, 8], "score": 0.5},  # negative
        {"image_id": 2, "bbox": [10, 10, 40, 40], "score": 1.7},  # score outside 0-1
        {"file_name": "b.jpg", "bbox": [500, 500, 40, 40], "score": 0.8},  # off the image
        {"image_id": 9, "bbox": [1, 1, 40, 40], "score": 0.8},  # an image not there
    ]))  # fmt: skip
    found = read_detections(coco, min_score=0.1)
    assert len(found.skipped) == 3
    image = np.zeros((100, 100, 3), np.uint8)
    one = found.for_image((1, "a.jpg"), image.shape)
    np.testing.assert_allclose(one, [[10, 10, 50, 80, 0.9]])
    assert len(found.for_image((2, "x.jpg"), image.shape)) == 0
    assert len(found.for_image((3, "b.jpg"), image.shape)) == 0
    line = found.summary()
    assert (
        "4 box(es) left out (2 with no width or height, 1 with a score outside 0-1, 1 "
        "outside the image)" in line
    )
    assert "1 box(es) for 1 image(s) not among the inputs (first: 9)" in line
    per_image = tmp_path / "per.json"
    per_image.write_text(json.dumps({"a.jpg": [[0, 0, 10, 10], [5, 5, 10, 10, 0.2]]}))
    assert read_detections(per_image).boxes["a.jpg"][:, 4].tolist() == [1.0, 0.2]
    old_form = tmp_path / "old.json"
    old_form.write_text(json.dumps({"a.jpg": [0, 0, 10, 10]}))
    assert read_detections(old_form).boxes["a.jpg"].shape == (1, 5)
    for bad in ('{"a.jpg": "box"}', "[1, 2]", '"x"', "{", '[{"bbox": [1, 2, 3, 4]}]'):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(PoseMachinesError):
            read_detections(tmp_path / "bad.json")


def test_box_ap_agrees_with_pycocotools():
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    rng = np.random.default_rng(0)
    truth, found, images, annotations, results = [], [], [], [], []
    for image_id in range(1, 9):
        gt = np.column_stack([rng.uniform(0, 200, (4, 2)), rng.uniform(40, 90, (4, 2))])
        noisy = gt + rng.normal(0, 12, gt.shape)
        noisy[:, 2:] = np.abs(noisy[:, 2:]) + 5
        extra = np.column_stack([rng.uniform(0, 200, (2, 2)), rng.uniform(40, 90, (2, 2))])
        dets = np.column_stack([np.vstack([noisy, extra]), rng.uniform(0.05, 1, 6)])
        truth.append(gt)
        found.append(dets)
        images.append({"id": image_id, "width": 300, "height": 300})
        for b in gt:
            area = float(b[2] * b[3])
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "bbox": b.tolist(), "area": area, "category_id": 1})  # fmt: skip
        results += [{"image_id": image_id, "bbox": d[:4].tolist(), "score": float(d[4]),
                     "category_id": 1} for d in dets]  # fmt: skip
    gt = coco.COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
    gt.createIndex()
    scorer = cocoeval.COCOeval(gt, gt.loadRes(results), "bbox")
    scorer.evaluate()
    scorer.accumulate()
    scorer.summarize()
    ours = box_ap(found, truth)
    assert ours["box_ap50"] == pytest.approx(scorer.stats[1], abs=1e-9)
    assert 0.2 < ours["box_ap50"] < 0.95  # neither trivial nor hopeless


def _person(box, keypoints, score):
    kp = np.asarray(keypoints, float)[None]
    return Person(np.asarray(box, float), 1.0, kp, np.ones((1, len(kp[0]))), score)


def test_oks_nms_drops_a_pose_found_twice_and_keeps_neighbours():
    rng = np.random.default_rng(1)
    pose = rng.uniform(0, 100, (14, 2))
    people = [
        _person([0, 0, 100, 100], pose, 0.8),
        _person([1, 0, 100, 100], pose + 0.5, 0.9),  # the same person, found again
        _person([150, 0, 100, 100], pose + [150, 0], 0.7),  # a neighbour
    ]
    kept = oks_nms(people, LSP14)
    assert [p.score for p in kept] == [0.9, 0.7]


def test_tracker_keeps_each_persons_id_while_they_move():
    tracker = Tracker()
    pose = np.zeros((14, 2))
    ids = []
    for t in range(6):
        frame = [
            _person([10 + 4 * t, 10, 50, 100], pose, 1),
            _person([200 - 3 * t, 20, 60, 90], pose, 1),
        ]
        if t == 3:
            frame.append(_person([400, 0, 40, 40], pose, 1))  # someone new
        ids.append([p.track_id for p in tracker.update(frame[::-1] if t % 2 else frame)])
    assert ids[0] == [0, 1] and ids[1] == [1, 0] and ids[2] == [0, 1]
    assert ids[3] == [2, 1, 0] and ids[5] == [1, 0]


def test_the_group_photo_is_the_generators():
    """examples/images/group.jpg and examples/group_boxes.json are synthetic-crowd test image
    11 at 320 px and its people's boxes."""
    crowd = SyntheticCrowdDataset("test", size=12, image_size=320)
    people = crowd.people_by_image()[11]
    committed = json.loads((EXAMPLES.parent / "group_boxes.json").read_text())["group.jpg"]
    np.testing.assert_allclose(np.array(committed)[:, :4], crowd.scoring["bbox"][people], atol=0.06)
    photo = np.asarray(Image.open(EXAMPLES / "group.jpg"), float)
    assert np.abs(photo - crowd[people[0]].image).mean() < 8  # JPEG's loss only
    other = crowd[crowd.people_by_image()[10][0]].image
    assert np.abs(photo - other).mean() > 30


def test_predict_every_person_of_the_group_photo(mean_model_dir, tmp_path):
    boxes = EXAMPLES.parent / "group_boxes.json"
    out = tmp_path / "pred"
    result = run("predict", mean_model_dir, EXAMPLES, "--boxes", boxes, "--out", out)
    doc = json.loads((out / "keypoints.json").read_text())
    group = [r for r in doc["results"] if r["image_id"] == "group.jpg"]
    assert len(group) >= 3
    for person in group:
        confidence = np.array(person["keypoints"]).reshape(-1, 3)[:, 2]
        assert (confidence > 0).all() and person["score"] > 0 and len(person["bbox"]) == 4
    assert (out / "group.png").is_file()
    assert "boxes for 0" not in result.stderr
    # the figures without boxes have nobody, and the file says nothing about them
    assert {r["image_id"] for r in doc["results"]} == {"group.jpg"}
    # a detector's file with bad boxes: the good ones are used, the rest counted in one line
    bad = json.loads(boxes.read_text())
    bad["group.jpg"] += [[5, 5, 0, 10], [5, 5, -3, 10], [5, 5, 20, 20, 1.5], [900, 900, 9, 9]]
    bad["missing.jpg"] = [[1, 1, 5, 5]]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    result = run("predict", mean_model_dir, EXAMPLES / "group.jpg", "--boxes",
                 tmp_path / "bad.json", "--out", tmp_path / "bad")  # fmt: skip
    assert len(json.loads((tmp_path / "bad" / "keypoints.json").read_text())["results"]) == 4
    lines = [line for line in result.stderr.splitlines() if "bad.json" in line]
    assert len(lines) == 1, result.stderr
    assert (
        "4 box(es) left out (2 with no width or height, 1 with a score outside 0-1, 1 "
        "outside the image); 1 box(es) for 1 image(s) not among the inputs" in lines[0]
    )


def test_predict_tracks_people_through_a_video(mean_model_dir, tmp_path):
    iio = pytest.importorskip("imageio.v3")
    pytest.importorskip("imageio_ffmpeg")
    crowd = SyntheticCrowdDataset("test", size=4)
    image = crowd[crowd.people_by_image()[2][0]].image
    boxes = crowd.scoring["bbox"][crowd.people_by_image()[2]]
    frames, per_frame = [], {}
    for t in range(5):  # the whole picture drifts right, 3 px a frame
        frames.append(np.roll(image, 3 * t, axis=1))
        per_frame[f"clip.mp4#{t:06d}"] = [[b[0] + 3 * t, *b[1:], 0.9] for b in boxes.tolist()]
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, np.stack(frames), fps=5)
    (tmp_path / "boxes.json").write_text(json.dumps(per_frame))
    out = tmp_path / "pred"
    run("predict", mean_model_dir, video, "--boxes", tmp_path / "boxes.json", "--out", out)
    results = json.loads((out / "keypoints.json").read_text())["results"]
    tracks: dict = {}
    for r in results:
        tracks.setdefault(r["track_id"], []).append(r["bbox"][0])
    assert len(tracks) == len(boxes)  # nobody lost, nobody new
    for xs in tracks.values():
        assert len(xs) == 5 and np.allclose(np.diff(xs), 3, atol=0.6)


def _coco_format_set(tmp_path, crowd) -> tuple[Path, Path]:
    """A COCO-format file (LSP joint names) of crowd images, plus one image with nobody."""
    folder = tmp_path / "images"
    folder.mkdir()
    images, annotations = [], []
    for image_id, indices in crowd.people_by_image().items():
        name = f"im{image_id}.png"
        Image.fromarray(crowd[indices[0]].image).save(folder / name)
        images.append({"id": int(image_id) + 100, "file_name": name})
        for i in indices:
            v = np.where(crowd.labelled[i], np.where(crowd.visible[i], 2, 1), 0)
            kp = np.column_stack([np.where(crowd.labelled[i][:, None], crowd.joints[i], 0), v])
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(image_id) + 100, "category_id": 1,
                "keypoints": kp.ravel().tolist(), "num_keypoints": int(crowd.labelled[i].sum()),
                "bbox": crowd.scoring["bbox"][i].tolist(), "area": float(crowd.scoring["area"][i]),
                "iscrowd": 0,
            })  # fmt: skip
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(folder / "empty.png")
    images.append({"id": 7, "file_name": "empty.png"})
    category = {"id": 1, "name": "person", "keypoints": list(LSP14.joints),
                "skeleton": [[a + 1, b + 1] for a, b in LSP14.limb_indices()]}  # fmt: skip
    path = tmp_path / "people.json"
    doc = {"images": images, "annotations": annotations, "categories": [category]}
    path.write_text(json.dumps(doc))
    return path, folder


def test_detected_box_protocol_is_cocoeval_on_the_written_results(tmp_path, crowd):
    coco = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    path, folder = _coco_format_set(tmp_path, crowd.subset(np.arange(20)))
    dataset = ["--dataset", f"coco-format:{path}", "--images", folder]
    model = tmp_path / "mean"
    run("train", "--backend", "mean", *dataset, "--split", "all", "--out", model)
    rng = np.random.default_rng(0)
    detections = []
    for image in json.loads(path.read_text())["annotations"]:
        box = np.array(image["bbox"]) + rng.normal(0, 3, 4)
        detections.append({"image_id": image["image_id"], "bbox": box.tolist(),
                           "score": float(rng.uniform(0.3, 1)), "category_id": 1})  # fmt: skip
    detections.append({"image_id": 7, "bbox": [5, 5, 30, 40], "score": 0.6, "category_id": 1})
    (tmp_path / "det.json").write_text(json.dumps(detections))
    saved = tmp_path / "results.json"
    out = run("evaluate", model, *dataset, "--split", "all", "--boxes", tmp_path / "det.json",
              "--save-predictions", saved, "--json").stdout  # fmt: skip
    ours = json.loads(out)
    results = json.loads(saved.read_text())
    assert ours["images"] == len(set(d["image_id"] for d in detections))
    assert any(r["image_id"] == 7 for r in results)  # the image with nobody was run too
    truth = coco.COCO(str(path))
    scorer = cocoeval.COCOeval(truth, truth.loadRes(str(saved)), "keypoints")
    scorer.params.kpt_oks_sigmas = np.full(14, 0.05)
    scorer.evaluate()
    scorer.accumulate()
    scorer.summarize()
    assert ours["metrics"]["oks_ap"] == pytest.approx(scorer.stats[0], abs=1e-12)
    assert ours["metrics"]["oks_ap50"] == pytest.approx(scorer.stats[1], abs=1e-12)
    assert ours["metrics"]["oks_ar"] == pytest.approx(scorer.stats[5], abs=1e-12)
    # a second run replaces its own results file; a file of the user's is left alone
    (tmp_path / "mine.json").write_text("[]")
    bad = run("evaluate", model, *dataset, "--split", "all", "--boxes", tmp_path / "det.json",
              "--save-predictions", tmp_path / "mine.json", expect_fail=True)  # fmt: skip
    assert "left alone" in bad.stderr and (tmp_path / "mine.json").read_text() == "[]"


def test_detected_boxes_on_a_single_person_set_is_one_line(mean_model_dir, tmp_path):
    (tmp_path / "d.json").write_text("{}")
    result = run("evaluate", mean_model_dir, "--dataset", "synthetic", "--synthetic-size", "4",
                 "--boxes", tmp_path / "d.json", expect_fail=True)  # fmt: skip
    assert "multi-person set" in result.stderr and "Traceback" not in result.stderr


def test_people_model_trains_saves_finds_and_refuses_the_wrong_kind(tmp_path, mean_model_dir):
    pytest.importorskip("torch")
    people = tmp_path / "people"
    run("train", "--backend", "people", "--dataset", "synthetic-crowd", "--synthetic-size",
        "24", "--epochs", "1", "--out", people)  # fmt: skip
    manifest = json.loads((people / "manifest.json").read_text())
    assert manifest["format"] == "posemachines-people"
    out = run("evaluate", people, "--dataset", "synthetic-crowd", "--synthetic-size", "4").stdout
    assert "box AP@0.5" in out
    assert (
        "synthetic-crowd:test" in json.loads((people / "manifest.json").read_text())["evaluations"]
    )
    pred = tmp_path / "pred"
    run("predict", mean_model_dir, EXAMPLES / "group.jpg", "--people", people,
        "--min-box-score", "0", "--out", pred)  # fmt: skip
    assert json.loads((pred / "keypoints.json").read_text())["results"]
    wrong = run("predict", mean_model_dir, EXAMPLES, "--people", mean_model_dir, expect_fail=True)
    assert "not a people model" in wrong.stderr and "Traceback" not in wrong.stderr
    wrong = run("evaluate", people, "--dataset", "synthetic", "--people", people, expect_fail=True)
    for command in ("predict", "inspect", "bench"):
        args = (EXAMPLES,) if command == "predict" else ()
        wrong = run(command, people, *args, expect_fail=True)
        assert "a people model, not a pose model" in wrong.stderr
    weights = people / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    broken = run("predict", mean_model_dir, EXAMPLES, "--people", people, expect_fail=True)
    assert "changed since it was written" in broken.stderr
    stack = run("train", "--stack", "people:1", "--synthetic-size", "4", expect_fail=True)
    assert "people" in stack.stderr


@pytest.mark.slow
def test_people_model_learns_to_find_people():
    """A short run finds far more people than the untrained network, over seeds."""
    torch = pytest.importorskip("torch")
    import posemachines as pm
    from posemachines.backends.people.model import PeopleModel, score_people
    from posemachines.backends.people.network import PeopleNet
    from posemachines.backends.people.settings import PeopleSettings

    train = load_dataset("synthetic-crowd", "train", size=160)
    test = load_dataset("synthetic-crowd", "val", size=30)
    for seed in (0, 1):
        torch.manual_seed(seed)
        untrained = score_people(PeopleModel(PeopleSettings(), PeopleNet().eval()), test)
        trained = score_people(pm.train("people", train, epochs=10, seed=seed), test)
        assert trained["box_ap50"] > untrained["box_ap50"] + 0.15, (seed, trained, untrained)


def test_python_api_gives_every_person_of_each_image(mean_model_dir):
    import posemachines as pm

    model = pm.load_model(mean_model_dir)
    crowd = SyntheticCrowdDataset("test", size=3)
    groups = list(crowd.people_by_image().values())
    images = [crowd[v[0]].image for v in groups]
    boxes = [crowd.scoring["bbox"][v] for v in groups]
    people = pm.predict_people(model, images, boxes=boxes)
    assert [len(p) for p in people] == [len(b) for b in boxes]
    first = people[0][0]
    assert first.keypoints.shape == (1, 14, 2) and first.confidence.shape == (1, 14)
    assert first.score > 0
    with pytest.raises(PoseMachinesError, match="people"):
        pm.predict_people(model, images)


def test_compare_adds_the_detected_box_table_and_says_which_protocol(mean_model_dir, tmp_path):
    crowd = SyntheticCrowdDataset("test", size=4)
    per_image = {}
    for image_id, indices in crowd.people_by_image().items():
        per_image[image_id] = [[*b, 0.8] for b in crowd.scoring["bbox"][indices].tolist()]
    (tmp_path / "d.json").write_text(json.dumps(per_image))
    report = tmp_path / "report"
    run("compare", mean_model_dir, "--dataset", "synthetic-crowd", "--synthetic-size", "4",
        "--boxes", tmp_path / "d.json", "--out", report)  # fmt: skip
    text = (report / "report.md").read_text()
    assert "'given' protocol in the summary" in text
    assert "Every person, on detected boxes" in text and "d.json" in text
    doc = json.loads((report / "results.json").read_text())
    detected = doc["entries"][0]["detected"]
    assert detected["poses"] == len(crowd) and detected["metrics"]["oks_ap"] > 0
