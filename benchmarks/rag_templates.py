"""Real RAG prompt layouts and a small retrieval corpus, shared by ``cache_rag.py`` and ``routing_rag.py``.

Layouts (each turns a question and its retrieved passages into what the application sends to the model):

* ``bare``: the question alone (the baseline of ``cache_quality.py`` / ``routing.py``).
* ``langchain_system``: LangChain's RAG tutorial layout (``create_stuff_documents_chain``): the retrieved context
  in the SYSTEM message, the question as the user message.
* ``langchain_user``: LangChain hub's ``rlm/rag-prompt``: one user message holding instructions, question and
  context.
* ``llamaindex_qa``: LlamaIndex's ``DEFAULT_TEXT_QA_PROMPT`` as a completion prompt (an LLM).
* ``llamaindex_qa_chat``: LlamaIndex's ``CHAT_TEXT_QA_PROMPT`` (system + user messages; a chat model).
* ``llamaindex_refine``: LlamaIndex's ``DEFAULT_REFINE_PROMPT`` (completion): the second retrieved passage refines
  an existing answer; the existing answer stands in as the first sentence of the first passage (what a model
  answering from that passage would roughly say).

The LlamaIndex templates are read from the installed ``llama_index.core`` (the real text). The LangChain texts are
those of the tutorial and the hub prompt (langchain-core ships neither). Contexts are joined with a blank line, as
LangChain's ``format_docs`` / ``create_stuff_documents_chain`` and LlamaIndex's synthesizers do.

Corpus: ``nq_corpus`` takes a seeded sample of the Natural Questions gold passages of ``nq_open_lostinthemiddle``
(Wikipedia), each cut to its first ``words`` words (a small-chunk index); ``banking_corpus`` writes one passage per
BANKING77 intent from its name and a few TRAIN questions. ``Retriever`` is top-k cosine over the default embedder.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# LangChain RAG tutorial (create_stuff_documents_chain + create_retrieval_chain): context in the system message
LANGCHAIN_SYSTEM = (
    "You are an assistant for question-answering tasks. "
    "Use the following pieces of retrieved context to answer "
    "the question. If you don't know the answer, say that you "
    "don't know. Use three sentences maximum and keep the "
    "answer concise."
    "\n\n"
    "{context}"
)
# LangChain hub rlm/rag-prompt: one human message
LANGCHAIN_RAG_PROMPT = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to answer "
    "the question. If you don't know the answer, just say that you don't know. Use three sentences maximum and "
    "keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:"
)

CACHE_LAYOUTS = (
    "bare",
    "langchain_system",
    "langchain_user",
    "llamaindex_qa",
    "llamaindex_qa_chat",
    "llamaindex_refine",
)
ROUTER_LAYOUTS = ("bare", "langchain_system", "langchain_user", "llamaindex_qa_chat")

Message = dict[str, str]


def _li_prompts() -> dict[str, Any]:
    from llama_index.core.prompts.chat_prompts import CHAT_TEXT_QA_PROMPT
    from llama_index.core.prompts.default_prompts import DEFAULT_REFINE_PROMPT, DEFAULT_TEXT_QA_PROMPT

    return {"qa": DEFAULT_TEXT_QA_PROMPT, "qa_chat": CHAT_TEXT_QA_PROMPT, "refine": DEFAULT_REFINE_PROMPT}


def _first_sentence(text: str) -> str:
    for end in (". ", "? ", "! "):
        i = text.find(end)
        if i > 0:
            return text[: i + 1]
    return text


def render(layout: str, question: str, passages: Sequence[str]) -> str | list[Message]:
    """The prompt (str: a completion prompt) or OpenAI-format messages of ``layout``."""
    context = "\n\n".join(passages)
    if layout == "bare":
        return question
    if layout == "langchain_system":
        return [
            {"role": "system", "content": LANGCHAIN_SYSTEM.format(context=context)},
            {"role": "user", "content": question},
        ]
    if layout == "langchain_user":
        return [{"role": "user", "content": LANGCHAIN_RAG_PROMPT.format(question=question, context=context)}]
    li = _li_prompts()
    if layout == "llamaindex_qa":
        return str(li["qa"].format(context_str=context, query_str=question))
    if layout == "llamaindex_qa_chat":
        msgs = li["qa_chat"].format_messages(context_str=context, query_str=question)
        return [{"role": str(m.role.value), "content": str(m.content)} for m in msgs]
    if layout == "llamaindex_refine":
        first, rest = (passages[0], passages[1:]) if passages else ("", [])
        return str(
            li["refine"].format(
                query_str=question,
                existing_answer=_first_sentence(first),
                context_msg="\n\n".join(rest) or first,
            )
        )
    raise ValueError(f"unknown layout {layout!r}")


def as_messages(rendered: str | list[Message]) -> list[Message]:
    """A rendered layout as chat messages (a completion prompt becomes one user message)."""
    return [{"role": "user", "content": rendered}] if isinstance(rendered, str) else rendered


# ---------------------------------------------------------------------------------------------- corpus


def nq_corpus(data: Path, size: int, seed: int, words: int = 60) -> list[str]:
    path = data / "nq_open_lostinthemiddle" / "nq-open-oracle.jsonl.gz"
    seen: dict[str, None] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            for c in json.loads(line)["ctxs"]:
                seen[" ".join(str(c["text"]).split()[:words])] = None
    texts = list(seen)
    random.Random(seed).shuffle(texts)
    return texts[:size]


def banking_corpus(data: Path, seed: int, per_intent: int = 3) -> list[str]:
    by_intent: dict[str, list[str]] = {}
    with (data / "banking77" / "train.csv").open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            by_intent.setdefault(r["category"], []).append(r["text"])
    rng = random.Random(seed)
    out = []
    for intent in sorted(by_intent):
        qs = rng.sample(by_intent[intent], min(per_intent, len(by_intent[intent])))
        name = intent.replace("_", " ")
        out.append(f"{name[:1].upper()}{name[1:]}. Customers ask about this, for example: " + " ".join(qs))
    return out


def embed_sorted(embed: Callable[[list[str]], Any], texts: Sequence[str], batch: int = 32) -> None:
    """Embed ``texts`` once, length-sorted in batches (little padding); the embedder's memory serves later calls."""
    todo = sorted(set(texts), key=len)
    for i in range(0, len(todo), batch):
        embed(todo[i : i + batch])


class Retriever:
    """Top-k cosine retrieval over a fixed list of passages (vectors from ``embed``)."""

    def __init__(self, passages: Sequence[str], embed: Callable[[list[str]], Any], k: int) -> None:
        self.passages = list(passages)
        self.embed = embed
        self.k = k
        vecs = np.vstack(
            [
                np.asarray(embed(self.passages[i : i + 64]), np.float32)
                for i in range(0, len(self.passages), 64)
            ]
        )
        self.matrix = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def top_k(self, questions: Sequence[str]) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        for i in range(0, len(questions), 256):
            q = np.asarray(self.embed(list(questions[i : i + 256])), np.float32)
            q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            sims = q @ self.matrix.T
            for row in sims:
                idx = np.argsort(-row, kind="stable")[: self.k]
                out.append(tuple(int(j) for j in idx))
        return out

    def texts(self, ids: Sequence[int]) -> list[str]:
        return [self.passages[i] for i in ids]
