"""The adapter contract suite: one set of scenarios, run against both framework wings for every component.

Like the storage contract suites (``tests/integration/test_ledger_contract.py``, ``test_cache_index_contract.py``)
run the same tests on SQLite and Redis, this suite runs the same scenarios on LangChain and LlamaIndex, so the
wings cannot drift apart. Every scenario is parametrized over

* the **wing** (``wing`` fixture): ``langchain`` (chat models), ``llama_index-chat`` and ``llama_index-complete``
  (the two LlamaIndex APIs, both of which every LlamaIndex adapter implements);
* the **call mode** (``mode`` fixture): ``invoke``, ``ainvoke``, ``stream``, ``astream``, i.e. LangChain
  ``model.invoke/ainvoke/stream/astream(..., config={"callbacks": [handler]})`` and LlamaIndex
  ``chat/achat/stream_chat/astream_chat`` (or ``complete/acomplete/stream_complete/astream_complete``) with the
  handler in a ``CallbackManager``: the real host paths, never the engine directly;

and checked against **one** set of expected values, written in framework-neutral terms (answer text, streamed
chunks, ``frugal`` entry and attempt outcomes, summed usage, provider calls, ledger records, ``RouterStats``).

Layout:

* ``wings.py``: :class:`~tests.contract.wings.Script` (a fake provider: answers, error, usage, logprobs), a fake
  provider per framework built from it, and a driver per wing (:class:`~tests.contract.wings.LangChainWing`,
  :class:`~tests.contract.wings.LlamaIndexWing`) with the same interface: ``cascade(...)``, ``cached(...)``,
  ``plain(...)`` build a :class:`~tests.contract.wings.Target`; ``Target.ask(mode, question)`` returns an
  :class:`~tests.contract.wings.Observation`.
* ``test_cascade_contract.py``, ``test_budget_contract.py``, ``test_cache_contract.py``: the scenarios of each
  component; ``test_errors_contract.py`` (errors raised during a call reach the caller, never as ``ValueError``),
  ``test_unpriced_contract.py`` (token budgets on models with no price), ``test_threads_contract.py`` (scopes in
  worker threads, tenant-required caches), ``test_no_streaming_contract.py`` (models without native streaming),
  ``test_nested_contract.py`` (a cascade as a tier of another), ``test_cache_inputs_contract.py`` (empty and
  punctuation-only questions, lone surrogates), ``test_copy_contract.py`` (copying and pickling the wrappers),
  ``test_handler_names_contract.py`` (a handler built from one ``Budget``, the old handler name).

Adding a component (the prefix formatter, the vLLM wrapper, the compressor ...):

1. add a builder to :class:`~tests.contract.wings.Wing` (e.g. ``formatted(script, provider=...)``) and implement
   it in both drivers with the wing's own adapter (``PrefixCacheFormatter`` runnable before the LangChain fake,
   the LlamaIndex equivalent around the LlamaIndex fake); keep its inputs framework-neutral;
2. if the component changes what reaches the provider, let the fakes record what they were sent (both the same
   way) and add it to :class:`~tests.contract.wings.Observation`;
3. write ``test_<component>_contract.py`` with ``wing`` and ``mode`` parameters and one expected value per
   scenario; a behaviour one wing cannot have goes into the list below, as an ``xfail(strict=True)`` or a skip
   with its reason in the test.

Framework limits and wing differences (each pinned where it applies):

* **Token usage reported on a cache hit** (``test_cache_contract.py``): a LangChain hit carries the original
  answer's ``usage_metadata`` (LangChain's own cache does the same: the host's convention), a LlamaIndex hit
  reports none (``CachedLLM`` strips token counts). Both cost nothing in the ledger: the budget handler records
  nothing for a hit and the cache writes one ``cache_hit`` record with ``saved_usd``.
* **No child runs in LlamaIndex**: LangChain tier calls are child runs of the cascade's run (tags, metadata,
  ``parent_run_id``); LlamaIndex has no such tree (the tier travels in a context variable). The suite observes
  only what both have: ledger records with ``CallRecord.tier``.
* **Live streams**: only the LangChain wing's chunks carry no tier mark (LlamaIndex tags each chunk with
  ``additional_kwargs["frugal_tier"]``); the suite compares chunk texts only.
"""
