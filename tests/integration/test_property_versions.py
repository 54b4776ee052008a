"""Property: whatever the tree, every version that ever existed at the source is recoverable.

Random trees (spaces, unicode, newlines, leading dashes, empty files, deep nesting) are
backed up with real rsync, changed (files rewritten, deleted, added), and backed up again.
Then each file's latest content is at the destination, and each overwritten content is in
the run's versions folder; deleted files stay. Checked by reading the destination directly.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from backup import plan, sources, transports
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LOG = logging.getLogger("property")
NAME = st.text(alphabet="abcXYZ019 -()_éα中\n", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and not s.startswith(".")
)
PATH = st.lists(NAME, min_size=1, max_size=4).map(lambda parts: "/".join(parts))
TREE = st.dictionaries(PATH, st.binary(max_size=64), min_size=1, max_size=12)


def consistent(tree: dict[str, bytes]) -> dict[str, bytes]:
    """Drop paths that would need a name to be both a file and a folder."""
    out: dict[str, bytes] = {}
    for path in sorted(tree, key=len):
        parents = {"/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)}
        if parents & set(out) or any(p.startswith(path + "/") for p in out):
            continue
        out[path] = tree[path]
    return out


def write(root: Path, tree: dict[str, bytes], mtime: float) -> None:
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (mtime, mtime))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=TREE, second=TREE, deleted=st.sets(st.integers(0, 11), max_size=4))
def test_every_version_is_recoverable(first, second, deleted):
    first = consistent(first)
    base = Path(tempfile.mkdtemp(prefix="prop-"))
    try:
        src, dest = base / "src", base / "dest"
        names = sorted(first)
        # Second state: some files rewritten (newer), some deleted, some added.
        changed = {n: second[k] for n, k in zip(names, sorted(second), strict=False) if second[k] != first[n]}
        gone = {names[i] for i in deleted if i < len(names)} - set(changed)
        added = consistent({**first, **{f"new/{k}": v for k, v in second.items()}})
        added = {k: v for k, v in added.items() if k not in first}
        now = time.time()
        write(src / "tree", first, now - 100)
        transfer = plan.Transfer(
            destination="secured", dataset="Data", mode="direct", tool="rsync",
            source=plan.Source("Data", str(src), ("tree/",)), target=str(dest), keep_versions=True,
        )  # fmt: skip
        rsync = transports.RsyncTransport()
        listing = sources.list_source(transfer.source)
        rsync.send(transfer, listing, LOG, version_tag="run1")
        assert rsync.verify(transfer, listing, LOG).ok

        for n in gone:
            (src / "tree" / n).unlink()
        write(src / "tree", changed, now)
        write(src / "tree", added, now)
        listing = sources.list_source(transfer.source)
        rsync.send(transfer, listing, LOG, version_tag="run2")
        assert rsync.verify(transfer, listing, LOG).ok

        for n, data in first.items():
            current = (dest / "tree" / n).read_bytes()
            if n in changed:
                assert current == changed[n]
                assert (base / "dest.versions" / "run2" / "tree" / n).read_bytes() == data
            else:
                assert current == data  # unchanged, or deleted at the source and kept here
        for n, data in added.items():
            assert (dest / "tree" / n).read_bytes() == data
    finally:
        shutil.rmtree(base, ignore_errors=True)
