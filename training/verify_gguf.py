#!/usr/bin/env python3
"""Check an exported GGUF against the PyTorch model it came from.

1. Reads the GGUF with the `gguf` package: metadata contract (architecture, tokenizer, special
   ids, chat template rendered with jinja2 equal to common.render_chat, PRM keys).
2. Runs an independent pure-numpy forward pass of the llama graph as llama.cpp computes it
   (RMSNorm, NORMAL/adjacent-pair RoPE, SwiGLU) from the GGUF tensors, and compares its logits
   with the PyTorch model loaded from the safetensors (max abs diff) on chat prompts, and the
   greedy continuation of a prompt (policy) or the step rewards (PRM).
3. If a llama.cpp build exists at /tmp/llama-build/bin (llama-simple or llama-cli), greedily
   decodes a prompt with it and compares the text with PyTorch's greedy decode.

Usage: python3 training/verify_gguf.py --gguf models/ponder-policy.gguf --weights W/policy.safetensors
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402


def field(r: gguf.GGUFReader, key: str):
    f = r.fields.get(key)
    if f is None:
        return None
    if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
        if f.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i].tolist()[0] for i in f.data]
    if f.types[0] == gguf.GGUFValueType.STRING:
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    return f.parts[f.data[0]].tolist()[0]


class NumpyLlama:
    def __init__(self, path: str):
        r = gguf.GGUFReader(path)
        self.r = r
        a = field(r, "general.architecture")
        assert a == "llama", a
        g = lambda k: field(r, f"llama.{k}")  # noqa: E731
        self.d = g("embedding_length")
        self.L = g("block_count")
        self.H = g("attention.head_count")
        self.Hkv = g("attention.head_count_kv")
        self.rope_dim = g("rope.dimension_count")
        self.eps = g("attention.layer_norm_rms_epsilon")
        self.base = g("rope.freq_base")
        self.hd = self.d // self.H
        assert self.rope_dim == self.hd
        self.t = {}
        for t in r.tensors:
            arr = np.array(t.data, dtype=np.float32)
            shape = tuple(int(x) for x in reversed(t.shape.tolist()))
            self.t[t.name] = arr.reshape(shape)

    @staticmethod
    def rms(x, w, eps):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w

    def rope(self, x, pos):
        # x (T, H, hd); llama.cpp NORM mode: pairs (2i, 2i+1), theta = pos * base^(-2i/hd)
        inv = self.base ** (-np.arange(0, self.hd, 2, dtype=np.float64) / self.hd)
        ang = pos[:, None].astype(np.float64) * inv[None, :]
        c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        x0, x1 = x[..., 0::2], x[..., 1::2]
        y = np.empty_like(x)
        y[..., 0::2] = x0 * c - x1 * s
        y[..., 1::2] = x0 * s + x1 * c
        return y

    def logits(self, tokens: list[int]) -> np.ndarray:
        t = self.t
        T = len(tokens)
        pos = np.arange(T)
        x = t["token_embd.weight"][tokens].astype(np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for i in range(self.L):
            p = f"blk.{i}."
            h = self.rms(x, t[p + "attn_norm.weight"], self.eps)
            q = (h @ t[p + "attn_q.weight"].T).reshape(T, self.H, self.hd)
            k = (h @ t[p + "attn_k.weight"].T).reshape(T, self.Hkv, self.hd)
            v = (h @ t[p + "attn_v.weight"].T).reshape(T, self.Hkv, self.hd)
            q, k = self.rope(q, pos), self.rope(k, pos)
            rep = self.H // self.Hkv
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            att = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(self.hd) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = np.einsum("hqk,khd->qhd", att, v).reshape(T, self.d)
            x = x + o @ t[p + "attn_output.weight"].T
            h = self.rms(x, t[p + "ffn_norm.weight"], self.eps)
            gate = h @ t[p + "ffn_gate.weight"].T
            x = x + ((gate / (1 + np.exp(-gate))) * (h @ t[p + "ffn_up.weight"].T)) @ t[p + "ffn_down.weight"].T
        x = self.rms(x, t["output_norm.weight"], self.eps)
        return x @ t["output.weight"].T


def check_metadata(r, role):
    errors = []

    def want(key, val):
        got = field(r, key)
        if got != val:
            errors.append(f"{key}: {got!r} != {val!r}")

    want("general.architecture", "llama")
    want("tokenizer.ggml.model", "gpt2")
    want("tokenizer.ggml.pre", "default")
    want("tokenizer.ggml.bos_token_id", C.EOT_ID)
    want("tokenizer.ggml.eos_token_id", C.IM_END_ID)
    want("tokenizer.ggml.padding_token_id", C.PAD_ID)
    want("tokenizer.ggml.add_bos_token", False)
    want("tokenizer.chat_template", C.CHAT_TEMPLATE)
    want("ponder.role", role)
    toks = field(r, "tokenizer.ggml.tokens")
    if toks != C.token_strings():
        errors.append("token list differs")
    types = field(r, "tokenizer.ggml.token_type")
    if types != [1] * 256 + [3] * len(C.SPECIALS):
        errors.append("token types differ")
    if field(r, "tokenizer.ggml.merges") is None:
        errors.append("tokenizer.ggml.merges missing")
    if field(r, "llama.vocab_size") != len(toks):
        errors.append("vocab_size")
    if role == "prm":
        want("ponder.prm.step_tag", C.STEP_TAG)
        want("ponder.prm.good_token", "+")
        want("ponder.prm.bad_token", "-")
    try:
        import jinja2
        tpl = jinja2.Environment().from_string(field(r, "tokenizer.chat_template"))
        msgs = [{"role": "system", "content": C.DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": "Q\n\nI"}]
        for agp in (True, False):
            if tpl.render(messages=msgs, add_generation_prompt=agp) != C.render_chat(msgs, agp):
                errors.append(f"jinja2 rendering differs (add_generation_prompt={agp})")
    except ImportError:
        print("  (jinja2 not installed: template rendering not checked)")
    return errors


def torch_model(weights):
    import torch
    from safetensors import safe_open
    from model import Config, Transformer
    with safe_open(weights, "pt") as f:
        cfg = Config(**json.loads(f.metadata()["config"]))
        state = {k: f.get_tensor(k).float() for k in f.keys()}
    m = Transformer(cfg)
    m.load_state_dict(state)
    m.eval()
    return m


def llama_check(gguf_path, text, mode, n=0):
    """Run training/tools/llama_check (built against the vendored llama.cpp; path from
    $LLAMA_CHECK, default /tmp/llama_check). Returns (token ids, greedy text or rewards) or None."""
    import os
    import tempfile
    exe = os.environ.get("LLAMA_CHECK", "/tmp/llama_check")
    if not Path(exe).exists():
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
    p = subprocess.run([exe, gguf_path, f.name, mode, str(n)], capture_output=True, timeout=600)
    os.unlink(f.name)
    out = p.stdout.decode("utf-8", errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"llama_check failed: {p.stderr.decode()[-2000:]}")
    toks = [int(x) for x in out.split("TOKENS", 1)[1].split("\n", 1)[0].split()]
    if mode == "prm":
        return toks, [float(x) for x in out.split("REWARDS", 1)[1].split("\n", 1)[0].split()]
    return toks, out.split("GREEDY_BEGIN\n", 1)[1].rsplit("\nGREEDY_END", 1)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--role", choices=["policy", "prm"])
    ap.add_argument("--tol", type=float, default=2e-3)
    a = ap.parse_args()
    role = a.role or ("prm" if "prm" in Path(a.gguf).name else "policy")
    import torch
    from model import generate

    npm = NumpyLlama(a.gguf)
    errs = check_metadata(npm.r, role)
    print(f"metadata: {'OK' if not errs else errs}")
    tm = torch_model(a.weights)
    rec = {"question": "Omar has 12 coins. He buys 5 more coins. He gives away 4 coins. "
                       "He multiplies his coins by 3. How many coins does Omar have now?"}
    msgs = C.eval_messages(rec)
    prompt = C.render_chat(msgs, True)
    if role == "prm":
        steps = ["Step 1: add 12 + 5 = 17.", "Step 2: subtract 17 - 4 = 13.",
                 "Step 3: multiply 13 * 3 = 38.", "The answer is \\boxed{38}."]
        text = C.prm_text(msgs, steps)
    else:
        text = prompt + "Step 1: add 12 + 5 = 17.\nStep 2:"
    ids = C.encode(text)
    with torch.no_grad():
        lt = tm(torch.tensor([ids])).double().numpy()[0]
    ln = npm.logits(ids)
    diff = float(np.abs(lt - ln).max())
    print(f"logits over {len(ids)} tokens: max |torch - numpy(gguf)| = {diff:.2e} "
          f"(logit scale {np.abs(lt).max():.1f})")
    ok = diff < a.tol and not errs and bool((lt.argmax(-1) == ln.argmax(-1)).all())
    if role == "prm":
        pos = [i for i, x in enumerate(ids) if x == C.STEP_ID]
        for name, L in (("torch", lt), ("numpy", ln)):
            two = L[pos][:, [C.PLUS_ID, C.MINUS_ID]]
            p = np.exp(two - two.max(-1, keepdims=True))
            p = p[:, 0] / p.sum(-1)
            print(f"  step rewards ({name}): {np.round(p, 4).tolist()}")
            if name == "torch":
                ref = p
        res = llama_check(a.gguf, text, "prm")
        if res is None:
            print("llama.cpp: skipped (no llama_check binary; see training/README.md)")
        else:
            ltoks, lrew = res
            rdiff = float(np.abs(np.asarray(lrew) - ref).max())
            print(f"llama.cpp: tokenisation identical: {ltoks == ids}; rewards {np.round(lrew, 4).tolist()} "
                  f"(max diff {rdiff:.1e})")
            ok = ok and ltoks == ids and rdiff < 1e-2
    else:
        pids = C.encode(prompt)
        g = generate(tm, [pids], 300, 0.0, C.IM_END_ID)[0]
        # numpy greedy (no cache: fine for one short decode)
        seq = list(pids)
        for _ in range(min(len(g), 24)):  # numpy has no KV cache: a prefix of the decode
            nxt = int(npm.logits(seq)[-1].argmax())
            seq.append(nxt)
            if nxt == C.IM_END_ID:
                break
        same = seq[len(pids):] == g[:len(seq) - len(pids)]
        print(f"greedy decode (first 24 tokens), torch vs numpy(gguf) identical: {same}\n{C.decode(g)}")
        ok = ok and same
        res = llama_check(a.gguf, prompt, "greedy", len(g))
        if res is None:
            print("llama.cpp: skipped (no llama_check binary; see training/README.md)")
        else:
            ltoks, ltext = res
            tok_ok = ltoks == pids
            text_ok = ltext == C.decode(g)
            print(f"llama.cpp: tokenisation identical: {tok_ok}; greedy text identical: {text_ok}")
            if not text_ok:
                print(f"llama.cpp greedy:\n{ltext}")
            ok = ok and tok_ok and text_ok
    print("VERIFY", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
