"""Training the mean-pose prior: average the training targets."""

from __future__ import annotations

import time

import numpy as np

from ..data import PoseDataset, SkippedImages
from ..errors import PoseMachinesError
from ..model import PoseModel, TrainingRecord
from ..stages.mean import MeanPoseStage
from ..targets import BeliefCodec
from . import crop_dataset

CHUNK = 1024  # samples cropped at a time


def train_mean(
    dataset: PoseDataset,
    input_size: int = 160,
    stride: int = 4,
    sigma: float = 6.0,
    n_jobs: int = 1,
    on_bad_image: str = "skip",
    progress: bool = False,
) -> PoseModel:
    """The average target belief maps of ``dataset``'s person crops, read ``CHUNK`` samples at
    a time (memory does not grow with the dataset)."""
    from tqdm.auto import tqdm

    start = time.time()
    codec = BeliefCodec(input_size, stride, sigma)
    skipped = SkippedImages()
    stage = MeanPoseStage()
    with tqdm(total=len(dataset), desc="mean", unit="img", disable=not progress) as bar:
        for first in range(0, len(dataset), CHUNK):
            part = dataset.subset(np.arange(first, min(first + CHUNK, len(dataset))))
            _, joints, labelled, _ = crop_dataset(
                part, input_size, n_jobs=n_jobs, on_bad_image=on_bad_image, skipped=skipped
            )
            if len(joints):
                stage.partial_fit(codec.encode(joints, labelled)[0])
            bar.update(len(part))
    if stage.mean_beliefs_ is None:
        raise PoseMachinesError(f"{dataset.describe()}: no readable image to average")
    model = PoseModel("mean", dataset.skeleton, codec, [stage])
    model.record = TrainingRecord.for_dataset(
        dataset,
        None,
        codec.to_dict(),
        seconds=round(time.time() - start, 1),
        skipped_images=skipped.names,
    )
    return model
