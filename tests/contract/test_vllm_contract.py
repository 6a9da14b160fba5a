"""The vLLM wrapper's contract: ``ChatVLLM`` (LangChain) and ``VLLM`` (LlamaIndex) behave the same in every wing and
call mode, on every backend.

Backends (``BACKENDS``, a module-level list so the main stage skips nothing):

* ``fake-server``: :class:`~frugal_chains.testing.FakeVLLMServer` behind the real ``ServerClient`` (always);
* ``engine``: the real in-process engine on SmolLM2-135M-Instruct (vLLM's CPU build), only where ``vllm`` is
  importable (the vLLM CI stage).

Scenarios: the answer and its usage (cached prompt tokens included) are the backend client's own, in every wing and
driver; the ledger records one call per call, under the served model name, at the self-hosted price given in
``prices=``; a budget refuses before any request reaches vLLM; a server that is down gives ``VLLMServerError`` after
the retries (also out of a LlamaIndex query engine, never "Empty Response"); a cascade escalates past a vLLM tier that
is down; streams come in several chunks; a model without ``max_tokens`` is still budgeted (for ``max_model_len``, or
4096 tokens when the length is unknown).
"""

from __future__ import annotations

import collections
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from frugal_chains import Budget, BudgetExceededError, Price, SQLiteLedger
from frugal_chains.errors import ConfigurationError, VLLMServerError
from frugal_chains.routing import RouterStats
from frugal_chains.testing import FakeVLLMServer
from frugal_chains.vllm import ChatRequest, Completion, SamplingOptions, client_for
from tests.contract.wings import (
    PRICES,
    LangChainWing,
    LlamaIndexWing,
    Target,
    Wing,
    handler_options,
    strong,
)

# vLLM, torch and transformers warn about their own deprecations while the engine starts (not ours to fix)
pytestmark = [
    pytest.mark.filterwarnings(f"ignore::{kind}:{module}")
    for kind in ("DeprecationWarning", "FutureWarning", "UserWarning")
    for module in ("torch", "vllm", "transformers")
]

BACKENDS = ["fake-server"] + (["engine"] if importlib.util.find_spec("vllm") is not None else [])
"""The real engine joins where vLLM is installed (the vLLM CI stage runs this file too)."""
if os.environ.get("FRUGAL_VLLM_CONTRACT_BACKENDS"):
    # The vLLM CI stage runs only the engine here: the fake-server scenarios already ran in the main stage.
    BACKENDS = [b for b in os.environ["FRUGAL_VLLM_CONTRACT_BACKENDS"].split(",") if b in BACKENDS]

SELF_HOSTED = Price(input=0.05, output=0.20, cache_read=0.005)
"""A self-hosted rate (USD per million tokens, from a GPU-hour cost and throughput)."""
ANSWER = "It is 42 , the answer ."
QUESTION = (
    "Read this note and answer the question at its end. "
    + " ".join(
        f"Line {i}: the warehouse in district {i} stores {i * 7} crates of apples and {i * 3} crates of pears."
        for i in range(1, 9)
    )
    + " Question: how many crates of apples are in district 6? Answer with a number."
)
"""Long enough that its prefix fills whole KV-cache blocks, so a repeated prompt reads some from the cache."""
SETTINGS: dict[str, Any] = {"max_tokens": 8, "temperature": 0.0}


@dataclass
class Backend:
    name: str
    model: str
    """The served model name (what the ledger and ``prices`` see)."""
    settings: dict[str, Any]
    """``ChatVLLM`` / ``VLLM`` arguments naming the backend."""
    reservation: int
    """What a call without ``max_tokens`` reserves for its answer."""
    server: FakeVLLMServer | None = None
    clients: list[Any] = field(default_factory=list)

    def client(self) -> Any:
        """The backend's own client (what the adapters must agree with)."""
        return client_for(**self.settings)

    @property
    def requests(self) -> int | None:
        return None if self.server is None else len(self.server.requests)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake-server":
        with FakeVLLMServer([ANSWER], model="self-hosted-7b") as server:
            yield Backend(
                "fake-server",
                "self-hosted-7b",
                {"model": "self-hosted-7b", "base_url": server.base_url},
                4096,
                server,
            )
        return
    import os

    from frugal_chains.testing import smollm2_folder

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    folder = str(smollm2_folder())
    yield Backend("engine", folder, {"model": folder, "dtype": "bfloat16", "max_model_len": 2048}, 2048)


def vllm_target(
    wing: Wing,
    settings: dict[str, Any],
    *,
    budgets: tuple[Budget, ...] = (),
    prices: dict[str, Price] | None = None,
) -> Target:
    """The wing's vLLM model (``ChatVLLM`` or ``VLLM``) with the wing's budget handler, pricing ``prices``."""
    from frugal_chains.langchain import ChatVLLM
    from frugal_chains.llama_index import VLLM

    ledger = SQLiteLedger()
    with handler_options(prices={**PRICES, **(prices or {})}):
        if isinstance(wing, LangChainWing):
            handler = wing._handler(budgets, ledger)
            model: Any = ChatVLLM(**settings)
        else:
            assert isinstance(wing, LlamaIndexWing)
            handler, manager = wing._manager(budgets, ledger)
            model = VLLM(**settings, callback_manager=manager)
    return Target(wing, model, handler, ledger, collections.Counter(), api=wing.api)


def reference(backend: Backend) -> Completion:
    """The backend client's own answer to the question (it also puts the prompt in the prefix cache)."""
    request = ChatRequest(
        messages=[{"role": "user", "content": QUESTION}],
        options=SamplingOptions(max_tokens=8, temperature=0.0),
    )
    return backend.client().generate([request])[0]


# -- answers, usage, the ledger -------------------------------------------------------------------------------------
def test_answer_and_usage_are_the_backends_own(wing: Wing, mode: str, backend: Backend) -> None:
    expected = reference(backend)
    target = vllm_target(wing, {**backend.settings, **SETTINGS}, prices={backend.model: SELF_HOSTED})
    obs = target.ask(mode, QUESTION)
    assert obs.error is None, repr(obs.error)
    assert obs.text == expected.text
    assert obs.usage == (expected.usage.input_tokens, expected.usage.output_tokens)
    if mode in ("stream", "astream"):
        assert len(obs.chunks) > 1
        assert "".join(obs.chunks) == expected.text
    (record,) = target.ledger.records()
    assert record.usage.input_tokens == expected.usage.input_tokens
    # the reference call sent the same prompt first: vLLM's prefix cache serves part of it now
    assert 0 < record.usage.cache_read_tokens < record.usage.input_tokens
    if backend.server is not None:
        words = expected.usage.input_tokens
        assert record.usage.cache_read_tokens == ((words - 1) // 16) * 16  # whole blocks, like vLLM


def test_the_ledger_records_each_call_at_the_self_hosted_price(
    wing: Wing, mode: str, backend: Backend
) -> None:
    target = vllm_target(wing, {**backend.settings, **SETTINGS}, prices={backend.model: SELF_HOSTED})
    first = target.ask(mode, QUESTION)
    second = target.ask(mode, QUESTION)
    assert first.error is None and second.error is None
    records = target.ledger.records()
    assert [r.outcome for r in records] == ["ok", "ok"]
    for record, obs in zip(records, (first, second), strict=True):
        assert record.model == backend.model
        assert (record.usage.input_tokens, record.usage.output_tokens) == obs.usage
        assert record.cost_usd == pytest.approx(SELF_HOSTED.cost(record.usage))
        assert not record.usage_estimated
    assert records[1].usage.cache_read_tokens > 0  # the repeated prompt is cheaper: read from the cache


# -- budgets ----------------------------------------------------------------------------------------------------------
def test_a_budget_refuses_before_any_request(wing: Wing, mode: str, backend: Backend) -> None:
    target = vllm_target(
        wing,
        {**backend.settings, **SETTINGS},
        budgets=(Budget(max_usd=1e-12, scope="global"),),
        prices={backend.model: SELF_HOSTED},
    )
    obs = target.ask(mode, QUESTION)
    assert isinstance(obs.error, BudgetExceededError), repr(obs.error)
    assert obs.chunks == [] and obs.records == []
    assert [r.outcome for r in obs.refusals] == ["refused"]
    assert backend.requests in (0, None)  # the fake server saw nothing (the engine was never asked)


def test_a_model_without_max_tokens_is_budgeted_for_its_longest_answer(
    wing: Wing, mode: str, backend: Backend
) -> None:
    settings = {**backend.settings, "temperature": 0.0}  # no max_tokens
    target = vllm_target(
        wing,
        settings,
        budgets=(Budget(max_tokens=backend.reservation, scope="global"),),
        prices={backend.model: SELF_HOSTED},
    )
    obs = target.ask(mode, QUESTION)
    # refused (not a ConfigurationError about a missing cap): the reservation is the prompt plus the model's length
    assert isinstance(obs.error, BudgetExceededError), repr(obs.error)
    assert obs.error.unit == "tokens"
    assert backend.reservation < obs.error.requested < backend.reservation + 1000
    assert backend.requests in (0, None)


# -- a server that is down ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("failure", ["503", "garbage"])
def test_a_server_that_is_down_gives_a_clear_error_after_the_retries(
    wing: Wing, mode: str, failure: Any
) -> None:
    with FakeVLLMServer([ANSWER], model="self-hosted-7b", fail_first=1000, failure=failure) as down:
        settings = {"model": "self-hosted-7b", "base_url": down.base_url, "max_retries": 1, **SETTINGS}
        target = vllm_target(wing, settings, prices={"self-hosted-7b": SELF_HOSTED})
        obs = target.ask(mode, QUESTION)
        assert isinstance(obs.error, VLLMServerError), repr(obs.error)
        assert obs.error.attempts == 2
        assert obs.error.status_code == (503 if failure == "503" else 502)
        assert len(down.requests) == 2
    assert obs.chunks == [] and obs.records == []
    committed = target.handler.core.spent(Budget(max_usd=1.0, scope="global"))
    assert committed.reserved_nano == 0


def test_a_cascade_escalates_past_a_vllm_tier_that_is_down(wing: Wing, mode: str) -> None:
    from frugal_chains.langchain import CascadeChatModel, ChatVLLM
    from frugal_chains.llama_index import VLLM, CascadeLLM

    with FakeVLLMServer([ANSWER], model="self-hosted-7b", fail_first=1000) as down:
        settings = {"model": "self-hosted-7b", "base_url": down.base_url, "max_retries": 0, **SETTINGS}
        ledger, tally, stats = SQLiteLedger(), collections.Counter[str](), RouterStats()
        prices = {**PRICES, "self-hosted-7b": SELF_HOSTED}
        with handler_options(prices=prices):
            if isinstance(wing, LangChainWing):
                model: Any = CascadeChatModel(
                    tiers=[ChatVLLM(**settings), wing._fake(strong(), tally)],
                    stats=stats,
                    ledger=ledger,
                    prices=prices,
                )
                target = Target(wing, model, wing._handler((), ledger), ledger, tally, stats)
            else:
                assert isinstance(wing, LlamaIndexWing)
                handler, manager = wing._manager((), ledger)
                model = CascadeLLM(
                    tiers=[VLLM(**settings, callback_manager=manager), wing._fake(strong(), tally, manager)],
                    stats=stats,
                    ledger=ledger,
                    prices=prices,
                    callback_manager=manager,
                )
                target = Target(wing, model, handler, ledger, tally, stats, api=wing.api)
        obs = target.ask(mode)
        assert len(down.requests) == 1
    assert obs.error is None, repr(obs.error)
    assert obs.text == "It is 42 ."
    assert obs.outcomes == ["error", "accepted"]
    assert obs.frugal is not None and "VLLMServerError" in obs.frugal["cascade"]["attempts"][0]["error"]
    assert [r[1] for r in obs.spend] == ["strong-1"]


@pytest.mark.parametrize("streaming", [False, True], ids=["query", "streaming-query"])
def test_a_query_engine_passes_the_server_error_on(streaming: bool) -> None:
    from llama_index.core import Document, Settings, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    from frugal_chains.llama_index import VLLM

    with FakeVLLMServer([ANSWER], model="self-hosted-7b", fail_first=1000) as down:
        llm = VLLM(model="self-hosted-7b", base_url=down.base_url, max_retries=0, max_tokens=8)
        saved = Settings._llm, Settings._embed_model
        try:
            Settings.llm, Settings.embed_model = llm, MockEmbedding(embed_dim=8)
            index = VectorStoreIndex.from_documents(
                [
                    Document(text="Paris is the capital of France."),
                    Document(text="Rome is the capital of Italy."),
                ]
            )
            engine = index.as_query_engine(similarity_top_k=2, streaming=streaming)
            with pytest.raises(VLLMServerError):
                response = engine.query("What is the capital of France?")
                if streaming:
                    "".join(response.response_gen)  # type: ignore[union-attr]
        finally:
            Settings._llm, Settings._embed_model = saved
        assert len(down.requests) == 1


def _adapter(name: str) -> Any:
    if name == "langchain":
        from frugal_chains.langchain import ChatVLLM

        return ChatVLLM
    from frugal_chains.llama_index import VLLM

    return VLLM


@pytest.mark.parametrize("adapter", ["langchain", "llama_index"])
@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"base_url": "127.0.0.1:8000/v1"}, "base_url"),
        ({"base_url": "http://127.0.0.1:8000/v1", "timeout": -1}, "timeout"),
        ({"base_url": "http://127.0.0.1:8000/v1", "max_retries": -1}, "max_retries"),
        ({"base_url": "http://127.0.0.1:8000/v1", "tool_parser": "hermes"}, "tool_parser"),
        ({"base_url": "http://127.0.0.1:8000/v1", "enable_prefix_caching": False}, "enable_prefix_caching"),
        ({"base_url": "http://127.0.0.1:8000/v1", "dtype": "bfloat16"}, "dtype"),
        ({"dtype": "float99"}, "dtype"),
        ({"max_model_len": 0}, "max_model_len"),
        ({"base_url": "http://127.0.0.1:8000/v1", "max_token": 32}, "max_token"),  # a typo
        ({"temprature": 0.0}, "temprature"),
    ],
)
def test_a_bad_setting_is_refused_when_the_model_is_built(
    adapter: str, settings: dict[str, Any], field: str
) -> None:
    """Not at the first call (deep inside a chain or a cascade's tier), and never silently ignored."""
    with pytest.raises(ConfigurationError) as info:
        _adapter(adapter)(model="m", **settings)
    assert info.value.field == field


def test_the_reservation_covers_the_chat_templates_own_prompt(wing: Wing, mode: str) -> None:
    """A chat template adds tokens the messages do not show (SmolLM2's adds a default system prompt: 34 prompt
    tokens for this 6-word question, where the messages alone count 14): the reservation covers them."""
    with FakeVLLMServer([ANSWER], model="self-hosted-7b") as server:
        target = vllm_target(
            wing,
            {"model": "self-hosted-7b", "base_url": server.base_url, **SETTINGS},
            budgets=(Budget(max_tokens=1, scope="global"),),
            prices={"self-hosted-7b": SELF_HOSTED},
        )
        obs = target.ask(mode, "What is the capital of France?")
        assert isinstance(obs.error, BudgetExceededError), repr(obs.error)
        assert obs.error.requested >= 34 + SETTINGS["max_tokens"]
        assert server.requests == []
