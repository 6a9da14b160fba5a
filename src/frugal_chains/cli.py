"""The ``frugal-chains`` command.

Subcommands: ``demo`` (budgets, the semantic cache and the cascading router with fake models; no keys, no servers),
``report --ledger PATH|redis://...`` (spend, calls, cache hits, refusals and escalations from a ledger),
``prices MODEL...`` (what a model costs per million tokens, from LiteLLM's map offline),
``cache tune --pairs FILE.jsonl`` (the precision / hit-rate curve of the semantic cache on your labelled pairs;
a progress bar on stderr when it is a terminal, ``--progress``/``--no-progress`` to choose),
``prefix explain MESSAGES.json --model MODEL`` (how the prefix-caching formatter rewrites a request for a
provider's prompt cache, and what it saves per call),
``vllm command MODEL`` (the recommended ``vllm serve`` command for a cost-efficient server) and ``vllm health URL``
(whether a ``vllm serve`` answers, and what it serves; exit status 1 when it is down).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from frugal_chains import __version__

__all__ = ["main"]


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from frugal_chains._demo import run_demo
    except ImportError as e:  # a missing extra: say which, without a traceback
        print(f"frugal-chains demo: {e}", file=sys.stderr)
        return 2
    if args.ledger and os.path.exists(args.ledger):
        # the demo's budgets would count the spend already in that ledger, and its totals would mix the runs
        print(
            f"frugal-chains demo: --ledger: {args.ledger!r} already exists; the demo writes a new ledger. "
            "Remove the file or pass another path.",
            file=sys.stderr,
        )
        return 2
    result = run_demo(ledger_path=args.ledger, echo=(lambda s: None) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _open_ledger(where: str, prefix: str) -> Any:
    """The ledger ``--ledger`` names: a Redis URL, else an existing SQLite ledger file (opened only if it holds a
    ledger, so a wrong path never gets tables added to it)."""
    from frugal_chains.errors import ConfigurationError

    if where.startswith(_REDIS_SCHEMES):
        from frugal_chains.accounting.redis import RedisLedger

        try:
            return RedisLedger(where, prefix=prefix)
        except ConfigurationError as e:
            if e.field != "url":
                raise
            reason = str(e.__cause__ or e).rstrip(".")
            raise ConfigurationError(
                f"cannot reach Redis at {where.split('@')[-1]!r}: {reason}. Check that the server is up and the "
                "URL is right (redis://[:password@]host:port/db).",
                field="--ledger",
            ) from e
    if not os.path.isfile(where):
        raise ConfigurationError(f"no ledger file at {where!r}.", field="--ledger")
    try:
        with sqlite3.connect(f"file:{os.path.abspath(where)}?mode=ro", uri=True) as conn:
            found = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'fc_records'"
            ).fetchone()
    except sqlite3.Error as e:
        raise ConfigurationError(f"{where!r} is not a SQLite ledger: {e}.", field="--ledger") from e
    if found is None:
        raise ConfigurationError(
            f"{where!r} is not a frugal-chains ledger (it has no fc_records table).", field="--ledger"
        )
    from frugal_chains.accounting.sqlite import SQLiteLedger

    return SQLiteLedger(where)


def _group_list(text: str) -> list[str]:
    """``--by feature,user`` (the flag may also repeat)."""
    from frugal_chains.accounting.report import REPORT_GROUPS

    fields = [f.strip() for f in text.split(",") if f.strip()]
    for f in fields:
        if f not in REPORT_GROUPS:
            raise argparse.ArgumentTypeError(f"{f!r} is not one of {', '.join(REPORT_GROUPS)}")
    if not fields:
        raise argparse.ArgumentTypeError(f"name one or more of {', '.join(REPORT_GROUPS)}")
    return fields


def _cmd_report(args: argparse.Namespace) -> int:
    from frugal_chains._tables import render_report
    from frugal_chains.accounting.report import parse_since, spend_report
    from frugal_chains.errors import ConfigurationError, LedgerUnavailableError

    by = [f for group in (args.by or [["feature"]]) for f in group]
    bounds: dict[str, float | None] = {}
    for flag, value in (("--since", args.since), ("--until", args.until)):
        try:
            bounds[flag] = None if value is None else parse_since(value)
        except ConfigurationError as e:
            print(f"frugal-chains report: {flag}: {e}", file=sys.stderr)
            return 2
    since, until = bounds["--since"], bounds["--until"]
    try:
        ledger = _open_ledger(args.ledger, args.prefix)
    except (ConfigurationError, LedgerUnavailableError, ImportError) as e:
        print(f"frugal-chains report: --ledger: {e}", file=sys.stderr)
        return 2
    try:
        report = spend_report(ledger, by=by, since=since, until=until)
    except ConfigurationError as e:
        flag = "--by" if e.field == "by" else "--since" if e.field == "since" else "--ledger"
        print(f"frugal-chains report: {flag}: {e}", file=sys.stderr)
        return 2
    except LedgerUnavailableError as e:
        print(f"frugal-chains report: --ledger: {e}", file=sys.stderr)
        return 2
    finally:
        ledger.close()
    print(
        render_report(
            report, args.format, title=f"Spend by {', '.join(by)}" if args.format == "table" else None
        )
    )
    return 0


def _cmd_prices(args: argparse.Namespace) -> int:
    from frugal_chains.accounting import litellm_price
    from frugal_chains.accounting.pricing import similar_models

    status = 0
    for model in args.models:
        p = litellm_price(model)
        if p is None:
            close = similar_models(model)
            hint = f" did you mean {' or '.join(close)}?" if close else ""
            print(
                f"{model}: no price in LiteLLM's map;{hint} (pass prices={{...}} to price it)",
                file=sys.stderr,
            )
            status = 1
            continue
        print(
            f"{model}: input ${p.input:g}/M, output ${p.output:g}/M, cache read ${p.cache_read_rate:g}/M, "
            f"cache write ${p.cache_write_rate:g}/M (1h ${p.cache_write_1h_rate:g}/M), "
            f"max output {p.max_output_tokens or 'unknown'} tokens"
        )
    return status


def _cmd_cache_tune(args: argparse.Namespace) -> int:
    from frugal_chains.cache.guard import HitGuard
    from frugal_chains.cache.tuning import load_pairs, tune_threshold
    from frugal_chains.errors import ConfigurationError

    try:
        pairs = load_pairs(args.pairs)
        result = tune_threshold(
            pairs,
            guard=None if args.no_guard else HitGuard(),
            target_precision=args.target_precision,
            progress=args.progress,
        )
    except (ConfigurationError, OSError) as e:
        print(f"frugal-chains cache tune: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(result.table(step=args.step))
    verdict = "reaches" if result.reached else "does NOT reach"
    print(
        f"\nthreshold {result.threshold:.2f} {verdict} precision {result.target_precision:.2f}: "
        f"precision {result.precision:.3f}, hit rate {result.hit_rate:.3f}, false hits {result.false_hit_rate:.3f} "
        f"({result.n_pairs} pairs, {result.n_positive} positive; guard {'off' if args.no_guard else 'on'})"
    )
    print(
        f"use it: AnswerCache(threshold={result.threshold:.2f}) or SemanticCache(threshold={result.threshold:.2f})"
    )
    return 0


# -- prefix explain -------------------------------------------------------------------------------------------
def _one_line(error: BaseException) -> str:
    """An error's message on one line (a terminal user reads one line, never a traceback)."""
    return " ".join(str(error).split())


def _read_json(path: str, flag: str) -> Any:
    from frugal_chains.errors import ConfigurationError

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigurationError(f"cannot read {path!r}: {e.strerror or e}.", field=flag) from e
    except UnicodeDecodeError as e:
        raise ConfigurationError(f"{path!r} is not UTF-8 text: {e.reason}.", field=flag) from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigurationError(
            f"{path!r} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.", field=flag
        ) from e


def _dict_list(value: Any, what: str, path: str, flag: str) -> list[dict[str, Any]]:
    from frugal_chains.errors import ConfigurationError

    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ConfigurationError(f"{path!r}: {what} must be a JSON list of objects.", field=flag)
    return [dict(v) for v in value]


def _load_request(
    path: str, tools_path: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (and tools) of MESSAGES.json: an OpenAI-format message list, or an object with ``messages``
    and optional ``tools``; ``--tools FILE`` (a list, or an object with ``tools``) replaces the file's tools."""
    from frugal_chains.errors import ConfigurationError

    data = _read_json(path, "messages")
    tools: Any = None
    if isinstance(data, Mapping):
        if "messages" not in data:
            raise ConfigurationError(
                f'{path!r}: the object has no "messages" list; give a list of messages, or '
                '{"messages": [...], "tools": [...]}.',
                field="messages",
            )
        messages, tools = data["messages"], data.get("tools")
    else:
        messages = data
    checked = _dict_list(messages, "the messages", path, "messages")
    if not checked:
        raise ConfigurationError(f"{path!r}: the message list is empty.", field="messages")
    for i, m in enumerate(checked):
        if not isinstance(m.get("role"), str):
            raise ConfigurationError(
                f'{path!r}: message {i} has no "role" (OpenAI format: '
                '{"role": "system"|"user"|"assistant"|"tool", "content": ...}).',
                field="messages",
            )
    if tools_path is not None:
        tools = _read_json(tools_path, "--tools")
        if isinstance(tools, Mapping) and "tools" in tools:
            tools = tools["tools"]
        path = tools_path
    return checked, None if tools is None else _dict_list(tools, "the tools", path, "--tools")


def _dynamic_value(text: str) -> tuple[str, str]:
    """``--dynamic name=value``."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE (e.g. user_name=Alice)")
    return name.strip(), value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _short(text: str, head: int = 64, tail: int = 24) -> str:
    """A text on one line, in quotes, its middle left out when it is long (``\\n`` for line breaks)."""
    one = text.replace("\n", "\\n")
    if len(one) > head + tail + 5:
        one = f"{one[:head]} ... {one[-tail:]}"
    return f'"{one}"'


def _marker(block: Mapping[str, Any]) -> str:
    cc = block.get("cache_control")
    if not isinstance(cc, Mapping):
        return ""
    return f"  <- cache_control {cc.get('ttl', '5m')}"


def _plan_lines(plan: Any, model: str) -> list[str]:
    """The rewritten request, one line per tool, message and content part (texts shortened, tokens counted,
    ``cache_control`` markers shown where they sit)."""
    from frugal_chains.accounting.tokens import count_text_tokens

    report = plan.report
    out = [
        f"Rewritten request for {report.model} ({report.provider}): "
        + ("changed" if plan.changed else "unchanged")
    ]
    if plan.tools:
        out.append("tools")
        for i, tool in enumerate(plan.tools):
            fn = tool.get("function") if isinstance(tool.get("function"), Mapping) else tool
            out.append(f"  [{i}] {fn.get('name', '?')}{_marker(tool)}")
    out.append("messages")
    for i, message in enumerate(plan.messages):
        role = str(message.get("role", "?"))
        if message.get("name"):
            role += f" ({message['name']})"
        content = message.get("content")
        if isinstance(content, str) or content is None:
            text = content or ""
            out.append(f"  [{i}] {role:<10} {count_text_tokens(text, model):>7,} tok  {_short(text)}")
            continue
        out.append(f"  [{i}] {role}")
        for j, part in enumerate(content):
            if not isinstance(part, Mapping):
                continue
            part_text = part.get("text")
            if isinstance(part_text, str):
                tokens = f"{count_text_tokens(part_text, model):>7,} tok"
                out.append(f"      part {j}  {tokens}  {_short(part_text)}{_marker(part)}")
            else:
                out.append(f"      part {j}  ({part.get('type', '?')}){_marker(part)}")
        if message.get("tool_calls"):
            out.append(f"      + {len(message['tool_calls'])} tool call(s)")
    if plan.params:
        out.append("params: " + ", ".join(f"{k}={v}" for k, v in plan.params.items()))
    out.append(f"prefix sha256: {plan.prefix_hash}")
    return out


def _cmd_prefix_explain(args: argparse.Namespace) -> int:
    from frugal_chains.accounting.pricing import litellm_price, similar_models
    from frugal_chains.errors import ConfigurationError

    def fail(flag: str, message: str) -> int:
        print(f"frugal-chains prefix explain: {flag}: {message}", file=sys.stderr)
        return 2

    try:
        messages, tools = _load_request(args.messages, args.tools)
    except ConfigurationError as e:
        return fail("--tools" if e.field == "--tools" else "MESSAGES", _one_line(e))
    if args.provider is None and litellm_price(args.model) is None:
        close = similar_models(args.model)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return fail(
            "--model",
            f"{args.model!r} is not in LiteLLM's price map.{hint} For a model it does not list, pass "
            "--provider anthropic|openai|gemini|vllm (its costs are then unknown).",
        )
    try:
        from frugal_chains.prefix import PrefixFormatter

        formatter = PrefixFormatter(
            model=args.model, provider=args.provider, ttl=args.ttl, calls_per_hour=args.calls_per_hour
        )
        plan = formatter.plan(messages, tools=tools, dynamic=dict(args.dynamic or ()) or None)
    except ConfigurationError as e:
        flag = {
            "provider": "--provider",
            "rules": "--provider",
            "ttl": "--ttl",
            "calls_per_hour": "--calls-per-hour",
        }
        return fail(flag.get(e.field or "", "--model" if e.field == "model" else "MESSAGES"), _one_line(e))
    if args.json:
        print(
            json.dumps(
                {
                    "model": args.model,
                    "provider": plan.report.provider,
                    "changed": plan.changed,
                    "prefix_hash": plan.prefix_hash,
                    "messages": plan.messages,
                    "tools": plan.tools,
                    "params": plan.params,
                    "report": plan.report.to_dict(),
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    print("\n".join(_plan_lines(plan, args.model)))
    print()
    print(plan.report.format())
    return 0


def _cmd_vllm_command(args: argparse.Namespace) -> int:
    import shlex

    from frugal_chains.errors import ConfigurationError
    from frugal_chains.vllm.serve import serve_command

    try:
        command = serve_command(
            args.model,
            host=args.host,
            port=args.port,
            served_model_name=args.served_model_name,
            dtype=args.dtype,
            max_model_len=args.max_model_len,
            quantization=args.quantization,
            tool_call_parser=args.tool_call_parser,
            enable_prefix_caching=not args.no_prefix_caching,
            api_key=args.api_key,
            extra_args=[a for flags in args.extra for a in shlex.split(flags)],
        )
    except ConfigurationError as e:
        flag = "MODEL" if e.field == "model" else "--" + (e.field or "").replace("_", "-")
        print(f"frugal-chains vllm command: {flag}: {_one_line(e)}", file=sys.stderr)
        return 2
    print(shlex.join(command))
    return 0


def _cmd_vllm_health(args: argparse.Namespace) -> int:
    from frugal_chains.errors import ConfigurationError
    from frugal_chains.vllm.serve import check_health

    try:
        health = check_health(args.url, timeout=args.timeout, api_key=args.api_key)
    except ConfigurationError as e:
        print(f"frugal-chains vllm health: URL: {_one_line(e)}", file=sys.stderr)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "ok": health.ok,
                    "base_url": health.base_url,
                    "models": list(health.models),
                    "latency_s": health.latency_s,
                    "error": health.error,
                },
                indent=2,
            )
        )
    else:
        print(health)
    return 0 if health.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``frugal-chains`` command."""
    parser = argparse.ArgumentParser(
        prog="frugal-chains", description="Cut LLM bills in LangChain and LlamaIndex."
    )
    parser.add_argument("--version", action="version", version=f"frugal-chains {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="budgets, the semantic cache, the cascading router and prompt prefix caching (fake models, no keys)",
        description=(
            "Runs five scenes with fake models priced from LiteLLM's price map (offline; no API keys, no servers): "
            "1) per-user and per-feature USD budgets refuse a chatty user's FAQ questions before any money is "
            "spent; 2) a per-run budget stops a research agent whose tool loop never ends; 3) SemanticCache "
            "(offline MiniLM embedder, hit guard on) answers repeated and paraphrased support questions and sends "
            "look-alikes to the model; 4) CascadeChatModel keeps easy help-desk questions on gpt-4o-mini and "
            "escalates the rest to gpt-4o; 5) PrefixFormatter moves the date, request id and customer name out of a "
            "long support system prompt so claude-sonnet-4-5 can cache it (the cacheable share, the input cost per "
            "call with and without caching). Then it prints spend tables (by feature, model and "
            "cascade tier: calls, tokens, cost, cache hits, saved USD, refusals, escalations). With --ledger FILE "
            "the ledger is kept: `frugal-chains report --ledger FILE` prints the same figures."
        ),
    )
    demo.add_argument("--ledger", metavar="PATH", help="write the spend ledger to this new SQLite file")
    demo.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")
    demo.set_defaults(func=_cmd_demo)

    from frugal_chains.accounting.report import REPORT_GROUPS

    report = sub.add_parser(
        "report",
        help="spend, calls, cache hits, refusals and escalations from a ledger",
        description=(
            "Reads the call records of a SQLite or Redis ledger and prints, per group: provider calls, tokens, "
            "USD spent, cache hits and the USD they saved, calls refused by a budget, and cascade escalations, "
            "with a total. USD sums hold the records whose price is known; an 'unpriced' column counts the others. "
            "When providers reported prompt-cache reads or writes: cache read and write tokens and the prefix hit "
            "rate (cache-read tokens / input tokens)."
        ),
    )
    report.add_argument(
        "--ledger",
        required=True,
        metavar="PATH|URL",
        help="a SQLite ledger file, or a Redis URL (redis://host:6379/0, rediss://..., unix:///path.sock)",
    )
    report.add_argument(
        "--by",
        action="append",
        type=_group_list,
        metavar="FIELD[,FIELD]",
        help=f"group by one or more of {', '.join(REPORT_GROUPS)} (comma-separated or repeated; default feature)",
    )
    report.add_argument(
        "--since",
        metavar="WHEN",
        help="only records from then on: an ISO date or date-time in UTC (2026-12-01, 2026-12-01T09:30) or a span "
        "back from now (30m, 24h, 7d, 2w)",
    )
    report.add_argument(
        "--until",
        metavar="WHEN",
        help="only records before then: the same forms as --since (2026-12-01, 24h: up to a day ago)",
    )
    report.add_argument("--format", choices=["table", "csv", "json"], default="table", help="default table")
    report.add_argument("--prefix", default="frugal:", help="the RedisLedger key prefix (default frugal:)")
    report.set_defaults(func=_cmd_report)

    prices = sub.add_parser("prices", help="per-million-token prices of models (LiteLLM's map, offline)")
    prices.add_argument("models", nargs="+", metavar="MODEL")
    prices.set_defaults(func=_cmd_prices)

    cache = sub.add_parser("cache", help="semantic cache tools")
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    tune = cache_sub.add_parser(
        "tune",
        help="precision / hit-rate curve on labelled pairs, and the threshold for a target precision",
        description=(
            "Embeds each labelled pair of questions from your logs (label 1: one answer serves both, 0: it does "
            "not) with the cache's default embedder and hit guard, prints precision, hit rate and false-hit rate "
            "per similarity threshold, and the threshold with the most hits that reaches --target-precision. Use "
            "it as SemanticCache(threshold=...). Guide: 'Tuning guide' in docs/cache.md."
        ),
    )
    tune.add_argument(
        "--pairs",
        required=True,
        metavar="FILE.jsonl",
        help='rows {"text_a": ..., "text_b": ..., "label": 0|1}',
    )
    tune.add_argument("--target-precision", type=float, default=0.9, metavar="P", help="default 0.9")
    tune.add_argument("--no-guard", action="store_true", help="threshold only (no hit guard)")
    tune.add_argument(
        "--step", type=int, default=5, help="print every STEP-th point of the curve (default 5)"
    )
    tune.add_argument("--json", action="store_true", help="print the result as JSON")
    tune.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    tune.set_defaults(func=_cmd_cache_tune)

    prefix = sub.add_parser("prefix", help="prompt prefix caching tools")
    prefix_sub = prefix.add_subparsers(dest="prefix_command", required=True)
    explain = prefix_sub.add_parser(
        "explain",
        help="how the prefix-caching formatter rewrites a request, and the cost per call with and without caching",
        description=(
            "Plans a request for the provider's prompt cache, offline: tools, system prompt, examples and documents "
            "first; dates, times, ids, emails and the values you name with --dynamic moved out of the stable prefix "
            "into a short request-context block; Anthropic cache_control breakpoints (at most 4, none below the "
            "model's minimum), the OpenAI prompt_cache_key. Prints the rewritten request (each message and content "
            "part, shortened, with its tokens and markers) and the report: input and cacheable tokens, breakpoints, "
            "cache lifetime, expected input cost per call with and without caching, moved values, warnings. "
            "Guide: docs/prefix.md."
        ),
    )
    explain.add_argument(
        "messages",
        metavar="MESSAGES.json",
        help='an OpenAI-format message list, or {"messages": [...], "tools": [...]}',
    )
    explain.add_argument(
        "--model", required=True, help="the model the request is for, e.g. claude-sonnet-4-5"
    )
    explain.add_argument(
        "--provider",
        help="anthropic, openai, gemini or vllm (default: from the model name and LiteLLM's map; needed for a "
        "model LiteLLM does not list)",
    )
    explain.add_argument(
        "--tools",
        metavar="TOOLS.json",
        help="OpenAI-format tools (a list); replaces the tools in MESSAGES.json",
    )
    explain.add_argument(
        "--dynamic",
        action="append",
        type=_dynamic_value,
        metavar="NAME=VALUE",
        help="a value of this request to move out of the stable prefix (repeatable), e.g. user_name=Alice",
    )
    explain.add_argument(
        "--calls-per-hour",
        type=_positive,
        default=60.0,
        metavar="N",
        help="expected calls per hour sharing this prefix, for the reuse estimate and the TTL (default 60)",
    )
    explain.add_argument(
        "--ttl", choices=["auto", "5m", "1h"], default="auto", help="Anthropic cache lifetime (default auto)"
    )
    explain.add_argument("--json", action="store_true", help="print the rewritten request and report as JSON")
    explain.set_defaults(func=_cmd_prefix_explain)

    vllm = sub.add_parser("vllm", help="self-hosted models on vLLM: the recommended server command, health")
    vllm_sub = vllm.add_subparsers(dest="vllm_command", required=True)
    command = vllm_sub.add_parser(
        "command",
        help="print the recommended `vllm serve` command for a model",
        description=(
            "Prints the `vllm serve` command for a cost-efficient server: prefix caching on (shared prompts are "
            "computed once), prompt tokens details on (the server reports cached prompt tokens, so the ledger "
            "and budgets see them), the quantisation, maximum context length and tool-call parser you give. "
            "Other vLLM flags go in --extra. Guide: docs/vllm.md."
        ),
    )
    command.add_argument("model", metavar="MODEL", help="a Hugging Face model id or a local model folder")
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    command.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    command.add_argument("--served-model-name", help="the model name clients send (default: MODEL)")
    command.add_argument("--dtype", help="weights' dtype, e.g. bfloat16 (default: vLLM's auto)")
    command.add_argument(
        "--max-model-len",
        type=int,
        help="the longest context to serve (shorter leaves memory for more requests)",
    )
    command.add_argument("--quantization", help="the weights' quantisation, e.g. awq, gptq, fp8")
    command.add_argument(
        "--tool-call-parser",
        help="the model's tool-call format, e.g. hermes, llama3_json (turns on auto tools)",
    )
    command.add_argument("--no-prefix-caching", action="store_true", help="turn vLLM's prefix cache off")
    command.add_argument("--api-key", help="require this key from clients")
    command.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="FLAGS",
        help="more vLLM flags, quoted (repeatable), e.g. --extra '--gpu-memory-utilization 0.9'",
    )
    command.set_defaults(func=_cmd_vllm_command)
    health = vllm_sub.add_parser(
        "health",
        help="check a running `vllm serve` (exit status 1 when it is down)",
        description="Asks the server's /health and /v1/models; prints whether it is up, what it serves and how "
        "fast /health answered. Exit status 0 when up, 1 when down or not a vLLM server.",
    )
    health.add_argument("url", metavar="URL", help="the server's base URL, e.g. http://127.0.0.1:8000/v1")
    health.add_argument("--timeout", type=_positive, default=5.0, help="seconds to wait (default 5)")
    health.add_argument("--api-key", help="the server's API key, if it requires one")
    health.add_argument("--json", action="store_true", help="print the result as JSON")
    health.set_defaults(func=_cmd_vllm_health)

    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except BrokenPipeError:  # `frugal-chains report ... | head`: the reader left; no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
