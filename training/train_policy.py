#!/usr/bin/env python3
"""Train the bundled policy from scratch on the synthetic task (data from prep_data.py).

Each example is a ChatML conversation from the prompt mix of common.sample_messages, then the
reference solution and <|im_end|>; the loss covers the assistant content and <|im_end|> only.
Checkpoints are evaluated on held-out hard problems (dev seed 424242) during training; at the
end every checkpoint gets greedy + 16-sample evaluation and the one chosen by --pick is written
as fp16 safetensors (the weights the GGUF gets), plus a JSON log.

Usage (GPU): python3 training/train_policy.py --out DIR
      (CPU smoke test): python3 training/train_policy.py --tiny --out /tmp/p
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402
from evaluate import evaluate  # noqa: E402
from model import Config, Transformer  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / ".train" / "data"


# `ponder_task::worked::DIRECT_PROBABILITY`: the share of steps with a route that the Rust task
# writes without a work line.
TASK_DIRECT = 0.4


def build_example(rec: dict, rng: random.Random, worked: bool,
                  keep_work: float = 1.0) -> tuple[list[int], int]:
    """(tokens, index of the first loss token). With `worked`, the target is the record's
    worked solution (work lines along random routes before some steps; see `ponder_task::worked`),
    each of its work lines kept with probability `keep_work` (drawn from `rng`)."""
    prompt = C.encode(C.render_chat(C.sample_messages(rec, rng), True))
    target = rec["worked_solution"] if worked else rec["solution"]
    if worked and keep_work < 1.0:
        target = "\n".join(line for line in target.split("\n")
                           if not C.is_work_line(line) or rng.random() < keep_work)
    answer = C.encode(target, parse_special=False) + [C.IM_END_ID]
    return prompt + answer, len(prompt)


class Batcher:
    """Random examples, grouped by length: draw `group` batches' worth, sort by length, split."""

    def __init__(self, recs, weights, batch, seed, device, worked, keep_work=1.0, group=32):
        self.recs, self.batch, self.device, self.group = recs, batch, device, group
        self.worked, self.keep_work = worked, keep_work
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.p = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.queue = []

    def _refill(self):
        idx = self.np_rng.choice(len(self.recs), size=self.batch * self.group, p=self.p)
        ex = [build_example(self.recs[i], self.rng, self.worked, self.keep_work) for i in idx]
        ex.sort(key=lambda e: len(e[0]))
        batches = [ex[i:i + self.batch] for i in range(0, len(ex), self.batch)]
        self.rng.shuffle(batches)
        self.queue = batches

    def next(self):
        if not self.queue:
            self._refill()
        ex = self.queue.pop()
        T = max(len(t) for t, _ in ex)
        toks = np.full((len(ex), T), C.PAD_ID, dtype=np.int64)
        tgt = np.full((len(ex), T), -100, dtype=np.int64)
        for i, (t, start) in enumerate(ex):
            toks[i, :len(t)] = t
            tgt[i, start - 1:len(t) - 1] = t[start:]
        toks = torch.from_numpy(toks).pin_memory() if self.device.type == "cuda" else torch.from_numpy(toks)
        tgt = torch.from_numpy(tgt).pin_memory() if self.device.type == "cuda" else torch.from_numpy(tgt)
        return toks.to(self.device, non_blocking=True), tgt.to(self.device, non_blocking=True)


def lr_at(step, total, peak, warmup, floor=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def fp16_state(model) -> dict:
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}


def load_fp16_state(model, state):
    model.load_state_dict({k: v.float() for k, v in state.items()})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--tiny", action="store_true", help="CPU smoke test config")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--steps", type=int, default=0, help="0: from the measured speed and --time-limit")
    ap.add_argument("--stop-at", type=int, default=0,
                    help="end training after this many steps of the --steps schedule (0: all)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=1500)
    ap.add_argument("--time-limit", type=float, default=360, help="seconds of training (auto steps)")
    ap.add_argument("--mix", default="1,2,4", help="weights of easy,medium,hard records")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--ffn", type=int, default=768)
    ap.add_argument("--band", default="0.30,0.55", help="target greedy accuracy band (hard dev)")
    ap.add_argument("--final-dev", type=int, default=600)
    ap.add_argument("--final-sampled", type=int, default=200)
    ap.add_argument("--keep", type=int, default=3, help="checkpoints written besides the pick")
    ap.add_argument("--worked", action="store_true",
                    help="train on worked solutions (work lines along random routes)")
    ap.add_argument("--direct", type=float, default=TASK_DIRECT,
                    help="with --worked: share of steps with a route written without a work line "
                         f"(at least the task's {TASK_DIRECT}; work lines are dropped at random)")
    ap.add_argument("--final-count", type=int, default=5, help="latest checkpoints fully evaluated")
    ap.add_argument("--test-temps", default="0.7,1.0", help="temperatures of the seed-0 test evaluation")
    ap.add_argument("--max-new", type=int, default=400, help="generation limit of the evaluations")
    ap.add_argument("--eval-batch", type=int, default=2048,
                    help="sequences generated at once in the final evaluations (GPU memory)")
    args = ap.parse_args()

    if not TASK_DIRECT <= args.direct <= 1.0:
        ap.error(f"--direct {args.direct}: must lie in [{TASK_DIRECT}, 1]")
    keep_work = (1.0 - args.direct) / (1.0 - TASK_DIRECT)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.dim, args.layers, args.heads, args.ffn = 64, 2, 4, 128
        args.batch, args.eval_every, args.warmup = 8, 15, 5
        args.steps = 30 if args.steps == 0 and args.time_limit > 60 else args.steps
        args.final_dev, args.final_sampled = 8, 4
    cfg = Config(dim=args.dim, n_layers=args.layers, n_heads=args.heads, n_kv_heads=args.heads,
                 ffn_dim=args.ffn)
    model = Transformer(cfg).to(device)
    print(f"params {model.n_params():,}  device {device}  config {cfg.to_dict()}", flush=True)

    t0 = time.time()
    mix = [float(x) for x in args.mix.split(",")]
    recs, weights = [], []
    for d, w in zip(("easy", "medium", "hard"), mix):
        r = C.read_records(DATA / f"train_{d}.jsonl.xz")
        if args.tiny:
            r = r[:200]
        recs += r
        weights += [w / len(r)] * len(r)
    dev = C.read_records(DATA / "dev_hard.jsonl.xz")
    test = C.read_records(DATA / "test_hard_seed0.jsonl.xz")
    n_quick = 256
    if args.tiny:
        test, n_quick = test[:4], 8
    print(f"data: {len(recs)} training problems, loaded in {time.time() - t0:.1f}s", flush=True)

    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.dim() == 2 and "tok_embeddings" not in n else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type == "cuda")
    batcher = Batcher(recs, weights, args.batch, args.seed, device, args.worked, keep_work)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    log = {"args": vars(args), "config": cfg.to_dict(), "params": model.n_params(), "evals": []}
    ckpts = []
    t_train = time.time()
    tokens_seen = 0
    loss_ema = None
    step = 0
    auto = args.steps <= 0
    total = 10 ** 9 if auto else args.steps
    t_probe = None
    for step in range(total):
        if auto and step == 20:
            t_probe = time.time()
        if auto and step == 80:
            # Fix the schedule's length from the measured speed (logged; pass --steps N to rerun).
            per = (time.time() - t_probe) / 60
            total = max(200, int(args.time_limit / per * 0.97))
            args.eval_every = max(1, total // 6)
            log["auto_steps"] = total
            print(f"measured {per * 1000:.1f} ms/step -> --steps {total} --eval-every "
                  f"{args.eval_every}", flush=True)
        if step >= total:
            break
        lr = lr_at(step, total if not auto or step >= 80 else 10 ** 6, args.lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        toks, tgt = batcher.next()
        model.train()
        with torch.autocast(**amp):
            logits = model(toks)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), tgt.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        tokens_seen += toks.numel()
        if step % 250 == 0 or step == total - 1:
            lv = loss.item()
            loss_ema = lv if loss_ema is None else 0.9 * loss_ema + 0.1 * lv
            el = time.time() - t_train
            print(f"step {step} loss {lv:.4f} lr {lr:.2e} tok/s {tokens_seen / max(el, 1e-9):,.0f} "
                  f"elapsed {el:.0f}s", flush=True)
        last = (step == total - 1 or step + 1 == args.stop_at
                or time.time() - t_train > args.time_limit * 1.1)
        if (step + 1) % args.eval_every == 0 or last:
            te = time.time()
            r = evaluate(model, dev[:n_quick], max_new=args.max_new)
            r.pop("greedy_examples")
            r.update(step=step + 1, train_s=round(time.time() - t_train, 1))
            print(f"  eval step {step + 1}: {json.dumps(r)} ({time.time() - te:.1f}s)", flush=True)
            log["evals"].append(r)
            ckpts.append((step + 1, fp16_state(model)))
            t_train += time.time() - te  # evaluation time is not training time
        if last:
            break
    from safetensors.torch import save_file
    save_file(ckpts[-1][1], str(out / "policy_last.safetensors"),
              metadata={"config": json.dumps(cfg.to_dict()), "step": str(ckpts[-1][0])})
    log["train_seconds"] = round(time.time() - t_train, 1)
    log["steps_done"] = step + 1
    print(f"trained {step + 1} steps in {log['train_seconds']}s", flush=True)

    # Full evaluation of the later checkpoints; pick one in the band.
    lo, hi = (float(x) for x in args.band.split(","))
    full = []
    for s, st in ckpts[-args.final_count:]:
        load_fp16_state(model, st)
        te = time.time()
        r = evaluate(model, dev[:args.final_dev], n_samples=16, temperature=0.7,
                     n_sampled_problems=args.final_sampled, seed=args.seed, batch=args.eval_batch,
                     max_new=args.max_new)
        ex = r.pop("greedy_examples")
        r["step"] = s
        print(f"full eval step {s} ({time.time() - te:.1f}s): {json.dumps(r)}", flush=True)
        full.append((s, st, r, ex))
    in_band = [f for f in full if lo <= f[2]["greedy_acc"] <= hi]
    good = [f for f in in_band if f[2]["majority_at_n"] - f[2]["greedy_acc_on_sampled"] >= 0.10]
    if good:
        pick = good[-1]
    elif in_band:
        pick = max(in_band, key=lambda f: f[2]["majority_at_n"] - f[2]["greedy_acc_on_sampled"])
    else:
        pick = min(full, key=lambda f: abs(f[2]["greedy_acc"] - (lo + hi) / 2))
    s, st, r, ex = pick
    print(f"PICK step {s}: greedy {r['greedy_acc']:.3f}, maj@16 {r['majority_at_n']:.3f}", flush=True)
    # Weights are written before the test evaluations, so a run cut short keeps them.
    meta = {"config": json.dumps(cfg.to_dict()), "step": str(s)}
    save_file(st, str(out / "policy.safetensors"), metadata=meta)
    others = [f for f in full if f[0] != s][-args.keep:]
    for fs, fst, _, _ in others:
        save_file(fst, str(out / f"policy_step{fs}.safetensors"), metadata={**meta, "step": str(fs)})
    log.update(full_evals=[f[2] for f in full], pick_step=s, pick_eval=r)
    (out / "policy_log.json").write_text(json.dumps(log, indent=1))
    print("example greedy output:\n" + ex[0], flush=True)
    load_fp16_state(model, st)
    # Seed-0 test problems (Ponder's default synthetic-hard eval set), T=0.7 and 1.0; other prompts.
    tests = {}
    for temp in (float(t) for t in args.test_temps.split(",") if t.strip()):
        rt = evaluate(model, test, n_samples=16, temperature=temp, seed=args.seed,
                      batch=args.eval_batch, max_new=args.max_new)
        rt.pop("greedy_examples")
        tests[f"test_seed0_t{temp:g}"] = rt
        print(f"test seed0 T={temp:g}: {json.dumps(rt)}", flush=True)
    demos = []
    for msgs in ([{"role": "user", "content": "Tom has 12 apples and buys 5 more. How many apples does he have?"}],
                 [{"role": "user", "content": dev[0]["question"]}],
                 [{"role": "system", "content": C.DEFAULT_SYSTEM_PROMPT},
                  {"role": "user", "content": "Sara has 40 cookies. She eats 7 cookies and then bakes 3 times as many. How many cookies does she have?"}]):
        from model import generate
        o = generate(model, [C.encode(C.render_chat(msgs, True))], args.max_new, 0.0, C.IM_END_ID)[0]
        demos.append({"messages": msgs, "greedy": C.decode(o)})
        print(f"demo {msgs[-1]['content'][:60]!r} ->\n{C.decode(o)}", flush=True)
    log.update(full_evals=[f[2] for f in full], pick_step=s, pick_eval=r, demos=demos, **tests)

    (out / "policy_log.json").write_text(json.dumps(log, indent=1))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
