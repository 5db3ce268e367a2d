"""Fixtures and options shared by every test.

- Each test starts with no ``WEALL_*`` or ``PORT`` variable in its
  environment, so the developer's shell never changes a result. Modules that
  need a ``WEALL_TEST_*`` value read it at import time, before this runs.
- Tests marked ``long`` run only with ``--run-long`` or ``WEALL_TEST_LONG=1``.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-long",
        action="store_true",
        default=False,
        help="also run the tests marked long (same as WEALL_TEST_LONG=1)",
    )


def _long_enabled(config: pytest.Config) -> bool:
    return (
        bool(config.getoption("--run-long")) or os.environ.get("WEALL_TEST_LONG") == "1"
    )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    if _long_enabled(config):
        return
    skip_long = pytest.mark.skip(
        reason="long test; run with --run-long or WEALL_TEST_LONG=1"
    )
    for item in items:
        if item.get_closest_marker("long"):
            item.add_marker(skip_long)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("WEALL_") or name == "PORT":
            monkeypatch.delenv(name)
