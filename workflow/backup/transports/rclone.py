"""rclone: to its remotes (Box, an SMB server without a mount, or any rclone backend)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from .. import logs, runner
from ..plan import Transfer, versions_folder
from ..records import user_cache
from ..sources import Listing
from .base import (
    Capabilities,
    SendFailed,
    SendResult,
    TransferError,
    TransportBase,
    VerifyResult,
    file_list,
    find_tool,
    folders_of,
    kind_changed,
    outermost,
)
from .diagnoses import diagnose, exit_reason

# Times within this of each other are the same (Box and SMB keep seconds, FAT two).
MTIME_SLACK_NS = 2_000_000_000
# rclone is given the folders to walk, rather than a list of files, when it sends more than this.
WALK_ABOVE = 200


def _features_file(transfer: Transfer) -> Path | None:
    """Where the features of the transfer's remote are kept, under a key that changes with its
    definition (the remote's name or on-the-fly string, and its config file's size and time)."""
    target = transfer.target
    remote = ":".join(target.split(":", 2)[:2]) if target.startswith(":") else target.split(":")[0]
    conf = transfer.rclone_config or os.environ.get("RCLONE_CONFIG") or "~/.config/rclone/rclone.conf"
    conf = os.path.expanduser(conf)
    try:
        st = os.stat(conf)
        stamp = f"{os.path.abspath(conf)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        stamp = "no config file"
    key = hashlib.sha1(f"{remote}\0{stamp}".encode()).hexdigest()[:20]
    home = user_cache()
    return home / f"rclone-features-{key}.json" if home else None


def _parent(target: str) -> str | None:
    """The folder a target is in ("remote:a/b" -> "remote:a"); None for a remote's root."""
    remote, sep, path = target.rpartition(":")
    if not sep or "/" not in path.strip("/"):
        return f"{remote}:" if sep and path.strip("/") else None
    return f"{remote}:{path.strip('/').rsplit('/', 1)[0]}"


class _Part:
    """One folder's share of a listing of two sibling folders (a future, as prefetch returns);
    ``folders``: with its folders (as FOLDER/), else its files only."""

    def __init__(self, both: Future, prefix: str, folders: bool = False) -> None:
        self.both, self.prefix, self.folders = both, prefix, folders

    def result(self) -> dict[str, tuple[int, int]]:
        n = len(self.prefix)
        return {path[n:]: entry for path, entry in self.both.result().items()
                if path.startswith(self.prefix) and len(path) > n
                and (self.folders or not path.endswith("/"))}  # fmt: skip


def _literal(name: str) -> str:
    """A name as an rclone filter pattern that matches only itself."""
    return re.sub(r"([\\*?\[\]{}])", r"\\\1", name)


def _filters(listing: Listing) -> list[str]:
    """rclone filter rules that take exactly the matched folders and files of a listing."""
    rules = []
    for top in listing.tops or []:
        name = _literal(top)
        if os.path.isdir(os.path.join(listing.root, top)) and top not in listing.links:
            rules.append(f"+ /{name}/**")
        else:
            rules += [f"+ /{name}", f"+ /{name}.rclonelink"]
    return [*rules, "- **"]


def _remote_type(path: str, remote: str) -> str | None:
    """The type of ``remote`` as the plain-text rclone config file defines it ("" without a type
    line); None where the file does not define it (an encrypted one cannot be read here)."""
    found = None
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line.startswith("["):
                    if found is not None:
                        break
                    found = "" if line == f"[{remote}]" else None
                elif found == "" and line.partition("=")[0].strip() == "type":
                    found = line.partition("=")[2].strip()
    except (OSError, UnicodeError):
        return None
    return found


def _whole(listing: Listing, names: list[str], walk: bool) -> list[str] | None:
    """Filter rules that walk the dataset's folders, where ``names`` are all its files (a first
    backup: 3,000 figures 20 ms away took 15 s looked up one by one); None: name them."""
    return _filters(listing) if walk and len(names) == len(listing.files) - len(listing.links) else None


def _has_section(path: str, remote: str) -> bool:
    return _remote_type(path, remote) is not None


def _kind(transfer: Transfer) -> str:
    """The rclone backend the target is on: smb for an on-the-fly SMB remote, else the type in the
    config file ("" where that cannot be read)."""
    target = transfer.target
    if target.startswith(":"):
        return target[1:].split(",", 1)[0].split(":", 1)[0]
    conf = transfer.rclone_config or os.environ.get("RCLONE_CONFIG") or "~/.config/rclone/rclone.conf"
    return _remote_type(os.path.expanduser(conf), target.split(":", 1)[0]) or ""


# Files in flight at once where the config does not say (``transfers``), measured on emulated links
# (bench/network_bench.py): rclone's SMB backend on a LAN, 16 (8, 16 and 32 took the same); Box takes
# 240 uploads a minute per user, so rclone's own 4 (and at most 8 requests a second per rclone, two
# datasets at once staying under Box's 1,000 a minute); another remote (a cloud 20 ms away), 32
# (375 figures: 3.8 s with 16, 2.5 s with 32, the link's rate, as with 64).
TRANSFERS = {"smb": 16, "box": 4, "alias": 4, "local": 4}
OTHER_TRANSFERS = 32
TPS_LIMIT = {"box": 8}


# The SMB password as rclone takes it (obscured), made once by the command line for every job of
# the run (``rclone obscure`` is a tenth of a second, each job): FINGERPRINT:OBSCURED, the
# fingerprint a digest of the password it was made from (a job whose variable holds another
# password makes its own). In the environment only, as the password itself is.
OBSCURED_ENV = "BACKUP_RCLONE_SMB_PASS"


def obscure_once(transfers: list[Transfer]) -> None:
    """Obscure the SMB password for rclone now (while Snakemake starts), for the run's jobs."""
    smb = next((t for t in transfers if t.tool == "rclone" and t.password_env and t.target.startswith(":smb,")), None)
    password = os.environ.get(smb.password_env) if smb else None
    if not password:
        return  # nothing to do, or the job says what is missing
    quiet = logs.setup(None, "preflight")
    with contextlib.suppress(TransferError):
        obscured = RcloneTransport().env(smb, quiet)["RCLONE_SMB_PASS"]
        os.environ[OBSCURED_ENV] = f"{hashlib.sha256(password.encode()).hexdigest()[:16]}:{obscured}"


def speed(transfer: Transfer) -> list[str]:
    """rclone's parallelism for this transfer: --transfers, as many checkers (at least rclone's 8:
    they list folders and compare files), and a request rate where the remote has one."""
    # A config rclone alone can read (encrypted): Box's limits for the Box destination, to be safe.
    kind = _kind(transfer) or ("box" if transfer.destination == "box" else "")
    n = transfer.transfers or TRANSFERS.get(kind, OTHER_TRANSFERS)
    tps = TPS_LIMIT.get(kind) if transfer.tps_limit is None else transfer.tps_limit
    return [f"--transfers={n}", f"--checkers={max(8, n)}", *([f"--tpslimit={tps:g}"] if tps else [])]


def _within(delta: int, window) -> bool:
    """Two times ``delta`` ns apart are the same at a remote of precision ``window()`` (asked only
    when it matters: times are equal, or more than MTIME_SLACK_NS apart, most of the time)."""
    return delta == 0 or (delta <= MTIME_SLACK_NS and delta <= window())


def _not_held(listing: Listing, held: dict[str, tuple[int, int]], window=lambda: MTIME_SLACK_NS) -> list[str]:
    """The listed files the target does not hold with the same size and time (symlinks: same size)."""
    todo = []
    for name in listing.files:
        link = name in listing.links
        there = held.get(name + ".rclonelink" if link else name)
        mtime = listing.mtimes.get(name)
        same_time = link or (there is not None and mtime is not None and _within(abs(there[1] - mtime), window))
        if there is None or there[0] != listing.sizes[name] or not same_time:
            todo.append(name)
    return todo


def _newer_there(listing: Listing, there: dict[str, tuple[int, int]], name: str, window) -> bool:
    """The target's copy is newer than the source's file (by more than the remote's precision)."""
    held, mtime = there.get(name), listing.mtimes.get(name)
    if held is None or mtime is None or name in listing.links or held[1] <= mtime:
        return False
    return not _within(held[1] - mtime, window)


def _changed_kind(listing: Listing, there: dict[str, tuple[int, int]]) -> tuple[list[str], dict]:
    """The outermost paths where the target holds an entry of the other kind than the source (a
    folder, listed as FOLDER/, where the source has a file; a file where it has a folder), and the
    target's files alone."""
    files = {path: entry for path, entry in there.items() if not path.endswith("/")}
    names = {f + ".rclonelink" if f in listing.links else f for f in listing.files}
    folders = {path[:-1] for path in there if path.endswith("/")}
    clash = (folders_of(names) & files.keys()) | (names & folders)
    return outermost(clash), files


def _inside(path: str, paths: list[str]) -> bool:
    """``path`` is one of ``paths`` or inside one of them."""
    return path in paths or any(path.startswith(p + "/") for p in paths)


def _source_name(name: str, listing: Listing) -> str:
    """A name at the target as the source names it (a symlink: without rclone's .rclonelink)."""
    bare = name.removesuffix(".rclonelink")
    return bare if bare != name and bare in listing.links else name


def _kind_changed(clash: list[str], listing: Listing) -> str:
    return kind_changed([_source_name(name, listing) for name in clash], folders_of(listing.files))


def _json_entries(lines: list[str]):
    """The JSON log entries among rclone's output lines (other lines are skipped)."""
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            yield entry


def _render_rclone(line: str) -> str:
    """rclone's JSON log line as 'level object: message' for backup.log."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict):
        return line
    if "stats" in entry:
        return " ".join(str(entry.get("msg", "")).split())
    obj = entry.get("object")
    return f"{entry.get('level', '')}: {obj + ': ' if obj else ''}{entry.get('msg', '')}"


class RcloneTransport(TransportBase):
    """rclone copy onto a remote: Box, an SMB server without a mount, or any rclone backend."""

    name = "rclone"
    # --buffer-size 4M: rclone reads ahead 16 MiB per file in flight by default; from a local disk
    # 4 MiB keeps the speed and takes 48 MiB less (a backup must fit beside the analysis).
    COMMON = ["--retries=2", "--low-level-retries=3", "--contimeout=15s", "--timeout=5m", "--buffer-size=4M"]

    def __init__(self) -> None:
        self._env: dict[str, str] | None = None
        self._features: dict | None = None
        self._held: Future | None = None

    def prefetch(self, transfer: Transfer, log, beside: Transfer | None = None):
        """List the target in a thread (rclone does the work; this process walks the source meanwhile).
        ``beside``: a folder next to the target (the catalog), listed two levels deep by the same rclone
        call (one process fewer); returns what ``tree`` of it would (a future), or None."""
        self.env(transfer, log)  # the password, if any, before the thread needs it
        pool = ThreadPoolExecutor(max_workers=1)
        parent = _parent(transfer.target)
        if beside is None or parent is None or _parent(beside.target) != parent:
            self._held = pool.submit(self._entries, transfer, log, folders=True)
            pool.shutdown(wait=False)
            return None
        data, other = transfer.target[len(parent) :].strip("/"), beside.target[len(parent) :].strip("/")
        rules = [f"+ /{_literal(data)}/**", f"+ /{_literal(other)}/*", f"+ /{_literal(other)}/*/*", "- **"]
        both = pool.submit(self._entries, dataclasses.replace(transfer, target=parent), log, rules=rules, folders=True)
        pool.shutdown(wait=False)
        self._held = _Part(both, data + "/", folders=True)
        return _Part(both, other + "/")

    def nearby(self, transfer: Transfer) -> bool:
        return _kind(transfer) in ("alias", "local") or ":" not in transfer.target  # a path: rclone's local disk

    def window(self, transfer: Transfer, log) -> int:
        """Times within this many ns are the same at this remote: its precision (1 ns on a local disk,
        1 s on Box), as rclone itself compares; 1 s where the remote does not say."""
        precision = self.features(transfer, log).get("Precision")
        return precision if self.keeps_times(transfer, log) and precision > 0 else 1_000_000_000

    def base_args(self, transfer: Transfer) -> list[str]:
        args = [find_tool("rclone")]
        if transfer.rclone_config:
            args += ["--config", transfer.rclone_config]
        return args

    def argv(self, transfer: Transfer, args: list[str]) -> list[str]:
        """The whole command: rclone, its config, ``args`` with this transfer's parallelism (``speed``)
        among its options (before a ``--``)."""
        cut = args.index("--") if "--" in args else len(args)
        return [*self.base_args(transfer), *args[:cut], *speed(transfer), *args[cut:]]

    def env(self, transfer: Transfer, log) -> dict[str, str] | None:
        """For rclone's SMB backend: the password from its environment variable, obscured for rclone
        (once per run: the command line passes it on to the jobs in OBSCURED_ENV, see ``obscure_once``)."""
        if not transfer.password_env or not transfer.target.startswith(":smb,"):
            return None
        if self._env is None:
            password = os.environ.get(transfer.password_env)
            if not password:
                raise TransferError(
                    # The key, not its value: a password pasted there by mistake must not be echoed.
                    "no SMB password: set the environment variable that backups.destinations.smb.password_env "
                    "names (or use an rclone remote with the password in rclone's config: rclone_remote)"
                )
            done = os.environ.get(OBSCURED_ENV, "").split(":", 1)
            if len(done) == 2 and done[0] == hashlib.sha256(password.encode()).hexdigest()[:16]:
                self._env = {"RCLONE_SMB_PASS": done[1]}
                return self._env
            result = runner.run(
                [find_tool("rclone"), "obscure", "-"], log, stdin_text=password, secrets=[password], log_output=False
            )
            if result.returncode != 0 or not result.lines:
                raise TransferError("rclone could not prepare the SMB password")
            self._env = {"RCLONE_SMB_PASS": result.lines[-1].strip()}
        return self._env

    def check_remote(self, transfer: Transfer, log) -> None:
        remote = transfer.target.split(":", 1)[0]
        if transfer.rclone_config and not os.path.isfile(transfer.rclone_config):
            raise TransferError(f"rclone config file {transfer.rclone_config} does not exist (rclone_config)")
        if transfer.target.startswith(":"):
            return  # an on-the-fly remote: nothing to look up
        if transfer.rclone_config and _has_section(transfer.rclone_config, remote):
            return  # found in the file itself, without starting rclone
        result = runner.run(self.base_args(transfer) + ["listremotes"], log)
        if result.returncode != 0:
            raise TransferError(f"rclone cannot read its config: {result.output.strip()[:200]}")
        if f"{remote}:" not in {line.strip() for line in result.lines}:
            where = transfer.rclone_config or "rclone's default config"
            raise TransferError(
                f"rclone remote '{remote}' is not configured in {where}; create it with 'rclone config' (see README)"
            )

    def _run(self, transfer: Transfer, args: list[str], log, what: str, ok_codes=(0,), progress=None) -> runner.Result:
        env = self.env(transfer, log)
        result = runner.run(self.argv(transfer, args), log, env=env, render=_render_rclone, progress=progress)
        if result.returncode not in ok_codes:
            self._fail(transfer, result, log, what)
        return result

    def _fail(self, transfer: Transfer, result: runner.Result, log, what: str) -> None:
        """Raise the one-line reason of a failed rclone command; an unknown remote is named as such."""
        self.check_remote(transfer, log)  # asked only now: a run that works never pays for it
        errors = [
            f"{e.get('object', '')}: {e.get('msg', '')}".strip(": ")
            for e in _json_entries(result.lines)
            if e.get("level") in ("error", "critical")
        ]
        reason = exit_reason("rclone", result.returncode)
        advice = diagnose(result.lines)
        detail = errors[-1] if errors else (result.lines[-1] if result.lines else "")
        raise TransferError(f"{what}: {advice or reason}" + (f" ({detail[:200]})" if detail else ""))

    def send(
        self,
        transfer: Transfer,
        listing: Listing,
        log,
        dry_run: bool = False,
        version_tag: str | None = None,
        force: bool = False,
        progress=None,
        before_write=None,
        known=None,
        replace_newer: bool = False,
        settled=None,
    ) -> SendResult:
        """Send what the target lacks or holds in another version (never over a newer one: --update,
        unless ``replace_newer``: then newer copies there are replaced, and kept as versions).
        ``settled(names, there)``: those of ``names`` (same size there, another time) the destination
        holds with the source's bytes, by its catalog (``rewrites``; ``there``: the target's listing):
        not sent, whatever their time there.

        The target is listed first (one listing, as rclone's own check would make): files it holds with
        the source's size and time are left out, so a run that finds nothing new starts no copy at all.
        ``force`` sends every listed file, ignoring size and time. ``before_write``: called once it is
        clear that something will be written. ``known``: gives the SHA-1s already known for the
        listed files' sizes and times (asked after the copy)."""
        out = SendResult()
        held, self._held = self._held, None  # a prefetched listing serves one send
        there = held.result() if held else self._entries(transfer, log, folders=True)
        # An entry that changed kind (a folder at the target where the source now has a file, or the
        # reverse): rclone cannot replace it (nor move it into --backup-dir), so it is moved into the
        # versions folder first, whole; without versions it stays, and is named (the rest is sent).
        clash, files = _changed_kind(listing, there)
        written = False
        if clash and transfer.keep_versions and (version_tag or dry_run):
            out.displaced = sorted(_source_name(name, listing) for name in clash)
            if not dry_run:
                if before_write:
                    before_write()
                written = True
                self._move_aside(transfer, {path: path + "/" in there for path in clash}, version_tag, log)
            files = {path: entry for path, entry in files.items() if not _inside(path, clash)}
            clash = []
        there = files

        def window() -> int:  # asked of rclone only for times less than 2 s apart (rare)
            return self.window(transfer, log)

        todo = listing.files if force else _not_held(listing, there, window)
        # Newer at the target (someone edited the backup copy, or the source went back to an older
        # copy): not given to rclone, not even when forced (--ignore-times would win over --update),
        # but named, for the job to replace them (``replace_newer``) where versions are kept; where
        # the remote keeps no times, rclone compares itself (sizes or hashes).
        newer = [] if replace_newer else [f for f in todo if _newer_there(listing, there, f, window)]
        if newer and self.keeps_times(transfer, log):
            out.newer, todo = newer, [f for f in todo if f not in set(newer)]
        if clash:
            todo = [f for f in todo if not _inside(f + ".rclonelink" if f in listing.links else f, clash)]
        same_size = [f for f in todo if f not in listing.links and (there.get(f) or (-1,))[0] == listing.sizes[f]]
        if settled and same_size and not force:
            held = settled(same_size, there)
            todo = [f for f in todo if f not in held]
        if not todo:
            if clash:
                raise SendFailed(f"send: {_kind_changed(clash, listing)}")
            return out
        if before_write and not dry_run and not written:
            before_write()  # something will be written: called only then
        # With --links rclone shows a symlink as NAME.rclonelink, so list it under that name.
        names = [f + ".rclonelink" if f in listing.links else f for f in todo]
        if any("\n" in n for n in names):
            raise TransferError("rclone cannot send file names that contain a newline; rename them")
        # Many files: name the matched folders and let rclone walk them (on a remote, --files-from
        # looks up every file on its own; a walk lists a folder at a time). Few: name each one.
        walk = listing.tops is not None and len(todo) > WALK_ABOVE and all(t == t.strip() for t in listing.tops)
        with file_list(_filters(listing) if walk else names, "\n") as list_file:
            # No --verbose: a line per file costs rclone time and this process parsing; on success
            # rclone has sent every file it was given. --links (a third slower) only for symlinks.
            args = ["copy", *([] if replace_newer else ["--update"]), *(["--links"] if listing.links else []),
                    f"--filter-from={list_file}"
                    if walk else f"--files-from-raw={list_file}", "--use-json-log", *self.COMMON]  # fmt: skip
            if transfer.keep_versions and version_tag:
                args.append(f"--backup-dir={versions_folder(transfer.target, version_tag)}")
            if force:
                args.append("--ignore-times")
            if dry_run:
                args.append("--dry-run")  # rclone names each file it would copy (a notice)
            # Stats at NOTICE: at least the last one (files and bytes written), which is what a send
            # that fails part-way did (rclone names no file it copied without --verbose).
            if not dry_run:
                args += ["--stats=1s" if progress else "--stats=0", "--stats-log-level=NOTICE"]
            stats: dict = {}

            def watch(line: str) -> bool:
                if '"stats"' in line:
                    stats.update(next((e["stats"] for e in _json_entries([line]) if "stats" in e), {}))
                return progress.rclone(line) if progress else False

            try:
                result = self._run(transfer, [*args, "--", listing.root, transfer.target], log, "send",
                                   progress=watch)  # fmt: skip
            except TransferError as exc:
                raise SendFailed(str(exc), int(stats.get("transfers") or 0), int(stats.get("bytes") or 0)) from None
        if dry_run:
            would = {e.get("object", "") for e in _json_entries(result.lines)
                     if str(e.get("msg", "")).startswith("Skipped copy as --dry-run")}  # fmt: skip
            todo = [f for f in todo if (f + ".rclonelink" if f in listing.links else f) in would]
        out.sent = list(todo)
        out.files_sent = len(out.sent)
        out.bytes_sent = sum(listing.sizes.get(f, 0) for f in out.sent)
        if not dry_run:
            self._check_sent(transfer, listing, out, walk, log, known)
        if clash:
            raise SendFailed(f"send: {_kind_changed(clash, listing)}", out.files_sent, out.bytes_sent)
        return out

    def _move_aside(self, transfer: Transfer, paths: dict[str, bool], version_tag: str, log) -> None:
        """Move each entry (path -> is a folder: the folder with all it holds, else the file) into the
        run's versions folder, at the same path there: server-side where the remote can (a rename),
        else copied, checked and then removed by rclone."""
        versions = versions_folder(transfer.target, version_tag)
        for path, folder in paths.items():
            log.warning("%s is of another kind at the source: the destination's %s is kept as version %s",
                        path, "folder" if folder else "file", version_tag)  # fmt: skip
            how = ["move", "--delete-empty-src-dirs"] if folder else ["moveto"]
            self._run(transfer, [*how, "--use-json-log", *self.COMMON, "--", f"{transfer.target.rstrip('/')}/{path}",
                                 f"{versions}/{path}"], log, f"move {path} into the versions folder")  # fmt: skip

    def _check_sent(self, transfer: Transfer, listing: Listing, out: SendResult, walk: bool, log, known) -> None:
        """The SHA-1 of every file sent, for the catalog. Where the remote keeps hashes, rclone
        checked each copy by them as it wrote it: the SHA-1 is one already known for the file's
        size and time (``known()``: another destination's tool reported it this run), else the
        remote's own (Box keeps SHA-1), else the source file's. Where it keeps none at all (SMB),
        rclone could not check the copy, so each one is read back and compared here (``out.differ``)."""
        from ..manifest import hash_files

        names = [f for f in out.sent if f not in listing.links]
        hashes = [h.lower() for h in self.features(transfer, log).get("Hashes") or []]
        if hashes:
            carried = known() if known else {}
            out.sha1 = {n: carried[n] for n in names if n in carried}
            rest = [n for n in names if n not in carried]
            if "sha1" in hashes:
                out.sha1.update(self.sha1_of(transfer, rest, log, rules=_whole(listing, rest, walk)))
            else:
                out.sha1.update(hash_files(listing.root, rest))
            return
        local = hash_files(listing.root, names)
        there = self.sha1_of(transfer, names, log, rules=_whole(listing, names, walk))
        out.differ = sorted(n for n in names if there.get(n) != local[n])
        out.sha1 = {n: h for n, h in local.items() if n not in set(out.differ)}

    def list(self, transfer: Transfer, log) -> dict[str, int]:
        return {path: size for path, (size, _) in self._entries(transfer, log).items()}

    def tree(self, transfer: Transfer, log, depth: int | None = None) -> dict[str, tuple[int, int]]:
        """Files at the target, at most ``depth`` folders deep (1: the target's own files)."""
        return self._entries(transfer, log, depth)

    def _entries(self, transfer: Transfer, log, depth: int | None = None, rules: list[str] | None = None,
                 folders: bool = False):  # fmt: skip
        """Every file at the target: path -> (size, modification time in ns); none if it does not exist.
        ``rules``: only the files these filter rules take. ``folders``: its folders too, as FOLDER/
        (rclone lists them anyway, walking)."""
        args = ["lsf", "--recursive", *([] if folders else ["--files-only"]), "--format", "stp", "--separator", "|",
                "--time-format", "unixnano", *([f"--max-depth={depth}"] if depth else []), *self.COMMON]  # fmt: skip
        with file_list(rules, "\n") as listed:
            ruled = [f"--filter-from={listed}"] if listed else []
            result = runner.run(self.argv(transfer, [*args, *ruled, "--", transfer.target]), log,
                                env=self.env(transfer, log), log_output=False)  # fmt: skip
        if result.returncode == 3:
            return {}  # the folder does not exist yet
        if result.returncode != 0:
            self._fail(transfer, result, log, "list")
        found = {}
        for line in result.lines:  # split at newlines only (runner: data output), names unmasked
            size, stamp, path = (line.split("|", 2) + ["", ""])[:3]
            if not stamp.lstrip("-").isdigit() or not path:
                continue
            if size.isdigit() and not path.endswith("/"):  # before 1970: a negative time
                found[path] = (int(size), int(stamp))
            elif folders and path.endswith("/") and path != "/":
                found[path] = (-1, int(stamp))
        return found

    def sha1_of(self, transfer: Transfer, names: list[str], log, rules: list[str] | None = None) -> dict[str, str]:
        """SHA-1 of files at the target: the remote's own where it keeps SHA-1 (Box: no data is read),
        else by downloading them (SMB). ``rules``: filter rules to walk instead of naming each file
        (rclone looks up every named file on its own). Files that are not there are left out."""
        if not names:
            return {}
        hashes = [h.lower() for h in self.features(transfer, log).get("Hashes") or []]
        with file_list(rules if rules is not None else names, "\n") as listed:
            args = ["hashsum", "SHA1", *([] if "sha1" in hashes else ["--download"]),
                    f"--filter-from={listed}" if rules is not None else f"--files-from-raw={listed}",
                    "--use-json-log", *self.COMMON, transfer.target]  # fmt: skip
            result = runner.run(self.argv(transfer, args), log, env=self.env(transfer, log), log_output=False)
        out = {}
        for line in result.lines:
            digest, sep, name = line.partition("  ")
            if sep and len(digest) == 40 and all(c in "0123456789abcdef" for c in digest):
                out[name] = digest
        if result.returncode != 0:
            # Files that are not there are errors about those objects; anything else is a failure.
            general = [e for e in _json_entries(result.lines) if e.get("level") in ("error", "critical")
                       and not e.get("object") and "errors" not in str(e.get("msg", ""))]  # fmt: skip
            if general or not any(_json_entries(result.lines)):
                self._fail(transfer, result, log, "read checksums")
        return out

    def apply(self, transfer: Transfer, staging: str, writes: list[str], deletes: list[str], log) -> None:
        """Write ``writes`` (paths under ``staging``) to the target and remove ``deletes`` there, in one
        ``rclone sync`` whose filter rules name exactly these paths (nothing else is ever touched;
        rclone removes after it has written). Where the remote keeps no hashes, the written files
        are then compared byte for byte, as data is."""
        rules = [f"+ /{_literal(path)}" for path in [*writes, *deletes]] + ["- **"]
        with file_list(rules, "\n") as listed:
            self._run(transfer, ["sync", f"--filter-from={listed}", "--use-json-log", *self.COMMON, "--", staging,
                                 transfer.target], log, "write the catalog")  # fmt: skip
        if writes and not self.has_hashes(transfer, log):
            written = Listing(root=staging, files=sorted(writes),
                              sizes={w: os.path.getsize(os.path.join(staging, w)) for w in writes})  # fmt: skip
            check = self.verify(transfer, written, log)
            if not check.ok:
                raise TransferError(f"write the catalog: {check.problem()}")

    def features(self, transfer: Transfer, log) -> dict:
        """What the remote can keep (hashes, time precision): asked of rclone once per remote and
        rclone config file (its size and time), then kept in the user's cache (a twentieth of a
        second saved for every job)."""
        if self._features is None:
            kept = _features_file(transfer)
            try:
                self._features = json.loads(kept.read_text()) if kept else None
            except (OSError, ValueError):
                self._features = None
            if not isinstance(self._features, dict):
                result = self._run(transfer, ["backend", "features", transfer.target], log, "features")
                text = "\n".join(result.lines)
                try:
                    self._features = json.loads(text[text.find("{") :])
                except ValueError:
                    self._features = {}
                if kept and self._features:
                    with contextlib.suppress(OSError):
                        kept.parent.mkdir(parents=True, exist_ok=True)
                        kept.write_text(json.dumps(self._features))
        return self._features

    def capabilities(self, transfer: Transfer, log) -> Capabilities:
        """From the remote's features (asked once: ``features``); symlinks go as NAME.rclonelink
        files (--links); a share never tells case apart."""
        features = self.features(transfer, log).get("Features", {})
        return Capabilities(
            hashes=self.has_hashes(transfer, log),
            symlinks=self.keeps_symlinks(transfer),
            case_sensitive=False if transfer.on_smb else not features.get("CaseInsensitive"),
            keeps_times=self.keeps_times(transfer, log),
        )

    def keeps_symlinks(self, transfer: Transfer) -> bool:
        return True  # as NAME.rclonelink files (--links), on any remote

    def has_hashes(self, transfer: Transfer, log) -> bool:
        return bool(self.features(transfer, log).get("Hashes"))

    def keeps_times(self, transfer: Transfer, log) -> bool:
        """The remote stores modification times (rclone reports 'not supported' as a huge precision)."""
        precision = self.features(transfer, log).get("Precision")
        return isinstance(precision, int) and precision <= MTIME_SLACK_NS

    def verify(self, transfer: Transfer, listing: Listing, log) -> VerifyResult:
        """rclone check of every listed file; by content where the remote keeps no hashes."""
        names = [f + ".rclonelink" if f in listing.links else f for f in listing.files]
        with file_list(names, "\n") as list_file:
            args = ["check", "--one-way", *(["--links"] if listing.links else []), f"--files-from-raw={list_file}",
                    "--combined", "-", *self.COMMON]  # fmt: skip
            local = str(self.features(transfer, log).get("String", "")).startswith("Local file system")
            if local or not self.has_hashes(transfer, log):
                # Compare the bytes themselves: where there are no hashes, and on a local disk, where
                # reading both sides costs less than hashing both (MD5).
                args.append("--download")
            result = self._run(transfer, [*args, listing.root, transfer.target], log, "verify", ok_codes=(0, 1))
        out = VerifyResult()
        for line in result.lines:
            kind, _, name = line.partition(" ")
            if kind == "=":
                out.verified += 1
            elif kind == "*":
                out.differing.append(name)
            elif kind in ("+", "!"):
                out.missing.append(name)
        if result.returncode == 1 and out.ok:
            raise TransferError("verify: rclone check failed without naming a file; see backup.log")
        unseen = len(names) - out.verified - len(out.differing) - len(out.missing)
        if unseen:
            raise TransferError(f"verify: rclone checked only {len(names) - unseen} of {len(names)} files")
        return out

    def restore(self, transfer: Transfer, dest: str, log, files: list[str] | None = None) -> SendResult:
        args = ["copy", "--links", "--use-json-log", "--verbose", *self.COMMON]
        with file_list(files, "\n") as list_file:
            if list_file:
                args.append(f"--files-from-raw={list_file}")
            result = self._run(transfer, [*args, "--", transfer.target, dest], log, "restore")
        sent = [e.get("object", "") for e in _json_entries(result.lines) if str(e.get("msg", "")).startswith("Copied")]
        return SendResult(files_sent=len(sent), sent=sent)

    def remove(self, transfer: Transfer, log, files: list[str] = (), folders: list[str] = ()) -> None:
        """Remove the named ``files`` and ``folders`` (each with all it holds) inside the target, and
        nothing else (prune's deletions; a backup never calls this): ``rclone purge`` of each folder's
        own path, one ``rclone delete`` of exactly the listed files. Already gone: fine."""
        names = [*files, *folders]
        if any(not n or n.startswith("/") or ".." in n.split("/") or "\n" in n for n in names):
            raise TransferError(f"remove: refusing a path outside {transfer.target}")
        base = transfer.target.rstrip("/")
        for name in folders:  # exit 3: not there (removed before)
            where = f"{base}{'' if base.endswith(':') else '/'}{name}"
            self._run(transfer, ["purge", "--use-json-log", *self.COMMON, "--", where], log, f"remove {name}",
                      ok_codes=(0, 3))  # fmt: skip
        if files:
            with file_list(list(files), "\n") as listed:
                self._run(transfer, ["delete", f"--files-from-raw={listed}", "--use-json-log", *self.COMMON, "--",
                                     transfer.target], log, "remove", ok_codes=(0, 3))  # fmt: skip
