#!/usr/bin/env bash
# Every GPU check of the CNN, for one H100/H200, in two calls of at most ten minutes each and
# at most 64 MiB of files (code included):
#
#   bash benchmarks/gpu_check.sh prepare   # here, with the data root: writes .gpu/ (~56 MiB)
#   bash benchmarks/gpu_check.sh recipe    # GPU: the README's 8-minute LSP recipe + evaluation
#   bash benchmarks/gpu_check.sh rest      # GPU: throughput, the CUDA default's curve, tests
#
# Measured on one H200 (2026-11-28): `recipe` took 523 s, `rest` (with the throughput part
# failing to import, since fixed) 138 s, the throughput part alone 166 s: after a start of about
# a minute, the two fill a 15-minute lease.
#
# `prepare` packs LSP train + LSPET (10,000 crops of 224 px, person box x 1.4, WebP q75) and
# copies LSP's test half (images 1001-2000 and joints.mat), which is evaluated from the
# original images under the image-only protocol. The GPU halves write what they measure to
# $OUT (default runs/gpu-check): small files in results-*.tar.gz, the recipe's weights in
# pieces of 15 MB (rebuild with `cat network1.safetensors.part-* > network1.safetensors`).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
DATA_ROOT="${DATA_ROOT:-../shared/data}"
DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu BUDGET=0.3 dry-runs the plumbing on a CPU
BUDGET="${BUDGET:-8}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

pm() { python3 -m posemachines.cli.main "$@"; }

setup() {
  # A machine without the package installed (and nothing to install from) runs it in place.
  # (checked from another folder: python3 -c would find the package in the current one)
  if ! (cd / && python3 -c "import posemachines.cli.main" 2>/dev/null); then
    [ -e posemachines/cli ] || ln -s ../cli posemachines/cli
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c "import torch, PIL; print('torch', torch.__version__, 'pillow', PIL.__version__)"
}

pack_results() {  # $1: name; small files of $OUT into one archive
  (cd "$OUT" && tar czf "results-$1.tar.gz" --exclude='*.tar.gz' --exclude='*.part-*' \
    $(ls | grep -v -e '\.tar\.gz$' -e '\.part-') && find . -maxdepth 1 -type f \
    ! -name '*.tar.gz' ! -name '*.part-*' -delete)
}

case "${1:-recipe}" in
  prepare)
    mkdir -p .gpu/data/lsp/images
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    cp "$DATA_ROOT/lsp/joints.mat" .gpu/data/lsp/
    for i in $(seq 1001 2000); do cp "$DATA_ROOT/lsp/images/im$i.jpg" .gpu/data/lsp/images/; done
    pm data pack lsp:train lspet --data-root "$DATA_ROOT" --side 224 --pad 1.4 --format webp \
      --quality 75 --out .gpu/lsp_lspet.npz --overwrite
    du -sh .gpu
    ;;
  recipe)
    setup 2>&1 | tee "$OUT/recipe.log"
    rm -rf runs/cnn-lsp-gpu
    start=$(date +%s)
    pm train --backend cnn --device "$DEVICE" --data .gpu/lsp_lspet.npz --time-budget "$BUDGET" \
      --out runs/cnn-lsp-gpu 2> "$OUT/train_stderr.log" | tee -a "$OUT/recipe.log"
    echo "pm train took $(( $(date +%s) - start )) s" | tee -a "$OUT/recipe.log"
    cp runs/cnn-lsp-gpu/manifest.json runs/cnn-lsp-gpu/train_log.jsonl "$OUT/"
    pm evaluate runs/cnn-lsp-gpu --dataset lsp --split test --data-root .gpu/data --device "$DEVICE" \
      --json > "$OUT/eval.json" 2>> "$OUT/recipe.log"
    pm evaluate runs/cnn-lsp-gpu --dataset lsp --split test --data-root .gpu/data --device "$DEVICE" \
      --flip --scales 0.7,1.0,1.3 --json > "$OUT/eval_tta.json" 2>> "$OUT/recipe.log"
    for f in eval eval_tta; do
      python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
print(sys.argv[2], 'LSP test PCK@0.2 by stage', [round(100*s['pck@0.2'],1) for s in d['per_stage']], \
d['test_time_augmentation'])" "$OUT/$f.json" "$f" | tee -a "$OUT/recipe.log"
    done
    split -b 15M runs/cnn-lsp-gpu/network1.safetensors "$OUT/network1.safetensors.part-"
    pack_results recipe
    ;;
  rest)
    setup 2>&1 | tee "$OUT/rest.log"
    # Throughput of the paper's network at 368 px, batch 32: the compiled path pm train uses,
    # eager with and without the padded colour channels, a profile, the bounded fp32 baseline.
    timeout 300 python3 benchmarks/cnn_throughput.py --device cuda --config cpm-paper \
      --batch 32 --steps 10 --max-seconds 8 --modes default,max-autotune-no-cudagraphs \
      --sweep --profile 2>&1 | grep -v -i warn | tee "$OUT/throughput.log"
    # The CUDA default with no option but the data: its first epochs (stopped at 90 s).
    rm -rf runs/cnn-default
    timeout 90 python3 -m posemachines.cli.main train --backend cnn --device cuda \
      --data .gpu/lsp_lspet.npz --out runs/cnn-default > "$OUT/default.log" 2> /dev/null
    cp runs/cnn-default/train_log.jsonl "$OUT/default_train_log.jsonl"
    timeout 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_cnn.py --device cuda \
      2>&1 | tail -5 | tee "$OUT/tests.log"
    pack_results rest
    ;;
  *)
    echo "usage: $0 prepare|recipe|rest" >&2
    exit 2
    ;;
esac
