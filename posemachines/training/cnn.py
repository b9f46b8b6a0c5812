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
import io
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
from ..devices import resolve_device
from ..errors import PoseMachinesError
from ..evaluation import evaluate
from ..io import atomic_write_bytes
from ..model import PoseModel
from ..skeletons import get_skeleton
from ..stages.cnn import CONFIGS, CPM, CPMNetwork, CPMStage
from ..targets import BeliefCodec
from .checkpoint import Checkpoint

DEFAULT_EPOCHS = 40
# Batch size by network: cpm-gpu's BatchNorm and the GPU want large batches; cpm-paper at 368
# px needs about 0.4 GB per image in training.
DEFAULT_BATCH = {"cpm-gpu": 128, "cpm-paper": 32}
VALIDATIONS_PER_BUDGET = 40  # validation points spread over a --time-budget run


@dataclass
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
        for name in ("epochs", "batch_size", "checkpoint_every", "log_every"):
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

    def network_config(self):
        cfg = CONFIGS[self.config]
        return cfg if self.stages is None else replace(cfg, stages=self.stages)

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
    return crop_transforms(centres, sides, input_size, scales, rotations, flips), flips


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
    """Turns step numbers into device batches: inputs (B, 3, S, S), targets and weights."""

    crops: PackedCrops
    images: torch.Tensor  # the crops' pixels, already on the device
    codec: BeliefCodec
    augmentation: Augmentation | None
    flip_permutation: list
    seed: int
    batch: int
    rank: int = 0
    world: int = 1

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
        return x, targets, weights


def stage_losses(beliefs, targets, weights) -> torch.Tensor:
    """(T,) masked mean squared error of every stage against the shared targets."""
    w = weights[:, :, None, None]
    return torch.stack([((b.float() - targets) ** 2 * w).mean() for b in beliefs])


def train_step(runner, optimizer, x, targets, weights, autocast) -> torch.Tensor:
    """One optimiser step; returns the (T,) stage losses, still on the device."""
    with autocast:
        beliefs = runner(x)
    losses = stage_losses(beliefs, targets, weights)
    optimizer.zero_grad(set_to_none=True)
    losses.sum().backward()
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


def device_setup(device: torch.device):
    """The one place that sets up a device for CNN work; returns the autocast context.

    CUDA: bf16 autocast, cuDNN's autotuner (fixed shapes every step) and TF32 for what stays
    in float32. CPU: float32 and deterministic algorithms.
    """
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- checkpoints --------------------------------------------------------------------------------


def _tensor_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(checkpoint: Checkpoint, module, optimizer, progress: dict) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(checkpoint.folder / "weights.safetensors", save(weights))
    atomic_write_bytes(checkpoint.folder / "optimizer.pt", _tensor_bytes(optimizer.state_dict()))
    checkpoint.write_state(progress)  # last: the checkpoint is complete


def load_checkpoint(checkpoint: Checkpoint):
    from safetensors.torch import load_file

    state = checkpoint.load_state()
    weights = load_file(str(checkpoint.folder / "weights.safetensors"))
    opt = torch.load(checkpoint.folder / "optimizer.pt", map_location="cpu", weights_only=True)
    return state, weights, opt


# -- validation and the time budget --------------------------------------------------------------


def validate_pck(module, crops: PackedCrops, codec, skeleton, autocast, batch: int = 64) -> list:
    """PCK@0.2 of every stage on un-augmented validation crops (crop coordinates)."""
    if len(crops) == 0:
        return []
    device = next(module.parameters()).device
    images = torch.as_tensor(crops.images, device=device)
    maker = BatchMaker(crops, images, codec, None, list(range(skeleton.num_joints)), 0, batch)
    p = skeleton.num_joints
    stage_preds, gts = [], []
    module.eval()
    with torch.no_grad(), autocast:
        for start in range(0, len(crops), batch):
            idx = np.arange(start, min(start + batch, len(crops)))
            mats, flips = crop_matrices(crops, codec.input_size, idx, None, None)
            x, _, _ = maker.make(idx, mats, flips)
            beliefs = module(x)
            stage_preds.append([codec.decode(b[:, :p].float().cpu().numpy())[0] for b in beliefs])
            gts.append(apply_affine(mats, crops.joints[idx]))
    module.train()
    preds = np.stack([np.concatenate([s[t] for s in stage_preds]) for t in range(len(beliefs))])
    result = evaluate(preds, np.concatenate(gts), crops.labelled, skeleton)
    return [s["pck@0.2"] for s in result.per_stage]


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


def _training_data(dataset, packed, cfg, on_bad_image: str, skipped: SkippedImages):
    if packed is not None:
        crops = load_pack(packed)
        return crops, get_skeleton(crops.skeleton), f"packed:{packed} ({', '.join(crops.sources)})"
    side = int(round(cfg.input_size * 1.5))
    crops = pack_crops([dataset], side, 1.5, on_bad_image=on_bad_image, skipped=skipped)
    return crops, dataset.skeleton, dataset.describe()


def train_cnn(
    dataset,
    settings: CNNSettings,
    out_dir: str | Path,
    packed: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    max_steps: int | None = None,
    on_bad_image: str = "skip",
) -> PoseModel | None:
    """Train a CPM; returns the model on rank 0 (None on other ranks).

    ``max_steps`` stops early after that many steps in this call (for tests of resume).
    """
    from tqdm.auto import tqdm

    settings.validate()
    budget = None
    if settings.time_budget is not None:
        budget = Budget(60.0 * settings.time_budget, time.perf_counter())
    out_dir = Path(out_dir)
    world, rank = _distributed()
    device = torch.device(settings.device)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
            torch.cuda.set_device(device)
    torch.manual_seed(settings.seed)
    autocast = device_setup(device)

    cfg = settings.network_config()
    codec = BeliefCodec(cfg.input_size, cfg.stride, cfg.sigma)
    skipped = SkippedImages()
    crops, skeleton, source = _training_data(dataset, packed, cfg, on_bad_image, skipped)
    if skeleton.num_joints != cfg.num_joints:
        cfg = replace(cfg, num_joints=skeleton.num_joints)
    order = np.random.default_rng([settings.seed, 7]).permutation(len(crops))
    n_val = int(round(settings.val_fraction * len(crops))) if len(crops) > 20 else 0
    val, train = crops.subset(np.sort(order[:n_val])), crops.subset(np.sort(order[n_val:]))
    batch = min(settings.batch_size, len(train))
    if batch < world:
        raise PoseMachinesError(f"batch of {batch} cannot be shared by {world} processes")

    # channels_last is faster on CUDA and, through oneDNN, about 1.7x faster on the CPU too.
    module = CPM(cfg).to(device).to(memory_format=torch.channels_last)
    opt = make_optimizer(module, settings, device)
    identity = {
        "settings": {
            k: v
            for k, v in settings.to_dict().items()
            if k not in ("device", "checkpoint_every", "compile", "log_every")
        },
        "network": cfg.to_dict(),
        "data": source,
        "n_train": len(train),
    }
    checkpoint = Checkpoint(out_dir / "checkpoint", identity)
    step, total = 0, None
    if resume:
        state, weights, opt_state = load_checkpoint(checkpoint)
        module.load_state_dict(weights)
        opt.load_state_dict(opt_state)
        step, total = state["step"], state.get("total_steps")
    runner = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(
            module, device_ids=[device] if device.type == "cuda" else None
        )
    if settings.compile and device.type == "cuda":
        runner = torch.compile(runner)
    make_batch = BatchMaker(
        train,
        torch.as_tensor(train.images, device=device),  # decoded once, kept on the device
        codec,
        Augmentation(scale=tuple(settings.scale), rotation=settings.rotation, flip=settings.flip),
        skeleton.flip_permutation(),
        settings.seed,
        batch,
        rank,
        world,
    )
    steps_per_epoch = make_batch.steps_per_epoch

    def run_step(k: int, lr: float | None = None) -> torch.Tensor:
        for group in opt.param_groups:
            group["lr"] = learning_rate(k, total or 1, settings) if lr is None else lr
        try:
            return train_step(runner, opt, *make_batch(k), autocast)
        except torch.OutOfMemoryError:
            raise PoseMachinesError(
                f"out of GPU memory at batch size {batch}; try --batch-size {max(1, batch // 2)}"
            ) from None

    plan = {}
    if total is None and budget is None:
        total = steps_per_epoch * (settings.epochs or DEFAULT_EPOCHS)
    elif total is None:
        # Time the real step on a copy of the start: weights, statistics and optimiser are
        # put back afterwards, so the run itself starts from step 0 with its full schedule.
        start_state = copy.deepcopy(module.state_dict())
        # Under DDP every rank must take the same steps: a fixed count, not a time.
        min_seconds = 0.0 if world > 1 else 0.01 * budget.seconds
        step_s = measure_speed(lambda k: run_step(k, lr=0.0), device, min_seconds)
        t = time.perf_counter()
        if rank == 0:
            validate_pck(module, val, codec, skeleton, autocast)
        val_s = time.perf_counter() - t
        module.load_state_dict(start_state)
        opt = make_optimizer(module, settings, device)
        total = _agree(
            budget.steps_that_fit(step_s, val_s, VALIDATIONS_PER_BUDGET + 1), device, world
        )
        plan = {
            "seconds_per_step": step_s,
            "seconds_per_validation": val_s,
            "replanned_at_s": budget.elapsed(),
            "replanned_at_step": 0,
        }
    if budget is None:
        val_every = steps_per_epoch
    else:
        val_every = max(settings.log_every, total // VALIDATIONS_PER_BUDGET)
    ckpt_every = settings.checkpoint_every or (200 if budget is None else max(200, total // 10))
    log_path = out_dir / "train_log.jsonl"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume and log_path.exists():
            log_path.unlink()

    bar = tqdm(
        total=total, initial=step, desc="train", unit="step", disable=not progress or rank != 0
    )
    loss_sum = torch.zeros(cfg.stages, device=device)
    summed, checked, last_good = 0, step, step if resume else None
    t_log, seen = time.perf_counter(), 0
    module.train()
    stop_at = None if max_steps is None else step + max_steps
    while step < total and (stop_at is None or step < stop_at):
        loss_sum += run_step(step)
        step += 1
        summed += 1
        seen += batch
        bar.update()
        at_val = step % val_every == 0 or step == total
        at_ckpt = step % ckpt_every == 0 or step == total
        if not (step % settings.log_every == 0 or at_val or at_ckpt):
            continue
        # The one place the host waits for the device: every log_every steps.
        losses = (loss_sum / summed).cpu().numpy()
        if not np.isfinite(losses).all():
            kept = (
                f"the last good checkpoint (step {last_good}) is in {checkpoint.folder}"
                if last_good is not None
                else "no checkpoint had been written yet"
            )
            raise PoseMachinesError(
                f"loss became {float(losses.sum())} between step {checked} and step {step}; "
                f"training stopped and {kept}. Train again with a lower --lr, into a new --out "
                "or with --overwrite (--resume would keep the settings it started with)"
            )
        checked = step
        rate = seen / max(time.perf_counter() - t_log, 1e-9)
        record = {
            "step": step,
            "epoch": round(step / steps_per_epoch, 3),
            "loss": float(losses.sum()),
            "loss_per_stage": losses.round(6).tolist(),
            "lr": learning_rate(step - 1, total, settings),
            "images_per_s": round(rate * world, 1),
        }
        if budget is not None:
            record["elapsed_s"] = round(budget.elapsed(), 1)
        loss_sum.zero_()
        summed, seen = 0, 0
        if at_val and rank == 0:
            record["val_pck@0.2_per_stage"] = validate_pck(module, val, codec, skeleton, autocast)
        if rank == 0 and at_ckpt:
            save_checkpoint(checkpoint, module, opt, {"step": step, "total_steps": total})
            last_good = step
        if rank == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if at_val:
                bar.write(
                    f"step {step}/{total} (epoch {record['epoch']:.1f}): loss "
                    f"{record['loss']:.4f}, val PCK@0.2 "
                    f"{[round(100 * v, 1) for v in record.get('val_pck@0.2_per_stage', [])]}, "
                    f"{rate * world:.0f} img/s"
                )
        t_log = time.perf_counter()  # the next rate counts training steps only
        if at_val and budget is not None and not resume and step < total:
            # Correct the plan if the speed changed (checkpoints and validations included).
            step_s = (budget.elapsed() - plan["replanned_at_s"]) / (
                step - plan["replanned_at_step"]
            )
            left = budget.steps_that_fit(step_s, 0.0, 1)
            new_total = _agree(max(step + 1, step + left), device, world)
            if abs(new_total - total) > 0.01 * total:
                total = new_total
                bar.total = total
            plan.update(replanned_at_s=budget.elapsed(), replanned_at_step=step)
    bar.close()
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        if rank != 0:
            return None
    if step < total:
        return None  # stopped early on purpose (max_steps): the checkpoint holds the progress
    network = CPMNetwork(cfg, module.to("cpu"), "cpu")
    model = PoseModel("cnn", skeleton, codec, [CPMStage(network, t) for t in range(cfg.stages)])
    model.info["cnn"] = {**settings.to_dict(), "network": cfg.to_dict()}
    model.info["training"] = {
        "data": source,
        "steps": step,
        "epochs": round(step / steps_per_epoch, 2),
        "images": len(train),
        "validation_images": len(val),
        "skipped_images": skipped.names,
    }
    if budget is not None:
        model.info["training"]["time_budget_s"] = budget.seconds
        model.info["training"]["planned_from"] = {
            k: round(v, 4) for k, v in plan.items() if k.startswith("seconds")
        }
    return model
