"""Train a mean-pose prior and a small forest Pose Machine on synthetic data, then compare them.

python examples/train_and_compare.py --out runs/example
"""

from __future__ import annotations

import argparse

import posemachines as pm


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/example")
    args = ap.parse_args()
    train = pm.load_dataset("synthetic", "train", size=200, seed=0)

    pm.train("mean", train).save(f"{args.out}/mean")
    pm.train("forest", train, stages=2, trees=20).save(f"{args.out}/forest")

    report = pm.compare([f"{args.out}/mean", f"{args.out}/forest"], out=f"{args.out}/report")
    print(f"open {report}/report.html")


if __name__ == "__main__":
    main()
