"""pm serve: the API (good and bad requests, tokens, batching, a full queue) and the page in
a browser with Chromium's fake camera."""

import asyncio
import io
import json
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from posemachines.loading import load_model  # noqa: E402
from posemachines.serve.app import Limits, create_app  # noqa: E402

EXAMPLES = Path(__file__).parent.parent / "examples"


def jpeg(size=(96, 128)) -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    image = rng.integers(0, 255, (*size, 3)).astype(np.uint8)
    Image.fromarray(image).save(buffer, format="JPEG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header says width x height (its pixels are never there)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def model(forest_model_dir):
    return load_model(forest_model_dir)


@pytest.fixture()
def client(model):
    app = create_app(model, limits=Limits(max_bytes=200_000), token="s3cret")
    with TestClient(app) as c:
        yield c


AUTH = {"Authorization": "Bearer s3cret"}

BAD_REQUESTS = [
    ("0 bytes", b"", "image/jpeg", AUTH, 400, "empty"),
    ("not an image", b"hello, world", "image/png", AUTH, 400, "not an image"),
    ("a truncated JPEG", jpeg()[:4000], "image/jpeg", AUTH, 400, "truncated"),
    ("a 20,000 x 20,000 PNG", png_claiming(20_000, 20_000), "image/png", AUTH, 413, "pixels"),
    ("a body over the limit", b"\xff" * 300_000, "image/jpeg", AUTH, 413, "over the limit"),
    ("a wrong content type", jpeg(), "text/plain", AUTH, 415, "send an image"),
    ("no token", jpeg(), "image/jpeg", {}, 401, "bearer token"),
    ("a wrong token", jpeg(), "image/jpeg", {"Authorization": "Bearer nope"}, 401, "token"),
]


@pytest.mark.parametrize(
    "what, body, kind, auth, status, says", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_a_bad_request_is_a_json_error_and_the_next_is_answered(
    client, what, body, kind, auth, status, says
):
    bad = client.post("/v1/predict", content=body, headers={"Content-Type": kind, **auth})
    assert bad.status_code == status, bad.text
    assert says in bad.json()["error"]
    good = client.post(
        "/v1/predict", content=jpeg(), headers={"Content-Type": "image/jpeg", **AUTH}
    )
    assert good.status_code == 200 and len(good.json()["people"]) == 1


def test_predict_model_health_and_openapi(client, model):
    upload = {"image": ("photo.jpg", jpeg(), "image/jpeg")}
    doc = client.post("/v1/predict?stages=true&beliefs=true", files=upload, headers=AUTH).json()
    person = doc["people"][0]
    assert len(person["keypoints"]) == 14 and len(person["keypoints"][0]) == 3
    assert len(person["stages"]) == model.num_stages == 2
    assert doc["width"] == 128 and doc["height"] == 96 and doc["latency_ms"] > 0
    beliefs = doc["beliefs"][0]
    assert len(beliefs["stages"]) == 2 and len(beliefs["stages"][0]) == 14
    assert np.array(beliefs["stages"][1]).shape == (14, beliefs["grid"], beliefs["grid"])
    # the beliefs its keypoints were decoded from, not another run of the model
    from posemachines.core.crops import person_crop
    from posemachines.data import read_image
    from posemachines.people.multiperson import make_sample

    sample = make_sample("", read_image(jpeg()), 14)
    crop = person_crop(sample, model.input_size, model.skeleton)
    own = model.stage_beliefs(crop.image[None])[1][0, :14]
    assert np.abs(np.array(beliefs["stages"][1]) - np.clip(own, 0, 1)).max() <= 0.006
    described = client.get("/v1/model", headers=AUTH).json()
    assert described["stages"] == 2 and described["skeleton"]["name"] == "lsp14"
    assert client.get("/v1/model").status_code == 401
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text
    script = client.get("/static/app.js").text
    assert "getUserMedia" in script and "https://" not in script  # nothing from a CDN
    assert client.get("/static/../manifest.json").status_code == 404


class BoxesOfTheGroup:
    """A people model that finds the committed group photo's people."""

    def __init__(self):
        from posemachines.core.model import TrainingRecord

        self.record = TrainingRecord(dataset="the group photo's boxes")
        self.boxes = np.array(json.loads((EXAMPLES / "group_boxes.json").read_text())["group.jpg"])

    def detect(self, images, min_score=0.0):
        return [self.boxes for _ in images]


def test_every_person_with_a_people_model(model):
    app = create_app(model, BoxesOfTheGroup())
    with TestClient(app) as client:
        body = (EXAMPLES / "images" / "group.jpg").read_bytes()
        doc = client.post(
            "/v1/predict", content=body, headers={"Content-Type": "image/jpeg"}
        ).json()
    assert len(doc["people"]) == 4
    assert all(0 < p["score"] <= 1 and len(p["box"]) == 4 for p in doc["people"])


def test_requests_together_are_one_batch_and_a_full_queue_is_503(model):
    import httpx

    async def scenario(limits, n, slow):
        app = create_app(model, limits=limits)
        batcher = app.state.batcher
        if slow:
            predict = batcher.predict

            def slowly(items):
                time.sleep(0.3)
                return predict(items)

            batcher.predict = slowly
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                send = lambda: client.post(  # noqa: E731
                    "/v1/predict", content=jpeg(), headers={"Content-Type": "image/jpeg"}
                )
                answers = await asyncio.gather(*(send() for _ in range(n)))
                after = await send()
        return answers, after, batcher.batches

    answers, _, batches = asyncio.run(scenario(Limits(max_batch=8, max_wait=0.05), 8, False))
    assert all(a.status_code == 200 for a in answers) and max(batches) > 1
    assert max(a.json()["batch"] for a in answers) == max(batches)
    limits = Limits(max_batch=1, max_wait=0.0, queue=2)
    answers, after, _ = asyncio.run(scenario(limits, 12, True))
    busy = [a for a in answers if a.status_code == 503]
    assert busy and all(a.headers["Retry-After"] == "1" for a in busy)
    assert {a.status_code for a in answers} == {200, 503}
    assert after.status_code == 200  # and the server goes on


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_in_a_browser_with_a_fake_camera(model, tmp_path):
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        pytest.skip("Chromium is not installed (CI installs it; the page test needs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=browser_path,
                args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
            )
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('stage').options.length === 2")
            page.click("#camera")
            page.wait_for_function("window.pmFramesDrawn >= 10", timeout=60_000)
            last = page.evaluate("window.pmDrawn")
            assert last["stage"] == 1 and len(last["people"]) == 1
            page.click("#camera")  # stop: the last frame stays
            page.wait_for_timeout(500)
            before = page.evaluate("window.pmDrawn")
            page.select_option("#stage", "0")
            after = page.evaluate("window.pmDrawn")
            assert after["stage"] == 0 and after["people"] != before["people"]
            page.set_input_files("#file", str(EXAMPLES / "images" / "figure1.jpg"))
            page.wait_for_function("window.pmDrawn && window.pmDrawn.people.length === 1")
            assert "error" not in page.inner_text("#error").lower()
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
