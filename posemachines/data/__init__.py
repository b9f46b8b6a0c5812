"""Samples, datasets and where they are found.

Coordinates are (x, y) pixels, 0-based, with pixel centres at integer coordinates.
Loaders of 1-based formats (LSP's MATLAB files) convert on the way in.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PoseMachinesError
from ..skeletons import Skeleton

DATA_ROOT_ENV = "POSEMACHINES_DATA"
PROTOCOLS = ("image", "gt")
# With the "gt" protocol the person box is this many times the longer side of the joints' box;
# on LSP the image-only box is a median 1.34 times the joints' box, so crops of LSPET prepared
# with "gt" look like LSP test crops prepared with "image".
GT_BOX_MARGIN = 1.35


@dataclass
class Sample:
    """One annotated person.

    image : (H, W, 3) uint8.  joints : (P, 2) float64 pixel coordinates, 0-based.
    visible : (P,) bool, not occluded.  labelled : (P,) bool, an annotation exists.
    centre : (2,) person centre; box_side : side of the square person box, in image pixels.
    """

    image: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    labelled: np.ndarray
    centre: np.ndarray
    box_side: float
    name: str = ""


class CorruptImageError(PoseMachinesError):
    pass


def person_box(
    image_shape: Sequence[int], joints: np.ndarray, labelled: np.ndarray, protocol: str
) -> tuple[np.ndarray, float]:
    """Centre and box side of the person under a named protocol.

    ``"image"`` uses the image alone: its centre and its longer side (the honest test-time
    protocol for LSP, where the person fills the image). ``"gt"`` uses the ground-truth joints:
    the centre of their bounding box and ``GT_BOX_MARGIN`` times its longer side; it flatters
    test results and is labelled as such wherever it is used.
    """
    h, w = image_shape[:2]
    if protocol == "image":
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), float(max(h, w))
    if protocol == "gt":
        pts = joints[labelled]
        if len(pts) == 0:
            return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), float(max(h, w))
        lo, hi = pts.min(0), pts.max(0)
        return (lo + hi) / 2.0, float(max(GT_BOX_MARGIN * (hi - lo).max(), 16.0))
    raise PoseMachinesError(f"unknown person-box protocol {protocol!r}; use one of {PROTOCOLS}")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8, raising a one-line error when it is unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise CorruptImageError(f"{path}: image file is missing") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CorruptImageError(f"{path}: cannot decode image ({exc})") from None


class PoseDataset:
    """Annotations of N people held in memory; images are read (or generated) on access.

    Subclasses provide ``_image(i)``. ``joints`` (N, P, 2), ``visible`` and ``labelled`` (N, P)
    are plain arrays, so whole-split statistics need no image reads.
    """

    name = "dataset"

    def __init__(
        self,
        skeleton: Skeleton,
        joints: np.ndarray,
        visible: np.ndarray,
        labelled: np.ndarray,
        names: Sequence[str],
        split: str,
        protocol: str,
        source: str = "",
    ):
        if protocol not in PROTOCOLS:
            raise PoseMachinesError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
        self.skeleton = skeleton
        self.joints = np.asarray(joints, dtype=np.float64)
        self.visible = np.asarray(visible, dtype=bool)
        self.labelled = np.asarray(labelled, dtype=bool)
        self.names = list(names)
        self.split = split
        self.protocol = protocol
        self.source = source
        # Position of each sample in its source (images on disk, generator indices).
        self.ids = np.arange(len(self.joints))

    def __len__(self) -> int:
        return len(self.joints)

    def _image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        image = self._image(i)
        centre, side = person_box(image.shape, self.joints[i], self.labelled[i], self.protocol)
        return Sample(
            image=image,
            joints=self.joints[i].copy(),
            visible=self.visible[i].copy(),
            labelled=self.labelled[i].copy(),
            centre=centre,
            box_side=side,
            name=self.names[i],
        )

    def subset(self, indices: Sequence[int]) -> PoseDataset:
        """A view of some samples (same image source), e.g. a validation split."""
        import copy

        idx = np.asarray(indices, dtype=int)
        sub = copy.copy(self)
        sub.joints, sub.visible, sub.labelled = (
            self.joints[idx],
            self.visible[idx],
            self.labelled[idx],
        )
        sub.names = [self.names[i] for i in idx]
        sub.ids = self.ids[idx]
        return sub

    def describe(self) -> str:
        return f"{self.name}:{self.split} ({len(self)} samples, {self.protocol} protocol)"


class ImageList(PoseDataset):
    """The user's own images (arrays (H, W, 3) or file paths), without annotations: each is
    one person whose box is the whole image."""

    name = "images"

    def __init__(self, images: Sequence, skeleton: Skeleton):
        images = list(images)
        p = skeleton.num_joints
        names = [
            Path(x).name if isinstance(x, (str, Path)) else f"image{i}"
            for i, x in enumerate(images)
        ]
        empty = np.zeros((len(images), p), bool)
        super().__init__(skeleton, np.zeros((len(images), p, 2)), empty, empty, names, "", "image")
        self.images = images

    def _image(self, i: int) -> np.ndarray:
        image = self.images[self.ids[i]]
        if isinstance(image, (str, Path)):
            return read_image(image)
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
            raise PoseMachinesError(
                f"image {i}: expected an (H, W, 3) uint8 array, got {image.dtype} {image.shape}"
            )
        return image[..., :3]

    def describe(self) -> str:
        return f"{len(self)} image(s)"


@dataclass
class SkippedImages:
    """Unreadable images passed over under ``--on-bad-image skip``: counted, named, reported."""

    names: list = field(default_factory=list)
    reasons: list = field(default_factory=list)

    def add(self, name: str, reason: str) -> None:
        self.names.append(name)
        self.reasons.append(reason)

    def __len__(self) -> int:
        return len(self.names)

    def summary(self) -> str:
        """One line for the user, e.g. ``1 unreadable image skipped (im1501.jpg: ...)``."""
        n = len(self)
        first = f"{self.names[0]}: {self.reasons[0]}" if n else ""
        more = f" and {n - 1} more" if n > 1 else ""
        return f"{n} unreadable image{'s' if n != 1 else ''} skipped ({first}{more})"


def iter_samples(
    dataset: PoseDataset,
    indices: Sequence[int] | None = None,
    on_bad_image: str = "skip",
    skipped: SkippedImages | None = None,
) -> Iterator[tuple[int, Sample]]:
    """Yield (index, sample); a corrupt image stops the run (``"stop"``) or is passed over and
    recorded in ``skipped`` (a warning names it when no collector is given)."""
    for i in range(len(dataset)) if indices is None else indices:
        try:
            yield i, dataset[i]
        except CorruptImageError as exc:
            if on_bad_image == "stop":
                raise
            if skipped is None:
                warnings.warn(f"skipping sample {dataset.names[i]}: {exc}", stacklevel=2)
            else:
                skipped.add(dataset.names[i], str(exc))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "posemachines"


def find_data_root(data_root: str | Path | None = None) -> tuple[Path, str]:
    """The data root and where it came from: ``--data-root``, ``$POSEMACHINES_DATA``, cache."""
    if data_root:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise PoseMachinesError(f"data root {root} does not exist or is not a directory")
        return root, "--data-root"
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise PoseMachinesError(f"${DATA_ROOT_ENV}={env} does not exist or is not a directory")
        return root, f"${DATA_ROOT_ENV}"
    return default_cache_dir() / "data", "cache directory"


DATASETS = ("lsp", "lspet", "synthetic")


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | Path | None = None,
    protocol: str | None = None,
    **options,
) -> PoseDataset:
    """Load a dataset split by name. ``options`` go to the synthetic generator (size, seed)."""
    if name == "synthetic":
        from .synthetic import SyntheticDataset

        return SyntheticDataset(split=split, protocol=protocol or "image", **options)
    if name in ("lsp", "lspet"):
        from .lsp import load_lsp, load_lspet

        root, how = find_data_root(data_root)
        folder = root / name
        if not (folder / "joints.mat").is_file():
            raise PoseMachinesError(
                f"dataset {name!r} not found: {folder}/joints.mat is missing (data root from "
                f"{how}); pass --data-root DIR or set ${DATA_ROOT_ENV}"
            )
        loader = load_lsp if name == "lsp" else load_lspet
        return loader(folder, split=split, protocol=protocol)
    raise PoseMachinesError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def dataset_available(name: str, data_root: str | Path | None = None) -> bool:
    if name == "synthetic":
        return True
    try:
        root, _ = find_data_root(data_root)
    except PoseMachinesError:
        return False
    return (root / name / "joints.mat").is_file()


def default_training_dataset(data_root: str | Path | None = None) -> tuple[str, str]:
    """LSP when a data root holds it, else the synthetic set; with the reason, for the user."""
    if dataset_available("lsp", data_root):
        root, how = find_data_root(data_root)
        return "lsp", f"found at {root / 'lsp'} via {how}"
    return "synthetic", "no LSP under the data root; pass --dataset or --data-root to change"
