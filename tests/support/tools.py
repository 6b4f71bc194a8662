"""External tools the e2e tier drives (curl, ...): skip when missing, but never on CI."""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["on_ci", "require_tool"]


def on_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_built(module: object, name: str) -> None:
    """Skip the calling test module when the C extension `name` (e.g. "proto/_heads") was not
    built, as in a BALANCER_PURE=1 run, which checks the product without C; with CI=true and
    a build with C, a missing module is a broken build: it fails."""
    if module is not None:
        return
    if on_ci() and os.environ.get("BALANCER_PURE") != "1":
        raise RuntimeError(f"{name} was not built (setup.py build_ext --inplace): CI must test it")
    pytest.skip(f"{name} (C) not built: BALANCER_PURE=1 or no build_ext", allow_module_level=True)


def require_tool(name: str) -> str:
    """Return the full path of executable `name`.

    When it is missing the calling test is skipped with the reason, except when the
    environment variable CI is true: there a missing tool is a broken runner, so it fails.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"required tool {name!r} is not installed (not found on PATH)"
    if on_ci():
        pytest.fail(reason + "; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)
    raise AssertionError("unreachable")  # pytest.skip raises


def require_root(what: str) -> None:
    """Skip the calling test with the reason unless it runs as root (network namespaces,
    nftables, routes); under CI=true a runner without root fails instead."""
    if os.geteuid() == 0:
        return
    reason = f"{what} needs root (network namespaces, nftables and routes)"
    if on_ci():
        pytest.fail(reason + "; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)
