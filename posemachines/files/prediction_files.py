"""Prediction files: every stage's keypoints written as JSON, and external predictions read
back (JSON, or the MATLAB arrays the published methods ship) for scoring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from posemachines.core.model import Predictions
from posemachines.core.skeletons import Skeleton
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import json_text, write_owned_file

FORMAT = "posemachines-predictions"


def write_predictions(
    path: str | Path, predictions: Predictions, skeleton: Skeleton, **meta
) -> None:
    """JSON with every stage's keypoints, 0-based image coordinates (null where missing).
    Replaces an earlier prediction file that its folder's record lists, never another file."""
    doc = {
        "format": FORMAT,
        "skeleton": skeleton.name,
        "joints": list(skeleton.joints),
        "coordinates": "0-based pixel centres",
        "names": predictions.names,
        "stages": predictions.keypoints,
        "confidence": predictions.confidence,
        **meta,
    }
    write_owned_file(path, json_text(doc).encode(), "evaluate")


def _keypoint_array(raw, path: Path) -> np.ndarray:
    """Nested JSON lists [T][N][P][2] of numbers (null = missing) as a float array."""

    def number(v):
        if v is None:
            return np.nan
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError
        return float(v)

    try:
        return np.array(
            [[[[number(v) for v in pt] for pt in s] for s in st] for st in raw], dtype=float
        )
    except (TypeError, ValueError):
        raise PoseMachinesError(
            f"{path}: keypoints must be nested lists of numbers or null, "
            "[N][P][2] (or [T][N][P][2] under 'stages')"
        ) from None


def read_predictions(
    path: str | Path,
    skeleton: Skeleton,
    n: int,
    one_based: bool = True,
    names: list[str] | None = None,
) -> np.ndarray:
    """External predictions as (T, N, P, 2) 0-based image coordinates.

    ``.mat``: a MATLAB file holding one numeric array of shape (P, 2, N) (or (P, 3, N) with a
    third row that is ignored), whatever its variable name, in the dataset annotation's own
    convention: 1-based coordinates unless ``one_based`` is False.
    ``.json``: a ``posemachines-predictions`` file (as written by ``pm predict``/``evaluate``),
    or ``{"keypoints": [N][P][2]}`` in 0-based coordinates. Where the file names its samples
    (``names``) they are matched to the dataset's ``names``, whatever their order.
    """
    path = Path(path)
    p = skeleton.num_joints
    if not path.is_file():
        raise PoseMachinesError(f"{path}: prediction file not found")
    if path.suffix.lower() == ".mat":
        import scipy.io

        try:
            mat = scipy.io.loadmat(path)
        except Exception as exc:
            raise PoseMachinesError(f"{path}: not a readable MATLAB file ({exc})") from None
        arrays = {
            k: v
            for k, v in mat.items()
            if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "fiu"
        }
        if len(arrays) != 1:
            raise PoseMachinesError(
                f"{path}: expected exactly one numeric array, found {sorted(arrays) or 'none'}"
            )
        ((name, arr),) = arrays.items()
        arr = np.asarray(arr, dtype=float)
        if arr.ndim != 3 or arr.shape[0] != p or arr.shape[1] not in (2, 3) or arr.shape[2] != n:
            raise PoseMachinesError(
                f"{path}: variable {name!r} has shape {arr.shape}, expected ({p}, 2, {n}) "
                f"for {n} samples of {skeleton.name}"
            )
        keypoints = arr[:, :2].transpose(2, 0, 1)[None] - (1.0 if one_based else 0.0)
    elif path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            raise PoseMachinesError(f"{path}: not valid JSON ({exc})") from None
        except RecursionError:
            raise PoseMachinesError(f"{path}: not valid JSON (nested too deeply)") from None
        if not isinstance(doc, dict) or not ("stages" in doc or "keypoints" in doc):
            raise PoseMachinesError(f"{path}: JSON needs a 'stages' or 'keypoints' field")
        joints = doc.get("joints", list(skeleton.joints))
        if doc.get("skeleton", skeleton.name) != skeleton.name or joints != list(skeleton.joints):
            raise PoseMachinesError(
                f"{path}: predictions are for skeleton {doc.get('skeleton', skeleton.name)} with "
                f"joints {joints}, the dataset uses {skeleton.describe()}: "
                f"{list(skeleton.joints)}"
            )
        raw = doc["stages"] if "stages" in doc else [doc["keypoints"]]
        keypoints = _keypoint_array(raw, path)
        if keypoints.ndim != 4 or keypoints.shape[2:] != (p, 2):
            raise PoseMachinesError(
                f"{path}: keypoints have shape {keypoints.shape[1:]}, expected ({n}, {p}, 2)"
            )
        if names is not None and doc.get("names") is not None:
            keypoints = keypoints[:, _matched(path, doc["names"], names, keypoints.shape[1])]
        if keypoints.shape[1] != n:
            raise PoseMachinesError(
                f"{path}: keypoints have shape {keypoints.shape[1:]}, expected ({n}, {p}, 2)"
            )
    else:
        raise PoseMachinesError(f"{path}: unknown prediction format (use .mat or .json)")
    return keypoints


def _matched(path: Path, given, wanted: list[str], count: int) -> np.ndarray:
    """For each of the dataset's sample names ``wanted``, its row in a file naming ``given``."""
    if not isinstance(given, list) or len(given) != count:
        raise PoseMachinesError(f"{path}: 'names' must be a list of one name per prediction")
    rows: dict = {}
    for i, name in enumerate(given):
        if not isinstance(name, str):
            raise PoseMachinesError(f"{path}: names[{i}] is not a string")
        if name in rows:
            raise PoseMachinesError(f"{path}: names[{i}] {name!r} appears twice")
        rows[name] = i
    missing = [w for w in wanted if w not in rows]
    if missing:
        raise PoseMachinesError(
            f"{path}: no prediction for {len(missing)} of the dataset's {len(wanted)} samples "
            f"(first: {missing[0]!r}); are these predictions for another dataset or split?"
        )
    extra = len(given) - len(wanted)
    if extra:
        unknown = next(g for g in given if g not in set(wanted))
        raise PoseMachinesError(
            f"{path}: {extra} prediction(s) for samples the dataset does not have (first: "
            f"{unknown!r})"
        )
    return np.array([rows[w] for w in wanted])
