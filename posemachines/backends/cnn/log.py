"""The training log of a CNN run and the processes of a ``torchrun`` run."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from posemachines.errors import PoseMachinesError
from posemachines.files.owned import claim


def distributed_world():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def agree(value: int, device, world: int) -> int:
    """Rank 0's ``value`` on every rank (each rank measures its own speed)."""
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return int(t.item())


class TrainingLog:
    """The losses of the steps since the last look, and ``OUT/train_log.jsonl``.

    Losses are summed on the device; ``read`` is the one place the host waits for it, every
    ``log_every`` steps, at validations and before checkpoints, so that no checkpoint ever
    holds weights a NaN loss has spoiled.
    """

    def __init__(self, path: Path, stages: int, device, append: bool, write: bool):
        self.path, self.write = path, write
        self.sum = torch.zeros(stages, device=device)
        self.steps, self.images, self.since = 0, 0, time.perf_counter()
        self.checked_at = None
        if write:
            claim(path)
        if write and not append and path.exists():
            path.unlink()

    def add(self, losses: torch.Tensor, images: int) -> None:
        self.sum += losses
        self.steps += 1
        self.images += images

    def read(self, step: int, checkpoint_note: str) -> tuple[np.ndarray, float]:
        """Mean losses per stage and images/s since the last read; refuses a NaN loss."""
        losses = (self.sum / max(self.steps, 1)).cpu().numpy()
        if not np.isfinite(losses).all():
            raise PoseMachinesError(
                f"loss became {float(losses.sum())} between step {self.checked_at} and step "
                f"{step}; training stopped and {checkpoint_note}. Train again with a lower "
                "--lr, into a new --out or with --overwrite (--resume would keep the settings "
                "it started with)"
            )
        rate = self.images / max(time.perf_counter() - self.since, 1e-9)
        self.sum.zero_()
        self.steps = self.images = 0
        self.checked_at = step
        return losses, rate

    def restart_clock(self) -> None:
        self.since = time.perf_counter()  # the next rate counts training steps only

    def append(self, record: dict) -> None:
        if self.write:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def start_distributed(device: torch.device, world: int) -> torch.device:
    if world == 1:
        return device
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
    return device


def end_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
