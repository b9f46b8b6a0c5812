"""People in photos: where their boxes come from (a people model or a detector's file) and a
pose for every one, as ``pm predict --people/--boxes`` and ``posemachines.predict_people`` do."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posemachines.core.model import PoseModel
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.errors import PoseMachinesError
from posemachines.people.multiperson import MAX_PEOPLE, AtMost


def people_source(
    people=None,
    boxes=None,
    min_box_score: float = 0.0,
    device: str = "cpu",
    max_people: int = MAX_PEOPLE,
):
    """(a people source, its label for the reader) from a people model (a folder or a loaded
    one) or a detections file, keeping the ``max_people`` best-scored boxes of an image; None
    when neither is given."""
    if people is not None and boxes is not None:
        raise PoseMachinesError("give people or boxes, not both")
    if not 0 <= min_box_score <= 1:
        raise PoseMachinesError(f"min_box_score must be between 0 and 1, got {min_box_score}")
    if max_people < 1:
        raise PoseMachinesError(f"max_people must be at least 1, got {max_people}")
    if boxes is not None:
        from posemachines.people.boxes import read_detections

        source = read_detections(boxes, min_box_score)
        return AtMost(source, max_people), f"detected boxes ({boxes})"
    if people is None:
        return None
    from posemachines.people.multiperson import PeopleFinder

    if isinstance(people, (str, Path)):
        from posemachines.backends.people.model import load_people_model

        label = f"detected boxes (people model {people})"
        finder = PeopleFinder(load_people_model(people, device), min_box_score)
        return AtMost(finder, max_people), label
    return AtMost(PeopleFinder(people, min_box_score), max_people), "detected boxes (people model)"


def predict_people(
    model: PoseModel,
    images,
    *,
    people=None,
    boxes=None,
    min_box_score: float = 0.3,
    max_people: int = MAX_PEOPLE,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
) -> list:
    """Every person in each image (arrays (H, W, 3) uint8 or paths): a list of
    ``multiperson.Person`` per image (box, score, keypoints and confidences of every stage),
    from the boxes a people model (``people``: loaded or its folder) finds, or from
    ``boxes``: a detections file, or per image a list of [x, y, w, h(, score)]."""
    from posemachines.data import read_image
    from posemachines.people.boxes import detections_from
    from posemachines.people.multiperson import poses_for_boxes

    images = [read_image(x) if isinstance(x, (str, Path)) else np.asarray(x) for x in images]
    if isinstance(boxes, (list, tuple)):
        if len(boxes) != len(images):
            raise PoseMachinesError(f"{len(boxes)} box lists for {len(images)} images")
        source = AtMost(detections_from(dict(enumerate(boxes)), min_box_score), max_people)
    else:
        from posemachines.evaluation.comparison import model_device

        device = model_device(model)
        source, _ = people_source(people, boxes, min_box_score, device, max_people) or (None, None)
    if source is None:
        raise PoseMachinesError("predict_people needs people (a people model) or boxes")
    keys = [(k,) for k in range(len(images))]
    found = source.find(images, keys)
    return poses_for_boxes(model, images, found, tta=tta, batch_size=batch_size)
