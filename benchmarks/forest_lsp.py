"""Forest Pose Machine on LSP: train on LSP train (1-1000), evaluate on LSP test (1001-2000).

Prints wall time, peak memory (this process and its workers), PCK@0.2 per stage and per joint,
and the median ms per image at prediction (image decoding included, batch 1).

    python benchmarks/forest_lsp.py --data-root ../shared/data --out runs/bench-forest-lsp

``--model DIR`` scores and times a model this script saved before, without training (prediction
changes that keep the numbers can be re-timed without the 20-minute training).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from posemachines.backends.forest.settings import ForestSettings
from posemachines.backends.forest.trainer import ForestTrainer
from posemachines.data import ConcatDataset, load_dataset
from posemachines.evaluation.comparison import Entry, score_entry, time_model
from posemachines.files.model_dir import save_model
from posemachines.loading import load_model
from posemachines.registry import TrainingRun

sys.path.insert(0, str(Path(__file__).parent))
from memory import PeakMemory  # noqa: E402


def directory_megabytes(folder) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default="runs/bench-forest-lsp")
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--trees", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=-1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--settings", default="{}", help="JSON overrides of ForestSettings")
    ap.add_argument("--model", default=None, help="score and time this saved model instead")
    ap.add_argument(
        "--lspet", type=int, default=0, help="also train on the first N images of LSPET"
    )
    args = ap.parse_args()

    train = load_dataset("lsp", "train", args.data_root)
    if args.lspet:
        extra = load_dataset("lspet", "train", args.data_root)
        train = ConcatDataset([train, extra.subset(range(min(args.lspet, len(extra))))])
    test = load_dataset("lsp", "test", args.data_root)
    if args.model:
        model, out = load_model(args.model), args.model
        settings = ForestSettings.from_options(**model.record.settings)
        train_s = model.record.seconds
        peak_gb = None  # measured when it was trained
    else:
        options = {"stages": args.stages, "trees": args.trees, **json.loads(args.settings)}
        settings = ForestSettings.from_options(**options)
        start = time.time()
        with PeakMemory() as memory:
            run = TrainingRun(Path(args.out), args.seed, args.jobs, progress=True)
            model = ForestTrainer(settings, run).fit(train).model_
        train_s = round(time.time() - start, 1)
        peak_gb = round(memory.peak_gb, 2)
        save_model(model, args.out)
        shutil.rmtree(Path(args.out) / "checkpoint", ignore_errors=True)  # as pm train does
        out = args.out
    result, _ = score_entry(Entry("forest", out, model), test)
    timing = time_model(model, test, n=50)
    pck = result.metrics["pck@0.2"]
    targets = {  # issue 12's bar for the LSP recipe
        "pck@0.2 >= 0.53": pck >= 0.53,
        "train <= 15 min": train_s is not None and train_s <= 15 * 60,
        "peak memory <= 8 GB": None if peak_gb is None else peak_gb <= 8,
        "ms/image <= 60": timing["ms_per_image"] <= 60,
    }
    print(
        json.dumps(
            {
                "train_seconds": train_s,
                "peak_memory_gb": peak_gb,
                "pck@0.2_per_stage": [round(s["pck@0.2"], 4) for s in result.per_stage],
                "metrics": {k: round(v, 4) for k, v in result.metrics.items() if v is not None},
                "per_joint_pck@0.2": {
                    j: round(m["pck@0.2"], 3) for j, m in result.per_joint.items()
                },
                "ms_per_image": round(timing["ms_per_image"], 1),
                "model_megabytes": round(directory_megabytes(out), 1),
                "settings": settings.to_dict(),
                "targets": targets,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
