"""Train a mean-pose prior and a small forest Pose Machine on synthetic data, then compare them.

python examples/train_and_compare.py --out runs/example
"""

from __future__ import annotations

import argparse

from posemachines.data import load_dataset
from posemachines.io import save_model
from posemachines.report import run_compare
from posemachines.training.forest import ForestSettings, train_forest
from posemachines.training.mean import train_mean


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/example")
    args = ap.parse_args()
    train = load_dataset("synthetic", "train", size=200, seed=0)

    mean = train_mean(train)
    mean.info["training"] = {"dataset": train.describe(), "dataset_name": "synthetic"}
    save_model(mean, f"{args.out}/mean")

    forest = train_forest(train, ForestSettings(stages=2, trees=20), f"{args.out}/forest")
    forest.info["training"].update({"dataset": train.describe(), "dataset_name": "synthetic"})
    save_model(forest, f"{args.out}/forest")

    report = run_compare([f"{args.out}/mean", f"{args.out}/forest"], out=f"{args.out}/report")
    print(f"open {report}/report.html")


if __name__ == "__main__":
    main()
