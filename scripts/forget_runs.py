#!/usr/bin/env python3
"""Forget this machine's records of the runs made with some config files (`make clean-demo`).

    python scripts/forget_runs.py config/demo.yaml [...]

Removes .backup/runs/RUN_ID/ and logs/RUN_ID/ of every run whose record names one of the
files, so that the demo's runs are gone with the demo. Destinations are not touched.
"""

import shutil
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "workflow"))

from backup import records  # noqa: E402


def main(paths: list[str]) -> int:
    configs = {str(Path(p).resolve()) for p in paths}
    gone = 0
    for run in records.load_runs(PROJECT):
        if configs & {str(Path(c).resolve()) for c in run.config}:
            shutil.rmtree(records.run_dir(run.run_id, PROJECT), ignore_errors=True)
            shutil.rmtree(PROJECT / "logs" / run.run_id, ignore_errors=True)
            gone += 1
    print(f"forgot {gone} runs made with {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
