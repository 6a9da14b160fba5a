"""Budget validation, scope keys and windows."""

from __future__ import annotations

import calendar
from datetime import timedelta

import pytest

from frugal_chains import Attribution, Budget, ConfigurationError
from frugal_chains.budget import FALLBACK_KEY


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "max_usd"),
        ({"max_usd": -1.0}, "max_usd"),
        ({"max_usd": float("inf")}, "max_usd"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_usd": 1.0, "scope": "team"}, "scope"),
        ({"max_usd": 1.0, "window": "fortnight"}, "window"),
        ({"max_usd": 1.0, "window": timedelta(0)}, "window"),
        ({"max_usd": 1.0, "on_exceed": "ignore"}, "on_exceed"),
        ({"max_usd": 1.0, "alert_at": (0.5, -1)}, "alert_at"),
    ],
)
def test_bad_budgets_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        Budget(**kwargs)
    assert e.value.field == field
    assert not isinstance(e.value, ValueError)  # hosts catch ValueError around LLM calls


def test_scope_keys_and_fallback() -> None:
    a = Attribution(task_id="t1", feature="faq", user_id="u1", tenant_id="acme")
    assert Budget(max_usd=1, scope="user").key_for(a) == "u1"
    assert Budget(max_usd=1, scope="tenant").key_for(a) == "acme"
    assert Budget(max_usd=1, scope="feature").key_for(a) == "faq"
    assert Budget(max_usd=1, scope="task").key_for(a) == "t1"
    assert Budget(max_usd=1, scope="global").key_for(a) == "*"
    assert Budget(max_usd=1, scope="user").key_for(Attribution()) == FALLBACK_KEY


def test_budgets_sharing_scope_and_window_share_counters() -> None:
    a = Attribution(user_id="u1")
    usd = Budget(max_usd=1, scope="user", window="day")
    tokens = Budget(max_tokens=10, scope="user", window="day")
    assert usd.claim(a, 0).counter == tokens.claim(a, 0).counter == "user|day|u1"
    assert Budget(max_usd=1, scope="user", window="month").claim(a, 0).counter != usd.claim(a, 0).counter


def test_calendar_windows_are_utc_periods() -> None:
    t = calendar.timegm((2026, 11, 22, 13, 45, 0))  # a Sunday
    day = Budget(max_usd=1, window="day")
    assert day.buckets(t) == day.buckets(calendar.timegm((2026, 11, 22, 0, 0, 0)))
    assert day.buckets(t) != day.buckets(calendar.timegm((2026, 11, 23, 0, 0, 0)))
    assert day.window_end(t) == calendar.timegm((2026, 11, 23, 0, 0, 0))
    week = Budget(max_usd=1, window="week")
    monday = calendar.timegm((2026, 11, 16, 0, 0, 0))
    assert week.buckets(t) == week.buckets(monday)
    assert week.buckets(monday - 1) != week.buckets(monday)
    assert week.window_end(t) == calendar.timegm((2026, 11, 23, 0, 0, 0))
    month = Budget(max_usd=1, window="month")
    assert month.buckets(t) == month.buckets(calendar.timegm((2026, 11, 1, 0, 0, 0)))
    assert month.window_end(t) == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert month.window_end(calendar.timegm((2026, 12, 5, 0, 0, 0))) == calendar.timegm((2027, 1, 1, 0, 0, 0))


def test_rolling_window_covers_at_least_the_window() -> None:
    b = Budget(max_usd=1, window=timedelta(hours=1))
    assert b.slice_s == 60
    t = 1_000_000.5
    bucket, oldest = b.buckets(t)
    # every instant within the last hour falls in a bucket that is summed
    for back in (0, 59, 60, 1800, 3599, 3600):
        assert oldest <= int((t - back) // b.slice_s) <= bucket
    # and nothing older than one slice past the window is
    assert int((t - 3600 - 61) // b.slice_s) < oldest


def test_task_counters_expire_and_describe() -> None:
    assert Budget(max_usd=1).ttl_s(0) == 7 * 86400
    assert Budget(max_usd=1, scope="global").ttl_s(0) is None
    assert "max_usd=1" in Budget(max_usd=1, name="x").describe()
