"""MPII Human Pose (Andriluka et al., CVPR 2014): one sample per annotated person.

Two annotation forms, found under ``mpii/annotations``:

* the official ``mpii_human_pose_v1_u12_1.mat`` (the ``RELEASE`` struct: ``annolist`` of
  images, each with its people in ``annorect``: head box ``x1, y1, x2, y2``, ``objpos``,
  ``scale``, ``annopoints.point`` with ``id``, ``x``, ``y``, ``is_visible``; ``img_train``
  marks the training images). Only the training people carry joints, so it gives ``train``.
* the JSON split files most methods use, ``mpii_train.json`` / ``mpii_val.json`` (a list of
  people with ``image``, ``center``, ``scale``, ``joints`` (16 x 2) and ``joints_vis``).

Both hold MATLAB's 1-based pixel coordinates (the JSON files were made from the .mat; their
reference readers subtract 1 too), converted here to 0-based. The person box is given
(protocol ``given``): as every MPII method does, the centre moved down by 15 x scale px and a
square of 1.25 x 200 x scale px. The official PCKh normaliser is 0.6 x the head box diagonal;
the JSON files carry no head boxes, so PCKh there uses the head segment and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posemachines.core.skeletons import MPII16
from posemachines.data.dataset import BOX_MARGIN, ImageFolderDataset, PoseDataset
from posemachines.data.reading import read_json, read_matlab
from posemachines.errors import PoseMachinesError

RELEASE_FILE = "mpii_human_pose_v1_u12_1.mat"
P = MPII16.num_joints


def given_box(centre, scale: float) -> np.ndarray:
    """(x, y, side) of the person box from MPII's 0-based centre and scale (height / 200)."""
    return np.array([centre[0], centre[1] + 15 * scale, BOX_MARGIN * 200 * scale])


def mpii_splits(folder: Path) -> tuple[str, ...]:
    """The splits whose annotations are there: train (the JSON file or the release), val."""
    ann = Path(folder) / "annotations"
    train = (ann / RELEASE_FILE).is_file() or (ann / "mpii_train.json").is_file()
    return ("train",) * train + ("val",) * (ann / "mpii_val.json").is_file()


def load_mpii(folder: Path, split: str = "train", protocol: str | None = None) -> PoseDataset:
    folder = Path(folder)
    ann = folder / "annotations"
    path = ann / f"mpii_{split}.json"
    if path.is_file():
        people = _from_json(path)
    elif (ann / RELEASE_FILE).is_file():
        if split != "train":
            raise PoseMachinesError(
                f"{ann / RELEASE_FILE}: the official release annotates only its training "
                f"images (split 'train'); for {split!r}, add annotations/mpii_{split}.json"
            )
        path = ann / RELEASE_FILE
        people = _from_release(path)
    else:
        raise PoseMachinesError(
            f"MPII not found under {folder}: expected annotations/mpii_{split}.json or "
            f"annotations/{RELEASE_FILE}"
        )
    if not people:
        raise PoseMachinesError(f"{path}: no annotated people in split {split!r}")
    files, joints, labelled, visible, boxes, heads = (list(x) for x in zip(*people))
    names = [f"{f}#{k}" for k, f in enumerate(files)]
    scoring = {}
    if all(h is not None for h in heads):
        scoring["head_size"] = np.array(heads, dtype=np.float64)
    return ImageFolderDataset(
        "mpii",
        folder / "images",
        files,
        names=names,
        skeleton=MPII16,
        joints=np.stack(joints),
        visible=np.stack(visible),
        labelled=np.stack(labelled),
        split=split,
        protocol=protocol or "given",
        source=str(path),
        boxes=np.stack(boxes),
        scoring=scoring,
    )


def _from_json(path: Path) -> list:
    doc = read_json(path, list, "a list of annotated people")
    people = []
    for k, a in enumerate(doc):
        try:
            xy = np.asarray(a["joints"], dtype=np.float64)
            vis = np.asarray(a["joints_vis"], dtype=np.float64).astype(bool)
            centre = np.asarray(a["center"], dtype=np.float64) - 1.0
            scale, image = float(a["scale"]), str(a["image"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PoseMachinesError(
                f"{path}: person {k} lacks a field or has a bad one ({exc})"
            ) from None
        if xy.shape != (P, 2) or vis.shape != (P,):
            raise PoseMachinesError(
                f"{path}: person {k} has joints of shape {xy.shape} / {vis.shape}, expected "
                f"({P}, 2) / ({P},)"
            )
        labelled = vis & np.isfinite(xy).all(1)
        xy = np.where(labelled[:, None], xy - 1.0, 0.0)
        people.append((image, xy, labelled, labelled.copy(), given_box(centre, scale), None))
    return people


def _from_release(path: Path) -> list:
    release = read_matlab(path, "RELEASE", structs=True)
    try:
        annolist = np.atleast_1d(release.annolist)
        train = np.atleast_1d(release.img_train).astype(bool)
    except AttributeError as exc:
        raise PoseMachinesError(f"{path}: RELEASE lacks {exc}") from None
    people = []
    for image, is_train in zip(annolist, train):
        if not is_train:
            continue
        name = str(image.image.name)
        for rect in np.atleast_1d(getattr(image, "annorect", [])):
            person = _person(rect)
            if person is not None:
                people.append((name, *person))
    return people


def _person(rect):
    """Joints, flags, box and head size of one ``annorect``; None without joints."""
    points = getattr(getattr(rect, "annopoints", None), "point", None)
    if points is None or isinstance(points, np.ndarray) and points.size == 0:
        return None
    xy, labelled, visible = np.zeros((P, 2)), np.zeros(P, bool), np.zeros(P, bool)
    for point in np.atleast_1d(points):
        j = int(point.id)
        if 0 <= j < P:
            xy[j] = float(point.x) - 1.0, float(point.y) - 1.0
            labelled[j] = True
            flag = getattr(point, "is_visible", 0)
            visible[j] = str(flag).strip() in ("1", "True", "true")
    centre = np.array([float(rect.objpos.x), float(rect.objpos.y)]) - 1.0
    head = 0.6 * np.hypot(float(rect.x2) - float(rect.x1), float(rect.y2) - float(rect.y1))
    return xy, labelled, visible, given_box(centre, float(rect.scale)), head
