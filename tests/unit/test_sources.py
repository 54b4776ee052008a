"""Listing a dataset: include patterns, globs, names that look like globs."""

from __future__ import annotations

import os

import pytest
from backup import sources
from backup.plan import Source


def test_literal_names_win_over_globs_and_globs_still_work(tmp_path):
    for name in ["Plot[final].png", "a1.csv", "a2.csv", "dir/x.svg", "dir/sub/y.svg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    os.symlink("a1.csv", tmp_path / "link.csv")
    include = ("Plot[final].png", "a?.csv", "dir/", "link.csv", "no.csv")
    listing = sources.list_source(Source("D", str(tmp_path), include))
    assert listing.files == ["Plot[final].png", "a1.csv", "a2.csv", "dir/sub/y.svg", "dir/x.svg", "link.csv"]
    assert listing.missing == ["no.csv"]
    assert listing.links == {"link.csv"}
    assert listing.sizes["a1.csv"] == 6


@pytest.mark.parametrize("root", ["missing", "a file", "an empty folder", "no match"])
def test_a_root_without_the_data_disk_is_an_error_naming_it(tmp_path, root):
    """An unmounted data disk (missing root, an empty mount point, ...) must fail, never list 0 files."""
    path = tmp_path / "root"
    if root == "a file":
        path.write_text("x")
    elif root != "missing":
        path.mkdir()
        if root == "no match":
            (path / "other.csv").write_text("x")
    with pytest.raises(sources.SourceError, match=rf"{path}.* of D .*is the data disk mounted\?"):
        sources.list_source(Source("D", str(path), ("a.csv", "R/")))


def test_special_files_are_named_as_skipped_never_listed(tmp_path):
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "a.csv").write_text("x")
    os.mkfifo(tmp_path / "R" / "pipe")
    os.mkfifo(tmp_path / "named-fifo")
    listing = sources.list_source(Source("D", str(tmp_path), ("R/", "named-fifo")))
    assert listing.files == ["R/a.csv"] and listing.special == ["R/pipe", "named-fifo"]
    assert listing.missing == [] and listing.tops == ["R"]


def test_tops_name_what_the_patterns_matched_and_parts_have_none(tmp_path):
    for name in ["a1.csv", "a2.csv", "dir/x.svg", "dir/sub/y.svg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    listing = sources.list_source(Source("D", str(tmp_path), ("a?.csv", "dir/", "none/")))
    assert listing.tops == ["a1.csv", "a2.csv", "dir"]
    assert sources.subset(listing, ["a1.csv"]).tops is None  # a part is named file by file
    assert sources.without(listing, ["a1.csv"]).files == ["a2.csv", "dir/sub/y.svg", "dir/x.svg"]


def test_changes_since_listing_are_seen_by_size_time_or_absence(tmp_path):
    for name in ["same.csv", "grown.csv", "touched.csv", "gone.csv"]:
        (tmp_path / name).write_text("12345")
    listing = sources.list_source(Source("D", str(tmp_path), ("*.csv",)))
    (tmp_path / "grown.csv").write_text("123456")
    st = (tmp_path / "touched.csv").stat()
    os.utime(tmp_path / "touched.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    (tmp_path / "gone.csv").unlink()
    names = ["same.csv", "grown.csv", "touched.csv", "gone.csv"]
    assert sources.changed_since_listed(listing, names) == ["grown.csv", "touched.csv", "gone.csv"]
    fresh = sources.relisted(listing, ["grown.csv", "gone.csv"])
    assert "gone.csv" not in fresh.files and fresh.sizes["grown.csv"] == 6
    assert fresh.mtimes["grown.csv"] == (tmp_path / "grown.csv").stat().st_mtime_ns


def test_a_listed_folder_that_is_empty_is_missing_not_silently_fine(tmp_path):
    """An empty folder named by a pattern may be a sub-mount that is not mounted: a warning.
    Overlapping patterns (a folder and its subfolder) are not missing."""
    for name in ["R/A/a.png", "R/A/sub/b.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / "R/B").mkdir()
    listing = sources.list_source(Source("D", str(tmp_path), ("R/A/", "R/A/sub/", "R/B/")))
    assert listing.files == ["R/A/a.png", "R/A/sub/b.png"] and listing.missing == ["R/B/"]
