#!/usr/bin/env bash
# The bundled model's demonstration (issue 8): on held-out hard synthetic problems, accuracy and
# tokens for greedy decoding, self-consistency n=16, DeepConf online (budget 16; high and low),
# best-of-16 with the bundled PRM and beam search 4×4 with the bundled PRM, all on the embedded
# engine, then `ponder report` (a table, and an HTML page with the accuracy/tokens plot).
#
#   scripts/demo_bundled.sh [OUT_DIR]
#   env: PONDER=target/release/ponder  PROBLEMS=500  SEED=0  SHARDS=1  JOBS=1
#        THREADS=(cores / JOBS)  CONCURRENCY=8  RUNS="greedy sc16 ..." (default: all)
#
# Every run is `ponder eval` (resumable: a stopped demo continues where it was), split into
# SHARDS shards run JOBS at a time; `ponder report` merges the shards. Seed 0 of synthetic-hard:
# its first 1,000 problems were removed from the training data (training/README.md).
# On 2 cores the full 500-problem demo takes hours; PROBLEMS=20 is a quick look.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/demo-bundled}
PONDER=${PONDER:-target/release/ponder}
PROBLEMS=${PROBLEMS:-500}
SEED=${SEED:-0}
SHARDS=${SHARDS:-1}
JOBS=${JOBS:-1}
CORES=$(nproc)
THREADS=${THREADS:-$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))}
CONCURRENCY=${CONCURRENCY:-8}
RUNS=${RUNS:-greedy sc16 deepconf-online deepconf-online-low bon16-prm bon16-prm-vote beam-prm beam-prm-distinct}

args_of() {
  case $1 in
    greedy) echo "--strategy baseline --set temperature=0" ;;
    sc16) echo "--strategy self-consistency --set n=16" ;;
    # Budget 16 as self-consistency; 4 warm-up traces set the threshold, a 64-token window.
    deepconf-online) echo "--strategy deepconf-online --set total_budget=16 --set warmup_traces=4 --set window_size=64" ;;
    # The paper's aggressive preset: the threshold keeps the top 10% of warm-up traces.
    deepconf-online-low) echo "--strategy deepconf-online --set variant=low --set total_budget=16 --set warmup_traces=4 --set window_size=64" ;;
    bon16-prm) echo "--strategy best-of-n --set n=16 --set scorer=prm --set score_aggregation=min" ;;
    bon16-prm-vote) echo "--strategy best-of-n --set n=16 --set scorer=prm --set score_aggregation=min --set selection=weighted_vote" ;;
    # One `Step k:` line per step, scored by the PRM.
    beam-prm) echo "--strategy beam-search --set beam_size=4 --set candidates_per_beam=4 --set scorer=prm --set detector=structured --set min_step_tokens=1 --set max_step_tokens=64 --set aggregation=min" ;;
    # The same, keeping only distinct partial solutions (children of one beam are often identical).
    beam-prm-distinct) echo "$(args_of beam-prm) --set filter_duplicates=true" ;;
    *) echo "unknown run $1" >&2; return 1 ;;
  esac
}

mkdir -p "$OUT"
jobs_file=$OUT/jobs.txt
: > "$jobs_file"
for run in $RUNS; do
  args=$(args_of "$run")
  for ((i = 0; i < SHARDS; i++)); do
    dir=$OUT/$run
    shard=()
    if [ "$SHARDS" -gt 1 ]; then dir=$OUT/$run/shard-$i; shard=(--shard "$i/$SHARDS"); fi
    resume=()
    if [ -s "$dir/records.jsonl" ]; then resume=(--resume); fi
    echo "$PONDER eval --dataset synthetic-hard --limit $PROBLEMS --seed $SEED --threads $THREADS --concurrency $CONCURRENCY --out $dir ${shard[*]} ${resume[*]} $args > $dir.log 2>&1" >> "$jobs_file"
    mkdir -p "$(dirname "$dir")"
  done
done
echo "$(wc -l < "$jobs_file") eval jobs, $JOBS at a time, $THREADS threads each"
start=$(date +%s)
xargs -P "$JOBS" -I{} -d '\n' bash -c '{}' < "$jobs_file" || echo "some eval jobs failed (see $OUT/*.log)" >&2
echo "evals took $(( $(date +%s) - start )) s"

dirs=()
for run in $RUNS; do
  if [ "$SHARDS" -gt 1 ]; then
    for ((i = 0; i < SHARDS; i++)); do dirs+=("$OUT/$run/shard-$i"); done
  else
    dirs+=("$OUT/$run")
  fi
done
"$PONDER" report "${dirs[@]}" --out "$OUT/report.html" | tee "$OUT/report.txt"
