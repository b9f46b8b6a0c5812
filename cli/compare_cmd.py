"""`pm compare` and `pm bench`."""

from __future__ import annotations

import click
from posemachines.cli.common import (
    MODEL,
    data_options,
    device_option,
    friendly_errors,
    make_tta,
    on_bad_image_option,
    overwrite_option,
    runtime_option,
    tta_options,
)
from posemachines.cli.people_opts import people_options

from posemachines.errors import PoseMachinesError


@click.command()
@click.argument("entries", nargs=-1, type=MODEL)
@data_options(default_split="test")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Report folder (default: a new runs/compare-N).",
)
@overwrite_option
@device_option
@tta_options
@click.option("--timing-images", type=int, default=20, show_default=True)
@click.option(
    "--parts/--no-parts",
    default=True,
    show_default=True,
    help="Show each stack (--stack) beside its lower parts, made from the same model.",
)
@people_options(min_score=0.0)
@runtime_option
@friendly_errors
def compare(
    entries,
    dataset,
    split,
    images,
    data_root,
    synthetic_size,
    protocol,
    on_bad_image,
    on_bad_annotation,
    out,
    overwrite,
    device,
    flip,
    scales,
    timing_images,
    parts,
    people,
    boxes,
    min_box_score,
    max_people,
    runtime,
):
    """Evaluate models and prediction files side by side and write an HTML/Markdown/JSON report.

    With no ENTRIES, compares the latest run of each backend under runs/ on the test split of
    the dataset they were trained on.
    """
    from posemachines.api import compare as compare_models

    if timing_images < 1:
        raise click.ClickException("--timing-images must be at least 1")

    report = compare_models(
        entries,
        dataset=dataset,
        split=split,
        images=images,
        data_root=data_root,
        synthetic_size=synthetic_size,
        protocol=protocol,
        out=out,
        device=device,
        timing_images=timing_images,
        tta=make_tta(flip, scales),
        on_bad_image=on_bad_image,
        overwrite=overwrite,
        parts=parts,
        on_bad_annotation=on_bad_annotation,
        people=people,
        boxes=boxes,
        min_box_score=min_box_score,
        max_people=max_people,
        runtime=runtime,
    )
    click.echo(f"report written to {report}/report.html")


@click.command()
@click.argument("model", type=MODEL)
@click.option("--dataset", default=None)
@click.option("--split", default="test", show_default=True)
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@click.option(
    "--timing-images",
    type=int,
    default=20,
    show_default=True,
    help="How many images are timed (as pm compare's --timing-images).",
)
@click.option("--batch-size", type=int, default=1, show_default=True)
@device_option
@click.option(
    "--runtime",
    type=click.Choice(["torch", "onnxruntime"]),
    default=None,
    help="Time this runtime only (default: torch, and ONNX Runtime beside it where it is "
    "installed and the model exports).",
)
@tta_options
@on_bad_image_option
@friendly_errors
def bench(
    model,
    dataset,
    split,
    data_root,
    timing_images,
    batch_size,
    device,
    runtime,
    flip,
    scales,
    on_bad_image,
):
    """Median milliseconds per image of MODEL (a model directory or an .onnx), measured as
    `pm compare` measures it; with both runtimes side by side."""
    import json

    from posemachines.cli.common import device_name

    from posemachines.data import load_dataset
    from posemachines.evaluation.comparison import load_entry, time_model

    if timing_images < 1 or batch_size < 1:
        raise click.ClickException("--timing-images and --batch-size must be at least 1")
    tta = make_tta(flip, scales)
    dev = device_name(device)
    entries = {r: load_entry(model, dev, runtime=r) for r in _runtimes(model, runtime)}
    first = next(iter(entries.values()))
    name = dataset or first.model.record.dataset_name or "synthetic"
    if name == "packed":
        raise PoseMachinesError(
            "this model was trained from a packed cache: pass --dataset to say what to time it on"
        )
    data = load_dataset(name, split, data_root)
    timed = {
        r: time_model(
            e.model, data, timing_images, batch_size=batch_size, tta=tta, on_bad_image=on_bad_image
        )
        for r, e in entries.items()
    }
    doc = {"model": str(model), "dataset": data.describe(), **next(iter(timed.values()))}
    doc["runtimes"] = timed
    click.echo(json.dumps(doc))


def _runtimes(model, runtime) -> list[str]:
    """The runtimes to time: the one asked for, else torch (ONNX Runtime for an .onnx) and
    ONNX Runtime beside it where it is installed and the model is made of CNN stages."""
    import importlib.util

    from posemachines.core.model import load_model
    from posemachines.loading import is_onnx_file

    if runtime is not None:
        return [runtime]
    if is_onnx_file(model):
        return ["onnxruntime"]
    has_ort = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
    kinds = {stage.kind for stage in load_model(model).stages}
    return ["torch", "onnxruntime"] if has_ort and kinds == {"cnn"} else ["torch"]
