"""The one place that runs external commands (rsync, rclone, the pipeline).

Every command is logged before it runs and its output is logged line by line,
with secrets masked, so that nothing else in the package needs to think about it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

MASK = "****"
# Flags whose next argument (or '=value') is a secret.
SECRET_FLAGS = ("--password", "--pass", "--smb-pass", "--token", "--box-token", "--webdav-pass", "--sftp-pass")
# key=value and "key": value pairs (JSON) in output or arguments that look like credentials.
SECRET_PAIR = re.compile(
    r"""(?i)\b([\w-]*(?:pass(?:word)?|token|secret|key)[\w-]*(?:"\s*:\s*|\s*=\s*))("[^"]*"|'[^']*'|[^\s,}]+)"""
)


@dataclass
class Result:
    returncode: int
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)


SECRET_WORDS = ("pass", "token", "secret", "key")


def mask(text: str, secrets: tuple[str, ...] | list[str] = ()) -> str:
    """Hide known secret values and anything that looks like key=secret."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    lower = text.lower()
    if not any(word in lower for word in SECRET_WORDS):
        return text  # the common case (a file name), without the regular expression
    return SECRET_PAIR.sub(_mask_pair, text)


def _mask_pair(match: re.Match) -> str:
    value = match.group(2)
    quote = value[0] if value[0] in "\"'" else ""
    return f"{match.group(1)}{quote}{MASK}{quote}"


def mask_args(args: list[str], secrets: tuple[str, ...] | list[str] = ()) -> list[str]:
    out, hide_next = [], False
    for arg in args:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in SECRET_FLAGS:
            if eq:
                out.append(f"{flag}={MASK}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(mask(arg, secrets))
    return out


def secret_env_values(env: dict[str, str] | None) -> list[str]:
    """Values of environment variables that carry credentials (RCLONE_*_PASS, ..._TOKEN)."""
    if not env:
        return []
    return [v for k, v in env.items() if re.search(r"PASS|TOKEN|SECRET", k, re.I) and v]


def run(
    args: list[str],
    log,
    *,
    secrets: tuple[str, ...] | list[str] = (),
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    shell: bool = False,
    render=None,
    stdin_text: str | None = None,
    log_output: bool = True,
    progress=None,
    echo: str | None = None,
) -> Result:
    """Run a command, log it and each output line (masked), return code and lines.

    ``render`` turns a raw output line into the text logged for it (for JSON logs).
    ``stdin_text`` is sent to the command's input (small data only, such as a password:
    never on the command line, where other users could see it).
    ``progress`` is a callable taking an output line and returning True when the line was a
    progress report it consumed (those are neither logged nor kept); lines are then also split
    at carriage returns, which is how rsync redraws its progress line.
    ``echo``: also write each (masked) line to stdout behind this prefix, as it comes (the
    pipeline's output, which the command line shows while it runs).
    """
    secrets = list(secrets) + secret_env_values(env)
    shown = mask(args if isinstance(args, str) else shlex.join(mask_args(list(args), secrets)), secrets)
    log.info("$ %s", shown)
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL if stdin_text is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd,
            shell=shell,
        )
    except FileNotFoundError:
        name = args.split()[0] if isinstance(args, str) else args[0]
        log.error("command not found: %s", name)
        return Result(127, [f"command not found: {name}"])
    if stdin_text is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin_text.encode())
        proc.stdin.close()
    assert proc.stdout is not None
    if not log_output and progress is None:
        # Data kept but not logged (a listing of 100,000 files): read whole, split at newlines only,
        # hide the known secrets but not "key=value" look-alikes (file names such as "monkey=1.csv");
        # an error built from these lines is masked where it is recorded (jobs._guarded).
        text = proc.stdout.read().decode("utf-8", errors="surrogateescape")
        for secret in secrets:
            if secret:
                text = text.replace(secret, MASK)
        returncode = proc.wait()
        log.info("exit status %d", returncode)
        return Result(returncode, text.rstrip("\n").split("\n") if text else [])
    lines: list[str] = []
    batch = _Batch(log)
    for raw in _split(proc.stdout, progress is not None):
        line = mask(raw.decode("utf-8", errors="replace").rstrip("\n"), secrets)
        if progress is not None and progress(line):
            continue
        lines.append(line)
        if echo is not None:
            os.write(sys.stdout.fileno(), f"{echo}{line}\n".encode("utf-8", errors="replace"))
        shown_line = render(line) if render else line
        if shown_line and log_output:
            batch.add("  " + shown_line)
    batch.flush()
    returncode = proc.wait()
    log.info("exit status %d", returncode)
    return Result(returncode, lines)


def give_back_memory() -> None:
    """Return freed memory to the system (glibc keeps it otherwise): for a process that has built
    something large (a config validated, a manifest) and now waits on others for a long time."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _Batch:
    """Output lines go to the log a batch at a time (each line keeps its own prefix, see logs.py):
    one logging call per line would cost seconds for a transfer of 100,000 files."""

    def __init__(self, log, size: int = 2000, seconds: float = 1.0) -> None:
        self.log, self.size, self.seconds = log, size, seconds
        self.lines: list[str] = []
        self.since = time.monotonic()

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= self.size or time.monotonic() - self.since > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.lines:
            self.log.info("%s", "\n".join(self.lines))
            self.lines.clear()
        self.since = time.monotonic()


def _split(stream, at_carriage_returns: bool):
    """Output lines; with ``at_carriage_returns`` also the pieces between \\r (progress redraws)."""
    if not at_carriage_returns:
        yield from stream
        return
    pending = b""
    while chunk := stream.read1(65536):
        pending += chunk
        parts = re.split(rb"[\r\n]", pending)
        pending = parts.pop()
        yield from (p for p in parts if p.strip())
    if pending.strip():
        yield pending
