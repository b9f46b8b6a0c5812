"""Exporting a model as ``pm export`` does: one ONNX file, float32 or int8 (calibrated on the
model's training data, with the accuracy change measured)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from posemachines.api.scoring import dataset_of
from posemachines.data import DataRequest


@dataclass(frozen=True)
class Exported:
    """The file written, its size, and for int8 the line saying what it cost in accuracy."""

    path: Path
    megabytes: float
    int8_change: str | None = None


def export(
    model: str | Path,
    out: str | Path | None = None,
    *,
    int8: bool = False,
    calibration: int = 64,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    overwrite: bool = False,
) -> Exported:
    """``model`` (a directory or zoo name of CNN stages) as one ONNX file at ``out`` (default
    ``default_out``); ``int8`` calibrates on ``calibration`` training crops of ``dataset``
    (default: the model's own) and measures both files on its test split. An existing file is
    replaced only when ``overwrite`` and written by posemachines."""
    from posemachines.loading import load_model
    from posemachines.onnx.export import export_onnx

    pose_model = load_model(model)
    out = Path(out or default_out(model))
    calibrate, name = None, None
    if int8:
        name = dataset_of([pose_model], dataset)
        calibrate = (DataRequest(name, "train", data_root).load(), calibration)
    how = "pass --overwrite to replace it, or choose another --out"
    export_onnx(pose_model, out, int8=int8, calibration=calibrate, overwrite=overwrite, hint=how)
    change = int8_change(model, out, name, data_root) if int8 else None
    return Exported(out, out.stat().st_size / 1e6, change)


def int8_change(model, out: Path, name: str, data_root) -> str:
    """PCK@0.2 of the float32 and the int8 model on the test split, as one line."""
    from posemachines.api.scoring import evaluate
    from posemachines.data import dataset_splits
    from posemachines.loading import load_pose_model

    split = "test" if "test" in dataset_splits(name, data_root) else "val"
    test = DataRequest(name, split, data_root).load()
    scores = []
    for path in (model, out):
        scores.append(
            evaluate(load_pose_model(path, runtime="onnxruntime"), test).metrics["pck@0.2"]
        )
    # The difference of the figures shown, so that the line adds up as a reader checks it.
    fp32, int8 = (round(100 * s, 1) for s in scores)
    change = f"{int8 - fp32:+.1f} points"
    return f"PCK@0.2 on {name}:{split}: float32 {fp32:.1f}, int8 {int8:.1f} ({change})"


def default_out(model: str | Path) -> Path:
    """MODEL.onnx beside the model directory; for a zoo model, NAME.onnx here (nothing is
    written into the package)."""
    from posemachines.zoo import is_zoo_path, resolve

    path = Path(model)
    if not path.exists():
        path = resolve(str(model))[0]
    return Path(path.name + ".onnx") if is_zoo_path(path) else path.with_suffix(".onnx")
