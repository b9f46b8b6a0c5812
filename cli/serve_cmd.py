"""`pm serve`: the page and the HTTP API around a model."""

from __future__ import annotations

import click
from posemachines.cli.common import (
    MODEL,
    default_cnn,
    device_name,
    device_option,
    echo_err,
    friendly_errors,
    runtime_option,
)

from posemachines.errors import PoseMachinesError

LOCAL = ("127.0.0.1", "localhost", "::1")


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
    try:
        import uvicorn

        from posemachines.serve.app import Limits, create_app
    except ImportError:
        raise PoseMachinesError(
            "pm serve needs FastAPI: pip install 'posemachines[serve]'"
        ) from None
    from posemachines.loading import load_pose_model

    dev = device_name(device)
    model = model if model is not None else default_cnn("serving")
    pose_model = load_pose_model(model, dev, runtime)
    people_model = None
    if people:
        from posemachines.backends.people.model import load_people_model

        people_model = load_people_model(people, dev)
    if token_file:
        token = read_token(token_file)
    if host not in LOCAL and not token:
        echo_err(f"warning: listening on {host} without --token: anyone who reaches it may use it")
    limits = Limits(max_bytes, max_pixels, timeout, max_batch, max_wait_ms / 1000, queue)
    app = create_app(pose_model, people_model, limits=limits, token=token, cors=cors, docs=docs)
    click.echo(f"serving {model} on {address(host, port)} (Ctrl+C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


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
