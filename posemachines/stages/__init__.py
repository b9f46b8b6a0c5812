"""The stage contract shared by every backend.

A stage maps (crops, previous beliefs) to beliefs::

    beliefs = stage.beliefs(crops, previous, cache)

crops    : (N, S, S, 3) uint8 person-centred crops.
previous : (N, P+1, h, w) float32 beliefs of the stage before, or None for stage 1.
cache    : a dict that lives for one call of the runner; stages store image features there so
           that several stages (e.g. the CNN's shared trunk, the forest's dense features) compute
           them once per batch.
returns  : (N, P+1, h, w) float32 belief maps (P joints, then background).

A stage also says how it is stored: ``kind`` names it in the manifest, ``config()`` gives its
JSON settings, ``weights()`` maps file names to writers, and the module-level loader for its
kind (see ``io.STAGE_LOADERS``) rebuilds it from the config and the files.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Stage(Protocol):
    kind: str

    def beliefs(
        self, crops: np.ndarray, previous: np.ndarray | None, cache: dict
    ) -> np.ndarray: ...

    def config(self) -> dict: ...
