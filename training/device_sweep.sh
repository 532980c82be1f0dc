#!/usr/bin/env bash
# Several worked-solution policy variants trained at once on one GPU (one `run` call, carry
# [".train/data"]): each variant is `name:extra train_policy.py args`, all share the schedule
# below and write $OUT/<name>.safetensors (the final checkpoint); logs go to $OUT/logs.tar.xz.
#
#   bash training/device_sweep.sh "d55:--direct 0.55" "w192:--dim 192 --heads 6 --ffn 576"
#   env: STEPS=2600  LIMIT=540 (seconds before unfinished runs are stopped)
#        TRAIN_LIMIT=360 (train_policy's --time-limit: training ends after 1.1x this many
#        seconds even inside the schedule; the step it ended at is in the log, and
#        `--steps STEPS --stop-at <step>` retrains the same run)
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-.train/sweep}
STEPS=${STEPS:-2600}
LIMIT=${LIMIT:-540}
TRAIN_LIMIT=${TRAIN_LIMIT:-360}
mkdir -p "$OUT/logs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
for spec in "$@"; do
  name=${spec%%:*}
  extra=${spec#*:}
  # shellcheck disable=SC2086
  timeout "$LIMIT" python3 training/train_policy.py --out "$OUT/run-$name" --worked --max-new 700 \
    --steps "$STEPS" --eval-every "$STEPS" --final-count 1 --final-dev 300 --final-sampled 150 \
    --test-temps "" --keep 0 --eval-batch 1024 --time-limit "$TRAIN_LIMIT" $extra > "$OUT/logs/$name.log" 2>&1 &
done
wait
for spec in "$@"; do
  name=${spec%%:*}
  dir=$OUT/run-$name
  if [ -f "$dir/policy.safetensors" ]; then
    mv "$dir/policy.safetensors" "$OUT/$name.safetensors"
  elif [ -f "$dir/policy_last.safetensors" ]; then
    mv "$dir/policy_last.safetensors" "$OUT/$name.safetensors"
  fi
  [ -f "$dir/policy_log.json" ] && cp "$dir/policy_log.json" "$OUT/logs/$name.json"
  rm -rf "$dir"
  echo "== $name"; grep -E "^(params|trained|full eval|PICK)" "$OUT/logs/$name.log" | cut -c1-600
done
tar -cJf "$OUT/logs.tar.xz" -C "$OUT" logs && rm -rf "$OUT/logs"
