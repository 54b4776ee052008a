"""Config input a careless or hostile hand wrote: secrets never echoed, hostile YAML refused in
bounded time and memory, paths checked before anything runs. Each error is one line naming the key."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import yaml
from backup import config
from backup.config import ConfigError, load_config, validate
from conftest import PROJECT

SECRET = "Hunter2LEAK"


def minimal(**destinations):
    return {
        "backups": {
            "sources": {"CSVs": {"root": "/data", "include": ["a.csv"]}, "Results": {"root": "/r", "include": ["R/"]}},
            "destinations": destinations or {"secured": {"base_path": "/s"}},
        }
    }


def refused(data, workdir=None) -> str:
    """The one-line message validating ``data`` raises."""
    with pytest.raises(ConfigError) as err:
        validate(data, source="lab.yaml", **({"workdir": workdir} if workdir else {}))
    text = str(err.value)
    assert text.startswith("lab.yaml: ") and "\n" not in text
    return text


def with_notify(**notify):
    data = minimal()
    data["backups"]["notify"] = notify
    return data


def with_pipeline(**pipeline):
    return {**minimal(), "pipeline": pipeline}


# --- Secrets never echoed -------------------------------------------------------------------------

SECRET_CASES = {
    # A '?', '#' or '/' in the password: the URL parses without one and the rest was shown as "no share".
    "no share": (minimal(smb={"base_path": f"smb://lab:{SECRET}?x@nas"}), "smb.base_path"),
    "fragment": (minimal(smb={"base_path": f"smb://lab:{SECRET}#@nas"}), "smb.base_path"),
    "dot-dot": (minimal(smb={"base_path": f"smb://lab:{SECRET}/../x@nas/share"}), "smb.base_path"),
    "slash": (
        minimal(smb={"base_path": f"smb://lab:Hunt/{SECRET}@nas/share/x", "transport": "rclone"}),
        "smb.base_path",
    ),  # fmt: skip
    "bad host": (minimal(smb={"base_path": f"smb://lab:{SECRET}@[nas/share/x"}), "smb.base_path"),
    "csvs_path": (minimal(smb={"base_path": "/mnt", "csvs_path": f"smb://lab:{SECRET}?@nas"}), "smb.csvs_path"),
    "on_failure as a string": (with_notify(on_failure=f"slack://{SECRET}/B/C"), "notify.on_failure"),
    "on_success as a mapping": (with_notify(on_success={"url": f"slack://{SECRET}"}), "notify.on_success"),
    "ping_url as a list": (with_notify(ping_url=[f"https://hc.example/ping/{SECRET}"]), "notify.ping_url"),
    "password pasted into password_env": (
        minimal(smb={"base_path": "smb://lab@nas/share/x", "transport": "rclone", "password_env": SECRET}),
        "smb.password_env",
    ),
    "a password that is no name": (
        minimal(smb={"base_path": "smb://lab@nas/share/x", "transport": "rclone", "password_env": f"{SECRET}!"}),
        "smb.password_env",
    ),
    "a destination given as a URL": ({"backups": {"destinations": {"smb": f"smb://lab:{SECRET}@nas/s"}}}, "smb"),
    "pipeline command as a list": (with_pipeline(command=["curl", f"https://x/?token={SECRET}"]), "pipeline.command"),
}


@pytest.mark.parametrize("case", SECRET_CASES)
def test_a_config_error_names_the_key_never_a_secret(case):
    data, key = SECRET_CASES[case]
    text = refused(data)
    assert SECRET not in text and SECRET.lower() not in text.lower()
    assert key in text


def test_password_env_must_name_a_variable():
    """Capital letters, digits and _: a pasted password is refused, a variable's name is kept."""
    text = refused(minimal(smb={"base_path": "smb://nas/share/x", "transport": "rclone", "password_env": SECRET}))
    assert "never the password itself" in text
    smb = {"base_path": "smb://nas/share/x", "transport": "rclone", "password_env": "LAB_SMB_PASSWORD"}
    assert validate(minimal(smb=smb))["backups"]["destinations"]["smb"]["password_env"] == "LAB_SMB_PASSWORD"


def test_values_of_other_keys_are_still_shown():
    """Only what may hold a secret is hidden: a mistyped switch is still quoted back."""
    data = minimal()
    data["backups"]["verify"] = "sometimes"
    assert "not 'sometimes'" in refused(data)
    assert "backups.notify.timeout_seconds: must be number, not a list" in refused(with_notify(timeout_seconds=[1]))


def test_an_at_sign_in_a_folder_name_is_written_percent_40():
    """The password check reads user:PASSWORD@ wherever it is; a folder named with '@' has a way through."""
    assert "%40" in refused(minimal(smb={"base_path": "smb://nas:445/share/lab@2024"}))
    validate(minimal(smb={"base_path": "smb://cole@nas:445/share/lab%402024"}))


# --- Hostile or broken config files ----------------------------------------------------------------


def load_in_child(path, memory_gb: int = 2) -> subprocess.CompletedProcess:
    """load_config in a child with at most ``memory_gb`` of address space: a crash or a blow-up
    there fails the test instead of the machine."""

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_gb << 30, memory_gb << 30))

    code = (
        "import sys; from backup.config import ConfigError, load_config\n"
        "try:\n    load_config(sys.argv[1:])\nexcept ConfigError as exc:\n    print(exc); sys.exit(2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "workflow")}
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                          env=env, preexec_fn=limit)  # fmt: skip


def billion_laughs(levels: int = 10) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nbackups:\n  log_file: *a{levels - 1}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (billion_laughs(), "holds more than 100,000 values once its aliases (*name) are expanded (line 5)"),
        ("[" * 300_000 + "]" * 300_000, "nested more than 50 levels deep (line 1)"),
        ("a: &a [1, *a]\n", "the alias *a (line 1) is inside what it names"),
    ],
    ids=["billion laughs", "deep nesting", "self reference"],
)
def test_hostile_yaml_is_one_line_in_bounded_memory(tmp_path, text, message):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    result = load_in_child(path)
    assert (result.returncode, result.stderr) == (2, ""), result.stderr[-2000:]
    assert result.stdout.startswith(f"{path}: {message}")
    assert len(result.stdout.splitlines()) == 1


def test_aliases_within_bounds_still_work(tmp_path):
    """Anchors and merge keys are YAML a lab may use: only their expansion is bounded."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "x-dest: &dest {enabled: true, datasets: [CSVs]}\n"
        "backups:\n  sources: {CSVs: {root: /d, include: &files [a.csv, b.csv]}}\n"
        "  destinations:\n    secured: {<<: *dest, base_path: /s, enabled: false}\n    box: *dest\n"
    )
    with pytest.raises(ConfigError, match="x-dest: unknown key"):  # aliases loaded; the extra key is the schema's
        load_config([path])
    data = config.read_yaml(path)
    assert data["backups"]["destinations"]["secured"] == {"enabled": False, "datasets": ["CSVs"], "base_path": "/s"}


def test_a_file_over_1_mb_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(minimal()) + "#" + "x" * 1_000_000 + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml: larger than 1 MB, the most a config file may be"):
        load_config([path])


def test_an_empty_file_says_so(tmp_path):
    for text in ("", "# nothing yet\n", "~\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config([path])
        assert (
            str(err.value) == f"{path}: the config file is empty; it needs a 'backups' mapping (see config/config.yaml)"
        )


def test_an_empty_backups_key_says_so():
    assert refused({"backups": None}) == "lab.yaml: backups: must be object, not empty"


def test_duplicate_keys_are_refused_naming_key_and_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(
        "backups:\n  destinations:\n    smb:\n      enabled: true\n      base_path: /m\n      enabled: false\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config([path])
    assert str(err.value) == f"{path}: not valid YAML (line 6): duplicate key 'enabled' (first on line 4); keep one"


@pytest.mark.parametrize("value", ["$HOME/backup.log", "${HOME}/backup.log", "/data/$LAB/backup.log"])
def test_environment_variables_in_paths_are_refused_not_expanded(value):
    data = minimal()
    data["backups"]["log_file"] = value
    assert "backups.log_file: environment variables ($NAME, ${NAME}) are not expanded in paths" in refused(data)
    data = minimal(secured={"base_path": "/s", "ssh_key": "$HOME/.ssh/id"})
    assert refused(data).startswith("lab.yaml: backups.destinations.secured.ssh_key: environment variables")
    data = minimal()
    data["backups"]["sources"]["CSVs"]["root"] = value
    assert refused(data).startswith("lab.yaml: backups.sources.CSVs.root: environment variables")


def test_a_dollar_that_is_no_variable_is_a_name():
    """Windows' administrative shares (C$) and a '$' before a digit are names, not variables."""
    validate(minimal(smb={"base_path": "smb://nas/C$/lab", "require_mount": False}, secured={"base_path": "/s/$5"}))


def test_log_file_must_not_be_a_folder(tmp_path, monkeypatch):
    data = minimal()
    data["backups"]["log_file"] = str(tmp_path)
    assert refused(data) == (
        f"lab.yaml: backups.log_file: {tmp_path} is a folder; name the log file itself, such as backup.log"
    )
    (tmp_path / "file").write_text("")
    data["backups"]["log_file"] = str(tmp_path / "file" / "backup.log")
    assert f"backups.log_file: {tmp_path / 'file'} is a file, so {tmp_path}/file/backup.log cannot be made" in (
        refused(data)
    )
    monkeypatch.setenv("HOME", str(tmp_path))  # ~ is expanded, then checked
    (tmp_path / "logs").mkdir()
    data["backups"]["log_file"] = "~/logs"
    assert f"backups.log_file: {tmp_path / 'logs'} is a folder" in refused(data)
    data["backups"]["log_file"] = "~/logs/new/backup.log"  # made at the first run
    validate(data)


def test_relative_paths_are_checked_in_the_project_folder(tmp_path):
    """Relative to --workdir (the project folder): checked only when it is known."""
    (tmp_path / "logs").mkdir()
    data = minimal()
    data["backups"]["log_file"] = "logs"
    validate(data)  # a job or the Snakefile: its parent checked it in the right folder
    assert f"backups.log_file: {tmp_path / 'logs'} is a folder" in refused(data, workdir=str(tmp_path))


def test_archive_dir_must_be_a_folder_when_archives_are_made(tmp_path):
    (tmp_path / "archives").write_text("not a folder")
    data = minimal()
    data["backups"]["compression"] = {"archive_dir": "archives"}
    validate(data, workdir=str(tmp_path))  # no destination is compressed: never used
    data["backups"]["compression"]["enabled"] = True
    assert refused(data, workdir=str(tmp_path)) == (
        f"lab.yaml: backups.compression.archive_dir: {tmp_path / 'archives'} is not a folder; "
        "name a folder for the archives (it is made if missing)"
    )
    data["backups"]["compression"]["archive_dir"] = "archives/sub"
    assert "archive_dir: " + str(tmp_path / "archives") + " is a file" in refused(data, workdir=str(tmp_path))
    data["backups"]["compression"]["archive_dir"] = "new/archives"
    validate(data, workdir=str(tmp_path))


@pytest.mark.parametrize(
    ("destination", "key", "hint"),
    [
        ("secured", "ssh_key", "give the private key file"),
        ("secured", "known_hosts", "give the known_hosts file"),
        ("box", "rclone_config", "give the rclone config file"),
        ("smb", "rclone_config", "give the rclone config file"),
    ],
)
def test_login_files_are_checked_before_anything_runs(tmp_path, destination, key, hint):
    base = {"secured": {"base_path": "backup@server:/data"}, "box": {"remote": "Box-Folder"},
            "smb": {"base_path": "smb://nas/share/x", "transport": "rclone"}}[destination]  # fmt: skip
    data = minimal(**{destination: {**base, key: "conf/file"}})
    validate(data)  # relative, and no project folder given: left to the command line's check
    where = str(tmp_path / "conf" / "file")
    assert refused(data, workdir=str(tmp_path)).startswith(
        f"lab.yaml: backups.destinations.{destination}.{key}: {where} does not exist; {hint}"
    )
    (tmp_path / "conf" / "file").mkdir(parents=True)
    assert f"{key}: {where} is a folder; {hint}" in refused(data, workdir=str(tmp_path))
    os.rmdir(where)
    open(where, "w").close()
    validate(data, workdir=str(tmp_path))
    other = {"secured": {"base_path": "/s"}} if destination != "secured" else {"box": {"remote": "Box-Folder"}}
    disabled = minimal(**{destination: {**base, key: "missing", "enabled": False}}, **other)
    validate(disabled, workdir=str(tmp_path))  # a disabled destination's files are never used
