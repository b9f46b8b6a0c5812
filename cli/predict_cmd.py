"""`pm predict`: keypoints and overlays for the user's own images, folders and videos."""

from __future__ import annotations

import math

import click

from .common import (
    device_name,
    device_option,
    friendly_errors,
    make_tta,
    on_bad_image_option,
    overwrite_option,
    report_skipped,
    tta_options,
)


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
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
@click.option(
    "--boxes",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON {image name: [x, y, w, h]} giving each image's person box.",
)
@click.option("--no-overlays", is_flag=True, help="Write keypoints only.")
@overwrite_option
@device_option
@tta_options
@on_bad_image_option
@friendly_errors
def predict(
    model,
    inputs,
    out,
    centre,
    box_side,
    boxes,
    no_overlays,
    overwrite,
    device,
    flip,
    scales,
    on_bad_image,
):
    """Predict keypoints with MODEL for image files, folders of images and videos.

    Writes OUT/keypoints.json (COCO-results style: image_id, flat [x, y, score] keypoints,
    0-based pixels) and overlays with the skeleton drawn (right limbs red, left blue):
    OUT/NAME.png per image, OUT/NAME_overlay.mp4 per video (needs posemachines[video]).
    OUT may be new, empty or an earlier prediction folder (else --overwrite, which still
    replaces only files posemachines wrote there); if the command fails, the files it wrote
    are removed again.
    """
    from posemachines.data import SkippedImages
    from posemachines.files import claim
    from posemachines.inference import (
        OverlayWriter,
        coco_results,
        collect_inputs,
        load_boxes,
        predict_files,
    )
    from posemachines.model import load_model
    from posemachines.runs import check_output_folder, output_folder

    if box_side is not None and not (box_side > 0 and math.isfinite(box_side)):
        raise click.ClickException(f"--box-side must be positive, in pixels, got {box_side}")
    if centre is not None and not all(math.isfinite(v) for v in centre):
        raise click.ClickException(f"--centre must be two finite numbers, got {centre}")
    tta = make_tta(flip, scales)
    check_output_folder(out, "predict", overwrite)
    pose_model = load_model(model, device_name(device))
    files = collect_inputs(inputs)
    box_map = load_boxes(boxes) if boxes else None
    names, kps, confs, skipped = [], [], [], SkippedImages()
    with output_folder(out, "predict", overwrite=overwrite) as out_dir:
        overlays = OverlayWriter(out_dir, pose_model.skeleton)
        # Every file this command will write is claimed first: a name taken by a file of the
        # user's stops it here, before anything is computed or written.
        claim(out_dir / "keypoints.json")
        for source in files if not no_overlays else ():
            claim(overlays.path_for(source))
        try:
            for source, name, image, kp, conf in predict_files(
                pose_model,
                files,
                boxes=box_map,
                centre=centre,
                box_side=box_side,
                tta=tta,
                on_bad_image=on_bad_image,
                skipped=skipped,
            ):
                names.append(name)
                kps.append(kp)
                confs.append(conf)
                if not no_overlays:
                    overlays.add(source, name, image, kp)
            overlays.close()
            results = coco_results(names, kps, confs)
            write_keypoints(out_dir / "keypoints.json", pose_model, tta, skipped, results)
        except BaseException:
            overlays.discard()
            raise
    report_skipped(skipped)
    click.echo(f"{len(results)} image(s): keypoints in {out_dir / 'keypoints.json'}")


def write_keypoints(path, model, tta, skipped, results) -> None:
    from posemachines.files import atomic_write_json

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
