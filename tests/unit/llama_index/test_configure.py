"""``configure()`` with a real ``VectorStoreIndex`` query engine: one call wires budgets, the cache and the cascade
on ``Settings`` with one ledger, and undoes it; late attachment is handled or warned about."""

from __future__ import annotations

import asyncio
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from pydantic import Field

import frugal_chains.llama_index.settings as configure_module
from frugal_chains import (
    Attribution,
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Price,
    SQLiteLedger,
    attribute,
)
from frugal_chains.cache import AnswerCache
from frugal_chains.llama_index import (
    BudgetNotAttachedWarning,
    CachedLLM,
    CascadeLLM,
    FrugalSettings,
    LLMNotAttachedWarning,
    TokenBudgetHandler,
    configure,
)
from frugal_chains.routing import RegexGate
from frugal_chains.testing import HashEmbeddings

QUESTION = "What is the capital of France?"
PRICES = {"acme-1": Price(input=1.0, output=2.0), "acme-strong": Price(input=10.0, output=30.0)}
ROOMY = Budget(max_usd=1.0, scope="global")
TINY = Budget(max_usd=1e-9, scope="global")


class Provider(CustomLLM):
    """A paid provider: counts the calls that reach it; its output cap is ``max_tokens``."""

    model: str = "acme-1"
    answer: str = "Paris."
    max_tokens: int | None = 64
    calls: int = Field(default=0, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        return CompletionResponse(text=self.answer)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        self.calls += 1

        def gen() -> CompletionResponseGen:
            yield CompletionResponse(text=self.answer, delta=self.answer)

        return gen()


@pytest.fixture(autouse=True)
def settings() -> Iterator[Any]:
    """LlamaIndex's Settings (an offline embedder) and configure()'s state, restored after each test."""
    saved = {f.name: getattr(Settings, f.name) for f in dataclasses.fields(Settings)}
    Settings.embed_model = MockEmbedding(embed_dim=8)  # (creates a Settings.callback_manager)
    Settings._llm, Settings._callback_manager = None, None
    yield Settings
    if configure_module._active is not None:
        configure_module._active.reset()
    for name, value in saved.items():
        setattr(Settings, name, value)


def engine(**kwargs: Any) -> Any:
    """A query engine over one short document: one LLM call per query (compact mode)."""
    index = VectorStoreIndex.from_documents([Document(text="Paris is the capital of France.")])
    return index.as_query_engine(similarity_top_k=1, **kwargs)


def outcomes(frugal: FrugalSettings) -> list[str]:
    return sorted(r.outcome for r in frugal.ledger.records())


# -- one ledger, one record per call ------------------------------------------------------------------------------
async def astreamed(qe: Any) -> str:
    response = await qe.aquery(QUESTION)
    return "".join([token async for token in response.async_response_gen()])


@pytest.mark.parametrize("mode", ["sync", "async", "stream", "astream"])
def test_budget_records_reach_the_ledger_once_per_call(mode: str) -> None:
    provider = Provider()
    frugal = configure(provider, budgets=[ROOMY], prices=PRICES, feature="docs-qa")
    assert Settings.llm is provider and frugal.llm is provider
    qe = engine(streaming=mode in ("stream", "astream"))
    for _ in range(2):
        if mode == "sync":
            assert str(qe.query(QUESTION)) == "Paris."
        elif mode == "async":
            assert str(asyncio.run(qe.aquery(QUESTION))) == "Paris."
        elif mode == "stream":
            assert "".join(qe.query(QUESTION).response_gen) == "Paris."
        else:
            assert asyncio.run(astreamed(qe)) == "Paris."
    records = frugal.ledger.records()
    assert provider.calls == 2
    assert [(r.model, r.outcome, r.attribution.feature) for r in records] == [("acme-1", "ok", "docs-qa")] * 2
    assert all(r.cost_usd is not None and r.cost_usd > 0 for r in records)
    assert [(row.key, row.calls) for row in frugal.summary("feature")] == [("docs-qa", 2)]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cache_hits_are_recorded_in_the_same_ledger(mode: str) -> None:
    provider = Provider()
    cache = AnswerCache(embedder=HashEmbeddings())
    frugal = configure(provider, cache=cache, budgets=[ROOMY], prices=PRICES)
    assert isinstance(Settings.llm, CachedLLM) and frugal.cache is cache
    assert cache.ledger is frugal.ledger
    qe = engine()
    for _ in range(2):
        response = qe.query(QUESTION) if mode == "sync" else asyncio.run(qe.aquery(QUESTION))
        assert str(response) == "Paris."
    assert provider.calls == 1
    assert outcomes(frugal) == ["cache_hit", "ok"]
    hit = next(r for r in frugal.ledger.records() if r.outcome == "cache_hit")
    assert hit.saved_usd is not None and hit.saved_usd > 0  # priced with the shared price book
    assert frugal.cache_stats is not None and frugal.cache_stats.hits == 1


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_cascade_records_each_tier_call_and_the_route(mode: str) -> None:
    cheap = Provider(answer="I am not sure.")
    strong = Provider(model="acme-strong", answer="Paris.")
    frugal = configure(tiers=[cheap, strong], gates=[RegexGate(r"Paris")], budgets=[ROOMY], prices=PRICES)
    assert isinstance(Settings.llm, CascadeLLM) and frugal.cascade is Settings.llm
    qe = engine()
    response = qe.query(QUESTION) if mode == "sync" else asyncio.run(qe.aquery(QUESTION))
    assert str(response) == "Paris."
    assert (cheap.calls, strong.calls) == (1, 1)
    records = frugal.ledger.records()
    assert sorted((r.outcome, r.tier) for r in records) == [
        ("ok", "acme-1"),
        ("ok", "acme-strong"),
        ("routed", "acme-strong"),
    ]
    routed = next(r for r in records if r.outcome == "routed")
    assert routed.extra["cascade_cost_usd"] is not None  # priced with the shared price book
    assert frugal.router_stats is not None and frugal.router_stats.tier("acme-1").escalations == 1


def test_a_cache_over_a_cascade_shares_the_ledger_too() -> None:
    cheap, strong = Provider(), Provider(model="acme-strong")
    frugal = configure(tiers=[cheap, strong], cache=AnswerCache(embedder=HashEmbeddings()), prices=PRICES)
    assert isinstance(Settings.llm, CachedLLM) and Settings.llm.llm is frugal.cascade
    qe = engine()
    qe.query(QUESTION)
    qe.query(QUESTION)
    assert (cheap.calls, strong.calls) == (1, 0)
    assert outcomes(frugal) == ["cache_hit", "ok", "routed"]


@pytest.mark.parametrize("wrapper", ["plain", "cached", "cascade"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_refused_call_reaches_the_caller(wrapper: str, mode: str) -> None:
    providers = [Provider(), Provider(model="acme-strong")]
    if wrapper == "plain":
        configure(providers[0], budgets=[TINY], prices=PRICES)
    elif wrapper == "cached":
        configure(providers[0], cache=AnswerCache(embedder=HashEmbeddings()), budgets=[TINY], prices=PRICES)
    else:
        configure(tiers=providers, budgets=[TINY], prices=PRICES)
    qe = engine()
    with pytest.raises(BudgetExceededError):
        if mode == "sync":
            qe.query(QUESTION)
        else:
            asyncio.run(qe.aquery(QUESTION))
    assert [p.calls for p in providers] == [0, 0]
    assert configure_module._active is not None
    records = configure_module._active.ledger.records()
    assert [r.outcome for r in records] == ["refused"]  # the refusal is recorded; nothing was spent
    assert records[0].cost_usd == 0.0


# -- Settings before and after ------------------------------------------------------------------------------------
def test_existing_handlers_are_kept_and_reset_restores_settings() -> None:
    counter = TokenCountingHandler()
    manager = CallbackManager([counter])
    before = Provider(model="before")
    Settings.llm = before
    Settings.callback_manager = manager
    frugal = configure(Provider(), cache=AnswerCache(embedder=HashEmbeddings()), feature="docs-qa")
    assert Settings.callback_manager is manager  # the same manager, one more handler
    assert manager.handlers == [counter, frugal.handler]
    engine().query(QUESTION)
    assert counter.total_llm_token_count > 0 and len(frugal.ledger.records()) == 1
    frugal.reset()
    assert not frugal.active
    assert Settings._llm is before and Settings.callback_manager is manager and manager.handlers == [counter]
    assert frugal.cache is not None and frugal.cache.ledger is None  # given for the configuration only
    with attribute(user_id="u1"):
        from frugal_chains.accounting import current_attribution

        assert current_attribution().feature is None  # the defaults are gone
    frugal.reset()  # twice: nothing more happens
    assert manager.handlers == [counter]


def test_a_with_block_resets_and_unset_settings_stay_unset() -> None:
    with configure(Provider(), budgets=[ROOMY], prices=PRICES) as frugal:
        assert Settings.callback_manager.handlers == [frugal.handler]
        engine().query(QUESTION)
    assert Settings._llm is None and Settings._callback_manager is None
    assert len(frugal.ledger.records()) == 1  # the ledger outlives the configuration


def test_a_second_configure_replaces_the_first() -> None:
    first = configure(Provider(), cache=AnswerCache(embedder=HashEmbeddings()))
    second = configure(cache=AnswerCache(embedder=HashEmbeddings()))  # wraps the LLM the first one was given
    assert not first.active and second.active
    assert Settings.callback_manager.handlers == [second.handler]
    assert isinstance(Settings.llm, CachedLLM) and not isinstance(Settings.llm.llm, CachedLLM)
    second.reset()
    assert Settings._llm is None and Settings._callback_manager is None


def test_attribution_defaults_apply_to_every_record_and_attribute_blocks_win() -> None:
    frugal = configure(
        Provider(),
        tiers=None,
        cache=AnswerCache(embedder=HashEmbeddings()),
        prices=PRICES,
        feature="docs-qa",
        attribution=Attribution(tenant_id="acme", tags=("beta",)),
    )
    qe = engine()
    qe.query(QUESTION)
    with attribute(feature="search"):
        qe.query(QUESTION)  # a cache hit
    records = sorted(frugal.ledger.records(), key=lambda r: r.outcome)
    assert [(r.outcome, r.attribution.feature, r.attribution.tenant_id) for r in records] == [
        ("cache_hit", "search", "acme"),
        ("ok", "docs-qa", "acme"),
    ]
    assert all(r.attribution.tags == ("beta",) for r in records)


def test_one_ledger_given_is_the_one_everything_writes_to() -> None:
    ledger = SQLiteLedger(":memory:")
    cache = AnswerCache(embedder=HashEmbeddings(), ledger=ledger)  # the same ledger is fine
    frugal = configure(tiers=[Provider(), Provider(model="acme-strong")], cache=cache, ledger=ledger)
    assert frugal.ledger is ledger and frugal.cascade is not None and frugal.cascade.core.ledger is ledger
    engine().query(QUESTION)
    assert {r.outcome for r in ledger.records()} == {"ok", "routed"}


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"llm": "gpt-4o-mini"}, "llm"),
        ({"llm": Provider(), "tiers": [Provider(), Provider()]}, "tiers"),
        ({"tiers": [Provider()]}, "tiers"),
        ({"tiers": [Provider(), "gpt-4o"]}, "tiers"),
        ({"llm": Provider(), "gates": ["refusal"]}, "gates"),
        ({"llm": Provider(), "scorer": "heuristic"}, "scorer"),
        ({"llm": Provider(), "cache": "cache.sqlite"}, "cache"),
        (
            {"llm": Provider(), "cache": AnswerCache(embedder=HashEmbeddings(), ledger=SQLiteLedger())},
            "cache",
        ),
        ({"cache": AnswerCache(embedder=HashEmbeddings())}, "llm"),  # nothing to wrap
        ({"llm": Provider(), "budgets": ["1 USD"]}, "budgets"),
        ({"llm": Provider(), "budgets": {"max_usd": 1}}, "budgets"),
        ({"llm": Provider(), "feature": ""}, "feature"),
        ({"llm": Provider(), "attribution": {"feature": "x"}}, "attribution"),
        ({"llm": Provider(), "attribution": Attribution(task_id="t1")}, "attribution"),
        ({"llm": Provider(), "ledger": "redis://localhost"}, "ledger"),
    ],
)
def test_bad_input_names_the_field_and_changes_nothing(kwargs: dict[str, Any], field: str) -> None:
    manager = CallbackManager([])
    Settings.callback_manager = manager
    with pytest.raises(ConfigurationError) as e:
        configure(**kwargs)
    assert e.value.field == field
    assert Settings._llm is None and Settings._callback_manager is manager and manager.handlers == []
    assert configure_module._active is None


# -- late attachment -----------------------------------------------------------------------------------------------
def test_an_engine_built_before_configure_is_budgeted() -> None:
    """The engine holds Settings' callback manager from when it was built; configure() adds its handler to that
    very manager, so the engine's calls are checked and recorded."""
    provider = Provider()
    Settings.llm = provider
    qe = engine()
    frugal = configure(provider, budgets=[ROOMY], prices=PRICES)
    qe.query(QUESTION)
    assert len(frugal.ledger.records()) == 1
    configure(provider, budgets=[TINY], prices=PRICES)
    with pytest.raises(BudgetExceededError):
        qe.query(QUESTION)


@pytest.mark.parametrize("llm", ["plain", "cached"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_handler_set_on_settings_after_the_engine_was_built_warns(llm: str, mode: str) -> None:
    """Replacing Settings.callback_manager by hand after building the engine: the engine keeps the old manager,
    its calls are not recorded, and a BudgetNotAttachedWarning says so (once)."""
    provider = Provider()
    Settings.llm = (
        provider if llm == "plain" else CachedLLM(llm=provider, cache=AnswerCache(embedder=HashEmbeddings()))
    )
    qe = engine()
    handler = TokenBudgetHandler([ROOMY], prices=PRICES)
    Settings.callback_manager = CallbackManager([handler])
    with pytest.warns(BudgetNotAttachedWarning, match="Settings.callback_manager"):
        qe.query(QUESTION) if mode == "sync" else asyncio.run(qe.aquery(QUESTION))
    assert handler.ledger.records() == []  # what the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetNotAttachedWarning)
        qe.query(QUESTION + " Again?")  # once per handler


def test_a_cache_hit_under_a_late_handler_warns_too() -> None:
    """A hit calls no LLM: the wrapper itself checks."""
    cached = CachedLLM(llm=Provider(), cache=AnswerCache(embedder=HashEmbeddings()))
    Settings.llm = cached
    qe = engine()
    qe.query(QUESTION)  # stored
    Settings.callback_manager = CallbackManager([TokenBudgetHandler()])
    with pytest.warns(BudgetNotAttachedWarning, match="CachedLLM"):
        assert str(qe.query(QUESTION)) == "Paris."


def test_no_warning_when_the_handler_is_attached() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", BudgetNotAttachedWarning)
        warnings.simplefilter("error", LLMNotAttachedWarning)
        frugal = configure(Provider(), cache=AnswerCache(embedder=HashEmbeddings()), prices=PRICES)
        qe = engine()
        qe.query(QUESTION)
        asyncio.run(qe.aquery(QUESTION))
        "".join(engine(streaming=True).query(QUESTION).response_gen)
    assert outcomes(frugal) == ["cache_hit", "cache_hit", "ok"]


@pytest.mark.parametrize("wrapper", ["cache", "cascade"])
def test_an_engine_built_before_configure_keeps_its_llm_and_that_warns(wrapper: str) -> None:
    provider = Provider()
    Settings.llm = provider
    qe = engine()  # holds `provider`
    if wrapper == "cache":
        frugal = configure(provider, cache=AnswerCache(embedder=HashEmbeddings()), prices=PRICES)
    else:
        frugal = configure(tiers=[provider, Provider(model="acme-strong")], prices=PRICES)
    with pytest.warns(LLMNotAttachedWarning, match="configure"):
        qe.query(QUESTION)
    assert len(frugal.ledger.records()) == 1  # budgeted all the same (the handler is on its manager)
    assert outcomes(frugal) == ["ok"]  # but neither cached nor routed
    with warnings.catch_warnings():
        warnings.simplefilter("error", LLMNotAttachedWarning)
        engine().query(QUESTION)  # built after configure(): through the wrapper
