"""Learning curve of a CNN run from its OUT/train_log.jsonl: prints the validation points and
draws loss and validation PCK@0.2 per stage against the training step.

    python benchmarks/learning_curve.py runs/cnn-lsp-gpu/train_log.jsonl --out curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("log", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="PNG to draw (default: none)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    records = [json.loads(line) for line in args.log.read_text().splitlines() if line.strip()]
    val = [r for r in records if "val_pck@0.2_per_stage" in r]
    print("step   epoch   loss     val PCK@0.2 by stage (%)")
    for r in val:
        pck = " ".join(f"{100 * v:5.1f}" for v in r["val_pck@0.2_per_stage"])
        print(f"{r['step']:5d} {r['epoch']:7.1f}  {r['loss']:.4f}   {pck}")
    if args.out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_pck) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = [r["step"] for r in records]
    n_stages = len(records[0]["loss_per_stage"])
    for t in range(n_stages):
        ax_loss.plot(steps, [r["loss_per_stage"][t] for r in records], label=f"stage {t + 1}")
        ax_pck.plot(
            [r["step"] for r in val],
            [100 * r["val_pck@0.2_per_stage"][t] for r in val],
            marker=".",
            label=f"stage {t + 1}",
        )
    ax_loss.set(xlabel="step", ylabel="training loss (masked MSE)", yscale="log")
    ax_pck.set(xlabel="step", ylabel="validation PCK@0.2 (%)", ylim=(0, 100))
    for ax in (ax_loss, ax_pck):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(args.title or str(args.log))
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"figure written to {args.out}")


if __name__ == "__main__":
    main()
