"""Training the mean-pose prior: average the training targets."""

from __future__ import annotations

import time

from ..data import PoseDataset, SkippedImages
from ..model import PoseModel, TrainingRecord
from ..stages.mean import MeanPoseStage
from ..targets import BeliefCodec
from . import crop_dataset


def train_mean(
    dataset: PoseDataset,
    input_size: int = 160,
    stride: int = 4,
    sigma: float = 6.0,
    n_jobs: int = 1,
    on_bad_image: str = "skip",
) -> PoseModel:
    start = time.time()
    codec = BeliefCodec(input_size, stride, sigma)
    skipped = SkippedImages()
    _, joints, labelled, _ = crop_dataset(
        dataset, input_size, n_jobs=n_jobs, on_bad_image=on_bad_image, skipped=skipped
    )
    targets, _ = codec.encode(joints, labelled)
    model = PoseModel("mean", dataset.skeleton, codec, [MeanPoseStage().fit(targets)])
    model.record = TrainingRecord.for_dataset(
        dataset,
        None,
        codec.to_dict(),
        seconds=round(time.time() - start, 1),
        skipped_images=skipped.names,
    )
    return model
