"""The public surface is pinned, and importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import frugal_chains
import frugal_chains.accounting
import frugal_chains.budget
import frugal_chains.langchain

EXPECTED_ROOT = [
    "QuestionKey",
    "SelectedQuestion",
    "AnswerCache",
    "Cascade",
    "Attribution",
    "Budget",
    "BudgetExceededError",
    "BudgetGuard",
    "CallRecord",
    "CascadeExhaustedError",
    "ConfigurationError",
    "FrugalChainsError",
    "LedgerUnavailableError",
    "Price",
    "PriceBook",
    "PrefixFormatter",
    "PrefixPlan",
    "PrefixReport",
    "ProviderRules",
    "RedisLedger",
    "SQLiteLedger",
    "ScopeNotPropagatedWarning",
    "ScopedThreadPoolExecutor",
    "SpendLedger",
    "UnknownModelPriceError",
    "VLLMServerError",
    "Usage",
    "attribute",
    "cache_scope",
    "carry_scopes",
]
EXPECTED_LANGCHAIN = [
    "achild_callbacks",
    "child_callbacks",
    "CachedChain",
    "CachedChatModel",
    "CascadeChatModel",
    "SemanticCache",
    "TokenBudgetHandler",
    "budget_scope",
    "is_wrapper_run",
    "judge_verifier",
    "question_key_from",
    "usage_from_message",
    "cache_chain",
    "with_cache",
    "PrefixCacheFormatter",
    "PrefixCachingChatModel",
    "with_prefix_caching",
    "ChatVLLM",
]
EXPECTED_BUDGET = [
    "Alert",
    "AlertHook",
    "AnomalyDetector",
    "Budget",
    "BudgetGuard",
    "CallPlan",
    "FALLBACK_KEY",
    "GuardOptions",
    "ObservedOutput",
    "Reservation",
    "log_alert",
]


EXPECTED_CACHE = [
    "QuestionKey",
    "SelectedQuestion",
    "AnswerCache",
    "CacheEntry",
    "CacheRequest",
    "CachePin",
    "CacheResult",
    "CacheScope",
    "CacheStats",
    "CallableVerifier",
    "CrossEncoderVerifier",
    "DEFAULT_THRESHOLD",
    "EmbeddedIndex",
    "GuardVerdict",
    "Hit",
    "HitGuard",
    "LLMJudgeVerifier",
    "RedisIndex",
    "VectorIndex",
    "Verifier",
    "bypass_reason",
    "cache_scope",
    "current_cache_scope",
    "normalize",
]
EXPECTED_ROUTING = [
    "QuestionKey",
    "SelectedQuestion",
    "ASampler",
    "Attempt",
    "CallableGate",
    "CallableScorer",
    "Calibration",
    "Cascade",
    "CascadeResult",
    "DEFAULT_ALERT_THRESHOLD",
    "EscalationAlert",
    "GateContext",
    "GateResult",
    "HeuristicScorer",
    "JsonGate",
    "LLMJudgeGate",
    "LabelledOutcome",
    "LengthGate",
    "LogprobGate",
    "QualityGate",
    "RefusalGate",
    "RegexGate",
    "Route",
    "RouterStats",
    "RoutingPolicy",
    "Sampler",
    "Scorer",
    "SelfConsistencyGate",
    "TierAnswer",
    "TierChunk",
    "TierSpec",
    "TierStats",
    "TrainedScorer",
    "TrainedVerifier",
    "calibrate",
    "default_escalates",
    "escalation_rates",
    "resolve_gates",
]


def test_routing_exports_pinned() -> None:
    import frugal_chains.routing

    assert sorted(frugal_chains.routing.__all__) == sorted(EXPECTED_ROUTING)
    for name in EXPECTED_ROUTING:
        assert getattr(frugal_chains.routing, name) is not None


def test_cache_exports_pinned() -> None:
    import frugal_chains.cache
    import frugal_chains.embeddings
    import frugal_chains.testing

    assert sorted(frugal_chains.cache.__all__) == sorted(EXPECTED_CACHE)
    for name in EXPECTED_CACHE:
        assert getattr(frugal_chains.cache, name) is not None
    assert sorted(frugal_chains.testing.__all__) == [
        "FakeToolCallingChatModel",
        "FakeUsageChatModel",
        "FakeUsageLLM",
        "FakeVLLMServer",
        "HashEmbeddings",
        "ReplayChatModel",
        "ReplayEntry",
        "smollm2_folder",
    ]
    assert sorted(frugal_chains.embeddings.__all__) == sorted(
        [
            "DEFAULT_MODEL",
            "EMBEDDINGS_EXTRA",
            "Embedder",
            "EmbedderIntegrityError",
            "FAST_EMBEDDINGS_EXTRA",
            "FAST_MODEL",
            "MiniLMEmbedder",
            "as_embedder",
            "default_embedder",
        ]
    )
    for name in frugal_chains.embeddings.__all__:
        assert getattr(frugal_chains.embeddings, name) is not None


EXPECTED_GUARD = [
    "BypassPolicy",
    "CallableVerifier",
    "CrossEncoderVerifier",
    "DEFAULT_DUPLICATE_PROMPT",
    "DEFAULT_THRESHOLD",
    "GuardVerdict",
    "HitGuard",
    "JudgeVerdict",
    "LLMJudgeVerifier",
    "PairModel",
    "VERIFIER_PURPOSE",
    "Verifier",
    "bypass_reason",
    "default_verifier",
    "pair_features",
]


def test_guard_exports_pinned() -> None:
    import frugal_chains.cache
    import frugal_chains.cache.guard

    assert sorted(frugal_chains.cache.guard.__all__) == sorted(EXPECTED_GUARD)
    for name in EXPECTED_GUARD:
        assert getattr(frugal_chains.cache.guard, name) is not None
    assert frugal_chains.cache.CrossEncoderVerifier is frugal_chains.cache.guard.CrossEncoderVerifier


EXPECTED_PREFIX = [
    "Breakpoint",
    "CONTEXT_HEADER",
    "ChurnSpan",
    "ContextValue",
    "DEFAULT_DETECTORS",
    "DynamicSpan",
    "PrefixFormatter",
    "PrefixPlan",
    "PrefixReport",
    "ProviderRules",
    "find_dynamic_spans",
    "rules_for",
    "split_context_block",
]


def test_prefix_exports_pinned() -> None:
    import inspect

    import frugal_chains.prefix

    assert sorted(frugal_chains.prefix.__all__) == sorted(EXPECTED_PREFIX)
    for name in EXPECTED_PREFIX:
        obj = getattr(frugal_chains.prefix, name)
        assert obj is not None
        if inspect.isclass(obj):
            assert ">>>" in (obj.__doc__ or ""), name
    for name in ("PrefixFormatter", "PrefixPlan", "PrefixReport", "ProviderRules"):
        assert getattr(frugal_chains, name) is getattr(frugal_chains.prefix, name)


EXPECTED_VLLM = [
    "ChatRequest",
    "Completion",
    "CompletionChunk",
    "SamplingOptions",
    "StructuredOutput",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "VLLMClient",
    "client_for",
    "Throughput",
    "measure_throughput",
    "ServerClient",
    "ServerHealth",
    "VLLMServer",
    "check_health",
    "launch_server",
    "serve_command",
    "EngineClient",
]


def test_vllm_exports_pinned() -> None:
    import inspect

    import frugal_chains.vllm

    assert sorted(frugal_chains.vllm.__all__) == sorted(EXPECTED_VLLM)
    for name in EXPECTED_VLLM:
        obj = getattr(frugal_chains.vllm, name)
        assert obj is not None
        if inspect.isclass(obj):
            assert ">>>" in (obj.__doc__ or ""), name


def test_vllm_import_needs_no_vllm() -> None:
    code = (
        "import sys, frugal_chains.vllm, frugal_chains.vllm.types; "
        "print([m for m in ('vllm', 'torch', 'httpx', 'langchain_core', 'llama_index') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_root_exports_pinned() -> None:
    assert sorted(frugal_chains.__all__) == sorted(EXPECTED_ROOT)
    for name in EXPECTED_ROOT:
        assert getattr(frugal_chains, name) is not None


def test_scope_helpers_pinned() -> None:
    import frugal_chains.scopes

    assert sorted(frugal_chains.scopes.__all__) == [
        "ScopeNotPropagatedWarning",
        "ScopedThreadPoolExecutor",
        "carry_scopes",
    ]
    assert frugal_chains.ScopedThreadPoolExecutor is frugal_chains.scopes.ScopedThreadPoolExecutor
    assert frugal_chains.carry_scopes is frugal_chains.scopes.carry_scopes
    assert issubclass(frugal_chains.ScopeNotPropagatedWarning, UserWarning)


def test_issue_names_import() -> None:
    from frugal_chains import (  # noqa: F401
        Budget,
        BudgetExceededError,
        ConfigurationError,
        Price,
        RedisLedger,
        SQLiteLedger,
        Usage,
    )
    from frugal_chains.langchain import (  # noqa: F401
        CachedChatModel,
        CascadeChatModel,
        SemanticCache,
        TokenBudgetHandler,
        budget_scope,
        with_cache,
    )
    from frugal_chains.llama_index import CachedLLM, CascadeLLM  # noqa: F401
    from frugal_chains.llama_index import TokenBudgetHandler as LlamaIndexHandler  # noqa: F401
    from frugal_chains.testing import ReplayChatModel  # noqa: F401


def test_adapter_exports_pinned() -> None:
    import frugal_chains.llama_index

    assert sorted(frugal_chains.llama_index.__all__) == [
        "BudgetNotAttachedWarning",
        "CachedLLM",
        "CachedQueryEngine",
        "CascadeLLM",
        "FrugalSettings",
        "LLMNotAttachedWarning",
        "PrefixCacheFormatter",
        "PrefixCachingLLM",
        "TokenBudgetHandler",
        "VLLM",
        "configure",
        "judge_verifier",
        "question_key_from",
        "with_prefix_caching",
    ]
    assert issubclass(frugal_chains.llama_index.BudgetNotAttachedWarning, UserWarning)
    assert issubclass(frugal_chains.llama_index.LLMNotAttachedWarning, UserWarning)
    assert callable(frugal_chains.llama_index.configure)
    assert sorted(frugal_chains.langchain.__all__) == sorted(EXPECTED_LANGCHAIN)
    assert sorted(frugal_chains.budget.__all__) == sorted(EXPECTED_BUDGET)
    for name in frugal_chains.accounting.__all__:
        assert getattr(frugal_chains.accounting, name) is not None


def test_spend_report_names_are_exported() -> None:
    for name in ("ReportRow", "SpendReport", "spend_report"):
        assert name in frugal_chains.accounting.__all__
        assert getattr(frugal_chains.accounting, name) is not None


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        frugal_chains.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_import_is_light() -> None:
    code = (
        "import sys, frugal_chains, frugal_chains.routing; "
        "from frugal_chains import Budget, Price, Usage, cache_scope; "
        "heavy = [m for m in ('litellm', 'llama_index', 'redis', 'torch', 'langchain_core', 'tiktoken', "
        "'numpy', 'onnxruntime', 'redisvl') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_tree() -> None:
    from frugal_chains.errors import UnknownModelPriceError

    assert issubclass(frugal_chains.ConfigurationError, frugal_chains.FrugalChainsError)
    assert issubclass(frugal_chains.BudgetExceededError, frugal_chains.FrugalChainsError)
    assert issubclass(UnknownModelPriceError, frugal_chains.ConfigurationError)
    # Hosts catch ValueError and TypeError around LLM calls (LlamaIndex's refine synthesizers answer "Empty
    # Response"): none of our errors is one, so each reaches the caller.
    import frugal_chains.errors as errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, frugal_chains.FrugalChainsError), name
        assert not issubclass(cls, (ValueError, TypeError, KeyError, LookupError, RuntimeError)), name


def test_every_public_class_has_a_runnable_example() -> None:
    import inspect

    import frugal_chains.llama_index

    missing = []
    import frugal_chains.cache
    import frugal_chains.embeddings
    import frugal_chains.routing
    import frugal_chains.testing

    for module in (
        frugal_chains,
        frugal_chains.routing,
        frugal_chains.accounting,
        frugal_chains.cache,
        frugal_chains.embeddings,
        frugal_chains.testing,
        frugal_chains.budget,
        frugal_chains.langchain,
        frugal_chains.llama_index,
    ):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) and ">>>" not in (obj.__doc__ or ""):
                missing.append(f"{module.__name__}.{name}")
    assert missing == []


EXPECTED_METADATA = [
    "CACHE",
    "CASCADE",
    "FRUGAL_KEY",
    "LEGACY_CACHE_KEYS",
    "TIER_KEY",
    "WRAPPER_KEY",
    "cache_status",
    "entry",
    "mark_cache_bypass",
    "mark_cache_hit",
    "with_entry",
    "without_entry",
    "USAGE",
    "PREFIX",
]


def test_metadata_keys_pinned() -> None:
    import frugal_chains.metadata as m

    assert sorted(m.__all__) == sorted(EXPECTED_METADATA)
    assert (m.FRUGAL_KEY, m.CACHE, m.CASCADE) == ("frugal", "cache", "cascade")
    assert (m.WRAPPER_KEY, m.TIER_KEY) == ("frugal_chains_wrapper", "frugal_tier")


@pytest.mark.parametrize(
    ("module", "old", "new"),
    [
        (
            "frugal_chains.langchain",
            "TokenBudgetCallbackHandler",
            "frugal_chains.langchain:TokenBudgetHandler",
        ),
        (
            "frugal_chains.langchain.budget",
            "TokenBudgetCallbackHandler",
            "frugal_chains.langchain:TokenBudgetHandler",
        ),
        ("frugal_chains.langchain", "WRAPPER_METADATA_KEY", "frugal_chains.metadata:WRAPPER_KEY"),
        ("frugal_chains.langchain", "TIER_METADATA_KEY", "frugal_chains.metadata:TIER_KEY"),
        ("frugal_chains.langchain", "CACHE_HIT_METADATA_KEY", None),
        ("frugal_chains.llama_index", "WRAPPER_PAYLOAD_KEY", "frugal_chains.metadata:WRAPPER_KEY"),
        ("frugal_chains.llama_index.budget", "WRAPPER_PAYLOAD_KEY", "frugal_chains.metadata:WRAPPER_KEY"),
        ("frugal_chains.llama_index.cascade", "FRUGAL_KEY", "frugal_chains.metadata:FRUGAL_KEY"),
        ("frugal_chains.llama_index.cascade", "TIER_KEY", "frugal_chains.metadata:TIER_KEY"),
        ("frugal_chains.llama_index.cached_llm", "HIT_KEY", None),
        ("frugal_chains.llama_index.cached_llm", "WRAPPER_PAYLOAD_KEY", "frugal_chains.metadata:WRAPPER_KEY"),
        ("frugal_chains.llama_index.cascade", "WRAPPER_PAYLOAD_KEY", "frugal_chains.metadata:WRAPPER_KEY"),
        ("frugal_chains.langchain.cache", "CACHE_HIT_METADATA_KEY", None),
        ("frugal_chains.langchain.cascade", "TIER_METADATA_KEY", "frugal_chains.metadata:TIER_KEY"),
        (
            "frugal_chains.langchain.cached_model",
            "WRAPPER_METADATA_KEY",
            "frugal_chains.metadata:WRAPPER_KEY",
        ),
    ],
)
def test_old_names_work_for_one_release_with_a_warning(module: str, old: str, new: str | None) -> None:
    import importlib

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=old):
        value = getattr(mod, old)
    if new is None:  # the legacy flat cache key, still written next to frugal["cache"]
        assert value == "frugal_cache"
    else:
        new_module, new_name = new.split(":")
        assert value == getattr(importlib.import_module(new_module), new_name)
    with pytest.raises(AttributeError):
        getattr(mod, old + "_NOT_A_NAME")


def test_renamed_arguments_and_attributes_warn_and_still_work() -> None:
    from frugal_chains import Budget
    from frugal_chains.langchain import CascadeChatModel, TokenBudgetHandler
    from frugal_chains.llama_index import TokenBudgetHandler as LlamaIndexHandler
    from frugal_chains.testing import FakeUsageChatModel

    tiers = [FakeUsageChatModel(model="gpt-4o-mini"), FakeUsageChatModel(model="gpt-4o")]
    with pytest.warns(DeprecationWarning, match="cascade_name"):
        model = CascadeChatModel(tiers=tiers, cascade_name="support")
    assert model.name is None and model.core.name == "support"
    with pytest.warns(DeprecationWarning, match="engine"):
        assert model.engine is model.core
    with pytest.warns(DeprecationWarning, match="cascade_name"):
        both = CascadeChatModel(tiers=tiers, cascade_name="records", name="runs")
    assert both.name == "runs" and both.core.name == "records"  # as before: cascade_name names the records
    for handler_class in (TokenBudgetHandler, LlamaIndexHandler):
        handler = handler_class(Budget(max_tokens=100))  # one budget is a list of one
        assert handler.budgets[0].max_tokens == 100
        with pytest.warns(DeprecationWarning, match="guard"):
            assert handler.guard is handler.core
        with pytest.raises(TypeError, match="ledgr"):
            handler_class([], ledgr=None)  # type: ignore[call-arg]
        with pytest.warns(UserWarning, match="unknown_model ignored"):
            shared = handler_class(guard=handler.core, unknown_model="warn")
        assert shared.core is handler.core


def test_old_cache_metadata_constants_keep_their_values() -> None:
    import frugal_chains.langchain.cache as cache_module

    with pytest.warns(DeprecationWarning, match="TIER_METADATA_KEY"):
        assert cache_module.TIER_METADATA_KEY == "frugal_cache_tier"
    with pytest.warns(DeprecationWarning, match="SIMILARITY_METADATA_KEY"):
        assert cache_module.SIMILARITY_METADATA_KEY == "frugal_cache_similarity"


def test_moved_names_still_import_from_the_split_modules() -> None:
    from frugal_chains.routing.gates import GateContext, GateResult, QualityGate, TierAnswer  # noqa: F401
    from frugal_chains.routing.scorers import Logistic, Message, fit_logistic  # noqa: F401


def test_image_reservation_names_are_public() -> None:
    from frugal_chains.accounting import image_tokens
    from frugal_chains.accounting.tokens import UNKNOWN_MODEL_IMAGE_TOKENS
    from frugal_chains.budget import GuardOptions

    assert "image_tokens" in frugal_chains.accounting.__all__ and callable(image_tokens)
    assert UNKNOWN_MODEL_IMAGE_TOKENS == 12_000
    assert "unknown_model_image_tokens" in GuardOptions.__annotations__
