"""What a failed rsync or rclone means, in one line a user can act on: the causes recognised in
the tools' output (the same for both: they meet the same servers and disks), and what each
tool's exit status says where no known cause is named."""

from __future__ import annotations

import re

# Known causes, recognised in the tools' output, turned into what to do about them ({0}: the
# pattern's first group, such as the file it names).
SOURCE_UNREADABLE = "permission denied (let the backup's user read it, or leave it out of the dataset)"
DIAGNOSES = [
    (r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .* host key is known",
     "the server's SSH host key is not known (or changed): connect once with ssh to check and accept it, "
     "or give its known_hosts file"),
    (r"Identity file (.+?) not accessible", "the ssh_key file {0} cannot be read: check "
     "backups.destinations.secured.ssh_key"),
    (r"Permission denied \(publickey|Permission denied, please try again",
     "the SSH server refused the login: check the user and ssh_key"),
    (r"Could not resolve hostname|no such host", "the server name cannot be resolved: check the address"),
    (r"Connection refused|connection refused|actively refused",
     "the server refused the connection: is it running, and is the port right?"),
    (r"Connection timed out|i/o timeout|context deadline exceeded|No route to host|network is unreachable",
     "the server cannot be reached (timed out): check the network or VPN"),
    (r"STATUS_LOGON_FAILURE|401 Unauthorized|\b401\b|invalid_grant|token expired|unauthorized|NT_STATUS_ACCESS_DENIED"
     r"|couldn't fetch token|authentication fail|logon is invalid|bad username or authentication",
     "the server refused the credentials: check the user and password (for Box, 'rclone config reconnect')"),
    (r"quota|Insufficient Storage|\b507\b|storage_limit_exceeded|No space left on device|STATUS_DISK_FULL"
     r"|disk was full|disk full",
     "the destination is full (no space left or quota exceeded)"),
    (r'mkdir "(.+?)" failed: (?:File exists|Not a directory)|(?:mkdir|make directory) (.+?): not a directory',
     "something that is not a folder stands where the destination needs the folder {0}: move it aside"),
    # The source, not the destination: rsync's sender, rclone's source object or folder.
    (r'\[sender\] send_files failed to open "(.+?)": Permission denied|failed to open source object: open (.+?): '
     r"permission denied", "cannot read source file {0}: " + SOURCE_UNREADABLE),
    (r'\[sender\] opendir "(.+?)" failed: Permission denied|error reading source directory: .*?open (.+?): '
     r"permission denied", "cannot read source folder {0}: " + SOURCE_UNREADABLE),
    (r"Permission denied|Access is denied|EACCES|\b403\b|Forbidden|Read-only file system|Operation not permitted",
     "permission denied at the destination (or it is read-only): check who may write there"),
]  # fmt: skip

# rsync's exit statuses (man rsync, EXIT VALUES).
RSYNC_EXIT = {
    1: "rsync usage error",
    3: "cannot read the source or create the target folder",
    5: "could not start the transfer",
    10: "network error",
    11: "file I/O error (is the destination full?)",
    12: "data stream broken (destination unreachable or full?)",
    23: "some files could not be transferred",
    24: "some source files vanished during the transfer",
    30: "timed out",
    35: "timed out",
    255: "the SSH connection failed",
}

# rclone's exit statuses (rclone docs, Exit Code).
RCLONE_EXIT = {
    1: "rclone failed (details in backup.log)",
    3: "folder not found on the remote",
    4: "file not found",
    5: "temporary error (network or server), try again",
    6: "some files could not be transferred",
    7: "fatal error from the remote (authentication, quota or account)",
    8: "transfer limit exceeded",
}


EXIT = {"rsync": RSYNC_EXIT, "rclone": RCLONE_EXIT}


def exit_reason(tool: str, code: int) -> str:
    """What ``tool``'s exit status says (its number, where the table has no words for it)."""
    return EXIT[tool].get(code, f"{tool} failed with exit status {code}")


def diagnose(lines: list[str]) -> str:
    """What went wrong, in words a user can act on, if the output names a known cause."""
    text = "\n".join(lines)
    for pattern, advice in DIAGNOSES:
        found = re.search(pattern, text, re.I)
        if found:
            return advice.format(next((g for g in found.groups() if g), ""))
    return ""
