#!/usr/bin/env bash
# The embedded engine against llama.cpp's own llama-server over HTTP: same GGUF model, same
# machine, same strategy parameters. Self-consistency n=16 and beam search 4×4 over synthetic
# problems, one `ponder eval` per row; wall time and peak memory from /usr/bin/time (the server's
# peak RSS from /proc), prompt tokens processed from the engine's engine.json and from the
# server's /metrics.
#
#   LLAMA_SERVER=/path/to/llama-server scripts/bench_engine.sh [OUT_DIR]
#   (env: MODEL=model.gguf, else a random-weight model with Qwen2.5-0.5B's layer shape is written;
#    PROBLEMS=20 SEED=1 MAX_TOKENS=256 STEP_TOKENS=48 STEPS=12 THREADS=2 SEQUENCES=128, the
#    engine's live sequences)
#
# llama-server is not built by the workspace (llama-cpp-sys-2 vendors llama.cpp without the
# server sources); docs/benchmarks.md §7 says where the one measured came from.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-engine}
PROBLEMS=${PROBLEMS:-20}
SEED=${SEED:-1}
MAX_TOKENS=${MAX_TOKENS:-256}
STEP_TOKENS=${STEP_TOKENS:-48}
STEPS=${STEPS:-12}
THREADS=${THREADS:-2}
SEQUENCES=${SEQUENCES:-128}
LLAMA_SERVER=${LLAMA_SERVER:?set LLAMA_SERVER to a llama-server binary}

cargo build --release -q -p ponder-cli -p ponder-engine --example tiny_model
PONDER=target/release/ponder
mkdir -p "$OUT"
if [ -z "${MODEL:-}" ]; then
  # Qwen2.5-0.5B's layers (width 896, 14 query heads of 64, 2 KV heads, FFN 4864), f16, but 2 of
  # its 24 layers and Ponder's byte vocabulary, so that four runs fit in half an hour on 2 cores.
  MODEL=$OUT/random.gguf
  target/release/examples/tiny_model "$MODEL" --embd 896 --layers 2 --heads 14 --kv-heads 2 \
    --ff 4864 --ctx 2048 --seed 3 --f16 | tee "$OUT/model.txt"
fi

SC=(--strategy self-consistency --set n=16 --set "max_tokens=$MAX_TOKENS" --set temperature=1.0)
BEAM=(--strategy beam-search --set beam_size=4 --set candidates_per_beam=4 --set scorer=perplexity
      --set continuation=text --set detector=structured --set min_step_tokens=1
      --set "max_step_tokens=$STEP_TOKENS" --set "max_steps=$STEPS")

# Peak RSS of a process tree's root, in MiB, from `time -v` output.
rss() { sed -n 's/^\s*Maximum resident set size (kbytes): //p' "$1" | awk '{printf "%.1f", $1/1024}'; }

engine_run() {
  local name=$1; shift
  rm -rf "${OUT:?}/$name"
  /usr/bin/time -v "$PONDER" eval --dataset synthetic-hard --limit "$PROBLEMS" --seed "$SEED" \
    --model "$MODEL" --threads "$THREADS" --sequences "$SEQUENCES" --concurrency 4 \
    --out "$OUT/$name" "$@" > "$OUT/$name.log" 2> "$OUT/$name.time"
}

server_run() {
  local name=$1 slots=$2; shift 2
  rm -rf "${OUT:?}/$name"
  local port=$((18000 + RANDOM % 1000))
  "$LLAMA_SERVER" -m "$MODEL" --host 127.0.0.1 --port "$port" -np "$slots" -c $((slots * 2048)) \
    -t "$THREADS" -tb "$THREADS" --metrics --no-webui > "$OUT/$name.server.log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1 && break
    sleep 0.2
  done
  # llama-server answers `n > 1` with copies of one sample, so `n` is split into single
  # requests (each a separate, seeded sample), as the engine serves it.
  # llama-server does not say which stop string ended a completion; matching every stop
  # client-side (max_stop_strings: 0) gives step search the marker it needs.
  printf 'backend:\n  endpoints: ["http://127.0.0.1:%s/v1"]\n  model: bench\n  api_key_env: null\n  n_mode: split\n  max_stop_strings: 0\n' \
    "$port" > "$OUT/$name.yaml"
  /usr/bin/time -v "$PONDER" eval --dataset synthetic-hard --limit "$PROBLEMS" --seed "$SEED" \
    --config "$OUT/$name.yaml" --concurrency 4 --out "$OUT/$name" "$@" \
    > "$OUT/$name.log" 2> "$OUT/$name.time"
  curl -sf "http://127.0.0.1:$port/metrics" > "$OUT/$name.metrics" || true
  grep VmHWM "/proc/$pid/status" | awk '{printf "%.1f", $2/1024}' > "$OUT/$name.server_rss"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# RUNS picks rows (default: all four); the summary reads whatever is in $OUT.
RUNS=${RUNS:-engine-sc16 server-sc16 engine-beam4x4 server-beam4x4}
for run in $RUNS; do
  case $run in
    engine-sc16) engine_run engine-sc16 "${SC[@]}" ;;
    server-sc16) server_run server-sc16 16 "${SC[@]}" ;;
    engine-beam4x4) engine_run engine-beam4x4 "${BEAM[@]}" ;;
    server-beam4x4) server_run server-beam4x4 16 "${BEAM[@]}" ;;
  esac
done

for name in engine-sc16 server-sc16 engine-beam4x4 server-beam4x4; do
  rss "$OUT/$name.time" > "$OUT/$name.client_rss"
done

python3 - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
def summary(name):
    return json.load(open(os.path.join(out, name, "summary.json")))
def metric(name, key):
    text = open(os.path.join(out, f"{name}.metrics")).read()
    m = re.search(rf"^llamacpp:{key}\s+([0-9.e+]+)", text, re.M)
    return float(m.group(1)) if m else float("nan")
def read(path):
    return open(os.path.join(out, path)).read().strip()
rows = []
for kind in ["sc16", "beam4x4"]:
    for side in ["engine", "server"]:
        name = f"{side}-{kind}"
        s = summary(name)
        wall = s["wall_ms"] / 1000
        gen = s["completion_tokens"]
        if side == "engine":
            e = json.load(open(os.path.join(out, name, "engine.json")))["stats"]
            prompt = e["prompt_tokens_decoded"]
            mem = float(read(f"{name}.client_rss"))
        else:
            prompt = metric(name, "prompt_tokens_total")
            mem = float(read(f"{name}.client_rss")) + float(read(f"{name}.server_rss"))
        rows.append((name, s["accuracy"], gen, gen / wall, prompt, wall, mem))
print(f"{'run':<16} {'acc':>5} {'gen tok':>8} {'gen tok/s':>9} {'prompt proc':>11} {'wall s':>7} {'peak MiB':>8}")
for r in rows:
    print(f"{r[0]:<16} {r[1]:>5.2f} {r[2]:>8} {r[3]:>9.1f} {r[4]:>11.0f} {r[5]:>7.1f} {r[6]:>8.1f}")
for kind in ["sc16", "beam4x4"]:
    e = next(r for r in rows if r[0] == f"engine-{kind}")
    s = next(r for r in rows if r[0] == f"server-{kind}")
    print(f"{kind}: engine/server generated tokens per second = {e[3] / s[3]:.2f}x, wall {s[5] / e[5]:.2f}x faster")
PY
