"""Which file names a destination cannot hold, decided before anything is sent (pure).

A name a destination cannot store is not sent: it is named once ("cannot be stored at smb")
and the rest of the dataset goes. Sending it would fail the whole dataset, or worse, land
on another file's name: an SMB share ignores case, so ``plot.csv`` would overwrite
``Plot.csv`` (and be reported as sent).

- SMB shares (Samba or Windows, reached by rsync onto a mount or by rclone) keep Windows'
  rules: no ``"*:<>?\\|`` or control characters, no trailing dot or space, no device names
  (``CON``, ``aux.txt``), components up to 255 characters, and case does not tell names apart.
- rclone reads its lists of files one name per line, as UTF-8: names holding a newline, or
  bytes that are not UTF-8, cannot be named to it. Remotes that ignore case (Box) also
  cannot hold two names that differ only by case.
- rsync to a POSIX folder (secured storage) holds every name a Linux file system does.
"""

from __future__ import annotations

import re

FORBIDDEN_ON_SHARES = re.compile(r'[\x00-\x1f"*:<>?\\|]')
LINE_BREAKS = re.compile(r"[\n\r]")
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
MAX_COMPONENT = 255  # characters (UTF-16 units on Windows) and bytes (Samba's own file system)
# A share's server keeps its own path (PATH_MAX 4,096 bytes on Linux) in front of ours, which a
# client cannot see: 1,024 characters inside a dataset leaves room for any sensible share path
# (and is four times what Windows Explorer opens).
MAX_PATH_ON_SHARES = 1024


def _not_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return True
    return False


def shown(name: str) -> str:
    """A name as one printable line: control characters and bytes that are not UTF-8 escaped."""
    raw = name.encode("utf-8", "surrogateescape")
    text = raw.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _share_problem(name: str) -> str | None:
    """Why a Windows-style share cannot hold ``name`` (None: it can), case aside."""
    if len(name) > MAX_PATH_ON_SHARES:
        return f"longer than {MAX_PATH_ON_SHARES} characters"
    for part in name.split("/"):
        if FORBIDDEN_ON_SHARES.search(part):
            return 'holds a character a share forbids: \\ : * ? " < > | or a control character'
        if part.endswith((".", " ")):
            return "ends with a dot or a space"
        if part.split(".")[0].rstrip(" ").upper() in RESERVED:
            return "a device name on Windows, like CON, PRN, AUX, NUL, COM1, LPT1"
        if len(part) > MAX_COMPONENT or len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
            return f"a part longer than {MAX_COMPONENT} characters"
    return None


def _rclone_problem(name: str) -> str | None:
    if LINE_BREAKS.search(name):
        return "holds a line break"
    return None


def _case_clashes(names: list[str], refused: dict[str, str], first=()) -> dict[str, str]:
    """Names (or folders on their path) that differ from an earlier one only by case, each with
    why. Sorted order decides which is kept (the same one every run), except that the spellings in
    ``first`` (what the destination already holds) go before the others."""
    held = set(first)
    folders = {path.rsplit("/", depth)[0] for path in held for depth in range(1, path.count("/") + 1)}

    def order(name: str):  # a file held as spelled, then one in a folder held as spelled, then the rest
        parts = name.split("/")
        in_held_folder = any("/".join(parts[:depth]) in folders for depth in range(1, len(parts)))
        return (0 if name in held else 1 if in_held_folder else 2, name)

    clashes: dict[str, str] = {}
    spelled: dict[str, str] = {}  # lower-cased path (of a file or a folder) -> its first spelling
    for name in sorted((n for n in names if n not in refused), key=order):
        parts = name.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            kept = spelled.setdefault(path.lower(), path)
            if kept != path:
                clashes[name] = f"same name as {shown(kept)} apart from case"
                break
    return clashes


def unstorable(names: list[str], share: bool, rclone: bool, ignores_case: bool = False, held=None) -> dict[str, str]:
    """The names (dataset-relative POSIX paths) a destination cannot hold, each with why.
    ``share``: an SMB share; ``rclone``: sent by rclone; ``ignores_case``: a remote that does
    not tell names apart by case (every share does); ``held``: called only if names clash by
    case, the names the destination holds (a spelling already there is the one kept: a twin that
    sorts first, added later, must not land on it)."""
    refused: dict[str, str] = {}
    for name in names:
        if _not_utf8(name) and (share or rclone):
            refused[name] = "not valid UTF-8"
            continue
        why = (_share_problem(name) if share else None) or (_rclone_problem(name) if rclone else None)
        if why:
            refused[name] = why
    if share or ignores_case:
        clashes = _case_clashes(names, refused)
        if clashes and held is not None:
            clashes = _case_clashes(names, refused, held())
        refused.update(clashes)
    return refused


def described(refused: dict[str, str], most: int = 5) -> str:
    """A few of the refused names with why, for the summary's one line (the log has them all)."""
    items = [f"{shown(name)} ({why})" for name, why in sorted(refused.items())[:most]]
    more = len(refused) - most
    return ", ".join(items) + (f" and {more} more (listed in the log)" if more > 0 else "")
