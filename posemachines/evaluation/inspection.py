"""What a model directory holds, for ``pm inspect``: its stages and their receptive fields,
its size and cost, how it was trained and how it scored."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from posemachines.errors import PoseMachinesError
from posemachines.files.model_dir import read_manifest
from posemachines.files.owned import check_owned_file, write_owned_file
from posemachines.loading import load_model


def describe(folder: str | Path) -> dict:
    """Everything ``pm inspect`` prints, as plain values."""
    model = load_model(folder)
    manifest = read_manifest(folder)
    doc = {
        "model": str(folder),
        "backend": model.backend,
        "skeleton": f"{model.skeleton.name} ({model.skeleton.num_joints} joints)",
        "codec": model.codec.to_dict(),
        "stages": [stage.kind for stage in model.stages],
        "parameters": _parameter_count(model),
        "training": model.record.to_dict(),
        "evaluations": manifest.get("evaluations", {}),
    }
    network = _network(model)
    if network is not None:
        from posemachines.backends.cnn.analysis import flops_per_image, receptive_fields

        cfg = network.cfg
        doc["network"] = cfg.to_dict()
        doc["gflop_per_image"] = round(flops_per_image(cfg) / 1e9, 3)
        doc["receptive_field_px"] = receptive_fields(cfg)
    return doc


def _network(model):
    return next((s.network for s in model.stages if s.kind == "cnn"), None)


def _parameter_count(model) -> int:
    """Network weights, forest tree nodes, or stored arrays: what the model learned."""
    total, seen = 0, set()
    for stage in model.stages:
        state = stage.state()
        if state.network is not None and id(state.network) not in seen:
            seen.add(id(state.network))
            total += sum(p.numel() for p in state.network.module.parameters())
        total += sum(int(np.asarray(a).size) for a in state.arrays.values())
        if hasattr(stage, "parameter_count"):
            total += stage.parameter_count()
    return total


def format_description(doc: dict) -> str:
    """The ``pm inspect`` text: one fact per line, percent with one decimal."""
    codec = doc["codec"]
    lines = [
        f"model       {doc['model']}",
        f"backend     {doc['backend']}, {len(doc['stages'])} stages ({', '.join(doc['stages'])})",
        f"skeleton    {doc['skeleton']}",
        f"input       {codec['input_size']} px crops, belief maps every {codec['stride']} px, "
        f"sigma {codec['sigma']:g} px",
        f"parameters  {doc['parameters']:,}"
        + ("  (tree nodes)" if doc["backend"] in ("forest", "hybrid") else ""),
    ]
    if "gflop_per_image" in doc:
        lines.append(f"compute     {doc['gflop_per_image']:.3g} GFLOP per image (forward)")
        side = codec["input_size"]
        lines.append("receptive field of each stage (analytic, from the layers):")
        for t, rf in enumerate(doc["receptive_field_px"], 1):
            lines.append(f"  stage {t}: {rf} px ({100 * rf / side:.1f} % of the input side)")
    record = doc["training"]
    lines.append(
        f"trained on  {record.get('dataset') or '?'}; seed {record.get('seed')}; "
        f"{record.get('seconds') or '?'} s"
    )
    settings = record.get("settings") or {}
    if settings.get("supervision"):
        lines.append(f"supervision {settings['supervision']}")
    if record.get("command"):
        lines.append(f"command     {record['command']}")
    for key, value in (record.get("details") or {}).items():
        if "pck" in key and isinstance(value, list):
            value = ", ".join(f"{100 * v:.1f}" for v in value)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            value = ", ".join(f"{v:g}" for v in value)
        if not isinstance(value, (dict, list)):
            lines.append(f"  {key}: {value}")
    for key, ev in doc["evaluations"].items():
        stages = ev.get("per_stage_pck@0.2") or []
        figures = " -> ".join(f"{100 * v:.1f}" for v in stages if v is not None)
        lines.append(f"evaluated   {key}: PCK@0.2 by stage {figures} (n={ev.get('n')})")
    return "\n".join(lines)


def draw_effective_receptive_fields(folder: str | Path, path: str | Path) -> list[float]:
    """Draw each stage's effective receptive field (the input gradient of the centre cell)
    with the analytic one as a square; returns the radius holding 95 % of each map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from posemachines.backends.cnn.analysis import (
        effective_radius,
        effective_receptive_fields,
        receptive_fields,
    )

    check_owned_file(path)  # before the work, not after it
    network = _network(load_model(folder))
    if network is None:
        raise PoseMachinesError(f"{folder}: effective receptive fields need a CNN model")
    maps = effective_receptive_fields(network.module)
    analytic = receptive_fields(network.cfg)
    radii = [effective_radius(m) for m in maps]
    side = network.cfg.input_size
    fig, axes = plt.subplots(1, len(maps), figsize=(2.6 * len(maps), 2.9), squeeze=False)
    for t, (ax, erf) in enumerate(zip(axes[0], maps)):
        ax.imshow(np.sqrt(erf / max(erf.max(), 1e-30)), cmap="magma")
        half, c = analytic[t] / 2, (side - 1) / 2
        ax.add_patch(plt.Rectangle((c - half, c - half), 2 * half, 2 * half, fill=False, ec="c"))
        ax.add_patch(plt.Circle((c, c), radii[t], fill=False, ec="w", ls="--"))
        ax.set(xlim=(0, side - 1), ylim=(side - 1, 0), xticks=[], yticks=[])
        ax.set_title(f"stage {t + 1}: {analytic[t]} px / r95 {radii[t]:.0f} px", fontsize=8)
    fig.suptitle("effective receptive field (gradient of the centre cell; square: analytic)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": DRAWN_BY})
    plt.close(fig)
    write_owned_file(path, buf.getvalue(), "inspect")
    return radii


DRAWN_BY = "posemachines"  # the PNG text field a figure of ours carries
