"""The ZIP writer: standard archives that zipfile and Info-ZIP's unzip accept, byte for byte."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest
from backup import archive
from backup.errors import TransferError
from conftest import hash_tree


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


# --- extraction: the archive may have been crafted at a destination -------------------------------


def write_zip(path: Path, entries) -> Path:
    """An archive of (name or ZipInfo, bytes) entries, in that order, duplicates allowed."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name"
        for name, data in entries:
            zf.writestr(name, data)
    return path


def info(name: str, **attrs) -> zipfile.ZipInfo:
    made = zipfile.ZipInfo(name)
    for key, value in attrs.items():
        setattr(made, key, value)
    return made


def test_extraction_checks_entries_against_the_manifest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = make_tree(src)
    made = archive.create(tmp_path / "zips", "CSVs", "T", str(src), names, 9, 2)
    promised = {n: f["size"] for n, f in archive.read_manifest(made.path)["files"].items()}
    assert archive.extract(made.path, tmp_path / "all", promised=promised) == len(names) - 1  # the link is not made
    assert hash_tree(tmp_path / "all") == {n: h for n, h in hash_tree(src).items() if n != "link.csv"}
    assert archive.extract(made.path, tmp_path / "one", {"big.csv"}, promised) == 1
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["big.csv"]
    smaller = {**promised, "big.csv": promised["big.csv"] - 1}
    with pytest.raises(TransferError, match=r"refusing entry 'big.csv' \(it says it holds \d+ bytes, the run's"):
        archive.extract(made.path, tmp_path / "small", promised=smaller)
    without = {n: s for n, s in promised.items() if n != "empty.csv"}
    with pytest.raises(TransferError, match="refusing entry 'empty.csv' \\(not a file of the run's manifest\\)"):
        archive.extract(made.path, tmp_path / "without", promised=without)
    assert not (tmp_path / "small").exists() and not (tmp_path / "without").exists()


REFUSED = {
    "a file, then a/b": ([("a", b"x"), ("a/b", b"y")], "refusing entry 'a/b' ('a' is a file in this archive"),
    "a/b, then a file a": ([("a/b", b"y"), ("a", b"x")], "refusing entry 'a' ('a' is a folder in this archive"),
    "a folder, then a file": ([("a/", b""), ("a", b"x")], "refusing entry 'a' ('a' is a folder in this archive"),
    "a file, then a folder": ([("a", b"x"), ("a/", b"")], "refusing entry 'a/' ('a' is a file in this archive"),
    "a file twice": ([("a", b"x"), ("a", b"y")], "refusing entry 'a' (it is in the archive twice)"),
    "a name over 255 bytes": ([("d/" + "é" * 128, b"x")], "a name longer than 255 bytes"),
    "a path over 4096 bytes": ([("/".join(["d" * 200] * 21), b"x")], "a path longer than the 4096 bytes"),
    "a name with an empty part": ([("a//b", b"x")], "refusing entry 'a//b' (it would land outside"),
    "another compression method": ([(info("z", compress_type=zipfile.ZIP_BZIP2), b"x")], "compression method 12"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_an_archive_that_cannot_be_one_folder_is_refused_before_anything_is_written(tmp_path, case):
    entries, why = REFUSED[case]
    crafted = write_zip(tmp_path / "crafted.zip", [("fine.csv", b"fine"), *entries])
    with pytest.raises(TransferError, match="^the archive crafted.zip: ") as refused:
        archive.extract(crafted, tmp_path / "out")
    assert why in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_an_encrypted_entry_is_refused(tmp_path):
    """zipfile would stop with a RuntimeError (a password is needed): refused like the others."""
    crafted = write_zip(tmp_path / "crafted.zip", [("e", b"x")])
    data = bytearray(crafted.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the flag bits: bit 0, encrypted
        data[data.find(sig) + offset] |= 0x1
    crafted.write_bytes(bytes(data))
    with pytest.raises(TransferError, match=r"^the archive crafted.zip: refusing entry 'e' \(it is encrypted\)$"):
        archive.extract(crafted, tmp_path / "out")


def test_a_bomb_stops_at_the_promised_size(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("big.csv", "w") as fh:
        for _ in range(64):
            fh.write(bytes(1 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(TransferError, match="it says it holds 67108864 bytes, the run's manifest 1000"):
        archive.extract(bomb, tmp_path / "out", promised={"big.csv": 1000})
    # Even if the header were believed (a reader that trusts a lying size), the copy stops there.
    monkeypatch.setattr(archive, "_check_entries", lambda *args: None)
    written: list[Path] = []
    monkeypatch.setattr(archive, "_remove", written.extend)
    with pytest.raises(TransferError, match="more than the 1000 bytes the run's manifest lists: stopped there"):
        archive.extract(bomb, tmp_path / "out", promised={"big.csv": 1000})
    assert len(written) == 1 and written[0].stat().st_size <= 1000


def test_a_refusal_midway_removes_what_was_written(tmp_path):
    """An entry whose declared size lies: zipfile stops at that size and finds the CRC wrong."""
    lying = write_zip(tmp_path / "lying.zip", [("first.csv", b"fine"), ("second.csv", b"0" * 5000)])
    data = bytearray(lying.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.rfind(sig)
        data[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    lying.write_bytes(bytes(data))
    with pytest.raises(TransferError, match="^the archive lying.zip cannot be read: Bad CRC-32 for file 'second.csv'"):
        archive.extract(lying, tmp_path / "out", promised={"first.csv": 4, "second.csv": 10})
    assert [p for p in (tmp_path / "out").rglob("*") if p.is_file()] == []
