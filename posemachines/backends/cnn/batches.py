"""The batch pipeline on the device: crops packed once in memory, a scale/rotation/flip drawn
per sample and step, the batch warped on the training device with ``grid_sample``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from posemachines.backends.cnn.settings import CNNSettings
from posemachines.core.crops import Augmentation, apply_affine, crop_transforms
from posemachines.core.skeletons import get_skeleton
from posemachines.core.targets import BeliefCodec
from posemachines.data import SkippedImages
from posemachines.data.pack import PackedCrops, load_pack, pack_crops


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
