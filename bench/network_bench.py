#!/usr/bin/env python3
"""Benchmark over emulated links: this system against the bare tools, to real servers (bench/netlab.py).

The local benchmark (transfer_bench.py) writes to local folders, where a tool's round trips
cost nothing. Here every destination is a real server behind the link it has in the lab: the
NAS (smbd) 0.5 ms each way at 1 Gbit/s, Box (rclone's WebDAV server) 20 ms each way at
100 Mbit/s, secured storage (sshd) 1 ms each way at 1 Gbit/s. Variants, each to its own folders:

  ours-fuse    backup_system.py backup; smb: rsync onto the share's FUSE mount (rclone mount)
  ours-rclone  the same, smb through rclone's smb backend (transport: rclone)
  bare-seq     what a person types, one after another: rsync -a onto the mount, rclone copy to
               Box-Folder, rsync -a over ssh to secured storage (CSVs only, as the lab's config)
  bare-par     the same commands, the three destinations at once
  tuned-par    the best flags found for each tool and link, every destination and dataset at once

Cases: first (empty destinations), unchanged (the same again), small (5 files get new content:
3 figures, 2 CSVs appended; the same change for every variant). Rounds alternate the order of
the variants. Targets, ours / tuned-par: first <= 0.95, unchanged <= 1.2, small <= 1.2.
Afterwards every destination's files are hashed where the server keeps them and compared with
the source's.

Tuned flags, measured once each at full scale, first backup, one destination at a time (2026-12-01):
  Box, one rclone copy per dataset, --checkers 16: --transfers 4: 101 s, 16: 97 s. Not the link:
      rclone's webdav backend, like its Box backend, waits 10 ms between API calls in each process
      (its pacer), and a file is 2-3 calls. One rclone per Results folder (7) and one for the
      CSVs, --transfers 8 --checkers 8: 25 s with a rate per connection (an early netlink.py; the
      link's shared 100 Mbit/s alone is 30 s for 373 MB), tuned-par's whole first backup 41 s -> kept.
  NAS, rclone's smb backend, --checkers 16: --transfers 8: 12.4 s, 16: 12.5 s, 32: 12.8 s; one
      rclone per folder: 16.8 s; rsync -a onto the FUSE mount: 100 s (33 ms a file) -> rclone
      smb --transfers 16. Unchanged: 0.20 s (rclone), 0.21 s (rsync onto the mount).
  Since then Box-Folder's remote sets pacer_min_sleep = 1ms for every variant (netlab.py: the stand-in
      is a cloud without rclone's 10 ms spacing, which no flag of the bare tools' could lift but
      more processes): tuned-par's first backup 36.8 s, the link's rate for Box's 386 MB being 31 s.
  secured (191 MB of CSVs), rsync -a over ssh: chacha20 (default) 1.93 s, aes128-gcm 1.94 s,
      aes128-ctr 1.94 s, -W 1.94 s: the link's 1 Gbit/s -> aes128-gcm (least CPU with AES-NI).

    .venv/bin/python bench/network_bench.py [--runs 3] [--scale 1.0] [--cases first,unchanged,small]
                                            [--variants ours-fuse,ours-rclone,bare-seq,bare-par,tuned-par]
                                            [--timeline]

Results: the table on the terminal, bench/results/network.csv (medians) and network-runs.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import datasets
import measure
import netlab
from transfer_bench import ours_cmd, tree_digest

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = HERE / "data" / "network"
VENV_BIN = Path(sys.executable).parent
RCLONE = str(VENV_BIN / "rclone") if (VENV_BIN / "rclone").exists() else "rclone"
VARIANTS = ("ours-fuse", "ours-rclone", "bare-seq", "bare-par", "tuned-par")
CASES = ("first", "unchanged", "small")
TARGETS = {"first": 0.95, "unchanged": 1.2, "small": 1.2}
CSVS, RESULTS_OPTO = "Data/Opto/Combined", "Results/Opto"
# Where each dataset lands in a variant's folder, at each server: (destination, folder, source folder).
LAYOUT = (("smb", "flyTrackingData", CSVS), ("smb", "Figures/Results/Opto", RESULTS_OPTO),
          ("box", "CSVs", CSVS), ("box", "Results/Results/Opto", RESULTS_OPTO), ("secured", "CSVs", CSVS))  # fmt: skip
TUNED_RCLONE = {"box": ["--transfers", "8", "--checkers", "8"], "smb": ["--transfers", "16", "--checkers", "16"]}
TUNED_CIPHER = "aes128-gcm@openssh.com"


def generate(scale: float) -> Path:
    """Seed-shaped, about 400 MB at scale 1: six CSVs (200 MB) and 3,000 figures of 15-85 KB."""
    root = datasets.DATA / f"network-{scale:g}"
    if not (root / ".complete").exists():
        print(f"generating the network dataset at scale {scale:g} (once) ...", flush=True)
    n = int(200e6 * scale)
    datasets.make_dataset(root, csv_total=n, figures=max(10, int(3000 * scale)), figure_bytes=n)
    return root


def fresh_source(data: Path) -> Path:
    """A hard-linked copy to change (each change writes a new file): the generated one stays as made."""
    source = WORK / "source"
    shutil.rmtree(source, ignore_errors=True)
    source.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(data), str(source)], check=True, timeout=300)
    (source / ".complete").unlink(missing_ok=True)
    return source


def replace(path: Path, content: bytes) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def change_five(source: Path, round_no: int) -> list[Path]:
    """New content in 3 figures (new bytes at the end) and 2 CSVs (rows appended)."""
    rng = random.Random(1000 + round_no)
    figures = sorted(p for p in (source / RESULTS_OPTO).rglob("*.png"))[:3]
    csvs = [source / CSVS / datasets.CSV_NAMES[i] for i in (4, 5)]
    for path in figures:
        replace(path, path.read_bytes() + rng.randbytes(2048))
    for path in csvs:
        rows = datasets.csv_bytes(rng, 200_000).split(b"\n", 1)[1]  # without its header
        replace(path, path.read_bytes() + rows)
    return figures + csvs


# -- the variants ----------------------------------------------------------------------------


class Variant:
    """One way of backing up, with its own folders at every server and its own work folder."""

    def __init__(self, name: str, lab: netlab.Lab, source: Path) -> None:
        self.name, self.lab, self.source = name, lab, source
        self.work = WORK / "work" / name
        self.env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "SMB_PASSWORD": lab.smb_password}

    def server_folder(self, dest: str) -> Path:
        """Where the server keeps this variant's files (read and cleared here, not through the link)."""
        return {"smb": self.lab.share, "box": self.lab.box_data, "secured": self.lab.secured}[dest] / self.name

    def clear(self) -> None:
        for dest in ("smb", "box", "secured"):
            shutil.rmtree(self.server_folder(dest), ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.prepare()

    def prepare(self) -> None:
        """Write what the variant's command needs into its fresh work folder."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def run(self) -> measure.Measured:
        return measure.run(self.command(), cwd=self.work, env=self.env)

    def check(self) -> list[str]:
        """What differs between the source and each of this variant's destinations, hashed at the server."""
        wrong = []
        for dest, folder, src in LAYOUT:
            got, want = tree_digest(self.server_folder(dest) / folder), tree_digest(self.source / src)
            if got != want:
                missing = len(set(want) - set(got))
                differ = sum(1 for k in want if k in got and got[k] != want[k])
                wrong.append(f"{self.name} {dest} {folder}: {missing} missing, {differ} differ, of {len(want)}")
        return wrong


class Ours(Variant):
    """backup_system.py backup on a config with the lab's three destinations on these servers."""

    def prepare(self) -> None:
        self.config = self.work / "bench.yaml"
        self.config.write_text(self.config_text())

    def smb(self) -> str:
        mount = self.lab.mount / self.name
        return f"""      base_path: {mount}
      csvs_path: {mount}/flyTrackingData
      results_path: {mount}/Figures
      mount_point: {self.lab.mount}
      transport: rsync"""

    def config_text(self) -> str:
        names = "".join(f"        - {n}\n" for n in datasets.CSV_NAMES)
        folders = "".join(f"        - {RESULTS_OPTO}/{f}/\n" for f in datasets.FOLDERS)
        lab = self.lab
        return f"""backups:
  log_file: {self.work / "backup.log"}
  sources:
    CSVs:
      root: {self.source / CSVS}
      include:
{names}    Results:
      root: {self.source}
      include:
{folders}  compression: {{enabled: false}}
  destinations:
    smb:
      enabled: true
{self.smb()}
    box:
      enabled: true
      remote: Box-Folder
      folder: {self.name}
      rclone_config: {lab.rclone_conf}
    secured:
      enabled: true
      base_path: {lab.ssh_target(lab.secured / self.name)}
      ssh_port: {lab.ssh_port}
      ssh_key: {lab.key}
      known_hosts: {lab.known_hosts}
"""

    def command(self) -> list[str]:
        return ours_cmd(self.config, self.work)

    def timeline(self) -> list[str]:
        """Each transfer job of the latest run, from its record: start (to the second), seconds, what it sent."""
        runs = sorted((self.work / ".backup/runs").glob("*"))
        records = [json.loads(p.read_text()) for p in sorted(runs[-1].glob("*/*/*.json"))] if runs else []
        return [format_job(rec) for rec in records if "destination" in rec and "dataset" in rec]


class OursRclone(Ours):
    def smb(self) -> str:
        url = self.lab.smb_url(self.name)
        return f"""      base_path: {url}
      csvs_path: {url}/flyTrackingData
      results_path: {url}/Figures
      transport: rclone
      password_env: SMB_PASSWORD"""


class Bare(Variant):
    """The bare tools in a bash script: each destination's commands in order, destinations in sequence or at once."""

    parallel = False

    def steps(self) -> dict[str, list[str]]:
        q = shlex.quote
        src, lab = self.source, self.lab
        csvs, res = q(f"{src / CSVS}/"), q(f"{src / RESULTS_OPTO}/")
        mnt = lab.mount / self.name
        rclone = f"{RCLONE} copy --config {q(str(lab.rclone_conf))}"
        secured = q(lab.ssh_target(lab.secured / self.name / "CSVs") + "/")
        return {
            "smb": [f"mkdir -p {q(str(mnt / 'flyTrackingData'))} {q(str(mnt / 'Figures/Results/Opto'))}",
                    f"rsync -a {csvs} {q(str(mnt / 'flyTrackingData'))}/",
                    f"rsync -a {res} {q(str(mnt / 'Figures/Results/Opto'))}/"],
            "box": [f"{rclone} {csvs} Box-Folder:{self.name}/CSVs",
                    f"{rclone} {res} Box-Folder:{self.name}/Results/Results/Opto"],
            "secured": [f"rsync -a --mkpath -e {q(lab.ssh_command())} {csvs} {secured}"],
        }  # fmt: skip

    def command(self) -> list[str]:
        groups = [" && ".join(s) for s in self.steps().values()]
        return ["bash", "-ec", parallel_script(groups) if self.parallel else " && ".join(groups)]


class BarePar(Bare):
    parallel = True


class Tuned(Bare):
    """Every destination and dataset at once: rclone's smb backend for the NAS, one rclone per folder for Box
    (each rclone paces its own API calls), a fast cipher for ssh."""

    def command(self) -> list[str]:
        q = shlex.quote
        src, lab, v = self.source, self.lab, self.name
        csvs, res = q(f"{src / CSVS}/"), q(f"{src / RESULTS_OPTO}/")
        rclone = f"{RCLONE} copy --config {q(str(lab.rclone_conf))}"
        smb, box = " ".join(TUNED_RCLONE["smb"]), " ".join(TUNED_RCLONE["box"])
        ssh = f"{lab.ssh_command()} -c {TUNED_CIPHER} -o Compression=no"
        secured = q(lab.ssh_target(lab.secured / v / "CSVs") + "/")
        jobs = [
            f"{rclone} {smb} {csvs} NAS:share/{v}/flyTrackingData",
            f"{rclone} {smb} {res} NAS:share/{v}/Figures/Results/Opto",
            f"{rclone} {box} {csvs} Box-Folder:{v}/CSVs",
            f"rsync -a --mkpath -e {q(ssh)} {csvs} {secured}",
        ]
        # Box: one rclone per folder, each with its own pacer (files at the top, if any, in one more).
        top = src / RESULTS_OPTO
        for folder in sorted(p.name for p in top.iterdir() if p.is_dir()):
            jobs.append(f"{rclone} {box} {q(str(top / folder))} {q(f'Box-Folder:{v}/Results/Results/Opto/{folder}')}")
        if any(p.is_file() for p in top.iterdir()):
            jobs.append(f"{rclone} {box} --max-depth 1 {res} Box-Folder:{v}/Results/Results/Opto")
        return ["bash", "-ec", parallel_script(jobs)]


KINDS = {"ours-fuse": Ours, "ours-rclone": OursRclone, "bare-seq": Bare, "bare-par": BarePar, "tuned-par": Tuned}


def parallel_script(jobs: list[str]) -> str:
    """Each job in the background; the script fails if any of them did."""
    started = "".join(f"( {job} ) & p{i}=$!\n" for i, job in enumerate(jobs))
    return started + "".join(f"wait $p{i}\n" for i in range(len(jobs)))


def format_job(rec: dict) -> str:
    return (f"    {rec['destination']:8s} {rec['dataset']:8s} started {rec.get('started', '')[11:19]} "
            f"{rec.get('seconds', 0):6.2f} s  sent {rec.get('files_sent', 0)}/{rec.get('files_total', 0)} files, "
            f"{rec.get('bytes_sent', 0) / 1e6:.1f} MB  {rec.get('status', '')}")  # fmt: skip


# -- running the rounds ----------------------------------------------------------------------


class Bench:
    def __init__(self, variants: list[Variant], cases: list[str], runs: int, timeline: bool) -> None:
        self.variants, self.cases, self.runs, self.timeline = variants, cases, runs, timeline
        self.times: dict[tuple[str, str], list[float]] = {}
        self.failed: dict[str, str] = {}
        self.rows: list[dict] = []

    def time(self, case: str, v: Variant, round_no: int, record: bool) -> None:
        if v.name in self.failed:
            return
        try:
            m = v.run()
        except SystemExit as err:  # measure.run: the command failed; its output's tail is in the message
            self.failed[v.name] = f"{case}, round {round_no + 1}: {err}"
            print(f"  {v.name:12s} {case:10s} FAILED\n{err}", flush=True)
            return
        if record:
            self.times.setdefault((case, v.name), []).append(m.seconds)
            self.rows.append({"round": round_no + 1, "case": case, "variant": v.name, "seconds": round(m.seconds, 3)})
        print(f"  {v.name:12s} {case:10s} {m.seconds:7.2f} s{'' if record else ' (not timed: for the next case)'}",
              flush=True)  # fmt: skip
        if self.timeline and isinstance(v, Ours):
            print("\n".join(v.timeline()), flush=True)

    def round(self, r: int) -> None:
        order = self.variants if r % 2 == 0 else self.variants[::-1]
        print(f"round {r + 1} of {self.runs}: {', '.join(v.name for v in order)}", flush=True)
        if "first" in self.cases or r == 0:
            for v in self.variants:
                v.clear()
            time.sleep(1.5)  # the FUSE mount's directory cache (1 s) forgets the folders just removed
            for v in order:
                self.time("first", v, r, "first" in self.cases)
        if "unchanged" in self.cases:
            for v in order:
                self.time("unchanged", v, r, True)
        if "small" in self.cases:
            change_five(self.variants[0].source, r)
            for v in order:
                self.time("small", v, r, True)

    def check(self) -> None:
        wrong = [line for v in self.variants if v.name not in self.failed for line in v.check()]
        if wrong:
            raise SystemExit("destinations do not hold the source's bytes:\n  " + "\n  ".join(wrong))
        print(f"checked: every destination of {', '.join(v.name for v in self.variants if v.name not in self.failed)}"
              " holds the source's bytes (SHA-256 at the server)", flush=True)  # fmt: skip


def keep_logs(variants: list[Variant]) -> None:
    """Ours' backup.log and run records to bench/results/network-logs/: where the time went."""
    for v in variants:
        if isinstance(v, Ours) and v.work.exists():
            dest = RESULTS / "network-logs" / v.name
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(v.work, dest, ignore=shutil.ignore_patterns(".snakemake", "*.lock"), dirs_exist_ok=True)


def median(values: list[float] | None) -> float | None:
    return round(statistics.median(values), 2) if values else None


def summary(bench: Bench) -> list[dict]:
    rows = []
    for case in bench.cases:
        row: dict = {"case": case}
        for name in VARIANTS:
            row[name] = median(bench.times.get((case, name)))
        tuned = row["tuned-par"]
        for name in ("ours-fuse", "ours-rclone"):
            ratio = round(row[name] / tuned, 3) if row[name] is not None and tuned else None
            row[f"ratio_{name}"] = ratio
            row[f"met_{name}"] = None if ratio is None else ("met" if ratio <= TARGETS[case] else "missed")
        row["target"] = f"<= {TARGETS[case]}x tuned"
        row["runs"] = max((len(bench.times.get((case, n), [])) for n in VARIANTS), default=0)
        rows.append(row)
    return rows


def fmt(value, unit: str = " s") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def table(rows: list[dict], scale: float, size_mb: float) -> str:
    lines = [
        f"\n{os.cpu_count()} cores; scale {scale:g} ({size_mb:.0f} MB); links: NAS 0.5 ms/1 Gbit/s, Box 20 ms/"
        "100 Mbit/s, secured 1 ms/1 Gbit/s (each way); medians\n",
        "| case | this system (SMB via a FUSE mount / via rclone smb) | bare tools one after another | bare tools, "
        "three destinations in parallel | tuned bare tools in parallel | ratio ours/tuned (fuse / rclone) | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratios = f"{fmt(r['ratio_ours-fuse'], '')} ({r['met_ours-fuse'] or '-'}) / " + (
            f"{fmt(r['ratio_ours-rclone'], '')} ({r['met_ours-rclone'] or '-'})"
        )
        lines.append(
            f"| {r['case']} | {fmt(r['ours-fuse'])} / {fmt(r['ours-rclone'])} | {fmt(r['bare-seq'])} | "
            f"{fmt(r['bare-par'])} | {fmt(r['tuned-par'])} | {ratios} | {r['target']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="dataset size, 1.0: about 400 MB")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--timeline", action="store_true", help="print each job of ours from its run records")
    args = parser.parse_args()
    cases = [c for c in CASES if c in args.cases.split(",")]
    names = [v for v in VARIANTS if v in args.variants.split(",")]
    unknown = set(args.cases.split(",")) - set(CASES) | set(args.variants.split(",")) - set(VARIANTS)
    if unknown or not cases or not names:
        parser.error(f"unknown or empty: {', '.join(sorted(unknown)) or 'cases or variants'}")
    data = generate(args.scale)
    size_mb = sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) / 1e6
    source = fresh_source(data)
    try:
        with netlab.Lab() as lab:
            bench = Bench([KINDS[n](n, lab, source) for n in names], cases, args.runs, args.timeline)
            try:
                for r in range(args.runs):
                    bench.round(r)
                bench.check()
            finally:
                keep_logs(bench.variants)
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
        if not os.path.ismount(netlab.LAB / "mnt"):  # never remove through a mount still there
            shutil.rmtree(netlab.LAB, ignore_errors=True)
    rows = summary(bench)
    measure.write_csv(RESULTS / "network.csv", rows)
    measure.write_csv(RESULTS / "network-runs.csv", bench.rows)
    print(table(rows, args.scale, size_mb))
    for name, why in bench.failed.items():
        print(f"\n{name} FAILED in {why}")
    print(f"\nwritten to {RESULTS / 'network.csv'} and network-runs.csv")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
