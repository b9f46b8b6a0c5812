"""Mean-pose prior: the average target belief map of the training set, for every image."""

from __future__ import annotations

import numpy as np

from posemachines.core.stage import StageState
from posemachines.errors import PoseMachinesError


class MeanPoseStage:
    """A stage that ignores the image and predicts the training set's average beliefs.

    The classic floor every pose paper reports; also the simplest proof of the stage contract.
    """

    kind = "mean"

    def __init__(self, mean_beliefs: np.ndarray | None = None):
        self.mean_beliefs_ = mean_beliefs

    def fit(self, target_maps: np.ndarray) -> MeanPoseStage:
        """target_maps: (N, P+1, h, w) training targets."""
        self.sum_, self.count_ = None, 0
        return self.partial_fit(target_maps)

    def partial_fit(self, target_maps: np.ndarray) -> MeanPoseStage:
        """Add a batch of training targets (N, P+1, h, w) to the average: memory follows the
        batch, not the training set."""
        batch = np.asarray(target_maps).sum(0, dtype=np.float64)
        if getattr(self, "sum_", None) is None:
            self.sum_, self.count_ = np.zeros_like(batch), 0
        self.sum_ += batch
        self.count_ += len(target_maps)
        self.mean_beliefs_ = (self.sum_ / max(self.count_, 1)).astype(np.float32)
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

    def check_fits(self, channels: int, side: int) -> None:
        """The beliefs it predicts as they are must be the model's, and finite."""
        beliefs = self.mean_beliefs_
        if np.shape(beliefs) != (channels, side, side) or not np.isfinite(beliefs).all():
            raise PoseMachinesError(
                f"mean_beliefs has shape {np.shape(beliefs)}, expected "
                f"({channels}, {side}, {side}) finite values"
            )
