"""The registry of datasets: where each is found, its splits, its skeleton, where to download it.

``pm data``, ``pm data download``, the command-line help and ``load_dataset`` are all made
from it. A dataset is registered with::

    register_dataset("mine", splits=("train", "test"), load=load_mine, splits_present=...)

load           : ``load(folder, split, protocol, on_bad_annotation, **options)`` -> PoseDataset
                 (``folder`` is ``DATA_ROOT/NAME``, or None for a built-in dataset).
splits_present : ``splits_present(folder)`` -> the splits that folder holds (its files are
                 there), so that a folder with only a validation set is found as one.
expects        : what ``pm data`` says the folder must hold when it holds nothing.

Functions may be given as ``"module:name"``, imported when first used. Other packages register
through the ``posemachines.datasets`` entry-point group or by calling ``register_dataset``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from posemachines.errors import PoseMachinesError
from posemachines.plugins import load_entry_points, resolve

DATA_ROOT_ENV = "POSEMACHINES_DATA"


@dataclass(frozen=True)
class Archive:
    """One published archive of a dataset: where it is, which sub-folder of the dataset's
    folder its contents go to ("" for the folder itself), the split it alone serves (None:
    every split) and its SHA-256 where one was recorded."""

    url: str
    into: str = ""
    split: str | None = None
    sha256: str | None = None

    @property
    def file_name(self) -> str:
        return Path(urllib.parse.urlparse(self.url).path).name


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    splits: tuple[str, ...]
    load: Callable | str
    splits_present: Callable | str | None = None  # None: a built-in dataset, always there
    expects: str = ""
    skeleton: str = "lsp"
    sources: tuple[Archive, ...] = ()
    summary: str = ""

    @property
    def built_in(self) -> bool:
        return self.splits_present is None

    def loader(self) -> Callable:
        return resolve(self.load)

    def present(self, folder: Path) -> tuple[str, ...]:
        """The splits ``folder`` holds (every split of a built-in dataset)."""
        if self.built_in:
            return self.splits
        return tuple(resolve(self.splits_present)(Path(folder)))


_DATASETS: dict[str, DatasetInfo] = {}
_PLUGINS_LOADED = False


def register_dataset(
    name: str,
    *,
    splits: tuple[str, ...],
    load: Callable | str,
    splits_present: Callable | str | None,
    expects: str = "",
    skeleton: str = "lsp",
    sources: tuple[Archive, ...] = (),
    summary: str = "",
) -> DatasetInfo:
    """Make ``name`` a dataset (see the module's docstring); returns its record."""
    if not name.replace("-", "_").isidentifier():
        raise PoseMachinesError(f"a dataset name must be a plain word, not {name!r}")
    info = DatasetInfo(
        name, tuple(splits), load, splits_present, expects, skeleton, tuple(sources), summary
    )
    _DATASETS[name] = info
    return info


def unregister_dataset(name: str) -> None:
    _DATASETS.pop(name, None)


def datasets() -> dict[str, DatasetInfo]:
    """Every registered dataset by name, plugins included."""
    global _PLUGINS_LOADED
    if not _PLUGINS_LOADED:
        _PLUGINS_LOADED = True
        load_entry_points("posemachines.datasets")
    return dict(_DATASETS)


def registered(name: str) -> DatasetInfo | None:
    return datasets().get(name)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "posemachines"


def find_data_root(data_root: str | Path | None = None) -> tuple[Path, str]:
    """The data root and where it came from: ``--data-root``, ``$POSEMACHINES_DATA``, cache."""
    if data_root:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise PoseMachinesError(f"data root {root} does not exist or is not a directory")
        return root, "--data-root"
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise PoseMachinesError(f"${DATA_ROOT_ENV}={env} does not exist or is not a directory")
        return root, f"${DATA_ROOT_ENV}"
    return default_cache_dir() / "data", "cache directory"


# -- the built-in datasets ------------------------------------------------------------------------


def _all_splits_if(marker: str, splits: tuple[str, ...]):
    def present(folder: Path) -> tuple[str, ...]:
        return splits if (folder / marker).is_file() else ()

    return present


def _lsp(folder, split, protocol, on_bad_annotation, **_):
    from posemachines.data.lsp import load_lsp

    return load_lsp(folder, split=split, protocol=protocol)


def _lspet(folder, split, protocol, on_bad_annotation, **_):
    from posemachines.data.lsp import load_lspet

    return load_lspet(folder, split=split, protocol=protocol)


def _mpii(folder, split, protocol, on_bad_annotation, **_):
    from posemachines.data.mpii import load_mpii

    return load_mpii(folder, split=split, protocol=protocol)


def _flic(folder, split, protocol, on_bad_annotation, **_):
    from posemachines.data.flic import load_flic

    return load_flic(folder, split=split, protocol=protocol)


def _coco(folder, split, protocol, on_bad_annotation, **_):
    from posemachines.data.coco import load_coco

    return load_coco(folder, split=split, protocol=protocol, on_bad_annotation=on_bad_annotation)


def _synthetic(folder, split, protocol, on_bad_annotation, **options):
    from posemachines.data.synthetic import SyntheticDataset

    return SyntheticDataset(split=split, protocol=protocol or "image", **options)


MPII_URL = "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/"
COCO_URL = "http://images.cocodataset.org/"

# The official addresses. None of the publishers lists a checksum and none could be verified
# from here, so none is pinned: each download prints the SHA-256 it got, to pin with --sha256.
register_dataset(
    "lsp",
    splits=("train", "test"),
    load=_lsp,
    splits_present=_all_splits_if("joints.mat", ("train", "test")),
    expects="joints.mat",
    sources=(Archive("http://sam.johnson.io/research/lsp_dataset.zip"),),
    summary="Leeds Sports Pose, 2,000 images",
)
register_dataset(
    "lspet",
    splits=("train",),
    load=_lspet,
    splits_present=_all_splits_if("joints.mat", ("train",)),
    expects="joints.mat",
    sources=(Archive("http://sam.johnson.io/research/lspet_dataset.zip"),),
    summary="LSP extended, 10,000 training images",
)
register_dataset(
    "mpii",
    splits=("train", "val"),
    load=_mpii,
    splits_present="posemachines.data.mpii:mpii_splits",
    expects="annotations/mpii_train.json, mpii_val.json or the release's .mat",
    skeleton="mpii",
    sources=(
        Archive(MPII_URL + "mpii_human_pose_v1_u12_2.zip", "annotations"),
        Archive(MPII_URL + "mpii_human_pose_v1.tar.gz", "images"),
    ),
    summary="MPII Human Pose",
)
register_dataset(
    "coco",
    splits=("train", "val"),
    load=_coco,
    splits_present="posemachines.data.coco:coco_splits",
    expects="annotations/person_keypoints_{train,val}2017.json",
    skeleton="coco",
    sources=(
        Archive(COCO_URL + "annotations/annotations_trainval2017.zip", "annotations"),
        Archive(COCO_URL + "zips/val2017.zip", "val2017", split="val"),
        Archive(COCO_URL + "zips/train2017.zip", "train2017", split="train"),
    ),
    summary="COCO 2017 keypoints",
)
register_dataset(
    "flic",
    splits=("train", "test"),
    load=_flic,
    splits_present=_all_splits_if("examples.mat", ("train", "test")),
    expects="examples.mat",
    skeleton="flic",
    sources=(Archive("http://vision.grasp.upenn.edu/video/FLIC.zip"),),
    summary="Frames Labeled In Cinema",
)
register_dataset(
    "synthetic",
    splits=("train", "test", "val"),
    load=_synthetic,
    splits_present=None,
    summary="built in: train 400, test 100, val 100 by default (--synthetic-size)",
)


def _crowd(folder, split, protocol, on_bad_annotation, **options):
    from posemachines.data.crowd import SyntheticCrowdDataset

    return SyntheticCrowdDataset(split=split, protocol=protocol or "given", **options)


register_dataset(
    "synthetic-crowd",
    splits=("train", "test", "val"),
    load=_crowd,
    splits_present=None,
    summary="built in: 1-6 figures per image, train 800, test 100, val 100 images",
)
