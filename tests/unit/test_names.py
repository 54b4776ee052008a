"""names.unstorable: which names each kind of destination cannot hold, and why."""

from __future__ import annotations

import os

from backup import names


def test_a_share_refuses_windows_names_and_keeps_the_rest():
    given = ["ok.csv", "CON", "con.txt", "Com1.png", "a:b", "x.", "x ", "dir./f", "q?", "tab\there", "é.csv"]
    refused = names.unstorable(given, share=True, rclone=False)
    assert sorted(refused) == sorted(set(given) - {"ok.csv", "é.csv"})
    assert refused["CON"].startswith("a device name") and refused["x."] == "ends with a dot or a space"


def test_case_clashes_keep_the_first_in_sorted_order_every_time():
    given = ["data/plot.csv", "data/Plot.csv", "Data/other.csv", "data/new.csv"]
    for order in (given, list(reversed(given))):
        refused = names.unstorable(order, share=True, rclone=False)
        # "Data" < "data": the folder spelled "Data" is kept, so everything under "data/" clashes.
        assert refused == {
            "data/Plot.csv": "same name as Data apart from case",
            "data/new.csv": "same name as Data apart from case",
            "data/plot.csv": "same name as Data apart from case",
        }


def test_long_paths_and_parts():
    assert names.unstorable(["a" * 256], share=True, rclone=False) == {"a" * 256: "a part longer than 255 characters"}
    deep = "/".join(["d" * 100] * 11)
    assert names.unstorable([deep], share=True, rclone=False)[deep].startswith("longer than 1024")
    assert names.unstorable([deep, "a" * 256], share=False, rclone=True) == {}


def test_rclone_refuses_line_breaks_and_bytes_that_are_not_utf8_and_case_only_where_the_remote_ignores_it():
    bad = os.fsdecode(b"inv\xffalid")
    given = ["new\nline", "cr\rhere", bad, "A.csv", "a.csv", "a:b"]
    assert sorted(names.unstorable(given, share=False, rclone=True)) == sorted(["new\nline", "cr\rhere", bad])
    assert "a.csv" in names.unstorable(given, share=False, rclone=True, ignores_case=True)
    assert names.unstorable(given, share=False, rclone=False) == {}  # rsync to a POSIX folder holds them all


def test_shown_names_are_one_printable_line():
    assert names.shown("new\nline") == "new\\nline"
    assert names.shown(os.fsdecode(b"inv\xffalid")) == "inv\\xffalid"
    assert names.shown("unicodé α") == "unicodé α"


def test_described_names_a_few_and_counts_the_rest():
    refused = {f"f{i}": "why" for i in range(8)}
    assert names.described(refused) == "f0 (why), f1 (why), f2 (why), f3 (why), f4 (why) and 3 more (listed in the log)"


def test_the_spelling_a_destination_holds_is_kept_when_a_twin_that_sorts_first_appears():
    given = ["data/plot.csv", "data/Plot.csv", "Data/x.csv", "data/y.csv"]
    refused = names.unstorable(given, share=True, rclone=False, held=lambda: ["data/plot.csv", "data/y.csv"])
    assert refused == {
        "data/Plot.csv": "same name as data/plot.csv apart from case",
        "Data/x.csv": "same name as data apart from case",
    }
    asked = []
    names.unstorable(["a.csv", "b.csv"], share=True, rclone=False, held=lambda: asked.append(1) or [])
    assert asked == []  # no clash: the destination is not asked
