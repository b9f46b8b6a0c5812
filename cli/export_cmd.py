"""`pm export`: a CNN model as an ONNX file (float32 or int8)."""

from __future__ import annotations

import click
from posemachines.cli.common import MODEL, friendly_errors, load_data, overwrite_option

from posemachines.errors import PoseMachinesError


@click.command()
@click.argument("model", type=MODEL)
@click.option("--format", "format_", type=click.Choice(["onnx"]), default="onnx", show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="The file to write (default: MODEL.onnx beside the model directory).",
)
@click.option(
    "--int8",
    is_flag=True,
    help="Quantise weights and activations to int8 (ONNX Runtime's static quantisation), "
    "calibrated on crops of the model's training data; prints the accuracy change.",
)
@click.option(
    "--calibration",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Number of training crops to calibrate --int8 on.",
)
@click.option("--dataset", default=None, help="Calibrate on this dataset (default: the model's).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None)
@overwrite_option
@friendly_errors
def export(model, format_, out, int8, calibration, dataset, data_root, overwrite):
    """Write MODEL (CNN stages only: a CNN or a stack of CNN parts) as one ONNX file: the crop
    in (float32 RGB 0-255, N x S x S x 3, any batch), every stage's belief maps out (stage1..),
    opset 18, checked by onnx.checker, with the skeleton, codec, crop protocol, training record
    and scores in its metadata. The file runs anywhere ONNX Runtime does, and wherever pm takes
    a model directory."""
    from pathlib import Path

    from posemachines.loading import load_model
    from posemachines.onnx.export import export_onnx

    pose_model = load_model(model)
    out = Path(out or default_out(model))
    calibrate = None
    name = dataset or pose_model.record.dataset_name or "synthetic"
    if int8:
        if name == "packed":
            raise PoseMachinesError("this model was trained from a packed cache: pass --dataset")
        train = load_data(name, "train", data_root, None, None)
        calibrate = (train, calibration)
    export_onnx(
        pose_model,
        out,
        int8=int8,
        calibration=calibrate,
        overwrite=overwrite,
        hint="pass --overwrite to replace it, or choose another --out",
    )
    click.echo(f"{out} written ({out.stat().st_size / 1e6:.1f} MB)")
    if int8:
        click.echo(int8_change(model, out, name, data_root))


def int8_change(model, out, name: str, data_root) -> str:
    """PCK@0.2 of the float32 and the int8 model on the test split, as one line."""
    from posemachines.api import evaluate
    from posemachines.data import dataset_splits
    from posemachines.loading import load_pose_model

    split = "test" if "test" in dataset_splits(name, data_root) else "val"
    test = load_data(name, split, data_root, None, None)
    scores = []
    for path, runtime in ((model, "onnxruntime"), (out, "onnxruntime")):
        scores.append(evaluate(load_pose_model(path, runtime=runtime), test).metrics["pck@0.2"])
    # The difference of the figures shown, so that the line adds up as a reader checks it.
    fp32, int8 = (round(100 * s, 1) for s in scores)
    change = f"{int8 - fp32:+.1f} points"
    return f"PCK@0.2 on {name}:{split}: float32 {fp32:.1f}, int8 {int8:.1f} ({change})"


def default_out(model: str):
    """MODEL.onnx beside the model directory; for a zoo model, NAME.onnx here (nothing is
    written into the package)."""
    from pathlib import Path

    from posemachines.zoo import is_zoo_path

    path = Path(model)
    return Path(path.name + ".onnx") if is_zoo_path(path) else path.with_suffix(".onnx")
