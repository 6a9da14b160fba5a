"""Model prices: LiteLLM's price map, read offline, plus user overrides.

LiteLLM's map is read from the JSON file shipped inside the ``litellm`` wheel, without importing litellm
(that import takes seconds and would fetch the map from the internet unless
``LITELLM_LOCAL_MODEL_COST_MAP=True``). If your process has already imported litellm, its live
``litellm.model_cost`` is used instead, so ``litellm.register_model(...)`` entries count.

Lookup order for a model name: your ``prices`` overrides (exact name, then without a ``provider/`` prefix),
then LiteLLM (``name``, ``provider/name``, ``name`` without its prefix). Where a price is needed (a USD budget),
an unknown model raises :class:`~frugal_chains.errors.UnknownModelPriceError` (``unknown_model="raise"``, the
default) or, with ``unknown_model="warn"``, logs one warning per model and is charged at ``fallback_price``
(``$0`` only if you leave that unset, and then the warning says so). Where none is needed (token budgets only),
:meth:`PriceBook.lookup` gives ``None``: the USD is unknown, never taken as ``$0``.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from frugal_chains.accounting.usage import Price, Usage
from frugal_chains.errors import ConfigurationError, UnknownModelPriceError

__all__ = ["PriceBook", "litellm_price", "normalize_provider"]

log = logging.getLogger("frugal_chains.pricing")

# LangChain's ls_provider / _llm_type names -> LiteLLM provider prefixes.
_PROVIDER_ALIASES = {
    "google_genai": "gemini",
    "google_vertexai": "vertex_ai",
    "google": "gemini",
    "mistralai": "mistral",
    "together": "together_ai",
    "amazon_bedrock": "bedrock",
    "bedrock_converse": "bedrock",
    "azure_openai": "azure",
    "anthropic-chat": "anthropic",
    "openai-chat": "openai",
    "azure-openai-chat": "azure",
}

_TIER_RE = re.compile(r"^(?P<base>.+)_above_(?P<n>\d+)k_tokens$")


def normalize_provider(provider: str | None) -> str | None:
    """Map a LangChain provider name (``ls_provider``) to LiteLLM's prefix."""
    if not provider:
        return None
    p = provider.lower()
    return _PROVIDER_ALIASES.get(p, p)


@functools.lru_cache(maxsize=1)
def _shipped_cost_map() -> dict[str, Any]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('litellm is not installed: pip install "frugal-chains" brings it (price map).')
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "model_prices_and_context_window_backup.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                data: dict[str, Any] = json.load(f)
            return data
    # Layout changed: fall back to the library itself, offline.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return dict(litellm.model_cost)


def _cost_map() -> Mapping[str, Any]:
    mod = sys.modules.get("litellm")
    live = getattr(mod, "model_cost", None) if mod is not None else None
    if isinstance(live, dict) and live:
        return live
    return _shipped_cost_map()


def _per_million(v: Any) -> float | None:
    return float(v) * 1_000_000 if isinstance(v, (int, float)) else None


def _price_from_entry(entry: Mapping[str, Any], suffix: str = "") -> Price | None:
    inp = _per_million(entry.get(f"input_cost_per_token{suffix}"))
    out = _per_million(entry.get(f"output_cost_per_token{suffix}"))
    if inp is None or out is None:
        return None
    max_out = entry.get("max_output_tokens") or entry.get("max_tokens")
    return Price(
        input=inp,
        output=out,
        cache_read=_per_million(entry.get(f"cache_read_input_token_cost{suffix}")),
        cache_write=_per_million(entry.get(f"cache_creation_input_token_cost{suffix}")),
        cache_write_1h=_per_million(entry.get(f"cache_creation_input_token_cost_above_1hr{suffix}")),
        reasoning=_per_million(entry.get("output_cost_per_reasoning_token")) if not suffix else None,
        max_output_tokens=int(max_out) if isinstance(max_out, (int, float)) and max_out > 0 else None,
    )


def _price_from_litellm(entry: Mapping[str, Any]) -> Price | None:
    base = _price_from_entry(entry)
    if base is None:
        return None
    thresholds = sorted(
        {
            int(m.group("n"))
            for k in entry
            if (m := _TIER_RE.match(k)) and m.group("base") == "input_cost_per_token"
        }
    )
    tiers = []
    for n in thresholds:
        tier = _price_from_entry(entry, f"_above_{n}k_tokens")
        if tier is not None:
            # a tier inherits the cache rates the map does not restate for it
            tier = Price(
                input=tier.input,
                output=tier.output,
                cache_read=tier.cache_read if tier.cache_read is not None else base.cache_read,
                cache_write=tier.cache_write if tier.cache_write is not None else base.cache_write,
                cache_write_1h=tier.cache_write_1h
                if tier.cache_write_1h is not None
                else base.cache_write_1h,
                reasoning=base.reasoning,
                max_output_tokens=base.max_output_tokens,
            )
            tiers.append((n * 1000, tier))
    if tiers:
        base = Price(
            input=base.input,
            output=base.output,
            cache_read=base.cache_read,
            cache_write=base.cache_write,
            cache_write_1h=base.cache_write_1h,
            reasoning=base.reasoning,
            max_output_tokens=base.max_output_tokens,
            long_context=tuple(tiers),
        )
    return base


def _candidates(model: str, provider: str | None) -> list[str]:
    names = [model]
    if provider and not model.startswith(provider + "/"):
        names.append(f"{provider}/{model}")
    if "/" in model:
        names.append(model.split("/", 1)[1])
    return names


def similar_models(
    model: str, known: Sequence[str] = (), *, n: int = 3, use_litellm: bool = True
) -> list[str]:
    """Priced model names that look like ``model`` (a typo, a missing dash): ``known`` (your own prices) and
    LiteLLM's map, closest first. Only computed when a name is not found, so it costs nothing on the happy path.

    Example:
        >>> from frugal_chains.accounting.pricing import similar_models
        >>> similar_models("gpt4o")[0]
        'gpt-4o'
    """
    names = set(known)
    try:
        if not use_litellm:
            raise ImportError
        names.update(
            k for k, v in _cost_map().items() if isinstance(v, Mapping) and "input_cost_per_token" in v
        )
    except ImportError:  # no LiteLLM: only the caller's names
        pass
    by_lower: dict[str, str] = {}
    for name in sorted(names):
        by_lower.setdefault(name.lower(), name)
    found = difflib.get_close_matches(model.lower(), list(by_lower), n=n, cutoff=0.75)
    return [by_lower[f] for f in found]


def litellm_price(model: str, provider: str | None = None) -> Price | None:
    """The price LiteLLM's map gives a model, or ``None``.

    Example:
        >>> from frugal_chains.accounting import litellm_price
        >>> litellm_price("gpt-4o-mini").input
        0.15
    """
    cmap = _cost_map()
    for name in _candidates(model, normalize_provider(provider)):
        entry = cmap.get(name)
        if isinstance(entry, Mapping):
            price = _price_from_litellm(entry)
            if price is not None:
                return price
    return None


class PriceBook:
    """Resolves a model name to a :class:`~frugal_chains.Price`.

    Args:
        prices: overrides and custom or self-hosted models, ``{"my-llama": Price(input=0.5, output=0.5)}``
            (USD per million tokens). They win over LiteLLM's map.
        unknown_model: where a price is needed (:meth:`resolve`; a budget guard with a USD budget):
            ``"raise"`` (default): a model with no price raises ``UnknownModelPriceError``, before any call is
            made. ``"warn"``: log one warning per model and charge ``fallback_price``. Token budgets need no
            price (:meth:`lookup` with ``required=False``).
        fallback_price: the price of unknown models with ``unknown_model="warn"``.
        use_litellm: look models up in LiteLLM's price map (default ``True``).

    Example:
        >>> from frugal_chains import Price, Usage
        >>> from frugal_chains.accounting import PriceBook
        >>> book = PriceBook({"my-llama": Price(input=0.5, output=0.5)})
        >>> book.cost("my-llama", Usage(input_tokens=2_000_000, output_tokens=0))
        1.0
    """

    def __init__(
        self,
        prices: Mapping[str, Price] | None = None,
        *,
        unknown_model: Literal["raise", "warn"] = "raise",
        fallback_price: Price | None = None,
        use_litellm: bool = True,
    ) -> None:
        if unknown_model not in ("raise", "warn"):
            raise ConfigurationError(
                f"unknown_model must be 'raise' or 'warn', got {unknown_model!r}.", field="unknown_model"
            )
        prices = dict(prices or {})
        for name, price in prices.items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"prices keys must be model names, got {name!r}.", field="prices")
            if not isinstance(price, Price):
                raise ConfigurationError(
                    f"prices[{name!r}] must be a frugal_chains.Price (USD per million tokens), got {price!r}.",
                    field="prices",
                )
        if fallback_price is not None and not isinstance(fallback_price, Price):
            raise ConfigurationError("fallback_price must be a frugal_chains.Price.", field="fallback_price")
        self._prices = prices
        self.unknown_model = unknown_model
        self.fallback_price = fallback_price
        self.use_litellm = use_litellm
        self._cache: dict[tuple[str, str | None], Price | None] = {}
        self._warned: set[str] = set()
        self._noted: set[str] = set()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # A price book is configuration: copies and pickles carry the prices, not the lock.
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
            state["_cache"] = dict(self._cache)
            state["_warned"] = set(self._warned)
            state["_noted"] = set(self._noted)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def override_for(self, model: str) -> Price | None:
        """Your own price for ``model`` (exact name, then without a ``provider/`` prefix), if you gave one."""
        price = self._prices.get(model)
        if price is None and "/" in model:
            price = self._prices.get(model.split("/", 1)[1])
        return price

    def find(self, model: str, provider: str | None = None) -> Price | None:
        """The price of ``model``, or ``None`` when nobody knows it."""
        key = (model, provider)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        price = self.override_for(model)
        if price is None and self.use_litellm:
            price = litellm_price(model, provider)
        with self._lock:
            self._cache[key] = price
        return price

    def price_for(self, model: str, provider: str | None = None) -> Price:
        """The price of ``model``; an unknown model raises or warns as configured."""
        price, _known = self.resolve(model, provider)
        return price

    def resolve(self, model: str, provider: str | None = None) -> tuple[Price, bool]:
        """``(price, known)``: ``known`` is False when the fallback price was used."""
        price = self.find(model, provider)
        if price is not None:
            return price, True
        if self.unknown_model == "raise":
            hints = similar_models(model, list(self._prices), use_litellm=self.use_litellm)
            raise UnknownModelPriceError(model, did_you_mean=hints)
        with self._lock:
            first = model not in self._warned
            self._warned.add(model)
        if first:
            if self.fallback_price is None:
                log.warning(
                    "No price is known for model %r: its calls count as $0 and their USD cost is unknown "
                    "(tokens still count). Pass prices={%r: Price(...)} or fallback_price= to price it.",
                    model,
                    model,
                )
            else:
                log.warning(
                    "No price is known for model %r: charging fallback_price %s.", model, self.fallback_price
                )
        return (self.fallback_price or Price(input=0.0, output=0.0)), False

    def lookup(
        self, model: str, provider: str | None = None, *, required: bool = True
    ) -> tuple[Price | None, bool]:
        """``(price, known)`` for a caller that can do without a price; ``price`` is ``None`` when nobody knows
        the model and no ``fallback_price`` is set (its USD is then unknown, not ``$0``).

        ``required=True`` (a USD budget needs the price): an unknown model raises or warns as
        ``unknown_model`` says (see :meth:`resolve`). ``required=False`` (token budgets only): it never raises;
        ``fallback_price`` applies if set, and a model with no price at all is noted once in the log (INFO).

        Example:
            >>> from frugal_chains.accounting import PriceBook
            >>> PriceBook().lookup("my-private-llm", required=False)
            (None, False)
        """
        price = self.find(model, provider)
        if price is not None:
            return price, True
        if required:
            fallback, _ = self.resolve(model, provider)  # raises with unknown_model="raise"
            return (fallback if self.fallback_price is not None else None), False
        if self.fallback_price is not None:
            return self.fallback_price, False
        with self._lock:
            first = model not in self._noted
            self._noted.add(model)
        if first:
            log.info(
                "No price is known for model %r: its calls are counted in tokens and their USD cost is recorded "
                "as unknown (None). Pass prices={%r: Price(...)} to price it.",
                model,
                model,
            )
        return None, False

    def cost(self, model: str, usage: Usage, provider: str | None = None) -> float:
        """USD for ``usage`` on ``model``."""
        return self.price_for(model, provider).cost(usage)
