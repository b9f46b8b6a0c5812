"""Model directories written by an earlier version still load and predict the same.

Two steps, each run with the version it is for on the path:

    # with an earlier checkout (e.g. git archive REV | tar -x -C /tmp/old; see the note below)
    PYTHONPATH=/tmp/old python benchmarks/old_models.py save /tmp/old-models/format3
    # with this checkout
    python benchmarks/old_models.py check /tmp/old-models/format3

``save`` trains small models of every kind with that version's own `pm train` (mean, forest,
forest with the part hierarchy, CNN, a stack), and writes next to each the keypoints that
version predicts on the synthetic test figures (``expected.npy``). ``check`` loads each with
this version and prints, per model, the largest difference from those keypoints in pixels
(0 means the same to the last bit). An earlier source tree keeps ``cli/`` beside the package:
move it to ``posemachines/cli`` after unpacking.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SMALL = ["--dataset", "synthetic", "--synthetic-size", "40"]
MODELS = {
    "mean": ["--backend", "mean"],
    "forest": ["--backend", "forest", "--stages", "2", "--trees", "4"],
    "forest-hierarchy": ["--backend", "forest", "--stages", "2", "--trees", "3", "--hierarchy"],
    "cnn": ["--backend", "cnn", "--config", "cpm-tiny", "--epochs", "2", "--device", "cpu"],
    "stack": ["--stack", "cnn:1,forest:1", "--config", "cpm-tiny", "--epochs", "1", "--trees", "3"],
}


def test_keypoints(model) -> np.ndarray:
    from posemachines.data import load_dataset

    test = load_dataset("synthetic", "test", size=20, seed=0)
    predictions = model.predict(test)
    return np.asarray(getattr(predictions, "keypoints", predictions), dtype=np.float64)


def load(folder: Path):
    """A model directory, or the exported ``model.onnx`` a folder holds, loaded by whichever
    module of this version has ``load_model`` (it moved as the package grew)."""
    import importlib

    onnx = folder / "model.onnx"
    # The older names first: an editable install of this checkout can lend its newer modules
    # to an older tree on PYTHONPATH.
    for module in (
        "posemachines.runtimes",
        "posemachines.model",
        "posemachines.io",
        "posemachines.loading",
    ):
        try:
            load_model = importlib.import_module(module).load_model
        except (ImportError, AttributeError):
            continue
        return load_model(onnx if onnx.is_file() else folder)
    raise ImportError("no load_model in this version of posemachines")


def version_of(folder: Path) -> str:
    onnx = folder / "model.onnx"
    if onnx.is_file():
        return "exported .onnx"
    manifest = json.loads((folder / "manifest.json").read_text())
    return f"format {manifest.get('format_version', 1)}"


def save(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, options in MODELS.items():
        out = root / name
        command = [sys.executable, "-m", "posemachines.cli.main", "train", *options, *SMALL]
        done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True)
        if done.returncode != 0:  # a kind this version does not have (stacks are recent)
            print(f"{name:17s} not trained by this version: {done.stderr.strip()[-200:]}")
            continue
        np.save(out / "expected.npy", test_keypoints(load(out)))
        print(f"{name:17s} saved ({version_of(out)})")
    exported = root / "cnn-onnx"
    command = [sys.executable, "-m", "posemachines.cli.main", "export", str(root / "cnn")]
    done = subprocess.run([*command, "--out", str(exported / "model.onnx")], capture_output=True)
    if done.returncode == 0:
        np.save(exported / "expected.npy", test_keypoints(load(exported)))
        print(f"{'cnn-onnx':17s} saved (exported .onnx)")


def check(root: Path) -> int:
    worst = 0.0
    for folder in sorted(p for p in root.iterdir() if (p / "expected.npy").is_file()):
        expected = np.load(folder / "expected.npy")
        got = test_keypoints(load(folder))
        diff = float(np.nanmax(np.abs(got - expected))) if got.shape == expected.shape else np.inf
        same_nan = bool(np.array_equal(np.isnan(got), np.isnan(expected)))
        worst = max(worst, diff if same_nan else np.inf)
        print(f"{root.name}/{folder.name:17s} {version_of(folder)}: max |difference| {diff:.3g} px")
    print(f"worst: {worst:.3g} px")
    return 0 if worst == 0 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("step", choices=["save", "check"])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    if args.step == "save":
        save(args.folder)
        return 0
    return check(args.folder)


if __name__ == "__main__":
    sys.exit(main())
