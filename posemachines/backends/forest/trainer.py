"""Stage-wise training of the Pose Machine (Ramakrishna et al., ECCV 2014).

Stage t is a forest trained on sampled locations of the training crops. Stages t >= 2 see the
context features of beliefs that stage t-1 produced on images it was *not* trained on (K-fold
out-of-fold predictions), so they learn from beliefs as noisy as those met at test time.
After each stage but the last the partial model and the out-of-fold beliefs are checkpointed
under ``OUT/checkpoint``; ``resume=True`` continues from the last finished stage. ``pm train``
removes the checkpoint once the model is written (it would only repeat it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from posemachines.backends.forest.levels import (
    FINAL_SMOOTH_CHOICES,
    Level,
    Seeds,
    fit_level,
    out_of_fold_pck,
)
from posemachines.backends.forest.settings import ForestSettings
from posemachines.backends.forest.stage import ForestStage
from posemachines.core.batches import index_batches
from posemachines.core.crops import Augmentation
from posemachines.core.model import PoseModel, TrainingRecord
from posemachines.core.skeletons import part_positions
from posemachines.data import SkippedImages
from posemachines.errors import PoseMachinesError
from posemachines.registry import TrainingRun
from posemachines.training import background_beliefs, crop_dataset
from posemachines.training.checkpoint import Checkpoint

MIRROR = Augmentation(scale=(1.0, 1.0), rotation=0.0, flip=1.0, shift=0.0)


def training_crops(dataset, size: int, mirror: bool, n_jobs: int, on_bad_image: str, skipped=None):
    """Crops, joints, flags, source image index and whether mirrored, of every training image
    and (if asked) its mirror image (which keeps its source's index, so both fall in the same
    fold)."""
    options = dict(n_jobs=n_jobs, on_bad_image=on_bad_image, skipped=skipped)
    parts = [crop_dataset(dataset, size, **options)]
    if mirror:
        parts.append(crop_dataset(dataset, size, MIRROR, **options))
    mirrored = np.concatenate([np.full(len(p[0]), k == 1) for k, p in enumerate(parts)])
    return (*(np.concatenate([p[k] for p in parts]) for k in range(4)), mirrored)


def _checkpoint(out_dir, identity: dict) -> Checkpoint:
    return Checkpoint(Path(out_dir) / "checkpoint", identity)


def _save_checkpoint(checkpoint: Checkpoint, model, oof, progress: dict) -> None:
    from posemachines.files.model_dir import save_model
    from posemachines.files.owned import atomic_write_bytes

    folder = checkpoint.begin()
    save_model(model, folder / "model")
    if oof is not None:
        import io as _io

        buf = _io.BytesIO()
        np.save(buf, oof, allow_pickle=False)
        atomic_write_bytes(folder / "beliefs.npy", buf.getvalue())
    checkpoint.commit(progress)


def _load_checkpoint(checkpoint: Checkpoint):
    from posemachines.core.model import load_model_directory

    state = checkpoint.load_state()
    model = load_model_directory(checkpoint.current / "model")
    beliefs = checkpoint.current / "beliefs.npy"
    oof = np.load(beliefs, allow_pickle=False) if beliefs.is_file() else None
    return model, oof, state


def _init_stages(init_model, init_stages: int, skeleton):
    """The stages of ``init_model`` a hybrid keeps below its forest stages, and its codec."""
    from posemachines.core.model import load_model_directory

    init = load_model_directory(init_model)
    if not init.skeleton.matches(skeleton):
        raise PoseMachinesError(
            f"--init model uses skeleton {init.skeleton.describe()}, the data "
            f"{skeleton.describe()} ({init.skeleton.mismatch(skeleton)})"
        )
    if not 1 <= init_stages <= init.num_stages:
        raise PoseMachinesError(
            f"--init-stages must be between 1 and {init.num_stages}, got {init_stages}"
        )
    return init.stages[:init_stages], init.codec


def _by_sample(beliefs, source, mirrored, n: int) -> dict:
    """Crop beliefs as {"plain": (n, C, h, w), "mirror": ...} by dataset sample (a sample
    with no crop, its image unreadable, gets background everywhere)."""
    out = {}
    for name, which in (("plain", ~mirrored), ("mirror", mirrored)):
        if not which.any():
            continue
        maps = background_beliefs(n, beliefs.shape[1], beliefs.shape[-1])
        maps[source[which]] = beliefs[which]
        out[name] = maps
    return out


def _final_smoothing(settings, config, scored, log) -> dict:
    """The last stage's config with its extra smoothing: given, or the best on held-out beliefs."""
    extra = settings.final_smooth
    if extra is None:
        scores = [out_of_fold_pck(*scored, e) for e in FINAL_SMOOTH_CHOICES]
        extra = FINAL_SMOOTH_CHOICES[int(np.argmax(scores))]
        log(f"final smoothing: +{extra} cells (out-of-fold PCK@0.2 {100 * max(scores):.1f})")
    return {**config, "smooth": float(np.hypot(config["smooth"], extra))}


class ForestTrainer:
    """Trains a forest Pose Machine (or forest stages on top of ``settings.init``'s stages).

    ``fit(dataset)`` learns every stage; ``model_`` is the model. In a stack the stages below
    are not run here: ``below`` holds the beliefs they gave out of fold for every sample's
    person box (``"plain"``) and its mirror image (``"mirror"``), ``fold_of`` the stack's folds
    (the stage-wise stacking uses them); with ``out_of_fold`` ``oof_beliefs_`` holds the last
    stage's out-of-fold beliefs in the same form, for the part above.
    """

    gives_out_of_fold = True
    keeps_checkpoint = False  # a finished forest's checkpoint only repeats the model

    def __init__(self, settings: ForestSettings, run: TrainingRun):
        self.settings = settings
        self.run = run

    def fit(
        self, dataset, below: dict | None = None, fold_of=None, out_of_fold: bool = False
    ) -> ForestTrainer:
        run, start_time = self.run, time.time()
        base_stages, codec = [], None
        if self.settings.init is not None:
            base_stages, codec = _init_stages(
                self.settings.init, self.settings.init_stages, dataset.skeleton
            )
        s = self.settings.resolved(dataset, codec)  # a new object: the caller's stays as it was
        s.validate(len(dataset))
        self.skipped_ = SkippedImages()
        data = _Data.read(dataset, s, run, self.skipped_, fold_of)
        checkpoint = _checkpoint(run.out_dir, self._identity(dataset, s))
        progress = _Progress.start(checkpoint, run, s.stages)
        if below is not None and progress.previous is None:
            progress.previous = data.from_below(below)
        if base_stages and progress.previous is None:
            progress.previous = _run_below(base_stages, data.crops)
        want_oof = out_of_fold
        self.oof_beliefs_ = None
        for t in range(progress.first, s.stages):
            t0 = time.time()
            stage, oof = self._fit_stage(t, s, data, progress, want_oof)
            progress.stages.append(stage)
            last = t == s.stages - 1
            if last and want_oof:
                self.oof_beliefs_ = _by_sample(oof, data.source, data.mirrored, len(dataset))
            progress.previous = None if last else oof
            progress.finish_stage(t, s.stages, time.time() - t0, start_time, run)
            if not last:  # the last stage's model is the result itself
                model = _model(dataset, s, base_stages + progress.stages)
                _save_checkpoint(checkpoint, model, oof, progress.state(t + 1, start_time))
        self.model_ = _model(dataset, s, base_stages + progress.stages)
        self.model_.record = TrainingRecord.for_dataset(
            dataset,
            run.seed,
            s.to_dict(),
            seconds=round(progress.earlier_s + time.time() - start_time, 1),
            skipped_images=self.skipped_.names,
            details={
                "train_seconds_stages": [round(x, 1) for x in progress.stage_times],
                "images": len(data.crops),
                "out_of_fold_pck@0.2": [round(v, 4) for v in progress.oof_pck],
                "init": str(s.init) if s.init else None,
            },
        )
        return self

    def _identity(self, dataset, s: ForestSettings) -> dict:
        return {
            "settings": s.to_dict(),
            "seed": self.run.seed,
            "dataset": dataset.describe(),
            "init": str(s.init) if s.init else None,
        }

    def _fit_stage(self, t: int, s: ForestSettings, data, progress, want_oof: bool):
        """Stage t's forest(s) and its out-of-fold beliefs on the training crops (None where
        nothing needs them)."""
        run, last = self.run, t == s.stages - 1
        part_forest = part_beliefs = None
        if s.hierarchy:
            part_forest, part_beliefs = fit_level(
                f"stage {t + 1} parts",
                data.level(data.part_targets, len(data.part_groups) + 1, None, progress, s),
                data.seeds.part_rows[t],
                data.seeds.part_forests[t],
                s.folds,
                run.n_jobs,
                run.progress,
            )
        # The last stage's held-out beliefs only choose its smoothing (one fold is enough),
        # unless a part of a stack above learns from them or its forest is the fold forests.
        held_out_folds = s.folds
        if last and not want_oof and not s.fold_forests:
            held_out_folds = int(s.final_smooth is None)
        forest, oof = fit_level(
            f"stage {t + 1}",
            data.level((data.joints, data.labelled), data.p + 1, part_beliefs, progress, s),
            data.seeds.rows[t],
            data.seeds.forests[t],
            held_out_folds,
            run.n_jobs,
            run.progress,
        )
        stage_config, scored = data.config, None
        if oof is not None:
            held = data.seeds.fold_of < held_out_folds
            scored = (oof[held], data.joints[held], data.labelled[held], data.codec, data.skeleton)
            progress.oof_pck.append(out_of_fold_pck(*scored))
            run.log(f"stage {t + 1}: out-of-fold PCK@0.2 {100 * progress.oof_pck[-1]:.1f}")
        if last:
            stage_config = _final_smoothing(s, data.config, scored, run.log)
            if want_oof:  # as the stage will give them: with its extra smoothing
                extra = np.sqrt(max(stage_config["smooth"] ** 2 - data.config["smooth"] ** 2, 0))
                if extra > 0:
                    oof = ndimage.gaussian_filter(oof, sigma=(0, 0, extra, extra), mode="nearest")
        return ForestStage(forest, stage_config, part_forest), oof


@dataclass
class _Data:
    """The training crops of a run and what is drawn for them once."""

    crops: np.ndarray
    joints: np.ndarray
    labelled: np.ndarray
    source: np.ndarray
    mirrored: np.ndarray
    seeds: Seeds
    codec: object
    config: dict
    skeleton: object
    part_groups: list
    part_targets: tuple

    @property
    def p(self) -> int:
        return self.skeleton.num_joints

    @classmethod
    def read(cls, dataset, s: ForestSettings, run: TrainingRun, skipped, fold_of) -> _Data:
        codec, skeleton = s.codec(), dataset.skeleton
        config = s.stage_config(
            skeleton.num_joints + 1, len(skeleton.composite_parts()), skeleton.facing_segments()
        )
        crops, joints, labelled, source, mirrored = training_crops(
            dataset, codec.input_size, s.mirror, run.n_jobs, run.on_bad_image, skipped
        )
        seeds = Seeds.draw(run.seed, len(dataset), source, s)
        if fold_of is not None:
            seeds.fold_of = np.asarray(fold_of)[source]
        groups = skeleton.composite_parts()
        targets = part_positions(joints, labelled, groups)
        return cls(
            crops,
            joints,
            labelled,
            source,
            mirrored,
            seeds,
            codec,
            config,
            skeleton,
            groups,
            targets,
        )

    def from_below(self, below: dict) -> np.ndarray:
        """The stack's beliefs below, per crop (a mirrored crop gets its mirror view's)."""
        return np.where(
            self.mirrored[:, None, None, None],
            below.get("mirror", below["plain"])[self.source],
            below["plain"][self.source],
        ).astype(np.float32)

    def level(self, targets, num_classes, parts, progress, s: ForestSettings) -> Level:
        return Level(
            self.crops,
            targets,
            num_classes,
            progress.previous,
            parts,
            self.seeds.fold_of,
            self.codec,
            s,
            self.config,
        )


@dataclass
class _Progress:
    """The stages learned so far, and what a resumed run takes over from its checkpoint."""

    stages: list = field(default_factory=list)
    previous: np.ndarray | None = None
    first: int = 0
    oof_pck: list = field(default_factory=list)
    stage_times: list = field(default_factory=list)
    earlier_s: float = 0.0

    @classmethod
    def start(cls, checkpoint: Checkpoint, run: TrainingRun, total: int) -> _Progress:
        if run.resume and not checkpoint.exists():
            run.log("no complete checkpoint to resume from: training from the start")
        if not (run.resume and checkpoint.exists()):
            checkpoint.remove()  # this run's folder (checked by the caller)
            return cls()
        partial, previous, state = _load_checkpoint(checkpoint)
        done = state["stages_done"]
        run.log(f"resuming after stage {done} of {total}")
        return cls(
            stages=partial.stages[len(partial.stages) - done :],
            previous=previous,
            first=done,
            oof_pck=state.get("out_of_fold_pck", []),
            stage_times=list(state.get("stage_seconds", [])),
            earlier_s=float(state.get("seconds", 0.0)),
        )

    def finish_stage(self, t: int, total: int, seconds: float, start_time, run) -> None:
        self.stage_times.append(seconds)
        left = np.mean(self.stage_times) * (total - t - 1)
        run.log(f"stage {t + 1} done in {seconds:.0f} s; about {left:.0f} s left")

    def state(self, done: int, start_time: float) -> dict:
        return {
            "stages_done": done,
            "out_of_fold_pck": self.oof_pck,
            "stage_seconds": self.stage_times,
            "seconds": self.earlier_s + time.time() - start_time,
        }


def _model(dataset, s: ForestSettings, stages) -> PoseModel:
    backend = "forest" if s.init is None else "hybrid"
    return PoseModel(backend, dataset.skeleton, s.codec(), stages)


def _run_below(stages, crops) -> np.ndarray:
    from posemachines.core.runner import run_stages

    return np.concatenate([run_stages(stages, crops[i])[-1] for i in index_batches(len(crops), 64)])
