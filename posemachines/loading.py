"""Which runtime runs a pose model: torch (the model directory's own stages) or ONNX Runtime
(an exported ``.onnx`` file, or a model directory exported on the fly)."""

from __future__ import annotations

from pathlib import Path

from posemachines.core.model import PoseModel, load_model_directory
from posemachines.errors import PoseMachinesError

RUNTIMES = ("torch", "onnxruntime")


def is_onnx_file(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix.lower() == ".onnx" and not path.is_dir()


def load_pose_model(path: str | Path, device: str = "cpu", runtime: str = "torch") -> PoseModel:
    """A model directory or an exported ``.onnx`` file, run by ``runtime``: "torch" (a
    directory's own stages; an ``.onnx`` file always runs in ONNX Runtime) or
    "onnxruntime" (a directory's CNN stages exported in memory first)."""
    if runtime not in RUNTIMES:
        raise PoseMachinesError(f"unknown runtime {runtime!r}; use {' or '.join(RUNTIMES)}")
    if is_onnx_file(path):
        from posemachines.onnx.model_file import load_onnx_model

        return load_onnx_model(path, device)
    model = load_model_directory(path, device)
    if runtime == "torch":
        return model
    from posemachines.onnx.export import onnx_file_bytes
    from posemachines.onnx.model_file import onnx_pose_model

    return onnx_pose_model(onnx_file_bytes(model), str(path), device)


def load_model(path: str | Path, device: str = "cpu", runtime: str = "torch") -> PoseModel:
    """``posemachines.load_model``: a model directory or an exported ``.onnx`` file, every
    file checked (see ``load_pose_model`` for ``runtime``)."""
    return load_pose_model(path, device, runtime)
