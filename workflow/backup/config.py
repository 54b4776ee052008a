"""Load the YAML config, fill defaults and validate it against the one schema.

The CLI, the Snakefile and every job load the config through ``load_config`` so
that they all see the same validated, defaulted settings.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from . import mounts, plan, records

if TYPE_CHECKING:
    import jsonschema

# A config is a few KB, a few levels deep, with a few hundred values: far beyond these limits a file
# is a mistake or an attack (an alias bomb expands to billions of values; libyaml crashes on deep nesting).
MAX_BYTES = 1_000_000
MAX_DEPTH = 50
MAX_VALUES = 100_000


@functools.cache
def _yaml():
    """PyYAML and a safe loader that refuses duplicate keys, with libyaml's parser where it has one
    (ten times faster than the pure-Python one)."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
        def construct_mapping(self, node, deep=False):
            _refuse_duplicate_keys(yaml, self, node)
            return super().construct_mapping(node, deep=deep)

    return yaml, Loader


def _refuse_duplicate_keys(yaml, loader, node) -> None:
    """YAML lets the last of two equal keys win silently: a typo'd second `enabled:` would switch
    a destination off unseen. Merge keys (<<) are overridden on purpose and are left alone."""
    seen: dict = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            problem = f"duplicate key {key!r} (first on line {seen[key] + 1}); keep one"
            raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        seen[key] = key_node.start_mark.line


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


# Keys whose value may be a secret (a token in a notification URL, a password in a URL or pasted
# into password_env, a pipeline's command line): an error names the key, never shows its value.
SECRET_KEYS = re.compile(
    r"^(backups\.notify|pipeline\.(command|config)"
    r"|backups\.destinations\.\w+\.(base_path|csvs_path|results_path|password_env|user))(\.|$)"
)
KINDS = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number", float: "a number"}


def _shown(error: jsonschema.ValidationError) -> str | None:
    """The offending value as an error may show it; None for a secret key's value, for a list or
    mapping (which may hold one), and for what looks like a URL or user@host."""
    value = error.instance
    if SECRET_KEYS.match(".".join(map(str, error.absolute_path))) or value is None:
        return None
    if isinstance(value, (dict, list)) or (isinstance(value, str) and ("://" in value or "@" in value)):
        return None
    return repr(value)


def _describe(error: jsonschema.ValidationError) -> str:
    shown = _shown(error)
    what = shown or ("empty" if error.instance is None else KINDS.get(type(error.instance), "something else"))
    if error.validator == "additionalProperties":
        return "unknown key (check the spelling; see workflow/schemas/config.schema.yaml)"
    if error.validator == "required":
        return "is required but missing"
    if error.validator == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))}, not {what}"
    if error.validator == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"must be {want}, not {what}"
    if error.validator == "pattern" and list(error.absolute_path)[-1:] == ["password_env"]:
        return (
            "must be the name of the environment variable that holds the password (capital letters, digits "
            "and _, such as SMB_PASSWORD), never the password itself (its value is not shown)"
        )
    if error.validator == "pattern" and list(error.absolute_path)[-1:] == ["user"]:
        return "must be the user name alone, never user:password (the password goes in password_env; not shown)"
    if error.validator in ("minItems", "minProperties") and not error.instance:
        return "must not be empty"  # nothing there to hide, and nothing else to say
    if shown is None:
        return (
            f"is not valid ({error.validator}: {error.validator_value}; see workflow/schemas/config.schema.yaml); "
            "its value is not shown, as it may hold a secret"
        )
    return error.message


def validate(data: Any, source: str = "config", workdir: str | None = None) -> dict:
    """Return a defaulted copy of ``data``; raise ConfigError naming the first problem.

    ``workdir``: the project folder (--workdir), where relative paths are checked (see _check_place)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping with a 'backups' key")
    data = copy.deepcopy(data)
    schema = _load_schema()
    _fill_defaults(data, schema)
    memo = _passed_before(data, schema)
    if memo is None or not memo.exists():
        _check_schema(data, schema, source)
        if memo is not None:
            with contextlib.suppress(OSError):
                memo.parent.mkdir(parents=True, exist_ok=True)
                memo.touch()
    _check_semantics(data, source, workdir)
    return data


def _check_schema(data: dict, schema: dict, source: str) -> None:
    import jsonschema  # only here: a job that reads its run's validated config never needs it

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), str(e.path)))
    if errors:
        # The deepest error is the most specific one ("if/then" wraps "required").
        err = max(errors, key=lambda e: len(list(e.absolute_path)))
        raise ConfigError(f"{source}: {_key_path(err)}: {_describe(err)}")


def _passed_before(data: dict, schema: dict) -> Path | None:
    """Where this user's cache notes that exactly this defaulted config passed exactly this schema
    under this jsonschema (the file's name is a SHA-256 of all three: it holds nothing of the
    config). The same check gives the same answer; importing jsonschema and running it is a third
    of a second of every command. The checks the schema cannot express (paths, mounts) always run."""
    home = records.user_cache()
    spec = importlib.util.find_spec("jsonschema")
    if home is None or spec is None or not spec.origin:
        return None
    try:
        installed = [spec.origin, os.stat(spec.origin).st_mtime_ns]
        key = json.dumps([data, schema, installed], sort_keys=True, default=repr)
    except (OSError, TypeError, ValueError):
        return None
    return home / "valid-configs" / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def _check_semantics(cfg: dict, source: str, workdir: str | None = None) -> None:
    """Rules the schema cannot express: dataset names must exist, includes stay inside root, no
    password in a URL, no $VARIABLE in a path, and the local files and folders named are usable
    (those given relative to the project folder only when ``workdir`` says where that is)."""
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
    _check_urls(backups, source)
    _check_variables(cfg, source)
    secured = backups["destinations"]["secured"]
    base = secured.get("base_path") or ""
    if secured.get("enabled") and ":" in base and not base.startswith("/"):
        remote_path = base.split(":", 1)[1]
        if not remote_path.startswith("/"):
            raise ConfigError(
                f"{source}: backups.destinations.secured.base_path: needs an absolute path on the server "
                "([user@]host:/path)"
            )
    _check_files(cfg, source, workdir)
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
    if any(plan.is_compressed(backups, d) for d in plan.enabled_destinations(backups)):
        _check_place(source, "backups.compression.archive_dir", backups["compression"]["archive_dir"], workdir,
                     "folder", "name a folder for the archives (it is made if missing)")  # fmt: skip
    from . import overlaps  # backups are on (see above); it imports this module

    overlaps.check(cfg, source, workdir)


def _has_password(value: str) -> bool:
    """user:PASSWORD@ in a URL, also where a '/', '?' or '#' in the password makes the URL parse
    without one (its pieces would then be taken for host, share and folder, and shown)."""
    return ":" in value.split("://", 1)[1].rpartition("@")[0]


def _check_urls(backups: dict, source: str) -> None:
    """No password in any destination's URL; SMB URLs name a share. A URL is never shown: the
    password check comes first, and a URL that passed it may still be mistyped around one."""
    smb = backups["destinations"]["smb"]
    for name, dest in backups["destinations"].items():  # enabled or not: it is recorded with every run
        for key, value in dest.items():
            if isinstance(value, str) and "://" in value and _has_password(value):
                raise ConfigError(
                    f"{source}: backups.destinations.{name}.{key}: never put a password in the URL (user:PASSWORD@); "
                    "use password_env (or the mount's credentials file); an @ in a folder's name is written %40"
                )
    for key in ("base_path", "csvs_path", "results_path"):
        value = smb.get(key) or ""
        if smb.get("enabled") and mounts.is_smb_url(value):
            try:
                url = mounts.parse_smb_url(value)
            except ValueError as exc:
                reason = str(exc).replace(repr(value), "the URL")
                raise ConfigError(f"{source}: backups.destinations.smb.{key}: {reason}") from None
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
                    "smb://HOST/SHARE/path URL here, not a path"
                )


# "$HOME" or "${DATA}" in a path: refused, not expanded (cron or another account would expand it
# otherwise, or not at all). "~" is expanded, as plan.absolute does.
VARIABLE = re.compile(r"\$\{?[A-Za-z_]")
PLACE_KEYS = ("base_path", "csvs_path", "results_path", "mount_point", "rclone_config", "ssh_key", "known_hosts")


def _paths(cfg: dict):
    """(key, value) of every key of the config that names a path or a place."""
    backups = cfg["backups"]
    yield "backups.log_file", backups["log_file"]
    yield "backups.compression.archive_dir", backups["compression"]["archive_dir"]
    for name, spec in backups["sources"].items():
        yield f"backups.sources.{name}.root", spec["root"]
    for dest, settings in backups["destinations"].items():
        for key in PLACE_KEYS:
            if isinstance(settings.get(key), str):
                yield f"backups.destinations.{dest}.{key}", settings[key]
    for key in ("snakefile", "workspace"):
        if cfg["pipeline"].get(key):
            yield f"pipeline.{key}", cfg["pipeline"][key]


def _check_variables(cfg: dict, source: str) -> None:
    for key, value in _paths(cfg):
        if VARIABLE.search(value):
            raise ConfigError(
                f"{source}: {key}: environment variables ($NAME, ${{NAME}}) are not expanded in paths; write "
                "the path out in full (~ for a home folder is expanded)"
            )


def _check_files(cfg: dict, source: str, workdir: str | None) -> None:
    """The log file, and the files an enabled destination logs in with, before anything runs: not
    as a refused login, a lock left behind, or "internal error" halfway through a run."""
    backups = cfg["backups"]
    _check_place(source, "backups.log_file", backups["log_file"], workdir, "file",
                 "name the log file itself, such as backup.log")  # fmt: skip
    dests = backups["destinations"]
    secured = dests["secured"]
    needs = {
        "secured.ssh_key": (secured, "give the private key file that logs in to the server (or leave ssh_key out "
                                     "to use ssh's own keys and agent)"),
        "secured.known_hosts": (secured, "give the known_hosts file that holds the server's host key (ssh-keyscan "
                                         "makes one), or leave known_hosts out to use ssh's own"),
        "box.rclone_config": (dests["box"], "give the rclone config file that defines the remote, or leave "
                                            "rclone_config out to use rclone's own"),
    }  # fmt: skip
    if dests["smb"].get("transport") == "rclone":
        needs["smb.rclone_config"] = (dests["smb"], needs["box.rclone_config"][1])
    for key, (dest, hint) in needs.items():
        value = dest.get(key.split(".")[1])
        if dest.get("enabled") and value:
            _check_place(source, f"backups.destinations.{key}", value, workdir, "file", hint, must_exist=True)


def _check_place(
    source: str, key: str, value: str, workdir: str | None, kind: str, hint: str, must_exist: bool = False
) -> None:
    """A local ``kind`` ("file" or "folder") at ``value``, or (unless ``must_exist``) none yet and a
    folder to make it in. Relative paths are the project folder's: unchecked without ``workdir``."""
    path = os.path.expanduser(value)
    if "://" in path or plan.is_ssh_target(path) or (workdir is None and not os.path.isabs(path)):
        return
    path = plan.absolute(path, workdir or "/")
    if os.path.exists(path):
        if os.path.isdir(path) != (kind == "folder"):
            raise ConfigError(f"{source}: {key}: {path} is {'a folder' if kind == 'file' else 'not a folder'}; {hint}")
        return
    if must_exist:
        raise ConfigError(f"{source}: {key}: {path} does not exist; {hint}")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{source}: {key}: {parent} is a file, so {path} cannot be made; {hint}")


def read_yaml(path: str | Path) -> Any:
    """The YAML in ``path``, once it is known to be of a config's size and shape (see MAX_BYTES)."""
    yaml, loader = _yaml()
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)  # bounded: the path may be a pipe or a device
        if len(raw) > MAX_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BYTES // 1_000_000} MB, the most a config file may be "
                              "(a config is a few KB): is this the right file?")  # fmt: skip
        text = raw.decode("utf-8")
        _check_shape(yaml, loader, text, path)
        return yaml.load(text, Loader=loader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {getattr(exc, 'strerror', None) or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None


def _check_shape(yaml, loader, text: str, path: str | Path) -> None:
    """Refuse YAML nested deeper than MAX_DEPTH or holding more than MAX_VALUES values once its
    aliases are expanded, from the parser's events alone: nothing is built, so an alias bomb
    ("billion laughs") costs no memory, and the scan stops at the first level too deep."""
    sizes: dict[str, int] = {}  # anchor -> values it expands to
    stack: list[list] = [[None, 0]]  # open collections: [anchor, values so far]
    for event in yaml.parse(text, Loader=loader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) > MAX_DEPTH:
                raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep (line {line}): is this a config?")
            stack.append([event.anchor, 0])
            continue
        if isinstance(event, yaml.CollectionEndEvent):
            anchor, count = stack.pop()
            if anchor:
                sizes[anchor] = count + 1
            count += 1
        elif isinstance(event, yaml.AliasEvent):
            if any(anchor == event.anchor for anchor, _ in stack):
                raise ConfigError(f"{path}: the alias *{event.anchor} (line {line}) is inside what it names")
            count = sizes.get(event.anchor, 1)  # an unknown anchor: yaml.load names it
        elif isinstance(event, yaml.ScalarEvent):
            count = 1
            if event.anchor:
                sizes[event.anchor] = 1
        else:
            continue
        stack[-1][1] += count
        if stack[-1][1] > MAX_VALUES:
            raise ConfigError(
                f"{path}: holds more than {MAX_VALUES:,} values once its aliases (*name) are expanded (line {line}); "
                "a config holds a few hundred: write them out, or use fewer aliases"
            )


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


def public(cfg: dict, recorded: bool = False) -> dict:
    """The config without what may hold a secret: what jobs inherit, and (``recorded``) what each
    destination's catalog records of a run. Notification URLs (tokens), the pipeline's command and
    free-form config (which may also hold values JSON cannot carry, such as dates) are left out;
    passwords are never in a config (password_env names a variable). A record keeps that name only
    when the variable is set: a password pasted there in capitals passes for a name."""
    pipeline = {k: v for k, v in cfg["pipeline"].items() if k not in ("command", "config")}
    backups = {**cfg["backups"], "notify": {}}
    smb = backups["destinations"].get("smb", {})
    if recorded and smb.get("password_env") and smb["password_env"] not in os.environ:
        smb = {**smb, "password_env": "(not recorded: no such variable is set)"}
        backups["destinations"] = {**backups["destinations"], "smb": smb}
    return _without_passwords({**cfg, "backups": backups, "pipeline": pipeline})


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


def load_config(paths: list[str | Path] | None = None, workdir: str | None = None) -> dict:
    """Read, merge and validate config files (default ``config/config.yaml``).

    ``workdir``: the project folder (the command line's --workdir): relative paths are checked there
    too (without it, only absolute ones: a job's or the Snakefile's parent checked the rest)."""
    paths = [str(p) for p in (paths or [DEFAULT_CONFIG])]
    return validate(_merged(paths), source=" + ".join(paths), workdir=str(workdir) if workdir else None)


def _merged(paths: list[str | Path]) -> dict:
    """The files read and merged, later ones winning; each must hold a mapping."""
    data: dict = {}
    for path in paths:
        content = read_yaml(path)
        if content is None:
            raise ConfigError(
                f"{path}: the config file is empty; it needs a 'backups' mapping (see config/config.yaml)"
            )
        if not isinstance(content, dict):
            raise ConfigError(f"{path}: the file must hold a mapping with a 'backups' key")
        data = merge(data, content)
    return data


# --- one run's config: validated once, read by path ---------------------------------------------
# The command line validates the config and saves it in the run's folder before Snakemake starts:
# the Snakefile and every job read it from there (records.run_config_path), not the YAML again.
# It is public(): no notification URL, no pipeline command. With the size and time of each file it
# came from, so that a config edited during the run is read and validated afresh, not ignored.


def save_for_run(cfg: dict, paths: list[str | Path], run_id: str, project_dir: str | Path = ".") -> None:
    """Keep the run's validated config where its jobs look (not synced to disk: only this run's own
    processes read it, on this machine, while the run lasts)."""
    try:
        # recorded: a password pasted into password_env (it passes for a name) is not kept either.
        saved = {"files": _stamps([str(p) for p in paths]), "config": public(cfg, recorded=True)}
        json.dumps(saved)
    except (TypeError, ValueError):
        return  # a value JSON cannot carry: the jobs read the files themselves
    records.write_json(records.run_config_path(run_id, project_dir), saved, durable=False)


def saved_for_run(paths: list[str | Path], run_id: str, project_dir: str | Path = ".") -> dict | None:
    """The run's saved config, if it was made from these very files, unchanged since."""
    saved = records.read_json(records.run_config_path(run_id, project_dir))
    files = _stamps([str(p) for p in paths])
    if saved and files and saved.get("files") == files:
        return saved["config"]
    return None


def pipeline_private(paths: list[str | Path]) -> dict:
    """What public() leaves out of the run's saved config, read from the files when it is needed:
    the pipeline's command (the pipeline job) and a module pipeline's own config (the Snakefile).
    They are the lab's, free-form and maybe secret. The command line or the Snakefile has validated
    these files already: no second validation here."""
    pipeline = _merged(paths).get("pipeline") or {}
    return {"command": pipeline.get("command"), "config": pipeline.get("config") or {}}


def for_run(paths: list[str | Path], run_id: str) -> dict:
    """A job's config: the run's saved one, or (Snakemake run by hand) validated here and saved
    for the run's other jobs."""
    cfg = saved_for_run(paths, run_id)
    if cfg is None:
        cfg = load_config(paths)
        save_for_run(cfg, paths, run_id)
    return cfg
