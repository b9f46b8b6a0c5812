"""Every person in the photo, measured with the commands a user types.

    python benchmarks/people.py POSE_MODEL [--out DIR] [--people DIR]

1. ``pm train --backend people --dataset synthetic-crowd`` (timed; skipped with --people);
2. ``pm evaluate PEOPLE --dataset synthetic-crowd``: box AP at IoU 0.5 and recall on the test
   split;
3. ``pm evaluate POSE --dataset synthetic-crowd``: OKS AP on the ground-truth boxes;
4. ``pm evaluate POSE --dataset synthetic-crowd --people PEOPLE``: on the boxes it finds;
5. the people model's boxes written as COCO detection results, then ``--boxes`` that file.

Prints each figure in percent with one decimal, and the commands.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def pm(*args) -> str:
    command = [sys.executable, "-m", "posemachines.cli.main", *map(str, args)]
    print("$ pm", " ".join(map(str, args)), flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed:\n{done.stderr}")
    return done.stdout


def write_detections(people: Path, path: Path) -> int:
    """The people model's boxes on synthetic-crowd test, as a detector's results file."""
    from posemachines.backends.people.model import load_people_model
    from posemachines.data import load_dataset

    model = load_people_model(people)
    test = load_dataset("synthetic-crowd", "test")
    entries = []
    for image_id, indices in test.people_by_image().items():
        for x, y, w, h, score in model.detect([test[indices[0]].image])[0]:
            entries.append(
                {"image_id": image_id, "bbox": [x, y, w, h], "score": score, "category_id": 1}
            )
    path.write_text(json.dumps([{k: _plain(v) for k, v in e.items()} for e in entries]))
    return len(entries)


def _plain(v):
    if isinstance(v, list):
        return [float(x) for x in v]
    return v if isinstance(v, (int, str)) else float(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pose", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/people-bench"))
    parser.add_argument("--people", type=Path, default=None, help="an already trained one")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    people = args.people
    if people is None:
        people = args.out / "people"
        start = time.perf_counter()
        pm("train", "--backend", "people", "--dataset", "synthetic-crowd", "--out", people,
           "--overwrite")  # fmt: skip
        print(f"people model trained in {time.perf_counter() - start:.0f} s")
    boxes = json.loads(pm("evaluate", people, "--dataset", "synthetic-crowd", "--json"))
    print(f"box AP@0.5 {100 * boxes['box_ap50']:.1f}, recall {100 * boxes['recall']:.1f}")
    data = ("--dataset", "synthetic-crowd")
    truth = json.loads(pm("evaluate", args.pose, *data, "--json"))["metrics"]
    print(f"OKS AP on ground-truth boxes: {100 * truth['oks_ap']:.1f}")
    found = json.loads(pm("evaluate", args.pose, *data, "--people", people, "--json"))
    print(f"OKS AP through --people: {100 * found['metrics']['oks_ap']:.1f}")
    detections = args.out / "detections.json"
    n = write_detections(people, detections)
    print(f"{n} boxes written to {detections}")
    given = json.loads(pm("evaluate", args.pose, *data, "--boxes", detections, "--json"))
    print(f"OKS AP through --boxes: {100 * given['metrics']['oks_ap']:.1f}")
    gap = 100 * (truth["oks_ap"] - found["metrics"]["oks_ap"])
    print(f"ground-truth boxes minus detected: {gap:.1f} points")


if __name__ == "__main__":
    main()
