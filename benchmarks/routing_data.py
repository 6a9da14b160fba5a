"""Loaders for the routing benchmark: RouteLLM's recorded outcomes of GPT-4-1106 (strong) and Mixtral-8x7B (weak).

Each data set becomes a list of :class:`Item` (one request, or one MT-Bench question) with the quality each model
got, the tokens each model's call would bill, and the replay tables of the two models
(:class:`frugal_chains.testing.ReplayChatModel`), so the real cascade can run on them.

* ``routellm_gsm8k``: correctness and full answers (the verifier sees the weak answer).
* ``routellm_mmlu``: correctness only; the output is modelled as 1 token (the letter), the answer text is a
  placeholder.
* ``routellm_mtbench``: GPT-4 judge scores 1-10 per turn; the answers are extracted from the judge prompts
  (``user_prompt``) for their token counts.

RouteLLM's contaminated prompts (``contaminated_prompts.jsonl``, matched on the prompt text as RouteLLM's own
``evals/benchmarks.py`` does) are dropped everywhere. Tokens are counted with
``frugal_chains.accounting`` (OpenAI's recipe: ``cl100k_base`` for GPT-4-1106, ``o200k_base`` as a stand-in
for Mixtral's own tokenizer).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugal_chains.accounting import count_message_tokens, count_text_tokens
from frugal_chains.testing.replay import ReplayEntry, replay_key

ROOT = Path(__file__).resolve().parents[1]

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
MODELS = (WEAK, STRONG)
MMLU_ANSWER = "<answer letter: not recorded>"
"""MMLU's replayed answer text (the data set records correctness only); billed as 1 output token."""


def data_dir(arg: str | None) -> Path:
    """``--data``, else ``$FRUGAL_CHAINS_DATA`` (or ``$FRUGAL_DATA``), else ``../shared/data`` next to the repo."""
    if arg:
        return Path(arg)
    env = os.environ.get("FRUGAL_CHAINS_DATA") or os.environ.get("FRUGAL_DATA")
    return Path(env) if env else (ROOT / ".." / "shared" / "data").resolve()


@dataclass
class Item:
    """One routed unit: a request (GSM8K, MMLU) or a two-turn MT-Bench question."""

    id: str
    messages: list[dict[str, Any]]
    """The conversation the router sees (MT-Bench: turn 1)."""
    quality: tuple[float, float]
    """(weak, strong): correctness 0/1, or MT-Bench's mean judge score over both turns."""
    tokens: tuple[tuple[int, int], tuple[int, int]]
    """((input, output) of the weak model, (input, output) of the strong model) for the whole item."""
    answers: tuple[str, str] | None = None
    """(weak, strong) answer texts (GSM8K; MT-Bench turn 1)."""
    group: str = ""
    """Items with the same group (the same prompt text) always fall in the same fold."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return str(self.messages[-1]["content"])

    @property
    def label(self) -> int:
        """The cheapest good-enough tier (docs/routing.md's recipe): 0 when the weak model was right (GSM8K,
        MMLU) or scored at least as high as the strong one (MT-Bench), else 1 (also when both were wrong)."""
        if self.extra.get("scored"):
            return 0 if self.quality[0] >= self.quality[1] else 1
        return 0 if self.quality[0] >= 1.0 else 1


@dataclass
class Dataset:
    name: str
    items: list[Item]
    replay: dict[str, dict[str, ReplayEntry]]
    """model -> replay table for :class:`ReplayChatModel`."""
    replay_key: str = "last_user"
    excluded: int = 0
    total: int = 0
    quality_kind: str = "accuracy"
    notes: list[str] = field(default_factory=list)


def _contaminated(path: Path) -> set[str]:
    return {json.loads(line)["eval_prompt"] for line in path.open(encoding="utf-8") if line.strip()}


def _truth(v: str) -> float:
    if v not in ("True", "False"):
        raise ValueError(f"expected True/False, got {v!r}")
    return 1.0 if v == "True" else 0.0


def _user(prompt: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


# ---------------------------------------------------------------------------------------------- GSM8K


def load_gsm8k(data: Path) -> Dataset:
    d = data / "routellm_gsm8k"
    bad = _contaminated(d / "contaminated_prompts.jsonl")
    with (d / "gsm8k_responses.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    items: list[Item] = []
    replay: dict[str, dict[str, ReplayEntry]] = {WEAK: {}, STRONG: {}}
    for i, r in enumerate(rows):
        if r["prompt"] in bad:
            continue
        msgs = _user(r["prompt"])
        answers = (r[f"{WEAK}_response"], r[f"{STRONG}_response"])
        toks = []
        for model, answer in zip(MODELS, answers, strict=True):
            t_in = count_message_tokens(msgs, model=model)
            t_out = count_text_tokens(answer, model)
            toks.append((t_in, t_out))
            replay[model][replay_key(msgs)] = ReplayEntry(text=answer, input_tokens=t_in, output_tokens=t_out)
        items.append(
            Item(
                id=f"gsm8k-{i}",
                messages=msgs,
                quality=(_truth(r[WEAK]), _truth(r[STRONG])),
                tokens=(toks[0], toks[1]),
                answers=answers,
                group=r["prompt"].strip(),
            )
        )
    return Dataset(
        name="gsm8k",
        items=items,
        replay=replay,
        excluded=len(rows) - len(items),
        total=len(rows),
        notes=["answers and correctness recorded by RouteLLM (its answer extraction; some label noise)"],
    )


# ---------------------------------------------------------------------------------------------- MMLU


def load_mmlu(data: Path) -> Dataset:
    d = data / "routellm_mmlu"
    bad = _contaminated(d / "contaminated_prompts.jsonl")
    items: list[Item] = []
    replay: dict[str, dict[str, ReplayEntry]] = {WEAK: {}, STRONG: {}}
    total = 0
    for path in sorted((d / "responses").glob("mmlu_*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            for j, r in enumerate(csv.DictReader(f)):
                total += 1
                if r["prompt"] in bad:
                    continue
                msgs = _user(r["prompt"])
                toks = []
                for model in MODELS:
                    t_in = count_message_tokens(msgs, model=model)
                    toks.append((t_in, 1))
                    replay[model][replay_key(msgs)] = ReplayEntry(
                        text=MMLU_ANSWER, input_tokens=t_in, output_tokens=1
                    )
                items.append(
                    Item(
                        id=f"mmlu-{path.stem[5:]}-{j}",
                        messages=msgs,
                        quality=(_truth(r[WEAK]), _truth(r[STRONG])),
                        tokens=(toks[0], toks[1]),
                        group=r["prompt"].strip(),
                    )
                )
    dup = len(items) - len({it.group for it in items})
    return Dataset(
        name="mmlu",
        items=items,
        replay=replay,
        excluded=total - len(items),
        total=total,
        notes=[
            "correctness only: each model's output is billed as 1 token; the subject is never shown to a router",
            f"{dup} rows repeat another row's prompt (kept, as RouteLLM does; always in the same fold)",
        ],
    )


# ---------------------------------------------------------------------------------------------- MT-Bench

_SINGLE = re.compile(r"\[The Start of Assistant's Answer\]\n(.*)\n\[The End of Assistant's Answer\]", re.S)
_MULTI = re.compile(
    r"<\|The Start of Assistant A's Conversation with User\|>\n(.*)<\|The End of Assistant A's Conversation",
    re.S,
)


def _turn_answers(judge_prompt: str) -> list[str]:
    """The assistant's answers inside an MT-Bench judge prompt (1 for turn-1 prompts, 2 for turn-2 prompts)."""
    m = _MULTI.search(judge_prompt)
    if m:
        conv = m.group(1)
        parts = re.split(r"\n### (User|Assistant A):\n", "\n" + conv)
        answers = [parts[i + 1].strip() for i in range(1, len(parts) - 1, 2) if parts[i] == "Assistant A"]
        if len(answers) != 2:
            raise ValueError(f"expected 2 answers in a multi-turn judge prompt, got {len(answers)}")
        return answers
    m = _SINGLE.search(judge_prompt)
    if not m:
        raise ValueError("no answer found in a judge prompt")
    return [m.group(1).strip()]


def mtbench_conversation(turns: Sequence[str], answers: Sequence[str], upto: int) -> list[dict[str, Any]]:
    """The conversation before turn ``upto`` (1-based) is answered: user turns and the answers before it."""
    msgs: list[dict[str, Any]] = []
    for t in range(upto):
        msgs.append({"role": "user", "content": turns[t]})
        if t < upto - 1:
            msgs.append({"role": "assistant", "content": answers[t]})
    return msgs


def load_mtbench(data: Path) -> Dataset:
    d = data / "routellm_mtbench"
    bad = _contaminated(d / "contaminated_prompts.jsonl")
    questions = [json.loads(line) for line in (d / "question.jsonl").open(encoding="utf-8") if line.strip()]
    judgements = [
        json.loads(line) for line in (d / "judgements.jsonl").open(encoding="utf-8") if line.strip()
    ]
    score: dict[tuple[int, str, int], float] = {}
    answers: dict[tuple[int, str], list[str]] = {}
    for j in judgements:
        key = (int(j["question_id"]), str(j["model"]), int(j["turn"]))
        if key in score:
            raise ValueError(f"duplicate judgement {key}")
        score[key] = float(j["score"])
        if int(j["turn"]) == 2:
            answers[(key[0], key[1])] = _turn_answers(j["user_prompt"])
        else:  # the turn-1 prompt must agree with the turn-1 answer inside the turn-2 prompt
            answers.setdefault((key[0], key[1] + "#t1"), _turn_answers(j["user_prompt"]))
    items: list[Item] = []
    # conversation-keyed replay: turn 1, and turn 2 after EITHER model's turn-1 answer (see module notes)
    replay: dict[str, dict[str, ReplayEntry]] = {WEAK: {}, STRONG: {}}
    for q in questions:
        turns = q["turns"]
        if turns[0] in bad or turns[1] in bad:
            continue
        qid = int(q["question_id"])
        per_model = {m: answers[(qid, m)] for m in MODELS}
        for m in MODELS:
            if answers[(qid, m + "#t1")][0] != per_model[m][0]:
                raise ValueError(f"question {qid} {m}: turn-1 answer differs between the judge prompts")
        toks = []
        turn_tokens: dict[str, list[tuple[int, int]]] = {}
        for m in MODELS:
            a = per_model[m]
            c1 = mtbench_conversation(turns, a, 1)
            c2 = mtbench_conversation(turns, a, 2)
            t1 = (count_message_tokens(c1, model=m), count_text_tokens(a[0], m))
            t2 = (count_message_tokens(c2, model=m), count_text_tokens(a[1], m))
            turn_tokens[m] = [t1, t2]
            toks.append((t1[0] + t2[0], t1[1] + t2[1]))
            replay[m][replay_key(c1, "conversation")] = ReplayEntry(
                text=a[0], input_tokens=t1[0], output_tokens=t1[1]
            )
            for other in MODELS:  # turn 2 after either model's turn 1; input tokens counted on that history
                c2x = mtbench_conversation(turns, per_model[other], 2)
                replay[m][replay_key(c2x, "conversation")] = ReplayEntry(text=a[1], output_tokens=t2[1])
        # turn-2 input tokens of model m after the turn-1 answer of model h (per-turn routing)
        turn2_input = {
            m: {
                h: count_message_tokens(mtbench_conversation(turns, per_model[h], 2), model=m) for h in MODELS
            }
            for m in MODELS
        }
        s = {m: (score[(qid, m, 1)], score[(qid, m, 2)]) for m in MODELS}
        items.append(
            Item(
                id=f"mtbench-{qid}",
                messages=mtbench_conversation(turns, per_model[WEAK], 1),
                quality=(sum(s[WEAK]) / 2, sum(s[STRONG]) / 2),
                tokens=(toks[0], toks[1]),
                answers=(per_model[WEAK][0], per_model[STRONG][0]),
                group=turns[0].strip(),
                extra={
                    "scored": True,
                    "turns": list(turns),
                    "category": q["category"],
                    "answers": {m: list(per_model[m]) for m in MODELS},
                    "turn_scores": {m: list(s[m]) for m in MODELS},
                    "turn_tokens": turn_tokens,
                    "turn2_input": turn2_input,
                },
            )
        )
    return Dataset(
        name="mtbench",
        items=items,
        replay=replay,
        replay_key="conversation",
        excluded=len(questions) - len(items),
        total=len(questions),
        quality_kind="mean GPT-4 judge score (1-10)",
        notes=[
            "answers extracted from the judge prompts; quality = mean of the two turns' judge scores",
            "per-turn routing replays a model's recorded turn-2 answer even after the other model's turn 1 "
            "(it was recorded after its own turn 1): an approximation; input tokens are counted on the real history",
        ],
    )


LOADERS = {"gsm8k": load_gsm8k, "mmlu": load_mmlu, "mtbench": load_mtbench}
