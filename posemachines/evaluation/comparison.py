"""Entries (model directories or external prediction files), scoring them, timing them.

``pm evaluate``, ``pm compare`` and ``pm bench`` all go through these functions, so every entry
is scored on the same samples, with the same crops, decoding, metrics and timing method.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from posemachines.core.batches import batches
from posemachines.core.model import PoseModel, Predictions, backend_of
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.data import PoseDataset, SkippedImages, iter_samples
from posemachines.errors import PoseMachinesError
from posemachines.evaluation.metrics import EvaluationResult, score_keypoints


@dataclass
class Entry:
    """One thing to score: a trained model or a file of predictions."""

    label: str
    path: Path
    model: PoseModel | None = None
    manifest: dict = field(default_factory=dict)
    part_of: str | None = None  # the stack this entry is the lower part of

    @property
    def kind(self) -> str:
        return "predictions" if self.model is None else self.model.backend


def lower_parts(entry: Entry) -> list[Entry]:
    """Entries for the lower parts of a stack (its first part, its first two, ...), made from
    the same model without retraining, so that the gain of the parts above shows."""
    if entry.model is None:
        return []
    parts = entry.model.record.details.get("parts") or []
    out = []
    for k, part in enumerate(parts[1:], 1):
        below = parts[:k]
        stages = entry.model.stages[: part["first_stage"] - 1]
        model = PoseModel(
            backend_of(stages),
            entry.model.skeleton,
            entry.model.codec,
            stages,
            record=entry.model.record,
        )
        label = f"{entry.label} [{','.join(p['part'] for p in below)}]"
        out.append(Entry(label, entry.path, model, entry.manifest, part_of=entry.label))
    return out


def load_entry(
    path: str | Path, device: str = "cpu", label: str | None = None, runtime: str = "torch"
) -> Entry:
    """A model directory, an exported ``.onnx`` model or a prediction file, to score."""
    from posemachines.files.model_dir import read_manifest
    from posemachines.loading import is_onnx_file, load_pose_model

    path = Path(path)
    if path.is_dir() or is_onnx_file(path):
        model = load_pose_model(path, device, runtime)
        manifest = read_manifest(path) if path.is_dir() else {}
        return Entry(label or (path.name if path.is_dir() else path.stem), path, model, manifest)
    if path.suffix.lower() in (".mat", ".json") and path.is_file():
        return Entry(label or path.stem, path)
    raise PoseMachinesError(
        f"{path}: neither a model directory, an .onnx model nor a prediction file (.mat or .json)"
    )


def score_entry(
    entry: Entry,
    dataset: PoseDataset,
    batch_size: int = 32,
    on_bad_image: str = "skip",
    progress: bool = False,
    one_based: bool = True,
    tta: TestTimeAugmentation = NO_TTA,
    keep_beliefs: int = 0,
) -> tuple[EvaluationResult, Predictions]:
    """Evaluate an entry on ``dataset``; returns the result and the predictions: keypoints
    (T, N, P, 2) and, for a model, each joint's confidence (the belief at its peak; 0 for a
    prediction file, which holds none).

    ``tta`` applies to models; prediction files are scored as they are.
    """
    from posemachines.files.prediction_files import read_predictions

    skipped, scores = [], None
    if entry.model is not None:
        predictions = entry.model.predict(
            dataset,
            batch_size=batch_size,
            on_bad_image=on_bad_image,
            progress=progress,
            tta=tta,
            keep_beliefs=keep_beliefs,
        )
        skipped = predictions.skipped.names
        scores = predictions.confidence.mean(-1)  # (T, N): ranks the people for OKS AP
        protocol = dataset.protocol
    else:
        keypoints = read_predictions(
            entry.path, dataset.skeleton, len(dataset), one_based, names=dataset.names
        )
        predictions = Predictions(keypoints, np.zeros(keypoints.shape[:3]), list(dataset.names))
        protocol = "external"
    preds = predictions.keypoints
    result = score_keypoints(
        preds,
        dataset.joints,
        dataset.labelled,
        dataset.skeleton,
        dataset=dataset.name,
        split=dataset.split,
        protocol=protocol,
        scoring=dataset.scoring,
        scores=scores,
    )
    if entry.model is not None:
        result.test_time_augmentation = tta.to_dict()
    result.skipped_images = list(skipped)
    return result, predictions


def time_model(
    model: PoseModel,
    dataset: PoseDataset,
    n: int = 20,
    warmup: int = 3,
    batch_size: int = 1,
    tta: TestTimeAugmentation = NO_TTA,
    on_bad_image: str = "skip",
) -> dict:
    """Median milliseconds per image over the first ``n`` readable samples, image decoding
    included (an unreadable image stops the timing, or is passed over and counted).

    The same fixed samples, warm-up and batch size serve every model, so figures compare.
    """
    skipped = SkippedImages()
    indices = []
    for i, _ in iter_samples(dataset, on_bad_image=on_bad_image, skipped=skipped):
        indices.append(i)
        if len(indices) == n:
            break
    if not indices:
        raise PoseMachinesError(f"no readable image to time a model on in {dataset.describe()}")
    timed = list(batches(indices, batch_size))
    for b in timed[: max(1, warmup)]:
        model.predict_samples([dataset[i] for i in b], tta)
    per_image = []
    for b in timed:
        start = time.perf_counter()
        model.predict_samples([dataset[i] for i in b], tta)
        per_image.append((time.perf_counter() - start) * 1000 / len(b))
    return {
        "ms_per_image": float(np.median(per_image)),
        "batch_size": batch_size,
        "images": len(indices),
        "skipped_images": skipped.names,
        "device": model_device(model),
        "test_time_augmentation": tta.to_dict(),
        "includes": "image decoding, crop, all stages and views, decoding",
    }


def model_device(model: PoseModel) -> str:
    """Where a model's stages run: its network's device, else the CPU."""
    networks = [s.network for s in model.stages if getattr(s, "network", None) is not None]
    return str(networks[0].device) if networks else "cpu"


# -- comparisons ---------------------------------------------------------------------------------


def default_entries(root: str | Path = "runs") -> list[Path]:
    """The latest finished run of each backend of pose models under ``root`` (every registered
    one, plugins included, and the stacks: ``runs/hybrid-N``)."""
    from posemachines.files.runs import latest_run
    from posemachines.registry import backends

    pose_backends = [name for name, b in backends().items() if b.stages]
    found = [latest_run(b, root) for b in [*pose_backends, "hybrid"]]
    found = [p for p in found if p is not None]
    if not found:
        raise PoseMachinesError(
            f"no trained runs under {root}/ to compare; train one with `pm train` or name "
            "model directories / prediction files"
        )
    return found


def fairness_notes(entries: list[Entry], dataset) -> list[str]:
    """Differences that make the comparison unfair, stated rather than hidden."""
    notes = []
    models = [e for e in entries if e.model is not None]
    sizes = {e.model.input_size for e in models}
    if len(sizes) > 1:
        notes.append(
            "input sizes differ: " + ", ".join(f"{e.label} {e.model.input_size} px" for e in models)
        )
    trained_on = {e.label: e.model.record.dataset or "?" for e in models}
    if len(set(trained_on.values())) > 1:
        notes.append(
            "training data differ: " + "; ".join(f"{k}: {v}" for k, v in trained_on.items())
        )
    for label, data in trained_on.items():
        if f"{dataset.name}:{dataset.split}" in data:
            notes.append(f"{label} was trained on the split it is evaluated on")
    if any(e.model is None for e in entries):
        notes.append(
            "prediction files were made outside this toolkit: their crops, person "
            "boxes and decoding are their authors', not the protocol used here"
        )
    if dataset.protocol == "gt":
        notes.append(
            "person boxes come from the ground-truth joints ('gt' protocol): "
            "flattering for every entry"
        )
    return notes


def check_comparable(entries: list[Entry], dataset) -> None:
    for e in entries:
        if e.model is not None and not e.model.skeleton.matches(dataset.skeleton):
            raise PoseMachinesError(
                f"cannot compare {e.label}: it predicts skeleton {e.model.skeleton.describe()}, "
                f"the comparison uses {dataset.skeleton.describe()} "
                f"({e.model.skeleton.mismatch(dataset.skeleton)}); models of different "
                "skeletons are not comparable"
            )


def _dir_megabytes(path: Path) -> float:
    files = (
        [path]
        if path.is_file()
        else [p for p in path.rglob("*") if p.is_file() and "checkpoint" not in p.parts]
    )
    return sum(p.stat().st_size for p in files) / 2**20


@dataclass
class Row:
    """One entry of a comparison, scored on the comparison's samples.

    ``result`` is its ``EvaluationResult`` as a dict; ``predictions`` (T, N, P, 2);
    ``pck_by_joint_and_stage`` (T, P) and ``pck_by_image`` (N,) of the final stage. A model
    adds its timing, input size, stages, training record and, with a people source, its
    ``detected`` scores; ``figures`` are what its backend has to show of it (a CNN: receptive
    fields, accuracy by joint group, gradients), by name."""

    label: str
    kind: str
    path: str
    result: dict
    predictions: np.ndarray
    pck_by_joint_and_stage: np.ndarray
    pck_by_image: np.ndarray
    megabytes: float | None = None
    timing: dict | None = None
    input_size: int | None = None
    stages: int | None = None
    train_seconds: float | None = None
    train_data: str | None = None
    detected: dict | None = None
    figures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The entry of the report's JSON document (no per-sample arrays; no gradients)."""
        skip = {"predictions", "pck_by_image", "figures"}
        if self.input_size is None:  # a prediction file: no model's figures
            skip |= {"timing", "input_size", "stages", "train_seconds", "train_data"}
        if self.detected is None:
            skip.add("detected")
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return {**doc, **{k: v for k, v in self.figures.items() if k != "gradients"}}


@dataclass
class Comparison:
    """Everything a report shows: every entry scored on the same samples, with its tables.

    ``rows`` hold a ``Row`` per entry. ``examples`` are the samples shown as pictures,
    ``beliefs`` each model's beliefs by stage of the first example's crop.
    """

    dataset: PoseDataset
    rows: list
    notes: list
    skipped: list
    readable: np.ndarray
    examples: list
    beliefs: dict
    device: str
    tta: TestTimeAugmentation

    def results(self, command: str = "") -> dict:
        """The JSON document of the comparison (no arrays of predictions)."""
        from posemachines.files.model_dir import package_versions

        data = self.dataset
        return {
            "dataset": data.name,
            "split": data.split,
            "n": len(data),
            "protocol": data.protocol,
            "skeleton": data.skeleton.name,
            "command": command,
            "versions": package_versions(),
            "notes": self.notes,
            "device": self.device,
            "test_time_augmentation": self.tta.to_dict(),
            "skipped_images": self.skipped,
            "entries": [r.to_json() for r in self.rows],
        }


def compare_entries(
    entries: list[Entry],
    data: PoseDataset,
    *,
    tta: TestTimeAugmentation = NO_TTA,
    on_bad_image: str = "skip",
    timing_images: int = 20,
    device: str = "cpu",
    n_examples: int = 4,
    people=None,
) -> Comparison:
    """Score and time every entry on ``data``; the tables and pictures of a report. With
    ``people`` (a people source and its label), every model is also scored on the boxes
    it finds, by COCO's detected-box protocol."""
    from posemachines.core.crops import person_crop
    from posemachines.evaluation.metrics import torso_pck_by

    check_comparable(entries, data)
    rows, skipped, kept = [], set(), {}
    for e in entries:
        result, predictions = score_entry(
            e, data, on_bad_image=on_bad_image, tta=tta, keep_beliefs=1
        )
        kept[e.label] = predictions.beliefs
        preds = predictions.keypoints
        skipped |= set(result.skipped_images)
        by_joint = [torso_pck_by(p, data.joints, data.labelled, data.skeleton, 0) for p in preds]
        row = Row(
            e.label,
            e.kind,
            str(e.path),
            result.to_dict(),
            preds,
            np.array(by_joint),
            torso_pck_by(preds[-1], data.joints, data.labelled, data.skeleton, 1),
            megabytes=None if e.part_of else round(_dir_megabytes(e.path), 2),
        )
        if e.model is not None:
            how = dict(tta=tta, on_bad_image=on_bad_image)
            row.timing = time_model(e.model, data, timing_images, **how)
            row.input_size, row.stages = e.model.input_size, e.model.num_stages
            row.train_seconds = e.model.record.seconds
            row.train_data = e.model.record.dataset or None
            row.figures = backend_figures(e, row.pck_by_joint_and_stage, data.skeleton)
            if people is not None:
                from posemachines.people.detected_boxes import evaluate_detected

                row.detected = evaluate_detected(e.model, data, *people, **how).to_dict()
        rows.append(row)
    readable = np.array([name not in skipped for name in data.names])
    shown = np.flatnonzero(readable)
    examples = (
        []
        if not len(shown)
        else list(shown[np.linspace(0, len(shown) - 1, min(n_examples, len(shown))).astype(int)])
    )
    beliefs = {}  # the first example's, as each model decoded them while scored
    for e in entries:
        if examples and examples[0] in kept.get(e.label, {}):
            crop = person_crop(data[examples[0]], e.model.input_size, data.skeleton)
            beliefs[e.label] = (crop.image, kept[e.label][examples[0]])
    notes = fairness_notes(entries, data)
    if skipped:
        notes.append(
            f"{len(skipped)} unreadable image(s) were skipped and count as missing predictions "
            f"for the models: {', '.join(sorted(skipped)[:5])}"
        )
    return Comparison(data, rows, notes, sorted(skipped), readable, examples, beliefs, device, tta)


def backend_figures(entry: Entry, pck_by_joint_and_stage, skeleton) -> dict:
    """What the entry's backend has to show of its model (``Backend.figures``; none for
    stacks of several kinds or backends that say nothing)."""
    from posemachines.plugins import resolve
    from posemachines.registry import backends

    kinds = {s.kind for s in entry.model.stages}
    owners = [b for b in backends().values() if kinds <= set(b.stages)]
    if len(owners) != 1 or owners[0].figures is None:
        return {}
    return resolve(owners[0].figures)(entry.model, entry.path, pck_by_joint_and_stage, skeleton)
