"""Deterministic benchmark datasets, generated once under bench/data/.

seed:  shaped like the lab's (PRODUCT.md): six wide numeric CSVs, about 200 MB, and
       about 3,000 figure files (PNG, SVG, PDF), about 500 MB, across the eight
       Results/Opto folders.
big:   about 2 GB, one CSV of 1.5 GB plus the seed's figures (peak-memory case).
small: the six CSVs at 10 KB each and a Results tree of 100,000 small files.
"""

from __future__ import annotations

import random
import shutil
import struct
import sys
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
DATA = HERE / "data"
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


def generate_seed() -> Path:
    seed = DATA / "seed"
    if not (seed / ".complete").exists():
        print("generating the seed-shaped dataset (once) ...", flush=True)
    make_dataset(seed, csv_total=200_000_000, figures=3000, figure_bytes=500_000_000)
    return seed


def generate_big() -> Path:
    """The seed's six CSVs, one of them grown to 1.5 GB, and its figures: about 2.1 GB."""
    seed, big = generate_seed(), DATA / "big"
    for name in CSV_NAMES[1:]:  # the five other CSVs as in the seed (datasets made before had only one)
        if (big / ".complete").exists() and not (big / "Data/Opto/Combined" / name).exists():
            shutil.copy2(seed / "Data/Opto/Combined" / name, big / "Data/Opto/Combined" / name)
    if (big / ".complete").exists():
        return big
    print("generating the 2 GB dataset (once) ...", flush=True)
    shutil.rmtree(big, ignore_errors=True)
    (big / "Data/Opto/Combined").mkdir(parents=True)
    block = csv_bytes(random.Random(5), 50_000_000)
    with open(big / "Data/Opto/Combined" / CSV_NAMES[0], "wb") as fh:
        for _ in range(30):
            fh.write(block)
    for name in CSV_NAMES[1:]:
        shutil.copy2(seed / "Data/Opto/Combined" / name, big / "Data/Opto/Combined" / name)
    shutil.copytree(seed / "Results", big / "Results")
    (big / ".complete").write_text("ok\n")
    return big


def generate_small(count: int = 100_000) -> Path:
    """Six 10 KB CSVs and ``count`` files of 100 B to 4 KB in 8 x 125 folders of Results/Opto."""
    small = DATA / "small"
    if (small / ".complete").exists():
        return small
    print(f"generating the {count:,}-file dataset (once) ...", flush=True)
    shutil.rmtree(small, ignore_errors=True)
    rng = random.Random(100)
    combined = small / "Data/Opto/Combined"
    combined.mkdir(parents=True)
    for name in CSV_NAMES:
        (combined / name).write_bytes(csv_bytes(rng, 10_000))
    pool = rng.randbytes(1 << 20)
    per_folder = count // (len(FOLDERS) * 125)
    n = 0
    for f in FOLDERS:
        for sub in range(125):
            folder = small / "Results/Opto" / f / f"fly{sub:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_folder):
                size, at = rng.randrange(100, 4096), rng.randrange(len(pool) - 4096)
                (folder / f"trial{i:03d}.csv").write_bytes(pool[at : at + size])
                n += 1
    (small / ".complete").write_text("ok\n")
    return small
