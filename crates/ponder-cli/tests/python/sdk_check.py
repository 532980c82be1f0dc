"""The official `openai` SDK against `ponder serve` (run by tests/serve_sdk.rs).

Usage: sdk_check.py BASE_URL TOKEN MODEL QUESTION

Selects self-consistency with n=8 through `extra_body`, non-streaming and streaming, checks
that `usage` covers every sample and that a wrong key is refused, and prints one JSON line
with the token counts for the Rust side to compare with the simulator's own counters.
"""

import json
import sys

import openai

base_url, token, model, question = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=60)
messages = [{"role": "user", "content": question}]
assert model in [m.id for m in client.models.list()]
ponder = {"strategy": "self-consistency", "n": 8, "seed": 3, "details": True}

r = client.chat.completions.create(model=model, messages=messages, extra_body={"ponder": ponder})
assert r.object == "chat.completion", r.object
content = r.choices[0].message.content
details = r.to_dict()["ponder"]
candidates = details["candidates"]
assert len(candidates) == 8, len(candidates)
per_sample = sum(c["completion_tokens"] for c in candidates)
assert r.usage.completion_tokens == per_sample, (r.usage.completion_tokens, per_sample)
assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
assert "\\boxed{" + details["answer"] + "}" in content, content

stream = client.chat.completions.create(
    model=model,
    messages=messages,
    stream=True,
    stream_options={"include_usage": True},
    extra_body={"ponder": {"strategy": "self-consistency", "n": 8, "seed": 3}},
)
parts, usage, finish = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            parts.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert "".join(parts) == content, "streamed content differs"
assert finish == "stop", finish
assert usage is not None and usage.completion_tokens == r.usage.completion_tokens

try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).chat.completions.create(
        model=model, messages=messages
    )
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401

print(json.dumps({"completion_tokens": r.usage.completion_tokens, "stream_completion_tokens": usage.completion_tokens}))
