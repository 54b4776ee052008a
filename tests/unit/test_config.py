"""Config loading: schema defaults, the lab's and the demo's files, one-line errors."""

from __future__ import annotations

import os

import pytest
import yaml
from backup.config import ConfigError, load_config, validate
from conftest import CSV_NAMES, PROJECT, RESULT_DIRS


def minimal(**destinations):
    return {
        "backups": {
            "sources": {"CSVs": {"root": "/data", "include": ["a.csv"]}, "Results": {"root": "/r", "include": ["R/"]}},
            "destinations": destinations,
        }
    }


def test_lab_config_is_the_seed():
    cfg = load_config([PROJECT / "config/config.yaml"])
    b = cfg["backups"]
    assert b["enabled"] is True and b["compression"] == {
        "enabled": False,
        "level": 9,
        "archive_dir": "backups_compressed",
        "keep_last": None,
    }
    assert b["sources"]["CSVs"]["include"] == CSV_NAMES
    assert b["sources"]["Results"]["include"] == RESULT_DIRS
    smb = b["destinations"]["smb"]
    assert smb["base_path"] == "smb://ramanfile.local/ramanfiles/cole"
    assert smb["csvs_path"] == "smb://ramanfile.local/ramanfiles/cole/flyTrackingData"
    assert smb["results_path"] == "smb://ramanfile.local/ramanfiles/cole/Figures"
    assert smb["require_mount"] is True and smb["use_compression"] is False
    assert b["destinations"]["box"]["remote"] == "Box-Folder"
    assert b["destinations"]["box"]["folder"] == "Ramanlab-Backups"
    assert b["destinations"]["secured"]["base_path"] == "/securedstorage/DATAsec/cole/Data-secured"
    assert b["destinations"]["secured"]["datasets"] == ["CSVs"]


def test_demo_config_is_valid_and_local():
    cfg = load_config([PROJECT / "config/demo.yaml"])
    dests = cfg["backups"]["destinations"]
    assert dests["smb"]["require_mount"] is False
    assert dests["box"]["rclone_config"] == "config/rclone-demo.conf"
    assert not any("smb://" in str(v) for v in dests["smb"].values())


def test_defaults_are_filled():
    cfg = validate(minimal(smb={"base_path": "/mnt/nas"}))
    b = cfg["backups"]
    assert b["log_file"] == "backup.log"
    assert b["destinations"]["smb"]["enabled"] is True
    assert b["destinations"]["smb"]["transport"] == "rsync"
    assert b["destinations"]["box"]["enabled"] is False  # absent destinations are off
    assert cfg["pipeline"]["require_pre_backup"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["backups"].update(enabeld=True), "backups.enabeld: unknown key"),
        (lambda c: c["backups"].update(enabled="yes"), "backups.enabled: must be boolean, not 'yes'"),
        (lambda c: c["backups"]["destinations"].update(smb={}), "backups.destinations.smb.base_path: is required"),
        (
            lambda c: c["backups"]["destinations"].update(secured={"base_path": "/s", "datasets": ["Figs"]}),
            "backups.destinations.secured.datasets: 'Figs' is not a source",
        ),
        (
            lambda c: c["backups"]["sources"]["CSVs"].update(include=["../etc/passwd"]),
            "backups.sources.CSVs.include: '../etc/passwd' must be relative",
        ),
        (lambda c: c["backups"]["compression"].update(level=12), "backups.compression.level"),
        (lambda c: c["backups"]["destinations"].update(box={"remote": "bad:name"}), "backups.destinations.box.remote"),
        (
            lambda c: c["backups"]["destinations"].update(smb={"base_path": "smb://cole:hunter2@nas/share/x"}),
            "never put a password in the URL",
        ),
    ],
)
def test_errors_name_the_key(change, message):
    cfg = minimal(smb={"base_path": "/mnt"})
    cfg["backups"]["compression"] = {}
    change(cfg)
    with pytest.raises(ConfigError) as err:
        validate(cfg, source="lab.yaml")
    text = str(err.value)
    assert text.startswith("lab.yaml: ") and message in text
    assert "\n" not in text


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backups:\n  enabled: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML \(line"):
        load_config([bad])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config([tmp_path / "nope.yaml"])


def test_later_files_override_earlier(tmp_path):
    base, override = tmp_path / "a.yaml", tmp_path / "b.yaml"
    base.write_text(yaml.safe_dump(minimal(smb={"base_path": "/mnt"}, secured={"base_path": "/s"})))
    override.write_text(yaml.safe_dump({"backups": {"destinations": {"smb": {"enabled": False}}}}))
    cfg = load_config([base, override])
    assert cfg["backups"]["destinations"]["smb"] == {**cfg["backups"]["destinations"]["smb"], "enabled": False}
    assert cfg["backups"]["destinations"]["smb"]["base_path"] == "/mnt"


def test_password_never_echoed_from_url():
    cfg = minimal(smb={"base_path": "smb://cole:hunter2@nas/share/x"})
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "hunter2" not in str(err.value)


def test_no_config_travels_in_the_environment(tmp_path, monkeypatch):
    """Loading a config leaves the environment as it was: a job reads its run's config by path."""
    from backup import config

    good = tmp_path / "good.yaml"
    good.write_text("backups:\n  sources: {CSVs: {root: /d, include: [a]}}\n"
                    "  destinations: {smb: {enabled: false}, secured: {base_path: /s}}\n")  # fmt: skip
    before = dict(os.environ)
    config.load_config([good])
    assert dict(os.environ) == before
    bad = tmp_path / "bad.yaml"
    bad.write_text("backups:\n  sources: {}\n  verify: sometimes\n")
    with pytest.raises(config.ConfigError, match="backups.verify: must be one of transfer, content"):
        config.load_config([bad])


def test_jobs_read_the_runs_saved_config_while_its_files_are_unchanged(tmp_path, monkeypatch):
    """The run's config.json holds no notification URL or pipeline command; a changed file is read again."""
    from backup import config, records

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text("backups:\n  log_file: a.log\n  notify: {on_failure: ['slack://T0KEN/B/C']}\n"
                    "  sources: {CSVs: {root: /d, include: [a]}}\n"
                    "  destinations: {smb: {enabled: false}, secured: {base_path: /s}}\n"
                    "pipeline: {command: 'echo S3CRET'}\n")  # fmt: skip
    run_id = "20261202-010000-test"
    assert config.saved_for_run([path], run_id) is None
    config.save_for_run(config.load_config([path]), [path], run_id)
    saved = records.run_config_path(run_id).read_text()
    assert "T0KEN" not in saved and "S3CRET" not in saved and '"a.log"' in saved
    path.write_text(path.read_text().replace("a.log", "elsewhere.log"))  # edited during the run
    assert config.saved_for_run([path], run_id) is None
    # The job validates the edited file and saves it for the run's other jobs.
    assert config.for_run([str(path)], run_id)["backups"]["log_file"] == "elsewhere.log"
    assert config.saved_for_run([path], run_id)["backups"]["log_file"] == "elsewhere.log"


def test_a_password_in_any_url_is_refused_even_for_a_disabled_destination():
    """Every run records the config (without secrets) at each destination: a password in the URL of
    a disabled SMB destination would otherwise travel to Box with it."""
    from backup.config import public

    smb = {"enabled": False, "base_path": "smb://lab:Secr3t@nas/share/x"}
    data = {"backups": {"sources": {"CSVs": {"root": "/d", "include": ["a"]}}, "destinations": {"smb": smb}}}
    with pytest.raises(ConfigError, match="backups.destinations.smb.base_path: never put a password in the URL"):
        validate(data)
    cfg = validate({"backups": {"sources": {"CSVs": {"root": "/d", "include": ["a"]}},
                                "destinations": {"secured": {"base_path": "/s"}}}})  # fmt: skip
    cfg["backups"]["destinations"]["smb"]["base_path"] = "smb://lab:Secr3t@nas/share/x"  # past the check
    assert "Secr3t" not in repr(public(cfg)) and "smb://lab:****@nas/share/x" in repr(public(cfg))


def test_every_destination_disabled_is_a_config_error():
    """Nothing would be backed up while every run says OK: refused, naming what to do."""
    cfg = {"backups": {"sources": {}, "destinations": {d: {"enabled": False} for d in ("smb", "box", "secured")}}}
    expected = r"backups.destinations: every destination is disabled.*backups.enabled: false"
    with pytest.raises(ConfigError, match=expected):
        validate(cfg)
    cfg["backups"]["enabled"] = False  # switched off on purpose: allowed
    validate(cfg)


def test_a_missing_ssh_key_is_a_config_error_naming_it(tmp_path, monkeypatch):
    """Not "the server refused the login": the key file is not there, said before anything runs."""
    monkeypatch.setenv("HOME", str(tmp_path))
    secured = {"enabled": True, "base_path": "backup@127.0.0.1:/data", "ssh_key": "~/.ssh/id_backup"}
    key = tmp_path / ".ssh" / "id_backup"
    with pytest.raises(ConfigError, match=rf"backups\.destinations\.secured\.ssh_key: {key} does not exist"):
        validate(minimal(secured=secured))
    box = {"enabled": True, "remote": "Box-Folder", "folder": "f"}
    validate(minimal(secured={**secured, "enabled": False}, box=box))  # disabled: not checked
    key.parent.mkdir()
    key.write_text("key")
    validate(minimal(secured=secured))


def test_an_smb_user_holding_a_password_is_refused_without_showing_it():
    smb = {"base_path": "smb://nas/share/x", "transport": "rclone", "user": "cole:Hunter2leak", "datasets": ["CSVs"]}
    cfg = {"backups": {"sources": {"CSVs": {"root": "/d", "include": ["a"]}}, "destinations": {"smb": smb}}}
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "backups.destinations.smb.user: must be the user name alone, never user:password" in str(err.value)
    assert "Hunter2leak" not in str(err.value)
    cfg["backups"]["destinations"]["smb"]["user"] = "LAB\\cole"  # a domain user is a name
    validate(cfg)


def test_a_config_that_passed_the_schema_is_not_checked_against_it_again(tmp_path, monkeypatch):
    """The schema's verdict is kept by a hash of the defaulted config, the schema and jsonschema;
    a config that fails is never kept, and any change to it is checked again."""
    import subprocess
    import sys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(minimal(secured={"enabled": True, "base_path": str(tmp_path)})))
    script = (f"import sys; from backup.config import load_config; load_config([{str(good)!r}]); "
              "print('jsonschema' in sys.modules)")  # fmt: skip

    def imports_jsonschema() -> bool:
        env = {**os.environ, "PYTHONPATH": str(PROJECT / "workflow")}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        return done.stdout.strip() == "True"

    assert imports_jsonschema()  # the first time it is checked
    assert len(list((tmp_path / "cache/lab-backup/valid-configs").iterdir())) == 1
    assert not imports_jsonschema()  # then its verdict is read
    bad = minimal(secured={"enabled": True, "base_path": str(tmp_path), "datasets_at_once": "many"})
    for _ in range(2):  # a failing config is checked every time: never kept as passed
        with pytest.raises(ConfigError, match="datasets_at_once"):
            validate(bad)
    assert len(list((tmp_path / "cache/lab-backup/valid-configs").iterdir())) == 1
    changed = minimal(secured={"enabled": True, "base_path": str(tmp_path), "datasets_at_once": 3})
    validate(changed)  # another config: checked, and kept
    assert len(list((tmp_path / "cache/lab-backup/valid-configs").iterdir())) == 2
