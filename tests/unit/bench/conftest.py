"""Fixtures of the benchmark tooling tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest

from tests.fixtures.threaded import ThreadedServer
from tests.unit.bench.controlled import Controlled, Seen, make_app


@pytest.fixture(scope="module")
def server() -> Iterator[Controlled]:
    seen: defaultdict[str, Seen] = defaultdict(Seen)
    # requests a test leaves running (drain timeouts) must not hold up the server's exit
    with ThreadedServer(make_app(seen), "/healthz", lifespan="off", graceful_shutdown_s=5) as threaded:
        yield Controlled(threaded.url, seen)
