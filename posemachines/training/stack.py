"""Stacks of forest and CNN stages, trained bottom-up with cross-fitting.

A stack is read bottom-up, ``cnn:1,forest:2`` (a CPM stage 1, then two forest stages with ψ
context on its beliefs) or ``forest:1,cnn:2`` (a forest stage 1, then two convolutional
refinement stages reading their own image features and the forest's beliefs). Every part
above the first learns from beliefs that the parts below gave for images they were *not*
trained on, as the 2014 paper stacks its own stages: the samples are split into K folds, and
K fold models of each part (trained on the other folds) give out-of-fold beliefs for the
training set; the part kept for prediction is trained on all the data. A forest part's own
stage-wise stacking uses the same folds, so its last stage's out-of-fold beliefs serve the
part above.

The whole stack shares one crop size and belief grid, the forest's when it has a forest part
(its features are tuned to it), else the CNN's; a CNN part runs at that crop size on its own
grid, and its beliefs are resampled on the way in and out.
"""

from __future__ import annotations

import io
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..data import SkippedImages, iter_samples
from ..errors import PoseMachinesError
from ..files import atomic_write_bytes
from ..model import PoseModel, TrainingRecord, backend_of
from ..targets import BeliefCodec
from . import background_beliefs, crop_pck
from .checkpoint import Checkpoint

KINDS = ("forest", "cnn")


@dataclass(frozen=True)
class Part:
    """``stages`` stages of one ``kind``."""

    kind: str
    stages: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.stages}"


def parse_stack(spec: str) -> list[Part]:
    """``"cnn:1,forest:2"`` -> [Part("cnn", 1), Part("forest", 2)], with a clear error for a
    malformed one."""
    parts = []
    for item in str(spec).split(","):
        kind, sep, count = item.strip().partition(":")
        if kind not in KINDS:
            raise PoseMachinesError(
                f"--stack {spec!r}: unknown stage kind {kind!r} (use {', '.join(KINDS)}), "
                "e.g. cnn:1,forest:2"
            )
        if not sep or not count.isdigit() or int(count) < 1:
            raise PoseMachinesError(
                f"--stack {spec!r}: {item.strip()!r} needs a number of stages of at least 1, "
                f"e.g. {kind}:2"
            )
        parts.append(Part(kind, int(count)))
    return parts


def stack_codec(parts: list[Part], forest, cnn) -> BeliefCodec:
    """The crop size and belief grid of the whole model."""
    if any(p.kind == "forest" for p in parts):
        return forest.codec()
    return cnn.network_config().codec()


def train_stack(
    dataset,
    spec: str,
    forest,
    cnn,
    out_dir: str | Path,
    *,
    folds: int = 3,
    seed: int = 0,
    n_jobs: int = -1,
    progress: bool = False,
    on_bad_image: str = "skip",
    resume: bool = False,
) -> PoseModel:
    """Train the stack ``spec`` on ``dataset``; ``forest`` (ForestSettings) and ``cnn``
    (CNNSettings) give the settings of its parts of each kind (their stage counts and folds
    come from the stack). Each part's work goes to ``OUT/parts/N-KIND``, and a finished part
    (its model and the beliefs it hands up) to its checkpoint there: ``resume`` takes the
    finished parts from their checkpoints and trains the rest again."""
    from tqdm.auto import tqdm

    log = tqdm.write if progress else (lambda *_: None)
    parts = parse_stack(spec)
    if folds < 1:
        raise PoseMachinesError(f"--folds must be at least 1, got {folds}")
    if len(dataset) < folds:
        raise PoseMachinesError(f"{folds} folds need at least {folds} images")
    start = time.time()
    # folds=1 is the naive stack, each part on the in-sample beliefs of the parts below: the
    # failure cross-fitting exists to prevent, kept as a baseline. The forest's own stage-wise
    # stacking still needs two folds then.
    forest = replace(forest.resolved(dataset), folds=max(folds, 2))
    codec = stack_codec(parts, forest, cnn)
    forest = replace(forest, input_size=codec.input_size, stride=codec.stride, sigma=codec.sigma)
    fold_of = np.random.default_rng([seed, 3]).permutation(len(dataset)) % max(folds, 2)
    targets = crop_joints(dataset, codec.input_size)  # to score each part's held-out beliefs
    mirror = any(p.kind == "forest" for p in parts) and forest.mirror
    stages, below, summary = [], None, []
    identity = {
        "stack": spec,
        "folds": folds,
        "seed": seed,
        "dataset": dataset.describe(),
        "forest": forest.to_dict(),
        "cnn": cnn.to_dict(),
    }
    for i, part in enumerate(parts):
        folder = Path(out_dir) / "parts" / f"{i + 1}-{part.kind}"
        above = i < len(parts) - 1
        t0 = time.time()
        checkpoint = Checkpoint(folder / "finished", {**identity, "part": i + 1})
        if resume and checkpoint.exists():
            model, below, row = _load_part(checkpoint)
            stages += model.stages
            summary.append(row)
            log(f"stack part {i + 1}/{len(parts)}: {part}, finished before")
            continue
        log(f"stack part {i + 1}/{len(parts)}: {part}")
        if part.kind == "forest":
            settings = replace(forest, stages=part.stages)
            oof = {} if above else None
            model = _train_forest_part(
                dataset, settings, folder, seed, n_jobs, progress, on_bad_image, below, fold_of, oof
            )
            if above and folds == 1:
                oof = _in_sample(dataset, model.stages, below, codec, mirror)
            below = oof
        else:
            settings = _cnn_part_settings(cnn, part, codec, below is not None)
            model = _train_cnn(dataset, settings, folder / "all", below, codec, progress)
            if above and folds == 1:
                below = _in_sample(dataset, model.stages, below, codec, mirror)
            elif above:
                below = _cnn_out_of_fold(
                    dataset, settings, folder, fold_of, below, codec, mirror, progress
                )
        stages += model.stages
        row = {"part": str(part), "first_stage": len(stages) - part.stages + 1}
        row["seconds"] = round(time.time() - t0, 1)
        if above:
            pck = crop_pck([below["plain"]], *targets, codec, dataset.skeleton)[0]
            # What the part above learns from, scored on the training images: out of fold,
            # or in sample (folds=1, and then far more flattering than on new images).
            key = "out_of_fold_pck@0.2" if folds > 1 else "in_sample_pck@0.2"
            row[key] = round(pck, 4)
            log(f"{part}: {key.replace('_', ' ')[:-9]} PCK@0.2 {100 * pck:.1f}")
        summary.append(row)
        _save_part(checkpoint, model, below if above else None, row)
    for i, part in enumerate(parts):  # the stack's model holds every part now
        shutil.rmtree(Path(out_dir) / "parts" / f"{i + 1}-{part.kind}" / "finished", True)
    model = PoseModel(backend_of(stages), dataset.skeleton, codec, stages)
    model.record = TrainingRecord.for_dataset(
        dataset,
        seed,
        {
            "stack": ",".join(map(str, parts)),
            "folds": folds,
            "forest": forest.to_dict(),
            "cnn": cnn.to_dict(),
        },
        seconds=round(time.time() - start, 1),
        details={"parts": summary},
    )
    return model


def _save_part(checkpoint: Checkpoint, model: PoseModel, below: dict | None, row: dict):
    """A finished part: its model, the beliefs it hands up, its summary row."""
    from ..io import save_model

    folder = checkpoint.begin()
    save_model(model, folder / "model")
    if below is not None:
        buf = io.BytesIO()
        np.savez(buf, **below)
        atomic_write_bytes(folder / "beliefs.npz", buf.getvalue())
    checkpoint.commit({"row": row})


def _load_part(checkpoint: Checkpoint) -> tuple[PoseModel, dict | None, dict]:
    from ..io import load_model

    state = checkpoint.load_state()
    model = load_model(checkpoint.current / "model")
    below = None
    path = checkpoint.current / "beliefs.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as arrays:
                below = {view: arrays[view] for view in arrays.files}
        except (OSError, ValueError) as exc:
            raise PoseMachinesError(f"{path}: unreadable ({exc}); train without --resume") from None
    return model, below, state["row"]


def _train_forest_part(
    dataset, settings, folder, seed, n_jobs, progress, on_bad_image, below, fold_of, oof
):
    from .forest import train_forest

    return train_forest(
        dataset,
        settings,
        folder,
        seed=seed,
        n_jobs=n_jobs,
        on_bad_image=on_bad_image,
        progress=progress,
        below=below,
        folds_by_sample=fold_of,
        oof_out=oof,
    )


def _cnn_part_settings(cnn, part: Part, codec: BeliefCodec, on_beliefs: bool):
    """The CNN settings of a part: its stage count, the stack's crop size, and (residual)
    refinement of the beliefs below for a part that is not the first."""
    overrides = dict(cnn.overrides or {})
    overrides.update(input_size=codec.input_size, foreign_input=on_beliefs, residual=on_beliefs)
    return replace(cnn, stages=part.stages, overrides=overrides)


def _train_cnn(dataset, settings, folder, below, codec, progress, indices=None):
    from .cnn import train_cnn

    subset = dataset if indices is None else dataset.subset(indices)
    plain = None if below is None else below["plain"]
    if plain is not None and indices is not None:
        plain = plain[indices]
    model = train_cnn(subset, settings, folder, progress=progress, below=plain, grid=codec.map_size)
    shutil.rmtree(Path(folder) / "checkpoint", ignore_errors=True)
    return model


def _cnn_out_of_fold(dataset, settings, folder, fold_of, below, codec, mirror, progress):
    """Out-of-fold beliefs of a CNN part: for each fold, a model trained on the other folds
    predicts its held-out samples (and their mirror images, for a forest part above)."""
    out = _background(dataset, codec, mirror)
    for k in range(int(fold_of.max()) + 1):
        held = np.flatnonzero(fold_of == k)
        train = np.flatnonzero(fold_of != k)
        model = _train_cnn(
            dataset, settings, Path(folder) / f"fold-{k + 1}", below, codec, progress, train
        )
        _predict_into(out, dataset, held, model.stages, below, codec)
    return out


def _in_sample(dataset, stages, below, codec, mirror) -> dict:
    """The beliefs a part gives for its own training samples (folds=1: no cross-fitting)."""
    out = _background(dataset, codec, mirror)
    _predict_into(out, dataset, np.arange(len(dataset)), stages, below, codec)
    return out


def _background(dataset, codec, mirror: bool) -> dict:
    """Belief arrays for every sample and view, background until predicted (a sample whose
    image cannot be read stays so)."""
    n, channels, side = len(dataset), dataset.skeleton.num_joints + 1, codec.map_size
    return {view: background_beliefs(n, channels, side) for view in _views(mirror)}


def _views(mirror: bool) -> dict:
    return {"plain": False, "mirror": True} if mirror else {"plain": False}


def _predict_into(out: dict, dataset, rows, stages, below, codec) -> None:
    """The last stage's beliefs for samples ``rows`` in every view of ``out``, given the
    beliefs of the stages below them."""
    from ..runner import run_stages
    from ..tta import view_crop

    samples = list(iter_samples(dataset, rows, skipped=SkippedImages()))
    for start in range(0, len(samples), 32):
        batch = samples[start : start + 32]
        idx = np.array([i for i, _ in batch])
        for view, flip in _views("mirror" in out).items():
            crops = np.stack([view_crop(s, codec.input_size, 1.0, flip) for _, s in batch])
            previous = None if below is None else below[view][idx]
            out[view][idx] = run_stages(stages, crops, previous=previous)[-1]


def crop_joints(dataset, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's joints in the coordinates of its person-box crop, and which count (a
    sample whose image cannot be read counts for nothing)."""
    from ..crops import apply_affine, crop_transform

    joints = np.zeros(dataset.joints.shape)
    labelled = np.zeros(dataset.labelled.shape, bool)
    for i, s in iter_samples(dataset, skipped=SkippedImages()):
        joints[i] = apply_affine(crop_transform(s.centre, s.box_side, size), s.joints)
        labelled[i] = s.labelled
    return joints, labelled
