"""Running a model on the user's own images, folders and videos."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from posemachines.core.model import PoseModel
from posemachines.core.tta import NO_TTA, TestTimeAugmentation
from posemachines.data import CorruptImageError, SkippedImages, read_image
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import atomic_write, claim, make_folder
from posemachines.people.multiperson import (
    PeopleSource,
    Person,
    make_sample,
    person_score,
    poses_for_boxes,
    square_box,
)
from posemachines.people.tracking import Tracker

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def collect_inputs(paths) -> list[Path]:
    """Image and video files named directly or found (sorted) in the folders given (a GIF is
    read as its first frame); a file given twice is read once."""
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
    unique = {os.path.abspath(f): f for f in reversed(files)}
    return [f for f in files if unique.pop(os.path.abspath(f), None) is not None]


def input_names(files: list[Path]) -> dict[Path, str]:
    """Each input's name in the outputs: its path below the folder that holds them all
    (``a/x.jpg`` and ``b/x.jpg`` stay apart; one folder's images keep their own names)."""
    absolute = [Path(os.path.abspath(f)) for f in files]
    root = Path(os.path.commonpath([a.parent for a in absolute]))
    return {f: a.relative_to(root).as_posix() for f, a in zip(files, absolute)}


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def iter_frames(path: Path, name: str) -> Iterator[tuple[str, np.ndarray]]:
    """(name, image) for an image file, or for every frame of a video file (``name#k``)."""
    if not is_video(path):
        yield name, read_image(path)
        return
    try:
        import imageio.v3 as iio
    except ImportError:
        raise PoseMachinesError(
            f"{path}: reading videos needs imageio (pip install 'posemachines[video]')"
        ) from None
    try:
        for k, frame in enumerate(iio.imiter(path)):
            yield f"{name}#{k:06d}", np.asarray(frame)[..., :3]
    except (OSError, ValueError, RuntimeError) as exc:
        raise CorruptImageError(f"{path}: cannot read video ({exc})") from None


def predict_files(
    model: PoseModel,
    files,
    *,
    people: PeopleSource | None = None,
    centre=None,
    box_side=None,
    batch_size: int = 16,
    progress: bool = True,
    tta: TestTimeAugmentation = NO_TTA,
    on_bad_image: str = "skip",
    skipped: SkippedImages | None = None,
):
    """Yield (source file, name, image, people) per image or frame: a ``Person`` for every
    box ``people`` finds (in a video each with the id of the same person in the frame
    before), else one person per image, in the box ``centre`` and ``box_side`` give (the
    whole image by default).

    An unreadable image or video stops the run (``on_bad_image="stop"``) or is passed over and
    recorded in ``skipped``.
    """
    from posemachines.progress import progress_bar

    batch: list = []
    trackers: dict = {}
    names = input_names(files)

    def flush():
        images = [image for _, _, image in batch]
        if people is not None:
            keys = [(name, source.name) for source, name, _ in batch]
            found = poses_for_boxes(
                model, images, people.find(images, keys), tta=tta, batch_size=batch_size
            )
        else:
            found = one_person_each(model, batch, centre, box_side, tta)
        for (source, name, image), persons in zip(batch, found):
            if is_video(source):
                trackers.setdefault(source, Tracker()).update(persons)
            yield source, name, image, persons
        batch.clear()

    with progress_bar(desc="predict", unit="img", disable=not progress) as bar:
        for path in files:
            try:
                for name, image in iter_frames(path, names[path]):
                    batch.append((path, name, image))
                    bar.update()
                    if len(batch) == batch_size:
                        yield from flush()
            except PoseMachinesError as exc:  # unreadable image, or a video that breaks off
                if on_bad_image == "stop" or not isinstance(exc, CorruptImageError):
                    raise
                if skipped is not None:
                    skipped.add(names[path], str(exc))
        if batch:
            yield from flush()


def one_person_each(
    model: PoseModel, batch, centre, box_side, tta, keep_beliefs: bool = False
) -> list[list[Person]]:
    """The single-person case: each image one person, its box a square (the whole image
    unless ``centre``/``box_side`` say otherwise); ``keep_beliefs``: each person keeps the
    beliefs it was decoded from."""
    p = model.skeleton.num_joints
    samples = [
        make_sample(name, image, p, centre=centre, box_side=box_side) for _, name, image in batch
    ]
    keypoints, confidence, beliefs = model.predict_samples(samples, tta)
    found = []
    for j, s in enumerate(samples):
        person = Person(square_box(s), 1.0, keypoints[:, j], confidence[:, j])
        person.score = person_score(1.0, person.confidence[-1])
        if keep_beliefs:
            person.beliefs = [b[j] for b in beliefs]
        found.append([person])
    return found


class OverlayWriter:
    """Overlays of predictions: a PNG per image, an MP4 per video (streamed frame by frame),
    named after each input's name (``input_names``): ``a/x.jpg`` gives ``a/x.png``, or
    ``a/x.jpg.png`` where another input shares the stem."""

    def __init__(self, out_dir: Path, skeleton, files: list[Path]):
        self.out_dir, self.skeleton, self.videos = Path(out_dir), skeleton, {}
        self.written: list[Path] = []
        names = input_names(files)
        stems = Counter(str(PurePosixPath(n).with_suffix("")) for n in names.values())
        self.names = {}
        for source, name in names.items():
            stem = str(PurePosixPath(name).with_suffix(""))
            base = stem if stems[stem] == 1 else name
            self.names[source] = base + ("_overlay.mp4" if is_video(source) else ".png")

    def path_for(self, source: Path) -> Path:
        """Where the overlay of an image or a video goes."""
        return self.out_dir / self.names[source]

    def add(self, source: Path, name: str, image: np.ndarray, people: list[Person]) -> None:
        from PIL import Image

        from posemachines.evaluation.visualize import draw_people

        overlay = draw_people(image, people, self.skeleton)
        path = self.path_for(source)
        if not is_video(source):
            atomic_write(path, lambda f: Image.fromarray(overlay).save(f, format="PNG"))
            self.written.append(path)
            return
        if source not in self.videos:
            import imageio.v2 as imageio

            make_folder(path.parent)
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
