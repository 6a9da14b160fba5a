"""Every error frugal-chains raises while a call runs reaches the caller of a real LlamaIndex query engine.

LlamaIndex's ``Refine`` and ``CompactAndRefine`` synthesizers catch ``ValueError`` and ``TypeError`` around the LLM
call and answer "Empty Response"; our errors are neither, so a refused or misconfigured call stops ``query()``
(or the stream) in every response mode, whether the LLM is bare, a ``CascadeLLM`` or a ``CachedLLM``. The budget
handler is attached the way docs/llama_index.md says: ``Settings.callback_manager = CallbackManager([handler])``.

The failing calls:

* ``unpriced``: a model with no price under a USD budget (``UnknownModelPriceError``);
* ``refused``: a budget too small for the call (``BudgetExceededError``);
* ``uncapped``: a model with no output cap and a price without ``max_output_tokens`` (``ConfigurationError``
  naming ``max_tokens``);
* ``embedder``: a cache whose embedder returns no vectors (``ConfigurationError`` naming ``embedder``; an
  embedder that cannot load at all fails when the cache is built, see ``test_errors_contract.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# Imported here, not lazily inside LlamaIndex during a test: a lazy import can race with the stream-writer thread an
# earlier streaming test leaves behind (a KeyError from importlib was seen once in as_chat_engine).
import llama_index.core.chat_engine  # noqa: F401
import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import ReActAgent
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.base.response.schema import AsyncStreamingResponse, StreamingResponse
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from frugal_chains import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    FrugalChainsError,
    Price,
    UnknownModelPriceError,
)
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import CachedLLM, CascadeLLM, TokenBudgetHandler
from frugal_chains.testing import HashEmbeddings

QUESTION = "What is the capital of France?"
DOCS = [
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Rome is the capital of Italy.",
]
PRICES = {"acme-1": Price(input=1.0, output=2.0), "acme-strong": Price(input=10.0, output=30.0)}
ROOMY = Budget(max_usd=1.0, scope="global")
TINY = Budget(max_usd=1e-9, scope="global")


class Provider(CustomLLM):
    """A paid provider: counts the calls that reach it; its output cap is ``max_tokens``."""

    model: str = "acme-1"
    max_tokens: int | None = 64
    calls: int = Field(default=0, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text="Paris.")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self.calls += 1

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text="Paris.", delta="Paris.")

        return gen()


class NoVectors:
    """A LangChain-style embedding model that returns no vectors (a broken deployment)."""

    model = "broken-embeddings"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return []


@dataclass(frozen=True)
class Case:
    error: type[FrugalChainsError]
    field: str | None
    model: str = "acme-1"
    max_tokens: int | None = 64
    budget: Budget = ROOMY
    embedder: Callable[[], Any] = HashEmbeddings


CASES = {
    "unpriced": Case(UnknownModelPriceError, "prices", model="acme-unpriced"),
    "refused": Case(BudgetExceededError, None, budget=TINY),
    "uncapped": Case(ConfigurationError, "max_tokens", max_tokens=None),
    "embedder": Case(ConfigurationError, "embedder", embedder=NoVectors),
}
WRAPPERS = ("plain", "cascade", "cached")
COMBOS = [(c, w) for c in CASES for w in WRAPPERS if c != "embedder" or w == "cached"]

MODES: dict[str, dict[str, Any]] = {
    "compact": {"response_mode": "compact"},
    "refine": {"response_mode": "refine"},
    "refine-structured": {"response_mode": "refine", "structured_answer_filtering": True},
    "tree_summarize": {"response_mode": "tree_summarize"},
    "simple_summarize": {"response_mode": "simple_summarize"},
    "accumulate": {"response_mode": "accumulate"},
    "compact_accumulate": {"response_mode": "compact_accumulate"},
}
STREAMING_MODES = ("compact", "refine", "tree_summarize", "simple_summarize")
"""``accumulate`` cannot stream (LlamaIndex refuses it)."""


def raised_in_query(mode: str, wrapper: str) -> bool:
    """Where llama-index-core 0.14 makes a streaming query's LLM call: in the default (compact) mode when the
    stream is consumed; ``refine`` over several chunks consumes each answer to refine it, so inside ``query()``;
    ``tree_summarize``/``simple_summarize`` call ``llm.stream()``, which starts the call inside ``query()``,
    except that a ``CascadeLLM`` starts its tiers when its stream is consumed."""
    if mode == "refine":
        return True
    return mode in ("tree_summarize", "simple_summarize") and wrapper != "cascade"


@dataclass
class Built:
    engine: Any
    handler: TokenBudgetHandler
    providers: list[Provider]

    def assert_nothing_happened(self, case: Case, error: BaseException) -> None:
        assert isinstance(error, case.error)
        assert not isinstance(error, (ValueError, TypeError))
        assert getattr(error, "field", None) == case.field
        assert [p.calls for p in self.providers] == [0] * len(self.providers)  # no provider was reached
        # nothing spent: the only records are those of refused calls
        outcomes = {r.outcome for r in self.handler.ledger.records()}
        assert outcomes == ({"refused"} if isinstance(error, BudgetExceededError) else set())
        counter = self.handler.core.spent(case.budget)
        assert (counter.committed_nano, counter.reserved_nano) == (0, 0)


@pytest.fixture
def settings() -> Iterator[Any]:
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    yield Settings
    for name, value in saved.items():
        setattr(Settings, name, value)


def build(case_id: str, wrapper: str, **engine_kwargs: Any) -> Built:
    case = CASES[case_id]
    handler = TokenBudgetHandler([case.budget], prices=PRICES)
    provider = Provider(model=case.model, max_tokens=case.max_tokens)
    providers = [provider]
    llm: Any = provider
    if wrapper == "cascade":
        providers.append(Provider(model="acme-strong"))
        llm = CascadeLLM(tiers=providers)
    elif wrapper == "cached":
        llm = CachedLLM(llm=provider, cache=AnswerCache(embedder=case.embedder()))
    Settings.llm = llm
    Settings.embed_model = MockEmbedding(embed_dim=8)
    Settings.callback_manager = CallbackManager([handler])
    index = VectorStoreIndex.from_documents([Document(text=t) for t in DOCS])
    return Built(index.as_query_engine(similarity_top_k=2, **engine_kwargs), handler, providers)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("case", "wrapper"), COMBOS)
def test_the_error_reaches_query(settings: Any, case: str, wrapper: str, mode: str) -> None:
    built = build(case, wrapper, **MODES[mode])
    with pytest.raises(FrugalChainsError) as e:
        built.engine.query(QUESTION)  # never "Empty Response"
    built.assert_nothing_happened(CASES[case], e.value)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("case", "wrapper"), COMBOS)
def test_the_error_reaches_aquery(settings: Any, case: str, wrapper: str, mode: str) -> None:
    built = build(case, wrapper, **MODES[mode])
    with pytest.raises(FrugalChainsError) as e:
        asyncio.run(built.engine.aquery(QUESTION))
    built.assert_nothing_happened(CASES[case], e.value)


@pytest.mark.parametrize("mode", STREAMING_MODES)
@pytest.mark.parametrize(("case", "wrapper"), COMBOS)
def test_the_error_reaches_a_streaming_query(settings: Any, case: str, wrapper: str, mode: str) -> None:
    built = build(case, wrapper, streaming=True, response_mode=mode)
    text: list[str] = []
    with pytest.raises(FrugalChainsError) as e:
        response = built.engine.query(QUESTION)
        assert not raised_in_query(mode, wrapper), "expected the error inside query()"
        assert isinstance(response, StreamingResponse)
        for token in response.response_gen:
            text.append(token)
    assert text == []  # no answer text was shown
    built.assert_nothing_happened(CASES[case], e.value)


@pytest.mark.parametrize("mode", STREAMING_MODES)
@pytest.mark.parametrize(("case", "wrapper"), COMBOS)
def test_the_error_reaches_an_async_streaming_query(
    settings: Any, case: str, wrapper: str, mode: str
) -> None:
    built = build(case, wrapper, streaming=True, response_mode=mode)
    text: list[str] = []

    async def run() -> None:
        response = await built.engine.aquery(QUESTION)
        assert not raised_in_query(mode, wrapper), "expected the error inside aquery()"
        assert isinstance(response, AsyncStreamingResponse)
        async for token in response.async_response_gen():
            text.append(token)

    with pytest.raises(FrugalChainsError) as e:
        asyncio.run(run())
    assert text == []
    built.assert_nothing_happened(CASES[case], e.value)


class Capital(BaseModel):
    city: str


@pytest.mark.parametrize("method", ["structured_predict", "astructured_predict"])
def test_a_cascade_structured_call_does_not_take_a_configuration_error_for_a_parse_failure(
    method: str,
) -> None:
    """A tier's structured call refused for a missing price is not output that did not parse: it stops the
    cascade instead of escalating to the next tier."""
    handler = TokenBudgetHandler([ROOMY], prices=PRICES)
    cheap, strong = Provider(model="acme-unpriced"), Provider(model="acme-strong")
    llm = CascadeLLM(tiers=[cheap, strong], callback_manager=CallbackManager([handler]))
    prompt = PromptTemplate("Which city is the capital of {country}? Answer in JSON.")
    with pytest.raises(UnknownModelPriceError):
        if method == "structured_predict":
            llm.structured_predict(Capital, prompt, country="France")
        else:
            asyncio.run(llm.astructured_predict(Capital, prompt, country="France"))
    assert (cheap.calls, strong.calls) == (0, 0)
    assert handler.ledger.records() == []


CHAT_MODES = ("context", "condense_plus_context", "condense_question", "simple")
CHAT_COMBOS = [
    (c, w, m)
    for c, w in COMBOS
    for m in CHAT_MODES
    # the cache's bypass policy keeps this engine's prompt ("a conversation between a user and ...") out of the
    # semantic tier, so the broken embedder is never asked
    if (c, m) != ("embedder", "condense_plus_context")
]


@pytest.mark.parametrize(("case", "wrapper", "chat_mode"), CHAT_COMBOS)
def test_the_error_reaches_a_chat_engine(settings: Any, case: str, wrapper: str, chat_mode: str) -> None:
    """``chat`` and ``achat`` of the index's chat engines (``condense_question`` answers through a ``compact``
    query engine). Their streams are left out: the context engines write the stream to memory in a thread,
    which raises there too."""
    built = build(case, wrapper)
    engine = built.engine._retriever._index.as_chat_engine(chat_mode=chat_mode)
    with pytest.raises(FrugalChainsError) as e:
        engine.chat(QUESTION)
    built.assert_nothing_happened(CASES[case], e.value)
    with pytest.raises(FrugalChainsError) as e:
        asyncio.run(engine.achat(QUESTION))
    built.assert_nothing_happened(CASES[case], e.value)


@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")  # raised in workflows
@pytest.mark.parametrize("case", ["unpriced", "refused", "uncapped"])
def test_the_error_reaches_an_agent_run(settings: Any, case: str) -> None:
    """A ``ReActAgent`` workflow: its own LLM call raises out of ``agent.run()`` (LlamaIndex agents catch the
    exceptions of tools, not of their LLM)."""
    spec = CASES[case]
    handler = TokenBudgetHandler([spec.budget], prices=PRICES)
    llm = Provider(model=spec.model, max_tokens=spec.max_tokens, callback_manager=CallbackManager([handler]))

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    agent = ReActAgent(tools=[FunctionTool.from_defaults(add)], llm=llm)

    async def run() -> Any:
        return await agent.run("What is 1 + 1?")

    with pytest.raises(FrugalChainsError) as e:
        asyncio.run(run())
    Built(agent, handler, [llm]).assert_nothing_happened(spec, e.value)
