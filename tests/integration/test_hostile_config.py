"""Broken, hostile or secret-holding configs through the command line: exit 2 with one line on
stderr, nothing written (no lock, no log, no run record, no destination), bounded memory, and the
planted secret in no output, log, record, .snakemake/ file or report."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest
from conftest import PROJECT, env_with_venv

SECRET = "Hunter2LEAK"
MEMORY = 4 << 30  # address space of the command line and its children: an alias bomb took 24 GB


def cli(lab, *args: str) -> subprocess.CompletedProcess:
    """lab.cli, with bounded memory (a blow-up fails the test, not the machine)."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    cmd = [sys.executable, str(PROJECT / "scripts" / "backup_system.py"), *args, "--config", str(lab.config_path),
           "--workdir", str(lab.workdir)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env_with_venv(), cwd=lab.workdir,
                          preexec_fn=limit)  # fmt: skip


def leaked(lab, result, secret: str) -> list[str]:
    """Where ``secret`` shows up: the command's output, or any file under the lab but its config."""
    places = [name for name, text in (("stdout", result.stdout), ("stderr", result.stderr)) if secret in text]
    for path in lab.root.rglob("*"):
        if path.is_file() and path != lab.config_path and secret.encode() in path.read_bytes():
            places.append(str(path))
    return places


def assert_refused(lab, result, secret: str | None = None) -> str:
    """Exit 2, one line on stderr and nothing written; returns the line."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (lab.workdir / ".backup").exists()  # no lock, no run record
    assert not (lab.root / "backup.log").is_file()
    assert not any(dest.exists() for dest in (lab.smb, lab.box, lab.secured))
    if secret:
        assert leaked(lab, result, secret) == []
    return result.stderr


def smb_url(lab, url: str):
    lab.config["backups"]["destinations"]["smb"] = {"base_path": url, "require_mount": False}


def notify(lab, **settings):
    lab.config["backups"]["notify"] = settings


def password_env(lab, name: str):
    """SMB over rclone, whose password comes from the variable password_env names (here: none set)."""
    lab.config["backups"]["destinations"]["smb"] = {"base_path": "smb://lab@127.0.0.1:9/share/x",
                                                    "transport": "rclone", "password_env": name}  # fmt: skip


SECRETS = {
    "smb URL without a share": lambda lab: smb_url(lab, f"smb://lab:{SECRET}?@nas"),
    "smb URL with ..": lambda lab: smb_url(lab, f"smb://lab:{SECRET}/../x@nas/share"),
    "on_failure as a string": lambda lab: notify(lab, on_failure=f"json://127.0.0.1:9/{SECRET}"),
    "ping_url as a list": lambda lab: notify(lab, ping_url=[f"http://127.0.0.1:9/ping/{SECRET}"]),
    "a password pasted into password_env": lambda lab: password_env(lab, SECRET),
    "a password that is no name": lambda lab: password_env(lab, f"{SECRET}#1"),
}
# Every command reads the config first: none may echo it, run or write. Each command meets one of
# the secrets (they share the config's reading, so each secret meets one or two commands).
COMMANDS = [(), ("run",), ("--dry-run",), ("--status",), ("--verify",), ("list",), ("--report", "REPORT")]


@pytest.mark.parametrize("case", SECRETS)
def test_a_secret_in_a_config_error_reaches_no_output_log_or_record(lab, case):
    SECRETS[case](lab)
    lab.save()
    report = lab.root / "report.html"
    for command in COMMANDS[list(SECRETS).index(case) :: len(SECRETS)]:
        result = cli(lab, *[str(report) if arg == "REPORT" else arg for arg in command])
        line = assert_refused(lab, result, SECRET)
        assert "backups." in line, command
    assert not report.exists()
    result = lab.snakemake("backup_all")  # Snakemake by hand: its own output and .snakemake/ logs
    assert result.returncode != 0 and leaked(lab, result, SECRET) == []


def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def write(text: str):
    """A case that writes the config file itself (after the lab's own, so appended text is YAML)."""
    return lambda lab: lab.config_path.write_text(text(lab) if callable(text) else text)


def setting(change):
    def apply(lab):
        change(lab)
        lab.save()

    return apply


def compressed_into_a_file(lab):
    (lab.root / "archives").write_text("a file")
    lab.config["backups"]["compression"] = {"enabled": True, "archive_dir": str(lab.root / "archives")}


HOSTILE = {
    "billion laughs": (write(lambda lab: billion_laughs() + lab.config_path.read_text()), "once its aliases"),
    "over 1 MB": (write(lambda lab: lab.config_path.read_text() + "#" + "x" * 1_000_001), "larger than 1 MB"),
    "empty": (write(""), "the config file is empty"),
    "duplicate key": (write(lambda lab: lab.config_path.read_text() + "  enabled: false\n"), "duplicate key 'enabled'"),
    "$HOME in a path": (
        setting(lambda lab: lab.config["backups"]["sources"]["CSVs"].update(root="$HOME/data")),
        "backups.sources.CSVs.root: environment variables",
    ),
    "log_file is a folder": (setting(lambda lab: (lab.root / "backup.log").mkdir()), "backups.log_file: "),
    "archive_dir is a file": (setting(compressed_into_a_file), "backups.compression.archive_dir: "),
    # Relative paths are the project folder's (--workdir), checked there.
    "log_file is a folder of the project": (
        setting(lambda lab: (lab.config["backups"].update(log_file="logs"), (lab.workdir / "logs").mkdir())),
        "backups.log_file: ",
    ),
    "rclone_config missing in the project": (
        setting(lambda lab: lab.config["backups"]["destinations"]["box"].update(rclone_config="rclone.conf")),
        "backups.destinations.box.rclone_config: ",
    ),
    "known_hosts missing": (
        setting(lambda lab: lab.config["backups"]["destinations"]["secured"].update(known_hosts=str(lab.root / "kh"))),
        "backups.destinations.secured.known_hosts: ",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_or_broken_config_is_one_line_and_writes_nothing(lab, case):
    prepare, message = HOSTILE[case]
    lab.save()
    prepare(lab)
    line = assert_refused(lab, cli(lab))
    assert message in line and str(lab.config_path) in line


def test_a_password_pasted_into_password_env_that_looks_like_a_name_is_never_recorded(lab):
    """All capitals, it passes for a variable's name: the run fails at SMB for want of that variable,
    and the value reaches no output, log, record, inherited config or destination catalog."""
    pasted = "HUNTER2LEAK"
    password_env(lab, pasted)
    lab.save()
    result = cli(lab)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no SMB password: set the environment variable that backups.destinations.smb.password_env names" in (
        result.stdout
    )
    assert (lab.box / "Ramanlab-Backups/.lab-backup/runs").is_dir()  # the other destinations' catalogs hold the run
    assert leaked(lab, result, pasted) == []
