#!/usr/bin/env bash
# Fine-tune the default model for real fields on a GPU machine, in two steps that fit the
# device tool's 64 MiB transfer limit (the bank and the packed real pairs travel separately;
# the synthesized set stays on the machine between the two calls):
#   bash scripts/train_real_gpu.sh synth BANK [TRAIN_TILES] [SEED]
#   [LR=5e-4] [LR_LATE=1e-4] [DROP_AT=0.6] [REAL_REPEAT=20] [FREEZE_ENCODER=1] [DISTILL=1] [DISTILL_WHERE=all|unlabelled] \
#   [DISTILL_CLASSES=all|wbc] [WORKERS=N] [SYNTH_TILES=N] [BATCH=32] \
#     bash scripts/train_real_gpu.sh train PACKED_PAIRS OUT MINUTES [INIT]
# PACKED_PAIRS comes from `python scripts/pairs_pack.py pack PAIRS PACKED_PAIRS` (pairs from
# scripts/make_real_pairs.py). Training mixes every synthesized tile with REAL_REPEAT random
# windows of each real field per epoch, with the wide augmentation.
set -euo pipefail
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
ROOT=${SYNTH_DIR:-/tmp/bloodseg_synth}
CPUS=$(nproc)
T0=$(date +%s)
python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
case $1 in
synth)
  python -m napari_bloodseg.cli synth --bank "$2" --out "$ROOT" --train "${3:-40000}" --val 300 --test 0 \
    --seed "${4:-3}" --workers "$CPUS" -q
  echo "synthesized in $(( $(date +%s) - T0 )) s" ;;
train)
  [ -f "$ROOT/synth.json" ] || { echo "no synthesized set in $ROOT: run the synth step first"; exit 3; }
  PAIRS=${PAIRS_DIR:-/tmp/bloodseg_pairs}
  rm -rf "$PAIRS"; python scripts/pairs_pack.py unpack "$2" "$PAIRS" --workers "$CPUS"
  echo "unpacked in $(( $(date +%s) - T0 )) s"
  python scripts/train_default.py --out "$3" --synth "$ROOT" --tiles 0 --val-tiles 1 --real "$PAIRS" \
    --real-repeat "${REAL_REPEAT:-20}" ${SYNTH_TILES:+--synth-tiles "$SYNTH_TILES"} --width 16 --device "${DEVICE:-cuda}" --batch-size "${BATCH:-32}" \
    --workers ${WORKERS:-$(( CPUS > 2 ? CPUS - 2 : 1 ))} --epochs 1000 --minutes "$4" --drop-at "${DROP_AT:-0.6}" \
    --lr "${LR:-5e-4}" --lr-late "${LR_LATE:-1e-4}" ${5:+--init "$5"} ${FREEZE_ENCODER:+--freeze-encoder} ${DISTILL:+--distill "$DISTILL" --distill-where "${DISTILL_WHERE:-all}" --distill-classes "${DISTILL_CLASSES:-all}"}
  echo "total $(( $(date +%s) - T0 )) s" ;;
*) echo "usage: $0 synth BANK [TRAIN_TILES] [SEED] | train PACKED_PAIRS OUT MINUTES [INIT]"; exit 2 ;;
esac
