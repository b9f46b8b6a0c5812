import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from posemachines.data.download import download, fetch_dataset, unpack
from posemachines.errors import PoseMachinesError


def make_archive() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("lsp_dataset/joints.mat", b"x" * 5000)
        z.writestr("lsp_dataset/images/im0001.jpg", bytes(range(256)) * 40)
    return buf.getvalue()


class Server:
    """A local HTTP server with Range support that can cut the first response short."""

    def __init__(self, payload: bytes, cut_first: bool = False):
        self.payload, self.cut_first, self.requests = payload, cut_first, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.requests.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.payload[start:]
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
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/lsp_dataset.zip"
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
        folder, got = fetch_dataset("lsp", server.url, digest, cache_dir=tmp_path, progress=False)
    finally:
        server.close()
    assert got == digest and folder == tmp_path / "data" / "lsp"
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
