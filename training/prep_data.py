#!/usr/bin/env python3
"""Generate every data file of the bundled models with the Rust `ponder task generate` command
(the single source of truth of the synthetic task) and write them, xz-compressed, to
.train/data/ (an ignored folder that travels to the GPU machine through `carry`).

Seeds (all disjoint from evaluation):
  policy training   easy seed 1001, medium 1002, hard 1003
  PRM rollouts      medium seed 5002, hard 5003
  dev (held out)    hard seed 424242 (checkpoint choice, accuracies in README)
  Ponder's eval     seed 0 is the default run seed of `ponder eval` (synthetic-* presets);
                    seeds 0..15 (first 1000 problems of every difficulty) are generated here only
                    to be excluded, by question text, from every training file; seed 0's first 200
                    hard problems are also kept as test_hard_seed0 for reporting only.

Usage: python3 training/prep_data.py [--ponder target/debug/ponder] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".train" / "data"

KEEP = ("id", "difficulty", "question", "start", "steps", "answer", "solution", "worked_solution")


def generate(ponder: str, difficulty: str, n: int, seed: int, worked: bool = False) -> list[dict]:
    """`ponder task generate` records; with `worked`, each also has a `worked_solution` (the
    reference with work lines along random routes, drawn from the problem seed's own stream)."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
        path = tmp.name
    try:
        subprocess.run([ponder, "task", "generate", "--difficulty", difficulty, "--n", str(n),
                        "--seed", str(seed), "-o", path] + (["--worked", str(seed)] if worked else []),
                       check=True, capture_output=True)
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    finally:
        os.unlink(path)


def write(name: str, recs: list[dict]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.jsonl.xz"
    with lzma.open(path, "wt", encoding="utf-8", preset=6) as f:
        for r in recs:
            f.write(json.dumps({k: r[k] for k in KEEP if k in r}, separators=(",", ":")) + "\n")
    print(f"  {path.relative_to(ROOT)}: {len(recs)} problems, {path.stat().st_size / 1e6:.1f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ponder", default=str(ROOT / "target" / "debug" / "ponder"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply training set sizes")
    ap.add_argument("--cap", action="append", default=[], metavar="DIFFICULTY=N",
                    help="keep the first N training problems of a difficulty (the worked-solution "
                         "files must fit the GPU machine's 64 MiB transfer: --cap hard=110000 "
                         "--cap medium=60000)")
    args = ap.parse_args()
    if not Path(args.ponder).exists():
        sys.exit(f"{args.ponder} missing: run `cargo build -p ponder-cli` first")
    caps = {}
    for c in args.cap:
        d, _, n = c.partition("=")
        if d not in ("easy", "medium", "hard") or not n.isdigit():
            sys.exit(f"--cap {c!r}: expected DIFFICULTY=N with easy, medium or hard")
        caps[d] = int(n)
    t0 = time.time()

    # Problems of Ponder's evaluation runs: never trained on.
    excluded: set[str] = set()
    for d in ("easy", "medium", "hard"):
        for seed in range(16):
            excluded.update(r["question"] for r in generate(args.ponder, d, 1000, seed))
    test = generate(args.ponder, "hard", 200, 0)
    dev = generate(args.ponder, "hard", 1000, 424242)
    excluded.update(r["question"] for r in dev)
    print(f"excluded questions: {len(excluded)}")

    def fresh(recs: list[dict]) -> list[dict]:
        seen = set()
        out = []
        for r in recs:
            if r["question"] in excluded or r["question"] in seen:
                continue
            seen.add(r["question"])
            out.append(r)
        return out

    sizes = {"easy": (1001, 60000), "medium": (1002, 120000), "hard": (1003, 200000)}
    for d, (seed, n) in sizes.items():
        recs = generate(args.ponder, d, max(1, int(n * args.scale)), seed, worked=True)
        fresh_recs = fresh(recs)
        kept = fresh_recs[:caps.get(d)]
        print(f"train_{d}: seed {seed}, {len(recs)} generated, {len(recs) - len(fresh_recs)} "
              f"dropped, {len(kept)} kept")
        write(f"train_{d}", kept)
    prm_sizes = {"medium": (5002, 8000), "hard": (5003, 24000)}
    for d, (seed, n) in prm_sizes.items():
        recs = fresh(generate(args.ponder, d, max(1, int(n * args.scale)), seed))
        write(f"prm_{d}", recs)
    write("dev_hard", dev)
    write("test_hard_seed0", test)
    print(f"done in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
