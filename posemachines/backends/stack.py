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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from posemachines.core.batches import batches
from posemachines.core.model import PoseModel, TrainingRecord, backend_of
from posemachines.core.targets import BeliefCodec
from posemachines.data import SkippedImages, iter_samples
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import atomic_write_bytes
from posemachines.options import field_names
from posemachines.registry import TrainingRun, get_backend
from posemachines.training import background_beliefs, crop_pck
from posemachines.training.checkpoint import Checkpoint


@dataclass(frozen=True)
class Part:
    """``stages`` stages of backend ``kind``."""

    kind: str
    stages: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.stages}"


def parse_stack(spec: str) -> list[Part]:
    """``"cnn:1,forest:2"`` -> [Part("cnn", 1), Part("forest", 2)], with a clear error for a
    malformed one. Any registered backend that makes pose stages may be a part."""
    from posemachines.registry import backends

    known = {name: b for name, b in backends().items() if b.stages}  # makers of pose stages
    parts = []
    for item in str(spec).split(","):
        kind, sep, count = item.strip().partition(":")
        if kind not in known:
            raise PoseMachinesError(
                f"--stack {spec!r}: {kind!r} is not a kind of pose stage (use "
                f"{', '.join(known)}), e.g. cnn:1,forest:2"
            )
        if not sep or not count.isdigit() or int(count) < 1:
            raise PoseMachinesError(
                f"--stack {spec!r}: {item.strip()!r} needs a number of stages of at least 1, "
                f"e.g. {kind}:2"
            )
        parts.append(Part(kind, int(count)))
    return parts


def stack_codec(settings: dict) -> BeliefCodec:
    """The crop size and belief grid of the whole model: that of the part whose settings rank
    highest (a forest's features are tuned to its grid), the mean prior's default otherwise."""
    ranked = [s for s in settings.values() if hasattr(s, "codec")]
    if not ranked:
        return BeliefCodec(160, 4, 6.0)
    return max(ranked, key=lambda s: getattr(s, "codec_rank", 0)).codec()


def train_stack(dataset, spec: str, settings: dict, run: TrainingRun, folds: int = 3) -> PoseModel:
    """Train the stack ``spec`` on ``dataset``; ``settings`` holds the settings of each kind of
    part by backend name (their stage counts and geometry come from the stack). Each part's
    work goes to ``OUT/parts/N-KIND``, and a finished part (its model and the beliefs it hands
    up) to its checkpoint there: ``run.resume`` takes the finished parts from their
    checkpoints and trains the rest again."""
    parts = parse_stack(spec)
    if folds < 1:
        raise PoseMachinesError(f"--folds must be at least 1, got {folds}")
    if len(dataset) < folds:
        raise PoseMachinesError(f"{folds} folds need at least {folds} images")
    start = time.time()
    plan = _Plan.make(dataset, parts, settings, run.seed, folds)
    described = {kind: _settings_dict(s) for kind, s in settings.items()}
    identity = {"stack": spec, "folds": folds, "seed": run.seed, "dataset": dataset.describe()}
    identity.update(described)
    stages, below, summary, skipped = [], None, [], []
    for i, part in enumerate(parts):
        folder = Path(run.out_dir) / "parts" / f"{i + 1}-{part.kind}"
        checkpoint = Checkpoint(folder / "finished", {**identity, "part": i + 1})
        if run.resume and checkpoint.exists():
            model, below, row = _load_part(checkpoint)
            run.log(f"stack part {i + 1}/{len(parts)}: {part}, finished before")
        else:
            run.log(f"stack part {i + 1}/{len(parts)}: {part}")
            t0 = time.time()
            above = i < len(parts) - 1
            model, below = _train_part(dataset, plan, i, below, replace(run, out_dir=folder), above)
            row = {"part": str(part), "first_stage": len(stages) + 1}
            row["seconds"] = round(time.time() - t0, 1)
            if above:
                _score_handed_up(row, below, plan, dataset, run)
            _save_part(checkpoint, model, below if above else None, row)
        stages += model.stages
        summary.append(row)
        skipped += [n for n in model.record.skipped_images if n not in skipped]
    for i, part in enumerate(parts):  # the stack's model holds every part now
        shutil.rmtree(Path(run.out_dir) / "parts" / f"{i + 1}-{part.kind}" / "finished", True)
    model = PoseModel(backend_of(stages), dataset.skeleton, plan.codec, stages)
    record_settings = {"stack": ",".join(map(str, parts)), "folds": folds, **described}
    model.record = TrainingRecord.for_dataset(
        dataset,
        run.seed,
        record_settings,
        seconds=round(time.time() - start, 1),
        skipped_images=skipped,
        details={"parts": summary},
    )
    return model


@dataclass
class _Plan:
    """What every part of a stack shares: its parts' settings, crop and grid, folds, and
    whether beliefs are handed up for mirror images too (a part above mirrors its data)."""

    parts: list
    settings: list
    codec: BeliefCodec
    folds: int
    fold_of: np.ndarray
    mirror: bool
    targets: tuple

    @classmethod
    def make(cls, dataset, parts, settings: dict, seed: int, folds: int) -> _Plan:
        settings = {k: _resolved(s, dataset, folds) for k, s in settings.items()}
        codec = stack_codec({p.kind: settings[p.kind] for p in parts})
        by_part = [
            stack_settings(settings[p.kind], p.stages, codec, i > 0) for i, p in enumerate(parts)
        ]
        mirror = any(bool(getattr(s, "mirror", False)) for s in by_part)
        # folds=1 is the naive stack, each part on the in-sample beliefs of the parts below:
        # the failure cross-fitting exists to prevent, kept as a baseline. A forest part's own
        # stage-wise stacking still needs two folds then.
        fold_of = np.random.default_rng([seed, 3]).permutation(len(dataset)) % max(folds, 2)
        targets = crop_joints(dataset, codec.input_size)  # to score each part's beliefs
        return cls(parts, by_part, codec, folds, fold_of, mirror, targets)


def _resolved(settings, dataset, folds: int):
    """A part's settings as the run uses them (a forest: mirroring decided, its folds the
    stack's)."""
    if hasattr(settings, "resolved"):
        settings = settings.resolved(dataset)
    if "folds" in field_names(settings):
        settings = replace(settings, folds=max(folds, 2))
    return settings


def _settings_dict(settings) -> dict:
    return settings.to_dict() if hasattr(settings, "to_dict") else asdict(settings)


def _train_part(dataset, plan: _Plan, i: int, below, run: TrainingRun, above: bool):
    """Part i's model on all samples, and (for a part above it) the beliefs it hands up: out
    of fold, or in sample with one fold."""
    trainer_class = get_backend(plan.parts[i].kind).trainer_class()
    settings = plan.settings[i]
    native = getattr(trainer_class, "gives_out_of_fold", False)
    fitted = trainer_class(settings, replace(run, out_dir=run.out_dir / "all")).fit(
        dataset, below, fold_of=plan.fold_of, out_of_fold=above and native
    )
    _drop_checkpoint(run.out_dir / "all")
    model = fitted.model_
    if not above:
        return model, None
    if plan.folds == 1:
        return model, _in_sample(dataset, model.stages, below, plan)
    if native:
        return model, fitted.oof_beliefs_
    return model, _out_of_fold(dataset, trainer_class, settings, run, below, plan)


def _score_handed_up(row: dict, below: dict, plan: _Plan, dataset, run: TrainingRun) -> None:
    """What the part above learns from, scored on the training images: out of fold, or in
    sample (folds=1, and then far more flattering than on new images)."""
    pck = crop_pck([below["plain"]], *plan.targets, plan.codec, dataset.skeleton)[0]
    key = "out_of_fold_pck@0.2" if plan.folds > 1 else "in_sample_pck@0.2"
    row[key] = round(pck, 4)
    run.log(f"{row['part']}: {key.replace('_', ' ')[:-9]} PCK@0.2 {100 * pck:.1f}")


def _drop_checkpoint(folder: Path) -> None:
    shutil.rmtree(Path(folder) / "checkpoint", ignore_errors=True)


def _save_part(checkpoint: Checkpoint, model: PoseModel, below: dict | None, row: dict):
    """A finished part: its model, the beliefs it hands up, its summary row."""
    from posemachines.files.model_dir import save_model

    folder = checkpoint.begin()
    save_model(model, folder / "model")
    if below is not None:
        buf = io.BytesIO()
        np.savez(buf, **below)
        atomic_write_bytes(folder / "beliefs.npz", buf.getvalue())
    checkpoint.commit({"row": row})


def _load_part(checkpoint: Checkpoint) -> tuple[PoseModel, dict | None, dict]:
    from posemachines.core.model import load_model_directory

    state = checkpoint.load_state()
    model = load_model_directory(checkpoint.current / "model")
    below = None
    path = checkpoint.current / "beliefs.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as arrays:
                below = {view: arrays[view] for view in arrays.files}
        except (OSError, ValueError) as exc:
            raise PoseMachinesError(f"{path}: unreadable ({exc}); train without --resume") from None
    return model, below, state["row"]


def _out_of_fold(dataset, trainer_class, settings, run: TrainingRun, below, plan: _Plan):
    """Out-of-fold beliefs of a part whose trainer gives none: for each fold, a model trained
    on the other folds predicts its held-out samples (and their mirror images, for a part
    above that mirrors)."""
    out = _background(dataset, plan)
    for k in range(int(plan.fold_of.max()) + 1):
        held = np.flatnonzero(plan.fold_of == k)
        kept = np.flatnonzero(plan.fold_of != k)
        folder = run.out_dir / f"fold-{k + 1}"
        part_below = None if below is None else {v: b[kept] for v, b in below.items()}
        fitted = trainer_class(settings, replace(run, out_dir=folder, resume=False)).fit(
            dataset.subset(kept), part_below
        )
        _drop_checkpoint(folder)
        _predict_into(out, dataset, held, fitted.model_.stages, below, plan.codec)
    return out


def _in_sample(dataset, stages, below, plan: _Plan) -> dict:
    """The beliefs a part gives for its own training samples (folds=1: no cross-fitting)."""
    out = _background(dataset, plan)
    _predict_into(out, dataset, np.arange(len(dataset)), stages, below, plan.codec)
    return out


def _background(dataset, plan: _Plan) -> dict:
    """Belief arrays for every sample and view, background until predicted (a sample whose
    image cannot be read stays so)."""
    n, channels, side = len(dataset), dataset.skeleton.num_joints + 1, plan.codec.map_size
    return {view: background_beliefs(n, channels, side) for view in _views(plan.mirror)}


def _views(mirror: bool) -> dict:
    return {"plain": False, "mirror": True} if mirror else {"plain": False}


def _predict_into(out: dict, dataset, rows, stages, below, codec) -> None:
    """The last stage's beliefs for samples ``rows`` in every view of ``out``, given the
    beliefs of the stages below them."""
    from posemachines.core.runner import run_stages
    from posemachines.core.tta import view_crop

    samples = list(iter_samples(dataset, rows, skipped=SkippedImages()))
    for batch in batches(samples, 32):
        idx = np.array([i for i, _ in batch])
        for view, flip in _views("mirror" in out).items():
            crops = np.stack([view_crop(s, codec.input_size, 1.0, flip) for _, s in batch])
            previous = None if below is None else below[view][idx]
            out[view][idx] = run_stages(stages, crops, previous=previous)[-1]


def crop_joints(dataset, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every sample's joints in the coordinates of its person-box crop, and which count (a
    sample whose image cannot be read counts for nothing)."""
    from posemachines.core.crops import apply_affine, crop_transform

    joints = np.zeros(dataset.joints.shape)
    labelled = np.zeros(dataset.labelled.shape, bool)
    for i, s in iter_samples(dataset, skipped=SkippedImages()):
        joints[i] = apply_affine(crop_transform(s.centre, s.box_side, size), s.joints)
        labelled[i] = s.labelled
    return joints, labelled


def stack_settings(settings: Any, stages: int, codec, on_beliefs: bool) -> Any:
    """A backend's settings for one part of a stack: its stage count and the stack's crop and
    belief grid. A settings class may say how itself (``for_stack``); otherwise the fields
    ``stages``, ``input_size``, ``stride`` and ``sigma`` are replaced where it has them."""
    if hasattr(settings, "for_stack"):
        return settings.for_stack(stages, codec, on_beliefs)
    names = field_names(settings)
    wanted = {
        "stages": stages,
        "input_size": codec.input_size,
        "stride": codec.stride,
        "sigma": codec.sigma,
    }
    return replace(settings, **{k: v for k, v in wanted.items() if k in names})
