"""The answer comparison used across the suite must catch real differences."""

from __future__ import annotations

import pytest

from tests.fixtures.compare import assert_close


def test_floats_within_tolerance_are_equal() -> None:
    assert_close({"a": [1.0, 2.000001], "b": "x"}, {"a": [1.0000001, 2.0], "b": "x"})
    assert_close(-0.0024094581604003906, -0.002409219741821289, rel=1e-3)
    assert_close(1e-9, -1e-9)  # the absolute floor


@pytest.mark.parametrize(("got", "want"), [
    (1.0, 1.1),
    ({"a": 1}, {"a": 1, "b": 2}),
    ([1.0], [1.0, 2.0]),
    ("a", "b"),
    (1, 2),
    (True, 1),
    (None, 0.0),
    ({"a": [0.5]}, {"a": [0.6]}),
])
def test_differences_are_caught(got: object, want: object) -> None:
    with pytest.raises(AssertionError):
        assert_close(got, want)
