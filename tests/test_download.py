import hashlib
import http.server
import io
import threading
import zipfile

import pytest
from click.testing import CliRunner
from posemachines.cli.main import cli

from posemachines.data import datasets
from posemachines.data.download import download, fetch_dataset, unpack
from posemachines.errors import PoseMachinesError


def make_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("lsp_dataset/joints.mat", b"x" * 5000)
        z.writestr("lsp_dataset/images/im0001.jpg", bytes(range(256)) * 40)
    return buf.getvalue()


class Server:
    """A local HTTP server with Range support that can cut the first response short; it serves
    ``payload`` at every path, or ``files[path]``."""

    def __init__(self, payload: bytes = b"", cut_first: bool = False, files=None):
        self.payload, self.cut_first, self.requests = payload, cut_first, []
        self.files, self.paths = files or {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                outer.paths.append(self.path)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.files.get(self.path, outer.payload)[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_first and len(outer.requests) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection drops mid-transfer
                    return
                self.wfile.write(body)

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"
        self.url = f"{self.base}/lsp_dataset.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def archive():
    data = make_archive()
    return data, hashlib.sha256(data).hexdigest()


def test_download_verifies_and_unpacks(tmp_path, archive):
    data, digest = archive
    server = Server(data)
    try:
        folder = fetch_dataset(
            "lsp", urls=[server.url], sha256=[digest], cache_dir=tmp_path, progress=False
        )
    finally:
        server.close()
    assert folder == tmp_path / "data" / "lsp"
    assert (folder / "joints.mat").read_bytes() == b"x" * 5000
    assert (folder / "images" / "im0001.jpg").is_file()


def test_interrupted_download_resumes_with_a_range_request(tmp_path, archive):
    data, digest = archive
    server = Server(data, cut_first=True)
    dest = tmp_path / "a.zip"
    try:
        with pytest.raises(PoseMachinesError, match="run the same command again"):
            download(server.url, dest, digest, timeout=5)
        assert (tmp_path / "a.zip.part").stat().st_size == len(data) // 2
        download(server.url, dest, digest, timeout=5)
    finally:
        server.close()
    assert server.requests[1] == f"bytes={len(data) // 2}-"
    assert dest.read_bytes() == data and not (tmp_path / "a.zip.part").exists()


def test_checksum_mismatch_is_refused(tmp_path, archive):
    data, _ = archive
    server = Server(data)
    try:
        with pytest.raises(PoseMachinesError, match="checksum mismatch"):
            download(server.url, tmp_path / "a.zip", "0" * 64)
    finally:
        server.close()
    assert not (tmp_path / "a.zip").exists()


def test_unpack_refuses_path_traversal(tmp_path):
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.txt", b"x")
    with pytest.raises(PoseMachinesError, match="outside"):
        unpack(bad, tmp_path / "out")


def zipped(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def tarred(files: dict) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_mpii_download_puts_each_archive_in_its_folder_and_keeps_what_is_there(tmp_path):
    """MPII's two official archives, served on 127.0.0.1 under their official file names."""
    annotations = zipped({"mpii_human_pose_v1_u12_2/mpii_human_pose_v1_u12_1.mat": b"m" * 100})
    images = tarred({"images/000001163.jpg": b"j" * 300, "images/000003072.jpg": b"k" * 300})
    server = Server(files={"/a/u12.zip": annotations, "/a/img.tar.gz": images})
    args = ["data", "download", "mpii", "--cache-dir", str(tmp_path)]
    mirror = ["--url", f"{server.base}/a/u12.zip", "--url", f"{server.base}/a/img.tar.gz"]
    try:
        first = CliRunner().invoke(cli, [*args, *mirror])
        assert first.exit_code == 0, first.output
        again = CliRunner().invoke(cli, [*args, *mirror])
        assert again.exit_code == 0, again.output
        wrong = CliRunner().invoke(cli, [*args, "--url", f"{server.base}/a/u12.zip"])
    finally:
        server.close()
    folder = tmp_path / "data" / "mpii"
    assert (folder / "annotations" / "mpii_human_pose_v1_u12_1.mat").read_bytes() == b"m" * 100
    assert sorted(p.name for p in (folder / "images").iterdir()) == [
        "000001163.jpg",
        "000003072.jpg",
    ]
    digest = hashlib.sha256(annotations).hexdigest()
    assert f"u12.zip: sha256 {digest} (pin it with --sha256)" in first.output
    assert server.paths == ["/a/u12.zip", "/a/img.tar.gz"]  # the second run fetched nothing
    assert again.output.count("already there, kept") == 2
    assert wrong.exit_code == 1 and len(wrong.output.strip().splitlines()) == 1
    assert "pass --url once for each" in wrong.output and "Traceback" not in wrong.output


def test_coco_val_split_skips_the_train_archive(tmp_path):
    annotations = zipped({"annotations/person_keypoints_val2017.json": b"{}"})
    val = zipped({"val2017/000000000139.jpg": b"v" * 50})
    server = Server(files={"/ann.zip": annotations, "/val.zip": val})
    try:
        folder = fetch_dataset(
            "coco",
            split="val",
            urls=[f"{server.base}/ann.zip", f"{server.base}/val.zip"],
            sha256=[hashlib.sha256(annotations).hexdigest(), hashlib.sha256(val).hexdigest()],
            cache_dir=tmp_path,
            progress=False,
            say=lambda line: None,
        )
    finally:
        server.close()
    assert (folder / "annotations" / "person_keypoints_val2017.json").is_file()
    assert (folder / "val2017" / "000000000139.jpg").is_file()
    assert not (folder / "train2017").exists()
    assert [a.split for a in datasets()["coco"].sources] == [None, "val", "train"]


def test_unpack_never_replaces_an_existing_folder(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(zipped({"x.txt": b"new"}))
    target = tmp_path / "mine"
    target.mkdir()
    (target / "x.txt").write_bytes(b"the user's")
    with pytest.raises(PoseMachinesError, match="exists; it is kept"):
        unpack(archive, target)
    assert (target / "x.txt").read_bytes() == b"the user's"
