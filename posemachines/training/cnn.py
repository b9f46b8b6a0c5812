"""End-to-end training of the Convolutional Pose Machine with intermediate supervision.

One path: crops are decoded once into memory (a ``pm data pack`` file or the dataset packed on
the fly); every step draws scale/rotation/flip per sample, warps the batch on the training
device with ``grid_sample``, renders the Gaussian targets there with the shared codec, and
minimises the sum over stages of the masked L2 loss. Checkpoints (weights as safetensors,
optimiser state loadable with ``torch.load(weights_only=True)``) are written atomically every
``checkpoint_every`` steps; the data order and augmentation of step s depend only on
``(seed, s)``, so ``--resume`` continues exactly. Under ``torchrun`` the same code trains with
DistributedDataParallel, each rank taking its share of every batch; rank 0 writes.
"""

from __future__ import annotations

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

from ..crops import Augmentation, apply_affine, crop_transform
from ..data.pack import PackedCrops, load_pack, pack_crops
from ..devices import resolve_device
from ..errors import PoseMachinesError
from ..evaluation import evaluate
from ..io import atomic_write_bytes, atomic_write_json
from ..model import PoseModel
from ..skeletons import get_skeleton
from ..stages.cnn import CONFIGS, CPM, CPMNetwork, CPMStage
from ..targets import BeliefCodec


@dataclass
class CNNSettings:
    """Training options of the CNN backend; stored in the manifest and checked on resume."""

    config: str = "cpm-small"
    stages: int | None = None
    epochs: int = 40
    batch_size: int = 16
    lr: float | None = None  # default: see peak_lr
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    warmup: float = 0.05  # fraction of the steps
    device: str = "cpu"
    checkpoint_every: int = 200
    val_fraction: float = 0.05
    seed: int = 0
    scale: tuple = (0.7, 1.3)
    rotation: float = 40.0
    flip: float = 0.5
    compile: bool = False

    @classmethod
    def from_options(cls, config=None, device="auto", **options) -> CNNSettings:
        device = resolve_device(device)
        config = config or ("cpm-paper" if device.startswith("cuda") else "cpm-small")
        s = cls(
            config=config,
            device=device,
            compile=device.startswith("cuda"),
            **{k: v for k, v in options.items() if v is not None},
        )
        s.validate()
        return s

    def validate(self) -> None:
        if self.config not in CONFIGS:
            raise PoseMachinesError(f"unknown CNN config {self.config!r}; use {sorted(CONFIGS)}")
        if self.stages is not None and self.stages < 1:
            raise PoseMachinesError(f"--stages must be at least 1, got {self.stages}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise PoseMachinesError(f"--{name.replace('_', '-')} must be at least 1")
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
    """Pack-crop -> input-crop matrices (B, 2, 3) and flip flags for the samples ``idx``."""
    centre = np.full(2, (crops.side - 1) / 2.0)
    mats, flips = [], []
    for _ in idx:
        scale, rot, flip, shift = aug.draw(rng) if aug else (1.0, 0.0, False, np.zeros(2))
        mats.append(
            crop_transform(
                centre + shift * crops.box_side, crops.box_side, input_size, scale, rot, flip
            )
        )
        flips.append(flip)
    return np.stack(mats), np.array(flips)


def warp_batch(images: torch.Tensor, matrices: np.ndarray, out_size: int) -> torch.Tensor:
    """Resample (B, H, W, 3) uint8 images on their device through (B, 2, 3) pixel matrices.

    Returns (B, 3, out, out) float in [-0.5, 0.5]; bilinear, as ``crops.warp_image``.
    """
    b, h, w = images.shape[:3]
    inv = np.linalg.inv(np.concatenate([matrices, np.tile([[[0, 0, 1.0]]], (b, 1, 1))], 1))
    # output normalised coords -> output pixels -> input pixels -> input normalised coords
    d_out = np.array(
        [[out_size / 2, 0, (out_size - 1) / 2], [0, out_size / 2, (out_size - 1) / 2], [0, 0, 1]]
    )
    d_in = np.array([[2 / w, 0, 1 / w - 1], [0, 2 / h, 1 / h - 1], [0, 0, 1]])
    theta = torch.as_tensor((d_in @ inv @ d_out)[:, :2], dtype=torch.float32, device=images.device)
    grid = F.affine_grid(theta, (b, 3, out_size, out_size), align_corners=False)
    x = images.permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.div_(255).sub_(0.5)


def batch_targets(crops: PackedCrops, idx, matrices, flips, perm, codec: BeliefCodec, device):
    joints = apply_affine(matrices, crops.joints[idx])
    labelled = crops.labelled[idx].copy()
    joints[flips] = joints[flips][:, perm]
    labelled[flips] = labelled[flips][:, perm]
    j = torch.as_tensor(joints, dtype=torch.float32, device=device)
    return codec.encode(j, torch.as_tensor(labelled, device=device))


def stage_losses(beliefs, targets, weights) -> torch.Tensor:
    """(T,) masked mean squared error of every stage against the shared targets."""
    w = weights[:, :, None, None]
    return torch.stack([((b.float() - targets) ** 2 * w).mean() for b in beliefs])


def learning_rate(step: int, total: int, s: CNNSettings) -> float:
    """AdamW: linear warm-up then cosine decay. SGD: the paper's step decay (x 1/3, 3 times)."""
    if s.optimizer == "sgd":
        return s.peak_lr * (1 / 3) ** min(3, int(4 * step / max(total, 1)))
    warm = max(1, int(s.warmup * total))
    if step < warm:
        return s.peak_lr * (step + 1) / warm
    return s.peak_lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


# -- checkpoints --------------------------------------------------------------------------------


def _tensor_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(folder: Path, module, optimizer, state: dict) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write_bytes(folder / "weights.safetensors", save(weights))
    atomic_write_bytes(folder / "optimizer.pt", _tensor_bytes(optimizer.state_dict()))
    atomic_write_json(folder / "state.json", state)  # last: the checkpoint is complete


def load_checkpoint(folder: Path, identity: dict):
    from safetensors.torch import load_file

    path = folder / "state.json"
    if not path.is_file():
        raise PoseMachinesError(f"{folder.parent}: nothing to resume (no checkpoint/state.json)")
    state = json.loads(path.read_text())
    differs = {
        k: (state["identity"].get(k), v)
        for k, v in identity.items()
        if state["identity"].get(k) != v
    }
    if differs:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differs.items())
        raise PoseMachinesError(f"refusing to resume from a different configuration ({detail})")
    weights = load_file(str(folder / "weights.safetensors"))
    opt = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    return state, weights, opt


# -- training -----------------------------------------------------------------------------------


def _validate(module, crops: PackedCrops, codec, skeleton, device, batch: int = 64) -> list:
    """PCK@0.2 of every stage on un-augmented validation crops (crop coordinates)."""
    if len(crops) == 0:
        return []
    module.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(crops), batch):
            idx = np.arange(start, min(start + batch, len(crops)))
            mats, _ = crop_matrices(crops, codec.input_size, idx, None, None)
            x = warp_batch(
                torch.as_tensor(crops.images[idx], device=device), mats, codec.input_size
            )
            beliefs = module(x)
            p = skeleton.num_joints
            preds.append([codec.decode(b[:, :p].float().cpu().numpy())[0] for b in beliefs])
            gts = apply_affine(mats, crops.joints[idx])
            preds[-1].append(gts)
    module.train()
    stage_preds = [np.concatenate([p[t] for p in preds]) for t in range(len(preds[0]) - 1)]
    gt = np.concatenate([p[-1] for p in preds])
    result = evaluate(np.stack(stage_preds), gt, crops.labelled, skeleton)
    return [s["pck@0.2"] for s in result.per_stage]


def _distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return world, rank


def train_cnn(
    dataset,
    settings: CNNSettings,
    out_dir: str | Path,
    packed: str | Path | None = None,
    resume: bool = False,
    progress: bool = False,
    max_steps: int | None = None,
) -> PoseModel | None:
    """Train a CPM; returns the model on rank 0 (None on other ranks).

    ``max_steps`` stops early after that many steps in this call (for tests of resume).
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoint"
    world, rank = _distributed()
    device = torch.device(settings.device)
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")
            torch.cuda.set_device(device)
    torch.manual_seed(settings.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)

    cfg = settings.network_config()
    codec = BeliefCodec(cfg.input_size, cfg.stride, cfg.sigma)
    if packed is not None:
        crops = load_pack(packed)
        skeleton = get_skeleton(crops.skeleton)
        source = f"packed:{packed} ({', '.join(crops.sources)})"
    else:
        skeleton = dataset.skeleton
        crops = pack_crops([dataset], side=int(round(cfg.input_size * 1.5)), pad=1.5)
        source = dataset.describe()
    if skeleton.num_joints != cfg.num_joints:
        cfg = replace(cfg, num_joints=skeleton.num_joints)
    order = np.random.default_rng([settings.seed, 7]).permutation(len(crops))
    n_val = int(round(settings.val_fraction * len(crops))) if len(crops) > 20 else 0
    val, train = crops.subset(np.sort(order[:n_val])), crops.subset(np.sort(order[n_val:]))
    batch = min(settings.batch_size, len(train))
    if batch < world:
        raise PoseMachinesError(f"batch of {batch} cannot be shared by {world} processes")
    steps_per_epoch = len(train) // batch
    total = steps_per_epoch * settings.epochs

    # channels_last is faster on CUDA and, through oneDNN, about 1.7x faster on the CPU too.
    module = CPM(cfg).to(device).to(memory_format=torch.channels_last)
    params = module.parameters()
    if settings.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=settings.peak_lr, weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=settings.peak_lr, momentum=0.9, weight_decay=settings.weight_decay
        )
    identity = {
        "settings": {
            k: v
            for k, v in settings.to_dict().items()
            if k not in ("device", "checkpoint_every", "compile")
        },
        "network": cfg.to_dict(),
        "data": source,
        "n_train": len(train),
    }
    step = 0
    if resume:
        state, weights, opt_state = load_checkpoint(ckpt_dir, identity)
        module.load_state_dict(weights)
        opt.load_state_dict(opt_state)
        step = state["step"]
    last_good = step
    runner = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        runner = DistributedDataParallel(
            module, device_ids=[device] if device.type == "cuda" else None
        )
    if settings.compile and device.type == "cuda":
        runner = torch.compile(runner)
    images = torch.as_tensor(train.images, device=device)  # decoded once, kept on the device
    aug = Augmentation(scale=tuple(settings.scale), rotation=settings.rotation, flip=settings.flip)
    perm_lr = skeleton.flip_permutation()
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    log_path = out_dir / "train_log.jsonl"
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not resume and log_path.exists():
            log_path.unlink()

    stop = total if max_steps is None else min(total, step + max_steps)
    bar = tqdm(
        total=total, initial=step, desc="train", unit="step", disable=not progress or rank != 0
    )
    epoch_losses, seen, t0 = [], 0, time.time()
    module.train()
    while step < stop:
        epoch, k = divmod(step, steps_per_epoch)
        idx_all = np.random.default_rng([settings.seed, epoch]).permutation(len(train))
        idx = idx_all[k * batch : (k + 1) * batch]
        rng = np.random.default_rng([settings.seed, 1_000_003, step])
        mats, flips = crop_matrices(train, cfg.input_size, idx, aug, rng)
        mine = slice(rank, None, world)
        idx, mats, flips = idx[mine], mats[mine], flips[mine]
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, total, settings)
        try:
            x = warp_batch(images[torch.as_tensor(idx, device=device)], mats, cfg.input_size)
            x = x.contiguous(memory_format=torch.channels_last)
            targets, weights = batch_targets(train, idx, mats, flips, perm_lr, codec, device)
            with autocast:
                beliefs = runner(x)
            losses = stage_losses(beliefs, targets, weights)
            loss = losses.sum()
            if not torch.isfinite(loss):
                raise PoseMachinesError(
                    f"loss became {loss.item()} at step {step}; training stopped. The last good "
                    f"checkpoint (step {last_good}) is in {ckpt_dir}; lower --lr and --resume"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        except torch.OutOfMemoryError:
            raise PoseMachinesError(
                f"out of GPU memory at batch size {batch}; try --batch-size {max(1, batch // 2)}"
            ) from None
        step += 1
        seen += len(idx) * world
        epoch_losses.append(losses.detach().float().cpu().numpy())
        rate = seen / max(time.time() - t0, 1e-9)
        bar.update()
        bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{rate:.0f}")
        if rank == 0 and (step % settings.checkpoint_every == 0 or step == total):
            save_checkpoint(ckpt_dir, module, opt, {"step": step, "identity": identity})
            last_good = step
        if step % steps_per_epoch == 0:
            val_pck = _validate(module, val, codec, skeleton, device) if rank == 0 else []
            record = {
                "epoch": epoch + 1,
                "step": step,
                "loss": float(np.sum(np.mean(epoch_losses, 0))),
                "loss_per_stage": np.mean(epoch_losses, 0).round(6).tolist(),
                "val_pck@0.2_per_stage": val_pck,
                "images_per_s": round(rate, 1),
            }
            if rank == 0:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                bar.write(
                    f"epoch {epoch + 1}: loss {record['loss']:.4f}, "
                    f"val PCK@0.2 {val_pck}, {rate:.0f} img/s"
                )
            epoch_losses = []
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
        "images": len(train),
        "validation_images": len(val),
    }
    return model
