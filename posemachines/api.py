"""The Python interface in a few functions: what a notebook needs, what ``pm`` runs.

import posemachines as pm

train = pm.load_dataset("synthetic", "train", size=200)
model = pm.train("forest", train, stages=2)
result = pm.evaluate(model, pm.load_dataset("synthetic", "test"))
keypoints = model.predict(["photo.jpg"]).keypoints[-1]    # (1, P, 2), last stage
model.save("runs/my-forest")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .data import PoseDataset
from .errors import PoseMachinesError
from .evaluation import EvaluationResult
from .model import PoseModel
from .tta import NO_TTA, TestTimeAugmentation

BACKENDS = ("mean", "forest", "cnn")


def train(
    backend: str,
    dataset: PoseDataset,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    n_jobs: int = -1,
    progress: bool = False,
    **options,
) -> PoseModel:
    """Train a model of ``backend`` ("mean", "forest" or "cnn") on ``dataset``.

    ``options`` are the backend's settings (``ForestSettings`` or ``CNNSettings`` fields, e.g.
    ``stages=2, trees=20`` or ``config="cpm-small", epochs=5``; the mean prior takes
    ``input_size``, ``stride`` and ``sigma``). ``out`` keeps the training checkpoints (and the
    CNN's log) in that folder; without it they go to a temporary one. The model is returned,
    not saved: ``model.save(path)`` writes it.
    """
    if backend not in BACKENDS:
        raise PoseMachinesError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    if backend == "mean":
        from .training.mean import train_mean

        return train_mean(dataset, n_jobs=n_jobs, **options)
    if out is None:
        with tempfile.TemporaryDirectory(prefix="posemachines-") as tmp:
            return train(
                backend, dataset, out=tmp, seed=seed, n_jobs=n_jobs, progress=progress, **options
            )
    if backend == "forest":
        from .training.forest import ForestSettings, train_forest

        settings = ForestSettings.from_options(**options)
        settings.validate()
        return train_forest(dataset, settings, out, seed=seed, n_jobs=n_jobs, progress=progress)
    from .training.cnn import CNNSettings, train_cnn

    settings = CNNSettings.from_options(seed=seed, **options)
    return train_cnn(dataset, settings, out, progress=progress)


def evaluate(
    model: PoseModel,
    dataset: PoseDataset,
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    on_bad_image: str = "skip",
) -> EvaluationResult:
    """Score ``model`` on ``dataset`` as ``pm evaluate`` does (every stage, every metric)."""
    from .comparison import Entry, score_entry

    entry = Entry("model", Path("."), model)
    result, _ = score_entry(
        entry, dataset, batch_size=batch_size, on_bad_image=on_bad_image, tta=tta
    )
    return result


def compare(entries, dataset: str | None = None, *, out=None, **options) -> Path:
    """Compare model directories and prediction files as ``pm compare`` does; returns the
    report folder (``options``: split, data_root, tta, device, ...)."""
    from .comparison import run_compare

    return run_compare(list(entries), dataset=dataset, out=out, **options)
