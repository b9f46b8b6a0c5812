"""Samples and datasets: what every loader returns and every trainer reads."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posemachines.core.skeletons import Skeleton
from posemachines.data.reading import CorruptImageError, read_image
from posemachines.errors import PoseMachinesError

PROTOCOLS = ("image", "gt", "given")
# With the "gt" protocol the person box is this many times the longer side of the joints' box;
# on LSP the image-only box is a median 1.34 times the joints' box, so crops of LSPET prepared
# with "gt" look like LSP test crops prepared with "image".
GT_BOX_MARGIN = 1.35
# A person box [x, y, w, h] (COCO's bbox, a detector's box) becomes a square this many times its
# longer side, around its centre, as top-down COCO methods crop.
BOX_MARGIN = 1.25


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


def person_box(
    image_shape: Sequence[int],
    joints: np.ndarray,
    labelled: np.ndarray,
    protocol: str,
    given: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Centre and box side of the person under a named protocol.

    ``"image"`` uses the image alone: its centre and its longer side (the honest test-time
    protocol for LSP, where the person fills the image). ``"gt"`` uses the ground-truth joints:
    the centre of their bounding box and ``GT_BOX_MARGIN`` times its longer side; it flatters
    test results and is labelled as such wherever it is used. ``"given"`` uses the box the
    dataset gives with each person, ``given`` = (centre x, centre y, side): MPII's centre and
    scale, COCO's bounding box, as every method on those datasets does.
    """
    h, w = image_shape[:2]
    if protocol == "given":
        if given is None:
            raise PoseMachinesError("the 'given' protocol needs a person box from the dataset")
        return np.asarray(given[:2], dtype=np.float64), float(given[2])
    if protocol == "image":
        return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), float(max(h, w))
    if protocol == "gt":
        pts = joints[labelled]
        if len(pts) == 0:
            return np.array([(w - 1) / 2.0, (h - 1) / 2.0]), float(max(h, w))
        lo, hi = pts.min(0), pts.max(0)
        return (lo + hi) / 2.0, float(max(GT_BOX_MARGIN * (hi - lo).max(), 16.0))
    raise PoseMachinesError(f"unknown person-box protocol {protocol!r}; use one of {PROTOCOLS}")


def person_from_box(box) -> np.ndarray:
    """(centre x, centre y, side) of the square crop around a box [x, y, w, h] in 0-based
    pixels, where ``x, y`` is the top-left pixel's outer corner (COCO's convention)."""
    x, y, w, h = (float(v) for v in box)
    return np.array([x + w / 2 - 0.5, y + h / 2 - 0.5, BOX_MARGIN * max(w, h, 1.0)])


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
        boxes: np.ndarray | None = None,
        scoring: dict | None = None,
    ):
        if protocol not in PROTOCOLS:
            raise PoseMachinesError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}")
        if protocol == "given" and boxes is None:
            raise PoseMachinesError(
                f"{source or self.name}: gives no person boxes; use image or gt"
            )
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
        # The person box given with each sample (centre x, centre y, side), for "given".
        self.boxes = None if boxes is None else np.asarray(boxes, dtype=np.float64)
        # Per-sample figures an official scorer needs (MPII head sizes, COCO areas), arrays
        # of length N, and the dataset's own settings (OKS sigmas, the joints FLIC scores).
        self.scoring = dict(scoring or {})
        # Annotations left out as bad under on_bad_annotation="skip" (where and why).
        self.skipped_annotations: list[str] = []

    def __len__(self) -> int:
        return len(self.joints)

    def _image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, i: int) -> Sample:
        image = self._image(i)
        box = None if self.boxes is None else self.boxes[i]
        centre, side = person_box(image.shape, self.joints[i], self.labelled[i], self.protocol, box)
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
        if self.boxes is not None:
            sub.boxes = self.boxes[idx]
        sub.scoring = {
            k: v[idx] if isinstance(v, np.ndarray) and len(v) == len(self.joints) else v
            for k, v in self.scoring.items()
        }
        return sub

    def describe(self) -> str:
        return f"{self.name}:{self.split} ({len(self)} samples, {self.protocol} protocol)"

    def people_by_image(self) -> dict:
        """{image id: [sample index, ...]} in order: the people of each image, by the
        dataset's image ids (``scoring["image_id"]``: COCO, synthetic-crowd), else by image
        file (MPII's people of one photo), else one image per sample."""
        ids = self.scoring.get("image_id")
        groups: dict = {}
        for i in range(len(self)):
            key = self.image_key(i) if ids is None else _plain(ids[i])
            groups.setdefault(key, []).append(i)
        return groups

    def image_key(self, i: int):
        """What tells sample ``i``'s image from the others' (its name, unless images are
        files)."""
        return self.names[i]


def _plain(value):
    """A numpy scalar as the Python int or str it holds (JSON and COCO ids want those)."""
    return value.item() if isinstance(value, np.generic) else value


class ConcatDataset(PoseDataset):
    """Several datasets of one skeleton as one (LSP and LSPET, say); each sample is read, and
    its person box found by its own protocol, by the dataset it comes from."""

    def __init__(self, parts: Sequence[PoseDataset]):
        if not parts:
            raise PoseMachinesError("nothing to concatenate")
        first = parts[0]
        for part in parts[1:]:
            if part.skeleton != first.skeleton:
                raise PoseMachinesError(
                    f"cannot use {first.describe()} and {part.describe()} together: their "
                    f"skeletons differ ({first.skeleton.name}, {part.skeleton.name})"
                )
        self.parts = list(parts)
        self.name = "+".join(p.name for p in parts)
        super().__init__(
            first.skeleton,
            np.concatenate([p.joints for p in parts]),
            np.concatenate([p.visible for p in parts]),
            np.concatenate([p.labelled for p in parts]),
            [f"{p.name}/{n}" for p in parts for n in p.names],
            split="+".join(dict.fromkeys(p.split for p in parts)),
            protocol=first.protocol,
            source=", ".join(p.source or p.name for p in parts),
        )
        self.protocol = "+".join(dict.fromkeys(p.protocol for p in parts))
        self._starts = np.cumsum([0] + [len(p) for p in parts])

    def __getitem__(self, i: int) -> Sample:
        k = int(self.ids[i])  # its position in the concatenation, also in a subset
        part = int(np.searchsorted(self._starts, k, side="right")) - 1
        return self.parts[part][k - int(self._starts[part])]


class ImageFolderDataset(PoseDataset):
    """Annotations in memory, one image file per sample in ``image_dir`` (``files``, named
    after the images unless ``names`` say otherwise: a person of an image with several)."""

    def __init__(self, name: str, image_dir: Path, files: list[str], names=None, **kwargs):
        super().__init__(names=list(files) if names is None else names, **kwargs)
        self.name = name
        self.image_dir = Path(image_dir)
        self.files = list(files)

    def _image(self, i: int) -> np.ndarray:
        return read_image(self.image_dir / self.files[self.ids[i]])

    def image_key(self, i: int):
        return self.files[self.ids[i]]


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
