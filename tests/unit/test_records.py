"""Run ids: restore orders version folders by them, so they must sort by time."""

from __future__ import annotations

from datetime import datetime, timedelta

from backup import records


def test_run_ids_within_one_second_sort_by_time():
    start = datetime(2026, 11, 26, 8, 7, 11, 0)
    ids = [records.new_run_id(start + timedelta(milliseconds=ms)) for ms in (0, 1, 250, 999, 1000)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert all(len(i) == len("20261126-080711-0003") and i[:15] == ids[0][:15] for i in ids[:4])


def test_tags_name_and_order_what_runs_wrote():
    run = "20261126-080711-0003"
    assert [records.version_tag(run, s) for s in ("manual", "pre", "post")] == [run, f"{run}-pre", f"{run}-post"]
    pre, post, retry = (
        records.Tag.parse(f"{run}-pre"),
        records.Tag.parse(f"{run}-post"),
        records.Tag.parse(f"{run}-post-retry2"),
    )
    assert (pre.stage, post.stage, retry.retry) == ("pre", "post", 2) and str(retry) == f"{run}-post-retry2"
    assert pre < post < records.Tag.parse("20261126-080711-0004")  # pre before post, then the next run
    assert records.Tag.parse("Results") is None and records.Tag.parse("20261126-0807-x") is None


def test_records_read_back_from_what_older_versions_wrote():
    """Unknown keys are ignored (a newer writer), missing ones take defaults (an older one)."""
    data = {"run_id": "r", "stage": "manual", "destination": "smb", "dataset": "CSVs", "files_sent": 3, "new": 1}
    record = records.from_json(records.TransferRecord, data)
    assert record.files_sent == 3 and record.missing == [] and record.manifest is None
    assert records.from_json(records.TransferRecord, {"run_id": "r"}) is None
    run = records.RunRecord.load({"run_id": "r", "transfers": [data, {"bad": 1}]})
    assert [t.dataset for t in run.transfers] == ["CSVs"]


def test_run_ids_are_in_utc_so_machines_in_other_time_zones_sort_together():
    from datetime import UTC

    before = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    made = records.new_run_id()
    after = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    assert before <= made[:15] <= after
