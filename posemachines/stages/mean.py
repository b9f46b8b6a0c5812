"""Mean-pose prior: the average target belief map of the training set, for every image."""

from __future__ import annotations

import numpy as np

from . import StageState


class MeanPoseStage:
    """A stage that ignores the image and predicts the training set's average beliefs.

    The classic floor every pose paper reports; also the simplest proof of the stage contract.
    """

    kind = "mean"

    def __init__(self, mean_beliefs: np.ndarray | None = None):
        self.mean_beliefs_ = mean_beliefs

    def fit(self, target_maps: np.ndarray) -> MeanPoseStage:
        """target_maps: (N, P+1, h, w) training targets."""
        self.mean_beliefs_ = np.asarray(target_maps, dtype=np.float32).mean(0)
        return self

    def beliefs(self, crops, previous, cache) -> np.ndarray:
        return np.broadcast_to(self.mean_beliefs_, (len(crops),) + self.mean_beliefs_.shape).copy()

    def config(self) -> dict:
        return {}

    def state(self) -> StageState:
        return StageState(arrays={"mean_beliefs": self.mean_beliefs_})

    @classmethod
    def from_state(cls, state: StageState) -> MeanPoseStage:
        return cls(state.arrays["mean_beliefs"])
