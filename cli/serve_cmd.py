"""`pm serve`: the page and the HTTP API around a model."""

from __future__ import annotations

import click
from posemachines.cli.common import (
    MODEL,
    default_cnn,
    device_name,
    device_option,
    friendly_errors,
    runtime_option,
)

from posemachines.errors import PoseMachinesError


@click.command()
@click.argument("model", type=MODEL, required=False)
@click.option(
    "--people",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="A people model: every person of an image (else one person per image).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (127.0.0.1: this machine only).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="POSEMACHINES_TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' for the API. Better from the environment "
    "($POSEMACHINES_TOKEN) or --token-file: a command line is visible to every user in ps.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read the bearer token from this file (its first line).",
)
@click.option(
    "--cors",
    multiple=True,
    metavar="ORIGIN",
    help="Allow browser pages from ORIGIN to call the API (none by default).",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Requests predicted together at most.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="How long the first request of a batch waits for others.",
)
@click.option(
    "--queue",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Requests waiting at most; more are answered 503 with Retry-After.",
)
@click.option("--max-bytes", type=click.IntRange(min=1), default=10_000_000, show_default=True)
@click.option("--max-pixels", type=click.IntRange(min=1), default=40_000_000, show_default=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a request may wait and run before a 504.",
)
@click.option(
    "--docs",
    is_flag=True,
    help="Serve FastAPI's interactive page at /docs (it loads its scripts from a CDN, so it "
    "needs the internet; the schema is always at /openapi.json).",
)
@device_option
@runtime_option
@friendly_errors
def serve(model, people, host, port, token, token_file, cors, max_batch, max_wait_ms, queue,
          max_bytes, max_pixels, timeout, docs, device, runtime):  # fmt: skip
    """Serve MODEL (a model directory, an .onnx or a zoo name; the zoo's default CNN when none
    is given): a page at / (an image or the webcam,
    the skeletons stage by stage, the belief maps) and an API (POST /v1/predict, GET
    /v1/model, GET /healthz, the OpenAPI page at /docs). Needs posemachines[serve]."""
    from posemachines.api.serving import serve as run
    from posemachines.api.serving import serving_app

    model = model if model is not None else default_cnn("serving")
    if token_file:
        token = read_token(token_file)
    limits = dict(max_bytes=max_bytes, max_pixels=max_pixels, timeout=timeout, queue=queue)
    limits.update(max_batch=max_batch, max_wait=max_wait_ms / 1000)
    how = dict(device=device_name(device), runtime=runtime, limits=limits, token=token)
    app = serving_app(model, people=people, cors=cors, docs=docs, **how)
    click.echo(f"serving {model} on {address(host, port)} (Ctrl+C stops)")
    run(app, host, port, token=token)


def address(host: str, port: int) -> str:
    """The URL of ``host``:``port``, an IPv6 address in brackets."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def read_token(path: str) -> str:
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PoseMachinesError(f"--token-file {path}: cannot read it ({exc})") from None
    token = lines[0].strip() if lines else ""
    if not token:
        raise PoseMachinesError(f"--token-file {path}: the file is empty")
    return token
