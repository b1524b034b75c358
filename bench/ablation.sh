#!/usr/bin/env bash
# Equal-budget recipe comparison on FER2013: each recipe trains EPOCHS epochs from the same seed,
# then evaluate.py scores its saved model on the test split (PublicTest for the Kaggle layout)
# without and with test-time augmentation. One job at a time: on a small CPU a second process
# halves the first one's speed and spoils its wall time.
#
#   bash bench/ablation.sh ../fer2013             # 4 epochs each, --weights none (offline)
#   EPOCHS=15 WEIGHTS=imagenet bash bench/ablation.sh data/fer2013
#
# Writes models/ablation_<recipe>.pt, runs/ablation_<recipe>/ and runs/ablation_logs/*.{log,jsonl};
# each training log ends with its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: bash bench/ablation.sh DATA_DIR (holding train/ and test/)}
EPOCHS=${EPOCHS:-4}
WEIGHTS=${WEIGHTS:-none}
LOGS=runs/ablation_logs
mkdir -p "$LOGS"

run() {  # run NAME FLAGS...: train, then evaluate with every TTA mode
    local name=ablation_$1; shift
    local started=$SECONDS
    python train_resnet34.py --data "$DATA" --weights "$WEIGHTS" --epochs "$EPOCHS" --name "$name" --quiet "$@" \
        > "$LOGS/$name.log" 2>&1
    echo "wall $((SECONDS - started)) s" >> "$LOGS/$name.log"
    python evaluate.py --checkpoint "models/$name.pt" --split "$DATA/test" --tta none flip tencrop --quiet \
        > "$LOGS/$name.jsonl"
    echo "$name: $(tail -2 "$LOGS/$name.log" | head -1)"
    cat "$LOGS/$name.jsonl"
}

run seed                                             # the seed recipe (Adam 1e-4, constant)
run onecycle --schedule onecycle --lr 1e-3           # the seed's Adam with a one-cycle schedule
run sgdcosine --optimizer sgd --nesterov --lr 0.05 --weight-decay 5e-4 --schedule cosine --warmup-epochs 1
                                                     # the strong recipe's optimisation, no regularisers
run strong48 --recipe strong --img-size 48           # the strong recipe at the seed's input size
