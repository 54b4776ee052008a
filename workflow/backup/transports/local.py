"""The catalog's small files in a folder on this machine (a local disk or a mounted share).

rsync is how data reaches such a folder; for the catalog's few small files, starting rsync
(three processes) costs more than the files themselves, so they are written here with the
same guarantees: a temporary name, fsync, read back and compared, then a rename (a reader
never sees half a file, and never a file that differs from what was meant).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time


def tree(folder: str, depth: int | None = None) -> dict[str, tuple[int, int]]:
    """Files under ``folder`` at most ``depth`` folders deep: path -> (size, mtime_ns)."""
    found: dict[str, tuple[int, int]] = {}
    stack = [("", 1)]
    while stack:
        rel, level = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(folder, rel) if rel else folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.is_dir(follow_symlinks=False):
                if depth is None or level < depth:
                    stack.append((name, level + 1))
            else:
                st = entry.stat(follow_symlinks=False)
                found[name] = (st.st_size, st.st_mtime_ns)
    return found


def apply(folder: str, staging: str, writes: list[str], deletes: list[str], private: bool) -> None:
    """Write each of ``writes`` (from ``staging``) into ``folder``, checked, then remove ``deletes``."""
    for path in writes:
        with open(os.path.join(staging, path), "rb") as fh:
            data = fh.read()
        final = os.path.join(folder, path)
        _makedirs(os.path.dirname(final), private)
        tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            with open(tmp, "rb") as fh:
                if fh.read() != data:
                    raise OSError(f"{final}: what was written reads back differently")
            _settled(os.replace, tmp, final)
        finally:
            if os.path.exists(tmp):
                _settled(os.unlink, tmp)
    for path in deletes:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(folder, path))


def _settled(step, *paths: str, tries: int = 8) -> None:
    """``step`` (a rename, a removal), tried again for a few seconds where the file system says it
    is busy: on a share mounted with FUSE, closing a file reaches the server after the close returns,
    and a rename right after it meets a sharing violation there (EIO)."""
    for attempt in range(tries):
        try:
            step(*paths)
            return
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBUSY) or attempt == tries - 1:
                raise
            time.sleep(0.05 * 2**attempt)  # 0.05 s, 0.1 s, ... 6.35 s in all


def _makedirs(path: str, private: bool) -> None:
    """The folder and its missing parents; private: each one it makes 0700 (makedirs' mode is the
    last one's only, and the umask's bits still apply to it)."""
    if not private:
        os.makedirs(path, exist_ok=True)
        return
    old = os.umask(0o077)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    finally:
        os.umask(old)


def read(folder: str, names: list[str]) -> dict[str, bytes]:
    out = {}
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as fh:
                out[name] = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out
