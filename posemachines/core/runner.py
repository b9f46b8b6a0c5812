"""The sequential runner: chains T stages and keeps every stage's beliefs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from posemachines.core.stage import Stage


def run_stages(
    stages: Sequence[Stage], crops: np.ndarray, previous: np.ndarray | None = None
) -> list[np.ndarray]:
    """Run ``stages`` in order on a batch of crops; returns the beliefs of each stage.

    Stage 1 receives ``previous`` (None, or the beliefs of stages run elsewhere, as when the
    upper part of a stack is trained on the lower part's out-of-fold beliefs); stage t
    receives stage t-1's. Nothing here knows what a stage is made of: forests, networks and
    priors all meet the same contract.
    """
    cache: dict = {}
    beliefs = previous
    out = []
    for stage in stages:
        beliefs = np.asarray(stage.beliefs(crops, beliefs, cache), dtype=np.float32)
        out.append(beliefs)
    return out
