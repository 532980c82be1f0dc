#!/usr/bin/env bash
# The PRM step on the GPU machine (one `run` call, carry [".train/data", ".train/policy"]).
# Sized to finish in about 8 minutes on one H200: rollouts capped at 150 s, PRM training at 200 s
# (half of its examples synthetic hard negatives; see README "PRM").
set -o pipefail
export PYTHONUNBUFFERED=1
mkdir -p "${OUT:-.train/prm}"
python3 training/train_prm.py --policy .train/policy/policy.safetensors --out "${OUT:-.train/prm}" \
  --problems 1200 --samples 2 --rollouts 6 --rollout-limit 150 --time-limit 200 --steps 2400 \
  --synthetic-frac 0.5 --bo-problems 200 2>&1 | tee "${OUT:-.train/prm}/train_prm.log"
