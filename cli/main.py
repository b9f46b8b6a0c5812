"""``pm``: train, evaluate, predict, compare and benchmark pose machines.

Thin click commands: they parse options, call the library and print. Errors in the user's
input are reported as one line (``Error: ...``), never as a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from posemachines.cli.common import (
    MODEL,
    data_options,
    device_name,
    device_option,
    echo_err,
    friendly_errors,
    load_data,
    make_tta,
    report_skipped,
    runtime_option,
    tta_options,
)
from posemachines.cli.people_opts import (
    evaluate_people_model,
    format_detected,
    is_people_model,
    people_options,
    people_source,
    report_boxes,
)

from posemachines.errors import PoseMachinesError


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
@click.argument("model", type=MODEL)
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
    help="Also write every stage's keypoints to this JSON file (with --people or --boxes: "
    "COCO's keypoint results, for the official scorer).",
)
@people_options(min_score=0.0)
@runtime_option
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
    people,
    boxes,
    min_box_score,
    max_people,
    runtime,
):
    """Score MODEL (a model directory, an exported .onnx, or a .mat/.json prediction file) on
    a dataset split.

    A model directory is evaluated on the dataset it was trained on unless --dataset says
    otherwise; the scores are recorded in its manifest. With --people or --boxes, a pose for
    every person box of every image, scored as COCO's keypoint benchmark (detected boxes:
    OKS-NMS, box score x joint confidence, pycocotools' AP); a people model as MODEL is
    scored by its box AP@0.5 and recall.
    """
    if batch_size < 1:
        raise PoseMachinesError(f"--batch-size must be at least 1, got {batch_size}")
    if is_people_model(model):
        if people or boxes:
            raise PoseMachinesError(
                f"{model} is a people model: --people and --boxes go with a pose model"
            )
        name, entry = dataset or "synthetic-crowd", None
    else:
        source, label = people_source(people, boxes, min_box_score, device_name(device), max_people)
        tta = make_tta(flip, scales)
        entry, name = _pose_entry(model, dataset, device, save_predictions, runtime)
    data = load_data(
        name,
        split,
        data_root,
        synthetic_size,
        protocol,
        images=images,
        on_bad_annotation=on_bad_annotation,
    )
    if entry is None:
        return evaluate_people_model(model, data, device_name(device), as_json)
    if entry.model is not None:
        entry.model.check_dataset(data)
    if source is not None:
        options = (tta, batch_size, on_bad_image, as_json, save_predictions)
        return evaluate_detected_cmd(model, entry, data, source, label, *options)
    _score_on_given_boxes(
        model, entry, data, tta, batch_size, on_bad_image, as_json, zero_based, save_predictions
    )


def _score_on_given_boxes(
    model, entry, data, tta, batch_size, on_bad_image, as_json, zero_based, save_predictions
) -> None:
    """Score an entry on the dataset's own person boxes (its protocol) and print it."""
    from posemachines.evaluation.comparison import score_entry

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
        from posemachines.files.prediction_files import write_predictions

        write_predictions(save_predictions, preds, data.skeleton)
    if entry.model is not None and Path(model).is_dir():  # an .onnx file keeps no scores
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


def _pose_entry(model, dataset, device, save_predictions, runtime):
    """The entry to score (a pose model or a prediction file) and the dataset to score it
    on; a file ``--save-predictions`` may not replace is refused first."""
    from posemachines.evaluation.comparison import load_entry

    if save_predictions:
        from posemachines.files.owned import check_owned_file

        check_owned_file(save_predictions)  # before the work, not after it
    entry = load_entry(model, device_name(device), runtime=runtime)
    name = dataset or (entry.model and entry.model.record.dataset_name) or "synthetic"
    if name == "packed":
        raise PoseMachinesError("this model was trained from a packed cache: pass --dataset")
    return entry, name


def evaluate_detected_cmd(
    path, entry, data, source, label, tta, batch_size, on_bad_image, as_json, save_to
) -> None:
    """``pm evaluate MODEL --people/--boxes``: COCO's detected-box protocol."""
    from posemachines.files.model_dir import update_manifest
    from posemachines.files.owned import json_text, write_owned_file
    from posemachines.people.detected_boxes import evaluate_detected

    if entry.model is None:
        raise PoseMachinesError("--people and --boxes need a model directory, not predictions")
    result = evaluate_detected(
        entry.model,
        data,
        source,
        label,
        tta=tta,
        batch_size=batch_size,
        on_bad_image=on_bad_image,
        progress=not as_json,
    )
    report_boxes(source)
    if result.skipped:
        report_skipped(result.skipped.summary() + "; their people count as missed")
    if save_to:
        write_owned_file(save_to, json_text(result.results).encode(), "evaluate")
    doc = {"dataset": data.name, "split": data.split, **result.to_dict()}
    if not Path(path).is_dir():
        click.echo(
            json.dumps(doc) if as_json else format_detected(doc, f"{data.name}:{data.split}")
        )
        return
    key = f"{data.name}:{data.split}:detected" + (
        "" if tta.is_identity else f":tta={tta.describe()}"
    )
    evaluations = {**entry.manifest.get("evaluations", {}), key: doc}
    try:
        update_manifest(path, evaluations=evaluations)
    except OSError as exc:
        echo_err(f"the scores are not recorded in {path}/manifest.json ({exc.strerror or exc})")
    click.echo(json.dumps(doc) if as_json else format_detected(doc, f"{data.name}:{data.split}"))


def record_scores(model, manifest: dict, data, tta, result) -> None:
    """The scores in the model's manifest, under the dataset, split, protocol and views."""
    from posemachines.files.model_dir import update_manifest

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


from posemachines.cli.compare_cmd import bench, compare  # noqa: E402
from posemachines.cli.data_cmd import data  # noqa: E402
from posemachines.cli.export_cmd import export  # noqa: E402
from posemachines.cli.inspect_cmd import inspect  # noqa: E402
from posemachines.cli.models_cmd import models  # noqa: E402
from posemachines.cli.predict_cmd import predict  # noqa: E402
from posemachines.cli.serve_cmd import serve  # noqa: E402
from posemachines.cli.train_cmd import train  # noqa: E402

cli.add_command(train)
cli.add_command(predict)
cli.add_command(data)
cli.add_command(compare)
cli.add_command(bench)
cli.add_command(inspect)
cli.add_command(export)
cli.add_command(serve)
cli.add_command(models)

if __name__ == "__main__":
    cli()
