"""One level of a forest stage: sampled training rows, K fold forests for the out-of-fold beliefs
the next stage learns from, and the forest kept for prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from joblib import delayed
from scipy import ndimage

from posemachines.backends.forest.settings import ForestSettings
from posemachines.backends.forest.stage import forest_beliefs, stage_image_features, stage_inputs
from posemachines.backends.forest.tree_arrays import compact_forest, joined_forests
from posemachines.core.batches import index_batches
from posemachines.core.targets import BeliefCodec
from posemachines.parallel import workers
from posemachines.training import crop_pck

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
        for idx in index_batches(len(crops), chunk):
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
    from posemachines.progress import progress_bar, say

    log = say if progress else (lambda *_: None)
    crops, previous, parts, settings = level.crops, level.previous, level.parts, level.settings
    n = len(crops)
    x, y, image_of_row = _training_table(name, level, row_seeds, n_jobs, progress)
    log(f"{name}: {len(y)} training locations x {x.shape[1]} features")
    oof, kept = None, []
    if settings.fold_forests and held_out_folds != settings.folds:
        raise ValueError("joining the fold forests needs every fold held out")
    if held_out_folds:
        size = level.codec.map_size
        oof = np.zeros((n, level.num_classes, size, size), dtype=np.float32)
        held_out = level.fold_of < held_out_folds
        bar = progress_bar(
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


def _training_table(name: str, level: Level, row_seeds, n_jobs: int, progress: bool):
    """The sampled training locations of every crop: features x, labels y, and the crop of
    each row."""
    from posemachines.progress import progress_bar

    positions, known = level.targets
    n = len(level.crops)
    with workers(n_jobs) as parallel:
        rows = parallel(
            delayed(_training_rows)(
                level.crops[i],
                _at(level.previous, i),
                _at(level.parts, i),
                positions[i],
                known[i],
                level.codec,
                level.settings,
                level.config,
                int(row_seeds[i]),
            )
            for i in progress_bar(
                range(n), desc=f"{name} features", unit="img", disable=not progress, leave=False
            )
        )
    x = np.concatenate([r[0] for r in rows])
    y = np.concatenate([r[1] for r in rows])
    image_of_row = np.repeat(np.arange(n), [len(r[1]) for r in rows])
    return x, y, image_of_row
