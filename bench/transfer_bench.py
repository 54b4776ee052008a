#!/usr/bin/env python3
"""Benchmark: this system against the bare tools doing the same transfers, same data, same run.

The bare tools are what a person would type by hand, one after the other: for each
dataset, `rsync -a --update` to the SMB folder and to secured storage, and
`rclone copy --update` to the Box remote (here a local folder behind the lab's remote
name, as in `make demo`). Ours is `scripts/backup_system.py backup` on a config with the
same three destinations (secured storage takes the CSVs only, as in the lab's config).
Each case runs several times, alternating who goes first, and prints the medians, the
ratio (ours / bare) and the peak memory of the whole process tree (PSS summed over every
process, sampled in one extra run of each: sampling slows a 2-core machine down).
Destinations are on the project's disk, except for case 3 (a RAM disk, see RAM below).

Cases (targets from issue 8):
  1 first      seed-shaped data (200 MB of CSVs, 3,000 figures, 700 MB) to empty destinations: ratio <= 1.10
  2 unchanged  the same again, nothing changed: ours <= (bare + `snakemake -n` of an empty workflow) x 1.3
  3 small      6 small CSVs and 100,000 small result files, first and unchanged: ratio <= 1.2 on both,
               as many Snakemake jobs as case 1, first transfer starting within 2 s
  4 memory     2 GB including one 1.5 GB file, first backup: peak memory < 200 MB
  5 verify     `backup --verify` of case 1's destinations against sha256sum of the source and of
               each destination's copy (source hashed once per destination, as the check does): ratio <= 1.2
  6 rewrites   case 1's data backed up, then every figure rewritten with identical bytes (a new time):
               faster than the bare tools (which send every figure again), no byte sent, no new
               file in a versions folder (issue 15)

    .venv/bin/python bench/transfer_bench.py [--runs 3] [--cases first,unchanged,small,memory,verify,rewrites]

Results: the table on the terminal, and bench/results/transfers.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import measure

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
WORK = HERE / "data" / "work"
# The 100,000-file case writes its destinations to a RAM disk where there is one: this VM's disk
# takes some 45 s of kernel time to create 100,000 files for either side, which drowns the
# per-file overhead being measured and alone would take most of the 15 minutes of `make bench`.
RAM = Path("/dev/shm/backup-bench")
RESULTS = HERE / "results"
VENV_BIN = Path(sys.executable).parent
RCLONE = shutil.which("rclone", path=str(VENV_BIN)) or shutil.which("rclone")
CASES = ("first", "unchanged", "small", "memory", "verify", "rewrites")


def write_config(data: Path, dest: Path, work: Path) -> Path:
    """The lab's config shape: CSVs and Results to SMB (a plain folder here), Box and secured."""
    names = "".join(f"        - {n}\n" for n in datasets.CSV_NAMES)
    (work / "rclone.conf").write_text(f"[Box-Folder]\ntype = alias\nremote = {dest / 'box'}\n")
    config = work / "bench.yaml"
    config.write_text(
        f"""backups:
  log_file: {work / "backup.log"}
  sources:
    CSVs:
      root: {data / "Data/Opto/Combined"}
      include:
{names}    Results:
      root: {data}
      include: [Results/Opto/]
  compression: {{enabled: false}}
  destinations:
    smb:
      enabled: true
      base_path: {dest / "smb"}
      csvs_path: {dest / "smb/flyTrackingData"}
      results_path: {dest / "smb/Figures"}
      require_mount: false
    box:
      enabled: true
      remote: Box-Folder
      folder: Backups
      rclone_config: {work / "rclone.conf"}
    secured:
      enabled: true
      base_path: {dest / "secured"}
"""
    )
    return config


def bare_script(data: Path, dest: Path, work: Path) -> list[str]:
    """The same five transfers by hand, one after the other, to the same layout (secured: CSVs only)."""
    csvs, results = data / "Data/Opto/Combined", data / "Results/Opto"
    q = shlex.quote
    conf = q(str(work / "rclone.conf"))
    steps = [
        f"mkdir -p {q(str(dest / 'smb/flyTrackingData'))} {q(str(dest / 'smb/Figures/Results/Opto'))}"
        f" {q(str(dest / 'secured/CSVs'))}",
        f"rsync -a --update {q(str(csvs))}/ {q(str(dest / 'smb/flyTrackingData'))}/",
        f"rsync -a --update {q(str(results))}/ {q(str(dest / 'smb/Figures/Results/Opto'))}/",
        f"{RCLONE} copy --update --config {conf} {q(str(csvs))} Box-Folder:Backups/CSVs",
        f"{RCLONE} copy --update --config {conf} {q(str(results))} Box-Folder:Backups/Results/Results/Opto",
        f"rsync -a --update {q(str(csvs))}/ {q(str(dest / 'secured/CSVs'))}/",
    ]
    return ["bash", "-ec", " && ".join(steps)]


def ours_cmd(config: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, str(PROJECT / "scripts/backup_system.py"), "backup", "--config", str(config),
            "--workdir", str(work), *extra]  # fmt: skip


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root, by sha256sum (not by the code under test)."""
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".versions" not in p.parts)
    out = {}
    for i in range(0, len(files), 2000):
        chunk = files[i : i + 2000]
        text = subprocess.run(["sha256sum", "--", *chunk], cwd=root, capture_output=True, text=True, check=True)
        for line in text.stdout.splitlines():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*")] = digest
    return out


class Case:
    """One dataset, with a bare and an ours workspace side by side."""

    def __init__(self, name: str, data: Path, ram: bool = False) -> None:
        self.name, self.data = name, data
        self.root = (RAM if ram and _ram_free() > 4e9 else WORK) / name
        shutil.rmtree(self.root, ignore_errors=True)
        self.ours_work, self.bare_work = self.root / "ours", self.root / "bare"
        for w in (self.ours_work, self.bare_work):
            w.mkdir(parents=True)
        self.ours_dest, self.bare_dest = self.ours_work / "dest", self.bare_work / "dest"
        self.config = write_config(data, self.ours_dest, self.ours_work)
        write_config(data, self.bare_dest, self.bare_work)

    def clear(self) -> None:
        for d in (self.ours_dest, self.bare_dest):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        shutil.rmtree(self.ours_work / ".backup", ignore_errors=True)

    def bare(self, memory: bool = False) -> measure.Measured:
        return measure.run(bare_script(self.data, self.bare_dest, self.bare_work), memory=memory)

    def ours(self, *extra: str, memory: bool = False) -> measure.Measured:
        return measure.run(ours_cmd(self.config, self.ours_work, *extra), cwd=self.ours_work, memory=memory)

    def check_same(self) -> None:
        """Both hold the source's bytes at every destination (hashed here, not by the system)."""
        csvs, results = tree_digest(self.data / "Data/Opto/Combined"), tree_digest(self.data / "Results/Opto")
        for dest in (self.ours_dest, self.bare_dest):
            for folder, want in (("smb/flyTrackingData", csvs), ("smb/Figures/Results/Opto", results),
                                 ("box/Backups/CSVs", csvs), ("box/Backups/Results/Results/Opto", results),
                                 ("secured/CSVs", csvs)):  # fmt: skip
                if tree_digest(dest / folder) != want:
                    raise SystemExit(f"{self.name}: {dest / folder} does not hold the source's files")

    def jobs(self) -> int:
        """Snakemake's job count of the latest run ('total' row of its Job stats)."""
        logs = sorted((self.ours_work / ".backup/runs").glob("*/snakemake.log"))
        text = logs[-1].read_text() if logs else ""
        found = re.findall(r"^total\s+(\d+)", text, re.M)
        return int(found[0]) if found else -1


def _ram_free() -> float:
    try:
        RAM.mkdir(parents=True, exist_ok=True)
        st = os.statvfs(RAM)
    except OSError:
        return 0.0
    return st.f_bavail * st.f_frsize


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def row(case: str, target: str, bare: list[measure.Measured], ours: list[measure.Measured], limit: float,
        extra_bare: float = 0.0, **more) -> dict:  # fmt: skip
    """Medians of the timed runs; peaks from the runs that sampled memory."""
    b = median([m.seconds for m in bare if m.peak_mb is None])
    o = median([m.seconds for m in ours if m.peak_mb is None])
    ratio = round(o / (b + extra_bare), 3) if b + extra_bare else 0
    return {
        "case": case, "bare_s": b, "ours_s": o, "ratio": ratio, "target": target,
        "met": "yes" if ratio <= limit else "NO",
        "bare_peak_MB": max(m.peak_mb or 0 for m in bare), "ours_peak_MB": max(m.peak_mb or 0 for m in ours),
        "runs": len([m for m in ours if m.peak_mb is None]), **more,
    }  # fmt: skip


def first_and_unchanged(case: Case, runs: int, label: str, first_limit: float, rows: list[dict],
                        unchanged_limit: float, snakemake_s: float = 0.0) -> None:  # fmt: skip
    first_b, first_o, again_b, again_o = [], [], [], []
    # The timed runs, then one more of each that samples memory.
    for i, memory in [(i, False) for i in range(runs)] + [(runs, True)]:
        case.clear()
        # Alternate who goes first, so neither always meets the other's page cache.
        order = [("bare", case.bare), ("ours", case.ours)]
        for who, fn in order if i % 2 == 0 else order[::-1]:
            (first_b if who == "bare" else first_o).append(fn(memory=memory))
        for who, fn in order if i % 2 == 0 else order[::-1]:
            (again_b if who == "bare" else again_o).append(fn(memory=memory))
    case.check_same()
    jobs = case.jobs()
    starts = [m.first_transfer for m in first_o if m.first_transfer is not None and m.peak_mb is None]
    start = round(max(starts), 2) if starts else None
    rows.append(row(f"{label}: first backup", f"ratio <= {first_limit}", first_b, first_o, first_limit,
                    jobs=jobs, first_transfer_s=start))  # fmt: skip
    target = f"ratio <= {unchanged_limit}" if not snakemake_s else "<= (bare + snakemake -n) x 1.3"
    rows.append(row(f"{label}: nothing changed", target, again_b, again_o, unchanged_limit, extra_bare=snakemake_s,
                    jobs=case.jobs(), snakemake_empty_s=snakemake_s or None))  # fmt: skip


def snakemake_empty(runs: int) -> float:
    """One start of Snakemake on an empty workflow (`snakemake -n`)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "Snakefile").write_text("rule all:\n    input: []\n")
        cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--quiet"]
        return median([measure.run(cmd, cwd=tmp).seconds for _ in range(runs)])


def verify_case(case: Case, runs: int, rows: list[dict]) -> None:
    """`backup --verify` against sha256sum of the source and of each destination's copy."""
    case.clear()
    case.ours()
    src = [str(case.data / "Data/Opto/Combined"), str(case.data / "Results/Opto")]
    dest = case.ours_dest
    copies = [dest / "smb/flyTrackingData", dest / "smb/Figures", dest / "box", dest / "secured"]
    # For each destination, hash the source and that destination's copy, as the verify step does.
    groups = [[*src, *copies[0:2]], [*src, copies[2]], [src[0], copies[3]]]  # secured holds the CSVs only
    hashing = " && ".join(
        f"find {' '.join(shlex.quote(str(p)) for p in group)} -type f -print0 | xargs -0 sha256sum >/dev/null"
        for group in groups
    )
    bare, ours = [], []
    for memory in [False] * runs + [True]:
        bare.append(measure.run(["bash", "-ec", hashing], memory=memory))
        ours.append(case.ours("--verify", memory=memory))
    rows.append(row("seed-shaped: verify 3 destinations", "ratio <= 1.2", bare, ours, 1.2))


def rewrites_case(case: Case, runs: int, rows: list[dict]) -> None:
    """After a first backup by both, every figure gets a new time and the same bytes; then both back up."""
    figures = [p for p in (case.data / "Results/Opto").rglob("*") if p.is_file()]
    bare, ours, sent, versioned = [], [], [], []
    for i in range(runs):
        case.clear()
        case.bare()
        case.ours()
        later = time.time() + 60 * (i + 1)
        for path in figures:
            os.utime(path, (later, later))
        order = [("bare", case.bare), ("ours", case.ours)]
        for who, fn in order if i % 2 == 0 else order[::-1]:
            (bare if who == "bare" else ours).append(fn())
        latest = sorted((case.ours_work / ".backup/runs").iterdir())[-1]
        sent.append(sum(json.loads(p.read_text()).get("bytes_sent", 0) for p in latest.glob("manual/*/*.json")))
        versioned.append(sum(1 for p in case.ours_dest.rglob("*") if p.is_file() and ".versions" in str(p)))
    case.check_same()
    r = row(f"{len(figures)} figures rewritten, identical bytes", "faster than bare; 0 B sent, 0 versions", bare,
            ours, 1.0, bytes_sent=max(sent), new_version_files=max(versioned))  # fmt: skip
    r["met"] = "yes" if r["ratio"] <= 1.0 and max(sent) == 0 and max(versioned) == 0 else "NO"
    rows.append(r)


def table(rows: list[dict]) -> str:
    rsync = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    lines = [
        f"\nmachine: {os.cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}, {rsync}",
        f"{'case':45s} {'bare s':>7s} {'ours s':>7s} {'ratio':>6s}  {'bare MB':>7s} {'ours MB':>7s}  target",
    ]
    for r in rows:
        notes = [f"jobs {r['jobs']}"] if r.get("jobs") else []
        if r.get("first_transfer_s"):
            notes.append(f"first transfer after {r['first_transfer_s']} s")
        if "bytes_sent" in r:
            notes.append(f"{r['bytes_sent']} B sent, {r['new_version_files']} new files in versions folders")
        lines.append(
            f"{r['case']:45s} {r['bare_s']:7.2f} {r['ours_s']:7.2f} {r['ratio']:6.3f}  "
            f"{r['bare_peak_MB']:7.1f} {r['ours_peak_MB']:7.1f}  {r['target']}: {r['met']}"
            + (f"  ({', '.join(notes)})" if notes else "")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    args = parser.parse_args()
    cases = args.cases.split(",")
    for tool in ("rsync", "sha256sum"):
        if not shutil.which(tool):
            raise SystemExit(f"needs {tool}: run 'make setup'")
    rows: list[dict] = []
    seed = datasets.generate_seed()
    if "first" in cases or "unchanged" in cases:
        sm = snakemake_empty(args.runs)
        first_and_unchanged(Case("seed", seed), args.runs, "seed-shaped 700 MB", 1.10, rows, 1.3, snakemake_s=sm)
    if "small" in cases:
        small = datasets.generate_small()
        first_and_unchanged(Case("small", small, ram=True), args.runs, "100,000 small files", 1.2, rows, 1.2)
    if "memory" in cases:
        big = Case("big", datasets.generate_big())
        bare, ours = [], []
        for memory in [False] * max(1, args.runs - 1) + [True]:
            big.clear()
            bare.append(big.bare(memory=memory))
            ours.append(big.ours(memory=memory))
        big.check_same()
        r = row("2 GB with one 1.5 GB file: first backup", "peak < 200 MB", bare, ours, float("inf"))
        r.update(target="peak < 200 MB", met="yes" if r["ours_peak_MB"] < 200 else "NO")
        rows.append(r)
        shutil.rmtree(big.root)
    if "verify" in cases:
        verify_case(Case("verify", seed), args.runs, rows)
    if "rewrites" in cases:
        rewrites_case(Case("rewrites", seed), args.runs, rows)
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.rmtree(RAM, ignore_errors=True)

    measure.write_csv(RESULTS / "transfers.csv", rows)
    print(table(rows))
    print(f"\nwritten to {RESULTS / 'transfers.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
