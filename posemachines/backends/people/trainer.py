"""Training the people model on any dataset that has every person of its images: the centre
belief by CenterNet's focal loss, the box size by L1 near each centre, the centre's offset in
its cell by L1 at the centre."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from posemachines.backends.people.model import PeopleModel, letterbox, to_tensor
from posemachines.backends.people.network import STRIDE, PeopleNet
from posemachines.backends.people.settings import PeopleSettings
from posemachines.core.model import TrainingRecord
from posemachines.data import CorruptImageError, PoseDataset, SkippedImages
from posemachines.devices import autocast, training_environment
from posemachines.errors import PoseMachinesError
from posemachines.people.boxes import person_boxes
from posemachines.registry import TrainingRun

ZOOM_OUT = (0.6, 1.0)  # the augmentation's range of shrinking the whole square
SIZE_NEAR = 0.5  # the box size is taught where a person's centre bump is above this
SIZE_WEIGHT = 2.0  # boxes must overlap the truth by half: the size matters


def training_images(dataset: PoseDataset, side: int, on_bad_image: str, skipped: SkippedImages):
    """Every image once, letterboxed to ``side``, and its people's boxes in square pixels."""
    squares, boxes = [], []
    for key, indices in dataset.people_by_image().items():
        try:
            image = dataset[indices[0]].image
        except CorruptImageError as exc:
            if on_bad_image == "stop":
                raise
            skipped.add(str(key), str(exc))
            continue
        square, factor = letterbox(image, side)
        b = person_boxes(dataset, indices, image.shape)
        squares.append(square)
        boxes.append(b * np.concatenate([factor, factor]))
    if not squares:
        raise PoseMachinesError(f"{dataset.describe()}: no readable image to train on")
    return np.stack(squares), boxes


def augment(square: np.ndarray, boxes: np.ndarray, rng: np.random.Generator):
    """A random mirror image and zoom-out (the square shrunk, placed anywhere in it)."""
    side = square.shape[0]
    boxes = boxes.copy()
    if rng.random() < 0.5:
        square = square[:, ::-1]
        boxes[:, 0] = side - boxes[:, 0] - boxes[:, 2]
    r = rng.uniform(*ZOOM_OUT)
    if r < 0.98:
        small = round(side * r)
        shift = rng.integers(0, side - small + 1, 2)
        out = np.full_like(square, 128)
        out[shift[1] : shift[1] + small, shift[0] : shift[0] + small] = np.asarray(
            Image.fromarray(np.ascontiguousarray(square)).resize((small, small))
        )
        square = out
        boxes = boxes * (small / side)
        boxes[:, :2] += shift
    return square, boxes


def targets(boxes_per_image, side: int):
    """Centre beliefs (B, 1, G, G); box sizes (B, 2, G, G), read where a person's bump is
    above ``SIZE_NEAR`` and the strongest (more cells than the centre alone teach the size);
    centre offsets (B, 2, G, G) at the centres; the two masks (B, 1, G, G)."""
    g = side // STRIDE
    n = len(boxes_per_image)
    heat, size = np.zeros((n, 1, g, g), np.float32), np.zeros((n, 2, g, g), np.float32)
    offset, centre = np.zeros((n, 2, g, g), np.float32), np.zeros((n, 1, g, g), np.float32)
    near = np.zeros((n, 1, g, g), np.float32)
    cells = np.arange(g) + 0.5
    for b, boxes in enumerate(boxes_per_image):
        for x, y, w, h in boxes / STRIDE:
            if w <= 0 or h <= 0:
                continue
            cx, cy = x + w / 2, y + h / 2
            col, row = int(np.clip(cx, 0, g - 1e-6)), int(np.clip(cy, 0, g - 1e-6))
            sigma = max(0.5, min(w, h) / 6)
            bump = np.exp(-((cells - cx)[None] ** 2 + (cells - cy)[:, None] ** 2) / (2 * sigma**2))
            bump[row, col] = 1.0
            mine = (bump > SIZE_NEAR) & (bump > heat[b, 0])
            size[b, :, mine] = np.log([w, h])
            near[b, 0][mine] = 1.0
            heat[b, 0] = np.maximum(heat[b, 0], bump)
            offset[b, :, row, col] = cx - col, cy - row
            centre[b, 0, row, col] = 1.0
    return heat, size, offset, centre, near


def people_loss(outputs, heat, size, offset, centre, near) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on the centres, plus L1 on the read-outs."""
    logits, size_out, offset_out = (o.float() for o in outputs)
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = -(torch.log(p) * (1 - p) ** 2 * centre).sum()
    negative = -(torch.log(1 - p) * p**2 * (1 - heat) ** 4 * (1 - centre)).sum()
    count = centre.sum().clamp(min=1)
    sizes = ((size_out - size).abs() * near).sum() / near.sum().clamp(min=1)
    offsets = ((offset_out - offset).abs() * centre).sum() / count
    return (positive + negative) / count + SIZE_WEIGHT * sizes + offsets


class PeopleTrainer:
    """``fit(dataset)`` trains a ``PeopleModel`` on every person of every image."""

    gives_out_of_fold = False
    keeps_checkpoint = False
    trains_on_device = True

    def __init__(self, settings: PeopleSettings, run: TrainingRun):
        self.settings = settings
        self.run = run

    def fit(self, dataset: PoseDataset, below=None, fold_of=None, out_of_fold=False):
        if below is not None:
            raise PoseMachinesError("the people model finds people; it is not a stage of a stack")
        s, run, start = self.settings, self.run, time.time()
        skipped = SkippedImages()
        squares, boxes = training_images(dataset, s.input_size, run.on_bad_image, skipped)
        run.log(f"people: {len(squares)} images, {sum(map(len, boxes))} people")
        with training_environment(s.device, s.seed):
            network = PeopleNet(s.width).to(s.device)
            losses = self._train(network, squares, boxes)
        self.model_ = PeopleModel(s, network.eval())
        self.model_.record = TrainingRecord.for_dataset(
            dataset,
            s.seed,
            s.to_dict(),
            seconds=round(time.time() - start, 1),
            skipped_images=skipped.names,
            details={"images": len(squares), "final_loss": round(losses[-1], 4)},
        )
        return self

    def _train(self, network: PeopleNet, squares: np.ndarray, boxes: list) -> list[float]:
        s = self.settings
        rng = np.random.default_rng(s.seed)
        steps_per_epoch = max(1, len(squares) // s.batch_size)
        optimizer = torch.optim.AdamW(network.parameters(), lr=s.lr, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, s.lr, total_steps=s.epochs * steps_per_epoch, pct_start=0.1
        )
        losses = []
        for epoch in range(s.epochs):
            network.train()
            order = rng.permutation(len(squares))
            total = 0.0
            for step in range(steps_per_epoch):
                batch = order[step * s.batch_size : (step + 1) * s.batch_size]
                pairs = [augment(squares[i], boxes[i], rng) for i in batch]
                x = to_tensor(np.stack([p[0] for p in pairs]), s.device)
                wanted = [
                    torch.from_numpy(t).to(s.device)
                    for t in targets([p[1] for p in pairs], s.input_size)
                ]
                with autocast(s.device):
                    loss = people_loss(network(x), *wanted)
                if not torch.isfinite(loss):
                    raise PoseMachinesError(
                        f"people: the loss became {loss.item()} at epoch {epoch + 1}; lower --lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
            losses.append(total / steps_per_epoch)
            self.run.log(f"people: epoch {epoch + 1}/{s.epochs} loss {losses[-1]:.3f}")
        return losses
