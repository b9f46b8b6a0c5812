"""What the CPM experiment scripts share: their options, their training data, their report.

from experiment import compare_runs, experiment_options, training_set
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from posemachines.api import compare
from posemachines.data import load_dataset


def experiment_options(doc: str, out: str, stages: int) -> argparse.ArgumentParser:
    """The options every experiment takes; a script adds its own."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default=out)
    ap.add_argument("--config", default="cpm-small")
    ap.add_argument("--stages", type=int, default=stages)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--synthetic-size", type=int, default=2000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data", default=None, help="a pack file to train on instead")
    ap.add_argument("--dataset", default="synthetic", help="scored on its test split")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def training_set(args):
    """The synthetic training figures, or None when a pack file (--data) is given."""
    if args.data is not None:
        return None
    return load_dataset("synthetic", "train", size=args.synthetic_size, seed=args.seed)


def compare_runs(args, folders) -> tuple[Path, list[dict]]:
    """The report of the runs (in ``OUT/report``) and its entries."""
    report = compare(
        list(folders),
        dataset=args.dataset,
        data_root=args.data_root,
        out=Path(args.out) / "report",
        overwrite=True,
        device=args.device,
    )
    return report, json.loads((report / "results.json").read_text())["entries"]
