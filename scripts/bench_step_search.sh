#!/usr/bin/env bash
# Step-level search against self-consistency on hard synthetic problems, through a ponder-sim
# process with its process reward model (PRM) on. One `ponder eval` run per row under $OUT; the
# PRM calls and generation requests of each run are read from the simulator's /stats.
#
#   scripts/bench_step_search.sh [OUT_DIR]    (env: PROBLEMS=50 SEED=1 SIM_SEED=7 TTFT_MS=50 TPOT_MS=5)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-step-search}
PROBLEMS=${PROBLEMS:-50}
SEED=${SEED:-1}
SIM_SEED=${SIM_SEED:-7}
TTFT_MS=${TTFT_MS:-50}
TPOT_MS=${TPOT_MS:-5}

cargo build --release -q -p ponder-cli -p ponder-sim
PONDER=target/release/ponder
rm -rf "$OUT" && mkdir -p "$OUT"
target/release/ponder-sim --port 0 --seed "$SIM_SEED" --ttft-ms "$TTFT_MS" --tpot-ms "$TPOT_MS" \
  > "$OUT/sim.log" 2>&1 &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
URL=""
for _ in $(seq 50); do
  URL=$(sed -n 's/^ponder-sim listening on //p' "$OUT/sim.log")
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { echo "ponder-sim did not start" >&2; exit 1; }
STATS="${URL%/v1}/stats"
printf 'backend:\n  endpoints: [%s]\n  model: ponder-sim\n  api_key_env: null\n  reward:\n    model: ponder-sim-prm\n' \
  "$URL" > "$OUT/bench.yaml"

run() {
  local name=$1; shift
  python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "$STATS" > "$OUT/$name.before.json"
  "$PONDER" eval --dataset synthetic-hard --limit "$PROBLEMS" --seed "$SEED" --config "$OUT/bench.yaml" \
    --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "$STATS" > "$OUT/$name.after.json"
}

run sc-8 --strategy self-consistency --set n=8
run sc-16 --strategy self-consistency --set n=16
run beam-4x4-markers --strategy beam-search --set beam_size=4 --set candidates_per_beam=4
run beam-4x4-lines --strategy beam-search --set beam_size=4 --set candidates_per_beam=4 \
  --set detector=structured --set min_step_tokens=1
run online-bon-4-lines --strategy online-best-of-n --set candidates_per_step=4 \
  --set detector=structured --set min_step_tokens=1
run dvts-16x4 --strategy dvts --set n=16 --set beam_width=4 --set 'step_patterns=["\nStep"]' \
  --set min_step_tokens=1
run particle-filtering-16 --strategy particle-filtering --set budget=16 \
  --set "step_token=$(printf '\nStep')" --set min_step_tokens=1
run best-of-n-16-prm --strategy best-of-n --set n=16 --set scorer=prm --set score_aggregation=min
run adaptive-scaling-8 --strategy adaptive-scaling --set candidates_per_step=8 \
  --set detector=structured --set min_step_tokens=1
run phi-decoding --strategy phi-decoding

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'run':<24} {'accuracy':>9} {'compl tok/problem':>18} {'prompt tok/problem':>19} {'PRM calls':>10} {'wall s':>7}")
for name in sorted(d for d in os.listdir(out) if os.path.isdir(os.path.join(out, d))):
    s = json.load(open(os.path.join(out, name, "summary.json")))
    b = json.load(open(os.path.join(out, f"{name}.before.json")))
    a = json.load(open(os.path.join(out, f"{name}.after.json")))
    prm = a["pooling_requests"] - b["pooling_requests"]
    print(f"{name:<24} {100*s['accuracy']:>8.1f}% {s['completion_tokens_per_problem']:>18.1f} "
          f"{s['prompt_tokens_per_problem']:>19.1f} {prm:>10} {s['wall_ms']/1000:>7.1f}")
PY
