"""Every person of an image: one pose per person box, as top-down methods and COCO's
detected-box protocol do it.

The boxes come from a ``PeopleSource``: a detections file (``boxes.Detections``) or the
people model (``PeopleFinder``). Each box is cropped as COCO's boxes are (``person_from_box``),
the crops of all images go through the pose model in batches, and then per image: each pose is
scored by its box's score times the mean confidence of its joints above ``CONFIDENT``, and
poses that repeat a better one (OKS above ``NMS_OKS``) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from posemachines.core.batches import batches
from posemachines.core.model import PoseModel
from posemachines.core.skeletons import Skeleton
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.data import Sample
from posemachines.data.dataset import person_box, person_from_box
from posemachines.evaluation.metrics import object_keypoint_similarity, oks_sigmas

NMS_OKS = 0.9
MAX_PEOPLE = 100  # boxes per image at most (COCO scores 20 poses per image)
CONFIDENT = 0.2  # joints above this confidence count in a person's score


@dataclass
class Person:
    """One person found in an image: the box, every stage's keypoints (T, P, 2) in image
    pixels and confidences (T, P), and the score that ranks it (box score x confidence)."""

    box: np.ndarray  # [x, y, w, h]
    box_score: float
    keypoints: np.ndarray
    confidence: np.ndarray
    score: float = 0.0
    track_id: int | None = None
    beliefs: list | None = None  # every stage's (P+1, h, w) over its crop, when kept

    def to_coco(self, image_id) -> dict:
        """COCO's keypoint-results entry (final stage), with the box and, in videos, the id."""
        flat = np.concatenate([self.keypoints[-1], self.confidence[-1][:, None]], 1).ravel()
        entry = {
            "image_id": image_id,
            "category_id": 1,
            "keypoints": [round(float(v), 3) for v in flat],
            "score": round(float(self.score), 5),
            "bbox": [round(float(v), 2) for v in self.box],
            "box_score": round(float(self.box_score), 5),
        }
        if self.track_id is not None:
            entry["track_id"] = self.track_id
        return entry


class PeopleSource(Protocol):
    """Where the people boxes come from: (n, 5) [x, y, w, h, score] per image."""

    def find(self, images: list[np.ndarray], keys: list[tuple]) -> list[np.ndarray]: ...


@dataclass
class PeopleFinder:
    """The people model as a ``PeopleSource``: its boxes above ``min_score``."""

    model: object
    min_score: float = 0.0

    def find(self, images, keys) -> list[np.ndarray]:
        return self.model.detect(images, min_score=self.min_score)


def make_sample(
    name: str, image: np.ndarray, skeleton_size: int, *, centre=None, box_side=None, box=None
) -> Sample:
    """A sample with no annotation, its person box from a detected ``box`` [x, y, w, h]
    (``person_from_box``), else ``centre`` and ``box_side``, else the whole image."""
    p = skeleton_size
    empty = np.zeros((p, 2)), np.zeros(p, bool)
    c, s = person_box(image.shape, empty[0], empty[1], "image")
    if box is not None:
        cx, cy, s = person_from_box(box[:4])
        c = np.array([cx, cy])
    if centre is not None:
        c = np.asarray(centre, float)
    if box_side is not None:
        s = float(box_side)
    return Sample(image, empty[0], empty[1], empty[1], c, s, name)


def square_box(sample: Sample) -> np.ndarray:
    """[x, y, w, h] of the square a sample is cropped from (edge coordinates, as a box)."""
    side = float(sample.box_side)
    x, y = np.asarray(sample.centre, float) + 0.5 - side / 2
    return np.array([x, y, side, side])


def person_score(box_score: float, confidence: np.ndarray) -> float:
    """The box's score times the mean confidence of the joints above ``CONFIDENT`` (0 when
    none is)."""
    sure = confidence[confidence > CONFIDENT]
    return float(box_score * sure.mean()) if len(sure) else 0.0


def oks_nms(people: list[Person], skeleton: Skeleton, threshold: float = NMS_OKS) -> list:
    """The people best-scored first, without those whose pose repeats a kept one (OKS with
    it above ``threshold``, the kept person's box area as the scale). Each kept person is
    compared with all the others at once: n kept people cost n array operations."""
    if len(people) < 2:
        return list(people)
    order = sorted(range(len(people)), key=lambda k: -people[k].score)
    poses = np.stack([people[k].keypoints[-1] for k in order])  # (n, P, 2)
    areas = np.array([people[k].box[2] * people[k].box[3] for k in order], float)
    sigmas, every = oks_sigmas(skeleton), np.ones(poses.shape[:2], bool)
    left = np.ones(len(order), bool)
    kept = []
    for i in range(len(order)):
        if not left[i]:
            continue
        kept.append(people[order[i]])
        rest = np.flatnonzero(left[i + 1 :]) + i + 1
        if len(rest):
            area = np.full(len(rest), areas[i])
            oks = object_keypoint_similarity(poses[rest], poses[i], every[rest], area, sigmas)
            left[rest[oks > threshold]] = False
    return kept


@dataclass
class AtMost:
    """A ``PeopleSource`` that keeps at most ``max_people`` boxes per image, the best-scored,
    and counts those it drops: the work per image stays bounded whatever a detector sends."""

    source: PeopleSource
    max_people: int
    dropped: int = 0
    images: int = 0

    def find(self, images, keys) -> list[np.ndarray]:
        found = []
        for boxes in self.source.find(images, keys):
            if len(boxes) > self.max_people:
                best = np.argsort(-boxes[:, 4], kind="stable")[: self.max_people]
                self.dropped += len(boxes) - self.max_people
                self.images += 1
                boxes = boxes[np.sort(best)]
            found.append(boxes)
        return found

    def summary(self) -> str | None:
        """One line for the source's own left-out boxes and those dropped here, or None."""
        own = getattr(self.source, "summary", None)
        parts = [line for line in [own() if own else None] if line]
        if self.dropped:
            parts.append(
                f"{self.dropped} box(es) beyond the {self.max_people} best-scored per image "
                f"left out ({self.images} image(s))"
            )
        return "; ".join(parts) or None


def poses_for_boxes(
    model: PoseModel,
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    nms: float | None = NMS_OKS,
    keep_beliefs: bool = False,
) -> list[list[Person]]:
    """The people of each image: a pose for every box (the crops of all images batched),
    scored, and repeats dropped (``nms=None`` keeps every pose); ``keep_beliefs``: each
    person keeps the beliefs it was decoded from."""
    p = model.skeleton.num_joints
    samples, owners = [], []
    for k, (image, found) in enumerate(zip(images, boxes)):
        for box in found:
            samples.append(make_sample("", image, p, box=box))
            owners.append((k, box))
    people: list[list[Person]] = [[] for _ in images]
    for part in batches(list(zip(samples, owners)), batch_size):
        keypoints, confidence, beliefs = model.predict_samples([s for s, _ in part], tta)
        for j, (_, (k, box)) in enumerate(part):
            person = Person(box[:4].copy(), float(box[4]), keypoints[:, j], confidence[:, j])
            person.score = person_score(person.box_score, person.confidence[-1])
            if keep_beliefs:
                person.beliefs = [b[j] for b in beliefs]
            people[k].append(person)
    if nms is not None:
        people = [oks_nms(found, model.skeleton, nms) for found in people]
    return people
