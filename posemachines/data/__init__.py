"""Samples, datasets and where they are found.

Coordinates are (x, y) pixels, 0-based, with pixel centres at integer coordinates.
Loaders of 1-based formats (LSP's MATLAB files) convert on the way in.

dataset  : ``Sample``, ``PoseDataset`` and its kinds, skipped images.
reading  : images and annotation files, one line for what cannot be read.
registry : the datasets, where each is found, its splits and download sources.
loading  : ``load_dataset`` and the checks every annotation passes.
"""

from posemachines.data.dataset import (
    GT_BOX_MARGIN,
    PROTOCOLS,
    ConcatDataset,
    ImageFolderDataset,
    ImageList,
    PoseDataset,
    Sample,
    SkippedImages,
    iter_samples,
    person_box,
)
from posemachines.data.loading import (
    COCO_FORMAT,
    DataRequest,
    checked_annotations,
    dataset_available,
    dataset_splits,
    default_training_dataset,
    load_dataset,
    load_split,
    skipped_annotations_line,
)
from posemachines.data.reading import CorruptImageError, read_image, read_json, read_matlab
from posemachines.data.registry import (
    DATA_ROOT_ENV,
    Archive,
    DatasetInfo,
    datasets,
    default_cache_dir,
    find_data_root,
    register_dataset,
    unregister_dataset,
)

__all__ = [
    "COCO_FORMAT",
    "DATA_ROOT_ENV",
    "GT_BOX_MARGIN",
    "PROTOCOLS",
    "Archive",
    "DataRequest",
    "ConcatDataset",
    "CorruptImageError",
    "DatasetInfo",
    "ImageFolderDataset",
    "ImageList",
    "PoseDataset",
    "Sample",
    "SkippedImages",
    "checked_annotations",
    "dataset_available",
    "dataset_splits",
    "datasets",
    "default_cache_dir",
    "default_training_dataset",
    "find_data_root",
    "iter_samples",
    "load_dataset",
    "load_split",
    "person_box",
    "read_image",
    "read_json",
    "read_matlab",
    "register_dataset",
    "skipped_annotations_line",
    "unregister_dataset",
]
