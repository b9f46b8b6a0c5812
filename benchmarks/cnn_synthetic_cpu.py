"""cpm-small on synthetic data on the CPU: training time, images/s and PCK@0.2 per stage.

python benchmarks/cnn_synthetic_cpu.py            # cpm-small, 2000 images x 20 epochs
"""

from __future__ import annotations

import argparse
import json
import time

from posemachines.backends.cnn.settings import CNNSettings
from posemachines.backends.cnn.trainer import train_cnn
from posemachines.data import load_dataset
from posemachines.evaluation.comparison import Entry, score_entry


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="cpm-small")
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-cnn-synthetic")
    args = ap.parse_args()
    begin = time.time()
    train = load_dataset("synthetic", "train", size=args.train_size, seed=args.seed)
    test = load_dataset("synthetic", "test", size=args.test_size, seed=args.seed)
    settings = CNNSettings(
        config=args.config,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device="cpu",
        seed=args.seed,
        val_fraction=0.0,
    )
    start = time.time()
    model = train_cnn(train, settings, args.out, progress=True)
    seconds = time.time() - start
    result, _ = score_entry(Entry("cnn", args.out, model), test)
    print(
        json.dumps(
            {
                "config": args.config,
                "train_images": len(train),
                "epochs": args.epochs,
                "train_seconds": round(seconds, 1),
                "total_seconds_with_data_and_scoring": round(time.time() - begin, 1),
                "train_img_s": round(len(train) * args.epochs / seconds, 1),
                "pck@0.2_per_stage": [round(s["pck@0.2"], 4) for s in result.per_stage],
                "metrics": {k: round(v, 4) for k, v in result.metrics.items() if v is not None},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
