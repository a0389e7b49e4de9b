"""The input kinds, by name: what the catalog's `kind` may be. Adding a kind is one module here
(implementing `InputKind`) and one entry in KINDS (docs/architecture.md)."""

from __future__ import annotations

from app.kinds.base import (
    Decoded,
    ExplainOptions,
    HostWork,
    InputKind,
    Rendered,
    RequestLimits,
    checked_format,
    checked_outputs,
)
from app.kinds.image import IMAGE
from app.kinds.tabular import TABULAR

KINDS: dict[str, InputKind] = {kind.name: kind for kind in (TABULAR, IMAGE)}


def kind_of(name: str) -> InputKind:
    """The kind called `name`; KeyError names the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r} (known: {', '.join(KINDS)})") from None


__all__ = ["KINDS", "Decoded", "ExplainOptions", "HostWork", "InputKind", "Rendered", "RequestLimits",
           "checked_format", "checked_outputs", "kind_of"]
