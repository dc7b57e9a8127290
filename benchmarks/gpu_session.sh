#!/usr/bin/env bash
# Every SAM speed benchmark on one CUDA GPU, in order of importance, each part under its own time limit so that one
# that hangs or fails leaves the others' results. Results (JSON) and the log go to $OUT (default benchmarks/results/new).
#   bash benchmarks/gpu_session.sh            # about 5-8 minutes on an H100/H200, compilation included
# A quick dry run on the CPU (tiny sizes, checks that every part runs):
#   DRY=1 bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-$PWD/benchmarks/results/new}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
cd "$(dirname "$0")"
if [ -n "${DRY:-}" ]; then
    ATT="--device cpu --sizes 128 --encoder-bs 2 --bs 1 --block-grid 16 --seconds 0.3"; BIG=128
    TRAIN="--device cpu --arch tiny --size 128 --bs 2 --steps 2"; EMB="--device cpu --arch tiny --sizes 128 64 --n 8"
    COMP="--device cpu --sizes 128 --encoder-bs 2 --seconds 0.3"; FULL="--cpu-check --names wbc_classifier --steps 1"
else
    ATT=""; BIG=1024; TRAIN=""; EMB="--sizes 1024 224 --n 128 1024"; COMP="--sizes 1024 --encoder-bs 16"; FULL="--steps 5"
fi
log() { tee -a "$OUT/log.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.used,utilization.gpu --format=csv 2>&1 | log
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" | log

echo "== attention blocks and gradients" | log
timeout 120 $PY sam_attention.py $ATT --parts blocks gradients --out "$OUT/sam_attention_blocks.json" 2>&1 | log
echo "== whole encoder, eager" | log
timeout 100 $PY sam_attention.py $ATT --parts encoder --out "$OUT/sam_attention_encoder.json" 2>&1 | log
# the fastest (form, precision) on the largest size drives the training, pipeline and compiled runs below
read FORM PREC < <($PY - "$OUT/sam_attention_encoder.json" $BIG <<'PYEOF'
import json, sys
try:
    rs = [r for r in json.load(open(sys.argv[1]))['encoder']
          if r['size'] == int(sys.argv[2]) and r.get('img_s') and r['path'] != 'seed']
    b = max(rs, key=lambda r: r['img_s']); print(b['attention'], b['precision'])
except Exception: print('folded amp')
PYEOF
)
echo "== fastest at $BIG px: $FORM, $PREC" | log
echo "== SAMed training step" | log
timeout 120 $PY samed_train_step.py $TRAIN --attention "$FORM" --compile --out "$OUT/samed_train_step.json" 2>&1 | log
echo "== embedding pipeline" | log
timeout 120 $PY sam_embed.py $EMB --rounds 1 --draft --stages --attention "$FORM" --precision "$PREC" \
    --out "$OUT/sam_embed.json" 2>&1 | log
echo "== whole encoder, compiled" | log
timeout 130 $PY sam_attention.py $COMP --parts encoder --compile --forms "$FORM" \
    --out "$OUT/sam_attention_compiled.json" 2>&1 | log
echo "== full presets: dry runs at paper batch sizes, peak GPU memory and items/s (needs papermill + ipykernel)" | log
timeout 420 $PY full_presets.py $FULL --out "$OUT/full_presets.json" 2>&1 | log
echo "== done" | log
