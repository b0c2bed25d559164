#!/usr/bin/env bash
# The GPU runs behind the shipped default model (see models/MODEL_CARD.md): synthesize a large set from
# the permissive bank on all cores, train with a wall-clock budget, evaluate on the synthetic test split.
#   [SEED=S] [DROP_AT=F] [LR=1e-3] [LR_LATE=1e-4] bash scripts/train_default_gpu.sh BANK OUT [TRAIN_TILES] [BUDGET_S] [WIDTH] [INIT]
# BUDGET_S bounds the whole script (synthesis included); training gets what is left minus 85 s.
# Validation and test splits always come from seed 0; SEED (default 0) draws the training split, so a
# second run from INIT sees fresh compositions while being measured on the same test split.
set -euo pipefail
T0=$(date +%s)
BANK=$1; OUT=$2; N=${3:-40000}; BUDGET=${4:-540}; WIDTH=${5:-16}; INIT=${6:-}
SEED=${SEED:-0}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
ROOT=${SYNTH_DIR:-/tmp/bloodseg_synth}
CPUS=$(nproc)
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
synth() {  # OUT TRAIN VAL TEST SEED
  [ -f "$1/synth.json" ] || python -m napari_bloodseg.cli synth --bank "$BANK" --out "$1" --train "$2" --val "$3" \
    --test "$4" --seed "$5" --workers "$CPUS" 2>&1 | tr '\r' '\n' | grep -v '^synth:' || true
}
if [ "$SEED" = 0 ]; then
  synth "$ROOT/s0" "$N" 500 300 0; SYNTH=$ROOT/s0
else
  synth "$ROOT/s0" 0 500 300 0
  synth "$ROOT/s$SEED" "$N" 0 0 "$SEED"
  SYNTH=$ROOT/mix; mkdir -p "$SYNTH"
  ln -sfn "$ROOT/s$SEED/train" "$SYNTH/train"; ln -sfn "$ROOT/s0/val" "$SYNTH/val"
fi
echo "synthesized after $(( $(date +%s) - T0 )) s"
LEFT=$(( BUDGET - ($(date +%s) - T0) - 85 ))
MIN=$(python -c "print(max(0.5, $LEFT / 60))")
echo "training for $MIN min"
python scripts/train_default.py --out "$OUT/run" --synth "$SYNTH" --tiles 4000 --val-tiles 1 --width "$WIDTH" \
  --device "${DEVICE:-cuda}" --batch-size 32 --workers $(( CPUS - 2 )) --render-procs "$CPUS" --epochs 1000 \
  --minutes "$MIN" --drop-at "${DROP_AT:-0.6}" --lr "${LR:-1e-3}" --lr-late "${LR_LATE:-1e-4}" ${INIT:+--init "$INIT"}
python -m napari_bloodseg.cli evaluate --model "$OUT/run/best.safetensors" --data "$ROOT/s0" --split test \
  --out "$OUT/eval" --device "${DEVICE:-cuda}"
echo "total $(( $(date +%s) - T0 )) s"
