#!/usr/bin/env python3
"""This checkout against an earlier revision, interleaved: what a change costs the everyday case.

`make bench` compares this system with the bare tools; this compares two versions of it on
the same data, destinations of the same kind and the same machine, run after run in
alternating order (a 2-core machine drifts by 10% over minutes), and prints medians of wall
time and CPU time (of the whole process tree) and their ratio:

    .venv/bin/python bench/compare_revisions.py --base 4d2f1e0 [--runs 15] [--cases seed,small]

seed: the seed-shaped 700 MB dataset, nothing changed since the first backup (make bench's
case 2); small: six CSVs and 100,000 small files on a RAM disk (case 3b). The earlier revision
is checked out with `git worktree` into a temporary folder and runs with this checkout's .venv.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
from transfer_bench import RAM, WORK, write_config

PROJECT = Path(__file__).resolve().parents[1]


def run(code: Path, work: Path, config: Path) -> tuple[float, float]:
    """One backup by the checkout ``code``: (wall seconds, CPU seconds of every process it started)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(code / "scripts/backup_system.py"), "backup", "--config", str(config),
                           "--workdir", str(work)], cwd=work, capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{code}: exit status {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def unchanged(name: str, data: Path, root: Path, codes: dict[str, Path], runs: int) -> dict:
    sides = {}
    for who, code in codes.items():
        work = root / name / who
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        sides[who] = (code, work, write_config(data, work / "dest", work))
        run(*sides[who])  # the first backup
    walls: dict[str, list[float]] = {w: [] for w in codes}
    cpus: dict[str, list[float]] = {w: [] for w in codes}
    for i in range(runs):
        for who in list(codes) if i % 2 == 0 else list(codes)[::-1]:
            wall, cpu = run(*sides[who])
            walls[who].append(wall)
            cpus[who].append(cpu)
    shutil.rmtree(root / name, ignore_errors=True)
    med = {w: (statistics.median(walls[w]), statistics.median(cpus[w])) for w in codes}
    return {"case": f"{name}: nothing changed", "base_s": med["base"][0], "this_s": med["this"][0],
            "ratio": med["this"][0] / med["base"][0], "base_cpu_s": med["base"][1], "this_cpu_s": med["this"][1],
            "runs": runs}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier revision (a commit, tag or branch)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--cases", default="seed,small")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backup-base-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(PROJECT), "worktree", "add", "--detach", "-f", str(base), args.base],
                       check=True, capture_output=True)  # fmt: skip
        try:
            codes = {"base": base, "this": PROJECT}
            for code in codes.values():  # both read their bytecode, as after `make setup`
                subprocess.run([sys.executable, "-m", "compileall", "-q", str(code / "workflow/backup")], check=True,
                               capture_output=True)  # fmt: skip
            rows = []
            if "seed" in args.cases:
                rows.append(unchanged("seed", datasets.generate_seed(), WORK, codes, args.runs))
            if "small" in args.cases:
                rows.append(unchanged("small", datasets.generate_small(), RAM, codes, args.runs))
        finally:
            subprocess.run(["git", "-C", str(PROJECT), "worktree", "remove", "--force", str(base)], capture_output=True)
    print(f"\nthis checkout against {args.base}, medians of {args.runs} interleaved runs each:")
    for r in rows:
        print(f"{r['case']:26s} base {r['base_s']:.3f} s  this {r['this_s']:.3f} s  ratio {r['ratio']:.3f}   "
              f"CPU base {r['base_cpu_s']:.3f} s  this {r['this_cpu_s']:.3f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
