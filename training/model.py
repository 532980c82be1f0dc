"""A small Llama-architecture transformer, laid out exactly as llama.cpp's "llama" graph
computes it, so the weights export to GGUF without any permutation:

- RMSNorm  y = x / sqrt(mean(x^2) + eps) * w  (attn_norm, ffn_norm, output_norm)
- attention without biases, head_dim = d / n_heads, scale 1/sqrt(head_dim), causal
- RoPE in llama.cpp's NORMAL mode (LLAMA_ROPE_TYPE_NORM, used by arch "llama"): it rotates
  ADJACENT pairs (x[2i], x[2i+1]) by pos * base^(-2i/head_dim). (HF Llama's rotate_half pairs
  (i, i + d/2) instead, which is why convert_hf_to_gguf.py permutes q/k; we train in the GGUF
  convention directly, so q/k are exported as they are.)
- SwiGLU FFN  down(silu(gate(x)) * up(x))
- untied output projection

Also: batched generation with a KV cache for left-padded prompts (evaluation, MC rollouts).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Config:
    vocab_size: int = 264
    dim: int = 256
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 8
    ffn_dim: int = 768
    context_length: int = 2048
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, base: float):
    """positions (..., T) int -> cos, sin (..., T, head_dim/2), float32."""
    inv = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    ang = positions.float().unsqueeze(-1) * inv
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd); cos/sin (B or 1, 1, T, hd/2). Adjacent-pair rotation (llama.cpp NORM)."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    y0 = x0 * cos - x1 * sin
    y1 = x0 * sin + x1 * cos
    return torch.stack((y0, y1), dim=-1).flatten(-2).to(x.dtype)


class Block(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.w_gate = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w_up = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, mask=None, cache=None, cache_pos=None):
        """cache: (k_buf, v_buf) of shape (B, Hkv, Tmax, hd) written at cache_pos..+T; then
        attention runs over k_buf[:, :, :cache_pos+T] with `mask` (B, 1, T, S) bool."""
        B, T, _ = x.shape
        cfg = self.cfg
        h = self.attn_norm(x)
        q = self.wq(h).view(B, T, cfg.n_heads, cfg.head_dim).transpose(1, 2)
        k = self.wk(h).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.wv(h).view(B, T, cfg.n_kv_heads, cfg.head_dim).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        if cache is not None:
            kb, vb = cache
            kb[:, :, cache_pos:cache_pos + T] = k
            vb[:, :, cache_pos:cache_pos + T] = v
            k = kb[:, :, :cache_pos + T]
            v = vb[:, :, :cache_pos + T]
        rep = cfg.n_heads // cfg.n_kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if mask is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        o = o.transpose(1, 2).reshape(B, T, -1)
        x = x + self.wo(o)
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Transformer(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("wo.weight") or name.endswith("w_down.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens, positions=None, mask=None, caches=None, cache_pos=0, last_only=False):
        """tokens (B, T). Training: positions None (0..T-1), causal. Generation: positions (B, T),
        mask (B, 1, T, S), caches a list of per-layer (k, v) buffers."""
        B, T = tokens.shape
        if positions is None:
            positions = torch.arange(T, device=tokens.device).unsqueeze(0)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_base)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        x = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask=mask, cache=None if caches is None else caches[i],
                      cache_pos=cache_pos)
        if last_only:
            x = x[:, -1:]
        return self.output(self.norm(x)).float()


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], max_new: int, temperature: float,
             stop_id: int, generator: torch.Generator | None = None, top_k: int = 0,
             dtype=torch.bfloat16, prefill_rows: int = 256) -> list[list[int]]:
    """Batched sampling (temperature 0 = greedy) with a KV cache. Prompts are left-padded; each
    row's positions start at 0 at its first real token. Returns the new tokens of each row, up to
    and including stop_id."""
    device = next(model.parameters()).device
    if device.type != "cuda":
        dtype = torch.float32
    cfg = model.cfg
    B = len(prompts)
    L = max(len(p) for p in prompts)
    S = L + max_new
    pad = torch.tensor([L - len(p) for p in prompts], device=device)
    toks = torch.full((B, L), 0, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        toks[i, L - len(p):] = torch.tensor(p, device=device)
    caches = [(torch.zeros(B, cfg.n_kv_heads, S, cfg.head_dim, device=device, dtype=dtype),
               torch.zeros(B, cfg.n_kv_heads, S, cfg.head_dim, device=device, dtype=dtype))
              for _ in range(cfg.n_layers)]
    kidx = torch.arange(S, device=device)
    key_ok = kidx.unsqueeze(0) >= pad.unsqueeze(1)  # (B, S)
    qidx = torch.arange(L, device=device)
    mask = (kidx.unsqueeze(0) <= qidx.unsqueeze(1)).unsqueeze(0) & key_ok.unsqueeze(1)
    mask = mask | (kidx.unsqueeze(0) == qidx.unsqueeze(1)).unsqueeze(0)  # pad rows: self only
    mask = mask[:, :, :L].unsqueeze(1)
    positions = (qidx.unsqueeze(0) - pad.unsqueeze(1)).clamp(min=0)
    logits = torch.empty(B, cfg.vocab_size, device=device)
    for r0 in range(0, B, prefill_rows):  # prefill in row chunks: bounded attention memory
        r1 = min(B, r0 + prefill_rows)
        sub = [(k[r0:r1], v[r0:r1]) for k, v in caches]
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
            logits[r0:r1] = model(toks[r0:r1], positions=positions[r0:r1], mask=mask[r0:r1],
                                  caches=sub, cache_pos=0, last_only=True)[:, -1]
    out = torch.full((B, max_new), stop_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    for t in range(max_new):
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            lg = logits / temperature
            if top_k:
                kth = lg.topk(top_k, dim=-1).values[:, -1:]
                lg = lg.masked_fill(lg < kth, -float("inf"))
            nxt = torch.multinomial(lg.softmax(-1), 1, generator=generator).squeeze(-1)
        nxt = torch.where(done, torch.full_like(nxt, stop_id), nxt)
        out[:, t] = nxt
        done = done | (nxt == stop_id)
        if bool(done.all()) or t == max_new - 1:
            break
        pos = L + t
        m = key_ok[:, :pos + 1].clone().view(B, 1, 1, pos + 1)
        with torch.autocast(device_type=device.type, dtype=dtype, enabled=device.type == "cuda"):
            logits = model(nxt.unsqueeze(1), positions=(pos - pad).unsqueeze(1), mask=m,
                           caches=caches, cache_pos=pos)[:, -1]
    res = []
    for row in out.tolist():
        if stop_id in row:
            row = row[:row.index(stop_id) + 1]
        res.append(row)
    return res
