"""The suite's own order (tests/conftest.py): the longest files first, each file's tests together."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import conftest

INTEGRATION = Path(conftest.__file__).parent / "integration"


def test_every_longest_file_exists():
    """A renamed or removed file would silently drop out of the order."""
    assert [name for name in conftest.LONGEST_FIRST if not (INTEGRATION / name).is_file()] == []


def test_the_longest_files_come_first_and_the_rest_keep_their_order():
    first, second = conftest.LONGEST_FIRST[:2]
    names = ["test_a.py", second, "test_a.py", first, "test_b.py", second]
    items = [SimpleNamespace(path=INTEGRATION / name, n=i) for i, name in enumerate(names)]
    conftest.pytest_collection_modifyitems(items)
    assert [(item.path.name, item.n) for item in items] == [
        (first, 3), (second, 1), (second, 5), ("test_a.py", 0), ("test_a.py", 2), ("test_b.py", 4)
    ]  # fmt: skip
