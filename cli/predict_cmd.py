"""`pm predict`: keypoints and overlays for the user's own images, folders and videos."""

from __future__ import annotations

from pathlib import Path

import click

from .common import device_name, device_option, friendly_errors, make_tta, tta_options


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
    "--scale",
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
@device_option
@tta_options
@friendly_errors
def predict(model, inputs, out, centre, scale, boxes, no_overlays, device, flip, scales):
    """Predict keypoints with MODEL for image files, folders of images and videos.

    Writes OUT/keypoints.json (COCO-results style: image_id, flat [x, y, score] keypoints,
    0-based pixels) and overlays with the skeleton drawn (right limbs red, left blue):
    OUT/NAME.png per image, OUT/NAME_overlay.mp4 per video (needs posemachines[video]).
    """
    from posemachines.inference import (
        OverlayWriter,
        coco_results,
        collect_inputs,
        load_boxes,
        predict_files,
    )
    from posemachines.io import atomic_write_json, load_model

    tta = make_tta(flip, scales)
    pose_model = load_model(model, device_name(device))
    files = collect_inputs(inputs)
    box_map = load_boxes(boxes) if boxes else None
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, kps, confs = [], [], []
    overlays = OverlayWriter(out_dir, pose_model.skeleton)
    try:
        for source, name, image, kp, conf in predict_files(
            pose_model, files, box_map, centre, scale, tta=tta
        ):
            names.append(name)
            kps.append(kp)
            confs.append(conf)
            if not no_overlays:
                overlays.add(source, name, image, kp)
    finally:
        overlays.close()
    results = coco_results(names, kps, confs)
    atomic_write_json(
        out_dir / "keypoints.json",
        {
            "skeleton": pose_model.skeleton.name,
            "joints": list(pose_model.skeleton.joints),
            "coordinates": "0-based pixel centres",
            "test_time_augmentation": tta.to_dict(),
            "results": results,
        },
    )
    click.echo(f"{len(results)} image(s): keypoints in {out_dir / 'keypoints.json'}")
