"""The fault and abuse suite: every test here carries the `faults` marker, so
`./scripts/test -m faults` runs the fast part and `./scripts/test -m nightly` the long one."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path):
            item.add_marker(pytest.mark.faults)
