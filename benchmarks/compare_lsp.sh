#!/usr/bin/env bash
# The README's comparison on LSP test: mean pose, forest Pose Machine, CPM (cpm-small, CPU) and a
# hybrid (forest stages on the CPM's first stage), all trained on LSP train (1-1000).
#   DATA_ROOT=../shared/data bash benchmarks/compare_lsp.sh [OUT]
set -euo pipefail
OUT=${1:-runs/lsp}
ROOT=${DATA_ROOT:-../shared/data}
[ -f "$OUT/mean/manifest.json" ] || pm train --backend mean --dataset lsp --data-root "$ROOT" --out "$OUT/mean"
[ -f "$OUT/forest/manifest.json" ] || pm train --backend forest --dataset lsp --data-root "$ROOT" \
  --trees 60 --min-samples-leaf 5 --depth 25 --out "$OUT/forest"
[ -f "$OUT/cnn/manifest.json" ] || pm train --backend cnn --config cpm-small --device cpu --dataset lsp \
  --data-root "$ROOT" --epochs "${CNN_EPOCHS:-12}" --lr 2e-3 --out "$OUT/cnn"
[ -f "$OUT/hybrid/manifest.json" ] || pm train --backend forest --init "$OUT/cnn" --init-stages 1 --stages 2 \
  --dataset lsp --data-root "$ROOT" --out "$OUT/hybrid"
pm compare "$OUT/mean" "$OUT/forest" "$OUT/cnn" "$OUT/hybrid" --dataset lsp --split test \
  --data-root "$ROOT" --out "$OUT/report"
