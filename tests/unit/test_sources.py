"""Listing a dataset: include patterns, globs, names that look like globs."""

from __future__ import annotations

import os

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


def test_missing_root_lists_every_pattern_as_missing(tmp_path):
    listing = sources.list_source(Source("D", str(tmp_path / "nope"), ("a.csv", "R/")))
    assert listing.files == [] and listing.missing == ["a.csv", "R/"]
