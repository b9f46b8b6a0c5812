"""Person boxes: reading a detector's boxes, checking them, and scoring boxes against the truth.

A box is ``[x, y, w, h, score]`` in image pixels, ``x, y`` the outer corner of its top-left
pixel (COCO's ``bbox``). Every source of people (a detections file, the people model) gives
an ``(n, 5)`` array per image.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posemachines.errors import PoseMachinesError
from posemachines.evaluation.metrics import ranked_ap

PERSON_CATEGORY = 1  # COCO's person
JOINT_BOX_PAD = 0.1  # of the joints' box, around it, where a dataset gives no person box


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (N, 4+) and ``b`` (M, 4+), both [x, y, w, h, ...]: (N, M)."""
    a = np.asarray(a, float).reshape(-1, np.shape(a)[-1])[:, :4]
    b = np.asarray(b, float).reshape(-1, np.shape(b)[-1])[:, :4]
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, :2] + a[:, None, 2:], b[None, :, :2] + b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return inter / np.maximum(union, 1e-12)


def clip_boxes(boxes: np.ndarray, image_shape) -> np.ndarray:
    """Boxes cut to the image (H, W, ...); a box left with no area keeps a width or height 0."""
    h, w = image_shape[:2]
    boxes = np.asarray(boxes, float).reshape(-1, 5).copy()
    x0 = np.clip(boxes[:, 0], -0.5, w - 0.5)
    y0 = np.clip(boxes[:, 1], -0.5, h - 0.5)
    x1 = np.clip(boxes[:, 0] + boxes[:, 2], -0.5, w - 0.5)
    y1 = np.clip(boxes[:, 1] + boxes[:, 3], -0.5, h - 0.5)
    boxes[:, :4] = np.stack([x0, y0, x1 - x0, y1 - y0], 1)
    return boxes


def person_boxes(dataset, indices, image_shape) -> np.ndarray:
    """[x, y, w, h] of the people ``indices``: the dataset's boxes (COCO's bbox), else the
    labelled joints' box, padded (LSP, MPII)."""
    if "bbox" in dataset.scoring:
        return np.asarray(dataset.scoring["bbox"][indices], float).reshape(-1, 4)
    boxes = []
    for i in indices:
        pts = dataset.joints[i][dataset.labelled[i]]
        if len(pts) == 0:
            continue
        lo, hi = pts.min(0), pts.max(0)
        pad = JOINT_BOX_PAD * (hi - lo).max() + 2
        lo = np.maximum(lo - pad + 0.5, 0)
        hi = np.minimum(hi + pad + 0.5, np.array(image_shape[1::-1], float))
        boxes.append(np.concatenate([lo, hi - lo]))
    return np.array(boxes).reshape(-1, 4)


@dataclass
class Detections:
    """The boxes of a detections file by image (id or file name), and what was left out.

    ``for_image`` hands out one image's boxes above ``min_score``, cut to the image; the
    entries never asked for are the file's boxes for images that are not among the inputs.
    """

    boxes: dict
    min_score: float = 0.0
    skipped: list = field(default_factory=list)  # why, for each box left out
    source: str = ""
    _used: set = field(default_factory=set)

    def for_image(self, keys: Iterable, image_shape) -> np.ndarray:
        """(n, 5) boxes of the image known by any of ``keys`` (its id, its file name; an id
        also as the text a JSON object's key makes of it)."""
        keys = [*keys, *(str(k) for k in keys if not isinstance(k, str))]
        found = [k for k in keys if k in self.boxes]
        if not found:
            return np.zeros((0, 5))
        self._used.update(found)
        boxes = self.boxes[found[0]]
        boxes = boxes[boxes[:, 4] >= self.min_score]
        clipped = clip_boxes(boxes, image_shape)
        empty = (clipped[:, 2] <= 0) | (clipped[:, 3] <= 0)
        self.skipped += ["outside the image"] * int(empty.sum())
        return clipped[~empty]

    def find(self, images: list[np.ndarray], keys: list[tuple]) -> list[np.ndarray]:
        """Each image's boxes (a ``multiperson.PeopleSource``)."""
        return [self.for_image(k, image.shape) for image, k in zip(images, keys)]

    def unused(self) -> list:
        return [k for k in self.boxes if k not in self._used]

    def summary(self) -> str | None:
        """One line for what was left out, or None."""
        parts = []
        if self.skipped:
            each = ", ".join(f"{n} {why}" for why, n in Counter(self.skipped).items())
            parts.append(f"{len(self.skipped)} box(es) left out ({each})")
        unused = self.unused()
        if unused:
            n = sum(len(self.boxes[k]) for k in unused)
            parts.append(
                f"{n} box(es) for {len(unused)} image(s) not among the inputs (first: "
                f"{unused[0]!r})"
            )
        return f"{self.source}: " + "; ".join(parts) if parts else None


def read_detections(path: str | Path, min_score: float = 0.0) -> Detections:
    """A detector's person boxes from JSON, in either form:

    - COCO's detection results, as mmdet, detectron2 and YOLO exporters write them: a list of
      ``{"image_id" or "file_name", "bbox": [x, y, w, h], "score", "category_id"}``; boxes of
      other categories than person (1) are passed over;
    - per image: ``{"image.jpg": [[x, y, w, h], ...]}`` (a fifth number is the score, else
      1), or one box per image, ``{"image.jpg": [x, y, w, h]}``.

    A box with no width or height, a score outside 0-1, or numbers that are not finite is left
    out and counted; a file of another shape is one error naming what it holds.
    """
    path = Path(path)
    if not 0 <= min_score <= 1:
        raise PoseMachinesError(f"--min-box-score must be between 0 and 1, got {min_score}")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise PoseMachinesError(f"{path}: cannot read boxes ({type(exc).__name__})") from None
    skipped: list = []
    if isinstance(doc, list):
        entries = _coco_entries(path, doc, skipped)
    elif isinstance(doc, dict):
        entries = _per_image_entries(path, doc)
    else:
        raise PoseMachinesError(f"{path}: expected a list of detections or {{image: boxes}}")
    return _collected(entries, min_score, skipped, str(path))


def detections_from(per_image: dict, min_score: float = 0.0) -> Detections:
    """``Detections`` from {image key: boxes [x, y, w, h(, score)]} given in Python, checked
    as a file's are."""
    doc = {k: np.asarray(v, float).reshape(len(v), -1).tolist() for k, v in per_image.items()}
    return _collected(_per_image_entries("boxes", doc), min_score, [], "boxes")


def _collected(entries, min_score: float, skipped: list, source: str) -> Detections:
    found: dict = {}
    for key, box in entries:
        why = _bad_box(box)
        if why:
            skipped.append(why)
            continue
        found.setdefault(key, []).append(box)
    boxes = {k: np.array(v, dtype=np.float64).reshape(-1, 5) for k, v in found.items()}
    return Detections(boxes, min_score, skipped, source)


def _coco_entries(path: Path, doc: list, skipped: list):
    for n, d in enumerate(doc):
        if not isinstance(d, dict) or "bbox" not in d:
            raise PoseMachinesError(f"{path}: entry {n} is not a detection with a 'bbox'")
        key = d.get("image_id", d.get("file_name"))
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise PoseMachinesError(f"{path}: entry {n} has no 'image_id' or 'file_name'")
        if d.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY:
            continue
        bbox = d["bbox"]
        score = d.get("score", 1.0)
        if not isinstance(bbox, list) or len(bbox) != 4:
            skipped.append("not [x, y, w, h]")
            continue
        yield key, [*bbox, score]


def _per_image_entries(path: Path, doc: dict):
    for name, value in doc.items():
        one = isinstance(value, list) and len(value) == 4
        one = one and not any(isinstance(v, list) for v in value)
        boxes = [value] if one else value
        if not isinstance(boxes, list):
            raise PoseMachinesError(f"{path}: the boxes of {name!r} are not a list")
        for k, box in enumerate(boxes):
            if not isinstance(box, list) or len(box) not in (4, 5):
                raise PoseMachinesError(
                    f"{path}: box {k} of {name!r} is {box!r}; expected [x, y, w, h] or "
                    "[x, y, w, h, score]"
                )
            yield name, box + [1.0] * (5 - len(box))


def _bad_box(box: list) -> str | None:
    """Why a box [x, y, w, h, score] is left out, or None."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        return "not numbers"
    if not np.isfinite(box).all():
        return "not finite"
    if box[2] <= 0 or box[3] <= 0:
        return "with no width or height"
    if not 0 <= box[4] <= 1:
        return "with a score outside 0-1"
    return None


def box_ap(found: list[np.ndarray], truth: list[np.ndarray], iou: float = 0.5) -> dict[str, float]:
    """Box AP at one IoU (COCO's: detections of all images ranked by score, each matched to
    the best unmatched true box of its image, precision interpolated at 101 recall points)
    and the recall of every detection; ``found`` (n, 5) and ``truth`` (m, 4+) per image."""
    scores, hits = [], []
    for boxes, gt in zip(found, truth):
        boxes = boxes[np.argsort(-boxes[:, 4], kind="mergesort")]
        taken = np.zeros(len(gt), bool)
        overlaps = box_iou(boxes, gt) if len(gt) and len(boxes) else np.zeros((len(boxes), 0))
        for row, box in zip(overlaps, boxes):
            row = np.where(taken, -1.0, row)
            best = int(np.argmax(row)) if len(row) else -1
            hit = best >= 0 and row[best] >= iou
            if hit:
                taken[best] = True
            scores.append(box[4])
            hits.append(hit)
    total = sum(len(gt) for gt in truth)
    if total == 0:
        return {"box_ap50": float("nan"), "recall": float("nan")}
    return {"box_ap50": ranked_ap(hits, scores, total), "recall": float(np.sum(hits) / total)}
