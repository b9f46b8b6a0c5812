"""The Python interface in a few functions: what a notebook needs, what ``pm`` runs.

import posemachines as pm

train = pm.load_dataset("synthetic", "train", size=200)
model = pm.train("forest", train, stages=2)
result = pm.evaluate(model, pm.load_dataset("synthetic", "test"))
keypoints = model.predict(["photo.jpg"]).keypoints[-1]    # (1, P, 2), last stage
model.save("runs/my-forest")
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from posemachines.core.model import PoseModel
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.data import PoseDataset
from posemachines.errors import PoseMachinesError
from posemachines.evaluation.metrics import EvaluationResult
from posemachines.options import field_names, flag_of, options_of
from posemachines.people.multiperson import MAX_PEOPLE, AtMost
from posemachines.registry import TrainingRun, backends, get_backend


@dataclass(frozen=True)
class TrainingPlan:
    """What ``train`` will do, checked before any data is read: the backend (a registered
    name, or a stack such as ``"cnn:1,forest:2"``), the settings of each backend it uses, and
    a stack's folds."""

    backend: str
    settings: dict
    folds: int | None = None

    @property
    def is_stack(self) -> bool:
        return ":" in self.backend

    @property
    def trains_on_device(self) -> bool:
        """Only networks, which train on --device (a dask scheduler has nothing to do)."""
        classes = [get_backend(name).trainer_class() for name in self.settings]
        return all(getattr(c, "trains_on_device", False) for c in classes)

    def keeps_checkpoint(self) -> bool:
        """Whether ``OUT/checkpoint`` is worth keeping once the model is saved."""
        if self.is_stack:
            return False
        return getattr(get_backend(self.backend).trainer_class(), "keeps_checkpoint", False)


def plan_training(backend: str, *, folds: int | None = None, seed: int = 0, **options):
    """Check ``options`` against the settings of ``backend`` (or of every kind of part of a
    stack) and build those settings; an option no part uses is an error naming it."""
    stack = ":" in backend
    if stack:
        from posemachines.backends.stack import parse_stack

        kinds = list(dict.fromkeys(part.kind for part in parse_stack(backend)))
        target = "--stack (its SPEC counts the stages)"
        if "stages" in options and options["stages"] is not None:
            raise PoseMachinesError(f"--stages does not apply to {target}")
    else:
        kinds, target = [get_backend(backend).name], f"--backend {backend}"
    given = {k: v for k, v in options.items() if v is not None}
    fields_of = {kind: field_names(get_backend(kind).settings) for kind in kinds}
    if folds is not None and not stack:
        if "folds" not in fields_of[backend]:
            raise PoseMachinesError(f"--folds does not apply to {target}")
        given["folds"] = folds
    if folds is not None and folds < (1 if stack else 2):
        raise PoseMachinesError(
            f"--folds must be at least 2 (or 1 for a stack without cross-fitting), got {folds}"
        )
    unused = [k for k in given if not any(k in names for names in fields_of.values())]
    if unused:
        raise PoseMachinesError(
            f"{', '.join(map(_flag, unused))} does not apply to {target}{_owner_hint(unused)}"
        )
    settings = {}
    for kind in kinds:
        mine = {k: v for k, v in given.items() if k in fields_of[kind]}
        if "seed" in fields_of[kind]:
            mine.setdefault("seed", seed)
        settings[kind] = get_backend(kind).make_settings(**mine)
    if stack and any(getattr(s, "packed", None) for s in settings.values()):
        raise PoseMachinesError("--stack trains from a dataset, not a --data pack")
    return TrainingPlan(backend, settings, (folds or 3) if stack else None)


def run_training(plan: TrainingPlan, dataset: PoseDataset | None, run: TrainingRun):
    """Train what ``plan`` says on ``dataset``; the model (None on a ``torchrun`` rank other
    than 0)."""
    if run.resume and not (run.out_dir / "checkpoint").exists():
        run.log(f"nothing to resume in {run.out_dir} (no checkpoint): training from the start")
        run = replace(run, resume=False)
    if plan.is_stack:
        from posemachines.backends.stack import train_stack

        return train_stack(dataset, plan.backend, plan.settings, run, plan.folds)
    trainer = get_backend(plan.backend).trainer_class()(plan.settings[plan.backend], run)
    return trainer.fit(dataset).model_


def train(
    backend: str,
    dataset: PoseDataset | None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    n_jobs: int = -1,
    progress: bool = False,
    resume: bool = False,
    on_bad_image: str = "skip",
    folds: int | None = None,
    **options,
) -> PoseModel:
    """Train a model of ``backend`` on ``dataset``: what ``pm train`` runs.

    ``backend`` is a registered backend ("mean", "forest", "cnn", or a plugin's) or a stack,
    bottom-up, such as ``"cnn:1,forest:2"``. ``options`` are the backend's settings (the
    fields of ``ForestSettings``, ``CNNSettings``, ...: ``stages=2, trees=20`` or
    ``config="cpm-small", epochs=5``); an option the backend does not use is an error.
    ``folds`` is a stack's (or a forest's own) number of folds. ``out`` keeps the training
    checkpoints (and the CNN's log) in that folder, and ``resume`` continues an interrupted
    run there; without it they go to a temporary folder. The model is returned, not saved:
    ``model.save(path)`` writes it.
    """
    plan = plan_training(backend, folds=folds, seed=seed, **options)
    if resume and out is None:
        raise PoseMachinesError("resume needs out: the folder of the interrupted run")
    if out is None:
        with tempfile.TemporaryDirectory(prefix="posemachines-") as tmp:
            run = TrainingRun(Path(tmp), seed, n_jobs, progress, on_bad_image)
            return run_training(plan, dataset, run)
    run = TrainingRun(Path(out), seed, n_jobs, progress, on_bad_image, resume)
    return run_training(plan, dataset, run)


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
        raise PoseMachinesError(f"--min-box-score must be between 0 and 1, got {min_box_score}")
    if max_people < 1:
        raise PoseMachinesError(f"--max-people must be at least 1, got {max_people}")
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


def _flag(name: str) -> str:
    """The command-line spelling of a setting, as errors name it."""
    for backend in backends().values():
        for field_name, how, _ in options_of(backend.settings):
            if field_name == name:
                flag = flag_of(name, how)
                return f"{flag}/{how.negative}" if how.negative else flag
    return flag_of(name)


def _owner_hint(names: list[str]) -> str:
    owners = [n for n, b in backends().items() if set(names) <= field_names(b.settings)]
    return f" (it is for --backend {owners[0]})" if len(owners) == 1 else ""


def evaluate(
    model: PoseModel,
    dataset: PoseDataset,
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    on_bad_image: str = "skip",
) -> EvaluationResult:
    """Score ``model`` on ``dataset`` as ``pm evaluate`` does (every stage, every metric)."""
    from posemachines.evaluation.comparison import Entry, score_entry

    entry = Entry("model", Path("."), model)
    result, _ = score_entry(
        entry, dataset, batch_size=batch_size, on_bad_image=on_bad_image, tta=tta
    )
    return result


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


def _common_dataset(entries) -> str:
    """The dataset the models were trained on, which they are compared on by default."""
    names = {e.model.record.dataset_name for e in entries if e.model} - {""}
    if len(names) > 1:
        raise PoseMachinesError(
            f"entries were trained on different datasets {sorted(names)}: pass --dataset"
        )
    if names == {"packed"}:
        raise PoseMachinesError("the models were trained from a packed cache: pass --dataset")
    return names.pop() if names else "synthetic"


def compare(
    entries,
    dataset: str | None = None,
    *,
    split="test",
    data_root=None,
    synthetic_size=None,
    images=None,
    protocol=None,
    out=None,
    device="cpu",
    timing_images=20,
    runs_root="runs",
    tta=None,
    on_bad_image="skip",
    overwrite=False,
    parts=True,
    on_bad_annotation="stop",
    people=None,
    boxes=None,
    min_box_score=0.0,
    max_people=MAX_PEOPLE,
    runtime="torch",
) -> Path:
    """Compare model directories and prediction files as ``pm compare`` does: ``entries``
    (default: the latest run of each backend under ``runs_root``) scored on one dataset split,
    and the report folder written; returns its path. ``out`` must be new, empty or a
    previous report unless ``overwrite``; nothing is left behind when the comparison fails.
    With ``parts``, each stack is shown beside its lower parts. ``people`` (a people model's
    folder) or ``boxes`` (a detections file) add scores on detected boxes; ``runtime``: see
    ``runtimes.load_pose_model``."""
    import sys

    from posemachines.data import load_split, skipped_annotations_line
    from posemachines.devices import resolve_device
    from posemachines.evaluation.comparison import (
        compare_entries,
        default_entries,
        load_entry,
        lower_parts,
    )
    from posemachines.evaluation.report import write_report
    from posemachines.files.runs import check_output_folder

    tta = tta or NO_TTA
    device = resolve_device(device)
    if out is not None:
        check_output_folder(out, "compare", overwrite)
    paths = [Path(p) for p in (entries or [])] or default_entries(runs_root)
    loaded = []
    for p in paths:
        label = p.name if p.name not in {e.label for e in loaded} else f"{p.parent.name}/{p.name}"
        loaded.append(load_entry(p, device, label, runtime))
        if parts:
            loaded += lower_parts(loaded[-1])
    data = load_split(
        dataset or _common_dataset(loaded),
        split,
        data_root,
        synthetic_size=synthetic_size,
        protocol=protocol,
        images=images,
        on_bad_annotation=on_bad_annotation,
    )
    line = skipped_annotations_line(data)
    if line:
        print(line, file=sys.stderr)
    comparison = compare_entries(
        loaded,
        data,
        tta=tta,
        on_bad_image=on_bad_image,
        timing_images=timing_images,
        device=device,
        people=people_source(people, boxes, min_box_score, device, max_people),
    )
    command = " ".join(["pm"] + sys.argv[1:])
    return write_report(comparison, out, command, overwrite=overwrite, runs_root=runs_root)
