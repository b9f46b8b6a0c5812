"""What a CNN shows in a comparison report: each stage's analytic receptive field beside the
accuracy of the joints near and far down the kinematic chain, and the gradient summaries its
training log holds (``Backend.figures`` of the cnn backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def report_figures(model, folder: Path, pck_by_joint_and_stage, skeleton) -> dict:
    """The figures of a model of CNN stages, by name (the report draws them)."""
    from posemachines.backends.cnn.analysis import receptive_fields

    groups = skeleton.kinematic_groups()
    figures = {
        "receptive_field_px": receptive_fields(model.stages[0].network.cfg),
        "pck_by_group_and_stage": {
            name: np.nanmean(pck_by_joint_and_stage[:, idx], axis=1).tolist()
            for name, idx in groups.items()
            if idx
        },
        "supervision": model.record.settings.get("supervision", "all"),
    }
    gradients = training_gradients(folder)
    if gradients:
        figures["gradients"] = gradients
    return figures


def training_gradients(folder: Path, points: int = 3) -> list[dict]:
    """The gradient summaries of a run's training log at ``points`` moments (first, middle,
    last), or [] when it recorded none."""
    log = Path(folder) / "train_log.jsonl"
    if not log.is_file():
        return []
    import json

    records = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("gradients"), dict):
            records.append(record)
    if not records:
        return []
    picks = sorted({int(round(i)) for i in np.linspace(0, len(records) - 1, points)})
    return [records[i] for i in picks]
