#!/usr/bin/env python3
"""Write a trained model (fp16 safetensors from train_policy.py / train_prm.py) as a GGUF file
for llama.cpp's "llama" architecture, with the byte-level tokenizer and the ChatML template.

Usage:
  python3 training/export_gguf.py --role policy --weights W/policy.safetensors --out models/ponder-policy.gguf
  python3 training/export_gguf.py --role prm    --weights W/prm.safetensors    --out models/ponder-prm.gguf
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common as C  # noqa: E402

# Our parameter names -> GGUF tensor names.
LAYER_MAP = {
    "attn_norm.weight": "attn_norm",
    "wq.weight": "attn_q",
    "wk.weight": "attn_k",
    "wv.weight": "attn_v",
    "wo.weight": "attn_output",
    "ffn_norm.weight": "ffn_norm",
    "w_gate.weight": "ffn_gate",
    "w_up.weight": "ffn_up",
    "w_down.weight": "ffn_down",
}

# A merges list is required by llama.cpp for tokenizer.ggml.model = "gpt2", and gguf-py cannot
# write an empty array; this one merge can never apply (BPE symbols start as single characters,
# and these two strings are multi-character control tokens), so tokenisation is purely per byte.
INERT_MERGES = ["<|unused_0|> <|unused_1|>"]


def gguf_name(name: str) -> str:
    if name == "tok_embeddings.weight":
        return "token_embd.weight"
    if name == "norm.weight":
        return "output_norm.weight"
    if name == "output.weight":
        return "output.weight"
    parts = name.split(".")
    assert parts[0] == "layers", name
    return f"blk.{parts[1]}.{LAYER_MAP['.'.join(parts[2:])]}.weight"


def load(path: str):
    with safe_open(path, "np") as f:
        cfg = json.loads(f.metadata()["config"])
    return cfg, load_file(path)


def export(weights: str, out: str, role: str, name: str | None = None) -> None:
    cfg, state = load(weights)
    w = gguf.GGUFWriter(out, "llama")
    w.add_name(name or f"ponder-{role}")
    w.add_description(
        "Ponder's bundled " + ("reasoning policy" if role == "policy" else "process reward model")
        + " for the synthetic multi-step arithmetic task (trained from scratch, see training/README.md)")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(cfg["context_length"])
    w.add_embedding_length(cfg["dim"])
    w.add_block_count(cfg["n_layers"])
    w.add_feed_forward_length(cfg["ffn_dim"])
    w.add_head_count(cfg["n_heads"])
    w.add_head_count_kv(cfg["n_kv_heads"])
    w.add_rope_dimension_count(cfg["dim"] // cfg["n_heads"])
    w.add_layer_norm_rms_eps(cfg["norm_eps"])
    w.add_rope_freq_base(cfg["rope_base"])
    w.add_vocab_size(cfg["vocab_size"])

    tokens = C.token_strings()
    assert len(tokens) == cfg["vocab_size"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * len(C.SPECIALS))
    w.add_token_merges(INERT_MERGES)
    w.add_bos_token_id(C.EOT_ID)
    w.add_eos_token_id(C.IM_END_ID)
    w.add_pad_token_id(C.PAD_ID)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(C.CHAT_TEMPLATE)

    w.add_string("ponder.role", role)
    if role == "prm":
        w.add_string("ponder.prm.step_tag", C.STEP_TAG)
        w.add_string("ponder.prm.good_token", "+")
        w.add_string("ponder.prm.bad_token", "-")
        w.add_string("ponder.prm.step_separator", "\n")
        w.add_string("ponder.prm.format",
                     "render_chat(messages, add_generation_prompt=true) + "
                     "'\\n'.join(step.strip() + ' <|step|>' for step in steps); "
                     "reward(step i) = softmax([logit('+'), logit('-')])[0] at the i-th <|step|>")

    order = ["tok_embeddings.weight"]
    for i in range(cfg["n_layers"]):
        order += [f"layers.{i}.{k}" for k in LAYER_MAP]
    order += ["norm.weight", "output.weight"]
    assert set(order) == set(state), set(order) ^ set(state)
    for k in order:
        t = state[k]
        # 1-D norms as f32 (llama.cpp's convention); matrices as f16, (out, in) as in PyTorch.
        t = t.astype(np.float32) if t.ndim == 1 else t.astype(np.float16)
        w.add_tensor(gguf_name(k), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out}: {Path(out).stat().st_size / 1e6:.2f} MB, "
          f"{sum(v.size for v in state.values()):,} parameters")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--role", choices=["policy", "prm"], required=True)
    ap.add_argument("--name")
    a = ap.parse_args()
    export(a.weights, a.out, a.role, a.name)


if __name__ == "__main__":
    main()
