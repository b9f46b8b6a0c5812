"""The CPM paper's second experiment: accuracy against receptive field.

Trains CPMs whose stages see ever more of the image, and scores the joints near the body's
centre (head, shoulders) and far down the kinematic chain (elbows, wrists, knees, ankles)
stage by stage, against each stage's analytic receptive field (and the effective one, the
radius holding 95 % of the input gradient). Two networks differ only in the kernel of their
refinement stages, so the same number of stages reaches two different fields.

    python benchmarks/receptive_field_experiment.py                    # synthetic, 2 CPU cores
    python benchmarks/receptive_field_experiment.py --device cuda --data lsp_lspet.npz \\
        --dataset lsp --config cpm-gpu --epochs 30

The paper's claim: accuracy grows with the receptive field, most for the joints far down the
chain, and the field is best enlarged by more layers and stages.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from experiment import compare_runs, experiment_options, training_set

from posemachines.backends.cnn.analysis import effective_radius, effective_receptive_fields
from posemachines.backends.cnn.config import CONFIGS
from posemachines.backends.cnn.settings import CNNSettings
from posemachines.backends.cnn.trainer import train_cnn
from posemachines.loading import load_model


def main():
    ap = experiment_options(__doc__, "runs/receptive-field", stages=4)
    ap.add_argument("--kernels", default="3,7", help="refinement kernels of the networks")
    args = ap.parse_args()
    train = training_set(args)
    outs = []
    for kernel in (int(k) for k in args.kernels.split(",")):
        name = f"{args.config}-k{kernel}"
        CONFIGS[name] = replace(CONFIGS[args.config], stages=args.stages, refine_kernel=kernel)
        settings = CNNSettings.from_options(
            config=name, device=args.device, epochs=args.epochs, seed=args.seed
        )
        out = Path(args.out) / name
        train_cnn(train, settings, out, packed=args.data, progress=True).save(out)
        outs.append(out)
    report, entries = compare_runs(args, outs)
    figures = {"report": str(report / "report.html")}
    for out, entry in zip(outs, entries):
        network = next(s.network for s in load_model(out).stages if s.kind == "cnn")
        erf = [round(effective_radius(m), 1) for m in effective_receptive_fields(network.module)]
        figures[out.name] = {
            "receptive_field_px": entry["receptive_field_px"],
            "effective_r95_px": erf,
            "pck@0.2_by_group_and_stage": {
                group: [round(100 * v, 1) for v in values]
                for group, values in entry["pck_by_group_and_stage"].items()
            },
        }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
