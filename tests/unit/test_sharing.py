"""Copy and pickle of the stateful objects: a copy shares the state (the same object for a service; the same
services inside for a pydantic model), and pickle raises a ``TypeError`` that names the object and the fix."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import pytest

from frugal_chains import Budget, SQLiteLedger
from frugal_chains.cache import AnswerCache, EmbeddedIndex
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.testing.fake_embeddings import HashEmbeddings


def _lc_handler() -> Any:
    from frugal_chains.langchain import TokenBudgetHandler

    return TokenBudgetHandler([Budget(max_tokens=100)])


def _li_handler() -> Any:
    from frugal_chains.llama_index import TokenBudgetHandler

    return TokenBudgetHandler([Budget(max_tokens=100)])


def _answer_cache() -> Any:
    return AnswerCache(embedder=HashEmbeddings())


def _semantic_cache() -> Any:
    from frugal_chains.langchain import SemanticCache

    return SemanticCache(_answer_cache())


def _cascade() -> Any:
    from frugal_chains.routing import Cascade, TierSpec

    return Cascade([TierSpec(name="a", model="a"), TierSpec(name="b", model="b")])


def _guard() -> Any:
    from frugal_chains.budget import BudgetGuard

    return BudgetGuard([Budget(max_tokens=100)])


def _router_stats() -> Any:
    from frugal_chains.routing import RouterStats

    return RouterStats()


def _redis_index() -> Any:
    pytest.importorskip("redisvl")
    from frugal_chains.cache import RedisIndex

    return RedisIndex("redis://127.0.0.1:1/0")  # connects on first use: never here


def _redis_ledger() -> Any:
    pytest.importorskip("redis")
    from frugal_chains.accounting.redis import RedisLedger

    return RedisLedger("redis://127.0.0.1:1/0", check=False)


SERVICES: dict[str, Callable[[], Any]] = {
    "langchain.TokenBudgetHandler": _lc_handler,
    "llama_index.TokenBudgetHandler": _li_handler,
    "AnswerCache": _answer_cache,
    "SemanticCache": _semantic_cache,
    "Cascade": _cascade,
    "BudgetGuard": _guard,
    "RouterStats": _router_stats,
    "SQLiteLedger": SQLiteLedger,
    "EmbeddedIndex": EmbeddedIndex,
    "RedisIndex": _redis_index,
    "RedisLedger": _redis_ledger,
}


def _cached_chat_model() -> Any:
    from frugal_chains.langchain import CachedChatModel

    return CachedChatModel(model=FakeUsageChatModel(responses=["a"]), cache=_answer_cache())


def _cascade_chat_model() -> Any:
    from frugal_chains.langchain import CascadeChatModel

    return CascadeChatModel(
        tiers=[
            FakeUsageChatModel(model="a", responses=["a"]),
            FakeUsageChatModel(model="b", responses=["b"]),
        ],
        ledger=SQLiteLedger(),
    )


def _cached_llm() -> Any:
    from llama_index.core.llms import MockLLM

    from frugal_chains.llama_index import CachedLLM

    return CachedLLM(llm=MockLLM(), cache=_answer_cache())


def _cascade_llm() -> Any:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.llms import MockLLM

    from frugal_chains.llama_index import CascadeLLM

    return CascadeLLM(tiers=[MockLLM(), MockLLM()], callback_manager=CallbackManager([_li_handler()]))


MODELS: dict[str, Callable[[], Any]] = {
    "CachedChatModel": _cached_chat_model,
    "CascadeChatModel": _cascade_chat_model,
    "CachedLLM": _cached_llm,
    "CascadeLLM": _cascade_llm,
}


def refuses_pickle(obj: Any) -> None:
    with pytest.raises(TypeError) as e:
        pickle.dumps(obj)
    message = str(e.value)
    assert message.startswith(f"{type(obj).__name__} cannot be pickled"), message
    assert "per process" in message and "docs/concurrency.md" in message


@pytest.mark.parametrize("make", list(SERVICES.values()), ids=list(SERVICES))
def test_a_service_copies_as_itself_and_refuses_pickle(make: Callable[[], Any]) -> None:
    obj = make()
    assert copy.copy(obj) is obj
    assert copy.deepcopy(obj) is obj
    assert copy.deepcopy({"held": [obj]})["held"][0] is obj  # inside any container
    refuses_pickle(obj)


def _services_of(model: Any) -> list[Any]:
    """The shared state a model holds."""
    name = type(model).__name__
    if name in ("CachedChatModel", "CachedLLM"):
        return [model.core]
    if name == "CascadeChatModel":
        return [model.stats, model.ledger, model._engine]
    handlers = model.callback_manager.handlers
    return [
        model._engine,
        model._engine.stats,
        *[h for h in handlers if type(h).__name__ == "TokenBudgetHandler"],
    ]


@pytest.mark.parametrize("make", list(MODELS.values()), ids=list(MODELS))
def test_a_model_copies_with_its_services_shared_and_refuses_pickle(make: Callable[[], Any]) -> None:
    model = make()
    services = _services_of(model)
    assert services and all(s is not None for s in services)
    for twin in (copy.copy(model), copy.deepcopy(model), model.model_copy(deep=True)):
        assert all(a is b for a, b in zip(_services_of(twin), services, strict=True))
    refuses_pickle(model)  # not a lock error, nor (LlamaIndex) a pickle that silently drops the services


def test_a_plain_model_with_a_semantic_cache_keeps_it_on_deepcopy() -> None:
    from frugal_chains.langchain import SemanticCache

    cache = SemanticCache(_answer_cache())
    model = FakeUsageChatModel(responses=["a"], cache=cache)
    assert copy.deepcopy(model).cache is cache
    refuses_pickle(cache)
