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

from .data import Sample
from .data.dataset import person_box, person_from_box
from .evaluation import object_keypoint_similarity, oks_sigmas
from .model import PoseModel
from .skeletons import Skeleton
from .tta import NO_TTA, TestTimeAugmentation

NMS_OKS = 0.9
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
    it above ``threshold``, the kept person's box area as the scale)."""
    sigmas = oks_sigmas(skeleton)
    kept: list[Person] = []
    for person in sorted(people, key=lambda p: -p.score):
        if not any(pose_oks(person, other, sigmas) > threshold for other in kept):
            kept.append(person)
    return kept


def pose_oks(person: Person, other: Person, sigmas: np.ndarray) -> float:
    """OKS of two people's final poses, at the scale of ``other``'s box."""
    area = np.array([other.box[2] * other.box[3]])
    every = np.ones((1, len(sigmas)), bool)
    pair = person.keypoints[-1][None], other.keypoints[-1][None]
    return float(object_keypoint_similarity(*pair, every, area, sigmas)[0])


def poses_for_boxes(
    model: PoseModel,
    images: list[np.ndarray],
    boxes: list[np.ndarray],
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    nms: float | None = NMS_OKS,
) -> list[list[Person]]:
    """The people of each image: a pose for every box (the crops of all images batched),
    scored, and repeats dropped (``nms=None`` keeps every pose)."""
    p = model.skeleton.num_joints
    samples, owners = [], []
    for k, (image, found) in enumerate(zip(images, boxes)):
        for box in found:
            samples.append(make_sample("", image, p, box=box))
            owners.append((k, box))
    people: list[list[Person]] = [[] for _ in images]
    for first in range(0, len(samples), batch_size):
        part = samples[first : first + batch_size]
        keypoints, confidence = model.predict_samples(part, tta)
        for j, (k, box) in enumerate(owners[first : first + len(part)]):
            person = Person(box[:4].copy(), float(box[4]), keypoints[:, j], confidence[:, j])
            person.score = person_score(person.box_score, person.confidence[-1])
            people[k].append(person)
    if nms is not None:
        people = [oks_nms(found, model.skeleton, nms) for found in people]
    return people
