"""A compact single-file training cache of person-centred crops (the role LMDB plays for CPM).

The file is a NumPy ``.npz`` (read with ``allow_pickle=False``) holding every crop as JPEG bytes
in one flat array with offsets, the joints in crop coordinates, the flags, the image->crop
transforms, and a JSON header. Crops are padded around the person box (``pad`` times its side)
so that training-time scale and rotation augmentation has real image around the person.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import delayed

from posemachines.core.crops import apply_affine, crop_transform, warp_image
from posemachines.data.dataset import PoseDataset, SkippedImages
from posemachines.data.reading import CorruptImageError
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import atomic_write_bytes
from posemachines.parallel import workers

PACK_FORMAT = "posemachines-pack"


@dataclass
class PackedCrops:
    """Crops in memory: images (N, S, S, 3) uint8, joints (N, P, 2) in crop coordinates,
    labelled/visible (N, P), transforms (N, 2, 3) image->crop; the person box of every crop is
    centred with side ``S / pad``. ``index`` (N,) is each crop's sample in the datasets packed,
    counted across them (unreadable samples have no crop)."""

    images: np.ndarray
    joints: np.ndarray
    labelled: np.ndarray
    visible: np.ndarray
    transforms: np.ndarray
    pad: float
    skeleton: str
    sources: list
    index: np.ndarray | None = None
    skeleton_definition: dict | None = None  # for a joint set not built in

    def __post_init__(self):
        if self.index is None:
            self.index = np.arange(len(self.images))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def side(self) -> int:
        return self.images.shape[1]

    @property
    def box_side(self) -> float:
        return self.side / self.pad

    def subset(self, idx) -> PackedCrops:
        idx = np.asarray(idx)
        return PackedCrops(
            self.images[idx],
            self.joints[idx],
            self.labelled[idx],
            self.visible[idx],
            self.transforms[idx],
            self.pad,
            self.skeleton,
            self.sources,
            self.index[idx],
            self.skeleton_definition,
        )


def _pack_one(dataset: PoseDataset, i: int, side: int, pad: float):
    """The crop of sample i, or the reason it could not be read."""
    try:
        s = dataset[i]
    except CorruptImageError as exc:
        return str(exc)
    m = crop_transform(s.centre, s.box_side * pad, side)
    return warp_image(s.image, m, side), apply_affine(m, s.joints), s.labelled, s.visible, m


def pack_crops(
    datasets,
    side: int = 256,
    pad: float = 1.5,
    n_jobs: int = -1,
    on_bad_image: str = "skip",
    skipped: SkippedImages | None = None,
) -> PackedCrops:
    """Crop every sample of ``datasets`` (all of one skeleton) into memory.

    An unreadable image stops the packing (``on_bad_image="stop"``) or is left out and
    recorded in ``skipped``.
    """
    if side < 16:
        raise PoseMachinesError(f"--side must be at least 16 px, got {side}")
    for d in datasets[1:]:
        if not d.skeleton.matches(datasets[0].skeleton):
            raise PoseMachinesError(
                "cannot pack datasets of different skeletons: "
                f"{datasets[0].skeleton.mismatch(d.skeleton)}"
            )
    parts, index, offset = [], [], 0
    for d in datasets:
        crops = workers(n_jobs, batch_size=32)(
            delayed(_pack_one)(d, i, side, pad) for i in range(len(d))
        )
        for i, (name, crop) in enumerate(zip(d.names, crops)):
            if isinstance(crop, str):
                if on_bad_image == "stop":
                    raise CorruptImageError(crop)
                if skipped is not None:
                    skipped.add(name, crop)
            else:
                parts.append(crop)
                index.append(offset + i)
        offset += len(d)
    if not parts:
        raise PoseMachinesError("no readable images to pack")
    images, joints, labelled, visible, transforms = (np.stack(x) for x in zip(*parts))
    return PackedCrops(
        images,
        joints,
        labelled,
        visible,
        transforms,
        pad,
        datasets[0].skeleton.name,
        [d.describe() for d in datasets],
        np.array(index),
        datasets[0].skeleton.to_dict(),
    )


IMAGE_FORMATS = ("jpeg", "webp")


def save_pack(
    crops: PackedCrops,
    path: str | Path,
    quality: int = 90,
    image_format: str = "jpeg",
    skipped_images: list | None = None,
) -> dict:
    """Write ``crops`` as one file of compressed images (JPEG or WebP), atomically."""
    from PIL import Image

    if not 1 <= quality <= 100:
        raise PoseMachinesError(f"--quality must be within 1-100, got {quality}")
    if image_format not in IMAGE_FORMATS:
        raise PoseMachinesError(f"unknown image format {image_format!r}; use {IMAGE_FORMATS}")
    blobs = []
    for img in crops.images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=image_format.upper(), quality=quality)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    header = {
        "format": PACK_FORMAT,
        "version": 1,
        "side": crops.side,
        "pad": crops.pad,
        "skeleton": crops.skeleton,
        "skeleton_definition": crops.skeleton_definition,
        "sources": crops.sources,
        "quality": quality,
        "image_format": image_format,
        "skipped_images": list(skipped_images or []),
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
        jpeg=np.concatenate(blobs),
        offsets=offsets,
        joints=crops.joints.astype(np.float32),
        labelled=crops.labelled,
        visible=crops.visible,
        transforms=crops.transforms,
    )
    atomic_write_bytes(path, buf.getvalue())
    return {"n": len(crops), "megabytes": buf.tell() / 2**20}


def load_pack(path: str | Path) -> PackedCrops:
    """Read a cache written by ``save_pack``; JPEGs are decoded once, into memory."""
    from PIL import Image

    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(bytes(z["header"]).decode())
            jpeg, offsets = z["jpeg"], z["offsets"]
            arrays = {k: z[k] for k in ("joints", "labelled", "visible", "transforms")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise PoseMachinesError(f"{path}: not a posemachines training cache ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != PACK_FORMAT:
        raise PoseMachinesError(f"{path}: not a posemachines training cache")
    n = len(offsets) - 1
    shapes_ok = n >= 1 and all(len(a) == n for a in arrays.values())
    if not shapes_ok or np.any(np.diff(offsets) <= 0) or offsets[-1] > len(jpeg):
        raise PoseMachinesError(f"{path}: damaged training cache (inconsistent arrays)")

    def decode(a: int, b: int) -> np.ndarray:
        try:
            return np.asarray(Image.open(io.BytesIO(jpeg[a:b].tobytes())).convert("RGB"))
        except OSError as exc:  # e.g. a WebP cache read by a Pillow built without WebP
            raise PoseMachinesError(f"{path}: cannot decode a stored crop ({exc})") from None

    # Pillow decodes without the GIL: threads give every core to a large cache.
    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        images = np.stack(list(pool.map(decode, offsets[:-1], offsets[1:])))
    return PackedCrops(
        images,
        arrays["joints"].astype(np.float64),
        arrays["labelled"],
        arrays["visible"],
        arrays["transforms"],
        float(header["pad"]),
        header["skeleton"],
        header["sources"],
        skeleton_definition=header.get("skeleton_definition"),
    )


def load_named(specs, data_root=None, synthetic_size: int | None = None) -> list[PoseDataset]:
    """The datasets ``NAME[:SPLIT]`` specs name (the train split when none is said)."""
    from posemachines.data.loading import load_dataset

    parts = []
    for spec in specs:
        name, _, split = spec.partition(":")
        options = {"size": synthetic_size} if name.startswith("synthetic") else {}
        parts.append(load_dataset(name, split or "train", data_root, **options))
    return parts


def check_pack_options(side: int, pad: float, quality: int, image_format: str) -> None:
    if side < 16:
        raise PoseMachinesError(f"--side must be at least 16 px, got {side}")
    if not 1.0 <= pad <= 4.0:
        raise PoseMachinesError(f"--pad must be within 1-4, got {pad}")
    if not 1 <= quality <= 100:
        raise PoseMachinesError(f"--quality must be within 1-100, got {quality}")
    if image_format not in IMAGE_FORMATS:
        raise PoseMachinesError(f"unknown image format {image_format!r}; use {IMAGE_FORMATS}")


def pack_datasets(
    datasets,
    out,
    side: int = 256,
    quality: int = 90,
    pad: float = 1.5,
    n_jobs: int = -1,
    image_format: str = "jpeg",
    on_bad_image: str = "skip",
) -> dict:
    """Pack ``datasets`` into the file ``out``; returns its size, count and skipped images."""
    check_pack_options(side, pad, quality, image_format)
    skipped = SkippedImages()
    crops = pack_crops(datasets, side, pad, n_jobs, on_bad_image, skipped)
    info = save_pack(crops, out, quality, image_format, skipped.names)
    return {**info, "skipped": skipped}
