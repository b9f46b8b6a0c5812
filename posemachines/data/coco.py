"""COCO keypoints, and any keypoint set written in COCO's format (a hand, an animal, a custom
body): one sample per annotated person.

A COCO-format file holds ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``,
``keypoints`` as [x, y, v] x K, ``num_keypoints``, ``bbox`` [x, y, w, h], ``area``,
``iscrowd``) and ``categories`` (``keypoints`` names, ``skeleton`` as 1-based index pairs).
People with no labelled keypoint and crowd regions are left out. v = 0 is unlabelled, 1
labelled but hidden, 2 visible. The person box is given (protocol ``given``): the bounding box
centre and 1.25 x its longer side. COCO's own files give the COCO-17 skeleton; any other file
gives a skeleton made from its category (flip pairs from left/right names; see
``skeletons.skeleton_from_keypoints``). OKS AP uses each person's ``area``, and the
category's ``sigmas`` where it has them (COCO's own for COCO-17, else 0.05 each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import PoseMachinesError
from ..skeletons import COCO17, skeleton_from_keypoints
from . import ImageFolderDataset, PoseDataset, read_json

BOX_MARGIN = 1.25
COCO_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)


def coco_available(folder: Path) -> bool:
    return any((Path(folder) / "annotations").glob("person_keypoints_*2017.json"))


def load_coco(folder: Path, split: str = "val", protocol: str | None = None) -> PoseDataset:
    """COCO 2017 under ``folder``: annotations/person_keypoints_{split}2017.json and the
    images in {split}2017/."""
    folder = Path(folder)
    path = folder / "annotations" / f"person_keypoints_{split}2017.json"
    if not path.is_file():
        raise PoseMachinesError(f"COCO split {split!r} not found: {path} is missing")
    return load_coco_format(path, folder / f"{split}2017", split, protocol, name="coco")


def keypoint_folder_splits(folder: Path) -> tuple[str, ...]:
    """The splits of a folder of one's own keypoints: one per keypoints_{split}.json, else
    ("all",) for a single keypoints.json, else none."""
    folder = Path(folder)
    splits = sorted(p.stem.removeprefix("keypoints_") for p in folder.glob("keypoints_*.json"))
    return tuple(splits) or (("all",) if (folder / "keypoints.json").is_file() else ())


def load_keypoint_folder(folder: Path, split: str, protocol: str | None = None) -> PoseDataset:
    """A data-root folder of one's own keypoints: keypoints_{split}.json (else keypoints.json)
    and the images in images/."""
    folder = Path(folder)
    path = folder / f"keypoints_{split}.json"
    if not path.is_file() and not (folder / "keypoints.json").is_file():
        have = ", ".join(keypoint_folder_splits(folder)) or "none"
        raise PoseMachinesError(f"{folder}: no keypoints_{split}.json (splits: {have})")
    path = path if path.is_file() else folder / "keypoints.json"
    return load_coco_format(path, folder / "images", split, protocol, name=folder.name)


def load_coco_format(
    path: Path,
    image_dir: Path,
    split: str = "all",
    protocol: str | None = None,
    name: str | None = None,
) -> PoseDataset:
    """Any COCO-format keypoint file, its images under ``image_dir``."""
    path = Path(path)
    doc = _read(path)
    category = _category(path, doc)
    names = [str(k) for k in category.get("keypoints") or []]
    k = len(names)
    if k == 0:
        raise PoseMachinesError(f"{path}: the category has no 'keypoints' names")
    files = _files(path, doc)
    rows = []
    for n, a in enumerate(doc.get("annotations") or []):
        if (
            not isinstance(a, dict)
            or a.get("iscrowd")
            or a.get("category_id", category.get("id")) != category.get("id")
        ):
            continue
        try:
            kp = np.asarray(a["keypoints"], dtype=np.float64)
            box = np.asarray(a["bbox"], dtype=np.float64)
            file = files[a["image_id"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise PoseMachinesError(
                f"{path}: annotation {n} lacks a field or has a bad one ({exc})"
            ) from None
        if kp.shape != (3 * k,) or box.shape != (4,):
            raise PoseMachinesError(
                f"{path}: annotation {n} has {kp.size} keypoint values, expected {3 * k} "
                f"({k} keypoints x 3)"
            )
        kp = kp.reshape(k, 3)
        labelled = kp[:, 2] > 0
        if not labelled.any():
            continue
        x, y, w, h = box
        given = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5, BOX_MARGIN * max(w, h, 1.0)])
        area = float(a.get("area") or w * h)
        xy = np.where(labelled[:, None], kp[:, :2], 0.0)
        rows.append((file, f"{file}#{a.get('id', n)}", xy, labelled, kp[:, 2] == 2, given, area))
    if not rows:
        raise PoseMachinesError(f"{path}: no person with a labelled keypoint")
    files_, labels, xy, labelled, visible, boxes, areas = (list(x) for x in zip(*rows))
    xy, labelled = np.stack(xy), np.stack(labelled)
    if tuple(names) == COCO_NAMES:
        skeleton = COCO17
    else:
        pairs = [(int(a) - 1, int(b) - 1) for a, b in category.get("skeleton") or []]
        if any(not (0 <= i < k) for pair in pairs for i in pair):
            raise PoseMachinesError(f"{path}: the category's skeleton names a keypoint past {k}")
        skeleton = skeleton_from_keypoints(
            f"custom-{category.get('name', 'keypoints')}-{k}", names, pairs, xy, labelled
        )
    scoring = {"area": np.array(areas)}
    if category.get("sigmas") is not None:
        scoring["oks_sigmas"] = np.asarray(category["sigmas"], dtype=np.float64)
    return ImageFolderDataset(
        name or path.stem,
        image_dir,
        files_,
        names=labels,
        skeleton=skeleton,
        joints=xy,
        visible=np.stack(visible),
        labelled=labelled,
        split=split,
        protocol=protocol or "given",
        source=str(path),
        boxes=np.stack(boxes),
        scoring=scoring,
    )


def _read(path: Path) -> dict:
    return read_json(path, dict, "a COCO-format object with 'annotations'")


def _category(path: Path, doc: dict) -> dict:
    categories = [
        c for c in doc.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")
    ]
    if not categories:
        raise PoseMachinesError(f"{path}: no category with 'keypoints'")
    person = [c for c in categories if c.get("name") == "person"]
    return (person or categories)[0]


def _files(path: Path, doc: dict) -> dict:
    try:
        return {im["id"]: str(im["file_name"]) for im in doc.get("images") or []}
    except (KeyError, TypeError) as exc:
        raise PoseMachinesError(f"{path}: an image lacks {exc}") from None
