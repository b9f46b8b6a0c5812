"""The FastAPI application of ``pm serve``: the page at ``/``, ``POST /v1/predict``,
``GET /v1/model``, ``GET /healthz`` and FastAPI's OpenAPI page (``/docs``).

No path in a request reaches the file system: the model is loaded once, before the server
starts, and the only files served are the page's own two, by name.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from posemachines.core.model import PoseModel
from posemachines.core.tta import NO_TTA
from posemachines.inference import one_person_each
from posemachines.people.multiperson import make_sample, poses_for_boxes, square_box
from posemachines.serve.batching import Batcher, Busy
from posemachines.serve.uploads import MAX_BYTES, MAX_PIXELS, BadUpload, decode_upload, read_upload

log = logging.getLogger("posemachines.serve")


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS
    timeout: float = 10.0  # seconds a request may wait and run
    max_batch: int = 8
    max_wait: float = 0.005  # seconds the first request of a batch waits for others
    queue: int = 32
    decoders: int = 2  # threads decoding uploads (off the event loop), so at most this many


def person_json(person, model: PoseModel, stages: bool) -> dict:
    joints = np.concatenate([person.keypoints[-1], person.confidence[-1][:, None]], 1)
    out = {
        "box": [round(float(v), 1) for v in person.box],
        "box_score": round(float(person.box_score), 4),
        "score": round(float(person.score), 4),
        "keypoints": np.round(joints, 3).tolist(),
    }
    if stages:
        every = np.concatenate([person.keypoints, person.confidence[..., None]], 2)
        out["stages"] = np.round(every, 3).tolist()
    return out


def beliefs_json(model: PoseModel, image: np.ndarray, person, whole_image: bool) -> dict:
    """Every stage's belief maps over the person's square crop (those its keypoints were
    decoded from), for drawing over the image: the crop's square in image pixels and, per
    stage, one g x g map per joint."""
    box = None if whole_image else person.box
    x, y, side, _ = square_box(make_sample("", image, model.skeleton.num_joints, box=box))
    p = model.skeleton.num_joints
    return {
        "square": [round(float(x), 1), round(float(y), 1), round(float(side), 1)],
        "grid": int(person.beliefs[0].shape[-1]),
        "stages": [np.round(np.clip(m[:p], 0, 1), 2).tolist() for m in person.beliefs],
    }


def predictor(model: PoseModel, finder=None):
    """``predict(items)`` for the batcher: items are (image, stages, beliefs) and each
    result the JSON of its image's people."""

    def predict(items: list) -> list[dict]:
        images = [image for image, _, _ in items]
        keep = any(beliefs for _, _, beliefs in items)
        start = time.perf_counter()
        if finder is not None:
            keys = [(k,) for k in range(len(images))]
            found = finder.find(images, keys)
            people = poses_for_boxes(model, images, found, tta=NO_TTA, keep_beliefs=keep)
        else:
            batch = [(None, "", im) for im in images]
            people = one_person_each(model, batch, None, None, NO_TTA, keep_beliefs=keep)
        ms = (time.perf_counter() - start) * 1000
        out = []
        for (image, stages, beliefs), found in zip(items, people):
            doc = {
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "people": [person_json(p, model, stages) for p in found],
                "batch": len(items),
                "model_ms": round(ms, 1),
            }
            if beliefs:
                doc["beliefs"] = [beliefs_json(model, image, p, finder is None) for p in found]
            out.append(doc)
        return out

    return predict


def model_json(model: PoseModel, people_model=None) -> dict:
    skeleton = model.skeleton
    return {
        "backend": model.backend,
        "skeleton": skeleton.to_dict(),
        "limbs": [list(pair) for pair in skeleton.limb_indices()],
        "stages": model.num_stages,
        "input_size": model.input_size,
        "training": model.record.to_dict(),
        "evaluations": model.info.get("evaluations", {}),
        "people_model": None if people_model is None else people_model.record.to_dict(),
    }


def error(status: int, message: str, headers=None) -> JSONResponse:
    """Every error the server answers: ``{"error": message}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def errors_as_json(app: FastAPI) -> None:
    """FastAPI's own errors (a query that does not validate, an unknown path) in the same
    ``{"error": ...}`` shape as the server's."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return error(422, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


def application(batcher: Batcher, decoding: ThreadPoolExecutor, cors, docs: bool) -> FastAPI:
    """The FastAPI app whose life starts and stops the batcher and the decoding threads."""

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()
        decoding.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="posemachines",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
    )
    app.state.batcher = batcher
    if cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(cors), allow_methods=["*"], allow_headers=["*"]
        )
    errors_as_json(app)
    return app


def create_app(
    model: PoseModel, people_model=None, *, limits=Limits(), token=None, cors=None, docs=False
):
    """The application around a loaded ``model`` (and ``people_model``, a PeopleModel);
    ``docs``: FastAPI's interactive page at /docs (its scripts come from a CDN, so it is off
    unless asked; the schema is always at /openapi.json)."""
    from posemachines.people.multiperson import PeopleFinder

    finder = None if people_model is None else PeopleFinder(people_model, 0.3)
    batcher = Batcher(predictor(model, finder), limits.max_batch, limits.max_wait, limits.queue)
    decoding = ThreadPoolExecutor(limits.decoders, thread_name_prefix="pm-decode")

    app = application(batcher, decoding, cors, docs)

    def refused(request: Request) -> JSONResponse | None:
        if token is None:
            return None
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return error(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        return None

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return (resources.files(__package__) / "static" / "index.html").read_text()

    @app.get("/static/app.js", include_in_schema=False)
    def script():
        text = (resources.files(__package__) / "static" / "app.js").read_text()
        return Response(text, media_type="text/javascript")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "queued": batcher.queue.qsize()}

    @app.get("/v1/model")
    def describe(request: Request):
        return refused(request) or model_json(model, people_model)

    @app.post("/v1/predict")
    async def predict(request: Request, stages: bool = False, beliefs: bool = False):
        """An image as the body (image/*) or as the multipart field ``image``: every
        person's joints ([x, y, confidence] in image pixels), box and score; ``stages``
        adds every stage's joints, ``beliefs`` every stage's belief maps."""
        denied = refused(request)
        if denied is not None:
            return denied
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            data = await read_upload(request.headers, request.stream(), limits.max_bytes)
            image = await loop.run_in_executor(decoding, decode_upload, data, limits.max_pixels)
            del data
            doc = await asyncio.wait_for(
                batcher.submit((image, stages, beliefs)), timeout=limits.timeout
            )
        except BadUpload as exc:
            return error(exc.status, exc.message)
        except ClientDisconnect:
            log.info("a client went away before its upload was read")
            return Response(status_code=400)
        except Busy:
            return error(503, "the server is busy; try again shortly", {"Retry-After": "1"})
        except asyncio.TimeoutError:
            return error(504, f"the prediction took longer than {limits.timeout:g} s")
        return {**doc, "latency_ms": round((time.perf_counter() - start) * 1000, 1)}

    return app
