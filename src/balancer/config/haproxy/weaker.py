"""The importer's rule: an import is never weaker than its source.

A directive that allows, denies, redirects, authenticates or strips is translated, or the
import fails naming it (FILE:LINE) unless the operator accepts the loss (`--accept-loss`).
"""

from __future__ import annotations

__all__ = ["weakens_when_lost"]

# Directives that allow, deny, redirect, authenticate or strip: losing one makes the
# translation weaker than its source (more requests reach a server, or reach it in clear,
# unauthenticated, with headers the operator removed or without ones the operator added).
_GUARDING_HTTP_ACTIONS = frozenset(
    {
        *("allow", "deny", "reject", "tarpit", "silent-drop", "auth", "redirect", "return"),
        *("del-header", "set-header", "add-header", "replace-header", "replace-value"),
    }
)
_GUARDING_TCP_ACTIONS = frozenset({"accept", "reject", "silent-drop"})


def weakens_when_lost(words: tuple[str, ...] | list[str]) -> bool:
    """Whether this directive allows, denies, redirects, authenticates or strips, so that
    dropping it leaves a configuration weaker than its source."""
    keyword = words[0] if words else ""
    action = words[1] if len(words) > 1 else ""
    if keyword in ("http-request", "http-response"):
        return action in _GUARDING_HTTP_ACTIONS
    if keyword in ("tcp-request", "tcp-response"):
        return len(words) > 2 and words[2] in _GUARDING_TCP_ACTIONS
    if keyword in ("redirect", "block"):
        return True
    if keyword == "stats":
        return action in ("auth", "http-request")
    return False
