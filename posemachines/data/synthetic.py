"""Procedural articulated figures in the LSP-14 skeleton: the embedded default dataset.

Each image shows one front-facing figure (the person's right side on the image's left) with
limbs drawn as filled sticks of random colour and thickness, on a smooth textured background
cluttered with limb-like distractors, sometimes partly hidden by an occluder, plus pixel noise.
Right limbs are drawn a shade darker than left ones, the cue a real image gives through
shading and overlap, so left and right can be told apart. Sample ``i`` of a split depends only
on ``(seed, split, i)``: deterministic, random-access, and the splits never share a sample.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import draw

from posemachines.core.skeletons import LSP14
from posemachines.data.dataset import PoseDataset
from posemachines.errors import PoseMachinesError

SPLIT_STREAMS = {"train": 1, "test": 2, "val": 3}
DEFAULT_SIZES = {"train": 400, "test": 100, "val": 100}


def _segment(img, p, q, radius, colour):
    """Draw a thick segment (a quad with round caps) in place."""
    d = np.asarray(q, float) - np.asarray(p, float)
    n = np.hypot(*d)
    normal = np.array([-d[1], d[0]]) / max(n, 1e-6) * radius
    corners = np.array([p + normal, q + normal, q - normal, p - normal])
    rr, cc = draw.polygon(corners[:, 1], corners[:, 0], img.shape[:2])
    img[rr, cc] = colour
    for c in (p, q):
        rr, cc = draw.disk((c[1], c[0]), radius, shape=img.shape[:2])
        img[rr, cc] = colour


def _rot(v, degrees):
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def random_pose(rng: np.random.Generator, height: float) -> np.ndarray:
    """LSP-14 joints (14, 2) of a front-facing figure with plausible joint angles, pelvis at 0."""
    j = np.zeros((14, 2))
    up = _rot(np.array([0.0, -1.0]), rng.normal(0, 12))  # image y points down
    right = np.array([-up[1], up[0]])  # towards the image's left = the person's right
    right = -right if right[0] > 0 else right
    torso = 0.30 * height
    neck = up * torso
    sw, hw = 0.11 * height, 0.075 * height
    j[12] = neck
    j[13] = neck + _rot(up, rng.normal(0, 10)) * 0.17 * height
    j[8], j[9] = neck * 0.92 + right * sw, neck * 0.92 - right * sw  # shoulders
    j[2], j[3] = right * hw, -right * hw  # hips
    down = -up
    for side, (sh, el, wr), (hp, kn, an) in (
        (1.0, (8, 7, 6), (2, 1, 0)),
        (-1.0, (9, 10, 11), (3, 4, 5)),
    ):
        # angles grow outwards from the body on each side
        arm = rng.uniform(-20, 170)
        elbow = rng.uniform(0, 140) * rng.choice([-1, 1])
        upper = _rot(down, side * arm)
        j[el] = j[sh] + upper * 0.17 * height
        j[wr] = j[el] + _rot(upper, side * elbow) * 0.15 * height
        thigh = _rot(down, side * rng.uniform(-10, 60))
        j[kn] = j[hp] + thigh * 0.24 * height
        j[an] = j[kn] + _rot(thigh, side * rng.uniform(-40, 90)) * 0.23 * height
    return j


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    noise = rng.normal(size=(size // 8 + 2, size // 8 + 2, 3))
    smooth = ndimage.zoom(noise, (size / noise.shape[0], size / noise.shape[1], 1), order=1)
    base = rng.uniform(60, 200, size=3)
    img = np.clip(base + 35 * smooth[:size, :size], 0, 255)
    for _ in range(rng.integers(4, 10)):  # clutter: blocks and limb-like sticks
        colour = rng.uniform(0, 255, size=3)
        if rng.random() < 0.5:
            p = rng.uniform(0, size, 2)
            _segment(img, p, p + rng.normal(0, size / 5, 2), rng.uniform(2, 6), colour)
        else:
            r0, c0 = rng.uniform(0, size, 2)
            rr, cc = draw.rectangle(
                (r0, c0), extent=rng.uniform(5, size / 4, 2), shape=(size, size)
            )
            img[rr, cc] = colour
    return img


def figure_layout(rng: np.random.Generator, size: int = 160):
    """Where the figure stands: joints (14, 2), visible (14,), and the occluder box or None."""
    height = rng.uniform(0.62, 0.85) * size
    joints = random_pose(rng, height)
    lo, hi = joints.min(0), joints.max(0)
    joints += (size - 1) / 2.0 - (lo + hi) / 2.0 + rng.normal(0, size * 0.03, 2)
    visible = np.ones(14, dtype=bool)
    occluder = None
    if rng.random() < 0.3:  # an occluder over part of the body
        c = joints[rng.integers(14)]
        half = rng.uniform(0.08, 0.18, 2) * size
        x0, y0 = np.clip(c - half, 0, size - 1).astype(int)
        x1, y1 = np.clip(c + half, 0, size - 1).astype(int)
        occluder = (x0, y0, x1, y1)
        inside = (joints >= [x0 - 0.5, y0 - 0.5]) & (joints <= [x1 + 0.5, y1 + 0.5])
        visible &= ~inside.all(1)
    return joints, visible, occluder, height


def render_figure(layout, rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """Draw a figure laid out by ``figure_layout`` with random looks: (size, size, 3) uint8."""
    joints, _, occluder, height = layout
    img = background(rng, size)
    draw_figure(img, joints, height, rng)
    if occluder is not None:
        x0, y0, x1, y1 = occluder
        img[y0 : y1 + 1, x0 : x1 + 1] = rng.uniform(0, 255, 3)
    return add_noise(img, rng)


def draw_figure(img: np.ndarray, joints: np.ndarray, height: float, rng) -> None:
    """Draw one figure (joints (14, 2), ``height`` pixels tall) in place, with random looks."""
    thick = rng.uniform(0.035, 0.055) * height
    cloth, legs, skin = (rng.uniform(30, 230, size=3) for _ in range(3))
    shade = rng.uniform(0.55, 0.75)  # right limbs are darker
    for a, b, colour in ((1, 0, legs * shade), (2, 1, legs * shade), (3, 4, legs), (4, 5, legs)):
        _segment(img, joints[a], joints[b], thick * 1.2, colour)
    torso = np.array([joints[8], joints[9], joints[3], joints[2]])
    rr, cc = draw.polygon(torso[:, 1], torso[:, 0], img.shape[:2])
    img[rr, cc] = cloth
    _segment(img, joints[12], joints[13], thick * 0.6, skin)
    head = 0.4 * joints[12] + 0.6 * joints[13]
    rr, cc = draw.ellipse(head[1], head[0], thick * 1.9, thick * 1.6, shape=img.shape[:2])
    img[rr, cc] = skin
    arms = ((8, 7, cloth * shade), (7, 6, skin * shade), (9, 10, cloth), (10, 11, skin))
    for a, b, colour in arms:
        _segment(img, joints[a], joints[b], thick, colour)


def add_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel noise, and the float canvas as uint8."""
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def split_size(name: str, split: str, size: int | None, defaults: dict) -> int:
    """The number of images of a generated split: ``size``, else the split's default."""
    if split not in defaults:
        raise PoseMachinesError(f"{name} has splits {sorted(defaults)}, not {split!r}")
    n = defaults[split] if size is None else int(size)
    if n < 1:
        raise PoseMachinesError(f"{name} split size must be at least 1, got {n}")
    return n


class SyntheticDataset(PoseDataset):
    """``size`` synthetic figures of one split; image ``i`` is generated on access."""

    name = "synthetic"

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        seed: int = 0,
        image_size: int = 160,
        protocol: str = "image",
    ):
        n = split_size(self.name, split, size, DEFAULT_SIZES)
        self.seed, self.image_size, self._stream = int(seed), int(image_size), SPLIT_STREAMS[split]
        joints, visible = np.zeros((n, 14, 2)), np.zeros((n, 14), dtype=bool)
        for i in range(n):
            joints[i], visible[i] = self._layout(i)[:2]
        super().__init__(
            skeleton=LSP14,
            joints=joints,
            visible=visible,
            labelled=np.ones((n, 14), dtype=bool),
            names=[f"synthetic-{split}-{i:06d}" for i in range(n)],
            split=split,
            protocol=protocol,
            source=f"generated (seed {seed})",
        )

    def _layout(self, i: int):
        # Layout and looks use separate streams: annotations come without drawing anything.
        return figure_layout(
            np.random.default_rng([self.seed, self._stream, i, 0]), self.image_size
        )

    def _image(self, i: int) -> np.ndarray:
        i = int(self.ids[i])
        looks = np.random.default_rng([self.seed, self._stream, i, 1])
        return render_figure(self._layout(i), looks, self.image_size)
