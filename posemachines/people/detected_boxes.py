"""COCO's detected-box protocol: a pose for every person box found in every image of a split
(by a detector's file or the people model), repeats dropped by OKS, each pose scored by its box
and its joints, and the whole scored by pycocotools' ``COCOeval`` as COCO's keypoint
benchmark is: AP, AP50, AP75, AP (medium), AP (large), AR.

Every image of the split is run, also those of a COCO-format file where nobody is labelled
(a person found there is a false positive). An image that cannot be read is skipped and
counted, and its people count as missed.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np

from posemachines.core.batches import batches
from posemachines.core.model import PoseModel
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.data import CorruptImageError, PoseDataset, SkippedImages, read_image
from posemachines.data.dataset import _plain
from posemachines.errors import PoseMachinesError
from posemachines.evaluation.metrics import oks_sigmas
from posemachines.people.multiperson import NMS_OKS, PeopleSource, poses_for_boxes

IMAGES_AT_ONCE = 16
METRICS = ("oks_ap", "oks_ap50", "oks_ap75", "oks_ap_medium", "oks_ap_large", "oks_ar")


@dataclass
class DetectedResult:
    """The scores, the results file's entries, and what was run."""

    metrics: dict
    results: list
    images: int
    people: int
    found: int
    protocol: str
    skipped: SkippedImages = field(default_factory=SkippedImages)

    def to_dict(self) -> dict:
        return {
            "protocol": self.protocol,
            "images": self.images,
            "people": self.people,
            "poses": len(self.results),
            "boxes": self.found,
            "skipped_images": self.skipped.names,
            "metrics": self.metrics,
        }


def _images(dataset: PoseDataset):
    """(image id, keys a detections file may use, how to read it) for every image."""
    for image_id, indices in dataset.people_by_image().items():
        i = indices[0]
        yield image_id, (image_id, dataset.image_key(i)), lambda i=i: dataset[i].image
    folder = getattr(dataset, "image_dir", None)
    for image_id, name in getattr(dataset, "images_without_people", {}).items():
        yield image_id, (image_id, name), lambda name=name: read_image(folder / name)


def predict_dataset_people(
    model: PoseModel,
    dataset: PoseDataset,
    source: PeopleSource,
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    on_bad_image: str = "skip",
    nms: float | None = NMS_OKS,
    progress: bool = False,
):
    """COCO keypoint results for every image, the (height, width) of each image by id, the
    number of boxes found, and the images skipped."""
    from posemachines.progress import progress_bar

    results, shapes, skipped, found = [], {}, SkippedImages(), 0
    todo = list(_images(dataset))
    with progress_bar(total=len(todo), desc="people", unit="img", disable=not progress) as bar:
        for group in batches(todo, IMAGES_AT_ONCE):
            ids, keys, images = [], [], []
            for image_id, names, read in group:
                try:
                    images.append(read())
                except CorruptImageError as exc:
                    if on_bad_image == "stop":
                        raise
                    skipped.add(str(names[1]), str(exc))
                    shapes[image_id] = (0, 0)  # still scored: its people are missed
                    continue
                ids.append(image_id)
                keys.append(names)
                shapes[image_id] = images[-1].shape[:2]
            boxes = source.find(images, keys)
            found += sum(len(b) for b in boxes)
            people = poses_for_boxes(model, images, boxes, tta=tta, batch_size=batch_size, nms=nms)
            for image_id, persons in zip(ids, people):
                results += [p.to_coco(image_id) for p in persons]
            bar.update(len(group))
    return results, shapes, found, skipped


def coco_truth(dataset: PoseDataset, shapes: dict) -> dict:
    """The dataset's people as a COCO keypoint file: its own file where it was read from one
    (crowd regions and all), else made from its annotations."""
    path = getattr(dataset, "coco_file", None)
    if path is not None:
        import json

        return json.loads(path.read_text())
    v = np.where(dataset.labelled, np.where(dataset.visible, 2, 1), 0)
    flat = np.concatenate(
        [np.where(dataset.labelled[..., None], dataset.joints, 0), v[..., None]], 2
    )
    image_ids = [_plain(x) for x in dataset.scoring["image_id"]]
    annotations = [
        {
            "id": n + 1,
            "image_id": image_ids[n],
            "category_id": 1,
            "keypoints": flat[n].ravel().tolist(),
            "num_keypoints": int(dataset.labelled[n].sum()),
            "bbox": [float(b) for b in dataset.scoring["bbox"][n]],
            "area": float(dataset.scoring["area"][n]),
            "iscrowd": 0,
        }
        for n in range(len(dataset))
    ]
    images = [{"id": i, "height": int(h), "width": int(w)} for i, (h, w) in shapes.items()]
    category = {"id": 1, "name": "person", "keypoints": list(dataset.skeleton.joints)}
    category["skeleton"] = [[a + 1, b + 1] for a, b in dataset.skeleton.limb_indices()]
    return {"images": images, "annotations": annotations, "categories": [category]}


def coco_keypoint_scores(dataset: PoseDataset, results: list, shapes: dict) -> dict:
    """AP, AP50, AP75, AP (medium), AP (large) and AR of ``results`` on the images
    ``shapes`` names, by pycocotools' ``COCOeval``."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise PoseMachinesError(
            "the detected-box protocol is scored by pycocotools' COCOeval: pip install "
            "'posemachines[coco]'"
        ) from None
    if not results:
        return dict.fromkeys(METRICS, 0.0)
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        truth = COCO()
        truth.dataset = coco_truth(dataset, shapes)
        truth.createIndex()
        found = truth.loadRes(results)
        scorer = COCOeval(truth, found, "keypoints")
        scorer.params.imgIds = sorted(shapes, key=str)
        scorer.params.kpt_oks_sigmas = oks_sigmas(dataset.skeleton, dataset.scoring)
        scorer.evaluate()
        scorer.accumulate()
        scorer.summarize()
    stats = [float(max(s, 0.0)) for s in scorer.stats]  # -1: no person of that size
    return dict(zip(METRICS, stats[:5] + stats[5:6]))


def evaluate_detected(
    model: PoseModel,
    dataset: PoseDataset,
    source: PeopleSource,
    protocol: str,
    **options,
) -> DetectedResult:
    """Score ``model`` on ``dataset`` through the people ``source`` finds (``protocol`` says
    which, for the reader)."""
    model.check_dataset(dataset)
    if "image_id" not in dataset.scoring or "area" not in dataset.scoring:
        raise PoseMachinesError(
            f"{dataset.describe()} does not say which people share an image; the detected-box "
            "protocol needs a multi-person set (coco, a COCO-format file, synthetic-crowd)"
        )
    results, shapes, found, skipped = predict_dataset_people(model, dataset, source, **options)
    metrics = coco_keypoint_scores(dataset, results, shapes)
    people = len(dataset)
    return DetectedResult(metrics, results, len(shapes), people, found, protocol, skipped)
