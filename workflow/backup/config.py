"""Load the YAML config, fill defaults and validate it against the one schema.

The CLI, the Snakefile and every job load the config through ``load_config`` so
that they all see the same validated, defaulted settings.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import mounts

if TYPE_CHECKING:
    import jsonschema

# Set to a digest of the config files once they passed validation: the Snakefile and every
# job (child processes) then skip validating the very same bytes again.
VALIDATED_ENV = "BACKUP_CONFIG_VALIDATED"
# The validated config itself (less the notification URLs, which may hold tokens), with the
# size and time of each file it came from: a job takes it from there while the files are
# unchanged, without reading YAML (load_config(..., inherited=True)).
SNAPSHOT_ENV = "BACKUP_CONFIG_SNAPSHOT"


def _yaml():
    """PyYAML with libyaml's loader where it has one (ten times faster than the pure-Python one)."""
    import yaml

    return yaml, getattr(yaml, "CSafeLoader", yaml.SafeLoader)


SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG = "config/config.yaml"


class ConfigError(Exception):
    """A config that cannot be used; the message is one line naming file and key."""


def _load_schema() -> dict:
    yaml, loader = _yaml()
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=loader)


def _fill_defaults(instance: Any, schema: dict) -> None:
    """Insert schema defaults for missing keys, depth first (like snakemake.utils.validate)."""
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in schema.get("properties", {}):
                _fill_defaults(value, extra)


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        parts.append(missing)
    elif error.validator == "additionalProperties":
        # "Additional properties are not allowed ('x' was unexpected)"
        extra = error.message.split("(")[-1].split("'")
        if len(extra) > 1:
            parts.append(extra[1])
    return ".".join(p for p in parts if p) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        return "unknown key (check the spelling; see workflow/schemas/config.schema.yaml)"
    if error.validator == "required":
        return "is required but missing"
    if error.validator == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))}, not {error.instance!r}"
    if error.validator == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"must be {want}, not {error.instance!r}"
    return error.message


def validate(data: Any, source: str = "config", checked: bool = False) -> dict:
    """Return a defaulted copy of ``data``; raise ConfigError naming the first problem.

    ``checked``: these exact settings passed validation before (in a parent process): only fill defaults."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping with a 'backups' key")
    data = copy.deepcopy(data)
    schema = _load_schema()
    _fill_defaults(data, schema)
    if checked:
        return data
    import jsonschema  # only here: a job that inherits a validated config never needs it

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        # The deepest error is the most specific one ("if/then" wraps "required").
        err = max(errors, key=lambda e: len(list(e.absolute_path)))
        raise ConfigError(f"{source}: {_key_path(err)}: {_describe(err)}")
    _check_semantics(data, source)
    return data


def _check_semantics(cfg: dict, source: str) -> None:
    """Rules the schema cannot express: dataset names must exist, includes stay inside root."""
    backups = cfg["backups"]
    sources = backups["sources"]
    for name, spec in sources.items():
        for pattern in spec["include"]:
            parts = Path(pattern).parts
            if pattern.startswith("/") or ".." in parts:
                raise ConfigError(
                    f"{source}: backups.sources.{name}.include: {pattern!r} must be relative to root and stay inside it"
                )
    if cfg["pipeline"].get("command") and cfg["pipeline"].get("snakefile"):
        raise ConfigError(f"{source}: pipeline: give either command or snakefile, not both")
    smb = backups["destinations"]["smb"]
    for name, dest in backups["destinations"].items():  # enabled or not: it is recorded with every run
        for key, value in dest.items():
            if isinstance(value, str) and "://" in value and urlsplit(value).password is not None:
                raise ConfigError(
                    f"{source}: backups.destinations.{name}.{key}: never put a password in the URL; "
                    "use password_env (or the mount's credentials file)"
                )
    for key in ("base_path", "csvs_path", "results_path"):
        value = smb.get(key) or ""
        if smb.get("enabled") and mounts.is_smb_url(value):
            try:
                url = mounts.parse_smb_url(value)
            except ValueError as exc:
                raise ConfigError(f"{source}: backups.destinations.smb.{key}: {exc}") from None
            if not url.path and key != "base_path" and smb.get("keep_versions"):
                raise ConfigError(
                    f"{source}: backups.destinations.smb.{key}: a dataset needs a folder inside the share "
                    "(smb://HOST/SHARE/folder), so its versions folder can sit beside it"
                )
    if smb.get("enabled") and smb.get("transport") == "rclone":
        for key in ("base_path", "csvs_path", "results_path"):
            if smb.get(key) and not smb[key].lower().startswith("smb://"):
                raise ConfigError(
                    f"{source}: backups.destinations.smb.{key}: transport rclone needs an "
                    f"smb://HOST/SHARE/path URL, not {smb[key]!r}"
                )
    secured = backups["destinations"]["secured"]
    base = secured.get("base_path") or ""
    if secured.get("enabled") and ":" in base and not base.startswith("/"):
        remote_path = base.split(":", 1)[1]
        if not remote_path.startswith("/"):
            raise ConfigError(
                f"{source}: backups.destinations.secured.base_path: {base!r} needs an absolute path "
                "on the server ([user@]host:/path)"
            )
    key = secured.get("ssh_key")
    if secured.get("enabled") and key:
        _check_ssh_key(key, source)
    if not backups["enabled"]:
        return
    if not any(dest.get("enabled") for dest in backups["destinations"].values()):
        raise ConfigError(
            f"{source}: backups.destinations: every destination is disabled, so nothing would be backed up; "
            "enable one (or set backups.enabled: false to switch backups off on purpose)"
        )
    for dest_name, dest in backups["destinations"].items():
        if not dest.get("enabled"):
            continue
        for dataset in dest["datasets"]:
            if dataset not in sources:
                known = ", ".join(sources) or "none defined"
                raise ConfigError(
                    f"{source}: backups.destinations.{dest_name}.datasets: {dataset!r} is not a "
                    f"source (backups.sources has: {known})"
                )


def _check_ssh_key(key: str, source: str) -> None:
    """An ssh_key that is not there would reach the server as a refused login: name the key instead.
    ``~`` is expanded as the transport does; a relative path (relative to the project folder, or to
    --workdir, which the config does not know) is left to ssh, whose complaint rsync.py names."""
    path = os.path.expanduser(key)
    if not os.path.isabs(path) or os.path.isfile(path):
        return
    why = "is not a file" if os.path.exists(path) else "does not exist"
    raise ConfigError(
        f"{source}: backups.destinations.secured.ssh_key: {path} {why}; give the private key file that "
        "logs in to the server (or leave ssh_key out to use ssh's own keys and agent)"
    )


def read_yaml(path: str | Path) -> Any:
    yaml, loader = _yaml()
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def merge(base: dict, override: dict) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (later config files win)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _stamps(paths: list[str]) -> list[list]:
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return []
        out.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    return out


def public(cfg: dict) -> dict:
    """The config without what may hold a secret: what jobs inherit, and what each destination's
    catalog records of a run. Notification URLs (tokens), the pipeline's command and free-form
    config (which may also hold values JSON cannot carry, such as dates) are left out; passwords
    are never in a config (password_env names a variable)."""
    pipeline = {k: v for k, v in cfg["pipeline"].items() if k not in ("command", "config")}
    return _without_passwords({**cfg, "backups": {**cfg["backups"], "notify": {}}, "pipeline": pipeline})


def _without_passwords(value):
    """Every URL's password masked, wherever it is (the config check refuses them; this makes sure)."""
    if isinstance(value, dict):
        return {k: _without_passwords(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_passwords(v) for v in value]
    if isinstance(value, str) and "://" in value and "@" in value:
        try:
            password = urlsplit(value).password
        except ValueError:
            return value
        if password:
            return value.replace(f":{password}@", ":****@", 1)
    return value


def load_config(paths: list[str | Path] | None = None, inherited: bool = False) -> dict:
    """Read, merge and validate config files (default ``config/config.yaml``).

    ``inherited``: take the config the parent process validated, if these files are unchanged."""
    paths = [str(p) for p in (paths or [DEFAULT_CONFIG])]
    if inherited and os.environ.get(SNAPSHOT_ENV):
        snapshot = json.loads(os.environ[SNAPSHOT_ENV])
        if snapshot["files"] == _stamps(paths) and snapshot["files"]:
            return snapshot["config"]
    data: dict = {}
    for path in paths:
        content = read_yaml(path)
        if content is not None and not isinstance(content, dict):
            raise ConfigError(f"{path}: the file must hold a mapping with a 'backups' key")
        data = merge(data, content or {})
    digest = hashlib.sha256(repr(data).encode()).hexdigest()
    cfg = validate(data, source=" + ".join(paths), checked=os.environ.get(VALIDATED_ENV) == digest)
    os.environ[VALIDATED_ENV] = digest  # inherited by Snakemake and its jobs
    try:
        os.environ[SNAPSHOT_ENV] = json.dumps({"files": _stamps(paths), "config": public(cfg)})
    except (TypeError, ValueError):
        os.environ.pop(SNAPSHOT_ENV, None)  # the jobs read the files themselves
    return cfg
