#!/usr/bin/env python3
"""Cross-check `ponder grade` against the Python `math-verify` package on a pairs file.

Each input line is a JSON object with `gold` and `prediction` (other fields are ignored). The
script runs `ponder grade --input FILE` once, grades every pair again with math-verify
(`parse` on both sides with its default extraction targets, then `verify`), and prints the
agreement and every pair where the two differ.

Optional: math-verify is not needed to build, test or run Ponder. Install it where you run this
script, for example in a virtual environment:

    python3 -m venv .venv && .venv/bin/pip install math-verify
    cargo build --release -p ponder-cli
    .venv/bin/python scripts/crosscheck_math_verify.py pairs.jsonl

Options: --ponder PATH (default: target/release/ponder, else `ponder` on PATH),
--precision N (both graders' float rounding, default 6), --limit N (first N pairs),
--json (print one summary object instead of text), --no-wrap-gold (see below).

A line may carry `truth` (a bool): then the agreement of each grader with it is printed too.
`--make-symbolic-pairs N OUT --seed S` writes N such pairs with SymPy (a dependency of
math-verify): random expressions in x, y, z printed by `sympy.latex`, against an expanded,
factored, simplified or combined form (truth: equal) or against themselves plus a small term
(truth from `sympy.simplify(a - b) == 0`); predictions are written as `$…$`.

math-verify only reads LaTeX inside math delimiters, so a gold written as bare LaTeX
(`\frac{1}{2}`, as datasets store it) is wrapped as `$…$` before math-verify parses it, unless it
already has a `$` or a `\boxed`; --no-wrap-gold passes golds unchanged.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys


def find_ponder(explicit):
    if explicit:
        return explicit
    local = os.path.join("target", "release", "ponder")
    if os.path.exists(local):
        return local
    found = shutil.which("ponder")
    if found:
        return found
    sys.exit("error: no ponder binary (build with `cargo build --release -p ponder-cli` or pass --ponder)")


def read_pairs(path, limit):
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{line_no}: not JSON: {e}")
            if not isinstance(obj, dict) or "gold" not in obj or "prediction" not in obj:
                sys.exit(f"error: {path}:{line_no}: needs `gold` and `prediction`")
            pairs.append((line_no, obj))
            if limit and len(pairs) >= limit:
                break
    return pairs


def ponder_verdicts(ponder, pairs, precision):
    """Runs `ponder grade --input -` on the pairs; returns one output object per pair."""
    text = "".join(
        json.dumps({"gold": str(o["gold"]), "prediction": str(o["prediction"])}) + "\n"
        for _, o in pairs
    )
    proc = subprocess.run(
        [ponder, "grade", "--input", "-", "--precision", str(precision)],
        input=text,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"error: ponder grade failed ({proc.returncode}):\n{proc.stderr}")
    out = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
    if len(out) != len(pairs):
        sys.exit(f"error: ponder graded {len(out)} pairs, expected {len(pairs)}")
    return out


def wrap(gold):
    if "$" in gold or "\\boxed" in gold:
        return gold
    return f"${gold}$"


def math_verify_verdict(gold, prediction, precision):
    """math-verify's verdict: True, False, or None when it raised."""
    try:
        from math_verify import parse, verify
    except ImportError:
        sys.exit("error: math-verify is not installed (pip install math-verify)")
    try:
        g = parse(gold)
        p = parse(prediction)
        return bool(verify(g, p, float_rounding=precision))
    except Exception:  # math-verify raises on some inputs; count them apart
        return None


def make_symbolic_pairs(n, out_path, seed):
    import random

    import sympy as sp

    rng = random.Random(seed)
    x, y, z = sp.symbols("x y z")
    syms = [x, y, z]

    def expr(depth=0):
        if depth > 2 or rng.random() < 0.3:
            return sp.sympify(rng.choice([rng.randint(-5, 9), rng.choice(syms)]))
        a, b = expr(depth + 1), expr(depth + 1)
        op = rng.choice(["+", "-", "*", "*", "/", "pow", "sqrt", "sin"])
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / (b if b != 0 else 2)
        if op == "pow":
            return a ** rng.randint(2, 3)
        if op == "sqrt":
            return sp.sqrt(a**2 + 1)
        return sp.sin(a)

    written = 0
    with open(out_path, "w", encoding="utf-8") as out:
        while written < n:
            e = expr()
            form = rng.choice([sp.expand, sp.factor, sp.simplify, sp.together])(e)
            other = sp.expand(e + rng.choice([1, x, y / 2, sp.Rational(1, 3)]))
            for b in (form, other):
                truth = bool(sp.simplify(e - b) == 0)
                pred = f"${sp.latex(b)}$"
                line = {"gold": sp.latex(e), "prediction": pred, "truth": truth}
                out.write(json.dumps(line) + "\n")
                written += 1
    print(f"wrote {written} pairs to {out_path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    if len(sys.argv) >= 2 and sys.argv[1] == "--make-symbolic-pairs":
        mk = argparse.ArgumentParser()
        mk.add_argument("--make-symbolic-pairs", type=int, required=True)
        mk.add_argument("out")
        mk.add_argument("--seed", type=int, default=0)
        a = mk.parse_args()
        make_symbolic_pairs(a.make_symbolic_pairs, a.out, a.seed)
        return
    ap.add_argument("pairs", help="JSONL file with `gold` and `prediction` per line")
    ap.add_argument("--ponder", help="path to the ponder binary")
    ap.add_argument("--precision", type=int, default=6)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-wrap-gold", action="store_true")
    args = ap.parse_args()

    pairs = read_pairs(args.pairs, args.limit)
    ours = ponder_verdicts(find_ponder(args.ponder), pairs, args.precision)
    agree = 0
    errors = 0
    truth_total = 0
    truth_ponder = 0
    truth_mv = 0
    differences = []
    for (line_no, obj), mine in zip(pairs, ours):
        gold = str(obj["gold"])
        if not args.no_wrap_gold:
            gold = wrap(gold)
        theirs = math_verify_verdict(gold, str(obj["prediction"]), args.precision)
        if theirs is None:
            errors += 1
        if isinstance(obj.get("truth"), bool):
            truth_total += 1
            truth_ponder += int(mine["equivalent"] == obj["truth"])
            truth_mv += int(theirs == obj["truth"])
        if theirs == mine["equivalent"]:
            agree += 1
        else:
            differences.append(
                {
                    "line": line_no,
                    "id": obj.get("id"),
                    "ponder": mine["verdict"],
                    "math_verify": theirs,
                    "gold": mine.get("gold_normalized"),
                    "prediction": mine.get("prediction_normalized"),
                }
            )
    n = len(pairs)
    summary = {
        "pairs": n,
        "agree": agree,
        "agreement": agree / n if n else None,
        "math_verify_errors": errors,
        "differences": differences,
    }
    if truth_total:
        summary["truth"] = {"pairs": truth_total, "ponder": truth_ponder, "math_verify": truth_mv}
    if args.json:
        print(json.dumps(summary))
        return
    pct = 100.0 * agree / n if n else 0.0
    print(f"agreement with math-verify: {agree}/{n} = {pct:.1f}% (math-verify errors: {errors})")
    if truth_total:
        print(
            f"agreement with `truth`: ponder {truth_ponder}/{truth_total}, "
            f"math-verify {truth_mv}/{truth_total}"
        )
    for d in differences:
        label = d["id"] if d["id"] is not None else f"line {d['line']}"
        print(
            f"  {label}: ponder {d['ponder']}, math-verify {d['math_verify']}; "
            f"gold {d['gold']!r}, prediction {d['prediction']!r}"
        )


if __name__ == "__main__":
    main()
