"""Train a mean-pose prior and a small forest Pose Machine on synthetic data, then compare them.

python examples/train_and_compare.py --out runs/example
"""

from __future__ import annotations

import argparse

from posemachines.comparison import run_compare
from posemachines.data import load_dataset
from posemachines.training.forest import ForestSettings, train_forest
from posemachines.training.mean import train_mean


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/example")
    args = ap.parse_args()
    train = load_dataset("synthetic", "train", size=200, seed=0)

    train_mean(train).save(f"{args.out}/mean")
    train_forest(train, ForestSettings(stages=2, trees=20), f"{args.out}/forest").save(
        f"{args.out}/forest"
    )

    report = run_compare([f"{args.out}/mean", f"{args.out}/forest"], out=f"{args.out}/report")
    print(f"open {report}/report.html")


if __name__ == "__main__":
    main()
