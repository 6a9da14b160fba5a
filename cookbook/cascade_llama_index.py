"""A LlamaIndex query engine on the cascading router: `Settings.llm = CascadeLLM(...)`, with budgets.

Two tiny "recorded" LLMs stand in for a cheap and a strong provider model (they answer from a table and report
OpenAI-style usage); swap in `OpenAI(model="gpt-4o-mini")` and `OpenAI(model="gpt-4o")` for production.

    python cookbook/cascade_llama_index.py
"""

from __future__ import annotations

from typing import Any

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback

from frugal_chains import Budget, SQLiteLedger, attribute
from frugal_chains.llama_index import CascadeLLM, TokenBudgetHandler
from frugal_chains.routing import RefusalGate, escalation_rates


class Recorded(CustomLLM):
    """Answers with the first recorded answer whose key is in the prompt (else ``default``)."""

    name: str
    answers: dict[str, str]
    default: str = "I'm not sure."

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.name, num_output=256, context_window=16_000)

    def _answer(self, prompt: str) -> CompletionResponse:
        text = next((a for k, a in self.answers.items() if k in prompt), self.default)
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4}
        return CompletionResponse(text=text, raw={"usage": usage})

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._answer(prompt)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        whole = self._answer(prompt)
        yield CompletionResponse(text=whole.text, delta=whole.text, raw=whole.raw)


def main() -> None:
    ledger = SQLiteLedger(":memory:")
    Settings.callback_manager = CallbackManager(
        [TokenBudgetHandler([Budget(max_usd=1.0, scope="global", window="day")], ledger=ledger)]
    )
    Settings.embed_model = MockEmbedding(embed_dim=8)
    cheap = Recorded(name="gpt-4o-mini", answers={"return window": "30 days, with the receipt."})
    strong = Recorded(
        name="gpt-4o",
        answers={"customs": "Duties are refunded by the carrier once the return clears customs."},
    )
    # Every request starts on gpt-4o-mini; an unsure answer escalates to gpt-4o.
    Settings.llm = CascadeLLM(tiers=[cheap, strong], gates=[RefusalGate()], ledger=ledger)

    docs = [
        Document(text="Returns are accepted within 30 days with the receipt."),
        Document(text="Import duties on returns are refunded by the carrier after customs clearance."),
    ]
    engine = VectorStoreIndex.from_documents(docs).as_query_engine(similarity_top_k=1)
    with attribute(feature="docs-qa"):
        for question in ("What is the return window?", "Who refunds customs duties on a return?"):
            response = engine.query(question)
            print(f"{question!r} -> {str(response)!r}")
    for row in ledger.summary("tier"):
        print(f"tier {row.key}: {row.calls} calls, ${row.cost_usd:.6f}")
    for tier, stats in escalation_rates(ledger.records()).items():
        print(f"{tier}: {stats.attempts} answers, escalation rate {stats.escalation_rate:.0%}")


if __name__ == "__main__":
    main()
