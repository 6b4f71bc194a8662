"""balancer.native: the data plane runs compiled where it can be, and says so."""

from __future__ import annotations

import importlib.machinery
import importlib.util

import pytest
from tests.support.tools import on_ci

from balancer import native


def test_every_listed_module_exists_as_source() -> None:
    for name in native.module_names():
        assert importlib.util.find_spec(name) is not None, name


def test_the_data_plane_is_compiled_or_says_why_not() -> None:
    """CI installs gcc and the Python headers (scripts/system-deps.sh): an interpreted data
    plane there means the build fell back silently, a quarter of the speed."""
    compiled = native.compiled()
    if len(compiled) < len(native.COMPILED):
        missing = sorted(set(native.module_names()) - set(compiled))
        reason = f"data plane not compiled: {missing}"
        if on_ci():
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)
    assert native.describe() == "data plane: compiled (mypyc)"
    spec = importlib.util.find_spec("balancer.net.http_session")
    assert spec is not None and spec.origin is not None
    assert spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
