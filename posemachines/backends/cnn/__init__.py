"""The Convolutional Pose Machine of Wei et al. (CVPR 2016), trained end to end with a loss at
every stage. torch is imported only when a CNN is trained or loaded."""

from ..registry import register_backend
from .settings import CNNSettings

register_backend(
    "cnn",
    settings=CNNSettings,
    trainer="posemachines.backends.cnn.trainer:CNNTrainer",
    stages={"cnn": "posemachines.backends.cnn.stage:CPMStage"},
    summary="the 2016 Convolutional Pose Machine",
)
