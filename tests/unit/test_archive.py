"""The ZIP writer: standard archives that zipfile and Info-ZIP's unzip accept, byte for byte."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from backup import archive


def make_tree(root: Path) -> list[str]:
    rng = random.Random(7)
    files = {
        "big.csv": "".join(f"{rng.random():.5f},{rng.random():.5f}\n" for _ in range(250_000)).encode(),  # ~3.5 MiB
        "fig(1).png": bytes(rng.randrange(256) for _ in range(5000)),
        "sub dir/unicodé α.svg": b"<svg>" + b"<path d='M0 0'/>" * 500 + b"</svg>",
        "-dash.txt": b"leading dash",
        "empty.csv": b"",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    os.symlink("big.csv", root / "link.csv")
    return sorted([*files, "link.csv"])


def test_round_trip_with_zipfile_and_unzip(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    names = make_tree(src)
    result = archive.create(out, "CSVs", "20260101_120000", str(src), names, 9, 2)
    assert result.path.name == "CSVs_archive_20260101_120000.zip" and result.created
    with zipfile.ZipFile(result.path) as zf:
        assert zf.namelist() == names
        for name in names:
            if name == "link.csv":
                continue
            assert zf.read(name) == (src / name).read_bytes()
        methods = {i.filename: i.compress_type for i in zf.infolist()}
    assert methods["big.csv"] == zipfile.ZIP_DEFLATED and methods["fig(1).png"] == zipfile.ZIP_STORED
    assert methods["empty.csv"] == zipfile.ZIP_STORED
    assert result.compressed_bytes < 0.6 * result.bytes
    if shutil.which("unzip"):
        check = subprocess.run(["unzip", "-t", str(result.path)], capture_output=True, text=True)
        assert check.returncode == 0 and "No errors detected" in check.stdout
        extract = tmp_path / "x"
        subprocess.run(["unzip", "-q", str(result.path), "-d", str(extract)], check=True)
        assert os.readlink(extract / "link.csv") == "big.csv"  # stored as a link, as Info-ZIP does
        assert (extract / "sub dir/unicodé α.svg").read_bytes() == (src / "sub dir/unicodé α.svg").read_bytes()
    manifest = archive.read_manifest(result.path)
    assert manifest["files"]["-dash.txt"]["size"] == 12
    assert set(manifest["files"]) == set(names)


def test_zip64_records_are_valid(tmp_path, monkeypatch):
    monkeypatch.setattr(archive, "ZIP64_LIMIT", 1000)  # pretend 1000 bytes is 4 GiB
    src = tmp_path / "src"
    src.mkdir()
    names = make_tree(src)
    result = archive.create(tmp_path / "out", "Results", "T", str(src), names, 6, 2)
    with zipfile.ZipFile(result.path) as zf:
        assert zf.testzip() is None
        assert zf.read("big.csv") == (src / "big.csv").read_bytes()
    if shutil.which("unzip"):
        assert subprocess.run(["unzip", "-tq", str(result.path)], capture_output=True).returncode == 0


def test_never_overwrites_and_finds_unchanged(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    names = make_tree(src)
    first = archive.create(out, "CSVs", "T", str(src), names, 9, 2)
    before = first.path.read_bytes()
    sizes = {n: os.lstat(src / n).st_size for n in names}
    assert archive.unchanged_archive(out, "CSVs", str(src), names, sizes, 2) == first.path
    (src / "-dash.txt").write_bytes(b"leading dish")  # same size, different content
    assert archive.unchanged_archive(out, "CSVs", str(src), names, sizes, 2) is None
    second = archive.create(out, "CSVs", "T", str(src), names, 9, 2)
    assert second.path.name == "CSVs_archive_T_2.zip"
    assert first.path.read_bytes() == before
    assert archive.prune(out, "CSVs", 1, second.path) == [first.path]
    assert not first.path.exists() and not archive.manifest_path(first.path).exists() and second.path.exists()


def test_corruption_is_detected(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = make_tree(src)
    result = archive.create(tmp_path / "out", "CSVs", "T", str(src), names, 9, 2)
    data = bytearray(result.path.read_bytes())
    data[200] ^= 0xFF
    result.path.write_bytes(bytes(data))
    entries = [
        archive.Entry(name=i.filename, size=i.file_size, sha1="", crc=i.CRC)
        for i in zipfile.ZipFile(tmp_path / "out" / "CSVs_archive_T.zip").infolist()
    ]
    with pytest.raises(archive.ArchiveError):
        archive.check_zip(result.path, entries)


def test_stale_partial_of_dead_process_is_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = out / f".CSVs_archive_T.zip.{dead.pid}.partial"
    live = out / f".CSVs_archive_T.zip.{os.getpid()}.partial"
    stale.write_bytes(b"x")
    live.write_bytes(b"y")
    assert archive.clear_stale_partials(out) == [stale]
    assert live.exists()
