#!/usr/bin/env python3
"""Demo stand-in for the lab's analysis pipeline.

Writes the outputs the lab backs up (the six wide envelope CSVs and figure files in
the eight Results/Opto folders) into ``pipeline.workspace`` from the config. It is
deterministic: the same ``--seed`` gives the same bytes, and files whose content
did not change are not rewritten (their modification time stays), like a real
pipeline that skips up-to-date work.

Each run is one more analysis session: it adds that week's training figure and
updates model_predictions.csv, so the post-pipeline backup has something new to send.

It only ever writes inside the workspace, and refuses to run on a config without
``pipeline.workspace`` (such as the lab's config.yaml, whose pipeline is the real one).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import zlib
from pathlib import Path

import yaml

CSV_FILES = [
    "all_envelope_rows_wide.csv",
    "all_envelope_rows_wide_training.csv",
    "all_envelope_rows_wide_combined_base.csv",
    "all_envelope_rows_wide_combined_base_training.csv",
    "model_predictions.csv",
    "all_eye_prob_coords_wide.csv",
]
RESULT_DIRS = [
    "Reaction_Matrices",
    "Reaction_Matrices/Overlay",
    "PER-Envelopes",
    "Training-PER-Envelopes",
    "Reaction_Predictions(Strictest)",
    "CombinedBase-PER-Envelopes",
    "CombinedBase-Training-PER-Envelopes",
    "Weekly-Training-Envelopes",
]
FLIES = [f"fly{i:03d}" for i in range(1, 41)]


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` only if it differs; return whether it was written."""
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def envelope_csv(rng: random.Random, name: str, frames: int) -> bytes:
    """A wide table: one row per fly and trial, one column per frame of the envelope."""
    header = ["dataset", "fly", "trial", "odor"] + [f"dir_val_{i}" for i in range(frames)]
    lines = [",".join(header)]
    for fly in FLIES:
        for trial in range(1, 5):
            base = rng.random()
            values = (f"{base * (1 + 0.3 * ((i % 17) / 17)) + rng.random() * 0.01:.4f}" for i in range(frames))
            lines.append(",".join([name.split(".")[0], fly, str(trial), rng.choice(["EB", "3-oct", "hex"]), *values]))
    return ("\n".join(lines) + "\n").encode()


def png(width: int, height: int, pixel) -> bytes:
    """A valid greyscale PNG, made with zlib only."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(pixel(x, y) for x in range(width)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def svg(rng: random.Random, title: str) -> bytes:
    points = " ".join(f"{x * 4},{100 - rng.random() * 80:.1f}" for x in range(100))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="100">'
        f'<title>{title}</title><polyline fill="none" stroke="black" points="{points}"/></svg>\n'
    ).encode()


def sessions_done(workspace: Path) -> int:
    return len(list((workspace / "Results" / "Opto" / "Weekly-Training-Envelopes").glob("week_*.png")))


def generate(workspace: Path, seed: int, session: int) -> tuple[int, int]:
    """Write every output of analysis session ``session``; return (files written, unchanged)."""
    rng = random.Random(seed)
    written = unchanged = 0
    csv_dir = workspace / "Data" / "Opto" / "Combined"
    for name in CSV_FILES:
        if name == "model_predictions.csv":
            data = envelope_csv(random.Random(seed * 1000 + session), name, 8)
        else:
            data = envelope_csv(rng, name, 40)
        changed = write_if_changed(csv_dir / name, data)
        written, unchanged = written + changed, unchanged + (not changed)
    if session:
        week = png(64, 48, lambda x, y: (x * session + y) % 256)
        weekly = workspace / "Results/Opto/Weekly-Training-Envelopes"
        changed = write_if_changed(weekly / f"week_{session:03d}.png", week)
        written, unchanged = written + changed, unchanged + (not changed)
    for folder in RESULT_DIRS:
        for fly in FLIES[:4]:
            level = rng.randrange(256)
            image = png(64, 48, lambda x, y, lv=level: (x * 4 + y * 2 + lv) % 256)
            for path, data in (
                (workspace / "Results" / "Opto" / folder / f"{fly}_envelope.png", image),
                (workspace / "Results" / "Opto" / folder / f"{fly}_envelope.svg", svg(rng, f"{folder} {fly}")),
            ):
                changed = write_if_changed(path, data)
                written, unchanged = written + changed, unchanged + (not changed)
    return written, unchanged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="config file whose pipeline.workspace receives the outputs")
    parser.add_argument("--workspace", help="the output folder itself (instead of --config)")
    parser.add_argument("--session", type=int, help="analysis session to write (default: the next one)")
    parser.add_argument("--seed", type=int, default=1, help="change it to simulate a new analysis result")
    parser.add_argument("--if-missing", action="store_true", help="only write when the workspace has no outputs yet")
    args = parser.parse_args(argv)
    workspace = args.workspace
    if not workspace:
        if not args.config:
            parser.error("give --config or --workspace")
        with open(args.config, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh) or {}
        workspace = (cfg.get("pipeline") or {}).get("workspace")
    if not workspace:
        print(
            f"error: {args.config} has no pipeline.workspace: this script is the demo stand-in for the "
            "lab's analysis; set pipeline.command to the real pipeline",
            file=sys.stderr,
        )
        return 2
    workspace = Path(workspace)
    if args.if_missing:
        if (workspace / "Data").exists():
            print(f"demo pipeline: {workspace} already holds the lab's earlier results")
        else:
            written, _ = generate(workspace, args.seed, 0)
            print(f"demo pipeline: {written} files of earlier results written to {workspace}")
        return 0
    session = args.session if args.session is not None else sessions_done(workspace) + 1
    written, unchanged = generate(workspace, args.seed, session)
    print(f"demo pipeline: session {session}: {written} files written, {unchanged} unchanged in {workspace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
