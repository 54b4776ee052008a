#!/usr/bin/env python3
"""Back up the lab's data: see `python scripts/backup_system.py --help` and README.md."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from backup.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
