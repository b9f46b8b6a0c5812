"""Bounded and unambiguous: limits that count what was read however a request is framed, one
image decoder for every way in, outputs claimed only by record, integrity over a whole
exported file, OKS-NMS that scales, and annotation ids that cannot repeat."""

import asyncio
import io
import json
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_pm
from PIL import Image

from posemachines.data import read_image
from posemachines.loading import load_model

EXAMPLES = Path(__file__).parent.parent / "examples"
ROOT = Path(__file__).parent.parent


# -- one image decoder ----------------------------------------------------------------------------


def base_image() -> np.ndarray:
    """A real figure, small: examples/images/figure1.jpg at 96 x 72."""
    with Image.open(EXAMPLES / "images" / "figure1.jpg") as im:
        return np.asarray(im.convert("RGB").resize((72, 96)))


def png16(array: np.ndarray) -> bytes:
    """A 16-bit PNG (grey (H, W) or RGB (H, W, 3) uint16) written by hand: Pillow writes
    neither 16-bit colour nor every 16-bit grey."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    h, w = array.shape[:2]
    colour = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    header = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def odd_images(folder: Path) -> dict[str, np.ndarray]:
    """Files of every awkward kind, and the pixels each must decode to (None: not checked
    pixel for pixel, a lossy or reduced form)."""
    rgb = base_image()
    grey = rgb.mean(2).astype(np.uint16) * 257
    folder.mkdir(parents=True, exist_ok=True)
    expect = {}
    (folder / "grey16.png").write_bytes(png16(grey))
    expect["grey16.png"] = np.repeat((grey // 257).astype(np.uint8)[..., None], 3, 2)
    (folder / "colour16.png").write_bytes(png16(rgb.astype(np.uint16) * 257))
    expect["colour16.png"] = rgb
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1))).save(
        folder / "rotated.jpg", exif=exif, quality=95
    )
    expect["rotated.jpg"] = None
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    expect["cmyk.jpg"] = None
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    expect["palette.png"] = np.asarray(Image.fromarray(rgb).convert("P").convert("RGB"))
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 128, np.uint8)], 2)
    Image.fromarray(rgba).save(folder / "alpha.png")
    expect["alpha.png"] = rgb
    Image.fromarray(rgb).save(folder / "anim.gif")
    expect["anim.gif"] = None
    Image.fromarray(rgb).save(folder / "lossless.webp", lossless=True)
    expect["lossless.webp"] = rgb
    Image.fromarray(rgb).save(folder / "plain.tiff")
    expect["plain.tiff"] = rgb
    return expect


def test_odd_images_decode_as_they_are_meant_to_be_seen(tmp_path):
    expect = odd_images(tmp_path)
    for name, pixels in expect.items():
        image = read_image(tmp_path / name)
        assert image.dtype == np.uint8 and image.shape == (96, 72, 3), name
        assert np.array_equal(image, read_image((tmp_path / name).read_bytes())), name
        if pixels is not None:
            assert np.abs(image.astype(int) - pixels).max() <= 1, name
    assert read_image(tmp_path / "grey16.png").mean() < 250  # it was all white once
    upright = read_image(tmp_path / "rotated.jpg").astype(int)
    assert np.abs(upright - base_image()).mean() < 8  # turned back by its EXIF orientation


def test_every_way_in_gives_the_same_keypoints(forest_model_dir, tmp_path):
    """predict, evaluate, serve and the Python API on one table of odd images."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from posemachines.serve.app import create_app

    folder = tmp_path / "odd"
    names = sorted(odd_images(folder))
    model = load_model(forest_model_dir)
    api = model.predict([folder / n for n in names]).keypoints[-1]

    run_pm("predict", forest_model_dir, folder, "--out", tmp_path / "pred", "--no-overlays")
    results = json.loads((tmp_path / "pred" / "keypoints.json").read_text())["results"]
    by_cli = {r["image_id"]: np.array(r["keypoints"]).reshape(-1, 3)[:, :2] for r in results}

    images = [{"id": k, "file_name": n, "width": 72, "height": 96} for k, n in enumerate(names)]
    people = [
        {"id": k, "image_id": k, "category_id": 1, "bbox": [0, 0, 72, 96], "area": 72 * 96,
         "keypoints": [30, 40, 2] * 14, "num_keypoints": 14}
        for k in range(len(names))
    ]  # fmt: skip
    category = {"id": 1, "name": "person", "keypoints": list(model.skeleton.joints),
                "skeleton": [[1, 2]]}  # fmt: skip
    coco = tmp_path / "odd.json"
    coco.write_text(json.dumps({"images": images, "annotations": people, "categories": [category]}))
    saved = tmp_path / "saved.json"
    run_pm("evaluate", forest_model_dir, "--dataset", f"coco-format:{coco}", "--images", folder,
           "--protocol", "image", "--save-predictions", saved)  # fmt: skip
    doc = json.loads(saved.read_text())
    by_evaluate = dict(zip(doc["names"], np.array(doc["stages"], float)[-1]))

    with TestClient(create_app(model)) as client:
        by_serve = {}
        for n in names:
            reply = client.post(
                "/v1/predict",
                content=(folder / n).read_bytes(),
                headers={"Content-Type": "application/octet-stream"},
            )
            assert reply.status_code == 200, (n, reply.text)
            by_serve[n] = np.array(reply.json()["people"][0]["keypoints"])[:, :2]

    for k, n in enumerate(names):
        assert np.allclose(by_cli[n], api[k], atol=1e-3), n
        assert np.allclose(by_serve[n], api[k], atol=1e-3), n
        label = next(v for key, v in by_evaluate.items() if key.startswith(n))
        assert np.allclose(label, api[k], atol=1e-3), n


def test_a_pack_reads_images_through_the_one_decoder(tmp_path):
    from posemachines.core.skeletons import get_skeleton
    from posemachines.data.dataset import ImageFolderDataset
    from posemachines.data.pack import pack_crops

    folder = tmp_path / "odd"
    names = sorted(odd_images(folder))
    plain = tmp_path / "plain"
    plain.mkdir()
    for n in names:  # what the decoder gives, stored without any oddity
        Image.fromarray(read_image(folder / n)).save(plain / f"{n}.png")
    skeleton = get_skeleton("lsp14")
    joints = np.full((len(names), 14, 2), 30.0)
    flags = np.ones((len(names), 14), bool)

    def crops(where: Path, files: list[str]):
        data = ImageFolderDataset(
            "odd", where, files, skeleton=skeleton, joints=joints, visible=flags,
            labelled=flags, split="test", protocol="image",
        )  # fmt: skip
        return pack_crops([data], side=48, n_jobs=1).images

    assert np.array_equal(crops(folder, names), crops(plain, [f"{n}.png" for n in names]))


# -- pm serve: limits, errors, the event loop -----------------------------------------------------


@pytest.fixture(scope="module")
def forest(forest_model_dir):
    return load_model(forest_model_dir)


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(base_image()).save(buffer, format="JPEG")
    return buffer.getvalue()


def multipart(data: bytes, boundary: str = "b0undary") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_the_limit_counts_what_was_read_however_the_body_is_framed():
    from posemachines.serve.uploads import BadUpload, read_upload

    pulled = []

    async def chunks(total: int, size: int = 4096):
        body = multipart(b"\xff" * total)
        for start in range(0, len(body), size):
            pulled.append(size)
            yield body[start : start + size]

    async def read(headers, total):
        return await read_upload(headers, chunks(total), 50_000)

    kind = {"content-type": "multipart/form-data; boundary=b0undary"}  # chunked: no length
    with pytest.raises(BadUpload) as refused:
        asyncio.run(read(kind, 10_000_000))
    assert refused.value.status == 413
    assert sum(pulled) <= 50_000 + 4096  # it stopped at the limit, not at the end
    pulled.clear()
    assert asyncio.run(read(kind, 1000)) == b"\xff" * 1000  # the image field alone
    with pytest.raises(BadUpload) as raw:
        asyncio.run(read_upload({"content-type": "image/jpeg"}, chunks(60_000), 50_000))
    assert raw.value.status == 413


def test_a_chunked_upload_over_the_limit_spools_nothing(forest, tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from posemachines.serve.app import Limits, create_app

    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    body = multipart(b"\xff" * 2_000_000)

    def stream():
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    with TestClient(create_app(forest, limits=Limits(max_bytes=100_000))) as client:
        kind = {"Content-Type": "multipart/form-data; boundary=b0undary"}
        refused = client.post("/v1/predict", content=stream(), headers=kind)
        assert refused.status_code == 413 and "over the limit" in refused.json()["error"]
        assert list(spool.iterdir()) == []  # nothing written to disk, not even up to the limit
        good = client.post("/v1/predict", content=multipart(jpeg_bytes()), headers=kind)
        assert good.status_code == 200 and len(good.json()["people"]) == 1


BAD_FRAMES = [
    ("?stages=abc", "/v1/predict?stages=abc", "image/jpeg", 422, "stages"),
    ("no boundary", "/v1/predict", "multipart/form-data", 400, "boundary"),
    ("no image field", "/v1/predict", "multipart/form-data; boundary=zz", 400, "'image'"),
    ("an unknown path", "/v2/nothing", "image/jpeg", 404, "Not Found"),
    ("/docs, off unless asked", "/docs", "image/jpeg", 404, "Not Found"),
]


@pytest.mark.parametrize(
    "what, path, kind, status, says", BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES]
)
def test_every_error_body_is_one_error_field(forest, what, path, kind, status, says):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from posemachines.serve.app import create_app

    body = b'--zz\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--zz--\r\n'
    with TestClient(create_app(forest)) as client:
        send = client.get if path == "/docs" else client.post
        options = {} if path == "/docs" else {"content": body, "headers": {"Content-Type": kind}}
        reply = send(path, **options)
    assert reply.status_code == status, reply.text
    assert list(reply.json()) == ["error"] and says in reply.json()["error"]


def test_decoding_and_prediction_run_off_the_event_loop(forest, monkeypatch):
    pytest.importorskip("fastapi")
    import threading

    from fastapi.testclient import TestClient

    from posemachines.serve import app as serve_app

    threads = []
    decode = serve_app.decode_upload

    def watched(*args):
        threads.append(threading.current_thread().name)
        return decode(*args)

    monkeypatch.setattr(serve_app, "decode_upload", watched)
    with TestClient(serve_app.create_app(forest)) as client:
        reply = client.post(
            "/v1/predict", content=jpeg_bytes(), headers={"Content-Type": "image/jpeg"}
        )
    assert reply.status_code == 200
    assert threads and all(t.startswith("pm-decode") for t in threads)


def test_serve_addresses_and_tokens_from_a_file(tmp_path):
    from posemachines.cli.serve_cmd import address, read_token

    assert address("::1", 8768) == "http://[::1]:8768/"
    assert address("127.0.0.1", 80) == "http://127.0.0.1:80/"
    (tmp_path / "token").write_text("s3cret\n")
    assert read_token(str(tmp_path / "token")) == "s3cret"


# -- outputs claimed only by record ---------------------------------------------------------------


def test_a_keypoints_json_without_a_record_claims_nothing(mean_model_dir, tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    mine = {}
    for name in ("figure1.png", "figure2.png"):
        (out / name).write_bytes(b"my own figure " + name.encode())
        mine[name] = (out / name).read_bytes()
    legacy = {"coordinates": "0-based pixel centres", "results": [{"image_id": "figure1.jpg"},
              {"image_id": "figure2.jpg"}]}  # fmt: skip
    (out / "keypoints.json").write_text(json.dumps(legacy))
    images = EXAMPLES / "images"
    refused = run_pm("predict", mean_model_dir, images, "--out", out, expect_fail=True)
    assert "not empty" in refused.stderr
    refused = run_pm(
        "predict", mean_model_dir, images, "--out", out, "--overwrite", expect_fail=True
    )
    assert "not written by posemachines" in refused.stderr
    assert {n: (out / n).read_bytes() for n in mine} == mine
    assert json.loads((out / "keypoints.json").read_text()) == legacy
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no record, no temporary


def test_inputs_that_share_a_name_keep_their_own_outputs(mean_model_dir, tmp_path):
    for rel in ("a/x.jpg", "a/x.png", "b/x.jpg"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(base_image()).save(tmp_path / rel)
    out = tmp_path / "out"
    run_pm("predict", mean_model_dir, tmp_path / "a", tmp_path / "b", "--out", out)
    ids = [r["image_id"] for r in json.loads((out / "keypoints.json").read_text())["results"]]
    assert sorted(ids) == ["a/x.jpg", "a/x.png", "b/x.jpg"]
    overlays = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert overlays == ["a/x.jpg.png", "a/x.png.png", "b/x.png"]
    again = run_pm("predict", mean_model_dir, EXAMPLES / "images" / "figure1.jpg", "--out", out)
    assert again.exit_code == 0 and (out / "figure1.png").is_file()  # its own folder, reused


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("cnn") / "cnn"
    run_pm("train", "--backend", "cnn", "--config", "cpm-tiny", "--dataset", "synthetic",
           "--synthetic-size", "16", "--epochs", "1", "--device", "cpu", "--out", out)  # fmt: skip
    return out


def test_export_claims_its_file_by_record(tiny_cnn, tmp_path):
    target = tmp_path / "models" / "cnn.onnx"
    target.parent.mkdir()
    target.write_bytes(b"another model of mine")
    refused = run_pm("export", tiny_cnn, "--out", target, expect_fail=True)
    assert "not written by posemachines" in refused.stderr
    run_pm("export", tiny_cnn, "--out", target, "--overwrite", expect_fail=True)
    assert target.read_bytes() == b"another model of mine"

    ours = tmp_path / "models" / "ours.onnx"
    stale = tmp_path / "models" / ".ours.onnx.pm-tmp-killed"  # what a SIGKILL mid-write leaves
    stale.write_bytes(b"half")
    run_pm("export", tiny_cnn, "--out", ours)
    assert not stale.exists()
    before = ours.read_bytes()
    again = run_pm("export", tiny_cnn, "--out", ours, expect_fail=True)
    assert "--overwrite" in again.stderr and ours.read_bytes() == before
    run_pm("export", tiny_cnn, "--out", ours, "--overwrite")
    assert target.read_bytes() == b"another model of mine"


def test_an_edited_onnx_metadata_field_is_refused_everywhere(tiny_cnn, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    good = tmp_path / "good.onnx"
    run_pm("export", tiny_cnn, "--out", good)
    proto = onnx.load(good)
    for entry in proto.metadata_props:
        if entry.key == "posemachines":
            doc = json.loads(entry.value)
            doc["codec"]["stride"] *= 2  # coordinates doubled
            entry.value = json.dumps(doc)
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(proto.SerializeToString())
    refused = run_pm("evaluate", edited, "--dataset", "synthetic", expect_fail=True)
    assert "changed since pm export wrote it" in refused.stderr
    image = EXAMPLES / "images" / "figure1.jpg"
    script = [sys.executable, str(EXAMPLES / "onnx_predict.py")]
    out = subprocess.run([*script, str(edited), str(image)], capture_output=True, text=True)
    assert out.returncode != 0 and "changed since pm export wrote it" in out.stderr
    assert subprocess.run([*script, str(good), str(image)], capture_output=True).returncode == 0


# -- work that scales, ids that cannot repeat, make clean -----------------------------------------


def test_vectorised_oks_nms_keeps_what_the_pairwise_loop_kept():
    from posemachines.core.skeletons import get_skeleton
    from posemachines.evaluation.metrics import object_keypoint_similarity, oks_sigmas
    from posemachines.people.multiperson import Person, oks_nms

    skeleton = get_skeleton("lsp14")
    sigmas = oks_sigmas(skeleton)

    def pairwise(people, threshold):
        kept = []
        for person in sorted(people, key=lambda p: -p.score):
            area = lambda o: np.array([o.box[2] * o.box[3]])  # noqa: E731
            if not any(
                object_keypoint_similarity(person.keypoints[-1][None], o.keypoints[-1][None],
                                           np.ones((1, 14), bool), area(o), sigmas)[0] > threshold
                for o in kept
            ):  # fmt: skip
                kept.append(person)
        return kept

    for seed in range(5):
        rng = np.random.default_rng(seed)
        centres = rng.uniform(0, 200, (6, 2))
        people = []
        for k in range(60):
            pose = centres[k % 6] + rng.normal(0, 4 + 10 * (k % 3), (14, 2))
            box = np.array([*pose.min(0), *(pose.max(0) - pose.min(0) + 20)])
            people.append(Person(box, 1.0, pose[None], np.ones((1, 14)), rng.uniform()))
        for threshold in (0.5, 0.9):
            assert [id(p) for p in oks_nms(people, skeleton, threshold)] == [
                id(p) for p in pairwise(people, threshold)
            ]


def test_at_most_max_people_boxes_the_best_scored_and_counted():
    from posemachines.people.boxes import detections_from
    from posemachines.people.multiperson import AtMost

    boxes = [[10, 10, 20, 20, s] for s in np.linspace(0.1, 1.0, 10)]
    source = AtMost(detections_from({"a.jpg": boxes}), 3)
    found = source.find([np.zeros((100, 100, 3), np.uint8)], [("a.jpg",)])[0]
    assert np.allclose(sorted(found[:, 4]), [0.8, 0.9, 1.0])
    assert "7 box(es) beyond the 3 best-scored per image left out" in source.summary()


def test_a_duplicate_annotation_id_is_one_line_or_dropped_and_counted(tmp_path, forest_model_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(base_image()).save(folder / "a.jpg")
    person = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 72, 96],
              "keypoints": [30, 40, 2] * 14}  # fmt: skip
    joints = list(load_model(forest_model_dir).skeleton.joints)
    category = {"id": 1, "name": "person", "keypoints": joints, "skeleton": [[1, 2]]}
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [person, dict(person)],
           "categories": [category]}  # fmt: skip
    coco = tmp_path / "dup.json"
    coco.write_text(json.dumps(doc))
    spec = ("--dataset", f"coco-format:{coco}", "--images", folder)
    refused = run_pm("evaluate", forest_model_dir, *spec, expect_fail=True)
    assert "'id' 1 is also annotations[0]'s" in refused.stderr
    saved = tmp_path / "saved.json"
    run_pm("evaluate", forest_model_dir, *spec, "--on-bad-annotation", "skip",
           "--save-predictions", saved)  # fmt: skip
    run_pm("evaluate", saved, *spec, "--on-bad-annotation", "skip")  # it reads back


def test_make_clean_removes_only_what_make_made():
    recipe = (ROOT / "Makefile").read_text().split("\nclean:\n")[1].splitlines()[0]
    removed = recipe.split()[2:]
    assert "runs" not in removed and "$(OUT)" in removed and "$(VENV)" in removed


def test_a_resume_of_another_kind_of_run_is_one_short_line(tmp_path):
    state = tmp_path / "run" / "checkpoint" / "000001" / "state.json"
    state.parent.mkdir(parents=True)
    other = {f"setting_{k}": list(range(40)) for k in range(60)}  # a run of another kind
    state.write_text(json.dumps({"identity": {"settings": other, "network": other}, "step": 1}))
    refused = run_pm("train", "--backend", "cnn", "--config", "cpm-tiny", "--dataset",
                     "synthetic", "--synthetic-size", "16", "--epochs", "1", "--device", "cpu",
                     "--out", tmp_path / "run", "--resume", expect_fail=True)  # fmt: skip
    assert len(refused.stderr.strip().splitlines()) == 1 and len(refused.stderr) < 600
    assert "and " in refused.stderr and "more" in refused.stderr


def test_a_resume_that_finds_nothing_says_so(tmp_path):
    said = run_pm("train", "--backend", "mean", "--dataset", "synthetic", "--synthetic-size",
                  "16", "--out", tmp_path / "new", "--resume")  # fmt: skip
    assert "nothing to resume" in said.output
