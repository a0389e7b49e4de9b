"""The domain error tree. Raised deep, mapped to problem+json in one place (`app.api.problems`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


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
