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

from posemachines.core.skeletons import COCO17, SKELETONS, skeleton_from_keypoints
from posemachines.data.dataset import ImageFolderDataset, PoseDataset, person_from_box
from posemachines.data.reading import read_json
from posemachines.errors import PoseMachinesError

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


def coco_splits(folder: Path) -> tuple[str, ...]:
    ann = Path(folder) / "annotations"
    return tuple(s for s in ("train", "val") if (ann / f"person_keypoints_{s}2017.json").is_file())


def load_coco(
    folder: Path, split: str = "val", protocol: str | None = None, on_bad_annotation: str = "stop"
) -> PoseDataset:
    """COCO 2017 under ``folder``: annotations/person_keypoints_{split}2017.json and the
    images in {split}2017/."""
    folder = Path(folder)
    path = folder / "annotations" / f"person_keypoints_{split}2017.json"
    if not path.is_file():
        raise PoseMachinesError(f"COCO split {split!r} not found: {path} is missing")
    return load_coco_format(
        path, folder / f"{split}2017", split, protocol, "coco", on_bad_annotation
    )


def keypoint_folder_splits(folder: Path) -> tuple[str, ...]:
    """The splits of a folder of one's own keypoints: one per keypoints_{split}.json, else
    ("all",) for a single keypoints.json, else none."""
    folder = Path(folder)
    splits = sorted(p.stem.removeprefix("keypoints_") for p in folder.glob("keypoints_*.json"))
    return tuple(splits) or (("all",) if (folder / "keypoints.json").is_file() else ())


def load_keypoint_folder(
    folder: Path, split: str, protocol: str | None = None, on_bad_annotation: str = "stop"
) -> PoseDataset:
    """A data-root folder of one's own keypoints: keypoints_{split}.json (else keypoints.json)
    and the images in images/."""
    folder = Path(folder)
    path = folder / f"keypoints_{split}.json"
    if not path.is_file() and not (folder / "keypoints.json").is_file():
        have = ", ".join(keypoint_folder_splits(folder)) or "none"
        raise PoseMachinesError(f"{folder}: no keypoints_{split}.json (splits: {have})")
    path = path if path.is_file() else folder / "keypoints.json"
    return load_coco_format(
        path, folder / "images", split, protocol, folder.name, on_bad_annotation
    )


def load_coco_format(
    path: Path,
    image_dir: Path,
    split: str = "all",
    protocol: str | None = None,
    name: str | None = None,
    on_bad_annotation: str = "stop",
) -> PoseDataset:
    """Any COCO-format keypoint file, its images under ``image_dir``.

    Every field is checked as the file is read: numbers finite, boxes of positive size, image
    ids unique, fields of the documented types. A bad person stops the load with one line
    naming the file, the annotation and the field (``on_bad_annotation="stop"``) or is left
    out and counted in the dataset's ``skipped_annotations`` (``"skip"``).
    """
    path = Path(path)
    doc = _read(path)
    category = _category(path, doc)
    names = category["keypoints"]
    k = len(names)
    bad: list[str] = []

    def refuse(where: str, why: str) -> None:
        if on_bad_annotation == "stop":
            raise PoseMachinesError(
                f"{path}: {where}: {why} (fix the file, or pass --on-bad-annotation skip to "
                "leave such people out)"
            )
        bad.append(f"{where}: {why}")

    files = _files(path, doc, refuse)
    rows = _people(path, doc, k, files, category.get("id"), refuse)
    if not rows:
        raise PoseMachinesError(f"{path}: no person with a labelled keypoint")
    files_, labels, xy, labelled, visible, boxes, areas, bbox, image_ids = (
        list(x) for x in zip(*rows)
    )
    xy, labelled = np.stack(xy), np.stack(labelled)
    known = [s for s in SKELETONS.values() if tuple(s.joints) == tuple(names)]
    if tuple(names) == COCO_NAMES:  # COCO's own 17 joints, as its files spell them
        skeleton = COCO17
    elif known:  # another skeleton the toolkit knows, under its own joint names
        skeleton = known[0]
    else:
        skeleton = skeleton_from_keypoints(
            f"custom-{category.get('name', 'keypoints')}-{k}",
            names,
            category["skeleton"],
            xy,
            labelled,
        )
    scoring = {
        "area": np.array(areas),
        "bbox": np.array(bbox),
        "image_id": np.array(image_ids, dtype=object),
    }
    if category.get("sigmas") is not None:
        scoring["oks_sigmas"] = category["sigmas"]
    dataset = ImageFolderDataset(
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
    dataset.skipped_annotations = bad
    _note_images(dataset, path, files)
    return dataset


def _note_images(dataset: PoseDataset, path: Path, files: dict) -> None:
    """What the detected-box protocol needs besides the people: the file COCOeval reads as
    the truth, and the images of the file where nobody is labelled (a box found there is a
    false positive)."""
    dataset.coco_file = path
    with_people = set(dataset.scoring["image_id"].tolist())
    dataset.images_without_people = {
        i: f for i, f in files.items() if f is not None and i not in with_people
    }


def _people(path: Path, doc: dict, k: int, files: dict, category_id, refuse) -> list:
    """The rows of the file's people; a bad one goes to ``refuse(where, why)``."""
    annotations = doc.get("annotations")
    if not isinstance(annotations, list):
        raise PoseMachinesError(f"{path}: 'annotations' must be a list")
    rows, seen = [], {}
    for n, a in enumerate(annotations):
        where = f"annotations[{n}]" + (
            f" (id {a['id']})" if isinstance(a, dict) and "id" in a else ""
        )
        ident = a.get("id") if isinstance(a, dict) else None
        if isinstance(ident, (int, str)) and not isinstance(ident, bool):
            if ident in seen:
                # A second person under one id would make two predictions of one name.
                refuse(where, f"'id' {ident!r} is also annotations[{seen[ident]}]'s")
                continue
            seen[ident] = n
        try:
            row = _person(a, n, k, files, category_id)
        except _BadField as exc:
            refuse(where, str(exc))
            continue
        if row is not None:
            rows.append(row)
    return rows


class _BadField(Exception):
    """One field of an annotation is missing or wrong; the message names it."""


def _numbers(value, count: int | None, field: str) -> np.ndarray:
    """``value`` as finite floats: a list of ``count`` numbers (JSON's NaN, Infinity, strings
    and booleans refused)."""
    if not isinstance(value, list) or (count is not None and len(value) != count):
        size = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise _BadField(f"'{field}' must be a list of {count} numbers, got {size}")
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: nested lists of several lengths
        array = np.asarray([None])
    if array.ndim == 1 and array.dtype.kind in "iuf" and np.isfinite(array).all():
        return array.astype(np.float64)  # the common case, checked as one array
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise _BadField(f"'{field}'[{i}] is {v!r}, not a finite number")
    return np.asarray(value, dtype=np.float64)


def _person(a, n: int, k: int, files: dict, category_id) -> tuple | None:
    """One annotation as a sample's row, None for what COCO leaves out (crowds, other
    categories, people without a labelled keypoint); ``_BadField`` for a bad field."""
    if not isinstance(a, dict):
        raise _BadField(f"an annotation must be an object, got {type(a).__name__}")
    if a.get("iscrowd") or a.get("category_id", category_id) != category_id:
        return None
    for field in ("keypoints", "bbox", "image_id"):
        if field not in a:
            raise _BadField(f"no '{field}'")
    kp = _numbers(a["keypoints"], 3 * k, "keypoints").reshape(k, 3)
    if not set(kp[:, 2].tolist()) <= {0.0, 1.0, 2.0}:
        raise _BadField("a keypoint's visibility is not 0, 1 or 2")
    x, y, w, h = _numbers(a["bbox"], 4, "bbox")
    if w <= 0 or h <= 0:
        raise _BadField(f"'bbox' has width {w} and height {h}; both must be positive")
    image_id = a["image_id"]
    if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
        raise _BadField(f"'image_id' is {image_id!r}, not an integer or a string")
    if image_id not in files:
        raise _BadField(f"'image_id' {image_id!r} is not among the images")
    area = a.get("area")
    if area is not None and (
        isinstance(area, bool) or not isinstance(area, (int, float)) or not 0 <= area < np.inf
    ):
        raise _BadField(f"'area' is {area!r}, not a finite number of at least 0")
    labelled = kp[:, 2] > 0
    if not labelled.any():
        return None
    file = files[image_id]
    if file is None:
        raise _BadField(f"'image_id' {image_id!r} is given to more than one image")
    given = person_from_box([x, y, w, h])
    xy = np.where(labelled[:, None], kp[:, :2], 0.0)
    label = f"{file}#{a.get('id', n)}"
    return file, label, xy, labelled, kp[:, 2] == 2, given, area or w * h, [x, y, w, h], image_id


def _read(path: Path) -> dict:
    return read_json(path, dict, "a COCO-format object with 'annotations'")


def _category(path: Path, doc: dict) -> dict:
    """The keypoint category (``person`` where there are several), its fields checked:
    ``keypoints`` a list of unique names, ``skeleton`` 1-based index pairs (as 0-based pairs),
    ``sigmas`` one positive number per keypoint (as an array)."""
    found = doc.get("categories")
    if not isinstance(found, list):
        raise PoseMachinesError(f"{path}: 'categories' must be a list")
    categories = [c for c in found if isinstance(c, dict) and c.get("keypoints")]
    if not categories:
        raise PoseMachinesError(f"{path}: no category with 'keypoints'")
    person = [c for c in categories if c.get("name") == "person"]
    category = dict((person or categories)[0])
    where = f"{path}: category {category.get('name', category.get('id'))!r}"
    names = category["keypoints"]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise PoseMachinesError(f"{where}: 'keypoints' must be a list of names")
    k = len(names)
    pairs = category.get("skeleton") or []
    ok = isinstance(pairs, list) and all(
        isinstance(p, list)
        and len(p) == 2
        and all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= k for i in p)
        for p in pairs
    )
    if not ok:
        raise PoseMachinesError(
            f"{where}: 'skeleton' must be a list of [a, b] pairs of keypoint numbers 1..{k}"
        )
    category["skeleton"] = [(a - 1, b - 1) for a, b in pairs]
    if category.get("sigmas") is not None:
        try:
            sigmas = _numbers(category["sigmas"], k, "sigmas")
        except _BadField as exc:
            raise PoseMachinesError(f"{where}: {exc}") from None
        if (sigmas <= 0).any():
            raise PoseMachinesError(f"{where}: 'sigmas' must be positive")
        category["sigmas"] = sigmas
    return category


def _files(path: Path, doc: dict, refuse) -> dict:
    """Image id -> file name; an id given to two images maps to None (its people are
    refused: which image they belong to is unknown)."""
    images = doc.get("images")
    if not isinstance(images, list):
        raise PoseMachinesError(f"{path}: 'images' must be a list")
    files: dict = {}
    for i, im in enumerate(images):
        ok = isinstance(im, dict) and isinstance(im.get("file_name"), str) and im["file_name"]
        image_id = im.get("id") if isinstance(im, dict) else None
        if not ok or not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
            raise PoseMachinesError(
                f"{path}: images[{i}] needs an 'id' (integer or string) and a 'file_name'"
            )
        if image_id in files:
            refuse(f"images[{i}]", f"id {image_id!r} is given to another image too")
            files[image_id] = None
            continue
        files[image_id] = im["file_name"]
    return files
