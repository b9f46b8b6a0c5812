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
settings and its parameters), and ``from_state(state)`` rebuilds it. The backend registry
(``registry.stage_class(kind)``) finds the class of a kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class StageFile:
    """A file a stage encodes itself: ``name`` is its suffix when saved (the model directory
    calls it ``stageN.NAME``) and its whole name when loaded; ``data`` its bytes."""

    name: str
    data: bytes


@dataclass
class StageState:
    """What a stage is made of, in forms that load without running code.

    config  : JSON settings.
    arrays  : named numpy arrays (stored as one safetensors file, the manifest's ``file``).
    files   : files the stage writes and reads itself, by manifest field (``"file"``, or a
              name ending in ``_file``): a forest stage's tree arrays, say.
    network : a network that several stages share (stored once, as safetensors); it has
              ``config_dict()`` and ``state_dict()``, and the stage class rebuilds it with
              ``network_from_state(config, tensors, device)``.
    """

    config: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
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

    # Optional: ``parameter_count()``, the numbers it learned beyond its arrays and network
    # (a forest's tree nodes), for ``pm inspect``; ``check_fits(channels, side)``, raising a
    # ``PoseMachinesError`` when what it loaded cannot give beliefs of (channels, side, side)
    # (a model directory calls it on every stage it loads).
