"""`frugal-chains demo`: budgets stopping a runaway agent, a semantic cache answering repeats, a cascading router
keeping easy questions on the cheap model and a long system prompt formatted for the provider's prompt cache, with
fake models and the offline embedder (no keys, no servers)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

__all__ = ["run_demo"]


def run_demo(*, ledger_path: str | None = None, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo and return its figures (the CLI prints them)."""
    try:
        from langchain_core.messages import ToolMessage
        from langchain_core.runnables import RunnableConfig
        from langchain_core.tools import tool
    except ImportError as e:
        raise ImportError(
            'the demo runs LangChain models and the offline embedder: pip install "frugal-chains[langchain,embeddings]"'
        ) from e

    from frugal_chains import Budget, BudgetExceededError, SQLiteLedger
    from frugal_chains._tables import render_report
    from frugal_chains.accounting.report import spend_report
    from frugal_chains.budget import Alert
    from frugal_chains.langchain import TokenBudgetHandler
    from frugal_chains.testing import FakeUsageChatModel

    @tool
    def search_docs(query: str) -> str:
        """Search the product documentation."""
        return f"Results for {query!r}: " + "a relevant paragraph about the product. " * 40

    alerts: list[str] = []

    def on_alert(alert: Alert) -> None:
        alerts.append(f"{alert.kind}: {alert.message}")
        echo(f"  [alert] {alert.kind}: {alert.message}")

    ledger = SQLiteLedger(ledger_path or ":memory:")
    daily_feature = Budget(max_usd=1.00, scope="feature", window="day", name="per feature per day")
    faq_budgets = [
        Budget(max_usd=0.01, scope="user", window="day", name="per user per day", alert_at=(0.8,)),
        daily_feature,
    ]
    agent_budgets = [Budget(max_usd=0.05, scope="task", name="per agent run", alert_at=(0.5,)), daily_feature]
    # Two handlers, one ledger: the shared feature budget counts both.
    faq_handler = TokenBudgetHandler(faq_budgets, ledger=ledger, on_alert=on_alert)
    agent_handler = TokenBudgetHandler(agent_budgets, ledger=ledger, on_alert=on_alert)

    echo(
        "frugal-chains demo: fake models priced with LiteLLM's price map, budgets enforced before each call."
    )
    echo("FAQ budgets:   " + "; ".join(b.describe() for b in faq_budgets))
    echo("Agent budgets: " + "; ".join(b.describe() for b in agent_budgets))
    echo("")

    # 1. A support FAQ on a cheap model: several users, one of them very chatty.
    echo("1) FAQ answers on gpt-4o-mini (max_tokens=300):")
    faq = FakeUsageChatModel(
        model="gpt-4o-mini",
        max_tokens=300,
        output_tokens=180,
        responses=("You can return any item within 30 days.",),
    )
    refused_users: dict[str, int] = {}
    answered = 0
    for user, questions in (("alice", 3), ("bob", 2), ("chatty-carol", 100)):
        for i in range(questions):
            config: RunnableConfig = {
                "callbacks": [faq_handler],
                "metadata": {"feature": "faq", "user_id": user},
            }
            try:
                faq.invoke(
                    f"Question {i} from {user}: what is your return policy? " + "context " * 200,
                    config=config,
                )
                answered += 1
            except BudgetExceededError:
                refused_users[user] = refused_users.get(user, 0) + 1
    echo(f"   answered {answered} questions; refused before spending anything: {refused_users or 'none'}")
    for user in ("alice", "bob", "chatty-carol"):
        spent = sum(row.cost_usd for row in ledger.summary("user") if row.key == user)
        echo(f"   {user:<13} spent ${spent:.6f} of $0.01 today")
    echo("")

    # 2. A research agent on a strong model whose tool loop never ends by itself.
    echo("2) A research agent on gpt-4o that keeps calling tools (max_tokens=500):")
    agent = FakeUsageChatModel(
        model="gpt-4o", max_tokens=500, output_tokens=350, tool_to_call="search_docs"
    ).bind_tools([search_docs])
    messages: list[Any] = [
        ("system", "You are a research assistant."),
        ("user", "Compare every plan we sell."),
    ]
    steps = 0
    stop: BudgetExceededError | None = None
    try:
        while True:
            ai = agent.invoke(
                messages,
                config={
                    "callbacks": [agent_handler],
                    "metadata": {"feature": "research", "user_id": "analyst", "task_id": "research-run-1"},
                },
            )
            steps += 1
            messages.append(ai)
            for call in ai.tool_calls:
                messages.append(ToolMessage(search_docs.invoke(call["args"]), tool_call_id=call["id"]))
    except BudgetExceededError as e:
        stop = e
    echo(f"   the agent made {steps} model calls, then:")
    echo(f"   STOP  {stop}")
    echo("")

    # 3. Support questions behind the semantic cache: repeats and paraphrases are served from the cache.
    cache_figures = _cache_section(ledger, daily_feature, echo)

    # 4. A help-desk assistant behind the cascading router: easy questions stay on gpt-4o-mini.
    routing_figures = _routing_section(ledger, daily_feature, echo)

    # 5. A long system prompt with a date and a name in it, formatted for the provider's prompt cache.
    prefix_figures = _prefix_section(echo)

    # The same report and tables as `frugal-chains report --ledger FILE` (see docs/accounting.md).
    by_feature = spend_report(ledger, by="feature")
    echo(render_report(by_feature, title="Cost by feature"))
    echo("")
    echo(render_report(spend_report(ledger, by="model"), title="Cost by model"))
    echo("")
    by_tier = spend_report(ledger, by="tier", feature="helpdesk")
    echo(render_report(by_tier, title="Cost by cascade tier (feature helpdesk)"))
    total = by_feature.total.cost_usd
    research = next((r.cost_usd for r in by_feature.rows if r.key == ("research",)), 0.0)
    echo("")
    echo(
        f"Total spent: ${total:.6f}; {by_feature.total.refused} calls refused before any spend. The research run "
        f"spent ${research:.6f} of its $0.05 task budget; no call was made that could have crossed a limit."
    )
    support = next((r for r in by_feature.rows if r.key == ("support",)), None)
    if support is not None and support.cost_usd + support.saved_usd > 0:
        share = support.saved_usd / (support.cost_usd + support.saved_usd)
        echo(
            f"The semantic cache saved ${support.saved_usd:.6f} on support: {share:.0%} of what those "
            f"{support.requests} questions would have cost without it."
        )
    if ledger_path:
        echo(f"Ledger written to {os.path.abspath(ledger_path)}")
    ledger.close()
    return {
        "answered": answered,
        "refused": refused_users,
        "agent_steps": steps,
        "stopped_by": stop.budget.name if stop else None,
        "research_usd": research,
        "total_usd": total,
        "refused_calls": by_feature.total.refused,
        "alerts": alerts,
        "cache": cache_figures,
        "routing": routing_figures,
        "prefix": prefix_figures,
    }


# A day of support traffic: each FAQ asked several ways, plus look-alike questions that must NOT share an answer.
_SUPPORT_TRAFFIC = (
    "What is your return policy?",
    "How long does shipping take?",
    "What is your return policy?",
    "What's your return policy?",
    "How do I enable two-factor authentication?",
    "Do you ship to Canada?",
    "How long does shipping usually take?",
    "How do I disable two-factor authentication?",
    "Do you ship to Mexico?",
    "what is your return policy",
    "How do I enable two-factor authentication?",
    "Can I pay with PayPal?",
    "Can I pay with Bitcoin?",
    "How long does shipping take?",
    "Do you ship to Canada?",
    "Can I pay using PayPal?",
    "How do I turn on two-factor authentication?",
    "What is your return policy?",
    "Do you ship to Canada?",
    "How long does shipping take?",
)


def _cache_section(ledger: Any, budget: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    from frugal_chains import attribute
    from frugal_chains.langchain import SemanticCache, TokenBudgetHandler
    from frugal_chains.testing import FakeUsageChatModel

    echo("3) Support questions on gpt-4o behind SemanticCache (offline MiniLM embedder, hit guard on):")
    # The cache writes a cache_hit record with the USD saved to the same ledger; the budget handler
    # charges the model calls and only releases the reservation of a served hit.
    cache = SemanticCache(ledger=ledger)
    handler = TokenBudgetHandler([budget], ledger=ledger)
    model = FakeUsageChatModel(
        model="gpt-4o", max_tokens=400, output_tokens=250, responses=("Here is our answer.",), cache=cache
    )
    served: dict[str, int] = {"model": 0, "exact": 0, "semantic": 0}
    answered_by: list[tuple[str, str]] = []
    for question in _SUPPORT_TRAFFIC:
        # A cache lookup sees no run metadata: attribute() tells the cache (and the handler) who asked.
        with attribute(feature="support", user_id="visitors"):
            msg = model.invoke(
                [("system", "You are the support assistant of an online shop."), ("user", question)],
                config={"callbacks": [handler]},
            )
        tier = msg.response_metadata.get("frugal_cache_tier") or "model"
        tier = tier if tier in served else "model"
        served[tier] += 1
        answered_by.append((question, tier))
        echo(f"   {tier:>8}  {question}")
    stats = cache.stats
    echo(
        f"   {len(_SUPPORT_TRAFFIC)} questions: {served['model']} model calls, {served['exact']} exact and "
        f"{served['semantic']} semantic cache hits, ${stats.saved_usd:.6f} saved. Look-alikes (disable vs "
        f"enable 2FA, Mexico vs Canada, Bitcoin vs PayPal) went to the model; the hit guard refused "
        f"{stats.guard_rejections} candidate(s) that were near enough to pass the similarity threshold."
    )
    echo("")
    return {
        **served,
        "guard_rejections": stats.guard_rejections,
        "saved_usd": stats.saved_usd,
        "answered_by": answered_by,
    }


# (question, gpt-4o-mini's recorded answer, gpt-4o's recorded answer)
_HELPDESK = (
    (
        "What are your opening hours?",
        "We are open 9am-6pm, Monday to Saturday.",
        "9am-6pm, Monday to Saturday.",
    ),
    ("Is shipping free?", "Yes, on orders over $50.", "Shipping is free on orders over $50."),
    (
        "Translate 'thank you for your order' into French.",
        "Merci pour votre commande.",
        "Merci pour votre commande.",
    ),
    (
        "Can I change my delivery address?",
        "Yes: open the order and choose 'Edit address'.",
        "Yes, under 'Edit address'.",
    ),
    (
        "How are import duties handled when I return an item bought from another country?",
        "I'm not sure how import duties work for returns.",
        "Duties paid at import are refunded by the carrier once the return clears customs; we refund the item.",
    ),
    ("What payment methods do you accept?", "Cards, PayPal and Apple Pay.", "Cards, PayPal and Apple Pay."),
    (
        "Write a Python function that merges overlapping delivery windows, explain its time complexity step by "
        "step, and prove that it never drops a window.",
        "def merge(ws): ...",
        "Sort the windows by start, then sweep once, extending the current window while the next one overlaps: "
        "O(n log n) for the sort, O(n) for the sweep. Proof: every window is either merged or starts a new one.",
    ),
    ("Do you have gift cards?", "Yes, from $10 to $500.", "Yes, from $10 to $500."),
    (
        "Compare our three subscription plans for a team of 40, analyse the trade-offs in cost and support, and "
        "recommend one with reasons.",
        "I'm not sure which plan suits a team of 40.",
        "For 40 seats, Business costs $12/seat less than Enterprise and includes 24h support; choose Business "
        "unless you need SSO, which only Enterprise has.",
    ),
    ("How do I reset my password?", "Click 'Forgot password' on the sign-in page.", "Use 'Forgot password'."),
)


def _routing_section(ledger: Any, budget: Any, echo: Callable[[str], None]) -> dict[str, Any]:
    from frugal_chains import SQLiteLedger
    from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler
    from frugal_chains.routing import HeuristicScorer, RefusalGate, escalation_rates
    from frugal_chains.testing import ReplayChatModel

    echo(
        "4) Help-desk questions through CascadeChatModel(gpt-4o-mini -> gpt-4o): HeuristicScorer before the "
        "call, RefusalGate after it:"
    )
    cheap = ReplayChatModel(model="gpt-4o-mini", table={q: a for q, a, _ in _HELPDESK})
    strong = ReplayChatModel(model="gpt-4o", table={q: a for q, _, a in _HELPDESK})
    router = CascadeChatModel(
        tiers=[cheap, strong],
        tier_names=["gpt-4o-mini", "gpt-4o"],
        scorer=HeuristicScorer(),
        gates=[RefusalGate()],
        ledger=ledger,
    )
    handler = TokenBudgetHandler([budget], ledger=ledger)
    split: dict[str, int] = {"cheap": 0, "escalated": 0, "strong": 0}
    for question, _, _ in _HELPDESK:
        msg = router.invoke(
            [("system", "You are the help desk of an online shop."), ("user", question)],
            config={"callbacks": [handler], "metadata": {"feature": "helpdesk", "user_id": "visitors"}},
        )
        frugal = msg.response_metadata["frugal"]
        if frugal["tier"] == "gpt-4o-mini":
            how = "cheap"
        elif frugal["start_tier"] == "gpt-4o":
            how = "strong"
        else:
            how = "escalated"
        split[how] += 1
        label = {"cheap": "gpt-4o-mini", "strong": "gpt-4o (scorer)", "escalated": "escalated"}[how]
        echo(f"   {label:>16}  score {frugal['scores']['scorer']:.2f}  {question[:72]}")
    spent = sum(r.cost_usd for r in ledger.records(feature="helpdesk") if r.outcome == "ok")
    # What the same questions cost on gpt-4o alone (a separate ledger, same prices and token counts).
    alone = SQLiteLedger(":memory:")
    baseline = TokenBudgetHandler(ledger=alone)
    for question, _, _ in _HELPDESK:
        strong.invoke(
            [("system", "You are the help desk of an online shop."), ("user", question)],
            config={"callbacks": [baseline]},
        )
    all_strong = sum(row.cost_usd for row in alone.summary("model"))
    alone.close()
    rates = escalation_rates(ledger.records(feature="helpdesk"))
    cheap_rate = rates["gpt-4o-mini"].escalation_rate if "gpt-4o-mini" in rates else 0.0
    saved = 1 - spent / all_strong if all_strong else 0.0
    echo(
        f"   {len(_HELPDESK)} questions: {split['cheap']} answered by gpt-4o-mini, {split['strong']} sent to gpt-4o "
        f"by the scorer, {split['escalated']} escalated after a gate failed (gpt-4o-mini escalation rate "
        f"{cheap_rate:.0%}). ${spent:.6f} spent vs ${all_strong:.6f} on gpt-4o alone: {saved:.0%} saved."
    )
    echo("")
    return {**split, "spent_usd": spent, "all_strong_usd": all_strong, "saved_share": saved}


# A support assistant's system prompt as many apps write it: today's date, a request id and the customer's name
# filled in at the top, then a long policy that never changes. A template variable in braces is filled per call.
_SUPPORT_PROMPT = """You are the customer support assistant of Northwind Outfitters, an online shop for outdoor \
clothing and camping gear. Today is {today}. Request {request_id}. You are helping {user_name}.

Tone and scope. Be warm, brief and exact. Answer in the customer's language. Only discuss Northwind orders, \
products, accounts, shipping, returns and payments; politely decline anything else and offer to help with an \
order instead. Never invent an order status, a tracking number, a price or a policy: when you do not know, say so \
and offer to open a ticket for a human agent, who answers within one business day.

Identity checks. Before you discuss or change an order, confirm the order number and the email address on the \
account. Never read out a full card number, a full address or a password; you may confirm the last four digits of \
a card and the postcode of a delivery address. If the customer cannot confirm both the order number and the \
email, offer to send a secure sign-in link to the email on file and stop there.

Orders. An order can be changed or cancelled free of charge until it is packed, usually within two hours of \
payment. After packing, the customer can refuse the delivery or return the parcel under the returns policy. \
Changing the delivery address after dispatch is possible only with the carrier's redirect service, which costs \
four euros and is not available for parcel lockers. Split shipments are normal for orders with pre-order items; \
each parcel has its own tracking number and the customer pays shipping only once.

Shipping. Standard delivery takes three to five business days in the European Union and costs four euros ninety, \
free for orders above sixty euros. Express delivery takes one to two business days and costs twelve euros, never \
free. We ship to the United Kingdom, Norway and Switzerland with duties paid by us; we do not ship outside Europe. \
Delivery estimates start when the order is dispatched, not when it is paid. A parcel without a tracking update \
for five business days is treated as lost: offer a replacement or a refund, whichever the customer prefers.

Returns. Customers may return unused items in their original packaging within thirty days of delivery for a full \
refund, including the original shipping cost when the whole order is returned. Returns are free with the prepaid \
label from the account page. Worn items, personalised items, opened gas canisters and hygiene items such as \
underwear and socks cannot be returned unless they are faulty. Refunds go back to the original payment method \
within five business days of the return being scanned at our warehouse; tell the customer the exact steps and \
never promise a faster refund.

Faulty items and warranty. Every product carries a two-year warranty against manufacturing defects. Tents, \
sleeping bags and jackets from our own Northwind line carry a five-year warranty. Ask for a photo of the defect \
and the order number, then offer a repair, a replacement or a refund, in that order of preference for items older \
than thirty days. Damage from normal wear, misuse, or repairs by third parties is not covered; explain this \
kindly and suggest our paid repair service, which quotes a price before any work starts.

Payments. We accept major cards, PayPal, Apple Pay, Google Pay and bank transfer. Invoices are available in the \
account page as PDF. A payment that fails three times locks the order for one hour for the customer's \
protection; do not suggest workarounds. We never ask for card details by chat or email. Gift cards are valid for \
three years, can be combined with one discount code, and cannot be exchanged for cash.

Discounts. One discount code per order. Codes cannot be applied after payment; offer to cancel and re-place an \
order that has not been packed yet if the customer forgot a code. Price matching is not offered. Members of the \
Northwind Trail club get free express shipping on orders above one hundred euros and early access to sales; \
membership is free and can be joined from the account page.

Accounts and privacy. Customers can change their email, password and newsletter preferences in the account \
page. A request to delete an account or to export personal data is handled by the privacy team within thirty \
days: open a privacy ticket and give the customer its number. Never confirm whether an email address has an \
account to someone who cannot prove they own it.

Product advice. Recommend products only from the current catalogue. For sizing, point to the size guide on the \
product page and the fit notes from other customers; for sleeping bags, explain the comfort and limit \
temperatures; for tents, mention the packed weight and the number of people it sleeps. Never give safety advice \
for mountaineering, climbing or avalanche terrain beyond recommending a certified guide.

Escalation. Hand the conversation to a human agent when the customer asks for one, when an order above five \
hundred euros is affected, when the customer reports an injury or a safety problem with a product, or when the \
same problem was already reported twice. Summarise the case in three lines for the agent: the order number, \
the problem, and what the customer wants.

Format. Use short paragraphs and at most five bullet points. Put order numbers, tracking numbers and amounts in \
bold. End every answer with one clear next step for the customer."""

# (today, request id, customer, question): the same prompt filled in for three different calls
_PREFIX_CALLS = (
    (None, "req_7f3a9c2e5b1d4a60", "Alice Martin", "Can I still change the delivery address of my order?"),
    ("2026-12-08", "req_02bd64e1c9f84d7a", "Bruno Keller", "My tent pole snapped after two trips. What now?"),
    (
        "2026-12-09",
        "req_c4e1b8a2d97f3056",
        "Chiara Rossi",
        "Do you ship to Switzerland, and who pays the duties?",
    ),
)


def _prefix_section(echo: Callable[[str], None]) -> dict[str, Any]:
    import datetime

    from frugal_chains.prefix import PrefixFormatter

    model = "claude-sonnet-4-5"
    echo(
        f"5) A support system prompt formatted for {model}'s prompt cache (PrefixFormatter, offline): it holds "
        "today's date, a request id and the customer's name (the template variable user_name):"
    )
    # the date and the request id are found by the detectors; the name is a template variable, so it is moved
    # without guessing names from free text
    formatter = PrefixFormatter(model=model, templates=[_SUPPORT_PROMPT], dynamic_variables=["user_name"])
    plans = []
    for today, request_id, user, question in _PREFIX_CALLS:
        day = today or datetime.date.today().isoformat()
        system = _SUPPORT_PROMPT.format(today=day, request_id=request_id, user_name=user)
        plans.append(
            formatter.plan([{"role": "system", "content": system}, {"role": "user", "content": question}])
        )
    report = plans[0].report
    hashes = {p.prefix_hash for p in plans}
    moved = ", ".join(f"{s.label} ({s.text})" for s in report.dynamic_spans)
    echo(f"   moved out of the stable prefix into a request-context block: {moved}")
    echo(
        f"   {len(plans)} calls with different dates, ids and names: the stable prefix is "
        f"{'byte-identical on every call' if len(hashes) == 1 else 'NOT identical'} "
        f"(sha256 {plans[0].prefix_hash[:12]}...)"
    )
    echo(
        f"   cacheable: {report.cacheable_tokens:,} of {report.total_tokens:,} input tokens "
        f"({report.cacheable_share:.1%}); {len(report.breakpoints)} cache breakpoint(s), lifetime {report.ttl}"
    )
    cached, uncached = report.cost_per_call_usd, report.cost_per_call_uncached_usd
    if cached is not None and uncached:
        echo(
            f"   expected input cost per call at {report.calls_per_hour:g} calls/hour: ${cached:.6f} with prompt "
            f"caching vs ${uncached:.6f} without ({1 - cached / uncached:.0%} less)"
        )
    echo("")
    return {
        "model": model,
        "cacheable_share": report.cacheable_share,
        "cacheable_tokens": report.cacheable_tokens,
        "total_tokens": report.total_tokens,
        "breakpoints": len(report.breakpoints),
        "ttl": report.ttl,
        "identical_prefix": len(hashes) == 1,
        "moved": [s.label for s in report.dynamic_spans],
        "cost_per_call_usd": cached,
        "cost_per_call_uncached_usd": uncached,
    }
