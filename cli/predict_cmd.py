"""`pm predict`: keypoints and overlays for the user's own images, folders and videos."""

from __future__ import annotations

import math

import click
from posemachines.cli.common import (
    MODEL,
    device_name,
    device_option,
    echo_err,
    friendly_errors,
    make_tta,
    on_bad_image_option,
    overwrite_option,
    report_skipped,
    runtime_option,
    tta_options,
)
from posemachines.cli.people_opts import people_options, people_source, report_boxes

from posemachines.errors import PoseMachinesError


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
def predict(
    model,
    inputs,
    out,
    centre,
    box_side,
    people,
    boxes,
    min_box_score,
    max_people,
    no_overlays,
    overwrite,
    device,
    runtime,
    flip,
    scales,
    on_bad_image,
):
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
    from posemachines.data import SkippedImages
    from posemachines.files.owned import claim
    from posemachines.files.runs import check_output_folder, output_folder
    from posemachines.inference import OverlayWriter, collect_inputs, predict_files
    from posemachines.loading import load_pose_model

    model, inputs = model_and_inputs(model, inputs)
    tta = make_tta(flip, scales)
    finder, _ = people_source(people, boxes, min_box_score, device_name(device), max_people)
    check_person_box(centre, box_side, finder)
    check_output_folder(out, "predict", overwrite)
    pose_model = load_pose_model(model, device_name(device), runtime)
    files = collect_inputs(inputs)
    results, images, skipped = [], 0, SkippedImages()
    with output_folder(out, "predict", overwrite=overwrite) as out_dir:
        overlays = OverlayWriter(out_dir, pose_model.skeleton, files)
        # Every file this command will write is claimed first: a name taken by a file of the
        # user's stops it here, before anything is computed or written.
        claim(out_dir / "keypoints.json")
        for source in files if not no_overlays else ():
            claim(overlays.path_for(source))
        try:
            for path, name, image, found in predict_files(
                pose_model,
                files,
                people=finder,
                centre=centre,
                box_side=box_side,
                tta=tta,
                on_bad_image=on_bad_image,
                skipped=skipped,
            ):
                images += 1
                results += [person.to_coco(name) for person in found]
                if not no_overlays:
                    overlays.add(path, name, image, found)
            overlays.close()
            write_keypoints(out_dir / "keypoints.json", pose_model, tta, skipped, results)
        except BaseException:
            overlays.discard()
            raise
    report_skipped(skipped)
    report_boxes(finder)
    click.echo(
        f"{images} image(s), {len(results)} people: keypoints in {out_dir / 'keypoints.json'}"
    )


def write_keypoints(path, model, tta, skipped, results) -> None:
    from posemachines.files.owned import atomic_write_json

    atomic_write_json(
        path,
        {
            "skeleton": model.skeleton.name,
            "joints": list(model.skeleton.joints),
            "coordinates": "0-based pixel centres",
            "test_time_augmentation": tta.to_dict(),
            "skipped_images": skipped.names,
            "results": results,
        },
    )


def model_and_inputs(model: str, inputs: tuple) -> tuple[str, tuple]:
    """The model and the inputs: when the first argument names no model, every argument is an
    input and the model is the zoo's default CNN (said in one line)."""
    from posemachines.zoo import DEFAULT_CNN, names_a_model

    if names_a_model(model):
        if not inputs:
            raise click.UsageError("give the images, folders or videos to predict")
        return MODEL.convert(model, None, None), inputs
    default = MODEL.convert(DEFAULT_CNN, None, None)
    echo_err(f"no model given: using the zoo's {DEFAULT_CNN} (pm models lists the others)")
    return default, (model, *inputs)


def check_person_box(centre, box_side, finder) -> None:
    """--centre and --box-side: finite, positive, and for one person per image only."""
    if box_side is not None and not (box_side > 0 and math.isfinite(box_side)):
        raise click.ClickException(f"--box-side must be positive, in pixels, got {box_side}")
    if centre is not None and not all(math.isfinite(v) for v in centre):
        raise click.ClickException(f"--centre must be two finite numbers, got {centre}")
    if finder is not None and (centre is not None or box_side is not None):
        raise PoseMachinesError("--centre and --box-side are for one person, not --people/--boxes")
