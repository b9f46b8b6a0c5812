"""`pm serve`: the page and the HTTP API around a model."""

from __future__ import annotations

import click

from posemachines.errors import PoseMachinesError

from .common import device_name, device_option, echo_err, friendly_errors, runtime_option

LOCAL = ("127.0.0.1", "localhost", "::1")


@click.command()
@click.argument("model", type=click.Path(exists=True))
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
    help="Require 'Authorization: Bearer TOKEN' for the API (else $POSEMACHINES_TOKEN).",
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
@device_option
@runtime_option
@friendly_errors
def serve(model, people, host, port, token, cors, max_batch, max_wait_ms, queue, max_bytes,
          max_pixels, timeout, device, runtime):  # fmt: skip
    """Serve MODEL (a model directory or an .onnx): a page at / (an image or the webcam,
    the skeletons stage by stage, the belief maps) and an API (POST /v1/predict, GET
    /v1/model, GET /healthz, the OpenAPI page at /docs). Needs posemachines[serve]."""
    try:
        import uvicorn

        from posemachines.serve.app import Limits, create_app
    except ImportError:
        raise PoseMachinesError(
            "pm serve needs FastAPI: pip install 'posemachines[serve]'"
        ) from None
    from posemachines.runtimes import load_pose_model

    dev = device_name(device)
    pose_model = load_pose_model(model, dev, runtime)
    people_model = None
    if people:
        from posemachines.backends.people.model import load_people_model

        people_model = load_people_model(people, dev)
    if host not in LOCAL and not token:
        echo_err(f"warning: listening on {host} without --token: anyone who reaches it may use it")
    limits = Limits(max_bytes, max_pixels, timeout, max_batch, max_wait_ms / 1000, queue)
    app = create_app(pose_model, people_model, limits=limits, token=token, cors=cors)
    click.echo(f"serving {model} on http://{host}:{port}/ (Ctrl+C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
