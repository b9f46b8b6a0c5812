"""Test-time augmentation: beliefs averaged over mirrored and rescaled views of each crop.

Every view is a crop of the same person box, mirrored and/or zoomed about the crop centre by
a scale s (s > 1 zooms in, as training's scale augmentation does; the paper's scale search
runs 0.7-1.3). Each view's beliefs are brought back into the plain crop's belief grid (mirror
undone with left and right swapped, zoom undone by bilinear resampling) and averaged cell by
cell over the views that see that cell. Decoding then runs once on the averaged maps, so every
backend gains the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from posemachines.core.crops import crop_transform, warp_image
from posemachines.errors import PoseMachinesError


@dataclass(frozen=True)
class TestTimeAugmentation:
    """Which views to average: the mirrored crop (``flip``) and zoom factors (``scales``)."""

    __test__ = False  # not a pytest class

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    def __post_init__(self):
        scales = tuple(float(s) for s in self.scales)
        if not scales or any(not 0.25 <= s <= 4.0 for s in scales):
            raise PoseMachinesError(f"--scales must be factors within 0.25-4, got {self.scales}")
        object.__setattr__(self, "scales", scales)

    @property
    def is_identity(self) -> bool:
        return not self.flip and self.scales == (1.0,)

    def views(self) -> list[tuple[float, bool]]:
        flips = (False, True) if self.flip else (False,)
        return [(s, f) for s in self.scales for f in flips]

    def to_dict(self) -> dict:
        return {"flip": self.flip, "scales": list(self.scales)}

    def describe(self) -> str:
        """Short label, e.g. ``flip,0.7/1/1.3``."""
        scales = "/".join(f"{s:g}" for s in self.scales)
        return f"flip,{scales}" if self.flip else scales


NO_TTA = TestTimeAugmentation()


def parse_scales(text: str | None) -> tuple[float, ...]:
    """``"0.7,1.0,1.3"`` -> (0.7, 1.0, 1.3); None or empty -> (1.0,)."""
    if not text:
        return (1.0,)
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise PoseMachinesError(
            f"--scales takes comma-separated numbers such as 0.7,1.0,1.3, got {text!r}"
        ) from None


def zoom_matrix(map_size: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resampling (w, w) from a view's belief grid to the plain crop's along one axis,
    and which plain cells (w,) the view sees.

    Cell u of the plain crop sits at cell ``c + scale * (u - c)`` of a view zoomed by
    ``scale`` about the centre ``c = (w - 1) / 2``: belief-grid cells are evenly spaced about
    the crop centre, so the crop's zoom is the grid's zoom.
    """
    w = map_size
    c = (w - 1) / 2.0
    pos = c + scale * (np.arange(w) - c)
    inside = (pos >= -1e-9) & (pos <= w - 1 + 1e-9)
    pos = np.clip(pos, 0, w - 1)
    lo = np.minimum(np.floor(pos).astype(int), w - 2) if w > 1 else np.zeros(w, int)
    frac = pos - lo
    m = np.zeros((w, w))
    rows = np.arange(w)
    m[rows, lo] += 1 - frac
    if w > 1:
        m[rows, lo + 1] += frac
    m[~inside] = 0.0
    return m, inside


def view_to_plain(beliefs: np.ndarray, scale: float, flip: bool, flip_permutation) -> np.ndarray:
    """Beliefs (N, P+1, w, w) of one view in the plain crop's grid (zeros where unseen)."""
    b = np.asarray(beliefs, dtype=np.float32)
    if flip:
        channels = list(flip_permutation) + list(range(len(flip_permutation), b.shape[1]))
        b = b[:, channels, :, ::-1]
    if scale == 1.0:
        return np.ascontiguousarray(b)
    m, _ = zoom_matrix(b.shape[-1], scale)
    m = m.astype(np.float32)
    return np.einsum("yi,ncij,xj->ncyx", m, b, m, optimize=True)


def view_crop(sample, input_size: int, scale: float, flip: bool) -> np.ndarray:
    """The crop of ``sample``'s person box, zoomed by ``scale`` and mirrored if ``flip``."""
    matrix = crop_transform(sample.centre, sample.box_side, input_size, scale=scale, flip=flip)
    return warp_image(sample.image, matrix, input_size)


def averaged_beliefs(
    stage_beliefs: Callable[[np.ndarray], list[np.ndarray]],
    samples: Sequence,
    input_size: int,
    flip_permutation,
    tta: TestTimeAugmentation,
) -> list[np.ndarray]:
    """Every stage's beliefs for ``samples``, averaged over the views of ``tta``.

    ``stage_beliefs`` maps a batch of crops (N, S, S, 3) to each stage's (N, P+1, w, w); the
    result is in the grid of the plain crop ``person_crop(sample, input_size)``.
    """
    sums, seen = None, None
    for scale, flip in tta.views():
        crops = np.stack([view_crop(s, input_size, scale, flip) for s in samples])
        stages = [view_to_plain(b, scale, flip, flip_permutation) for b in stage_beliefs(crops)]
        w = stages[0].shape[-1]
        inside = zoom_matrix(w, scale)[1] if scale != 1.0 else np.ones(w, bool)
        mask = (inside[:, None] & inside[None, :]).astype(np.float32)
        if sums is None:
            sums, seen = [np.zeros_like(b) for b in stages], np.zeros((w, w), np.float32)
        for total, b in zip(sums, stages):
            total += b
        seen += mask
    return [total / np.maximum(seen, 1.0) for total in sums]
