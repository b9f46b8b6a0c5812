"""`pm inspect`: what a model directory holds."""

from __future__ import annotations

import json

import click
from posemachines.cli.common import MODEL, friendly_errors


@click.command()
@click.argument("model", type=MODEL)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--erf",
    type=click.Path(dir_okay=False),
    default=None,
    help="[cnn] Also draw each stage's effective receptive field (the input gradient of the "
    "centre cell) into this PNG.",
)
@friendly_errors
def inspect(model, as_json, erf):
    """Stages, receptive fields, parameters, FLOPs, training record and scores of MODEL."""
    from posemachines.evaluation.inspection import (
        describe,
        draw_effective_receptive_fields,
        format_description,
    )

    doc = describe(model)
    if erf:
        doc["effective_receptive_field_r95_px"] = [
            round(r, 1) for r in draw_effective_receptive_fields(model, erf)
        ]
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(format_description(doc))
    if erf:
        radii = ", ".join(f"{r:.0f}" for r in doc["effective_receptive_field_r95_px"])
        click.echo(f"effective receptive field (radius holding 95 %): {radii} px; drawn in {erf}")
