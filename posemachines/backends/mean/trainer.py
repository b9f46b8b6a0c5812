"""Training the mean-pose prior: average the training targets."""

from __future__ import annotations

import time

from posemachines.backends.mean.settings import MeanSettings
from posemachines.backends.mean.stage import MeanPoseStage
from posemachines.core.batches import index_batches
from posemachines.core.model import PoseModel, TrainingRecord
from posemachines.data import PoseDataset, SkippedImages
from posemachines.errors import PoseMachinesError
from posemachines.registry import TrainingRun
from posemachines.training import crop_dataset

CHUNK = 1024  # samples cropped at a time


class MeanTrainer:
    """The average target belief maps of a dataset's person crops, read ``CHUNK`` samples at
    a time (memory does not grow with the dataset). It reads no beliefs from below."""

    gives_out_of_fold = False
    keeps_checkpoint = False

    def __init__(self, settings: MeanSettings, run: TrainingRun):
        self.settings = settings
        self.run = run

    def fit(self, dataset: PoseDataset, below=None, fold_of=None, out_of_fold=False) -> MeanTrainer:
        from posemachines.progress import progress_bar

        start, run, codec = time.time(), self.run, self.settings.codec()
        skipped = SkippedImages()
        stage = MeanPoseStage()
        with progress_bar(
            total=len(dataset), desc="mean", unit="img", disable=not run.progress
        ) as bar:
            for rows in index_batches(len(dataset), CHUNK):
                part = dataset.subset(rows)
                _, joints, labelled, _ = crop_dataset(
                    part,
                    codec.input_size,
                    n_jobs=run.n_jobs,
                    on_bad_image=run.on_bad_image,
                    skipped=skipped,
                )
                if len(joints):
                    stage.partial_fit(codec.encode(joints, labelled)[0])
                bar.update(len(part))
        if stage.mean_beliefs_ is None:
            raise PoseMachinesError(f"{dataset.describe()}: no readable image to average")
        self.model_ = PoseModel("mean", dataset.skeleton, codec, [stage])
        self.model_.record = TrainingRecord.for_dataset(
            dataset,
            None,
            codec.to_dict(),
            seconds=round(time.time() - start, 1),
            skipped_images=skipped.names,
        )
        return self
