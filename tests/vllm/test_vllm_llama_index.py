"""The LlamaIndex ``VLLM`` on a real vLLM (the CPU build, SmolLM2-135M-Instruct): a query engine answers through it,
streams come in several deltas, and the budget handler records the real usage once per call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import ChatMessage

from frugal_chains import Budget, Price, SQLiteLedger
from frugal_chains.llama_index import VLLM, TokenBudgetHandler
from tests.vllm.conftest import ENGINE_DTYPE, ENGINE_MAX_MODEL_LEN

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:vllm"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:transformers"),
    pytest.mark.filterwarnings("ignore::FutureWarning:torch"),
    pytest.mark.filterwarnings("ignore::FutureWarning:vllm"),
    pytest.mark.filterwarnings("ignore::FutureWarning:transformers"),
    pytest.mark.filterwarnings("ignore::UserWarning:vllm"),
    pytest.mark.filterwarnings("ignore::UserWarning:torch"),
]


@pytest.fixture(params=["engine", "server"])
def llm(request: pytest.FixtureRequest, smollm2_dir: Path) -> VLLM:
    """VLLM on the shared in-process engine, or on the real ``vllm serve`` of the ``vllm_server`` fixture."""
    if request.param == "server":
        server = request.getfixturevalue("vllm_server")
        return VLLM(base_url=server.base_url, max_tokens=24, temperature=0.0, timeout=120)
    return VLLM(
        model=str(smollm2_dir),
        dtype=ENGINE_DTYPE,
        max_model_len=ENGINE_MAX_MODEL_LEN,
        max_tokens=24,
        temperature=0.0,
    )


@pytest.fixture
def settings() -> Iterator[None]:
    saved = Settings._llm, Settings._embed_model, Settings._callback_manager
    try:
        yield
    finally:
        Settings._llm, Settings._embed_model, Settings._callback_manager = saved


def test_a_query_engine_answers_through_vllm(llm: VLLM, settings: None) -> None:
    ledger = SQLiteLedger()
    handler = TokenBudgetHandler(
        [Budget(max_usd=1.0, scope="global")],
        ledger=ledger,
        prices={llm.served_model: Price(input=0.05, output=0.2)},
    )
    Settings.llm, Settings.embed_model = llm, MockEmbedding(embed_dim=8)
    Settings.callback_manager = CallbackManager([handler])
    llm.callback_manager = Settings.callback_manager
    index = VectorStoreIndex.from_documents(
        [Document(text="The capital of France is Paris."), Document(text="The capital of Italy is Rome.")]
    )
    answer = str(index.as_query_engine(similarity_top_k=2).query("What is the capital of France?"))
    assert answer.strip() and answer != "Empty Response"
    records = [r for r in ledger.records() if r.outcome == "ok"]
    assert len(records) == 1
    assert records[0].model == llm.served_model and not records[0].usage_estimated
    assert records[0].usage.input_tokens > 20 and 0 < records[0].usage.output_tokens <= 24


def test_stream_chat_gives_several_deltas_and_the_usage_last(llm: VLLM) -> None:
    messages = [ChatMessage(role="user", content="Name three colours.")]
    chunks = list(llm.stream_chat(messages))
    assert len([c for c in chunks if c.delta]) > 1
    assert chunks[-1].raw is not None and chunks[-1].raw["usage"]["completion_tokens"] > 1
    assert chunks[-1].message.content == "".join(c.delta or "" for c in chunks)

    async def collect() -> list[str]:
        gen = await llm.astream_chat(messages)
        return [c.delta async for c in gen if c.delta]

    assert len(asyncio.run(collect())) > 1
