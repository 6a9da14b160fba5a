"""Helpers that more than one part of frugal-chains uses; none of them is part of the public API.

* :mod:`frugal_chains.shared.logistic`: the small L2 logistic regression behind the trained router scorer, the
  trained answer verifier and the cache guard's pair model.
* :mod:`frugal_chains.shared.bridge`: calling functions that may be sync or async from sync or async code.
* :mod:`frugal_chains.shared.redis_client`: Redis client options and closing async clients off their loop.
* :mod:`frugal_chains.shared.streams`: closing a stream another component opened (sync and async).

Importing this package imports nothing heavy (numpy and redis load inside the functions that need them).
"""
