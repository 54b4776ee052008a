"""Transports: one contract, two tools.

Every transport can ``send`` a dataset's file list (or one archive) to a target,
``list`` what is there, ``verify`` that the target holds the source's bytes, and
``restore`` from it; for the destination's catalog (catalog.py) it can also list a folder
tree, ``apply`` a set of small files (and remove the run's own in-progress marker), and
read back the SHA-1 of files at the destination. rsync writes to local folders, mounted
shares and ``host:/path`` over SSH; rclone writes to its remotes (Box, an SMB server
without a mount, ...). Data is only ever added or updated: no ``--delete`` of data, no
``rclone sync`` of data.
"""

from __future__ import annotations

from ..errors import TransferError
from ..plan import Transfer
from .base import SendResult, Transport, VerifyResult, find_tool
from .rclone import WALK_ABOVE, RcloneTransport
from .rsync import RsyncTransport

__all__ = ["RcloneTransport", "RsyncTransport", "SendResult", "TransferError", "Transport", "VerifyResult",
           "WALK_ABOVE", "find_tool", "for_transfer"]  # fmt: skip

TRANSPORTS = {"rsync": RsyncTransport, "rclone": RcloneTransport}


def for_transfer(transfer: Transfer):
    return TRANSPORTS[transfer.tool]()
