"""Every person in the picture: the ``--people``/``--boxes`` options of ``pm predict``,
``evaluate`` and ``compare``, and scoring a people model."""

from __future__ import annotations

import click
from posemachines.cli.common import stacked

from posemachines.errors import PoseMachinesError

PEOPLE_OPTION = click.option(
    "--people",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A people model (pm train --backend people): a pose for every person it finds.",
)
BOXES_OPTION = click.option(
    "--boxes",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Person boxes from a detector: COCO detection results ([{image_id or file_name, "
    'bbox: [x, y, w, h], score, category_id}]) or {"image.jpg": [[x, y, w, h(, score)], '
    "...]}: a pose for every box.",
)
MAX_PEOPLE_OPTION = click.option(
    "--max-people",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Boxes per image at most: the best-scored are kept, the others counted and left out.",
)


def people_options(min_score: float):
    """``--people``, ``--boxes``, ``--min-box-score`` (default ``min_score``), ``--max-people``."""
    min_box_score = click.option(
        "--min-box-score",
        type=float,
        default=min_score,
        show_default=True,
        help="Boxes scored below this are nobody.",
    )
    return stacked(PEOPLE_OPTION, BOXES_OPTION, min_box_score, MAX_PEOPLE_OPTION)


PEOPLE_OPTIONS = ("people", "boxes", "min_box_score", "max_people")


def check_people_options(people, boxes) -> None:
    if people and boxes:
        raise PoseMachinesError("give --people or --boxes, not both")


def format_people(doc: dict, title: str) -> str:
    """A people model's scores: box AP at IoU 0.5 and recall."""
    return (
        f"{title}  images={doc['images']}  people={doc['people']}\n"
        f"box AP@0.5 {100 * doc['box_ap50']:.1f}   recall {100 * doc['recall']:.1f}"
    )


def format_detected(doc: dict, title: str) -> str:
    names = ("AP", "AP50", "AP75", "AP(M)", "AP(L)", "AR")
    keys = ("oks_ap", "oks_ap50", "oks_ap75", "oks_ap_medium", "oks_ap_large", "oks_ar")
    head = "".join(f"{n:>8s}" for n in names)
    row = "".join(f"{100 * doc['metrics'][k]:8.1f}" for k in keys)
    return (
        f"{title}  images={doc['images']} people={doc['people']} boxes={doc['boxes']} "
        f"poses={doc['poses']}\nprotocol: {doc['protocol']}\n{head}\n{row}"
    )
