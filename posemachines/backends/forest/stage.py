"""A Pose Machine stage: a random forest over image features (and context features psi)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

from posemachines.backends.forest.features.context import context_parts
from posemachines.backends.forest.features.image import (
    dense_image_features,
    lab_image,
    location_colour,
)
from posemachines.backends.forest.files import SUFFIX, forest_bytes, read_forest
from posemachines.core.stage import StageFile, StageState


def image_features(crops: np.ndarray, config: dict, cache: dict) -> list[tuple]:
    """``stage_image_features`` of each crop, computed once per runner call, shared by stages."""
    key = (
        "forest_image_features",
        config["stride"],
        tuple(config["hog_cells"]),
        config["colour_cell"],
        _similarity(config),
    )
    if key not in cache:
        cache[key] = [stage_image_features(c, config) for c in crops]
    return cache[key]


def _similarity(config: dict) -> tuple:
    # Models saved before colour self-similarity existed have no such key: none.
    return tuple(tuple(pair) for pair in config.get("similarity", ()))


def stage_image_features(crop: np.ndarray, config: dict) -> tuple[np.ndarray, np.ndarray]:
    """Image features x_z (h, w, D) of a crop and the Lab colour (h, w, 3) of every location."""
    lab = lab_image(crop)
    x = dense_image_features(
        crop,
        config["stride"],
        tuple(config["hog_cells"]),
        config["colour_cell"],
        similarity=_similarity(config),
        lab=lab,
    )
    return x, location_colour(lab, config["stride"])


def stage_inputs(
    image: tuple[np.ndarray, np.ndarray],
    previous: np.ndarray | None,
    config: dict,
    parts: np.ndarray | None = None,
) -> np.ndarray:
    """x_z for stage 1; [x'_z, psi(z, b_{t-1})] for later stages: (h, w, D).

    ``image`` is ``stage_image_features``'s pair. With the part hierarchy, ``parts`` (the
    composite-part beliefs of this stage, (L+1, h, w)) add their own context features last,
    so the joint level sees where limbs and the body are.
    """
    x, colour = image
    # Models saved before the segment colours existed have no such key: none.
    segments = config.get("segment_colours", [])
    return add_context(add_context(x, colour, previous, config, segments), colour, parts, config)


def add_context(
    x: np.ndarray, colour: np.ndarray, beliefs: np.ndarray | None, config: dict, segments=()
) -> np.ndarray:
    """[x_z, psi(z, beliefs)] at every location z; ``x`` itself when there are no beliefs.
    ``segments`` (joint index groups, see ``segment_colours``) add the colours along them."""
    if beliefs is None:
        return x
    context = context_parts(
        beliefs,
        tuple(config["context_cells"]),
        config["top_k"],
        colour if config.get("appearance_context", False) else None,
        segments,
        colour,
    )
    return np.concatenate([x, *context], -1)  # one copy of the (h, w, D) inputs


def forest_beliefs(forest, inputs: np.ndarray, num_classes: int, smooth: float) -> np.ndarray:
    """Per-location class probabilities as belief maps (P+1, h, w), lightly smoothed."""
    h, w, d = inputs.shape
    proba = _predict_proba(forest, inputs.reshape(-1, d))
    maps = np.zeros((h * w, num_classes), dtype=np.float32)
    maps[:, forest.classes_.astype(int)] = proba  # a class never seen in training stays 0
    maps = maps.T.reshape(num_classes, h, w)
    if smooth > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, smooth, smooth), mode="nearest")
    return maps


def _predict_proba(forest, x: np.ndarray) -> np.ndarray:
    """``forest.predict_proba(x)``, with the trees summed here in two fixed halves on two
    threads (tree traversal releases the GIL). Fixed halves give the same numbers on every
    machine, which scikit-learn's threaded sum, added in completion order, does not; and one
    image's 1,600 rows are too few for its per-tree dispatch to pay."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    trees = forest.estimators_
    half = len(trees) // 2

    def total(some_trees):
        proba = np.zeros((len(x), forest.n_classes_))
        for tree in some_trees:
            proba += tree.predict_proba(x, check_input=False)
        return proba

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(total, (trees[:half], trees[half:]))
    return (first + second) / len(trees)


class ForestStage:
    """Stage t of a Pose Machine: ``g_t(x_z, psi(z, b_{t-1}))`` at every location z.

    ``config`` holds the feature settings (stride, cell sizes, context scales, top-K) so that
    a loaded stage computes exactly the features it was trained on. With the part hierarchy a
    second forest, ``part_forest_``, first predicts composite-part beliefs (limbs, the whole
    body) from the same inputs; their context is added to the joint level's inputs.
    """

    kind = "forest"

    def __init__(self, forest, config: dict, part_forest=None):
        for f in (forest, part_forest):
            if f is not None:
                f.n_jobs = 1  # prediction goes through _predict_proba, not joblib
        self.forest_ = forest
        self.part_forest_ = part_forest
        self.config_ = dict(config)

    def beliefs(self, crops, previous, cache) -> np.ndarray:
        feats = image_features(crops, self.config_, cache)
        out = []
        for i, image in enumerate(feats):
            x = stage_inputs(image, None if previous is None else previous[i], self.config_)
            if self.part_forest_ is not None:  # the parts' context goes last, as stage_inputs
                x = add_context(x, image[1], self.part_beliefs(x), self.config_)
            out.append(self.joint_beliefs(x))
        return np.stack(out)

    def joint_beliefs(self, inputs: np.ndarray) -> np.ndarray:
        c = self.config_
        return forest_beliefs(self.forest_, inputs, c["num_classes"], c["smooth"])

    def part_beliefs(self, inputs: np.ndarray) -> np.ndarray:
        c = self.config_
        return forest_beliefs(self.part_forest_, inputs, c["num_parts"] + 1, c["smooth"])

    def config(self) -> dict:
        return self.config_

    def parameter_count(self) -> int:
        """Tree nodes: what the forests learned."""
        forests = [f for f in (self.forest_, self.part_forest_) if f is not None]
        return sum(tree.tree_.node_count for f in forests for tree in f.estimators_)

    def state(self) -> StageState:
        """The joint level's forest in the manifest's ``file``, the part level's in
        ``part_file``."""
        files = {"file": StageFile(SUFFIX, forest_bytes(self.forest_))}
        if self.part_forest_ is not None:
            files["part_file"] = StageFile("parts." + SUFFIX, forest_bytes(self.part_forest_))
        return StageState(config=self.config_, files=files)

    @classmethod
    def from_state(cls, state: StageState) -> ForestStage:
        forests = {k: read_forest(f.name, f.data) for k, f in state.files.items()}
        return cls(forests["file"], state.config, forests.get("part_file"))
