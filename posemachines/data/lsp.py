"""Leeds Sports Pose (LSP) and LSP-extended loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posemachines.core.skeletons import LSP14
from posemachines.data.dataset import ImageFolderDataset, PoseDataset
from posemachines.data.reading import read_matlab
from posemachines.errors import PoseMachinesError

LSP_SPLITS = {"train": (0, 1000), "test": (1000, 2000), "all": (0, 2000)}


def _read_joints_mat(path: Path, expected_shape: tuple) -> np.ndarray:
    joints = np.asarray(read_matlab(path, "joints"), dtype=np.float64)
    if joints.ndim != 3 or any(
        e is not None and e != s for e, s in zip(expected_shape, joints.shape)
    ):
        want = "x".join("N" if e is None else str(e) for e in expected_shape)
        raise PoseMachinesError(
            f"{path}: 'joints' has shape {'x'.join(map(str, joints.shape))}, expected {want}"
        )
    return joints


def _check_finite(path: Path, xy: np.ndarray, labelled: np.ndarray, names: list) -> None:
    bad = ~np.isfinite(xy).all(-1) & labelled
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise PoseMachinesError(
            f"{path}: {int(bad.sum())} NaN or infinite joint coordinate(s), the first for "
            f"{names[first]}"
        )


def load_lsp(folder: Path, split: str = "train", protocol: str | None = None) -> PoseDataset:
    """LSP: ``joints.mat`` holds (3, 14, N): x, y (1-based) and a flag that is 1 when occluded.

    Splits: train = images 1-1000, test = 1001-2000 (the standard protocol), all = both.
    Every joint is annotated (occluded ones are estimated by the annotators).
    """
    path = Path(folder) / "joints.mat"
    raw = _read_joints_mat(path, (3, 14, None))
    if split not in LSP_SPLITS:
        raise PoseMachinesError(f"LSP has splits {sorted(LSP_SPLITS)}, not {split!r}")
    lo, hi = LSP_SPLITS[split]
    if raw.shape[2] < hi:
        raise PoseMachinesError(f"{path}: holds {raw.shape[2]} samples, split {split!r} needs {hi}")
    raw = raw[:, :, lo:hi].transpose(2, 1, 0)  # (N, 14, 3)
    xy = raw[..., :2] - 1.0
    labelled = np.ones(xy.shape[:2], dtype=bool)
    names = [f"im{i + 1:04d}.jpg" for i in range(lo, hi)]
    _check_finite(path, xy, labelled, names)
    return ImageFolderDataset(
        "lsp",
        Path(folder) / "images",
        names,
        skeleton=LSP14,
        joints=xy,
        visible=raw[..., 2] == 0,
        labelled=labelled,
        split=split,
        protocol=protocol or "image",
        source=str(folder),
    )


def load_lspet(folder: Path, split: str = "train", protocol: str | None = None) -> PoseDataset:
    """LSP-extended: ``joints.mat`` holds (14, 3, N) with a flag that is 1 for a visible joint.

    All of it is training data. Joints flagged 0 carry no reliable coordinates in this set
    (many lie outside the image), so they count as unlabelled. Its images are large with a
    small person, so the person box comes from the joints ("gt" protocol) by default.
    """
    path = Path(folder) / "joints.mat"
    raw = _read_joints_mat(path, (14, 3, None))
    if split not in ("train", "all"):
        raise PoseMachinesError(f"LSPET has only a 'train' split, not {split!r}")
    raw = raw.transpose(2, 0, 1)  # (N, 14, 3)
    xy = raw[..., :2] - 1.0
    labelled = raw[..., 2] > 0
    names = [f"im{i + 1:05d}.jpg" for i in range(raw.shape[0])]
    _check_finite(path, xy, labelled, names)
    return ImageFolderDataset(
        "lspet",
        Path(folder) / "images",
        names,
        skeleton=LSP14,
        joints=np.nan_to_num(xy),
        visible=labelled.copy(),
        labelled=labelled,
        split=split,
        protocol=protocol or "gt",
        source=str(folder),
    )
