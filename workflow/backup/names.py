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

import bisect
import hashlib
import itertools
import re

# What a share refuses, in one pass over a whole path (a dataset may hold 100,000 names): the
# characters and endings at once; device names only where a part starts like one.
SHARE_CHARS = re.compile(r'(?P<char>[\x00-\x1f"*:<>?\\|])|(?P<end>[. ](?:/|\Z))')
# The same, in names joined by NUL (two simple patterns scan faster than one with alternatives).
JOINED = (re.compile(r'[\x01-\x1f"*:<>?\\|]'), re.compile(r"[. ][/\x00]"))
DEVICES = re.compile(r"(?:^|/)(?:con|prn|aux|nul|com[0-9]|lpt[0-9]) *(?:\.[^/]*)?(?:/|\Z)")
JOINED_DEVICES = re.compile(r"[/\x00](?:con|prn|aux|nul|com[0-9]|lpt[0-9])[ ./\x00]")  # in lower case
LONG_PART = re.compile(r"[^/]{256}")
SHARE_REASONS = {
    "char": 'holds a character a share forbids: \\ : * ? " < > | or a control character',
    "end": "ends with a dot or a space",
    "device": "a device name on Windows, like CON, PRN, AUX, NUL, COM1, LPT1",
    "long": "a part longer than 255 characters",
}
LINE_BREAKS = re.compile(r"[\n\r]")
MAX_COMPONENT = 255  # characters (UTF-16 units on Windows) and bytes (Samba's own file system)
# A share's server keeps its own path (PATH_MAX 4,096 bytes on Linux) in front of ours, which a
# client cannot see: 1,024 characters inside a dataset leaves room for any sensible share path
# (and is four times what Windows Explorer opens).
MAX_PATH_ON_SHARES = 1024


def _not_utf8(name: str) -> bool:
    if name.isascii():
        return False
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
    found = SHARE_CHARS.search(name)
    if found:
        return SHARE_REASONS[found.lastgroup or "char"]
    if DEVICES.search(name.lower()):
        return SHARE_REASONS["device"]
    if len(name) > MAX_COMPONENT and LONG_PART.search(name):
        return SHARE_REASONS["long"]
    if not name.isascii() and any(len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT
                                  for part in name.split("/")):  # fmt: skip
        return SHARE_REASONS["long"]
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


def _may_clash(names: list[str], lowered: list[str]) -> bool:
    """Whether any two names (``lowered``: each in lower case), or two folders on their paths, are
    equal but for case: a quick test on the names and their distinct folders, before the careful pass."""
    if len(set(lowered)) < len(set(names)):
        return True
    folders = {name.rpartition("/")[0] for name in names} - {""}
    for folder in list(folders):  # their parents, a few hundred at most
        while (folder := folder.rpartition("/")[0]) and folder not in folders:
            folders.add(folder)
    return len({folder.lower() for folder in folders}) < len(folders)


def _share_refusals(names: list[str], joined: str, lowered: str) -> dict[str, str]:
    """Names a share cannot hold, with why. One look at all the names at once (``joined``: them
    between NULs; ``lowered``: the same in lower case), as a dataset may hold 100,000 and none
    odd: only the names it points at are looked at alone."""
    hits = [m.start() for pattern in JOINED for m in pattern.finditer(joined)]
    hits += [m.start() for m in JOINED_DEVICES.finditer(lowered)]
    longest = max(map(len, names), default=0)
    suspects = {name for name in names if len(name) > MAX_COMPONENT} if longest > MAX_COMPONENT else set()
    if not joined.isascii():
        suspects |= {name for name in names if not name.isascii()}
    if hits:
        starts = list(itertools.accumulate((len(name) + 1 for name in names), initial=1))
        suspects |= {names[bisect.bisect_right(starts, hit) - 1] for hit in hits if 0 < hit < starts[-1]}
        suspects |= {names[bisect.bisect_right(starts, hit + 1) - 1] for hit in hits if hit + 1 < starts[-1]}
    return {name: why for name in sorted(suspects) if (why := _share_problem(name))}


def unstorable(names: list[str], share: bool, rclone: bool, ignores_case: bool = False, held=None) -> dict[str, str]:
    """The names (dataset-relative POSIX paths) a destination cannot hold, each with why.
    ``share``: an SMB share; ``rclone``: sent by rclone; ``ignores_case``: a remote that does
    not tell names apart by case (every share does); ``held``: called only if names clash by
    case, the names the destination holds (a spelling already there is the one kept: a twin that
    sorts first, added later, must not land on it)."""
    joined = "\0" + "\0".join(names) + "\0"
    lowered = joined.lower()
    refused: dict[str, str] = _share_refusals(names, joined, lowered) if share else {}
    if (share or rclone) and not joined.isascii():
        refused.update((name, "not valid UTF-8") for name in names if _not_utf8(name))
    if rclone and LINE_BREAKS.search(joined):
        refused.update((name, why) for name in names if name not in refused and (why := _rclone_problem(name)))
    if (share or ignores_case) and _may_clash(names, lowered[1:-1].split("\0")):
        clashes = _case_clashes(names, refused)
        if clashes and held is not None:
            clashes = _case_clashes(names, refused, held())
        refused.update(clashes)
    return refused


def key(names: list[str], share: bool, rclone: bool, ignores_case: bool) -> str:
    """A name for this set of names and rules: a listing found storable once is storable again
    (the next run with the same names need not look at 100,000 of them again)."""
    digest = hashlib.sha1(f"{share:d}{rclone:d}{ignores_case:d}".encode(), usedforsecurity=False)
    digest.update("\0".join(names).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def described(refused: dict[str, str], most: int = 5) -> str:
    """A few of the refused names with why, for the summary's one line (the log has them all)."""
    items = [f"{shown(name)} ({why})" for name, why in sorted(refused.items())[:most]]
    more = len(refused) - most
    return ", ".join(items) + (f" and {more} more (listed in the log)" if more > 0 else "")
