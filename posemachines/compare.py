"""Entries (model directories or external prediction files), scoring them, timing them.

``pm evaluate``, ``pm compare`` and ``pm bench`` all go through these functions, so every entry
is scored on the same samples, with the same crops, decoding, metrics and timing method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import PoseDataset, SkippedImages, iter_samples
from .errors import PoseMachinesError
from .evaluation import EvaluationResult, evaluate
from .model import PoseModel
from .tta import NO_TTA, TestTimeAugmentation


@dataclass
class Entry:
    """One thing to score: a trained model or a file of predictions."""

    label: str
    path: Path
    model: PoseModel | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "predictions" if self.model is None else self.model.backend


def load_entry(path: str | Path, device: str = "cpu", label: str | None = None) -> Entry:
    from .io import load_model, read_manifest

    path = Path(path)
    if path.is_dir():
        return Entry(label or path.name, path, load_model(path, device), read_manifest(path))
    if path.suffix.lower() in (".mat", ".json") and path.is_file():
        return Entry(label or path.stem, path)
    raise PoseMachinesError(
        f"{path}: neither a model directory nor a prediction file (.mat or .json)"
    )


def score_entry(
    entry: Entry,
    dataset: PoseDataset,
    batch_size: int = 32,
    on_bad_image: str = "skip",
    progress: bool = False,
    one_based: bool = True,
    tta: TestTimeAugmentation = NO_TTA,
) -> tuple[EvaluationResult, np.ndarray]:
    """Evaluate an entry on ``dataset``; returns the result and keypoints (T, N, P, 2).

    ``tta`` applies to models; prediction files are scored as they are.
    """
    from .io import read_predictions

    skipped = []
    if entry.model is not None:
        predictions = entry.model.predict(dataset, batch_size, on_bad_image, progress, tta)
        preds, skipped = predictions.keypoints, predictions.skipped.names
        protocol = dataset.protocol
    else:
        preds = read_predictions(entry.path, dataset.skeleton, len(dataset), one_based)
        protocol = "external"
    result = evaluate(
        preds,
        dataset.joints,
        dataset.labelled,
        dataset.skeleton,
        dataset=dataset.name,
        split=dataset.split,
        protocol=protocol,
    )
    if entry.model is not None:
        result.test_time_augmentation = tta.to_dict()
    result.skipped_images = list(skipped)
    return result, preds


def time_model(
    model: PoseModel,
    dataset: PoseDataset,
    n: int = 20,
    warmup: int = 3,
    batch_size: int = 1,
    device: str = "cpu",
    tta: TestTimeAugmentation = NO_TTA,
    on_bad_image: str = "skip",
) -> dict:
    """Median milliseconds per image over the first ``n`` readable samples, image decoding
    included (an unreadable image stops the timing, or is passed over and counted).

    The same fixed samples, warm-up and batch size serve every model, so figures compare.
    """
    skipped = SkippedImages()
    indices = []
    for i, _ in iter_samples(dataset, on_bad_image=on_bad_image, skipped=skipped):
        indices.append(i)
        if len(indices) == n:
            break
    if not indices:
        raise PoseMachinesError(f"no readable image to time a model on in {dataset.describe()}")
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    for b in batches[: max(1, warmup)]:
        model.predict_samples([dataset[i] for i in b], tta)
    per_image = []
    for b in batches:
        start = time.perf_counter()
        model.predict_samples([dataset[i] for i in b], tta)
        per_image.append((time.perf_counter() - start) * 1000 / len(b))
    return {
        "ms_per_image": float(np.median(per_image)),
        "batch_size": batch_size,
        "images": len(indices),
        "skipped_images": skipped.names,
        "device": device,
        "test_time_augmentation": tta.to_dict(),
        "includes": "image decoding, crop, all stages and views, decoding",
    }
