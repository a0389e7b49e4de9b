"""The domain error tree. Raised deep, mapped to problem+json in one place (`app.api.problems`)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

MAX_LISTED_ERRORS = 20
"""A problem's `errors` lists at most this many; its detail says how many there were."""
MAX_ECHOED_CHARS = 60
"""Client text quoted in a message is cut to this many characters."""


@dataclass(frozen=True)
class ErrorItem:
    """One located problem, rendered as `{"loc": [...], "msg": "..."}`."""

    loc: tuple[str | int, ...]
    msg: str


@dataclass
class ServiceError(Exception):
    """Base of every error a client may see; `status` is the HTTP status it maps to."""

    detail: str
    errors: Sequence[ErrorItem] = field(default_factory=tuple)
    headers: dict[str, str] = field(default_factory=dict)
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = [{"loc": list(e.loc), "msg": e.msg} for e in self.errors]
        return body


E = TypeVar("E", bound=ServiceError)


def quoted(value: object) -> str:
    """Client input for a message: quoted, at most MAX_ECHOED_CHARS characters, lone surrogates
    escaped (they cannot be encoded as UTF-8)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > MAX_ECHOED_CHARS:
        text = f"{text[:MAX_ECHOED_CHARS]}... ({len(text)} characters)"
    return "'" + text.encode("utf-8", "backslashreplace").decode("utf-8") + "'"


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """` (did you mean 'x'?)` for the choice `name` most likely meant (case and surrounding spaces
    aside, or a close spelling), else an empty string."""
    folded = {choice.strip().casefold(): choice for choice in choices}
    hit = folded.get(name.strip().casefold())
    if hit is None and len(name) <= 200:
        close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.75)
        hit = close[0] if close else None
    return f" (did you mean {quoted(hit)}?)" if hit is not None else ""


def listing(error: type[E], problems: Sequence[tuple[str, ErrorItem]]) -> E:
    """One error for several problems: the detail is the first problem's sentence and how many
    more there are; `errors` locates the first MAX_LISTED_ERRORS."""
    if not problems:
        raise ValueError("listing() needs at least one problem")
    detail = problems[0][0]
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more)"
    return error(detail, [item for _, item in problems[:MAX_LISTED_ERRORS]])


class BadRequest(ServiceError):
    """Malformed JSON, undecodable base64 or image bytes."""

    status = 400
    title = "Bad Request"


class Unauthorized(ServiceError):
    status = 401
    title = "Unauthorized"


class Forbidden(ServiceError):
    status = 403
    title = "Forbidden"


class RequestTimeout(ServiceError):
    """The body did not arrive within BODY_TIMEOUT_S."""

    status = 408
    title = "Request Timeout"


class ModelNotFound(ServiceError):
    status = 404
    title = "Not Found"


class PayloadTooLarge(ServiceError):
    """Body, instance count, image pixels, or an item that alone does not fit in device memory."""

    status = 413
    title = "Content Too Large"


class UnsupportedMedia(ServiceError):
    status = 415
    title = "Unsupported Media Type"


class InvalidInput(ServiceError):
    """Schema violations: unknown or missing feature, bad method or parameter, target out of range."""

    status = 422
    title = "Unprocessable Content"


class QueueFull(ServiceError):
    status = 429
    title = "Too Many Requests"


class NotReady(ServiceError):
    """Starting up or draining on shutdown."""

    status = 503
    title = "Service Unavailable"


class DeadlineExceeded(ServiceError):
    status = 504
    title = "Gateway Timeout"


class ClientClosed(ServiceError):
    """The client went away before its answer was ready (nginx's 499); nobody reads this answer,
    but it keeps the disconnect out of the error log and labels it in the request metrics."""

    status = 499
    title = "Client Closed Request"


class InternalError(ServiceError):
    """A genuine server fault; the traceback goes to the log, not to the client."""

    status = 500
    title = "Internal Server Error"


class CatalogError(Exception):
    """The model catalog is invalid; start-up stops with this message."""


class NotAcceptable(ServiceError):
    """`Accept: image/png` for an answer that is not one image."""

    status = 406
    title = "Not Acceptable"
