"""``pm``: train, evaluate, predict, compare and benchmark pose machines.

Thin click commands: they parse options, call the library and print. Errors in the user's
input are reported as one line (``Error: ...``), never as a traceback.
"""

from __future__ import annotations

import json

import click
from posemachines.cli.common import (
    MODEL,
    CommandGroup,
    data_options,
    data_request,
    device_name,
    device_option,
    friendly_errors,
    make_tta,
    report_skipped,
    runtime_option,
    show_notes,
    tta_options,
)
from posemachines.cli.people_opts import (
    PEOPLE_OPTIONS,
    check_people_options,
    format_detected,
    format_people,
    people_options,
)

from posemachines.errors import PoseMachinesError


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="posemachines")
def cli():
    """Pose Machines (random forests, 2014) and Convolutional Pose Machines (2016).

    Train with `pm train --backend forest|cnn|mean`, score with `pm evaluate`, run on your own
    images with `pm predict`, put models side by side with `pm compare`. Everything runs on the
    built-in synthetic data with no download; `pm data` shows which real datasets were found.
    """
    show_notes()


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
def evaluate(model, as_json, batch_size, device, flip, scales, zero_based, save_predictions, **o):
    """Score MODEL (a model directory, an exported .onnx, a zoo name, or a .mat/.json
    prediction file) on a dataset split.

    A model directory is evaluated on the dataset it was trained on unless --dataset says
    otherwise; the scores are recorded in its manifest. With --people or --boxes, a pose for
    every person box of every image, scored as COCO's keypoint benchmark (detected boxes:
    OKS-NMS, box score x joint confidence, pycocotools' AP); a people model as MODEL is
    scored by its box AP@0.5 and recall.
    """
    from posemachines.api.scoring import evaluate_model

    if batch_size < 1:
        raise PoseMachinesError(f"--batch-size must be at least 1, got {batch_size}")
    check_people_options(o["people"], o["boxes"])
    done = evaluate_model(
        model,
        data_request(o),
        device=device_name(device),
        tta=make_tta(flip, scales),
        batch_size=batch_size,
        one_based=not zero_based,
        save_predictions=save_predictions,
        progress=not as_json,
        **{k: o[k] for k in PEOPLE_OPTIONS + ("runtime", "on_bad_image")},
    )
    if done.skipped:
        names = done.skipped
        report_skipped(
            f"{len(names)} unreadable image(s) skipped and scored as missing predictions: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        )
    if as_json:
        click.echo(json.dumps(done.doc))
        return
    show = {"pose": format_result, "detected": format_detected, "people": format_people}
    click.echo(show[done.kind](done.doc, done.title))


def format_result(doc: dict, title: str = "") -> str:
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
