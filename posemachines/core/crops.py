"""Person-centred crops, augmentation, and the affine bookkeeping that maps predictions back.

A crop is described by a 2x3 affine matrix ``A`` taking image coordinates (pixel centres at
integers) to crop coordinates: ``q = A @ [x, y, 1]``. Its inverse maps crop predictions back
to the original image exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from posemachines.core.skeletons import Skeleton


@dataclass(frozen=True)
class Augmentation:
    """Random scale, rotation and flip, as in the CPM paper (scale 0.7-1.3, rotation +-40 deg)."""

    scale: tuple[float, float] = (0.7, 1.3)
    rotation: float = 40.0
    flip: float = 0.5
    shift: float = 0.05  # fraction of the box side

    def draw(self, rng: np.random.Generator) -> tuple[float, float, bool, np.ndarray]:
        """One draw: scale, rotation (degrees), flip, shift (2,) as a fraction of the box."""
        scale, rotation, flip, shift = self.draw_batch(rng, 1)
        return float(scale[0]), float(rotation[0]), bool(flip[0]), shift[0]

    def draw_batch(self, rng: np.random.Generator, n: int):
        """``n`` draws at once: scales (n,), rotations (n,), flips (n,) bool, shifts (n, 2).

        ``draw_batch(rng, 1)`` consumes the generator exactly as ``draw(rng)`` does.
        """
        return (
            rng.uniform(*self.scale, size=n),
            rng.uniform(-self.rotation, self.rotation, size=n),
            rng.random(n) < self.flip,
            rng.uniform(-self.shift, self.shift, size=(n, 2)),
        )


NO_AUGMENTATION = Augmentation(scale=(1.0, 1.0), rotation=0.0, flip=0.0, shift=0.0)


def crop_transform(
    centre: np.ndarray,
    box_side: float,
    out_size: int,
    *,
    scale: float = 1.0,
    rotation: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """2x3 affine matrix taking image coordinates into an ``out_size`` square crop.

    The box of side ``box_side`` around ``centre`` fills the crop; ``scale`` > 1 zooms in,
    ``rotation`` (degrees) turns the person anticlockwise on screen, ``flip`` mirrors it.
    """
    return crop_transforms(
        np.asarray(centre, dtype=np.float64)[None],
        np.array([box_side], dtype=np.float64),
        out_size,
        scales=np.array([scale]),
        rotations=np.array([rotation]),
        flips=np.array([flip]),
    )[0]


def crop_transforms(centres, box_sides, out_size: int, *, scales, rotations, flips) -> np.ndarray:
    """``crop_transform`` for a batch: centres (B, 2), the rest (B,). Returns (B, 2, 3)."""
    s = np.asarray(scales, dtype=np.float64) * out_size / np.asarray(box_sides, dtype=np.float64)
    a = np.deg2rad(np.asarray(rotations, dtype=np.float64))
    c, si = np.cos(a) * s, np.sin(a) * s
    mirror = np.where(np.asarray(flips, dtype=bool), -1.0, 1.0)
    linear = np.stack([np.stack([mirror * c, mirror * si], -1), np.stack([-si, c], -1)], -2)
    half = (out_size - 1) / 2.0
    offset = half - np.einsum("bij,bj->bi", linear, np.asarray(centres, dtype=np.float64))
    return np.concatenate([linear, offset[..., None]], -1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    linear_inv = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear_inv, (-linear_inv @ matrix[:, 2])[:, None]])


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix (or a batch (N, 2, 3)) to points (..., 2)."""
    points = np.asarray(points, dtype=np.float64)
    if matrix.ndim == 3:
        return np.einsum("nij,nkj->nki", matrix[:, :, :2], points) + matrix[:, None, :, 2]
    return points @ matrix[:, :2].T + matrix[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Resample ``image`` into the ``out_size`` square crop given by ``matrix`` (bilinear)."""
    from PIL import Image

    # PIL samples output pixel centres (i + 0.5) at input positions in its own continuous
    # frame, where pixel centres also sit at + 0.5: shift into and out of that frame.
    inv = invert_affine(matrix)
    to_pil = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    from_pil = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    m = to_pil @ np.vstack([inv, [0, 0, 1]]) @ from_pil
    pil = Image.fromarray(image)
    out = pil.transform(
        (out_size, out_size),
        Image.Transform.AFFINE,
        tuple(m[:2].ravel()),
        Image.Resampling.BILINEAR,
    )
    return np.asarray(out)


@dataclass
class Crop:
    """A person-centred crop: image (S, S, 3) uint8, joints in crop coordinates, the transform."""

    image: np.ndarray
    joints: np.ndarray
    labelled: np.ndarray
    visible: np.ndarray
    transform: np.ndarray


class PersonSample(Protocol):
    """What a crop needs of a sample (``data.Sample`` is one): crops sit below the datasets
    and know nothing of them."""

    image: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    labelled: np.ndarray
    centre: np.ndarray
    box_side: float


def person_crop(
    sample: PersonSample,
    size: int,
    skeleton: Skeleton,
    augmentation: Augmentation = NO_AUGMENTATION,
    rng: np.random.Generator | None = None,
) -> Crop:
    """Crop ``sample`` around its person to a ``size`` square, optionally augmented.

    A flip mirrors the image and swaps left and right joints, so joint ``i`` of the result is
    still the skeleton's joint ``i``. Joints pushed outside the crop stay labelled (the target
    for them is simply empty); they still count in losses that weigh labelled joints.
    """
    scale, rotation, flip, shift = (1.0, 0.0, False, np.zeros(2))
    if augmentation != NO_AUGMENTATION:
        if rng is None:
            raise ValueError("augmentation needs an explicit random generator")
        scale, rotation, flip, shift = augmentation.draw(rng)
    centre = sample.centre + shift * sample.box_side
    matrix = crop_transform(
        centre, sample.box_side, size, scale=scale, rotation=rotation, flip=flip
    )
    joints = apply_affine(matrix, sample.joints)
    labelled, visible = sample.labelled, sample.visible
    if flip:
        perm = skeleton.flip_permutation()
        joints, labelled, visible = joints[perm], labelled[perm], visible[perm]
    return Crop(
        warp_image(sample.image, matrix, size), joints, labelled.copy(), visible.copy(), matrix
    )


def to_image_coordinates(keypoints: np.ndarray, transforms: np.ndarray) -> np.ndarray:
    """Map crop keypoints (N, P, 2) back to image coordinates with each crop's (N, 2, 3) matrix.

    Only unflipped crops are mapped back (prediction never flips).
    """
    inverse = np.stack([invert_affine(m) for m in transforms])
    return apply_affine(inverse, keypoints)
