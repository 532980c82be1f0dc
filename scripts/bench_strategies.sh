#!/usr/bin/env bash
# Accuracy, completion tokens and wall time of several strategies on the same synthetic
# problems, through a ponder-sim process with a latency model. Writes one `ponder eval` run per
# strategy under $OUT and prints a table from their summary.json files.
#
#   scripts/bench_strategies.sh [OUT_DIR]      (env: PROBLEMS=200 SEED=7 TTFT_MS=50 TPOT_MS=5
#                                               SLOTS=1024 CONCURRENCY=64 DIFFICULTY=hard)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-strategies}
PROBLEMS=${PROBLEMS:-200}
SEED=${SEED:-7}
TTFT_MS=${TTFT_MS:-50}
TPOT_MS=${TPOT_MS:-5}
SLOTS=${SLOTS:-1024}
CONCURRENCY=${CONCURRENCY:-64}
DIFFICULTY=${DIFFICULTY:-hard}

cargo build --release -q -p ponder-cli -p ponder-sim
PONDER=target/release/ponder
rm -rf "$OUT" && mkdir -p "$OUT"

target/release/ponder-sim --port 0 --seed "$SEED" --ttft-ms "$TTFT_MS" --tpot-ms "$TPOT_MS" \
  --slots "$SLOTS" > "$OUT/sim.log" 2>&1 &
SIM=$!
trap 'kill $SIM 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  URL=$(sed -n 's/^ponder-sim listening on //p' "$OUT/sim.log")
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "$URL" ] || { echo "ponder-sim did not start" >&2; exit 1; }

# name | strategy | --set arguments
RUNS=(
  "cot|baseline|"
  "sc-16|self-consistency|n=16"
  "sc-64|self-consistency|n=64"
  "adaptive-beta-64|self-consistency|n=64 early_stop=beta"
  "esc-64|self-consistency|n=64 early_stop=esc"
  "doubling-64|self-consistency|n=64 early_stop=doubling"
  "deepconf-offline-64|deepconf|budget=64 window_size=16"
  "deepconf-online-high-64|deepconf-online|total_budget=64 window_size=16"
  "deepconf-online-low-64|deepconf-online|total_budget=64 window_size=16 variant=low"
)
for run in "${RUNS[@]}"; do
  IFS='|' read -r name strategy sets <<< "$run"
  args=()
  for s in $sets; do args+=(--set "$s"); done
  if ! "$PONDER" strategies --json | grep -q "\"name\": \"$strategy\""; then
    echo "skip $name: no strategy $strategy" >&2
    continue
  fi
  "$PONDER" eval --dataset "synthetic-$DIFFICULTY" --limit "$PROBLEMS" --seed "$SEED" \
    --strategy "$strategy" "${args[@]}" --backend "$URL" --model ponder-sim \
    --concurrency "$CONCURRENCY" --out "$OUT/$name" > "$OUT/$name.log" 2>&1
done

python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'run':<22} {'accuracy':>9} {'95% CI':>15} {'compl tok/problem':>18} {'requests':>9} {'wall s':>7}")
for name in sorted(os.listdir(out)):
    path = os.path.join(out, name, "summary.json")
    if not os.path.exists(path):
        continue
    s = json.load(open(path))
    ci = s.get("accuracy_ci95") or s.get("ci95") or [None, None]
    lo, hi = (ci if isinstance(ci, list) else [ci.get("low"), ci.get("high")])
    tok = s.get("completion_tokens_per_problem")
    print(f"{name:<22} {100*s['accuracy']:>8.1f}% {f'[{100*lo:.1f}, {100*hi:.1f}]' if lo is not None else '':>15} "
          f"{tok if tok is None else round(tok,1)!s:>18} {s.get('requests','')!s:>9} {s.get('wall_ms',0)/1000:>7.1f}")
PY
