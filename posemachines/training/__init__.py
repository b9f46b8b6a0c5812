"""Training strategies. Shared here: turning a dataset into crops and targets."""

from __future__ import annotations

import warnings

import numpy as np
from joblib import delayed

from posemachines.core.crops import NO_AUGMENTATION, Augmentation, person_crop
from posemachines.data import CorruptImageError, PoseDataset, SkippedImages
from posemachines.errors import PoseMachinesError
from posemachines.evaluation.metrics import score_keypoints
from posemachines.parallel import workers


def background_beliefs(n: int, channels: int, side: int) -> np.ndarray:
    """(n, channels, side, side) belief maps that say "background" everywhere: what a sample
    gets that no stage has predicted (its image unreadable, say)."""
    maps = np.zeros((n, channels, side, side), dtype=np.float32)
    maps[:, -1] = 1.0
    return maps


def crop_pck(stage_beliefs, joints, labelled, codec, skeleton) -> list[float]:
    """PCK@0.2 of each stage's beliefs (N, P+1, h, w) against joints (N, P, 2) in the same
    crops' coordinates: what both trainers report on held-out crops (the forest's out-of-fold
    beliefs, the CNN's validation crops)."""
    p = skeleton.num_joints
    keypoints = np.stack([codec.decode(np.asarray(b)[:, :p])[0] for b in stage_beliefs])
    return [s["pck@0.2"] for s in score_keypoints(keypoints, joints, labelled, skeleton).per_stage]


def _crop_one(dataset, i, size, augmentation, seed, on_bad_image):
    rng = np.random.default_rng(seed)
    try:
        sample = dataset[i]
    except CorruptImageError as exc:
        if on_bad_image == "stop":
            raise
        return str(exc)  # the reason, for the count of skipped images
    return person_crop(sample, size, dataset.skeleton, augmentation, rng)


def crop_dataset(
    dataset: PoseDataset,
    size: int,
    augmentation: Augmentation = NO_AUGMENTATION,
    seed: int = 0,
    copies: int = 1,
    n_jobs: int = 1,
    on_bad_image: str = "skip",
    skipped: SkippedImages | None = None,
):
    """Crops of every sample (``copies`` augmented versions each), read in parallel.

    Returns images (M, S, S, 3) uint8, joints (M, P, 2), labelled (M, P), source index (M,).
    Per-crop seeds are drawn up front so the result does not depend on ``n_jobs``.
    Unreadable images stop the run, or are skipped and recorded in ``skipped`` (a warning
    counts them when no collector is given).
    """
    seeds = np.random.default_rng(seed).integers(0, 2**63, size=(copies, len(dataset)))
    jobs = [(i, int(seeds[c, i])) for c in range(copies) for i in range(len(dataset))]
    crops = workers(n_jobs, batch_size=32)(
        delayed(_crop_one)(dataset, i, size, augmentation, s, on_bad_image) for i, s in jobs
    )
    kept = [(job[0], c) for job, c in zip(jobs, crops) if not isinstance(c, str)]
    for (i, _), c in zip(jobs, crops):
        if isinstance(c, str) and skipped is not None and dataset.names[i] not in skipped.names:
            skipped.add(dataset.names[i], c)
    if len(kept) < len(jobs) and skipped is None:
        warnings.warn(
            f"{len(jobs) - len(kept)} unreadable image(s) skipped in {dataset.describe()}",
            stacklevel=2,
        )
    if not kept:
        raise PoseMachinesError(f"no readable images in {dataset.describe()}")
    return (
        np.stack([c.image for _, c in kept]),
        np.stack([c.joints for _, c in kept]),
        np.stack([c.labelled for _, c in kept]),
        np.array([i for i, _ in kept]),
    )
