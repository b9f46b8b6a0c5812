"""A pose model: skeleton, codec, crop protocol and a list of stages, with batch prediction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np

from posemachines.core.batches import batches
from posemachines.core.crops import person_crop, to_image_coordinates
from posemachines.core.runner import run_stages
from posemachines.core.skeletons import Skeleton
from posemachines.core.targets import BeliefCodec
from posemachines.core.tta import NO_TTA, TestTimeAugmentation, averaged_beliefs
from posemachines.data import ImageList, PoseDataset, SkippedImages, iter_samples
from posemachines.errors import PoseMachinesError


@dataclass
class Predictions:
    """Keypoints (T, N, P, 2) in image coordinates and confidences (T, N, P) for every stage.

    Samples whose image could not be read hold NaN (scored as missing predictions).
    """

    keypoints: np.ndarray
    confidence: np.ndarray
    names: list = field(default_factory=list)
    skipped: SkippedImages = field(default_factory=SkippedImages)
    # The beliefs the keypoints were decoded from, of the samples asked for (``keep_beliefs``):
    # sample index -> every stage's (P+1, h, w), in the crop's frame.
    beliefs: dict = field(default_factory=dict)


class BatchPredictions(NamedTuple):
    """One batch: keypoints (T, n, P, 2) in image pixels, confidences (T, n, P), and the
    beliefs they were decoded from (per stage (n, P+1, h, w), test-time views averaged)."""

    keypoints: np.ndarray
    confidence: np.ndarray
    beliefs: list


@dataclass
class TrainingRecord:
    """Where a model came from: filled by every trainer, kept in the manifest, read by
    ``pm compare`` and ``pm evaluate`` (which score a model on its own dataset by default)."""

    dataset: str = ""  # e.g. "lsp:train (1000 samples, image protocol)"
    dataset_name: str = ""  # the dataset to score on by default ("packed": trained from a pack)
    protocol: str = ""
    seed: int | None = None
    seconds: float | None = None  # wall time of training, resumed parts included
    settings: dict = field(default_factory=dict)  # the trainer's settings, as resolved
    skipped_images: list = field(default_factory=list)
    skipped_annotations: list = field(default_factory=list)  # left out as bad (where, why)
    details: dict = field(default_factory=dict)  # the trainer's own figures (steps, OOF PCK)
    command: str | None = None  # the pm command line, when trained from it

    @classmethod
    def for_dataset(cls, dataset, seed: int | None, settings: dict, **fields) -> TrainingRecord:
        return cls(
            dataset=dataset.describe(),
            dataset_name=dataset.name,
            protocol=dataset.protocol,
            seed=seed,
            settings=settings,
            skipped_annotations=list(getattr(dataset, "skipped_annotations", [])),
            **fields,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_manifest(cls, manifest: dict) -> TrainingRecord:
        """The record of a manifest, also one written before records existed (a flat dict,
        with the settings under the backend's name)."""
        raw = manifest.get("training")
        raw = dict(raw) if isinstance(raw, dict) else {}
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in raw.items() if k in known})
        record.details = {**record.details, **{k: v for k, v in raw.items() if k not in known}}
        if not record.settings:
            old = manifest.get("forest") or manifest.get("cnn")
            record.settings = dict(old) if isinstance(old, dict) else {}
        return record


def backend_of(stages) -> str:
    """The backend a model made of ``stages`` is: their kind, or "hybrid" when kinds mix."""
    kinds = {stage.kind for stage in stages}
    return kinds.pop() if len(kinds) == 1 else "hybrid"


@dataclass
class PoseModel:
    """Everything needed to turn images into keypoints.

    ``record`` says how it was trained; ``info`` holds the manifest's other descriptive
    fields (evaluations); neither changes what the model predicts.
    """

    backend: str
    skeleton: Skeleton
    codec: BeliefCodec
    stages: list
    info: dict = field(default_factory=dict)
    record: TrainingRecord = field(default_factory=TrainingRecord)

    def save(self, folder, overwrite: bool = True):
        """Write the model as a model directory (see ``io.save_model``); returns its path.
        Files in ``folder`` that posemachines did not write are never replaced."""
        from posemachines.files.model_dir import save_model
        from posemachines.files.runs import owned

        with owned(folder, "train"):
            return save_model(self, folder, overwrite=overwrite)

    @property
    def input_size(self) -> int:
        return self.codec.input_size

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_beliefs(self, crops: np.ndarray) -> list[np.ndarray]:
        """Beliefs (N, P+1, h, w) of every stage for a batch of crops (N, S, S, 3) uint8."""
        return run_stages(self.stages, crops)

    def decode(self, beliefs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Crop keypoints (T, N, P, 2) and confidences (T, N, P) from each stage's beliefs."""
        p = self.skeleton.num_joints
        decoded = [self.codec.decode(b[:, :p]) for b in beliefs]
        return np.stack([k for k, _ in decoded]), np.stack([c for _, c in decoded])

    def check_dataset(self, dataset: PoseDataset) -> None:
        if not self.skeleton.matches(dataset.skeleton):
            raise PoseMachinesError(
                f"skeleton mismatch: the model predicts {self.skeleton.describe()}, "
                f"{dataset.describe()} is annotated in {dataset.skeleton.describe()} "
                f"({self.skeleton.mismatch(dataset.skeleton)})"
            )

    def predict_samples(
        self, samples: Sequence, tta: TestTimeAugmentation = NO_TTA
    ) -> BatchPredictions:
        """Image-coordinate keypoints (T, n, P, 2) and confidences for a batch of samples,
        from beliefs averaged over the test-time views of ``tta`` (none by default), and
        those beliefs."""
        crops = [person_crop(s, self.input_size, self.skeleton) for s in samples]
        if tta.is_identity:
            beliefs = self.stage_beliefs(np.stack([c.image for c in crops]))
        else:
            perm = self.skeleton.flip_permutation()
            beliefs = averaged_beliefs(self.stage_beliefs, samples, self.input_size, perm, tta)
        keypoints, confidence = self.decode(beliefs)
        transforms = np.stack([c.transform for c in crops])
        in_image = np.stack([to_image_coordinates(k, transforms) for k in keypoints])
        return BatchPredictions(in_image, confidence, list(beliefs))

    def predict(
        self,
        data,
        *,
        batch_size: int = 32,
        on_bad_image: str = "skip",
        progress: bool = False,
        tta: TestTimeAugmentation = NO_TTA,
        keep_beliefs: int = 0,
    ) -> Predictions:
        """Keypoints of every stage for a dataset, or for images (arrays (H, W, 3) or paths;
        the person box is then the whole image); the beliefs of the first ``keep_beliefs``
        samples predicted are kept too (``Predictions.beliefs``)."""
        from posemachines.progress import progress_bar

        dataset = data if isinstance(data, PoseDataset) else ImageList(data, self.skeleton)
        self.check_dataset(dataset)
        n, p, t = len(dataset), self.skeleton.num_joints, self.num_stages
        keypoints = np.full((t, n, p, 2), np.nan)
        confidence = np.zeros((t, n, p))
        kept, skipped = {}, SkippedImages()
        samples = iter_samples(dataset, on_bad_image=on_bad_image, skipped=skipped)
        with progress_bar(total=n, desc="predict", unit="img", disable=not progress) as bar:
            for batch in batches(samples, batch_size):
                rows = [i for i, _ in batch]
                k, c, beliefs = self.predict_samples([s for _, s in batch], tta)
                keypoints[:, rows], confidence[:, rows] = k, c
                for j, i in enumerate(rows[: max(keep_beliefs - len(kept), 0)]):
                    kept[i] = [b[j] for b in beliefs]
                bar.update(len(batch))
        return Predictions(keypoints, confidence, list(dataset.names), skipped, kept)


def load_model_directory(folder: str | Path, device: str = "cpu") -> PoseModel:
    """Load a model directory or a zoo model by name (``zoo.resolve``), verifying every
    file (``files.model_dir.read_model``); ``device`` places CNN stages. ``loading.load_model``
    takes an ``.onnx`` file too: use that unless stages of a directory are needed."""
    from posemachines.files.model_dir import read_model
    from posemachines.zoo import resolve

    files = read_model(resolve(folder)[0], device)
    record = TrainingRecord.from_manifest(files.manifest)
    return PoseModel(
        files.manifest["backend"], files.skeleton, files.codec, files.stages, files.info, record
    )
