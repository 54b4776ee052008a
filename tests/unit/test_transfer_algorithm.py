"""The transfer algorithm (transfer.send_verified) over an in-memory transport: each branch, by the
calls it makes (which files, version tags, forced or not) and the outcome it returns."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest
from backup import sources, transfer
from backup.errors import TransferError
from backup.manifest import Manifest
from backup.plan import Source, Transfer
from backup.transports import Capabilities, SendResult, Transport, VerifyResult, rclone, rsync
from backup.transports.base import TransportBase

TAG = "20260101-120000-abcd-pre"
LOG = logging.LoggerAdapter(logging.getLogger("test-transfer"), {"run_id": "-", "context": ""})


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


class FakeTransport(TransportBase):
    """A destination in memory (name -> bytes) that records every call. A send copies what the
    destination lacks or holds otherwise (``force``: every listed file), leaves ``newer`` files alone
    unless ``replace_newer``, and reports what it wrote with its SHA-1, as rsync does."""

    name = "fake"

    def __init__(self) -> None:
        self.held: dict[str, bytes] = {}
        self.calls: list[tuple[str, list[str], dict]] = []
        self.newer: set[str] = set()  # newer-dated at the destination
        self.damaged: dict[str, int] = {}  # name -> how many more of its writes land damaged
        self.while_read: dict[str, object] = {}  # name -> run once, just after the file was read
        self.there: dict[str, tuple[int, int]] = {}  # what ``tree`` answers
        self.reads_back = False  # names copies that differ once written (rclone, where a remote keeps no hashes)
        self.marks = 0  # calls of before_write

    def send(self, transfer, listing, log, dry_run=False, version_tag=None, force=False, progress=None,
             before_write=None, known=None, replace_newer=False, settled=None) -> SendResult:  # fmt: skip
        how = {"version_tag": version_tag, "force": force, "replace_newer": replace_newer, "settled": bool(settled)}
        self.calls.append(("send", list(listing.files), how))
        if before_write:
            before_write()
        out = SendResult()
        for name in listing.files:
            if name in self.newer and not replace_newer:
                out.newer.append(name)
                continue
            try:
                with open(os.path.join(listing.root, name), "rb") as fh:
                    data = fh.read()
            except FileNotFoundError:
                out.vanished.append(name)
                continue
            if not force and self.held.get(name) == data:
                continue
            if name in self.while_read:
                self.while_read.pop(name)()
            self.held[name] = self._landed(name, data)
            self.newer.discard(name)
            out.sent.append(name)
            out.sha1[name] = sha1(data)
            out.files_sent, out.bytes_sent = out.files_sent + 1, out.bytes_sent + len(data)
            if self.reads_back and self.held[name] != data:
                out.differ.append(name)
        return out

    def _landed(self, name: str, data: bytes) -> bytes:
        if self.damaged.get(name, 0) > 0:
            self.damaged[name] -= 1
            return b"\0" + data[1:]  # same size: only a check by content sees it
        return data

    def verify(self, transfer, listing, log):
        self.calls.append(("verify", list(listing.files), {}))
        out = VerifyResult()
        for name in listing.files:
            with open(os.path.join(listing.root, name), "rb") as fh:
                data = fh.read()
            if name not in self.held:
                out.missing.append(name)
            elif self.held[name] != data:
                out.differing.append(name)
        out.verified = len(listing.files) - len(out.missing) - len(out.differing)
        return out

    def confirm(self, transfer, listing, sent, log, recheck=()):
        self.calls.append(("confirm", list(listing.files), {"recheck": sorted(recheck)}))
        return super().confirm(transfer, listing, sent, log, recheck)

    def tree(self, transfer, log, depth=None):
        self.calls.append(("tree", [], {}))
        return dict(self.there)

    def refresh_times(self, transfer, listing, log, version_tag=None) -> None:
        self.calls.append(("refresh_times", list(listing.files), {"version_tag": version_tag}))

    def capabilities(self, transfer, log) -> Capabilities:
        return Capabilities(hashes=True, symlinks=True, case_sensitive=True, keeps_times=True)

    def keeps_symlinks(self, transfer) -> bool:
        return True

    def list(self, transfer, log):
        return {name: len(data) for name, data in self.held.items()}

    def sha1_of(self, transfer, names, log):
        return {name: sha1(self.held[name]) for name in names if name in self.held}

    def restore(self, transfer, dest, log, files=None):
        raise NotImplementedError("not a step of sending")

    def apply(self, transfer, staging, writes, deletes, log) -> None:
        raise NotImplementedError("not a step of sending")

    def remove(self, transfer, log, files=(), folders=()) -> None:
        raise NotImplementedError("not a step of sending")


@pytest.fixture
def source(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    for name, text in {"a.csv": b"alpha,1\n", "b.csv": b"beta,22\n", "c.csv": b"gamma,333\n"}.items():
        (root / name).write_bytes(text)
    return root


def plan_of(root, keep_versions: bool = True, tool: str = "rsync", mode: str = "direct") -> Transfer:
    return Transfer("secured", "CSVs", mode, tool, Source("CSVs", str(root), ("*.csv",)), "/dest",
                    keep_versions=keep_versions)  # fmt: skip


def send(fake, root, content: bool = False, base=None, outcome=None, **plan):
    """send_verified of the whole source, as jobs.sync calls it."""
    listing = sources.list_source(Source("CSVs", str(root), ("*.csv",)))
    marking = lambda: setattr(fake, "marks", fake.marks + 1)  # noqa: E731
    return transfer.send_verified(plan_of(root, **plan), fake, listing, LOG, tag=TAG, content=content,
                                  marking=marking, known=dict, base=base or (lambda: None), label="pre secured/CSVs",
                                  outcome=outcome)  # fmt: skip


def sends(fake) -> list[tuple[list[str], dict]]:
    return [(names, how) for kind, names, how in fake.calls if kind == "send"]


def plain(tag=TAG, force=False, replace_newer=False, settled=True) -> dict:
    return {"version_tag": tag, "force": force, "replace_newer": replace_newer, "settled": settled}


ALL = ["a.csv", "b.csv", "c.csv"]


def test_a_clean_send_is_one_send_confirmed_by_what_it_checked(source):
    fake = FakeTransport()
    out = send(fake, source)
    assert fake.calls == [("send", ALL, plain()), ("confirm", ALL, {"recheck": []})]  # no file read back
    assert (out.files_sent, out.bytes_sent, out.files_verified) == (3, 8 + 8 + 10, 3)
    assert out.sha1 == {name: sha1((source / name).read_bytes()) for name in ALL}
    assert out.listing.files == ALL and not (out.vanished or out.replaced_newer or out.displaced)
    assert fake.marks == 1


def test_verify_content_compares_every_file_by_content(source):
    fake = FakeTransport()
    out = send(fake, source, content=True, mode="archive")
    assert fake.calls == [("send", ALL, plain(settled=False)), ("verify", ALL, {})]  # settled: direct mode's
    assert out.files_verified == 3


def test_a_file_changed_while_read_is_sent_again_as_retry1_and_compared_by_content(source):
    fake = FakeTransport()
    fake.while_read["b.csv"] = lambda: (source / "b.csv").write_bytes(b"beta,22,written meanwhile\n")
    out = send(fake, source)
    assert sends(fake) == [(ALL, plain()), (["b.csv"], plain(f"{TAG}-retry1", force=True, settled=False))]
    assert ("verify", ["b.csv"], {}) in fake.calls  # confirm compared it by content
    assert fake.calls[-2] == ("confirm", ALL, {"recheck": ["b.csv"]})
    assert fake.held["b.csv"] == b"beta,22,written meanwhile\n"
    assert out.sha1["b.csv"] == sha1(b"beta,22,written meanwhile\n")
    assert out.listing.sizes["b.csv"] == len(b"beta,22,written meanwhile\n")  # as sent the second time
    assert (out.files_sent, out.files_verified) == (3, 3)  # the first send counts


@pytest.mark.parametrize("content", [True, False])
def test_a_file_damaged_after_sending_is_sent_again_as_retry2_and_checked_again(source, content):
    fake = FakeTransport()
    fake.damaged["c.csv"] = 1
    fake.reads_back = not content  # confirm: what the send found, and the rechecked file by content
    out = send(fake, source, content=content)
    assert sends(fake) == [(ALL, plain()), (["c.csv"], plain(f"{TAG}-retry2", force=True, settled=False))]
    checks = [(kind, names) for kind, names, _ in fake.calls if kind in ("verify", "confirm")]
    assert checks == ([("verify", ALL)] * 2 if content else [("confirm", ALL), ("confirm", ALL), ("verify", ["c.csv"])])
    assert fake.held["c.csv"] == (source / "c.csv").read_bytes()
    assert out.files_verified == 3 and out.files_sent == 3


def test_damage_that_persists_fails_with_the_problem(source):
    fake = FakeTransport()
    fake.damaged["a.csv"] = 99
    kept = transfer.Outcome(sources.Listing(root=""))
    with pytest.raises(TransferError, match=r"^verification failed: 1 files differ from the source \(e\.g\. a\.csv\)$"):
        send(fake, source, content=True, outcome=kept)
    assert sends(fake)[-1] == (["a.csv"], plain(f"{TAG}-retry2", force=True, settled=False))
    assert len(sends(fake)) == 2  # sent again once, not in a loop
    assert (kept.files_sent, kept.files_verified) == (3, 2)  # what happened is kept for the record


def test_a_file_newer_at_the_destination_is_replaced_with_versions_kept(source):
    fake = FakeTransport()
    fake.held["a.csv"], fake.newer = b"edited there\n", {"a.csv"}
    out = send(fake, source)
    assert sends(fake) == [(ALL, plain()), (["a.csv"], plain(TAG, force=True, replace_newer=True, settled=False))]
    assert out.replaced_newer == ["a.csv"]
    assert fake.held["a.csv"] == (source / "a.csv").read_bytes()
    assert (out.files_sent, out.files_verified) == (3, 3)  # two by the send, one by the replacement
    assert out.sha1["a.csv"] == sha1(b"alpha,1\n")


def test_a_file_newer_at_the_destination_stays_without_versions_and_fails(source):
    fake = FakeTransport()
    fake.held["a.csv"], fake.newer = b"edited there\n", {"a.csv"}
    with pytest.raises(TransferError, match=r"1 files differ from the source \(e\.g\. a\.csv\)"):
        send(fake, source, keep_versions=False)
    assert sends(fake) == [(ALL, plain())]  # never sent again: a forced send could replace it
    assert fake.held["a.csv"] == b"edited there\n"


def test_a_file_that_vanished_while_sent_leaves_the_listing(source):
    fake = FakeTransport()
    fake.while_read["a.csv"] = lambda: (source / "c.csv").unlink()
    out = send(fake, source)
    assert out.vanished == ["c.csv"]
    assert out.listing.files == ["a.csv", "b.csv"] and "c.csv" not in out.sha1
    assert sends(fake) == [(ALL, plain())]  # nothing to send again
    assert fake.calls[-1] == ("confirm", ["a.csv", "b.csv"], {"recheck": []})
    assert out.files_verified == 2


def test_rsync_gives_identical_rewrites_the_source_time_before_it_sends(source):
    """rsync's own step: a file rewritten with the same bytes, which the destination's last state
    holds unchanged there, gets its new time without being sent."""
    fake = FakeTransport()
    fake.held = {name: (source / name).read_bytes() for name in ALL}
    st = os.stat(source / "b.csv")
    old = st.st_mtime_ns - 60 * 10**9
    state = Manifest("CSVs", files=["b.csv"], sizes=[st.st_size], mtimes=[old], sha1=[sha1(b"beta,22\n")])
    fake.there = {"b.csv": (st.st_size, old)}
    out = send(fake, source, base=lambda: state)
    refresh = ("refresh_times", ["b.csv"], {"version_tag": TAG})
    assert fake.calls[:3] == [("tree", [], {}), refresh, ("send", ALL, plain())]
    assert (out.identical_rewrites, out.files_sent) == (1, 0)
    assert out.sha1 == {"b.csv": sha1(b"beta,22\n")}  # known without reading the destination
    assert fake.marks == 2  # before the times are set, and before the send


def test_the_transports_offer_the_whole_contract(source):
    for offered in (FakeTransport(), rsync.RsyncTransport(), rclone.RcloneTransport()):
        assert isinstance(offered, Transport), type(offered).__name__
    assert not isinstance(object(), Transport)
