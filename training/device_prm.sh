#!/usr/bin/env bash
# The PRM step on the GPU machine (one `run` call, carry the PRM and dev data files and
# ".train/policy"). Sized to finish in about 8.5 minutes on one H200: 1000 policy solutions with
# MC labels (rollouts about 90 s), then 330 s of PRM training, 80% of its examples synthetic hard
# negatives and references, with a next-token loss on right steps (see README "PRM").
set -o pipefail
export PYTHONUNBUFFERED=1
mkdir -p "${OUT:-.train/prm}"
python3 training/train_prm.py --policy .train/policy/policy.safetensors --out "${OUT:-.train/prm}" \
  --problems 500 --samples 2 --rollouts 6 --rollout-limit 150 --time-limit 330 --steps 3600 \
  --synthetic-frac 0.8 --lm-weight 0.5 --bo-problems 200 2>&1 | tee "${OUT:-.train/prm}/train_prm.log"
