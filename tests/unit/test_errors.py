"""The error helpers: bounded echoes, hints, and one message for many problems."""

from __future__ import annotations

import pytest

from app.errors import MAX_LISTED_ERRORS, ErrorItem, InvalidInput, did_you_mean, listing, quoted


def test_quoted_bounds_and_escapes_client_text() -> None:
    assert quoted("age") == "'age'"
    long = quoted("x" * 30_000_000)
    assert len(long) < 100 and long.endswith("... (30000000 characters)'")
    assert quoted("a\ud800b") == "'a\\ud800b'"  # a backslash, then "ud800": encodable as UTF-8
    assert quoted(10**4000).endswith("characters)'")


@pytest.mark.parametrize(("name", "hint"), [
    (" age ", " (did you mean 'age'?)"),
    ("Age", " (did you mean 'age'?)"),
    ("cart_add", " (did you mean 'cart_adds'?)"),
    ("retrun_rate", " (did you mean 'return_rate'?)"),
    ("zzz", ""),
    ("x" * 100_000, ""),
])
def test_did_you_mean(name: str, hint: str) -> None:
    assert did_you_mean(name, ["age", "monthly_spend", "cart_adds", "return_rate"]) == hint


def test_listing_names_the_first_and_counts_the_rest() -> None:
    problems = [(f"problem {i}", ErrorItem(("instances", i), "bad")) for i in range(1000)]
    error = listing(InvalidInput, problems)
    assert error.detail == "problem 0 (and 999 more)"
    assert len(error.errors) == MAX_LISTED_ERRORS
    single = listing(InvalidInput, problems[:1])
    assert single.detail == "problem 0" and len(single.errors) == 1
    with pytest.raises(ValueError):
        listing(InvalidInput, [])
