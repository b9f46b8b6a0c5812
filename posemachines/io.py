"""Model directories and prediction files: the only module that touches disk formats.

A model directory holds ``manifest.json`` and one weight file per stage (or per network shared
by several stages). Weights are stored in formats that run no code when loaded: safetensors for
arrays and tensors, skops (with an explicit allow-list of scikit-learn types) for forests. Each
file's SHA-256 is recorded in the manifest and checked on load, so a tampered or swapped file is
refused. Every write goes to a temporary name first and is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .errors import PoseMachinesError
from .model import PoseModel, Predictions
from .skeletons import Skeleton, get_skeleton
from .targets import BeliefCodec

MANIFEST = "manifest.json"
FORMAT = "posemachines-model"
FORMAT_VERSION = 1

# scikit-learn types a forest stage may contain; anything else in a .skops file is refused.
TRUSTED_SKOPS_TYPES = {
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.tree._tree.Tree",
    "numpy.float64",
    "numpy.int64",
}


# -- atomic writes -------------------------------------------------------------------------------


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes files private; ours are ordinary
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict:
    import importlib.metadata as md

    versions = {"posemachines": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "scikit-learn", "scikit-image", "torch", "skops"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


# -- weights ------------------------------------------------------------------------------------


def _save_arrays(path: Path, arrays: dict) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))


def _load_arrays(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def _save_estimator(path: Path, estimator) -> None:
    import skops.io

    atomic_write_bytes(path, skops.io.dumps(estimator))


def _load_estimator(path: Path):
    import skops.io

    untrusted = set(skops.io.get_untrusted_types(file=str(path)))
    unexpected = sorted(untrusted - TRUSTED_SKOPS_TYPES)
    if unexpected:
        raise PoseMachinesError(f"{path}: refuses to load unexpected types {unexpected}")
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    estimator = skops.io.load(str(path), trusted=sorted(untrusted))
    if not isinstance(estimator, (RandomForestClassifier, ExtraTreesClassifier)):
        raise PoseMachinesError(f"{path}: holds a {type(estimator).__name__}, not a forest")
    return estimator


def _stage_file(t: int, suffix: str) -> str:
    return f"stage{t + 1}.{suffix}"


def save_model(model: PoseModel, folder: str | Path, overwrite: bool = True) -> Path:
    """Write ``model`` into the directory ``folder``, leaving every other file there alone.

    Each weight file is written atomically, the manifest last: until it is renamed into place
    the folder holds the previous model (a half-written save is refused on load by the
    checksums, never loaded wrongly). Files of the previous model that the new one no longer
    uses are removed; nothing else is (training logs and checkpoints stay).
    """
    folder = Path(folder)
    if (folder / MANIFEST).exists() and not overwrite:
        raise PoseMachinesError(f"{folder} already holds a model")
    folder.mkdir(parents=True, exist_ok=True)
    previous = _model_files(folder)
    stages, networks, files = [], {}, {}
    for t, stage in enumerate(model.stages):
        entry = {"kind": stage.kind, "config": stage.config()}
        network = getattr(stage, "network", None)
        if network is not None:
            name = next((k for k, v in networks.items() if v is network), None)
            if name is None:
                name = f"network{len(networks) + 1}"
                networks[name] = network
            entry["network"] = name
        if hasattr(stage, "tensors"):
            entry["file"] = _stage_file(t, "safetensors")
            _save_arrays(folder / entry["file"], stage.tensors())
        elif hasattr(stage, "estimator"):
            entry["file"] = _stage_file(t, "skops")
            _save_estimator(folder / entry["file"], stage.estimator())
            if stage.part_estimator() is not None:
                entry["part_file"] = _stage_file(t, "parts.skops")
                _save_estimator(folder / entry["part_file"], stage.part_estimator())
        stages.append(entry)
    network_entries = {}
    for name, network in networks.items():
        from safetensors.torch import save

        file = f"{name}.safetensors"
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        atomic_write_bytes(folder / file, save(state))
        network_entries[name] = {"config": network.config_dict(), "file": file}
        files[file] = sha256(folder / file)
    for entry in stages:
        for key in ("file", "part_file"):
            if key in entry:
                files[entry[key]] = sha256(folder / entry[key])
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": model.backend,
        "skeleton": model.skeleton.name,
        "joints": list(model.skeleton.joints),
        "input_size": model.codec.input_size,
        "stride": model.codec.stride,
        "sigma": model.codec.sigma,
        "num_stages": model.num_stages,
        "stages": stages,
        "networks": network_entries,
        "sha256": files,
        "versions": package_versions(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **{k: v for k, v in model.info.items() if k not in ("versions", "saved_at")},
    }
    atomic_write_json(folder / MANIFEST, _jsonable(manifest))
    for stale in previous - set(files):
        (folder / stale).unlink(missing_ok=True)
    return folder


def _model_files(folder: Path) -> set[str]:
    """The weight files the manifest in ``folder`` names (none when there is no model)."""
    try:
        listed = json.loads((folder / MANIFEST).read_text()).get("sha256", {})
    except (OSError, ValueError, AttributeError):
        return set()
    # Only plain names inside the folder: a manifest never makes us delete elsewhere.
    return {f for f in listed if isinstance(f, str) and Path(f).name == f}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise PoseMachinesError(f"{folder}: not a model directory (no such directory)")
    if not path.is_file():
        raise PoseMachinesError(f"{folder}: not a model directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoseMachinesError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PoseMachinesError(f"{path}: not a posemachines model manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise PoseMachinesError(
            f"{path}: format version {manifest['format_version']} is newer than this "
            f"posemachines understands ({FORMAT_VERSION}); upgrade the package"
        )
    return manifest


def update_manifest(folder: str | Path, **fields) -> dict:
    """Merge ``fields`` into a model's manifest (atomically), e.g. evaluation results."""
    manifest = read_manifest(folder)
    manifest.update(_jsonable(fields))
    atomic_write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def _verified(folder: Path, manifest: dict, file: str) -> Path:
    path = folder / file
    expected = manifest.get("sha256", {}).get(file)
    if not path.is_file():
        raise PoseMachinesError(f"{path}: weight file named in the manifest is missing")
    if expected is None or sha256(path) != expected:
        raise PoseMachinesError(f"{path}: checksum does not match the manifest (file altered?)")
    return path


def load_model(folder: str | Path, device: str = "cpu") -> PoseModel:
    """Load a model directory, verifying every file; ``device`` places CNN stages."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_structure(folder, manifest)
    try:
        skeleton = get_skeleton(manifest["skeleton"])
        codec = BeliefCodec(manifest["input_size"], manifest["stride"], manifest["sigma"])
        networks = {}
        for name, entry in manifest.get("networks", {}).items():
            from safetensors.torch import load_file

            from .stages.cnn import build_network

            state = _read_weights(_verified(folder, manifest, entry["file"]), load_file)
            networks[name] = build_network(entry["config"], state, device)
        stages = []
        for entry in manifest["stages"]:
            kind = entry["kind"]
            if kind not in STAGE_LOADERS:
                raise PoseMachinesError(f"{folder}: unknown stage kind {kind!r}")
            payload = None
            if "file" in entry:
                path = _verified(folder, manifest, entry["file"])
                reader = _load_arrays if path.suffix == ".safetensors" else _load_estimator
                payload = _read_weights(path, reader)
            if "part_file" in entry:
                path = _verified(folder, manifest, entry["part_file"])
                part = _read_weights(path, _load_estimator)
                payload = (payload, part)
            stages.append(
                STAGE_LOADERS[kind](entry["config"], payload, networks.get(entry.get("network")))
            )
    except KeyError as exc:
        raise PoseMachinesError(f"{folder / MANIFEST}: missing field {exc}") from None
    except (TypeError, ValueError) as exc:
        raise PoseMachinesError(f"{folder / MANIFEST}: malformed stage settings ({exc})") from None
    info = {k: v for k, v in manifest.items() if k not in _STRUCTURAL}
    return PoseModel(manifest["backend"], skeleton, codec, stages, info)


def _check_structure(folder: Path, manifest: dict) -> None:
    """The manifest fields loading relies on, with the types it relies on."""
    expect = {
        "backend": str,
        "skeleton": str,
        "input_size": int,
        "stride": int,
        "sigma": (int, float),
        "stages": list,
        "networks": dict,
        "sha256": dict,
    }
    for key, kind in expect.items():
        if key == "networks" and key not in manifest:
            continue
        if not isinstance(manifest.get(key), kind) or isinstance(manifest.get(key), bool):
            raise PoseMachinesError(
                f"{folder / MANIFEST}: field {key!r} is missing or not a {_type_name(kind)}"
            )
    for entry in manifest["stages"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise PoseMachinesError(f"{folder / MANIFEST}: every stage needs a 'kind'")
        if not isinstance(entry.get("config", {}), dict):
            raise PoseMachinesError(f"{folder / MANIFEST}: a stage's 'config' is not an object")
    for entry in manifest.get("networks", {}).values():
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise PoseMachinesError(f"{folder / MANIFEST}: a network entry has no 'config'")


def _type_name(kind) -> str:
    names = {str: "string", int: "whole number", list: "list", dict: "object"}
    return "number" if isinstance(kind, tuple) else names[kind]


def _read_weights(path: Path, reader):
    """Run ``reader`` on a weight file, turning a file of the wrong kind into one line."""
    try:
        return reader(path)
    except PoseMachinesError:
        raise
    except Exception as exc:  # safetensors, zip and skops each raise their own types
        kind = "safetensors" if path.suffix == ".safetensors" else "skops"
        raise PoseMachinesError(
            f"{path}: not a readable {kind} file ({type(exc).__name__}: {exc})"
        ) from None


_STRUCTURAL = {
    "saved_at",
    "format",
    "format_version",
    "backend",
    "skeleton",
    "joints",
    "input_size",
    "stride",
    "sigma",
    "num_stages",
    "stages",
    "networks",
    "sha256",
}


def _load_mean(config, payload, network):
    from .stages.mean import MeanPoseStage

    return MeanPoseStage.from_tensors(config, payload)


def _load_forest(config, payload, network):
    from .stages.forest import ForestStage

    forests = payload if isinstance(payload, tuple) else (payload,)
    return ForestStage.from_estimator(config, *forests)


def _load_cnn(config, payload, network):
    from .stages.cnn import CPMStage

    return CPMStage(network, config["index"])


STAGE_LOADERS = {"mean": _load_mean, "forest": _load_forest, "cnn": _load_cnn}


# -- prediction files -----------------------------------------------------------------------------


def write_predictions(
    path: str | Path, predictions: Predictions, skeleton: Skeleton, **meta
) -> None:
    """JSON with every stage's keypoints, 0-based image coordinates (null where missing)."""
    doc = {
        "format": "posemachines-predictions",
        "skeleton": skeleton.name,
        "joints": list(skeleton.joints),
        "coordinates": "0-based pixel centres",
        "names": predictions.names,
        "stages": _jsonable(predictions.keypoints),
        "confidence": _jsonable(predictions.confidence),
        **meta,
    }
    atomic_write_json(path, doc)


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
    path: str | Path, skeleton: Skeleton, n: int, one_based: bool = True
) -> np.ndarray:
    """External predictions as (T, N, P, 2) 0-based image coordinates.

    ``.mat``: a MATLAB file holding one numeric array of shape (P, 2, N) (or (P, 3, N) with a
    third row that is ignored), whatever its variable name, in the dataset annotation's own
    convention: 1-based coordinates unless ``one_based`` is False.
    ``.json``: a ``posemachines-predictions`` file (as written by ``pm predict``/``evaluate``),
    or ``{"keypoints": [N][P][2]}`` in 0-based coordinates.
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
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PoseMachinesError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or not ("stages" in doc or "keypoints" in doc):
            raise PoseMachinesError(f"{path}: JSON needs a 'stages' or 'keypoints' field")
        if doc.get("skeleton", skeleton.name) != skeleton.name:
            raise PoseMachinesError(
                f"{path}: predictions are for skeleton {doc['skeleton']}, the dataset uses "
                f"{skeleton.name}"
            )
        raw = doc["stages"] if "stages" in doc else [doc["keypoints"]]
        keypoints = _keypoint_array(raw, path)
        if keypoints.ndim != 4 or keypoints.shape[1:] != (n, p, 2):
            raise PoseMachinesError(
                f"{path}: keypoints have shape {keypoints.shape[1:]}, expected ({n}, {p}, 2)"
            )
    else:
        raise PoseMachinesError(f"{path}: unknown prediction format (use .mat or .json)")
    return keypoints
