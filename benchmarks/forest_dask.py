"""Forest training on a dask cluster: the speed-up with 2 local workers against 1.

Starts a ``dask.distributed`` scheduler with 1, then 2 single-threaded worker processes on
127.0.0.1, trains the same forest on each (through ``pm``'s ``dask_backend``, as
``pm train --dask ADDRESS`` does), checks that the models are identical array for array, and
prints the wall times and the speed-up. Run it on an otherwise idle machine.

    python benchmarks/forest_dask.py [--size 400] [--stages 2] [--trees 40]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from posemachines.backends.forest.settings import ForestSettings
from posemachines.backends.forest.trainer import ForestTrainer
from posemachines.backends.forest.tree_arrays import forest_to_arrays
from posemachines.data import load_dataset
from posemachines.parallel import dask_backend
from posemachines.registry import TrainingRun


def train_on_cluster(dataset, settings, workers: int):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        with dask_backend(cluster.scheduler_address), tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            model = ForestTrainer(settings, TrainingRun(Path(out))).fit(dataset).model_
            return model, time.perf_counter() - start


def same_forests(a, b) -> bool:
    for sa, sb in zip(a.stages, b.stages):
        for key in ("forest_", "part_forest_"):
            if getattr(sa, key) is None:
                continue
            x, _ = forest_to_arrays(getattr(sa, key))
            y, _ = forest_to_arrays(getattr(sb, key))
            if x.keys() != y.keys() or not all(np.array_equal(x[k], y[k]) for k in x):
                return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=400, help="synthetic training figures")
    ap.add_argument("--stages", type=int, default=2)
    ap.add_argument("--trees", type=int, default=40)
    args = ap.parse_args()
    dataset = load_dataset("synthetic", "train", size=args.size, seed=0)
    settings = ForestSettings(stages=args.stages, trees=args.trees)
    one, one_s = train_on_cluster(dataset, settings, 1)
    two, two_s = train_on_cluster(dataset, settings, 2)
    print(
        json.dumps(
            {
                "images": args.size,
                "stages": args.stages,
                "trees": args.trees,
                "seconds_1_worker": round(one_s, 1),
                "seconds_2_workers": round(two_s, 1),
                "speed_up": round(one_s / two_s, 2),
                "identical_models": same_forests(one, two),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
