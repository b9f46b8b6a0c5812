"""Time and peak memory of `pm predict --boxes` with 1,000, 10,000 and 100,000 boxes on one
image (OKS-NMS and every per-person step must grow no faster than needed; --max-people keeps
the best-scored 100 of an image by default).

    python benchmarks/many_boxes.py runs/demo/cnn [--counts 1000 10000 100000]

Each count runs in a fresh `pm` process; prints wall seconds and the process's peak resident
memory.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent
MEASURE = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)


def boxes_file(path: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    """``count`` boxes of people-like shapes scattered over a width x height image."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(20, width / 3, count)
    h = w * rng.uniform(1.5, 3.0, count)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, np.maximum(height - h, 1))
    score = rng.uniform(0.3, 1.0, count)
    boxes = np.round(np.stack([x, y, w, h, score], 1), 2).tolist()
    path.write_text(json.dumps({"group.jpg": boxes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="runs/demo/cnn")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--image", default=str(ROOT / "examples" / "images" / "group.jpg"))
    args = parser.parse_args()
    from PIL import Image

    width, height = Image.open(args.image).size
    pm = str(Path(sys.executable).parent / "pm")
    print(f"{'boxes':>8s} {'seconds':>8s} {'peak MB':>8s}  what pm said")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            boxes = Path(tmp) / f"boxes{count}.json"
            boxes_file(boxes, count, width, height)
            command = [pm, "predict", args.model, args.image, "--boxes", str(boxes)]
            command += ["--out", str(Path(tmp) / f"out{count}"), "--no-overlays"]
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", MEASURE, *command], capture_output=True, text=True
            )
            seconds = time.perf_counter() - start
            peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
            said = " | ".join(line for line in done.stderr.splitlines() if line.strip())
            print(f"{count:8d} {seconds:8.1f} {peak_mb:8.0f}  {said[-160:]}", flush=True)


if __name__ == "__main__":
    main()
