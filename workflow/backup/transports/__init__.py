"""Transports: one contract (base.Transport, a Protocol), two tools.

Every transport can ``send`` a dataset's file list (or one archive) to a target,
``list`` what is there, ``verify`` that the target holds the source's bytes, and
``restore`` from it; for the destination's catalog (catalog.py) it can also list a folder
tree, ``apply`` a set of small files (and remove the run's own in-progress marker), and
read back the SHA-1 of files at the destination; it says what the destination can hold
and tell (``capabilities``). rsync writes to local folders, mounted shares and
``host:/path`` over SSH; rclone writes to its remotes (Box, an SMB server without a
mount, ...). Data is only ever added or updated: no ``--delete`` of data, no ``rclone
sync`` of data. diagnoses.py turns a failed tool's output into one line.
"""

from __future__ import annotations

import importlib

from ..errors import TransferError
from ..plan import Transfer
from .base import Capabilities, SendFailed, SendResult, Transport, VerifyResult, find_tool

__all__ = ["Capabilities", "RcloneTransport", "RsyncTransport", "SendFailed", "SendResult", "TransferError",
           "Transport", "VerifyResult", "WALK_ABOVE", "find_tool", "for_transfer"]  # fmt: skip

# Each tool's module is imported when it is first needed: a job uses one tool (a tenth of its start).
LAZY = {"RsyncTransport": "rsync", "RcloneTransport": "rclone", "WALK_ABOVE": "rclone"}


def __getattr__(name: str):
    if name in LAZY:
        return getattr(importlib.import_module(f".{LAZY[name]}", __name__), name)
    raise AttributeError(name)


def for_transfer(transfer: Transfer) -> Transport:
    return __getattr__("RsyncTransport" if transfer.tool == "rsync" else "RcloneTransport")()
