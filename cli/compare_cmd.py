"""`pm compare` and `pm bench`."""

from __future__ import annotations

import click
from posemachines.cli.common import (
    MODEL,
    command_line,
    data_options,
    device_name,
    device_option,
    friendly_errors,
    make_tta,
    on_bad_image_option,
    overwrite_option,
    runtime_option,
    tta_options,
)
from posemachines.cli.people_opts import check_people_options, people_options


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
def compare(entries, flip, scales, timing_images, **options):
    """Evaluate models and prediction files side by side and write an HTML/Markdown/JSON report.

    With no ENTRIES, compares the latest run of each backend under runs/ on the test split of
    the dataset they were trained on.
    """
    from posemachines.api import compare as compare_models

    if timing_images < 1:
        raise click.ClickException("--timing-images must be at least 1")
    check_people_options(options["people"], options["boxes"])
    report = compare_models(
        entries,
        timing_images=timing_images,
        tta=make_tta(flip, scales),
        command=command_line(),
        **options,
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
def bench(model, timing_images, batch_size, flip, scales, device, **options):
    """Median milliseconds per image of MODEL (a model directory, an .onnx or a zoo name),
    measured as `pm compare` measures it; with both runtimes side by side."""
    import json

    from posemachines.api import bench as bench_model

    if timing_images < 1 or batch_size < 1:
        raise click.ClickException("--timing-images and --batch-size must be at least 1")
    doc = bench_model(
        model,
        timing_images=timing_images,
        batch_size=batch_size,
        tta=make_tta(flip, scales),
        device=device_name(device),
        **options,
    )
    click.echo(json.dumps(doc))
