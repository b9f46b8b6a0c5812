"""``synthetic-crowd``: images of one to six synthetic figures, the embedded multi-person set.

The figures are those of ``synthetic`` (LSP-14, same drawing), of different sizes, standing
anywhere in the image: they overlap (boxes up to IoU 0.3), and up to a quarter of a figure may
be cut off by the border. Smaller figures are drawn first, as if further away. A joint outside
the image is unlabelled (as COCO leaves it); one covered by a figure drawn later is labelled but
not visible. Each person comes with a box (its joints' box, padded by the head's and limbs'
thickness, clipped to the image: COCO's ``bbox``) and the box's area for OKS. Image ``i`` of a
split depends only on ``(seed, split, i)``, as in ``synthetic``.
"""

from __future__ import annotations

import numpy as np

from posemachines.core.skeletons import LSP14
from posemachines.data.dataset import PoseDataset, person_from_box
from posemachines.data.synthetic import add_noise, background, draw_figure, random_pose, split_size
from posemachines.people.boxes import box_iou

SPLIT_STREAMS = {"train": 11, "test": 12, "val": 13}
DEFAULT_SIZES = {"train": 800, "test": 100, "val": 100}  # images
MAX_PEOPLE = 6
MAX_OVERLAP = 0.3  # box IoU between two figures of one image
PAD = 0.06  # of a figure's height: its box around its joints


def figure_box(joints: np.ndarray, height: float, size: int) -> np.ndarray:
    """A figure's box [x, y, w, h]: its joints' box padded by ``PAD`` x height, in the image."""
    lo = np.clip(joints.min(0) - PAD * height, -0.5, size - 0.5)
    hi = np.clip(joints.max(0) + PAD * height, -0.5, size - 0.5)
    return np.concatenate([lo, hi - lo])


def crowd_layout(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, float]]:
    """Where the figures of one image stand: [(joints (14, 2), height)], smallest first."""
    wanted = int(rng.integers(1, MAX_PEOPLE + 1))
    figures, boxes = [], []
    for _ in range(wanted * 20):  # a bounded number of tries: a full image takes fewer
        if len(figures) == wanted:
            break
        height = rng.uniform(0.25, 0.7) * size
        joints = random_pose(rng, height)
        lo, hi = joints.min(0), joints.max(0)
        extent = hi - lo
        # up to a quarter of the figure may stand beyond the border
        centre = rng.uniform(extent / 4, size - 1 - extent / 4)
        joints = joints + centre - (lo + hi) / 2
        whole = np.concatenate([joints.min(0) - PAD * height, extent + 2 * PAD * height])
        if boxes and box_iou(whole, np.array(boxes)).max() > MAX_OVERLAP:
            continue
        figures.append((joints, height))
        boxes.append(whole)
    return sorted(figures, key=lambda f: f[1])


def render_crowd(figures, looks: np.random.Generator, size: int, background_rng=None):
    """The image (size, size, 3) uint8 and each figure's joint visibility (n, 14). Without
    ``background_rng`` the figures are drawn on black and not noised (for the visibility
    alone: the same figures, as ``looks`` gives them their colours and thickness)."""
    img = np.zeros((size, size, 3)) if background_rng is None else background(background_rng, size)
    owner = np.full((size, size), -1)
    for k, (joints, height) in enumerate(figures):
        before = img.copy()
        draw_figure(img, joints, height, looks)
        owner[(img != before).any(-1)] = k  # the pixels this figure covers
    visible = np.zeros((len(figures), 14), dtype=bool)
    for k, (joints, _) in enumerate(figures):
        inside = inside_image(joints, size)
        x, y = np.clip(np.round(joints), 0, size - 1).astype(int).T
        visible[k] = inside & (owner[y, x] <= k)
    if background_rng is None:
        return img, visible
    return add_noise(img, background_rng), visible


def inside_image(joints: np.ndarray, size: int) -> np.ndarray:
    return ((joints >= -0.5) & (joints <= size - 0.5)).all(-1)


class SyntheticCrowdDataset(PoseDataset):
    """``size`` images of ``synthetic-crowd`` (one sample per person); an image is generated
    on access and kept while its people are read."""

    name = "synthetic-crowd"

    def __init__(
        self,
        split: str = "train",
        size: int | None = None,
        seed: int = 0,
        image_size: int = 256,
        protocol: str = "given",
    ):
        n = split_size(self.name, split, size, DEFAULT_SIZES)
        self.seed, self.image_size, self._stream = int(seed), int(image_size), SPLIT_STREAMS[split]
        rows = []
        for i in range(n):
            for k, (joints, height) in enumerate(self._figures(i)):
                labelled = inside_image(joints, self.image_size)
                if labelled.sum() >= 3:  # a sliver at the border is nobody to find
                    rows.append((i, k, joints, labelled, figure_box(joints, height, image_size)))
        images, people, joints, labelled, boxes = (list(x) for x in zip(*rows))
        self._image_of, self._person_of = np.array(images), np.array(people)
        self._cached: tuple[int, np.ndarray, np.ndarray] | None = None
        boxes = np.array(boxes)
        super().__init__(
            skeleton=LSP14,
            joints=np.stack(joints),
            visible=np.stack(labelled),  # hidden joints are found when an image is drawn
            labelled=np.stack(labelled),
            names=[f"synthetic-crowd-{split}-{i:06d}#{k}" for i, k in zip(images, people)],
            split=split,
            protocol=protocol,
            source=f"generated (seed {seed})",
            boxes=np.array([person_from_box(b) for b in boxes]),
            scoring={
                "area": boxes[:, 2] * boxes[:, 3],
                "bbox": boxes,
                "image_id": self._image_of.copy(),
            },
        )
        self.visible &= self._hidden_mask()

    def _figures(self, i: int):
        return crowd_layout(np.random.default_rng([self.seed, self._stream, i, 0]), self.image_size)

    def _render(self, i: int, whole: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i`` (the figures alone unless ``whole``) and its joints' visibility."""
        if not whole:
            return render_crowd(self._figures(i), self._looks(i), self.image_size)
        if self._cached is None or self._cached[0] != i:
            scene = np.random.default_rng([self.seed, self._stream, i, 2])
            image = render_crowd(self._figures(i), self._looks(i), self.image_size, scene)
            self._cached = (i, *image)
        return self._cached[1], self._cached[2]

    def _looks(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self._stream, i, 1])

    def _hidden_mask(self) -> np.ndarray:
        """(N, 14): False where a joint is covered by a figure drawn later (the figures are
        drawn for it, without background: a split of 100 images takes about a second)."""
        mask = np.ones_like(self.visible)
        last, visible = -1, None
        for row, (i, k) in enumerate(zip(self._image_of, self._person_of)):
            if i != last:
                last, visible = i, self._render(int(i), whole=False)[1]
            mask[row] = visible[k]
        return mask

    def _image(self, i: int) -> np.ndarray:
        return self._render(int(self._image_of[self.ids[i]]))[0]
