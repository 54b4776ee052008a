"""backup.log: one appended, timestamped line per event, from every job and the CLI.

Each job also mirrors its lines to its own Snakemake log file (``logs/...``).
Several jobs append to backup.log at once; each line is written with a single
``write`` on a file opened in append mode, which keeps lines whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Milliseconds: where a run's time goes (each command's start and its exit status) can be read off.
FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s [%(run_id)s] %(context)s%(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


class LineFormatter(logging.Formatter):
    """Each line of a multi-line message gets the timestamp, run id and context of its own."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        message = record.getMessage()
        if "\n" not in message or not text.endswith(message):
            return text
        head = text[: len(text) - len(message)]
        return "\n".join(head + line for line in message.split("\n"))


class QuietFileHandler(logging.FileHandler):
    """A log that cannot be written (its disk is full) loses lines, never the run: logging's
    default prints a traceback to the terminal for each line it could not write."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed = True


def setup(log_file: str | Path | None, run_id: str, context: str = "", job_log: str | Path | None = None):
    """Return a logger adapter writing to ``log_file`` (and ``job_log``) with run id and context."""
    logger = logging.getLogger(f"backup.{run_id}.{context}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = LineFormatter(FORMAT, DATEFMT)
    for path in (log_file, job_log):
        if path is None:
            continue
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = QuietFileHandler(path, mode="a", encoding="utf-8")
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return logging.LoggerAdapter(logger, {"run_id": run_id, "context": f"{context}: " if context else ""})
