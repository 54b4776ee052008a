"""The destination's lock: two runs (two clones, two machines) never both write."""

from __future__ import annotations

import json
import logging

import pytest
from backup import commit, plan
from backup.catalog import Catalog
from backup.config import validate
from backup.errors import TransferError

LOG = logging.getLogger("test")


def catalog_of(tmp_path, clone: str) -> tuple[Catalog, object]:
    cfg = validate({"backups": {"sources": {"CSVs": {"root": "/d", "include": ["a"]}},
                                "destinations": {"secured": {"base_path": str(tmp_path / "dest")}}}})  # fmt: skip
    work = tmp_path / clone
    cat = Catalog(plan.catalog_transfer(cfg, "secured", str(tmp_path)), work, LOG)
    if not cat.exists():  # backed up before: the catalog is there, no run writes it now
        cat.apply(cat.new_identity()[1])
        cat.tree(refresh=True)
    return cat, work


def test_a_run_that_opened_first_but_writes_later_steps_back(tmp_path):
    """A opens the destination (nothing to write yet); B opens, writes its marker and goes on;
    when A comes to write, B's marker is there: A steps back, B keeps the destination."""
    a, work_a = catalog_of(tmp_path, "clone-a")
    b, work_b = catalog_of(tmp_path, "clone-b")
    assert commit.open_stage(a, "20261130-100000-0001", "manual", ["CSVs"], work_a).error is None
    assert commit.open_stage(b, "20261130-100001-0002", "manual", ["CSVs"], work_b).error is None
    commit.before_write(b, "20261130-100001-0002", "manual", work_b)
    with pytest.raises(TransferError, match="another backup is writing to secured: run 20261130-100001-0002"):
        commit.before_write(a, "20261130-100000-0001", "manual", work_a)
    locks = sorted(p.name for p in (tmp_path / "dest/.lab-backup/locks").iterdir())
    assert locks == ["20261130-100001-0002.json"]  # A's marker is gone again, B's stays
    with pytest.raises(TransferError):  # and A stays out for the rest of its stage
        commit.add_manifest(a, "20261130-100000-0001", "manual", "CSVs-x.json.gz", work_a)


def test_markers_written_at_the_same_moment_stop_both(tmp_path, monkeypatch):
    """Neither saw the other when it opened; each sees the other's marker after writing its own."""
    a, work_a = catalog_of(tmp_path, "clone-a")
    b, work_b = catalog_of(tmp_path, "clone-b")
    commit.open_stage(a, "20261130-100000-0001", "manual", ["CSVs"], work_a)
    commit.open_stage(b, "20261130-100000-0002", "manual", ["CSVs"], work_b)
    real = Catalog.apply

    def b_writes_too(self, writes, deletes=()):  # B writes its marker right after A's
        real(self, writes, deletes)
        if self is a and any(p.startswith("locks/") for p in writes):
            monkeypatch.setattr(Catalog, "apply", real)
            commit.open_stage(b, "20261130-100000-0002", "manual", ["CSVs"], work_b)
            b.apply({"locks/20261130-100000-0002.json": (tmp_path / "dest/.lab-backup" / next(iter(
                p for p in writes if p.startswith("locks/")))).read_bytes().replace(b"0001", b"0002")})  # fmt: skip

    monkeypatch.setattr(Catalog, "apply", b_writes_too)
    with pytest.raises(TransferError, match="another backup is writing"):
        commit.before_write(a, "20261130-100000-0001", "manual", work_a)


def test_a_marker_is_refreshed_while_the_run_writes(tmp_path):
    a, work_a = catalog_of(tmp_path, "clone-a")
    commit.open_stage(a, "20261130-100000-0001", "manual", ["CSVs"], work_a)
    commit.before_write(a, "20261130-100000-0001", "manual", work_a)
    path = tmp_path / "dest/.lab-backup/locks/20261130-100000-0001.json"
    assert json.loads(path.read_text())["refreshed"] == ""
    commit.refresh_marker(a, "20261130-100000-0001", "manual", work_a)
    marker = json.loads(path.read_text())
    assert marker["refreshed"] and marker["machine"] and marker["started"]


def test_a_prune_holding_the_destination_is_named_as_a_prune(tmp_path):
    """A backup that finds prune's marker says a prune holds the destination, not another backup."""
    b, work_b = catalog_of(tmp_path, "clone-b")
    state = commit.open_stage(b, "20261130-100001-0002", "manual", ["CSVs"], work_b)
    commit.mark(b, "20261130-100001-0002", "manual", state, action="prune")
    a, work_a = catalog_of(tmp_path, "clone-a")
    opened = commit.open_stage(a, "20261130-100002-0003", "manual", ["CSVs"], work_a)
    assert opened.error is not None and opened.error.startswith(
        "another prune is writing to secured: run 20261130-100001-0002"
    ), opened.error
