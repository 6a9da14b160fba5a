"""Semantic-cache quality inside RAG prompts: the QQP and BANKING77 questions wrapped in real templates.

The same protocol, metrics and cache configuration as ``cache_quality.py`` (its functions are imported, not copied),
but each question reaches the cache the way a RAG application sends it: wrapped in LangChain's RAG prompt (context in
the system message; context in the user message, hub ``rlm/rag-prompt``) or in LlamaIndex's default text-QA
(completion and chat) and refine templates, with passages retrieved (top-k cosine, default embedder) from a small
corpus (``rag_templates.py``): Natural Questions passages for QQP, one passage per intent for BANKING77. A paraphrase
sometimes retrieves the same passages as its twin and sometimes not, as in a real application.

* QQP ``eval_4k`` pairwise: each pair in its own partition (scope); store text_a's request, look up text_b's.
* BANKING77 test replay (seeded shuffle, FAQ mode, as ``cache_quality.py``): a hit answers with the cached intent.
* Retrieval agreement: the share of pairs whose two questions retrieved the same passage set (QQP: duplicates and
  non-duplicates; BANKING77: same-intent pairs), and the same ordered list (what an exact system-prompt key needs).
* Chain / query-engine rows: a real LangChain RAG chain (retriever over the same corpus -> ``ChatPromptTemplate``
  with the context in the system message -> chat model) behind ``frugal_chains.langchain.cache_chain``, and a real
  LlamaIndex query engine (``VectorStoreIndex(...).as_query_engine()`` over the same passages, default text-QA
  template) behind ``frugal_chains.llama_index.CachedQueryEngine``: cached before retrieval, keyed on the question
  and a fixed knowledge-base version. The fake model answers per question, so a hit serving another question's
  answer is seen; the runs of the retriever and the model are counted (a hit runs neither). Skipped with a note on
  a version of the library without them.

Every request's text is embedded once up front in length-sorted batches; the embedder's LRU then serves the cache's
lookups. The model-level cache is built exactly as ``cache_quality.py`` builds its default row, so any change of the
library's defaults (how a request's question is picked out of a template) shows up here without an edit.

Usage::

    python benchmarks/cache_rag.py [--data DIR] [--limit N] [--json] [--seed 0] [--k 2] [--corpus-size 1500]
        [--layout NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from itertools import combinations
from operator import itemgetter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from cache_quality import (  # noqa: E402
    _bank_metrics,
    _bank_replay,
    _data_dir,
    _ours_factory,
    _qqp_metrics,
    load_banking,
    load_qqp,
)
from machine_info import machine  # noqa: E402
from rag_templates import (  # noqa: E402
    CACHE_LAYOUTS,
    LANGCHAIN_SYSTEM,
    Retriever,
    banking_corpus,
    embed_sorted,
    nq_corpus,
    render,
)

from frugal_chains.cache import AnswerCache, CacheRequest, cache_scope  # noqa: E402
from frugal_chains.cache.guard import DEFAULT_THRESHOLD  # noqa: E402
from frugal_chains.embeddings import MiniLMEmbedder  # noqa: E402

LLM_STRING = "rag-benchmark-model"
KB_VERSION = "kb-1"


def request(layout: str, question: str, passages: list[str]) -> CacheRequest:
    r = render(layout, question, passages)
    if isinstance(r, str):
        return CacheRequest.from_prompt(r, llm_string=LLM_STRING)
    return CacheRequest.from_messages(r, llm_string=LLM_STRING)


def _agreement(pairs: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> dict[str, Any]:
    n = len(pairs)
    same_set = sum(set(a) == set(b) for a, b in pairs)
    same_list = sum(a == b for a, b in pairs)
    return {
        "same_set": same_set / n if n else 0.0,
        "same_list": same_list / n if n else 0.0,
        "pairs": n,
    }


# ---------------------------------------------------------------------------------------------- model level


def qqp_layout(
    rows: list[dict[str, Any]], reqs: list[tuple[CacheRequest, CacheRequest]], make: Callable[[], AnswerCache]
) -> dict[str, Any]:
    cache = make()
    served: list[bool] = []
    for r, (ra, rb) in zip(rows, reqs, strict=True):
        with cache_scope(tenant_id=f"pair-{r['id']}"):
            cache.update(ra, str(r["id"]))
        with cache_scope(tenant_id=f"pair-{r['id']}"):
            served.append(cache.lookup(rb) is not None)
    return _qqp_metrics(rows, served, served, cache.stats.bypassed)


def _scoped(req_factory: Callable[[], CacheRequest], tenant: str) -> CacheRequest:
    with cache_scope(tenant_id=tenant):
        return req_factory()


# ---------------------------------------------------------------------------------------------- chain level


def _chain_wrappers() -> dict[str, str]:
    """The chain / query-engine cache wrappers this version of the library has (name -> kind)."""
    found: dict[str, str] = {}
    try:
        from frugal_chains.langchain import cache_chain  # noqa: F401

        found["langchain chain"] = "langchain"
    except ImportError:
        pass
    try:
        from frugal_chains.llama_index import CachedQueryEngine  # noqa: F401

        found["llama_index engine"] = "llama_index"
    except ImportError:
        pass
    return found


_LI_QUERY = re.compile(r"Query: (.*)\nAnswer:", re.S)


class _RagApp:
    """A real retrieval chain over ``retriever``'s corpus, behind the library's chain-level cache.

    LangChain: ``{"context": retriever | join, "question"} | ChatPromptTemplate (context in the system message) |
    chat model | StrOutputParser``, wrapped by ``cache_chain``. LlamaIndex: ``VectorStoreIndex(...).as_query_engine``
    (default text-QA template), wrapped by ``CachedQueryEngine``. Both retrieve the same top-k passages with the
    same embedder as the model-level rows. The fake model answers with ``answer_of[question]`` (the question read
    back out of the prompt), so a hit that serves another question's answer is visible. ``retrievals`` and
    ``calls`` count retriever and model runs: a cache hit runs neither.
    """

    def __init__(self, kind: str, retriever: Retriever, embedder: Any, cache: AnswerCache) -> None:
        self.kind = kind
        self.answer_of: dict[str, str] = {}
        self.retrievals = 0
        self.calls = 0
        self.cache = cache
        if kind == "langchain":
            self.wrapped = self._langchain(retriever)
        else:
            self.wrapped = self._llama_index(retriever, embedder)

    def _answer(self, question: str) -> str:
        self.calls += 1
        return self.answer_of[question.strip()]

    def _langchain(self, retriever: Retriever) -> Any:
        from langchain_core.callbacks import CallbackManagerForRetrieverRun
        from langchain_core.documents import Document
        from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
        from langchain_core.output_parsers import StrOutputParser
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.retrievers import BaseRetriever

        from frugal_chains.langchain import cache_chain
        from frugal_chains.testing.fake_chat import AnsweringChatModel

        app = self

        class CorpusRetriever(BaseRetriever):
            def _get_relevant_documents(
                self, query: str, *, run_manager: CallbackManagerForRetrieverRun
            ) -> list[Document]:
                app.retrievals += 1
                ids = retriever.top_k([query])[0]
                return [Document(page_content=t) for t in retriever.texts(ids)]

        class Model(AnsweringChatModel):
            @property
            def _llm_type(self) -> str:
                return "rag-benchmark-model"

            def _answer(self, messages: list[BaseMessage], **kwargs: Any) -> AIMessage:
                human = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
                return AIMessage(content=app._answer(str(human.content)))

        prompt = ChatPromptTemplate.from_messages([("system", LANGCHAIN_SYSTEM), ("human", "{question}")])
        chain = (
            {
                "context": itemgetter("question")
                | CorpusRetriever()
                | (lambda docs: "\n\n".join(d.page_content for d in docs)),
                "question": itemgetter("question"),
            }
            | prompt
            | Model()
            | StrOutputParser()
        )
        return cache_chain(chain, self.cache, question="question", version=KB_VERSION)

    def _llama_index(self, retriever: Retriever, embedder: Any) -> Any:
        from llama_index.core import Document, VectorStoreIndex
        from llama_index.core.base.embeddings.base import BaseEmbedding
        from pydantic import Field

        from frugal_chains.llama_index import CachedQueryEngine
        from frugal_chains.testing import FakeUsageLLM

        app = self

        class Embedding(BaseEmbedding):
            embedder: Any = Field(exclude=True)

            def _get_query_embedding(self, query: str) -> list[float]:
                app.retrievals += 1
                return [float(x) for x in self.embedder.embed([query])[0]]

            async def _aget_query_embedding(self, query: str) -> list[float]:
                return self._get_query_embedding(query)

            def _get_text_embedding(self, text: str) -> list[float]:
                return [float(x) for x in self.embedder.embed([text])[0]]

            def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
                return [[float(x) for x in row] for row in self.embedder.embed(texts)]

        def respond(prompt: str) -> str:
            found = _LI_QUERY.findall(prompt)
            return app._answer(found[-1] if found else prompt)

        index = VectorStoreIndex.from_documents(
            [Document(text=t) for t in retriever.passages],
            embed_model=Embedding(embedder=embedder),
            transformations=[],
        )
        engine = index.as_query_engine(llm=FakeUsageLLM(responses=respond), similarity_top_k=retriever.k)
        return CachedQueryEngine(engine, cache=self.cache, version=KB_VERSION)

    def ask(self, question: str) -> tuple[str, bool]:
        before = self.calls
        if self.kind == "langchain":
            text = str(self.wrapped.invoke({"question": question}))
        else:
            text = str(self.wrapped.query(question))
        return text, self.calls == before


def chain_rows(
    qqp: list[dict[str, Any]], bank: list[tuple[str, str]], nq: Retriever, bk: Retriever, embedder: Any
) -> dict[str, Any]:
    wrappers = _chain_wrappers()
    if not wrappers:
        return {
            "note": "skipped: this version has neither frugal_chains.langchain.cache_chain nor "
            "frugal_chains.llama_index.CachedQueryEngine"
        }
    out: dict[str, Any] = {}
    for name, kind in wrappers.items():
        t1 = time.perf_counter()
        app = _RagApp(
            kind,
            nq,
            embedder,
            _ours_factory(embedder, guarded=True, faq=False, threshold=DEFAULT_THRESHOLD)(),
        )
        app.answer_of = {r["text_a"].strip(): str(r["id"]) for r in qqp} | {
            r["text_b"].strip(): "b" for r in qqp
        }
        served = []
        for r in qqp:
            with cache_scope(tenant_id=f"pair-{r['id']}"):
                app.ask(r["text_a"])
                _, hit = app.ask(r["text_b"])
            served.append(hit)
        q = _qqp_metrics(qqp, served, served, app.cache.stats.bypassed)
        q_runs = {"retrievals": app.retrievals, "model_calls": app.calls}
        app = _RagApp(
            kind, bk, embedder, _ours_factory(embedder, guarded=True, faq=True, threshold=DEFAULT_THRESHOLD)()
        )
        hits = wrong = 0
        for text, intent in bank:
            app.answer_of[text.strip()] = intent
            got, hit = app.ask(text)
            if hit:
                hits += 1
                wrong += got != intent
        out[name] = {
            "qqp_pairwise": q,
            "banking": _bank_metrics(len(bank), hits, wrong, app.cache.stats.bypassed),
            "runs": {"qqp": q_runs, "banking": {"retrievals": app.retrievals, "model_calls": app.calls}},
            "seconds": round(time.perf_counter() - t1, 1),
        }
        print(f"[cache_rag] chain level, {name}: {out[name]['seconds']}s", file=sys.stderr, flush=True)
    return out


# ---------------------------------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = _data_dir(args.data)
    qqp = load_qqp(data, args.limit)
    bank = load_banking(data, args.limit, args.seed)
    layouts = args.layout or list(CACHE_LAYOUTS)
    embedder = MiniLMEmbedder(cache_size=200_000)
    t0 = time.perf_counter()
    nq = Retriever(nq_corpus(data, args.corpus_size, args.seed), embedder.embed, args.k)
    bk = Retriever(banking_corpus(data, args.seed), embedder.embed, args.k)
    q_texts = sorted({t for r in qqp for t in (r["text_a"], r["text_b"])})
    embed_sorted(embedder.embed, q_texts + [t for t, _ in bank])
    q_ret = dict(zip(q_texts, nq.top_k(q_texts), strict=True))
    b_ret = bk.top_k([t for t, _ in bank])
    retrieve_s = time.perf_counter() - t0

    dup_pairs = [(q_ret[r["text_a"]], q_ret[r["text_b"]]) for r in qqp if r["label"] == 1]
    non_pairs = [(q_ret[r["text_a"]], q_ret[r["text_b"]]) for r in qqp if r["label"] != 1]
    by_intent: dict[str, list[tuple[int, ...]]] = {}
    for (_, intent), ids in zip(bank, b_ret, strict=True):
        by_intent.setdefault(intent, []).append(ids)
    same_intent = [p for ids in by_intent.values() for p in combinations(ids, 2)]
    results: dict[str, Any] = {
        "machine": machine(),
        "threshold": DEFAULT_THRESHOLD,
        "embedder": embedder.name,
        "k": args.k,
        "corpus": {
            "qqp": f"{len(nq.passages)} NQ passages",
            "banking": f"{len(bk.passages)} intent passages",
        },
        "seed": args.seed,
        "limit": args.limit,
        "retrieval_seconds": round(retrieve_s, 1),
        "retrieval_agreement": {
            "qqp_duplicates": _agreement(dup_pairs),
            "qqp_non_duplicates": _agreement(non_pairs),
            "banking_same_intent": _agreement(same_intent),
            "banking_distinct_passage_sets": len(Counter(frozenset(ids) for ids in b_ret)),
        },
        "layouts": {},
    }
    for layout in layouts:
        t1 = time.perf_counter()
        q_reqs = [
            (
                _scoped(
                    lambda r=r, layout=layout: request(layout, r["text_a"], nq.texts(q_ret[r["text_a"]])),
                    f"pair-{r['id']}",
                ),
                _scoped(
                    lambda r=r, layout=layout: request(layout, r["text_b"], nq.texts(q_ret[r["text_b"]])),
                    f"pair-{r['id']}",
                ),
            )
            for r in qqp
        ]
        b_reqs = [
            (request(layout, text, bk.texts(ids)), intent)
            for (text, intent), ids in zip(bank, b_ret, strict=True)
        ]
        texts = [x.normalized for pair in q_reqs for x in pair] + [x.normalized for x, _ in b_reqs]
        embed_sorted(embedder.embed, [t for t in texts if t])
        t2 = time.perf_counter()
        row = {
            "qqp_pairwise": qqp_layout(
                qqp, q_reqs, _ours_factory(embedder, guarded=True, faq=False, threshold=DEFAULT_THRESHOLD)
            ),
            "banking": _bank_replay(
                b_reqs, _ours_factory(embedder, guarded=True, faq=True, threshold=DEFAULT_THRESHOLD)()
            ),
            "embed_seconds": round(t2 - t1, 1),
            "seconds": round(time.perf_counter() - t1, 1),
        }
        results["layouts"][layout] = row
        print(f"[cache_rag] {layout}: {row['seconds']}s", file=sys.stderr, flush=True)
    results["chain_level"] = chain_rows(qqp, bank, nq, bk, embedder)
    return results


def format_table(res: dict[str, Any]) -> str:
    ag = res["retrieval_agreement"]
    lines = [
        f"machine: {res['machine']}",
        f"embedder {res['embedder']}; threshold {res['threshold']:.2f} + HitGuard; top-k {res['k']}; corpus "
        f"{res['corpus']['qqp']} (QQP), {res['corpus']['banking']} (BANKING77); limit {res['limit']}",
        "",
        "Retrieval agreement (share of pairs whose two questions retrieved the same passages: set / ordered list)",
        f"  QQP duplicates      {ag['qqp_duplicates']['same_set']:.3f} / {ag['qqp_duplicates']['same_list']:.3f}"
        f"  ({ag['qqp_duplicates']['pairs']} pairs)",
        f"  QQP non-duplicates  {ag['qqp_non_duplicates']['same_set']:.3f} / "
        f"{ag['qqp_non_duplicates']['same_list']:.3f}  ({ag['qqp_non_duplicates']['pairs']} pairs)",
        f"  BANKING77 same-intent pairs {ag['banking_same_intent']['same_set']:.3f} / "
        f"{ag['banking_same_intent']['same_list']:.3f}  ({ag['banking_same_intent']['pairs']} pairs)",
        "",
        f"{'layout':22s} | {'QQP prec':>8s} {'hit(dup)':>8s} {'FH hard':>8s} {'FH rand':>8s} | "
        f"{'BANK hit':>8s} {'wrong':>7s} | {'bypass':>6s} {'s':>6s}",
    ]
    for name, row in res["layouts"].items():
        q, b = row["qqp_pairwise"], row["banking"]
        lines.append(
            f"{name:22s} | {q['precision']:8.3f} {q['hit_rate_dups']:8.3f} {q['false_hit_hard']:8.3f} "
            f"{q['false_hit_random']:8.3f} | {b['hit_rate']:8.3f} {b['wrong_share_of_hits']:7.3f} | "
            f"{q['bypassed'] + b['bypassed']:6d} {row['seconds']:6.1f}"
        )
    lines.append(
        "  (QQP eval_4k pairwise: precision, hit rate on duplicates, false hits on hard / random negatives;"
    )
    lines.append(
        "   BANKING77 test replay: hit rate, wrong share of hits; bypass: requests sent past the semantic tier)"
    )
    cl = res["chain_level"]
    lines.append("")
    if "note" in cl:
        lines.append("chain / query-engine level: " + cl["note"])
    for name, row in cl.items():
        if name == "note":
            continue
        if "note" in row:
            lines.append(f"{name}: {row['note']}")
            continue
        q, b = row["qqp_pairwise"], row["banking"]
        lines.append(
            f"{name:22s} | {q['precision']:8.3f} {q['hit_rate_dups']:8.3f} {q['false_hit_hard']:8.3f} "
            f"{q['false_hit_random']:8.3f} | {b['hit_rate']:8.3f} {b['wrong_share_of_hits']:7.3f} | "
            f"{q['bypassed'] + b['bypassed']:6d} {row['seconds']:6.1f}"
        )
    if any("runs" in row for row in cl.values() if isinstance(row, dict)):
        lines.append(
            "  (chain level: cached before retrieval, keyed on the question; retriever / model runs:)"
        )
        for name, row in cl.items():
            if isinstance(row, dict) and "runs" in row:
                r = row["runs"]
                lines.append(
                    f"   {name}: QQP {r['qqp']['retrievals']} / {r['qqp']['model_calls']} of "
                    f"{2 * row['qqp_pairwise']['n']} questions, BANKING77 {r['banking']['retrievals']} / "
                    f"{r['banking']['model_calls']} of {row['banking']['n']}"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", help="data directory (default: $FRUGAL_CHAINS_DATA or ../shared/data)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N rows of each set")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--seed", type=int, default=0, help="seed of the BANKING77 shuffle and the corpus sample")
    p.add_argument("--k", type=int, default=2, help="passages retrieved per question (default 2)")
    p.add_argument(
        "--corpus-size", type=int, default=1500, help="NQ passages in the QQP corpus (default 1500)"
    )
    p.add_argument("--layout", action="append", choices=CACHE_LAYOUTS, help="only these layouts (repeatable)")
    args = p.parse_args(argv)
    results = run(args)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
