"""Many files onto a mounted share go by several rsyncs side by side (each file costs round trips
to the NAS that one rsync pays one after the other); every byte still lands, once, and what a
later run overwrites is kept as a version."""

from __future__ import annotations

import json
import re

from conftest import CSV_NAMES, RESULT_DIRS, hash_tree


def share_config(lab, fuse_smb, folder: str, **extra) -> None:
    lab.config["backups"]["destinations"]["smb"] = {
        "base_path": f"smb://127.0.0.1/share/{folder}",
        "csvs_path": f"smb://127.0.0.1/share/{folder}/flyTrackingData",
        "results_path": f"smb://127.0.0.1/share/{folder}/Figures",
        "mount_point": str(fuse_smb.point),
        "require_mount": True,
        **extra,
    }
    lab.save()


def sends(lab, dataset: str) -> list[str]:
    """The rsync commands that sent the dataset to smb in the last run (from its job log)."""
    run = sorted((lab.workdir / "logs").iterdir())[-1]
    log = (run / "manual" / f"sync_smb_{dataset}.log").read_text()
    return [line for line in log.splitlines() if re.search(r"\$ \S*rsync .*--out-format", line)]


def test_many_files_to_a_mounted_share_go_by_parallel_rsyncs(lab, samba, fuse_smb):
    for i in range(240):
        lab.write(lab.results_root / RESULT_DIRS[i % len(RESULT_DIRS)] / f"many{i:03}.svg", f"<svg>{i}</svg>" * 40)
    share_config(lab, fuse_smb, "parallel", transfers=4)
    first = lab.cli("--smb-only")
    assert first.returncode == 0, first.stdout + first.stderr
    figures = samba.share / "parallel" / "Figures"
    assert hash_tree(figures) == lab.results_hashes()
    assert hash_tree(samba.share / "parallel" / "flyTrackingData") == lab.csv_hashes()
    parallel = sends(lab, "Results")
    assert len(parallel) == 4 and all("--files-from=" in cmd for cmd in parallel), parallel
    assert len(sends(lab, "CSVs")) == 1  # six files: one rsync
    run = next((lab.workdir / ".backup/runs").iterdir())
    record = json.loads((run / "manual/smb/Results.json").read_text())
    assert record["status"] == "ok" and record["files_sent"] == len(lab.results_hashes())

    # Changed files are sent again by the parallel rsyncs, their old copies kept as versions.
    changed = [f"{RESULT_DIRS[i % len(RESULT_DIRS)].rstrip('/')}/many{i:03}.svg" for i in (3, 100, 239)]
    old = {name: (figures / name).read_bytes() for name in changed}
    for name in changed:
        lab.write(lab.results_root / name, "<svg>new and longer</svg>")
    second = lab.cli("--smb-only")
    assert second.returncode == 0, second.stdout + second.stderr
    assert hash_tree(figures) == lab.results_hashes()
    (versions,) = (samba.share / "parallel" / "Figures.versions").iterdir()
    assert {n: (versions / n).read_bytes() for n in changed} == old
    assert not [p for p in versions.rglob("*") if p.is_file() and str(p.relative_to(versions)) not in changed]
    assert len(sends(lab, "Results")) == 4
    assert set(CSV_NAMES) <= set(hash_tree(samba.share / "parallel" / "flyTrackingData"))
