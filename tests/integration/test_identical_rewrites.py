"""Files rewritten at the source with identical bytes (a new time) are not sent again and leave
no version copy, through every transport; a real change among them is still sent and versioned.
Local destinations (rsync to folders; Box as an rclone alias, which keeps hashes) and real
servers (Samba through rclone and through a FUSE mount written by rsync, WebDAV that keeps
neither hashes nor settable times, SSH)."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from conftest import hash_tree
from test_real_servers import use_servers

FIGURES = 28  # the Lab's Results: 8 folders of 3 figures, and 4 tricky names


def rewrite_everything(lab) -> tuple[Path, bytes, Path, bytes]:
    """Every figure and CSV rewritten with a new time; one figure and one CSV really changed
    (the figure keeps its size: only its bytes tell)."""
    later = time.time() + 10
    for path in [*lab.results_root.rglob("*"), *lab.csv_root.rglob("*")]:
        if path.is_file():
            os.utime(path, (later, later))
    figure = lab.results_root / "Results/Opto/PER-Envelopes/fig1.png"
    old_figure = figure.read_bytes()
    figure.write_bytes(bytes(reversed(old_figure)))  # same size, other bytes
    csv = lab.csv_root / "model_predictions.csv"
    old_csv = csv.read_bytes()
    csv.write_bytes(old_csv + b"fly9,9,0.9,0.9\n")
    for path in (figure, csv):
        os.utime(path, (later + 1, later + 1))
    return figure, old_figure, csv, old_csv


def line(result, dest: str, dataset: str) -> str:
    (found,) = [ln for ln in result.stdout.splitlines() if ln.startswith(f"  manual {dest}/{dataset}:")]
    return found


def sent(result, dest: str, dataset: str) -> tuple[int, int]:
    match = re.search(r"\((\d+) of (\d+) files sent", line(result, dest, dataset))
    return int(match.group(1)), int(match.group(2))


def versions(folder: Path) -> dict[str, str]:
    return hash_tree(Path(f"{folder}.versions"))


def backup_ok(lab, *only: str) -> None:
    first = lab.cli(*only)
    assert first.returncode == 0, first.stdout


def check(lab, folders: dict[tuple[str, str], Path], *only: str):
    """After a first backup (``only``: of the destination the test is about): rewrites, a second
    backup, a third, and --verify."""
    figure, old_figure, csv, old_csv = rewrite_everything(lab)
    second = lab.cli(*only)
    assert second.returncode == 0, second.stdout
    run_id = second.stdout.split()[1].rstrip(":")
    for (dest, dataset), folder in folders.items():
        changed, old = (figure, old_figure) if dataset == "Results" else (csv, old_csv)
        root = lab.results_root if dataset == "Results" else lab.csv_root
        total = FIGURES if dataset == "Results" else 6
        assert sent(second, dest, dataset) == (1, total), line(second, dest, dataset)
        assert (
            f"{total - 1} rewritten with identical bytes, not sent again" in second.stdout.split("Backup summary")[1]
        ), second.stdout
        # Only the real change is versioned, with its old bytes.
        rel = changed.relative_to(root).as_posix()
        assert versions(folder) == {f"{run_id}/{rel}": hashlib.sha256(old).hexdigest()}, (dest, dataset)
        source = lab.results_hashes() if dataset == "Results" else lab.csv_hashes()
        assert {n: h for n, h in hash_tree(folder).items() if n in source} == source
    third = lab.cli(*only)
    assert third.returncode == 0, third.stdout
    for (dest, dataset), folder in folders.items():
        assert sent(third, dest, dataset)[0] == 0, line(third, dest, dataset)
        assert len(versions(folder)) == 1
    assert "rewritten with identical bytes" not in third.stdout
    verified = lab.cli("--verify", *only)  # the catalog's SHA-1s and the new times agree with what is there
    assert verified.returncode == 0, verified.stdout


def test_identical_rewrites_cost_nothing_on_local_destinations(backed_up):
    lab = backed_up
    folders = {
        ("smb", "CSVs"): lab.smb / "flyTrackingData",
        ("smb", "Results"): lab.smb / "Figures",
        ("box", "CSVs"): lab.box / "Ramanlab-Backups/CSVs",
        ("box", "Results"): lab.box / "Ramanlab-Backups/Results",
        ("secured", "CSVs"): lab.secured / "CSVs",
    }
    check(lab, folders)
    # rsync also gave the destination's copies the new time (no data sent): the next run needs no catalog.
    name = "Results/Opto/PER-Envelopes/fig0.png"
    assert (lab.smb / "Figures" / name).stat().st_mtime == (lab.results_root / name).stat().st_mtime


def test_identical_rewrites_cost_nothing_on_real_servers(lab, samba, webdav, sshd, monkeypatch):
    smb, box, secured = use_servers(lab, samba, webdav, sshd, monkeypatch, folder="rewrites")
    folders = {
        ("smb", "CSVs"): smb / "flyTrackingData",
        ("smb", "Results"): smb / "Figures",
        ("box", "CSVs"): box / "CSVs",
        ("box", "Results"): box / "Results",
        ("secured", "CSVs"): secured / "CSVs",
    }
    backup_ok(lab)
    check(lab, folders)


def test_identical_rewrites_cost_nothing_on_a_mounted_share(lab, samba, fuse_smb):
    """rsync onto the FUSE-mounted Samba share: the time pass sends no data there either."""
    lab.config["backups"]["destinations"]["smb"] = {
        "base_path": "smb://127.0.0.1/share/rewrites-mounted",
        "csvs_path": "smb://127.0.0.1/share/rewrites-mounted/flyTrackingData",
        "results_path": "smb://127.0.0.1/share/rewrites-mounted/Figures",
        "mount_point": str(fuse_smb.point),
        "require_mount": True,
    }
    lab.save()
    share = samba.share / "rewrites-mounted"
    backup_ok(lab, "--smb-only")
    check(lab, {("smb", "CSVs"): share / "flyTrackingData", ("smb", "Results"): share / "Figures"}, "--smb-only")


def test_a_pipeline_that_puts_back_older_bytes_has_them_backed_up_after_it(lab, tmp_path):
    """`run`: the pre stage sends a hand-edited figure; the pipeline then writes the figure's older
    bytes again (same size, new time). Those are the source's content: the post stage must send
    them, not take them for a rewrite of what the destination held before the pre stage."""
    figure = lab.results_root / "Results/Opto/PER-Envelopes/fig0.png"
    older = figure.read_bytes()
    os.utime(figure, (time.time() - 100, time.time() - 100))
    assert lab.cli().returncode == 0  # the destinations hold the older bytes
    figure.write_bytes(bytes(reversed(older)))  # edited by hand, same size: the pre stage sends it
    os.utime(figure, (time.time() - 50, time.time() - 50))  # the pipeline's copy is newer still
    keep = tmp_path / "older.png"
    keep.write_bytes(older)
    lab.config["pipeline"] = {"command": f"cp '{keep}' '{figure}'"}  # the analysis writes the older bytes
    lab.save()
    result = lab.cli("run")
    assert result.returncode == 0, result.stdout
    name = "Results/Opto/PER-Envelopes/fig0.png"
    want = hashlib.sha256(older).hexdigest()
    for folder in (lab.smb / "Figures", lab.box / "Ramanlab-Backups/Results"):
        assert hash_tree(folder)[name] == want, folder


def test_a_dry_run_says_what_the_run_will_do_with_identical_rewrites(backed_up):
    lab = backed_up
    rewrite_everything(lab)
    dry = lab.cli("--dry-run")
    assert dry.returncode == 0, dry.stdout
    assert "27 rewritten with identical bytes since the last backup: not sent again" in dry.stdout
    assert "would send 1 of 28 files" in dry.stdout, dry.stdout  # the figure whose bytes changed
    run = lab.cli()
    assert "manual smb/Results: ok (1 of 28 files sent" in run.stdout, run.stdout
