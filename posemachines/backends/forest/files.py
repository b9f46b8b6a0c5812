"""A forest stage's files: its forests as tree arrays in safetensors (format 3), and the skops
files of format 2 models, read with an allow-list of scikit-learn types (nothing unpickled)."""

from __future__ import annotations

import json

from posemachines.backends.forest.tree_arrays import forest_from_arrays, forest_to_arrays
from posemachines.errors import PoseMachinesError

SUFFIX = "forest.safetensors"
METADATA = "forest"  # the one metadata entry of a forest file: its fields as JSON

# scikit-learn types a format 2 forest may contain; anything else in a .skops file is refused.
TRUSTED_SKOPS_TYPES = {
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.float64",
    "numpy.int64",
}


def forest_bytes(forest) -> bytes:
    """The tree-array file of a fitted forest."""
    from safetensors.numpy import save

    arrays, metadata = forest_to_arrays(forest)
    # One metadata entry: safetensors writes several in no fixed order, and the same forest
    # should be the same bytes (its checksum then says "the same model").
    return save(arrays, metadata={METADATA: json.dumps(metadata, sort_keys=True)})


def read_forest(name: str, data: bytes):
    """The forest in a stage file: tree arrays, or a format 2 ``.skops`` file."""
    try:
        return _read_skops(name, data) if name.endswith(".skops") else _read_arrays(name, data)
    except PoseMachinesError:
        raise
    except Exception as exc:  # safetensors, zip and skops each raise their own types
        kind = "skops" if name.endswith(".skops") else "safetensors"
        raise PoseMachinesError(
            f"{name}: not a readable {kind} file ({type(exc).__name__}: {exc})"
        ) from None


def _read_arrays(name: str, data: bytes):
    from safetensors.numpy import load

    arrays = load(data)
    metadata = _metadata(data)
    if METADATA in metadata:  # older files hold the entries themselves
        try:
            metadata = json.loads(metadata[METADATA])
        except ValueError:
            raise PoseMachinesError(f"{name}: unreadable forest metadata") from None
        if not isinstance(metadata, dict):
            raise PoseMachinesError(f"{name}: unreadable forest metadata")
    return forest_from_arrays(arrays, metadata)


def _metadata(data: bytes) -> dict:
    """The metadata of a safetensors file: its JSON header's ``__metadata__``."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    return header.get("__metadata__") or {}


def _read_skops(name: str, data: bytes):
    import skops.io

    untrusted = set(skops.io.get_untrusted_types(data=data))
    unexpected = sorted(untrusted - TRUSTED_SKOPS_TYPES)
    if unexpected:
        raise PoseMachinesError(f"{name}: refuses to load unexpected types {unexpected}")
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    estimator = skops.io.loads(data, trusted=sorted(untrusted))
    if not isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier)):
        raise PoseMachinesError(f"{name}: holds a {type(estimator).__name__}, not a forest")
    return estimator
