"""ZIP archives of a dataset: parallel, streamed, verified, never overwritten.

Why a ZIP writer of our own rather than ``zipfile``: to use every core on one
standard archive. Each file is read in 1 MiB chunks; worker threads deflate the
chunks at the configured level with zlib-ng (the GIL is released while they
work), each chunk primed with the previous 32 KiB as dictionary and ended with a
sync flush, so their outputs concatenate into one ordinary deflate stream (the
technique of pigz). Files that are already compressed (PNG, JPEG, ZIP, ...) are
stored as they are. Memory stays bounded by the chunks in flight, whatever the
file sizes.

The archive is written under a temporary name in the same folder, its CRCs are
checked by reading it back with Python's ``zipfile``, and only then is it renamed
(without replacing anything) to its final name, next to a JSON manifest of the
files it holds (size and SHA-256), which lets the next run see that nothing changed.

Reading one back (``extract``, for restore) assumes it may have been crafted at a destination
along with its catalog: the whole archive is refused unless every entry can be one of the run's
files, and no file is written past the size the run's manifest gives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import time
import zipfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from zlib_ng import zlib_ng

from .errors import ArchiveError, TransferError  # ArchiveError: raised here, caught as archive.ArchiveError too
from .manifest import Manifest, hash_files
from .processes import process_alive

CHUNK = 1 << 20
WINDOW = 1 << 15
ZIP64_LIMIT = 0xFFFFFFFF  # sizes and offsets from here on need ZIP64 records
ZIP64_MARK = 0xFFFFFFFF  # what a 32-bit field then holds
# Formats that are compressed already: deflating them again costs time for nothing.
STORED_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".heic", ".jp2", ".avif",
    ".zip", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar", ".lz4", ".br",
    ".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mp3", ".m4a", ".ogg", ".flac",
    ".docx", ".xlsx", ".pptx", ".odt", ".ods", ".npz", ".jar", ".whl",
}  # fmt: skip
MANIFEST_SUFFIX = ".manifest.json"
NAME_MAX = 255  # bytes in one part of a path (Linux, macOS, SMB)
PATH_MAX = 4096  # bytes in a whole path, on Linux


@dataclass
class Entry:
    name: str
    size: int
    sha1: str
    crc: int = 0
    compressed: int = 0
    method: int = 8
    offset: int = 0
    mode: int = 0o100644
    dos_time: int = 0
    dos_date: int = 0
    zip64_local: bool = False
    mtime_ns: int = 0
    link: str | None = None  # a symlink's target (stored as the entry's data)


@dataclass
class ArchiveResult:
    path: Path
    created: bool
    files: int
    bytes: int
    compressed_bytes: int
    manifest: dict = field(default_factory=dict)


def should_store(name: str) -> bool:
    return Path(name).suffix.lower() in STORED_SUFFIXES


def _dos_datetime(mtime: float) -> tuple[int, int]:
    t = time.localtime(max(mtime, 315532800))  # ZIP cannot say anything before 1980
    return (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2), ((t.tm_year - 1980) << 9) | (
        t.tm_mon << 5
    ) | t.tm_mday


def _deflate_chunk(data: bytes, level: int, zdict: bytes, last: bool) -> tuple[int, bytes]:
    """CRC and deflated bytes of one chunk; runs in a worker thread."""
    crc = zlib_ng.crc32(data)
    if zdict:
        comp = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, 9, zlib_ng.Z_DEFAULT_STRATEGY, zdict)
    else:
        comp = zlib_ng.compressobj(level, zlib_ng.DEFLATED, -15, 9)
    out = comp.compress(data) + comp.flush(zlib_ng.Z_FINISH if last else zlib_ng.Z_SYNC_FLUSH)
    return crc, out


def _store_chunk(data: bytes) -> tuple[int, bytes]:
    return zlib_ng.crc32(data), data


def _field(value: int) -> int:
    """A size or offset for a 32-bit field: the value, or the ZIP64 mark when it is too large."""
    return ZIP64_MARK if value >= ZIP64_LIMIT else value


class _Done:
    """An already computed chunk result, queued like a worker's future."""

    def __init__(self, value: tuple[int, bytes]):
        self.value = value

    def result(self) -> tuple[int, bytes]:
        return self.value


class ZipWriter:
    """Writes a standard ZIP (with ZIP64 records where sizes need them) to a seekable file.

    Reading (and SHA-256) happens in the calling thread, deflating in the pool, and
    results are written strictly in order; the queue between them spans file
    boundaries, so many small files keep both cores busy too.
    """

    MAX_PENDING_BYTES = 16 << 20  # raw bytes in flight: the memory bound

    def __init__(self, fh, level: int, pool: ThreadPoolExecutor, in_flight: int, on_bytes=None):
        self.fh, self.level, self.pool, self.in_flight = fh, level, pool, in_flight
        self.on_bytes, self.done = on_bytes, 0  # progress: raw bytes written so far
        self.entries: list[Entry] = []
        self.pending: deque = deque()  # (entry, future, chunk length, first, last)
        self.pending_bytes = 0

    def _local_header(self, e: Entry, zip64: bool) -> bytes:
        name = e.name.encode("utf-8")
        extra = struct.pack("<HHQQ", 1, 16, e.size, e.compressed) if zip64 else b""
        sizes = (ZIP64_MARK, ZIP64_MARK) if zip64 else (e.compressed, e.size)
        flags = 0x800 | (0x2 if e.method == 8 and self.level >= 8 else 0)
        return struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, flags, e.method, e.dos_time, e.dos_date,
            e.crc, sizes[0], sizes[1], len(name), len(extra),
        ) + name + extra  # fmt: skip

    def _queue(self, entry: Entry, future, length: int, first: bool, last: bool) -> None:
        self.pending.append((entry, future, length, first, last))
        self.pending_bytes += length
        while len(self.pending) > self.in_flight and self.pending_bytes > self.MAX_PENDING_BYTES:
            self._write_next()
        while len(self.pending) > 64 * self.in_flight:
            self._write_next()

    def _write_next(self) -> None:
        entry, future, length, first, last = self.pending.popleft()
        self.pending_bytes -= length
        if first:
            entry.offset = self.fh.tell()
            self.fh.write(self._local_header(entry, entry.zip64_local))
        chunk_crc, out = future.result()
        entry.crc = zlib_ng.crc32_combine(entry.crc, chunk_crc, length)
        entry.size += length
        entry.compressed += len(out)
        self.fh.write(out)
        self.done += length
        if self.on_bytes:
            self.on_bytes(self.done)
        if last:
            if not entry.zip64_local and (entry.size >= ZIP64_LIMIT or entry.compressed >= ZIP64_LIMIT):
                raise ArchiveError(f"{entry.name} grew past 4 GiB while it was being archived")
            end = self.fh.tell()
            self.fh.seek(entry.offset)
            self.fh.write(self._local_header(entry, entry.zip64_local))
            self.fh.seek(end)
            self.entries.append(entry)

    def add_file(self, path: str, name: str, st: os.stat_result) -> None:
        """Queue one file: read it in chunks (hashing it), deflate or store each chunk."""
        is_link = stat.S_ISLNK(st.st_mode)
        stored = is_link or st.st_size == 0 or should_store(name)
        entry = Entry(name=name, size=0, sha1="", method=0 if stored else 8, mode=st.st_mode, mtime_ns=st.st_mtime_ns)
        entry.dos_time, entry.dos_date = _dos_datetime(st.st_mtime)
        # A file that may pass 4 GiB gets ZIP64 sizes in its local header from the start.
        entry.zip64_local = st.st_size >= ZIP64_LIMIT - (1 << 20)
        digest = hashlib.sha1()  # the catalog's SHA-1 of every file, taken from this one read
        if is_link:
            entry.link = os.readlink(path)
            data = entry.link.encode("utf-8", errors="surrogateescape")
            digest.update(data)
            entry.sha1 = digest.hexdigest()
            self._queue(entry, _Done(_store_chunk(data)), len(data), True, True)
            return
        with open(path, "rb") as src:
            prev_tail, data, first = b"", src.read(CHUNK), True
            while True:
                following = src.read(CHUNK) if data else b""
                last = not following
                digest.update(data)
                if last:
                    entry.sha1 = digest.hexdigest()  # before the last chunk can be written
                if stored:
                    future = _Done(_store_chunk(data))
                else:
                    future = self.pool.submit(_deflate_chunk, data, self.level, prev_tail, last)
                self._queue(entry, future, len(data), first, last)
                if last:
                    return
                prev_tail = data[-WINDOW:] if not stored else b""
                data, first = following, False

    def finish(self) -> None:
        """Central directory and end records (ZIP64 ones when counts or offsets need them)."""
        while self.pending:
            self._write_next()
        cd_start = self.fh.tell()
        for e in self.entries:
            name = e.name.encode("utf-8")
            # ZIP64 extra: uncompressed size, compressed size, offset, each only if its field is marked.
            big = [v for v in (e.size, e.compressed, e.offset) if v >= ZIP64_LIMIT]
            extra = struct.pack("<HH", 1, 8 * len(big)) + b"".join(struct.pack("<Q", v) for v in big) if big else b""
            flags = 0x800 | (0x2 if e.method == 8 and self.level >= 8 else 0)
            self.fh.write(
                struct.pack(
                    "<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 63, 45 if big else 20, flags, e.method,
                    e.dos_time, e.dos_date, e.crc,
                    _field(e.compressed), _field(e.size),
                    len(name), len(extra), 0, 0, 0, (e.mode & 0xFFFF) << 16, _field(e.offset),
                ) + name + extra
            )  # fmt: skip
        cd_end = self.fh.tell()
        count, cd_size = len(self.entries), cd_end - cd_start
        if count >= 0xFFFF or cd_start >= ZIP64_LIMIT or cd_size >= ZIP64_LIMIT:
            self.fh.write(
                struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 63, 45, 0, 0, count, count, cd_size, cd_start)
            )
            self.fh.write(struct.pack("<IIQI", 0x07064B50, 0, cd_end, 1))
        self.fh.write(
            struct.pack(
                "<IHHHHIIH", 0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                _field(cd_size), _field(cd_start), 0,
            )
        )  # fmt: skip


def check_zip(path: Path, expected: list[Entry]) -> None:
    """Read the archive back: names, sizes and every CRC must match what was written."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if [i.filename for i in infos] != [e.name for e in expected]:
                raise ArchiveError(f"{path.name}: the archive's file list does not match what was written")
            for info, e in zip(infos, expected, strict=True):
                if info.file_size != e.size or e.crc != info.CRC:
                    raise ArchiveError(f"{path.name}: {e.name} has a wrong size or CRC")
            bad = zf.testzip()
            if bad is not None:
                raise ArchiveError(f"{path.name}: CRC check failed for {bad}")
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(f"{path.name}: unreadable after writing: {exc}") from None


# --- reading: extraction, where the archive may have been crafted -----------------------------------


def safe_name(name: str) -> bool:
    """A file's path that stays inside the folder it is restored into."""
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _name_problem(name: str, base: Path) -> str | None:
    """Why an entry's path cannot be a file inside ``base`` (None: it can)."""
    if not safe_name(name) or not (base / name).resolve().is_relative_to(base):
        return f"it would land outside {base}"
    if any(len(os.fsencode(part)) > NAME_MAX for part in name.split("/")):
        return f"a name longer than {NAME_MAX} bytes, which no file system here can hold"
    if len(os.fsencode(base / name)) >= PATH_MAX:
        return f"a path longer than the {PATH_MAX} bytes a file system here can hold"
    return None


def _entry_problem(info: zipfile.ZipInfo, promised: dict[str, int] | None) -> str | None:
    """Why a file entry cannot be extracted as one of the run's files (None: it can)."""
    if info.flag_bits & 0x1:
        return "it is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"compression method {info.compress_type}, which this system never writes"
    if promised is None:
        return None
    if info.filename not in promised:
        return "not a file of the run's manifest"
    if info.file_size > promised[info.filename]:
        return f"it says it holds {info.file_size} bytes, the run's manifest {promised[info.filename]}"
    return None


def _check_entries(zip_path: Path, infos: list[zipfile.ZipInfo], base: Path, promised: dict[str, int] | None) -> None:
    """Refuse the whole archive, before anything is written, unless its entries can all be files of
    one folder: safe names the file system can hold, each once, no name both a file and a folder,
    and (with ``promised``) each a file of the manifest no bigger than it says."""
    files: set[str] = set()
    folders: set[str] = set()
    for info in infos:
        name = info.filename.rstrip("/") if info.is_dir() else info.filename
        parents = ["/".join(name.split("/")[:i]) for i in range(1, name.count("/") + 1)]
        clash = next((p for p in parents if p in files), None)
        if (why := _name_problem(name, base)) is None:
            if clash is not None or (info.is_dir() and name in files):
                why = f"{clash or name!r} is a file in this archive: it cannot also be a folder"
            elif not info.is_dir() and name in folders:
                why = f"{name!r} is a folder in this archive: it cannot also be a file"
            elif not info.is_dir() and name in files:
                why = "it is in the archive twice"
            elif not info.is_dir():
                why = _entry_problem(info, promised)
        if why is not None:
            raise TransferError(f"the archive {zip_path.name}: refusing entry {info.filename!r} ({why})")
        (folders if info.is_dir() else files).add(name)
        folders.update(parents)


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int, zip_path: Path) -> None:
    """One entry into ``target``, stopping before more than ``limit`` bytes are written (the size the
    entry's header may lie about; zipfile checks the CRC at the end)."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(min(CHUNK, limit - written + 1)):
            written += len(chunk)
            if written > limit:
                why = f"it holds more than the {limit} bytes the run's manifest lists: stopped there"
                raise TransferError(f"the archive {zip_path.name}: refusing entry {info.filename!r} ({why})")
            dst.write(chunk)


def extract(zip_path: Path, to: Path, names: set[str] | None = None, promised: dict[str, int] | None = None) -> int:
    """Extract the regular files of an archive (those in ``names``, or all) inside ``to``; returns
    how many. The archive is refused whole, before anything is written, if any entry could land
    outside ``to`` (zip-slip), cannot be held by a file system, is there twice or is both a file and
    a folder; with ``promised`` (the run's manifest: name -> size) also if an entry is not one of its
    files or says it is bigger. No file grows past its promised size (its declared one without
    ``promised``): a zip bomb stops there, and the files are unique, so the total stays within the
    manifest's. Link entries are skipped: links are made from the manifest, never through one. On
    a refusal, what this call wrote is removed."""
    base = to.resolve()
    written: list[Path] = []
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
            _check_entries(zip_path, infos, base, promised)
            for info in infos:
                if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
                    continue
                if names is not None and info.filename not in names:
                    continue
                target = base / info.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                written.append(target)
                limit = promised[info.filename] if promised is not None else info.file_size
                _copy(zf, info, target, limit, zip_path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        _remove(written)
        raise TransferError(f"the archive {zip_path.name} cannot be read: {exc}") from None
    except BaseException:
        _remove(written)
        raise
    return len(written)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(".zip")] + MANIFEST_SUFFIX)


def archives_of(archive_dir: Path, dataset: str) -> list[Path]:
    """This dataset's archives that have a manifest, oldest first (names sort by time)."""
    found = []
    for man in archive_dir.glob(f"{dataset}_archive_*{MANIFEST_SUFFIX}"):
        zip_path = man.with_name(man.name[: -len(MANIFEST_SUFFIX)] + ".zip")
        if zip_path.is_file():
            found.append(zip_path)
    return sorted(found)


def read_manifest(archive: Path) -> dict | None:
    try:
        return json.loads(manifest_path(archive).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def file_digests(path: Path) -> tuple[str, str]:
    """SHA-256 and SHA-1 of a whole file (an archive), in one read."""
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def catalog_manifest(archive: Path) -> Manifest | None:
    """The catalog's manifest of the state an archive holds (None: no usable local manifest)."""
    made = read_manifest(archive)
    if not made or not made.get("sha256") or any("sha1" not in m for m in made.get("files", {}).values()):
        return None  # made by an earlier version: no SHA-1s
    files = sorted(made["files"])
    entries = made["files"]
    return Manifest(
        dataset=made["dataset"],
        mode="archive",
        files=files,
        sizes=[entries[f]["size"] for f in files],
        mtimes=[entries[f].get("mtime", 0) for f in files],
        sha1=[entries[f]["sha1"] for f in files],
        links={f: entries[f]["link"] for f in files if entries[f].get("link") is not None},
        archive={"name": made["archive"], "size": made["size"], "sha256": made["sha256"], "sha1": made["sha1"]},
    )


def unchanged_archive(archive_dir: Path, dataset: str, root: str, files: list[str], sizes: dict[str, int],
                      threads: int) -> Path | None:  # fmt: skip
    """The latest archive whose manifest matches the current files by name, size and SHA-1."""
    existing = archives_of(archive_dir, dataset)
    if not existing or catalog_manifest(existing[-1]) is None:
        return None
    latest = existing[-1]
    recorded = (read_manifest(latest) or {}).get("files", {})
    if sorted(recorded) != files or any(recorded[f]["size"] != sizes[f] for f in files):
        return None  # a different file set or size: changed, no need to read anything
    try:
        hashes = hash_files(root, files, threads)
    except OSError as exc:
        raise _source_error(exc, root) or exc from None
    return latest if all(hashes[f] == recorded[f]["sha1"] for f in files) else None


def _source_error(exc: OSError, root: str) -> ArchiveError | None:
    """A source file that cannot be read, named as such (not as a problem of the archive folder)."""
    name = os.fsdecode(exc.filename) if exc.filename is not None else ""
    if not name.startswith(root.rstrip("/") + "/"):
        return None
    return ArchiveError(f"cannot read source file {name}: {(exc.strerror or str(exc)).lower()}")


def free_name(archive_dir: Path, dataset: str, timestamp: str) -> Path:
    """CSVs_archive_TIMESTAMP.zip, or ..._2.zip if a different archive already has that name."""
    base = f"{dataset}_archive_{timestamp}"
    candidate, n = archive_dir / f"{base}.zip", 1
    while candidate.exists() or manifest_path(candidate).exists():
        n += 1
        candidate = archive_dir / f"{base}_{n}.zip"
    return candidate


def _publish(tmp: Path, final: Path) -> None:
    """Give the checked archive its final name, never replacing an existing file."""
    try:
        os.link(tmp, final)  # fails if ``final`` exists
    except FileExistsError:
        raise ArchiveError(f"{final.name} appeared while it was being written; not overwritten") from None
    except OSError:  # a filesystem without hard links
        if final.exists():
            raise ArchiveError(f"{final.name} already exists; not overwritten") from None
        os.rename(tmp, final)


def clear_stale_partials(archive_dir: Path) -> list[Path]:
    """Remove partial archives left by runs that were killed (their process is gone)."""
    removed = []
    for partial in archive_dir.glob(".*.partial"):
        try:
            pid = int(partial.name.rsplit(".", 2)[-2])
        except ValueError:
            continue
        if not process_alive(pid):
            partial.unlink(missing_ok=True)
            removed.append(partial)
    return removed


def create(
    archive_dir: Path, dataset: str, timestamp: str, root: str, files: list[str], level: int, threads: int,
    on_bytes=None,
) -> ArchiveResult:  # fmt: skip
    """Write a new archive of ``files`` (relative to ``root``); see the module docstring."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    clear_stale_partials(archive_dir)
    final = free_name(archive_dir, dataset, timestamp)
    tmp = archive_dir / f".{final.name}.{os.getpid()}.partial"
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool, open(tmp, "wb") as fh:
            writer = ZipWriter(fh, level, pool, in_flight=2 * threads, on_bytes=on_bytes)
            for name in files:
                path = os.path.join(root, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    raise ArchiveError(f"{path} vanished while the archive was being made") from None
                writer.add_file(path, name, st)
            writer.finish()
            fh.flush()
            os.fsync(fh.fileno())
        # The archive's own digests (for the catalog, and to check it when it is fetched back) are
        # read beside the CRC check, which reads it too: the second read comes from the page cache.
        with ThreadPoolExecutor(max_workers=1) as pool:
            digests = pool.submit(file_digests, tmp)
            check_zip(tmp, writer.entries)
            sha256, sha1 = digests.result()
        manifest = {
            "dataset": dataset,
            "archive": final.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "level": level,
            "size": tmp.stat().st_size,
            "sha256": sha256,
            "sha1": sha1,
            "files": {e.name: {"size": e.size, "sha1": e.sha1, "mtime": e.mtime_ns,
                               **({"link": e.link} if e.link is not None else {})} for e in writer.entries},
        }  # fmt: skip
        man_tmp = archive_dir / f".{manifest_path(final).name}.{os.getpid()}.partial"
        man_tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        _publish(tmp, final)
        os.replace(man_tmp, manifest_path(final))
    except OSError as exc:
        raise _source_error(exc, root) or ArchiveError(
            f"cannot write the archive in {archive_dir}: {exc.strerror or exc}"
        ) from None
    finally:
        for leftover in (tmp, archive_dir / f".{manifest_path(final).name}.{os.getpid()}.partial"):
            leftover.unlink(missing_ok=True)
    return ArchiveResult(
        path=final,
        created=True,
        files=len(writer.entries),
        bytes=sum(e.size for e in writer.entries),
        compressed_bytes=final.stat().st_size,
        manifest=manifest,
    )


def prune(archive_dir: Path, dataset: str, keep_last: int, keep: Path) -> list[Path]:
    """Delete this dataset's local archives beyond the newest ``keep_last`` (never ``keep``)."""
    existing = archives_of(archive_dir, dataset)
    removed = []
    for old in existing[: max(len(existing) - keep_last, 0)]:
        if old == keep:
            continue
        manifest_path(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
        removed.append(old)
    return removed
