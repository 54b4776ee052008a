"""Names a destination cannot hold are named once as 'cannot be stored at DEST', the rest is sent
and verified, and no file lands on another file's name: a real Samba share (through rclone, and
through a mount written by rsync), Box as a loopback WebDAV remote, secured storage by rsync."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import hash_tree
from test_real_servers import use_servers

ODD = {
    "plain/normal.csv": b"normal\n",
    "case/Plot.csv": b"UPPER first\n",
    "case/plot.csv": b"lower second\n",
    "Case/other.csv": b"folder differs by case\n",
    "bad/CON": b"device name\n",
    "bad/aux.txt": b"device name with extension\n",
    "bad/a:b.csv": b"colon\n",
    "bad/trail.": b"trailing dot\n",
    "bad/trail ": b"trailing space\n",
    "bad/q?.csv": b"question\n",
    "bad/st*r.csv": b"star\n",
    'bad/quo"te.csv': b"quote\n",
    "bad/l<t>.csv": b"angles\n",
    "bad/p|pe.csv": b"pipe\n",
    "bad/back\\slash.csv": b"backslash\n",
    "bad/new\nline.csv": b"newline\n",
    "long/" + "/".join(["d" * 100] * 11) + "/deep.csv": b"too long a path for a share\n",
}
NOT_UTF8 = b"bad/inv\xffalid.csv"
SHARE_HOLDS = {"plain/normal.csv", "Case/other.csv"}  # "Case" sorts before "case": that folder is the one kept
RCLONE_REFUSES = {"bad/new\nline.csv", os.fsdecode(NOT_UTF8)}


def make_odd(lab) -> Path:
    root = lab.csv_root / "Odd"
    for name, data in ODD.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    with open(os.fsencode(root) + b"/" + NOT_UTF8, "wb") as fh:
        fh.write(b"not utf-8\n")
    os.mkfifo(root / "plain" / "pipe")
    lab.config["backups"]["sources"]["CSVs"]["include"].append("Odd")
    lab.save()
    return root


def held(folder: Path) -> dict[str, str]:
    return {n[len("Odd/") :]: h for n, h in hash_tree(folder).items() if n.startswith("Odd/")}


def row(result, dest: str) -> str:
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith(dest) and " CSVs " in ln]
    return line


def refused_in_log(lab, dest: str) -> list[str]:
    marker = f"cannot be stored at {dest}, not sent: "
    lines = (lab.root / "backup.log").read_text(errors="replace").splitlines()
    return [ln.split(marker, 1)[1] for ln in lines if marker in ln and "] manual " in ln]  # the jobs' lines


def check_share(lab, source: Path, share_folder: Path, first, second, again) -> None:
    expected = {n: h for n, h in hash_tree(source).items() if n in SHARE_HOLDS}
    assert held(share_folder) == expected
    for result in (first, second):
        assert result.returncode == 3, result.stdout  # warnings: the rest is safe, some names are not
        line = row(result, "smb")
        assert "WARNING" in line and "cannot be stored at smb, not sent:" in line, line
    # Every refused name once per run in the log (16 of the 18 files), never as sent.
    logged = refused_in_log(lab, "smb")
    assert len(logged) == 2 * 16, logged
    assert sum(1 for ln in logged if ln.startswith("Odd/case/plot.csv (same name as Odd/Case apart from case)")) == 2
    assert sum(1 for ln in logged if ln.startswith("Odd/bad/new\\nline.csv ")) == 2
    # Nothing landed on another file's name, nothing was replaced, the second run sent nothing.
    contents = {p.read_bytes() for p in share_folder.rglob("*") if p.is_file()}
    assert b"lower second\n" not in contents and b"UPPER first\n" not in contents
    assert not [p for p in share_folder.parent.rglob("*.versions")]
    assert "ok (0 of 6" not in row(second, "smb") and " 0/8 " in row(second, "smb"), row(second, "smb")
    # A twin that sorts first, added later, never lands on the copy already there.
    (source / "plain" / "Normal.csv").write_bytes(b"a later twin\n")
    third = again()
    assert third.returncode == 3, third.stdout
    assert held(share_folder) == expected
    assert (
        refused_in_log(lab, "smb").count("Odd/plain/Normal.csv (same name as Odd/plain/normal.csv apart from case)")
        == 1
    )


def test_names_a_share_cannot_hold_through_rclone_and_the_rest_of_every_destination(
    lab, samba, webdav, sshd, monkeypatch
):
    source = make_odd(lab)
    smb, box, _ = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="names")
    lab.config["backups"]["destinations"]["secured"] = {"enabled": True, "base_path": str(lab.secured)}
    lab.save()
    first, second = lab.cli(), lab.cli()
    # Box (here a case-sensitive WebDAV remote): only what rclone cannot be told about is refused.
    everything = hash_tree(source)
    assert held(box / "CSVs") == {n: h for n, h in everything.items() if n not in RCLONE_REFUSES}
    assert sorted(ln.split(" (")[0] for ln in refused_in_log(lab, "box")) == sorted(
        ["Odd/bad/inv\\xffalid.csv", "Odd/bad/new\\nline.csv"] * 2
    )
    # Secured storage, rsync to a POSIX folder: every name.
    assert held(lab.secured / "CSVs") == everything
    assert " WARNING " in row(second, "secured") and "FIFOs" in row(second, "secured")  # the FIFO, named
    assert not refused_in_log(lab, "secured")
    check_share(lab, source, smb / "flyTrackingData", first, second, lambda: lab.cli("--smb-only"))


def test_names_a_share_cannot_hold_through_a_mount(lab, samba, fuse_smb):
    source = make_odd(lab)
    lab.config["backups"]["destinations"]["smb"] = {
        "base_path": "smb://127.0.0.1/share/names-mounted",
        "csvs_path": "smb://127.0.0.1/share/names-mounted/flyTrackingData",
        "results_path": "smb://127.0.0.1/share/names-mounted/Figures",
        "mount_point": str(fuse_smb.point),
        "require_mount": True,
    }
    lab.save()
    first, second = lab.cli("--smb-only"), lab.cli("--smb-only")
    again = lambda: lab.cli("--smb-only")  # noqa: E731
    check_share(lab, source, samba.share / "names-mounted/flyTrackingData", first, second, again)
