"""A Pose Machine stage: a random forest over image features (and context features psi)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..features.context import context_features
from ..features.image import dense_image_features


def image_features(crops: np.ndarray, config: dict, cache: dict) -> list[np.ndarray]:
    """Dense image features of each crop, computed once per runner call and shared by stages."""
    key = (
        "forest_image_features",
        config["stride"],
        tuple(config["hog_cells"]),
        config["colour_cell"],
    )
    if key not in cache:
        cache[key] = [stage_image_features(c, config) for c in crops]
    return cache[key]


def stage_image_features(crop: np.ndarray, config: dict) -> np.ndarray:
    return dense_image_features(
        crop, config["stride"], tuple(config["hog_cells"]), config["colour_cell"]
    )


def stage_inputs(image_feats: np.ndarray, previous: np.ndarray | None, config: dict) -> np.ndarray:
    """x_z for stage 1; [x'_z, psi(z, b_{t-1})] for later stages: (h, w, D)."""
    if previous is None:
        return image_feats
    context = context_features(previous, tuple(config["context_cells"]), config["top_k"])
    return np.concatenate([image_feats, context], -1)


def forest_beliefs(forest, inputs: np.ndarray, num_classes: int, smooth: float) -> np.ndarray:
    """Per-location class probabilities as belief maps (P+1, h, w), lightly smoothed."""
    h, w, d = inputs.shape
    proba = forest.predict_proba(inputs.reshape(-1, d))
    maps = np.zeros((h * w, num_classes), dtype=np.float32)
    maps[:, forest.classes_.astype(int)] = proba  # a class never seen in training stays 0
    maps = maps.T.reshape(num_classes, h, w)
    if smooth > 0:
        maps = ndimage.gaussian_filter(maps, sigma=(0, smooth, smooth), mode="nearest")
    return maps


class ForestStage:
    """Stage t of a Pose Machine: ``g_t(x_z, psi(z, b_{t-1}))`` at every location z.

    ``config`` holds the feature settings (stride, cell sizes, context scales, top-K) so that
    a loaded stage computes exactly the features it was trained on.
    """

    kind = "forest"

    def __init__(self, forest, config: dict):
        self.forest_ = forest
        self.config_ = dict(config)

    def beliefs(self, crops, previous, cache) -> np.ndarray:
        feats = image_features(crops, self.config_, cache)
        out = [
            forest_beliefs(
                self.forest_,
                stage_inputs(f, None if previous is None else previous[i], self.config_),
                self.config_["num_classes"],
                self.config_["smooth"],
            )
            for i, f in enumerate(feats)
        ]
        return np.stack(out)

    def config(self) -> dict:
        return self.config_

    def estimator(self):
        return self.forest_

    @classmethod
    def from_estimator(cls, config: dict, forest) -> ForestStage:
        forest.n_jobs = 1  # prediction streams image by image; threads cost more than they give
        return cls(forest, config)
