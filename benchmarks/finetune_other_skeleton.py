"""Fine-tuning against training from scratch on a set with another skeleton, for the same time.

LSPET (images 1-9000) is written as a COCO-format file with an upper-body subset of LSP's
joints, in another order and under other names, and LSP test (1001-2000, which no zoo model
saw) the same way; then the same network is trained twice for --minutes each, once from
scratch and once with --init MODEL (the image trunk is all that fits another skeleton), and
both are scored on the LSP test file (image protocol). With --side-by-side the two trainings
run at once, one thread each (the same machine for both, half the wall time).

    python benchmarks/finetune_other_skeleton.py --data-root ../shared/data \
        --init cpm-cpu-lsp --minutes 15 --out /tmp/finetune [--side-by-side]

Prints each command as it runs it and both PCK@0.2 scores.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

# LSP's indices of the joints kept, in the new order, and their new names.
KEEP = [11, 6, 10, 7, 9, 8, 12, 13]
NAMES = [
    "left_wrist",
    "right_wrist",
    "left_elbow",
    "right_elbow",
    "left_shoulder",
    "right_shoulder",
    "neck",
    "head",
]
LIMBS = [[1, 3], [3, 5], [2, 4], [4, 6], [5, 7], [6, 7], [7, 8]]


def write_coco(dataset, path: Path, whole_image: bool) -> None:
    """``dataset`` (an LSP-format loader's) as a COCO-format file of the upper body."""
    from PIL import Image

    images, people = [], []
    for i, name in enumerate(dataset.files):
        w, h = Image.open(dataset.image_dir / name).size
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        xy, labelled = dataset.joints[i][KEEP], dataset.labelled[i][KEEP]
        if not labelled.any():
            continue
        if whole_image:
            box = [0, 0, w, h]
        else:
            lo, hi = xy[labelled].min(0), xy[labelled].max(0)
            pad = 0.3 * (hi - lo).max() + 10
            lo, hi = (lo - pad).clip(0), hi + pad
            box = [*lo.round(1).tolist(), *(hi - lo).round(1).tolist()]
        flags = [2 if f else 0 for f in labelled]
        keypoints = [v for (x, y), f in zip(xy.round(2).tolist(), flags) for v in (x, y, f)]
        people.append(
            {"id": i, "image_id": i, "category_id": 1, "bbox": box, "keypoints": keypoints}
        )
    category = {"id": 1, "name": "upper-body", "keypoints": NAMES, "skeleton": LIMBS}
    path.write_text(json.dumps({"images": images, "annotations": people, "categories": [category]}))


def pm(*args) -> str:
    print("$ pm " + " ".join(map(str, args)), flush=True)
    command = [str(Path(sys.executable).parent / "pm"), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr.strip())
    return done.stdout


def start(args: list, log: Path, env=None) -> subprocess.Popen:
    """``pm ARGS`` started, its output going to ``log`` (a pipe left unread would stall it)."""
    print("$ pm " + " ".join(map(str, args)), flush=True)
    command = [str(Path(sys.executable).parent / "pm"), *map(str, args)]
    with open(log, "w") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--init", default="cpm-cpu-lsp")
    parser.add_argument("--config", default="cpm-cpu")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--side-by-side", action="store_true", help="both at once, 1 thread each")
    args = parser.parse_args()
    from posemachines.data import load_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    train, test = args.out / "lspet_upper.json", args.out / "lsp_test_upper.json"
    write_coco(load_dataset("lspet", "train", args.data_root), train, whole_image=False)
    write_coco(load_dataset("lsp", "test", args.data_root), test, whole_image=True)
    lspet, lsp = args.data_root / "lspet" / "images", args.data_root / "lsp" / "images"
    runs = {"from scratch": [], f"--init {args.init}": ["--init", args.init]}
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.side_by_side else None
    started = {}
    for label, extra in runs.items():
        out = args.out / ("scratch" if not extra else "finetuned")
        command = ["train", "--backend", "cnn", "--config", args.config, "--device", "cpu",
                   "--dataset", f"coco-format:{train}", "--images", lspet, "--time-budget",
                   args.minutes, "--out", out, "--overwrite", *extra]  # fmt: skip
        log = args.out / f"{out.name}.log"
        started[label] = (out, log, start(command, log, env))
        if not args.side_by_side:
            started[label][2].wait()
    scores = {}
    for label, (out, log, training) in started.items():
        if training.wait():
            sys.exit(f"{label}: {log.read_text().strip()[-2000:]}")
        doc = pm("evaluate", out, "--dataset", f"coco-format:{test}", "--images", lsp,
                 "--protocol", "image", "--json")  # fmt: skip
        scores[label] = json.loads(doc.strip().splitlines()[-1])["metrics"]["pck@0.2"]
    for label, pck in scores.items():
        how = "side by side, 1 thread each" if args.side_by_side else "one after the other"
        budget = f"{args.minutes:g} min, {how}"
        print(f"{label}: PCK@0.2 {100 * pck:.1f} on LSP test (upper body, {budget})")


if __name__ == "__main__":
    main()
