"""Cross-fitting against in-sample stacking, over several seeds, on the small synthetic stack
of tests/test_stack.py. The test suite asserts only what holds on every seed and CPU (the
forest above a CNN ends within 3 points of the CNN it sits on, or better); how much it gains,
and whether by more on out-of-fold beliefs than on in-sample ones, are close calls on 100
test figures, so they are measured here, seed by seed, with the medians.

    python benchmarks/stack_cross_fitting.py --seeds 0 1 2 3 4

Prints, per seed, PCK@0.2 of the CNN stage and of the forest stage above it, cross-fitted
(3 folds) and in sample (1 fold), and the two gains.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from statistics import median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--test", type=int, default=100)
    args = ap.parse_args()

    from posemachines.api import evaluate
    from posemachines.backends.cnn.settings import CNNSettings
    from posemachines.backends.forest.settings import ForestSettings
    from posemachines.backends.stack import train_stack
    from posemachines.data import load_dataset
    from posemachines.registry import TrainingRun

    forest = ForestSettings(
        stages=2,
        trees=10,
        depth=None,
        input_size=96,
        stride=4,
        sigma=4.0,
        hog_cells=(6, 12),
        colour_cell=8,
        background=60,
        similarity=((3, 5), (6, 3)),
    )
    test = load_dataset("synthetic", "test", size=args.test, seed=0)
    rows = []
    print("seed   CNN   cross-fitted (gain)   in sample (gain)")
    for seed in args.seeds:
        cnn = CNNSettings(
            config="cpm-small",
            epochs=40,
            batch_size=16,
            lr=3e-3,
            scale=(1.0, 1.0),
            rotation=0.0,
            flip=0.0,
            seed=seed,
        )
        train = load_dataset("synthetic", "train", size=args.train, seed=seed)
        pck = {}
        with tempfile.TemporaryDirectory() as tmp:
            for folds in (3, 1):
                model = train_stack(
                    train,
                    "cnn:1,forest:1",
                    {"cnn": cnn, "forest": forest},
                    TrainingRun(Path(tmp) / str(folds), seed=seed),
                    folds=folds,
                )
                pck[folds] = [100 * s["pck@0.2"] for s in evaluate(model, test).per_stage]
        cross, naive = pck[3][1] - pck[3][0], pck[1][1] - pck[1][0]
        rows.append((cross, naive))
        print(
            f"{seed:4d} {pck[3][0]:5.1f}   {pck[3][1]:5.1f} ({cross:+.1f})        "
            f"{pck[1][1]:5.1f} ({naive:+.1f})"
        )
    gains = [c for c, _ in rows]
    wins = sum(c > n for c, n in rows)
    print(
        f"median gain: cross-fitted {median(gains):+.1f}, in sample "
        f"{median(n for _, n in rows):+.1f}; cross-fitted ahead on {wins} of {len(rows)} seeds; "
        f"smallest cross-fitted gain {min(gains):+.1f}"
    )


if __name__ == "__main__":
    main()
