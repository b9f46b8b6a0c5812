"""The stage contract shared by every backend.

A stage maps (crops, previous beliefs) to beliefs::

    beliefs = stage.beliefs(crops, previous, cache)

crops    : (N, S, S, 3) uint8 person-centred crops.
previous : (N, P+1, h, w) float32 beliefs of the stage before, or None for stage 1.
cache    : a dict that lives for one call of the runner; stages store image features there so
           that several stages (e.g. the CNN's shared trunk, the forest's dense features) compute
           them once per batch.
returns  : (N, P+1, h, w) float32 belief maps (P joints, then background).

A stage also says what it is made of, so that a model directory can hold it without knowing
its type: ``kind`` names it in the manifest, ``state()`` returns a ``StageState`` (its JSON
settings and its parameters), and ``from_state(state)`` rebuilds it. ``stage_class(kind)``
finds the class of a kind.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import PoseMachinesError


@dataclass
class StageState:
    """What a stage is made of, in forms that load without running code.

    config     : JSON settings.
    arrays     : named numpy arrays (stored as one safetensors file).
    estimators : named scikit-learn forests, ``"joints"`` and optionally ``"parts"`` (stored
                 as tree arrays).
    network    : a network that several stages share (stored once, as safetensors); it has
                 ``config_dict()`` and ``state_dict()``.
    """

    config: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    estimators: dict = field(default_factory=dict)
    network: Any = None


class Stage(Protocol):
    kind: str

    def beliefs(
        self, crops: np.ndarray, previous: np.ndarray | None, cache: dict
    ) -> np.ndarray: ...

    def config(self) -> dict: ...

    def state(self) -> StageState: ...

    @classmethod
    def from_state(cls, state: StageState) -> Stage: ...


# The class of each kind of stage, imported only when a model uses it (torch for "cnn").
STAGE_CLASSES = {
    "mean": ("posemachines.stages.mean", "MeanPoseStage"),
    "forest": ("posemachines.stages.forest", "ForestStage"),
    "cnn": ("posemachines.stages.cnn", "CPMStage"),
}


def stage_class(kind: str):
    if kind not in STAGE_CLASSES:
        raise PoseMachinesError(f"unknown stage kind {kind!r}; known: {sorted(STAGE_CLASSES)}")
    module, name = STAGE_CLASSES[kind]
    return getattr(importlib.import_module(module), name)
