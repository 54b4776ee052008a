"""The one place that runs commands: logging with secrets masked."""

from __future__ import annotations

import logging

from backup import runner


class ListLog:
    def __init__(self):
        self.lines = []

    def info(self, fmt, *args):
        self.lines.append(fmt % args)

    error = warning = info


def test_mask_flags_pairs_and_known_values():
    args = ["rclone", "--smb-pass", "hunter2", "--password=s3cret", "copy", "token=abc123", "a"]
    shown = runner.mask_args(args, secrets=["abc123"])
    assert shown == ["rclone", "--smb-pass", "****", "--password=****", "copy", "token=****", "a"]
    assert runner.mask('{"access_token":"ya29.xyz"} pass = p4ss') == '{"access_token":"****"} pass = ****'


def test_prose_is_not_masked():
    text = "no SMB password: set the environment variable SMB_PASSWORD"
    assert runner.mask(text) == text


def test_run_logs_command_and_output_masked():
    log = ListLog()
    result = runner.run(
        ["sh", "-c", 'echo "password=$RCLONE_SMB_PASS"; echo done; exit 3'], log, env={"RCLONE_SMB_PASS": "topsecret"}
    )
    assert result.returncode == 3
    assert result.lines == ["password=****", "done"]
    text = "\n".join(log.lines)
    assert "topsecret" not in text and "exit status 3" in text and text.startswith("$ sh -c")


def test_missing_command_is_reported():
    result = runner.run(["definitely-not-a-command-xyz"], logging.getLogger("t"))
    assert result.returncode == 127 and "command not found" in result.output


def test_many_output_lines_reach_the_log_each_with_its_prefix(tmp_path):
    from backup import logs

    log = logs.setup(tmp_path / "b.log", "RUN1", "ctx")
    result = runner.run(["seq", "5000"], log)
    assert result.returncode == 0 and len(result.lines) == 5000
    lines = (tmp_path / "b.log").read_text().splitlines()
    body = [ln for ln in lines if ln.endswith(("  1", "  2500", "  5000"))]
    assert len(body) == 3 and all("[RUN1] ctx:" in ln and ln[:4].isdigit() for ln in body)
    assert all("[RUN1] ctx:" in ln for ln in lines)


def test_a_job_line_glued_to_part_of_a_snakemake_line_still_reaches_the_terminal():
    from backup.terminal import terminal_text

    assert terminal_text("backup: post box/Results: ok\n") == "  post box/Results: ok\n"
    assert terminal_text("[Tue Dec  1 01:30:00 2026]backup: post box/CSVs: ok\n") == "  post box/CSVs: ok\n"
    assert terminal_text("pipeline-output: backup: done\n") == "  | backup: done\n"
    assert terminal_text("Select jobs to execute...\n") is None
