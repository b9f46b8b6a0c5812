"""A trained people model: images in, person boxes with scores out; saved as a folder of its
own kind (``manifest.json`` and ``weights.safetensors``, checked on load, nothing unpickled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from posemachines.backends.people.network import STRIDE, PeopleNet
from posemachines.backends.people.settings import PeopleSettings
from posemachines.core.batches import batches
from posemachines.core.model import TrainingRecord
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import atomic_write_bytes, atomic_write_json, sha256
from posemachines.people.boxes import box_iou, clip_boxes

FORMAT = "posemachines-people"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
MIN_SCORE = 0.05  # centres below this are nobody, whatever a caller's threshold
MAX_PEOPLE = 30  # per image
DUPLICATE_IOU = 0.7  # two boxes this alike are one person found twice


def letterbox(image: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``image`` shrunk (or grown) into a ``side`` square, top-left, the rest mid-grey; and
    the (x, y) factors from image to square pixels (edge coordinates)."""
    from PIL import Image

    h, w = image.shape[:2]
    s = side / max(h, w)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    out = np.full((side, side, 3), 128, np.uint8)
    out[:nh, :nw] = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    return out, np.array([nw / w, nh / h])


def to_tensor(squares: np.ndarray, device) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, S, S) in [-0.5, 0.5]."""
    x = torch.from_numpy(np.ascontiguousarray(squares)).to(device)
    return x.permute(0, 3, 1, 2).float() / 255.0 - 0.5


def peaks(logits, size, offset, limit: int):
    """The strongest local maxima of each image's centre map, as (N, limit) scores and the
    boxes (N, limit, 4) they read out, in square pixels [x, y, w, h]."""
    heat = torch.sigmoid(logits.float())
    keep = heat == F.max_pool2d(heat, 3, stride=1, padding=1)
    n, _, g, _ = heat.shape
    scores, where = (heat * keep).view(n, -1).topk(min(limit, g * g), dim=1)
    row, col = where // g, where % g

    def at(maps, channel):
        return maps[:, channel].reshape(n, -1).gather(1, where).float()

    cx, cy = col + at(offset, 0), row + at(offset, 1)
    w, h = at(size, 0).clamp(max=10).exp(), at(size, 1).clamp(max=10).exp()
    boxes = torch.stack([cx - w / 2, cy - h / 2, w, h], -1) * STRIDE
    return scores, boxes


def drop_duplicates(boxes: np.ndarray, iou: float = DUPLICATE_IOU) -> np.ndarray:
    """Greedy non-maximum suppression of boxes (n, 5), the best-scored first."""
    boxes = boxes[np.argsort(-boxes[:, 4], kind="mergesort")]
    kept: list[int] = []
    overlaps = box_iou(boxes, boxes)
    for i in range(len(boxes)):
        if not kept or overlaps[i, kept].max() < iou:
            kept.append(i)
    return boxes[kept]


@dataclass
class PeopleModel:
    """Finds people: ``detect(images)`` gives each image's boxes [x, y, w, h, score]."""

    settings: PeopleSettings
    network: PeopleNet
    record: TrainingRecord = field(default_factory=TrainingRecord)
    evaluations: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @torch.no_grad()
    def detect(
        self, images, *, min_score: float = MIN_SCORE, batch_size: int = 16
    ) -> list[np.ndarray]:
        """(n, 5) boxes of every image (arrays (H, W, 3) uint8), best first, in the image."""
        self.network.eval()
        out = []
        side = self.settings.input_size
        for part in batches(images, batch_size):
            squares, factors = zip(*(letterbox(im, side) for im in part))
            scores, boxes = peaks(
                *self.network(to_tensor(np.stack(squares), self.device)), MAX_PEOPLE
            )
            for image, f, s, b in zip(part, factors, scores.cpu().numpy(), boxes.cpu().numpy()):
                b = b / np.concatenate([f, f])
                found = clip_boxes(np.column_stack([b, s]), image.shape)
                found = found[
                    (s >= max(min_score, MIN_SCORE)) & (found[:, 2] > 1) & (found[:, 3] > 1)
                ]
                out.append(drop_duplicates(found))
        return out

    def save(self, folder: str | Path) -> Path:
        """Write the model folder (weights first, the manifest that names them last); files
        in ``folder`` that posemachines did not write are never replaced."""
        from posemachines.files.runs import owned

        with owned(folder, "train"):
            return self._write(Path(folder))

    def _write(self, folder: Path) -> Path:
        from safetensors.torch import save as to_bytes

        from posemachines.files.model_dir import package_versions

        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        atomic_write_bytes(folder / WEIGHTS, to_bytes(state))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "settings": self.settings.to_dict(),
            "training": self.record.to_dict(),
            "evaluations": self.evaluations,
            "versions": package_versions(),
            "sha256": {WEIGHTS: sha256(folder / WEIGHTS)},
        }
        atomic_write_json(folder / "manifest.json", manifest)
        return folder


def load_people_model(folder: str | Path, device: str = "cpu") -> PeopleModel:
    """A people model folder, its weights checked against the manifest's SHA-256."""
    from safetensors import SafetensorError
    from safetensors.torch import load as from_bytes

    from posemachines.files.owned import read_json_object

    folder = Path(folder)
    manifest = read_json_object(folder / "manifest.json") if folder.is_dir() else {}
    if manifest.get("format") != FORMAT:
        kind = "a pose model, " if manifest.get("format") == "posemachines-model" else ""
        raise PoseMachinesError(
            f"{folder}: {kind}not a people model (train one with pm train --backend people)"
        )
    if manifest.get("format_version") != FORMAT_VERSION:
        raise PoseMachinesError(f"{folder}: people model format {manifest.get('format_version')}")
    data = (folder / WEIGHTS).read_bytes() if (folder / WEIGHTS).is_file() else b""
    expected = (manifest.get("sha256") or {}).get(WEIGHTS)
    import hashlib

    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise PoseMachinesError(f"{folder / WEIGHTS}: missing or changed since it was written")
    try:
        settings = PeopleSettings(**manifest["settings"]).on(device)
        network = PeopleNet(settings.width)
        network.load_state_dict(from_bytes(data))
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
        raise PoseMachinesError(f"{folder}: malformed people model ({exc})") from None
    record = TrainingRecord.from_manifest(manifest)
    model = PeopleModel(settings, network.to(device).eval(), record)
    model.evaluations = dict(manifest.get("evaluations") or {})
    return model


def score_people(model: PeopleModel, dataset, on_bad_image: str = "skip") -> dict:
    """Box AP at IoU 0.5 and recall of ``model`` on every image of ``dataset`` (its people's
    boxes as the truth), with the number of images and people."""
    from posemachines.data import CorruptImageError
    from posemachines.people.boxes import box_ap, person_boxes

    found, truth, skipped = [], [], []
    groups = list(dataset.people_by_image().items())
    for group in batches(groups, 16):
        images = []
        for key, indices in group:
            try:
                image = dataset[indices[0]].image
            except CorruptImageError:
                if on_bad_image == "stop":
                    raise
                skipped.append(str(key))
                continue
            images.append(image)
            truth.append(person_boxes(dataset, indices, image.shape))
        found += model.detect(images)
    scores = box_ap(found, truth)
    return {**scores, "images": len(truth), "people": int(sum(map(len, truth))), "skipped": skipped}


def record_evaluation(folder: str | Path, key: str, scores: dict) -> None:
    """Add scores to a people model's manifest (the weights and their checksum untouched)."""
    from posemachines.files.owned import read_json_object

    path = Path(folder) / "manifest.json"
    manifest = read_json_object(path)
    manifest["evaluations"] = {**manifest.get("evaluations", {}), key: scores}
    atomic_write_json(path, manifest)
