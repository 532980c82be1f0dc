"""Shared pieces of Ponder's bundled-model training: the byte-level tokenizer with its control
tokens, the ChatML chat template, the prompt mix, the answer / step readers and the data files.

Everything here is plain Python (no torch) so the export and verification scripts can use it.
The synthetic task itself (questions, reference solutions, gold answers) comes only from the
Rust `ponder task generate` command, through `prep_data.py`.
"""

from __future__ import annotations

import json
import lzma
import random
import re
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# Task strings that must match the Rust side exactly.

# crates/ponder-task/src/lib.rs SOLUTION_INSTRUCTIONS; Problem::prompt() = question + "\n\n" + this.
SOLUTION_INSTRUCTIONS = (
    'Solve it step by step. Write one line per operation in the form "Step k: <word> a <op> b = c." '
    "(word: add, subtract, multiply or divide; op: +, -, * or /), then finish with "
    '"The answer is \\boxed{N}." where N is the final number.'
)

# crates/ponder-strategies/src/self_consistency.rs DEFAULT_SYSTEM_PROMPT (most strategies send it
# as a system message when the input has none).
DEFAULT_SYSTEM_PROMPT = (
    "Work through the problem one step at a time, then give the final answer as \\boxed{ANSWER}."
)

OTHER_SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are a careful math tutor. Show your work.",
    "You are Ponder's bundled reasoning model.",
    "Answer the question.",
    "Think step by step.",
    "You are a helpful assistant that solves arithmetic word problems.",
]

# ---------------------------------------------------------------------------------------------
# Tokenizer: byte-level, ids 0..255 are bytes, then control tokens.

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
STEP_TAG = "<|step|>"
N_UNUSED = 4
SPECIALS = [ENDOFTEXT, IM_START, IM_END, STEP_TAG] + [f"<|unused_{k}|>" for k in range(N_UNUSED)]
SPECIAL_IDS = {s: 256 + i for i, s in enumerate(SPECIALS)}
VOCAB_SIZE = 256 + len(SPECIALS)  # 264, a multiple of 8
EOT_ID = SPECIAL_IDS[ENDOFTEXT]  # 256: bos / padding
IM_START_ID = SPECIAL_IDS[IM_START]  # 257
IM_END_ID = SPECIAL_IDS[IM_END]  # 258: eos
STEP_ID = SPECIAL_IDS[STEP_TAG]  # 259
PAD_ID = EOT_ID
PLUS_ID = ord("+")  # 43: PRM "good" label token
MINUS_ID = ord("-")  # 45: PRM "bad" label token
assert VOCAB_SIZE % 8 == 0

_SPECIAL_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode character map (the gguf token strings of bytes)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def token_strings() -> list[str]:
    """The gguf vocabulary (tokenizer.ggml.tokens), index = id."""
    b2u = bytes_to_unicode()
    return [b2u[b] for b in range(256)] + list(SPECIALS)


def encode(text: str, parse_special: bool = True) -> list[int]:
    """Bytes, with control-token strings turned into their ids (llama.cpp parse_special=true)."""
    if not parse_special:
        return list(text.encode("utf-8"))
    out: list[int] = []
    for part in _SPECIAL_RE.split(text):
        if not part:
            continue
        if part in SPECIAL_IDS:
            out.append(SPECIAL_IDS[part])
        else:
            out.extend(part.encode("utf-8"))
    return out


def decode(ids) -> str:
    buf = bytearray()
    out = []
    for i in ids:
        i = int(i)
        if i < 256:
            buf.append(i)
        else:
            out.append(buf.decode("utf-8", errors="replace"))
            buf = bytearray()
            out.append(SPECIALS[i - 256] if i - 256 < len(SPECIALS) else f"<|{i}|>")
    out.append(buf.decode("utf-8", errors="replace"))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Chat template (ChatML). Stored verbatim as tokenizer.chat_template in both GGUFs.

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool) -> str:
    """Python twin of CHAT_TEMPLATE (checked against jinja2 in verify_gguf.py when available)."""
    out = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    if add_generation_prompt:
        out += f"{IM_START}assistant\n"
    return out


# ---------------------------------------------------------------------------------------------
# Prompt mix.

OPS_WORDS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}

_PARA_NAMES = [
    ("Tom", "he", "him", "his"), ("Anna", "she", "her", "her"), ("Sam", "he", "him", "his"),
    ("Lucy", "she", "her", "her"), ("Ben", "he", "him", "his"), ("Emma", "she", "her", "her"),
    ("Max", "he", "him", "his"), ("Grace", "she", "her", "her"), ("Leo", "he", "him", "his"),
    ("Ella", "she", "her", "her"), ("Mia", "she", "her", "her"), ("Omar", "he", "him", "his"),
]
_PARA_ITEMS = ["apples", "cookies", "oranges", "books", "toys", "cards", "stones", "coins",
               "eggs", "flowers", "balls", "shells", "bricks", "tickets", "candies"]


def paraphrase_question(rec: dict, rng: random.Random) -> str:
    """A free-form rewording of a generated problem (same numbers and operations), such as
    "Tom has 12 apples and buys 5 more. How many apples does he have?". Only the wording
    changes; the steps and answer stay the Rust generator's."""
    name, he, him, his = rng.choice(_PARA_NAMES)
    item = rng.choice(_PARA_ITEMS)
    He = he.capitalize()
    clauses = []
    for s in rec["steps"]:
        n, op = s["rhs"], s["op"]
        if op == "+":
            c = rng.choice([f"buys {n} more", f"gets {n} more", f"finds {n} more",
                            f"receives {n} more {item}", f"collects {n} more {item}"])
        elif op == "-":
            c = rng.choice([f"gives away {n}", f"loses {n}", f"sells {n} {item}",
                            f"gives {n} {item} to a friend", f"uses {n} {item}"])
        elif op == "*":
            c = rng.choice([f"multiplies {his} {item} by {n}", f"gets {n} times as many {item}",
                            f"ends up with {n} times as many"])
        else:
            c = rng.choice([f"splits {his} {item} into {n} equal groups and keeps one",
                            f"divides {his} {item} by {n}", f"keeps one of every {n} {item}"])
        clauses.append(c)
    first = f"{name} has {rec['start']} {item}"
    sents = []
    i = 0
    if rng.random() < 0.6:
        sents.append(f"{first} and {clauses[0]}.")
        i = 1
    else:
        sents.append(f"{first}.")
    while i < len(clauses):
        if i + 1 < len(clauses) and rng.random() < 0.35:
            sents.append(f"{He} {clauses[i]} and then {clauses[i + 1]}.")
            i += 2
        else:
            sents.append(f"{rng.choice([He, 'Then ' + he, 'Next ' + he, 'After that ' + he])} {clauses[i]}.")
            i += 1
    q = rng.choice([f"How many {item} does {he} have?", f"How many {item} does {name} have now?",
                    f"How many {item} does {he} have in the end?"])
    sents.append(q)
    return " ".join(sents)


def sample_messages(rec: dict, rng: random.Random) -> list[dict]:
    """The training prompt mix: system message (default 50%, other 10%, none 40%), then the user
    message (question + "\\n\\n" + SOLUTION_INSTRUCTIONS 70%, bare question 22%, free-form
    rewording 8%)."""
    msgs = []
    r = rng.random()
    if r < 0.5:
        msgs.append({"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
    elif r < 0.6:
        msgs.append({"role": "system", "content": rng.choice(OTHER_SYSTEM_PROMPTS)})
    r = rng.random()
    if r < 0.70:
        user = rec["question"] + "\n\n" + SOLUTION_INSTRUCTIONS
    elif r < 0.92:
        user = rec["question"]
    else:
        user = paraphrase_question(rec, rng)
    msgs.append({"role": "user", "content": user})
    return msgs


def eval_messages(rec: dict) -> list[dict]:
    """What Ponder's strategies send by default: DEFAULT_SYSTEM_PROMPT + Problem::prompt()."""
    return [
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": rec["question"] + "\n\n" + SOLUTION_INSTRUCTIONS},
    ]


# ---------------------------------------------------------------------------------------------
# Reading solutions (Python mirror of ponder_task::final_answer / parse_step_line, for training
# time evaluation only; Ponder's own checker is the reference).

_BOXED_RE = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_STEP_RE = re.compile(r"Step\s*(\d+)\s*:\s*\w+\s+(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)")


def final_answer(text: str):
    m = _BOXED_RE.findall(text)
    return int(m[-1]) if m else None


def parse_steps(text: str) -> list[tuple[int, int, str, int, int]]:
    out = []
    for line in text.split("\n"):
        m = _STEP_RE.search(line)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))))
    return out


_EXPR_RE = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)")


def is_work_line(line: str) -> bool:
    """A work line of a worked solution (`ponder_task::worked`): `Work: a op b = c, ...`."""
    return line.strip().startswith("Work:")


def work_line_ok(line: str, result) -> bool:
    """Every `a op b = c` of the work line holds exactly, and the last one's `c` is `result`."""
    exprs = _EXPR_RE.findall(line)
    if not exprs or result is None:
        return False
    for a, op, b, c in exprs:
        a, b, c = int(a), int(b), int(c)
        if op == "/":
            if b == 0 or a % b != 0 or a // b != c:
                return False
        elif {"+": a + b, "-": a - b, "*": a * b}[op] != c:
            return False
    return int(exprs[-1][3]) == result


def count_step_lines(steps: list[str]) -> int:
    """`Step k:` lines among the given steps (a step may hold several lines)."""
    return sum(len(parse_steps(s)) for s in steps)


def split_steps(solution: str) -> list[str]:
    """The steps of a solution as Ponder's step strategies see them: its non-empty lines,
    stripped (step lines and the final answer line)."""
    return [line.strip() for line in solution.split("\n") if line.strip()]


def step_matches_reference(line: str, k: int, rec: dict) -> bool:
    """Line is exactly the reference step k (1-based), numbers and operator included."""
    m = _STEP_RE.search(line)
    if not m or k > len(rec["steps"]):
        return False
    s = rec["steps"][k - 1]
    return (int(m.group(1)) == k and int(m.group(2)) == s["lhs"] and m.group(3) == s["op"]
            and int(m.group(4)) == s["rhs"] and int(m.group(5)) == s["result"])


# ---------------------------------------------------------------------------------------------
# PRM input format.

def prm_text(messages: list[dict], steps: list[str]) -> str:
    """PRM input: the chat-rendered prompt with the generation prompt, then each step (stripped)
    followed by " <|step|>", steps joined by "\\n" (no newline after the last tag). The reward of
    step i is P(+) = softmax over the logits of '+' and '-' at the position of the i-th tag."""
    return render_chat(messages, True) + "\n".join(s.strip() + " " + STEP_TAG for s in steps)


def prm_encode(messages: list[dict], steps: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
    """encode(prm_text(messages, steps)), and for each step the token span [start, end) of its
    stripped text (the tokenizer is byte-level, so spans follow from byte lengths)."""
    toks = encode(prm_text(messages, steps))
    pos = len(encode(render_chat(messages, True)))
    spans = []
    for j, s in enumerate(steps):
        pos += 1 if j else 0  # the "\n" between steps
        n = len(encode(s.strip()))
        spans.append((pos, pos + n))
        pos += n + 2  # " " and the tag
        assert toks[pos - 1] == STEP_ID, "prm_encode out of step with prm_text"
    return toks, spans


# ---------------------------------------------------------------------------------------------
# Data files.

def read_records(path: str | Path) -> list[dict]:
    path = Path(path)
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
