"""Running a model on the user's own images, folders and videos."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .data import CorruptImageError, Sample, SkippedImages, person_box, read_image
from .errors import PoseMachinesError
from .files import atomic_write, claim
from .model import PoseModel
from .tta import NO_TTA, TestTimeAugmentation

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def collect_inputs(paths) -> list[Path]:
    """Image and video files named directly or found (sorted) in the folders given (a GIF is
    read as its first frame)."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in media and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise PoseMachinesError(f"{p}: no such file or folder")
    if not files:
        raise PoseMachinesError("no images found in the inputs given")
    return files


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def iter_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, image) for an image file, or for every frame of a video file."""
    if not is_video(path):
        yield path.name, read_image(path)
        return
    try:
        import imageio.v3 as iio
    except ImportError:
        raise PoseMachinesError(
            f"{path}: reading videos needs imageio (pip install 'posemachines[video]')"
        ) from None
    try:
        for k, frame in enumerate(iio.imiter(path)):
            yield f"{path.name}#{k:06d}", np.asarray(frame)[..., :3]
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptImageError(f"{path}: cannot read video ({exc})") from None


def load_boxes(path: str | Path) -> dict:
    """``{"image.jpg": [x, y, w, h], ...}`` (COCO-style boxes, 0-based pixels) from JSON."""
    try:
        boxes = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise PoseMachinesError(f"{path}: cannot read boxes ({type(exc).__name__})") from None
    if not isinstance(boxes, dict):
        raise PoseMachinesError(f"{path}: expected {{image name: [x, y, w, h]}}")
    for name, box in boxes.items():
        ok = isinstance(box, list) and len(box) == 4
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        if not ok or not np.isfinite(box).all() or box[2] <= 0 or box[3] <= 0:
            raise PoseMachinesError(
                f"{path}: the box of {name!r} is {box!r}; expected [x, y, w, h], finite "
                "numbers with a positive width and height"
            )
    return boxes


def make_sample(
    name: str, image: np.ndarray, skeleton_size: int, *, centre=None, box_side=None, box=None
) -> Sample:
    """A sample with no annotation; the person box from a box, a centre and side, or the
    image."""
    p = skeleton_size
    empty = np.zeros((p, 2)), np.zeros(p, bool)
    c, s = person_box(image.shape, empty[0], empty[1], "image")
    if box is not None:
        x, y, w, h = map(float, box)
        c, s = np.array([x + (w - 1) / 2, y + (h - 1) / 2]), max(w, h) * 1.2
    if centre is not None:
        c = np.asarray(centre, float)
    if box_side is not None:
        s = float(box_side)
    return Sample(image, empty[0], empty[1], empty[1], c, s, name)


def coco_results(names: list[str], keypoints: np.ndarray, confidence: np.ndarray) -> list[dict]:
    """COCO-results-style list: one entry per image with flat [x, y, score, ...] keypoints."""
    out = []
    for name, kp, conf in zip(names, keypoints, confidence):
        flat = np.concatenate([kp, conf[:, None]], 1).ravel()
        out.append(
            {
                "image_id": name,
                "category_id": 1,
                "keypoints": [round(float(v), 3) for v in flat],
                "score": float(np.mean(conf)),
            }
        )
    return out


def predict_files(
    model: PoseModel,
    files,
    *,
    boxes=None,
    centre=None,
    box_side=None,
    batch_size: int = 16,
    progress: bool = True,
    tta: TestTimeAugmentation = NO_TTA,
    on_bad_image: str = "skip",
    skipped: SkippedImages | None = None,
):
    """Yield (source file, name, image, keypoints (P, 2), confidence (P,)) per image or frame.

    An unreadable image or video stops the run (``on_bad_image="stop"``) or is passed over and
    recorded in ``skipped``.
    """
    from .progress import progress_bar

    p = model.skeleton.num_joints
    batch = []

    def flush():
        samples = [s for s, _ in batch]
        kp, conf = model.predict_samples(samples, tta)
        for (s, source), k, c in zip(batch, kp[-1], conf[-1]):
            yield source, s.name, s.image, k, c
        batch.clear()

    with progress_bar(desc="predict", unit="img", disable=not progress) as bar:
        for path in files:
            try:
                for name, image in iter_frames(path):
                    box = (boxes or {}).get(name) or (boxes or {}).get(path.name)
                    batch.append(
                        (
                            make_sample(name, image, p, centre=centre, box_side=box_side, box=box),
                            path,
                        )
                    )
                    bar.update()
                    if len(batch) == batch_size:
                        yield from flush()
            except PoseMachinesError as exc:  # unreadable image, or a video that breaks off
                if on_bad_image == "stop" or not isinstance(exc, CorruptImageError):
                    raise
                if skipped is not None:
                    skipped.add(path.name, str(exc))
        if batch:
            yield from flush()


class OverlayWriter:
    """Overlays of predictions: a PNG per image, an MP4 per video (streamed frame by frame)."""

    def __init__(self, out_dir: Path, skeleton):
        self.out_dir, self.skeleton, self.videos = Path(out_dir), skeleton, {}
        self.written: list[Path] = []

    def path_for(self, source: Path, name: str | None = None) -> Path:
        """Where the overlay of an image (``name``: a frame's or an image's own) or a video
        goes."""
        if is_video(source):
            return self.out_dir / (source.stem + "_overlay.mp4")
        return self.out_dir / (Path(name or source.name).stem + ".png")

    def add(self, source: Path, name: str, image: np.ndarray, keypoints: np.ndarray) -> None:
        from PIL import Image

        from .visualize import draw_skeleton

        overlay = draw_skeleton(image, keypoints, self.skeleton)
        path = self.path_for(source, name)
        if not is_video(source):
            atomic_write(path, lambda f: Image.fromarray(overlay).save(f, format="PNG"))
            self.written.append(path)
            return
        if source not in self.videos:
            import imageio.v2 as imageio

            claim(path)  # the video is streamed, not renamed into place
            self.written.append(path)
            self.videos[source] = imageio.get_writer(path, fps=25, macro_block_size=1)
        self.videos[source].append_data(overlay)

    def close(self) -> None:
        for writer in self.videos.values():
            writer.close()

    def discard(self) -> None:
        """Close and delete every overlay written so far (the command failed)."""
        self.close()
        for path in self.written:
            path.unlink(missing_ok=True)
