"""Scoring a model as ``pm evaluate`` does, scores recorded in its manifest: ``pm evaluate`` and
``posemachines.evaluate(..., record=True)`` are this one path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from posemachines.core.model import PoseModel
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.data import DataRequest, PoseDataset
from posemachines.errors import PoseMachinesError
from posemachines.evaluation.comparison import Entry, load_entry, score_entry
from posemachines.evaluation.metrics import EvaluationResult
from posemachines.progress import note


def dataset_of(models, given: str | None = None) -> str:
    """The dataset to score ``models`` on: ``given``, else the one they were trained on, else
    the synthetic set. Models trained on different sets, or from a pack, need it given."""
    if given is not None:
        return given
    names = {m.record.dataset_name for m in models if m is not None} - {""}
    if len(names) > 1:
        raise PoseMachinesError(
            f"the models were trained on different datasets {sorted(names)}: name the dataset"
        )
    if names == {"packed"}:
        raise PoseMachinesError(
            "trained from a pack of crops, the model does not say its dataset: name the dataset"
        )
    return names.pop() if names else "synthetic"


def scores_key(data: PoseDataset, tta: TestTimeAugmentation, protocol: str | None) -> str:
    """Where a manifest keeps the scores of one dataset split, protocol and set of views."""
    key = f"{data.name}:{data.split}:{protocol}"
    return key if tta.is_identity else f"{key}:tta={tta.describe()}"


def record_scores(folder: str | Path, key: str, doc: dict) -> None:
    """Add ``doc`` to the model's manifest under ``key`` (a read-only model, or a zoo model,
    keeps its manifest as it is: a note says so)."""
    from posemachines.files.model_dir import read_manifest, update_manifest

    evaluations = {**read_manifest(folder).get("evaluations", {}), key: doc}
    try:
        update_manifest(folder, evaluations=evaluations)
    except OSError as exc:
        note(f"the scores are not recorded in {folder}/manifest.json ({exc.strerror or exc})")


def pose_scores(result: EvaluationResult) -> dict:
    """What a manifest records of a pose model's evaluation."""
    return {
        "n": result.n,
        "skipped_images": len(result.skipped_images),
        "metrics": result.metrics,
        "per_stage_pck@0.2": [s["pck@0.2"] for s in result.per_stage],
    }


def score_model(
    entry: Entry,
    data: PoseDataset,
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    on_bad_image: str = "skip",
    one_based: bool = True,
    save_predictions: str | Path | None = None,
    record: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Score ``entry`` on ``data``'s own person boxes (its protocol); the predictions written
    to ``save_predictions``, the scores recorded in a model directory's manifest."""
    if entry.model is not None:
        entry.model.check_dataset(data)
    result, predictions = score_entry(
        entry, data, batch_size, on_bad_image, progress=progress, one_based=one_based, tta=tta
    )
    if save_predictions:
        from posemachines.files.prediction_files import write_predictions

        write_predictions(save_predictions, predictions, data.skeleton)
    if record and entry.model is not None and entry.path.is_dir():  # an .onnx keeps none
        record_scores(entry.path, scores_key(data, tta, data.protocol), pose_scores(result))
    return result


def evaluate(
    model: PoseModel | str | Path,
    dataset: PoseDataset | DataRequest | str | None = None,
    *,
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    on_bad_image: str = "skip",
    record: bool = False,
    device: str = "cpu",
    runtime: str = "torch",
) -> EvaluationResult:
    """Score ``model`` (loaded, or a model directory, ``.onnx`` or zoo name) on ``dataset``
    (loaded, a name, a ``DataRequest`` or None: the set it was trained on, test split) as ``pm
    evaluate`` does, every stage and every metric; ``record`` keeps the scores in the model
    directory's manifest, as ``pm evaluate`` does."""
    if isinstance(model, PoseModel):
        if record:
            raise PoseMachinesError("record needs the model's folder: pass its path, not the model")
        entry = Entry("model", Path("."), model)
    else:
        from posemachines.zoo import resolve

        entry = load_entry(resolve(str(model))[0], device, runtime=runtime)
    data = load_for(dataset, [entry.model], "test")
    return score_model(
        entry, data, tta=tta, batch_size=batch_size, on_bad_image=on_bad_image, record=record
    )


def load_for(dataset, models, split: str) -> PoseDataset:
    """``dataset`` loaded: as it is, by name, or as a ``DataRequest`` says (its name defaulting
    to the models' own dataset)."""
    if isinstance(dataset, PoseDataset):
        return dataset
    request = dataset if isinstance(dataset, DataRequest) else DataRequest(dataset, split)
    return request.load(name=dataset_of(models, request.name))


@dataclass(frozen=True)
class Evaluation:
    """What ``pm evaluate`` shows: the kind of scores ("pose": a dataset's own person boxes;
    "detected": a pose per detected box, COCO's AP; "people": a people model's boxes), the
    dataset split's name and the scores as ``--json`` prints them."""

    kind: str
    title: str
    doc: dict
    skipped: list[str] = field(default_factory=list)


def evaluate_model(
    model: str | Path,
    data: DataRequest,
    *,
    device: str = "cpu",
    runtime: str = "torch",
    tta: TestTimeAugmentation = NO_TTA,
    batch_size: int = 32,
    on_bad_image: str = "skip",
    one_based: bool = True,
    save_predictions: str | Path | None = None,
    people=None,
    boxes=None,
    min_box_score: float = 0.0,
    max_people: int = 100,
    progress: bool = False,
) -> Evaluation:
    """``pm evaluate MODEL``: a pose model (directory or ``.onnx``) or a prediction file scored
    on ``data`` (default: the model's own dataset, test split), or with ``people``/``boxes`` a
    pose per detected box, or a people model's boxes; the scores recorded in a model
    directory's manifest."""
    from posemachines.api.people import people_source

    if batch_size < 1:
        raise PoseMachinesError(f"the batch size must be at least 1, got {batch_size}")
    if is_people_model(model):
        if people is not None or boxes is not None:
            raise PoseMachinesError(
                f"{model} is a people model: people and boxes go with a pose model"
            )
        return _evaluate_people_model(Path(model), data.load(name="synthetic-crowd"), device)
    source, label = people_source(people, boxes, min_box_score, device, max_people) or (None, None)
    if save_predictions:
        from posemachines.files.owned import check_owned_file

        check_owned_file(save_predictions)  # before the work, not after it
    entry = load_entry(model, device, runtime=runtime)
    loaded = data.load(name=dataset_of([entry.model], data.name))
    title = f"{loaded.name}:{loaded.split}"
    how = dict(tta=tta, batch_size=batch_size, on_bad_image=on_bad_image)
    if source is not None:
        doc = _evaluate_detected(entry, loaded, source, label, save_predictions, progress, **how)
        return Evaluation("detected", title, doc)
    result = score_model(
        entry,
        loaded,
        one_based=one_based,
        save_predictions=save_predictions,
        record=True,
        progress=progress,
        **how,
    )
    return Evaluation("pose", title, result.to_dict(), list(result.skipped_images))


def is_people_model(path: str | Path) -> bool:
    from posemachines.files.owned import read_json_object

    manifest = Path(path) / "manifest.json"
    return manifest.is_file() and read_json_object(manifest).get("format") == "posemachines-people"


def _evaluate_people_model(path: Path, data: PoseDataset, device: str) -> Evaluation:
    """A people model's box AP at IoU 0.5 and recall, recorded in its manifest."""
    from posemachines.backends.people.model import (
        load_people_model,
        record_evaluation,
        score_people,
    )

    scores = score_people(load_people_model(path, device), data)
    key = f"{data.name}:{data.split}"
    try:
        record_evaluation(path, key, {k: scores[k] for k in ("box_ap50", "recall")})
    except OSError as exc:
        note(f"the scores are not recorded in {path}/manifest.json ({exc.strerror or exc})")
    return Evaluation("people", key, {"dataset": key, **scores})


def _evaluate_detected(entry, data, source, label, save_to, progress, **how) -> dict:
    """COCO's detected-box protocol: a pose per box, OKS-NMS, AP; recorded in the manifest."""
    from posemachines.files.owned import json_text, write_owned_file
    from posemachines.people.detected_boxes import evaluate_detected

    if entry.model is None:
        raise PoseMachinesError("people and boxes need a model, not a prediction file")
    result = evaluate_detected(entry.model, data, source, label, progress=progress, **how)
    summary = getattr(source, "summary", None)
    if summary and summary():
        note(summary())
    if result.skipped:
        note(result.skipped.summary() + "; their people count as missed")
    if save_to:
        write_owned_file(save_to, json_text(result.results).encode(), "evaluate")
    doc = {"dataset": data.name, "split": data.split, **result.to_dict()}
    if entry.path.is_dir():
        tta = how["tta"]
        key = f"{data.name}:{data.split}:detected" + (
            "" if tta.is_identity else f":tta={tta.describe()}"
        )
        record_scores(entry.path, key, doc)
    return doc
