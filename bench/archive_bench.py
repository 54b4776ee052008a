#!/usr/bin/env python3
"""Benchmark: this project's archive step against Info-ZIP's `zip -r -9`, same files, same run.

Generates (once, deterministically, under bench/data/) a dataset shaped like the seed's:
six wide numeric CSVs (about 200 MB, compressing about 95%) and about 3,000 figure files
(about 500 MB: PNGs, which are compressed already, and SVG/PDF vector files) across the
eight Results/Opto folders. Then it times, several times each, `zip -r -9` and
`backup.archive.create` (level 9, all cores) on the same files, and prints the medians,
the time ratio, the size ratio and each one's peak memory (max RSS of the process).
Finally it measures peak memory while archiving a 2 GB dataset holding one 1.5 GB file.

Targets (issue 3): at least 4x faster than zip -9, archive at most 1% larger, peak
memory under 200 MB. Results go to the terminal and to bench/results/archive.csv.

    .venv/bin/python bench/archive_bench.py [--runs 3] [--skip-big]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from datasets import DATA, PROJECT, generate_big, generate_seed  # noqa: E402
from measure import write_csv  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def dataset_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != ".complete")


def timed(cmd: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (MB) of one command, including its threads."""
    # Write back what earlier commands left dirty, so that no one pays for another's writes
    # (our archive is fsync'ed before it is renamed; zip's is not).
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd[:4])} ...")
    return elapsed, usage.ru_maxrss // 1024


def ours_cmd(root: Path, out: Path, list_file: Path) -> list[str]:
    code = (
        "import sys, os; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from backup import archive;"
        "files = Path(sys.argv[4]).read_text().splitlines();"
        "archive.create(Path(sys.argv[2]), 'Bench', 'T', sys.argv[3], files, 9, os.cpu_count())"
    )
    return [sys.executable, "-c", code, str(PROJECT / "workflow"), str(out), str(root), str(list_file)]


def compare(label: str, root: Path, runs: int, rows: list[dict]) -> None:
    files = dataset_files(root)
    total = sum((root / f).stat().st_size for f in files)
    work = DATA / "out"
    list_file = DATA / "files.txt"
    list_file.write_text("\n".join(files) + "\n")
    zip_t, ours_t, zip_mem, ours_mem = [], [], [], []
    for _ in range(runs):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        t, m = timed(["zip", "-q", "-r", "-9", str(work / "ref.zip"), *sorted({f.split("/")[0] for f in files})], root)
        zip_t.append(t)
        zip_mem.append(m)
        t, m = timed(ours_cmd(root, work, list_file), root)
        ours_t.append(t)
        ours_mem.append(m)
    ours_zip = next(work.glob("Bench_archive_T*.zip"))
    zip_size, ours_size = (work / "ref.zip").stat().st_size, ours_zip.stat().st_size
    row = {
        "case": label,
        "files": len(files),
        "input_MB": round(total / 1e6, 1),
        "zip9_s": round(statistics.median(zip_t), 2),
        "ours_s": round(statistics.median(ours_t), 2),
        "speedup": round(statistics.median(zip_t) / statistics.median(ours_t), 2),
        "zip9_MB": round(zip_size / 1e6, 2),
        "ours_MB": round(ours_size / 1e6, 2),
        "size_ratio": round(ours_size / zip_size, 4),
        "zip9_peak_MB": max(zip_mem),
        "ours_peak_MB": max(ours_mem),
        "runs": runs,
    }
    rows.append(row)
    check = subprocess.run(["unzip", "-tq", str(ours_zip)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"our archive failed unzip -t: {check.stdout}")
    shutil.rmtree(work)


def peak_only(label: str, root: Path, rows: list[dict]) -> None:
    files = dataset_files(root)
    work = DATA / "out"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    list_file = DATA / "files.txt"
    list_file.write_text("\n".join(files) + "\n")
    t, mem = timed(ours_cmd(root, work, list_file), root)
    total = sum((root / f).stat().st_size for f in files)
    size = next(work.glob("*.zip")).stat().st_size
    rows.append(
        {"case": label, "files": len(files), "input_MB": round(total / 1e6, 1), "ours_s": round(t, 2),
         "ours_MB": round(size / 1e6, 2), "ours_peak_MB": mem, "runs": 1}
    )  # fmt: skip
    shutil.rmtree(work)


def generate(skip_big: bool = False) -> None:
    generate_seed()
    if not skip_big:
        generate_big()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-big", action="store_true", help="skip the 2 GB peak-memory case")
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    skip_big = args.skip_big
    if not shutil.which("zip") or not shutil.which("unzip"):
        raise SystemExit("needs Info-ZIP's zip and unzip: apt-get install zip unzip")
    if args.generate:
        generate(skip_big)
        return 0
    # Generate in a child process, so that this process stays small: a child's peak memory
    # (ru_maxrss) would otherwise include the parent's pages it was forked from.
    subprocess.run([sys.executable, __file__, "--generate", *(["--skip-big"] if args.skip_big else [])], check=True)
    rows: list[dict] = []
    compare("seed-shaped (6 CSVs + 3000 figures)", DATA / "seed", args.runs, rows)
    if not args.skip_big:
        peak_only("2 GB with one 1.5 GB file (peak memory)", DATA / "big", rows)
    write_csv(RESULTS / "archive.csv", rows)
    print(f"\nmachine: {os.cpu_count()} cores, {os.uname().machine}, Python {sys.version.split()[0]}")
    for r in rows:
        print("\n" + r["case"])
        for k, v in r.items():
            if k != "case":
                print(f"  {k:14s} {v}")
    print(f"\nwritten to {RESULTS / 'archive.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
