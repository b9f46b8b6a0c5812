"""End-to-end training of the Convolutional Pose Machine with intermediate supervision.

One path: crops are decoded once into memory (a ``pm data pack`` file or the dataset packed on
the fly); every step draws scale/rotation/flip per sample, warps the batch on the training
device with ``grid_sample``, renders the Gaussian targets there with the shared codec, and
minimises the sum over stages of the masked L2 loss. The host never waits for the device
inside a step: what a step needs goes over in pinned, asynchronous copies, and the losses are
summed on the device and read every ``log_every`` steps.

The length of a run is ``epochs``, or a ``time_budget`` in minutes: then the speed of the first
steps (compilation excluded) fixes the number of steps, so that the learning-rate schedule,
the validations and the final save all fit in the budget; the plan is corrected at every
validation if the speed changes.

Checkpoints (weights as safetensors, optimiser state loadable with ``torch.load(weights_only=
True)``) are written atomically; the data order and augmentation of step s depend only on
``(seed, s)``, so ``--resume`` continues exactly (a time-budget run resumes its planned
steps). Under ``torchrun`` the same code trains with DistributedDataParallel, each rank taking
its share of every batch; rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..crops import Augmentation, apply_affine, crop_transforms
from ..data import SkippedImages
from ..data.pack import PackedCrops, load_pack, pack_crops
from ..devices import autocast, resolve_device, training_environment
from ..errors import PoseMachinesError
from ..files import atomic_write_bytes, atomic_write_json, claim, make_folder
from ..model import PoseModel, TrainingRecord
from ..skeletons import get_skeleton
from ..stages.cnn import CONFIGS, CPM, CPMNetwork, CPMStage
from ..targets import BeliefCodec
from . import crop_pck
from .checkpoint import Checkpoint
from .gradients import gradient_summary

DEFAULT_EPOCHS = 40
SUPERVISION = ("all", "final")
# Batch size by network: cpm-gpu's BatchNorm and the GPU want large batches; cpm-paper at 368
# px needs about 0.4 GB per image in training.
DEFAULT_BATCH = {"cpm-gpu": 128, "cpm-paper": 32}
VALIDATIONS_PER_BUDGET = 40  # validation points spread over a --time-budget run


@dataclass(frozen=True)
class CNNSettings:
    """Training options of the CNN backend; stored in the manifest and checked on resume."""

    config: str = "cpm-small"
    stages: int | None = None
    epochs: int | None = None  # DEFAULT_EPOCHS unless time_budget is given
    time_budget: float | None = None  # minutes of training, validation and saving
    batch_size: int = 16
    lr: float | None = None  # default: see peak_lr
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps
    device: str = "cpu"
    checkpoint_every: int | None = None  # steps; default 200, or every tenth of a budget run
    val_fraction: float = 0.05
    seed: int = 0
    scale: tuple = (0.7, 1.3)
    rotation: float = 40.0
    flip: float = 0.5
    compile: bool = False
    log_every: int = 25
    overrides: dict | None = None  # CPMConfig fields that differ from the config's
    supervision: str = "all"  # "all": a loss at every stage (the paper); "final": last only
    grad_every: int | None = None  # steps between gradient summaries in the log (None: off)

    @classmethod
    def from_options(cls, config=None, device="auto", batch_size=None, **options) -> CNNSettings:
        """Settings from command-line options (None = default); checks them all at once."""
        if options.get("epochs") is not None and options.get("time_budget") is not None:
            raise PoseMachinesError("--epochs and --time-budget are exclusive: give one of them")
        device = resolve_device(device)
        config = config or ("cpm-gpu" if device.startswith("cuda") else "cpm-small")
        s = cls(
            config=config,
            device=device,
            compile=device.startswith("cuda"),
            batch_size=batch_size or DEFAULT_BATCH.get(config, 16),
            **{k: v for k, v in options.items() if v is not None},
        )
        s.validate()
        return s

    def validate(self) -> None:
        if self.config not in CONFIGS:
            raise PoseMachinesError(f"unknown CNN config {self.config!r}; use {sorted(CONFIGS)}")
        if self.stages is not None and self.stages < 1:
            raise PoseMachinesError(f"--stages must be at least 1, got {self.stages}")
        if self.epochs is not None and self.time_budget is not None:
            raise PoseMachinesError("--epochs and --time-budget are exclusive: give one of them")
        if self.supervision not in SUPERVISION:
            raise PoseMachinesError(
                f"--supervision must be one of {SUPERVISION}, got {self.supervision!r}"
            )
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every", "grad_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise PoseMachinesError(f"--{name.replace('_', '-')} must be at least 1")
        if self.time_budget is not None and not self.time_budget > 0:
            raise PoseMachinesError(f"--time-budget must be positive, got {self.time_budget}")
        if self.lr is not None and not self.lr > 0:
            raise PoseMachinesError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise PoseMachinesError("--val-fraction must be in [0, 1)")
        if self.optimizer not in ("adamw", "sgd"):
            raise PoseMachinesError(f"unknown optimizer {self.optimizer!r}")
        try:
            self.network_config()
        except TypeError as exc:
            raise PoseMachinesError(
                f"unknown network setting in {self.overrides} ({exc})"
            ) from None

    def network_config(self):
        cfg = CONFIGS[self.config]
        cfg = cfg if self.stages is None else replace(cfg, stages=self.stages)
        return replace(cfg, **(self.overrides or {}))

    @property
    def peak_lr(self) -> float:
        """``lr``, else 1e-2 for SGD; for AdamW 3e-3 on networks with BatchNorm (cpm-small
        trains best there, docs/experiments.md) and 1e-3 on the paper's plain network."""
        if self.lr is not None:
            return self.lr
        if self.optimizer == "sgd":
            return 1e-2
        return 3e-3 if CONFIGS[self.config].batch_norm else 1e-3

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# -- the batch pipeline on the device -------------------------------------------------------------


def crop_matrices(crops: PackedCrops, input_size: int, idx, aug: Augmentation | None, rng):
    """Pack-crop -> input-crop matrices (B, 2, 3) and flip flags (B,) for the samples ``idx``."""
    n = len(idx)
    if aug is None:
        scales, rotations, flips, shifts = np.ones(n), np.zeros(n), np.zeros(n, bool), 0.0
    else:
        scales, rotations, flips, shifts = aug.draw_batch(rng, n)
    centres = np.full((n, 2), (crops.side - 1) / 2.0) + shifts * crops.box_side
    sides = np.full(n, crops.box_side)
    matrices = crop_transforms(
        centres, sides, input_size, scales=scales, rotations=rotations, flips=flips
    )
    return matrices, flips


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device`` without making the host wait (pinned, asynchronous copy)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def sampling_matrices(matrices: np.ndarray, in_hw, out_size: int) -> np.ndarray:
    """``affine_grid`` matrices (B, 2, 3) for pixel matrices taking input to output pixels."""
    b = len(matrices)
    h, w = in_hw
    inv = np.linalg.inv(np.concatenate([matrices, np.tile([[[0, 0, 1.0]]], (b, 1, 1))], 1))
    # output normalised coords -> output pixels -> input pixels -> input normalised coords
    d_out = np.array(
        [[out_size / 2, 0, (out_size - 1) / 2], [0, out_size / 2, (out_size - 1) / 2], [0, 0, 1]]
    )
    d_in = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    return (d_in @ inv @ d_out)[:, :2].astype(np.float32)


def warp_batch(images: torch.Tensor, matrices, out_size: int) -> torch.Tensor:
    """Resample (B, H, W, 3) uint8 images on their device through (B, 2, 3) pixel matrices.

    ``matrices`` is a numpy array of pixel matrices, or a tensor of ``sampling_matrices``
    already on the device. Returns (B, 3, out, out) float in [-0.5, 0.5], channels_last;
    bilinear, as ``crops.warp_image``.
    """
    b = images.shape[0]
    theta = matrices
    if not torch.is_tensor(theta):
        theta = to_device(sampling_matrices(matrices, images.shape[1:3], out_size), images.device)
    grid = F.affine_grid(theta, (b, 3, out_size, out_size), align_corners=False)
    x = images.permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.div_(255).sub_(0.5).contiguous(memory_format=torch.channels_last)


def target_joints(crops: PackedCrops, idx, matrices, flips, perm):
    """Joints (B, P, 2) float32 in input-crop coordinates and their flags, left/right swapped
    in the flipped crops so that joint i is still the skeleton's joint i."""
    joints = apply_affine(matrices, crops.joints[idx])
    labelled = crops.labelled[idx].copy()
    joints[flips] = joints[flips][:, perm]
    labelled[flips] = labelled[flips][:, perm]
    return joints.astype(np.float32), labelled


@dataclass
class BatchMaker:
    """Turns step numbers into device batches: the network's inputs (the crops (B, 3, S, S),
    and the beliefs of the stages below for a network on foreign beliefs), targets, weights."""

    crops: PackedCrops
    images: torch.Tensor  # the crops' pixels, already on the device
    codec: BeliefCodec
    augmentation: Augmentation | None
    flip_permutation: list
    seed: int
    batch: int
    rank: int = 0
    world: int = 1
    below: torch.Tensor | None = None  # (N, P+1, g, g) beliefs on each crop's person box

    @property
    def steps_per_epoch(self) -> int:
        return len(self.crops) // self.batch

    def indices(self, step: int) -> np.ndarray:
        """The global batch of ``step``: the epoch's permutation, depending only on the seed."""
        epoch, k = divmod(step, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.crops))
        return order[k * self.batch : (k + 1) * self.batch]

    def __call__(self, step: int):
        idx = self.indices(step)
        rng = np.random.default_rng([self.seed, 1_000_003, step])
        mats, flips = crop_matrices(self.crops, self.codec.input_size, idx, self.augmentation, rng)
        mine = slice(self.rank, None, self.world)
        return self.make(idx[mine], mats[mine], flips[mine])

    def make(self, idx, mats, flips):
        device = self.images.device
        joints, labelled = target_joints(self.crops, idx, mats, flips, self.flip_permutation)
        theta = sampling_matrices(mats, self.images.shape[1:3], self.codec.input_size)
        pixels = self.images[to_device(idx, device)]
        x = warp_batch(pixels, to_device(theta, device), self.codec.input_size)
        targets, weights = self.codec.encode(to_device(joints, device), to_device(labelled, device))
        if self.below is None:
            return (x,), targets, weights
        return (x, self.warped_below(idx, theta, flips)), targets, weights

    def warped_below(self, idx, theta: np.ndarray, flips) -> torch.Tensor:
        """The beliefs below, through the crops' augmentation, on this network's grid.

        They were computed on the person box, the pack crop's centre 1/pad: in normalised
        coordinates the box is the pack crop scaled by pad, so the images' sampling matrices
        scaled by pad sample them. Outside the box nothing is known: background there.
        """
        device = self.below.device
        maps = self.below[to_device(idx, device)].float()
        theta = to_device((theta * self.crops.pad).astype(np.float32), device)
        side = self.codec.map_size
        grid = F.affine_grid(theta, (len(idx), maps.shape[1], side, side), align_corners=False)
        warped = F.grid_sample(maps, grid, mode="bilinear", align_corners=False)
        inside = F.grid_sample(
            torch.ones_like(maps[:, :1]), grid, mode="bilinear", align_corners=False
        )
        warped[:, -1:] += 1 - inside  # background where the box does not reach
        channels = list(self.flip_permutation) + [maps.shape[1] - 1]
        flipped = to_device(np.asarray(flips), device)
        return torch.where(flipped[:, None, None, None], warped[:, channels], warped)


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


# -- checkpoints --------------------------------------------------------------------------------


def _optimizer_files(state: dict) -> tuple[bytes, dict]:
    """An optimizer's ``state_dict`` as safetensors (its tensors) and JSON (the rest): nothing
    is pickled."""
    from safetensors.torch import save

    tensors, plain = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[f"{index}.{name}"] = value
    return save(tensors), {"param_groups": state["param_groups"], "values": plain}


def _optimizer_state(tensors: dict, doc: dict) -> dict:
    state: dict = {}
    for key, value in [*tensors.items(), *doc["values"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": doc["param_groups"]}


def save_checkpoint(checkpoint: Checkpoint, module, optimizer, progress: dict) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tensors, doc = _optimizer_files(optimizer.state_dict())
    folder = checkpoint.begin()
    atomic_write_bytes(folder / "weights.safetensors", save(weights))
    atomic_write_bytes(folder / "optimizer.safetensors", tensors)
    atomic_write_json(folder / "optimizer.json", doc)
    checkpoint.commit(progress)


def load_checkpoint(checkpoint: Checkpoint):
    from safetensors.torch import load_file

    state = checkpoint.load_state()
    folder = checkpoint.current
    try:
        weights = load_file(str(folder / "weights.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        opt = _optimizer_state(tensors, json.loads((folder / "optimizer.json").read_text()))
    except Exception as exc:  # safetensors' own errors too: any unreadable file is one line
        raise PoseMachinesError(
            f"{folder}: an unreadable checkpoint ({exc}); train again without --resume"
        ) from None
    return state, weights, opt


# -- validation and the time budget --------------------------------------------------------------


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
        for start in range(0, len(crops), batch):
            idx = np.arange(start, min(start + batch, len(crops)))
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


# -- training -----------------------------------------------------------------------------------


def _distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def _agree(value: int, device, world: int) -> int:
    """Rank 0's ``value`` on every rank (each rank measures its own speed)."""
    if world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, 0)
    return int(t.item())


@dataclass
class TrainingData:
    """The crops of a run, split once into training and validation parts."""

    train: PackedCrops
    val: PackedCrops
    skeleton: object
    source: str  # what the crops came from, for the identity and the record
    skipped: SkippedImages
    below_train: np.ndarray | None = None  # beliefs under a network on foreign beliefs
    below_val: np.ndarray | None = None


def training_data(
    dataset, packed, cfg, settings: CNNSettings, on_bad_image: str, below=None
) -> TrainingData:
    """Crops from a pack file, or ``dataset`` packed on the fly; a seeded validation split.
    ``below`` (one belief array per sample of ``dataset``) follows the crops."""
    skipped = SkippedImages()
    if packed is not None:
        crops = load_pack(packed)
        skeleton = get_skeleton(crops.skeleton, crops.skeleton_definition)
        source = f"packed:{packed} ({', '.join(crops.sources)})"
    else:
        side = int(round(cfg.input_size * 1.5))
        crops = pack_crops([dataset], side, 1.5, on_bad_image=on_bad_image, skipped=skipped)
        skeleton, source = dataset.skeleton, dataset.describe()
    order = np.random.default_rng([settings.seed, 7]).permutation(len(crops))
    n_val = int(round(settings.val_fraction * len(crops))) if len(crops) > 20 else 0
    val, train = crops.subset(np.sort(order[:n_val])), crops.subset(np.sort(order[n_val:]))
    data = TrainingData(train, val, skeleton, source, skipped)
    if below is not None:
        below = np.asarray(below, dtype=np.float32)
        data.below_train, data.below_val = below[train.index], below[val.index]
    return data


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


def _start_distributed(device: torch.device, world: int) -> torch.device:
    if world == 1:
        return device
    import torch.distributed as dist

    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
        torch.cuda.set_device(device)
    return device


def _end_distributed(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()


def train_cnn(
    dataset,
    settings: CNNSettings,
    out_dir: str | Path,
    packed: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    max_steps: int | None = None,
    on_bad_image: str = "skip",
    below: np.ndarray | None = None,
    grid: int | None = None,
) -> PoseModel | None:
    """Train a CPM; returns the model on rank 0 (None on other ranks).

    ``max_steps`` stops early after that many steps in this call (for tests of resume). The
    seed and torch's global flags are set for the run and restored afterwards. A network on
    foreign beliefs (``overrides={"foreign_input": True}``) learns to refine ``below``, the
    beliefs (N, P+1, g, g) that the stages under it gave on each sample's person box; ``grid``
    is the belief grid of the model it will be part of, when not its own.
    """
    settings.validate()
    started = time.perf_counter()
    world, rank = _distributed()
    device = _start_distributed(torch.device(settings.device), world)
    try:
        with training_environment(device, settings.seed):
            run = _CNNRun(settings, Path(out_dir), device, world, rank, started)
            run.below, run.grid = below, grid
            model = run.train(dataset, packed, resume, progress, max_steps, on_bad_image)
    finally:
        _end_distributed(world)
    return model if rank == 0 else None


class _CNNRun:
    """One training run: set up, plan, step, look at the log, build the model."""

    def __init__(self, settings, out_dir: Path, device, world: int, rank: int, started: float):
        self.s, self.out_dir, self.device = settings, out_dir, device
        self.world, self.rank, self.started = world, rank, started
        self.budget = None
        if settings.time_budget is not None:
            self.budget = Budget(60.0 * settings.time_budget, started)
        self.autocast = autocast(device)
        self.plan: dict = {}
        self.below, self.grid = None, None
        self.gradient_seconds = 0.0

    def train(self, dataset, packed, resume, progress, max_steps, on_bad_image):
        from tqdm.auto import tqdm

        s, device, world, rank = self.s, self.device, self.world, self.rank
        cfg = s.network_config()
        if cfg.foreign_input != (self.below is not None):
            raise PoseMachinesError(
                "a network on foreign beliefs trains with the beliefs below it, and only it"
            )
        data = training_data(dataset, packed, cfg, s, on_bad_image, self.below)
        if data.skeleton.num_joints != cfg.num_joints:
            cfg = replace(cfg, num_joints=data.skeleton.num_joints)
        self.cfg, self.codec, self.data = cfg, cfg.codec(), data
        batch = min(s.batch_size, len(data.train))
        if batch < world:
            raise PoseMachinesError(f"batch of {batch} cannot be shared by {world} processes")
        # channels_last is faster on CUDA and, through oneDNN, about 1.7x faster on the CPU.
        self.module = CPM(cfg).to(device).to(memory_format=torch.channels_last)
        self.opt = make_optimizer(self.module, s, device)
        identity = {
            "settings": {
                k: v
                for k, v in s.to_dict().items()
                if k not in ("device", "checkpoint_every", "compile", "log_every", "grad_every")
            },
            "network": cfg.to_dict(),
            "data": data.source,
            "n_train": len(data.train),
        }
        checkpoint = Checkpoint(self.out_dir / "checkpoint", identity)
        step, total = 0, None
        if resume and not checkpoint.exists() and progress and rank == 0:
            tqdm.write("no complete checkpoint to resume from: training from the start")
        resume = resume and checkpoint.exists()
        if resume:
            state, weights, opt_state = load_checkpoint(checkpoint)
            self.module.load_state_dict(weights)
            self.opt.load_state_dict(opt_state)
            step, total = state["step"], state.get("total_steps")
        self.runner = self.module
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device] if device.type == "cuda" else None
            self.runner = DistributedDataParallel(self.module, device_ids=ids)
        if s.compile and device.type == "cuda":
            self.runner = torch.compile(self.runner)
        self.batches = BatchMaker(
            data.train,
            torch.as_tensor(data.train.images, device=device),  # decoded once, on the device
            self.codec,
            Augmentation(scale=tuple(s.scale), rotation=s.rotation, flip=s.flip),
            data.skeleton.flip_permutation(),
            s.seed,
            batch,
            rank,
            world,
            below=None
            if data.below_train is None
            else torch.as_tensor(data.below_train, device=device),
        )
        per_epoch = self.batches.steps_per_epoch
        self.total = total if total is not None else self.planned_steps(per_epoch)
        val_every = per_epoch
        if self.budget is not None:
            val_every = max(s.log_every, self.total // VALIDATIONS_PER_BUDGET)
        ckpt_every = s.checkpoint_every or (
            200 if self.budget is None else max(200, self.total // 10)
        )
        if rank == 0:
            make_folder(self.out_dir)
        log = self.log = TrainingLog(
            self.out_dir / "train_log.jsonl", cfg.stages, device, resume, rank == 0
        )
        log.checked_at = step
        bar = tqdm(
            total=self.total,
            initial=step,
            desc="train",
            unit="step",
            disable=not progress or rank != 0,
        )
        last_good = step if resume else None
        stop_at = None if max_steps is None else step + max_steps
        self.module.train()
        while step < self.total and (stop_at is None or step < stop_at):
            log.add(self.step(step), batch * world)
            step += 1
            bar.update()
            at_val = step % val_every == 0 or step == self.total
            at_ckpt = step % ckpt_every == 0 or step == self.total
            if not (step % s.log_every == 0 or at_val or at_ckpt):
                continue
            note = (
                f"the last good checkpoint (step {last_good}) is in {checkpoint.folder}"
                if last_good is not None
                else "no checkpoint had been written yet"
            )
            losses, rate = log.read(step, note)
            record = {
                "step": step,
                "epoch": round(step / per_epoch, 3),
                "loss": float(losses.sum()),
                "loss_per_stage": losses.round(6).tolist(),
                "lr": learning_rate(step - 1, self.total, s),
                "images_per_s": round(rate, 1),
            }
            if self.budget is not None:
                record["elapsed_s"] = round(self.budget.elapsed(), 1)
            if at_val and rank == 0:
                record["val_pck@0.2_per_stage"] = self.validate()
            if at_ckpt and rank == 0:
                progress_state = {"step": step, "total_steps": self.total}
                save_checkpoint(checkpoint, self.module, self.opt, progress_state)
                last_good = step
            log.append(record)
            if at_val and rank == 0:
                pck = [round(100 * v, 1) for v in record.get("val_pck@0.2_per_stage", [])]
                bar.write(
                    f"step {step}/{self.total} (epoch {record['epoch']:.1f}): loss "
                    f"{record['loss']:.4f}, val PCK@0.2 {pck}, {rate:.0f} img/s"
                )
            log.restart_clock()
            if at_val and self.budget is not None and not resume and step < self.total:
                self.replan(step)
                bar.total = self.total
        bar.close()
        if step < self.total or rank != 0:
            return None  # stopped early on purpose (max_steps): the checkpoint holds it
        return self.model(dataset, packed, step, per_epoch)

    def step(self, k: int, lr: float | None = None) -> torch.Tensor:
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(k, self.total or 1, self.s) if lr is None else lr
        inspect = None
        every = self.s.grad_every
        if every and lr is None and (k + 1) % every == 0 and self.rank == 0:
            inspect = lambda: self.record_gradients(k + 1)  # noqa: E731
        try:
            return train_step(
                self.runner,
                self.opt,
                *self.batches(k),
                self.autocast,
                final_only=self.s.supervision == "final",
                inspect=inspect,
            )
        except torch.OutOfMemoryError:
            batch = self.batches.batch
            raise PoseMachinesError(
                f"out of GPU memory at batch size {batch}; try --batch-size {max(1, batch // 2)}"
            ) from None

    def record_gradients(self, step: int) -> None:
        """Summarise each stage's gradients into the log (the time it takes is counted)."""
        t = time.perf_counter()
        summary = gradient_summary(self.module.stage_parameters())
        self.log.append({"step": step, "gradients": summary})
        self.gradient_seconds += time.perf_counter() - t

    def validate(self) -> list:
        data = self.data
        return validate_pck(
            self.module, data.val, self.codec, data.skeleton, self.autocast, below=data.below_val
        )

    def planned_steps(self, per_epoch: int) -> int:
        """Epochs times their steps; with a time budget, the steps that fit in it.

        The real step is timed on a copy of the start: weights, statistics and optimiser are
        put back afterwards, so the run itself starts from step 0 with its full schedule.
        """
        if self.budget is None:
            return per_epoch * (self.s.epochs or DEFAULT_EPOCHS)
        self.total = None
        start_state = copy.deepcopy(self.module.state_dict())
        # Under DDP every rank must take the same steps: a fixed count, not a time.
        min_seconds = 0.0 if self.world > 1 else 0.01 * self.budget.seconds
        step_s = measure_speed(lambda k: self.step(k, lr=0.0), self.device, min_seconds)
        t = time.perf_counter()
        if self.rank == 0:
            self.validate()
        val_s = time.perf_counter() - t
        self.module.load_state_dict(start_state)
        self.opt = make_optimizer(self.module, self.s, self.device)
        fit = self.budget.steps_that_fit(step_s, val_s, VALIDATIONS_PER_BUDGET + 1)
        self.plan = {
            "seconds_per_step": step_s,
            "seconds_per_validation": val_s,
            "replanned_at_s": self.budget.elapsed(),
            "replanned_at_step": 0,
        }
        return _agree(fit, self.device, self.world)

    def replan(self, step: int) -> None:
        """Correct the planned steps if the speed changed (checkpoints and validations
        included in the speed measured since the last correction)."""
        plan, budget = self.plan, self.budget
        step_s = (budget.elapsed() - plan["replanned_at_s"]) / (step - plan["replanned_at_step"])
        left = budget.steps_that_fit(step_s, 0.0, 1)
        new_total = _agree(max(step + 1, step + left), self.device, self.world)
        if abs(new_total - self.total) > 0.01 * self.total:
            self.total = new_total
        plan.update(replanned_at_s=budget.elapsed(), replanned_at_step=step)

    def model(self, dataset, packed, steps: int, per_epoch: int) -> PoseModel:
        cfg, data, s = self.cfg, self.data, self.s
        network = CPMNetwork(cfg, self.module.to("cpu"), "cpu")
        grid = self.grid if self.grid not in (None, self.codec.map_size) else None
        stages = [CPMStage(network, t, grid) for t in range(cfg.stages)]
        model = PoseModel("cnn", data.skeleton, self.codec, stages)
        details = {
            "steps": steps,
            "epochs": round(steps / per_epoch, 2),
            "images": len(data.train),
            "validation_images": len(data.val),
        }
        if s.grad_every:
            seconds = time.perf_counter() - self.started
            details["gradient_summaries_share_of_time"] = round(self.gradient_seconds / seconds, 4)
        if self.budget is not None:
            details["time_budget_s"] = self.budget.seconds
            details["planned_from"] = {
                k: round(v, 4) for k, v in self.plan.items() if k.startswith("seconds")
            }
        settings = {**s.to_dict(), "network": cfg.to_dict()}
        fields = dict(seconds=round(time.perf_counter() - self.started, 1), details=details)
        if packed is None:
            model.record = TrainingRecord.for_dataset(
                dataset, s.seed, settings, skipped_images=data.skipped.names, **fields
            )
        else:
            model.record = TrainingRecord(
                data.source, "packed", "packed", s.seed, settings=settings, **fields
            )
        return model
