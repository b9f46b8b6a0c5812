"""Predicting on the user's own images, folders and videos, as ``pm predict`` does: keypoints
as COCO's keypoint results and overlays, in a folder the command owns."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.errors import PoseMachinesError
from posemachines.people.multiperson import MAX_PEOPLE
from posemachines.progress import note


@dataclass(frozen=True)
class Predicted:
    """Where the keypoints went, and how many images and people they hold."""

    keypoints: Path
    images: int
    people: int


def predict_into(
    model: str | Path,
    inputs,
    out: str | Path = "predictions",
    *,
    centre: tuple[float, float] | None = None,
    box_side: float | None = None,
    people=None,
    boxes=None,
    min_box_score: float = 0.3,
    max_people: int = MAX_PEOPLE,
    overlays: bool = True,
    overwrite: bool = False,
    device: str = "cpu",
    runtime: str = "torch",
    tta: TestTimeAugmentation = NO_TTA,
    on_bad_image: str = "skip",
) -> Predicted:
    """Keypoints of ``model`` (a directory, ``.onnx`` or zoo name) for image files, folders and
    videos, written to ``out/keypoints.json`` with an overlay per input. One person per image
    (the whole image, or ``centre``/``box_side``), or every person ``people``/``boxes`` find.
    ``out`` must be new, empty or an earlier prediction folder unless ``overwrite`` (which
    still replaces only files posemachines wrote there); a failure removes what it wrote."""
    from posemachines.api.people import people_source
    from posemachines.data import SkippedImages
    from posemachines.files.runs import check_output_folder, output_folder
    from posemachines.inference import OverlayWriter, collect_inputs
    from posemachines.loading import load_pose_model

    finder, _ = people_source(people, boxes, min_box_score, device, max_people) or (None, None)
    check_person_box(centre, box_side, finder)
    check_output_folder(out, "predict", overwrite)
    pose_model = load_pose_model(model, device, runtime)
    files = collect_inputs(inputs)
    skipped = SkippedImages()
    with output_folder(out, "predict", overwrite=overwrite) as out_dir:
        writer = OverlayWriter(out_dir, pose_model.skeleton, files) if overlays else None
        how = dict(people=finder, centre=centre, box_side=box_side, tta=tta)
        done = _predict_files(pose_model, files, out_dir, writer, skipped, on_bad_image, how)
    if skipped:
        note(skipped.summary())
    summary = getattr(finder, "summary", None)
    if summary and summary():
        note(summary())
    return Predicted(out_dir / "keypoints.json", *done)


def _predict_files(pose_model, files, out_dir, writer, skipped, on_bad_image, how):
    """(images, people): every input predicted, its overlay drawn, the keypoints written."""
    from posemachines.files.owned import claim
    from posemachines.inference import predict_files

    # Every file this will write is claimed first: a name taken by a file of the user's stops
    # it here, before anything is computed or written.
    claim(out_dir / "keypoints.json")
    for source in files if writer is not None else ():
        claim(writer.path_for(source))
    results, images = [], 0
    try:
        found_all = predict_files(
            pose_model, files, on_bad_image=on_bad_image, skipped=skipped, **how
        )
        for path, name, image, found in found_all:
            images += 1
            results += [person.to_coco(name) for person in found]
            if writer is not None:
                writer.add(path, name, image, found)
        if writer is not None:
            writer.close()
        write_keypoints(out_dir / "keypoints.json", pose_model, how["tta"], skipped, results)
    except BaseException:
        if writer is not None:
            writer.discard()
        raise
    return images, len(results)


def write_keypoints(path: Path, model, tta, skipped, results: list) -> None:
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


def check_person_box(centre, box_side, finder) -> None:
    """The person box of one person per image: finite, positive, and not with people found."""
    if box_side is not None and not (box_side > 0 and math.isfinite(box_side)):
        raise PoseMachinesError(f"the box side must be positive, in pixels, got {box_side}")
    if centre is not None and not all(math.isfinite(v) for v in centre):
        raise PoseMachinesError(f"the centre must be two finite numbers, got {centre}")
    if finder is not None and (centre is not None or box_side is not None):
        raise PoseMachinesError("a centre and box side are for one person, not for people found")
