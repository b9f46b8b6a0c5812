"""Model directories: a manifest and weight files that run no code when loaded.

A model directory holds ``manifest.json`` and the files of its stages and shared networks.
What a stage is made of comes from the stage itself, through the contract in
``posemachines.core.stage``: ``state()`` gives its JSON settings, its named arrays (written here as
``stageN.safetensors``), the files it encodes itself (a forest's tree arrays,
``stageN.forest.safetensors``, written and read by ``backends.forest``) and the network it
shares (written here as safetensors); ``from_state()`` rebuilds it from the same. Nothing here
knows a kind of stage. Each file's SHA-256 is recorded in the manifest and checked on load, so
a tampered or swapped file is refused. Every file is written atomically (``files``), the
manifest last.

Migrations: format 2 stored forests through skops (``stageN.skops``, read by the forest stage
with an allow-list of scikit-learn types) and the codec as one object (``codec``) with the
training record (``training``); format 1 directories (codec fields at the top level, settings
under the backend's name) still load.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from posemachines import __version__
from posemachines.core.skeletons import get_skeleton
from posemachines.core.stage import StageFile, StageState
from posemachines.core.targets import BeliefCodec
from posemachines.errors import PoseMachinesError
from posemachines.files.owned import (
    atomic_write_bytes,
    atomic_write_json,
    make_folder,
    plain_name,
    sha256,
)
from posemachines.registry import stage_class

MANIFEST = "manifest.json"
FORMAT = "posemachines-model"
FORMAT_VERSION = 3


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


def _save_network(path: Path, network) -> None:
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    atomic_write_bytes(path, save(state))


def _load_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _read_weights(path: Path, reader):
    """Run ``reader`` on a safetensors file, turning a file of the wrong kind into one line."""
    try:
        return reader(path)
    except PoseMachinesError:
        raise
    except Exception as exc:  # safetensors raises its own types
        raise PoseMachinesError(
            f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})"
        ) from None


def _is_file_field(key: str) -> bool:
    """Manifest fields of a stage that name one of its files."""
    return key == "file" or key.endswith("_file")


def _holds_arrays(name: str) -> bool:
    """A stage's named arrays are ``stageN.safetensors``; any other file the stage reads."""
    stem, _, suffix = name.partition(".")
    return suffix == "safetensors" and stem.startswith("stage")


# -- saving -------------------------------------------------------------------------------------


def save_model(model, folder: str | Path, overwrite: bool = True) -> Path:
    """Write ``model`` into the directory ``folder``, leaving every other file there alone.

    Each weight file is written atomically, the manifest last: until it is renamed into place
    the folder holds the previous model (a half-written save is refused on load by the
    checksums, never loaded wrongly). Files of the previous model that the new one no longer
    uses are removed; nothing else is (training logs and checkpoints stay).
    """
    folder = Path(folder)
    if (folder / MANIFEST).exists() and not overwrite:
        raise PoseMachinesError(f"{folder} already holds a model")
    make_folder(folder)
    previous = _model_files(folder)
    stages, networks, files = [], [], {}
    for t, stage in enumerate(model.stages):
        state: StageState = stage.state()
        entry = {"kind": stage.kind, "config": state.config}
        if state.arrays:
            entry["file"] = f"stage{t + 1}.safetensors"
            _save_arrays(folder / entry["file"], state.arrays)
        for field, stage_file in state.files.items():
            if not _is_file_field(field) or field in entry or _holds_arrays(stage_file.name):
                raise PoseMachinesError(f"stage {t + 1}: cannot store a file as {field!r}")
            entry[field] = f"stage{t + 1}.{stage_file.name}"
            atomic_write_bytes(folder / entry[field], stage_file.data)
        if state.network is not None:
            known = [n for n in networks if n is state.network]
            if not known:
                networks.append(state.network)
            entry["network"] = f"network{networks.index(state.network) + 1}"
        stages.append(entry)
        for field in filter(_is_file_field, entry):
            files[entry[field]] = sha256(folder / entry[field])
    network_entries = {}
    for i, network in enumerate(networks, 1):
        name = f"network{i}"
        _save_network(folder / f"{name}.safetensors", network)
        network_entries[name] = {"config": network.config_dict(), "file": f"{name}.safetensors"}
        files[f"{name}.safetensors"] = sha256(folder / f"{name}.safetensors")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "backend": model.backend,
        "skeleton": model.skeleton.name,
        "skeleton_definition": model.skeleton.to_dict(),
        "joints": list(model.skeleton.joints),
        "codec": model.codec.to_dict(),
        "num_stages": model.num_stages,
        "stages": stages,
        "networks": network_entries,
        "sha256": files,
        "training": model.record.to_dict(),
        "versions": package_versions(),
        "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **{k: v for k, v in model.info.items() if k not in _STRUCTURAL},
    }
    atomic_write_json(folder / MANIFEST, manifest)
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
    return {f for f in listed if plain_name(f)}


# -- loading ------------------------------------------------------------------------------------


def read_manifest(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise PoseMachinesError(f"{folder}: not a model directory (no such directory)")
    if not path.is_file():
        raise PoseMachinesError(f"{folder}: not a model directory (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, RecursionError) as exc:
        raise PoseMachinesError(f"{path}: not valid JSON ({type(exc).__name__})") from None
    except OSError as exc:
        raise PoseMachinesError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if isinstance(manifest, dict) and manifest.get("format") == "posemachines-people":
        raise PoseMachinesError(
            f"{folder}: a people model, not a pose model (it finds people: pass it as --people)"
        )
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PoseMachinesError(f"{path}: not a posemachines model manifest")
    version = manifest.get("format_version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PoseMachinesError(
            f"{path}: format version {version} is newer than this posemachines understands "
            f"({FORMAT_VERSION}); upgrade the package"
        )
    return manifest


def update_manifest(folder: str | Path, **fields) -> dict:
    """Merge ``fields`` into a model's manifest (atomically), e.g. evaluation results; a zoo
    model's files are shipped in the package and never written (its scores were recorded
    when the entry was made)."""
    from posemachines.zoo import is_zoo_path

    manifest = read_manifest(folder)
    if is_zoo_path(folder):
        return manifest
    manifest.update(fields)
    atomic_write_json(Path(folder) / MANIFEST, manifest)
    return manifest


def _verified(folder: Path, manifest: dict, file: str) -> Path:
    _check_contained(folder, file)
    path = folder / file
    expected = manifest.get("sha256", {}).get(file)
    if not path.is_file():
        raise PoseMachinesError(f"{path}: weight file named in the manifest is missing")
    if expected is None or sha256(path) != expected:
        raise PoseMachinesError(f"{path}: checksum does not match the manifest (file altered?)")
    return path


def _codec(manifest: dict) -> BeliefCodec:
    fields = manifest.get("codec") or {
        k: manifest.get(k) for k in ("input_size", "stride", "sigma")
    }
    if not isinstance(fields, dict) or not all(
        isinstance(fields.get(k), (int, float)) and not isinstance(fields.get(k), bool)
        for k in ("input_size", "stride", "sigma")
    ):
        raise PoseMachinesError("the codec (input_size, stride, sigma) is missing or malformed")
    return BeliefCodec(int(fields["input_size"]), int(fields["stride"]), float(fields["sigma"]))


@dataclass
class ModelFiles:
    """What a model directory holds, read and verified: ``model.load_model`` makes a
    ``PoseModel`` of it."""

    manifest: dict
    skeleton: object
    codec: BeliefCodec
    stages: list
    info: dict  # the manifest's descriptive fields (evaluations, ...)


def read_model(folder: str | Path, device: str = "cpu") -> ModelFiles:
    """Read a model directory, verifying every file; ``device`` places CNN stages."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_structure(folder, manifest)
    try:
        skeleton = get_skeleton(manifest["skeleton"], manifest.get("skeleton_definition"))
        codec = _codec(manifest)
        networks = {}
        for entry in manifest["stages"]:
            name = entry.get("network")
            if name is None or name in networks:
                continue
            if name not in manifest.get("networks", {}):
                raise PoseMachinesError(f"{folder / MANIFEST}: no network {name!r}")
            net = manifest["networks"][name]
            tensors = _read_weights(_verified(folder, manifest, net["file"]), _load_tensors)
            cls = stage_class(entry["kind"])
            networks[name] = cls.network_from_state(net["config"], tensors, device)
        stages = []
        for entry in manifest["stages"]:
            state = StageState(config=entry.get("config", {}))
            for field in filter(_is_file_field, entry):
                name = entry[field]
                if not name:
                    continue
                path = _verified(folder, manifest, name)
                if _holds_arrays(name):
                    state.arrays = _read_weights(path, _load_arrays)
                else:
                    state.files[field] = StageFile(name, path.read_bytes())
            state.network = networks.get(entry.get("network"))
            stages.append(stage_class(entry["kind"]).from_state(state))
        _check_arrays(stages, skeleton.num_joints + 1, codec.map_size)
    except KeyError as exc:
        raise PoseMachinesError(f"{folder / MANIFEST}: missing field {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise PoseMachinesError(f"{folder / MANIFEST}: malformed stage settings ({exc})") from None
    except PoseMachinesError as exc:
        if str(exc).startswith(str(folder)):
            raise
        raise PoseMachinesError(f"{folder}: {exc}") from None
    info = {k: v for k, v in manifest.items() if k not in _STRUCTURAL}
    return ModelFiles(manifest, skeleton, codec, stages, info)


def _check_arrays(stages, channels: int, side: int) -> None:
    """Each stage checks that what it loaded fits the model (``Stage.check_fits``)."""
    for t, stage in enumerate(stages, 1):
        check = getattr(stage, "check_fits", None)
        if check is not None:
            try:
                check(channels, side)
            except PoseMachinesError as exc:
                raise PoseMachinesError(f"stage {t}: {exc}") from None


def _check_structure(folder: Path, manifest: dict) -> None:
    """The manifest fields loading relies on, with the types it relies on."""
    expect = {"backend": str, "skeleton": str, "stages": list, "sha256": dict}
    for key, kind in expect.items():
        if not isinstance(manifest.get(key), kind):
            raise PoseMachinesError(
                f"{folder / MANIFEST}: field {key!r} is missing or not a {_type_name(kind)}"
            )
    if not isinstance(manifest.get("networks", {}), dict):
        raise PoseMachinesError(f"{folder / MANIFEST}: field 'networks' is not an object")
    for entry in manifest["stages"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kind"), str):
            raise PoseMachinesError(f"{folder / MANIFEST}: every stage needs a 'kind'")
        if not isinstance(entry.get("config", {}), dict):
            raise PoseMachinesError(f"{folder / MANIFEST}: a stage's 'config' is not an object")
        for key in [k for k in entry if _is_file_field(k)] + ["network"]:
            if not isinstance(entry.get(key, ""), str):
                raise PoseMachinesError(f"{folder / MANIFEST}: a stage's {key!r} is not a name")
    for entry in manifest.get("networks", {}).values():
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise PoseMachinesError(f"{folder / MANIFEST}: a network entry has no 'config'")
        if not isinstance(entry.get("file"), str):
            raise PoseMachinesError(f"{folder / MANIFEST}: a network entry has no 'file'")
    named = [e[key] for e in manifest["stages"] for key in e if _is_file_field(key)]
    named += [e["file"] for e in manifest.get("networks", {}).values()]
    for name in [n for n in named if n] + list(manifest["sha256"]):
        _check_contained(folder, name)


def _check_contained(folder: Path, name) -> None:
    """A manifest may name only regular files directly inside its own folder: no path, no
    link, nothing else, checked before any weight file is opened."""
    import os
    import stat

    if not plain_name(name):
        raise PoseMachinesError(
            f"{folder / MANIFEST}: names {name!r}; a model's files must be plain names inside "
            "its own folder"
        )
    try:
        mode = os.lstat(folder / name).st_mode
    except FileNotFoundError:
        return  # reported as missing where it is needed
    except OSError as exc:
        raise PoseMachinesError(f"{folder / name}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise PoseMachinesError(
            f"{folder / name}: not a regular file (a link, folder or device); a model's files "
            "must be plain files inside its own folder"
        )


def _type_name(kind) -> str:
    return {str: "string", list: "list", dict: "object"}[kind]


# Fields the loader rebuilds from; everything else in a manifest is carried as ``info``.
_STRUCTURAL = {
    "saved_at",
    "skeleton_definition",
    "format",
    "format_version",
    "backend",
    "skeleton",
    "joints",
    "codec",
    "input_size",
    "stride",
    "sigma",
    "num_stages",
    "stages",
    "networks",
    "sha256",
    "training",
    "versions",
}
