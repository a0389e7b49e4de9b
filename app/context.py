"""Per-request context shared by the middleware, the logs and the work items."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@dataclass
class InFlight:
    """HTTP requests being served right now (drain waits for zero)."""

    count: int = 0
