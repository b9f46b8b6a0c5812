"""`pm export`: a CNN model as an ONNX file (float32 or int8)."""

from __future__ import annotations

import click
from posemachines.cli.common import MODEL, friendly_errors, overwrite_option


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
def export(model, format_, **options):
    """Write MODEL (CNN stages only: a CNN or a stack of CNN parts) as one ONNX file: the crop
    in (float32 RGB 0-255, N x S x S x 3, any batch), every stage's belief maps out (stage1..),
    opset 18, checked by onnx.checker, with the skeleton, codec, crop protocol, training record
    and scores in its metadata. The file runs anywhere ONNX Runtime does, and wherever pm takes
    a model directory."""
    from posemachines.api.exporting import export as export_model

    done = export_model(model, **options)
    click.echo(f"{done.path} written ({done.megabytes:.1f} MB)")
    if done.int8_change:
        click.echo(done.int8_change)
