#!/usr/bin/env bash
# CPM on LSP (+ LSPET) on one GPU, in one command of at most 10 minutes with at most 64 MiB of
# files (code included). Two halves:
#
#   bash benchmarks/cnn_lsp_gpu.sh prepare   # here, with ../shared/data: writes .gpu/ (ignored)
#   bash benchmarks/cnn_lsp_gpu.sh run       # on the GPU machine, with .gpu carried along
#
# `prepare` packs LSP train + LSPET as 128-px crops (JPEG q80, about 40 MB) and copies LSP's
# 15 MB (the test split is evaluated from the original images under the image-only protocol).
# `run` installs, trains for at most 8 minutes and prints `pm evaluate --json`.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  prepare)
    mkdir -p .gpu/data
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    cp -r "${DATA_ROOT:-../shared/data}/lsp" .gpu/data/
    pm data pack lsp:train lspet --data-root "${DATA_ROOT:-../shared/data}" \
      --side 128 --quality 80 --out .gpu/lsp_lspet.npz
    du -sh .gpu
    ;;
  run)
    python3 -m pip install -q -e ".[cnn]"
    # Untested on a GPU so far (no machine was lent): EPOCHS is the knob that sets the time.
    pm train --backend cnn --config "${CONFIG:-cpm-small}" --device cuda \
      --data .gpu/lsp_lspet.npz --epochs "${EPOCHS:-40}" --batch-size 128 --lr 2e-3 \
      --out runs/cnn-lsp-gpu
    pm evaluate runs/cnn-lsp-gpu --dataset lsp --split test --data-root .gpu/data \
      --device cuda --json
    ;;
esac
