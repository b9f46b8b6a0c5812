"""``load_dataset``: a split of a registered dataset, of a folder of one's own keypoints, or of
a COCO-format file; every annotation checked on the way in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posemachines.data.dataset import PoseDataset
from posemachines.data.registry import DATA_ROOT_ENV, datasets, find_data_root, registered
from posemachines.errors import PoseMachinesError

COCO_FORMAT = "coco-format:"  # --dataset coco-format:PATH.json, with --images DIR


def dataset_splits(name: str, data_root: str | Path | None = None) -> tuple[str, ...]:
    """The splits of a dataset that are there: a registered one's whose files the data root
    holds (every split of a built-in one), or those a folder of one's own keypoints has."""
    info = registered(name)
    if info is not None and info.built_in:
        return info.splits
    try:
        folder = find_data_root(data_root)[0] / name
    except PoseMachinesError:
        return ()
    if info is not None:
        return info.present(folder)
    from posemachines.data.coco import keypoint_folder_splits

    return keypoint_folder_splits(folder)


def load_dataset(
    name: str,
    split: str = "train",
    data_root: str | Path | None = None,
    protocol: str | None = None,
    images: str | Path | None = None,
    on_bad_annotation: str = "stop",
    **options,
) -> PoseDataset:
    """Load a dataset split by name: a registered one (``registry``), a folder of the data root
    holding a COCO-format ``keypoints.json``, or ``coco-format:PATH.json`` with its ``images``
    folder. ``options`` go to the synthetic generator (size, seed).

    A bad annotation (a labelled joint or a person box that is not finite, a box of no size,
    in COCO-format files any field of the wrong type) stops the load with one line naming
    it, or with ``on_bad_annotation="skip"`` is left out and counted in the dataset's
    ``skipped_annotations``."""
    if on_bad_annotation not in ("stop", "skip"):
        raise PoseMachinesError(
            f"on_bad_annotation must be 'stop' or 'skip', not {on_bad_annotation!r}"
        )
    return checked_annotations(
        _load(name, split, data_root, protocol, images, on_bad_annotation, options),
        on_bad_annotation,
    )


def _load(name, split, data_root, protocol, images, on_bad_annotation, options) -> PoseDataset:
    if name.startswith(COCO_FORMAT):
        from posemachines.data.coco import load_coco_format

        path = Path(name[len(COCO_FORMAT) :]).expanduser()
        if not path.is_file():
            raise PoseMachinesError(f"{path}: no such COCO-format file")
        if images is None:
            raise PoseMachinesError(
                f"--dataset {name} needs --images DIR, the folder of its images"
            )
        return load_coco_format(
            path, Path(images), split, protocol, on_bad_annotation=on_bad_annotation
        )
    info = registered(name)
    if info is not None and info.built_in:
        return info.loader()(None, split, protocol, on_bad_annotation, **options)
    root, how = find_data_root(data_root)
    folder = root / name
    if not dataset_splits(name, root):
        known = ", ".join(datasets())
        expects = info.expects if info is not None else "keypoints.json"
        raise PoseMachinesError(
            f"dataset {name!r} not found under {root} (data root from {how}): expected "
            f"{folder}/{expects}; known: {known}, or a folder with keypoints.json; pass "
            f"--data-root DIR or set ${DATA_ROOT_ENV}"
        )
    if info is not None:
        return info.loader()(folder, split, protocol, on_bad_annotation, **options)
    from posemachines.data.coco import load_keypoint_folder

    return load_keypoint_folder(
        folder, split=split, protocol=protocol, on_bad_annotation=on_bad_annotation
    )


def checked_annotations(dataset: PoseDataset, on_bad_annotation: str = "stop") -> PoseDataset:
    """``dataset`` without samples whose labelled joints or person box are not finite, or
    whose box has no size: refused with one line (``"stop"``) or left out and counted in
    ``skipped_annotations`` (``"skip"``)."""
    bad_joints = ~np.isfinite(dataset.joints).all(-1) & dataset.labelled
    bad = bad_joints.any(1)
    if dataset.boxes is not None:
        boxes = dataset.boxes
        bad |= ~np.isfinite(boxes).all(1) | ~(boxes[:, 2] > 0)
    skipped = list(getattr(dataset, "skipped_annotations", []))
    if not bad.any():
        dataset.skipped_annotations = skipped
        return dataset
    reasons = []
    for i in np.flatnonzero(bad):
        joint = np.flatnonzero(bad_joints[i])
        field = f"joint {dataset.skeleton.joints[joint[0]]!r}" if len(joint) else "person box"
        reasons.append(f"{dataset.names[i]}: its {field} is not a finite position or size")
    if on_bad_annotation == "stop":
        raise PoseMachinesError(
            f"{dataset.source or dataset.name}: {reasons[0]}"
            + (f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
            + "; fix the annotations, or pass --on-bad-annotation skip to leave them out"
        )
    kept = dataset.subset(np.flatnonzero(~bad))
    kept.skipped_annotations = skipped + reasons
    return kept


def dataset_available(name: str, data_root: str | Path | None = None) -> bool:
    return bool(dataset_splits(name, data_root))


def default_training_dataset(data_root: str | Path | None = None) -> tuple[str, str]:
    """LSP when a data root holds it, else the synthetic set; with the reason, for the user."""
    if dataset_available("lsp", data_root):
        root, how = find_data_root(data_root)
        return "lsp", f"found at {root / 'lsp'} via {how}"
    return "synthetic", "no LSP under the data root; pass --dataset or --data-root to change"


def load_split(
    name: str,
    split: str,
    data_root: str | Path | None = None,
    *,
    synthetic_size: int | None = None,
    seed: int = 0,
    protocol: str | None = None,
    images: str | Path | None = None,
    on_bad_annotation: str = "stop",
) -> PoseDataset:
    """``load_dataset`` as the commands call it: the synthetic set's size and seed given apart
    from the other datasets' options."""
    generated = name in ("synthetic", "synthetic-crowd")
    options = {"size": synthetic_size, "seed": seed} if generated else {}
    return load_dataset(
        name,
        split,
        data_root,
        protocol=protocol,
        images=images,
        on_bad_annotation=on_bad_annotation,
        **options,
    )


@dataclass(frozen=True)
class DataRequest:
    """A dataset split as a command names it, loaded when the work needs it: ``name`` (None:
    the work's default), its split, where its files are, the synthetic set's size and seed, the
    crop protocol, a COCO-format file's images and what to do with a bad annotation."""

    name: str | None = None
    split: str = "train"
    data_root: str | Path | None = None
    synthetic_size: int | None = None
    protocol: str | None = None
    images: str | Path | None = None
    on_bad_annotation: str = "stop"
    seed: int = 0

    def __post_init__(self):
        if self.synthetic_size is not None and self.synthetic_size < 1:
            raise PoseMachinesError(
                f"the synthetic set's size must be at least 1, got {self.synthetic_size}"
            )

    def load(self, name: str | None = None) -> PoseDataset:
        """The split (of ``name`` when the request names none); a note for a long load and
        for the annotations left out as bad."""
        from posemachines.progress import note

        start = time.perf_counter()
        data = load_split(
            self.name or name or "synthetic",
            self.split,
            self.data_root,
            synthetic_size=self.synthetic_size,
            seed=self.seed,
            protocol=self.protocol,
            images=self.images,
            on_bad_annotation=self.on_bad_annotation,
        )
        seconds = time.perf_counter() - start
        if seconds > 5:
            note(f"read {data.describe()} in {seconds:.0f} s")
        line = skipped_annotations_line(data)
        if line:
            note(line)
        return data


def skipped_annotations_line(dataset: PoseDataset) -> str | None:
    """One line for the annotations left out as bad, or None when there were none."""
    bad = getattr(dataset, "skipped_annotations", [])
    if not bad:
        return None
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return f"{len(bad)} bad annotation(s) left out ({bad[0]}{more})"
