"""Serving a model over HTTP as ``pm serve`` does: the models loaded, the app made, uvicorn run."""

from __future__ import annotations

from pathlib import Path

from posemachines.errors import PoseMachinesError
from posemachines.progress import note

LOCAL = ("127.0.0.1", "localhost", "::1")


def serving_app(
    model: str | Path,
    *,
    people: str | Path | None = None,
    device: str = "cpu",
    runtime: str = "torch",
    limits: dict | None = None,
    token: str | None = None,
    cors=None,
    docs: bool = False,
):
    """The FastAPI app of ``model`` (a directory, ``.onnx`` or zoo name) and of a people
    model (``people``: every person of an image); see ``serve.app.create_app``."""
    try:
        from posemachines.serve.app import Limits, create_app
    except ImportError:
        raise PoseMachinesError(
            "serving needs FastAPI: pip install 'posemachines[serve]'"
        ) from None
    from posemachines.loading import load_pose_model

    pose_model = load_pose_model(model, device, runtime)
    people_model = None
    if people:
        from posemachines.backends.people.model import load_people_model

        people_model = load_people_model(people, device)
    limits = Limits(**(limits or {}))
    return create_app(pose_model, people_model, limits=limits, token=token, cors=cors, docs=docs)


def serve(app, host: str = "127.0.0.1", port: int = 8000, *, token: str | None = None) -> None:
    """Run ``app`` (``serving_app``) until interrupted; a note when it listens beyond this
    machine without a token."""
    import uvicorn

    if host not in LOCAL and not token:
        note(f"warning: listening on {host} without a token: anyone who reaches it may use it")
    uvicorn.run(app, host=host, port=port, log_level="warning")
