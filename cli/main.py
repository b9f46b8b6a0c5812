"""``pm``: train, evaluate, predict, compare and benchmark pose machines.

Thin click commands: they parse options, call the library and print. Errors in the user's
input are reported as one line (``Error: ...``), never as a traceback.
"""

from __future__ import annotations

import json

import click

from posemachines.errors import PoseMachinesError

from .common import (
    data_options,
    device_name,
    device_option,
    echo_err,
    friendly_errors,
    load_data,
    make_tta,
    report_skipped,
    tta_options,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="posemachines")
def cli():
    """Pose Machines (random forests, 2014) and Convolutional Pose Machines (2016).

    Train with `pm train --backend forest|cnn|mean`, score with `pm evaluate`, run on your own
    images with `pm predict`, put models side by side with `pm compare`. Everything runs on the
    built-in synthetic data with no download; `pm data` shows which real datasets were found.
    """


# -- evaluate ------------------------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path(exists=True))
@data_options(default_split="test")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@device_option
@tta_options
@click.option(
    "--zero-based",
    is_flag=True,
    help="A .mat prediction file holds 0-based coordinates (default: 1-based, as the "
    "dataset's annotation file).",
)
@click.option(
    "--save-predictions",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write every stage's keypoints to this JSON file.",
)
@friendly_errors
def evaluate(
    model,
    dataset,
    split,
    images,
    data_root,
    synthetic_size,
    protocol,
    on_bad_image,
    on_bad_annotation,
    as_json,
    batch_size,
    device,
    flip,
    scales,
    zero_based,
    save_predictions,
):
    """Score MODEL (a model directory, or a .mat/.json prediction file) on a dataset split.

    A model directory is evaluated on the dataset it was trained on unless --dataset says
    otherwise; the scores are recorded in its manifest.
    """
    from posemachines.comparison import load_entry, score_entry

    if batch_size < 1:
        raise PoseMachinesError(f"--batch-size must be at least 1, got {batch_size}")
    if save_predictions:
        from posemachines.predictions import check_replaceable

        check_replaceable(save_predictions)  # before the work, not after it
    tta = make_tta(flip, scales)
    entry = load_entry(model, device_name(device))
    name = dataset or (entry.model and entry.model.record.dataset_name) or "synthetic"
    if name == "packed":
        raise PoseMachinesError("this model was trained from a packed cache: pass --dataset")
    data = load_data(
        name,
        split,
        data_root,
        synthetic_size,
        protocol,
        images=images,
        on_bad_annotation=on_bad_annotation,
    )
    if entry.model is not None:
        entry.model.check_dataset(data)
    result, preds = score_entry(
        entry,
        data,
        batch_size,
        on_bad_image,
        progress=not as_json,
        one_based=not zero_based,
        tta=tta,
    )
    doc = result.to_dict()
    if save_predictions:
        from posemachines.predictions import write_predictions

        write_predictions(save_predictions, preds, data.skeleton)
    if entry.model is not None:
        record_scores(model, entry.manifest, data, tta, result)
    if result.skipped_images:
        names = result.skipped_images
        report_skipped(
            f"{len(names)} unreadable image(s) skipped and scored as missing predictions: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        )
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(format_result(doc))


def record_scores(model, manifest: dict, data, tta, result) -> None:
    """The scores in the model's manifest, under the dataset, split, protocol and views."""
    from posemachines.io import update_manifest

    evaluations = dict(manifest.get("evaluations", {}))
    key = f"{data.name}:{data.split}:{data.protocol}"
    if not tta.is_identity:
        key += f":tta={tta.describe()}"
    evaluations[key] = {
        "n": result.n,
        "skipped_images": len(result.skipped_images),
        "metrics": result.metrics,
        "per_stage_pck@0.2": [s["pck@0.2"] for s in result.per_stage],
    }
    try:
        update_manifest(model, evaluations=evaluations)
    except OSError as exc:  # a read-only model still gets its scores printed
        echo_err(f"the scores are not recorded in {model}/manifest.json ({exc.strerror or exc})")


def format_result(doc: dict) -> str:
    def pct(v):
        return "   -  " if v is None else f"{100 * v:6.1f}"

    keys = ("pck@0.2", "pck@0.1", "pckh@0.5", "pcp", "auc")
    head = f"{'':14s}" + "".join(f"{k:>10s}" for k in keys)
    tta = doc.get("test_time_augmentation") or {}
    views = ""
    if tta.get("flip") or tta.get("scales", [1.0]) != [1.0]:
        views = f"  test-time views: flip={tta['flip']} scales={tta['scales']}"
    title = f"{doc['dataset']}:{doc['split']}  n={doc['n']}  protocol={doc['protocol']}{views}"
    lines = [title, head]
    for t, stage in enumerate(doc["per_stage"], 1):
        lines.append(f"{'stage ' + str(t):14s}" + "".join(f"{pct(stage[k]):>10s}" for k in keys))
    lines.append("per joint (final stage)")
    for joint, m in doc["per_joint"].items():
        lines.append(f"{joint:14s}" + "".join(f"{pct(m[k]):>10s}" for k in keys))
    return "\n".join(lines)


from .compare_cmd import bench, compare  # noqa: E402
from .data_cmd import data  # noqa: E402
from .inspect_cmd import inspect  # noqa: E402
from .predict_cmd import predict  # noqa: E402
from .train_cmd import train  # noqa: E402

cli.add_command(train)
cli.add_command(predict)
cli.add_command(data)
cli.add_command(compare)
cli.add_command(bench)
cli.add_command(inspect)

if __name__ == "__main__":
    cli()
