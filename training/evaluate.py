"""Accuracy of a policy on held-out problems, measured in PyTorch with the prompts Ponder's
strategies send by default (DEFAULT_SYSTEM_PROMPT + question + SOLUTION_INSTRUCTIONS)."""

from __future__ import annotations

import collections

import torch

import common as C
from model import generate


def prompt_ids(rec: dict, messages=None) -> list[int]:
    return C.encode(C.render_chat(messages or C.eval_messages(rec), True))


def _batched(model, prompts, max_new, temperature, gen, batch):
    outs = []
    for i in range(0, len(prompts), batch):
        outs += generate(model, prompts[i:i + batch], max_new, temperature, C.IM_END_ID, gen)
    return outs


@torch.no_grad()
def evaluate(model, recs: list[dict], n_samples: int = 0, temperature: float = 0.7,
             n_sampled_problems: int | None = None, seed: int = 0, max_new: int = 400,
             batch: int = 4096) -> dict:
    """Greedy accuracy on recs; with n_samples, on the first n_sampled_problems: mean sampled
    accuracy, pass@n, majority@n (ties broken by first occurrence) and the mean tokens per
    sample."""
    model.eval()
    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    prompts = [prompt_ids(r) for r in recs]
    outs = _batched(model, prompts, max_new, 0.0, gen, batch)
    texts = [C.decode(o) for o in outs]
    greedy_ok = [C.final_answer(t) == r["answer"] for t, r in zip(texts, recs)]
    res = {"n": len(recs), "greedy_acc": sum(greedy_ok) / len(recs),
           "greedy_tokens": sum(len(o) for o in outs) / len(outs),
           "format_ok": sum(t.endswith(C.IM_END) and C.final_answer(t) is not None
                            for t in texts) / len(texts),
           "greedy_examples": texts[:2]}
    if n_samples:
        sub = recs[: n_sampled_problems or len(recs)]
        sp = [p for p in prompts[: len(sub)] for _ in range(n_samples)]
        souts = _batched(model, sp, max_new, temperature, gen, batch)
        answers = [C.final_answer(C.decode(o)) for o in souts]
        ok = maj = pas = 0
        for i, r in enumerate(sub):
            a = answers[i * n_samples:(i + 1) * n_samples]
            ok += sum(x == r["answer"] for x in a)
            pas += any(x == r["answer"] for x in a)
            votes = collections.Counter(x for x in a if x is not None)
            if votes:
                maj += votes.most_common(1)[0][0] == r["answer"]
        res.update({
            "sampled_n": len(sub), "samples": n_samples, "temperature": temperature,
            "sample_acc": ok / (len(sub) * n_samples), "pass_at_n": pas / len(sub),
            "majority_at_n": maj / len(sub),
            "greedy_acc_on_sampled": sum(greedy_ok[: len(sub)]) / len(sub),
            "sample_tokens": sum(len(o) for o in souts) / len(souts),
        })
    return res
