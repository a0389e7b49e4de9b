"""Module calls that feed one another, found by tracing a net with torch.fx: what the load-time
rewrites (BatchNorm folding, ReLUs moved after max-pools) look for; and TorchScript's check for
the modules those rewrites put in a net that may be scripted later (a frozen graph)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import torch
from torch import fx, nn

logger = logging.getLogger(__name__)

is_scripting = torch.jit.is_scripting  # type: ignore[attr-defined]  # torch.jit does not list it in __all__
"""True while TorchScript compiles: a rewritten module's eager-only branch goes under `if not
is_scripting():` as a whole condition, which TorchScript then skips."""


@dataclass(frozen=True)
class Link:
    """A module call whose first argument is another module call's output, used by it alone."""

    source: str
    """The feeding module's path."""
    target: str
    """The fed module's path."""
    source_node: fx.Node
    target_node: fx.Node


def links(net: nn.Module, rewrite: str) -> tuple[list[Link], dict[str, nn.Module]]:
    """Every link between modules each called once in the forward, and the net's modules by path;
    none where fx cannot trace the net (its forward branches on values, say): it is then served
    without the `rewrite`, which the log says."""
    modules = dict(net.named_modules())
    try:
        graph = fx.symbolic_trace(net).graph
    except Exception as exc:
        logger.info("%s: the net cannot be traced (%s: %s)", rewrite, type(exc).__name__, exc)
        return [], modules
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    found = []
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and calls[source.target] == 1 and calls[node.target] == 1):
            found.append(Link(str(source.target), str(node.target), source, node))
    return found, modules
