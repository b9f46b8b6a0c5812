"""The CPM paper's first experiment: intermediate supervision against vanishing gradients.

Trains the same CPM twice from the same seed, with a loss at every stage (``--supervision
all``) and with the loss on the last stage only (``final``), summarising each stage's gradient
magnitudes every ``--grad-every`` steps; compares the two (accuracy by stage, gradient
histograms early, midway and at the end) and prints the figures.

    python benchmarks/supervision_experiment.py                        # synthetic, 2 CPU cores
    python benchmarks/supervision_experiment.py --device cuda --data lsp_lspet.npz \\
        --dataset lsp --config cpm-gpu --epochs 30

The paper's claim: without intermediate supervision the gradients that reach the early stages
are small (vanishing), and the early stages learn less; with it they stay large everywhere.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from experiment import compare_runs, experiment_options, training_set

from posemachines.backends.cnn.figures import training_gradients
from posemachines.backends.cnn.settings import CNNSettings
from posemachines.backends.cnn.trainer import train_cnn


def main():
    ap = experiment_options(__doc__, "runs/supervision", stages=6)  # the paper's network has 6
    ap.add_argument("--grad-every", type=int, default=25)
    args = ap.parse_args()
    train = training_set(args)
    base = CNNSettings.from_options(
        config=args.config,
        device=args.device,
        stages=args.stages,
        epochs=args.epochs,
        grad_every=args.grad_every,
        seed=args.seed,
    )
    runs = {}
    for supervision in ("all", "final"):
        out = Path(args.out) / supervision
        start = time.time()
        model = train_cnn(
            train, replace(base, supervision=supervision), out, packed=args.data, progress=True
        )
        model.save(out)
        runs[supervision] = (out, round(time.time() - start, 1))
    report, entries = compare_runs(args, [runs["all"][0], runs["final"][0]])
    figures = {"report": str(report / "report.html")}
    for entry, (supervision, (out, seconds)) in zip(entries, runs.items()):
        gradients = training_gradients(out)
        figures[supervision] = {
            "train_seconds": seconds,
            "pck@0.2_by_stage": [
                round(100 * s["pck@0.2"], 1) for s in entry["result"]["per_stage"]
            ],
            "median_gradient_by_stage": {
                f"step {g['step']}": {name: f"{s['q50']:.2e}" for name, s in g["gradients"].items()}
                for g in gradients
            },
        }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
