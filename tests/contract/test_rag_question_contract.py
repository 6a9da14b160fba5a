"""RAG-shaped prompts through both wings: the cache compares the question of the template and keys the retrieved
passages exactly; the router scores the question.

First every wing and call mode with a filled template as the request; then a real LangChain RAG chain
(retriever, ``ChatPromptTemplate``, cached model, cascade) and a real LlamaIndex ``VectorStoreIndex`` query engine
(default response mode) over a cached LLM and a cascade."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.prompts.default_prompts import DEFAULT_TEXT_QA_PROMPT

from frugal_chains import SQLiteLedger
from frugal_chains.cache import AnswerCache
from frugal_chains.metadata import cache_status
from frugal_chains.routing import HeuristicScorer
from frugal_chains.testing import HashEmbeddings
from tests.contract.wings import PRICES, Wing, cheap

SHIPPING = "Shipping: we ship to the US, Canada and Mexico. Orders to Canada arrive in 5 to 7 business days."
RETURNS = "Returns: items can be returned within 30 days of delivery for a full refund."
STORED = "How long does shipping to Canada take?"
LOOKALIKE = "Do you ship to Canada?"
PARAPHRASE = "How long does shipping to Canada take, please?"
RLM_RAG_PROMPT = (
    "You are an assistant for question-answering tasks. Use the following pieces of retrieved context to answer "
    "the question. If you don't know the answer, just say that you don't know. Use three sentences maximum and "
    "keep the answer concise.\nQuestion: {question} \nContext: {context} \nAnswer:"
)


def _llama_index_qa(question: str, passages: str = SHIPPING) -> str:
    return DEFAULT_TEXT_QA_PROMPT.format(context_str=passages, query_str=question)


def _rlm_rag(question: str, passages: str = SHIPPING) -> str:
    return RLM_RAG_PROMPT.format(question=question, context=passages)


@pytest.mark.parametrize(
    "fill", [_llama_index_qa, _rlm_rag], ids=["llama_index-text-qa", "langchain-rag-prompt"]
)
def test_templated_requests_compare_the_question(wing: Wing, mode: str, fill: Any) -> None:
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger(), prices=PRICES)
    target = wing.cached(cheap("5 to 7 business days.", "Yes, we do.", "(paid: other passages)"), cache)
    first = target.ask(mode, fill(STORED))
    assert first.error is None and first.text == "5 to 7 business days."
    lookalike = target.ask(mode, fill(LOOKALIKE))  # near-identical prompt text, another question
    assert lookalike.error is None and lookalike.text == "Yes, we do."
    assert cache_status({"frugal": lookalike.frugal}) != "hit"
    paraphrase = target.ask(mode, fill(PARAPHRASE))  # same passages, the question in other words
    assert paraphrase.text == "5 to 7 business days." and cache_status({"frugal": paraphrase.frugal}) == "hit"
    other = target.ask(mode, fill(STORED, RETURNS))  # same question, other passages: another partition
    assert other.text == "(paid: other passages)"
    assert other.calls == {"cheap-1": 3}
    assert cache.stats.hits == 1


# -- LangChain: a RAG chain ------------------------------------------------------------------------------------
def _langchain_chain(model: Any, layout: str = "system") -> Any:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough
    from langchain_core.vectorstores import InMemoryVectorStore

    store = InMemoryVectorStore(embedding=HashEmbeddings())
    store.add_texts([SHIPPING, RETURNS])
    retriever = store.as_retriever(search_kwargs={"k": 1})
    if layout == "system":  # the passages in the system prompt, the question in the user turn
        prompt = ChatPromptTemplate.from_messages(
            [
                (
                    "system",
                    "You are an assistant for question-answering tasks. Use the following pieces of retrieved "
                    "context to answer the question. If you don't know the answer, say that you don't know."
                    "\n\n{context}",
                ),
                ("human", "{question}"),
            ]
        )
    else:  # hub "rlm/rag-prompt": one user message
        prompt = ChatPromptTemplate.from_messages([("human", RLM_RAG_PROMPT)])

    def join(docs: list[Any]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    return (
        {"context": retriever | join, "question": RunnablePassthrough()} | prompt | model | StrOutputParser()
    )


@pytest.mark.parametrize("layout", ["system", "rag-prompt"])
def test_langchain_rag_chain_caches_on_the_question(layout: str) -> None:
    from frugal_chains.langchain import with_cache
    from frugal_chains.testing import FakeUsageChatModel

    inner = FakeUsageChatModel(responses=["5 to 7 business days.", "Yes, we do.", "30 days."])
    cache = AnswerCache(embedder=HashEmbeddings())
    chain = _langchain_chain(with_cache(inner, cache), layout)
    assert chain.invoke(STORED) == "5 to 7 business days."
    assert chain.invoke(LOOKALIKE) == "Yes, we do."  # same passages, another question: a miss
    assert chain.invoke(PARAPHRASE) == "5 to 7 business days."  # same passages, a paraphrase: a hit
    assert chain.invoke("How many days do I have to return an item?") == "30 days."
    assert (cache.stats.hits, cache.stats.misses) == (1, 3)


def test_langchain_rag_chain_routes_on_the_question() -> None:
    from frugal_chains.langchain import CascadeChatModel
    from frugal_chains.testing import FakeUsageChatModel

    ledger = SQLiteLedger()
    cascade = CascadeChatModel(
        tiers=[FakeUsageChatModel(model="gpt-4o-mini"), FakeUsageChatModel(model="gpt-4o")],
        scorer=HeuristicScorer(),
        ledger=ledger,
    )
    _langchain_chain(cascade, "rag-prompt").invoke(LOOKALIKE)
    routed = [r.extra for r in ledger.records() if r.outcome == "routed"]
    assert len(routed) == 1
    assert routed[0]["score"] == pytest.approx(HeuristicScorer().score(LOOKALIKE))
    assert routed[0]["start_tier"] == "gpt-4o-mini"


# -- LlamaIndex: a query engine ----------------------------------------------------------------------------------
def _index() -> Any:
    from llama_index.core import Document, VectorStoreIndex

    return VectorStoreIndex.from_documents(
        [Document(text=SHIPPING), Document(text=RETURNS)], embed_model=HashEmbeddings().for_llama_index()
    )


@pytest.mark.parametrize("api", ["chat", "complete"])
def test_llama_index_query_engine_caches_on_the_question(api: str) -> None:
    from llama_index.core.llms.mock import MockLLM

    from frugal_chains.llama_index import CachedLLM
    from frugal_chains.testing import FakeUsageLLM

    # FakeUsageLLM is a chat model (CHAT_TEXT_QA_PROMPT through chat()); MockLLM is not (the text-QA prompt
    # through complete())
    inner = FakeUsageLLM(responses=["5 to 7 business days.", "Yes, we do."]) if api == "chat" else MockLLM()
    cache = AnswerCache(embedder=HashEmbeddings())
    engine = _index().as_query_engine(llm=CachedLLM(llm=inner, cache=cache), similarity_top_k=1)
    first = str(engine.query(STORED))
    lookalike = str(engine.query(LOOKALIKE))
    assert (cache.stats.hits, cache.stats.misses) == (0, 2)  # the look-alike question was not served
    if api == "chat":
        assert (first, lookalike) == ("5 to 7 business days.", "Yes, we do.")
    assert str(engine.query(PARAPHRASE)) == first
    assert cache.stats.hits == 1


def test_llama_index_query_engine_routes_on_the_question() -> None:
    from frugal_chains.llama_index import CascadeLLM
    from frugal_chains.testing import FakeUsageLLM

    ledger = SQLiteLedger()
    llm = CascadeLLM(
        [FakeUsageLLM(model="gpt-4o-mini"), FakeUsageLLM(model="gpt-4o")],
        scorer=HeuristicScorer(),
        ledger=ledger,
    )
    _index().as_query_engine(llm=llm, similarity_top_k=1).query(LOOKALIKE)
    routed = [r.extra for r in ledger.records() if r.outcome == "routed"]
    assert len(routed) == 1
    assert routed[0]["score"] == pytest.approx(HeuristicScorer().score(LOOKALIKE))
    assert routed[0]["start_tier"] == "gpt-4o-mini"
