"""The chain-level cache contract: a whole LangChain RAG chain (``CachedChain``) and a whole LlamaIndex query engine
(``CachedQueryEngine``) are looked up before they run. A hit makes no retrieval, no query embedding and no model
call, is keyed on the question by meaning and on the other inputs and the knowledge-base version exactly, keeps
tenants apart, streams, and records a ``cache_hit`` with what the miss's model calls cost."""

from __future__ import annotations

import asyncio
from operator import itemgetter
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.vectorstores import InMemoryVectorStore
from llama_index.core import Document as LIDocument
from llama_index.core import VectorStoreIndex
from llama_index.core.base.response.schema import AsyncStreamingResponse, Response, StreamingResponse
from llama_index.core.tools import QueryEngineTool

from frugal_chains import Price, SQLiteLedger
from frugal_chains.accounting.usage import Usage
from frugal_chains.cache import AnswerCache, cache_scope
from frugal_chains.cache.replay import replay_pieces
from frugal_chains.errors import ConfigurationError
from frugal_chains.langchain import CachedChain, cache_chain
from frugal_chains.llama_index import CachedQueryEngine
from frugal_chains.testing import FakeUsageChatModel, FakeUsageLLM, HashEmbeddings

PRICES = {"gpt-4o-mini": Price(input=1.0, output=2.0)}
ANSWER = "Open Settings, then Security, then Reset password."
QUESTION = "How do I reset the password?"
PARAPHRASE = "How can I reset the password?"
OTHER = "What is your refund window?"
DOCS = [
    "To reset the password open Settings then Security.",
    "Refunds are accepted within 30 days.",
    "We ship to Canada in 5 business days.",
]


class CountingEmbeddings(HashEmbeddings):
    """The retriever's embedder: counts every query it embeds (a retrieval)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = 0

    def embed_query(self, text: str) -> list[float]:
        self.queries += 1
        return super().embed_query(text)

    async def aembed_query(self, text: str) -> list[float]:
        self.queries += 1
        return await super().aembed_query(text)


def new_cache() -> AnswerCache:
    # guard off and a low threshold: the hash embedder sees "How do I" and "How can I" as near, not the same
    return AnswerCache(
        embedder=HashEmbeddings(), guard=False, threshold=0.5, ledger=SQLiteLedger(), prices=PRICES
    )


def hits(cache: AnswerCache) -> list[Any]:
    assert cache.ledger is not None
    return [r for r in cache.ledger.records() if r.outcome == "cache_hit"]


# -- LangChain ------------------------------------------------------------------------------------------------------
class ModelCalls(BaseCallbackHandler):
    def __init__(self) -> None:
        self.calls = 0
        self.usage = Usage()

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1

    def on_llm_end(self, response: Any, **kwargs: Any) -> None:
        meta = response.generations[0][0].message.usage_metadata
        self.usage = self.usage + Usage(
            input_tokens=meta["input_tokens"], output_tokens=meta["output_tokens"]
        )


class Rag:
    """A real RAG chain: an in-memory vector store retriever | a prompt with the context | a chat model | a parser."""

    def __init__(self, *answers: str) -> None:
        self.embeddings = CountingEmbeddings()
        store = InMemoryVectorStore(embedding=self.embeddings)
        store.add_documents([Document(page_content=d, metadata={"n": i}) for i, d in enumerate(DOCS)])
        self.embeddings.queries = 0
        retriever = store.as_retriever(search_kwargs={"k": 1})
        prompt = ChatPromptTemplate.from_messages(
            [("system", "Answer in {lang} from this context:\n{context}"), ("human", "{question}")]
        )
        model = FakeUsageChatModel(model="gpt-4o-mini", responses=list(answers or (ANSWER, "(paid again)")))
        self.chain = (
            {
                "context": itemgetter("question")
                | retriever
                | (lambda docs: "\n".join(d.page_content for d in docs)),
                "question": itemgetter("question"),
                "lang": itemgetter("lang"),
            }
            | prompt
            | model
            | StrOutputParser()
        )
        self.counter = ModelCalls()

    def config(self, **metadata: Any) -> Any:
        return {"callbacks": [self.counter], "metadata": metadata}


def ask(cached: CachedChain, how: str, question: str, rag: Rag, **inputs: Any) -> tuple[str, list[str]]:
    data = {"question": question, "lang": "en", **inputs}
    config = rag.config()
    if how == "invoke":
        return cached.invoke(data, config), []
    if how == "ainvoke":
        return asyncio.run(cached.ainvoke(data, config)), []
    if how == "batch":
        return cached.batch([data], config)[0], []
    if how == "stream":
        chunks = list(cached.stream(data, config))
    else:

        async def collect() -> list[str]:
            return [c async for c in cached.astream(data, config)]

        chunks = asyncio.run(collect())
    return "".join(chunks), chunks


@pytest.mark.parametrize("how", ["invoke", "ainvoke", "batch", "stream", "astream"])
def test_langchain_a_paraphrase_hit_makes_no_retrieval_and_no_model_call(how: str) -> None:
    rag, cache = Rag(), new_cache()
    cached = cache_chain(rag.chain, cache, version="kb-1")
    first, _ = ask(cached, "invoke", QUESTION, rag)
    assert first == ANSWER
    assert (rag.embeddings.queries, rag.counter.calls) == (1, 1)

    answer, chunks = ask(cached, how, PARAPHRASE, rag)
    assert answer == ANSWER
    assert (rag.embeddings.queries, rag.counter.calls) == (1, 1)  # no retrieval, no model call
    if how in ("stream", "astream"):
        assert chunks == replay_pieces(ANSWER) and len(chunks) > 1
    [record] = hits(cache)
    assert record.model == "gpt-4o-mini" and record.cost_usd == 0.0
    assert record.extra["cache_tier"] == "semantic"
    used = rag.counter.usage
    assert record.saved_usd == pytest.approx((used.input_tokens * 1.0 + used.output_tokens * 2.0) / 1e6)
    assert record.saved_usd > 0
    assert cache.stats.hits_semantic == 1


@pytest.mark.parametrize("how", ["stream", "astream"])
def test_langchain_a_streamed_miss_is_stored_once_finished(how: str) -> None:
    rag, cache = Rag(), new_cache()
    cached = cache_chain(rag.chain, cache, version="kb-1")
    answer, chunks = ask(cached, how, QUESTION, rag)
    assert answer == ANSWER and len(chunks) > 1
    assert ask(cached, "invoke", QUESTION, rag)[0] == ANSWER
    assert (rag.embeddings.queries, rag.counter.calls) == (1, 1)


def test_langchain_another_kb_version_or_exact_input_misses() -> None:
    rag, cache = Rag(ANSWER, "new kb", "in French", "(again)"), new_cache()
    ask(cache_chain(rag.chain, cache, version="kb-1"), "invoke", QUESTION, rag)
    assert ask(cache_chain(rag.chain, cache, version="kb-2"), "invoke", QUESTION, rag)[0] == "new kb"
    assert (
        ask(cache_chain(rag.chain, cache, version="kb-1"), "invoke", QUESTION, rag, lang="fr")[0]
        == "in French"
    )
    assert (rag.embeddings.queries, rag.counter.calls) == (3, 3)
    assert hits(cache) == []


def test_langchain_inputs_outside_exact_do_not_split_the_key() -> None:
    rag, cache = Rag(), new_cache()
    cached = cache_chain(rag.chain, cache, exact=["lang"], version="kb-1")
    ask(cached, "invoke", QUESTION, rag, request_id="r-1")
    assert ask(cached, "invoke", QUESTION, rag, request_id="r-2")[0] == ANSWER
    assert rag.counter.calls == 1


def test_langchain_tenants_never_share() -> None:
    rag, cache = Rag(ANSWER, "for globex", "for initech"), new_cache()
    cached = cache_chain(rag.chain, cache, version="kb-1")
    with cache_scope(tenant_id="acme"):
        ask(cached, "invoke", QUESTION, rag)
    with cache_scope(tenant_id="globex"):
        assert ask(cached, "invoke", QUESTION, rag)[0] == "for globex"
    data = {"question": QUESTION, "lang": "en"}
    assert cached.invoke(data, {"metadata": {"tenant_id": "initech"}}) == "for initech"  # run metadata too
    assert cached.invoke(data, {"metadata": {"tenant_id": "acme"}}) == ANSWER
    assert len(hits(cache)) == 1 and hits(cache)[0].attribution.tenant_id == "acme"


def test_langchain_a_string_input_is_the_question_and_errors_reach_the_caller() -> None:
    calls: list[str] = []

    def answer(q: str) -> str:
        calls.append(q)
        if "broken" in q:
            raise RuntimeError("retriever down")
        return f"answer to {q}"

    cache = new_cache()
    cached = cache_chain(RunnableLambda(answer), cache)
    assert cached.invoke(QUESTION) == cached.invoke(PARAPHRASE) == f"answer to {QUESTION}"
    with pytest.raises(RuntimeError, match="retriever down"):
        cached.invoke("broken question")
    with pytest.raises(RuntimeError, match="retriever down"):
        cached.invoke("broken question")  # nothing was stored
    assert len(calls) == 3
    with pytest.raises(ConfigurationError, match="question"):
        cache_chain(RunnableLambda(answer), cache, question="query").invoke({"q": "hi"})


# -- LlamaIndex -----------------------------------------------------------------------------------------------------
class Engine:
    """A real ``VectorStoreIndex`` query engine with a counting retrieval embedder and a counting fake LLM."""

    def __init__(
        self, *, streaming: bool = False, answers: tuple[str, ...] = (ANSWER, "(paid again)")
    ) -> None:
        self.embeddings = CountingEmbeddings()
        docs = [LIDocument(text=d, metadata={"n": i}) for i, d in enumerate(DOCS)]
        index = VectorStoreIndex.from_documents(docs, embed_model=self.embeddings.for_llama_index())
        self.embeddings.queries = 0
        self.llm_calls = 0
        queue = list(answers)

        def respond(prompt: str) -> str:
            self.llm_calls += 1
            return queue.pop(0)

        llm = FakeUsageLLM(model="gpt-4o-mini", responses=respond)
        self.engine = index.as_query_engine(llm=llm, similarity_top_k=1, streaming=streaming)


def text_of(response: Any) -> str:
    if isinstance(response, StreamingResponse):
        return "".join(response.response_gen)
    if isinstance(response, AsyncStreamingResponse):

        async def collect() -> str:
            return "".join([t async for t in response.async_response_gen()])

        return asyncio.run(collect())
    return str(response)


def nodes_of(response: Any) -> list[tuple[str, float | None, dict[str, Any]]]:
    return [(n.node.get_content(), n.score, dict(n.node.metadata)) for n in response.source_nodes]


@pytest.mark.parametrize("streaming", [False, True], ids=["default", "streaming"])
@pytest.mark.parametrize("how", ["query", "aquery"])
def test_llama_index_a_hit_restores_the_response_without_retrieval_or_llm(streaming: bool, how: str) -> None:
    e, cache = Engine(streaming=streaming), new_cache()
    cached = CachedQueryEngine(e.engine, cache=cache, version="kb-1")
    miss = cached.query(QUESTION)
    assert isinstance(miss, StreamingResponse if streaming else Response)
    assert text_of(miss) == ANSWER
    assert (e.embeddings.queries, e.llm_calls) == (1, 1)

    hit = cached.query(PARAPHRASE) if how == "query" else asyncio.run(cached.aquery(PARAPHRASE))
    if streaming:
        assert isinstance(hit, StreamingResponse if how == "query" else AsyncStreamingResponse)
    else:
        assert isinstance(hit, Response)
    assert text_of(hit) == ANSWER
    assert nodes_of(hit) == nodes_of(miss) and nodes_of(hit)[0][0] == DOCS[0]
    assert nodes_of(hit)[0][1] is not None and nodes_of(hit)[0][2] == {"n": 0}
    assert hit.metadata == miss.metadata
    assert (e.embeddings.queries, e.llm_calls) == (1, 1)  # no retrieval, no LLM call
    [record] = hits(cache)
    assert record.model == "gpt-4o-mini" and record.saved_usd is not None and record.saved_usd > 0


def test_llama_index_async_miss_then_version_miss() -> None:
    e, cache = Engine(answers=(ANSWER, "new kb", "(again)")), new_cache()
    first = asyncio.run(CachedQueryEngine(e.engine, cache=cache, version="kb-1").aquery(QUESTION))
    assert str(first) == ANSWER
    assert str(CachedQueryEngine(e.engine, cache=cache, version="kb-2").query(QUESTION)) == "new kb"
    assert str(CachedQueryEngine(e.engine, cache=cache, version="kb-1").query(PARAPHRASE)) == ANSWER
    assert (e.embeddings.queries, e.llm_calls) == (2, 2)


def test_llama_index_a_stream_stopped_early_is_not_stored() -> None:
    e, cache = Engine(streaming=True), new_cache()
    cached = CachedQueryEngine(e.engine, cache=cache)
    stream = cached.query(QUESTION)
    assert isinstance(stream, StreamingResponse)
    next(iter(stream.response_gen))
    stream.response_gen.close()  # type: ignore[attr-defined]
    assert text_of(cached.query(QUESTION)) == "(paid again)"
    assert e.llm_calls == 2


def test_llama_index_tenants_never_share_and_it_works_as_a_tool() -> None:
    e, cache = Engine(answers=(ANSWER, "for globex")), new_cache()
    cached = CachedQueryEngine(e.engine, cache=cache)
    tool = QueryEngineTool.from_defaults(cached, name="docs", description="Product docs.")
    with cache_scope(tenant_id="acme"):
        assert tool.call(QUESTION).content == ANSWER
    with cache_scope(tenant_id="globex"):
        assert tool.call(QUESTION).content == "for globex"
    with cache_scope(tenant_id="acme"):
        assert tool.call(PARAPHRASE).content == ANSWER
    assert e.llm_calls == 2


class BrokenEmbedder(HashEmbeddings):
    def embed(self, texts: Any) -> Any:
        raise ConfigurationError("the cache's embedder cannot load", field="embedder")


def test_llama_index_errors_reach_the_caller_not_empty_response() -> None:
    e = Engine()
    cached = CachedQueryEngine(e.engine, cache=AnswerCache(embedder=BrokenEmbedder()))
    with pytest.raises(ConfigurationError, match="embedder"):
        cached.query(OTHER)
    with pytest.raises(ConfigurationError, match="embedder"):
        asyncio.run(cached.aquery(OTHER))

    def broken(prompt: str) -> str:
        raise RuntimeError("provider down")

    index = VectorStoreIndex.from_documents(
        [LIDocument(text=DOCS[0])], embed_model=HashEmbeddings().for_llama_index()
    )
    engine = index.as_query_engine(llm=FakeUsageLLM(responses=broken))
    cache = new_cache()
    with pytest.raises(RuntimeError, match="provider down"):
        CachedQueryEngine(engine, cache=cache).query(QUESTION)
    assert len(cache) == 0


def test_langchain_budgets_count_the_miss_once_and_a_hit_never() -> None:
    from frugal_chains import Budget
    from frugal_chains.langchain import TokenBudgetHandler

    ledger = SQLiteLedger()
    handler = TokenBudgetHandler([Budget(max_usd=1.0, scope="global")], ledger=ledger, prices=PRICES)
    cache = AnswerCache(embedder=HashEmbeddings(), guard=False, threshold=0.5, ledger=ledger, prices=PRICES)
    rag = Rag()
    cached = cache_chain(rag.chain, cache, version="kb-1")
    data = {"question": QUESTION, "lang": "en"}
    cached.invoke(data, {"callbacks": [handler], "metadata": {"feature": "help"}})
    cached.invoke({**data, "question": PARAPHRASE}, {"callbacks": [handler], "metadata": {"feature": "help"}})
    records = ledger.records()
    assert sorted(r.outcome for r in records) == ["cache_hit", "ok"]
    paid = next(r for r in records if r.outcome == "ok")
    hit = next(r for r in records if r.outcome == "cache_hit")
    assert hit.saved_usd == pytest.approx(paid.cost_usd)  # the hit saved what the miss's call cost
    assert hit.attribution.feature == "help"
