"""`pm serve` under two attacks: a chunked multipart upload far over --max-bytes (the
server's temporary folder is watched while it is sent), and /healthz while a 6000 x 6000 PNG
is decoded.

    python benchmarks/serve_limits.py runs/demo/cnn [--upload-mb 1000] [--max-bytes 10000000]

Prints the upload's status, the most the server's temporary folder held, and /healthz
latencies (median and worst) during the large image's decoding.
"""

import argparse
import http.client
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def chunked_upload(port: int, megabytes: int) -> tuple:
    """POST a multipart form of ``megabytes`` MB, chunked (no Content-Length)."""
    head = (
        b'--xx\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n"
    )
    block = b"\xff" * (1 << 20)

    def body():
        yield head
        for _ in range(megabytes):
            yield block
        yield b"\r\n--xx--\r\n"

    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            "/v1/predict",
            body=body(),
            headers={"Content-Type": "multipart/form-data; boundary=xx"},
            encode_chunked=True,
        )
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and stopped reading while we were still sending
    try:
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        status = "no answer read (connection closed)"
    finally:
        conn.close()
    return status, time.perf_counter() - start


def large_png(side: int = 6000) -> bytes:
    from PIL import Image

    image = np.zeros((side, side, 3), np.uint8)
    image[::97] = 255  # a few lines: compresses to tens of KB, decodes to 108 MB
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def health_during_decode(port: int, png: bytes) -> tuple[list[float], int]:
    result = {}

    def upload():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/v1/predict", body=png, headers={"Content-Type": "image/png"})
        result["status"] = conn.getresponse().status
        conn.close()

    thread = threading.Thread(target=upload)
    thread.start()
    times = []
    while thread.is_alive():
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        conn.close()
        times.append(1000 * (time.perf_counter() - start))
        time.sleep(0.02)
    thread.join()
    return times, result.get("status", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="runs/demo/cnn")
    parser.add_argument("--upload-mb", type=int, default=1000)
    parser.add_argument("--max-bytes", type=int, default=10_000_000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as spool:
        env = {**os.environ, "TMPDIR": spool}
        pm = str(Path(sys.executable).parent / "pm")
        server = subprocess.Popen(
            [pm, "serve", args.model, "--port", str(port), "--max-bytes", str(args.max_bytes)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).request(
                        "GET", "/healthz"
                    )
                    break
                except OSError:
                    time.sleep(0.1)
            most, watching = [0], [True]

            def watch():
                while watching[0]:
                    most[0] = max(most[0], folder_bytes(Path(spool)))
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch)
            watcher.start()
            status, seconds = chunked_upload(port, args.upload_mb)
            watching[0] = False
            watcher.join()
            print(
                f"chunked multipart upload of {args.upload_mb} MB against --max-bytes "
                f"{args.max_bytes}: status {status} after {seconds:.2f} s; the server's "
                f"temporary folder held at most {most[0]} bytes",
                flush=True,
            )
            times, status = health_during_decode(port, large_png())
            print(
                f"/healthz while a 6000 x 6000 PNG was decoded and predicted (status {status}): "
                f"{len(times)} requests, median {statistics.median(times):.1f} ms, worst "
                f"{max(times):.1f} ms",
                flush=True,
            )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
