"""`pm predict`: keypoints and overlays for the user's own images, folders and videos."""

from __future__ import annotations

import click
from posemachines.cli.common import (
    MODEL,
    default_cnn,
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
@click.argument("model")
@click.argument("inputs", nargs=-1, type=click.Path())
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="predictions",
    show_default=True,
    help="Folder for keypoints.json and the overlay images.",
)
@click.option(
    "--centre",
    nargs=2,
    type=float,
    default=None,
    help="Person centre X Y in pixels (default: the image centre).",
)
@click.option(
    "--box-side",
    "--scale",
    "box_side",
    type=float,
    default=None,
    help="Side of the person box in pixels (default: the longer image side).",
)
@people_options(min_score=0.3)
@click.option("--no-overlays", is_flag=True, help="Write keypoints only.")
@overwrite_option
@device_option
@runtime_option
@tta_options
@on_bad_image_option
@friendly_errors
def predict(model, inputs, no_overlays, device, flip, scales, **options):
    """Predict keypoints with MODEL (a model directory, an exported .onnx or a zoo name: pm
    models) for image files, folders of images and videos. Without a model (pm predict
    photo.jpg) the zoo's default CNN is used, and a line says so.

    One person per image (the whole image, or --centre/--box-side), or with --people or
    --boxes every person found: a pose for every box. Writes OUT/keypoints.json (COCO's
    keypoint results: one entry per person with image_id, flat [x, y, confidence]
    keypoints in 0-based pixels, score, bbox; track_id in videos) and overlays with the
    skeletons drawn (right limbs red, left blue): OUT/NAME.png per image,
    OUT/NAME_overlay.mp4 per video (needs posemachines[video]).
    OUT may be new, empty or an earlier prediction folder (else --overwrite, which still
    replaces only files posemachines wrote there); if the command fails, the files it wrote
    are removed again.
    """
    from posemachines.api.predicting import predict_into

    model, inputs = model_and_inputs(model, inputs)
    check_people_options(options["people"], options["boxes"])
    done = predict_into(
        model,
        inputs,
        overlays=not no_overlays,
        device=device_name(device),
        tta=make_tta(flip, scales),
        **options,
    )
    click.echo(f"{done.images} image(s), {done.people} people: keypoints in {done.keypoints}")


def model_and_inputs(model: str, inputs: tuple) -> tuple[str, tuple]:
    """The model and the inputs: when the first argument names no model, every argument is an
    input and the model is the zoo's default CNN (said in one line)."""
    from posemachines.zoo import names_a_model

    if names_a_model(model):
        if not inputs:
            raise click.UsageError("give the images, folders or videos to predict")
        return MODEL.convert(model, None, None), inputs
    return default_cnn("using"), (model, *inputs)
