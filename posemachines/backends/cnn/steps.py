"""One optimiser step, the learning-rate schedule, validation PCK and the time budget."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from posemachines.backends.cnn.batches import BatchMaker, crop_matrices
from posemachines.backends.cnn.settings import CNNSettings
from posemachines.core.batches import index_batches
from posemachines.core.crops import apply_affine
from posemachines.data.pack import PackedCrops
from posemachines.training import crop_pck


def stage_losses(beliefs, targets, weights) -> torch.Tensor:
    """(T,) masked mean squared error of every stage against the shared targets."""
    w = weights[:, :, None, None]
    return torch.stack([((b.float() - targets) ** 2 * w).mean() for b in beliefs])


def train_step(
    runner, optimizer, inputs, targets, weights, autocast, final_only=False, inspect=None
) -> torch.Tensor:
    """One optimiser step on the network's ``inputs`` (a tuple); returns the (T,) stage
    losses, still on the device.

    The loss is the sum over stages (intermediate supervision), or the last stage's alone with
    ``final_only``; ``inspect()`` runs between the backward pass and the update (gradients).
    """
    with autocast:
        beliefs = runner(*inputs)
    losses = stage_losses(beliefs, targets, weights)
    optimizer.zero_grad(set_to_none=True)
    (losses[-1] if final_only else losses.sum()).backward()
    if inspect is not None:
        inspect()
    optimizer.step()
    return losses.detach()


def learning_rate(step: int, total: int, s: CNNSettings) -> float:
    """AdamW: linear warm-up then cosine decay. SGD: the paper's step decay (x 1/3, 3 times)."""
    if s.optimizer == "sgd":
        return s.peak_lr * (1 / 3) ** min(3, int(4 * step / max(total, 1)))
    warm = max(1, int(s.warmup * total))
    if step < warm:
        return s.peak_lr * (step + 1) / warm
    return s.peak_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def make_optimizer(module, s: CNNSettings, device: torch.device):
    fused = {"fused": True} if device.type == "cuda" else {}
    if s.optimizer == "adamw":
        return torch.optim.AdamW(
            module.parameters(), lr=s.peak_lr, weight_decay=s.weight_decay, **fused
        )
    return torch.optim.SGD(
        module.parameters(), lr=s.peak_lr, momentum=0.9, weight_decay=s.weight_decay, **fused
    )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def validate_pck(
    module, crops: PackedCrops, codec, skeleton, autocast, batch: int = 64, below=None
) -> list:
    """PCK@0.2 of every stage on un-augmented validation crops (crop coordinates); ``below``
    are the beliefs under a network on foreign beliefs."""
    if len(crops) == 0:
        return []
    device = next(module.parameters()).device
    images = torch.as_tensor(crops.images, device=device)
    below = None if below is None else torch.as_tensor(below, device=device)
    perm = list(range(skeleton.num_joints))
    maker = BatchMaker(crops, images, codec, None, perm, 0, batch, below=below)
    batches, joints = [], []
    module.eval()
    with torch.no_grad(), autocast:
        for idx in index_batches(len(crops), batch):
            mats, flips = crop_matrices(crops, codec.input_size, idx, None, None)
            inputs, _, _ = maker.make(idx, mats, flips)
            batches.append([b.float().cpu().numpy() for b in module(*inputs)])
            joints.append(apply_affine(mats, crops.joints[idx]))
    module.train()
    stages = [np.concatenate(stage) for stage in zip(*batches)]
    return crop_pck(stages, np.concatenate(joints), crops.labelled, codec, skeleton)


@dataclass
class Budget:
    """Wall-clock budget of a run, started when training starts (data loading included)."""

    seconds: float
    start: float

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def steps_that_fit(self, step_s: float, val_s: float, validations: int) -> int:
        """Steps that fit in what is left, after ``validations`` validations and a reserve for
        the checkpoints and the final save (1 % of the budget + 2 s)."""
        left = self.seconds - self.elapsed() - validations * val_s - 0.01 * self.seconds - 2.0
        return max(1, int(left / step_s))


def measure_speed(run_step, device, min_seconds: float, warmup: int = 3) -> float:
    """Seconds per training step: ``warmup`` steps (compilation) not counted, then at least 10
    steps and ``min_seconds`` (at most 50 steps)."""
    for k in range(warmup):
        run_step(k)
    synchronize(device)
    t0, k = time.perf_counter(), warmup
    while True:
        for _ in range(5):
            run_step(k)
            k += 1
        synchronize(device)
        timed = k - warmup
        if timed >= 50 or (timed >= 10 and time.perf_counter() - t0 >= min_seconds):
            return (time.perf_counter() - t0) / timed
