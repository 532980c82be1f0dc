#!/usr/bin/env python3
"""Math-Shepherd-style process reward model for the bundled policy.

1. Sample solutions from the policy (T=1.0) on the PRM problems (seeds 5002/5003, disjoint from
   the policy's training and from evaluation), prompts from the training prompt mix.
2. Label every step by Monte-Carlo rollouts (hard estimation, Math-Shepherd): a step is good
   ('+') when at least one of --rollouts continuations (T=0.7) from the prefix ending with it
   reaches the gold answer. The answer line's label is whether the solution's answer is right.
   Every step of a solution that itself reaches the gold answer is good (that solution is such a
   continuation). For a wrong solution, --labels binary (the default) searches for its first bad
   step as OmegaPRM does: a good step makes every earlier step good (its successful rollout
   continues the shorter prefixes too), and the steps after the first bad one are taken as bad.
   --labels sequential rolls out step 1, 2, ... in turn and stops at the first bad step.
3. Train the PRM, initialised from the policy weights, with a two-way cross-entropy over the
   '+' / '-' logits at each <|step|> tag position (common.prm_text gives the format). With
   --synthetic-frac, that share of the examples are built from the reference solutions of other
   PRM problems instead: the reference itself (all '+') or a hard negative whose one bad step
   (a near-miss result or a slipped operand) carries through to the answer, labelled as an
   ideal rollout policy would label it ('+' before the bad step, '-' from it on). Sampled
   solutions teach what the policy's text looks like; the hard negatives teach the PRM to check
   each step's arithmetic, which is what tells apart the candidates of one problem.
4. Evaluate on held-out PRM problems (step AUC against MC labels and against exact step
   checks) and as a best-of-16 reranker on dev hard problems versus majority voting.

Usage (GPU): python3 training/train_prm.py --policy DIR/policy.safetensors --out DIR
      (CPU smoke test): python3 training/train_prm.py --tiny --policy /tmp/p/policy.safetensors --out /tmp/r
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from evaluate import prompt_ids  # noqa: E402
from model import Config, Transformer, generate  # noqa: E402
from train_policy import DATA, fp16_state, load_fp16_state, lr_at  # noqa: E402


def load_policy(path, device):
    with safe_open(path, "pt") as f:
        cfg = Config(**json.loads(f.metadata()["config"]))
        state = {k: f.get_tensor(k) for k in f.keys()}
    m = Transformer(cfg).to(device)
    load_fp16_state(m, state)
    m.eval()
    return m, cfg, state


def gen_batched(model, prompts, max_new, temperature, gen, batch):
    out = []
    for i in range(0, len(prompts), batch):
        out += generate(model, prompts[i:i + batch], max_new, temperature, C.IM_END_ID, gen)
    return out


def apply_op(op, a, b):
    """The task's operations; a division that does not come out even is floored (what a
    solution continuing from a wrong value writes is wrong anyway)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a // b if b else 0


def near_miss(v, rng):
    """A wrong value of the kind the policy writes: one digit changed (50%), a carry or borrow
    slip of ±10^k (30%), a digit dropped (10%) or doubled (10%). Never v itself."""
    s = str(abs(v))
    for _ in range(20):
        kind = rng.random()
        if kind < 0.5:
            i = rng.randrange(len(s))
            d = rng.choice([c for c in "0123456789" if c != s[i]])
            if i == 0 and d == "0" and len(s) > 1:
                continue
            w = int(s[:i] + d + s[i + 1:])
        elif kind < 0.8:
            w = abs(v) + rng.choice((-1, 1)) * 10 ** rng.randrange(len(s))
        elif kind < 0.9:
            if len(s) == 1:
                continue
            i = rng.randrange(len(s))
            w = int(s[:i] + s[i + 1:])
        else:
            i = rng.randrange(len(s))
            w = int(s[:i] + s[i] + s[i:])
        if w >= 0 and w != abs(v):
            return w if v >= 0 else -w
    return v + 1


def synthetic_solution(rec, rng, corrupt):
    """A hard negative (or, with corrupt=False, the reference solution) with the labels MC
    estimation gives it: the solution follows the reference until one step writes a near-miss
    result (80%) or copies a near-miss of the previous result as its left operand (20%); every
    later step computes correctly from what was written, so the error carries to the answer.
    No continuation from the bad step can reach the gold answer, so it and everything after it
    are '-'; the steps before it are the reference's, '+'."""
    steps = rec["steps"]
    bad = rng.randrange(len(steps)) if corrupt else len(steps)
    copy_slip = rng.random() < 0.2
    lines, labels, prev = [], [], rec["start"]
    for k, st in enumerate(steps):
        lhs = near_miss(prev, rng) if (k == bad and copy_slip) else prev
        res = apply_op(st["op"], lhs, st["rhs"])
        if k == bad and not copy_slip:
            res = near_miss(res, rng)
        lines.append(f"Step {k + 1}: {C.OPS_WORDS[st['op']]} {lhs} {st['op']} {st['rhs']} = {res}.")
        labels.append(k < bad)
        prev = res
    lines.append(f"The answer is \\boxed{{{prev}}}.")
    labels.append(not corrupt)
    return lines, labels


def auc(scores, labels):
    s = np.asarray(scores)
    y = np.asarray(labels, dtype=bool)
    if y.all() or (~y).all():
        return float("nan")
    order = s.argsort()
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    npos = y.sum()
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * (len(s) - npos)))


def known(scores, labels):
    """The (score, label) pairs whose label is known (not None), as two lists."""
    kept = [(p, l) for p, l in zip(scores, labels) if l is not None]
    return [p for p, _ in kept], [l for _, l in kept]


def true_labels(rec, steps):
    """Exact labels for diagnostics: the k-th `Step` line is right while every step line so far
    equals the reference; a work line (`Work: a op b = c, ...`, before the step it computes) is
    right while everything before it is and its expressions hold and end at the next reference
    result; the answer line is right when its number is the gold answer. A step holding several
    lines (merged steps) is labelled by its step and work lines."""
    out, ok, k = [], True, 0
    for s in steps:
        if C.final_answer(s) is not None and not C.parse_steps(s) and not C.is_work_line(s):
            out.append(C.final_answer(s) == rec["answer"])
            continue
        for line in s.split("\n"):
            if C.is_work_line(line):
                nxt = rec["steps"][k]["result"] if k < len(rec["steps"]) else None
                ok = ok and C.work_line_ok(line, nxt)
            elif C.parse_steps(line):
                k += 1
                ok = ok and C.step_matches_reference(line, k, rec)
            elif line.strip() and C.final_answer(line) is None:
                ok = False  # neither a step, a work line nor the answer
        out.append(ok)
    return out


@torch.no_grad()
def prm_scores(prm, items, batch=256):
    """items: list of (messages, steps) -> list of per-tag P(+)."""
    dev = next(prm.parameters()).device
    res = []
    for i in range(0, len(items), batch):
        chunk = [C.encode(C.prm_text(m, s)) for m, s in items[i:i + batch]]
        T = max(len(t) for t in chunk)
        toks = torch.full((len(chunk), T), C.PAD_ID, dtype=torch.long)
        for j, t in enumerate(chunk):
            toks[j, :len(t)] = torch.tensor(t)
        toks = toks.to(dev)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = prm(toks)
        pm = logits[..., [C.PLUS_ID, C.MINUS_ID]].float().softmax(-1)[..., 0]
        for j, t in enumerate(chunk):
            pos = [p for p, x in enumerate(t) if x == C.STEP_ID]
            res.append(pm[j, pos].tolist())
    return res


def ends_with_answer(steps):
    """Whether a solution's last step is its answer line (not a cut-off step)."""
    return C.final_answer(steps[-1]) is not None and not C.parse_steps(steps[-1])


def rollout_hits(policy, probes, args, gen, stats=None):
    """probes: list of (solution, k). Continues each prefix (prompt + steps[:k + 1]) args.rollouts
    times at T=0.7 and returns, per probe, how many continuations reach the gold answer. Probes are
    sorted by how many reference steps remain, and each chunk of --gen-batch sequences decodes at
    most as far as its own longest expected continuation (~per_step tokens per remaining `Step`
    line, plus the answer), so short continuations do not wait for long ones. `stats` (a Counter),
    when given, accumulates chunks, decode steps run and allowed, and prompt lengths."""
    per_step = args.per_step or (130 if args.worked else 45)

    def remaining(sk):
        s, k = sk
        return max(len(s["rec"]["steps"]) - C.count_step_lines(s["steps"][:k + 1]), 1)

    order = sorted(range(len(probes)), key=lambda i: (remaining(probes[i]), len(probes[i][0]["prompt"])))
    hits = [0] * len(probes)
    per_chunk = max(1, args.gen_batch // args.rollouts)
    for c0 in range(0, len(order), per_chunk):
        chunk = order[c0:c0 + per_chunk]
        prompts = []
        for i in chunk:
            s, k = probes[i]
            prefix = s["prompt"] + C.encode("\n".join(s["steps"][:k + 1]) + "\n", parse_special=False)
            prompts += [prefix] * args.rollouts
        max_new = min(args.max_new, per_step * max(remaining(probes[i]) for i in chunk) + 40)
        o = generate(policy, prompts, max_new, 0.7, C.IM_END_ID, gen)
        if stats is not None:
            stats["chunks"] += 1
            stats["decode"] += max(len(x) for x in o)
            stats["allowed"] += max_new
            stats["prompt"] += max(len(x) for x in prompts)
        for j, i in enumerate(chunk):
            gold = probes[i][0]["rec"]["answer"]
            hits[i] = sum(C.final_answer(C.decode(x)) == gold
                          for x in o[j * args.rollouts:(j + 1) * args.rollouts])
    return hits


def label_binary(sols, policy, args, gen, t_roll):
    """Hard MC labels found by binary search for the first bad step (as OmegaPRM does).
    Under hard estimation a good step k makes every earlier step good: the rollout that reached
    the gold answer from prefix k is also a continuation of every shorter prefix. The steps after
    a bad step are labelled bad (the same assumption label_sequential makes). A wrong solution's
    answer line is bad, so its first bad step lies in [0, n - 1] and about log2(n) rounds of
    rollouts, all wrong solutions in each round, find it. Right solutions need no rollouts."""
    state = {}
    for s in sols:
        n = len(s["steps"])
        if s["correct"]:
            s["mc"] = [True] * n
            continue
        s["mc"] = [None] * n
        # the first bad step is in [lo, hi]; hi = n means "none found yet" when the last line is
        # not an answer line (a cut-off solution: it may end on good steps)
        state[id(s)] = [0, n - 1 if ends_with_answer(s["steps"]) else n]
    n_roll, rnd = 0, 0
    while True:
        probes = []
        for s in sols:
            if id(s) in state:
                lo, hi = state[id(s)]
                if lo < hi:
                    probes.append((s, (lo + hi) // 2))
        if not probes:
            break
        rnd += 1
        stats = collections.Counter()
        t_round = time.time()
        hits = rollout_hits(policy, probes, args, gen, stats)
        n_roll += len(probes) * args.rollouts
        for (s, k), h in zip(probes, hits):
            st = state[id(s)]
            if h > 0:
                st[0] = k + 1
            else:
                st[1] = k
        print(f"  round {rnd}: {len(probes)} probes, {len(probes) * args.rollouts} rollouts in "
              f"{time.time() - t_round:.0f}s ({time.time() - t_roll:.0f}s in all); {stats['chunks']} "
              f"chunks, {stats['decode']} of {stats['allowed']} decode steps allowed, longest "
              f"prompts sum {stats['prompt']}", flush=True)
        if time.time() - t_roll > args.rollout_limit:
            print("rollout time limit: the steps still searched stay unlabelled", flush=True)
            break
    for s in sols:
        if id(s) in state:
            # known so far: good before lo, bad from hi on; unknown (None) in between
            lo, hi = state[id(s)]
            s["mc"] = [True if k < lo else False if k >= hi else None for k in range(len(s["steps"]))]
    return n_roll


def label_sequential(sols, policy, args, gen, t_roll):
    """Hard MC labels step by step: round k rolls out step k of every solution whose earlier
    steps are all good; a bad step makes the later ones bad."""
    for s in sols:
        n = len(s["steps"])
        s["mc"] = [None] * n
        if s["correct"]:
            s["mc"] = [True] * n
        elif ends_with_answer(s["steps"]):
            s["mc"][-1] = False
    n_roll = 0
    max_k = max(len(s["steps"]) for s in sols)
    for k in range(max_k):
        for s in sols:
            if k < len(s["steps"]) and s["mc"][k] is None and k > 0 and s["mc"][k - 1] is False:
                s["mc"][k] = False
        todo = [s for s in sols if k < len(s["steps"]) and s["mc"][k] is None]
        if not todo:
            continue
        hits = rollout_hits(policy, [(s, k) for s in todo], args, gen)
        n_roll += len(todo) * args.rollouts
        for s, h in zip(todo, hits):
            s["mc"][k] = h > 0
        print(f"  step {k + 1}: {len(todo)} prefixes, {len(todo) * args.rollouts} rollouts "
              f"({time.time() - t_roll:.0f}s)", flush=True)
        if time.time() - t_roll > args.rollout_limit:
            print("rollout time limit: the later steps stay unlabelled", flush=True)
            break
    return n_roll


def bo16_metrics(dev, texts, scores, n=16):
    """Best-of-n on dev problems: majority vote, best candidate and PRM-weighted vote under three
    step aggregations, pass@n, and the within-problem pairwise rate (how often a right candidate
    outscores a wrong one of the same problem; ties count half), which is what reranking needs."""
    res = collections.Counter()
    pairs, wins = collections.Counter(), collections.Counter()
    for i, r in enumerate(dev):
        ans = [C.final_answer(t) for t in texts[i * n:(i + 1) * n]]
        scs = scores[i * n:(i + 1) * n]
        res["greedy_like_first"] += ans[0] == r["answer"]
        votes = collections.Counter(a for a in ans if a is not None)
        res["majority"] += bool(votes) and votes.most_common(1)[0][0] == r["answer"]
        right = [a == r["answer"] for a in ans]
        for agg, f in (("min", min), ("last", lambda v: v[-1]), ("prod", lambda v: float(np.prod(v)))):
            vals = [f(v) if v else 0.0 for v in scs]
            res[f"bon_{agg}"] += ans[int(np.argmax(vals))] == r["answer"]
            w = collections.defaultdict(float)
            for a, v in zip(ans, vals):
                if a is not None:
                    w[a] += v
            res[f"weighted_{agg}"] += bool(w) and max(w, key=w.get) == r["answer"]
            if agg == "prod":
                continue
            # within one problem: how often a right candidate outscores a wrong one (ties: half)
            for va in (v for v, ok in zip(vals, right) if ok):
                for vb in (v for v, ok in zip(vals, right) if not ok):
                    pairs[agg] += 1
                    wins[agg] += (va > vb) + 0.5 * (va == vb)
        res["pass"] += r["answer"] in ans
    rb = {k: v / len(dev) for k, v in res.items()}
    for agg in pairs:
        rb[f"pairwise_{agg}"] = wins[agg] / max(1, pairs[agg])
        rb[f"pairs_{agg}"] = pairs[agg]
    return rb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--val-frac", type=float, default=0.1)
    ap.add_argument("--bo-problems", type=int, default=200, help="dev hard problems for best-of-16")
    ap.add_argument("--seed", type=int, default=4321)
    ap.add_argument("--compare", default="",
                    help="another PRM (safetensors) to score the same best-of-16 samples with")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="validate every N training steps and keep the weights with the best "
                         "step AUC against the MC labels (0: keep the last)")
    ap.add_argument("--problems", type=int, default=3200, help="PRM problems (hard:medium 3:1)")
    ap.add_argument("--samples", type=int, default=2, help="policy solutions per problem")
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--labels", choices=["binary", "sequential"], default="binary",
                    help="binary: search each wrong solution for its first bad step (about "
                         "log2(steps) rollout rounds); sequential: roll out every step in turn")
    ap.add_argument("--worked", action="store_true",
                    help="the policy writes work lines (train_policy --worked): longer rollouts")
    ap.add_argument("--max-new", type=int, default=400, help="generation limit (700 for --worked)")
    ap.add_argument("--per-step", type=int, default=0,
                    help="rollout tokens per remaining reference step (0: 130 with --worked, else 45)")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--gen-batch", type=int, default=2048)
    ap.add_argument("--time-limit", type=float, default=120, help="PRM training seconds at most")
    ap.add_argument("--rollout-limit", type=float, default=240, help="rollout seconds at most")
    ap.add_argument("--synthetic-frac", type=float, default=0.0,
                    help="share of training examples that are reference solutions or hard "
                         "negatives built from them (synthetic_solution), from PRM problems "
                         "not used for rollouts")
    ap.add_argument("--lm-weight", type=float, default=0.0,
                    help="weight of a next-token loss on the tokens of right steps, which keeps "
                         "the digit computation the PRM inherits from the policy")
    ap.add_argument("--synthetic-bad", type=float, default=0.65,
                    help="share of the synthetic examples that carry an error")
    args = ap.parse_args()
    if args.tiny:
        args.problems, args.samples, args.rollouts, args.steps, args.batch = 12, 2, 2, 10, 4
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator(device=device)
    gen.manual_seed(args.seed)
    rng = random.Random(args.seed)
    log = {"args": vars(args)}
    t0 = time.time()

    policy, cfg, pstate = load_policy(args.policy, device)
    n_h = args.problems * 3 // 4
    recs = C.read_records(DATA / "prm_hard.jsonl.xz")[:n_h] + \
        C.read_records(DATA / "prm_medium.jsonl.xz")[:args.problems - n_h]
    rng.shuffle(recs)
    # Problems for synthetic examples: the PRM files' problems that get no rollouts.
    pool = C.read_records(DATA / "prm_hard.jsonl.xz")[n_h:] + \
        C.read_records(DATA / "prm_medium.jsonl.xz")[args.problems - n_h:]
    if args.synthetic_frac > 0:
        for r in pool[:200]:
            lines, labels = synthetic_solution(r, rng, corrupt=False)
            assert "\n".join(lines) == r["solution"] and all(labels), r["id"]
        print(f"synthetic pool: {len(pool)} problems", flush=True)

    # 1. policy solutions
    items = []  # (rec, messages, prompt ids)
    for r in recs:
        for _ in range(args.samples):
            msgs = C.sample_messages(r, rng) if rng.random() < 0.5 else C.eval_messages(r)
            items.append((r, msgs, C.encode(C.render_chat(msgs, True))))
    order = sorted(range(len(items)), key=lambda i: len(items[i][2]))
    items = [items[i] for i in order]
    outs = gen_batched(policy, [p for _, _, p in items], args.max_new, 1.0, gen, args.gen_batch)
    sols = []
    for (r, msgs, p), o in zip(items, outs):
        text = C.decode([x for x in o if x < 256])  # generated control tokens dropped
        steps = C.split_steps(text)
        if steps:
            sols.append({"rec": r, "messages": msgs, "prompt": p, "steps": steps,
                         "correct": C.final_answer(text) == r["answer"]})
    acc = sum(s["correct"] for s in sols) / max(1, len(sols))
    print(f"{len(sols)} solutions sampled, {acc:.3f} correct ({time.time() - t0:.0f}s)", flush=True)

    # 2. MC labels
    t_roll = time.time()
    if args.labels == "binary":
        n_roll = label_binary(sols, policy, args, gen, t_roll)
    else:
        n_roll = label_sequential(sols, policy, args, gen, t_roll)
    # A rollout time limit leaves some steps unlabelled (None): they get no loss. Dropping the
    # solutions they belong to instead would keep mostly right ones, all '+' (logs/prm_binary_1.log).
    n_sols = len(sols)
    sols = [s for s in sols if any(x is not None for x in s["mc"])]
    pairs = [(a, b) for s in sols for a, b in zip(s["mc"], true_labels(s["rec"], s["steps"]))
             if a is not None]
    labels = [a for a, _ in pairs]
    agree = sum(a == b for a, b in pairs) / len(labels)
    n_unknown = sum(x is None for s in sols for x in s["mc"])
    print(f"{len(sols)} of {n_sols} solutions have labels; {n_unknown} steps left unlabelled",
          flush=True)
    print(f"{n_roll} rollouts in {time.time() - t_roll:.0f}s; {len(labels)} step labels, "
          f"{sum(labels) / len(labels):.3f} good; MC vs exact agreement {agree:.3f}", flush=True)
    log.update(solutions=len(sols), solution_acc=acc, rollouts=n_roll, step_labels=len(labels),
               good_frac=sum(labels) / len(labels), mc_exact_agreement=agree,
               rollout_seconds=round(time.time() - t_roll, 1))
    del policy
    torch.cuda.empty_cache() if device.type == "cuda" else None

    # 3. PRM training
    rng.shuffle(sols)
    n_val = max(1, int(len(sols) * args.val_frac))
    val, train = sols[:n_val], sols[n_val:]

    def synthetic():
        r = pool[rng.randrange(len(pool))]
        steps, lab = synthetic_solution(r, rng, corrupt=rng.random() < args.synthetic_bad)
        msgs = C.sample_messages(r, rng) if rng.random() < 0.5 else C.eval_messages(r)
        return {"steps": steps, "mc": lab, "messages": msgs}

    def example(s):
        steps, lab = list(s["steps"]), list(s["mc"])
        # Sometimes the answer line arrives in the same step as the last step line.
        if len(steps) >= 2 and C.parse_steps(steps[-2]) and not C.parse_steps(steps[-1]) \
                and rng.random() < 0.25:
            steps = steps[:-2] + [steps[-2] + "\n" + steps[-1]]
            lab = lab[:-2] + [lab[-1] if lab[-1] is not None else lab[-2]]
        toks, spans = C.prm_encode(s["messages"], steps)
        lm = [-100] * len(toks)
        if args.lm_weight > 0:
            for (start, end), good in zip(spans, lab):
                if good:
                    # Next-token targets inside a right step: the PRM keeps computing the digits
                    # it checks (position p predicts token p + 1).
                    for q in range(start, end - 1):
                        lm[q] = toks[q + 1]
        tgt = [-100] * len(toks)
        pos = [p for p, x in enumerate(toks) if x == C.STEP_ID]
        assert len(pos) == len(lab), (len(pos), len(lab))
        for p, l in zip(pos, lab):
            if l is not None:
                tgt[p] = 0 if l else 1  # class 0 = '+', 1 = '-'
        return toks, tgt, lm

    prm = Transformer(cfg).to(device)
    load_fp16_state(prm, pstate)
    opt = torch.optim.AdamW(prm.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    # The '+' share of what training sees: MC labels, and the synthetic examples' expected share
    # (a hard negative is '+' before its bad step, about a third of its steps).
    syn_pos = (1 - args.synthetic_bad) + args.synthetic_bad * 0.35
    mix_pos = (1 - args.synthetic_frac) * sum(labels) / len(labels) + args.synthetic_frac * syn_pos
    pos_w = min(0.99, max(0.01, mix_pos))
    # Class weights so that '-' (rarer) is not ignored.
    cw = torch.tensor([0.5 / pos_w, 0.5 / (1 - pos_w)], device=device).clamp(max=5.0)
    val_vl = [x for s in val for x in s["mc"]]

    def val_auc():
        vs = prm_scores(prm, [(s["messages"], s["steps"]) for s in val])
        return auc(*known([x for v in vs for x in v], val_vl))

    best = (-1.0, 0, None)
    t_tr = time.time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, 50)
        batch = [example(synthetic() if args.synthetic_frac > 0 and rng.random() < args.synthetic_frac
                         else train[rng.randrange(len(train))]) for _ in range(args.batch)]
        T = max(len(t) for t, _, _ in batch)
        toks = torch.full((len(batch), T), C.PAD_ID, dtype=torch.long)
        tgt = torch.full((len(batch), T), -100, dtype=torch.long)
        lmt = torch.full((len(batch), T), -100, dtype=torch.long)
        for i, (t, y, m) in enumerate(batch):
            toks[i, :len(t)] = torch.tensor(t)
            tgt[i, :len(y)] = torch.tensor(y)
            lmt[i, :len(m)] = torch.tensor(m)
        toks, tgt, lmt = toks.to(device), tgt.to(device), lmt.to(device)
        prm.train()
        with torch.autocast(**amp):
            logits = prm(toks)
        two = logits[..., [C.PLUS_ID, C.MINUS_ID]].float()
        loss = F.cross_entropy(two.view(-1, 2), tgt.view(-1), weight=cw, ignore_index=-100)
        if args.lm_weight > 0 and (lmt >= 0).any():
            loss = loss + args.lm_weight * F.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), lmt.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prm.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            print(f"prm step {step} loss {loss.item():.4f} ({time.time() - t_tr:.0f}s)", flush=True)
        if args.eval_every and (step + 1) % args.eval_every == 0:
            prm.eval()
            a = val_auc()
            if a > best[0]:
                best = (a, step + 1, {k: v.detach().clone() for k, v in prm.state_dict().items()})
            print(f"  val AUC vs MC at step {step + 1}: {a:.3f}", flush=True)
        if time.time() - t_tr > args.time_limit:
            print(f"time limit at step {step}", flush=True)
            break
    log["prm_train_seconds"] = round(time.time() - t_tr, 1)
    log["prm_steps_done"] = step + 1
    prm.eval()
    kept = step + 1
    if best[2] is not None and val_auc() < best[0]:
        prm.load_state_dict(best[2])
        kept = best[1]
        print(f"kept the weights of step {kept} (val AUC vs MC {best[0]:.3f})", flush=True)
    log["prm_steps_kept"] = kept

    # saved before the evaluations, which a time limit may cut short
    save_file(fp16_state(prm), str(out / "prm.safetensors"),
              metadata={"config": json.dumps(cfg.to_dict())})

    # 4. evaluation
    vs = prm_scores(prm, [(s["messages"], s["steps"]) for s in val])
    sc = [x for v in vs for x in v]
    vl = val_vl
    vt = [x for s in val for x in true_labels(s["rec"], s["steps"])]
    sc_k, vl_k = known(sc, vl)
    acc_mc = sum((p > 0.5) == l for p, l in zip(sc_k, vl_k)) / max(1, len(vl_k))
    log.update(val_steps=len(sc), val_auc_mc=auc(sc_k, vl_k), val_auc_exact=auc(sc, vt),
               val_acc_mc=acc_mc)
    print(f"PRM val: {len(sc)} steps, AUC vs MC {log['val_auc_mc']:.3f}, vs exact "
          f"{log['val_auc_exact']:.3f}, acc@0.5 vs MC {acc_mc:.3f}", flush=True)

    # best-of-16 on dev hard with the policy's samples (T=0.7), eval prompts
    policy, _, _ = load_policy(args.policy, device)
    dev = C.read_records(DATA / "dev_hard.jsonl.xz")[:(8 if args.tiny else args.bo_problems)]
    n = 16
    prompts = [prompt_ids(r) for r in dev for _ in range(n)]
    o = gen_batched(policy, prompts, args.max_new, 0.7, gen, args.gen_batch)
    texts = [C.decode([t for t in x if t < 256]) for x in o]
    steps = [C.split_steps(t) or [""] for t in texts]
    scores = prm_scores(prm, [(C.eval_messages(dev[i // n]), st) for i, st in enumerate(steps)])
    rb = bo16_metrics(dev, texts, scores)
    log["bo16_dev_hard"] = rb
    print(f"best-of-16 on {len(dev)} dev hard: {json.dumps(rb)}", flush=True)
    if args.compare:
        other, _, _ = load_policy(args.compare, device)
        rc = bo16_metrics(dev, texts, prm_scores(other, [(C.eval_messages(dev[i // n]), st)
                                                         for i, st in enumerate(steps)]))
        log["bo16_dev_hard_compare"] = rc
        print(f"the same samples scored by {args.compare}: {json.dumps(rc)}", flush=True)

    (out / "prm_log.json").write_text(json.dumps(log, indent=1))
    print(f"total {time.time() - t0:.0f}s; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
