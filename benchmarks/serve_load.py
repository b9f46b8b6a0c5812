"""pm serve under load, measured from outside: a real server process, real HTTP.

    python benchmarks/serve_load.py MODEL [--clients 32] [--requests 20]

1. With batching (--max-batch 8) and without (--max-batch 1): CLIENTS concurrent clients send
   REQUESTS images each (synthetic test figures as JPEG); prints errors, requests per second
   and the p50, p95 and p99 latency.
2. A full queue: 200 requests at once against --queue 8 --max-batch 1; prints how many were
   answered 503 (with Retry-After), that none failed otherwise, and that /healthz still
   answers afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images(n: int = 16) -> list[bytes]:
    from posemachines.data import load_dataset

    test = load_dataset("synthetic", "test", size=n)
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(test[i].image).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def start(model: str, *options: str):
    port = free_port()
    command = [sys.executable, "-m", "posemachines.cli.main", "serve", model, "--port", str(port)]
    process = subprocess.Popen([*command, *options], stdout=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    sys.exit("the server did not start")


async def load(url: str, bodies: list[bytes], clients: int, requests: int):
    latencies, statuses = [], []

    async def client(k: int, http: httpx.AsyncClient):
        for r in range(requests):
            body = bodies[(k * requests + r) % len(bodies)]
            sent = time.perf_counter()
            try:
                answer = await http.post(
                    f"{url}/v1/predict", content=body, headers={"Content-Type": "image/jpeg"}
                )
                statuses.append(answer.status_code)
            except httpx.HTTPError:
                statuses.append(-1)
            latencies.append((time.perf_counter() - sent) * 1000)

    limits = httpx.Limits(max_connections=clients + 8)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(k, http) for k in range(clients)))
        seconds = time.perf_counter() - start
    return np.array(latencies), statuses, seconds


async def burst(url: str, body: bytes, n: int):
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as http:
        answers = await asyncio.gather(
            *(
                http.post(f"{url}/v1/predict", content=body, headers={"Content-Type": "image/jpeg"})
                for _ in range(n)
            ),
            return_exceptions=True,
        )
        healthy = (await http.get(f"{url}/healthz")).status_code == 200
    return answers, healthy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    bodies = images()
    for label, batch in (("with batching (--max-batch 8)", "8"), ("without (--max-batch 1)", "1")):
        process, url = start(args.model, "--max-batch", batch, "--queue", "64")
        try:
            ms, statuses, seconds = asyncio.run(load(url, bodies, args.clients, args.requests))
        finally:
            process.terminate()
            process.wait()
        errors = sum(s != 200 for s in statuses)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        print(
            f"{label}: {len(statuses)} requests, {errors} errors, {len(statuses) / seconds:.1f} "
            f"requests/s, latency p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
        )
    process, url = start(args.model, "--max-batch", "1", "--queue", "8")
    try:
        answers, healthy = asyncio.run(burst(url, bodies[0], 200))
    finally:
        process.terminate()
        process.wait()
    codes = [a.status_code if isinstance(a, httpx.Response) else -1 for a in answers]
    retry = all(
        a.headers.get("Retry-After") for a in answers if getattr(a, "status_code", 0) == 503
    )
    other = sum(c not in (200, 503) for c in codes)
    print(
        f"200 requests at once, --queue 8: {codes.count(200)} answered, {codes.count(503)} "
        f"refused with 503 (Retry-After on each: {retry}), {other} other failures; /healthz "
        f"afterwards: {'ok' if healthy else 'FAILED'}"
    )


if __name__ == "__main__":
    main()
