"""The manifest of a dataset's state: every file with size, modification time and SHA-1.

One manifest per distinct state of a dataset, named by its content
(``DATASET-DIGEST.json.gz``), so a run that changed nothing refers to the manifest that is
already at the destination and writes none. In compressed mode it also names the archive
(with its SHA-256 and SHA-1). Symlinks are entries too: their SHA-1 is that of the link's
target text, which is what a restore recreates. Beside each manifest, a checksum file in
``sha1sum`` format lets anyone check a destination without this project's code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from .sources import Listing

FORMAT = 1
CHUNK = 1 << 20


@dataclass
class Manifest:
    dataset: str
    mode: str = "direct"  # direct | archive
    files: list[str] = field(default_factory=list)  # relative POSIX paths, sorted
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)  # ns
    sha1: list[str] = field(default_factory=list)
    links: dict[str, str] = field(default_factory=dict)  # symlink -> its target
    archive: dict | None = None  # {"name", "size", "sha256", "sha1"} in compressed mode
    listing: str = ""  # digest of (name, size, time) of every file: an unchanged source has the same
    _text: bytes | None = field(default=None, init=False, repr=False, compare=False)  # built once, never changed
    _entries: dict | None = field(default=None, init=False, repr=False, compare=False)  # likewise

    def text(self) -> bytes:
        """The canonical JSON (the digest and the name are computed from it), made once: a manifest is
        never changed once built."""
        if self._text is not None:
            return self._text
        data = {"format": FORMAT, "dataset": self.dataset, "mode": self.mode, "files": self.files,
                "sizes": self.sizes, "mtimes": self.mtimes, "sha1": self.sha1, "links": self.links,
                "archive": self.archive, "listing": self.listing}  # fmt: skip
        self._text = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(
            "utf-8", "surrogateescape"
        )
        return self._text

    def digest(self) -> str:
        return hashlib.sha256(self.text()).hexdigest()

    @functools.cached_property
    def name(self) -> str:
        """The file name at the destination: the dataset and the first 32 hex digits of the digest."""
        return f"{self.dataset}-{self.digest()[:32]}.json.gz"

    @property
    def sums_name(self) -> str:
        return self.name[: -len(".json.gz")] + ".sha1"

    def to_bytes(self) -> bytes:
        import gzip  # not needed by a run that changed nothing

        return gzip.compress(self.text(), compresslevel=1, mtime=0)  # level 6: 5x the time, 15% smaller

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse a manifest; ValueError if it is not one (damaged, truncated, another format)."""
        import gzip

        try:
            raw = json.loads(gzip.decompress(data).decode("utf-8", "surrogateescape"))
        except (OSError, EOFError, ValueError) as exc:
            raise ValueError(f"not a readable manifest ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError("not a manifest of a known format")
        out = cls(raw["dataset"], raw["mode"], raw["files"], raw["sizes"], raw["mtimes"], raw["sha1"],
                  raw.get("links") or {}, raw.get("archive"), raw.get("listing", ""))  # fmt: skip
        if not (len(out.files) == len(out.sizes) == len(out.mtimes) == len(out.sha1)):
            raise ValueError("a manifest whose lists differ in length")
        return out

    def entries(self) -> dict[str, tuple[int, int, str]]:
        """Name -> (size, mtime_ns, sha1) (built once: a manifest is never changed)."""
        if self._entries is None:
            rows = zip(self.files, self.sizes, self.mtimes, self.sha1, strict=True)
            self._entries = {f: (s, m, h) for f, s, m, h in rows}
        return self._entries

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)

    def sums(self) -> bytes:
        """``sha1sum -c`` input, relative to the dataset's folder at the destination: every regular
        file in direct mode; the archive itself in compressed mode (its entries are inside it)."""
        if self.archive:
            return f"{self.archive['sha1']}  {self.archive['name']}\n".encode()
        lines = [_sum_line(h, f) for f, h in zip(self.files, self.sha1, strict=True) if f not in self.links]
        return "".join(lines).encode("utf-8", "surrogateescape")


@dataclass
class Summary:
    """What a run's record says of a dataset's state: its manifest's name, files and bytes."""

    name: str
    files: int
    bytes: int
    listing: str = ""  # the digest of the listing it was made from (``listing_digest``)

    @classmethod
    def of(cls, manifest: Manifest) -> Summary:
        return cls(manifest.name, len(manifest.files), manifest.total_bytes, manifest.listing)


def _sum_line(digest: str, name: str) -> str:
    """GNU coreutils' format: a name holding a backslash or newline is escaped, the line starts with \\."""
    if "\\" in name or "\n" in name or "\r" in name:
        escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
        return f"\\{digest}  {escaped}\n"
    return f"{digest}  {name}\n"


def listing_digest(listing: Listing) -> str:
    """Names, sizes and times of a listing in one digest (equal digests: nothing changed)."""
    h = hashlib.sha256()
    h.update("\0".join(listing.files).encode("utf-8", "surrogateescape"))
    if len(listing.files) > 1 and len(listing.mtimes) == len(listing.files):
        pick = itemgetter(*listing.files)  # values in file order, in C: 100,000 files in a few ms
        h.update(repr(list(pick(listing.sizes))).encode())
        h.update(repr(list(pick(listing.mtimes))).encode())
    else:
        h.update(repr([listing.sizes[f] for f in listing.files]).encode())
        h.update(repr([listing.mtimes.get(f, 0) for f in listing.files]).encode())
    h.update(repr(sorted(listing.links)).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def hash_file(path: str) -> str:
    """SHA-1 of a file, or of a symlink's target text."""
    if os.path.islink(path):
        return hashlib.sha1(os.readlink(path).encode("utf-8", "surrogateescape")).hexdigest()
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(root: str, names: list[str], threads: int = 2) -> dict[str, str]:
    """SHA-1 of files under ``root`` (hashlib releases the GIL: threads use both cores)."""
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return dict(zip(names, pool.map(lambda n: hash_file(os.path.join(root, n)), names), strict=True))


def build(dataset: str, listing: Listing, known: dict[str, str], previous: Manifest | None = None,
          digest: str | None = None, ask=None) -> Manifest:  # fmt: skip
    """The manifest of a direct-mode state. SHA-1s come from ``known`` (what the tools reported for
    the files they sent), else from ``previous`` for files with the same size and time there, else
    from reading the file here (a file never seen before, or after a lost cache). A file read here
    that changed since it was listed was not what the destination holds: its SHA-1 is asked of the
    destination (``ask(names) -> {name: sha1}``); ValueError if it cannot say."""
    digest = digest or listing_digest(listing)
    if previous is not None and previous.listing == digest and previous.mode == "direct" and not known:
        return previous  # nothing changed: the same manifest, the same name
    carried = previous.entries() if previous is not None and previous.mode == "direct" else {}
    hashes: dict[str, str] = {}
    for name in listing.files:
        if name in known:
            hashes[name] = known[name]
            continue
        old = carried.get(name)
        if old is not None and old[0] == listing.sizes[name] and old[1] == listing.mtimes.get(name):
            hashes[name] = old[2]
    unknown = [n for n in listing.files if n not in hashes]
    hashes.update(hash_files(listing.root, unknown))
    moved = [n for n in unknown if _state(os.path.join(listing.root, n)) != (listing.sizes[n], listing.mtimes.get(n))]
    if moved:
        told = ask(moved) if ask else {}
        if set(moved) - set(told):
            raise ValueError(f"{len(moved)} files changed while their SHA-1 was read (e.g. {moved[0]})")
        hashes.update(told)
    links = {n: os.readlink(os.path.join(listing.root, n)) for n in sorted(listing.links) if n in listing.sizes}
    return Manifest(
        dataset=dataset,
        files=list(listing.files),
        sizes=[listing.sizes[f] for f in listing.files],
        mtimes=[listing.mtimes.get(f, 0) for f in listing.files],
        sha1=[hashes[f] for f in listing.files],
        links=links,
        listing=digest,
    )


def _state(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


# --- this machine's copies ----------------------------------------------------------------------


def save(folder: Path, manifest: Manifest, again: bool = False) -> Path:
    """Keep a copy under its name (immutable: the name is its digest), and its checksum file, laid
    out as in a destination's catalog (manifests/NAME, sums/NAME.sha1): uploaded as they are."""
    path = folder / "manifests" / manifest.name
    if again or not path.exists():
        for target, data in ((folder / "sums" / manifest.sums_name, manifest.sums()), (path, manifest.to_bytes())):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return path


def load(folder: Path, name: str) -> Manifest | None:
    try:
        return Manifest.from_bytes((folder / "manifests" / name).read_bytes())
    except (OSError, ValueError):
        return None


def remember(folder: Path, manifest: Manifest) -> None:
    """The latest state of a dataset seen here: where the next run carries SHA-1s from, and how it
    sees, from the listing's digest alone, that nothing changed (without reading the manifest)."""
    save(folder, manifest)
    pointer = folder / "latest" / f"{manifest.dataset}.{manifest.mode}"
    pointer.parent.mkdir(parents=True, exist_ok=True)
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
    about = {"name": manifest.name, "listing": manifest.listing, "files": len(manifest.files),
             "bytes": manifest.total_bytes}  # fmt: skip
    tmp.write_text(json.dumps(about), encoding="utf-8")
    os.replace(tmp, pointer)


def _pointer(folder: Path, dataset: str, mode: str) -> dict:
    try:
        about = json.loads((folder / "latest" / f"{dataset}.{mode}").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return about if isinstance(about, dict) else {}


def of_listing(folder: Path, dataset: str, listing: Listing, known: dict[str, str], ask=None,
               digest: str | None = None) -> Summary:  # fmt: skip
    """The state a direct-mode run leaves: when nothing changed since the last state seen here
    (the same listing digest, nothing sent), that one, without reading its manifest; else a new
    manifest, built (SHA-1s from ``known``, carried or read, see ``build``) and remembered.
    ``digest``: the listing's digest, if the caller has it already."""
    digest = digest or listing_digest(listing)
    about = _pointer(folder, dataset, "direct")
    if about.get("listing") == digest and (folder / "manifests" / str(about.get("name"))).is_file():
        if not known:
            return Summary(about["name"], about["files"], about["bytes"], digest)
        # The same files, sizes and times (another destination's job of this run built it): the same
        # manifest, if what this job's tool reported agrees with it.
        same = load(folder, about["name"])
        entries = same.entries() if same else {}
        if same and all(entries.get(n, (0, 0, ""))[2] == sha1 for n, sha1 in known.items()):
            return Summary.of(same)
    found = build(dataset, listing, known, latest(folder, dataset), digest, ask)
    remember(folder, found)
    return Summary.of(found)


def latest(folder: Path, dataset: str, mode: str = "direct") -> Manifest | None:
    name = _pointer(folder, dataset, mode).get("name")
    return load(folder, name) if name else None


def carried(folder: Path, dataset: str, listing: Listing) -> dict[str, str]:
    """SHA-1s the latest state seen here knows for files of ``listing`` with the same size and time."""
    found = latest(folder, dataset)
    if found is None:
        return {}
    return {f: h for f, s, m, h in zip(found.files, found.sizes, found.mtimes, found.sha1, strict=True)
            if listing.sizes.get(f) == s and listing.mtimes.get(f) == m and f not in found.links}  # fmt: skip
