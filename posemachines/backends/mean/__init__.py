"""The mean-pose prior: the average target belief maps of the training crops, a baseline."""

from ..registry import register_backend
from .settings import MeanSettings

register_backend(
    "mean",
    settings=MeanSettings,
    trainer="posemachines.backends.mean.trainer:MeanTrainer",
    stages={"mean": "posemachines.backends.mean.stage:MeanPoseStage"},
    summary="mean-pose prior",
)
