"""`pm models`: the trained models shipped in the package (the zoo)."""

from __future__ import annotations

import json

import click
from posemachines.cli.common import friendly_errors


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list instead of a table.")
@friendly_errors
def models(as_json):
    """The models shipped with posemachines: name, backend, joints, size, LSP test PCK@0.2,
    ms per image (on the machine that made it) and the command that made it. A name goes
    wherever a model directory does (pm predict NAME photo.jpg, pm evaluate NAME, ...)."""
    from posemachines.zoo import table

    rows = table()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no models are shipped in this installation")
        return
    click.echo(
        f"{'name':14s} {'backend':8s} {'joints':10s} {'MB':>5s} {'LSP PCK':>8s} {'ms/img':>7s}"
    )
    for r in rows:
        pck = "-" if r["lsp_test_pck@0.2"] is None else f"{100 * r['lsp_test_pck@0.2']:.1f}"
        ms = (r["ms_per_image"] or {}).get("torch")
        ms_text = "-" if ms is None else f"{ms:.1f}"
        joints = f"{r['skeleton']}:{r['joints']}"
        click.echo(
            f"{r['name']:14s} {r['backend']:8s} {joints:10s} {r['size_mb']:5.1f} {pck:>8s} "
            f"{ms_text:>7s}\n  {r['summary']}\n  made by: {r['command']}"
        )
