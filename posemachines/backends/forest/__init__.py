"""The Pose Machine of Ramakrishna et al. (ECCV 2014): random-forest stages on handcrafted image
features and context features of the stage before's beliefs."""

from ..registry import register_backend
from .settings import ForestSettings

register_backend(
    "forest",
    settings=ForestSettings,
    trainer="posemachines.backends.forest.trainer:ForestTrainer",
    stages={"forest": "posemachines.backends.forest.stage:ForestStage"},
    summary="the 2014 Pose Machine (random forests)",
)
