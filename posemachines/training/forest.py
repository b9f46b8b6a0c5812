"""Stage-wise training of the Pose Machine (Ramakrishna et al., ECCV 2014).

Stage t is a forest trained on sampled locations of the training crops. Stages t >= 2 see the
context features of beliefs that stage t-1 produced on images it was *not* trained on (K-fold
out-of-fold predictions), so they learn from beliefs as noisy as those met at test time.
After each stage but the last the partial model and the out-of-fold beliefs are checkpointed
under ``OUT/checkpoint``; ``resume=True`` continues from the last finished stage. ``pm train``
removes the checkpoint once the model is written (it would only repeat it).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from joblib import delayed
from scipy import ndimage

from ..crops import Augmentation
from ..data import SkippedImages
from ..errors import PoseMachinesError
from ..model import PoseModel, TrainingRecord
from ..parallel import workers
from ..skeletons import part_positions
from ..stages import StageState
from ..stages.forest import ForestStage, forest_beliefs, stage_image_features, stage_inputs
from ..stages.tree_arrays import compact_forest, joined_forests
from ..targets import BeliefCodec
from . import background_beliefs, crop_dataset, crop_pck
from .checkpoint import Checkpoint


@dataclass(frozen=True)
class ForestSettings:
    """Everything that decides a forest Pose Machine; stored in its manifest."""

    stages: int = 3
    trees: int = 40
    depth: int | None = None  # None: grow each branch until its leaves are min_samples_leaf
    forest: str = "extra"  # "extra" (extremely randomised trees) or "random"
    min_samples_leaf: int = 2
    max_features: float | str = 0.1  # share of the features tried at each split
    input_size: int = 160
    stride: int = 4
    sigma: float = 6.0
    folds: int = 2
    positive_radius: float = 1.5  # in output cells: locations this close to a joint are positives
    background: int = 150  # background locations sampled per image
    # Hard negatives: a share of them that stages t >= 2 take where stage t-1 believed most
    # in a joint away from every joint (its false alarms), in place of those drawn anywhere
    # (the half near the body stays; a share over 0.5 adds rows), so that a stage learns to
    # correct the mistakes of the one before (LSP stage 2: 48.3 -> 49.3).
    hard_negatives: float = 0.0
    hog_cells: tuple = (8, 20)
    colour_cell: int = 12
    # (cell px, grid) of each colour self-similarity descriptor among the image features
    similarity: tuple = ((3, 7), (6, 5), (12, 3))
    context_cells: tuple = (2, 6)
    top_k: int = 2
    appearance_context: bool = True  # psi_3: colour at z against colour at each joint's peak
    # psi_4: the colours along the believed head and trunk, given to every location: which
    # way a person faces decides which side is left (LSP stage 2: 47.6 -> 48.3).
    segment_colours: bool = False
    smooth: float = 1.0  # Gaussian smoothing of each belief map, in cells
    # Also train on mirrored copies (left and right swapped). None: yes for real data, where
    # people face both ways; no for the synthetic figures, which always face the camera.
    mirror: bool | None = None
    # The paper's multi-level parts: each stage first predicts composite parts (limbs, the
    # whole body), whose context then feeds the joint level. Two to three times the training.
    hierarchy: bool = False
    # Keep each stage's out-of-fold forests, joined, as the stage's forest (folds x trees trees,
    # each fitted on (folds - 1) / folds of the images) instead of fitting it again on all
    # images: the refit costs a third of the training with three folds, and the joined forest
    # predicts better than one of the same cost (LSP stage 1: 45.5 against 44.4).
    fold_forests: bool = False
    # Extra smoothing of the last stage's beliefs (in cells) before decoding. None: choose it
    # from FINAL_SMOOTH_CHOICES by PCK on the last stage's held-out beliefs on one fold
    # (training images only), which costs the last stage one fold forest.
    final_smooth: float | None = None

    @classmethod
    def from_options(cls, **options) -> ForestSettings:
        return cls(**{k: v for k, v in options.items() if v is not None})

    def validate(self, n_samples: int | None = None) -> None:
        """Refuse impossible settings before any work starts."""
        if self.stages < 1:
            raise PoseMachinesError(f"--stages must be at least 1, got {self.stages}")
        if self.trees < 1:
            raise PoseMachinesError(f"--trees must be at least 1, got {self.trees}")
        if self.min_samples_leaf < 1:
            raise PoseMachinesError(
                f"--min-samples-leaf must be at least 1, got {self.min_samples_leaf}"
            )
        if self.depth is not None and self.depth < 1:
            raise PoseMachinesError(f"--depth must be at least 1, got {self.depth}")
        share = self.max_features
        if share not in ("sqrt", "log2") and not (
            isinstance(share, (int, float)) and 0 < share <= 1
        ):
            raise PoseMachinesError(
                f"--max-features must be 'sqrt', 'log2' or a share in (0, 1], got {share!r}"
            )
        if not 0 <= self.hard_negatives <= 1:
            raise PoseMachinesError(
                f"--hard-negatives must be a share in [0, 1], got {self.hard_negatives}"
            )
        if self.forest not in ("extra", "random"):
            raise PoseMachinesError(f"forest must be 'extra' or 'random', not {self.forest!r}")
        if self.final_smooth is not None and self.final_smooth < 0:
            raise PoseMachinesError(f"final_smooth must be >= 0, got {self.final_smooth}")
        if self.folds < 2:
            raise PoseMachinesError(f"stacking needs at least 2 folds, got {self.folds}")
        windows = [(cell, 3) for cell in (*self.hog_cells, self.colour_cell)]
        for cell, grid in windows + [tuple(pair) for pair in self.similarity]:
            if grid < 1 or grid % 2 == 0:
                raise PoseMachinesError(f"a feature grid must be odd and positive, got {grid}")
            if cell * grid > self.input_size:
                raise PoseMachinesError(
                    f"feature window of {cell * grid} px ({grid} x {cell}-px cells) is larger "
                    f"than the {self.input_size}-px input"
                )
        self.codec()  # checks the geometry
        if n_samples is not None and n_samples < self.folds:
            raise PoseMachinesError(
                f"{self.folds}-fold stacking needs at least {self.folds} training images, "
                f"the dataset has {n_samples}"
            )

    def resolved(self, dataset, init_codec: BeliefCodec | None = None) -> ForestSettings:
        """The settings a run uses: mirroring decided for the data (None: yes for real data,
        no for the synthetic figures), the geometry of the stages below a hybrid."""
        changes = {}
        if self.mirror is None:
            changes["mirror"] = dataset.name != "synthetic"
        if init_codec is not None:
            changes.update(
                input_size=init_codec.input_size, stride=init_codec.stride, sigma=init_codec.sigma
            )
        return replace(self, **changes)

    def codec(self) -> BeliefCodec:
        return BeliefCodec(self.input_size, self.stride, self.sigma)

    def stage_config(self, num_classes: int, num_parts: int = 0, segments=()) -> dict:
        """The feature settings a stage keeps; ``segments``: the skeleton's facing segments."""
        return {
            "num_parts": num_parts if self.hierarchy else 0,
            "stride": self.stride,
            "hog_cells": list(self.hog_cells),
            "colour_cell": self.colour_cell,
            "similarity": [list(pair) for pair in self.similarity],
            "context_cells": list(self.context_cells),
            "top_k": self.top_k,
            "appearance_context": self.appearance_context,
            "segment_colours": [[list(a), list(b)] for a, b in segments]
            if self.segment_colours
            else [],
            "smooth": self.smooth,
            "num_classes": num_classes,
        }

    def to_dict(self) -> dict:
        """Plain JSON values (tuples as lists), so a dict read back from JSON compares equal."""
        return json.loads(json.dumps(asdict(self)))


FINAL_SMOOTH_CHOICES = (0.0, 0.5, 1.0, 1.5, 2.0)


def out_of_fold_pck(beliefs, joints, labelled, codec, skeleton, extra_smooth=0.0) -> float:
    """PCK@0.2 of held-out beliefs (N, P+1, h, w) against crop-coordinate joints, after an
    optional extra Gaussian smoothing (in cells)."""
    maps = beliefs[:, :-1]
    if extra_smooth > 0:
        sigma = (0, 0, extra_smooth, extra_smooth)
        maps = ndimage.gaussian_filter(maps, sigma=sigma, mode="nearest")
    return crop_pck([maps], joints, labelled, codec, skeleton)[0]


def sample_locations(
    joints,
    labelled,
    codec: BeliefCodec,
    radius: float,
    n_background: int,
    rng: np.random.Generator,
    beliefs: np.ndarray | None = None,
    n_hard: int = 0,
):
    """Training locations of one crop: (rows, cols, labels), label P for background.

    Positives: cells within ``radius`` cells of a labelled joint (nearest joint wins).
    Background: cells farther than twice ``radius`` from every joint, half of
    ``n_background`` drawn near the body (inside its bounding box, padded) and the rest
    anywhere. Hard negatives, the ``n_hard`` cells where ``beliefs`` (h, w) are highest (the
    previous stage's false alarms), are taken first and stand in for the background drawn
    anywhere; beyond half of ``n_background`` they add to it (the near-body half stays).
    """
    p = len(joints)
    grid = codec.grid()
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    d = np.hypot(gx[..., None] - joints[:, 0], gy[..., None] - joints[:, 1]) / codec.stride
    d[..., ~labelled] = np.inf
    nearest, dmin = d.argmin(-1), d.min(-1)
    pos_r, pos_c = np.nonzero(dmin <= radius)
    labels = [nearest[pos_r, pos_c]]
    far = dmin > 2 * radius
    pts = joints[labelled]
    near = np.zeros_like(far)
    if len(pts):
        pad = 0.1 * np.ptp(pts, 0) + 2 * codec.stride
        lo, hi = pts.min(0) - pad, pts.max(0) + pad
        near = (gx >= lo[0]) & (gx <= hi[0]) & (gy >= lo[1]) & (gy <= hi[1])
    rows, cols = [pos_r], [pos_c]
    taken = np.zeros_like(far)
    if beliefs is not None and n_hard > 0:
        r, c = np.nonzero(far)
        pick = np.argsort(-beliefs[r, c], kind="stable")[:n_hard]
        rows.append(r[pick])
        cols.append(c[pick])
        taken[r[pick], c[pick]] = True
        labels.append(np.full(len(pick), p))
    # Half near the body; the rest (and whatever the body area could not give) anywhere.
    for pool, count in ((far & near, n_background // 2), (far, None)):
        r, c = np.nonzero(pool & ~taken)
        count = n_background - int(taken.sum()) if count is None else count
        if len(r) and count > 0:
            pick = rng.choice(len(r), size=min(count, len(r)), replace=False)
            rows.append(r[pick])
            cols.append(c[pick])
            taken[r[pick], c[pick]] = True
            labels.append(np.full(len(pick), p))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(labels)


def _training_rows(crop, previous, parts, joints, labelled, codec, settings, config, seed):
    feats = _inputs(crop, previous, parts, config)
    rng = np.random.default_rng(seed)
    n_hard = int(round(settings.hard_negatives * settings.background))
    strongest = None  # over the joints: where the stage below believed in any
    if previous is not None and n_hard:
        strongest = previous[:-1].max(0)
    r, c, y = sample_locations(
        joints,
        labelled,
        codec,
        settings.positive_radius,
        settings.background,
        rng,
        strongest,
        n_hard,
    )
    return feats[r, c], y


def _inputs(crop, previous, parts, config):
    return stage_inputs(stage_image_features(crop, config), previous, config, parts)


def _make_forest(settings: ForestSettings, seed: int, n_jobs: int):
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    kind = ExtraTreesClassifier if settings.forest == "extra" else RandomForestClassifier
    return kind(
        n_estimators=settings.trees,
        max_depth=settings.depth,
        min_samples_leaf=settings.min_samples_leaf,
        max_features=settings.max_features,
        class_weight="balanced",
        n_jobs=n_jobs,
        random_state=seed,
    )


def predict_dense(
    forest, crops, previous, parts, config, num_classes, n_jobs, chunk=32, bar=None
) -> np.ndarray:
    """Belief maps (N, C, h, w) for many crops: features in parallel, trees in threads."""
    out = []
    with workers(n_jobs) as parallel:
        for start in range(0, len(crops), chunk):
            idx = range(start, min(start + chunk, len(crops)))
            inputs = parallel(
                delayed(_inputs)(crops[i], _at(previous, i), _at(parts, i), config) for i in idx
            )
            for x in inputs:
                out.append(forest_beliefs(forest, x, num_classes, config["smooth"]))
            if bar is not None:
                bar.update(len(idx))
    return np.stack(out)


def _at(maps, i):
    return None if maps is None else maps[i]


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
    from ..files import atomic_write_bytes
    from ..io import save_model

    folder = checkpoint.begin()
    save_model(model, folder / "model")
    if oof is not None:
        import io as _io

        buf = _io.BytesIO()
        np.save(buf, oof, allow_pickle=False)
        atomic_write_bytes(folder / "beliefs.npy", buf.getvalue())
    checkpoint.commit(progress)


def _load_checkpoint(checkpoint: Checkpoint):
    from ..io import load_model

    state = checkpoint.load_state()
    model = load_model(checkpoint.current / "model")
    beliefs = checkpoint.current / "beliefs.npy"
    oof = np.load(beliefs, allow_pickle=False) if beliefs.is_file() else None
    return model, oof, state


@dataclass
class Level:
    """What one level (joints, or composite parts) of a stage is trained on.

    ``crops`` (N, S, S, 3) with their ``targets`` (positions (N, L, 2), known (N, L)),
    ``previous`` beliefs of the stage before and ``parts`` beliefs of this stage's part level
    (either may be None), ``fold_of`` each crop's stacking fold.
    """

    crops: np.ndarray
    targets: tuple
    num_classes: int
    previous: np.ndarray | None
    parts: np.ndarray | None
    fold_of: np.ndarray
    codec: BeliefCodec
    settings: ForestSettings
    config: dict


def fit_level(
    name: str,
    level: Level,
    row_seeds,
    forest_seeds,
    held_out_folds: int,
    n_jobs: int,
    progress: bool,
):
    """Train one level of one stage.

    Samples training locations of every crop; for each of the first ``held_out_folds`` folds,
    fits a forest on the other folds and predicts the held-out crops (the out-of-fold beliefs
    the next consumer trains on); then fits the level's forest on all crops. Returns
    ``(forest, oof beliefs or None)``; only the crops of those folds have beliefs. With
    ``settings.fold_forests`` the level's forest is the fold forests joined (every fold must
    then be held out), not a forest fitted again on all crops.
    """
    from tqdm.auto import tqdm

    log = tqdm.write if progress else (lambda *_: None)
    positions, known = level.targets
    crops, previous, parts, settings = level.crops, level.previous, level.parts, level.settings
    n = len(crops)
    with workers(n_jobs) as parallel:
        rows = parallel(
            delayed(_training_rows)(
                crops[i],
                _at(previous, i),
                _at(parts, i),
                positions[i],
                known[i],
                level.codec,
                settings,
                level.config,
                int(row_seeds[i]),
            )
            for i in tqdm(
                range(n), desc=f"{name} features", unit="img", disable=not progress, leave=False
            )
        )
    x = np.concatenate([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    image_of_row = np.repeat(np.arange(n), [len(r[1]) for r in rows])
    del rows
    log(f"{name}: {len(y)} training locations x {x.shape[1]} features")
    oof, kept = None, []
    if settings.fold_forests and held_out_folds != settings.folds:
        raise ValueError("joining the fold forests needs every fold held out")
    if held_out_folds:
        size = level.codec.map_size
        oof = np.zeros((n, level.num_classes, size, size), dtype=np.float32)
        held_out = level.fold_of < held_out_folds
        bar = tqdm(
            total=int(held_out.sum()),
            desc=f"{name} out-of-fold",
            unit="img",
            disable=not progress,
            leave=False,
        )
        for k in range(held_out_folds):
            train_rows = level.fold_of[image_of_row] != k
            forest = _make_forest(settings, int(forest_seeds[k]), n_jobs)
            forest.fit(x[train_rows], y[train_rows])
            held = np.flatnonzero(level.fold_of == k)
            oof[held] = predict_dense(
                forest,
                crops[held],
                _at(previous, held),
                _at(parts, held),
                level.config,
                level.num_classes,
                n_jobs,
                bar=bar,
            )
            if settings.fold_forests:
                kept.append(compact_forest(forest))
            del forest
        bar.close()
    if kept:
        return joined_forests(kept), oof
    log(f"{name}: fitting {settings.trees} trees on all images")
    forest = _make_forest(settings, int(forest_seeds[-1]), n_jobs).fit(x, y)
    # The forest as its model file will hold it, so that the model in memory predicts exactly
    # what the saved one will (leaf probabilities in float32).
    return compact_forest(forest), oof


@dataclass
class Seeds:
    """Every random draw of a run, made up front from the seed (so the run does not depend on
    the number of workers): per stage and crop the location-sampling seeds, per stage the
    fold forests' seeds and the final forest's, and each crop's stacking fold (by source
    image, so a mirrored copy shares its image's fold); the part level has streams of its
    own so that single-level runs stay as they were."""

    rows: np.ndarray
    fold_of: np.ndarray
    forests: np.ndarray
    part_rows: np.ndarray
    part_forests: np.ndarray

    @classmethod
    def draw(cls, seed: int, n_images: int, source: np.ndarray, s: ForestSettings) -> Seeds:
        rng = np.random.default_rng(seed)
        n = len(source)
        rows = rng.integers(0, 2**63, size=(s.stages, n))
        fold_of = (rng.permutation(n_images) % s.folds)[source]
        forests = rng.integers(0, 2**31, size=(s.stages, s.folds + 1))
        part_rng = np.random.default_rng([seed, 1])
        part_rows = part_rng.integers(0, 2**63, size=(s.stages, n))
        part_forests = part_rng.integers(0, 2**31, size=(s.stages, s.folds + 1))
        return cls(rows, fold_of, forests, part_rows, part_forests)


def _init_stages(init_model, init_stages: int, skeleton):
    """The stages of ``init_model`` a hybrid keeps below its forest stages, and its codec."""
    from ..io import load_model

    init = load_model(init_model)
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


def train_forest(
    dataset,
    settings: ForestSettings,
    out_dir: str | Path,
    seed: int = 0,
    n_jobs: int = -1,
    resume: bool = False,
    init_model: str | Path | None = None,
    init_stages: int = 1,
    on_bad_image: str = "skip",
    progress: bool = False,
    below: dict | None = None,
    folds_by_sample: np.ndarray | None = None,
    oof_out: dict | None = None,
) -> PoseModel:
    """Train a forest Pose Machine (or forest stages on top of ``init_model``'s stages).

    In a stack (``training.stack``) the stages below are not run here: ``below`` holds the
    beliefs they gave out of fold for every sample's person box (``"plain"``) and its mirror
    image (``"mirror"``), ``folds_by_sample`` the stack's folds, and ``oof_out``, when given,
    receives the last stage's out-of-fold beliefs in the same form, for the part above.
    """
    from tqdm.auto import tqdm

    log = tqdm.write if progress else (lambda *_: None)
    base_stages, backend, codec = [], "forest", None
    if init_model is not None:
        base_stages, codec = _init_stages(init_model, init_stages, dataset.skeleton)
        backend = "hybrid"
    settings = settings.resolved(dataset, codec)  # a new object: the caller's stays as it was
    settings.validate(len(dataset))
    codec = settings.codec()
    skeleton = dataset.skeleton
    p = skeleton.num_joints
    config = settings.stage_config(
        p + 1, len(skeleton.composite_parts()), skeleton.facing_segments()
    )
    identity = {
        "settings": settings.to_dict(),
        "seed": seed,
        "dataset": dataset.describe(),
        "init": str(init_model) if init_model else None,
    }

    start_time = time.time()
    skipped = SkippedImages()
    crops, joints, labelled, source, mirrored = training_crops(
        dataset, codec.input_size, settings.mirror, n_jobs, on_bad_image, skipped
    )
    seeds = Seeds.draw(seed, len(dataset), source, settings)
    if folds_by_sample is not None:
        seeds.fold_of = np.asarray(folds_by_sample)[source]
    part_groups = skeleton.composite_parts()
    part_targets = part_positions(joints, labelled, part_groups)

    checkpoint = _checkpoint(out_dir, identity)
    stages, previous, first, oof_pck, stage_times, earlier_s = [], None, 0, [], [], 0.0
    if resume and not checkpoint.exists():
        log("no complete checkpoint to resume from: training from the start")
    if resume and checkpoint.exists():
        partial, previous, state = _load_checkpoint(checkpoint)
        stages = partial.stages[len(base_stages) :]
        first = state["stages_done"]
        oof_pck = state.get("out_of_fold_pck", [])
        stage_times = list(state.get("stage_seconds", []))
        earlier_s = float(state.get("seconds", 0.0))
        log(f"resuming after stage {first} of {settings.stages}")
    else:
        checkpoint.remove()  # this run's folder (checked by the caller)
    if below is not None and previous is None:
        previous = np.where(
            mirrored[:, None, None, None],
            below.get("mirror", below["plain"])[source],
            below["plain"][source],
        ).astype(np.float32)
    if base_stages and previous is None:
        from ..runner import run_stages

        previous = np.concatenate(
            [run_stages(base_stages, crops[i : i + 64])[-1] for i in range(0, len(crops), 64)]
        )

    def model_of(forest_stages):
        return PoseModel(backend, skeleton, codec, base_stages + forest_stages)

    def level(targets, num_classes, parts) -> Level:
        return Level(
            crops, targets, num_classes, previous, parts, seeds.fold_of, codec, settings, config
        )

    for t in range(first, settings.stages):
        t0 = time.time()
        last = t == settings.stages - 1
        part_forest = part_beliefs = None
        if settings.hierarchy:
            part_forest, part_beliefs = fit_level(
                f"stage {t + 1} parts",
                level(part_targets, len(part_groups) + 1, None),
                seeds.part_rows[t],
                seeds.part_forests[t],
                settings.folds,
                n_jobs,
                progress,
            )
        # The last stage's held-out beliefs only choose its smoothing (one fold is enough),
        # unless a part of a stack above learns from them or its forest is the fold forests.
        held_out_folds = settings.folds
        if last and oof_out is None and not settings.fold_forests:
            held_out_folds = int(settings.final_smooth is None)
        forest, oof = fit_level(
            f"stage {t + 1}",
            level((joints, labelled), p + 1, part_beliefs),
            seeds.rows[t],
            seeds.forests[t],
            held_out_folds,
            n_jobs,
            progress,
        )
        stage_config = config
        held, scored = seeds.fold_of < held_out_folds, None
        if oof is not None:
            scored = (oof[held], joints[held], labelled[held], codec, skeleton)
            oof_pck.append(out_of_fold_pck(*scored))
            log(f"stage {t + 1}: out-of-fold PCK@0.2 {100 * oof_pck[-1]:.1f}")
        if last:
            stage_config = _final_smoothing(settings, config, scored, log)
            if oof_out is not None:  # as the stage will give them: with its extra smoothing
                extra = np.sqrt(max(stage_config["smooth"] ** 2 - config["smooth"] ** 2, 0.0))
                if extra > 0:
                    oof = ndimage.gaussian_filter(oof, sigma=(0, 0, extra, extra), mode="nearest")
                oof_out.update(_by_sample(oof, source, mirrored, len(dataset)))
            oof = None  # nothing after the last stage consumes its beliefs
        estimators = {"joints": forest}
        if part_forest is not None:
            estimators["parts"] = part_forest
        stages.append(ForestStage.from_state(StageState(stage_config, estimators=estimators)))
        previous = oof
        stage_times.append(time.time() - t0)
        left = np.mean(stage_times) * (settings.stages - t - 1)
        log(f"stage {t + 1} done in {stage_times[-1]:.0f} s; about {left:.0f} s left")
        done = {
            "stages_done": t + 1,
            "out_of_fold_pck": oof_pck,
            "stage_seconds": stage_times,
            "seconds": earlier_s + time.time() - start_time,
        }
        if t + 1 < settings.stages:  # the last stage's model is the result itself
            _save_checkpoint(checkpoint, model_of(stages), oof, done)

    model = model_of(stages)
    model.record = TrainingRecord.for_dataset(
        dataset,
        seed,
        settings.to_dict(),
        seconds=round(earlier_s + time.time() - start_time, 1),  # resumed parts included
        skipped_images=skipped.names,
        details={
            "train_seconds_stages": [round(s, 1) for s in stage_times],
            "images": len(crops),
            "out_of_fold_pck@0.2": [round(v, 4) for v in oof_pck],
            "init": str(init_model) if init_model else None,
        },
    )
    return model
