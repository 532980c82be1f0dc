#!/usr/bin/env bash
# The PRM step on the GPU machine (one `run` call, carry [".train/data", ".train/policy"]).
# Sized to finish in about 5 minutes on one H200 (see README: the first attempt with
# --problems 3200 --samples 2 --rollouts 8 spent 400 s on rollouts and timed out).
# Extra arguments go to train_prm.py (`--worked --max-new 700` for a worked-solutions policy).
set -o pipefail
export PYTHONUNBUFFERED=1
mkdir -p "${OUT:-.train/prm}"
python3 training/train_prm.py --policy .train/policy/policy.safetensors --out "${OUT:-.train/prm}" \
  --problems 1200 --samples 2 --rollouts 6 --rollout-limit 200 --time-limit 90 --steps 600 \
  --bo-problems 100 "$@" 2>&1 | tee "${OUT:-.train/prm}/train_prm.log"
