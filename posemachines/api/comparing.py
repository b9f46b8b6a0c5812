"""Comparing models as ``pm compare`` does: each scored on one dataset split, and the report."""

from __future__ import annotations

from pathlib import Path

from posemachines.api.people import people_source
from posemachines.api.scoring import dataset_of
from posemachines.people.multiperson import MAX_PEOPLE
from posemachines.progress import note


def compare(
    entries,
    dataset: str | None = None,
    *,
    split="test",
    data_root=None,
    synthetic_size=None,
    images=None,
    protocol=None,
    out=None,
    device="cpu",
    timing_images=20,
    runs_root="runs",
    tta=None,
    on_bad_image="skip",
    overwrite=False,
    parts=True,
    on_bad_annotation="stop",
    people=None,
    boxes=None,
    min_box_score=0.0,
    max_people=MAX_PEOPLE,
    runtime="torch",
    command: str | None = None,
) -> Path:
    """Compare model directories and prediction files as ``pm compare`` does: ``entries``
    (default: the latest run of each backend under ``runs_root``) scored on one dataset split,
    and the report folder written; returns its path. ``out`` must be new, empty or a
    previous report unless ``overwrite``; nothing is left behind when the comparison fails.
    With ``parts``, each stack is shown beside its lower parts. ``people`` (a people model's
    folder) or ``boxes`` (a detections file) add scores on detected boxes; ``runtime``: see
    ``loading.load_pose_model``. ``command`` is what the report says made it."""
    from posemachines.core.tta import NO_TTA
    from posemachines.data import load_split, skipped_annotations_line
    from posemachines.devices import resolve_device
    from posemachines.evaluation.comparison import (
        compare_entries,
        default_entries,
        load_entry,
        lower_parts,
    )
    from posemachines.evaluation.report import write_report
    from posemachines.files.runs import check_output_folder

    tta = tta or NO_TTA
    device = resolve_device(device)
    if out is not None:
        check_output_folder(out, "compare", overwrite)
    paths = [Path(p) for p in (entries or [])] or default_entries(runs_root)
    loaded = []
    for p in paths:
        label = p.name if p.name not in {e.label for e in loaded} else f"{p.parent.name}/{p.name}"
        loaded.append(load_entry(p, device, label, runtime))
        if parts:
            loaded += lower_parts(loaded[-1])
    data = load_split(
        dataset_of([e.model for e in loaded], dataset),
        split,
        data_root,
        synthetic_size=synthetic_size,
        protocol=protocol,
        images=images,
        on_bad_annotation=on_bad_annotation,
    )
    line = skipped_annotations_line(data)
    if line:
        note(line)
    comparison = compare_entries(
        loaded,
        data,
        tta=tta,
        on_bad_image=on_bad_image,
        timing_images=timing_images,
        device=device,
        people=people_source(people, boxes, min_box_score, device, max_people),
    )
    command = command or "posemachines.compare(...)"
    return write_report(comparison, out, command, overwrite=overwrite, runs_root=runs_root)


def bench(
    model: str | Path,
    dataset: str | None = None,
    *,
    split: str = "test",
    data_root: str | Path | None = None,
    timing_images: int = 20,
    batch_size: int = 1,
    device: str = "cpu",
    runtime: str | None = None,
    tta=None,
    on_bad_image: str = "skip",
) -> dict:
    """``pm bench``: median milliseconds per image of ``model``, timed as ``compare`` times it,
    in ``runtime`` (default: torch, and ONNX Runtime beside it where it is installed and the
    model is made of CNN stages; an ``.onnx`` in ONNX Runtime)."""
    from posemachines.core.tta import NO_TTA
    from posemachines.data import load_dataset
    from posemachines.evaluation.comparison import load_entry, time_model

    runtimes = [runtime] if runtime is not None else default_runtimes(model)
    entries = {r: load_entry(model, device, runtime=r) for r in runtimes}
    first = next(iter(entries.values()))
    data = load_dataset(dataset_of([first.model], dataset), split, data_root)
    how = dict(batch_size=batch_size, tta=tta or NO_TTA, on_bad_image=on_bad_image)
    timed = {r: time_model(e.model, data, timing_images, **how) for r, e in entries.items()}
    doc = {"model": str(model), "dataset": data.describe(), **next(iter(timed.values()))}
    return {**doc, "runtimes": timed}


def default_runtimes(model: str | Path) -> list[str]:
    """torch (ONNX Runtime for an .onnx), and ONNX Runtime beside it where it is installed
    and the model is made of CNN stages."""
    import importlib.util

    from posemachines.loading import is_onnx_file, load_model

    if is_onnx_file(model):
        return ["onnxruntime"]
    has_ort = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
    kinds = {stage.kind for stage in load_model(model).stages}
    return ["torch", "onnxruntime"] if has_ort and kinds == {"cnn"} else ["torch"]
