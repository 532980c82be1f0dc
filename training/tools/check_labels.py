#!/usr/bin/env python3
"""Checks train_prm's two MC labelling searches against an exact oracle, with no GPU and no
model: rollouts are replaced by a function that reaches the gold answer exactly when the prefix
ends before a solution's planted first bad step. Bisection (label_binary) and the step-by-step
search (label_sequential) must both give every step its true label, and a rollout time limit
after the first round must leave only true labels or None.

    python3 training/tools/check_labels.py      (needs torch installed, as train_prm does)
"""

import contextlib
import copy
import io
import random
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train_prm as T  # noqa: E402

rounds = []


def oracle_hits(policy, probes, args, gen, stats=None):
    rounds.append(len(probes))
    return [args.rollouts if k < s["first_bad"] else 0 for s, k in probes]


def solutions(rng, with_cut_off):
    out = []
    for _ in range(20):
        n = rng.randint(1, 14)
        answer = not with_cut_off or rng.random() < 0.8
        steps = [f"Step {i}" for i in range(n - 1 if answer else n)] + (["boxed"] if answer else [])
        correct = answer and rng.random() < 0.4
        # a wrong solution's answer line is bad; a cut-off one may be good all the way
        first_bad = len(steps) if correct else rng.randint(0, len(steps) - (1 if answer else 0))
        out.append({"steps": steps, "correct": correct, "first_bad": first_bad})
    return out


def main():
    T.rollout_hits = oracle_hits
    T.C.final_answer = lambda t: "7" if "boxed" in t else None
    T.C.parse_steps = lambda t: [1] if t.startswith("Step") else []
    rng = random.Random(1)
    args = types.SimpleNamespace(rollouts=4, rollout_limit=1e9)
    n_bin = n_seq = 0
    quiet = contextlib.redirect_stdout(io.StringIO())
    for _ in range(300):
        sols = solutions(rng, with_cut_off=True)
        a, b = copy.deepcopy(sols), copy.deepcopy(sols)
        rounds.clear()
        with quiet:
            T.label_binary(a, None, args, None, time.time())
        n_bin = max(n_bin, len(rounds))
        rounds.clear()
        with quiet:
            T.label_sequential(b, None, args, None, time.time())
        n_seq = max(n_seq, len(rounds))
        for x, y in zip(a, b):
            truth = [k < x["first_bad"] for k in range(len(x["steps"]))]
            assert x["mc"] == truth, ("binary", x, truth)
            assert y["mc"] == truth, ("sequential", y, truth)
    args.rollout_limit = -1  # stop after the first round
    for _ in range(200):
        sols = solutions(rng, with_cut_off=False)
        with quiet:
            T.label_binary(sols, None, args, None, time.time())
        for x in sols:
            truth = [k < x["first_bad"] for k in range(len(x["steps"]))]
            assert all(m is None or m == t for m, t in zip(x["mc"], truth)), (x, truth)
            assert x["mc"][-1] is False or x["correct"], x
    print(f"labels match the oracle; most rounds: bisection {n_bin}, step by step {n_seq}")


if __name__ == "__main__":
    main()
