"""Drawing skeletons and belief maps on images (used by `pm predict` and the reports)."""

from __future__ import annotations

import numpy as np

from .skeletons import Skeleton

RIGHT, LEFT, CENTRE = (230, 60, 40), (40, 120, 230), (240, 200, 40)


def _limb_colour(skeleton: Skeleton, a: int, b: int):
    names = skeleton.joints[a] + skeleton.joints[b]
    if names.count("r_") == 2:
        return RIGHT
    if names.count("l_") == 2:
        return LEFT
    return CENTRE


def draw_skeleton(
    image: np.ndarray, keypoints: np.ndarray, skeleton: Skeleton, width: int | None = None
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with the skeleton drawn: right limbs red, left blue.

    Keypoints that are NaN are left out, with the limbs that touch them.
    """
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(im)
    width = width or max(2, round(max(image.shape[:2]) / 100))
    for a, b in skeleton.limb_indices():
        pa, pb = keypoints[a], keypoints[b]
        if np.isfinite(pa).all() and np.isfinite(pb).all():
            draw.line([tuple(pa), tuple(pb)], fill=_limb_colour(skeleton, a, b), width=width)
    r = width + 1
    for x, y in keypoints:
        if np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0))
    return np.asarray(im)


def belief_overlay(crop: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
    """The crop dimmed, with the maximum over joint maps (P+1 maps, background dropped) in heat."""
    from matplotlib import colormaps
    from PIL import Image

    heat = np.asarray(beliefs[:-1]).max(0)
    heat = heat / max(float(heat.max()), 1e-6)
    rgb = (colormaps["inferno"](heat)[..., :3] * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(rgb).resize(crop.shape[1::-1], Image.Resampling.BILINEAR))
    return (0.45 * crop + 0.55 * rgb).astype(np.uint8)
