"""FLIC, Frames Labeled In Cinema (Sapp and Taskar, CVPR 2013): upper bodies in film frames.

``flic/examples.mat`` holds the struct array ``examples``: ``filepath`` (under ``images/``),
``coords`` (2 x 29, MATLAB's 1-based pixels, NaN where not annotated), ``istrain``,
``istest`` and ``torsobox``. Nine joints are kept, as the CPM release and most FLIC methods
score them: shoulders, elbows, wrists, hips and the head (the mean of the eyes and the nose).
The scorer's own metric is PCK@0.2 of the elbows and wrists with the torso (left shoulder to
right hip) as the normaliser. FLIC gives no person box: the default protocol is ``gt``
(flattering, labelled so); ``given`` uses a square about the torso box, 2.5 times its longer
side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posemachines.core.skeletons import FLIC9
from posemachines.data.dataset import ImageFolderDataset, PoseDataset
from posemachines.data.reading import read_matlab
from posemachines.errors import PoseMachinesError

# FLIC's coords rows (0-based) of the nine joints; the head is the mean of the last three.
COORD_ROWS = {
    "l_shoulder": 0,
    "l_elbow": 1,
    "l_wrist": 2,
    "r_shoulder": 3,
    "r_elbow": 4,
    "r_wrist": 5,
    "l_hip": 6,
    "r_hip": 9,
}
HEAD_ROWS = (12, 13, 16)  # left eye, right eye, nose
TORSO_BOX_MARGIN = 2.5


def load_flic(folder: Path, split: str = "train", protocol: str | None = None) -> PoseDataset:
    path = Path(folder) / "examples.mat"
    if split not in ("train", "test"):
        raise PoseMachinesError(f"FLIC has splits train and test, not {split!r}")
    examples = read_matlab(path, "examples", structs=True)
    files, joints, labelled, boxes = [], [], [], []
    for k, ex in enumerate(np.atleast_1d(examples)):
        try:
            chosen = bool(getattr(ex, "istrain" if split == "train" else "istest"))
            coords = np.asarray(ex.coords, dtype=np.float64)
            file = str(ex.filepath)
        except (AttributeError, TypeError, ValueError) as exc:
            raise PoseMachinesError(f"{path}: example {k} lacks a field ({exc})") from None
        if not chosen:
            continue
        if coords.shape != (2, 29):
            raise PoseMachinesError(f"{path}: example {k} has coords {coords.shape}, not (2, 29)")
        xy = coords.T - 1.0  # MATLAB's 1-based pixels
        rows = [xy[COORD_ROWS[j]] for j in FLIC9.joints[:-1]]
        head = xy[list(HEAD_ROWS)]
        known = np.isfinite(head).all(1)
        rows.append(head[known].mean(0) if known.any() else np.full(2, np.nan))
        points = np.stack(rows)
        ok = np.isfinite(points).all(1)
        files.append(file)
        joints.append(np.where(ok[:, None], points, 0.0))
        labelled.append(ok)
        boxes.append(_torso_square(getattr(ex, "torsobox", None)))
    if not files:
        raise PoseMachinesError(f"{path}: no example in split {split!r}")
    given = None if any(b is None for b in boxes) else np.stack(boxes)
    labelled = np.stack(labelled)
    return ImageFolderDataset(
        "flic",
        Path(folder) / "images",
        files,
        names=[f"{f}#{k}" for k, f in enumerate(files)],
        skeleton=FLIC9,
        joints=np.stack(joints),
        visible=labelled.copy(),
        labelled=labelled,
        split=split,
        protocol=protocol or "gt",
        source=str(path),
        boxes=given,
        scoring={"pck_subset": ("elbows_wrists", ["l_elbow", "r_elbow", "l_wrist", "r_wrist"])},
    )


def _torso_square(box) -> np.ndarray | None:
    """(x, y, side) about FLIC's torso box [x1 y1 x2 y2] (1-based), or None without one."""
    try:
        x1, y1, x2, y2 = (float(v) - 1.0 for v in np.asarray(box).ravel()[:4])
    except (TypeError, ValueError):
        return None
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, TORSO_BOX_MARGIN * max(x2 - x1, y2 - y1)])
