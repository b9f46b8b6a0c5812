#!/usr/bin/env bash
# The README's comparison on LSP test, all trained on LSP train (1-1000) on a 2-core CPU: the
# mean pose, the forest Pose Machine, a CPM (cpm-small), and the two cross-fitted stacks
# cnn:1,forest:2 and forest:1,cnn:2, each shown beside its lower part.
#   DATA_ROOT=../shared/data bash benchmarks/compare_lsp.sh [OUT]
set -euo pipefail
OUT=${1:-runs/lsp}
ROOT=${DATA_ROOT:-../shared/data}
FOREST=(--trees 60 --min-samples-leaf 5 --depth 25)
CNN=(--config cpm-small --device cpu --epochs "${CNN_EPOCHS:-12}" --lr 2e-3)
LSP=(--dataset lsp --data-root "$ROOT")
[ -f "$OUT/mean/manifest.json" ] || pm train --backend mean "${LSP[@]}" --out "$OUT/mean"
[ -f "$OUT/forest/manifest.json" ] || pm train --backend forest "${LSP[@]}" "${FOREST[@]}" \
  --out "$OUT/forest"
[ -f "$OUT/cnn/manifest.json" ] || pm train --backend cnn "${LSP[@]}" "${CNN[@]}" --out "$OUT/cnn"
[ -f "$OUT/cnn1-forest2/manifest.json" ] || pm train --stack cnn:1,forest:2 "${LSP[@]}" \
  "${CNN[@]}" "${FOREST[@]}" --out "$OUT/cnn1-forest2"
[ -f "$OUT/forest1-cnn2/manifest.json" ] || pm train --stack forest:1,cnn:2 "${LSP[@]}" \
  "${CNN[@]}" "${FOREST[@]}" --out "$OUT/forest1-cnn2"
pm compare "$OUT/mean" "$OUT/forest" "$OUT/cnn" "$OUT/cnn1-forest2" "$OUT/forest1-cnn2" \
  "${LSP[@]}" --split test --device cpu --out "$OUT/report" --overwrite
