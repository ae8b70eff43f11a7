#!/usr/bin/env bash
# The one prepared GPU run: within 9 minutes on one GPU it
#   1. runs the kernel tests compiled (TRITON_INTERPRET=0),
#   2. runs benchmarks/layers.py, models.py and profile_heads.py with --device cuda,
#   3. fine-tunes TP, STGCN and CTL end to end at 256 x 128 with ImageNet Lite0 (cuhk03-pair1
#      when ../shared/data is there, else the synthetic set) for GPU_EPOCHS epochs (default 4),
# and writes JSON under benchmarks/results/ (gpu_*.json; gpu_finetune.json sums up step 3).
#
#   bash benchmarks/gpu.sh           # on a GPU machine
#   bash benchmarks/gpu.sh --quick   # CPU smoke test of the same steps (CI): tiny sizes,
#                                    # 1 epoch, JSON in a temporary folder
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = "--quick" ]; then QUICK=1; fi
START=$(date +%s)
RUNS=$(mktemp -d)
step() { echo "== [$(( $(date +%s) - START )) s] $*"; }

if [ "$QUICK" = 1 ]; then
    DEV=cpu; OUT=$(mktemp -d); Q=--quick; EPOCHS=1; H=64; W=32
    KERNEL_TESTS=(-k "affinity and not bfloat16")  # a few, under the interpreter
    export TRITON_INTERPRET=1
else
    DEV=cuda; OUT=benchmarks/results; Q=; EPOCHS=${GPU_EPOCHS:-4}; H=256; W=128
    KERNEL_TESTS=()  # all of them, compiled
    export TRITON_INTERPRET=0
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU: run bash benchmarks/gpu.sh --quick for the CPU smoke test')"
fi

step "kernel tests (TRITON_INTERPRET=$TRITON_INTERPRET)"
python -m pytest -q -p no:cacheprovider tests/kernels "${KERNEL_TESTS[@]}" > "$RUNS/kernels.log" \
    || { tail -30 "$RUNS/kernels.log"; exit 1; }
tail -1 "$RUNS/kernels.log"

step "layers.py --device $DEV"
python benchmarks/layers.py --device "$DEV" $Q --out "$OUT/gpu_layers.json" > "$RUNS/layers.log"
tail -25 "$RUNS/layers.log"
step "models.py --device $DEV"
python benchmarks/models.py --device "$DEV" $Q --out "$OUT/gpu_models.json" > "$RUNS/models.log"
tail -15 "$RUNS/models.log"
step "profile_heads.py --device $DEV"
python benchmarks/profile_heads.py --device "$DEV" $Q --out "$OUT/gpu_profile_heads.json" \
    > "$RUNS/profile_heads.log" 2>&1
grep -v "^USDT" "$RUNS/profile_heads.log" | head -8

DATA=(--dataset synthetic)
if [ "$QUICK" = 0 ] && [ -d ../shared/data/cuhk03-pair1 ]; then
    R=../shared/data/cuhk03-pair1
    DATA=(--dataset prid2011 --root "$R" --split-file "$R/splits.json" --split-id 0 --keypoints "$R/keypoints.json")
fi
for MODEL in tp stgcn ctl; do
    step "fine-tune $MODEL, $H x $W, $EPOCHS epochs on $DEV"
    python -m stgraph train --model "$MODEL" "${DATA[@]}" --backbone efficientnet_lite0 --pretrained imagenet \
        --height "$H" --width "$W" --seq-len 4 --batch-ids 16 --batch-instances 2 \
        --epochs "$EPOCHS" --eval-every "$EPOCHS" --device "$DEV" --workers 4 --no-progress \
        --output "$RUNS/$MODEL" > "$RUNS/$MODEL.log" 2>&1 || { tail -20 "$RUNS/$MODEL.log"; exit 1; }
    tail -2 "$RUNS/$MODEL.log"
done

python - "$RUNS" "$OUT/gpu_finetune.json" "$DEV" "$H" "$W" "$EPOCHS" <<'EOF'
import json, sys
from pathlib import Path
runs, out, dev, h, w, epochs = sys.argv[1:]
rows = []
for model in ("tp", "stgcn", "ctl"):
    m = json.loads((Path(runs) / model / "metrics.json").read_text())
    rows.append({"model": model, **{k: m.get(k) for k in (
        "rank1", "rank5", "mAP", "metric", "seconds_per_epoch", "eval_seconds", "dataset")}})
    print(f"{model:6s} rank-1 {100 * m['rank1']:5.1f}  mAP {100 * m['mAP']:5.1f}  "
          f"{m['seconds_per_epoch']:.1f} s/epoch")
Path(out).write_text(json.dumps({"device": dev, "height": int(h), "width": int(w),
                                 "epochs": int(epochs), "finetune": rows}, indent=1))
EOF
rm -rf "$RUNS"
step "done: JSON in $OUT"
