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
import csv
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "results"
sys.path.insert(0, str(PROJECT / "scripts" / "pipeline"))
from run_workflows import CSV_FILES as CSV_NAMES  # noqa: E402 - the seed's dataset names, one place
from run_workflows import RESULT_DIRS as FOLDERS  # noqa: E402


def csv_bytes(rng: random.Random, target: int) -> bytes:
    """Wide envelope rows: smooth traces with 3-digit values, as the lab's CSVs compress (~95%)."""
    rows, size = [], 0
    header = "fly,trial,odor," + ",".join(f"dir_val_{i}" for i in range(300)) + "\n"
    rows.append(header)
    size += len(header)
    shapes = [[round(abs((i % 60) - 30) / 30 * amp, 2) for i in range(300)] for amp in (0.5, 1.0, 2.0, 3.5)]
    n = 0
    while size < target:
        shape = shapes[rng.randrange(len(shapes))]
        noise = rng.randrange(3)
        vals = ",".join(f"{v + (noise if i % 50 == 0 else 0) * 0.01:.2f}" for i, v in enumerate(shape))
        row = f"fly{n % 400:03d},{n % 7},{('EB', '3-oct', 'hex')[n % 3]},{vals}\n"
        rows.append(row)
        size += len(row)
        n += 1
    return "".join(rows).encode()


def png_bytes(rng: random.Random, width: int, height: int) -> bytes:
    """A real PNG (deflated, as matplotlib writes them): a plot-like image with noisy regions."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    noise = rng.randbytes(width * 3 * height // 3)
    rows = []
    for y in range(height):
        if y % 3 == 0:
            rows.append(b"\x00" + noise[(y // 3) * width * 3 : (y // 3 + 1) * width * 3])
        else:
            rows.append(b"\x00" + bytes([255 - (y % 256)]) * (width * 3))
    raw = b"".join(rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def vector_bytes(rng: random.Random, kind: str) -> bytes:
    pts = " ".join(f"{i},{rng.random() * 100:.1f}" for i in range(2000))
    if kind == "svg":
        return f'<svg xmlns="http://www.w3.org/2000/svg"><polyline points="{pts}"/></svg>\n'.encode()
    return b"%PDF-1.4\n1 0 obj<</Length 99>>stream\n" + pts.encode() + b"\nendstream endobj\n%%EOF\n"


def make_dataset(root: Path, csv_total: int, figures: int, figure_bytes: int) -> None:
    marker = root / ".complete"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(2026)
    combined = root / "Data/Opto/Combined"
    combined.mkdir(parents=True)
    weights = [0.3, 0.15, 0.2, 0.1, 0.05, 0.2]
    for name, w in zip(CSV_NAMES, weights, strict=True):
        (combined / name).write_bytes(csv_bytes(rng, int(csv_total * w)))
    per_png = figure_bytes // int(figures * 0.7)
    side = int((per_png / 3 / 0.4) ** 0.5)  # 1/3 of the rows are noise: about 0.4 of raw size
    for i in range(figures):
        folder = root / "Results/Opto" / FOLDERS[i % len(FOLDERS)]
        folder.mkdir(parents=True, exist_ok=True)
        if i % 10 < 7:
            (folder / f"fly{i:05d}_envelope.png").write_bytes(png_bytes(rng, side, side))
        else:
            kind = "svg" if i % 2 else "pdf"
            (folder / f"fly{i:05d}_envelope.{kind}").write_bytes(vector_bytes(rng, kind))
    marker.write_text("ok\n")


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
    seed = DATA / "seed"
    if not (seed / ".complete").exists():
        print("generating the seed-shaped dataset (once) ...", flush=True)
    make_dataset(seed, csv_total=200_000_000, figures=3000, figure_bytes=500_000_000)
    big = DATA / "big"
    if skip_big or (big / ".complete").exists():
        return
    print("generating the 2 GB dataset (once) ...", flush=True)
    shutil.rmtree(big, ignore_errors=True)
    (big / "Data/Opto/Combined").mkdir(parents=True)
    block = csv_bytes(random.Random(5), 50_000_000)
    with open(big / "Data/Opto/Combined/all_envelope_rows_wide.csv", "wb") as fh:
        for _ in range(30):
            fh.write(block)
    shutil.copytree(seed / "Results", big / "Results")
    (big / ".complete").write_text("ok\n")


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
    RESULTS.mkdir(exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(RESULTS / "archive.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
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
