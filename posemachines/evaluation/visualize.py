"""Drawing skeletons and belief maps on images (used by `pm predict` and the reports)."""

from __future__ import annotations

import numpy as np

from posemachines.core.skeletons import Skeleton

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


def draw_people(image: np.ndarray, people: list, skeleton: Skeleton) -> np.ndarray:
    """A copy of ``image`` with every person's skeleton (final stage) drawn; where there are
    several people or a tracked video, each person's box too, with its id."""
    from PIL import Image, ImageDraw

    out = np.ascontiguousarray(image)
    for person in people:
        out = draw_skeleton(out, person.keypoints[-1], skeleton)
    if len(people) > 1 or any(p.track_id is not None for p in people):
        im = Image.fromarray(out)
        draw = ImageDraw.Draw(im)
        for person in people:
            x, y, w, h = person.box
            draw.rectangle([x, y, x + w, y + h], outline=(90, 220, 120))
            label = f"#{person.track_id} " if person.track_id is not None else ""
            draw.text((x + 2, y + 1), f"{label}{person.score:.2f}", fill=(90, 220, 120))
        out = np.asarray(im)
    return out


def belief_overlay(crop: np.ndarray, beliefs: np.ndarray) -> np.ndarray:
    """The crop dimmed, with the maximum over joint maps (P+1 maps, background dropped) in heat."""
    from matplotlib import colormaps
    from PIL import Image

    heat = np.asarray(beliefs[:-1]).max(0)
    heat = heat / max(float(heat.max()), 1e-6)
    rgb = (colormaps["inferno"](heat)[..., :3] * 255).astype(np.uint8)
    rgb = np.asarray(Image.fromarray(rgb).resize(crop.shape[1::-1], Image.Resampling.BILINEAR))
    return (0.45 * crop + 0.55 * rgb).astype(np.uint8)
