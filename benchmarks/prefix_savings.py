"""Prefix caching: the input cost of a support workload without and with ``frugal_chains.prefix.PrefixFormatter``.

The workload (τ-bench airline, ``taubench_airline_traj/gpt-4o-airline.json`` in the shared data folder):

* **System prompt**: the airline agent policy (the same ~6.2k characters in all 200 trajectories) made into a
  template: its line ``The current time is 2024-05-15 15:00:00 EST.`` becomes ``The current time is {now} EST.``,
  followed by ``Request id: {request_id}. You are helping {user_name}.`` -- near the top, where τ-bench puts the
  time. ``now`` is the call's simulated arrival time, ``request_id`` is new on every call (``req_`` + 16 hex
  digits), ``user_name`` is the trajectory's user (``mia_li_3668`` -> ``Mia Li``).
* **Questions**: ``--turns agent`` (default) replays agent calls: each call is one trajectory cut before one of its
  assistant messages (``traj[1:k]``: the user's first message, or the multi-turn conversation so far with its tool
  calls and tool results), ``--calls`` of the 2,454 agent calls drawn without replacement (seeded).
  ``--turns first``: each call is a trajectory's first user message (200 of them, each used ``calls / 200`` times,
  shuffled). ``--turns runs``: agent *runs*: trajectories drawn without replacement (seeded), each replayed as
  all its agent calls in order, with one time, request id and user name for the whole run (a run is one request
  in the app); the last run is cut so the workload has exactly ``--calls`` calls.
* **Tools**: the 14 airline tools of τ-bench (``benchmarks/data/taubench_airline_tools.json``, their
  ``get_info()`` schemas copied from the τ-bench repository; the trajectory file does not have them), sent with
  every call (``--no-tools``: none; only valid with ``--turns first``, since a conversation with tool calls needs
  its tools).
* **Arrivals**: a Poisson process of ``--calls-per-hour`` (repeatable), seeded; the same calls and values for each
  rate, only the times (and so the ``now`` values) differ. With ``--turns runs`` the *runs* arrive as a Poisson
  process whose rate makes ``--calls-per-hour`` *calls* an hour on average (runs per hour = calls per hour / mean
  calls per run), and the turns of a run follow each other ``TURN_GAP_MIN`` s + an exponential of mean
  ``TURN_GAP_EXTRA_MEAN`` s apart (the model's reply and the tool call; seeded); ``now`` is the run's start.

Each call is sent to each model twice, as simulated requests:

* **without the formatter**: the messages and tools as written. The provider still caches what it caches on its
  own: OpenAI and Gemini cache any prefix automatically; Anthropic caches nothing without a ``cache_control``
  marker (a second row, *raw + breakpoint*, puts one on the system prompt as written, as many apps do);
* **with the formatter**: ``PrefixFormatter(model=..., templates=[the system template],
  dynamic_variables=["user_name"], calls_per_hour=rate).plan(messages, tools=tools)`` -- its messages, tools and
  markers as planned (the time and the request id are found by its detectors), with ``cache_conversation=False``
  (calls drawn independently can never read a conversation marker); with ``--turns runs`` a further variant,
  *with + conversation*, plans with ``cache_conversation=True`` (a 5-minute marker on the last message once the
  conversation has an assistant turn, which the run's next turn reads).

The provider cache simulation (every call in arrival order, one cache per model and variant):

* a request is a sequence of blocks (each tool, each system part, each message part or tool-call list) in the
  order tools, system, messages, counted with ``o200k_base`` (GPT-4o's tokenizer) as
  ``frugal_chains.accounting.tokens`` counts them (a tool: its JSON + 10 tokens), so the simulated provider and
  the planner agree on lengths; Claude's and Gemini's tokenizers are not available offline, so their counts are
  estimates, and Anthropic's tool-use system prompt (a few hundred tokens) is not counted;
* **Anthropic**: a cache entry is written only at a ``cache_control`` marker whose prefix reaches the model's
  minimum (``prompt_cache_min_tokens`` in LiteLLM's map, or the formatter's rules); a call reads the longest
  live entry equal byte for byte to its prefix up to one of its markers or a block boundary up to 20 blocks before
  one; tokens from the read up to the last marker are billed as a write (at the 5-minute or 1-hour write price of
  the marker), the rest at the input price. An entry lives for its TTL after its last write or read;
* **OpenAI**: automatic: a request of 1,024 tokens or more reads the longest live cached prefix in steps of 128
  tokens from 1,024 (token for token equal); every request caches its prefixes (no write charge); an entry lives
  5 minutes after its last use (OpenAI says 5-10 minutes, up to an hour off-peak);
* **Gemini** (implicit caching): as OpenAI, with the model's minimum and TTL from the formatter's rules
  (``rules_for``); Google does not publish the step, 128 tokens is assumed;
* every equal prefix within the TTL is a hit: an upper bound for OpenAI and Gemini, whose caches are best-effort.

Costs are input only (output tokens are the same in both variants), from LiteLLM's prices via
``frugal_chains.accounting.pricing`` and ``Price.cost``.

Usage::

    python benchmarks/prefix_savings.py [--data-dir DIR] [--calls 1000] [--calls-per-hour 60 ...] [--seed 0]
        [--turns agent|first|runs] [--no-tools] [--model NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from inspect import signature
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from machine_info import machine  # noqa: E402

from frugal_chains import Usage  # noqa: E402
from frugal_chains.accounting.pricing import litellm_price  # noqa: E402
from frugal_chains.accounting.tokens import get_encoding  # noqa: E402

TRAJECTORIES = Path("taubench_airline_traj") / "gpt-4o-airline.json"
TOOLS_FILE = HERE / "data" / "taubench_airline_tools.json"
DEFAULT_MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "gpt-4o", "gpt-4o-mini", "gemini-2.5-flash")
DEFAULT_RATES = (6.0, 60.0, 600.0)
TIME_LINE = "The current time is 2024-05-15 15:00:00 EST."
TEMPLATE_LINE = "The current time is {now} EST.\n\nRequest id: {request_id}. You are helping {user_name}."
END_LINE = "The current time is {now} EST. Request id: {request_id}. You are helping {user_name}."
START = datetime(2026, 12, 7, 8, 0, 0)
ANTHROPIC_LOOKBACK_BLOCKS = 20
OPENAI_MIN_TOKENS = 1024
OPENAI_STEP = 128
OPENAI_TTL_MINUTES = 5.0
TOOL_FRAME = (0,) * 10  # the 10 tokens frugal_chains.accounting.tokens adds per tool schema
TURN_GAP_MIN = 1.0  # --turns runs: seconds between two turns of a run, at least ...
TURN_GAP_EXTRA_MEAN = 4.0  # ... plus an exponential of this mean (the model's reply and the tool call)


# ---------------------------------------------------------------------------------------------------- workload


def data_dir(arg: str | None) -> Path:
    """``--data-dir``, else ``$FRUGAL_CHAINS_DATA``, else ``../shared/data`` next to the repository."""
    if arg:
        return Path(arg)
    env = os.environ.get("FRUGAL_CHAINS_DATA")
    return Path(env) if env else (ROOT / ".." / "shared" / "data").resolve()


def load_trajectories(folder: Path) -> list[dict[str, Any]]:
    path = folder / TRAJECTORIES
    if not path.exists():
        raise SystemExit(f"{path} not found (set --data-dir or FRUGAL_CHAINS_DATA)")
    with open(path, encoding="utf-8") as f:
        data: list[dict[str, Any]] = json.load(f)
    return data


def load_tools() -> list[dict[str, Any]]:
    with open(TOOLS_FILE, encoding="utf-8") as f:
        tools: list[dict[str, Any]] = json.load(f)["tools"]
    return tools


def system_template(trajectories: Sequence[Mapping[str, Any]], values_at: str = "top") -> str:
    """The policy with its fixed time replaced by the call's values (a ``str.format`` template): in place, near
    the top (``values_at="top"``, τ-bench's layout), or moved to the end of the policy (``"end"``)."""
    policies = {t["traj"][0]["content"] for t in trajectories}
    if len(policies) != 1:
        raise SystemExit(f"expected one airline policy in the trajectories, found {len(policies)}")
    policy = policies.pop()
    if TIME_LINE not in policy or "{" in policy or "}" in policy:
        raise SystemExit("the airline policy changed: its time line is not where this benchmark expects it")
    if values_at == "end":
        return policy.replace(TIME_LINE + "\n\n", "").rstrip("\n") + "\n\n" + END_LINE + "\n"
    return policy.replace(TIME_LINE, TEMPLATE_LINE)


def user_name(user_id: str) -> str:
    """``mia_li_3668`` -> ``Mia Li`` (τ-bench user ids are first_last_number)."""
    return " ".join(p.capitalize() for p in user_id.split("_") if not p.isdigit())


@dataclass(frozen=True)
class Call:
    """One call of the workload: the conversation after the system prompt and the template's values."""

    turns: tuple[dict[str, Any], ...]
    user_name: str
    request_id: str
    gap: float  # unit-rate exponential gap before this call (scaled by 3600 / calls_per_hour); runs: before the run
    source: str  # "trajectory index:message index"
    run: int | None = None  # --turns runs: the run this call belongs to
    turn: int = 0  # --turns runs: the call's place in its run (0: the first agent call)
    turn_delay: float = 0.0  # --turns runs: seconds after the run's previous turn


def build_runs(trajectories: Sequence[Mapping[str, Any]], n: int, seed: int) -> list[Call]:
    """Agent runs: whole trajectories (drawn without replacement) as their agent calls in order, one request id,
    user name and time per run; the last run is cut to make exactly ``n`` calls."""
    rng = random.Random(seed)
    order = list(range(len(trajectories)))
    rng.shuffle(order)
    calls: list[Call] = []
    for run, i in enumerate(order):
        if len(calls) >= n:
            break
        t = trajectories[i]
        request_id = f"req_{rng.getrandbits(64):016x}"
        gap = rng.expovariate(1.0)
        cuts = [k for k, m in enumerate(t["traj"]) if m["role"] == "assistant"]
        for turn, k in enumerate(cuts[: n - len(calls)]):
            calls.append(
                Call(
                    turns=tuple(dict(m) for m in t["traj"][1:k]),
                    user_name=user_name(t["info"]["task"]["user_id"]),
                    request_id=request_id,
                    gap=gap if turn == 0 else 0.0,
                    source=f"{i}:{k}",
                    run=run,
                    turn=turn,
                    turn_delay=0.0
                    if turn == 0
                    else TURN_GAP_MIN + rng.expovariate(1.0 / TURN_GAP_EXTRA_MEAN),
                )
            )
    if len(calls) < n:
        raise SystemExit(f"--calls {n}: the trajectories have only {len(calls)} agent calls")
    return calls


def build_calls(trajectories: Sequence[Mapping[str, Any]], n: int, seed: int, turns: str) -> list[Call]:
    if turns == "runs":
        return build_runs(trajectories, n, seed)
    rng = random.Random(seed)
    pool: list[tuple[int, int]] = []
    for i, t in enumerate(trajectories):
        traj = t["traj"]
        if turns == "first":
            pool.append((i, 2))
        else:
            pool.extend((i, k) for k, m in enumerate(traj) if m["role"] == "assistant")
    if turns == "agent":
        if n > len(pool):
            raise SystemExit(f"--calls {n}: the trajectories have only {len(pool)} agent calls")
        picks = rng.sample(pool, n)
    else:
        picks = []
        while len(picks) < n:
            block = list(pool)
            rng.shuffle(block)
            picks.extend(block)
        picks = picks[:n]
    calls = []
    for i, k in picks:
        t = trajectories[i]
        calls.append(
            Call(
                turns=tuple(dict(m) for m in t["traj"][1:k]),
                user_name=user_name(t["info"]["task"]["user_id"]),
                request_id=f"req_{rng.getrandbits(64):016x}",
                gap=rng.expovariate(1.0),
                source=f"{i}:{k}",
            )
        )
    return calls


def arrival_times(calls: Sequence[Call], calls_per_hour: float) -> list[float]:
    """Seconds since the start, a Poisson process of ``calls_per_hour``."""
    t, out = 0.0, []
    for c in calls:
        t += c.gap * 3600.0 / calls_per_hour
        out.append(t)
    return out


def schedule(calls: Sequence[Call], calls_per_hour: float) -> list[tuple[float, float]]:
    """(the time the call is sent, the time its values say) for each call, in the calls' order. Independent calls:
    both are the arrival time. Runs: the runs arrive as a Poisson process at ``calls_per_hour / mean calls per
    run`` runs an hour, each turn is sent ``turn_delay`` after the previous one, and every turn carries the run's
    start time."""
    if not calls or calls[0].run is None:
        return [(t, t) for t in arrival_times(calls, calls_per_hour)]
    runs_per_hour = calls_per_hour * len({c.run for c in calls}) / len(calls)
    out: list[tuple[float, float]] = []
    start = sent = 0.0
    for c in calls:
        if c.turn == 0:
            start += c.gap * 3600.0 / runs_per_hour
            sent = start
        else:
            sent += c.turn_delay
        out.append((sent, start))
    return out


def render(template: str, call: Call, at: float) -> tuple[list[dict[str, Any]], dict[str, str]]:
    values = {
        "now": (START + timedelta(seconds=at)).strftime("%Y-%m-%d %H:%M:%S"),
        "request_id": call.request_id,
        "user_name": call.user_name,
    }
    system = {"role": "system", "content": template.format(**values)}
    return [system, *(dict(m) for m in call.turns)], values


# ---------------------------------------------------------------------------------------------- cache simulation


@lru_cache(maxsize=200_000)
def token_ids(text: str) -> tuple[int, ...]:
    return tuple(get_encoding("o200k_base").encode(text, disallowed_special=()))


@dataclass(frozen=True)
class Block:
    key: bytes  # what the provider compares, byte for byte
    ids: tuple[int, ...]  # the tokens billed for it
    ttl: str | None  # a cache_control marker at its end: "5m" / "1h"


def _marker_ttl(part: Any) -> str | None:
    cc = part.get("cache_control") if isinstance(part, Mapping) else None
    if not isinstance(cc, Mapping):
        return None
    return str(cc.get("ttl") or "5m")


def _without_marker(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != "cache_control"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def request_blocks(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> list[Block]:
    """The request as the provider sees it for caching: tools, then the messages, block by block."""
    blocks: list[Block] = []
    for tool in tools or ():
        fn = tool.get("function", tool)
        ttl = _marker_ttl(tool) or (_marker_ttl(fn) if isinstance(fn, Mapping) else None)
        body = json.dumps(
            {**_without_marker(tool), "function": _without_marker(fn)}
            if fn is not tool
            else _without_marker(tool),
            sort_keys=True,
            ensure_ascii=False,
        )
        # counted as frugal_chains.accounting.tokens counts a tool (its JSON + 10), as the planner does
        blocks.append(Block(("tool:" + body).encode(), TOOL_FRAME + token_ids(body), ttl))
    for m in messages:
        head = f"\n{m['role']}" + (f" {m['tool_call_id']}" if m.get("tool_call_id") else "") + ":\n"
        first = True
        content = m.get("content")
        parts: list[tuple[str, str | None]] = []
        if isinstance(content, str):
            parts.append((content, None))
        elif isinstance(content, list):
            for p in content:
                if isinstance(p, Mapping) and p.get("type") == "text":
                    parts.append((str(p.get("text", "")), _marker_ttl(p)))
                else:
                    parts.append(
                        (_dumps(_without_marker(p) if isinstance(p, Mapping) else p), _marker_ttl(p))
                    )
        if m.get("tool_calls"):
            parts.append((_dumps(m["tool_calls"]), None))
        msg_ttl = _marker_ttl(m)
        for j, (text, ttl) in enumerate(parts):
            prefix = head if first else ""
            first = False
            if msg_ttl and j == len(parts) - 1:
                ttl = ttl or msg_ttl
            blocks.append(Block((prefix + text).encode(), token_ids(prefix + text), ttl))
        if first:  # no content at all: the role still counts
            blocks.append(Block(head.encode(), token_ids(head), msg_ttl))
    return blocks


@dataclass
class Tally:
    """What one variant of one model cost over the workload."""

    calls: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    calls_reading: int = 0
    calls_writing: int = 0
    cost_usd: float = 0.0
    later_turns: int | None = None  # --turns runs: calls after the first of their run ...
    later_turn_read_tokens: int = 0  # ... and the tokens they read from the cache

    def add(self, usage: Usage, cost: float, later_turn: bool | None = None) -> None:
        if later_turn is not None:
            self.later_turns = (self.later_turns or 0) + later_turn
            self.later_turn_read_tokens += usage.cache_read_tokens if later_turn else 0
        self.calls += 1
        self.input_tokens += usage.input_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cache_write_1h_tokens += usage.cache_write_1h_tokens
        self.calls_reading += usage.cache_read_tokens > 0
        self.calls_writing += (usage.cache_write_tokens + usage.cache_write_1h_tokens) > 0
        self.cost_usd += cost

    def to_dict(self) -> dict[str, Any]:
        uncached = (
            self.input_tokens - self.cache_read_tokens - self.cache_write_tokens - self.cache_write_1h_tokens
        )
        turns = (
            {"later_turns": self.later_turns, "later_turn_cache_read_tokens": self.later_turn_read_tokens}
            if self.later_turns is not None
            else {}
        )
        return {
            **turns,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "uncached_tokens": uncached,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cache_write_1h_tokens": self.cache_write_1h_tokens,
            "calls_reading_cache": self.calls_reading,
            "calls_writing_cache": self.calls_writing,
            "cached_share": round(self.cache_read_tokens / self.input_tokens, 4)
            if self.input_tokens
            else 0.0,
            "cost_usd": round(self.cost_usd, 6),
            "cost_per_call_usd": round(self.cost_usd / self.calls, 8) if self.calls else 0.0,
        }


_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


@dataclass
class AnthropicCache:
    """Explicit breakpoints: entries written at markers only, read at markers or up to 20 blocks before one."""

    min_tokens: int
    entries: dict[bytes, tuple[float, str]] = field(default_factory=dict)  # prefix hash -> (expires, ttl)

    def call(self, blocks: Sequence[Block], now: float) -> Usage:
        hashes, ends, h = [], [], hashlib.sha256()
        total = 0
        for b in blocks:
            h.update(len(b.key).to_bytes(8, "little") + b.key)
            hashes.append(h.copy().digest())
            total += len(b.ids)
            ends.append(total)
        marks = [i for i, b in enumerate(blocks) if b.ttl]
        read_at = -1  # index of the block the read reaches
        for m in marks:
            for i in range(m, max(-1, m - ANTHROPIC_LOOKBACK_BLOCKS), -1):
                entry = self.entries.get(hashes[i])
                if entry is not None and entry[0] >= now and i > read_at:
                    read_at = i
                    break
        read = ends[read_at] if read_at >= 0 else 0
        if read_at >= 0:
            expires_ttl = self.entries[hashes[read_at]][1]
            self.entries[hashes[read_at]] = (now + _TTL_SECONDS[expires_ttl], expires_ttl)
        written = {"5m": 0, "1h": 0}
        pos = read
        for m in marks:
            ttl = blocks[m].ttl or "5m"
            if ends[m] < self.min_tokens or ends[m] <= pos:
                continue  # below the minimum the marker is ignored; already read or written: nothing to add
            written[ttl] += ends[m] - pos
            pos = ends[m]
            self.entries[hashes[m]] = (now + _TTL_SECONDS[ttl], ttl)
        return Usage(
            input_tokens=total,
            cache_read_tokens=read,
            cache_write_tokens=written["5m"],
            cache_write_1h_tokens=written["1h"],
        )


@dataclass
class AutomaticCache:
    """Automatic prefix caching (OpenAI, Gemini implicit): the longest live prefix, in steps from a minimum."""

    min_tokens: int
    step: int
    ttl_seconds: float
    entries: dict[bytes, float] = field(default_factory=dict)  # prefix hash -> expires

    def call(self, blocks: Sequence[Block], now: float) -> Usage:
        ids = array("I")
        for b in blocks:
            ids.extend(b.ids)
        total = len(ids)
        cuts = list(range(self.min_tokens, total + 1, self.step)) if total >= self.min_tokens else []
        h, done, prefix_hashes = hashlib.sha256(), 0, []
        for cut in cuts:
            h.update(ids[done:cut].tobytes())
            done = cut
            prefix_hashes.append((cut, h.copy().digest()))
        read = 0
        for cut, key in prefix_hashes:  # a longer live prefix implies the shorter ones are live
            expires = self.entries.get(key)
            if expires is None or expires < now:
                break
            read = cut
        for _cut, key in prefix_hashes:
            self.entries[key] = now + self.ttl_seconds
        return Usage(input_tokens=total, cache_read_tokens=read)


# ------------------------------------------------------------------------------------------------------ the run


def _provider_cache(rules: Any) -> AnthropicCache | AutomaticCache:
    if rules.provider == "anthropic":
        return AnthropicCache(min_tokens=rules.min_cacheable_tokens)
    if rules.provider == "openai":
        return AutomaticCache(OPENAI_MIN_TOKENS, OPENAI_STEP, OPENAI_TTL_MINUTES * 60)
    ttl = float(getattr(rules, "implicit_ttl_minutes", 0.0) or OPENAI_TTL_MINUTES)
    return AutomaticCache(max(rules.min_cacheable_tokens, 1), OPENAI_STEP, ttl * 60)


def _with_system_marker(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The raw request with one ``cache_control`` on the system prompt as written (what many apps do)."""
    out = [dict(m) for m in messages]
    sys_msg = out[0]
    sys_msg["content"] = [
        {"type": "text", "text": sys_msg["content"], "cache_control": {"type": "ephemeral"}}
    ]
    return out


def _text_of(messages: Sequence[Mapping[str, Any]]) -> str:
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, list):
            out.extend(str(p.get("text", "")) for p in c if isinstance(p, Mapping))
    return "\n".join(out)


def _conversation_option(on: bool) -> dict[str, bool]:
    """``cache_conversation=on`` where the formatter has the option (older versions never mark the conversation)."""
    from frugal_chains.prefix import PrefixFormatter

    return {"cache_conversation": on} if "cache_conversation" in signature(PrefixFormatter).parameters else {}


def run_model(
    model: str,
    rate: float,
    calls: Sequence[Call],
    template: str,
    tools: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    from frugal_chains.prefix import PrefixFormatter, rules_for

    rules = rules_for(model)
    price = litellm_price(model)
    if price is None:
        raise SystemExit(f"{model}: no price in LiteLLM's map")
    runs = bool(calls) and calls[0].run is not None
    formatter = PrefixFormatter(
        model=model,
        templates=[template],
        dynamic_variables=["user_name"],
        calls_per_hour=rate,
        **_conversation_option(False),
    )
    variants: dict[str, tuple[Tally, AnthropicCache | AutomaticCache]] = {
        "without": (Tally(), _provider_cache(rules)),
        "with": (Tally(), _provider_cache(rules)),
    }
    conversation: Any = None
    if runs and _conversation_option(True):
        conversation = PrefixFormatter(
            model=model,
            templates=[template],
            dynamic_variables=["user_name"],
            calls_per_hour=rate,
            **_conversation_option(True),
        )
        variants["with_conversation"] = (Tally(), _provider_cache(rules))
    fixed: dict[str, Any] = {}
    if rules.provider == "anthropic":
        variants["raw_breakpoint"] = (Tally(), _provider_cache(rules))
        for ttl in rules.ttls:  # the formatter with a fixed TTL, to judge its "auto" choice
            fixed[ttl] = PrefixFormatter(
                model=model,
                templates=[template],
                dynamic_variables=["user_name"],
                ttl=ttl,
                **_conversation_option(False),
            )
            variants[f"with_ttl_{ttl}"] = (Tally(), _provider_cache(rules))
    prefixes: set[str] = set()
    ttls: set[str | None] = set()
    breakpoints: set[int] = set()
    warnings: dict[str, int] = {}
    cacheable = 0
    planned_tokens = 0
    kept = 0
    planned_cost = 0.0
    planned_uncached = 0.0
    planned_reuse = 0.0
    t0 = time.perf_counter()
    timed = sorted(zip(schedule(calls, rate), calls, strict=True), key=lambda x: x[0][0])  # in the order sent
    for (at, values_at), call in timed:
        messages, values = render(template, call, values_at)
        plan = formatter.plan(messages, tools=tools)
        report = plan.report
        prefixes.add(plan.prefix_hash)
        ttls.add(report.ttl)
        breakpoints.add(len(report.breakpoints))
        for w in report.warnings:
            key = w.split(":")[0][:120]
            warnings[key] = warnings.get(key, 0) + 1
        planned_reuse += report.reuse_rate
        cacheable += report.cacheable_tokens
        planned_tokens += report.total_tokens
        if report.cost_per_call_usd is not None and report.cost_per_call_uncached_usd is not None:
            planned_cost += report.cost_per_call_usd
            planned_uncached += report.cost_per_call_uncached_usd
        text = _text_of(plan.messages)
        kept += all(v in text for v in values.values())
        requests = {"without": (messages, tools), "with": (plan.messages, plan.tools)}
        if "raw_breakpoint" in variants:
            requests["raw_breakpoint"] = (_with_system_marker(messages), tools)
        for ttl, fixed_formatter in fixed.items():
            fixed_plan = fixed_formatter.plan(messages, tools=tools)
            requests[f"with_ttl_{ttl}"] = (fixed_plan.messages, fixed_plan.tools)
        if conversation is not None:
            conv_plan = conversation.plan(messages, tools=tools)
            requests["with_conversation"] = (conv_plan.messages, conv_plan.tools)
        for name, (tally, cache) in variants.items():
            req_messages, req_tools = requests[name]
            usage = cache.call(request_blocks(req_messages, req_tools), at)
            tally.add(usage, price.cost(usage), call.turn > 0 if runs else None)
    n = len(calls)
    without = variants["without"][0]
    with_ = variants["with"][0]
    return {
        "model": model,
        "provider": rules.provider,
        "calls_per_hour": rate,
        "min_cacheable_tokens": rules.min_cacheable_tokens
        if rules.provider != "openai"
        else OPENAI_MIN_TOKENS,
        "price_per_million": {
            "input": price.input,
            "cache_read": price.cache_read_rate,
            "cache_write_5m": price.cache_write_rate if rules.provider == "anthropic" else None,
            "cache_write_1h": price.cache_write_1h_rate if rules.provider == "anthropic" else None,
        },
        "variants": {name: tally.to_dict() for name, (tally, _c) in variants.items()},
        "saving_usd": round(without.cost_usd - with_.cost_usd, 6),
        "saving_pct": round(100 * (1 - with_.cost_usd / without.cost_usd), 2) if without.cost_usd else 0.0,
        **(
            {
                "saving_conversation_pct": round(
                    100 * (1 - variants["with_conversation"][0].cost_usd / without.cost_usd), 2
                )
                if without.cost_usd
                else 0.0
            }
            if "with_conversation" in variants
            else {}
        ),
        "formatter": {
            "distinct_stable_prefixes": len(prefixes),
            "ttl": sorted("-" if t is None else str(t) for t in ttls),
            "breakpoints": sorted(breakpoints),
            "cacheable_share": round(cacheable / planned_tokens, 4) if planned_tokens else 0.0,
            "calls_keeping_all_values": kept,
            "planned_reuse_rate": round(planned_reuse / n, 4) if n else None,
            "planned_cost_per_call_usd": round(planned_cost / n, 8) if n else None,
            "planned_uncached_cost_per_call_usd": round(planned_uncached / n, 8) if n else None,
            "warnings": warnings,
            "seconds": round(time.perf_counter() - t0, 2),
        },
    }


def workload_stats(
    calls: Sequence[Call], template: str, tools: list[dict[str, Any]] | None
) -> dict[str, Any]:
    tool_tokens = sum(len(b.ids) for b in request_blocks([], tools))
    sample = render(template, calls[0], 0.0)[0][0]
    policy_tokens = len(token_ids(sample["content"]))
    conv = [sum(len(b.ids) for b in request_blocks(list(c.turns), None)) for c in calls]
    conv.sort()
    return {
        "tool_tokens": tool_tokens,
        "system_prompt_tokens": policy_tokens,
        "conversation_tokens_median": conv[len(conv) // 2],
        "conversation_tokens_mean": round(sum(conv) / len(conv), 1),
        "conversation_tokens_max": conv[-1],
        "distinct_users": len({c.user_name for c in calls}),
        "distinct_request_ids": len({c.request_id for c in calls}),
        **(
            {
                "runs": len({c.run for c in calls}),
                "calls_per_run_mean": round(len(calls) / len({c.run for c in calls}), 2),
                "turn_gap_seconds": {"min": TURN_GAP_MIN, "plus_exponential_mean": TURN_GAP_EXTRA_MEAN},
            }
            if calls and calls[0].run is not None
            else {}
        ),
    }


def assumptions(args: argparse.Namespace) -> list[str]:
    runs = args.turns == "runs"
    head = (
        [
            f"{args.calls} calls in agent runs: whole trajectories (seed {args.seed}), each its agent calls in order, "
            "the last run cut to make the count; runs arrive as a Poisson process whose rate gives the stated calls "
            "per hour (runs per hour = calls per hour / mean calls per run); the same runs and values at every rate",
            f"the turns of a run are {TURN_GAP_MIN:g} s + an exponential of mean {TURN_GAP_EXTRA_MEAN:g} s apart (the "
            "model's reply and the tool call), the same at every rate",
            "one request id, one time (the run's start, to the second) and the trajectory's user for every call of a "
            "run; a new request id for each run",
        ]
        if runs
        else [
            f"{args.calls} calls, arrivals a Poisson process at each calls-per-hour rate (seed {args.seed}); the same "
            "calls and template values at every rate",
            "every call has a new request id and its own time (to the second); the user's name is the trajectory's "
            "user",
        ]
    )
    return [
        *head,
        "the time, request id and name sit near the top of the system prompt, where tau-bench puts the time"
        if args.values_at == "top"
        else "the time, request id and name sit at the end of the system prompt",
        "tools: the 14 tau-bench airline tools on every call" if args.tools else "tools: none",
        "token counts: o200k_base for every model, each tool as its JSON + 10 tokens, each message + ~3 tokens (as "
        "frugal_chains.accounting.tokens counts them); Claude's and Gemini's tokenizers are not available offline, and "
        "Anthropic adds a tool-use system prompt of a few hundred tokens that is not counted here",
        "Anthropic: caches only at cache_control markers whose prefix reaches the model's minimum; reads the longest "
        "live byte-equal prefix at a marker or up to 20 blocks before one; writes billed at the marker's 5m/1h price; "
        "an entry lives its TTL after its last write or read",
        f"OpenAI: automatic, requests >= {OPENAI_MIN_TOKENS} tokens, longest live equal prefix in {OPENAI_STEP}-token "
        f"steps, no write charge, entry lives {OPENAI_TTL_MINUTES:g} min after its last use",
        "Gemini: implicit caching modelled as OpenAI's, with the model's minimum and TTL from the formatter's rules",
        "every equal prefix within its TTL hits (an upper bound for OpenAI and Gemini, whose caches are best-effort)",
        "tools are compared before the system prompt (Anthropic's documented order; OpenAI does not publish its own), "
        "so the raw request keeps the tools' prefix where the provider caches automatically",
        "a run's calls read what its earlier calls cached (the history up to a marker for Anthropic, any equal "
        "prefix for OpenAI and Gemini); the formatter rows: 'with' plans with cache_conversation=False, 'with + "
        "conversation' with cache_conversation=True"
        if runs
        else "calls of one conversation are independent draws: reuse of a conversation's history between its turns "
        "is not modelled (each call has its own time and request id, so neither layout could reuse it); the "
        "formatter plans with cache_conversation=False (a conversation marker could never be read here)",
        "input cost only, from LiteLLM's price map (output is the same in both variants)",
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = data_dir(args.data_dir)
    trajectories = load_trajectories(folder)
    template = system_template(trajectories, args.values_at)
    tools = load_tools() if args.tools else None
    if tools is None and args.turns != "first":
        raise SystemExit(
            "--no-tools needs --turns first: replayed agent calls carry tool calls and tool results"
        )
    calls = build_calls(trajectories, args.calls, args.seed, args.turns)
    rows = [
        run_model(model, rate, calls, template, tools)
        for model in args.model or DEFAULT_MODELS
        for rate in args.calls_per_hour or DEFAULT_RATES
    ]
    return {
        "workload": {
            "source": str(TRAJECTORIES),
            "calls": len(calls),
            "turns": args.turns,
            "tools": bool(tools),
            "seed": args.seed,
            "values_at": args.values_at,
            "system_template_line": TEMPLATE_LINE if args.values_at == "top" else END_LINE,
            **workload_stats(calls, template, tools),
        },
        "assumptions": assumptions(args),
        "machine": machine(litellm=_version("litellm"), frugal_chains=_version("frugal-chains")),
        "rows": rows,
    }


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _usd(x: float) -> str:
    return f"{x:8.3f}"


TURNS_TITLE = {
    "agent": "agent calls replayed",
    "first": "first user messages",
    "runs": "agent runs replayed, turns in order",
}


def format_table(r: dict[str, Any]) -> str:
    w = r["workload"]
    runs = w["turns"] == "runs"
    lines = [
        f"Prefix caching: input cost of {w['calls']} calls of the tau-bench airline support agent "
        f"({TURNS_TITLE[w['turns']]}; "
        f"{'14 tools' if w['tools'] else 'no tools'})",
        f"system prompt ~{w['system_prompt_tokens']} tokens, tools {w['tool_tokens']} tokens, conversation "
        f"median {w['conversation_tokens_median']} / mean {w['conversation_tokens_mean']} tokens; "
        f"{w['distinct_users']} users, {w['distinct_request_ids']} request ids",
        *(
            [
                f"{w['runs']} runs, {w['calls_per_run_mean']} calls a run on average, turns "
                f"{w['turn_gap_seconds']['min']:g} s + exp(mean {w['turn_gap_seconds']['plus_exponential_mean']:g} s) "
                "apart"
            ]
            if "runs" in w
            else []
        ),
        f"machine: {r['machine']}",
        "",
        f"{'model':18s} {'calls/h':>7s} | {'without $':>9s} {'hit%':>5s} | {'raw+bp $':>9s} {'hit%':>5s} | "
        f"{'with $':>9s} {'hit%':>5s} {'cached':>6s} {'TTL':>6s} {'bp':>3s} | {'saving':>7s} | "
        f"{'5m $':>8s} {'1h $':>8s} | prefixes"
        + (f" | {'+conv $':>9s} {'hit%':>5s} {'cached':>6s} {'saving':>7s} {'later rd':>9s}" if runs else ""),
    ]
    for row in r["rows"]:
        v = row["variants"]
        wo, wi = v["without"], v["with"]
        bp = v.get("raw_breakpoint")
        pct = lambda t: 100.0 * t["calls_reading_cache"] / t["calls"]  # noqa: E731
        bp_cols = f"{bp['cost_usd']:9.3f} {pct(bp):5.1f}" if bp else f"{'-':>9s} {'-':>5s}"
        f = row["formatter"]
        fixed = " ".join(
            f"{v[k]['cost_usd']:8.3f}" if k in v else f"{'-':>8s}" for k in ("with_ttl_5m", "with_ttl_1h")
        )
        lines.append(
            f"{row['model']:18s} {row['calls_per_hour']:7g} | {wo['cost_usd']:9.3f} {pct(wo):5.1f} | {bp_cols} | "
            f"{wi['cost_usd']:9.3f} {pct(wi):5.1f} {100 * wi['cached_share']:5.1f}% {'/'.join(f['ttl']):>6s} "
            f"{'/'.join(map(str, f['breakpoints'])):>3s} | {row['saving_pct']:6.1f}% | {fixed} | "
            f"{f['distinct_stable_prefixes']}" + (_conversation_cols(row) if runs else "")
        )
    lines += [
        "",
        "without: the request as written (the provider's own caching only); raw+bp: one cache_control on the system "
        "prompt as written (Anthropic); with: PrefixFormatter's plan (ttl='auto'). hit% = calls reading the cache; "
        "cached = share of input tokens read from the cache; bp = breakpoints placed; 5m $ / 1h $ = the formatter "
        "with ttl='5m' / '1h' (Anthropic); prefixes = distinct stable prefixes planned."
        + (
            " Runs: 'with' plans with cache_conversation=False; +conv = with cache_conversation=True; later rd = "
            "tokens read from the cache by the calls after the first of their run, without / raw+bp / with / +conv "
            "(thousands)."
            if runs
            else ""
        ),
    ]
    warned = {(row["model"], k): n for row in r["rows"] for k, n in row["formatter"]["warnings"].items()}
    if warned:
        lines.append("formatter warnings (calls):")
        for (model, k), n in sorted(warned.items()):
            lines.append(f"  {model}: {k} ({n})")
    lines.append("assumptions:")
    lines += [f"  - {a}" for a in r["assumptions"]]
    return "\n".join(lines)


def _conversation_cols(row: dict[str, Any]) -> str:
    v = row["variants"]
    c = v.get("with_conversation")
    if c is None:
        return " | (no cache_conversation option)"
    later = "/".join(
        f"{v[k]['later_turn_cache_read_tokens'] / 1000:.0f}" if k in v else "-"
        for k in ("without", "raw_breakpoint", "with", "with_conversation")
    )
    return (
        f" | {c['cost_usd']:9.3f} {100.0 * c['calls_reading_cache'] / c['calls']:5.1f} "
        f"{100 * c['cached_share']:5.1f}% {row['saving_conversation_pct']:6.1f}% {later}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument(
        "--data-dir",
        "--data",
        dest="data_dir",
        help="data folder (default: $FRUGAL_CHAINS_DATA or ../shared/data)",
    )
    p.add_argument("--calls", type=int, default=1000, help="calls in the workload (default 1000)")
    p.add_argument(
        "--calls-per-hour",
        type=float,
        action="append",
        help="arrival rate, repeatable (default 6, 60 and 600)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--turns",
        choices=("agent", "first", "runs"),
        default="agent",
        help="replayed agent calls drawn independently (default), first messages, or whole agent runs in order",
    )
    p.add_argument(
        "--no-tools", dest="tools", action="store_false", help="send no tools (only with --turns first)"
    )
    p.add_argument(
        "--model", action="append", help=f"models, repeatable (default {', '.join(DEFAULT_MODELS)})"
    )
    p.add_argument(
        "--values-at",
        choices=("top", "end"),
        default="top",
        help="where the system prompt carries the time, request id and name (default top, as tau-bench)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    if args.calls < 1:
        p.error("--calls must be at least 1")
    if any(r <= 0 for r in args.calls_per_hour or ()):
        p.error("--calls-per-hour must be positive")
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
