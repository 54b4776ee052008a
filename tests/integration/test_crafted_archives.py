"""Restore from an archive crafted or damaged at a destination, with a catalog made to match it.

Someone with write access to Box replaces a run's archive of CSVs with a crafted one, and its
catalog with what matches it (a manifest naming the new archive's size and SHA-256, the run's
record pointing at that manifest), so the archive passes the catalog's checks and is extracted.
Each case must end in one line naming the archive and what is wrong, a non-zero exit, nothing
under a final name in the target, bytes written bounded by what the manifest promised; and
``--from any`` takes the run from the next destination that holds it.
"""

from __future__ import annotations

import hashlib
import json
import resource
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import PROJECT, env_with_venv, hash_tree

BOMB = 287 << 20  # what the crafted archive of the issue extracted to
FILE_LIMIT = 8 << 20  # no file the restore writes may grow past this (the manifest promises ~10 KB)


def compressed_backup(lab) -> None:
    """One backup of CSVs in compressed mode to Box, then secured (smb off: Box comes first for 'any')."""
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.workdir / "zips")}
    lab.config["backups"]["destinations"]["smb"]["enabled"] = False
    lab.save()
    result = lab.cli()
    assert result.returncode == 0, result.stdout + result.stderr


def zip_bytes(path: Path, entries) -> None:
    """An archive of ``entries``: (name, bytes) or (name, size in zeros, written a MiB at a time)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries:
            if name.endswith("/"):
                zf.writestr(name, b"")
            elif isinstance(data, int):
                info = zipfile.ZipInfo(name)
                info.compress_type = zipfile.ZIP_DEFLATED
                with zf.open(info, "w") as fh:
                    for _ in range(data >> 20):
                        fh.write(bytes(1 << 20))
            else:
                zf.writestr(name, data)


def lie_about_sizes(path: Path, size: int) -> None:
    """Every entry's uncompressed size, in its local header and the central directory, set to ``size``."""
    data = bytearray(path.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        while at != -1:
            data[at + offset : at + offset + 4] = struct.pack("<I", size)
            at = data.find(sig, at + 4)
    path.write_bytes(bytes(data))


def plant(lab, entries, declared: int | None = None) -> str:
    """Replace Box's archive of CSVs with one of ``entries`` (each saying it holds ``declared``
    bytes, if given), and its catalog with what matches it: a manifest listing the entries (the
    real files when the entries are sizes) and the archive's size and SHA-256, the run's record
    naming that manifest. This machine forgets what it had read of the catalogs (a fresh machine).
    Returns the archive's name."""
    from backup.manifest import Manifest

    box = lab.box / "Ramanlab-Backups"
    (archive,) = (box / "CSVs").glob("CSVs_archive_*.zip")
    (record_path,) = (box / ".lab-backup/runs").glob("*.json")
    run = json.loads(record_path.read_text())
    (record,) = [t for t in run["transfers"] if t["dataset"] == "CSVs"]
    real = Manifest.from_bytes((box / ".lab-backup/manifests" / record["manifest"]).read_bytes())
    zip_bytes(archive, entries)
    if declared is not None:
        lie_about_sizes(archive, declared)
    data = archive.read_bytes()
    files = {n: d for n, d in entries if not n.endswith("/")}
    if any(isinstance(d, int) for d in files.values()):
        names, sizes, sha1 = real.files, real.sizes, real.sha1
    else:
        names = sorted(files)
        sizes, sha1 = [len(files[n]) for n in names], [hashlib.sha1(files[n]).hexdigest() for n in names]
    forged = Manifest("CSVs", "archive", list(names), list(sizes), [0] * len(names), list(sha1), archive={
        "name": archive.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "sha1": hashlib.sha1(data).hexdigest()})  # fmt: skip
    (box / ".lab-backup/manifests" / forged.name).write_bytes(forged.to_bytes())
    record["manifest"] = forged.name
    record_path.write_text(json.dumps(run))
    subprocess.run(["rm", "-rf", str(lab.workdir / ".backup")], check=True)
    return archive.name


def restore(lab, source: str, to: Path) -> subprocess.CompletedProcess:
    """The restore command as a user runs it, no file it writes allowed past FILE_LIMIT (past it,
    the kernel refuses the write: a restore that extracts a bomb fails instead of filling the disk)."""
    cmd = [sys.executable, str(PROJECT / "scripts/backup_system.py"), "restore", "--from", source, "--dataset",
           "CSVs", "--to", str(to), "--config", str(lab.config_path), "--workdir", str(lab.workdir)]  # fmt: skip

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))

    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env_with_venv(), cwd=lab.workdir,
                          preexec_fn=limit)  # fmt: skip


def refused_in_one_line(lab, out: Path, archive: str, why: str) -> None:
    """Restoring from Box fails in one line naming the archive and ``why``, leaving nothing; 'any'
    restores the run from secured."""
    started = time.monotonic()
    result = restore(lab, "box", out)
    took = time.monotonic() - started
    said = result.stdout + result.stderr
    assert result.returncode == 1, said
    assert "Traceback" not in said and len(result.stderr.strip().splitlines()) == 1, said
    assert archive in result.stderr and why in result.stderr, said
    assert not out.exists(), f"left behind: {sorted(p.name for p in out.rglob('*'))}"
    assert took < 30, f"{took:.0f} s"
    result = restore(lab, "any", out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 from secured" in result.stdout and hash_tree(out) == lab.csv_hashes()


CASES = {
    "a file, then a/b": ([("a", b"file"), ("a/b", b"needs a as a folder")], "'a' is a file"),
    "a/b, then a file a": ([("a/b", b"makes a folder a"), ("a", b"file")], "'a' is a folder"),
    "a folder entry, then a file": ([("a/", b""), ("a", b"file")], "'a' is a folder"),
    "a name over 255 bytes": ([("x" * 256 + ".csv", b"long")], "longer than 255 bytes"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_crafted_archive_is_refused_in_one_line(lab, tmp_path, case):
    compressed_backup(lab)
    entries, why = CASES[case]
    archive = plant(lab, entries)
    refused_in_one_line(lab, tmp_path / "out", archive, why)


BIG = "all_envelope_rows_wide.csv"  # a file of the run: a few KB in the manifest
BOMBS = {
    "an entry that says it holds 287 MB": (None, f"it says it holds {BOMB} bytes, the run's manifest"),
    "an entry whose sizes lie": ("manifest", "Bad CRC-32"),
    "an entry not in the manifest": (None, "not a file of the run's manifest"),
}


@pytest.mark.parametrize("case", BOMBS)
def test_a_zip_bomb_stops_at_the_manifests_sizes(lab, tmp_path, case):
    """287 MB of zeros in a 280 KB archive: never written (the restore's files may not grow past
    FILE_LIMIT, and it must be quick), refused in one line; 'any' restores from secured."""
    compressed_backup(lab)
    declared, why = BOMBS[case]
    name = "not-in-the-manifest.csv" if "not in" in case else BIG
    size = (lab.csv_root / BIG).stat().st_size if declared else None
    archive = plant(lab, [(name, BOMB)], declared=size)
    assert (lab.box / "Ramanlab-Backups/CSVs" / archive).stat().st_size < BOMB // 500
    refused_in_one_line(lab, tmp_path / "out", archive, why)
