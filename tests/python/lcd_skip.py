"""The one way a Python test skips (C++ tests: tests/lcd_skip.h).

A test whose data or tool is missing (the GPT-2 tokenizer in ../shared, a
binary not built, a pip package not installed) skips on a developer machine
but FAILS under CI=true: in CI a skip would hide an untested feature behind a
green run. There is no GPU skip in the Python tests; a GPU-only test would
take `gpu=True`, the one kind that skips in CI too.
"""
import os

import pytest


def in_ci():
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip(reason, allow_module_level=False, gpu=False):
    if in_ci() and not gpu:
        pytest.fail(f"CI=true turns this skip into a failure: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=allow_module_level)


def importorskip(modname, minversion=None):
    """pytest.importorskip, failing under CI=true when the import fails."""
    try:
        return pytest.importorskip(modname, minversion=minversion)
    except pytest.skip.Exception as e:
        if in_ci():
            pytest.fail(f"CI=true turns this skip into a failure: {e}", pytrace=False)
        raise
