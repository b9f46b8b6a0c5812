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
PROTOCOLS = ("image", "gt", "given")
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


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8, as it is meant to be seen, raising a one-line
    error when it is unreadable.

    EXIF orientation is applied (a phone's portrait photo stands upright); 16-bit and float
    images are scaled to 8 bits, not clipped; a GIF gives its first frame; an image of more
    pixels than Pillow's decompression-bomb limit is refused before its pixels are decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return _rgb8(im)
    except FileNotFoundError:
        raise CorruptImageError(f"{path}: image file is missing") from None
    except Image.DecompressionBombError as exc:
        raise CorruptImageError(f"{path}: refused, too many pixels ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"{path}: cannot decode image ({exc})") from None


def _rgb8(im) -> np.ndarray:
    """A Pillow image as (H, W, 3) uint8; wide integer and float greys are scaled down."""
    if im.mode.startswith("I") or im.mode == "F":
        grey = np.asarray(im, dtype=np.float64)
        top = grey.max(initial=0.0)
        if im.mode.startswith("I;16") or (im.mode == "I" and top > 255):
            scale = 255.0 / 65535.0
        elif im.mode == "F":
            scale = 255.0 / (1.0 if top <= 1.0 else max(top, 255.0))
        else:
            scale = 1.0
        grey = np.clip(np.nan_to_num(grey) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def read_json(path: str | Path, kind: type, what: str):
    """A JSON annotation file whose top level is a ``kind``, or a one-line error."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PoseMachinesError(f"{path}: not readable JSON ({exc})") from None
    except RecursionError:
        raise PoseMachinesError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(doc, kind):
        raise PoseMachinesError(f"{path}: expected {what}")
    return doc


def read_matlab(path: str | Path, variable: str, structs: bool = False):
    """The variable ``variable`` of a MATLAB file, or a one-line error; ``structs`` gives MATLAB
    structs as objects with attributes (and squeezes singleton dimensions)."""
    import scipy.io

    options = {"struct_as_record": False, "squeeze_me": True} if structs else {}
    try:
        mat = scipy.io.loadmat(path, **options)
    except Exception as exc:  # scipy raises several types for a broken file
        raise PoseMachinesError(f"{path}: not a readable MATLAB file ({exc})") from None
    if variable not in mat:
        raise PoseMachinesError(f"{path}: no {variable!r} in the file")
    return mat[variable]


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


DATASETS = ("lsp", "lspet", "mpii", "coco", "flic", "synthetic")
# Each dataset's splits, and the file under its folder that says it is there.
SPLITS = {
    "lsp": ("train", "test"),
    "lspet": ("train",),
    "mpii": ("train", "val"),
    "coco": ("train", "val"),
    "flic": ("train", "test"),
    "synthetic": ("train", "test", "val"),
}
MARKERS = {
    "lsp": "joints.mat",
    "lspet": "joints.mat",
    "mpii": "annotations",
    "coco": "annotations",
    "flic": "examples.mat",
}
COCO_FORMAT = "coco-format:"  # --dataset coco-format:PATH.json, with --images DIR


def _loader(name: str):
    """The loader of a named dataset folder, and whether the folder holds it."""
    from .coco import coco_available, keypoint_folder_splits, load_coco, load_keypoint_folder
    from .flic import flic_available, load_flic
    from .lsp import load_lsp, load_lspet
    from .mpii import load_mpii, mpii_available

    return {
        "lsp": (load_lsp, lambda f: (f / "joints.mat").is_file()),
        "lspet": (load_lspet, lambda f: (f / "joints.mat").is_file()),
        "mpii": (load_mpii, mpii_available),
        "coco": (load_coco, coco_available),
        "flic": (load_flic, flic_available),
    }.get(name, (load_keypoint_folder, lambda f: bool(keypoint_folder_splits(f))))


def dataset_splits(name: str, data_root: str | Path | None = None) -> tuple[str, ...]:
    """The splits of a dataset: a known one's, or those a folder of one's own keypoints has."""
    if name in SPLITS:
        return SPLITS[name]
    from .coco import keypoint_folder_splits

    return keypoint_folder_splits(find_data_root(data_root)[0] / name)


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | Path | None = None,
    protocol: str | None = None,
    images: str | Path | None = None,
    on_bad_annotation: str = "stop",
    **options,
) -> PoseDataset:
    """Load a dataset split by name: a known one (``DATASETS``), a folder of the data root
    holding a COCO-format ``keypoints.json``, or ``coco-format:PATH.json`` with its ``images``
    folder. ``options`` go to the synthetic generator (size, seed).

    A bad annotation (a labelled joint or a person box that is not finite, a box of no size,
    in COCO-format files any field of the wrong type) stops the load with one line naming
    it, or with ``on_bad_annotation="skip"`` is left out and counted in the dataset's
    ``skipped_annotations``."""
    if on_bad_annotation not in ("stop", "skip"):
        raise PoseMachinesError(
            f"on_bad_annotation must be 'stop' or 'skip', not {on_bad_annotation!r}"
        )
    return checked_annotations(
        _load(name, split, data_root, protocol, images, on_bad_annotation, options),
        on_bad_annotation,
    )


def _load(name, split, data_root, protocol, images, on_bad_annotation, options) -> PoseDataset:
    if name == "synthetic":
        from .synthetic import SyntheticDataset

        return SyntheticDataset(split=split, protocol=protocol or "image", **options)
    if name.startswith(COCO_FORMAT):
        from .coco import load_coco_format

        path = Path(name[len(COCO_FORMAT) :]).expanduser()
        if not path.is_file():
            raise PoseMachinesError(f"{path}: no such COCO-format file")
        if images is None:
            raise PoseMachinesError(
                f"--dataset {name} needs --images DIR, the folder of its images"
            )
        return load_coco_format(
            path, Path(images), split, protocol, on_bad_annotation=on_bad_annotation
        )
    root, how = find_data_root(data_root)
    folder = root / name
    load, present = _loader(name)
    if not present(folder):
        known = ", ".join(DATASETS)
        raise PoseMachinesError(
            f"dataset {name!r} not found under {root} (data root from {how}): expected "
            f"{folder}/{MARKERS.get(name, 'keypoints.json')}; known: {known}, or a folder "
            f"with keypoints.json; pass --data-root DIR or set ${DATA_ROOT_ENV}"
        )
    from .coco import load_coco, load_keypoint_folder

    if load in (load_coco, load_keypoint_folder):  # they check each record's fields
        return load(folder, split=split, protocol=protocol, on_bad_annotation=on_bad_annotation)
    return load(folder, split=split, protocol=protocol)


def checked_annotations(dataset: PoseDataset, on_bad_annotation: str = "stop") -> PoseDataset:
    """``dataset`` without samples whose labelled joints or person box are not finite, or
    whose box has no size: refused with one line (``"stop"``) or left out and counted in
    ``skipped_annotations`` (``"skip"``)."""
    bad_joints = ~np.isfinite(dataset.joints).all(-1) & dataset.labelled
    bad = bad_joints.any(1)
    if dataset.boxes is not None:
        boxes = dataset.boxes
        bad |= ~np.isfinite(boxes).all(1) | ~(boxes[:, 2] > 0)
    skipped = list(getattr(dataset, "skipped_annotations", []))
    if not bad.any():
        dataset.skipped_annotations = skipped
        return dataset
    reasons = []
    for i in np.flatnonzero(bad):
        joint = np.flatnonzero(bad_joints[i])
        field = f"joint {dataset.skeleton.joints[joint[0]]!r}" if len(joint) else "person box"
        reasons.append(f"{dataset.names[i]}: its {field} is not a finite position or size")
    if on_bad_annotation == "stop":
        raise PoseMachinesError(
            f"{dataset.source or dataset.name}: {reasons[0]}"
            + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
            + "; fix the annotations, or pass --on-bad-annotation skip to leave them out"
        )
    kept = dataset.subset(np.flatnonzero(~bad))
    kept.skipped_annotations = skipped + reasons
    return kept


def dataset_available(name: str, data_root: str | Path | None = None) -> bool:
    if name == "synthetic":
        return True
    try:
        root, _ = find_data_root(data_root)
    except PoseMachinesError:
        return False
    return _loader(name)[1](root / name)


def default_training_dataset(data_root: str | Path | None = None) -> tuple[str, str]:
    """LSP when a data root holds it, else the synthetic set; with the reason, for the user."""
    if dataset_available("lsp", data_root):
        root, how = find_data_root(data_root)
        return "lsp", f"found at {root / 'lsp'} via {how}"
    return "synthetic", "no LSP under the data root; pass --dataset or --data-root to change"
